//! Model-based property test: both storage engines against a `BTreeMap` model
//! under random apply / get / scan / restart sequences, and the HLC across a
//! real reopen of a sled data dir.

use bytes::Bytes;
use hearsay::clock::{Hlc, ManualClock};
use hearsay::storage::mem_engine::MemStorage;
use hearsay::storage::sled_engine::{SledOptions, SledStorage};
use hearsay::storage::{Applied, MetaHighWater, Precondition, ShardCounts, Storage};
use hearsay::types::{shard_of, Record, ShardId, Version};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

const SHARDS: u32 = 4;

/// The sled settings every test here opens a data dir with.
fn sled_opts(path: std::path::PathBuf) -> SledOptions {
    SledOptions { path, shards: Some(SHARDS), cache_bytes: 8 << 20 }
}

/// A fresh sled store in `dir` and a memory store: the engines a property must hold on.
fn both_engines(dir: &tempfile::TempDir) -> Vec<Arc<dyn Storage>> {
    let sled = SledStorage::open(&sled_opts(dir.path().join("db"))).unwrap();
    vec![Arc::new(sled), Arc::new(MemStorage::new(SHARDS))]
}
const KEYS: &[&[u8]] = &[b"a", b"ab", b"abc", b"b", b"b/1", b"b/2", b"ba", &[0xff], &[0xff, 0x00], b"c"];

#[derive(Debug, Clone)]
enum Op {
    Apply {
        key: usize,
        hlc: u64,
        node: u64,
        value: Option<Vec<u8>>,
        pre: u8,
    },
    /// A coordinator's write: the engine stamps it while holding the key.
    /// `broken_clock` stamps below the current versions, which a correct
    /// clock never does; the engine must then keep the newer record.
    WriteFresh {
        key: usize,
        value: Option<Vec<u8>>,
        pre: u8,
        broken_clock: bool,
        hlc: u64,
    },
    Get {
        key: usize,
    },
    Scan {
        shard: u32,
        prefix: usize,
        after: Option<usize>,
        limit: usize,
    },
    /// Tombstones of `shard` stamped before `before` are purged, and the
    /// shard's purge floor rises to `before`.
    Purge {
        shard: u32,
        before: u64,
    },
    /// The key's record is removed if it is the version named: its current
    /// one (`current`) or one it does not hold.
    RemoveVersion {
        key: usize,
        current: bool,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS.len(), 0..12u64, 0..3u64, proptest::option::weighted(0.75, proptest::collection::vec(any::<u8>(), 0..20)), 0..6u8)
            .prop_map(|(key, hlc, node, value, pre)| Op::Apply { key, hlc, node, value, pre }),
        4 => (0..KEYS.len(), proptest::option::weighted(0.75, proptest::collection::vec(any::<u8>(), 0..20)), 0..6u8, proptest::bool::weighted(0.2), 0..12u64)
            .prop_map(|(key, value, pre, broken_clock, hlc)| Op::WriteFresh { key, value, pre, broken_clock, hlc }),
        3 => (0..KEYS.len()).prop_map(|key| Op::Get { key }),
        2 => (0..SHARDS, 0..4usize, proptest::option::of(0..KEYS.len()), 1..5usize)
            .prop_map(|(shard, prefix, after, limit)| Op::Scan { shard, prefix, after, limit }),
        1 => (0..SHARDS, 0..120u64).prop_map(|(shard, before)| Op::Purge { shard, before }),
        1 => (0..KEYS.len(), proptest::bool::ANY).prop_map(|(key, current)| Op::RemoveVersion { key, current }),
        1 => Just(Op::Restart),
    ]
}

/// The model: what last-writer-wins means, written as plainly as possible,
/// and each shard's purge floor.
#[derive(Default)]
struct Model(BTreeMap<(u32, Vec<u8>), Record>, BTreeMap<u32, u64>);

