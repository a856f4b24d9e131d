//! One anti-entropy run over a set of shards. In `ring` mode each shard's
//! replicas are walked in ring order, each hop a one-way push from a replica
//! to its successor, wrapping around, until every replica's root matches:
//! at most 2n−2 hops for n replicas. A replica that does not answer is
//! skipped and recorded, and its shard stays dirty. The pairwise modes sync
//! this node with every other replica of each shard.

use super::{RunMode, RunSummary};
use crate::repair::exchange::Exchange;
use crate::replication::Replication;
use crate::rpc::{SyncMode, SyncReport, SyncRequest, TreeReply, TreeRequest, Verified, PATH_SYNC, PATH_TREE, PATH_VERIFIED};
use crate::types::{NodeId, ShardId};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A hop asked of another node may move a lot of data.
const HOP_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Runner {
    pub repl: Arc<Replication>,
    pub summary: Arc<Mutex<RunSummary>>,
    pub cancel: CancellationToken,
    /// Unix ms at which each shard was last seen equal on all its replicas.
    pub verified: Arc<Mutex<Vec<Option<u64>>>>,
    pub purges: Arc<super::purge::Purges>,
}

impl Runner {
    fn update(&self, f: impl FnOnce(&mut RunSummary)) {
        f(&mut self.summary.lock().expect("run lock"));
    }

    pub async fn run(&self, shards: Vec<ShardId>, mode: RunMode) {
        for shard in shards {
            if self.cancel.is_cancelled() {
                self.update(|s| s.outcome = "cancelled".into());
                return;
            }
            self.update(|s| {
                s.current_shard = Some(shard.0);
                s.current_hop = 0;
            });
            match mode {
                RunMode::Ring => self.ring(shard).await,
                RunMode::Push => self.pairwise(shard, SyncMode::Push).await,
                RunMode::Pull => self.pairwise(shard, SyncMode::Pull).await,
                RunMode::PushPull => self.pairwise(shard, SyncMode::PushPull).await,
            }
            self.update(|s| s.shards_done += 1);
        }
        if self.cancel.is_cancelled() {
            self.update(|s| s.outcome = "cancelled".into());
        }
    }

    fn me(&self) -> &NodeId {
        self.repl.me()
    }

    /// Each replica's root and record count, or why it has none.
    async fn roots(&self, shard: ShardId, replicas: &[NodeId]) -> Vec<Result<([u8; 16], u64), String>> {
        let mut out = Vec::new();
        for r in replicas {
            out.push(self.root_of(shard, r).await);
        }
        self.update(|s| s.root_comparisons += replicas.len() as u64);
        out
    }

    async fn root_of(&self, shard: ShardId, node: &NodeId) -> Result<([u8; 16], u64), String> {
        if node == self.me() {
            let storage = self.repl.kv.storage();
            return Ok((crate::merkle::wire_digest(&storage.trees().shard(shard.0).root()), storage.counts(shard).records));
        }
        // A replica gossip holds down is not asked: on a partition each ask
        // would wait out its timeout, shard after shard.
        if self.repl.membership.is_down(node.name()) {
            return Err("down, as gossip holds it".into());
        }
        let addr = self.repl.membership.addr_of(node.name()).ok_or("address unknown")?;
        let req = TreeRequest { shard: shard.0, shards: self.repl.membership.shards(), level: 0, indices: vec![0], children: false };
        let (reply, bytes): (TreeReply, u64) =
            self.repl.peers.call_sized((node.name(), &addr), PATH_TREE, &req, Duration::from_secs(5)).await.map_err(|e| e.to_string())?;
        self.update(|s| s.bytes_sent += bytes);
        reply.digests.first().map(|d| (*d, reply.records)).ok_or_else(|| "answered with no root".into())
    }

    /// One push (or other mode) from `from` to `to`, run by `from`.
    async fn hop(&self, shard: ShardId, from: &NodeId, to: &NodeId, mode: SyncMode) -> Result<SyncReport, String> {
        if from == self.me() {
            let addr = self.repl.membership.addr_of(to.name()).ok_or("address unknown")?;
            let ex = Exchange::new(&self.repl, (to.name(), &addr), shard, HOP_TIMEOUT);
            return ex.run(mode).await.map_err(|e| e.to_string());
        }
        let addr = self.repl.membership.addr_of(from.name()).ok_or("address unknown")?;
        let req = SyncRequest { shard: shard.0, shards: self.repl.membership.shards(), peer: to.name().to_string(), mode };
        self.repl.peers.call((from.name(), &addr), PATH_SYNC, &req, HOP_TIMEOUT).await.map_err(|e| e.to_string())
    }

    fn account(&self, report: &SyncReport) {
        self.update(|s| {
            s.hops += 1;
            s.current_hop += 1;
            s.keys_sent += report.keys_sent + report.keys_received;
            s.bytes_sent += report.bytes;
            s.record_bytes += report.record_bytes;
        });
        let m = self.repl.metrics();
        m.ae_hops.inc();
        m.ae_keys_repaired.inc_by(report.keys_sent + report.keys_received);
        m.ae_bytes.inc_by(report.bytes);
    }

    fn skip(&self, shard: ShardId, node: &NodeId, reason: &str) {
        self.update(|s| s.skip(shard.0, node.name(), reason));
    }

