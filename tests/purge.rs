//! Tombstone purge across real in-process nodes: tombstones go only after
//! every replica was verified, mail older than the grace is dropped instead
//! of delivered, and a copy that missed a purge (a node that was not a
//! replica when its shard purged) cannot bring a purged delete back.

mod common;

use common::{all_roots_equal, local_keys, local_records, mail_for, peer_call, plant, repair, wait_until, NodeOpts, TestCluster};
use hearsay::client::Client;
use hearsay::placement::PlacementTable;
use hearsay::rpc::{SyncMode, SyncReport, SyncRequest, TreeReply, TreeRequest, PATH_SYNC, PATH_TREE};
use hearsay::types::{shard_of, NodeId, ShardId};
use hyper::StatusCode;
use serde_json::json;
use std::time::Duration;

fn opts() -> NodeOpts {
    NodeOpts { write_timeout: Duration::from_millis(1500), ..NodeOpts::default() }
}

/// Settings that purge within seconds: a tombstone may go 1.5 s after its
/// delete, 0.3 s after a verification.
fn purging() -> NodeOpts {
    NodeOpts {
        tombstone_grace: Some(Duration::from_millis(500)),
        purge_delay: Duration::from_millis(300),
        max_clock_drift: Duration::from_secs(1),
        ..opts()
    }
}

