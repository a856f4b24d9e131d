//! `/internal/...`: the peer protocol's server side. Every request is
//! authenticated (unless the node runs `--insecure`) and decoded with the one
//! codec before anything is applied; a refused request changes nothing.

use super::error::ApiError;
use super::kv::read_limited;
use super::AppState;
use crate::clock::{Clock, SystemClock};
use crate::rpc::codec::{self, CONTENT_TYPE};
use crate::rpc::mac::HEADER;
use crate::rpc::{ApplyBatch, ApplyReply, Hello, ReadReply, ReadRequest, WireRecord};
use crate::types::Key;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads, authenticates and decodes a peer request body.
async fn accept<T: DeserializeOwned>(st: &AppState, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let body = read_limited(body, headers, st.max_internal_bytes).await?;
    if let Some(key) = &st.mac {
        let auth = headers.get(HEADER).and_then(|v| v.to_str().ok());
        key.verify(auth, "POST", uri.path(), &body, SystemClock.now_ms())
            .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string()))?;
    }
    codec::decode(&body).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn reply<T: Serialize>(msg: &T) -> Response {
    let mut resp = codec::encode(msg).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

pub async fn apply(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let batch: ApplyBatch = accept(&st, &uri, &headers, body).await?;
    // Validate the whole batch first, so a bad record applies nothing.
    let records = batch
        .records
        .into_iter()
        .map(|r| r.into_parts(st.max_value_bytes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (applied, created) = st.repl.kv.apply_batch(&records).await?;
    Ok(reply(&ApplyReply { applied, created }))
}

pub async fn read(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let req: ReadRequest = accept(&st, &uri, &headers, body).await?;
    let key = Key::new(req.key)?;
    let record = st.repl.kv.read(&key)?.map(|r| WireRecord::new(&key, &r));
    Ok(reply(&ReadReply { record }))
}

pub async fn hello(State(st): State<AppState>, uri: Uri, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let hello: Hello = accept(&st, &uri, &headers, body).await?;
    let membership = &st.repl.membership;
    membership
        .learn(&hello.node, &hello.addr, hello.shards)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "join_refused", e.to_string()))?;
    st.repl.ensure_carrier(&hello.node);
    Ok(reply(&membership.hello_reply()))
}