    /// `shard` was found equal on all `replicas`, with every root read after
    /// `checked_at_ms`: settle dirty marks on every member and queue the
    /// tombstone purge on every replica (only a verified copy may purge and
    /// raise its purge floor).
    fn verified(&self, shard: ShardId, replicas: &[NodeId], checked_at_ms: u64) {
        let hlc = self.repl.kv.hlc();
        self.verified.lock().expect("verified lock")[shard.0 as usize] = Some(hlc.wall_ms());
        let root = self.repl.kv.storage().trees().shard(shard.0).root();
        let names: Vec<String> = replicas.iter().map(|r| r.name().to_string()).collect();
        let msg = Verified { shard: shard.0, shards: self.repl.membership.shards(), root, replicas: names, checked_at_ms };
        self.repl.settle_dirty(&msg);
        // A clock found ahead dated `checked_at_ms` in the future, and a purge
        // from that date would take tombstones no verification covered. The
        // peers cap the date by their own clocks, so theirs stays sound.
        if replicas.contains(self.me()) && hlc.check_trusted().is_ok() {
            self.purges.note_verified(shard.0, checked_at_ms);
        }
        // Marks live on whichever node dropped the write: tell every member.
        for m in self.repl.membership.members().into_iter().filter(|m| m.id != self.me().name()) {
            let (peers, msg) = (self.repl.peers.clone(), msg.clone());
            self.repl.spawn(async move {
                let _ = peers.call::<_, ()>((&m.id, &m.addr), PATH_VERIFIED, &msg, Duration::from_secs(5)).await;
            });
        }
    }

    async fn ring(&self, shard: ShardId) {
        let replicas = self.repl.membership.placement().replicas(shard).to_vec();
        let checked_at = self.repl.kv.hlc().wall_ms();
        let roots = self.roots(shard, &replicas).await;
        let mut live = Vec::new();
        for (r, root) in replicas.iter().zip(&roots) {
            match root {
                Ok((_, records)) => live.push((r.clone(), *records)),
                Err(reason) => self.skip(shard, r, reason),
            }
        }
        self.update(|s| s.shards_checked += 1);
        let all_live = live.len() == replicas.len();
        let first = roots.iter().flatten().next().map(|r| r.0);
        if roots.iter().flatten().all(|r| Some(r.0) == first) {
            if all_live {
                self.verified(shard, &replicas, checked_at);
            }
            return;
        }
        self.update(|s| s.shards_diverged += 1);
        self.repl.metrics().ae_shards_diverged.inc();
        // The loop is a cycle, so it may start anywhere: start at the replica
        // holding the most records, so the first hop pushes from a full copy
        // rather than from the one that missed writes.
        let start = live.iter().enumerate().max_by_key(|(i, (_, records))| (*records, std::cmp::Reverse(*i))).map_or(0, |(i, _)| i);
        live.rotate_left(start);
        let live: Vec<NodeId> = live.into_iter().map(|(r, _)| r).collect();
        let n = live.len();
        // 2n-2 hops suffice when exchanges are exact; a fingerprint collision
        // can hide a record from one exchange, so while roots still differ
        // the walk goes on, for at most three laps.
        for hop in 0..(2 * n).saturating_sub(2).max(1) + 2 * n {
            if self.cancel.is_cancelled() {
                return;
            }
            let (from, to) = (&live[hop % n], &live[(hop + 1) % n]);
            match self.hop(shard, from, to, SyncMode::Push).await {
                Ok(report) => self.account(&report),
                Err(e) => {
                    tracing::warn!(shard = shard.0, %from, %to, error = %e, "ring hop failed; replica skipped");
                    self.skip(shard, to, &e);
                    return;
                }
            }
            let checked_at = self.repl.kv.hlc().wall_ms();
            if all_present_and_equal(&self.roots(shard, &live).await) {
                if all_live {
                    self.verified(shard, &replicas, checked_at);
                }
                return;
            }
        }
    }

    async fn pairwise(&self, shard: ShardId, mode: SyncMode) {
        let replicas = self.repl.membership.placement().replicas(shard).to_vec();
        self.update(|s| s.shards_checked += 1);
        let mut diverged = false;
        let mut all_ok = true;
        for peer in replicas.iter().filter(|r| *r != self.me()) {
            if self.cancel.is_cancelled() {
                return;
            }
            match self.hop(shard, self.me(), peer, mode).await {
                Ok(report) => {
                    diverged |= !report.equal;
                    self.update(|s| s.root_comparisons += 1);
                    self.account(&report);
                }
                Err(e) => {
                    all_ok = false;
                    self.skip(shard, peer, &e);
                }
            }
        }
        if diverged {
            self.update(|s| s.shards_diverged += 1);
            self.repl.metrics().ae_shards_diverged.inc();
        }
        // Pairwise repair reconciles me with each peer; all replicas are
        // verified equal only if every root now matches.
        let checked_at = self.repl.kv.hlc().wall_ms();
        if all_ok && mode == SyncMode::PushPull && all_present_and_equal(&self.roots(shard, &replicas).await) {
            self.verified(shard, &replicas, checked_at);
        }
    }
}

/// Every replica answered and all roots are the same.
fn all_present_and_equal(roots: &[Result<([u8; 16], u64), String>]) -> bool {
    let first = roots.first().and_then(|r| r.as_ref().ok()).map(|r| r.0);
    first.is_some() && roots.iter().all(|r| r.as_ref().ok().map(|r| r.0) == first)
}
