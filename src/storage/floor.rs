//! Purge floors: per shard, the HLC below which this replica's copy is known
//! complete. A purge of a verified shard (`repair::purge`) raises it to the
//! purge's cutoff: every replica held the same records then, and tombstones
//! below the cutoff are gone. So a record stamped below the floor for a key
//! the shard does not hold can only be a value whose delete was purged, sent
//! by a copy that missed the purge (a node that was not a replica then and is
//! one again, or mail a sender kept past the grace). Storing it would bring
//! the deleted value back; engines refuse it instead ([`super::decide`]).
//!
//! Floors live in the meta map, one key per shard, written before the purge
//! removes anything, and only ever rise.

use super::StorageError;
use crate::types::ShardId;
use std::sync::atomic::{AtomicU64, Ordering};

fn meta_key(shard: u32) -> String {
    format!("purge_floor/{shard:05}")
}

/// The floors of every shard, as loaded at open and raised since.
pub struct Floors(Vec<AtomicU64>);

impl Floors {
    /// Reads each shard's floor through `meta_get` (0 where none was set).
    pub fn load(shards: u32, meta_get: impl Fn(&str) -> Result<Option<Vec<u8>>, StorageError>) -> Result<Floors, StorageError> {
        let floors = (0..shards)
            .map(|s| {
                let floor = match meta_get(&meta_key(s))? {
                    None => 0,
                    Some(raw) => u64::from_be_bytes(
                        raw.as_slice()
                            .try_into()
                            .map_err(|_| StorageError::Corrupt(format!("purge floor of shard {s}: {} bytes", raw.len())))?,
                    ),
                };
                Ok(AtomicU64::new(floor))
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(Floors(floors))
    }

    /// The shard's floor (0 for a shard id out of range: nothing is refused).
    pub fn get(&self, shard: ShardId) -> u64 {
        self.0.get(shard.0 as usize).map_or(0, |f| f.load(Ordering::Acquire))
    }

    /// Raises the shard's floor to `hlc` if that is higher, persisting it with
    /// `meta_put` before any apply can see it.
    pub fn raise(&self, shard: ShardId, hlc: u64, meta_put: impl Fn(&str, &[u8]) -> Result<(), StorageError>) -> Result<(), StorageError> {
        let Some(floor) = self.0.get(shard.0 as usize) else { return Ok(()) };
        if hlc <= floor.load(Ordering::Acquire) {
            return Ok(());
        }
        meta_put(&meta_key(shard.0), &hlc.to_be_bytes())?;
        floor.fetch_max(hlc, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[test]
    fn floors_only_rise_and_survive_a_reload() {
        let meta: Mutex<HashMap<String, Vec<u8>>> = Mutex::default();
        let get = |k: &str| Ok(meta.lock().unwrap().get(k).cloned());
        let put = |k: &str, v: &[u8]| {
            meta.lock().unwrap().insert(k.to_string(), v.to_vec());
            Ok(())
        };
        let floors = Floors::load(4, get).unwrap();
        assert_eq!(floors.get(ShardId(2)), 0);
        floors.raise(ShardId(2), 500, put).unwrap();
        floors.raise(ShardId(2), 300, put).unwrap();
        assert_eq!(floors.get(ShardId(2)), 500, "a lower floor does not replace a higher one");
        floors.raise(ShardId(9), 700, put).unwrap();
        assert_eq!(floors.get(ShardId(9)), 0, "a shard out of range has no floor");
        let reloaded = Floors::load(4, get).unwrap();
        assert_eq!((reloaded.get(ShardId(2)), reloaded.get(ShardId(1))), (500, 0));
        assert_eq!(meta.lock().unwrap().get("purge_floor/00002").unwrap(), &500u64.to_be_bytes());
        meta.lock().unwrap().insert("purge_floor/00001".into(), vec![1, 2, 3]);
        assert!(matches!(Floors::load(4, get), Err(StorageError::Corrupt(_))), "a damaged floor is an error, not a zero");
    }
}
