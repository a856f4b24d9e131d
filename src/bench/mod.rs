//! `hearsay bench`: a closed-loop HTTP load generator. Each of `concurrency`
//! workers sends one request at a time over keep-alive connections; latency
//! goes into per-worker HDR histograms merged at the end. The `noop` workload
//! (`GET /health`) measures the ceiling of server + HTTP + this client on the
//! same machine, so the other workloads can be reported as a ratio of it.
//! Scenarios that start their own nodes: [`cluster`] (replication cost) and
//! [`repair`] (anti-entropy cost).

pub mod cluster;
pub mod repair;

use crate::client::Client;
use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `GET /health`: the ceiling.
    Noop,
    /// PUT random keys.
    Put,
    /// GET random keys (all preloaded first).
    Get,
    /// GET or PUT, `--read-percent` of them reads.
    Mixed,
}

#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Keys are `<prefix>/<n>`; `bench` unless a scenario needs a separate key space.
    pub prefix: String,
    pub concurrency: usize,
    pub keys: u64,
    pub value_size: usize,
    pub duration: Duration,
    /// Stop each phase after this many requests instead of after `duration`.
    pub requests: Option<u64>,
    pub read_percent: u8,
    /// Query string added to kv requests, e.g. `w=one`.
    pub query: String,
    pub seed: u64,
}

/// The outcome of one workload phase.
#[derive(Clone)]
pub struct PhaseResult {
    pub workload: Workload,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
    /// CPU the server and this client spent in the phase, where measured.
    pub cpu: Option<CpuUse>,
}

/// CPU time spent by the server process and by this load generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub server: Duration,
    pub client: Duration,
}

/// A reading of the CPU the server (by pid) and this process have used so
/// far, from Linux's `/proc/<pid>/stat` (user + system time of the whole
/// process, threads that have exited included). Reading CPU per request next
/// to the throughput shows where a workload's cost goes; on a shared VM it
/// also moves less than req/s does.
#[derive(Clone, Debug)]
pub struct CpuMeter {
    server_pid: u32,
    server: Duration,
    client: Duration,
}

impl CpuMeter {
    /// `None` where `/proc` does not say (another OS, or the server is gone).
    pub fn start(server_pid: u32) -> Option<CpuMeter> {
        Some(CpuMeter { server_pid, server: process_cpu(&server_pid.to_string())?, client: process_cpu("self")? })
    }

    pub fn used(&self) -> Option<CpuUse> {
        let server = process_cpu(&self.server_pid.to_string())?.checked_sub(self.server)?;
        let client = process_cpu("self")?.checked_sub(self.client)?;
        Some(CpuUse { server, client })
    }
}

/// Linux reports process times in USER_HZ ticks, 100 per second on every
/// architecture it exports them for.
const TICKS_PER_SEC: u64 = 100;

/// CPU time process `pid` (or `self`) has used: utime + stime of
/// `/proc/<pid>/stat`. Unlike summing the live threads' `schedstat`, this
/// keeps the time of threads that have exited (tokio's idle blocking
/// threads do), so a later reading is never below an earlier one.
fn process_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_from_stat(&stat)
}

/// utime + stime from the text of a `/proc/<pid>/stat`.
fn cpu_from_stat(stat: &str) -> Option<Duration> {
    // The command name is in parentheses and may hold spaces and ')': the
    // fields after it start at the last ')'. utime and stime are fields 14
    // and 15 of the line, so the 12th and 13th after the name.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
}

impl PhaseResult {
    pub fn empty(workload: Workload) -> PhaseResult {
        PhaseResult {
            workload,
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            cpu: None,
        }
    }

    /// Adds a later measurement of the same workload (another round). CPU
    /// is known for the sum only if it is known for every part.
    pub fn absorb(&mut self, other: &PhaseResult) {
        let first = self.elapsed.is_zero() && self.ok == 0 && self.errors == 0;
        self.cpu = match (self.cpu, other.cpu) {
            _ if first => other.cpu,
            (Some(a), Some(b)) => Some(CpuUse { server: a.server + b.server, client: a.client + b.client }),
            _ => None,
        };
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        let _ = self.latency_us.add(&other.latency_us);
    }

    /// Microseconds of server and client CPU per successful request.
    pub fn cpu_per_request_us(&self) -> Option<(f64, f64)> {
        let cpu = self.cpu?;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.ok.max(1) as f64;
        Some((per(cpu.server), per(cpu.client)))
    }

    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn bench_key(i: u64) -> Vec<u8> {
    format!("bench/{i:010}").into_bytes()
}

/// PUTs keys `range` (untimed) through `clients` with `query` (e.g. `w=all`).
pub async fn load(
    clients: &[Client],
    range: std::ops::Range<u64>,
    value_size: usize,
    query: &str,
    concurrency: usize,
) -> Result<(), BenchError> {
    let next = Arc::new(AtomicU64::new(range.start));
    let value = Bytes::from(vec![b'v'; value_size]);
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let (client, next, value, end, query) =
            (clients[w % clients.len()].clone(), next.clone(), value.clone(), range.end, query.to_string());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), BenchError>(());
                }
                let resp = client.put(&bench_key(i), value.clone(), &query).await?;
                if !resp.status.is_success() {
                    return Err(BenchError::Failed(format!("load PUT failed: {} {}", resp.status, resp.error_message())));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Failed(e.to_string()))??;
    }
    Ok(())
}

