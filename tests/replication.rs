//! Replication by direct mail across real in-process nodes: consistency
//! levels, the persistent retry buffer, overflow accounting, convergence of
//! concurrent writers, and authentication of peer requests. Clocks: `clock.rs`.

mod common;

use bytes::Bytes;
use common::{local_keys, mail_for, wait_until, NodeOpts, TestCluster, SECRET};
use hearsay::client::Client;
use hyper::{Method, StatusCode};
use std::time::Duration;

fn opts() -> NodeOpts {
    NodeOpts { write_timeout: Duration::from_millis(1500), ..NodeOpts::default() }
}

async fn value_on(c: &Client, key: &str) -> Option<String> {
    let r = c.get(key.as_bytes(), "r=one").await.unwrap();
    (r.status == StatusCode::OK).then(|| r.text())
}

/// Waits until `c` serves every (key, value) with r=one.
async fn wait_holds_all(what: &str, c: &Client, acked: &[(String, String)]) {
    wait_until(what, Duration::from_secs(30), || async move {
        for (k, v) in acked {
            if value_on(c, k).await.as_deref() != Some(v.as_str()) {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_levels_make_writes_visible() {
    let cluster = TestCluster::start(3, opts()).await;
    for i in 0..20 {
        let key = format!("all/{i}");
        let r = cluster.client(i % 3).put(key.as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{} {}", r.status, r.text());
        // w=all: every replica applied it, so r=one anywhere sees it.
        for n in 0..3 {
            assert_eq!(value_on(&cluster.client(n), &key).await, Some(format!("v{i}")), "node {n} key {key}");
        }
    }
    for i in 0..20 {
        let key = format!("quorum/{i}");
        let r = cluster.client(i % 3).put(key.as_bytes(), format!("q{i}"), "w=quorum").await.unwrap();
        assert!(r.status.is_success());
        // w=quorum + r=quorum overlap in at least one replica.
        for n in 0..3 {
            let g = cluster.client(n).get(key.as_bytes(), "r=quorum").await.unwrap();
            assert_eq!((g.status, g.text()), (StatusCode::OK, format!("q{i}")));
        }
    }
    let shards = cluster.client(0).get_path("/admin/shards").await.unwrap().json();
    assert_eq!(shards["shards"][0]["replicas"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downed_replica_gets_every_buffered_write_back() {
    let mut cluster = TestCluster::start(3, opts()).await;
    cluster.node(2).stop().await;
    let c0 = cluster.client(0);
    let r = c0.put(b"probe", "x", "w=all").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.json()["error"], "not_enough_replicas");
    assert!(r.json()["message"].as_str().unwrap().contains("only 2 of the 3"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"), "a 503 says when to try again");

    let mut acked = Vec::new();
    for i in 0..200 {
        let key = format!("down/{i}");
        let r = cluster.client(i % 2).put(key.as_bytes(), format!("v{i}"), "w=quorum").await.unwrap();
        assert!(r.status.is_success(), "{} {}", r.status, r.text());
        acked.push((key, format!("v{i}")));
    }
    let pending = mail_for(&c0, "n3").await["pending_records"].as_u64().unwrap();
    assert!(pending > 0, "n1 buffered nothing for the down n3");

    cluster.node(2).start_again().await;
    let c2 = cluster.client(2);
    wait_holds_all("n3 holds every acknowledged write", &c2, &acked).await;
    for n in [0, 1] {
        let m = mail_for(&cluster.client(n), "n3").await;
        assert_eq!(m["pending_records"], 0, "{m}");
        assert_eq!(m["dropped"], 0, "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_buffer_survives_a_restart_of_the_sender() {
    let mut cluster = TestCluster::start(3, opts()).await;
    cluster.node(2).stop().await;
    let mut acked = Vec::new();
    for i in 0..100 {
        let key = format!("sender/{i}");
        let r = cluster.client(0).put(key.as_bytes(), format!("v{i}"), "w=quorum").await.unwrap();
        assert!(r.status.is_success());
        acked.push((key, format!("v{i}")));
    }
    assert_eq!(mail_for(&cluster.client(0), "n3").await["pending_records"], 100);
    // Only n1 coordinated, so only n1's buffer holds these. Restart it first.
    cluster.node(0).restart().await;
    assert_eq!(mail_for(&cluster.client(0), "n3").await["pending_records"], 100, "buffer lost in restart");
    cluster.node(2).start_again().await;
    let c2 = cluster.client(2);
    wait_holds_all("n3 holds every write n1 buffered before its restart", &c2, &acked).await;
    assert_eq!(mail_for(&cluster.client(0), "n3").await["pending_records"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflowing_buffer_drops_counts_and_marks_shards_dirty() {
    let mut cluster = TestCluster::start(3, NodeOpts { retry_max_records: 100, ..opts() }).await;
    cluster.node(2).stop().await;
    let c0 = cluster.client(0);
    let mut dropped_shards = std::collections::BTreeSet::new();
    // The first failed send is buffered asynchronously; once it is, later
    // writes queue behind it synchronously, in write order.
    assert!(c0.put(b"overflow/0000", "v", "w=quorum").await.unwrap().status.is_success());
    wait_until("the first write is buffered", Duration::from_secs(10), || {
        let c0 = c0.clone();
        async move { mail_for(&c0, "n3").await["pending_records"] == 1 }
    })
    .await;
    for i in 1..1000u32 {
        let key = format!("overflow/{i:04}");
        let r = c0.put(key.as_bytes(), "v", "w=quorum").await.unwrap();
        assert!(r.status.is_success(), "{} {}", r.status, r.text());
        if i >= 100 {
            dropped_shards.insert(hearsay::types::shard_of(key.as_bytes(), 8).0);
        }
    }
    let m = mail_for(&c0, "n3").await;
    assert_eq!(m["pending_records"], 100, "{m}");
    assert_eq!(m["dropped"], 900, "{m}");
    let dirty: std::collections::BTreeSet<u32> = m["dirty_shards"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as u32).collect();
    assert_eq!(dirty, dropped_shards);
    let metrics = c0.get_path("/metrics").await.unwrap().text();
    assert!(metrics.contains("hearsay_mail_dropped_total{peer=\"n3\"} 900"), "{metrics}");

    cluster.node(2).start_again().await;
    let c2 = cluster.client(2);
    wait_until("n1's buffer drains to n3", Duration::from_secs(30), || {
        let c0 = c0.clone();
        async move { mail_for(&c0, "n3").await["pending_records"] == 0 }
    })
    .await;
    assert_eq!(local_keys(&c2).await, 100, "n3 holds exactly what was buffered");
    for i in 0..100 {
        assert_eq!(value_on(&c2, &format!("overflow/{i:04}")).await.as_deref(), Some("v"), "the oldest 100 were kept");
    }
    // Dirty marks persist across a restart of the sender.
    cluster.node(0).restart().await;
    let m = mail_for(&cluster.client(0), "n3").await;
    assert_eq!(m["dirty_shards"].as_array().unwrap().len(), dropped_shards.len(), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_converge_to_the_max_version() {
    let cluster = TestCluster::start(3, opts()).await;
    let seed = common::seed();
    let mut tasks = Vec::new();
    for writer in 0..2usize {
        let c = cluster.client(writer);
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..50u64 {
                let body = format!("w{writer}-{}", seed.wrapping_add(i));
                let r = c.put(b"contended", body, "w=one").await.unwrap();
                assert!(r.status.is_success());
                versions.push(r.header("x-hearsay-version").unwrap().parse::<hearsay::types::Version>().unwrap());
            }
            versions
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let max = all.into_iter().max().unwrap().to_string();
    let clients: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    wait_until("all replicas at the max version", Duration::from_secs(20), || {
        let (clients, max) = (clients.clone(), max.clone());
        async move {
            for c in &clients {
                let r = c.get(b"contended", "r=one").await.unwrap();
                if r.header("x-hearsay-version") != Some(max.as_str()) {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_buffers_and_a_healed_link_delivers() {
    let cluster = TestCluster::start(3, opts()).await;
    cluster.net.cut("n1", "n3");
    let c0 = cluster.client(0);
    assert!(c0.put(b"cut", "during", "w=quorum").await.unwrap().status.is_success());
    assert_eq!(c0.put(b"cut2", "x", "w=all").await.unwrap().status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(value_on(&cluster.client(2), "cut").await, None, "the cut link delivered");
    cluster.net.heal("n1", "n3");
    let c2 = cluster.client(2);
    wait_until("n3 receives the write after the link heals", Duration::from_secs(20), || {
        let c2 = c2.clone();
        async move { value_on(&c2, "cut").await.as_deref() == Some("during") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_at_quorum_repair_a_stale_replica() {
    let cluster = TestCluster::start(3, NodeOpts { retry_max_records: 0, retry_max_bytes: 0, ..opts() }).await;
    cluster.net.cut("n1", "n3");
    let c0 = cluster.client(0);
    assert!(c0.put(b"repair-me", "new", "w=quorum").await.unwrap().status.is_success());
    cluster.net.heal("n1", "n3");
    let c2 = cluster.client(2);
    assert_eq!(value_on(&c2, "repair-me").await, None, "buffering is off, so n3 missed it");
    let r = c0.get(b"repair-me", "r=all").await.unwrap();
    assert_eq!((r.status, r.text()), (StatusCode::OK, "new".to_string()));
    wait_until("read repair reaches n3", Duration::from_secs(10), || {
        let c2 = c2.clone();
        async move { value_on(&c2, "repair-me").await.as_deref() == Some("new") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_or_malformed_peer_requests_change_nothing() {
    use hearsay::rpc::mac::{MacKey, HEADER};
    use hearsay::rpc::{codec, ApplyBatch, WireRecord};
    let cluster = TestCluster::start(3, opts()).await;
    let c = cluster.client(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let batch = codec::encode(&ApplyBatch {
        records: vec![WireRecord { key: Bytes::from_static(b"forged"), hlc: now << 16, node: 7, value: Some(Bytes::from_static(b"evil")) }],
    });
    let good = MacKey::from_secret(SECRET).unwrap();
    let wrong = MacKey::from_secret(b"not-the-cluster-secret").unwrap();
    let cases: Vec<(Option<String>, Vec<u8>, StatusCode)> = vec![
        (None, batch.clone(), StatusCode::UNAUTHORIZED),
        (Some(wrong.sign("POST", "/internal/apply", now, "n2", &batch)), batch.clone(), StatusCode::UNAUTHORIZED),
        (Some(good.sign("POST", "/internal/apply", now - 60_000, "n2", &batch)), batch.clone(), StatusCode::UNAUTHORIZED),
        (Some(good.sign("POST", "/internal/read", now, "n2", &batch)), batch.clone(), StatusCode::UNAUTHORIZED),
        (Some("n2 garbage".to_string()), batch.clone(), StatusCode::UNAUTHORIZED),
        // Correctly signed but truncated: authenticated, then refused by the decoder.
        (
            Some(good.sign("POST", "/internal/apply", now, "n2", &batch[..batch.len() - 3])),
            batch[..batch.len() - 3].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (auth, body, status) in cases {
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![(HEADER, a)]).unwrap_or_default();
        let r = c.send(Method::POST, "/internal/apply", &headers, Bytes::from(body)).await.unwrap();
        assert_eq!(r.status, status, "{}", r.text());
        assert!(r.json()["error"].is_string());
    }
    // The same batch from a build of the previous format is refused by name.
    let older = [&[codec::FORMAT - 1][..], &batch[1..]].concat();
    let auth = good.sign("POST", "/internal/apply", now, "n2", &older);
    let r = c.send(Method::POST, "/internal/apply", &[(HEADER, &auth)], Bytes::from(older)).await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json()["message"].as_str().unwrap().contains("runs another hearsay version"), "{}", r.text());
    assert_eq!(c.get(b"forged", "r=all").await.unwrap().status, StatusCode::NOT_FOUND);
    assert_eq!(local_keys(&c).await, 0);
    // The same request, properly signed, is accepted: the refusals above were about auth.
    let ok = good.sign("POST", "/internal/apply", now, "n2", &batch);
    let r = c.send(Method::POST, "/internal/apply", &[(HEADER, &ok)], Bytes::from(batch)).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

/// Every key under `prefix`, paging `limit` at a time through `GET /v1/kv` on `c`.
async fn list_all(c: &Client, prefix: &str, limit: usize) -> Result<Vec<String>, String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/kv?prefix={prefix}&limit={limit}&after={a}"),
            None => format!("/v1/kv?prefix={prefix}&limit={limit}"),
        };
        let r = c.get_path(&path).await.unwrap();
        if r.status != StatusCode::OK {
            return Err(format!("{} {}", r.status, r.text()));
        }
        let body = r.json();
        let keys = body["keys"].as_array().unwrap();
        assert!(keys.len() <= limit, "{body}");
        seen.extend(keys.iter().map(|k| k.as_str().unwrap().to_string()));
        match body["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => return Ok(seen),
        }
    }
}

/// With RF below the cluster size no node holds every shard; a listing on
/// any node still returns every live key, in order, across pages. With a
/// node down it reads that node's shards from their other replica; with both
/// replicas of a shard down it fails with 503 instead of leaving keys out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_covers_every_shard_when_no_node_holds_them_all() {
    let mut cluster = TestCluster::start(4, NodeOpts { rf: 2, ..opts() }).await;
    let mut expected: Vec<String> = (0..90).map(|i| format!("all/{i:03}")).collect();
    for i in 0..90 {
        let r = cluster.client(i % 4).put(format!("all/{i:03}").as_bytes(), "v", "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    let gone = cluster.client(1).delete(b"all/042", "w=all").await.unwrap();
    assert!(gone.status.is_success());
    expected.retain(|k| k != "all/042");
    assert!(cluster.client(2).put(b"other/1", "v", "w=all").await.unwrap().status.is_success());
    for n in 0..4 {
        let held = local_keys(&cluster.client(n)).await;
        assert!(held < 90, "n{} holds {held} keys: every node must miss some shards for this test", n + 1);
        assert_eq!(list_all(&cluster.client(n), "all%2F", 7).await.unwrap(), expected, "listing on n{}", n + 1);
    }

    // Peers are asked at once. Slow every link from n1 by 1 s: a one-page
    // listing waits about 1 s, where asking the peers in turn takes 1 s each.
    let shards = cluster.client(0).get_path("/admin/shards").await.unwrap().json();
    let asked: std::collections::BTreeSet<String> = shards["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["replicas"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect::<Vec<_>>())
        .filter(|replicas| !replicas.iter().any(|r| r == "n1"))
        .map(|replicas| replicas[0].clone())
        .collect();
    assert!(asked.len() >= 2, "n1 must need at least two peers for this check: {asked:?}");
    for peer in ["n2", "n3", "n4"] {
        cluster.net.delay("n1", peer, Duration::from_secs(1));
    }
    let start = std::time::Instant::now();
    let listed = list_all(&cluster.client(0), "all%2F", 100).await;
    let took = start.elapsed();
    cluster.net.heal_all();
    assert_eq!(listed.unwrap(), expected);
    let sequential = Duration::from_secs(asked.len() as u64);
    assert!(took < sequential, "{took:?} for {} peers slowed by 1 s each: they were asked one after another", asked.len());

    cluster.node(3).stop().await;
    assert_eq!(list_all(&cluster.client(0), "all%2F", 25).await.unwrap(), expected, "n4 down: its shards come from their other replica");
    cluster.node(2).stop().await;
    let err = list_all(&cluster.client(0), "all%2F", 25).await.expect_err("shards held only by n3 and n4 are unavailable");
    assert!(err.starts_with("503") && err.contains("shards_unavailable"), "{err}");

    // The peer side checks what it is asked before it scans anything.
    use hearsay::rpc::{codec, mac::MacKey, mac::HEADER, ListRequest};
    let key = MacKey::from_secret(SECRET).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let ask = |ids: Vec<u32>, shards: u32, limit: u32| ListRequest { ids, shards, prefix: Bytes::new(), after: None, limit };
    let long = ListRequest { after: Some(Bytes::from(vec![b'x'; 1025])), ..ask(vec![0], 8, 10) };
    for (req, status) in [
        (ask(vec![0, 1], 8, 10), StatusCode::OK),
        (ask(vec![0], 8, 0), StatusCode::BAD_REQUEST),
        (ask(vec![0], 8, 1001), StatusCode::BAD_REQUEST),
        (ask(vec![8], 8, 10), StatusCode::BAD_REQUEST),
        (ask(vec![0], 7, 10), StatusCode::CONFLICT),
        (long, StatusCode::BAD_REQUEST),
    ] {
        let body = codec::encode(&req);
        let auth = key.sign("POST", "/internal/list", now, "n2", &body);
        let r = cluster.client(0).send(Method::POST, "/internal/list", &[(HEADER, &auth)], Bytes::from(body)).await.unwrap();
        assert_eq!(r.status, status, "{req:?}: {}", r.text());
    }
}

/// A replica that answers and refuses mail is named, with its reason, in the
/// 503 the writer gets (here n3 runs with another cluster secret, as a
/// misconfigured node would), not only counted as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_replica_and_its_reason_are_in_the_503() {
    let mut cluster = TestCluster::start(3, opts()).await;
    cluster.node(2).stop().await;
    cluster.node(2).opts.secret = Some(b"a-different-cluster-secret".to_vec());
    cluster.node(2).start_again().await;
    let r = cluster.client(0).put(b"refused", "v", "w=all").await.unwrap();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let message = r.error_message();
    assert!(message.starts_with("only 2 of the 3 required replicas"), "{message}");
    assert!(message.contains("peer n3 refused the request: 401"), "{message}");
    let ok = cluster.client(0).put(b"accepted", "v", "w=quorum").await.unwrap();
    assert!(ok.status.is_success(), "{}", ok.text());
}

/// A 503 names each replica that did not count and why: one cut off, one
/// whose write queued behind its undelivered mail, one too slow to answer.
/// A read's 503 speaks of the read, not of a write in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_says_which_replicas_did_not_count_and_why() {
    let cluster = TestCluster::start(3, opts()).await;
    let n1 = cluster.client(0);
    let refused = |r: hearsay::client::Response| {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
        r.error_message()
    };
    cluster.net.cut("n1", "n3");
    let m = refused(n1.put(b"why/1", "v", "w=all").await.unwrap());
    assert!(m.contains("peer n3 is unreachable: link is down"), "{m}");
    assert!(m.ends_with("; the write is still in flight and not rolled back"), "{m}");
    let m = refused(n1.put(b"why/2", "v", "w=all").await.unwrap());
    assert!(m.contains("peer n3 has undelivered mail (its last delivery failed: peer n3 is unreachable: link is down), so this write is queued behind it"), "{m}");
    assert_eq!(mail_for(&n1, "n3").await["last_error"], "peer n3 is unreachable: link is down");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay")).args(["status", "--node", n1.base()]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("mail for n3: peer n3 is unreachable: link is down"), "{status}");
    let m = refused(n1.get(b"why/1", "r=all").await.unwrap());
    assert!(m.starts_with("only 2 of the 3 required replicas answered the read in time"), "{m}");
    assert!(m.contains("peer n3 is unreachable: link is down") && !m.contains("write"), "{m}");

    cluster.net.heal_all();
    wait_until("n1's mail for n3 is delivered", Duration::from_secs(20), async || mail_for(&n1, "n3").await["pending_records"] == 0).await;
    assert!(mail_for(&n1, "n3").await["last_error"].is_null(), "a delivery clears the last error");
    cluster.net.delay("n1", "n2", Duration::from_secs(3));
    let m = refused(n1.put(b"why/3", "v", "w=all").await.unwrap());
    assert!(m.contains("peer n2 had not answered within 1.5s") && !m.contains("n3"), "{m}");
    let m = refused(n1.get(b"why/3", "r=all").await.unwrap());
    assert!(m.contains("peer n2 had not answered within 1.5s") && !m.contains("n3"), "{m}");
    cluster.net.heal_all();
}

/// A coordinator that holds no replica of a key checks `If-Match` and
/// `If-None-Match` against what a replica answers, and a refused write
/// reaches no replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_hold_on_a_coordinator_that_is_not_a_replica() {
    let cluster = TestCluster::start(4, NodeOpts { rf: 2, ..opts() }).await;
    let shards = cluster.client(0).get_path("/admin/shards").await.unwrap().json();
    let count = shards["shard_count"].as_u64().unwrap() as u32;
    let elsewhere = |key: &str| {
        let shard = hearsay::types::shard_of(key.as_bytes(), count).0 as usize;
        !shards["shards"][shard]["replicas"].as_array().unwrap().iter().any(|r| r == "n1")
    };
    let key = (0..).map(|i| format!("cond/{i}")).find(|k| elsewhere(k)).unwrap();
    let path = format!("/v1/kv/{key}?w=all");
    let (n1, n2) = (cluster.client(0), cluster.client(1));
    let send = |headers: Vec<(&'static str, String)>, body: &'static str| {
        let path = path.clone();
        let n1 = n1.clone();
        async move {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            n1.send(Method::PUT, &path, &headers, Bytes::from(body)).await.unwrap()
        }
    };
    assert_eq!(send(vec![("if-match", "*".into())], "no").await.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(value_on(&n2, &key).await, None, "a refused write reached no replica");
    let created = send(vec![("if-none-match", "*".into())], "first").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let r = send(vec![("if-none-match", "*".into())], "again").await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.text());
    let tag = created.header("etag").unwrap().to_string();
    assert_eq!(send(vec![("if-match", tag.clone())], "second").await.status, StatusCode::NO_CONTENT);
    assert_eq!(send(vec![("if-match", tag)], "stale").await.status, StatusCode::PRECONDITION_FAILED);
    for n in 0..4 {
        assert_eq!(value_on(&cluster.client(n), &key).await.as_deref(), Some("second"), "on n{}", n + 1);
    }
}
