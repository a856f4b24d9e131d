//! An HTTP client for hearsay's public and admin API over pooled keep-alive
//! connections. Used by the CLI client commands, `hearsay bench` and tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0:?} is not a node URL like http://127.0.0.1:7000")]
    BadUrl(String),
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("request to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
}

/// A response with its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The server's `message` for an error body, or the raw text.
    pub fn error_message(&self) -> String {
        match self.json().get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_string(),
            None => self.text(),
        }
    }
}

/// How long a pooled connection may sit idle before this side closes it.
/// The pool looks for idle connections once per this period, so one can
/// sit idle for up to twice as long: 24 s, under a server's header read
/// timeout ([`crate::api::server::DEFAULT_READ_TIMEOUT`], 30 s). So a node
/// never closes a connection just as its peer reuses it, and idle peer
/// connections are closed by their client rather than timed out by the
/// server.
pub const POOL_IDLE: Duration = Duration::from_secs(12);

/// The pooled keep-alive HTTP/1 client every outgoing request uses.
pub type HttpPool = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// The pool for peer requests: a connect that takes over 2 s is a peer
/// that is down, not a slow one.
pub fn http_pool() -> HttpPool {
    pool(POOL_IDLE, Some(Duration::from_secs(2)))
}

/// A pool whose connections close after `idle` unused. Without a timer
/// hyper-util only skips a stale connection when it hands one out, and an
/// idle one stays open until the server times it out.
fn pool(idle: Duration, connect_timeout: Option<Duration>) -> HttpPool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(connect_timeout);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

#[derive(Clone)]
pub struct Client {
    http: HttpPool,
    base: String,
    timeout: Duration,
    token: Option<String>,
}

impl Client {
    /// A client for the node at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Client, ClientError> {
        let base = base.trim_end_matches('/').to_string();
        let valid = base.strip_prefix("http://").is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !valid {
            return Err(ClientError::BadUrl(base));
        }
        Ok(Client { http: pool(POOL_IDLE, None), base, timeout: Duration::from_secs(30), token: None })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Sends `Authorization: Bearer <token>` on every request.
    pub fn with_token(mut self, token: Option<String>) -> Client {
        self.token = token;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request; `path` includes any query string.
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: Bytes) -> Result<Response, ClientError> {
        let url = format!("{}{}", self.base, path);
        let transport = |message: String| ClientError::Transport { url: url.clone(), message };
        let mut req = hyper::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| transport(e.to_string()))?,
                HeaderValue::from_str(value).map_err(|e| transport(e.to_string()))?,
            );
        }
        if let Some(token) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| transport(e.to_string()))?;
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| transport(crate::error_line::error_line(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| transport(e.to_string()))?.to_bytes();
            Ok(Response { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| ClientError::Timeout { url: url.clone(), after: self.timeout })?
    }

    pub async fn get_path(&self, path: &str) -> Result<Response, ClientError> {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn put(&self, key: &[u8], value: impl Into<Bytes>, query: &str) -> Result<Response, ClientError> {
        self.send(Method::PUT, &kv_path(key, query), &[], value.into()).await
    }

    pub async fn get(&self, key: &[u8], query: &str) -> Result<Response, ClientError> {
        self.send(Method::GET, &kv_path(key, query), &[], Bytes::new()).await
    }

    pub async fn delete(&self, key: &[u8], query: &str) -> Result<Response, ClientError> {
        self.send(Method::DELETE, &kv_path(key, query), &[], Bytes::new()).await
    }
}

/// `/v1/kv/{encoded key}` plus `?query` when one is given.
pub fn kv_path(key: &[u8], query: &str) -> String {
    let mut path = format!("/v1/kv/{}", crate::types::encode_key_bytes(key));
    if !query.is_empty() {
        path.push('?');
        path.push_str(query.trim_start_matches('?'));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection left idle in the pool is closed by the client once
    /// the idle time has passed, without another request to notice it.
    #[tokio::test]
    async fn an_idle_pooled_connection_is_closed_by_the_client() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending its request");
                head.extend_from_slice(&buf[..n]);
            }
            socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            let started = tokio::time::Instant::now();
            // The client's close reads as end of stream.
            let closed = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
            (closed.map(|r| r.unwrap()), started.elapsed())
        });
        let http = pool(Duration::from_millis(300), None);
        let req = hyper::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
        let resp = http.request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let (closed, after) = server.await.unwrap();
        assert_eq!(closed.ok(), Some(0), "the idle connection was still open 5 s later");
        assert!(after >= Duration::from_millis(250), "closed after {after:?}, before the idle time");
        drop(http);
    }
}
