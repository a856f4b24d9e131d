//! Strict parsing of request inputs the router leaves raw: query strings
//! (percent-decoded to bytes, unknown or repeated names refused) and the
//! conditional headers `If-Match` and `If-None-Match`.

use super::error::ApiError;
use crate::storage::Precondition;
use crate::types::{decode_percent, Consistency, MAX_KEY_LEN};
use axum::http::{header, HeaderMap, HeaderValue};

/// Decoded query parameters of one request.
pub struct Query(Vec<(String, Vec<u8>)>);

impl Query {
    /// Parses `raw`, refusing names not in `allowed` (a typo such as `W=all`
    /// must not silently fall back to a default) and values over 3 KiB.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query, ApiError> {
        let mut out = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !allowed.contains(&name) {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {:?}; this route takes: {}",
                    name.chars().take(40).collect::<String>(),
                    allowed.join(", ")
                )));
            }
            if out.iter().any(|(seen, _)| seen == name) {
                // `?w=one&w=all` has no one meaning: refuse it rather than pick one.
                return Err(ApiError::bad_request(format!("query parameter {name} is given more than once")));
            }
            if value.len() > 3 * MAX_KEY_LEN {
                return Err(ApiError::bad_request(format!("query parameter {name} is too long")));
            }
            let decoded = decode_percent(value).map_err(|e| ApiError::bad_request(format!("query parameter {name}: {e}")))?;
            out.push((name.to_string(), decoded));
        }
        Ok(Query(out))
    }

    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    pub fn text(&self, name: &str) -> Result<Option<&str>, ApiError> {
        self.bytes(name)
            .map(|b| std::str::from_utf8(b).map_err(|_| ApiError::bad_request(format!("query parameter {name} is not UTF-8"))))
            .transpose()
    }

    pub fn consistency(&self, name: &str) -> Result<Consistency, ApiError> {
        Ok(self.text(name)?.map(str::parse).transpose()?.unwrap_or_default())
    }

    pub fn usize_in(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        let Some(text) = self.text(name)? else { return Ok(default) };
        match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!("{name} must be an integer in 1..={max}, got {text:?}"))),
        }
    }
}

/// The write's precondition from its conditional headers:
/// - `If-Match: *`: the key must exist;
/// - `If-Match: "<version>"` (one entity tag): it must be at that version;
/// - `If-None-Match: *`: it must not exist (create only), where `absent_ok`:
///   a DELETE that may only delete nothing is a mistake, not a request.
///
/// Both headers at once, or `If-None-Match` with a tag, is refused rather
/// than half honoured.
pub fn precondition(headers: &HeaderMap, absent_ok: bool) -> Result<Precondition, ApiError> {
    match (single(headers, header::IF_MATCH)?, single(headers, header::IF_NONE_MATCH)?) {
        (None, None) => Ok(Precondition::None),
        (Some(_), Some(_)) => Err(ApiError::bad_request("send If-Match or If-None-Match, not both")),
        (Some(raw), None) => match ascii("If-Match", raw)? {
            "*" => Ok(Precondition::Exists),
            tag => Ok(Precondition::VersionIs(unquote(tag).parse()?)),
        },
        (None, Some(raw)) => match ascii("If-None-Match", raw)? {
            "*" if absent_ok => Ok(Precondition::Absent),
            "*" => Err(ApiError::bad_request("If-None-Match: * is for PUT (create only); a DELETE takes If-Match")),
            _ => Err(ApiError::bad_request("If-None-Match takes only * (create only); to compare versions use If-Match")),
        },
    }
}

/// A header that may appear once: a second line would be a second
/// condition this API does not combine, so it is refused, not dropped.
fn single(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&HeaderValue>, ApiError> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    match values.next() {
        Some(_) => Err(ApiError::bad_request(format!("send one {name} header, not several"))),
        None => Ok(first),
    }
}

/// A conditional header's value, trimmed.
fn ascii<'a>(name: &str, raw: &'a HeaderValue) -> Result<&'a str, ApiError> {
    Ok(raw.to_str().map_err(|_| ApiError::bad_request(format!("{name} is not ASCII")))?.trim())
}

/// An entity tag without its quotes (a bare version is taken as well).
fn unquote(tag: &str) -> &str {
    tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag)
}

const MAX_TAGS: usize = 64;

/// A GET's `If-None-Match`: `*`, or entity tags (weak ones compare as
/// strong, as RFC 9110 allows here) — the reader already holds one of these
/// versions, so the answer is `304 Not Modified` when the key is still at it.
pub enum NoneMatch {
    Any,
    Versions(Vec<crate::types::Version>),
}

impl NoneMatch {
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<NoneMatch>, ApiError> {
        let Some(raw) = single(headers, header::IF_NONE_MATCH)? else { return Ok(None) };
        let text = ascii("If-None-Match", raw)?;
        if text == "*" {
            return Ok(Some(NoneMatch::Any));
        }
        let tags = || text.split(',').map(str::trim).filter(|t| !t.is_empty());
        if tags().count() > MAX_TAGS {
            return Err(ApiError::bad_request(format!("If-None-Match lists more than {MAX_TAGS} entity tags")));
        }
        let versions = tags().map(|t| {
            let strong = t.strip_prefix("W/").unwrap_or(t);
            unquote(strong).parse().map_err(|e| ApiError::bad_request(format!("If-None-Match: {e}")))
        });
        Ok(Some(NoneMatch::Versions(versions.collect::<Result<_, _>>()?)))
    }

    pub fn matches(&self, version: crate::types::Version) -> bool {
        match self {
            NoneMatch::Any => true,
            NoneMatch::Versions(v) => v.contains(&version),
        }
    }
}