impl Model {
    /// A record a peer sent: refused for an absent key below the shard's floor.
    fn apply_peer(&mut self, key: &[u8], rec: &Record, pre: Precondition) -> Applied {
        let shard = shard_of(key, SHARDS).0;
        let floor = self.1.get(&shard).copied().unwrap_or(0);
        match self.apply(key, rec, pre) {
            Applied::Stored { previous: None } if rec.version.hlc < floor => {
                self.0.remove(&(shard, key.to_vec()));
                Applied::BelowFloor
            }
            outcome => outcome,
        }
    }

    fn apply(&mut self, key: &[u8], rec: &Record, pre: Precondition) -> Applied {
        let k = (shard_of(key, SHARDS).0, key.to_vec());
        let current = self.0.get(&k).map(Record::head);
        let live = current.as_ref().filter(|r| !r.tombstone);
        let holds = match pre {
            Precondition::None => true,
            Precondition::Exists => live.is_some(),
            Precondition::VersionIs(v) => live.is_some_and(|r| r.version == v),
            Precondition::Absent => live.is_none(),
        };
        if !holds {
            return Applied::PreconditionFailed { current };
        }
        if let Some(cur) = current.filter(|c| c.version >= rec.version) {
            return Applied::Stale { current: cur };
        }
        self.0.insert(k, rec.clone());
        Applied::Stored { previous: current }
    }

