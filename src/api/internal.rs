//! `/internal/...`: the peer protocol's server side. Every request is
//! authenticated (unless the node runs `--insecure`) and decoded with the one
//! codec before anything is applied; a refused request changes nothing.

use super::error::ApiError;
use super::kv::read_limited;
use super::AppState;
use crate::clock::{Clock, SystemClock};
use crate::repair::exchange::answer_leaf_diff;
use crate::rpc::codec::{self, CONTENT_TYPE};
use crate::rpc::mac::HEADER;
use crate::rpc::{
    ApplyBatch, ApplyReply, Fetch, FetchReply, Hello, LeafDiff, ListReply, ListRequest, ReadReply, ReadRequest, SyncRequest, TreeReply,
    TreeRequest, WireRecord,
};
use crate::types::Key;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads, authenticates and decodes a peer request body.
async fn accept<T: DeserializeOwned>(st: &AppState, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    Ok(accept_from(st, uri, headers, body).await?.0)
}

/// [`accept`], and the member that signed the request (`None` under `--insecure`).
async fn accept_from<T: DeserializeOwned>(
    st: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(T, Option<String>), ApiError> {
    let body = read_limited(st, body, headers, st.max_internal_bytes).await?;
    let mut signer = None;
    if let Some(key) = &st.mac {
        let refused = |e: crate::rpc::mac::AuthError| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string());
        let auth = headers.get(HEADER).and_then(|v| v.to_str().ok());
        let signed = key.authenticate(auth, "POST", uri.path(), &body).map_err(refused)?;
        // Learned before the age check, so a peer refused for its clock shows
        // how far off that clock is.
        let now = st.clocks.request_from(signed.sender, signed.sent_ms);
        signed.check_fresh(now).map_err(refused)?;
        signer = Some(signed.sender.to_string());
    }
    let msg = codec::decode(&body).map_err(|e| {
        if let codec::CodecError::UnknownFormat(theirs) = e {
            warn_other_format(theirs);
        }
        ApiError::bad_request(e.to_string())
    })?;
    Ok((msg, signer))
}

/// A message that says who sends it (a hello, a gossip envelope) must be
/// signed by that member: one node cannot speak for another, whether by a
/// misconfigured id or by relaying.
fn check_claim(claimed: &str, signer: Option<&str>) -> Result<(), ApiError> {
    match signer {
        Some(signer) if signer != claimed => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sender_mismatch",
            format!("the message says it is from {claimed:?}, but {signer:?} signed it"),
        )),
        _ => Ok(()),
    }
}

/// A peer of another message format is a node of another build: nothing it
/// sends can be read, so this is worth an operator's attention, but at most
/// once per 30 s (gossip alone sends several messages a second).
fn warn_other_format(theirs: u8) {
    static LAST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = SystemClock.now_ms();
    let last = LAST_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 30_000
        && LAST_MS.compare_exchange(last, now, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed).is_ok()
    {
        tracing::warn!(
            peer_format = theirs,
            this_format = codec::FORMAT,
            "a peer speaks another message format (it runs another hearsay version); the two cannot exchange data until every node runs the same version"
        );
    }
}

fn reply<T: Serialize>(msg: &T) -> Response {
    let mut resp = codec::encode(msg).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// A decommissioned node takes no more records and answers no reads: a peer
/// whose view is behind hears so, keeps a write in its retry buffer (never
/// acknowledging it on this node's word), takes a read from the other
/// replicas (not this node's emptied or outdated copy), and finds the new
/// replicas once gossip reaches it.
fn refuse_if_retired(st: &AppState) -> Result<(), ApiError> {
    if st.repl.membership.is_retired() {
        return Err(ApiError::new(
            StatusCode::GONE,
            super::error::DECOMMISSIONED,
            format!("{} left the cluster and takes no records", st.node),
        ));
    }
    Ok(())
}

pub async fn apply(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let batch: ApplyBatch = accept(&st, &uri, &headers, body).await?;
    refuse_if_retired(&st)?;
    // Validate the whole batch first, so a bad record applies nothing.
    let records = batch
        .records
        .into_iter()
        .map(|r| r.into_parts(st.max_value_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let out: ApplyReply = st.repl.kv.apply_batch(&records).await?;
    if !out.below_floor.is_empty() {
        st.metrics.records_below_floor.inc_by(out.below_floor.len() as u64);
        tracing::info!(
            records = out.below_floor.len(),
            "refused records older than their shard's purge floor: deleted values a stale copy still held"
        );
    }
    Ok(reply(&out))
}

pub async fn read(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: ReadRequest = accept(&st, &uri, &headers, body).await?;
    refuse_if_retired(&st)?;
    let key = Key::new(req.key)?;
    let record = st.repl.kv.read(&key)?.map(|r| WireRecord::new(&key, &r));
    Ok(reply(&ReadReply { record }))
}

pub async fn hello(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (hello, signer): (Hello, _) = accept_from(&st, &uri, &headers, body).await?;
    check_claim(&hello.node, signer.as_deref())?;
    let membership = &st.repl.membership;
    membership
        .check_shape(&hello.node, hello.shards, hello.rf)
        .and_then(|()| membership.learn(&hello.node, &hello.addr))
        .map_err(join_refused)?;
    st.repl.ensure_carrier(&hello.node);
    Ok(reply(&membership.hello_reply()))
}

/// A node this one will not take in (another shard count or replication
/// factor, a removed member, a name clash), whether it said hello or gossiped.
fn join_refused(e: crate::membership::MembershipError) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "join_refused", e.to_string())
}

pub async fn gossip(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let (packet, signer): (crate::gossip::GossipPacket, _) = accept_from(&st, &uri, &headers, body).await?;
    check_claim(&packet.envelope.from.id, signer.as_deref())?;
    st.repl.membership.check_shape(&packet.envelope.from.id, packet.shards, packet.rf).map_err(join_refused)?;
    if !st.repl.membership.deliver(packet.envelope) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "gossip inbox is full"));
    }
    Ok(reply(&()))
}

