//! The peer client: signs each request, encodes it with the one codec, sends
//! it over a shared keep-alive pool with a deadline, and counts the bytes it
//! moves. A [`LinkFilter`] sits in front of every send so tests can cut,
//! delay and heal links between in-process nodes.

use super::codec::{self, CodecError};
use super::mac::{MacKey, HEADER};
use crate::client::{http_pool, HttpPool};
use crate::clock::{Clock, ClockWatch, SystemClock};
use crate::metrics::WireStats;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// The state of the link from one node to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Up,
    /// Requests fail at once, as across a partition.
    Down,
    /// Requests are held this long before they are sent.
    Delay(Duration),
}

/// Decides the state of each link; production links are always up.
pub trait LinkFilter: Send + Sync + 'static {
    fn link(&self, from: &str, to: &str) -> Link;
}

pub struct AllLinksUp;

impl LinkFilter for AllLinksUp {
    fn link(&self, _: &str, _: &str) -> Link {
        Link::Up
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("peer {peer} is unreachable: {message}")]
    Unreachable { peer: String, message: String },
    #[error("peer {peer} did not answer within {after:?}")]
    Timeout { peer: String, after: Duration },
    #[error("peer {peer} refused the request: {status} {message}")]
    Refused { peer: String, status: u16, message: String },
    #[error("peer {peer} sent an undecodable reply: {source}")]
    BadReply { peer: String, source: CodecError },
}

#[derive(Clone)]
pub struct PeerClient {
    http: HttpPool,
    me: String,
    key: Option<Arc<MacKey>>,
    links: Arc<dyn LinkFilter>,
    stats: WireStats,
    /// Stamps signed requests by the node's wall clock, and learns peers'
    /// clocks from the dates on their replies; `None`: the system clock.
    clocks: Option<Arc<ClockWatch>>,
}

impl PeerClient {
    /// `key: None` only with `--insecure`: requests go unsigned.
    pub fn new(me: &str, key: Option<Arc<MacKey>>, links: Arc<dyn LinkFilter>, stats: WireStats) -> PeerClient {
        PeerClient { http: http_pool(), me: me.to_string(), key, links, stats, clocks: None }
    }

    /// Signs requests by the node's clock and tells `clocks` each reply's date.
    pub fn with_clock_watch(mut self, clocks: Arc<ClockWatch>) -> PeerClient {
        self.clocks = Some(clocks);
        self
    }

    /// The node's wall clock.
    fn now_ms(&self) -> u64 {
        self.clocks.as_ref().map_or_else(|| SystemClock.now_ms(), |c| c.clock().now_ms())
    }

    /// POSTs `req` to `path` on the peer `(name, addr)` and decodes the reply.
    /// `name` is the member's id, or empty for an address whose member is not
    /// known yet (a seed): errors then name the address, and its reply's date
    /// votes on this node's clock only until members are heard from.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: (&str, &str),
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError> {
        Ok(self.call_sized(peer, path, req, timeout).await?.0)
    }

    /// Like [`PeerClient::call`], also returning the bytes moved both ways.
    pub async fn call_sized<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: (&str, &str),
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<(Resp, u64), RpcError> {
        let (name, addr) = peer;
        let who = if name.is_empty() { addr } else { name };
        match self.links.link(&self.me, name) {
            Link::Up => {}
            Link::Down => return Err(RpcError::Unreachable { peer: who.into(), message: "link is down".into() }),
            Link::Delay(d) => tokio::time::sleep(d).await,
        }
        let body = codec::encode(req);
        let mut builder = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(format!("http://{addr}{path}"))
            .header(hyper::header::CONTENT_TYPE, codec::CONTENT_TYPE);
        let mut header_bytes = path.len() + addr.len() + 60;
        if let Some(key) = &self.key {
            let auth = key.sign("POST", path, self.now_ms(), &self.me, &body);
            header_bytes += HEADER.len() + auth.len() + 4;
            builder = builder.header(HEADER, auth);
        }
        self.stats.requests.inc();
        let sent_bytes = (header_bytes + body.len()) as u64;
        self.stats.bytes_sent.inc_by(sent_bytes);
        let unreachable = |message: String| RpcError::Unreachable { peer: who.into(), message };
        let req = builder.body(Full::new(Bytes::from(body))).map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| unreachable(crate::error_line::error_line(&e)))?;
            let (parts, body) = resp.into_parts();
            // Every reply is dated, a refusal too: a node whose clock is so far
            // off that peers refuse its requests learns it from their answers.
            if let Some(clocks) = &self.clocks {
                if let Some(date_ms) = parts.headers.get(hyper::header::DATE).and_then(http_date_ms) {
                    clocks.reply_from(peer, date_ms);
                }
            }
            let body = body.collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            let head: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
            let received = (head + 17 + body.len()) as u64;
            self.stats.bytes_received.inc_by(received);
            Ok::<_, RpcError>((parts.status, body, received))
        };
        let (status, body, received) =
            tokio::time::timeout(timeout, exchange).await.map_err(|_| RpcError::Timeout { peer: who.into(), after: timeout })??;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(RpcError::Refused { peer: who.into(), status: status.as_u16(), message });
        }
        let reply = codec::decode(&body).map_err(|source| RpcError::BadReply { peer: who.into(), source })?;
        Ok((reply, sent_bytes + received))
    }
}

/// An HTTP `Date` header as unix milliseconds.
fn http_date_ms(value: &hyper::header::HeaderValue) -> Option<u64> {
    let at = httpdate::parse_http_date(value.to_str().ok()?).ok()?;
    Some(at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as u64)
}
