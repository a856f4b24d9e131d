//! One anti-entropy exchange between this node and a peer for one shard:
//! compare roots; if they differ, descend only into differing inner nodes,
//! then list the differing leaves (a 4-byte fingerprint per record, never values)
//! and ship only the records one side lacks or holds older, in bounded
//! batches. Bytes moved grow with the difference, not the shard.

use crate::kv::KvService;
use crate::merkle::diff::{differing, fingerprint, from_bitmap, plan, to_bitmap};
use crate::merkle::{wire_digest, FANOUT, INNER};
use crate::replication::Replication;
use crate::rpc::client::{PeerClient, RpcError};
use crate::rpc::{
    ApplyBatch, ApplyReply, Fetch, FetchReply, LeafDiff, LeafDiffReply, SyncMode, SyncReport, TreeReply, TreeRequest, WireRecord,
};
use crate::rpc::{PATH_APPLY, PATH_FETCH, PATH_LEAVES, PATH_TREE};
use crate::storage::StorageError;
use crate::types::{Key, ShardId, Version};
use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::Duration;

/// Most fingerprints in one leaf listing request.
const ENTRIES_PER_BATCH: usize = 20_000;
/// Most records in one push or fetch.
const RECORDS_PER_BATCH: usize = 256;
const RECORD_BYTES_PER_BATCH: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
    #[error("peer answered with {got} digests for {asked} indices")]
    ShortReply { got: usize, asked: usize },
}

/// The local side of an exchange and how to reach the peer.
pub struct Exchange<'a> {
    kv: &'a KvService,
    peers: &'a PeerClient,
    peer: (&'a str, &'a str),
    shard: ShardId,
    timeout: Duration,
    max_value_bytes: usize,
    metrics: &'a crate::metrics::Metrics,
    /// The node's repair bandwidth, taken for every record batch moved.
    throttle: &'a super::throttle::Throttle,
}

impl<'a> Exchange<'a> {
    /// An exchange of `shard` between this node and `peer` (name, address),
    /// each call bounded by `timeout`.
    pub fn new(repl: &'a Replication, peer: (&'a str, &'a str), shard: ShardId, timeout: Duration) -> Exchange<'a> {
        Exchange {
            kv: &repl.kv,
            peers: &repl.peers,
            peer,
            shard,
            timeout,
            max_value_bytes: repl.max_value_bytes(),
            metrics: repl.metrics(),
            throttle: &repl.repair_bandwidth,
        }
    }

    /// Waits for the bandwidth limit to let `bytes` of records move.
    async fn pace(&self, bytes: u64) {
        let waited = self.throttle.take(bytes).await;
        if !waited.is_zero() {
            self.metrics.repair_throttled.inc_by(waited.as_secs_f64());
        }
    }

    fn shards(&self) -> u32 {
        self.kv.storage().shard_count()
    }

    /// One call to the peer, its bytes added to the report.
    async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        report: &mut SyncReport,
    ) -> Result<Resp, ExchangeError> {
        let (reply, bytes) = self.peers.call_sized(self.peer, path, req, self.timeout).await?;
        report.bytes += bytes;
        Ok(reply)
    }

    /// The peer's digests at one level, and its record count for the shard.
    async fn digests(
        &self,
        level: u8,
        indices: Vec<u32>,
        children: bool,
        report: &mut SyncReport,
    ) -> Result<(Vec<[u8; 16]>, u64), ExchangeError> {
        let asked = if children { indices.len() * FANOUT } else { indices.len() };
        let req = TreeRequest { shard: self.shard.0, shards: self.shards(), level, indices, children };
        let reply: TreeReply = self.call(PATH_TREE, &req, report).await?;
        if reply.digests.len() != asked {
            return Err(ExchangeError::ShortReply { got: reply.digests.len(), asked });
        }
        report.peer_replicates = reply.replicates;
        Ok((reply.digests, reply.records))
    }

    fn local_level(&self, level: u8, indices: &[u32]) -> Vec<[u8; 16]> {
        let mut tree = self.kv.storage().trees().shard(self.shard.0);
        let full = tree.level(level, indices).expect("indices come from the same tree shape");
        full.iter().map(wire_digest).collect()
    }

