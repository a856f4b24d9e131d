//! `/v1/kv/...`: PUT, GET, DELETE of one key and the paged key listing.
//! Handlers check every input (key, query, conditional headers, body size) before the
//! store is touched, so a refused request changes nothing.

use super::error::ApiError;
use super::params::{precondition, NoneMatch, Query};
use super::AppState;
use crate::replication::WriteOutcome;
use crate::types::{encode_key_bytes, Key, MAX_KEY_LEN};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::BodyExt;

const KV_PREFIX: &str = "/v1/kv/";
/// Largest page of a key listing.
pub const MAX_LIST_LIMIT: usize = 1000;

fn key_from(uri: &Uri) -> Result<Key, ApiError> {
    let encoded = uri.path().strip_prefix(KV_PREFIX).unwrap_or("");
    Ok(Key::from_url_path(encoded)?)
}

fn etag(version: crate::types::Version) -> [(header::HeaderName, HeaderValue); 2] {
    let hex = version.hex();
    let mut quoted = [b'"'; 35];
    quoted[1..34].copy_from_slice(&hex);
    // One buffer serves both headers: the version is the ETag without its quotes.
    let quoted = Bytes::copy_from_slice(&quoted);
    let bare = quoted.slice(1..34);
    [
        (header::ETAG, HeaderValue::from_maybe_shared(quoted).expect("hex is a valid header")),
        (header::HeaderName::from_static("x-hearsay-version"), HeaderValue::from_maybe_shared(bare).expect("hex is a valid header")),
    ]
}

fn written(outcome: WriteOutcome, created_status: StatusCode) -> Response {
    let status = if outcome.created { created_status } else { StatusCode::NO_CONTENT };
    (status, etag(outcome.version)).into_response()
}

/// Reads a request body of at most `max` bytes: a declared length over the
/// limit is refused before reading, and the read itself stops at the limit.
/// A body that has not all arrived within the read timeout is refused
/// (`408`), so a client sending slowly cannot hold the request forever.
pub async fn read_limited(st: &AppState, body: Body, headers: &HeaderMap, max: usize) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::too_large(declared, max));
    }
    let Ok(read) = tokio::time::timeout(st.read_timeout, http_body_util::Limited::new(body, max).collect()).await else {
        st.metrics.http_read_timeouts.inc();
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {} s (--read-timeout-secs)", st.read_timeout.as_secs_f64()),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(None, max)),
        Err(e) => Err(ApiError::bad_request(format!("reading the request body failed: {e}"))),
    }
}

/// Takes the whole request so its URI and headers are read in place, not
/// cloned out by extractors.
pub async fn put(State(st): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let key = key_from(&parts.uri)?;
    let query = Query::parse(parts.uri.query(), &["w"])?;
    let w = query.consistency("w")?;
    let pre = precondition(&parts.headers, true)?;
    let value = read_limited(&st, body, &parts.headers, st.max_value_bytes).await?;
    let outcome = st.repl.write(key, Some(value), pre, w).await?;
    Ok(written(outcome, StatusCode::CREATED))
}

pub async fn delete(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = key_from(&uri)?;
    let query = Query::parse(uri.query(), &["w"])?;
    let w = query.consistency("w")?;
    let pre = precondition(&headers, false)?;
    let outcome = st.repl.write(key, None, pre, w).await?;
    Ok(written(outcome, StatusCode::NO_CONTENT))
}

pub async fn get(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = key_from(&uri)?;
    let query = Query::parse(uri.query(), &["r"])?;
    let r = query.consistency("r")?;
    let unchanged = NoneMatch::from_headers(&headers)?;
    match st.repl.read(&key, r).await? {
        Some(crate::types::Record { version, value: Some(_) }) if unchanged.as_ref().is_some_and(|u| u.matches(version)) => {
            Ok((StatusCode::NOT_MODIFIED, etag(version)).into_response())
        }
        Some(crate::types::Record { version, value: Some(value) }) => {
            let mut resp = (StatusCode::OK, etag(version), value).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            Ok(resp)
        }
        _ => Err(ApiError::not_found(format!("key {} does not exist", key.to_url_path()))),
    }
}

/// An empty key (`/v1/kv/`) is a bad request, not a missing route.
pub async fn empty_key() -> ApiError {
    ApiError::from(crate::types::KeyError::Empty)
}

#[derive(serde::Serialize)]
pub struct ListBody {
    /// Keys in byte order, percent-encoded as in `/v1/kv/{key}` URLs.
    keys: Vec<String>,
    /// Pass as `after=` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

/// Refuses a listing's `prefix` or `after` longer than any key.
pub fn check_list_bounds(prefix: &[u8], after: Option<&[u8]>) -> Result<(), ApiError> {
    for (name, v) in [("prefix", Some(prefix)), ("after", after)] {
        if v.is_some_and(|v| v.len() > MAX_KEY_LEN) {
            return Err(ApiError::bad_request(format!("{name} is longer than a key can be ({MAX_KEY_LEN} bytes)")));
        }
    }
    Ok(())
}

pub async fn list(State(st): State<AppState>, uri: Uri) -> Result<Json<ListBody>, ApiError> {
    let query = Query::parse(uri.query(), &["prefix", "limit", "after"])?;
    let prefix = query.bytes("prefix").unwrap_or(b"");
    let after = query.bytes("after");
    check_list_bounds(prefix, after)?;
    let limit = query.usize_in("limit", 100, MAX_LIST_LIMIT)?;
    let page = st.repl.list(prefix, after, limit).await?;
    let keys: Vec<String> = page.keys.iter().map(|k| encode_key_bytes(k)).collect();
    let next_after = if page.more { keys.last().cloned() } else { None };
    Ok(Json(ListBody { keys, next_after }))
}
