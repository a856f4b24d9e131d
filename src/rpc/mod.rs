//! Peer protocol (DESIGN.md §7): the messages nodes exchange under
//! `/internal/...`, their one codec ([`codec`]: a format byte, then postcard),
//! request authentication ([`mac`]) and the pooled, signing peer client
//! ([`client`]). The server side lives in `api::internal`.

pub mod client;
pub mod codec;
pub mod mac;

use crate::types::{check_key_len, Key, KeyError, Record, Version};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One record on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireRecord {
    pub key: Bytes,
    pub hlc: u64,
    pub node: u64,
    pub value: Option<Bytes>,
}

impl WireRecord {
    pub fn new(key: &Key, record: &Record) -> WireRecord {
        WireRecord { key: key.bytes(), hlc: record.version.hlc, node: record.version.node, value: record.value.clone() }
    }

    /// Checks the limits a public request would have to meet.
    pub fn into_parts(self, max_value_bytes: usize) -> Result<(Key, Record), WireError> {
        check_key_len(self.key.len())?;
        if let Some(v) = &self.value {
            if v.len() > max_value_bytes {
                return Err(WireError::ValueTooLarge { len: v.len(), max: max_value_bytes });
            }
        }
        let record = Record { version: Version { hlc: self.hlc, node: self.node }, value: self.value };
        Ok((Key::new(self.key)?, record))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
}

/// `POST /internal/apply`: records for the receiver to apply (last writer wins).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApplyBatch {
    pub records: Vec<WireRecord>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApplyReply {
    /// Records that were newer than what the receiver held.
    pub applied: u32,
    /// Per record of the batch: it was stored where no live value was.
    pub created: Vec<bool>,
}

/// `POST /internal/read`: the receiver's record for one key.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub key: Bytes,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ReadReply {
    pub record: Option<WireRecord>,
}

/// `POST /internal/hello`: introduce yourself and learn the members.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node: String,
    pub addr: String,
    pub shards: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    pub node: String,
    pub addr: String,
    pub shards: u32,
    /// (name, address) of every member the receiver knows.
    pub members: Vec<(String, String)>,
}

pub const PATH_APPLY: &str = "/internal/apply";
pub const PATH_READ: &str = "/internal/read";
pub const PATH_HELLO: &str = "/internal/hello";
