//! Seeded random faults on real in-process nodes: a nemesis cuts, delays
//! and heals links and stops and restarts nodes, and after each fault two
//! writers put and delete a few keys (six to a Merkle leaf) at every consistency level through
//! every running node, with a retry buffer small enough to overflow. Then everything heals, one ring run
//! repairs, and the cluster must hold, on every replica, one state in which
//! no acknowledged write is lost. The seed picks every operation and fault;
//! it is printed, and `HEARSAY_TEST_SEED` replays the choices (the timing of
//! real sockets is not replayed).

mod common;

use common::{all_roots_equal, repair, seed, wait_until, NodeOpts, TestCluster};
use hearsay::client::Client;
use hearsay::gossip::SwimConfig;
use hearsay::types::Version;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODES: usize = 3;
const KEYS: usize = 24;
/// Faults, each followed by a burst from each of two writers.
const STEPS: usize = 40;

/// One write as the client saw it.
#[derive(Debug, Clone)]
struct Attempt {
    key: usize,
    /// The value put, or None for a delete.
    value: Option<String>,
    /// The version, when the write was acknowledged.
    acked: Option<Version>,
}

fn opts() -> NodeOpts {
    let gossip = SwimConfig { probe_interval: 200, probe_timeout: 100, gossip_interval: 50, sync_interval: 2_000, ..SwimConfig::default() };
    NodeOpts { retry_max_records: 30, write_timeout: Duration::from_millis(800), gossip, ..NodeOpts::default() }
}

/// Keys come in groups sharing a Merkle leaf (and so a shard), so a repair
/// that moved only part of a differing leaf would leave roots unequal.
const PER_LEAF: usize = 6;

fn key(k: usize) -> Vec<u8> {
    static KEYS_BY_INDEX: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let keys = KEYS_BY_INDEX.get_or_init(|| {
        let shards = opts().shards.expect("a fixed shard count");
        let slot = |k: &[u8]| (hearsay::types::shard_of(k, shards), hearsay::merkle::leaf_of(k));
        let mut keys = Vec::with_capacity(KEYS);
        for group in 0..KEYS / PER_LEAF {
            let first = format!("fault/{group}").into_bytes();
            let target = slot(&first);
            keys.push(first);
            let mates = (0..).map(|i| format!("fault/{group}/{i}").into_bytes()).filter(|k| slot(k) == target);
            keys.extend(mates.take(PER_LEAF - 1));
        }
        keys
    });
    keys[k].clone()
}

/// A burst of puts and deletes by one writer through random running nodes.
/// Deletes are always `w=one`, so a delete a running node received is
/// acknowledged: a key that ends deleted must show an acknowledged delete.
async fn burst(writer: usize, mut rng: SmallRng, clients: Vec<Client>, running: Vec<usize>, log: Arc<Mutex<Vec<Attempt>>>) {
    for _ in 0..rng.gen_range(4..12) {
        let c = &clients[running[rng.gen_range(0..running.len())]];
        let k = rng.gen_range(0..KEYS);
        let (value, result) = if rng.gen_bool(0.2) {
            (None, c.delete(&key(k), "w=one").await)
        } else {
            let level = ["w=one", "w=quorum", "w=all"][rng.gen_range(0..3)];
            let value = format!("w{writer}-{}", rng.gen::<u64>());
            let r = c.put(&key(k), value.clone(), level).await;
            (Some(value), r)
        };
        let acked = match result {
            Ok(r) if r.status.is_success() => Some(r.header("x-hearsay-version").expect("a version").parse().expect("a version")),
            _ => None,
        };
        log.lock().unwrap().push(Attempt { key: k, value, acked });
    }
}

