//! The `hearsay` binary's command line: every subcommand and flag, each
//! flag with its `HEARSAY_*` env twin where a server would want one.
//! `main.rs` runs what is parsed here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use hearsay::bench::Workload;
use hearsay::clock::MAX_DRIFT_MS_RANGE;
use hearsay::config::{SyncMode, DEFAULT_CACHE_BYTES, DEFAULT_MAX_VALUE_BYTES, MAX_MAX_VALUE_BYTES, MAX_TOMBSTONE_GRACE_SECS};
use hearsay::config::{
    ANTI_ENTROPY_INTERVAL_SECS, DEFAULT_ANTI_ENTROPY_INTERVAL_SECS, DEFAULT_REPLICATION_FACTOR, DEFAULT_RETRY_MAX_BYTES,
    DEFAULT_RETRY_MAX_RECORDS, DEFAULT_WRITE_TIMEOUT, MIN_CACHE_BYTES,
};
use hearsay::storage::MAX_SHARDS;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "hearsay", version, about = "An eventually consistent, replicated key-value store")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "HEARSAY_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(ServeArgs),
    /// Run a local cluster on loopback (child processes), until Ctrl-C.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Node i listens on base-port + i - 1.
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
        /// Parent of the nodes' data dirs (kept between runs).
        #[arg(long, default_value = "hearsay-cluster")]
        data_dir: PathBuf,
        /// --sync of every node.
        #[arg(long, value_enum, default_value_t = SyncMode::Periodic)]
        sync: SyncMode,
        /// --replication-factor of every node (replicas per shard, capped
        /// at the cluster size). To change it, restart the whole cluster
        /// with the new value and run `hearsay repair --wait`.
        #[arg(long, default_value_t = DEFAULT_REPLICATION_FACTOR as u32, value_parser = clap::value_parser!(u32).range(1..))]
        replication_factor: u32,
        /// --shards of every node (1..=65536): fixed when the data dirs are
        /// created (default 64); a later run with another value is refused.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_SHARDS as i64))]
        shards: Option<u32>,
    },
    /// Store a value (from the argument, --file, or stdin).
    Put {
        #[command(flatten)]
        target: Target,
        key: String,
        value: Option<String>,
        /// Read the value from this file ("-" for stdin).
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
    },
    /// Print a value to stdout.
    Get {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        #[command(flatten)]
        target: Target,
        key: String,
    },
    /// Start an anti-entropy run (default: ring mode over every shard the node replicates).
    Repair {
        #[command(flatten)]
        target: Target,
        /// Only this shard (repeatable).
        #[arg(long)]
        shard: Vec<u32>,
        #[arg(long, default_value = "ring", value_parser = ["ring", "push", "pull", "push-pull"])]
        mode: String,
        /// Wait for the run to end, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Take a running node out of the cluster for good: its shards move to
    /// the other members and it hands off every record it holds.
    Decommission {
        #[command(flatten)]
        target: Target,
        /// Wait until every record is handed off, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Cluster members, shards whose replicas differ, retry buffers.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// GET an admin or status path (e.g. /admin/shards) and print its JSON.
    Admin {
        #[command(flatten)]
        target: Target,
        path: String,
    },
    /// Exit 0 if the node answers /health (for container health checks).
    Health {
        #[command(flatten)]
        target: Target,
    },
    /// Generate load and print throughput and latency percentiles.
    Bench(BenchArgs),
    /// Simulate the gossip membership protocol over many members in one process.
    Sim(SimArgs),
    /// Bring a data dir to the current on-disk format and exit.
    Migrate {
        #[arg(long, env = "HEARSAY_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// `hearsay sim`: every member starts and joins through the first; once all
/// views are complete one more joins, then `--crash` members stop.
#[derive(Args)]
pub struct SimArgs {
    #[arg(long, default_value_t = 500)]
    pub members: usize,
    /// Chance that a message is lost (0..1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    #[arg(long, default_value_t = 1)]
    pub latency_min_ms: u64,
    #[arg(long, default_value_t = 10)]
    pub latency_max_ms: u64,
    /// Members stopped once the views are complete.
    #[arg(long, default_value_t = 1)]
    pub crash: usize,
    /// Seconds to keep running after the crash is detected, counting false alarms.
    #[arg(long, default_value_t = 60)]
    pub soak_secs: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args)]
pub struct ServeArgs {
    /// This node's name, unique in the cluster.
    #[arg(long, env = "HEARSAY_NODE_ID", default_value = "n1")]
    pub node_id: String,
    /// Address to listen on.
    #[arg(long, env = "HEARSAY_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Address other nodes use to reach this one (default: the listen address).
    #[arg(long, env = "HEARSAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// Where the node keeps its data.
    #[arg(long, env = "HEARSAY_DATA_DIR", default_value = "hearsay-data")]
    pub data_dir: PathBuf,
    /// Shards of a new cluster (1..=65536; fixed once created; default 64).
    #[arg(long, env = "HEARSAY_SHARDS", value_parser = clap::value_parser!(u32).range(1..=MAX_SHARDS as i64))]
    pub shards: Option<u32>,
    /// When writes are flushed to disk.
    #[arg(long, env = "HEARSAY_SYNC", value_enum, default_value_t = SyncMode::Periodic)]
    pub sync: SyncMode,
    /// Largest value accepted, in bytes (at most 256 MiB).
    #[arg(long, env = "HEARSAY_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_MAX_VALUE_BYTES as u64))]
    pub max_value_bytes: u64,
    /// sled page cache, in bytes (at least 1 MiB).
    #[arg(long, env = "HEARSAY_CACHE_BYTES", default_value_t = DEFAULT_CACHE_BYTES,
          value_parser = clap::value_parser!(u64).range(MIN_CACHE_BYTES..))]
    pub cache_bytes: u64,
    /// Other nodes to join through, as host:port,host:port.
    #[arg(long, env = "HEARSAY_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Replicas per shard (at least 1; capped at the cluster size).
    #[arg(long, env = "HEARSAY_REPLICATION_FACTOR", default_value_t = DEFAULT_REPLICATION_FACTOR as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub replication_factor: u32,
    /// File holding the cluster secret that authenticates peer requests.
    #[arg(long, env = "HEARSAY_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Run without peer authentication (anyone who reaches the port can write as a peer).
    #[arg(long, env = "HEARSAY_INSECURE")]
    pub insecure: bool,
    /// How long a request waits for its w/r replicas, in milliseconds (1..=600000).
    #[arg(long, env = "HEARSAY_WRITE_TIMEOUT_MS", default_value_t = DEFAULT_WRITE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub write_timeout_ms: u64,
    /// Retry buffer bound per peer, in records (0 disables buffering).
    #[arg(long, env = "HEARSAY_RETRY_BUFFER_MAX_RECORDS", default_value_t = DEFAULT_RETRY_MAX_RECORDS)]
    pub retry_buffer_max_records: u64,
    /// Retry buffer bound per peer, in bytes (0 disables buffering).
    #[arg(long, env = "HEARSAY_RETRY_BUFFER_MAX_BYTES", default_value_t = DEFAULT_RETRY_MAX_BYTES)]
    pub retry_buffer_max_bytes: u64,
    /// Seconds between scheduled anti-entropy runs (10..=604800), for a node with no stored schedule.
    #[arg(long, env = "HEARSAY_ANTI_ENTROPY_INTERVAL", default_value_t = DEFAULT_ANTI_ENTROPY_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(*ANTI_ENTROPY_INTERVAL_SECS.start()..=*ANTI_ENTROPY_INTERVAL_SECS.end()))]
    pub anti_entropy_interval: u64,
    /// Record bytes per second each node's repair exchanges and hand-offs
    /// may move (0: unlimited), for a node with no stored schedule; change it
    /// cluster-wide with PUT /admin/anti-entropy/schedule.
    #[arg(long, env = "HEARSAY_REPAIR_MAX_BYTES_PER_SEC", default_value_t = 0)]
    pub repair_max_bytes_per_sec: u64,
    /// Start with scheduled anti-entropy off (for a node with no stored schedule).
    #[arg(long, env = "HEARSAY_NO_ANTI_ENTROPY")]
    pub no_anti_entropy: bool,
    /// Require `Authorization: Bearer <token>` on /admin routes.
    #[arg(long, env = "HEARSAY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Refuse versions from peers stamped more than this many milliseconds
    /// ahead of this node's clock (a peer with a wrong clock must not drag
    /// every clock into the future).
    #[arg(long, env = "HEARSAY_MAX_CLOCK_DRIFT_MS", default_value_t = hearsay::clock::DEFAULT_MAX_DRIFT_MS,
          value_parser = clap::value_parser!(u64).range(*MAX_DRIFT_MS_RANGE.start()..=*MAX_DRIFT_MS_RANGE.end()))]
    pub max_clock_drift_ms: u64,
    /// Purge tombstones this long after the delete, once anti-entropy has
    /// verified their shard on every replica; mail older than this is
    /// dropped (and repaired by anti-entropy). 0 keeps tombstones forever;
    /// at most ten years.
    #[arg(long, env = "HEARSAY_TOMBSTONE_GRACE_SECS", default_value_t = hearsay::config::DEFAULT_TOMBSTONE_GRACE.as_secs(),
          value_parser = clap::value_parser!(u64).range(0..=MAX_TOMBSTONE_GRACE_SECS))]
    pub tombstone_grace_secs: u64,
    /// Most HTTP connections (clients and peers together) served at once;
    /// one more is answered 503 and closed.
    #[arg(long, env = "HEARSAY_MAX_CONNECTIONS", default_value_t = hearsay::api::server::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Seconds a client may take to send a request head, then its body,
    /// and may leave a connection idle between requests.
    #[arg(long, env = "HEARSAY_READ_TIMEOUT_SECS", default_value_t = hearsay::api::server::DEFAULT_READ_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout_secs: u64,
}

