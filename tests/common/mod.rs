//! The one test harness: real nodes in-process on 127.0.0.1, each with its
//! own temp data dir, that a test can stop and restart (same dir, same port),
//! joined into clusters over a network the test can cut, delay and heal.
#![allow(dead_code)]

use hearsay::client::Client;
use hearsay::config::{Links, NodeConfig, SyncMode};
use hearsay::rpc::client::{Link, LinkFilter};
use hearsay::types::NodeId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SECRET: &[u8] = b"test-cluster-secret-0123456789";

/// Options for a test node.
#[derive(Clone)]
pub struct NodeOpts {
    pub name: String,
    pub shards: Option<u32>,
    pub sync: SyncMode,
    pub max_value_bytes: usize,
    pub seeds: Vec<String>,
    pub rf: usize,
    pub secret: Option<Vec<u8>>,
    pub retry_max_records: u64,
    pub retry_max_bytes: u64,
    pub write_timeout: Duration,
    pub net: Option<Arc<Net>>,
    pub admin_token: Option<String>,
    pub tombstone_grace: Option<Duration>,
    pub purge_delay: Duration,
    pub handoff_every: Option<Duration>,
    pub max_clock_drift: Duration,
    pub gossip: hearsay::gossip::SwimConfig,
    /// The node's wall clock; the system clock when `None`.
    pub clock: Option<Arc<dyn hearsay::clock::Clock>>,
    pub connections: hearsay::api::server::ConnectionLimits,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            name: "n1".into(),
            shards: Some(8),
            sync: SyncMode::Periodic,
            max_value_bytes: 1 << 20,
            seeds: Vec::new(),
            rf: 3,
            secret: Some(SECRET.to_vec()),
            retry_max_records: 100_000,
            retry_max_bytes: 256 << 20,
            write_timeout: Duration::from_secs(2),
            net: None,
            admin_token: None,
            tombstone_grace: Some(hearsay::config::DEFAULT_TOMBSTONE_GRACE),
            purge_delay: hearsay::config::DEFAULT_PURGE_DELAY,
            handoff_every: Some(hearsay::repair::handoff::HANDOFF_EVERY),
            gossip: hearsay::gossip::SwimConfig::default(),
            max_clock_drift: Duration::from_millis(hearsay::clock::DEFAULT_MAX_DRIFT_MS),
            clock: None,
            connections: hearsay::api::server::ConnectionLimits::default(),
        }
    }
}

/// The test network: every link is up unless a test says otherwise.
#[derive(Default)]
pub struct Net {
    links: Mutex<HashMap<(String, String), Link>>,
}

impl Net {
    fn set(&self, a: &str, b: &str, link: Link) {
        let mut links = self.links.lock().unwrap();
        links.insert((a.into(), b.into()), link);
        links.insert((b.into(), a.into()), link);
    }
    /// Drops traffic between `a` and `b`, both ways.
    pub fn cut(&self, a: &str, b: &str) {
        self.set(a, b, Link::Down);
    }
    pub fn delay(&self, a: &str, b: &str, d: Duration) {
        self.set(a, b, Link::Delay(d));
    }
    pub fn heal(&self, a: &str, b: &str) {
        self.set(a, b, Link::Up);
    }
    pub fn heal_all(&self) {
        self.links.lock().unwrap().clear();
    }
}

impl LinkFilter for Net {
    fn link(&self, from: &str, to: &str) -> Link {
        self.links.lock().unwrap().get(&(from.to_string(), to.to_string())).copied().unwrap_or(Link::Up)
    }
}

pub struct TestNode {
    pub opts: NodeOpts,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hearsay::node::NodeError>>>,
}

impl TestNode {
    pub async fn start(opts: NodeOpts) -> TestNode {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestNode::start_on(opts, listener).await
    }

