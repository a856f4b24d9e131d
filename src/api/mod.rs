//! The public and admin HTTP API (DESIGN.md §9): the router, the shared
//! handler state, and two layers every route passes through: request metrics
//! and JSON errors (so even axum's own rejections answer in JSON). The
//! listener they are served on, with its connection bound and read
//! timeout, is [`server`].

pub mod admin;
pub mod error;
pub mod internal;
pub mod kv;
pub mod params;
pub mod repair;
pub mod server;

use crate::metrics::{HttpLabels, Metrics};
use crate::replication::Replication;
use crate::rpc::mac::MacKey;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Instant;

/// What every handler can reach: one `Arc`, so the clones axum makes per
/// request (each extractor, each layer) cost a reference count, not an allocation.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub repl: Arc<Replication>,
    pub ae: Arc<crate::repair::AntiEntropy>,
    /// When set, `/admin/...` needs `Authorization: Bearer <token>`.
    pub admin_token: Option<Arc<str>>,
    pub metrics: Arc<Metrics>,
    pub node: String,
    pub max_value_bytes: usize,
    /// Largest peer request body (a batch of records).
    pub max_internal_bytes: usize,
    /// How long a request body may take to arrive (`--read-timeout-secs`).
    pub read_timeout: std::time::Duration,
    /// `None` only under `--insecure`.
    pub mac: Option<Arc<MacKey>>,
    /// Peers' clock offsets and this node's verdict on its own clock.
    pub clocks: Arc<crate::clock::ClockWatch>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/kv", get(kv::list))
        .route("/v1/kv/", get(kv::empty_key).put(kv::empty_key).delete(kv::empty_key))
        .route("/v1/kv/{*key}", get(kv::get).put(kv::put).delete(kv::delete))
        .route("/health", get(admin::health))
        .route("/ready", get(admin::ready))
        .route("/metrics", get(admin::metrics))
        .route("/admin/shards", get(admin::shards))
        .route("/admin/quarantine", get(admin::quarantine).delete(admin::release_quarantine))
        .route("/admin/mail", get(admin::mail))
        .route("/admin/cluster", get(admin::cluster))
        .route("/admin/members/{id}/remove", post(admin::remove_member))
        .route("/admin/decommission", get(admin::decommission_status).post(admin::decommission))
        .route("/admin/anti-entropy", get(repair::status).post(repair::start))
        .route("/admin/anti-entropy/schedule", axum::routing::put(repair::schedule))
        .route("/admin/anti-entropy/{run_id}", axum::routing::delete(repair::cancel))
        .route(crate::rpc::PATH_LIST, post(internal::list))
        .route(crate::rpc::PATH_TREE, post(internal::tree))
        .route(crate::rpc::PATH_LEAVES, post(internal::leaves))
        .route(crate::rpc::PATH_FETCH, post(internal::fetch))
        .route(crate::rpc::PATH_SYNC, post(internal::sync))
        .route(crate::rpc::PATH_VERIFIED, post(internal::verified))
        .route(crate::rpc::PATH_APPLY, post(internal::apply))
        .route(crate::rpc::PATH_READ, post(internal::read))
        .route(crate::rpc::PATH_HELLO, post(internal::hello))
        .route(crate::rpc::PATH_GOSSIP, post(internal::gossip))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), admin_auth))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), track_metrics))
        // The body limit is enforced in the handlers with a clear message;
        // axum's default 2 MB cap must not pre-empt a larger --max-value-bytes.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// `/admin/...` requires the admin token when one is configured.
async fn admin_auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.admin_token {
        if req.uri().path().starts_with("/admin") {
            let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
            // Compare digests so the check takes the same time for any wrong token.
            let ok = given.is_some_and(|g| blake3::hash(g.as_bytes()) == blake3::hash(token.as_bytes()));
            if !ok {
                return ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "admin routes need Authorization: Bearer <admin token>",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

async fn track_metrics(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let resp = next.run(req).await;
    let labels = HttpLabels { method, route, status: resp.status().as_u16().to_string() };
    st.metrics.observe_request(labels, start.elapsed().as_secs_f64());
    resp
}

/// Rewrites any error response that is not already JSON (axum's 405, a
/// rejected extractor) into the `{"error","message"}` shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match body.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let message = if text.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let err = ApiError::new(status, ApiError::code_for_status(status), message);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, err.body()).into_response()
}
