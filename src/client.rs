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

/// How long a pooled connection may sit idle and still be reused: shorter
/// than a server's header read timeout
/// ([`crate::api::server::DEFAULT_READ_TIMEOUT`]), so a node never
/// closes a connection just as its peer reuses it. The pool checks this
/// when it hands a connection out (it has no timer), so an idle
/// connection stays open until the server closes it, counted there in
/// `hearsay_http_idle_closes_total`.
pub const POOL_IDLE: Duration = Duration::from_secs(20);

/// The pooled keep-alive HTTP/1 client every outgoing request uses.
pub type HttpPool = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

pub fn http_pool() -> HttpPool {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(connector)
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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).pool_idle_timeout(POOL_IDLE).build(connector);
        Ok(Client { http, base, timeout: Duration::from_secs(30), token: None })
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