    pub async fn run(&self, mode: SyncMode) -> Result<SyncReport, ExchangeError> {
        let mut report = SyncReport::default();
        let (theirs, their_records) = self.digests(0, vec![0], false, &mut report).await?;
        if self.local_level(0, &[0]) == theirs {
            report.equal = true;
            return Ok(report);
        }
        let all_inner: Vec<u32> = (0..INNER as u32).collect();
        let (theirs, _) = self.digests(1, all_inner.clone(), false, &mut report).await?;
        let inner: Vec<u32> = differing(&self.local_level(1, &all_inner), &theirs).into_iter().map(|i| i as u32).collect();
        let leaves: Vec<u32> = inner.iter().flat_map(|&i| i * FANOUT as u32..(i + 1) * FANOUT as u32).collect();
        let (theirs, _) = self.digests(2, inner, true, &mut report).await?;
        let diverged: BTreeSet<u32> = differing(&self.local_level(2, &leaves), &theirs).into_iter().map(|i| leaves[i]).collect();
        report.leaves_diverged = diverged.len() as u64;
        if diverged.is_empty() {
            return Ok(report);
        }
        // My records in the differing leaves, a chunk of leaves at a time (one
        // shard scan each). A chunk is sized from the larger replica so that
        // it holds about ENTRIES_PER_BATCH records on either side: memory on
        // both sides is bounded by the batch, not the shard, at the price of
        // more scans when a shard is much larger than a batch.
        let records = self.kv.storage().counts(self.shard).records.max(their_records);
        let diverged: Vec<u32> = diverged.into_iter().collect();
        for chunk in diverged.chunks(leaves_per_scan(records)) {
            let chunk_set: BTreeSet<u32> = chunk.iter().copied().collect();
            let mut by_leaf: std::collections::BTreeMap<u32, Vec<(Bytes, Version)>> = Default::default();
            for (leaf, key, version) in self.kv.storage().leaf_entries(self.shard, &chunk_set)? {
                by_leaf.entry(leaf).or_default().push((key, version));
            }
            let mut batch_leaves: Vec<(u32, u32)> = Vec::new();
            let mut batch: Vec<(Bytes, Version)> = Vec::new();
            for leaf in chunk {
                let records = by_leaf.remove(leaf).unwrap_or_default();
                if !batch_leaves.is_empty() && batch.len() + records.len() > ENTRIES_PER_BATCH {
                    self.settle(mode, std::mem::take(&mut batch_leaves), std::mem::take(&mut batch), &mut report).await?;
                }
                batch_leaves.push((*leaf, records.len() as u32));
                batch.extend(records);
            }
            if !batch_leaves.is_empty() {
                self.settle(mode, batch_leaves, batch, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// Sends one fingerprint listing and moves the records it shows to differ.
    async fn settle(
        &self,
        mode: SyncMode,
        leaves: Vec<(u32, u32)>,
        mine: Vec<(Bytes, Version)>,
        report: &mut SyncReport,
    ) -> Result<(), ExchangeError> {
        let nonce: u64 = rand::random();
        let fingerprints = mine.iter().map(|(k, v)| fingerprint(nonce, k, *v)).collect();
        let (leaves, counts) = leaves.into_iter().unzip();
        let req = LeafDiff { shard: self.shard.0, shards: self.shards(), mode, nonce, leaves, counts, fingerprints };
        let reply: LeafDiffReply = self.call(PATH_LEAVES, &req, report).await?;
        if mode.pushes() {
            let wanted: Vec<&Bytes> = from_bitmap(&reply.want, mine.len()).into_iter().map(|i| &mine[i].0).collect();
            self.push(&wanted, report).await?;
        }
        if mode.pulls() && !reply.newer.is_empty() {
            for chunk in reply.newer.chunks(RECORDS_PER_BATCH) {
                let got: FetchReply = self.call(PATH_FETCH, &Fetch { keys: chunk.to_vec() }, report).await?;
                let records = got
                    .records
                    .into_iter()
                    .filter_map(|w| w.into_parts(self.max_value_bytes).ok())
                    .filter(|(k, _)| crate::types::shard_of(k.as_bytes(), self.shards()) == self.shard)
                    .collect::<Vec<_>>();
                let bytes = records.iter().map(|(k, r)| (k.as_bytes().len() + r.value_len()) as u64).sum::<u64>();
                report.keys_received += records.len() as u64;
                report.record_bytes += bytes;
                self.pace(bytes).await;
                self.kv.apply_batch(&records).await?;
            }
        }
        Ok(())
    }

    async fn push(&self, keys: &[&Bytes], report: &mut SyncReport) -> Result<(), ExchangeError> {
        let mut batch = Vec::new();
        let mut size = 0usize;
        for key in keys {
            let Ok(key) = Key::new((*key).clone()) else { continue };
            let Some(record) = self.kv.read(&key)? else { continue };
            size += key.as_bytes().len() + record.value_len();
            batch.push(WireRecord::new(&key, &record));
            if batch.len() >= RECORDS_PER_BATCH || size >= RECORD_BYTES_PER_BATCH {
                self.send(std::mem::take(&mut batch), size as u64, report).await?;
                size = 0;
            }
        }
        if !batch.is_empty() {
            self.send(batch, size as u64, report).await?;
        }
        Ok(())
    }

    /// Pushes one batch of `records`, `bytes` of keys and values.
    async fn send(&self, records: Vec<WireRecord>, bytes: u64, report: &mut SyncReport) -> Result<(), ExchangeError> {
        self.pace(bytes).await;
        report.record_bytes += bytes;
        report.keys_sent += records.len() as u64;
        let sent: Vec<(Bytes, Version)> = records.iter().map(|r| (r.key.clone(), Version { hlc: r.hlc, node: r.node })).collect();
        let reply: ApplyReply = self.call(PATH_APPLY, &ApplyBatch { records }, report).await?;
        self.drop_below_floor(&sent, &reply.below_floor)
    }

    /// The peer refused these records as below its purge floor: their
    /// deletes were verified and purged on the shard's replicas while this
    /// copy missed them, so this copy drops them too (unless the key was
    /// written since), and the replicas converge without bringing them back.
    fn drop_below_floor(&self, sent: &[(Bytes, Version)], refused: &[u32]) -> Result<(), ExchangeError> {
        let mut dropped = 0u64;
        for (key, version) in refused.iter().filter_map(|&i| sent.get(i as usize)) {
            dropped += u64::from(self.kv.storage().remove_version(self.shard, key, *version)?);
        }
        if dropped > 0 {
            self.metrics.stale_records_dropped.inc_by(dropped);
            tracing::info!(
                shard = self.shard.0,
                peer = self.peer.0,
                records = dropped,
                "dropped records a replica refused as below its purge floor: deletes this copy missed"
            );
        }
        Ok(())
    }
}

/// Leaves per chunk so a chunk of a shard with `records` records holds
/// about [`ENTRIES_PER_BATCH`] of them (records spread evenly over leaves).
fn leaves_per_scan(records: u64) -> usize {
    let per_leaf = records as f64 / crate::merkle::LEAVES as f64;
    ((ENTRIES_PER_BATCH as f64 / per_leaf.max(1.0)) as usize).clamp(1, crate::merkle::LEAVES)
}

/// The responder's half of a leaf listing: compare, leaf by leaf, with my
/// own records (per leaf, so a fingerprint only has to be unique among the
/// few records of one leaf).
pub fn answer_leaf_diff(kv: &KvService, req: &LeafDiff) -> Result<LeafDiffReply, LeafDiffError> {
    let total: u64 = req.counts.iter().map(|&c| u64::from(c)).sum();
    if req.leaves.len() != req.counts.len() || total != req.fingerprints.len() as u64 {
        return Err(LeafDiffError::Malformed);
    }
    if req.leaves.iter().any(|l| *l as usize >= crate::merkle::LEAVES) {
        return Err(LeafDiffError::Malformed);
    }
    let leaves: BTreeSet<u32> = req.leaves.iter().copied().collect();
    let mut mine: std::collections::HashMap<u32, Vec<(Bytes, u32)>> = Default::default();
    for (leaf, key, version) in kv.storage().leaf_entries(ShardId(req.shard), &leaves)? {
        let fp = fingerprint(req.nonce, &key, version);
        mine.entry(leaf).or_default().push((key, fp));
    }
    let (mut want, mut newer) = (Vec::new(), Vec::new());
    let mut offset = 0usize;
    for (leaf, count) in req.leaves.iter().zip(&req.counts) {
        let theirs = &req.fingerprints[offset..offset + *count as usize];
        let my = mine.remove(leaf).unwrap_or_default();
        let my_fps: Vec<u32> = my.iter().map(|(_, f)| *f).collect();
        let p = plan(&my_fps, theirs);
        want.extend(p.request.into_iter().map(|i| i + offset));
        if req.mode.pulls() {
            newer.extend(p.send.into_iter().map(|i| my[i].0.clone()));
        }
        offset += *count as usize;
    }
    let want = if req.mode.pushes() { to_bitmap(&want, req.fingerprints.len()) } else { Vec::new() };
    Ok(LeafDiffReply { want, newer })
}

#[derive(Debug, thiserror::Error)]
pub enum LeafDiffError {
    #[error("leaf listing is malformed: leaves, counts and fingerprints do not line up")]
    Malformed,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_about_one_batch_of_records() {
        assert_eq!(leaves_per_scan(0), crate::merkle::LEAVES);
        assert_eq!(leaves_per_scan(15_625), crate::merkle::LEAVES, "a 1M-key store's shards list in one scan");
        let n = leaves_per_scan(10_000_000);
        let per_chunk = 10_000_000 / crate::merkle::LEAVES as u64 * n as u64;
        assert!(per_chunk <= ENTRIES_PER_BATCH as u64, "{per_chunk} records per chunk");
        assert_eq!(leaves_per_scan(u64::MAX), 1);
    }
}
