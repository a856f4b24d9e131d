//! `hearsay bench --nodes N`: PUT throughput of an N-node cluster at each
//! write level as a ratio of a single node measured in the same run, and
//! the peer bytes each replicated write costs.

use super::{bench_key, run_phase, scrape_counter, scratch_dir, start_cluster, wait_quiet, BenchConfig, BenchError, PhaseResult, Workload};
use crate::client::Client;
use crate::config::SyncMode;
use crate::process::ChildNode;
use std::path::Path;
use std::time::Duration;

/// Single node vs an N-node cluster, PUT only, in one run.
pub async fn compare(exe: &Path, nodes: usize, levels: &[&str], sync_mode: SyncMode, cfg: &BenchConfig) -> Result<String, BenchError> {
    let dir = scratch_dir("cluster")?;
    let sync = vec!["--sync".to_string(), format!("{sync_mode:?}").to_lowercase()];

    eprintln!("baseline: one node, PUT...");
    let single_args = [
        vec!["--listen".into(), "127.0.0.1:0".into(), "--insecure".into(), "--data-dir".into(), dir.join("single").display().to_string()],
        sync.clone(),
    ]
    .concat();
    let mut single = ChildNode::spawn(exe, &single_args, None, Duration::from_secs(30))?;
    let baseline = run_phase(&[Client::new(&single.url)?], cfg, Workload::Put).await;
    single.terminate()?;

    let (mut cluster, clients) = start_cluster(exe, &dir, nodes, sync).await?;
    let rf = 3.min(nodes) as u64;
    let key_len = bench_key(0).len() as u64;
    let budget = 1.3 * (key_len + cfg.value_size as u64 + 64) as f64;
    let mut out = String::new();
    out.push_str(&format!(
        "{:<16} {:>10} {:>9} {:>9} {:>10} {:>14} {:>8}\n",
        "run", "req/s", "p50 ms", "p99 ms", "x single", "wire B/replica", "budget"
    ));
    let row = |out: &mut String, name: &str, r: &PhaseResult, wire: Option<f64>| {
        out.push_str(&format!(
            "{:<16} {:>10.0} {:>9.2} {:>9.2} {:>10.2} {:>14} {:>8.0}\n",
            name,
            r.throughput(),
            r.percentile_ms(0.5),
            r.percentile_ms(0.99),
            r.throughput() / baseline.throughput(),
            wire.map_or_else(|| "-".to_string(), |w| format!("{w:.0}")),
            budget
        ))
    };
    row(&mut out, "single node", &baseline, None);
    for level in levels {
        let before =
            scrape_counter(&clients, "hearsay_peer_bytes_sent").await + scrape_counter(&clients, "hearsay_peer_bytes_received").await;
        let phase_cfg = BenchConfig { query: format!("w={level}"), ..cfg.clone() };
        let r = run_phase(&clients, &phase_cfg, Workload::Put).await;
        wait_quiet(&clients).await;
        let after =
            scrape_counter(&clients, "hearsay_peer_bytes_sent").await + scrape_counter(&clients, "hearsay_peer_bytes_received").await;
        let per_replica = (after - before) as f64 / (r.ok.max(1) * (rf - 1).max(1)) as f64;
        row(&mut out, &format!("{nodes} nodes w={level}"), &r, Some(per_replica));
        if r.errors > 0 {
            out.push_str(&format!("  ({} requests failed)\n", r.errors));
        }
    }
    cluster.terminate();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
