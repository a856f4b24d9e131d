//! `/admin/anti-entropy...`: start, watch, cancel and schedule repair runs.

use super::error::ApiError;
use super::AppState;
use crate::repair::{RepairError, RunMode};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

impl From<RepairError> for ApiError {
    fn from(e: RepairError) -> ApiError {
        match e {
            RepairError::AlreadyRunning(_) => ApiError::new(StatusCode::CONFLICT, "already_running", e.to_string()),
            RepairError::NoSuchRun(_) => ApiError::not_found(e.to_string()),
            RepairError::NoSuchShard { .. } | RepairError::NoShards | RepairError::BadInterval(_) => ApiError::bad_request(e.to_string()),
            RepairError::Storage(s) => s.into(),
            RepairError::Kv(k) => k.into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    shards: Option<Vec<u32>>,
    mode: Option<RunMode>,
}

fn json_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body is not valid JSON for this route: {e}")))
}

pub async fn start(State(st): State<AppState>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: StartBody = json_body(&body)?;
    match st.ae.start(req.shards, req.mode.unwrap_or_default(), "admin") {
        Ok(run_id) => Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": run_id }))).into_response()),
        // The usual error body, plus the running id so the caller can watch or cancel it.
        Err(RepairError::AlreadyRunning(id)) => {
            let message = RepairError::AlreadyRunning(id.clone()).to_string();
            let body = json!({ "error": "already_running", "message": message, "run_id": id });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn status(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "node": st.node,
        "schedule": st.ae.schedule(),
        "running": st.ae.running(),
        "history": st.ae.history(),
    }))
}

pub async fn cancel(State(st): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    st.ae.cancel(&id)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": id, "status": "cancelling" }))).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    enabled: Option<bool>,
    interval_secs: Option<u64>,
    /// 0: unlimited.
    max_bytes_per_sec: Option<u64>,
}

pub async fn schedule(State(st): State<AppState>, body: axum::body::Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let req: ScheduleBody = json_body(&body)?;
    let current = st.ae.schedule();
    let s = st
        .ae
        .set_schedule(
            req.enabled.unwrap_or(current.enabled),
            req.interval_secs.unwrap_or(current.interval_secs),
            req.max_bytes_per_sec.unwrap_or(current.max_bytes_per_sec),
        )
        .await?;
    Ok(Json(json!({ "schedule": s })))
}
