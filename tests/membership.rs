//! Gossip membership on real in-process nodes: the SWIM worker probes over
//! the peer protocol, so a node the test cuts off is suspected and declared
//! dead, comes back alive once the network heals, and a join spreads by
//! rumor. Timings are shortened (probe every 200 ms, sync every 2 s) so the
//! tests take seconds; the protocol is the same.

mod common;

use common::{local_records, wait_until, NodeOpts, TestCluster, TestNode};
use hearsay::client::Client;
use hearsay::gossip::SwimConfig;
use std::time::Duration;

fn fast() -> NodeOpts {
    let gossip = SwimConfig { probe_interval: 200, probe_timeout: 100, gossip_interval: 50, sync_interval: 2_000, ..SwimConfig::default() };
    NodeOpts { gossip, ..NodeOpts::default() }
}

/// `member`'s state and incarnation in `c`'s `/admin/cluster`.
async fn health(c: &Client, member: &str) -> (String, Option<u64>) {
    let cluster = c.get_path("/admin/cluster").await.unwrap().json();
    let m = cluster["members"].as_array().unwrap().iter().find(|m| m["id"] == member).cloned();
    m.map_or(("absent".into(), None), |m| (m["state"].as_str().unwrap().to_string(), m["incarnation"].as_u64()))
}

