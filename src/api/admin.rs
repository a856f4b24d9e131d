//! Operational routes: `/health`, `/ready`, `/metrics`, `/admin/shards`.

use super::AppState;
use crate::types::ShardId;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(st): State<AppState>) -> Response {
    // The store is opened before the listener serves, so a serving node is
    // ready; membership adds "joined" to this once it exists.
    let _ = &st;
    (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let storage = st.kv.storage();
    for s in 0..storage.shard_count() {
        let counts = storage.counts(ShardId(s));
        let label = crate::metrics::ShardLabels { shard: s.to_string() };
        st.metrics.shard_keys.get_or_create(&label).set(counts.live as i64);
        st.metrics.shard_records.get_or_create(&label).set(counts.records as i64);
    }
    st.metrics.storage_bytes.set(storage.size_on_disk());
    let mut resp = st.metrics.render().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    resp
}

#[derive(serde::Serialize)]
struct ShardInfo {
    id: u32,
    keys: u64,
    records: u64,
}

pub async fn shards(State(st): State<AppState>) -> Json<serde_json::Value> {
    let storage = st.kv.storage();
    let shards: Vec<ShardInfo> = (0..storage.shard_count())
        .map(|s| {
            let c = storage.counts(ShardId(s));
            ShardInfo { id: s, keys: c.live, records: c.records }
        })
        .collect();
    Json(json!({ "node": st.node, "shard_count": storage.shard_count(), "shards": shards }))
}