#[derive(Args)]
pub struct Target {
    /// The node to talk to.
    #[arg(long, env = "HEARSAY_NODE", default_value = "http://127.0.0.1:7001")]
    pub node: String,
    /// Token for /admin routes, if the node requires one.
    #[arg(long, env = "HEARSAY_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Extra query, e.g. "w=all" or "r=quorum".
    #[arg(long, default_value = "")]
    pub query: String,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Node to load; without it, a fresh local node is started for the run.
    #[arg(long)]
    pub target: Option<String>,
    /// --sync of the node started when no --target is given.
    #[arg(long, value_enum, default_value_t = SyncMode::Periodic)]
    pub sync: SyncMode,
    /// Workloads to run in order; `noop` is the ceiling the others are compared with.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "noop,put,get")]
    pub workloads: Vec<Workload>,
    /// Workers, each with one request in flight (1..=4096).
    #[arg(long, default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096))]
    pub concurrency: usize,
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    #[arg(long, default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_MAX_VALUE_BYTES as u64))]
    pub value_size: usize,
    /// Seconds per workload in each round (1..=3600).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub duration: u64,
    /// Rounds of the workload list. Ratios are taken round by round
    /// (median, min, max), so drift in a shared machine's speed cancels.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Requests per workload (instead of --duration).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// For the mixed workload: percent of requests that are reads.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Query added to kv requests, e.g. "w=one".
    #[arg(long, default_value = "")]
    pub query: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Start a local cluster of this many nodes (RF=3) and compare its PUT
    /// throughput at each --levels with a single node measured in the same run.
    #[arg(long, default_value_t = 1, conflicts_with = "target",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=16))]
    pub nodes: usize,
    /// Write levels for --nodes > 1.
    #[arg(long, value_delimiter = ',', default_value = "one,quorum", value_parser = ["one", "quorum", "all"])]
    pub levels: Vec<String>,
    /// `repair`: measure anti-entropy on a local 3-node cluster instead.
    #[arg(long, value_parser = ["repair"])]
    pub scenario: Option<String>,
    /// For --scenario repair: percent of --keys the repaired node misses (1..=100).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub missing_percent: u64,
    /// For --scenario repair: the cluster's repair bandwidth limit (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub repair_max_bytes_per_sec: u64,
}