/// Every node holds every member alive, as gossip sees it.
async fn all_alive(clients: &[Client]) -> bool {
    for c in clients {
        let Ok(r) = c.get_path("/admin/cluster").await else { return false };
        let members = r.json()["members"].as_array().cloned().unwrap_or_default();
        if members.len() != NODES || members.iter().any(|m| m["state"] != "alive") {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_lose_no_acknowledged_write_and_one_ring_run_converges() {
    let seed = seed();
    let mut cluster = TestCluster::start(NODES, opts()).await;
    let clients: Vec<Client> = cluster.clients().into_iter().map(|c| c.with_timeout(Duration::from_secs(10))).collect();
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut faults = BTreeMap::<&str, u32>::new();
    for _ in 0..STEPS {
        // One fault, a pause that gossip may or may not notice it in, then
        // two writers at once.
        let (a, b) = (rng.gen_range(0..NODES), rng.gen_range(0..NODES));
        let running = cluster.nodes.iter().filter(|n| n.is_running()).count();
        match rng.gen_range(0..10) {
            0..=2 if a != b => {
                cluster.net.cut(&names[a], &names[b]);
                *faults.entry("cut").or_default() += 1;
            }
            3 if a != b => {
                cluster.net.delay(&names[a], &names[b], Duration::from_millis(rng.gen_range(50..300)));
                *faults.entry("delay").or_default() += 1;
            }
            4..=6 if a != b => cluster.net.heal(&names[a], &names[b]),
            7 if cluster.nodes[a].is_running() && running > 1 => {
                cluster.node(a).stop().await;
                *faults.entry("stop").or_default() += 1;
            }
            8 | 9 => {
                if let Some(i) = (0..NODES).find(|&i| !cluster.nodes[i].is_running()) {
                    cluster.node(i).start_again().await;
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..250))).await;
        let running: Vec<usize> = (0..NODES).filter(|&i| cluster.nodes[i].is_running()).collect();
        let bursts: Vec<_> = (0..2)
            .map(|w| tokio::spawn(burst(w, SmallRng::seed_from_u64(rng.gen()), clients.clone(), running.clone(), log.clone())))
            .collect();
        for b in bursts {
            b.await.unwrap();
        }
    }

    // Heal everything, let gossip see it, and repair once.
    cluster.net.heal_all();
    for i in 0..NODES {
        if !cluster.nodes[i].is_running() {
            cluster.node(i).start_again().await;
        }
    }
    cluster.wait_ready().await;
    wait_until("every node holds every member alive", Duration::from_secs(30), async || all_alive(&clients).await).await;
    let run = repair(&clients[0], json!({})).await;
    assert_eq!(run["outcome"], "completed", "seed {seed}: {run}");
    assert!(all_roots_equal(&clients).await, "seed {seed}: Merkle roots differ after one ring run");

    let log = log.lock().unwrap().clone();
    let acked = log.iter().filter(|a| a.acked.is_some()).count();
    eprintln!("seed {seed}: {} writes ({acked} acknowledged), faults {faults:?}, repair {run}", log.len());
    for k in 0..KEYS {
        let attempts: Vec<&Attempt> = log.iter().filter(|a| a.key == k).collect();
        let newest_acked = attempts.iter().filter_map(|a| a.acked.map(|v| (v, *a))).max_by_key(|(v, _)| *v);
        let mut seen = Vec::new();
        for c in &clients {
            let r = c.get(&key(k), "r=one").await.unwrap();
            let version: Option<Version> = r.header("x-hearsay-version").map(|v| v.parse().unwrap());
            seen.push((r.status.as_u16(), version, r.text()));
        }
        assert!(seen.iter().all(|s| s.0 == seen[0].0 && s.1 == seen[0].1), "seed {seed}: key {k} differs between nodes: {seen:?}");
        let (status, version, text) = seen.swap_remove(0);
        match (status, version) {
            (200, Some(v)) => {
                if let Some((newest, _)) = newest_acked {
                    assert!(v >= newest, "seed {seed}: key {k} lost an acknowledged write: holds {v}, {newest} was acked");
                }
                let source = attempts.iter().find(|a| a.value.as_deref() == Some(text.as_str()));
                let source = source.unwrap_or_else(|| panic!("seed {seed}: key {k} holds {text:?}, which nobody wrote"));
                assert!(source.acked.is_none_or(|a| a == v), "seed {seed}: key {k} holds {text:?} at {v}, acked as {:?}", source.acked);
            }
            (404, None) => {
                let deleted = match newest_acked {
                    Some((_, a)) => a.value.is_none(),
                    None => true,
                };
                let unsure_delete = attempts.iter().any(|a| a.value.is_none() && a.acked.is_none());
                assert!(deleted || unsure_delete, "seed {seed}: key {k} is gone, but its newest acknowledged write is {newest_acked:?}");
            }
            other => panic!("seed {seed}: key {k}: unexpected answer {other:?} {text:?}"),
        }
    }
}
