//! Clocks across real in-process nodes: versions stamped too far ahead are
//! refused, peers' clock offsets are estimated, and a node whose own clock
//! runs ahead stops stamping writes until it is put right.

mod common;

use bytes::Bytes;
use common::{hearsay_status, wait_until, NodeOpts, TestCluster, SECRET};
use hearsay::client::Client;
use hyper::{Method, StatusCode};
use std::time::Duration;

fn opts() -> NodeOpts {
    NodeOpts { write_timeout: Duration::from_millis(1500), ..NodeOpts::default() }
}

/// The hybrid clock of `version` (the first half of `X-Hearsay-Version`).
fn hlc_of(r: &hearsay::client::Response) -> u64 {
    u64::from_str_radix(&r.header("x-hearsay-version").expect("a version header")[..16], 16).unwrap()
}

/// A peer's version stamped far ahead of this node's clock is refused with
/// 409 clock_skew, applies nothing (not even the sound records of its batch)
/// and does not drag this node's clock along; one a second ahead is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_far_ahead_of_the_clock_is_refused_and_moves_no_clock() {
    use hearsay::rpc::mac::{MacKey, HEADER};
    use hearsay::rpc::{codec, ApplyBatch, WireRecord};
    let cluster = TestCluster::start(3, opts()).await;
    let c = cluster.client(0);
    let key = MacKey::from_secret(SECRET).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let record = |k: &'static [u8], ms: u64| WireRecord {
        key: Bytes::from_static(k),
        hlc: ms << 16,
        node: 9,
        value: Some(Bytes::from_static(b"v")),
    };
    let send = |records: Vec<WireRecord>| {
        let c = c.clone();
        let body = codec::encode(&ApplyBatch { records });
        let auth = key.sign("POST", "/internal/apply", now, "n2", &body);
        async move { c.send(Method::POST, "/internal/apply", &[(HEADER, &auth)], Bytes::from(body)).await.unwrap() }
    };
    let ten_minutes = 10 * 60 * 1000;
    let r = send(vec![record(b"sound", now), record(b"future", now + ten_minutes)]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(r.json()["error"], "clock_skew", "{}", r.text());
    for k in [&b"sound"[..], b"future"] {
        assert_eq!(c.get(k, "r=one").await.unwrap().status, StatusCode::NOT_FOUND, "a refused batch applies nothing");
    }
    let w = c.put(b"after", "v", "w=all").await.unwrap();
    assert!(w.status.is_success(), "{}", w.text());
    assert!(hlc_of(&w) >> 16 < now + ten_minutes / 2, "n1's clock was not dragged ahead");

    let r = send(vec![record(b"soon", now + 1000)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(c.get(b"soon", "r=one").await.unwrap().status, StatusCode::OK);
}

/// Each node estimates how far its peers' clocks are from its own, from
/// their signed requests, and shows it in /admin/cluster and /metrics: near
/// zero for peers on this machine, and the real offset for a sender whose
/// clock is 45 s behind, even though that sender's requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_clock_offsets_are_estimated_from_signed_requests() {
    use hearsay::rpc::mac::{MacKey, HEADER};
    let cluster = TestCluster::start(3, opts()).await;
    let c = cluster.client(0);
    assert!(cluster.client(1).put(b"k", "v", "w=all").await.unwrap().status.is_success(), "n2 mails n1");
    let offsets = c.get_path("/admin/cluster").await.unwrap().json()["clock_offsets_ms"].clone();
    let n2 = offsets["n2"].as_i64().unwrap_or_else(|| panic!("n1 heard from n2: {offsets}"));
    assert!(n2.abs() < 1_000, "n2 runs on the same clock: {offsets}");

    let key = MacKey::from_secret(SECRET).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let body = hearsay::rpc::codec::encode(&hearsay::rpc::ReadRequest { key: Bytes::from_static(b"k") });
    let auth = key.sign("POST", "/internal/read", now - 45_000, "n9", &body);
    let r = c.send(Method::POST, "/internal/read", &[(HEADER, &auth)], Bytes::from(body)).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a request 45 s old is refused: {}", r.text());
    let offsets = c.get_path("/admin/cluster").await.unwrap().json()["clock_offsets_ms"].clone();
    let n9 = offsets["n9"].as_i64().unwrap_or_else(|| panic!("the refused sender is listed: {offsets}"));
    assert!((45_000..50_000).contains(&n9), "{offsets}");
    let metrics = c.get_path("/metrics").await.unwrap().text();
    assert!(metrics.contains(&format!("hearsay_peer_clock_offset_ms{{peer=\"n9\"}} {n9}")), "{metrics}");

    // A forged request teaches nothing.
    let forged = MacKey::from_secret(b"not-the-cluster-secret").unwrap().sign("POST", "/internal/read", now - 90_000, "n8", b"");
    let r = c.send(Method::POST, "/internal/read", &[(HEADER, &forged)], Bytes::new()).await.unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let offsets = c.get_path("/admin/cluster").await.unwrap().json()["clock_offsets_ms"].clone();
    assert!(offsets.get("n8").is_none(), "{offsets}");
}

/// Three nodes on `opts`, n3 restarted on `clock` (the others on the system clock).
async fn with_n3_on(clock: std::sync::Arc<hearsay::clock::SkewedClock>, opts: NodeOpts) -> TestCluster {
    let mut cluster = TestCluster::start(3, opts).await;
    cluster.node(2).stop().await;
    cluster.node(2).opts.clock = Some(clock);
    cluster.node(2).start_again().await;
    cluster
}

/// Waits until `c` stores a write of `key` (with w=one, so by its own clock).
async fn wait_takes_writes(c: &Client, key: &'static [u8], within: Duration) {
    wait_until("the node takes writes again", within, || {
        let c = c.clone();
        async move { c.put(key, "v", "w=one").await.is_ok_and(|r| r.status.is_success()) }
    })
    .await;
}

async fn wait_clock_ahead(what: &str, c: &Client) {
    wait_until(what, Duration::from_secs(10), || {
        let c = c.clone();
        async move {
            c.get_path("/ready").await.is_ok_and(|r| r.status == StatusCode::SERVICE_UNAVAILABLE && r.json()["error"] == "clock_ahead")
        }
    })
    .await;
}

/// A node whose clock jumps 10 min ahead learns from its peers' requests that
/// it is the odd one out: it refuses writes (503 clock_ahead), is not ready,
/// and stores nothing stamped in the future, while the others carry on. Put
/// right, it takes writes again, stamped by the true time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_clock_jumps_ahead_stamps_nothing_until_it_is_put_right() {
    let skew = hearsay::clock::SkewedClock::new(0);
    let cluster = with_n3_on(skew.clone(), opts()).await;
    cluster.wait_ready().await;
    let n3 = cluster.client(2);
    assert!(n3.put(b"before", "v", "w=all").await.unwrap().status.is_success());

    let ten_minutes = 600_000;
    skew.set_offset(ten_minutes);
    wait_clock_ahead("n3 hears from its peers that its clock is ahead", &n3).await;
    let r = n3.put(b"during", "v", "w=one").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"], "clock_ahead", "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"), "{}", r.text());
    assert!(r.error_message().contains("ahead of most of its peers' clocks"), "{}", r.text());
    let refusal = n3.get_path("/admin/cluster").await.unwrap().json()["clock_refusal"].clone();
    assert!(refusal.is_string(), "{refusal}");
    let metrics = n3.get_path("/metrics").await.unwrap().text();
    let gauge = metrics.lines().find_map(|l| l.strip_prefix("hearsay_clock_ahead_refusing_writes_ms ")).map(|v| v.parse::<u64>().unwrap());
    assert!(gauge.is_some_and(|ms| ms >= ten_minutes as u64 - 5_000), "{metrics}");
    let status = hearsay_status(&cluster.nodes[2].url, None).await;
    assert!(status.contains("cluster of 3 members"), "{status}");
    assert!(status.contains("n3 stamps no writes: this node's clock is"), "{status}");
    assert_eq!(n3.delete(b"before", "w=one").await.unwrap().status, StatusCode::SERVICE_UNAVAILABLE, "deletes are stamped too");
    assert_eq!(n3.get(b"during", "r=one").await.unwrap().status, StatusCode::NOT_FOUND, "nothing was stored");
    let elsewhere = cluster.client(0).put(b"elsewhere", "v", "w=quorum").await.unwrap();
    assert!(elsewhere.status.is_success(), "n1 and n2 carry on: {}", elsewhere.text());
    assert!(cluster.client(0).get_path("/ready").await.unwrap().status.is_success(), "n1's clock is not in doubt");

    skew.set_offset(0);
    wait_takes_writes(&n3, b"after", Duration::from_secs(30)).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let after = n3.get(b"after", "r=one").await.unwrap();
    // A restarted clock resumes at its persisted reservation, 2 s ahead at most.
    let stamped = hlc_of(&after) >> 16;
    assert!(stamped <= now + 5_000, "stamped by the true time: {stamped} vs now {now}");
    assert!(n3.get_path("/admin/cluster").await.unwrap().json()["clock_refusal"].is_null());
    assert!(!hearsay_status(&cluster.nodes[2].url, None).await.contains("stamps no writes"));
    let metrics = n3.get_path("/metrics").await.unwrap().text();
    assert!(metrics.contains("hearsay_clock_ahead_refusing_writes_ms 0\n"), "{metrics}");
}

