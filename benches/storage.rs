//! What the storage engine costs per request, apart from HTTP: the node's
//! write path (`Storage::write_fresh`) and read path (`Storage::get`) on the
//! sled engine a node runs, against the in-memory engine behind the same
//! trait (same Merkle-tree updates, no persistence) as the baseline, in the
//! same run. The workload is the single-node benchmark's: 1 KiB values,
//! 100k keys, 64 shards, random keys. One thread drives each phase; CPU is
//! the whole process's (sled's flusher thread included), so it shows what a
//! request costs a server's cores.
//!
//! `cargo bench --bench storage` (`STORAGE_BENCH_OPS` per phase, default
//! 200000; `STORAGE_BENCH_ROUNDS`, default 3: phases alternate by round and
//! each figure is the median of the rounds).

use bytes::Bytes;
use hearsay::bench::CpuMeter;
use hearsay::storage::mem_engine::MemStorage;
use hearsay::storage::sled_engine::{SledOptions, SledStorage};
use hearsay::storage::{Precondition, Storage, StorageError};
use hearsay::types::{shard_of, Version};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// The node's allocator, so sled's buffer clones cost here what they cost there.
#[global_allocator]
static GLOBAL: hearsay::allocator::Allocator = hearsay::allocator::Allocator::new();

const KEYS: u64 = 100_000;
const SHARDS: u32 = 64;
const VALUE_BYTES: usize = 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn key(i: u64) -> Vec<u8> {
    format!("bench/{i:010}").into_bytes()
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Put,
    Get,
}

/// Wall and process-CPU microseconds per operation of one phase.
struct Cost {
    wall_us: f64,
    cpu_us: Option<f64>,
}

fn phase(store: &dyn Storage, op: Op, ops: u64, seed: u64, hlc: &AtomicU64) -> Result<Cost, StorageError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let meter = CpuMeter::start(std::process::id());
    let start = Instant::now();
    for _ in 0..ops {
        let k = key(rng.gen_range(0..KEYS));
        let shard = shard_of(&k, SHARDS);
        match op {
            Op::Put => {
                let stamp = || Ok(Version { hlc: hlc.fetch_add(1, Ordering::Relaxed), node: 1 });
                store.write_fresh(shard, &k, Some(value.clone()), Precondition::None, &stamp)?;
            }
            Op::Get => {
                std::hint::black_box(store.get(shard, &k)?);
            }
        }
    }
    let wall = start.elapsed();
    let per_op = |d: Duration| d.as_secs_f64() * 1e6 / ops as f64;
    Ok(Cost { wall_us: per_op(wall), cpu_us: meter.and_then(|m| m.used()).map(|u| per_op(u.server)) })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), StorageError> {
    // `cargo test --benches` runs bench targets with no arguments but
    // `--bench`; only `cargo bench` passes it.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let ops = env_or("STORAGE_BENCH_OPS", 200_000).max(1);
    let rounds = env_or("STORAGE_BENCH_ROUNDS", 3).max(1);
    let dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt(format!("temp dir: {e}")))?;
    let opts = SledOptions { path: dir.path().join("data"), shards: Some(SHARDS), cache_bytes: hearsay::config::DEFAULT_CACHE_BYTES };
    let sled = SledStorage::open(&opts)?;
    let mem = MemStorage::new(SHARDS);
    let engines: [(&str, &dyn Storage); 2] = [("sled", &sled), ("memory", &mem)];
    let hlc = AtomicU64::new(1 << 40);
    // Every key holds a value before anything is timed, as in `hearsay bench`.
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    for (_, store) in engines {
        for i in 0..KEYS {
            let k = key(i);
            let stamp = || Ok(Version { hlc: hlc.fetch_add(1, Ordering::Relaxed), node: 1 });
            store.write_fresh(shard_of(&k, SHARDS), &k, Some(value.clone()), Precondition::None, &stamp)?;
        }
    }
    println!("storage engines: 1 KiB values, {KEYS} keys, {SHARDS} shards, one thread, {ops} ops per phase, median of {rounds} rounds");
    println!("{:<8} {:<4} {:>12} {:>12}", "engine", "op", "wall µs/op", "cpu µs/op");
    for (op, label) in [(Op::Put, "put"), (Op::Get, "get")] {
        // Per engine: (wall, cpu) of every round; engines alternate within a
        // round so a noisy moment hits both.
        let mut costs: [Vec<Cost>; 2] = Default::default();
        for round in 0..rounds {
            for (i, (_, store)) in engines.iter().enumerate() {
                costs[i].push(phase(*store, op, ops, round, &hlc)?);
            }
        }
        let mut cpu_of = [0.0; 2];
        for (i, (name, _)) in engines.iter().enumerate() {
            let wall = median(costs[i].iter().map(|c| c.wall_us).collect());
            let cpu: Option<Vec<f64>> = costs[i].iter().map(|c| c.cpu_us).collect();
            let cpu = cpu.map(median);
            cpu_of[i] = cpu.unwrap_or(wall);
            let cpu_text = cpu.map_or("n/a".to_string(), |c| format!("{c:.2}"));
            println!("{name:<8} {label:<4} {wall:>12.2} {cpu_text:>12}");
        }
        println!("sled {label}: {:.2} µs of CPU per op over the in-memory engine", cpu_of[0] - cpu_of[1]);
    }
    Ok(())
}