    /// Starts on a listener bound beforehand (clusters learn all addresses first).
    pub async fn start_on(opts: NodeOpts, listener: tokio::net::TcpListener) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = listener.local_addr().unwrap();
        let mut node = TestNode { opts, dir, addr, url: format!("http://{addr}"), stop: None, task: None };
        node.boot(listener).await;
        node
    }

    pub fn name(&self) -> &str {
        &self.opts.name
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(&self.opts.name)
    }

    pub fn config(&self) -> NodeConfig {
        let mut c = NodeConfig::new(NodeId::new(&self.opts.name).unwrap(), self.data_dir());
        c.advertise = Some(self.addr.to_string());
        c.shards = self.opts.shards;
        c.sync = self.opts.sync;
        c.max_value_bytes = self.opts.max_value_bytes;
        c.cache_bytes = 32 << 20;
        c.seeds = self.opts.seeds.clone();
        c.replication_factor = self.opts.rf;
        c.cluster_secret = self.opts.secret.clone();
        c.write_timeout = self.opts.write_timeout;
        c.retry_max_records = self.opts.retry_max_records;
        c.retry_max_bytes = self.opts.retry_max_bytes;
        c.admin_token = self.opts.admin_token.clone();
        c.tombstone_grace = self.opts.tombstone_grace;
        c.purge_delay = self.opts.purge_delay;
        c.handoff_every = self.opts.handoff_every;
        c.max_clock_drift = self.opts.max_clock_drift;
        c.gossip = self.opts.gossip.clone();
        c.connections = self.opts.connections;
        if let Some(net) = &self.opts.net {
            c.links = Links(net.clone());
        }
        if let Some(clock) = &self.opts.clock {
            c.clock = hearsay::config::WallClock(clock.clone());
        }
        c
    }

    async fn boot(&mut self, listener: tokio::net::TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let config = self.config();
        let storage = hearsay::node::open_storage(&config).await.expect("open storage");
        self.task = Some(tokio::spawn(hearsay::node::run_with_storage(listener, config, storage, async move {
            let _ = rx.await;
        })));
        self.stop = Some(tx);
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url).unwrap().with_timeout(Duration::from_secs(30)).with_token(self.opts.admin_token.clone())
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
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

    /// Starts a stopped node again on the same data dir and port.
    pub async fn start_again(&mut self) {
        assert!(!self.is_running(), "node {} is running", self.opts.name);
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.boot(listener).await;
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }
}

/// N nodes named n1..nN, each seeded with all the others, sharing one [`Net`].
pub struct TestCluster {
    pub nodes: Vec<TestNode>,
    pub net: Arc<Net>,
}

impl TestCluster {
    pub async fn start(n: usize, base: NodeOpts) -> TestCluster {
        let net = Arc::new(Net::default());
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let opts = NodeOpts {
                name: format!("n{}", i + 1),
                seeds: addrs.iter().filter(|a| **a != addrs[i]).cloned().collect(),
                net: Some(net.clone()),
                ..base.clone()
            };
            nodes.push(TestNode::start_on(opts, listener).await);
        }
        let cluster = TestCluster { nodes, net };
        cluster.wait_ready().await;
        cluster
    }

    /// Starts one more node, `n{len + 1}`, seeded with every node so far,
    /// and waits until it is ready (every node it asked knows it).
    pub async fn join(&mut self, base: NodeOpts) {
        let seeds = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        let opts = NodeOpts { name: format!("n{}", self.nodes.len() + 1), seeds, net: Some(self.net.clone()), ..base };
        self.nodes.push(TestNode::start(opts).await);
        self.wait_ready().await;
    }

    pub fn node(&mut self, i: usize) -> &mut TestNode {
        &mut self.nodes[i]
    }

    pub fn clients(&self) -> Vec<Client> {
        (0..self.nodes.len()).map(|i| self.client(i)).collect()
    }

    pub fn client(&self, i: usize) -> Client {
        self.nodes[i].client()
    }

    /// Every running node knows every member.
    pub async fn wait_ready(&self) {
        let clients: Vec<Client> = self.nodes.iter().filter(|n| n.is_running()).map(|n| n.client()).collect();
        wait_until("every node ready", Duration::from_secs(20), || {
            let clients = clients.clone();
            async move {
                for c in &clients {
                    if !is_ready(c).await {
                        return false;
                    }
                }
                true
            }
        })
        .await;
    }
}

/// Whether `c`'s node answers `/ready` with 200.
pub async fn is_ready(c: &Client) -> bool {
    c.get_path("/ready").await.is_ok_and(|r| r.status == 200)
}

