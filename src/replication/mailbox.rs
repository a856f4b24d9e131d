//! The retry buffer of direct mail (DESIGN.md §3): per peer, the records a
//! send could not deliver, persisted in aux tree `mail/<peer>` (seq → entry)
//! so a restart of the sender loses nothing. One entry per key (a newer
//! version replaces an older one), bounded by record and byte limits; what
//! does not fit is dropped, counted, and its shard marked dirty for that peer
//! in aux tree `dirty/<peer>` so anti-entropy repairs it first.
//! The in-memory index (key → seq, seq → key) is rebuilt from disk at open.

use crate::metrics::PeerLabels;
use crate::storage::{codec, Storage, StorageError};
use crate::types::{Key, Record, ShardId, Version};
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Bounds of one peer's buffer; a zero bound disables buffering.
#[derive(Debug, Clone, Copy)]
pub struct MailLimits {
    pub max_records: u64,
    pub max_bytes: u64,
}

/// Accounting overhead charged per buffered record, on top of key and value.
pub const ENTRY_OVERHEAD: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Queued,
    /// Replaced an older buffered version of the same key.
    Coalesced,
    /// A newer version of the key is already buffered.
    Superseded,
    /// The buffer is full: dropped, counted, shard marked dirty.
    Dropped,
}

struct Slot {
    seq: u64,
    version: Version,
    size: u64,
}

#[derive(Default)]
struct PeerQueue {
    by_key: HashMap<Bytes, Slot>,
    /// seq → (key, enqueue time in unix ms)
    by_seq: BTreeMap<u64, (Bytes, u64)>,
    bytes: u64,
    next_seq: u64,
    sent: u64,
    retried: u64,
    dropped: u64,
    dirty: BTreeSet<u32>,
    notify: Arc<Notify>,
    /// Why the latest delivery to this peer failed, until buffered mail
    /// is delivered again.
    last_error: Option<String>,
}

/// What `GET /admin/mail` shows for one peer.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct PeerMailStats {
    pub peer: String,
    pub pending_records: u64,
    pub pending_bytes: u64,
    pub oldest_age_ms: Option<u64>,
    pub sent: u64,
    pub retried: u64,
    pub dropped: u64,
    pub dirty_shards: Vec<u32>,
    /// Why the latest delivery failed; `None` once buffered mail is
    /// delivered again (or none ever failed).
    pub last_error: Option<String>,
}

/// One buffered record ready to send.
pub struct Letter {
    pub seq: u64,
    pub key: Key,
    pub record: Record,
}

pub struct Mailbox {
    storage: Arc<dyn Storage>,
    limits: MailLimits,
    dropped_metric: Family<PeerLabels, Counter>,
    queues: Mutex<HashMap<String, PeerQueue>>,
}

fn mail_tree(peer: &str) -> String {
    format!("mail/{peer}")
}

fn dirty_tree(peer: &str) -> String {
    format!("dirty/{peer}")
}

/// Entry layout: `[enqueued unix ms u64][key len u16][key][record codec]`.
fn encode_entry(now_ms: u64, key: &Key, record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + key.as_bytes().len() + record.value_len() + 18);
    out.extend_from_slice(&now_ms.to_be_bytes());
    out.extend_from_slice(&(key.as_bytes().len() as u16).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend(codec::encode(record));
    out
}

fn decode_entry(raw: &[u8]) -> Result<(u64, Key, Record), StorageError> {
    let bad = || StorageError::Corrupt("retry buffer entry".into());
    if raw.len() < 10 {
        return Err(bad());
    }
    let at = u64::from_be_bytes(raw[0..8].try_into().expect("8 bytes"));
    let klen = u16::from_be_bytes(raw[8..10].try_into().expect("2 bytes")) as usize;
    let key_bytes = raw.get(10..10 + klen).ok_or_else(bad)?;
    let key = Key::new(Bytes::copy_from_slice(key_bytes)).map_err(|_| bad())?;
    Ok((at, key, codec::decode(&raw[10 + klen..])?))
}

fn entry_size(key: &Key, record: &Record) -> u64 {
    key.as_bytes().len() as u64 + record.value_len() as u64 + ENTRY_OVERHEAD
}

