//! A node whose disk fills up: a real `hearsay serve` child started with a
//! file-size limit (`ulimit -f`), so its writes fail with EFBIG as they
//! would with ENOSPC. sled takes no write after such an error, even once
//! there is room again, so the node must say so everywhere (the write's
//! answer, `/ready`, `/health`, a metric, one log line) and keep serving
//! reads; after a restart with room, every acknowledged write is there.
//!
//! The limit is set on this test process for the moment of the spawn and
//! inherited by the child, so this file holds this one test only.

mod common;

use hearsay::client::Client;
use hearsay::process::ChildNode;
use std::time::Duration;

const LIMIT_BYTES: u64 = 48 << 20;

fn spawn(dir: &std::path::Path, log: &std::path::Path, file_size_limit: Option<u64>) -> ChildNode {
    let args = common::lone_child_args("full", dir);
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    if let Some(limit) = file_size_limit {
        // SAFETY: getrlimit and setrlimit read and write only the struct given.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut saved), 0);
            let lowered = libc::rlimit { rlim_cur: limit, rlim_max: saved.rlim_max };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lowered), 0);
        }
    }
    let node = ChildNode::spawn(std::path::Path::new(env!("CARGO_BIN_EXE_hearsay")), &args, Some(log), Duration::from_secs(30));
    if file_size_limit.is_some() {
        // SAFETY: as above; the soft limit goes back to what it was.
        unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &saved), 0) };
    }
    node.expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_node_loudly_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("node.log"));
    let mut node = spawn(&data, &log, Some(LIMIT_BYTES));
    let client = Client::new(&node.url).unwrap();
    let value = vec![b'v'; 1 << 20];

    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..2 * (LIMIT_BYTES >> 20) {
        let key = format!("full/{i}");
        let resp = client.put(key.as_bytes(), value.clone(), "").await.unwrap();
        if resp.status.is_success() {
            acked.push(key);
        } else if resp.status == 503 {
            failed = Some(resp);
            break;
        }
        // A 500 is the write whose flush failed: applied, not known durable.
    }
    let failed = failed.expect("the file-size limit never failed a write");
    assert!(acked.len() >= 8, "only {} writes fit under the limit", acked.len());
    let message = failed.error_message();
    assert_eq!(failed.json()["error"], "storage_failed", "{message}");
    assert!(message.contains("File too large") && message.contains("restart"), "{message}");
    assert_eq!(failed.header("retry-after"), Some("1"));

    // Every later write says the same; reads are still served.
    let small = client.put(b"small", "x", "").await.unwrap();
    assert_eq!((small.status.as_u16(), small.json()["error"].clone()), (503, "storage_failed".into()), "{}", small.text());
    let read = client.get(acked[0].as_bytes(), "").await.unwrap();
    assert_eq!((read.status.as_u16(), read.body.len()), (200, value.len()));
    for path in ["/ready", "/health"] {
        let resp = client.get_path(path).await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.json()["error"].clone()), (503, "storage_failed".into()), "{path}: {}", resp.text());
    }
    let metrics = client.get_path("/metrics").await.unwrap().text();
    assert!(metrics.lines().any(|l| l == "hearsay_storage_failed 1"), "{metrics}");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearsay")).args(["status", "--node", &node.url]).output().await.unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains(" FAILED ") && status.contains("storage failed (") && status.contains("restart"), "{status}");

    // Logged once, not per request nor by the clock's twice-a-second renewal.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("sled takes no more writes").count(), 1, "{text}");
    assert!(!text.contains("renewing the clock's persisted reservation failed"), "{text}");

    // Restarted with room, the node has every write it acknowledged, and takes new ones.
    node.kill();
    let node = spawn(&data, &log, None);
    let client = Client::new(&node.url).unwrap();
    for key in &acked {
        let resp = client.get(key.as_bytes(), "").await.unwrap();
        assert_eq!((resp.status.as_u16(), resp.body.len()), (200, value.len()), "acknowledged {key} lost");
    }
    assert!(client.put(b"small", "x", "").await.unwrap().status.is_success());
    assert!(client.get_path("/health").await.unwrap().status.is_success());
}
