//! Crashes of real `hearsay serve` children, killed with SIGKILL: under
//! `--sync=always` every acknowledged write is there after a restart on the
//! same data dir; under `--sync=periodic` the restarted node repairs its
//! shards from its peers by itself.

mod common;

use common::{all_roots_equal, is_ready, runs_by, wait_until};
use hearsay::client::Client;
use hearsay::process::{ensure_secret_file, free_loopback_addrs, ChildNode, ClusterSpec, LocalCluster};
use std::time::Duration;

fn spawn(dir: &std::path::Path) -> ChildNode {
    let args = common::lone_child_args("crash", dir);
    ChildNode::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_hearsay")), &args, None, Duration::from_secs(30)).expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_writes_loses_nothing() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let mut node = spawn(dir.path());
    let client = Client::new(&node.url).unwrap();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_WRITER {
                let key = format!("crash/{w}/{i}");
                let resp = client.put(key.as_bytes(), format!("value-{w}-{i}"), "").await.expect("put");
                assert!(resp.status.is_success(), "{} {}", resp.status, resp.text());
                acked.push(key);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    // No graceful path: the process dies the moment the last ack arrived.
    node.kill();
    assert_eq!(acked.len(), WRITERS * PER_WRITER);

    let node = spawn(dir.path());
    let client = Client::new(&node.url).unwrap();
    let mut missing = Vec::new();
    for key in &acked {
        let resp = client.get(key.as_bytes(), "").await.unwrap();
        let (w, i) = key.trim_start_matches("crash/").split_once('/').unwrap();
        if resp.status != 200 || resp.body != format!("value-{w}-{i}") {
            missing.push(key.clone());
        }
    }
    assert!(missing.is_empty(), "{} acknowledged writes lost: {:?}", missing.len(), &missing[..missing.len().min(10)]);
}

/// Under `--sync=periodic` a node killed mid-work may lack writes it
/// acknowledged last. At its next start it finds its store was left
/// running and, once its peers answer, runs anti-entropy over every shard
/// it holds, unasked; after a clean stop it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_sigkill_repairs_its_shards_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster-secret");
    ensure_secret_file(&secret).unwrap();
    let spec = ClusterSpec {
        exe: std::path::Path::new(env!("CARGO_BIN_EXE_hearsay")),
        addrs: free_loopback_addrs(3).unwrap(),
        data_dir: dir.path(),
        secret_file: &secret,
        extra_args: ["--sync", "periodic", "--shards", "8"].map(String::from).to_vec(),
    };
    let mut cluster = LocalCluster::spawn(&spec).expect("cluster starts");
    let cs: Vec<Client> = cluster.urls().iter().map(|u| Client::new(u).unwrap()).collect();
    for c in &cs {
        wait_until("every node ready", Duration::from_secs(30), async || is_ready(c).await).await;
    }
    for i in 0..300 {
        let r = cs[0].put(format!("k/{i}").as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{} {}", r.status, r.text());
    }
    cluster.nodes[1].kill();
    cluster.start(1).expect("n2 starts again");
    wait_until("n2's run after its unclean stop completes", Duration::from_secs(60), async || {
        runs_by(&cs[1], "unclean-stop").await.iter().any(|r| r["outcome"] == "completed")
    })
    .await;
    let run = &runs_by(&cs[1], "unclean-stop").await[0];
    assert_eq!(run["shards_total"], 8, "every shard n2 replicates: {run}");
    assert!(all_roots_equal(&cs).await, "replicas differ after the run: {run}");

    // A clean stop leaves nothing to repair, and no run is started.
    cluster.restart(1).expect("n2 restarts cleanly");
    wait_until("n2 ready after a clean restart", Duration::from_secs(30), async || is_ready(&cs[1]).await).await;
    // The run would start within one 200 ms check of readiness.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(runs_by(&cs[1], "unclean-stop").await.len(), 1, "a clean restart started another run");
}
