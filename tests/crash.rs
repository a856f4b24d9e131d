//! Crash safety of `--sync=always`: a real `hearsay serve` child is killed
//! with SIGKILL right after acknowledging writes; after a restart on the same
//! data dir every acknowledged write is there.

use hearsay::client::Client;
use hearsay::process::ChildNode;
use std::time::Duration;

fn spawn(dir: &std::path::Path) -> ChildNode {
    let args: Vec<String> =
        ["--listen", "127.0.0.1:0", "--node-id", "crash", "--insecure", "--sync", "always", "--shards", "8", "--data-dir"]
            .iter()
            .map(|s| s.to_string())
            .chain([dir.display().to_string()])
            .collect();
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