impl Mailbox {
    /// Rebuilds every peer's index (and dirty marks) from storage.
    pub fn open(
        storage: Arc<dyn Storage>,
        limits: MailLimits,
        dropped_metric: Family<PeerLabels, Counter>,
    ) -> Result<Mailbox, StorageError> {
        let mut queues: HashMap<String, PeerQueue> = HashMap::new();
        for tree in storage.aux_trees("mail/")? {
            let peer = tree["mail/".len()..].to_string();
            let q = queues.entry(peer).or_default();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = storage.aux_scan(&tree, after.as_deref(), 1024)?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (k, v) in page {
                    let seq = u64::from_be_bytes(k.as_slice().try_into().map_err(|_| StorageError::Corrupt("retry buffer seq".into()))?);
                    let (at, key, record) = decode_entry(&v)?;
                    // A crash between writing a replacement and removing the
                    // entry it replaced leaves two; keep the newer version.
                    if let Some(old) = q.by_key.get(&key.bytes()) {
                        let (stale_seq, keep_old) = if old.version >= record.version { (seq, true) } else { (old.seq, false) };
                        storage.aux_remove(&tree, &stale_seq.to_be_bytes())?;
                        if keep_old {
                            continue;
                        }
                        let old = q.by_key.remove(&key.bytes()).expect("present");
                        q.by_seq.remove(&old.seq);
                        q.bytes -= old.size;
                    }
                    let size = entry_size(&key, &record);
                    q.by_key.insert(key.bytes(), Slot { seq, version: record.version, size });
                    q.by_seq.insert(seq, (key.bytes(), at));
                    q.bytes += size;
                    q.next_seq = q.next_seq.max(seq + 1);
                }
            }
        }
        for tree in storage.aux_trees("dirty/")? {
            let peer = tree["dirty/".len()..].to_string();
            let q = queues.entry(peer).or_default();
            for (k, _) in storage.aux_scan(&tree, None, usize::MAX)? {
                if let Ok(b) = <[u8; 4]>::try_from(k.as_slice()) {
                    q.dirty.insert(u32::from_be_bytes(b));
                }
            }
        }
        Ok(Mailbox { storage, limits, dropped_metric, queues: Mutex::new(queues) })
    }

    /// Buffers `record` for `peer`, or drops it and marks its shard dirty.
    pub fn enqueue(&self, peer: &str, shard: ShardId, key: &Key, record: &Record, now_ms: u64) -> Result<Enqueued, StorageError> {
        let mut queues = self.queues.lock().expect("mailbox lock");
        let q = queues.entry(peer.to_string()).or_default();
        let size = entry_size(key, record);
        let tree = mail_tree(peer);
        let (freed_records, freed_bytes, outcome) = match q.by_key.get(key.as_bytes()) {
            Some(old) if old.version >= record.version => return Ok(Enqueued::Superseded),
            Some(old) => (1, old.size, Enqueued::Coalesced),
            None => (0, 0, Enqueued::Queued),
        };
        let records_after = q.by_key.len() as u64 - freed_records + 1;
        let bytes_after = q.bytes - freed_bytes + size;
        if records_after > self.limits.max_records || bytes_after > self.limits.max_bytes {
            self.count_dropped(q, peer, shard)?;
            return Ok(Enqueued::Dropped);
        }
        let seq = q.next_seq;
        q.next_seq += 1;
        // Write the new entry before removing the old one: a crash in between
        // leaves a duplicate that `open` resolves, never a lost record.
        self.storage.aux_put(&tree, &seq.to_be_bytes(), &encode_entry(now_ms, key, record))?;
        if let Some(old) = q.by_key.remove(key.as_bytes()) {
            q.by_seq.remove(&old.seq);
            q.bytes -= old.size;
            self.storage.aux_remove(&tree, &old.seq.to_be_bytes())?;
        }
        q.by_key.insert(key.bytes(), Slot { seq, version: record.version, size });
        q.by_seq.insert(seq, (key.bytes(), now_ms));
        q.bytes += size;
        q.notify.notify_one();
        Ok(outcome)
    }

    /// The oldest buffered records for `peer`, at most `max_records` and
    /// (beyond the first) `max_bytes`.
    pub fn next_batch(&self, peer: &str, max_records: usize, max_bytes: u64) -> Result<Vec<Letter>, StorageError> {
        let seqs: Vec<u64> = {
            let queues = self.queues.lock().expect("mailbox lock");
            let Some(q) = queues.get(peer) else { return Ok(Vec::new()) };
            q.by_seq.keys().take(max_records).copied().collect()
        };
        let tree = mail_tree(peer);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for seq in seqs {
            // Entries removed meanwhile (delivered, coalesced) are skipped.
            let Some(raw) = self.storage.aux_get(&tree, &seq.to_be_bytes())? else { continue };
            let (_, key, record) = decode_entry(&raw)?;
            bytes += entry_size(&key, &record);
            out.push(Letter { seq, key, record });
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// A record that will not be delivered: counted, and its shard marked
    /// dirty for `peer` so anti-entropy repairs it first.
    fn count_dropped(&self, q: &mut PeerQueue, peer: &str, shard: ShardId) -> Result<(), StorageError> {
        q.dropped += 1;
        self.dropped_metric.get_or_create(&PeerLabels { peer: peer.to_string() }).inc();
        if q.dirty.insert(shard.0) {
            self.storage.aux_put(&dirty_tree(peer), &shard.0.to_be_bytes(), &[])?;
        }
        Ok(())
    }

    /// Drops letters too old to deliver (see `replication::carrier`), each
    /// counted and its shard marked dirty, as for a full buffer.
    pub fn expire(&self, peer: &str, letters: &[(u64, ShardId)]) -> Result<(), StorageError> {
        let mut queues = self.queues.lock().expect("mailbox lock");
        let Some(q) = queues.get_mut(peer) else { return Ok(()) };
        let tree = mail_tree(peer);
        for &(seq, shard) in letters {
            if self.take(q, &tree, seq)? {
                self.count_dropped(q, peer, shard)?;
            }
        }
        Ok(())
    }

    /// Drops all mail and dirty marks for a member that was removed from the
    /// cluster: no one will deliver or repair them. Returns the letters
    /// dropped, counted as dropped.
    pub fn forget_peer(&self, peer: &str) -> Result<u64, StorageError> {
        let mut queues = self.queues.lock().expect("mailbox lock");
        let Some(q) = queues.get_mut(peer) else { return Ok(0) };
        let tree = mail_tree(peer);
        let seqs: Vec<u64> = q.by_seq.keys().copied().collect();
        let mut dropped = 0;
        for seq in seqs {
            if self.take(q, &tree, seq)? {
                dropped += 1;
            }
        }
        q.dropped += dropped;
        self.dropped_metric.get_or_create(&PeerLabels { peer: peer.to_string() }).inc_by(dropped);
        for shard in std::mem::take(&mut q.dirty) {
            self.storage.aux_remove(&dirty_tree(peer), &shard.to_be_bytes())?;
        }
        Ok(dropped)
    }

    /// Removes letter `seq` from the buffer; whether it was still there.
    fn take(&self, q: &mut PeerQueue, tree: &str, seq: u64) -> Result<bool, StorageError> {
        let Some((key, _)) = q.by_seq.remove(&seq) else { return Ok(false) };
        if let Some(slot) = q.by_key.remove(&key) {
            q.bytes -= slot.size;
        }
        self.storage.aux_remove(tree, &seq.to_be_bytes())?;
        Ok(true)
    }

    /// Removes delivered letters (unless a newer version replaced them since).
    pub fn delivered(&self, peer: &str, seqs: &[u64]) -> Result<(), StorageError> {
        let mut queues = self.queues.lock().expect("mailbox lock");
        let Some(q) = queues.get_mut(peer) else { return Ok(()) };
        let tree = mail_tree(peer);
        for &seq in seqs {
            if self.take(q, &tree, seq)? {
                q.sent += 1;
            }
        }
        q.last_error = None;
        Ok(())
    }

    /// A retry of `records` buffered letters failed with `error`.
    pub fn failed_attempt(&self, peer: &str, records: usize, error: &str) {
        if let Some(q) = self.queues.lock().expect("mailbox lock").get_mut(peer) {
            q.retried += records as u64;
            q.last_error = Some(error.to_string());
        }
    }

    /// Direct mail to `peer` failed with `error` (its records go to the buffer).
    pub fn note_failure(&self, peer: &str, error: &str) {
        self.queues.lock().expect("mailbox lock").entry(peer.to_string()).or_default().last_error = Some(error.to_string());
    }

    /// Why the latest delivery to `peer` failed, if none has succeeded since.
    pub fn last_error(&self, peer: &str) -> Option<String> {
        self.queues.lock().expect("mailbox lock").get(peer).and_then(|q| q.last_error.clone())
    }

    pub fn pending(&self, peer: &str) -> u64 {
        self.queues.lock().expect("mailbox lock").get(peer).map_or(0, |q| q.by_key.len() as u64)
    }

    /// Wakes when something is buffered for `peer`.
    pub fn notifier(&self, peer: &str) -> Arc<Notify> {
        self.queues.lock().expect("mailbox lock").entry(peer.to_string()).or_default().notify.clone()
    }

    pub fn peers_with_mail(&self) -> Vec<String> {
        self.queues.lock().expect("mailbox lock").iter().filter(|(_, q)| !q.by_key.is_empty()).map(|(p, _)| p.clone()).collect()
    }

    /// Shards marked dirty for `peer` (repaired first by anti-entropy).
    pub fn dirty_shards(&self, peer: &str) -> Vec<u32> {
        self.queues.lock().expect("mailbox lock").get(peer).map_or_else(Vec::new, |q| q.dirty.iter().copied().collect())
    }

    /// Settles a dirty mark once anti-entropy has repaired `shard` on `peer`.
    pub fn clear_dirty(&self, peer: &str, shard: ShardId) -> Result<(), StorageError> {
        let mut queues = self.queues.lock().expect("mailbox lock");
        if let Some(q) = queues.get_mut(peer) {
            if q.dirty.remove(&shard.0) {
                self.storage.aux_remove(&dirty_tree(peer), &shard.0.to_be_bytes())?;
            }
        }
        Ok(())
    }

    pub fn stats(&self, now_ms: u64) -> Vec<PeerMailStats> {
        let queues = self.queues.lock().expect("mailbox lock");
        let mut out: Vec<PeerMailStats> = queues
            .iter()
            .map(|(peer, q)| PeerMailStats {
                peer: peer.clone(),
                pending_records: q.by_key.len() as u64,
                pending_bytes: q.bytes,
                oldest_age_ms: q.by_seq.values().next().map(|(_, at)| now_ms.saturating_sub(*at)),
                sent: q.sent,
                retried: q.retried,
                dropped: q.dropped,
                dirty_shards: q.dirty.iter().copied().collect(),
                last_error: q.last_error.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem_engine::MemStorage;

    fn rec(hlc: u64) -> Record {
        Record { version: Version { hlc, node: 1 }, value: Some(Bytes::from_static(b"value")) }
    }

    #[test]
    fn coalesces_bounds_drops_and_survives_reopen() {
        let store = MemStorage::new(4);
        let limits = MailLimits { max_records: 3, max_bytes: 1 << 20 };
        let mb = Mailbox::open(Arc::new(store.clone()), limits, Family::default()).unwrap();
        let k = |s: &str| Key::new(s.as_bytes().to_vec()).unwrap();
        assert_eq!(mb.enqueue("p", ShardId(1), &k("a"), &rec(1), 10).unwrap(), Enqueued::Queued);
        assert_eq!(mb.enqueue("p", ShardId(1), &k("a"), &rec(5), 11).unwrap(), Enqueued::Coalesced);
        assert_eq!(mb.enqueue("p", ShardId(1), &k("a"), &rec(2), 12).unwrap(), Enqueued::Superseded);
        assert_eq!(mb.enqueue("p", ShardId(1), &k("b"), &rec(1), 13).unwrap(), Enqueued::Queued);
        assert_eq!(mb.enqueue("p", ShardId(2), &k("c"), &rec(1), 14).unwrap(), Enqueued::Queued);
        assert_eq!(mb.enqueue("p", ShardId(3), &k("d"), &rec(1), 15).unwrap(), Enqueued::Dropped);
        // Replacing a buffered key still fits when full.
        assert_eq!(mb.enqueue("p", ShardId(2), &k("c"), &rec(9), 16).unwrap(), Enqueued::Coalesced);
        let s = &mb.stats(20)[0];
        assert_eq!((s.pending_records, s.dropped, s.dirty_shards.clone()), (3, 1, vec![3]));

        let reopened = Mailbox::open(Arc::new(store.reopen()), limits, Family::default()).unwrap();
        let batch = reopened.next_batch("p", 10, 1 << 20).unwrap();
        let got: Vec<(String, u64)> =
            batch.iter().map(|l| (String::from_utf8(l.key.as_bytes().to_vec()).unwrap(), l.record.version.hlc)).collect();
        assert_eq!(got, vec![("a".into(), 5), ("b".into(), 1), ("c".into(), 9)], "oldest first, newest version per key");
        assert_eq!(reopened.dirty_shards("p"), vec![3]);
        reopened.delivered("p", &batch.iter().map(|l| l.seq).collect::<Vec<_>>()).unwrap();
        assert_eq!(reopened.pending("p"), 0);
        assert_eq!(Mailbox::open(Arc::new(store.reopen()), limits, Family::default()).unwrap().pending("p"), 0);
    }

    #[test]
    fn zero_limits_disable_buffering() {
        let mb = Mailbox::open(Arc::new(MemStorage::new(4)), MailLimits { max_records: 0, max_bytes: 0 }, Family::default()).unwrap();
        let key = Key::new(b"k".to_vec()).unwrap();
        assert_eq!(mb.enqueue("p", ShardId(0), &key, &rec(1), 0).unwrap(), Enqueued::Dropped);
        assert_eq!(mb.dirty_shards("p"), vec![0]);
    }
}