/// PUTs every key once (untimed), so GET workloads read real values.
pub async fn preload(client: &Client, cfg: &BenchConfig) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'v'; cfg.value_size]);
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency {
        let (client, next, value, keys, query) = (client.clone(), next.clone(), value.clone(), cfg.keys, cfg.query.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok(());
                }
                let resp = client.put(&bench_key(i), value.clone(), &query).await.map_err(|e| e.to_string())?;
                if !resp.status.is_success() {
                    return Err(format!("preload PUT failed: {} {}", resp.status, resp.error_message()));
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Runs one workload, worker `i` talking to `clients[i % len]`, and measures it.
pub async fn run_phase(clients: &[Client], cfg: &BenchConfig, workload: Workload) -> PhaseResult {
    let issued = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'x'; cfg.value_size]);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::new();
    for worker in 0..cfg.concurrency {
        let client = clients[worker % clients.len()].clone();
        let (issued, value, cfg) = (issued.clone(), value.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (worker as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let done = match cfg.requests {
                    Some(n) => issued.fetch_add(1, Ordering::Relaxed) >= n,
                    None => Instant::now() >= deadline,
                };
                if done {
                    break;
                }
                let key = format!("{}/{:010}", cfg.prefix, rng.gen_range(0..cfg.keys.max(1))).into_bytes();
                let read = match workload {
                    Workload::Get => true,
                    Workload::Mixed => rng.gen_range(0..100) < cfg.read_percent,
                    _ => false,
                };
                let t = Instant::now();
                let resp = match workload {
                    Workload::Noop => client.get_path("/health").await,
                    _ if read => client.get(&key, &cfg.query.replace("w=", "r=")).await,
                    _ => client.put(&key, value.clone(), &cfg.query).await,
                };
                match resp {
                    Ok(r) if r.status.is_success() => {
                        ok += 1;
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    _ => errors += 1,
                }
            }
            (ok, errors, hist)
        }));
    }
    let mut result = PhaseResult::empty(workload);
    for t in tasks {
        if let Ok((ok, errors, hist)) = t.await {
            result.ok += ok;
            result.errors += errors;
            let _ = result.latency_us.add(hist);
        }
    }
    result.elapsed = start.elapsed();
    result
}

/// Sum of a counter over nodes' `/metrics` (the `_total` sample of `name`).
pub async fn scrape_counter(clients: &[Client], name: &str) -> u64 {
    let mut total = 0;
    for c in clients {
        if let Ok(resp) = c.get_path("/metrics").await {
            let text = resp.text();
            let sample = format!("{name}_total ");
            total += text.lines().filter_map(|l| l.strip_prefix(&sample)).filter_map(|v| v.trim().parse::<f64>().ok()).sum::<f64>() as u64;
        }
    }
    total
}

/// Waits (bounded) until peer traffic stops, so background sends of `w=one`
/// writes are counted with the phase that caused them.
pub async fn wait_quiet(clients: &[Client]) {
    let mut last = scrape_counter(clients, "hearsay_peer_requests").await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = scrape_counter(clients, "hearsay_peer_requests").await;
        if now == last {
            return;
        }
        last = now;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("{0}")]
    Failed(String),
}

