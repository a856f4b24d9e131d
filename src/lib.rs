//! hearsay: an eventually consistent, replicated key-value store.
//!
//! Crate map (one line per module: what it owns):
//! - [`types`]     keys, versions, records, node ids, shards, consistency levels
//! - [`clock`]     injectable wall clock and the hybrid logical clock
//! - [`storage`]   the `Storage` trait, sled and memory engines, record codec, group commit
//! - [`kv`]        the node's read/write path for keys (stamp, apply, durability, list)
//! - [`api`]       public and admin HTTP routes, JSON errors, request metrics
//! - [`metrics`]   the Prometheus registry and metric families
//! - [`config`]    a node's settings
//! - [`node`]      wiring and running one node until shutdown
//! - [`client`]    HTTP client for the API (CLI, bench, tests)
//! - [`process`]   launching `hearsay serve` child processes
//! - [`bench`]     the load generator behind `hearsay bench`

pub mod api;
pub mod bench;
pub mod client;
pub mod clock;
pub mod config;
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
