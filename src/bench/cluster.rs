//! `hearsay bench --nodes N`: PUT throughput of an N-node cluster at each
//! write level as a ratio of a single node measured in the same run, and
//! the peer bytes each replicated write costs.

use super::{
    bench_key, paired_ratios, ratio_text, run_phase, scrape_counter, scratch_dir, start_cluster, wait_quiet, BenchConfig, BenchError,
    PhaseResult, Workload,
};
use crate::client::Client;
use crate::config::SyncMode;
use crate::process::ChildNode;
use std::path::Path;
use std::time::Duration;

/// Single node vs an N-node cluster, PUT only, in one run of `rounds`
/// rounds. Both stay up for the whole run and each round measures the single
/// node and then every level, so each cluster phase is compared with the
/// single-node phase measured next to it.
pub async fn compare(
    exe: &Path,
    nodes: usize,
    levels: &[&str],
    sync_mode: SyncMode,
    cfg: &BenchConfig,
    rounds: u32,
) -> Result<String, BenchError> {
    let dir = scratch_dir("cluster")?;
    let sync = vec!["--sync".to_string(), format!("{sync_mode:?}").to_lowercase()];
    let single_args = [
        vec!["--listen".into(), "127.0.0.1:0".into(), "--insecure".into(), "--data-dir".into(), dir.join("single").display().to_string()],
        sync.clone(),
    ]
    .concat();
    let mut single = ChildNode::spawn(exe, &single_args, None, Duration::from_secs(30))?;
    let single_client = [Client::new(&single.url)?];
    let (mut cluster, clients) = start_cluster(exe, &dir, nodes, sync).await?;

    let mut baseline = Vec::new();
    let mut runs: Vec<Vec<PhaseResult>> = vec![Vec::new(); levels.len()];
    let mut wire_bytes = vec![0u64; levels.len()];
    for round in 0..rounds.max(1) {
        eprintln!("round {}/{}: single node, then {nodes} nodes at {levels:?}...", round + 1, rounds.max(1));
        let round_cfg = BenchConfig { seed: cfg.seed.wrapping_add(u64::from(round)), ..cfg.clone() };
        baseline.push(run_phase(&single_client, &round_cfg, Workload::Put).await);
        for (i, level) in levels.iter().enumerate() {
            let before = peer_bytes(&clients).await;
            let phase_cfg = BenchConfig { query: format!("w={level}"), ..round_cfg.clone() };
            runs[i].push(run_phase(&clients, &phase_cfg, Workload::Put).await);
            wait_quiet(&clients).await;
            wire_bytes[i] += peer_bytes(&clients).await - before;
        }
    }
    single.terminate()?;
    cluster.terminate();
    let _ = std::fs::remove_dir_all(&dir);

    let rf = 3.min(nodes) as u64;
    let key_len = bench_key(0).len() as u64;
    let budget = 1.3 * (key_len + cfg.value_size as u64 + 64) as f64;
    let base_tp: Vec<f64> = baseline.iter().map(PhaseResult::throughput).collect();
    let mut out = format!(
        "{:<16} {:>10} {:>9} {:>9} {:>14} {:>8}  {}\n",
        "run", "req/s", "p50 ms", "p99 ms", "wire B/replica", "budget", "x single: median (min-max) of rounds"
    );
    let mut row = |name: &str, phases: &[PhaseResult], wire: Option<f64>| {
        let mut merged = PhaseResult::empty(Workload::Put);
        phases.iter().for_each(|p| merged.absorb(p));
        let tp: Vec<f64> = phases.iter().map(PhaseResult::throughput).collect();
        out.push_str(&format!(
            "{:<16} {:>10.0} {:>9.2} {:>9.2} {:>14} {:>8.0}  {}\n",
            name,
            merged.throughput(),
            merged.percentile_ms(0.5),
            merged.percentile_ms(0.99),
            wire.map_or_else(|| "-".to_string(), |w| format!("{w:.0}")),
            budget,
            ratio_text(paired_ratios(&tp, &base_tp))
        ));
        if merged.errors > 0 {
            out.push_str(&format!("  ({} requests failed)\n", merged.errors));
        }
    };
    row("single node", &baseline, None);
    for (i, level) in levels.iter().enumerate() {
        let ok: u64 = runs[i].iter().map(|r| r.ok).sum();
        let per_replica = wire_bytes[i] as f64 / (ok.max(1) * (rf - 1).max(1)) as f64;
        row(&format!("{nodes} nodes w={level}"), &runs[i], Some(per_replica));
    }
    out.push_str(&format!("({} rounds; each round measures the single node, then each level)\n", rounds.max(1)));
    Ok(out)
}

/// Peer-protocol bytes sent and received by all `clients`' nodes so far.
async fn peer_bytes(clients: &[Client]) -> u64 {
    scrape_counter(clients, "hearsay_peer_bytes_sent").await + scrape_counter(clients, "hearsay_peer_bytes_received").await
}
