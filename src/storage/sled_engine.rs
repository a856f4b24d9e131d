//! The sled engine: one `sled::Db` per node; trees `meta` and `shard/NNNNN`
//! (key → [`super::codec`] record). Every write of a key holds the key's
//! stripe lock while it reads, decides and replaces, which makes it atomic per
//! key; shard counts and Merkle trees live in memory, rebuilt at open. The
//! rebuild checks every value against its stored hash and moves a record that
//! fails (or no longer decodes) to the quarantine ([`super::Quarantine`]), so
//! a damaged record never stops a node from starting and is restored from a
//! peer instead of served.

use super::{
    aux_tree_name, check_shard, codec, count_delta, decide, Applied, AuxEntry, Page, Precondition, Quarantine, ShardCounts, StampFn,
    Storage, StorageError, QUARANTINE_TREE,
};
use super::{DEFAULT_SHARDS, META_SHARDS};
use crate::types::{Record, RecordHead, ShardId, Version};
use bytes::Bytes;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// How to open a data dir.
#[derive(Debug, Clone)]
pub struct SledOptions {
    pub path: PathBuf,
    /// `None`: the stored count, or [`DEFAULT_SHARDS`] for a new dir.
    pub shards: Option<u32>,
    /// sled's page cache; bounds the engine's memory.
    pub cache_bytes: u64,
}

#[derive(Default)]
struct Counters {
    live: AtomicI64,
    records: AtomicI64,
}

pub struct SledStorage {
    db: sled::Db,
    meta: sled::Tree,
    shards: Vec<sled::Tree>,
    counts: Vec<Counters>,
    trees: crate::merkle::Trees,
    stripes: Vec<Mutex<()>>,
    /// Counts change as restored records are released.
    quarantine: Mutex<Quarantine>,
    floors: super::floor::Floors,
    /// The I/O error of the first write that failed. sled keeps that error
    /// and returns it to every later write, even once the disk has room
    /// again, so from then on the node is failed until it is restarted.
    failed: std::sync::OnceLock<String>,
}

/// Key stripes: enough that two writers rarely share one, few enough to
/// cost nothing. A stripe is picked by (shard, Merkle leaf), both already
/// derived from the key's hash.
const STRIPES: usize = 4096;

/// A replaced record's bytes and head.
type Replaced = (Option<sled::IVec>, Option<RecordHead>);

