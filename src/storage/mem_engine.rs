//! The in-memory engine for tests: a `BTreeMap` per shard behind a lock.
//! [`MemStorage::reopen`] hands out a new handle over the same maps, which is
//! what a restart looks like to an engine that keeps everything it was given.

use super::{check_shard, count_delta, decide, Applied, AuxEntry, Page, Precondition, ShardCounts, StampFn, Storage, StorageError};
use crate::types::{Record, ShardId};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock};

type ShardData = (BTreeMap<Bytes, Record>, ShardCounts);
type Shard = RwLock<ShardData>;
type AuxTree = BTreeMap<Vec<u8>, Vec<u8>>;

struct Inner {
    shards: Vec<Shard>,
    trees: crate::merkle::Trees,
    meta: Mutex<HashMap<String, Vec<u8>>>,
    aux: Mutex<HashMap<String, AuxTree>>,
    floors: super::floor::Floors,
}

#[derive(Clone)]
pub struct MemStorage(Arc<Inner>);

impl MemStorage {
    pub fn new(shards: u32) -> MemStorage {
        let shards_count = shards;
        let shards: Vec<Shard> = (0..shards).map(|_| RwLock::new((BTreeMap::new(), ShardCounts::default()))).collect();
        MemStorage(Arc::new(Inner {
            trees: crate::merkle::Trees::new(shards.len() as u32),
            shards,
            meta: Mutex::new(HashMap::new()),
            aux: Mutex::new(HashMap::new()),
            floors: super::floor::Floors::load(shards_count, |_| Ok(None)).expect("no floors to read"),
        }))
    }

    /// A fresh handle over the same data, as after a clean restart.
    pub fn reopen(&self) -> MemStorage {
        MemStorage(self.0.clone())
    }

    fn shard(&self, shard: ShardId) -> Result<&Shard, StorageError> {
        Ok(&self.0.shards[check_shard(shard, self.shard_count())?])
    }

    /// Last-writer-wins apply with the shard's write lock held, refusing
    /// records below `floor` for absent keys.
    fn apply_locked(&self, shard: ShardId, guard: &mut ShardData, key: &[u8], record: &Record, pre: Precondition, floor: u64) -> Applied {
        let (map, counts) = guard;
        let current = map.get(key).map(Record::head);
        if let Some(outcome) = decide(current.as_ref(), record, pre, floor) {
            return outcome;
        }
        let (live, records) = count_delta(current.as_ref(), record);
        counts.live = counts.live.saturating_add_signed(live);
        counts.records = counts.records.saturating_add_signed(records);
        let old = map.get(key).map(|r| crate::merkle::record_digest(key, r.version, r.value.as_deref()));
        let new = crate::merkle::record_digest(key, record.version, record.value.as_deref());
        self.0.trees.record(shard.0, key, old.as_ref(), &new);
        map.insert(Bytes::copy_from_slice(key), record.clone());
        Applied::Stored { previous: current }
    }
}

impl Storage for MemStorage {
    fn shard_count(&self) -> u32 {
        self.0.shards.len() as u32
    }

    fn get(&self, shard: ShardId, key: &[u8]) -> Result<Option<Record>, StorageError> {
        Ok(self.shard(shard)?.read().expect("shard lock").0.get(key).cloned())
    }

    fn apply(&self, shard: ShardId, key: &[u8], record: &Record, pre: Precondition) -> Result<Applied, StorageError> {
        let mut guard = self.shard(shard)?.write().expect("shard lock");
        Ok(self.apply_locked(shard, &mut guard, key, record, pre, self.0.floors.get(shard)))
    }

    fn write_fresh(
        &self,
        shard: ShardId,
        key: &[u8],
        value: Option<Bytes>,
        pre: Precondition,
        stamp: StampFn<'_>,
    ) -> Result<(Record, Applied), StorageError> {
        let mut guard = self.shard(shard)?.write().expect("shard lock");
        let record = Record { version: stamp()?, value };
        // A fresh stamp is a new write, never a purged delete's value: no floor.
        let outcome = self.apply_locked(shard, &mut guard, key, &record, pre, 0);
        Ok((record, outcome))
    }

    fn scan(&self, shard: ShardId, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Page, StorageError> {
        let guard = self.shard(shard)?.read().expect("shard lock");
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        Ok(guard
            .0
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn trees(&self) -> &crate::merkle::Trees {
        &self.0.trees
    }

    fn scan_heads(
        &self,
        shard: ShardId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, crate::types::RecordHead)>, StorageError> {
        let guard = self.shard(shard)?.read().expect("shard lock");
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(guard.0.range::<[u8], _>((start, Bound::Unbounded)).take(limit).map(|(k, r)| (k.clone(), r.head())).collect())
    }

    fn remove_version(&self, shard: ShardId, key: &[u8], version: crate::types::Version) -> Result<bool, StorageError> {
        let mut guard = self.shard(shard)?.write().expect("shard lock");
        let (map, counts) = &mut *guard;
        let Some(record) = map.get(key).filter(|r| r.version == version) else { return Ok(false) };
        let digest = crate::merkle::record_digest(key, version, record.value.as_deref());
        counts.live = counts.live.saturating_sub(u64::from(!record.is_tombstone()));
        counts.records = counts.records.saturating_sub(1);
        map.remove(key);
        self.0.trees.forget(shard.0, key, &digest);
        Ok(true)
    }

    fn floors(&self) -> &super::floor::Floors {
        &self.0.floors
    }

    fn counts(&self, shard: ShardId) -> ShardCounts {
        self.0.shards.get(shard.0 as usize).map_or_else(ShardCounts::default, |s| s.read().expect("shard lock").1)
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.meta.lock().expect("meta lock").get(key).cloned())
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.0.meta.lock().expect("meta lock").insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn aux_put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.0.aux.lock().expect("aux lock").entry(tree.to_string()).or_default().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn aux_remove(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        if let Some(t) = self.0.aux.lock().expect("aux lock").get_mut(tree) {
            t.remove(key);
        }
        Ok(())
    }

    fn aux_get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.0.aux.lock().expect("aux lock").get(tree).and_then(|t| t.get(key).cloned()))
    }

    fn aux_scan(&self, tree: &str, after: Option<&[u8]>, limit: usize) -> Result<Vec<AuxEntry>, StorageError> {
        let aux = self.0.aux.lock().expect("aux lock");
        let Some(t) = aux.get(tree) else { return Ok(Vec::new()) };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(t.range::<[u8], _>((start, Bound::Unbounded)).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn aux_trees(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let aux = self.0.aux.lock().expect("aux lock");
        Ok(aux.iter().filter(|(n, t)| n.starts_with(prefix) && !t.is_empty()).map(|(n, _)| n.clone()).collect())
    }
}