/// A fresh, empty scratch dir for one bench run of `name`.
pub fn scratch_dir(name: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("hearsay-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Starts `n` local nodes under `dir` with a fresh secret and `extra` serve
/// flags, and waits until all are ready.
pub async fn start_cluster(
    exe: &std::path::Path,
    dir: &std::path::Path,
    n: usize,
    extra: Vec<String>,
) -> Result<(crate::process::LocalCluster, Vec<Client>), BenchError> {
    use crate::process::{ensure_secret_file, free_loopback_addrs, ClusterSpec, LocalCluster};
    let secret = dir.join("secret");
    ensure_secret_file(&secret)?;
    let spec = ClusterSpec { exe, addrs: free_loopback_addrs(n)?, data_dir: dir, secret_file: &secret, extra_args: extra };
    let cluster = LocalCluster::spawn(&spec)?;
    let clients: Vec<Client> =
        cluster.urls().iter().map(|u| Client::new(u).map(|c| c.with_timeout(Duration::from_secs(60)))).collect::<Result<_, _>>()?;
    wait_ready(&clients).await?;
    Ok((cluster, clients))
}

/// Waits (up to 20 s) until every node answers /ready.
pub async fn wait_ready(clients: &[Client]) -> Result<(), BenchError> {
    for c in clients {
        let mut ready = false;
        for _ in 0..400 {
            if c.get_path("/ready").await.is_ok_and(|r| r.status.is_success()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !ready {
            return Err(BenchError::Failed(format!("{} did not become ready", c.base())));
        }
    }
    Ok(())
}

/// Ratios of `measured` to `baseline` taken round by round (both slices are
/// indexed by round), as (median, min, max). Pairing each phase with the
/// baseline measured right next to it keeps slow drift of a shared machine
/// out of the ratio.
pub fn paired_ratios(measured: &[f64], baseline: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = measured.iter().zip(baseline).map(|(m, b)| m / b.max(1e-9)).collect();
    if r.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    r.sort_by(f64::total_cmp);
    let mid = r.len() / 2;
    let median = if r.len() % 2 == 1 { r[mid] } else { (r[mid - 1] + r[mid]) / 2.0 };
    (median, r[0], r[r.len() - 1])
}

/// Formats a (median, min, max) ratio as `0.62 (0.55-0.70)`.
pub fn ratio_text((median, min, max): (f64, f64, f64)) -> String {
    format!("{median:.2} ({min:.2}-{max:.2})")
}

/// A table of workloads measured over `rounds` (each round runs every
/// workload once, in order). Throughput and latency merge all rounds; the
/// ratio to the `noop` ceiling is the median of per-round ratios, with
/// the lowest and highest round in brackets.
pub fn report(rounds: &[Vec<PhaseResult>]) -> String {
    let Some(first) = rounds.first() else { return String::new() };
    let per_round = |w: Workload| -> Vec<f64> {
        rounds.iter().filter_map(|round| round.iter().find(|r| r.workload == w)).map(PhaseResult::throughput).collect()
    };
    let ceiling = first.iter().any(|r| r.workload == Workload::Noop).then(|| per_round(Workload::Noop));
    let mut out = format!(
        "{:<8} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9} {:>11} {:>11}  {}\n",
        "workload",
        "ok",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "srv us/req",
        "cli us/req",
        "x ceiling: median (min-max) of rounds"
    );
    for w in first.iter().map(|r| r.workload) {
        let mut merged = PhaseResult::empty(w);
        for r in rounds.iter().filter_map(|round| round.iter().find(|r| r.workload == w)) {
            merged.absorb(r);
        }
        let ratio = ceiling.as_ref().map_or_else(|| "-".to_string(), |c| ratio_text(paired_ratios(&per_round(w), c)));
        let (srv, cli) = match merged.cpu_per_request_us() {
            Some((srv, cli)) => (format!("{srv:.1}"), format!("{cli:.1}")),
            None => ("-".to_string(), "-".to_string()),
        };
        out.push_str(&format!(
            "{:<8} {:>10} {:>8} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>11} {:>11}  {}\n",
            format!("{w:?}").to_lowercase(),
            merged.ok,
            merged.errors,
            merged.throughput(),
            merged.percentile_ms(0.5),
            merged.percentile_ms(0.99),
            merged.percentile_ms(0.999),
            srv,
            cli,
            ratio
        ));
    }
    out.push_str(&format!("({} rounds; each round runs every workload once, in order)\n", rounds.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(ok: u64, cpu: Option<(u64, u64)>) -> PhaseResult {
        let mut p = PhaseResult::empty(Workload::Put);
        p.ok = ok;
        p.elapsed = Duration::from_secs(1);
        p.cpu = cpu.map(|(s, c)| CpuUse { server: Duration::from_millis(s), client: Duration::from_millis(c) });
        p
    }

    #[test]
    fn cpu_per_request_sums_rounds_and_is_unknown_if_any_round_is() {
        let mut merged = PhaseResult::empty(Workload::Put);
        merged.absorb(&phase(1000, Some((60, 30))));
        merged.absorb(&phase(1000, Some((40, 10))));
        assert_eq!(merged.cpu_per_request_us(), Some((50.0, 20.0)));
        merged.absorb(&phase(1000, None));
        assert_eq!(merged.cpu_per_request_us(), None);
        assert_eq!(merged.ok, 3000);
    }

    #[test]
    fn cpu_is_read_from_the_stat_fields_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat = "4242 (tokio ) worker) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 70 0 0 20 0 9 0";
        assert_eq!(cpu_from_stat(stat), Some(Duration::from_millis(3200)));
        assert_eq!(cpu_from_stat("4242 (short) S 1"), None, "a truncated line says nothing");
        assert_eq!(cpu_from_stat("no parenthesis"), None);
    }

    /// Threads that ran and exited still count: the reading never goes down.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_cpu_meter_keeps_the_time_of_threads_that_exited() {
        let meter = CpuMeter::start(std::process::id()).expect("/proc is readable on Linux");
        let spin = || {
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(300) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        };
        std::thread::spawn(spin).join().unwrap();
        let used = meter.used().expect("a reading after a thread exited is not below the first");
        assert!(used.client >= Duration::from_millis(20), "the exited thread's CPU is kept: {used:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_cpu_meter_sees_this_process_work() {
        let meter = CpuMeter::start(std::process::id()).expect("/proc is readable on Linux");
        // Spin until the meter has seen 20 ms of CPU: bounded by wall time,
        // so a busy machine slows the test down instead of failing it.
        let start = Instant::now();
        let mut x = 0u64;
        loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let used = meter.used().expect("still running");
            // Here the "server" is this process too.
            if used.client >= Duration::from_millis(20) && used.server >= Duration::from_millis(20) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "20 s of spinning showed only {used:?} of CPU");
        }
    }
}
