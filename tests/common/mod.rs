//! The one test harness: real nodes in-process on 127.0.0.1:0, each with its
//! own temp data dir, that a test can stop and restart on the same dir.
#![allow(dead_code)]

use hearsay::client::Client;
use hearsay::config::{NodeConfig, SyncMode};
use hearsay::types::NodeId;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Options for a test node.
#[derive(Clone)]
pub struct NodeOpts {
    pub name: String,
    pub shards: Option<u32>,
    pub sync: SyncMode,
    pub max_value_bytes: usize,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts { name: "n1".into(), shards: Some(8), sync: SyncMode::Periodic, max_value_bytes: 1 << 20 }
    }
}

pub struct TestNode {
    pub opts: NodeOpts,
    pub dir: tempfile::TempDir,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hearsay::node::NodeError>>>,
}

impl TestNode {
    pub async fn start(opts: NodeOpts) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut node = TestNode { opts, dir, url: String::new(), stop: None, task: None };
        node.boot().await;
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(&self.opts.name)
    }

    pub fn config(&self) -> NodeConfig {
        NodeConfig {
            shards: self.opts.shards,
            sync: self.opts.sync,
            max_value_bytes: self.opts.max_value_bytes,
            cache_bytes: 32 << 20,
            ..NodeConfig::new(NodeId::new(&self.opts.name).unwrap(), self.data_dir())
        }
    }

    async fn boot(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let config = self.config();
        let storage = hearsay::node::open_storage(&config).await.expect("open storage");
        self.task = Some(tokio::spawn(hearsay::node::run_with_storage(listener, config, storage, async move {
            let _ = rx.await;
        })));
        self.stop = Some(tx);
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url).unwrap().with_timeout(Duration::from_secs(10))
    }

    /// Graceful stop; the data dir stays.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("node task").expect("node stopped cleanly");
        }
    }

    /// Stop and start again on the same data dir (a new port).
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }
}

/// Polls `check` until it returns true or `deadline` passes; no bare sleeps.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {deadline:?} waiting for: {what}");
}

/// A seed from `HEARSAY_TEST_SEED` or the clock, printed so a failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("HEARSAY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("test seed: {seed} (rerun with HEARSAY_TEST_SEED={seed})");
    seed
}
