//! Storage: the [`Storage`] trait every engine implements, its error type,
//! and the rules shared by all engines (last-writer-wins apply, preconditions,
//! the purge floor in [`floor`]).
//! Engines: [`sled_engine`] (production) and [`mem_engine`] (tests). The
//! on-disk record layout is in [`codec`]; grouped fsync in [`group_commit`].
//! Nothing here knows about HTTP, peers or placement.

pub mod codec;
pub mod floor;
pub mod group_commit;
pub mod mem_engine;
pub mod sled_engine;

pub use crate::merkle::Trees;
use crate::types::{Record, RecordHead, ShardId, Version};
use bytes::Bytes;

/// What went wrong in a storage engine, in the caller's terms.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("stored record for a key is corrupt: {0}")]
    Corrupt(String),
    #[error("data dir has {stored} shards but {requested} were requested; the shard count is fixed when a cluster is created")]
    ShardCountMismatch { stored: u32, requested: u32 },
    #[error("data dir belongs to node {stored:?}, not {requested:?}")]
    NodeMismatch { stored: String, requested: String },
    #[error("shard count must be 1..={MAX_SHARDS}, got {0}")]
    BadShardCount(u32),
    #[error("the page cache must be at least {min} bytes, got {got}")]
    CacheTooSmall { min: u64, got: u64 },
    #[error(transparent)]
    Migration(#[from] migrations::MigrationError),
    #[error("flushing to disk failed; the write is applied but not known to be durable")]
    FlushFailed,
    /// A write failed with an I/O error, after which sled takes no more
    /// writes: the node must be restarted once the cause is fixed.
    #[error(
        "storage failed ({0}) and takes no writes until this node is restarted; fix the cause (e.g. free disk space), then restart it"
    )]
    Failed(String),
    #[error("data dir {dir} is in use by another process (its lock was not released within 5 s)")]
    Locked { dir: String },
    #[error("shard {shard} does not exist (the store has {shards} shards)")]
    NoSuchShard { shard: u32, shards: u32 },
}

/// A condition the current record must meet for an apply to proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Last writer wins, nothing else.
    None,
    /// The key must hold a live value (HTTP `If-Match: *`).
    Exists,
    /// The key must hold a live value with exactly this version (`If-Match: "<etag>"`).
    VersionIs(Version),
    /// The key must not hold a live value: create only (HTTP `If-None-Match: *`).
    /// A tombstone counts as absent, as a deleted key reads as 404.
    Absent,
}

impl Precondition {
    pub fn holds(&self, current: Option<&RecordHead>) -> bool {
        let live = current.filter(|r| !r.tombstone);
        match self {
            Precondition::None => true,
            Precondition::Exists => live.is_some(),
            Precondition::VersionIs(v) => live.is_some_and(|r| r.version == *v),
            Precondition::Absent => live.is_none(),
        }
    }
}

/// The result of [`Storage::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The record replaced `previous` (or was the first for its key).
    Stored { previous: Option<RecordHead> },
    /// The store already holds this version or a newer one; nothing changed.
    Stale { current: RecordHead },
    /// The precondition did not hold; nothing changed.
    PreconditionFailed { current: Option<RecordHead> },
    /// The key is absent and the record is older than the shard's purge
    /// floor: its delete was purged here ([`floor`]); nothing changed.
    BelowFloor,
}

impl Applied {
    /// The apply stored a value where no live value was (a create).
    pub fn created_live(&self, record: &Record) -> bool {
        matches!(self, Applied::Stored { previous } if previous.is_none_or(|p| p.tombstone)) && !record.is_tombstone()
    }
}

/// Record counts of one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardCounts {
    /// Keys holding a value.
    pub live: u64,
    /// Records including tombstones.
    pub records: u64,
}

/// A page of a shard's records in key order.
pub type Page = Vec<(Bytes, Record)>;

