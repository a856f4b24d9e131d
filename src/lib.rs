//! hearsay: an eventually consistent, replicated key-value store.
//!
//! Crate map (one line per module: what it owns):
//! - [`types`]     keys, versions, records, node ids, shards, consistency levels
//! - [`clock`]     injectable wall clock, the hybrid logical clock, peers' clock offsets and the verdict on its own
//! - [`storage`]   the `Storage` trait, sled and memory engines, record codec, group commit, purge floors
//! - [`merkle`]    per-shard Merkle trees (kept by the engines) and the pure diff
//! - [`kv`]        the node's local read/write path for keys (stamp, apply, durability, list)
//! - [`placement`] which members replicate a shard, in ring order (pure)
//! - [`membership`] the member view (seeds, hello, gossip), each member's health, removal and decommission, and the gossip worker
//! - [`gossip`]    SWIM failure detection and rumor mongering (sans-I/O) and its simulator
//! - [`rpc`]       peer messages, their codec, request MACs, the peer client
//! - [`replication`] the coordinator: direct mail, w/r levels, read repair, retry buffer, cluster-wide listing
//! - [`repair`]    anti-entropy: Merkle exchange, closed-loop ring runs, schedule, bandwidth limit, tombstone purge, hand-off
//! - [`api`]       public, admin and internal HTTP routes, JSON errors, request metrics, the connection-bounded listener
//! - [`metrics`]   the Prometheus registry and metric families
//! - [`config`]    a node's settings
//! - [`node`]      wiring and running one node until shutdown
//! - [`client`]    HTTP client for the API (CLI, bench, tests)
//! - [`error_line`] one line from an error and its causes, each said once
//! - [`process`]   launching `hearsay serve` child processes
//! - [`bench`](mod@bench) the load generator and scenarios behind `hearsay bench`
//! - [`allocator`] the binary's global allocator (mimalloc, reusing sled's log buffers)
//!
//! The binary is `main.rs` (running each subcommand) and `cli.rs` (its flags).

pub mod allocator;
pub mod api;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
pub mod error_line;
pub mod gossip;
pub mod kv;
pub mod membership;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod process;
pub mod repair;
pub mod replication;
pub mod rpc;
pub mod storage;
pub mod types;