/// Polls `check` until it returns true or `deadline` passes; no bare sleeps.
pub async fn wait_until(what: &str, deadline: Duration, mut check: impl AsyncFnMut() -> bool) {
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

/// Sum of live keys a node stores locally, from `/admin/shards`.
pub async fn local_keys(c: &Client) -> u64 {
    shard_sum(c, "keys").await
}

/// Records (values and tombstones) a node stores locally, from `/admin/shards`.
pub async fn local_records(c: &Client) -> u64 {
    shard_sum(c, "records").await
}

async fn shard_sum(c: &Client, field: &str) -> u64 {
    let shards = c.get_path("/admin/shards").await.unwrap().json();
    shards["shards"].as_array().unwrap().iter().map(|s| s[field].as_u64().unwrap()).sum()
}

/// A node's retry-buffer stats for one peer.
pub async fn mail_for(c: &Client, peer: &str) -> serde_json::Value {
    let mail = c.get_path("/admin/mail").await.unwrap().json();
    mail["peers"].as_array().unwrap().iter().find(|p| p["peer"] == peer).cloned().unwrap_or(serde_json::Value::Null)
}

/// Sends a signed peer-protocol request, as another member would, and
/// decodes the reply.
pub async fn peer_call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(c: &Client, path: &str, req: &Req) -> Resp {
    let r = peer_send(c, path, req).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    hearsay::rpc::codec::decode(&r.body).unwrap()
}

/// A signed peer-protocol request, as another member would send it; the
/// reply as it came.
pub async fn peer_send<Req: serde::Serialize>(c: &Client, path: &str, req: &Req) -> hearsay::client::Response {
    use hearsay::rpc::mac::{MacKey, HEADER};
    let body = hearsay::rpc::codec::encode(req);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let auth = MacKey::from_secret(SECRET).unwrap().sign("POST", path, now, "test", &body);
    c.send(hyper::Method::POST, path, &[(HEADER, &auth)], body.into()).await.unwrap()
}

/// Writes records straight into one node's store through a signed
/// `/internal/apply`, bypassing replication: how tests plant divergence.
/// Returns the replies, one per chunk of 2000 records.
pub async fn plant(c: &Client, records: Vec<(Vec<u8>, u64, Option<Vec<u8>>)>) -> Vec<hearsay::rpc::ApplyReply> {
    use hearsay::rpc::{ApplyBatch, WireRecord};
    let mut replies = Vec::new();
    for chunk in records.chunks(2000) {
        let batch = ApplyBatch {
            records: chunk
                .iter()
                .map(|(k, hlc, v)| WireRecord { key: k.clone().into(), hlc: *hlc, node: 42, value: v.clone().map(Into::into) })
                .collect(),
        };
        replies.push(peer_call(c, hearsay::rpc::PATH_APPLY, &batch).await);
    }
    replies
}

/// Starts an anti-entropy run; returns its id.
pub async fn start_run(c: &Client, body: serde_json::Value) -> String {
    let r =
        c.send(hyper::Method::POST, "/admin/anti-entropy", &[("content-type", "application/json")], body.to_string().into()).await.unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["run_id"].as_str().unwrap().to_string()
}

/// Waits for a run to land in the history and returns its summary.
pub async fn wait_run(c: &Client, id: &str) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let st = c.get_path("/admin/anti-entropy").await.unwrap().json();
        if let Some(run) = st["history"].as_array().and_then(|h| h.iter().find(|r| r["id"] == id)) {
            found = run.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!found.is_null(), "run {id} did not finish in time");
    found
}

/// Runs to completion and returns the summary.
pub async fn repair(c: &Client, body: serde_json::Value) -> serde_json::Value {
    let id = start_run(c, body).await;
    wait_run(c, &id).await
}

/// Every shard's root on every node, for shards that node replicates.
pub async fn roots(clients: &[Client]) -> Vec<std::collections::BTreeMap<u64, String>> {
    let mut out = Vec::new();
    for c in clients {
        let shards = c.get_path("/admin/shards").await.unwrap().json();
        out.push(
            shards["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["id"].as_u64().unwrap(), s["root"].as_str().unwrap().to_string()))
                .collect(),
        );
    }
    out
}

pub async fn all_roots_equal(clients: &[Client]) -> bool {
    let r = roots(clients).await;
    r.iter().all(|x| *x == r[0])
}

/// The summaries of the anti-entropy runs `c`'s node has run or is running
/// that `trigger` started.
pub async fn runs_by(c: &Client, trigger: &str) -> Vec<serde_json::Value> {
    let status = c.get_path("/admin/anti-entropy").await.unwrap().json();
    let history = status["history"].as_array().cloned().unwrap_or_default();
    history.into_iter().chain(Some(status["running"].clone()).filter(|r| !r.is_null())).filter(|r| r["trigger"] == trigger).collect()
}

/// What `hearsay status` prints about the cluster as `node` sees it.
pub async fn hearsay_status(node: &str, admin_token: Option<&str>) -> String {
    let mut args = vec!["status".to_string(), "--node".into(), node.to_string()];
    args.extend(admin_token.map(|t| ["--admin-token".to_string(), t.to_string()]).into_iter().flatten());
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(env!("CARGO_BIN_EXE_hearsay")).args(args).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Arguments of a lone `hearsay serve` child on 127.0.0.1:0: no peers, no
/// secret, `--sync=always` (so an acknowledged write is on disk), 8 shards.
pub fn lone_child_args(node_id: &str, data_dir: &std::path::Path) -> Vec<String> {
    ["--listen", "127.0.0.1:0", "--node-id", node_id, "--insecure", "--sync", "always", "--shards", "8", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([data_dir.display().to_string()])
        .collect()
}
