//! Gossip membership on real in-process nodes: the SWIM worker probes over
//! the peer protocol, so a node the test cuts off is suspected and declared
//! dead, comes back alive once the network heals, and a join spreads by
//! rumor. Timings are shortened (probe every 200 ms, sync every 2 s) so the
//! tests take seconds; the protocol is the same.

mod common;

use common::{wait_until, NodeOpts, TestCluster, TestNode};
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
