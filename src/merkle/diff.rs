//! The pure comparison of two replicas' trees and leaf contents: no I/O.
//! The exchange driver feeds it the answers it gets from the peer.

use crate::types::Version;

/// Indices whose digests differ (all of them if the lengths differ).
pub fn differing<T: PartialEq>(mine: &[T], theirs: &[T]) -> Vec<usize> {
    if mine.len() != theirs.len() {
        return (0..mine.len().max(theirs.len())).collect();
    }
    mine.iter().zip(theirs).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect()
}

/// A record's identity in a leaf listing: 4 bytes of a keyed hash of
/// (key, version), keyed by a nonce fresh for each exchange. Short, because
/// listings dominate repair traffic when many leaves differ; safe, because a
/// collision can hide a record from one exchange only: roots then still
/// differ, the run goes on, and the next exchange draws another nonce.
pub fn fingerprint(nonce: u64, key: &[u8], version: Version) -> u32 {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&nonce.to_le_bytes());
    let mut h = blake3::Hasher::new_keyed(&k);
    h.update(&version.hlc.to_be_bytes());
    h.update(&version.node.to_be_bytes());
    h.update(key);
    u32::from_le_bytes(h.finalize().as_bytes()[..4].try_into().expect("4 bytes"))
}

/// What each side must send: indices into its own listing of records the
/// other side does not hold (the receiver keeps the newer by last-writer-wins).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Indices into `mine` of records they lack: I send them.
    pub send: Vec<usize>,
    /// Indices into `theirs` of records I lack: they send them.
    pub request: Vec<usize>,
}

/// Compares two fingerprint listings of the same leaves.
pub fn plan(mine: &[u32], theirs: &[u32]) -> Plan {
    let mine_set: std::collections::HashSet<u32> = mine.iter().copied().collect();
    let theirs_set: std::collections::HashSet<u32> = theirs.iter().copied().collect();
    Plan {
        send: mine.iter().enumerate().filter(|(_, f)| !theirs_set.contains(f)).map(|(i, _)| i).collect(),
        request: theirs.iter().enumerate().filter(|(_, f)| !mine_set.contains(f)).map(|(i, _)| i).collect(),
    }
}

/// Packs a set of indices `< len` as a bitmap (bit i of byte i/8).
pub fn to_bitmap(indices: &[usize], len: usize) -> Vec<u8> {
    let mut bits = vec![0u8; len.div_ceil(8)];
    for &i in indices.iter().filter(|&&i| i < len) {
        bits[i / 8] |= 1 << (i % 8);
    }
    bits
}