async fn wait_state(what: &str, c: &Client, member: &str, state: &str, deadline: Duration) {
    wait_until(what, deadline, || async { health(c, member).await.0 == state }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_is_declared_dead_and_alive_again_once_the_network_heals() {
    let cluster = TestCluster::start(3, fast()).await;
    let (c1, c3) = (cluster.client(0), cluster.client(2));
    for c in cluster.clients() {
        for m in ["n1", "n2", "n3"] {
            wait_state("every member alive", &c, m, "alive", Duration::from_secs(10)).await;
        }
    }
    let (_, before) = health(&c1, "n3").await;
    cluster.net.cut("n3", "n1");
    cluster.net.cut("n3", "n2");
    // Suspected after a failed probe, dead after 4 · log10(4) ≈ 2.4 probe intervals, 4 at least.
    wait_state("n1 holds n3 dead", &c1, "n3", "dead", Duration::from_secs(15)).await;
    wait_state("n3 holds n1 dead", &c3, "n1", "dead", Duration::from_secs(15)).await;
    assert_eq!(health(&c1, "n2").await.0, "alive", "n1 and n2 still reach each other");
    let metrics = c1.get_path("/metrics").await.unwrap().text();
    for line in ["hearsay_members{state=\"dead\"} 1", "hearsay_members{state=\"alive\"} 2"] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from /metrics");
    }
    let gossip_sent = metrics.lines().find_map(|l| l.strip_prefix("hearsay_gossip_requests_total ")).and_then(|v| v.parse::<u64>().ok());
    assert!(gossip_sent.is_some_and(|n| n > 0), "gossip traffic is counted: {gossip_sent:?}");
    // What gossip did and concluded: probes by kind, and n3's fall.
    let count = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok()).unwrap_or(0);
    for kind in ["ping", "ack", "ping-req"] {
        assert!(count(&format!("hearsay_gossip_messages_total{{kind=\"{kind}\"}}")) > 0, "{kind} messages are counted");
    }
    for state in ["suspect", "dead"] {
        assert!(count(&format!("hearsay_member_changes_total{{state=\"{state}\"}}")) >= 1, "n3 marked {state} is counted");
    }
    // A ring run does not wait for a replica gossip holds dead.
    let run = common::repair(&c1, serde_json::json!({})).await;
    let skipped = run["replicas_skipped"].as_array().unwrap();
    assert!(!skipped.is_empty() && skipped.iter().all(|s| s["node"] == "n3" && s["reason"] == "down, as gossip holds it"), "{run}");
    // Dead members keep their shards: n3 is still a replica in n1's table.
    let shards = c1.get_path("/admin/shards").await.unwrap().json();
    assert!(shards["shards"].as_array().unwrap().iter().any(|s| s["replicas"].as_array().unwrap().iter().any(|r| r == "n3")));

    cluster.net.heal_all();
    // The periodic sync includes dead members; n3 hears it was declared
    // dead and refutes with a higher incarnation.
    for c in cluster.clients() {
        for m in ["n1", "n2", "n3"] {
            wait_state("alive again after healing", &c, m, "alive", Duration::from_secs(20)).await;
        }
    }
    let (_, after) = health(&c1, "n3").await;
    assert!(after > before, "n3 refuted with a higher incarnation: {before:?} -> {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_through_one_seed_reaches_every_member_by_rumor() {
    let mut cluster = TestCluster::start(3, fast()).await;
    // n4 knows only n1; n2 and n3 hear of it through gossip, well before
    // their 30 s hello rounds.
    let opts = NodeOpts { name: "n4".into(), seeds: vec![cluster.nodes[0].addr.to_string()], net: Some(cluster.net.clone()), ..fast() };
    cluster.nodes.push(TestNode::start(opts).await);
    for i in 1..3 {
        let c = cluster.client(i);
        wait_state("n4 known alive via gossip", &c, "n4", "alive", Duration::from_secs(8)).await;
    }
    let c4 = cluster.client(3);
    for m in ["n1", "n2", "n3"] {
        wait_state("n4 knows every member", &c4, m, "alive", Duration::from_secs(8)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_seen_leaving_and_comes_back_with_a_new_incarnation() {
    let mut cluster = TestCluster::start(3, fast()).await;
    let c1 = cluster.client(0);
    wait_state("n2 alive", &c1, "n2", "alive", Duration::from_secs(10)).await;
    let (_, first) = health(&c1, "n2").await;
    cluster.node(1).stop().await;
    wait_state("n2 left", &c1, "n2", "left", Duration::from_secs(10)).await;
    cluster.node(1).start_again().await;
    wait_state("n2 back", &c1, "n2", "alive", Duration::from_secs(10)).await;
    let (_, second) = health(&c1, "n2").await;
    assert!(second > first, "{first:?} -> {second:?}");
}

async fn remove(c: &Client, member: &str) -> (u16, serde_json::Value) {
    let r = c.send(hyper::Method::POST, &format!("/admin/members/{member}/remove"), &[], bytes::Bytes::new()).await.unwrap();
    (r.status.as_u16(), r.json())
}

fn replicas_named(shards: &serde_json::Value, member: &str) -> usize {
    shards["shards"].as_array().unwrap().iter().filter(|s| s["replicas"].as_array().unwrap().iter().any(|r| r == member)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_is_down_can_be_removed_and_its_shards_are_refilled_on_the_others() {
    let mut cluster = TestCluster::start(3, NodeOpts { rf: 2, ..fast() }).await;
    let (c1, c2) = (cluster.client(0), cluster.client(1));
    for i in 0..40 {
        let r = c1.put(format!("k/{i}").as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    wait_state("n3 alive", &c1, "n3", "alive", Duration::from_secs(10)).await;
    let (status, body) = remove(&c1, "n3").await;
    assert_eq!((status, body["error"].as_str()), (409, Some("member_not_removable")), "a running member stays: {body}");
    assert_eq!(remove(&c1, "n9").await.0, 404);
    assert_eq!(remove(&c1, "n1").await.0, 409, "a node does not remove itself");

    let (k1, k2) = (common::local_keys(&c1).await, common::local_keys(&c2).await);
    assert!(k1 < 40 || k2 < 40, "with RF=2 of 3, n3 holds keys one of the others lacks ({k1}, {k2})");
    cluster.node(2).stop().await;
    wait_state("n3 seen down", &c1, "n3", "left", Duration::from_secs(10)).await;
    assert!(replicas_named(&c1.get_path("/admin/shards").await.unwrap().json(), "n3") > 0);
    // Writes while n3 is down wait for it in n1's retry buffer.
    for i in 40..50 {
        let r = c1.put(format!("k/{i}").as_bytes(), format!("v{i}"), "w=one").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    let queued = common::mail_for(&c1, "n3").await["pending_records"].as_u64().unwrap();
    assert!(queued > 0, "some of 10 keys belong to n3's shards");
    let (status, body) = remove(&c1, "n3").await;
    assert_eq!(status, 202, "{body}");
    for c in [&c1, &c2] {
        wait_until("n3 out of the view and of placement", Duration::from_secs(10), || async {
            let cluster = c.get_path("/admin/cluster").await.unwrap().json();
            let gone = cluster["members"].as_array().unwrap().iter().all(|m| m["id"] != "n3") && cluster["removed"]["n3"].is_u64();
            gone && replicas_named(&c.get_path("/admin/shards").await.unwrap().json(), "n3") == 0
        })
        .await;
    }
    // Mail for n3 is dropped: nobody will take it.
    wait_until("n3's mail dropped", Duration::from_secs(40), || async {
        let mail = common::mail_for(&c1, "n3").await;
        mail["pending_records"] == 0 && mail["dropped"].as_u64() >= Some(queued)
    })
    .await;
    // Every shard is now on n1 and n2; one ring run fills what n3 held alone.
    let run = common::repair(&c1, serde_json::json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    for c in [&c1, &c2] {
        assert_eq!(common::local_keys(c).await, 50);
    }

    // The removal survives a restart, and n1 does not wait for its removed seed.
    cluster.node(0).restart().await;
    wait_until("n1 ready again with n3 still down", Duration::from_secs(10), || async {
        c1.get_path("/ready").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let view = c1.get_path("/admin/cluster").await.unwrap().json();
    assert!(view["removed"]["n3"].is_u64() && view["members"].as_array().unwrap().iter().all(|m| m["id"] != "n3"), "{view}");

    // Running again, n3 outbids its removal with a new incarnation and is a member again.
    cluster.node(2).start_again().await;
    wait_state("n3 back after running again", &c1, "n3", "alive", Duration::from_secs(10)).await;
    wait_until("n2 takes n3 back", Duration::from_secs(10), || async {
        health(&c2, "n3").await.0 == "alive" && c2.get_path("/admin/cluster").await.unwrap().json()["removed"].get("n3").is_none()
    })
    .await;
}

async fn decommission(c: &Client) -> (u16, serde_json::Value) {
    let r = c.send(hyper::Method::POST, "/admin/decommission", &[], bytes::Bytes::new()).await.unwrap();
    (r.status.as_u16(), r.json())
}

async fn drain_state(c: &Client) -> serde_json::Value {
    c.get_path("/admin/decommission").await.unwrap().json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_node_hands_off_every_record_and_stays_out() {
    // RF=1: the leaving node holds the only copy of its shards' records.
    // Periodic hand-off rounds are an hour apart: data moves only because
    // placement changed (or a node started).
    let opts = NodeOpts { rf: 1, handoff_every: Some(Duration::from_secs(3600)), ..fast() };
    let mut cluster = TestCluster::start(3, opts).await;
    let (c1, c2, c3) = (cluster.client(0), cluster.client(1), cluster.client(2));
    for c in [&c1, &c3] {
        for m in ["n1", "n2", "n3"] {
            wait_state("every member alive", c, m, "alive", Duration::from_secs(10)).await;
        }
    }
    for i in 0..60 {
        let r = c1.put(format!("k/{i}").as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    // Deletes must move too, as tombstones, or the old values would be lost
    // with nothing to say they were deleted (and a stale copy could return).
    for i in 0..10 {
        assert!(c1.delete(format!("k/{i}").as_bytes(), "w=all").await.unwrap().status.is_success());
    }
    let before = drain_state(&c3).await;
    assert_eq!(before["state"], "member", "{before}");
    assert!(before["records_left"].as_u64() > Some(0), "n3 holds a share of 60 keys: {before}");

    // Decommissioned while cut off, n3 can hand nothing off and keeps it all,
    // through a stop; back and reachable, it drains.
    cluster.net.cut("n3", "n1");
    cluster.net.cut("n3", "n2");
    let (status, body) = decommission(&c3).await;
    assert_eq!((status, body["state"].as_str()), (202, Some("draining")), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(drain_state(&c3).await["records_left"], before["records_left"], "nothing dropped while no replica took it");
    cluster.node(2).stop().await;
    cluster.net.heal_all();
    cluster.node(2).start_again().await;
    // The leaving node still coordinates requests, for shards now placed elsewhere.
    for i in 60..70 {
        let r = c3.put(format!("k/{i}").as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    wait_until("n3 drained", Duration::from_secs(30), || async { drain_state(&c3).await["state"] == "drained" }).await;
    assert_eq!(local_records(&c3).await, 0);
    for c in [&c1, &c2] {
        let view = c.get_path("/admin/cluster").await.unwrap().json();
        assert!(view["removed"]["n3"].is_u64() && view["members"].as_array().unwrap().iter().all(|m| m["id"] != "n3"), "{view}");
        assert_eq!(replicas_named(&c.get_path("/admin/shards").await.unwrap().json(), "n3"), 0);
    }
    // Removing n3 can move shards between n1 and n2 too (placement with
    // bounded loads); they hand those off as soon as they see the change.
    // Then every key, deleted or not, answers as it was written, from every
    // node, and with RF=1 each of the 70 records is on exactly one of them.
    wait_until("every key answers as written, from every node", Duration::from_secs(30), || async {
        for i in 0..70 {
            for c in [&c1, &c2, &c3] {
                let r = c.get(format!("k/{i}").as_bytes(), "").await.unwrap();
                let expect = if i < 10 { (404, None) } else { (200, Some(format!("v{i}"))) };
                if (r.status.as_u16(), (r.status == 200).then(|| r.text())) != expect {
                    return false;
                }
            }
        }
        true
    })
    .await;
    assert_eq!(local_records(&c1).await + local_records(&c2).await, 70);
    let metrics = c3.get_path("/metrics").await.unwrap().text();
    let handed = metrics.lines().find_map(|l| l.strip_prefix("hearsay_handed_off_records_total ")).and_then(|v| v.parse::<u64>().ok());
    assert!(handed >= before["records_left"].as_u64(), "{handed:?}");
    let ready = c3.get_path("/ready").await.unwrap();
    assert_eq!((ready.status.as_u16(), ready.json()["error"].as_str()), (503, Some("decommissioned")));
    assert_eq!(ready.header("retry-after"), None, "a node that left is never ready again");
    // A peer whose view is behind is told so, and nothing is stored.
    let record = hearsay::rpc::WireRecord { key: b"late".to_vec().into(), hlc: 1 << 40, node: 42, value: Some(b"x".to_vec().into()) };
    let late = common::peer_send(&c3, hearsay::rpc::PATH_APPLY, &hearsay::rpc::ApplyBatch { records: vec![record] }).await;
    assert_eq!((late.status.as_u16(), late.json()["error"].as_str()), (410, Some("decommissioned")), "{}", late.text());
    let read = common::peer_send(&c3, hearsay::rpc::PATH_READ, &hearsay::rpc::ReadRequest { key: b"k/20".to_vec().into() }).await;
    assert_eq!(read.status, 410, "a read is not answered from the emptied copy: {}", read.text());
    assert_eq!(local_records(&c3).await, 0);

    // A restart does not bring it back: its new life claims removal too, and
    // asking again changes nothing.
    let removed_at = c1.get_path("/admin/cluster").await.unwrap().json()["removed"]["n3"].as_u64();
    cluster.node(2).restart().await;
    wait_until("n1 hears n3's new life, still removed", Duration::from_secs(10), || async {
        c1.get_path("/admin/cluster").await.unwrap().json()["removed"]["n3"].as_u64() > removed_at
    })
    .await;
    assert!(c1.get_path("/admin/cluster").await.unwrap().json()["members"].as_array().unwrap().iter().all(|m| m["id"] != "n3"));
    assert_eq!(decommission(&c3).await.1["state"], "drained");
    assert_eq!(replicas_named(&c3.get_path("/admin/shards").await.unwrap().json(), "n3"), 0, "not in its own placement either");
    for i in 70..80 {
        let r = c3.put(format!("k/{i}").as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
        assert_eq!(c1.get(format!("k/{i}").as_bytes(), "").await.unwrap().text(), format!("v{i}"));
    }
    assert_eq!(local_records(&c3).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_not_decommissioned_below_the_replication_factor() {
    let cluster = TestCluster::start(2, NodeOpts { rf: 2, ..fast() }).await;
    let c2 = cluster.client(1);
    let (status, body) = decommission(&c2).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("not_decommissionable")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("1 members for replication factor 2"), "{body}");
    assert_eq!(drain_state(&c2).await["state"], "member");
    assert_eq!(c2.get_path("/ready").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_say_hello_or_gossip_for_another() {
    use hearsay::gossip::{Envelope, GossipPacket, Message, State, Update};
    use hearsay::rpc::{Hello, PATH_GOSSIP, PATH_HELLO};
    let cluster = TestCluster::start(1, fast()).await;
    let c1 = cluster.client(0);
    // The test harness signs as "test".
    let hello = |node: &str| Hello { node: node.into(), addr: "127.0.0.1:9".into(), shards: 8, rf: 3 };
    let r = common::peer_send(&c1, PATH_HELLO, &hello("n9")).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (403, Some("sender_mismatch")), "{}", r.text());
    let from = Update { id: "n9".into(), addr: "127.0.0.1:9".into(), incarnation: 1, state: State::Alive };
    let envelope = Envelope { from, msg: Message::Gossip { rumors: vec![] } };
    let r = common::peer_send(&c1, PATH_GOSSIP, &GossipPacket { shards: 8, rf: 3, envelope }).await;
    assert_eq!(r.status, 403, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&c1, "n9").await.0, "absent");
    // Signed by the member it names, the same hello is taken.
    assert_eq!(common::peer_send(&c1, PATH_HELLO, &hello("test")).await.status, 200);
    assert_ne!(health(&c1, "test").await.0, "absent");
}

/// Placement depends on the replication factor, so a node started with
/// another one is refused by the seeds it names: it never becomes ready and
/// no member lists it. A hello that states another one is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_replication_factor_is_refused() {
    use hearsay::rpc::{Hello, PATH_HELLO};
    let cluster = TestCluster::start(2, fast()).await;
    let c1 = cluster.client(0);
    let hello = |rf: u32| Hello { node: "test".into(), addr: "127.0.0.1:9".into(), shards: 8, rf };
    let r = common::peer_send(&c1, PATH_HELLO, &hello(2)).await;
    assert_eq!((r.status.as_u16(), r.json()["error"].as_str()), (409, Some("join_refused")), "{}", r.text());
    assert!(r.json()["message"].as_str().unwrap().contains("replication factor 2, this node with 3"), "{}", r.text());
    assert_eq!(health(&c1, "test").await.0, "absent");

    let seeds = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let odd = TestNode::start(NodeOpts { name: "n3".into(), seeds, rf: 2, net: Some(cluster.net.clone()), ..fast() }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ready = odd.client().get_path("/ready").await.unwrap();
    assert_eq!(ready.status, 503, "a node the seeds refuse is never ready");
    assert!(
        ready.error_message().contains("refused this node") && ready.error_message().contains("replication factor 2"),
        "{}",
        ready.text()
    );
    for c in cluster.clients() {
        assert_eq!(health(&c, "n3").await.0, "absent", "a member took in the node with another replication factor");
    }
    assert_eq!(common::peer_send(&c1, PATH_HELLO, &hello(3)).await.status, 200, "the same hello with the cluster's factor is taken");
}

/// Two writers put through every node, the leaving one included, before,
/// during and after a decommission. RF=1, so each record has one home and
/// views disagree for a moment about where: every write acknowledged must
/// still be there, at its version or newer, once the drain is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_decommission_are_not_lost() {
    use hearsay::types::Version;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let seed = common::seed();
    let cluster = TestCluster::start(3, NodeOpts { rf: 1, ..fast() }).await;
    let clients = cluster.clients();
    for c in &clients {
        for m in ["n1", "n2", "n3"] {
            wait_state("every member alive", c, m, "alive", Duration::from_secs(10)).await;
        }
    }
    let acked: Arc<Mutex<BTreeMap<usize, Version>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (clients, acked, stop) = (clients.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ w);
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && sent < 20_000 {
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let (k, c) = (rng.gen_range(0..40usize), &clients[rng.gen_range(0..clients.len())]);
                    let Ok(r) = c.put(format!("d/{k}").as_bytes(), format!("w{w}-{sent}"), "w=one").await else { continue };
                    if r.status.is_success() {
                        let v: Version = r.header("x-hearsay-version").expect("a version").parse().expect("a version");
                        let mut acked = acked.lock().unwrap();
                        let newest = acked.entry(k).or_default();
                        *newest = (*newest).max(v);
                    }
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(decommission(&clients[2]).await.0, 202);
    wait_until("n3 drained", Duration::from_secs(30), || async { drain_state(&clients[2]).await["state"] == "drained" }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for w in writers {
        sent += w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    eprintln!("seed {seed}: {sent} puts, {} keys acknowledged", acked.len());
    assert!(acked.len() > 20, "seed {seed}: the writers got through: {}", acked.len());
    wait_until("every acknowledged write readable at its version or newer", Duration::from_secs(30), || async {
        for (k, newest) in &acked {
            let r = clients[0].get(format!("d/{k}").as_bytes(), "").await.unwrap();
            let held: Option<Version> = r.header("x-hearsay-version").and_then(|v| v.parse().ok());
            if r.status != 200 || held < Some(*newest) {
                return false;
            }
        }
        true
    })
    .await;
    assert_eq!(local_records(&clients[2]).await, 0, "seed {seed}: n3 took no records after it retired");
}