    fn scan(&self, shard: u32, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Vec<(Bytes, Record)> {
        self.0
            .iter()
            .filter(|((s, k), _)| *s == shard && k.starts_with(prefix) && after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|((_, k), r)| (Bytes::from(k.clone()), r.clone()))
            .collect()
    }

    /// The Merkle root a shard must have, rebuilt from scratch.
    fn root(&self, shard: u32) -> hearsay::merkle::Digest {
        let mut tree = hearsay::merkle::ShardTree::default();
        for ((s, k), r) in &self.0 {
            if *s == shard {
                let d = hearsay::merkle::record_digest(k, r.version, r.value.as_deref());
                tree.update(hearsay::merkle::leaf_of(k), None, &d);
            }
        }
        tree.root()
    }

    fn counts(&self, shard: u32) -> ShardCounts {
        let recs: Vec<_> = self.0.iter().filter(|((s, _), _)| *s == shard).collect();
        ShardCounts { records: recs.len() as u64, live: recs.iter().filter(|(_, r)| r.value.is_some()).count() as u64 }
    }
}

fn precondition(code: u8, model: &Model, key: &[u8]) -> Precondition {
    match code {
        0 => Precondition::Exists,
        // Use the key's real current version half the time so matches happen.
        1 => match model.0.get(&(shard_of(key, SHARDS).0, key.to_vec())) {
            Some(r) => Precondition::VersionIs(r.version),
            None => Precondition::VersionIs(Version { hlc: 1, node: 1 }),
        },
        2 => Precondition::VersionIs(Version { hlc: 3, node: 1 }),
        3 => Precondition::Absent,
        _ => Precondition::None,
    }
}

fn check<S: Storage>(ops: &[Op], mut open: impl FnMut(Option<S>) -> S) -> Result<(), TestCaseError> {
    let mut store = open(None);
    let mut model = Model::default();
    // A clock above every version `Op::Apply` makes, moving on with each stamp.
    let mut clock = 100u64;
    for op in ops {
        match op {
            Op::Apply { key, hlc, node, value, pre } => {
                let key = KEYS[*key];
                let rec = Record { version: Version { hlc: *hlc, node: *node }, value: value.clone().map(Bytes::from) };
                let pre = precondition(*pre, &model, key);
                let expected = model.apply_peer(key, &rec, pre);
                let got = store.apply(shard_of(key, SHARDS), key, &rec, pre).unwrap();
                prop_assert_eq!(got, expected, "apply {:?} {:?}", key, rec);
            }
            Op::WriteFresh { key, value, pre, broken_clock, hlc } => {
                let key = KEYS[*key];
                let pre = precondition(*pre, &model, key);
                clock += 1;
                let version = Version { hlc: if *broken_clock { *hlc } else { clock }, node: 7 };
                let stamp = || Ok(version);
                let (rec, got) = store.write_fresh(shard_of(key, SHARDS), key, value.clone().map(Bytes::from), pre, &stamp).unwrap();
                let expected = model.apply(key, &Record { version, value: value.clone().map(Bytes::from) }, pre);
                prop_assert_eq!(&got, &expected, "write_fresh {:?} at {:?}", key, version);
                if !matches!(got, Applied::PreconditionFailed { .. }) {
                    prop_assert_eq!(rec.version, version);
                }
            }
            Op::Get { key } => {
                let key = KEYS[*key];
                let expected = model.0.get(&(shard_of(key, SHARDS).0, key.to_vec())).cloned();
                prop_assert_eq!(store.get(shard_of(key, SHARDS), key).unwrap(), expected);
            }
            Op::Scan { shard, prefix, after, limit } => {
                let prefix: &[u8] = [&b""[..], b"a", b"b", &[0xff]][*prefix];
                let after = after.map(|a| KEYS[a]);
                let got = store.scan(ShardId(*shard), prefix, after, *limit).unwrap();
                prop_assert_eq!(got, model.scan(*shard, prefix, after, *limit));
            }
            Op::Purge { shard, before } => {
                let doomed: Vec<_> = model
                    .0
                    .iter()
                    .filter(|((s, _), r)| s == shard && r.is_tombstone() && r.version.hlc < *before)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &doomed {
                    model.0.remove(k);
                }
                let floor = model.1.entry(*shard).or_default();
                *floor = (*floor).max(*before);
                prop_assert_eq!(store.purge_tombstones(ShardId(*shard), *before).unwrap(), doomed.len() as u64, "purge of shard {}", shard);
                prop_assert_eq!(store.floors().get(ShardId(*shard)), *floor);
            }
            Op::RemoveVersion { key, current } => {
                let key = KEYS[*key];
                let k = (shard_of(key, SHARDS).0, key.to_vec());
                let version = match model.0.get(&k) {
                    Some(r) if *current => r.version,
                    _ => Version { hlc: 999, node: 9 },
                };
                let expected = model.0.get(&k).is_some_and(|r| r.version == version);
                if expected {
                    model.0.remove(&k);
                }
                prop_assert_eq!(store.remove_version(ShardId(k.0), key, version).unwrap(), expected, "remove {:?} at {:?}", key, version);
            }
            Op::Restart => store = open(Some(store)),
        }
        for s in 0..SHARDS {
            prop_assert_eq!(store.counts(ShardId(s)), model.counts(s), "counts of shard {}", s);
            prop_assert_eq!(store.trees().shard(s).root(), model.root(s), "merkle root of shard {}", s);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_engine_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        check::<MemStorage>(&ops, |prev| match prev {
            Some(s) => s.reopen(),
            None => MemStorage::new(SHARDS),
        })?;
    }

    #[test]
    fn sled_engine_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = sled_opts(dir.path().join("db"));
        check::<SledStorage>(&ops, |prev| {
            // Drop (close) the old handle before reopening the same dir.
            drop(prev);
            SledStorage::open(&opts).unwrap()
        })?;
    }
}

#[test]
fn a_data_dir_in_use_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = sled_opts(dir.path().join("db"));
    let _held = SledStorage::open(&opts).unwrap();
    let err = SledStorage::open(&opts).err().expect("a second open of a held dir must fail");
    assert!(err.to_string().contains("in use by another process"), "{err}");
}