/// The indices set in a bitmap, below `len`.
pub fn from_bitmap(bits: &[u8], len: usize) -> Vec<usize> {
    (0..len.min(bits.len() * 8)).filter(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_of, record_digest, ShardTree};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Store = BTreeMap<Vec<u8>, (Version, Option<Vec<u8>>)>;

    fn tree(store: &Store) -> ShardTree {
        let mut t = ShardTree::default();
        for (k, (v, val)) in store {
            t.update(leaf_of(k), None, &record_digest(k, *v, val.as_deref()));
        }
        t
    }

    fn listing(store: &Store, leaves: &[usize], nonce: u64) -> Vec<(Vec<u8>, u32)> {
        store
            .iter()
            .filter(|(k, _)| leaves.contains(&(leaf_of(k) as usize)))
            .map(|(k, (v, _))| (k.clone(), fingerprint(nonce, k, *v)))
            .collect()
    }

    /// Syncs two stores the way the exchange does, counting records moved.
    fn sync(a: &mut Store, b: &mut Store) -> usize {
        let (mut ta, mut tb) = (tree(a), tree(b));
        if ta.root() == tb.root() {
            return 0;
        }
        let all: Vec<u32> = (0..crate::merkle::INNER as u32).collect();
        let inner = differing(&ta.level(1, &all).unwrap(), &tb.level(1, &all).unwrap());
        let leaves: Vec<u32> = inner.iter().flat_map(|i| (*i * 32..*i * 32 + 32).map(|l| l as u32)).collect();
        let dl = differing(&ta.level(2, &leaves).unwrap(), &tb.level(2, &leaves).unwrap());
        let leaves: Vec<usize> = dl.iter().map(|&i| leaves[i] as usize).collect();
        let (la, lb) = (listing(a, &leaves, 99), listing(b, &leaves, 99));
        let fa: Vec<u32> = la.iter().map(|(_, f)| *f).collect();
        let fb: Vec<u32> = lb.iter().map(|(_, f)| *f).collect();
        let p = plan(&fa, &fb);
        // The want list travels as a bitmap.
        let send = from_bitmap(&to_bitmap(&p.send, fa.len()), fa.len());
        let sends: Vec<_> = send.iter().map(|&i| (la[i].0.clone(), a[&la[i].0].clone())).collect();
        let reqs: Vec<_> = p.request.iter().map(|&i| (lb[i].0.clone(), b[&lb[i].0].clone())).collect();
        // Receivers keep the newer version (last writer wins).
        for (k, r) in &sends {
            if b.get(k).is_none_or(|cur| cur.0 < r.0) {
                b.insert(k.clone(), r.clone());
            }
        }
        for (k, r) in &reqs {
            if a.get(k).is_none_or(|cur| cur.0 < r.0) {
                a.insert(k.clone(), r.clone());
            }
        }
        sends.len() + reqs.len()
    }

    #[derive(Debug, Clone)]
    enum Perturb {
        Missing(usize),
        Older(usize),
        Tombstone(usize),
        Extra(u16),
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn sync_equalizes_and_moves_exactly_the_differences(
            n in 0usize..300,
            perturbs in proptest::collection::vec(prop_oneof![
                (0usize..300).prop_map(Perturb::Missing),
                (0usize..300).prop_map(Perturb::Older),
                (0usize..300).prop_map(Perturb::Tombstone),
                any::<u16>().prop_map(Perturb::Extra),
            ], 0..40),
            flip in any::<bool>(),
        ) {
            let base: Store = (0..n).map(|i| (format!("key/{i}").into_bytes(), (Version { hlc: 100 + i as u64, node: 1 }, Some(vec![i as u8; 3])))).collect();
            let (mut a, mut b) = (base.clone(), base);
            for p in &perturbs {
                let target = if flip { &mut a } else { &mut b };
                match p {
                    Perturb::Missing(i) if *i < n => { target.remove(format!("key/{i}").as_bytes()); }
                    Perturb::Older(i) if *i < n => { target.insert(format!("key/{i}").into_bytes(), (Version { hlc: 1, node: 1 }, Some(b"old".to_vec()))); }
                    Perturb::Tombstone(i) if *i < n => { target.insert(format!("key/{i}").into_bytes(), (Version { hlc: 10_000, node: 2 }, None)); }
                    Perturb::Extra(x) => { target.insert(format!("extra/{x}").into_bytes(), (Version { hlc: 5, node: 3 }, Some(vec![1]))); }
                    _ => {}
                }
            }
            // The model's answer: the newest version of every key from either side.
            let mut want = a.clone();
            for (k, r) in &b {
                if want.get(k).is_none_or(|w| w.0 < r.0) {
                    want.insert(k.clone(), r.clone());
                }
            }
            // Records (key, version) that one side holds and the other does not.
            let differing = a.iter().filter(|(k, r)| b.get(*k).is_none_or(|o| o.0 != r.0)).count()
                + b.iter().filter(|(k, r)| a.get(*k).is_none_or(|o| o.0 != r.0)).count();
            let moved = sync(&mut a, &mut b);
            prop_assert_eq!(&a, &want);
            prop_assert_eq!(&b, &want);
            prop_assert_eq!(moved, differing, "moved exactly the differing records");
            prop_assert_eq!(sync(&mut a, &mut b), 0);
        }
    }

    #[test]
    fn plan_is_the_set_difference_and_bitmaps_round_trip() {
        assert_eq!(plan(&[1, 2, 3], &[2, 3, 4, 5]), Plan { send: vec![0], request: vec![2, 3] });
        let idx = vec![0, 3, 8, 9, 15, 16];
        assert_eq!(from_bitmap(&to_bitmap(&idx, 17), 17), idx);
        assert_eq!(to_bitmap(&idx, 17).len(), 3);
        // Another nonce, another fingerprint: a collision does not repeat.
        let v = Version { hlc: 1, node: 1 };
        assert_ne!(fingerprint(1, b"k", v), fingerprint(2, b"k", v));
        assert_ne!(fingerprint(1, b"k", v), fingerprint(1, b"k", Version { hlc: 2, node: 1 }));
    }
}
