//! Fault tests across real containers: the compose file's three nodes, built
//! from the scratch image, driven from the host over their published
//! loopback ports and with `docker` commands. Each test uses its own compose
//! project and ports and removes its containers, network and volumes even
//! when it fails. Needs `docker/build.sh` to have built `hearsay:latest`;
//! `.ci/run` does that and runs these with `--features docker-tests`.

mod common;

use common::{all_roots_equal, repair, runs_by, wait_until};
use hearsay::client::Client;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const TOKEN: &str = "docker-test-admin-token";
const SECRET: &str = "docker-test-cluster-secret-0123456789";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// `docker compose` (plugin) where present, else `docker-compose` (v1).
fn compose_cmd() -> Vec<String> {
    let plugin = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker".into(), "compose".into()]
    } else {
        vec!["docker-compose".into()]
    }
}

/// One compose project: three nodes on fresh loopback ports.
struct Cluster {
    project: String,
    ports: [u16; 3],
    compose: Vec<String>,
}

impl Cluster {
    async fn up() -> Cluster {
        let ports = {
            let l: Vec<std::net::TcpListener> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
            [0, 1, 2].map(|i| l[i].local_addr().unwrap().port())
        };
        let project = format!("hstest{}x{}", std::process::id(), ports[0]);
        let c = Cluster { project, ports, compose: compose_cmd() };
        let started = Instant::now();
        run(&mut c.cmd(&["up", "-d", "--no-build"]));
        c.wait_ready(Duration::from_secs(60)).await;
        eprintln!("[{}] docker compose up -> all three ready in {:.2} s", c.project, started.elapsed().as_secs_f64());
        c
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .args(["-p", &self.project, "-f", concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml")])
            .args(args);
        cmd.env("HEARSAY_CLUSTER_SECRET", SECRET).env("HEARSAY_ADMIN_TOKEN", TOKEN).env("HEARSAY_SYNC", "always");
        for (i, p) in self.ports.iter().enumerate() {
            cmd.env(format!("HEARSAY_PORT{}", i + 1), p.to_string());
        }
        cmd
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&format!("http://127.0.0.1:{}", self.ports[i]))
            .unwrap()
            .with_token(Some(TOKEN.into()))
            .with_timeout(Duration::from_secs(15))
    }

    fn container(&self, i: usize) -> String {
        let out = run(&mut self.cmd(&["ps", "-q", &format!("node{}", i + 1)]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn network(&self) -> String {
        format!("{}_hearsay", self.project)
    }

    async fn wait_ready(&self, limit: Duration) {
        let end = Instant::now() + limit;
        for i in 0..3 {
            let c = self.client(i);
            loop {
                if c.get_path("/ready").await.is_ok_and(|r| r.status == 200) {
                    break;
                }
                assert!(Instant::now() < end, "node{} not ready within {limit:?}", i + 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Runs the image's own client inside a node's container (works while
    /// the container is cut off from the host's view of the network).
    fn exec(&self, i: usize, args: &[&str]) -> Output {
        let c = self.container(i);
        let mut cmd = Command::new("docker");
        cmd.args(["exec", &c, "/hearsay"]).args(args).args(["--node", "http://127.0.0.1:7000"]);
        cmd.output().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.cmd(&["down", "-v", "--remove-orphans", "-t", "5"]).output();
    }
}

async fn mail_pending(c: &Client) -> u64 {
    let m = c.get_path("/admin/mail").await.map(|r| r.json()).unwrap_or(Value::Null);
    m["peers"].as_array().map_or(u64::MAX, |p| p.iter().map(|x| x["pending_records"].as_u64().unwrap_or(0)).sum())
}

/// `member`'s gossip state as the node behind `c` sees it.
async fn gossip_state(c: &Client, member: &str) -> String {
    let v = c.get_path("/admin/cluster").await.map(|r| r.json()).unwrap_or(Value::Null);
    let m = v["members"].as_array().and_then(|ms| ms.iter().find(|m| m["id"] == member).cloned()).unwrap_or(Value::Null);
    m["state"].as_str().unwrap_or("?").to_string()
}

/// Whether every node holds every member alive: the precondition of a
/// repair that is to reach all replicas.
async fn all_alive(cs: &[Client]) -> bool {
    for c in cs {
        for member in ["n1", "n2", "n3"] {
            if gossip_state(c, member).await != "alive" {
                return false;
            }
        }
    }
    true
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_every_node_are_readable_from_every_node() {
    let cluster = Cluster::up().await;
    let cs: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let c = cs[w % 3].clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..5000).step_by(16) {
                let r = c.put(format!("d1/{i}").as_bytes(), format!("v{i}"), "w=quorum").await.unwrap();
                assert!(r.status.is_success(), "{} {}", r.status, r.text());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for c in &cs {
        for i in 0..5000 {
            let r = c.get(format!("d1/{i}").as_bytes(), "r=quorum").await.unwrap();
            assert_eq!((r.status.as_u16(), r.text()), (200, format!("v{i}")), "key d1/{i} from {}", c.base());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_catches_up_from_mail_and_one_repair() {
    let cluster = Cluster::up().await;
    let cs: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    for i in 0..200 {
        assert!(cs[0].put(format!("d2/before/{i}").as_bytes(), "v", "w=all").await.unwrap().status.is_success());
    }
    let node2 = cluster.container(1);
    docker(&["kill", &node2]);
    let recovery = Instant::now();
    let mut acked = Vec::new();
    for i in 0..600 {
        let level = if i % 2 == 0 { "w=quorum" } else { "w=one" };
        let c = &cs[if i % 2 == 0 { 0 } else { 2 }];
        let r = c.put(format!("d2/during/{i}").as_bytes(), format!("v{i}"), level).await.unwrap();
        if r.status.is_success() {
            acked.push((format!("d2/during/{i}"), format!("v{i}")));
        }
    }
    assert_eq!(acked.len(), 600, "writes with a node down must succeed at quorum and one");
    // Killed, it could not say it left: the failure detector finds it.
    wait_until("gossip holds the killed n2 dead", Duration::from_secs(30), async || gossip_state(&cs[0], "n2").await == "dead").await;
    docker(&["start", &node2]);
    let restarted = Instant::now();
    cluster.wait_ready(Duration::from_secs(60)).await;
    wait_until("every node holds every member alive", Duration::from_secs(30), async || all_alive(&cs).await).await;
    // Killed, n2 may lack writes it acknowledged last: once its peers
    // answer, it runs anti-entropy over its shards unasked.
    wait_until("n2's own run after its unclean stop completes", Duration::from_secs(60), async || {
        runs_by(&cs[1], "unclean-stop").await.iter().any(|r| r["outcome"] == "completed")
    })
    .await;
    for c in [&cs[0], &cs[2]] {
        wait_until("the retry buffers drain to node2", Duration::from_secs(60), async || mail_pending(c).await == 0).await;
    }
    let run = repair(&cs[0], json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    for (k, v) in &acked {
        let r = cs[1].get(k.as_bytes(), "r=one").await.unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, v.clone()), "{k} on the restarted node");
    }
    assert!(all_roots_equal(&cs).await, "Merkle roots differ between nodes");
    eprintln!(
        "[{}] recovery of a killed node: {:.2} s from restart (and {:.2} s from the kill, 600 writes included) to verified equal roots",
        cluster.project,
        restarted.elapsed().as_secs_f64(),
        recovery.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_converges_to_the_newest_versions() {
    let cluster = Cluster::up().await;
    let cs: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    let node3 = cluster.container(2);
    docker(&["network", "disconnect", &cluster.network(), &node3]);
    // The majority side writes keys 0..20; the cut-off node writes 10..30,
    // so keys 10..20 are written on both sides.
    let mut versions: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for i in 0..20 {
        let key = format!("d3/{i}");
        let r = cs[0].put(key.as_bytes(), format!("majority-{i}"), "w=quorum").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
        versions.entry(key).or_default().push((r.header("x-hearsay-version").unwrap().to_string(), format!("majority-{i}")));
    }
    for i in 10..30 {
        let key = format!("d3/{i}");
        let out = cluster.exec(2, &["put", &key, &format!("minority-{i}"), "--query", "w=one"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        versions.entry(key).or_default().push((version, format!("minority-{i}")));
    }
    wait_until("the majority holds n3 dead", Duration::from_secs(30), async || gossip_state(&cs[0], "n3").await == "dead").await;
    docker(&["network", "connect", "--alias", "node3", &cluster.network(), &node3]);
    cluster.wait_ready(Duration::from_secs(60)).await;
    // The periodic sync reaches across the healed cut and n3 refutes.
    wait_until("every node holds every member alive across the healed cut", Duration::from_secs(60), async || all_alive(&cs).await).await;
    for c in &cs {
        wait_until("mail drains after the partition heals", Duration::from_secs(60), async || mail_pending(c).await == 0).await;
    }
    let run = repair(&cs[0], json!({})).await;
    assert_eq!(run["outcome"], "completed", "{run}");
    for (key, writes) in &versions {
        let (newest_version, newest_value) = writes.iter().max().unwrap();
        for c in &cs {
            let r = c.get(key.as_bytes(), "r=one").await.unwrap();
            assert_eq!(r.header("x-hearsay-version"), Some(newest_version.as_str()), "{key} on {}", c.base());
            assert_eq!(&r.text(), newest_value);
        }
    }
    assert!(all_roots_equal(&cs).await, "Merkle roots differ between nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_loses_nothing_written_with_sync_always() {
    let cluster = Cluster::up().await;
    let cs: Vec<Client> = (0..3).map(|i| cluster.client(i)).collect();
    for i in 0..1000 {
        let r = cs[i % 3].put(format!("d4/{i}").as_bytes(), format!("v{i}"), "w=all").await.unwrap();
        assert!(r.status.is_success(), "{}", r.text());
    }
    run(&mut cluster.cmd(&["restart", "-t", "10"]));
    cluster.wait_ready(Duration::from_secs(60)).await;
    for c in &cs {
        for i in 0..1000 {
            let r = c.get(format!("d4/{i}").as_bytes(), "r=one").await.unwrap();
            assert_eq!((r.status.as_u16(), r.text()), (200, format!("v{i}")), "d4/{i} on {} after restart", c.base());
        }
    }
}