/// A node's record store: one ordered map per shard, plus a small meta map.
pub trait Storage: Send + Sync + 'static {
    fn shard_count(&self) -> u32;

    fn get(&self, shard: ShardId, key: &[u8]) -> Result<Option<Record>, StorageError>;

    /// Stores `record` if its version is newer than the current one and the
    /// precondition holds, atomically per key: concurrent applies of
    /// different versions of one key end at the highest.
    fn apply(&self, shard: ShardId, key: &[u8], record: &Record, pre: Precondition) -> Result<Applied, StorageError>;

    /// Writes a new version of `key`: `stamp` is called while the engine
    /// holds the key against every other write, and the record it stamps
    /// replaces the current one if `pre` holds.
    ///
    /// Why this needs no read before the write: the node's clock moves past
    /// every version before that version is applied (and persists that), so
    /// a stamp taken while the key is held is newer than anything the key
    /// holds. An engine still checks the record it replaced and puts it back
    /// if that was newer (a clock that broke the rule), reporting `Stale`.
    /// The returned record is what was (or would have been) stored; after
    /// `PreconditionFailed` its version means nothing.
    fn write_fresh(
        &self,
        shard: ShardId,
        key: &[u8],
        value: Option<Bytes>,
        pre: Precondition,
        stamp: StampFn<'_>,
    ) -> Result<(Record, Applied), StorageError>;

    /// Up to `limit` records with keys `> after` that start with `prefix`, in key order.
    fn scan(&self, shard: ShardId, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page, StorageError>;

    fn counts(&self, shard: ShardId) -> ShardCounts;

    /// Makes every apply that returned before this call durable.
    fn flush(&self) -> Result<(), StorageError>;

    /// The shard's Merkle trees, updated by every apply.
    fn trees(&self) -> &crate::merkle::Trees;

    /// Like [`Storage::scan`] over a whole shard, but only keys and heads
    /// (no value copies): what a Merkle leaf listing needs.
    fn scan_heads(&self, shard: ShardId, after: Option<&[u8]>, limit: usize) -> Result<Vec<(Bytes, RecordHead)>, StorageError>;

    /// Calls `visit` with the key and head of every record of a shard, in
    /// key order, a page of [`Storage::scan_heads`] at a time, so memory
    /// stays bounded. `visit` may remove the record it is given.
    fn visit_heads(
        &self,
        shard: ShardId,
        visit: &mut dyn FnMut(Bytes, RecordHead) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut after: Option<Bytes> = None;
        loop {
            let page = self.scan_heads(shard, after.as_deref(), 4096)?;
            let Some((last, _)) = page.last() else { return Ok(()) };
            after = Some(last.clone());
            for (key, head) in page {
                visit(key, head)?;
            }
        }
    }

    /// The (leaf, key, version) of every record in the given leaves of a
    /// shard, in key order. Scans the shard; memory is bounded by the
    /// records of the requested leaves.
    fn leaf_entries(&self, shard: ShardId, leaves: &std::collections::BTreeSet<u32>) -> Result<Vec<(u32, Bytes, Version)>, StorageError> {
        let mut out = Vec::new();
        self.visit_heads(shard, &mut |key, head| {
            let leaf = crate::merkle::leaf_of(&key);
            if leaves.contains(&leaf) {
                out.push((leaf, key, head.version));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Removes the record of `key` if it is exactly `version` (atomically
    /// with every write of the key), updating the Merkle tree and counts.
    /// Whether it removed it.
    fn remove_version(&self, shard: ShardId, key: &[u8], version: Version) -> Result<bool, StorageError>;

    /// The purge floor of every shard ([`floor`]), consulted by every apply.
    fn floors(&self) -> &floor::Floors;

    /// Removes every tombstone of `shard` stamped before `before_hlc`: the
    /// caller has established that no replica can hold anything older of
    /// those keys any more (see `repair::purge`). The shard's purge floor
    /// rises to `before_hlc` first, so nothing older of a purged key can be
    /// stored again. How many it removed.
    fn purge_tombstones(&self, shard: ShardId, before_hlc: u64) -> Result<u64, StorageError> {
        check_shard(shard, self.shard_count())?;
        self.floors().raise(shard, before_hlc, |k, v| self.meta_put(k, v))?;
        let mut purged = 0;
        self.visit_heads(shard, &mut |key, head| {
            if head.tombstone && head.version.hlc < before_hlc {
                purged += u64::from(self.remove_version(shard, &key, head.version)?);
            }
            Ok(())
        })?;
        Ok(purged)
    }

    /// Bytes the engine occupies on disk (0 for memory).
    fn size_on_disk(&self) -> u64;

    /// Why the engine takes no more writes, once a write has failed in a
    /// way it does not recover from (see [`StorageError::Failed`]).
    fn failure(&self) -> Option<String> {
        None
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;

    /// Auxiliary named trees (retry buffers, dirty marks, repair state):
    /// plain ordered byte maps, separate from the shard data.
    fn aux_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    fn aux_remove(&self, tree: &str, key: &[u8]) -> Result<(), StorageError>;
    fn aux_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Up to `limit` entries with keys `> after`, in key order.
    fn aux_scan(&self, tree: &str, after: Option<&[u8]>, limit: usize) -> Result<Vec<AuxEntry>, StorageError>;
    /// Names of the aux trees that start with `prefix` and hold entries.
    fn aux_trees(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// Records found damaged when the store was opened and moved out of
    /// their shards (an engine without a disk never has any).
    fn quarantine(&self) -> Quarantine {
        Quarantine::default()
    }

    /// Up to `limit` quarantined records, in (shard, key) order.
    fn quarantined(&self, _limit: usize) -> Result<Vec<Quarantined>, StorageError> {
        Ok(Vec::new())
    }

    /// Drops from the quarantine every record whose key its shard holds
    /// again (a peer's copy restored it); one still missing stays, and a
    /// peer's copy of it is still taken below a purge floor. Returns how
    /// many were dropped.
    fn release_restored(&self) -> Result<u64, StorageError> {
        Ok(0)
    }
}

/// One record the quarantine holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub shard: u32,
    pub key: Bytes,
    /// Size of the damaged bytes kept.
    pub bytes: usize,
    /// Its shard holds the key again.
    pub restored: bool,
}

/// Records a store set aside at open because their bytes no longer match
/// their value hash or no longer decode. Each lies in the aux tree
/// [`QUARANTINE_TREE`] under `shard (4 bytes BE) ‖ key`, as found, for an
/// operator to inspect; its shard holds no record of the key until a peer's
/// copy arrives by anti-entropy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quarantine {
    /// Records the quarantine holds, per shard (from this and earlier opens).
    pub held: std::collections::BTreeMap<u32, u64>,
    /// Shards that had records moved by this open: they need repair first.
    pub moved_at_open: std::collections::BTreeSet<u32>,
}

impl Quarantine {
    pub fn total(&self) -> u64 {
        self.held.values().sum()
    }
}

/// Aux tree of quarantined records (see [`Quarantine`]).
pub const QUARANTINE_TREE: &str = "quarantine";

/// Makes the version of a fresh write (see [`Storage::write_fresh`]).
pub type StampFn<'a> = &'a dyn Fn() -> Result<Version, StorageError>;

/// A key and value of an aux tree.
pub type AuxEntry = (Vec<u8>, Vec<u8>);

/// Aux tree names are namespaced so they never collide with shard trees.
pub fn aux_tree_name(tree: &str) -> String {
    format!("aux/{tree}")
}

/// Meta key of the HLC high-water mark.
pub const META_HLC_HWM: &str = "hlc_hwm";
/// Meta key of the node name that owns the data dir.
pub const META_NODE_ID: &str = "node_id";
/// Meta key of the shard count.
pub const META_SHARDS: &str = "shards";
/// Meta key that is 1 while a node runs on the store and 0 once it stopped
/// cleanly (see [`mark_running`]).
pub const META_RUNNING: &str = "running";
/// Shards in a new cluster when `--shards` is not given.
pub const DEFAULT_SHARDS: u32 = 64;
/// The most shards a cluster can have (the shard list of a repair run and
/// the Merkle trees in memory grow with it).
pub const MAX_SHARDS: u32 = 65_536;

/// Decides the last-writer-wins outcome of applying `record` over `current`.
/// Shared by every engine so they cannot disagree.
/// `floor` is the shard's purge floor ([`floor`]).
pub fn decide(current: Option<&RecordHead>, record: &Record, pre: Precondition, floor: u64) -> Option<Applied> {
    if !pre.holds(current) {
        return Some(Applied::PreconditionFailed { current: current.copied() });
    }
    match current {
        Some(cur) if cur.version >= record.version => Some(Applied::Stale { current: *cur }),
        None if record.version.hlc < floor => Some(Applied::BelowFloor),
        _ => None,
    }
}

/// The change in counts when `previous` is replaced by `next`.
pub(crate) fn count_delta(previous: Option<&RecordHead>, next: &Record) -> (i64, i64) {
    let was_live = i64::from(previous.is_some_and(|r| !r.tombstone));
    (i64::from(!next.is_tombstone()) - was_live, i64::from(previous.is_none()))
}

/// Checks a shard id against the store's shard count.
pub(crate) fn check_shard(shard: ShardId, shards: u32) -> Result<usize, StorageError> {
    if shard.0 < shards {
        Ok(shard.0 as usize)
    } else {
        Err(StorageError::NoSuchShard { shard: shard.0, shards })
    }
}

/// Persists the HLC high-water mark in the meta map.
pub struct MetaHighWater(pub std::sync::Arc<dyn Storage>);

impl crate::clock::HighWater for MetaHighWater {
    fn load(&self) -> Result<u64, StorageError> {
        match self.0.meta_get(META_HLC_HWM)? {
            None => Ok(0),
            Some(b) => Ok(u64::from_be_bytes(b.as_slice().try_into().map_err(|_| StorageError::Corrupt("hlc high-water mark".into()))?)),
        }
    }
    fn store(&self, hwm: u64) -> Result<(), StorageError> {
        self.0.meta_put(META_HLC_HWM, &hwm.to_be_bytes())?;
        self.0.flush()
    }
}

/// Binds a store to a node: a fresh store takes the node's name, an existing
/// one must already carry it.
pub fn claim_for_node(storage: &dyn Storage, node: &str) -> Result<(), StorageError> {
    match storage.meta_get(META_NODE_ID)? {
        None => storage.meta_put(META_NODE_ID, node.as_bytes()),
        Some(stored) if stored == node.as_bytes() => Ok(()),
        Some(stored) => {
            Err(StorageError::NodeMismatch { stored: String::from_utf8_lossy(&stored).into_owned(), requested: node.to_string() })
        }
    }
}

/// Marks the store as in use by a running node, durably, and says whether
/// the node before stopped without [`mark_stopped`]: it crashed, was
/// killed or lost power, so under `--sync=periodic` writes it had
/// acknowledged in its last moments may be missing here. A store that never
/// held the mark (new, or last run by an older build) counts as clean.
pub fn mark_running(storage: &dyn Storage) -> Result<bool, StorageError> {
    let unclean = storage.meta_get(META_RUNNING)?.is_some_and(|v| v == [1]);
    storage.meta_put(META_RUNNING, &[1])?;
    storage.flush()?;
    Ok(unclean)
}

/// Marks the store as closed cleanly and flushes everything. One flush
/// does: sled recovers a prefix of its log, so a durable mark means
/// everything written before it is durable too.
pub fn mark_stopped(storage: &dyn Storage) -> Result<(), StorageError> {
    storage.meta_put(META_RUNNING, &[0])?;
    storage.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limits in error messages come from the constants that enforce them.
    #[test]
    fn limit_messages_name_the_enforced_ranges() {
        assert_eq!(StorageError::BadShardCount(0).to_string(), "shard count must be 1..=65536, got 0");
        assert_eq!(crate::repair::RepairError::BadInterval(5).to_string(), "interval_secs must be 10..=604800, got 5");
    }

    #[test]
    fn a_start_without_a_clean_stop_before_it_is_told_apart() {
        let storage = mem_engine::MemStorage::new(4);
        assert!(!mark_running(&storage).unwrap(), "a new store was never left running");
        mark_stopped(&storage).unwrap();
        assert!(!mark_running(&storage).unwrap(), "stopped cleanly");
        // No mark_stopped: the node died running.
        assert!(mark_running(&storage).unwrap());
        assert!(mark_running(&storage).unwrap(), "a crash right after a start that found a crash is a crash too");
    }
}
