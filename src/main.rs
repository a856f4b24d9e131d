//! The `hearsay` command line: the server, a local cluster, client commands,
//! the load generator and maintenance. The only place `anyhow` is used.

mod cli;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use cli::{BenchArgs, Cli, Command, LogFormat, ServeArgs, Target};
use hearsay::bench::{self, BenchConfig, Workload};
use hearsay::client::Client;
use hearsay::config::{NodeConfig, DEFAULT_CACHE_BYTES};
use hearsay::process::{ensure_secret_file, ChildNode, ClusterSpec, LocalCluster, LISTENING_PREFIX};
use hearsay::types::NodeId;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

// sled clones node buffers on every write; glibc malloc spent ~15% of a PUT's
// server CPU in _int_malloc/malloc_consolidate, mimalloc far less. The wrapper
// also reuses sled's 8 MiB log buffers (see `hearsay::allocator`).
#[global_allocator]
static GLOBAL: hearsay::allocator::Allocator = hearsay::allocator::Allocator::new();

/// `println!` that returns an error where `println!` would panic: when
/// stdout is closed early (`hearsay status | head`).
macro_rules! out {
    ($($arg:tt)*) => { writeln!(std::io::stdout(), $($arg)*)? };
}

/// `print!`, returning an error as [`out!`] does.
macro_rules! out_raw {
    ($($arg:tt)*) => { write!(std::io::stdout(), $($arg)*)? };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(cli.command)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Whoever read stdout stopped reading: not this command's failure.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            // One line with the cause chain; no backtrace for a user's mistake.
            eprintln!("error: {}", hearsay::error_line::error_line(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HEARSAY_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Cluster { nodes, base_port, data_dir, sync, replication_factor, shards } => {
            let mut node_args = vec!["--sync".into(), format!("{sync:?}").to_lowercase()];
            node_args.extend(["--replication-factor".into(), replication_factor.to_string()]);
            node_args.extend(shards.map(|s| ["--shards".into(), s.to_string()]).into_iter().flatten());
            run_cluster(nodes, base_port, data_dir, node_args).await
        }
        Command::Put { target, key, value, file } => {
            let body = match (value, file) {
                (Some(v), _) => Bytes::from(v),
                (None, Some(path)) if path.as_os_str() == "-" => read_stdin()?,
                (None, Some(path)) => Bytes::from(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?),
                (None, None) => read_stdin()?,
            };
            let resp = client(&target)?.put(key.as_bytes(), body, &target.query).await?;
            expect_success(&resp)?;
            out!("{}", resp.header("x-hearsay-version").unwrap_or(""));
            Ok(())
        }
        Command::Get { target, key } => {
            let resp = client(&target)?.get(key.as_bytes(), &target.query).await?;
            expect_success(&resp)?;
            std::io::stdout().write_all(&resp.body)?;
            Ok(())
        }
        Command::Delete { target, key } => {
            let resp = client(&target)?.delete(key.as_bytes(), &target.query).await?;
            expect_success(&resp)
        }
        Command::Health { target } => {
            let resp = client(&target)?.with_timeout(Duration::from_secs(3)).get_path("/health").await?;
            expect_success(&resp)
        }
        Command::Bench(args) => run_bench(args).await,
        Command::Sim(args) => {
            if !(0.0..1.0).contains(&args.loss) {
                anyhow::bail!("--loss must be in [0, 1), got {}", args.loss);
            }
            if args.members == 0 || args.members > 20_000 {
                anyhow::bail!("--members must be 1..=20000, got {}", args.members);
            }
            let scenario = hearsay::gossip::sim::Scenario {
                members: args.members,
                crash: args.crash,
                seed: args.seed,
                net: hearsay::gossip::sim::NetConfig {
                    loss: args.loss,
                    latency: (args.latency_min_ms, args.latency_max_ms.max(args.latency_min_ms)),
                },
                swim: hearsay::gossip::SwimConfig::default(),
                soak: args.soak_secs * 1000,
            };
            out_raw!("{}", hearsay::gossip::sim::run(scenario).text());
            Ok(())
        }
        Command::Repair { target, shard, mode, wait } => repair(&target, shard, &mode, wait).await,
        Command::Decommission { target, wait } => decommission(&target, wait).await,
        Command::Status { target } => status(&target).await,
        Command::Admin { target, path } => {
            out!("{}", serde_json::to_string_pretty(&admin_json(&client(&target)?, &path).await?)?);
            Ok(())
        }
        Command::Migrate { data_dir } => {
            let opts =
                hearsay::storage::sled_engine::SledOptions { path: data_dir.clone(), shards: None, cache_bytes: DEFAULT_CACHE_BYTES };
            let db = hearsay::storage::sled_engine::open_db(&opts).with_context(|| format!("opening {}", data_dir.display()))?;
            let report = migrations::run(&db)?;
            db.flush()?;
            out!("data dir {} is at format v{} (was v{}; applied: {:?})", data_dir.display(), report.to, report.from, report.applied);
            Ok(())
        }
    }
}

fn client(target: &Target) -> Result<Client> {
    Ok(Client::new(&target.node)?.with_token(target.admin_token.clone()))
}

async fn admin_json(c: &Client, path: &str) -> Result<serde_json::Value> {
    let resp = c.get_path(path).await?;
    expect_success(&resp)?;
    Ok(resp.json())
}

async fn repair(target: &Target, shards: Vec<u32>, mode: &str, wait: bool) -> Result<()> {
    let c = client(target)?;
    let mut body = serde_json::json!({ "mode": mode });
    if !shards.is_empty() {
        body["shards"] = serde_json::json!(shards);
    }
    let resp =
        c.send(hyper::Method::POST, "/admin/anti-entropy", &[("content-type", "application/json")], Bytes::from(body.to_string())).await?;
    expect_success(&resp)?;
    let id = resp.json()["run_id"].as_str().unwrap_or_default().to_string();
    out!("started anti-entropy run {id}");
    if !wait {
        return Ok(());
    }
    loop {
        let st = admin_json(&c, "/admin/anti-entropy").await?;
        let running = &st["running"];
        if running["id"] == id.as_str() {
            let (done, total) = (running["shards_done"].as_u64().unwrap_or(0), running["shards_total"].as_u64().unwrap_or(0));
            let filled = (done * 30).checked_div(total).unwrap_or(30).min(30) as usize;
            eprint!(
                "\r[{}{}] {done}/{total} shards, {} hops, {} keys moved",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                running["hops"],
                running["keys_sent"]
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        eprintln!();
        let run = st["history"].as_array().and_then(|h| h.iter().find(|r| r["id"] == id.as_str())).cloned().unwrap_or_default();
        out!("{}", serde_json::to_string_pretty(&run)?);
        if run["outcome"] != "completed" {
            // Say why here too: the JSON above lists each skipped shard.
            let skipped: Vec<String> = run["replicas_skipped"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    format!("{} on {} shards ({})", s["node"].as_str().unwrap_or("?"), s["count"], s["reason"].as_str().unwrap_or("?"))
                })
                .collect();
            let why = if skipped.is_empty() { String::new() } else { format!(": skipped {}", skipped.join("; ")) };
            bail!("run {id} ended {}{why}", run["outcome"].as_str().unwrap_or("?"));
        }
        return Ok(());
    }
}

async fn decommission(target: &Target, wait: bool) -> Result<()> {
    let c = client(target)?;
    let resp = c.send(hyper::Method::POST, "/admin/decommission", &[], Bytes::new()).await?;
    expect_success(&resp)?;
    let mut progress = resp.json();
    out!("{} is leaving the cluster; its records go to their new replicas", progress["node"].as_str().unwrap_or("the node"));
    while wait && progress["state"] != "drained" {
        eprint!("\r{} records in {} shards left to hand off   ", progress["records_left"], progress["shards_left"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        progress = admin_json(&c, "/admin/decommission").await?;
    }
    if wait {
        eprintln!();
        out!("drained: every record was handed off; stop the node and wipe its data dir");
    }
    Ok(())
}

async fn status(target: &Target) -> Result<()> {
    let c = client(target)?;
    let cluster = admin_json(&c, "/admin/cluster").await?;
    out!("cluster of {} members, {} shards", cluster["members"].as_array().map_or(0, Vec::len), cluster["shard_count"]);
    if let Some(removed) = cluster["removed"].as_object().filter(|r| !r.is_empty()) {
        out!("removed: {}", removed.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    if let Some(refusal) = cluster["clock_refusal"].as_str() {
        // Refused, or held just after start until peers judge the clock: either way, none stamped.
        out!("{} stamps no writes: {refusal}", cluster["node"].as_str().unwrap_or("this node"));
    }
    let drain = admin_json(&c, "/admin/decommission").await.unwrap_or_default();
    if let Some(state) = drain["state"].as_str().filter(|s| *s != "member") {
        let node = cluster["node"].as_str().unwrap_or("this node");
        out!("{node} is decommissioned: {state}, {} records left to hand off", drain["records_left"]);
    }
    let schedule = admin_json(&c, "/admin/anti-entropy").await?["schedule"].clone();
    let limit = match schedule["max_bytes_per_sec"].as_u64().unwrap_or(0) {
        0 => "unlimited".to_string(),
        n => format!("{n} B/s per node"),
    };
    let runs = if schedule["enabled"] == true { format!("every {} s", schedule["interval_secs"]) } else { "off".to_string() };
    out!("scheduled anti-entropy runs: {runs}; repair bandwidth: {limit}");
    let mut roots: std::collections::BTreeMap<u64, Vec<(String, String)>> = Default::default();
    let mut repairing = Vec::new();
    for m in cluster["members"].as_array().cloned().unwrap_or_default() {
        let (id, addr) = (m["id"].as_str().unwrap_or("?").to_string(), m["addr"].as_str().unwrap_or("").to_string());
        let health = m["state"].as_str().unwrap_or("unknown");
        let mc = Client::new(&format!("http://{addr}"))?.with_token(target.admin_token.clone()).with_timeout(Duration::from_secs(3));
        match admin_json(&mc, "/admin/shards").await {
            Ok(shards) => {
                let mail = admin_json(&mc, "/admin/mail").await.unwrap_or_default();
                let pending: u64 =
                    mail["peers"].as_array().map_or(0, |p| p.iter().map(|x| x["pending_records"].as_u64().unwrap_or(0)).sum());
                let dropped: u64 = mail["peers"].as_array().map_or(0, |p| p.iter().map(|x| x["dropped"].as_u64().unwrap_or(0)).sum());
                // A node that answers but whose storage failed takes no writes.
                let unhealthy = match mc.get_path("/health").await {
                    Ok(resp) if !resp.status.is_success() => Some(resp.error_message()),
                    _ => None,
                };
                let state = if unhealthy.is_some() { "FAILED" } else { "up" };
                out!("  {id:<8} {addr:<22} {state:<6} gossip: {health:<8} mail pending {pending}, dropped {dropped}");
                if let Some(why) = unhealthy {
                    out!("           {why}");
                }
                for p in mail["peers"].as_array().into_iter().flatten().filter(|p| p["pending_records"].as_u64().unwrap_or(0) > 0) {
                    if let Some(error) = p["last_error"].as_str() {
                        out!("           mail for {}: {error}", p["peer"].as_str().unwrap_or("?"));
                    }
                }
                let ae = admin_json(&mc, "/admin/anti-entropy").await.unwrap_or_default();
                if let Some(run) = ae.get("running").filter(|r| !r.is_null()) {
                    let (done, total) = (&run["shards_done"], &run["shards_total"]);
                    out!(
                        "           anti-entropy run {} ({}): {done} of {total} shards",
                        run["id"].as_str().unwrap_or("?"),
                        run["trigger"].as_str().unwrap_or("?")
                    );
                    repairing.push(id.clone());
                }
                for s in shards["shards"].as_array().cloned().unwrap_or_default() {
                    let replicas: Vec<&str> =
                        s["replicas"].as_array().map_or(Vec::new(), |r| r.iter().filter_map(|x| x.as_str()).collect());
                    if replicas.contains(&id.as_str()) {
                        roots
                            .entry(s["id"].as_u64().unwrap_or(0))
                            .or_default()
                            .push((id.clone(), s["root"].as_str().unwrap_or("").to_string()));
                    }
                }
            }
            Err(e) => out!("  {id:<8} {addr:<22} DOWN   gossip: {health:<8} ({e})"),
        }
    }
    let differing: Vec<u64> = roots.iter().filter(|(_, r)| r.iter().any(|(_, x)| *x != r[0].1)).map(|(s, _)| *s).collect();
    if differing.is_empty() {
        out!("all {} shards seen have equal roots on the replicas that answered", roots.len());
    } else {
        out!("{} shards have differing roots: {differing:?}", differing.len());
        if repairing.is_empty() {
            out!("repair them with: hearsay repair --node {} --wait", target.node);
        } else {
            out!("anti-entropy is running on {}: see its progress above", repairing.join(", "));
        }
    }
    Ok(())
}

fn read_stdin() -> Result<Bytes> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

fn expect_success(resp: &hearsay::client::Response) -> Result<()> {
    if !resp.status.is_success() {
        bail!("{}: {}", resp.status, resp.error_message());
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<()> {
    raise_open_files_limit();
    ignore_file_size_signal();
    let node_id = NodeId::new(&args.node_id)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let cluster_secret = match (&args.cluster_secret_file, std::env::var("HEARSAY_CLUSTER_SECRET").ok(), args.insecure) {
        (Some(path), _, _) => Some(std::fs::read(path).with_context(|| format!("reading --cluster-secret-file {}", path.display()))?),
        (None, Some(secret), _) => Some(secret.into_bytes()),
        (None, None, true) => {
            tracing::warn!("--insecure: peer requests are not authenticated; anyone who can reach this port can write as a peer");
            None
        }
        (None, None, false) => bail!(
            "no cluster secret: pass --cluster-secret-file FILE or set HEARSAY_CLUSTER_SECRET (16+ bytes, the same on every node), or run with --insecure"
        ),
    };
    let config = NodeConfig {
        advertise: args.advertise.or_else(|| Some(addr.to_string())),
        shards: args.shards,
        sync: args.sync,
        max_value_bytes: args.max_value_bytes as usize,
        cache_bytes: args.cache_bytes,
        seeds: args.seeds.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        replication_factor: args.replication_factor as usize,
        cluster_secret,
        write_timeout: Duration::from_millis(args.write_timeout_ms),
        retry_max_records: args.retry_buffer_max_records,
        retry_max_bytes: args.retry_buffer_max_bytes,
        anti_entropy_enabled: !args.no_anti_entropy,
        anti_entropy_interval_secs: args.anti_entropy_interval,
        repair_max_bytes_per_sec: args.repair_max_bytes_per_sec,
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        max_clock_drift: Duration::from_millis(args.max_clock_drift_ms),
        tombstone_grace: (args.tombstone_grace_secs > 0).then(|| Duration::from_secs(args.tombstone_grace_secs)),
        connections: hearsay::api::server::ConnectionLimits {
            max_connections: args.max_connections as usize,
            read_timeout: Duration::from_secs(args.read_timeout_secs),
            ..hearsay::api::server::ConnectionLimits::default()
        },
        ..NodeConfig::new(node_id, args.data_dir)
    };
    let storage = hearsay::node::open_storage(&config).await?;
    // Printed only once storage is open, so whoever waits for it can send requests.
    out!("{LISTENING_PREFIX}http://{addr}");
    std::io::stdout().flush()?;
    hearsay::node::run_with_storage(listener, config, storage, shutdown_signal()).await?;
    Ok(())
}

/// Raises the soft limit on open files to the hard one, as Go's runtime does
/// for every program: the usual soft default, 1024, is below the default
/// `--max-connections`, and the hard limit is what the operator allows.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        // An unlimited hard limit is not a valid soft one for open files on Linux.
        let wanted = limit.rlim_max.min(1 << 20);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
}

/// A write past the file-size limit (`ulimit -f`) then fails with EFBIG,
/// which storage reports like a full disk, instead of SIGXFSZ killing the
/// node mid-write with a core dump.
fn ignore_file_size_signal() {
    // SAFETY: sets the disposition of one signal to "ignore", touching no memory.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

/// `hearsay cluster`: n child nodes on 127.0.0.1, each seeded with the others,
/// sharing a secret generated once and kept in the data dir, and each started
/// with `node_args` (sync, replication factor, shards).
async fn run_cluster(nodes: usize, base_port: u16, data_dir: PathBuf, node_args: Vec<String>) -> Result<()> {
    if nodes == 0 || usize::from(base_port) + nodes > 65_536 {
        bail!("--nodes must be at least 1 and the ports must fit below 65536");
    }
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret_path = data_dir.join("cluster-secret");
    ensure_secret_file(&secret_path)?;
    let exe = std::env::current_exe()?;
    let spec = ClusterSpec {
        exe: &exe,
        addrs: (0..nodes).map(|i| format!("127.0.0.1:{}", usize::from(base_port) + i)).collect(),
        data_dir: &data_dir,
        secret_file: &secret_path,
        extra_args: node_args,
    };
    let mut cluster = LocalCluster::spawn(&spec).context("starting the local cluster")?;
    for (i, node) in cluster.nodes.iter().enumerate() {
        out!("n{}: {}   (pid {}, log: {})", i + 1, node.url, node.child.id(), cluster.log_path(i).display());
    }
    let children = &cluster.nodes;
    let first = &children[0].url;
    let last = &children[children.len() - 1].url;
    out!("\nhearsay cluster of {nodes} is up. Try:");
    out!("  curl -X PUT --data-binary hello '{first}/v1/kv/greeting?w=quorum'");
    out!("  curl '{last}/v1/kv/greeting'");
    out!("  curl {first}/admin/cluster");
    out!("Ctrl-C stops every node.");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            // Ctrl-C reaches the nodes too: their exits are then no news.
            biased;
            _ = &mut shutdown => break,
            _ = watch.tick() => {
                // A node that crashed or was killed (to try a failure) is
                // reported, not restarted: the others keep running.
                for (i, status) in cluster.newly_exited() {
                    out!("\nn{} exited ({status}); the other nodes keep running. Its log: {}", i + 1, cluster.log_path(i).display());
                    out!("To start it again, from this directory (it then runs outside this command):\n  {}", cluster.command_line(i));
                }
                if cluster.all_exited() {
                    bail!("every node has exited; their logs are in {}", data_dir.display());
                }
            }
        }
    }
    cluster.terminate();
    Ok(())
}

async fn run_bench(args: BenchArgs) -> Result<()> {
    let cfg = BenchConfig {
        prefix: "bench".into(),
        concurrency: args.concurrency,
        keys: args.keys,
        value_size: args.value_size,
        duration: Duration::from_secs(args.duration),
        requests: args.requests,
        read_percent: args.read_percent,
        query: args.query.clone(),
        seed: args.seed,
    };
    // clap allows only "repair".
    if args.scenario.is_some() {
        let spec = bench::repair::RepairBench {
            keys: cfg.keys,
            missing_percent: args.missing_percent,
            value_size: cfg.value_size,
            concurrency: cfg.concurrency,
            baseline_secs: cfg.duration.as_secs(),
            max_bytes_per_sec: args.repair_max_bytes_per_sec,
        };
        out_raw!("{}", bench::repair::run(&std::env::current_exe()?, &spec).await?);
        return Ok(());
    }
    if args.nodes > 1 && args.target.is_none() {
        let levels: Vec<&str> = args.levels.iter().map(String::as_str).collect();
        out_raw!("{}", bench::cluster::compare(&std::env::current_exe()?, args.nodes, &levels, args.sync, &cfg, args.rounds).await?);
        return Ok(());
    }
    let mut local = None;
    let url = match args.target {
        Some(url) => url,
        None => {
            let dir = bench::scratch_dir("node")?;
            let node_args = vec![
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                dir.display().to_string(),
                "--sync".into(),
                format!("{:?}", args.sync).to_lowercase(),
                "--insecure".into(),
            ];
            let node = ChildNode::spawn(&std::env::current_exe()?, &node_args, None, Duration::from_secs(30))?;
            eprintln!("started a local node at {} (sync={:?}, data in {})", node.url, args.sync, dir.display());
            let url = node.url.clone();
            local = Some((node, dir));
            url
        }
    };
    let client = Client::new(&url)?;
    // CPU per request is measured for a node this run started (its pid is known).
    let server_pid = local.as_ref().map(|(node, _): &(ChildNode, _)| node.child.id());
    let rounds = args.rounds;
    eprintln!(
        "bench: {} workers, {} keys, {} B values, {} rounds of {:?} per workload",
        cfg.concurrency, cfg.keys, cfg.value_size, rounds, cfg.duration
    );
    if args.workloads.iter().any(|w| matches!(w, Workload::Get | Workload::Mixed)) {
        eprintln!("preloading {} keys...", cfg.keys);
        bench::preload(&client, &cfg).await.map_err(anyhow::Error::msg)?;
    }
    let mut results = Vec::new();
    for round in 0..rounds {
        let round_cfg = BenchConfig { seed: cfg.seed.wrapping_add(u64::from(round)), ..cfg.clone() };
        let mut phases = Vec::new();
        for workload in &args.workloads {
            let meter = server_pid.and_then(bench::CpuMeter::start);
            let mut phase = bench::run_phase(std::slice::from_ref(&client), &round_cfg, *workload).await;
            phase.cpu = meter.and_then(|m| m.used());
            phases.push(phase);
        }
        let rates: Vec<String> = phases.iter().map(|p| format!("{:?} {:.0}", p.workload, p.throughput()).to_lowercase()).collect();
        eprintln!("round {}/{rounds}: {} req/s", round + 1, rates.join(", "));
        results.push(phases);
    }
    out_raw!("{}", bench::report(&results));
    if let Some((mut node, dir)) = local {
        node.terminate()?;
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}
