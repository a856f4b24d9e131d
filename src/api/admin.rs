//! Operational routes: `/health`, `/ready`, `/metrics`, `/admin/shards`,
//! cluster membership and decommissioning.

use super::AppState;
use crate::types::ShardId;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Alive, unless storage has failed: then only a restart helps, which is
/// what a liveness check is for.
pub async fn health(State(st): State<AppState>) -> Response {
    match storage_failed(&st) {
        Some(err) => err.into_response(),
        None => Json(json!({ "status": "ok" })).into_response(),
    }
}

/// The answer of a node whose storage takes no more writes.
fn storage_failed(st: &AppState) -> Option<super::error::ApiError> {
    let reason = st.repl.kv.storage().failure()?;
    Some(crate::storage::StorageError::Failed(reason).into())
}

/// Ready once storage is open (it is before the listener serves) and every
/// seed has answered, so placement is computed over the whole cluster. A
/// decommissioned node is never ready: load balancers should stop sending
/// it requests (it still forwards those it gets). Nor is a node whose clock
/// most peers find far behind theirs: it refuses writes until it is right.
pub async fn ready(State(st): State<AppState>) -> Response {
    if let Some(err) = storage_failed(&st) {
        err.into_response()
    } else if st.repl.membership.is_retired() {
        let err = super::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            super::error::DECOMMISSIONED,
            "this node left the cluster for good",
        );
        err.into_response()
    } else if let Err(e) = st.repl.kv.hlc().check_trusted() {
        super::error::ApiError::from(e).into_response()
    } else if st.repl.membership.is_ready() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        let why = st.repl.membership.seed_refusal().unwrap_or_else(|| "waiting for seeds to answer".into());
        super::error::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response()
    }
}

pub async fn mail(State(st): State<AppState>) -> Json<serde_json::Value> {
    use crate::clock::Clock;
    let peers = st.repl.mailbox.stats(crate::clock::SystemClock.now_ms());
    Json(json!({ "node": st.node, "peers": peers }))
}

pub async fn cluster(State(st): State<AppState>) -> Json<serde_json::Value> {
    let m = &st.repl.membership;
    Json(json!({
        "node": st.node,
        "shard_count": m.shards(),
        "members": m.statuses(),
        "removed": m.removed(),
        "ready": m.is_ready(),
        "clock_offsets_ms": st.clocks.peers.offsets(),
        // Why this node stamps no writes by its clock, if it does not.
        "clock_refusal": st.repl.kv.hlc().check_trusted().err().map(|e| e.to_string()),
    }))
}

/// `POST /admin/members/{id}/remove`: takes a member that is down out of the
/// cluster; `202` once the removal is handed to gossip.
pub async fn remove_member(
    State(st): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, super::error::ApiError> {
    use super::error::ApiError;
    use crate::membership::MembershipError as E;
    match st.repl.membership.remove(&id) {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({ "removing": id }))).into_response()),
        Err(e @ E::NotAMember(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e @ (E::RemoveSelf | E::NotDown { .. })) => Err(ApiError::new(StatusCode::CONFLICT, "member_not_removable", e.to_string())),
        Err(e @ E::Busy) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
    }
}

/// `POST /admin/decommission`: takes this node out of the cluster and hands
/// off everything it holds; `202` with the progress of
/// [`decommission_status`].
pub async fn decommission(State(st): State<AppState>) -> Result<Response, super::error::ApiError> {
    use super::error::ApiError;
    use crate::membership::MembershipError as E;
    match st.repl.membership.retire() {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(drain_progress(&st))).into_response()),
        Err(e @ E::TooFewMembers { .. }) => Err(ApiError::new(StatusCode::CONFLICT, "not_decommissionable", e.to_string())),
        Err(e @ E::NotReady) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e.to_string())),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
    }
}

/// `GET /admin/decommission`: `member`, or `draining` while this node still
/// holds records, then `drained` (safe to stop and wipe).
pub async fn decommission_status(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(drain_progress(&st))
}

