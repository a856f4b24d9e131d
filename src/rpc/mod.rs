//! Peer protocol (DESIGN.md §7): the messages nodes exchange under
//! `/internal/...`, their one codec ([`codec`]: a format byte, then postcard),
//! request authentication ([`mac`]) and the pooled, signing peer client
//! ([`client`]). The server side lives in `api::internal`.

pub mod client;
pub mod codec;
#[cfg(test)]
mod fingerprint;
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
    /// Indices of the records refused as older than the receiver's purge
    /// floor for keys it does not hold: deleted values whose tombstones were
    /// purged (`storage::floor`). The sender's copy of them is stale.
    pub below_floor: Vec<u32>,
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
    /// `--replication-factor`: placement depends on it, so every member
    /// must run with the same one.
    pub rf: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    pub node: String,
    pub addr: String,
    pub shards: u32,
    pub rf: u32,
    /// (name, address) of every member the receiver knows.
    pub members: Vec<(String, String)>,
}

/// Which way records flow in an anti-entropy exchange.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// I send what you lack.
    Push,
    /// You send what I lack.
    Pull,
    /// Both.
    PushPull,
}

impl SyncMode {
    pub fn pushes(self) -> bool {
        matches!(self, SyncMode::Push | SyncMode::PushPull)
    }
    pub fn pulls(self) -> bool {
        matches!(self, SyncMode::Pull | SyncMode::PushPull)
    }
}

/// `POST /internal/tree`: digests (first 16 bytes) of part of a shard's
/// Merkle tree: level 0 (root), 1 (inner nodes) or 2 (leaves); with
/// `children`, `indices` name inner nodes and every leaf under each is sent.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TreeRequest {
    pub shard: u32,
    /// The sender's shard count, so mismatched clusters fail loudly.
    pub shards: u32,
    pub level: u8,
    pub indices: Vec<u32>,
    pub children: bool,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TreeReply {
    pub digests: Vec<[u8; 16]>,
    /// Records in the shard (values and tombstones): where a ring run starts.
    pub records: u64,
    /// The answering node counts itself among the shard's replicas: a
    /// hand-off drops its copy only after a push to such a node.
    pub replicates: bool,
}

/// `POST /internal/leaves`: fingerprints of my records in some leaves; the
/// receiver compares them with its own and says what each side must send.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeafDiff {
    pub shard: u32,
    pub shards: u32,
    pub mode: SyncMode,
    /// Keys the fingerprints; fresh for every request.
    pub nonce: u64,
    pub leaves: Vec<u32>,
    /// How many fingerprints belong to each leaf, in `leaves` order.
    pub counts: Vec<u32>,
    pub fingerprints: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LeafDiffReply {
    /// Bitmap over the request's fingerprints: records the receiver lacks (pushed to it).
    pub want: Vec<u8>,
    /// Keys of records the receiver holds and the sender lacks (pulled from it).
    pub newer: Vec<Bytes>,
}

/// `POST /internal/fetch`: the receiver's records for these keys.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub keys: Vec<Bytes>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FetchReply {
    pub records: Vec<WireRecord>,
}

/// `POST /internal/sync`: run one exchange with `peer` on `shard` (a ring hop).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub shard: u32,
    pub shards: u32,
    pub peer: String,
    pub mode: SyncMode,
}

/// What one exchange did, as seen by the node that ran it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The two roots already matched: one comparison, no data.
    pub equal: bool,
    pub leaves_diverged: u64,
    pub keys_sent: u64,
    pub keys_received: u64,
    /// Peer-protocol bytes the exchange moved, both directions, headers included.
    pub bytes: u64,
    /// Bytes of the records themselves (key + value) that were moved.
    pub record_bytes: u64,
    /// The peer counts itself among the shard's replicas (from its tree
    /// reply). Known only to the node that ran the exchange: not on the wire.
    #[serde(skip)]
    pub peer_replicates: bool,
}

/// The cluster-wide anti-entropy schedule: a gossip setting's value
/// (`repair::SCHEDULE_SETTING`), and as JSON in the admin API and the data
/// dir. The newest stamp wins everywhere.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub enabled: bool,
    pub interval_secs: u64,
    /// Each node's limit on the record bytes its exchanges and hand-offs
    /// move per second (`repair::throttle`); 0 is unlimited. Absent in
    /// schedules stored as JSON before it existed.
    #[serde(default)]
    pub max_bytes_per_sec: u64,
    /// HLC stamp of the change.
    pub stamp: u64,
}

/// `POST /internal/verified`: a run found `shard` equal (with this root) on
/// all of `replicas`; members settle their dirty marks for it and queue its
/// tombstone purge (`repair::purge`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub shard: u32,
    pub shards: u32,
    pub root: [u8; 32],
    pub replicas: Vec<String>,
    /// Unix ms, by the verifying node's clock, before any root compared was read.
    pub checked_at_ms: u64,
}

/// `POST /internal/list`: the live keys of some shards in key order, for a
/// listing that spans shards the asking node holds no copy of.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub ids: Vec<u32>,
    /// The sender's shard count (a peer with another one is refused).
    pub shards: u32,
    pub prefix: Bytes,
    pub after: Option<Bytes>,
    pub limit: u32,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ListReply {
    pub keys: Vec<Bytes>,
    /// More keys follow the last one in these shards.
    pub more: bool,
}

pub const PATH_LIST: &str = "/internal/list";
pub const PATH_VERIFIED: &str = "/internal/verified";
pub const PATH_TREE: &str = "/internal/tree";
pub const PATH_LEAVES: &str = "/internal/leaves";
pub const PATH_FETCH: &str = "/internal/fetch";
pub const PATH_SYNC: &str = "/internal/sync";
pub const PATH_APPLY: &str = "/internal/apply";
pub const PATH_READ: &str = "/internal/read";
pub const PATH_HELLO: &str = "/internal/hello";
/// A gossip [`crate::gossip::Envelope`]; the reply is empty.
pub const PATH_GOSSIP: &str = "/internal/gossip";