/// Coordinator writes (stamped by a shared clock while the engine holds the
/// key) racing peer applies (whose versions the clock observes first, as
/// `KvService` does): the key ends at the newest version either side made.
#[test]
fn fresh_writes_racing_applies_end_at_the_newest_version() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let engines = both_engines(&dir);
    for store in engines {
        let shard = shard_of(b"hot", SHARDS);
        let clock = Arc::new(AtomicU64::new(0));
        let newest = Arc::new(std::sync::Mutex::new(Version::default()));
        let threads: Vec<_> = (0..6u64)
            .map(|t| {
                let (store, clock, newest) = (store.clone(), clock.clone(), newest.clone());
                std::thread::spawn(move || {
                    for i in 0..400u64 {
                        let version = if t % 2 == 0 {
                            let stamp = || Ok(Version { hlc: clock.fetch_add(1, Ordering::SeqCst) + 1, node: t });
                            let (rec, _) = store
                                .write_fresh(shard, b"hot", Some(Bytes::from(format!("{t}-{i}"))), Precondition::None, &stamp)
                                .unwrap();
                            rec.version
                        } else {
                            // A peer's version from a clock somewhat ahead or behind ours.
                            let version = Version { hlc: clock.load(Ordering::SeqCst) + (i * 31 % 7), node: t };
                            clock.fetch_max(version.hlc, Ordering::SeqCst);
                            store
                                .apply(shard, b"hot", &Record { version, value: Some(Bytes::from(format!("{t}-{i}"))) }, Precondition::None)
                                .unwrap();
                            version
                        };
                        let mut n = newest.lock().unwrap();
                        *n = (*n).max(version);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let newest = *newest.lock().unwrap();
        assert_eq!(store.get(shard, b"hot").unwrap().unwrap().version, newest);
        assert_eq!(store.counts(shard), ShardCounts { live: 1, records: 1 });
    }
}

#[test]
fn concurrent_applies_of_one_key_end_at_the_max_version() {
    let dir = tempfile::tempdir().unwrap();
    let engines = both_engines(&dir);
    for store in engines {
        let shard = shard_of(b"hot", SHARDS);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..500u64 {
                        let version = Version { hlc: (i * 7919 + t * 104_729) % 4000, node: t };
                        let rec = Record { version, value: Some(Bytes::from(format!("{t}-{i}"))) };
                        store.apply(shard, b"hot", &rec, Precondition::None).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let max =
            (0..8u64).flat_map(|t| (0..500u64).map(move |i| Version { hlc: (i * 7919 + t * 104_729) % 4000, node: t })).max().unwrap();
        assert_eq!(store.get(shard, b"hot").unwrap().unwrap().version, max);
        assert_eq!(store.counts(shard), ShardCounts { live: 1, records: 1 });
        // The tree agrees with the data after racing writers of one leaf.
        let rec = store.get(shard, b"hot").unwrap().unwrap();
        let mut expect = hearsay::merkle::ShardTree::default();
        expect.update(hearsay::merkle::leaf_of(b"hot"), None, &hearsay::merkle::record_digest(b"hot", rec.version, rec.value.as_deref()));
        assert_eq!(store.trees().shard(shard.0).root(), expect.root());
    }
}

#[test]
fn hlc_stays_ahead_across_a_real_reopen_even_when_the_clock_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = sled_opts(dir.path().join("db"));
    let clock = ManualClock::new(1_700_000_000_000);
    let issued = {
        let store: Arc<dyn Storage> = Arc::new(SledStorage::open(&opts).unwrap());
        let hlc = Hlc::open(clock.clone(), Arc::new(MetaHighWater(store))).unwrap();
        (0..10_000).map(|_| hlc.now().unwrap()).max().unwrap()
    };
    clock.set(1_600_000_000_000);
    let store: Arc<dyn Storage> = Arc::new(SledStorage::open(&opts).unwrap());
    let hlc = Hlc::open(clock, Arc::new(MetaHighWater(store))).unwrap();
    assert!(hlc.now().unwrap() > issued);
}

/// A data dir from before record format 2 (dir format v1, records without a
/// value hash): it opens, reads, and its Merkle roots match the records; a
/// write of a key stores it in format 2.
#[test]
fn a_format_1_data_dir_opens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let version = Version { hlc: 5 << 16, node: 9 };
    let key = b"old-key";
    let shard = shard_of(key, SHARDS);
    {
        let db = sled::Config::new().path(&path).open().unwrap();
        let meta = db.open_tree(migrations::META_TREE).unwrap();
        meta.insert(migrations::FORMAT_VERSION_KEY, &1u32.to_be_bytes()).unwrap();
        meta.insert(hearsay::storage::META_SHARDS, &SHARDS.to_be_bytes()).unwrap();
        let format_1 = [&[1u8][..], &version.hlc.to_be_bytes(), &version.node.to_be_bytes(), &[1], b"old value"].concat();
        db.open_tree(format!("shard/{:05}", shard.0)).unwrap().insert(key, format_1).unwrap();
        db.flush().unwrap();
    }
    let opts = sled_opts(path.clone());
    let store = SledStorage::open(&opts).unwrap();
    let rec = store.get(shard, key).unwrap().unwrap();
    assert_eq!(rec, Record { version, value: Some(Bytes::from_static(b"old value")) });
    let mut expect = hearsay::merkle::ShardTree::default();
    expect.update(hearsay::merkle::leaf_of(key), None, &hearsay::merkle::record_digest(key, version, Some(b"old value")));
    assert_eq!(store.trees().shard(shard.0).root(), expect.root());
    // Overwritten: the tree moves by exactly old -> new, the record is format 2.
    let newer = Record { version: Version { hlc: 6 << 16, node: 9 }, value: Some(Bytes::from_static(b"new")) };
    store.apply(shard, key, &newer, Precondition::None).unwrap();
    let mut expect = hearsay::merkle::ShardTree::default();
    expect.update(hearsay::merkle::leaf_of(key), None, &hearsay::merkle::record_digest(key, newer.version, Some(b"new")));
    assert_eq!(store.trees().shard(shard.0).root(), expect.root());
    drop(store);
    let db = hearsay::storage::sled_engine::open_db(&opts).unwrap();
    let raw = db.open_tree(format!("shard/{:05}", shard.0)).unwrap().get(key).unwrap().unwrap();
    assert_eq!(raw[0], 2, "rewritten in record format 2");
    let conf = String::from_utf8_lossy(&std::fs::read(path.join("conf")).unwrap()).into_owned();
    assert!(conf.contains("segment_size: 524288"), "an existing dir keeps its segment size: {conf:?}");
    assert_eq!(
        u32::from_be_bytes(
            db.open_tree(migrations::META_TREE).unwrap().get(migrations::FORMAT_VERSION_KEY).unwrap().unwrap().as_ref().try_into().unwrap()
        ),
        2
    );
}

/// Records damaged on disk (a value that no longer matches its stored hash,
/// a header that no longer decodes) are moved to the quarantine at open:
/// the node starts, serves no damaged bytes, its tree holds only sound
/// records (so anti-entropy sees the keys missing and brings them back), and
/// the raw bytes stay for inspection. Later writes of those keys are exact.
#[test]
fn damaged_records_are_quarantined_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let opts = sled_opts(path.clone());
    let version = Version { hlc: 7 << 16, node: 1 };
    let value = |v: &'static [u8]| Record { version, value: Some(Bytes::from_static(v)) };
    let store = SledStorage::open(&opts).unwrap();
    for key in [&b"rot"[..], b"bad", b"good"] {
        store.apply(shard_of(key, SHARDS), key, &value(b"good"), Precondition::None).unwrap();
    }
    drop(store);
    let conf = String::from_utf8_lossy(&std::fs::read(path.join("conf")).unwrap()).into_owned();
    assert!(conf.contains(&format!("segment_size: {}", hearsay::storage::sled_engine::NEW_SEGMENT_BYTES)), "a new dir: {conf:?}");
    let mut damaged = Vec::new();
    {
        let db = hearsay::storage::sled_engine::open_db(&opts).unwrap();
        for (key, damage) in [(&b"rot"[..], 0usize), (b"bad", 1)] {
            let shard = shard_of(key, SHARDS);
            let tree = db.open_tree(hearsay::storage::sled_engine::shard_tree_name(shard.0)).unwrap();
            let mut raw = tree.get(key).unwrap().unwrap().to_vec();
            if damage == 0 {
                *raw.last_mut().unwrap() = b'x';
            } else {
                raw[0] = 0xEE;
            }
            tree.insert(key, raw.clone()).unwrap();
            damaged.push((key, shard, raw));
        }
        db.flush().unwrap();
    }
    let store = SledStorage::open(&opts).expect("damaged records do not stop the store from opening");
    let good = shard_of(b"good", SHARDS);
    assert_eq!(store.get(good, b"good").unwrap(), Some(value(b"good")));
    let root_with = |keys: &[&[u8]]| {
        let mut t = hearsay::merkle::ShardTree::default();
        for k in keys {
            t.update(hearsay::merkle::leaf_of(k), None, &hearsay::merkle::record_digest(k, version, Some(b"good")));
        }
        t.root()
    };
    let moved: std::collections::BTreeSet<u32> = damaged.iter().map(|(_, s, _)| s.0).collect();
    assert_eq!(store.quarantine().moved_at_open, moved);
    assert_eq!(store.quarantine().total(), 2);
    for (key, shard, raw) in &damaged {
        assert_eq!(store.get(*shard, key).unwrap(), None, "no damaged bytes are served");
        let held = store.aux_get(hearsay::storage::QUARANTINE_TREE, &[&shard.0.to_be_bytes()[..], key].concat()).unwrap();
        assert_eq!(held.as_deref(), Some(&raw[..]), "the raw bytes are kept as found");
        let expected: Vec<&[u8]> = if *shard == good { vec![b"good"] } else { vec![] };
        assert_eq!(store.trees().shard(shard.0).root(), root_with(&expected), "the tree holds only sound records");
        assert_eq!(store.counts(*shard).records, expected.len() as u64);
    }
    // A peer's copy arrives (as anti-entropy would bring it) and is stored,
    // even below a purge floor: the key is missing only because it was damaged.
    let (rot_key, rot_shard, _) = &damaged[0];
    store.purge_tombstones(*rot_shard, 100 << 16).unwrap();
    let other = Record { version, value: Some(Bytes::from_static(b"other")) };
    assert_eq!(store.apply(*rot_shard, b"never-held", &other, Precondition::None).unwrap(), Applied::BelowFloor, "the floor holds");
    assert_eq!(store.apply(*rot_shard, rot_key, &value(b"good"), Precondition::None).unwrap(), Applied::Stored { previous: None });
    drop(store);
    let store = SledStorage::open(&opts).unwrap();
    assert!(store.quarantine().moved_at_open.is_empty(), "nothing new to move on the next open");
    assert_eq!(store.quarantine().total(), 2, "the quarantine keeps what it holds");
    assert_eq!(store.get(*rot_shard, rot_key).unwrap(), Some(value(b"good")));
    // Releasing drops what was restored and keeps what is still missing.
    let restored = |store: &SledStorage| -> Vec<(Vec<u8>, bool)> {
        store.quarantined(10).unwrap().into_iter().map(|q| (q.key.to_vec(), q.restored)).collect()
    };
    let mut listed = restored(&store);
    listed.sort();
    assert_eq!(listed, [(b"bad".to_vec(), false), (b"rot".to_vec(), true)]);
    assert_eq!(store.release_restored().unwrap(), 1);
    assert_eq!(restored(&store), [(b"bad".to_vec(), false)]);
    assert_eq!(store.quarantine().total(), 1);
    assert_eq!(store.release_restored().unwrap(), 0, "bad is still missing");
    drop(store);
    let store = SledStorage::open(&opts).unwrap();
    assert_eq!(store.quarantine().total(), 1, "released for good");
}

/// `hearsay migrate` opens a data dir the way a node does (same sled
/// settings), so it works on a dir a node created.
#[test]
fn hearsay_migrate_opens_a_dir_a_node_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(SledStorage::open(&sled_opts(path.clone())).unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearsay")).arg("migrate").arg("--data-dir").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("format v2"), "{stdout}");
}
