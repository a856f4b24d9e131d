//! The one error type of the HTTP boundary: every failure becomes a JSON body
//! `{"error": "<code>", "message": "<human text>"}` with its status, mapped
//! here and nowhere else.

use crate::kv::KvError;
use crate::storage::StorageError;
use crate::types::{ConsistencyParseError, KeyError, VersionParseError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(size: Option<u64>, max: usize) -> ApiError {
        let size = size.map_or_else(|| "more than that".to_string(), |s| format!("{s} bytes"));
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("value is {size}; the limit is {max} bytes (--max-value-bytes)"),
        )
    }

    /// The code used for an error response that carried no JSON of its own.
    pub fn code_for_status(status: StatusCode) -> &'static str {
        match status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            404 => "not_found",
            405 => "method_not_allowed",
            408 => "timeout",
            409 => "conflict",
            412 => "precondition_failed",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            422 => "unprocessable",
            503 => "unavailable",
            s if s >= 500 => "internal",
            _ => "error",
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }
}

/// The `Retry-After` of a 503: every one is transient (a node starting,
/// replicas down, a clock being put right), except a node that left for good.
const RETRY_AFTER_SECS: HeaderValue = HeaderValue::from_static("1");

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::SERVICE_UNAVAILABLE && self.code != DECOMMISSIONED {
            resp.headers_mut().insert(header::RETRY_AFTER, RETRY_AFTER_SECS);
        }
        resp
    }
}

/// The code of a node that was decommissioned: it is never ready again.
pub const DECOMMISSIONED: &str = "decommissioned";

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string())
    }
}

impl From<ConsistencyParseError> for ApiError {
    fn from(e: ConsistencyParseError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<VersionParseError> for ApiError {
    fn from(e: VersionParseError) -> ApiError {
        ApiError::bad_request(format!("If-Match: {e}"))
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        if let StorageError::Failed(_) = e {
            // Logged once, when the storage failed. Another node may take
            // the request, so it is a 503 like any node that cannot serve.
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_failed", e.to_string());
        }
        tracing::error!(error = %e, "storage error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
    }
}

impl From<crate::replication::ReplicationError> for ApiError {
    fn from(e: crate::replication::ReplicationError) -> ApiError {
        use crate::replication::ReplicationError as R;
        match e {
            R::Kv(k) => k.into(),
            R::Storage(s) => s.into(),
            e @ (R::NotEnoughAcks { .. } | R::NotEnoughAnswers { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_enough_replicas", e.to_string())
            }
            e @ R::ShardsUnavailable { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shards_unavailable", e.to_string()),
        }
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> ApiError {
        match e {
            KvError::Storage(s) => s.into(),
            e @ KvError::PreconditionFailed { .. } => ApiError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", e.to_string()),
            e @ KvError::ClockSkew(_) => ApiError::new(StatusCode::CONFLICT, "clock_skew", e.to_string()),
            KvError::ClockAhead(c) => c.into(),
        }
    }
}

impl From<crate::clock::ClockAhead> for ApiError {
    fn from(e: crate::clock::ClockAhead) -> ApiError {
        let code = match e {
            crate::clock::ClockAhead::NotJudgedYet { .. } => "clock_unjudged",
            _ => "clock_ahead",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
    }
}