/// Waits until every node in `cs` holds `n` records (purges run a moment
/// after the run that verified their shards).
async fn wait_records(what: &str, cs: &[Client], n: u64) {
    wait_until(what, Duration::from_secs(10), || {
        let cs = cs.to_vec();
        async move {
            for c in &cs {
                if local_records(c).await != n {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

/// Deletes leave tombstones until a run verifies their shard equal on every
/// replica, after the grace (plus the drift margin) has passed since the
/// delete; then every replica purges the same ones, so roots stay equal and
/// the keys stay deleted. While a replica is down nothing can be verified,
/// so nothing is purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_only_after_every_replica_was_verified() {
    let mut cluster = TestCluster::start(3, purging()).await;
    let c = cluster.client(0);
    for i in 0..40 {
        assert!(c.put(format!("gone/{i}").as_bytes(), "v", "w=all").await.unwrap().status.is_success());
    }
    for i in 0..20 {
        assert!(c.delete(format!("gone/{i}").as_bytes(), "w=all").await.unwrap().status.is_success());
    }
    for n in 0..3 {
        assert_eq!(local_records(&cluster.client(n)).await, 40, "20 values and 20 tombstones on n{}", n + 1);
    }

    // n3 is down: the run verifies nothing, so nothing is purged, however long we wait.
    cluster.node(2).stop().await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let run = repair(&c, json!({})).await;
    assert_eq!(run["outcome"], "partial", "n3 is skipped: {run}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in 0..2 {
        assert_eq!(local_records(&cluster.client(n)).await, 40, "n{} purged with a replica missing", n + 1);
    }

    // n3 is back: one run verifies every shard, and the purge follows on every node.
    cluster.node(2).start_again().await;
    cluster.wait_ready().await;
    let run = repair(&c, json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    let cs = cluster.clients();
    wait_records("tombstones purged on every node", &cs, 20).await;
    assert!(all_roots_equal(&cs).await, "every replica purged the same tombstones");
    for c in &cs {
        for i in 0..40 {
            let status = c.get(format!("gone/{i}").as_bytes(), "r=one").await.unwrap().status;
            assert_eq!(status, if i < 20 { StatusCode::NOT_FOUND } else { StatusCode::OK }, "gone/{i}");
        }
        let metrics = c.get_path("/metrics").await.unwrap().text();
        assert!(metrics.contains("hearsay_tombstones_purged_total 20"), "{metrics}");
    }
    let again = repair(&c, json!({})).await;
    assert_eq!(again["shards_diverged"], 0, "nothing to repair after the purge: {again}");
}

/// Mail older than the tombstone grace is dropped instead of delivered
/// (a purge may have run on the far side of a delete it predates): it is
/// counted, its shards are marked dirty, and a run brings the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_older_than_the_grace_is_dropped_and_repaired_instead() {
    // A grace well above how long the writes below take, even on a busy machine.
    let grace = Duration::from_secs(2);
    let mut cluster = TestCluster::start(3, NodeOpts { tombstone_grace: Some(grace), ..opts() }).await;
    cluster.node(2).stop().await;
    let c = cluster.client(0);
    let written = std::time::Instant::now();
    for i in 0..10 {
        assert!(c.put(format!("late/{i}").as_bytes(), "v", "w=one").await.unwrap().status.is_success());
    }
    // Direct mail to n3 fails after each write returns; every letter is
    // then buffered, or already expired if this machine is slow.
    wait_until("all ten letters buffered (or expired)", Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            let m = mail_for(&c, "n3").await;
            m["pending_records"].as_u64().unwrap_or(0) + m["dropped"].as_u64().unwrap_or(0) == 10
        }
    })
    .await;
    if written.elapsed() < grace {
        assert_eq!(mail_for(&c, "n3").await["pending_records"], 10, "buffered, not yet expired");
    }
    tokio::time::sleep(grace + Duration::from_millis(500)).await;
    cluster.node(2).start_again().await;
    cluster.wait_ready().await;
    wait_until("the old mail is gone", Duration::from_secs(20), || {
        let c = c.clone();
        async move { mail_for(&c, "n3").await["pending_records"] == 0 }
    })
    .await;
    let m = mail_for(&c, "n3").await;
    assert_eq!(m["dropped"], 10, "{m}");
    assert!(!m["dirty_shards"].as_array().unwrap().is_empty(), "{m}");
    assert_eq!(local_keys(&cluster.client(2)).await, 0, "nothing was delivered");
    let run = repair(&c, json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    assert_eq!(local_keys(&cluster.client(2)).await, 10, "the run brought what the mail did not");
    assert!(mail_for(&c, "n3").await["dirty_shards"].as_array().unwrap().is_empty());
}

/// Placement with bounded loads can take a shard from a node when a member
/// joins and give it back when another joins, and the node keeps its old
/// copy meanwhile. If the shard's replicas purged a delete in between, that
/// copy still holds the deleted value. Here n4 holds such a copy of a shard
/// it does not replicate, and runs the exchange a replica runs: the value
/// is refused as below n1's purge floor, n4 drops it, and the shard
/// converges with the key still deleted everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_missed_a_purge_cannot_bring_the_deleted_value_back() {
    // n4's copy must still be there when the shard "comes back": no hand-off
    // round may push it away first.
    let cluster = TestCluster::start(4, NodeOpts { handoff_every: None, ..purging() }).await;
    let shards = purging().shards.unwrap();
    let members: Vec<NodeId> = (1..=4).map(|i| NodeId::new(&format!("n{i}")).unwrap()).collect();
    let n4 = &members[3];
    let table = PlacementTable::new(&members, shards, 3);
    let shard = (0..shards).map(ShardId).find(|s| !table.replicas(*s).contains(n4)).expect("n4 does not replicate every shard");
    let in_shard = |prefix: &str, n: usize| -> Vec<Vec<u8>> {
        (0..).map(|i| format!("{prefix}/{i}").into_bytes()).filter(|k| shard_of(k, shards) == shard).take(n).collect()
    };
    let (keys, kept) = (in_shard("back", 5), in_shard("kept", 3));
    let c = cluster.client(0);
    for k in &keys {
        assert!(c.put(k, "v", "w=all").await.unwrap().status.is_success());
        assert!(c.delete(k, "w=all").await.unwrap().status.is_success());
    }
    for k in &kept {
        assert!(c.put(k, "v", "w=all").await.unwrap().status.is_success());
    }
    // n4's stale copy: older values of the deleted keys, as it held them
    // when it last replicated the shard.
    let old_hlc = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - 60_000) << 16;
    let c4 = cluster.client(3);
    let replies = plant(&c4, keys.iter().map(|k| (k.clone(), old_hlc, Some(b"stale".to_vec()))).collect()).await;
    assert_eq!(replies[0].applied, 5, "n4 never purged the shard: it takes the old values");

    // The replicas verify the shard and purge the tombstones.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let run = repair(&c, json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    let replicas: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    wait_records("the tombstones are purged on the replicas", &replicas, 3).await;
    assert_eq!(local_records(&c4).await, 5, "n4 is no replica of the shard: its copy is not purged");

    // Each node says whether it counts itself a replica (what a hand-off trusts).
    let tree = TreeRequest { shard: shard.0, shards, level: 0, indices: vec![0], children: false };
    let (on_n1, on_n4): (TreeReply, TreeReply) = (peer_call(&c, PATH_TREE, &tree).await, peer_call(&c4, PATH_TREE, &tree).await);
    assert!(on_n1.replicates && !on_n4.replicates, "n1 replicates the shard, n4 does not");

    // n4 runs a replica's exchange with n1 (as when the shard comes back to it).
    let sync = SyncRequest { shard: shard.0, shards, peer: "n1".into(), mode: SyncMode::PushPull };
    let report: SyncReport = peer_call(&c4, PATH_SYNC, &sync).await;
    assert_eq!((report.keys_sent, report.keys_received), (5, 3), "{report:?}");
    for c in cluster.clients() {
        for k in &keys {
            assert_eq!(c.get(k, "r=one").await.unwrap().status, StatusCode::NOT_FOUND, "{} came back", String::from_utf8_lossy(k));
        }
    }
    // n4 also took the live records it lacked, old as they are: its own floor
    // stayed where its copy was last verified, since it was no replica.
    assert_eq!(local_records(&c4).await, 3, "n4 dropped what n1 refused and took what it lacked");
    let metric = |c: Client, name: &'static str| async move {
        let text = c.get_path("/metrics").await.unwrap().text();
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    assert_eq!(metric(cluster.client(0), "hearsay_records_below_purge_floor_total").await, Some(5));
    assert_eq!(metric(c4.clone(), "hearsay_stale_records_dropped_total").await, Some(5));
    let again: SyncReport = peer_call(&c4, PATH_SYNC, &sync).await;
    assert!(again.equal, "the copies converged: {again:?}");
}

/// A node whose clock runs ahead of its peers' must not date purges by it.
/// n3 boots with its clock 10 s ahead (its peers soon tell it so). A run n3
/// makes would date its verification 10 s on, which would license purging
/// "b", deleted just after the run; and a verification n3 takes from n1's
/// run would ripen 10 s early, purging "a" before the delay that guards
/// repair hops in flight. n3 waits for its clock to be put right, then
/// purges just what n1 and n2 purge. Grace plus drift (4 s) is far longer
/// than the runs take, so the runs license no purge of "b" themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_runs_ahead_dates_no_purge_by_it() {
    let delay = Duration::from_secs(5);
    // Over the 2 s ahead peers accept, within the 30 s a signed request may be off.
    let skew_ms = 10_000;
    let opts = NodeOpts { purge_delay: delay, tombstone_grace: Some(Duration::from_secs(3)), ..purging() };
    let mut cluster = TestCluster::start(3, opts).await;
    let skew = hearsay::clock::SkewedClock::new(skew_ms);
    cluster.node(2).stop().await;
    cluster.node(2).opts.clock = Some(skew.clone());
    cluster.node(2).start_again().await;
    let (c, n3, cs) = (cluster.client(0), cluster.client(2), cluster.clients());
    wait_until("n3 hears that its clock is ahead", Duration::from_secs(10), || {
        let n3 = n3.clone();
        async move { n3.get_path("/ready").await.is_ok_and(|r| r.json()["error"] == "clock_ahead") }
    })
    .await;
    assert!(c.put(b"a", "v", "w=all").await.unwrap().status.is_success());
    assert!(c.delete(b"a", "w=all").await.unwrap().status.is_success());
    // "a" is older than grace + drift (4 s) before either run below.
    tokio::time::sleep(Duration::from_millis(4100)).await;

    let first_run = std::time::Instant::now();
    assert_eq!(repair(&n3, json!({})).await["outcome"], "completed");
    assert!(c.put(b"b", "v", "w=all").await.unwrap().status.is_success());
    assert!(c.delete(b"b", "w=all").await.unwrap().status.is_success());
    assert_eq!(repair(&c, json!({})).await["outcome"], "completed");
    let second_run = std::time::Instant::now();

    // n3 would purge "a" within a second of n1's run; n1 and n2 purge it a
    // delay after n3's run. Checked between the two, if this machine got there in time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    if first_run.elapsed() < delay - Duration::from_millis(500) {
        for (i, c) in cs.iter().enumerate() {
            assert_eq!(local_records(c).await, 2, "n{} purged before the delay", i + 1);
        }
    } else {
        eprintln!("too slow to check before the delay ({:?} after the first run)", first_run.elapsed());
    }

    skew.set_offset(0);
    wait_records("\"a\" is purged everywhere, \"b\" nowhere", &cs, 1).await;
    // A verification dated by n3's clock would ripen `skew` after n1's.
    let ripe_if_dated_ahead = second_run + delay + Duration::from_millis(skew_ms as u64) + Duration::from_millis(1500);
    tokio::time::sleep_until(ripe_if_dated_ahead.into()).await;
    for (i, c) in cs.iter().enumerate() {
        assert_eq!(local_records(c).await, 1, "n{} keeps the tombstone of \"b\"", i + 1);
        assert_eq!(c.get(b"b", "r=one").await.unwrap().status, StatusCode::NOT_FOUND);
    }
}
