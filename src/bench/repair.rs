//! `hearsay bench --scenario repair`: the cost of anti-entropy on a local
//! 3-node cluster. One node misses a share of the keys (it is down while
//! they are written, and the retry buffer is off), comes back, and one ring
//! run repairs it while a foreground PUT load runs; then a second run
//! verifies the now-equal replicas.

use super::{load, run_phase, scratch_dir, start_cluster, wait_quiet, wait_ready, BenchConfig, BenchError, Workload};
use crate::client::Client;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct RepairBench {
    pub keys: u64,
    pub missing_percent: u64,
    pub value_size: usize,
    pub concurrency: usize,
    /// Seconds of foreground PUT load measured without repair.
    pub baseline_secs: u64,
    /// The repair bandwidth limit the nodes start with (0: unlimited).
    pub max_bytes_per_sec: u64,
}

async fn start_run(c: &Client) -> Result<String, BenchError> {
    let r = c.send(hyper::Method::POST, "/admin/anti-entropy", &[], bytes::Bytes::from_static(b"{}")).await?;
    if r.status != 202 {
        return Err(BenchError::Failed(format!("starting a run: {} {}", r.status, r.text())));
    }
    Ok(r.json()["run_id"].as_str().unwrap_or_default().to_string())
}

async fn finished(c: &Client, id: &str) -> Result<Option<serde_json::Value>, BenchError> {
    let st = c.get_path("/admin/anti-entropy").await?.json();
    Ok(st["history"].as_array().and_then(|h| h.iter().find(|r| r["id"] == id)).cloned())
}

pub async fn run(exe: &Path, b: &RepairBench) -> Result<String, BenchError> {
    let dir = scratch_dir("repair")?;
    let limit = b.max_bytes_per_sec.to_string();
    let extra =
        ["--retry-buffer-max-records", "0", "--no-anti-entropy", "--write-timeout-ms", "10000", "--repair-max-bytes-per-sec", &limit];
    let (mut cluster, clients) = start_cluster(exe, &dir, 3, extra.iter().map(|s| s.to_string()).collect()).await?;

    let missing = b.keys * b.missing_percent / 100;
    eprintln!("loading {} keys on all three nodes...", b.keys - missing);
    let t = Instant::now();
    load(&clients, missing..b.keys, b.value_size, "w=all", b.concurrency).await?;
    eprintln!("  {:.1} s; stopping n3 and writing {missing} keys it will miss...", t.elapsed().as_secs_f64());
    cluster.nodes[2].terminate()?;
    load(&clients[..2], 0..missing, b.value_size, "w=quorum", b.concurrency).await?;
    cluster.start(2)?;
    wait_ready(&clients).await?;
    wait_quiet(&clients).await;

    let fg = BenchConfig {
        prefix: "fg".into(),
        concurrency: b.concurrency,
        keys: 100_000,
        value_size: b.value_size,
        duration: Duration::from_secs(b.baseline_secs),
        requests: None,
        read_percent: 0,
        query: "w=quorum".into(),
        seed: 7,
    };
    eprintln!("foreground PUT baseline ({} s)...", b.baseline_secs);
    let baseline = run_phase(&clients, &fg, Workload::Put).await;

    eprintln!("repairing while the foreground load runs...");
    let id = start_run(&clients[0]).await?;
    let started = Instant::now();
    let slice = BenchConfig { duration: Duration::from_secs(1), ..fg.clone() };
    let (mut ok, mut busy) = (0u64, Duration::ZERO);
    let run = loop {
        if let Some(run) = finished(&clients[0], &id).await? {
            break run;
        }
        let r = run_phase(&clients, &slice, Workload::Put).await;
        ok += r.ok;
        busy += r.elapsed;
    };
    let wall = started.elapsed();
    wait_quiet(&clients).await;
    eprintln!("verifying the now-equal replicas...");
    let vid = start_run(&clients[0]).await?;
    let verify = loop {
        if let Some(run) = finished(&clients[0], &vid).await? {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.terminate();
    let _ = std::fs::remove_dir_all(&dir);

    let key_len = super::bench_key(0).len() as u64;
    let missing_bytes = missing * (key_len + b.value_size as u64);
    let wire = run["bytes_sent"].as_u64().unwrap_or(0);
    let during = if busy.is_zero() { f64::NAN } else { ok as f64 / busy.as_secs_f64() };
    let shards = verify["shards_checked"].as_u64().unwrap_or(1).max(1);
    let mut out = String::new();
    let limit = match b.max_bytes_per_sec {
        0 => "no bandwidth limit".to_string(),
        n => format!("repair limited to {n} B/s per node"),
    };
    out.push_str(&format!("repair of n3 missing {missing} of {} keys ({} B values), {limit}\n", b.keys, b.value_size));
    out.push_str(&format!(
        "  run {}: outcome {}, {} hops, {} keys moved, {} shards diverged\n",
        run["id"], run["outcome"], run["hops"], run["keys_sent"], run["shards_diverged"]
    ));
    out.push_str(&format!("  wall time                       {:.2} s (run reports {} ms)\n", wall.as_secs_f64(), run["duration_ms"]));
    out.push_str(&format!("  bytes on the wire               {wire}\n"));
    out.push_str(&format!("  bytes of the missing records    {missing_bytes}\n"));
    out.push_str(&format!("  wire / missing                  {:.3}   (goal <= 1.1)\n", wire as f64 / missing_bytes as f64));
    out.push_str(&format!("  foreground PUT without repair   {:.0} req/s\n", baseline.throughput()));
    out.push_str(&format!("  foreground PUT during repair    {during:.0} req/s over {:.1} s\n", busy.as_secs_f64()));
    out.push_str(&format!("  during / without                {:.2}   (goal >= 0.7)\n", during / baseline.throughput()));
    out.push_str(&format!(
        "verifying equal replicas: {} shards, {} bytes ({:.0} B per shard), {} ms   (goal < 1 KiB per shard, < 1 s)\n",
        shards,
        verify["bytes_sent"],
        verify["bytes_sent"].as_u64().unwrap_or(0) as f64 / shards as f64,
        verify["duration_ms"]
    ));
    Ok(out)
}
