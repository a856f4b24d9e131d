//! A node's settings, as `hearsay serve` and the test harness give them.

use crate::types::NodeId;
use std::path::PathBuf;

/// When an acknowledged write is on disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Flush before acknowledging; concurrent writes share one flush.
    Always,
    /// sled flushes in the background about every 500 ms.
    #[default]
    Periodic,
}

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Address other nodes and clients should use to reach this node.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// `None`: the data dir's stored count, or the default for a new dir.
    pub shards: Option<u32>,
    pub sync: SyncMode,
    pub max_value_bytes: usize,
    pub cache_bytes: u64,
}

/// Default largest value: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Default sled page cache: 256 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

impl NodeConfig {
    /// Defaults for a node with this name and data dir.
    pub fn new(node_id: NodeId, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            node_id,
            advertise: None,
            data_dir,
            shards: None,
            sync: SyncMode::Periodic,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}