/// A node that boots with its clock 10 min ahead (as before NTP steps it)
/// is judged by its peers before it persists that clock: restarted once the
/// clock is right, it takes writes at once instead of refusing them until
/// real time catches up with a mark renewed from the wrong clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_booted_with_its_clock_ahead_persists_none_of_it() {
    let skew = hearsay::clock::SkewedClock::new(600_000);
    let mut cluster = with_n3_on(skew.clone(), opts()).await;
    wait_clock_ahead("n3's peers find its clock ahead", &cluster.client(2)).await;
    // Renewals run every 500 ms: give several the chance to persist the clock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node(2).stop().await;
    skew.set_offset(0);
    cluster.node(2).start_again().await;
    let r = cluster.client(2).put(b"k", "v", "w=one").await.unwrap();
    assert!(r.status.is_success(), "{}", r.text());
}

/// A node that boots with its clock an hour ahead stamps no write before its
/// peers have judged that clock, even one that arrives in the moment before
/// the first peer answers: such a write would beat every write made
/// elsewhere for an hour, and its mark would hold the node's own writes back
/// as long. Cut off from its peers, it holds the write while it waits for
/// them (at most 5 s); once they answer, it refuses it, and once its clock is
/// put right, it takes writes by the true time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_booted_ahead_stamps_no_write_before_its_peers_answer() {
    let skew = hearsay::clock::SkewedClock::new(3_600_000);
    let mut cluster = TestCluster::start(3, opts()).await;
    cluster.node(2).stop().await;
    cluster.node(2).opts.clock = Some(skew.clone());
    // "": the peers n3 knows by address only (its seeds, at boot).
    for peer in ["n1", "n2", ""] {
        cluster.net.cut("n3", peer);
    }
    cluster.node(2).start_again().await;
    let n3 = cluster.client(2);
    let write = tokio::spawn({
        let n3 = n3.clone();
        async move { n3.put(b"early", "v", "w=one").await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!write.is_finished(), "the write waits for the peers' verdict");
    let ready = n3.get_path("/ready").await.unwrap();
    assert_eq!(ready.json()["error"], "clock_unjudged", "{}", ready.text());
    cluster.net.heal_all();
    let r = write.await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"], "clock_ahead", "{}", r.text());
    assert_eq!(n3.get(b"early", "r=one").await.unwrap().status, StatusCode::NOT_FOUND, "nothing was stored");
    skew.set_offset(0);
    wait_takes_writes(&n3, b"later", Duration::from_secs(10)).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let stamped = hlc_of(&n3.get(b"later", "r=one").await.unwrap()) >> 16;
    assert!(stamped <= now + 5_000, "stamped by the true time: {stamped} vs now {now}");
}

/// A node that boots with its clock ahead and has it stepped right while
/// it runs (NTP syncing just after boot) takes writes again within moments:
/// what it heard while its clock was wrong has no say any more. 6 s ahead,
/// with peers allowing 1 s of drift, it still joins (signed requests may be
/// 30 s off), so it no longer asks the seeds by address every half second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_booted_ahead_takes_writes_as_soon_as_its_clock_is_stepped_back() {
    let skew = hearsay::clock::SkewedClock::new(6_000);
    let cluster = with_n3_on(skew.clone(), NodeOpts { max_clock_drift: Duration::from_secs(1), ..opts() }).await;
    let n3 = cluster.client(2);
    wait_clock_ahead("n3's peers find its clock ahead", &n3).await;
    wait_until("n3 joined", Duration::from_secs(10), || {
        let n3 = n3.clone();
        async move { n3.get_path("/admin/cluster").await.is_ok_and(|r| r.json()["ready"] == true) }
    })
    .await;
    // The seeds' answers while ahead are the ones that must not linger.
    tokio::time::sleep(Duration::from_secs(1)).await;
    skew.set_offset(0);
    wait_takes_writes(&n3, b"k", Duration::from_secs(5)).await;
}

/// A step of a few seconds, shorter than the 30 s over which peers'
/// offsets are measured, is caught at the first peer message after it (6 s
/// ahead is too far where peers allow 1 s of drift): the least offset seen
/// before the step must not hide it until the window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_a_few_seconds_ahead_is_caught_at_once() {
    let skew = hearsay::clock::SkewedClock::new(0);
    let cluster = with_n3_on(skew.clone(), NodeOpts { max_clock_drift: Duration::from_secs(1), ..opts() }).await;
    cluster.wait_ready().await;
    let n3 = cluster.client(2);
    assert!(n3.put(b"before", "v", "w=all").await.unwrap().status.is_success(), "n3 hears from its peers");
    skew.set_offset(6_000);
    wait_clock_ahead("n3 hears that its clock is ahead", &n3).await;
    let steps = |c: Client| async move {
        let text = c.get_path("/metrics").await.unwrap().text();
        text.lines().find_map(|l| l.strip_prefix("hearsay_clock_steps_total ")?.parse::<u64>().ok()).expect("the steps counter")
    };
    assert_eq!(steps(n3.clone()).await, 1, "n3's step is counted");
    assert_eq!(steps(cluster.client(0)).await, 0, "n1's clock was not stepped");
}