fn drain_progress(st: &AppState) -> serde_json::Value {
    let storage = st.repl.kv.storage();
    let held: Vec<u64> = (0..storage.shard_count()).map(|s| storage.counts(ShardId(s)).records).filter(|n| *n > 0).collect();
    let records: u64 = held.iter().sum();
    let state = match (st.repl.membership.is_retired(), records) {
        (false, _) => "member",
        (true, 0) => "drained",
        (true, _) => "draining",
    };
    json!({ "node": st.node, "state": state, "records_left": records, "shards_left": held.len() })
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let storage = st.repl.kv.storage();
    for s in 0..storage.shard_count() {
        let counts = storage.counts(ShardId(s));
        let label = crate::metrics::ShardLabels { shard: s.to_string() };
        st.metrics.shard_keys.get_or_create(&label).set(counts.live as i64);
        st.metrics.shard_records.get_or_create(&label).set(counts.records as i64);
    }
    st.metrics.storage_bytes.set(storage.size_on_disk());
    st.metrics.storage_failed.set(i64::from(storage.failure().is_some()));
    st.metrics.quarantined.set(storage.quarantine().total());
    st.metrics.clock_refusing_ms.set(st.repl.kv.hlc().check_trusted().err().map_or(0, |e| e.ahead_ms()));
    let now = st.repl.kv.hlc().wall_ms();
    for (s, at) in st.ae.last_verified().iter().enumerate() {
        if let Some(at) = at {
            let label = crate::metrics::ShardLabels { shard: s.to_string() };
            st.metrics.shard_last_verified.get_or_create(&label).set(now.saturating_sub(*at) as f64 / 1000.0);
        }
    }
    for (peer, offset_ms) in st.clocks.peers.offsets() {
        st.metrics.peer_clock_offset.get_or_create(&crate::metrics::PeerLabels { peer }).set(offset_ms);
    }
    // Every state is reported, zero included, so a dashboard sees "0 dead".
    let mut by_state: std::collections::BTreeMap<&str, i64> =
        crate::gossip::State::ALL.iter().map(|s| s.name()).chain(["unknown"]).map(|s| (s, 0)).collect();
    for m in st.repl.membership.statuses() {
        *by_state.entry(m.state).or_default() += 1;
    }
    for (state, n) in by_state {
        st.metrics.members.get_or_create(&crate::metrics::StateLabels { state: state.to_string() }).set(n);
    }
    for peer in st.repl.mailbox.stats(0) {
        st.metrics.mail_pending.get_or_create(&crate::metrics::PeerLabels { peer: peer.peer }).set(peer.pending_records as i64);
    }
    let mut resp = st.metrics.render().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    resp
}

#[derive(serde::Serialize)]
struct ShardInfo {
    id: u32,
    /// Replicas in ring order.
    replicas: Vec<String>,
    keys: u64,
    records: u64,
    /// This node's Merkle root of the shard, hex.
    root: String,
    /// Peers whose copy of this shard missed writes this node had to drop.
    dirty_peers: Vec<String>,
    /// Unix ms the shard was last verified equal on all replicas (by a run on this node).
    last_verified_ms: Option<u64>,
    /// Damaged records of this shard moved aside at open (see README, "Damaged records").
    quarantined: u64,
}

/// Largest listing of `GET /admin/quarantine`.
const MAX_QUARANTINE_LISTING: usize = 1000;

/// `GET /admin/quarantine`: the damaged records this node set aside at open
/// (the first 1000, by shard and key), and whether each key is restored.
pub async fn quarantine(State(st): State<AppState>) -> Result<Json<serde_json::Value>, super::error::ApiError> {
    let storage = st.repl.kv.storage();
    let mut records = storage.quarantined(MAX_QUARANTINE_LISTING + 1)?;
    let more = records.len() > MAX_QUARANTINE_LISTING;
    records.truncate(MAX_QUARANTINE_LISTING);
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| json!({ "shard": r.shard, "key": crate::types::encode_key_bytes(&r.key), "bytes": r.bytes, "restored": r.restored }))
        .collect();
    Ok(Json(json!({ "node": st.node, "held": storage.quarantine().total(), "records": records, "more": more })))
}

/// `DELETE /admin/quarantine`: drops the damaged bytes of every record a
/// peer's copy has restored; those still missing stay.
pub async fn release_quarantine(State(st): State<AppState>) -> Result<Json<serde_json::Value>, super::error::ApiError> {
    let storage = st.repl.kv.storage();
    let released = storage.release_restored()?;
    if released > 0 {
        tracing::info!(released, "released restored records from the quarantine");
    }
    Ok(Json(json!({ "node": st.node, "released": released, "held": storage.quarantine().total() })))
}

pub async fn shards(State(st): State<AppState>) -> Json<serde_json::Value> {
    let storage = st.repl.kv.storage();
    let placement = st.repl.membership.placement();
    let members = st.repl.membership.members();
    let dirty: Vec<(String, Vec<u32>)> = members.iter().map(|m| (m.id.clone(), st.repl.mailbox.dirty_shards(&m.id))).collect();
    let verified = st.ae.last_verified();
    let quarantine = storage.quarantine();
    let shards: Vec<ShardInfo> = (0..storage.shard_count())
        .map(|s| {
            let c = storage.counts(ShardId(s));
            let replicas = placement.replicas(ShardId(s)).iter().map(|n| n.name().to_string()).collect();
            let root = crate::merkle::hex(&storage.trees().shard(s).root());
            let dirty_peers = dirty.iter().filter(|(_, d)| d.contains(&s)).map(|(p, _)| p.clone()).collect();
            let last_verified_ms = verified.get(s as usize).copied().flatten();
            let quarantined = quarantine.held.get(&s).copied().unwrap_or(0);
            ShardInfo { id: s, replicas, keys: c.live, records: c.records, root, dirty_peers, last_verified_ms, quarantined }
        })
        .collect();
    Json(json!({ "node": st.node, "shard_count": storage.shard_count(), "shards": shards }))
}
