//! Anti-entropy across real in-process nodes: the seeds' scenario (direct
//! mail drops, one ring run heals), the 2n−2 hop bound, bandwidth that grows
//! with the difference, tombstones, concurrent writes, and the admin API.

mod common;

use common::{
    all_roots_equal, hearsay_status, local_keys, mail_for, plant, repair, roots, start_run, wait_run, wait_until, NodeOpts, TestCluster,
    TestNode,
};
use hearsay::client::Client;
use hearsay::types::shard_of;
use hyper::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

fn opts() -> NodeOpts {
    NodeOpts { write_timeout: Duration::from_millis(1500), ..NodeOpts::default() }
}

/// Keys that fall in `shard` (of `shards`).
fn keys_in(shard: u32, shards: u32, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    (0..).map(|i| format!("{prefix}/{i}").into_bytes()).filter(|k| shard_of(k, shards).0 == shard).take(n).collect()
}

async fn seeds_scenario(retry_max_records: u64) {
    let mut cluster = TestCluster::start(3, NodeOpts { retry_max_records, ..opts() }).await;
    cluster.node(2).stop().await;
    let mut written = Vec::new();
    for i in 0..300 {
        let key = format!("seed/{i}");
        let r = cluster.client(i % 2).put(key.as_bytes(), format!("v{i}"), "w=one").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
        written.push((key, format!("v{i}")));
    }
    cluster.node(2).start_again().await;
    cluster.wait_ready().await;
    // Let whatever the buffers hold arrive, so the run repairs exactly the dropped rest.
    for n in [0, 1] {
        let c = cluster.client(n);
        wait_until("retry buffer drained", Duration::from_secs(20), || {
            let c = c.clone();
            async move { mail_for(&c, "n3").await["pending_records"].as_u64().unwrap_or(0) == 0 }
        })
        .await;
    }
    let c2 = cluster.client(2);
    assert!(local_keys(&c2).await < 300, "direct mail alone must not have healed n3 in this scenario");
    assert!(!all_roots_equal(&cluster.clients()).await);

    let run = repair(&cluster.client(0), json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    assert!(run["shards_diverged"].as_u64().unwrap() > 0, "{run}");
    assert!(all_roots_equal(&cluster.clients()).await, "roots differ after one ring run: {run}");
    for (k, v) in &written {
        let r = c2.get(k.as_bytes(), "r=one").await.unwrap();
        assert_eq!((r.status, r.text()), (StatusCode::OK, v.clone()), "key {k} on the restarted node");
    }
    // Repaired shards are no longer dirty anywhere.
    for n in [0, 1] {
        let m = mail_for(&cluster.client(n), "n3").await;
        assert!(m.is_null() || m["dirty_shards"].as_array().unwrap().is_empty(), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ring_run_heals_what_direct_mail_dropped() {
    seeds_scenario(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ring_run_heals_an_overflowed_retry_buffer() {
    seeds_scenario(40).await;
}

async fn ring_bound(n: usize) {
    let cluster = TestCluster::start(n, NodeOpts { rf: n, ..opts() }).await;
    let cs = cluster.clients();
    let shard = 3u32;
    let bound = 2 * n as u64 - 2;
    // Divergence on each replica alone, then on all of them at once.
    for planted_on in (0..n).map(Some).chain([None]) {
        for (i, c) in cs.iter().enumerate() {
            if planted_on.is_none_or(|p| p == i) {
                let keys = keys_in(shard, 8, &format!("ring{n}/{planted_on:?}/{i}"), 5);
                plant(c, keys.into_iter().map(|k| (k, 1_000, Some(b"x".to_vec()))).collect()).await;
            }
        }
        let run = repair(&cs[0], json!({ "shards": [shard] })).await;
        let hops = run["hops"].as_u64().unwrap();
        assert!(hops >= 1 && hops <= bound, "n={n} planted on {planted_on:?}: {hops} hops, bound {bound}: {run}");
        assert_eq!(run["outcome"], "completed");
        let r = roots(&cs).await;
        assert!(r.iter().all(|x| x[&(shard as u64)] == r[0][&(shard as u64)]), "n={n}: shard {shard} still differs after {hops} hops");
    }
    // Equal replicas: no hop, no data, one root comparison per replica
    // (a few hundred bytes of HTTP each, counted in bytes_sent).
    let run = repair(&cs[0], json!({ "shards": [shard] })).await;
    assert_eq!((run["hops"].as_u64(), run["keys_sent"].as_u64(), run["record_bytes"].as_u64()), (Some(0), Some(0), Some(0)), "{run}");
    assert_eq!(run["root_comparisons"].as_u64(), Some(n as u64), "{run}");
    assert!(run["bytes_sent"].as_u64().unwrap() < 512 * n as u64, "{run}");
    assert_eq!(run["shards_diverged"].as_u64(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_converges_within_2n_minus_2_hops_for_3_replicas() {
    ring_bound(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_converges_within_2n_minus_2_hops_for_5_replicas() {
    ring_bound(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_bandwidth_follows_the_difference_not_the_shard() {
    let cluster = TestCluster::start(3, NodeOpts { shards: Some(1), ..opts() }).await;
    let cs = cluster.clients();
    let base: Vec<(Vec<u8>, u64, Option<Vec<u8>>)> =
        (0..100_000u32).map(|i| (format!("bw/{i:06}").into_bytes(), 500, Some(b"small-value-0123".to_vec()))).collect();
    for c in &cs {
        plant(c, base.clone()).await;
    }
    assert!(all_roots_equal(&cs).await);
    let ring: Vec<String> = cs[0].get_path("/admin/shards").await.unwrap().json()["shards"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let idx = |name: &str| ring.iter().position(|r| r == name).unwrap();
    let (first, second) = (
        &cs[["n1", "n2", "n3"].iter().position(|n| idx(n) == 0).unwrap()],
        &cs[["n1", "n2", "n3"].iter().position(|n| idx(n) == 1).unwrap()],
    );

    // One key that the last replica in ring order lacks.
    for c in [first, second] {
        plant(c, vec![(b"bw/extra".to_vec(), 900, Some(vec![7u8; 1024]))]).await;
    }
    let run = repair(&cs[0], json!({ "shards": [0] })).await;
    assert_eq!(run["keys_sent"].as_u64(), Some(1), "{run}");
    let one_key_bytes = run["bytes_sent"].as_u64().unwrap();
    assert!(one_key_bytes < 16 * 1024, "one differing key cost {one_key_bytes} bytes: {run}");
    assert!(all_roots_equal(&cs).await);

    // 1,000 differing keys with 1 KiB values.
    let diff: Vec<(Vec<u8>, u64, Option<Vec<u8>>)> =
        (0..1000u32).map(|i| (format!("bw/diff/{i}").into_bytes(), 900, Some(vec![i as u8; 1024]))).collect();
    let record_bytes: u64 = diff.iter().map(|(k, _, v)| (k.len() + v.as_ref().unwrap().len()) as u64).sum();
    for c in [first, second] {
        plant(c, diff.clone()).await;
    }
    let run = repair(&cs[0], json!({ "shards": [0] })).await;
    assert_eq!(run["keys_sent"].as_u64(), Some(1000), "{run}");
    let bytes = run["bytes_sent"].as_u64().unwrap();
    assert!(bytes < 3 * record_bytes, "1,000 keys ({record_bytes} B of records) cost {bytes} bytes: {run}");
    assert!(all_roots_equal(&cs).await);
    eprintln!("bandwidth: 1 key cost {one_key_bytes} B; 1000 keys cost {bytes} B for {record_bytes} B of records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_tombstone_is_repaired_as_a_tombstone() {
    let cluster = TestCluster::start(3, NodeOpts { retry_max_records: 0, retry_max_bytes: 0, ..opts() }).await;
    let c0 = cluster.client(0);
    assert!(c0.put(b"doomed", "alive", "w=all").await.unwrap().status.is_success());
    cluster.net.cut("n1", "n3");
    assert!(c0.delete(b"doomed", "w=quorum").await.unwrap().status.is_success());
    // The write returns at quorum; the failed mail to n3 is dropped (the
    // buffer holds nothing) just after. Heal only once that is recorded, so
    // the mail cannot go through after all.
    wait_until("the dropped mail marked its shard dirty", Duration::from_secs(10), || {
        let c0 = c0.clone();
        async move { mail_for(&c0, "n3").await["dirty_shards"].as_array().is_some_and(|d| !d.is_empty()) }
    })
    .await;
    cluster.net.heal("n1", "n3");
    let c2 = cluster.client(2);
    assert_eq!(c2.get(b"doomed", "r=one").await.unwrap().status, StatusCode::OK, "n3 missed the delete");
    assert!(mail_for(&c0, "n3").await["dirty_shards"].as_array().unwrap().len() == 1);

    let run = repair(&c2, json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    for c in cluster.clients() {
        assert_eq!(c.get(b"doomed", "r=one").await.unwrap().status, StatusCode::NOT_FOUND, "the value came back");
    }
    assert!(all_roots_equal(&cluster.clients()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_keep_flowing_during_a_run_and_a_second_run_finds_nothing() {
    let cluster = TestCluster::start(3, opts()).await;
    let cs = cluster.clients();
    for (i, c) in cs.iter().enumerate() {
        plant(c, (0..200).map(|j| (format!("conc/{i}/{j}").into_bytes(), 700, Some(vec![1; 64]))).collect()).await;
    }
    let id = start_run(&cs[0], json!({})).await;
    let writer = {
        let c = cs[1].clone();
        tokio::spawn(async move {
            let mut n = 0;
            for i in 0..300 {
                let r = c.put(format!("live/{i}").as_bytes(), "v", "w=all").await.unwrap();
                assert!(r.status.is_success(), "{}", r.text());
                n += 1;
            }
            n
        })
    };
    let first = wait_run(&cs[0], &id).await;
    assert_eq!(writer.await.unwrap(), 300);
    assert_eq!(first["outcome"], "completed", "{first}");
    let second = repair(&cs[0], json!({})).await;
    assert_eq!(second["shards_diverged"].as_u64(), Some(0), "{second}");
    assert!(all_roots_equal(&cs).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_trigger_progress_history_cancel_conflict_and_schedule() {
    let token = "s3cret-admin".to_string();
    let cluster = TestCluster::start(3, NodeOpts { admin_token: Some(token.clone()), ..opts() }).await;
    let cs = cluster.clients();
    // The admin token is enforced.
    let bare = Client::new(&cluster.nodes[0].url).unwrap();
    let r = bare.get_path("/admin/anti-entropy").await.unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));

    for (i, c) in cs.iter().enumerate() {
        plant(c, (0..50).map(|j| (format!("adm/{i}/{j}").into_bytes(), 700, Some(vec![2; 32]))).collect()).await;
    }
    // Slow links make the run long enough to watch and cancel.
    for (a, b) in [("n1", "n2"), ("n1", "n3"), ("n2", "n3")] {
        cluster.net.delay(a, b, Duration::from_millis(40));
    }
    let id = start_run(&cs[0], json!({ "mode": "ring" })).await;
    let again = cs[0].send(Method::POST, "/admin/anti-entropy", &[], "{}".into()).await.unwrap();
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(again.json()["run_id"], id.as_str());
    let st = cs[0].get_path("/admin/anti-entropy").await.unwrap().json();
    assert_eq!(st["running"]["id"], id.as_str(), "{st}");
    assert_eq!(st["running"]["shards_total"], 8);
    assert_eq!(st["running"]["trigger"], "admin");
    let c0 = cs[0].clone();
    wait_until("progress is visible", Duration::from_secs(30), || {
        let c0 = c0.clone();
        async move { c0.get_path("/admin/anti-entropy").await.unwrap().json()["running"]["shards_done"].as_u64().unwrap_or(0) >= 1 }
    })
    .await;
    // Every node planted records of its own, so shards differ: status shows
    // the run repairing them instead of suggesting another.
    let status = hearsay_status(&cluster.nodes[0].url, Some(&token)).await;
    assert!(status.contains(&format!("anti-entropy run {id} (admin): ")), "{status}");
    assert!(status.contains("anti-entropy is running on n1") && !status.contains("repair them with"), "{status}");
    let r = cs[0].send(Method::DELETE, &format!("/admin/anti-entropy/{id}"), &[], "".into()).await.unwrap();
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let cancelled = wait_run(&cs[0], &id).await;
    assert_eq!(cancelled["outcome"], "cancelled", "{cancelled}");
    assert!(cancelled["shards_done"].as_u64().unwrap() < 8);
    let r = cs[0].send(Method::DELETE, "/admin/anti-entropy/ae-nope", &[], "".into()).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    cluster.net.heal_all();

    // A full run afterwards completes and lands in the history, newest first.
    let done = repair(&cs[0], json!({})).await;
    assert_eq!(done["outcome"], "completed");
    let hist = cs[0].get_path("/admin/anti-entropy").await.unwrap().json()["history"].clone();
    assert_eq!(hist[0]["id"], done["id"]);
    assert_eq!(hist[1]["id"], id.as_str());

    // Bad requests are refused.
    for body in [r#"{"mode":"sideways"}"#, r#"{"shards":[99]}"#, r#"{"shards":[]}"#, r#"{"bogus":1}"#, "not json"] {
        let r = cs[0].send(Method::POST, "/admin/anti-entropy", &[], body.to_string().into()).await.unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    }
    let r = cs[0].send(Method::PUT, "/admin/anti-entropy/schedule", &[], r#"{"interval_secs":1}"#.into()).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // The schedule set on one node reaches every node, and survives a restart.
    let r = cs[1].send(Method::PUT, "/admin/anti-entropy/schedule", &[], r#"{"enabled":false,"interval_secs":120}"#.into()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for c in &cs {
        let c = c.clone();
        wait_until("schedule reaches every node", Duration::from_secs(10), || {
            let c = c.clone();
            async move {
                let s = c.get_path("/admin/anti-entropy").await.unwrap().json()["schedule"].clone();
                s["enabled"] == false && s["interval_secs"] == 120
            }
        })
        .await;
    }
    let mut cluster = cluster;
    cluster.node(2).restart().await;
    let s = cluster.client(2).get_path("/admin/anti-entropy").await.unwrap().json()["schedule"].clone();
    assert_eq!((s["enabled"].as_bool(), s["interval_secs"].as_u64()), (Some(false), Some(120)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repair_bandwidth_limit_is_set_cluster_wide_and_paces_a_run() {
    let cluster = TestCluster::start(3, NodeOpts { shards: Some(1), ..opts() }).await;
    let cs = cluster.clients();
    let rate = 256 * 1024;
    let body = json!({ "max_bytes_per_sec": rate }).to_string();
    let r = cs[1].send(Method::PUT, "/admin/anti-entropy/schedule", &[], body.into()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for c in &cs {
        wait_until("the limit reaches every node", Duration::from_secs(10), async || {
            c.get_path("/admin/anti-entropy").await.unwrap().json()["schedule"]["max_bytes_per_sec"] == rate
        })
        .await;
    }
    // 768 KiB of records that only n1 holds: whichever node first pushes
    // them may send one second's worth (256 KiB) at once, then 256 KiB/s.
    let records: Vec<(Vec<u8>, u64, Option<Vec<u8>>)> =
        (0..768u32).map(|i| (format!("paced/{i:04}").into_bytes(), 900, Some(vec![i as u8; 1014]))).collect();
    plant(&cs[0], records).await;
    let run = repair(&cs[0], json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    assert!(run["record_bytes"].as_u64().unwrap() >= 2 * 768 * 1024, "{run}");
    assert!(run["duration_ms"].as_u64().unwrap() >= 1_900, "768 KiB at 256 KiB/s after a 256 KiB burst takes 2 s at least: {run}");
    assert!(all_roots_equal(&cs).await);
    let mut throttled = 0.0;
    for c in &cs {
        throttled += counter(c, "hearsay_repair_throttled_seconds_total").await;
    }
    assert!(throttled >= 1.9, "the waits show in the metric: {throttled} s");
}

/// With one replica per shard, a shard a join moves has no other replica to
/// fill its new one from: the node that held it hands it off. Every key stays
/// readable, and each record ends up on exactly one node, its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_hands_moved_shards_to_their_new_replicas() {
    let base = NodeOpts { rf: 1, handoff_every: Some(Duration::from_millis(200)), ..opts() };
    let mut cluster = TestCluster::start(2, base.clone()).await;
    let keys: Vec<String> = (0..120).map(|i| format!("moved/{i}")).collect();
    for k in &keys {
        assert!(cluster.client(0).put(k.as_bytes(), k.clone(), "w=one").await.unwrap().status.is_success());
    }
    cluster.join(base).await;
    let cs = cluster.clients();
    wait_until("every key readable and held once", Duration::from_secs(30), async || held_and_readable(&cs, &keys, 1).await).await;
    assert!(local_keys(&cs[2]).await > 0, "the new node took a share of the shards");
    let mut handed = 0.0;
    for c in &cs {
        handed += counter(c, "hearsay_handed_off_records_total").await;
    }
    assert!(handed > 0.0, "records moved by hand-off");
}

/// Whether the nodes hold `copies` of every key in all (none stranded or
/// doubled) and the third node, the one that joined, reads every key.
async fn held_and_readable(cs: &[Client], keys: &[String], copies: u64) -> bool {
    let mut held = 0;
    for c in cs {
        held += local_keys(c).await;
    }
    for k in keys {
        if cs[2].get(k.as_bytes(), "r=one").await.unwrap().status != StatusCode::OK {
            return false;
        }
    }
    held == copies * keys.len() as u64
}

/// A counter's value in a node's `/metrics`.
async fn counter(c: &Client, name: &str) -> f64 {
    let text = c.get_path("/metrics").await.unwrap().text();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_off_keeps_the_records_until_every_replica_took_them() {
    let base = NodeOpts { rf: 2, handoff_every: Some(Duration::from_millis(200)), ..opts() };
    let mut cluster = TestCluster::start(2, base.clone()).await;
    let keys: Vec<String> = (0..60).map(|i| format!("kept/{i}")).collect();
    for k in &keys {
        assert!(cluster.client(0).put(k.as_bytes(), k.clone(), "w=all").await.unwrap().status.is_success());
    }
    // n3 joins through n1 and cannot reach n2: n2 learns of it by gossip,
    // loses shards to it, and cannot push them there.
    cluster.net.cut("n2", "n3");
    let seeds = vec![cluster.nodes[0].addr.to_string()];
    cluster.nodes.push(TestNode::start(NodeOpts { name: "n3".into(), seeds, net: Some(cluster.net.clone()), ..base }).await);
    cluster.wait_ready().await;
    let cs = cluster.clients();
    wait_until("n2 defers a hand-off", Duration::from_secs(30), async || counter(&cs[1], "hearsay_handoffs_deferred_total").await > 0.0)
        .await;
    assert_eq!(local_keys(&cs[1]).await, 60, "n2 dropped records before n3, a replica of theirs, held them");
    cluster.net.heal("n2", "n3");
    wait_until("every key on exactly its two replicas, readable from n3", Duration::from_secs(30), async || {
        held_and_readable(&cs, &keys, 2).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_replica_is_skipped_and_its_shards_stay_dirty() {
    let mut cluster = TestCluster::start(3, NodeOpts { retry_max_records: 0, retry_max_bytes: 0, ..opts() }).await;
    cluster.node(2).stop().await;
    let c0 = cluster.client(0);
    for i in 0..50 {
        assert!(c0.put(format!("skip/{i}").as_bytes(), "v", "w=quorum").await.unwrap().status.is_success());
    }
    let dirty_before = mail_for(&c0, "n3").await["dirty_shards"].as_array().unwrap().len();
    assert!(dirty_before > 0);
    let run = repair(&c0, json!({})).await;
    assert_eq!(run["outcome"], "partial", "{run}");
    // One entry per reason, not one per shard; every shard skipped n3 once.
    let skipped = run["replicas_skipped"].as_array().unwrap();
    assert!(!skipped.is_empty() && skipped.len() <= 2 && skipped.iter().all(|s| s["node"] == "n3"), "{run}");
    assert_eq!(skipped.iter().map(|s| s["count"].as_u64().unwrap()).sum::<u64>(), run["shards_total"].as_u64().unwrap(), "{run}");
    let reasons: Vec<&str> = skipped.iter().map(|s| s["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().all(|r| *r == "down, as gossip holds it" || r.contains("Connection refused")), "{reasons:?}");
    assert_eq!(mail_for(&c0, "n3").await["dirty_shards"].as_array().unwrap().len(), dirty_before, "dirty marks cleared without repair");
    let metrics = c0.get_path("/metrics").await.unwrap().text();
    assert!(metrics.contains("hearsay_anti_entropy_runs_total 1"), "{metrics}");
    // `hearsay repair --wait` fails, and its error line says whom it skipped and why.
    let out =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay")).args(["repair", "--wait", "--node", c0.base()]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(!out.status.success() && line.contains(" ended partial: skipped n3 on "), "{stderr}");
    assert!(line.contains("down, as gossip holds it") || line.contains("Connection refused"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_pull_and_push_pull_move_records_the_way_they_say() {
    let cluster = TestCluster::start(2, NodeOpts { rf: 2, ..opts() }).await;
    let (a, b) = (cluster.client(0), cluster.client(1));
    let only = |c: &str, n: u32| (0..n).map(|i| (format!("mode/{c}/{i}").into_bytes(), 700, Some(vec![3u8; 16]))).collect::<Vec<_>>();
    plant(&a, only("a1", 30)).await;
    plant(&b, only("b1", 30)).await;
    // push from a: b gains a's keys, a gains nothing.
    repair(&a, json!({ "mode": "push" })).await;
    assert_eq!((local_keys(&a).await, local_keys(&b).await), (30, 60));
    // pull from a: a gains b's keys.
    repair(&a, json!({ "mode": "pull" })).await;
    assert_eq!((local_keys(&a).await, local_keys(&b).await), (60, 60));
    assert!(all_roots_equal(&[a.clone(), b.clone()]).await);
    // push-pull: both directions in one exchange.
    plant(&a, only("a2", 10)).await;
    plant(&b, only("b2", 10)).await;
    let run = repair(&a, json!({ "mode": "push-pull" })).await;
    assert_eq!(run["keys_sent"].as_u64(), Some(20), "{run}");
    assert_eq!((local_keys(&a).await, local_keys(&b).await), (80, 80));
    assert!(all_roots_equal(&[a, b]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_during_a_schedule_change_adopts_it_when_back() {
    let mut cluster = TestCluster::start(3, opts()).await;
    cluster.node(2).stop().await;
    let r = cluster
        .client(0)
        .send(Method::PUT, "/admin/anti-entropy/schedule", &[], r#"{"enabled":true,"interval_secs":900}"#.into())
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    cluster.node(2).start_again().await;
    let c2 = cluster.client(2);
    wait_until("the returning node adopts the newer schedule", Duration::from_secs(15), || {
        let c2 = c2.clone();
        async move { c2.get_path("/admin/anti-entropy").await.unwrap().json()["schedule"]["interval_secs"] == 900 }
    })
    .await;
}

/// A record damaged on one replica's disk is quarantined when that node
/// starts (it never serves the damaged bytes), and the run the node starts
/// by itself for the shard brings the peers' copy back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_on_disk_is_quarantined_and_restored_from_a_peer() {
    let mut cluster = TestCluster::start(3, opts()).await;
    let c0 = cluster.client(0);
    for i in 0..20 {
        let r = c0.put(format!("dmg/{i}").as_bytes(), format!("value {i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    let key = b"dmg/7";
    let shards = opts().shards.unwrap();
    let shard = shard_of(key, shards);
    cluster.node(2).stop().await;
    let damaged = {
        let path = cluster.node(2).data_dir();
        let db = hearsay::storage::sled_engine::open_db(&hearsay::storage::sled_engine::SledOptions {
            path,
            shards: Some(shards),
            cache_bytes: 8 << 20,
        })
        .unwrap();
        let tree = db.open_tree(hearsay::storage::sled_engine::shard_tree_name(shard.0)).unwrap();
        let mut raw = tree.get(key).unwrap().expect("n3 holds the key").to_vec();
        *raw.last_mut().unwrap() ^= 0x20;
        tree.insert(key, raw.clone()).unwrap();
        db.flush().unwrap();
        raw
    };
    cluster.node(2).start_again().await;
    let c2 = cluster.client(2);
    let r = c2.get(key, "r=one").await.unwrap();
    assert!(r.status == StatusCode::NOT_FOUND || r.text() == "value 7", "served {} {:?}", r.status, r.body);
    assert!(damaged.ends_with(b"value \x17"), "the value itself was damaged");
    wait_until("the quarantined record is restored from a peer", Duration::from_secs(20), || {
        let c2 = c2.clone();
        async move { c2.get(key, "r=one").await.is_ok_and(|r| r.status == StatusCode::OK && r.text() == "value 7") }
    })
    .await;
    wait_until("all roots equal", Duration::from_secs(20), || {
        let cs = cluster.clients();
        async move { all_roots_equal(&cs).await }
    })
    .await;
    let info = c2.get_path("/admin/shards").await.unwrap().json();
    let held: Vec<(u64, u64)> = info["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_u64().unwrap(), s["quarantined"].as_u64().unwrap()))
        .filter(|(_, q)| *q > 0)
        .collect();
    assert_eq!(held, vec![(u64::from(shard.0), 1)], "{info}");
    let metrics = c2.get_path("/metrics").await.unwrap().text();
    assert!(metrics.lines().any(|l| l == "hearsay_quarantined_records 1"), "{metrics}");
    let listed = c2.get_path("/admin/quarantine").await.unwrap().json();
    assert_eq!(
        listed["records"],
        json!([{ "shard": shard.0, "key": hearsay::types::encode_key_bytes(key), "bytes": damaged.len(), "restored": true }]),
        "{listed}"
    );
    let released = c2.send(Method::DELETE, "/admin/quarantine", &[], bytes::Bytes::new()).await.unwrap().json();
    assert_eq!((released["released"].as_u64(), released["held"].as_u64()), (Some(1), Some(0)), "{released}");
    let metrics = c2.get_path("/metrics").await.unwrap().text();
    assert!(metrics.lines().any(|l| l == "hearsay_quarantined_records 0"), "{metrics}");
    assert_eq!(c2.get(key, "r=one").await.unwrap().text(), "value 7", "releasing touches no data");
    let status = c2.get_path("/admin/anti-entropy").await.unwrap().json();
    let own_run = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["outcome"] == "completed" && r["shards_total"] == 1 && r["trigger"] == "quarantine");
    assert!(own_run, "n3 ran a repair of the one shard by itself: {status}");
}
