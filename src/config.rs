//! A node's settings, as `hearsay serve` and the test harness give them.

use crate::rpc::client::{AllLinksUp, LinkFilter};
use crate::types::NodeId;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The network policy a node's peer client obeys (tests cut links with it).
#[derive(Clone)]
pub struct Links(pub Arc<dyn LinkFilter>);

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Links")
    }
}

/// The wall clock a node stamps versions and signs requests by (tests give
/// a node a wrong one).
#[derive(Clone)]
pub struct WallClock(pub Arc<dyn crate::clock::Clock>);

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

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
    /// Addresses (`host:port`) of other nodes to join through.
    pub seeds: Vec<String>,
    pub replication_factor: usize,
    /// Key material for peer request MACs; `None` means `--insecure`.
    pub cluster_secret: Option<Vec<u8>>,
    /// How long a request waits for `w`/`r` replicas.
    pub write_timeout: Duration,
    pub retry_max_records: u64,
    pub retry_max_bytes: u64,
    pub links: Links,
    /// The anti-entropy schedule a node starts with if none is stored.
    pub anti_entropy_enabled: bool,
    pub anti_entropy_interval_secs: u64,
    /// 0: unlimited.
    pub repair_max_bytes_per_sec: u64,
    /// Bearer token required on `/admin/...`; `None` leaves them open.
    pub admin_token: Option<String>,
    /// How far ahead of this node's clock a received version may be; a node
    /// whose clock most peers find more than half this behind theirs stamps
    /// no writes.
    pub max_clock_drift: Duration,
    pub clock: WallClock,
    /// Tombstones older than this are purged once anti-entropy has verified
    /// their shard equal on every replica, and retry-buffer mail older than
    /// this is dropped (see `repair::purge`). Must be the same on every
    /// node. `None`: tombstones are kept forever and mail never expires.
    pub tombstone_grace: Option<Duration>,
    /// How long a purge waits after the verification it rests on: longer
    /// than any read or repair hop that began before it can still run.
    pub purge_delay: Duration,
    /// How often the node looks for shards it holds records of but no
    /// longer replicates, to hand them off ([`crate::repair::handoff`]), on
    /// top of the look it takes at start and after each placement change.
    /// `None` turns hand-off off: only tests that need a stale copy to stay
    /// put use that.
    pub handoff_every: Option<Duration>,
    /// The gossip failure detector's timings (DESIGN.md §6 defaults).
    pub gossip: crate::gossip::SwimConfig,
    /// How many connections are served, and how long a client may take to
    /// send a request or leave a connection idle.
    pub connections: crate::api::server::ConnectionLimits,
}

/// Default tombstone grace: one day.
pub const DEFAULT_TOMBSTONE_GRACE: Duration = Duration::from_secs(86_400);
/// Default purge delay: longer than a repair hop's 10-minute deadline.
pub const DEFAULT_PURGE_DELAY: Duration = Duration::from_secs(15 * 60);

pub const DEFAULT_ANTI_ENTROPY_INTERVAL_SECS: u64 = 600;
/// Scheduled runs are 10 s to a week apart, from the flag or the admin API.
pub const ANTI_ENTROPY_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 10..=604_800;

pub const DEFAULT_REPLICATION_FACTOR: usize = 3;
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_MAX_RECORDS: u64 = 100_000;
pub const DEFAULT_RETRY_MAX_BYTES: u64 = 256 << 20;

/// Default largest value: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Default sled page cache: 256 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;
/// The smallest page cache a node opens with: sled panics below 256 bytes,
/// and under a MiB it would reread its pages for nearly every request.
pub const MIN_CACHE_BYTES: u64 = 1 << 20;
/// The largest `--max-value-bytes`: a value is held whole in memory by the
/// request, the peer batch and the repair exchange that carry it, and must
/// fit the default retry buffer (256 MiB) to be kept for a peer.
pub const MAX_MAX_VALUE_BYTES: usize = 256 << 20;
/// The longest tombstone grace, ten years: the purge horizon is the grace
/// plus the clock drift allowance, which must not overflow.
pub const MAX_TOMBSTONE_GRACE_SECS: u64 = 10 * 365 * 86_400;

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
            seeds: Vec::new(),
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            cluster_secret: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            retry_max_records: DEFAULT_RETRY_MAX_RECORDS,
            retry_max_bytes: DEFAULT_RETRY_MAX_BYTES,
            links: Links(Arc::new(AllLinksUp)),
            anti_entropy_enabled: true,
            anti_entropy_interval_secs: DEFAULT_ANTI_ENTROPY_INTERVAL_SECS,
            repair_max_bytes_per_sec: 0,
            admin_token: None,
            max_clock_drift: Duration::from_millis(crate::clock::DEFAULT_MAX_DRIFT_MS),
            clock: WallClock(Arc::new(crate::clock::SystemClock)),
            tombstone_grace: Some(DEFAULT_TOMBSTONE_GRACE),
            purge_delay: DEFAULT_PURGE_DELAY,
            handoff_every: Some(crate::repair::handoff::HANDOFF_EVERY),
            gossip: crate::gossip::SwimConfig::default(),
            connections: crate::api::server::ConnectionLimits::default(),
        }
    }
}