/// Refuses a shard id outside this cluster, or a peer with another shard count.
fn check_shard(st: &AppState, shard: u32, shards: u32) -> Result<crate::types::ShardId, ApiError> {
    let ours = st.repl.membership.shards();
    if shards != ours {
        return Err(ApiError::new(StatusCode::CONFLICT, "shard_count_mismatch", format!("peer has {shards} shards, this node {ours}")));
    }
    if shard >= ours {
        return Err(ApiError::bad_request(format!("shard {shard} does not exist (the cluster has {ours})")));
    }
    Ok(crate::types::ShardId(shard))
}

pub async fn list(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: ListRequest = accept(&st, &uri, &headers, body).await?;
    for &id in &req.ids {
        check_shard(&st, id, req.shards)?;
    }
    super::kv::check_list_bounds(&req.prefix, req.after.as_deref())?;
    let limit = req.limit as usize;
    if !(1..=super::kv::MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1..={}", super::kv::MAX_LIST_LIMIT)));
    }
    let mut ids = req.ids;
    ids.sort_unstable();
    ids.dedup();
    let page = st.repl.kv.list(&ids, &req.prefix, req.after.as_deref(), limit)?;
    Ok(reply(&ListReply { keys: page.keys, more: page.more }))
}

pub async fn tree(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: TreeRequest = accept(&st, &uri, &headers, body).await?;
    let shard = check_shard(&st, req.shard, req.shards)?;
    if req.indices.len() > crate::merkle::LEAVES {
        return Err(ApiError::bad_request("too many tree indices in one request"));
    }
    let storage = st.repl.kv.storage();
    let indices: Vec<u32> = if req.children {
        if req.level != 2 || req.indices.iter().any(|&i| i as usize >= crate::merkle::INNER) {
            return Err(ApiError::bad_request("children are asked of level 2 by inner node index"));
        }
        let fanout = crate::merkle::FANOUT as u32;
        req.indices.iter().flat_map(|&i| i * fanout..(i + 1) * fanout).collect()
    } else {
        req.indices
    };
    let digests = storage.trees().shard(shard.0).level(req.level, &indices).map_err(ApiError::bad_request)?;
    let digests = digests.iter().map(crate::merkle::wire_digest).collect();
    Ok(reply(&TreeReply { digests, records: storage.counts(shard).records, replicates: st.repl.replicates(shard) }))
}

pub async fn leaves(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: LeafDiff = accept(&st, &uri, &headers, body).await?;
    check_shard(&st, req.shard, req.shards)?;
    let kv = st.repl.kv.clone();
    let answer = tokio::task::spawn_blocking(move || answer_leaf_diff(&kv, &req))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| match e {
            crate::repair::exchange::LeafDiffError::Storage(s) => ApiError::from(s),
            m => ApiError::bad_request(m.to_string()),
        })?;
    Ok(reply(&answer))
}

pub async fn fetch(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: Fetch = accept(&st, &uri, &headers, body).await?;
    let mut records = Vec::with_capacity(req.keys.len().min(1024));
    for key in req.keys {
        let key = Key::new(key)?;
        if let Some(r) = st.repl.kv.read(&key)? {
            records.push(WireRecord::new(&key, &r));
        }
    }
    Ok(reply(&FetchReply { records }))
}

pub async fn sync(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: SyncRequest = accept(&st, &uri, &headers, body).await?;
    refuse_if_retired(&st)?;
    let shard = check_shard(&st, req.shard, req.shards)?;
    let addr = st.repl.membership.addr_of(&req.peer).ok_or_else(|| ApiError::bad_request(format!("unknown peer {:?}", req.peer)))?;
    let ex = crate::repair::exchange::Exchange::new(&st.repl, (&req.peer, &addr), shard, std::time::Duration::from_secs(600));
    let report = ex.run(req.mode).await.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "exchange_failed", e.to_string()))?;
    Ok(reply(&report))
}

pub async fn verified(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let v: crate::rpc::Verified = accept(&st, &uri, &headers, body).await?;
    check_shard(&st, v.shard, v.shards)?;
    st.repl.settle_dirty(&v);
    // Only a copy that was verified may purge: a member that is not among the
    // replicas may hold a stale copy, and its floor must not claim otherwise.
    if v.replicas.iter().any(|r| *r == st.node) {
        // A verification cannot have begun in this node's future: a sender's
        // fast clock must not move the purge cutoff ahead.
        st.ae.purges.note_verified(v.shard, v.checked_at_ms.min(st.repl.kv.hlc().wall_ms()));
    }
    Ok(reply(&()))
}