/// How long `open` waits for a data dir's lock before giving up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens sled, waiting out a lock that a just-closed handle in this process
/// still holds: sled's background threads release it shortly after the
/// last handle is dropped. Another process holding it gets a clear error.
pub fn open_db(opts: &SledOptions) -> Result<sled::Db, StorageError> {
    // sled panics on a smaller cache instead of returning an error.
    if opts.cache_bytes < crate::config::MIN_CACHE_BYTES {
        return Err(StorageError::CacheTooSmall { min: crate::config::MIN_CACHE_BYTES, got: opts.cache_bytes });
    }
    let start = std::time::Instant::now();
    loop {
        let config = sled::Config::new()
            .path(&opts.path)
            .cache_capacity(opts.cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .segment_size(segment_size_for(&opts.path));
        match config.open() {
            Ok(db) => return Ok(db),
            Err(e) if e.to_string().contains("could not acquire lock") => {
                if start.elapsed() >= LOCK_WAIT {
                    return Err(StorageError::Locked { dir: opts.path.display().to_string() });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// sled's log segment size for a new data dir. With 1 KiB values, 8 MiB
/// segments took ~15-20% less CPU per write than sled's default 512 KiB
/// (fewer segments to account for, seal and write out), measured in one
/// process doing inserts. sled fixes the size when a dir is created and
/// refuses another one later, so an existing dir keeps the size it has.
pub const NEW_SEGMENT_BYTES: usize = 8 << 20;
/// sled's own default, for a dir whose stored size cannot be read.
const SLED_DEFAULT_SEGMENT_BYTES: usize = 512 << 10;

/// The segment size to open `path` with: the one stored in sled's `conf`
/// file (a `segment_size: N` line) if the dir exists, else [`NEW_SEGMENT_BYTES`].
fn segment_size_for(path: &std::path::Path) -> usize {
    match std::fs::read(path.join("conf")) {
        Ok(conf) => String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: ").and_then(|n| n.trim().parse().ok()))
            .unwrap_or(SLED_DEFAULT_SEGMENT_BYTES),
        Err(_) => NEW_SEGMENT_BYTES,
    }
}

/// A stored record's head and Merkle digest, hashed from the value bytes
/// held; an error says why the record cannot be trusted (it does not decode,
/// or its value no longer matches the hash stored with it).
fn check_record(key: &[u8], bytes: &[u8]) -> Result<(RecordHead, crate::merkle::Digest), String> {
    let head = codec::decode_head(bytes).map_err(|e| e.to_string())?;
    match codec::digest_checked(key, bytes).map_err(|e| e.to_string())? {
        (_, true) => Err("value bytes do not match the value hash stored with them".into()),
        (digest, false) => Ok((head, digest)),
    }
}

fn quarantine_key(shard: u32, key: &[u8]) -> Vec<u8> {
    [&shard.to_be_bytes()[..], key].concat()
}

/// The shard and key of a quarantine entry's key.
fn split_quarantine_key(raw: &[u8]) -> Option<(u32, &[u8])> {
    let (shard, key) = raw.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*shard), key))
}

pub fn shard_tree_name(shard: u32) -> String {
    format!("shard/{shard:05}")
}

impl SledStorage {
    /// Opens (or creates) a data dir: runs pending format migrations, checks
    /// the shard count, opens every shard tree and counts its records.
    pub fn open(opts: &SledOptions) -> Result<SledStorage, StorageError> {
        if let Some(s) = opts.shards {
            if s == 0 || s > super::MAX_SHARDS {
                return Err(StorageError::BadShardCount(s));
            }
        }
        let db = open_db(opts)?;
        migrations::run(&db)?;
        let meta = db.open_tree(migrations::META_TREE)?;
        let shards = match meta.get(META_SHARDS)? {
            Some(raw) => {
                let stored = u32::from_be_bytes(raw.as_ref().try_into().map_err(|_| StorageError::Corrupt("stored shard count".into()))?);
                if let Some(requested) = opts.shards.filter(|r| *r != stored) {
                    return Err(StorageError::ShardCountMismatch { stored, requested });
                }
                stored
            }
            None => {
                let s = opts.shards.unwrap_or(DEFAULT_SHARDS);
                meta.insert(META_SHARDS, &s.to_be_bytes())?;
                db.flush()?;
                s
            }
        };
        let mut trees = Vec::with_capacity(shards as usize);
        let mut counts = Vec::with_capacity(shards as usize);
        let merkle = crate::merkle::Trees::new(shards);
        let quarantine_tree = db.open_tree(aux_tree_name(QUARANTINE_TREE))?;
        let mut quarantine = Quarantine::default();
        for s in 0..shards {
            let tree = db.open_tree(shard_tree_name(s))?;
            let c = Counters::default();
            let mut damaged = Vec::new();
            for item in tree.iter() {
                let (k, v) = item?;
                match check_record(&k, &v) {
                    Ok((head, digest)) => {
                        merkle.record(s, &k, None, &digest);
                        c.records.fetch_add(1, Ordering::Relaxed);
                        c.live.fetch_add(i64::from(!head.tombstone), Ordering::Relaxed);
                    }
                    Err(why) => damaged.push((k, v, why)),
                }
            }
            for (k, v, why) in damaged {
                tracing::error!(shard = s, key = %crate::types::encode_key_bytes(&k), %why, "damaged record quarantined; anti-entropy will restore it from a peer");
                // Copied before it is removed: a crash in between leaves it
                // in both places, and the next open moves it again.
                quarantine_tree.insert(quarantine_key(s, &k), v)?;
                tree.remove(&k)?;
                quarantine.moved_at_open.insert(s);
            }
            trees.push(tree);
            counts.push(c);
        }
        if !quarantine.moved_at_open.is_empty() {
            db.flush()?;
        }
        for item in quarantine_tree.iter() {
            let (k, _) = item?;
            if let Some((s, _)) = split_quarantine_key(&k) {
                *quarantine.held.entry(s).or_default() += 1;
            }
        }
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        let floors = super::floor::Floors::load(shards, |k| Ok(meta.get(k)?.map(|v| v.to_vec())))?;
        let quarantine = Mutex::new(quarantine);
        Ok(SledStorage { db, meta, shards: trees, counts, trees: merkle, stripes, quarantine, floors, failed: std::sync::OnceLock::new() })
    }

    /// Runs a write, and turns an I/O error into [`StorageError::Failed`]:
    /// sled takes no write after one, so the first is logged once and every
    /// later one reports it.
    fn watch<T>(&self, write: impl FnOnce() -> Result<T, StorageError>) -> Result<T, StorageError> {
        match write() {
            Err(StorageError::Io(e)) => {
                let reason = e.to_string();
                if self.failed.set(reason.clone()).is_ok() {
                    tracing::error!(error = %reason, "a storage write failed; sled takes no more writes: fix the cause, then restart this node");
                }
                Err(StorageError::Failed(self.failed.get().cloned().unwrap_or(reason)))
            }
            other => other,
        }
    }

    /// Whether `shard` holds a record of `key` (one restored after quarantine).
    fn holds(&self, shard: u32, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.shards.get(shard as usize).map(|t| t.contains_key(key)).transpose()?.unwrap_or(false))
    }

    fn quarantine_counts(&self) -> MutexGuard<'_, Quarantine> {
        // Counts only; a panic while they were held leaves nothing half-done.
        self.quarantine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_quarantined(&self, shard: ShardId, key: &[u8]) -> Result<bool, StorageError> {
        Ok(self.db.open_tree(aux_tree_name(QUARANTINE_TREE))?.contains_key(quarantine_key(shard.0, key))?)
    }

    fn tree(&self, shard: ShardId) -> Result<&sled::Tree, StorageError> {
        Ok(&self.shards[check_shard(shard, self.shard_count())?])
    }

    /// Holds `key` (by its shard and leaf) against every other write of it.
    fn hold(&self, shard: ShardId, leaf: u32) -> MutexGuard<'_, ()> {
        let stripe = (shard.0 as usize * crate::merkle::LEAVES + leaf as usize) % STRIPES;
        // A writer that panicked left no half-written state behind the lock
        // (the record is replaced by one sled insert), so poisoning is moot.
        self.stripes[stripe].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the key's record, with its stripe held and the decision made,
    /// and accounts for the change. Returns the record replaced and its head.
    fn replace(&self, tree: &sled::Tree, shard: ShardId, leaf: u32, key: &[u8], record: &Record) -> Result<Replaced, StorageError> {
        let (encoded, value_hash) = codec::encode_hashed(record);
        let previous = tree.insert(key, encoded)?;
        let head = previous.as_ref().map(|v| codec::decode_head(v)).transpose()?;
        let old_digest = previous.as_ref().map(|v| codec::digest(key, v)).transpose()?;
        let new_digest = crate::merkle::record_digest_with(key, record.version, &value_hash);
        self.trees.record_in_leaf(shard.0, leaf, old_digest.as_ref(), &new_digest);
        let (live, records) = count_delta(head.as_ref(), record);
        let c = &self.counts[shard.0 as usize];
        c.live.fetch_add(live, Ordering::Relaxed);
        c.records.fetch_add(records, Ordering::Relaxed);
        Ok((previous, head))
    }
}

impl Storage for SledStorage {
    fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    fn get(&self, shard: ShardId, key: &[u8]) -> Result<Option<Record>, StorageError> {
        self.tree(shard)?.get(key)?.map(codec::decode_shared).transpose()
    }

    fn apply(&self, shard: ShardId, key: &[u8], record: &Record, pre: Precondition) -> Result<Applied, StorageError> {
        self.watch(|| {
            let tree = self.tree(shard)?;
            let leaf = crate::merkle::leaf_of(key);
            let _held = self.hold(shard, leaf);
            let current = tree.get(key)?.map(|v| codec::decode_head(&v)).transpose()?;
            match decide(current.as_ref(), record, pre, self.floors.get(shard)) {
                // A key whose record was quarantined is missing from a copy that
                // is otherwise complete below the floor: a peer's copy restores it.
                Some(Applied::BelowFloor) if self.is_quarantined(shard, key)? => {}
                Some(outcome) => return Ok(outcome),
                None => {}
            }
            self.replace(tree, shard, leaf, key, record)?;
            Ok(Applied::Stored { previous: current })
        })
    }

    fn write_fresh(
        &self,
        shard: ShardId,
        key: &[u8],
        value: Option<Bytes>,
        pre: Precondition,
        stamp: StampFn<'_>,
    ) -> Result<(Record, Applied), StorageError> {
        self.watch(|| {
            let tree = self.tree(shard)?;
            let leaf = crate::merkle::leaf_of(key);
            let _held = self.hold(shard, leaf);
            if pre != Precondition::None {
                let current = tree.get(key)?.map(|v| codec::decode_head(&v)).transpose()?;
                if !pre.holds(current.as_ref()) {
                    let record = Record { version: Version::default(), value };
                    return Ok((record, Applied::PreconditionFailed { current }));
                }
            }
            let record = Record { version: stamp()?, value };
            match self.replace(tree, shard, leaf, key, &record)? {
                (Some(raw), Some(head)) if head.version >= record.version => {
                    // Only a clock that broke its rule gets here: restore the newer record.
                    tracing::warn!(shard = shard.0, current = %head.version, stamped = %record.version, "fresh stamp older than the stored record; kept the stored one");
                    let stored = codec::decode(&raw)?;
                    self.replace(tree, shard, leaf, key, &stored)?;
                    Ok((record, Applied::Stale { current: head }))
                }
                (_, previous) => Ok((record, Applied::Stored { previous })),
            }
        })
    }

    fn remove_version(&self, shard: ShardId, key: &[u8], version: Version) -> Result<bool, StorageError> {
        self.watch(|| {
            let tree = self.tree(shard)?;
            let leaf = crate::merkle::leaf_of(key);
            let _held = self.hold(shard, leaf);
            let Some(raw) = tree.get(key)? else { return Ok(false) };
            let head = codec::decode_head(&raw)?;
            if head.version != version {
                return Ok(false);
            }
            let digest = codec::digest(key, &raw)?;
            tree.remove(key)?;
            self.trees.shard(shard.0).remove(leaf, &digest);
            let c = &self.counts[shard.0 as usize];
            c.records.fetch_sub(1, Ordering::Relaxed);
            c.live.fetch_sub(i64::from(!head.tombstone), Ordering::Relaxed);
            Ok(true)
        })
    }

    fn floors(&self) -> &super::floor::Floors {
        &self.floors
    }

    fn scan(&self, shard: ShardId, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page, StorageError> {
        let tree = self.tree(shard)?;
        let iter = match after {
            Some(a) if a >= prefix => tree.range::<&[u8], _>((Bound::Excluded(a), Bound::Unbounded)),
            _ => tree.range::<&[u8], _>((Bound::Included(prefix), Bound::Unbounded)),
        };
        let mut page = Vec::new();
        for item in iter {
            if page.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            page.push((Bytes::copy_from_slice(&k), codec::decode_shared(v)?));
        }
        Ok(page)
    }

    fn trees(&self) -> &crate::merkle::Trees {
        &self.trees
    }

    fn scan_heads(
        &self,
        shard: ShardId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, crate::types::RecordHead)>, StorageError> {
        let tree = self.tree(shard)?;
        let iter = match after {
            Some(a) => tree.range::<&[u8], _>((Bound::Excluded(a), Bound::Unbounded)),
            None => tree.iter(),
        };
        iter.take(limit)
            .map(|item| {
                let (k, v) = item?;
                Ok((Bytes::copy_from_slice(&k), codec::decode_head(&v)?))
            })
            .collect()
    }

    fn counts(&self, shard: ShardId) -> ShardCounts {
        self.counts.get(shard.0 as usize).map_or_else(ShardCounts::default, |c| ShardCounts {
            live: c.live.load(Ordering::Relaxed).max(0) as u64,
            records: c.records.load(Ordering::Relaxed).max(0) as u64,
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.watch(|| {
            self.db.flush()?;
            Ok(())
        })
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.watch(|| {
            self.meta.insert(key, value)?;
            Ok(())
        })
    }

    fn quarantine(&self) -> Quarantine {
        self.quarantine_counts().clone()
    }

    fn quarantined(&self, limit: usize) -> Result<Vec<super::Quarantined>, StorageError> {
        let tree = self.db.open_tree(aux_tree_name(QUARANTINE_TREE))?;
        let mut out = Vec::new();
        for item in tree.iter().take(limit) {
            let (raw, bytes) = item?;
            let Some((shard, key)) = split_quarantine_key(&raw) else { continue };
            let restored = self.holds(shard, key)?;
            out.push(super::Quarantined { shard, key: Bytes::copy_from_slice(key), bytes: bytes.len(), restored });
        }
        Ok(out)
    }

    fn release_restored(&self) -> Result<u64, StorageError> {
        self.watch(|| {
            let tree = self.db.open_tree(aux_tree_name(QUARANTINE_TREE))?;
            let mut released = 0;
            for item in tree.iter() {
                let (raw, _) = item?;
                let Some((shard, key)) = split_quarantine_key(&raw) else { continue };
                // Counted only by the release that removed it, should two run at once.
                if self.holds(shard, key)? && tree.remove(&raw)?.is_some() {
                    let mut q = self.quarantine_counts();
                    if let Some(n) = q.held.get_mut(&shard) {
                        *n = n.saturating_sub(1);
                    }
                    q.held.retain(|_, n| *n > 0);
                    released += 1;
                }
            }
            if released > 0 {
                self.db.flush()?;
            }
            Ok(released)
        })
    }

    fn aux_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.watch(|| {
            self.db.open_tree(aux_tree_name(tree))?.insert(key, value)?;
            Ok(())
        })
    }

    fn aux_remove(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        self.watch(|| {
            self.db.open_tree(aux_tree_name(tree))?.remove(key)?;
            Ok(())
        })
    }

    fn aux_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.open_tree(aux_tree_name(tree))?.get(key)?.map(|v| v.to_vec()))
    }

    fn aux_scan(&self, tree: &str, after: Option<&[u8]>, limit: usize) -> Result<Vec<AuxEntry>, StorageError> {
        let tree = self.db.open_tree(aux_tree_name(tree))?;
        let iter = match after {
            Some(a) => tree.range::<&[u8], _>((Bound::Excluded(a), Bound::Unbounded)),
            None => tree.iter(),
        };
        iter.take(limit).map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StorageError::from)).collect()
    }

    fn aux_trees(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let full = aux_tree_name(prefix);
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name.starts_with(&full) && !self.db.open_tree(&name)?.is_empty() {
                out.push(name["aux/".len()..].to_string());
            }
        }
        Ok(out)
    }
}
