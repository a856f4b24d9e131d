//! Hand-off: records of a shard this node does not replicate are pushed to
//! the shard's replicas and then dropped here. A join moves shards (that is
//! how a new member gets its share), and placement with bounded loads can
//! replace every replica of a shard in one join. Without a hand-off, that
//! shard's data would stay on nodes no request asks, and would come back
//! stale if the shard ever returned to them. A decommissioned node
//! replicates nothing, so this is also how it drains.
//!
//! A round takes a snapshot of the shard's (key, version) pairs, pushes the
//! shard to every replica with the anti-entropy exchange (only what a
//! replica lacks or holds older travels), and once every replica took it,
//! each counting itself a replica by its own view of the members, removes
//! exactly the snapshot's records (a record rewritten since stays for the
//! next round). A replica that is down or refuses defers the drop: this
//! copy may be the only one some records have until every replica holds
//! them, and extra copies cost only disk. A replica's purge floor may
//! refuse some of them as deletes this copy missed; the exchange drops those.

use super::exchange::Exchange;
use crate::replication::Replication;
use crate::rpc::SyncMode;
use crate::storage::{Storage, StorageError};
use crate::types::{ShardId, Version};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// How often a node looks for shards to hand off, by default, besides at
/// start and after each change of placement.
pub const HANDOFF_EVERY: Duration = Duration::from_secs(10);
/// How long after a start or a change of placement a round begins: time for
/// a burst of changes to end and for gossip to tell the new replicas, which
/// must count themselves replicas before anything is dropped here.
const SETTLE: Duration = Duration::from_secs(1);
/// The first retry after a round had to leave records behind; it doubles
/// up to the regular interval.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Deadline of one push to one replica.
const PUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// Worker: once this node knows its cluster, hands off each shard it holds
/// records of but does not replicate: soon after start and after every
/// change of placement (a join, a removal, a decommission), then every
/// `every` ([`HANDOFF_EVERY`] by default), sooner while a round had to
/// leave records behind.
pub async fn worker(repl: Arc<Replication>, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut changes = repl.membership.placement_changes();
    let mut drained_said = false;
    // A start counts as a change: what this node holds may belong elsewhere.
    let mut wait = SETTLE.min(every);
    let mut retry = FIRST_RETRY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            Ok(()) = changes.changed() => {
                tokio::select! {
                    _ = tokio::time::sleep(SETTLE) => {}
                    _ = &mut shutdown => return,
                }
                changes.borrow_and_update();
            }
            _ = &mut shutdown => return,
        }
        wait = every;
        if !repl.membership.is_ready() {
            wait = SETTLE.min(every);
            continue;
        }
        let foreign = foreign_shards(&repl);
        if repl.membership.is_retired() && foreign.is_empty() && !drained_said {
            tracing::warn!("decommission done: every record was handed off; this node can be stopped and its data dir wiped");
        }
        drained_said = repl.membership.is_retired() && foreign.is_empty();
        let mut left_behind = false;
        for shard in foreign {
            match hand_off(&repl, shard).await {
                Ok(HandOff::Dropped(0)) => {}
                Ok(HandOff::Dropped(n)) => {
                    tracing::info!(shard = shard.0, records = n, "handed off a shard this node no longer replicates")
                }
                Ok(HandOff::Deferred { took, replicas }) => {
                    left_behind = true;
                    repl.metrics().handoffs_deferred.inc();
                    tracing::debug!(shard = shard.0, took, replicas, "hand-off deferred until every replica takes the push");
                }
                Err(e) => {
                    left_behind = true;
                    tracing::warn!(shard = shard.0, error = %e, "hand-off failed; the next round tries again");
                }
            }
        }
        if left_behind {
            wait = retry.min(every);
            retry = (retry * 2).min(every);
        } else {
            retry = FIRST_RETRY;
        }
    }
}

/// Shards this node holds records of but does not replicate.
fn foreign_shards(repl: &Replication) -> Vec<ShardId> {
    let storage = repl.kv.storage();
    (0..storage.shard_count()).map(ShardId).filter(|s| storage.counts(*s).records > 0 && !repl.replicates(*s)).collect()
}

/// What one hand-off round of a shard did.
#[derive(Debug, PartialEq, Eq)]
enum HandOff {
    /// Every replica took the push; this many records were dropped here.
    Dropped(u64),
    /// Only `took` of the `replicas` took it; everything stays here.
    Deferred { took: usize, replicas: usize },
}

/// Pushes `shard` to its replicas and, once all of them took it, drops
/// what was pushed.
async fn hand_off(repl: &Replication, shard: ShardId) -> Result<HandOff, String> {
    let snapshot = on_storage(repl, move |storage| {
        let mut held: Vec<(Bytes, Version)> = Vec::new();
        storage.visit_heads(shard, &mut |key, head| {
            held.push((key, head.version));
            Ok(())
        })?;
        Ok(held)
    })
    .await?;
    let replicas = repl.membership.placement().replicas(shard).to_vec();
    let mut took = 0;
    for replica in &replicas {
        // As in ring runs: a replica gossip holds down is not waited for
        // (and the drop waits for it instead).
        if repl.membership.is_down(replica.name()) {
            continue;
        }
        let Some(addr) = repl.membership.addr_of(replica.name()) else { continue };
        match Exchange::new(repl, (replica.name(), &addr), shard, PUSH_TIMEOUT).run(SyncMode::Push).await {
            // A node whose view of the members differs may not count itself a
            // replica; it would hand the records on, perhaps back here, and two
            // nodes dropping at once could lose them. Only its own word counts.
            Ok(report) if report.peer_replicates => took += 1,
            Ok(_) => tracing::debug!(shard = shard.0, replica = replica.name(), "hand-off target does not count itself a replica yet"),
            Err(e) => tracing::debug!(shard = shard.0, replica = replica.name(), error = %e, "hand-off push failed"),
        }
    }
    if replicas.is_empty() || took < replicas.len() {
        return Ok(HandOff::Deferred { took, replicas: replicas.len() });
    }
    let dropped = on_storage(repl, move |storage| {
        let mut dropped = 0u64;
        for (key, version) in snapshot {
            dropped += u64::from(storage.remove_version(shard, &key, version)?);
        }
        Ok(dropped)
    })
    .await?;
    repl.metrics().handed_off.inc_by(dropped);
    Ok(HandOff::Dropped(dropped))
}

/// Runs a scan or removal of the store off the async worker threads.
async fn on_storage<T: Send + 'static>(
    repl: &Replication,
    work: impl FnOnce(&dyn Storage) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, String> {
    let storage = repl.kv.storage().clone();
    tokio::task::spawn_blocking(move || work(storage.as_ref())).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}
