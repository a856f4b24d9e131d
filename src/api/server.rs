//! The HTTP listener every route is served on: it accepts connections up to
//! `--max-connections`, and past that keeps [`DEFAULT_PEER_RESERVE`] more
//! for peer requests alone, so a flood of clients cannot cut a node off
//! from its peers' mail, gossip and repair. It closes a connection that has not sent a whole
//! request head within `--read-timeout-secs` (a slow client, or a
//! keep-alive connection left idle that long, counted apart), and shuts down gracefully:
//! no new connections, and requests in flight get [`DRAIN_DEADLINE`] to
//! finish. The same timeout bounds reading a request's body
//! ([`crate::api::kv::read_limited`]).
//!
//! Why not `axum::serve`: it has no connection bound and builds its hyper
//! connections without a timer, so no read timeout applies. A client that
//! opened connections and sent half a request head held each one forever,
//! and enough of them used up the node's file descriptors, peers' traffic
//! included.

use crate::api::error::ApiError;
use crate::metrics::Metrics;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How many connections a node serves at once, and how long a client may
/// take to send a request head, or its body, or may leave a connection idle.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Connections past `max_connections` that serve only `/internal/...`
    /// (peer) requests.
    pub peer_reserve: usize,
    pub read_timeout: Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Each peer keeps a few pooled connections to a node, more while mail,
/// repair and gossip run at once; 256 covers dozens of peers.
pub const DEFAULT_PEER_RESERVE: usize = 256;
/// Longer than the longest time hearsay's own clients leave a pooled
/// connection idle (twice [`crate::client::POOL_IDLE`]), so the server
/// never closes one they are about to reuse.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
const _: () = assert!(2 * crate::client::POOL_IDLE.as_secs() < DEFAULT_READ_TIMEOUT.as_secs());

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            peer_reserve: DEFAULT_PEER_RESERVE,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

/// Connections past the bound that are being answered `503` at once; past
/// this many too, a connection is closed unanswered, so refusing costs
/// bounded descriptors and tasks however fast connections come.
const REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refusal may take to read the request head, answer it, and
/// read what else the client sent.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(1);
const REFUSAL_READ_MAX: usize = 64 << 10;
/// How long a shutdown waits for requests in flight before it closes their
/// connections: longer than a request waits for its replicas (2 s by
/// default), and short enough that the node still stops cleanly within
/// the 10 s Docker allows before it kills a container.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` until `shutdown` resolves, then gives the
/// open connections [`DRAIN_DEADLINE`] to finish their requests, and closes
/// those still open (a client sending a body slowly, say).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    warn_if_open_files_short(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(limits.peer_reserve));
    let peers_only = router.clone().layer(axum::middleware::from_fn_with_state((limits.max_connections, metrics.clone()), peers_only));
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.read_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    on_accept_error(e).await;
                    continue;
                }
            },
        };
        let taken = match slots.clone().try_acquire_owned() {
            Ok(slot) => Ok((slot, &router)),
            Err(_) => reserve.clone().try_acquire_owned().map(|slot| (slot, &peers_only)),
        };
        let Ok((slot, service)) = taken else {
            metrics.http_connections_refused.inc();
            if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, limits.max_connections).await;
                    drop(refusing);
                });
            }
            continue;
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(service.clone());
        let (stream, sent) = Watched::new(stream);
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let open = Open::new(metrics.clone(), slot);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    let m = &open.metrics;
                    let counter = if sent.load(Ordering::Relaxed) { &m.http_read_timeouts } else { &m.http_idle_closes };
                    counter.inc();
                }
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown()).await.is_err() {
        tracing::warn!(open = connections.len(), "closing the connections still open {DRAIN_DEADLINE:?} after shutdown began");
    }
    connections.shutdown().await;
}

/// On a connection past `--max-connections`, kept for peers: a request
/// that is not a peer's is refused as the connection itself would have been.
async fn peers_only(State((max_connections, metrics)): State<(usize, Arc<Metrics>)>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/internal/") {
        return next.run(request).await;
    }
    metrics.http_connections_refused.inc();
    let mut refused =
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, TOO_MANY_CONNECTIONS, too_many_connections(max_connections)).into_response();
    refused.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    refused
}

const TOO_MANY_CONNECTIONS: &str = "too_many_connections";

fn too_many_connections(max_connections: usize) -> String {
    format!("this node is serving its limit of {max_connections} connections (--max-connections); retry shortly")
}

/// A connection's socket that notes whether the client has sent anything
/// since this node last wrote to it. hyper's header timeout runs from the
/// end of one response to the next request's head, so when it fires,
/// nothing sent means a keep-alive connection left idle (a pooled client
/// doing nothing wrong), and something sent means a client too slow to
/// finish its request head. Only the second is a slow client to count.
struct Watched {
    stream: TcpStream,
    sent: Arc<AtomicBool>,
}

impl Watched {
    fn new(stream: TcpStream) -> (Watched, Arc<AtomicBool>) {
        let sent = Arc::new(AtomicBool::new(false));
        (Watched { stream, sent: sent.clone() }, sent)
    }

    fn wrote<T>(&self, written: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if matches!(written, Poll::Ready(Ok(_))) {
            self.sent.store(false, Ordering::Relaxed);
        }
        written
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.sent.store(true, Ordering::Relaxed);
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(written)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A connection being served: holds its slot, and is counted in
/// `hearsay_http_connections`, until it ends or is aborted at shutdown.
struct Open {
    metrics: Arc<Metrics>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: Arc<Metrics>, slot: tokio::sync::OwnedSemaphorePermit) -> Open {
        metrics.http_connections.inc();
        Open { metrics, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.http_connections.dec();
    }
}

/// As `axum::serve` does: a failed handshake is the client's business; any
/// other error (out of file descriptors, say) is logged, and accepting
/// pauses a moment rather than spinning.
async fn on_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The answer to a connection past the bound: a JSON `503` like every other
/// error, then close.
fn refusal(max_connections: usize) -> String {
    let body = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, TOO_MANY_CONNECTIONS, too_many_connections(max_connections)).body();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Answers the request, not the connection: an HTTP client takes an answer
/// that came before its request for a broken connection. A client that has
/// not sent a whole head by the deadline is closed unanswered.
async fn refuse(mut stream: TcpStream, max_connections: usize) {
    let answer = async {
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await? {
                0 => return Ok(()),
                n if head.len() + n > REFUSAL_READ_MAX => return Ok(()),
                n => head.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(refusal(max_connections).as_bytes()).await?;
        stream.shutdown().await?;
        // Read what else it sent (a body), so closing does not reset the
        // connection before the client has read the answer.
        let mut read = head.len();
        while read < REFUSAL_READ_MAX {
            match stream.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_DEADLINE, answer).await;
}

/// Warns when the process may not open as many files as `limits` let
/// connections take, plus what storage and the node's own requests need.
fn warn_if_open_files_short(limits: &ConnectionLimits) {
    let wanted = (limits.max_connections + limits.peer_reserve) as u64 + 256;
    if let Some(limit) = open_files_limit().filter(|l| *l < wanted) {
        tracing::warn!(
            open_files_limit = limit,
            max_connections = limits.max_connections,
            "the open-file limit is below --max-connections, plus the connections kept for peers, plus what storage and this node's own requests need (about 256): raise it (ulimit -n) or lower --max-connections, or connections past it fail to open"
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// where that does not say, or says `unlimited`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_http_response_with_a_json_error() {
        let text = refusal(7);
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "too_many_connections");
        assert!(json["message"].as_str().unwrap().contains("7 connections"));
    }
}
