//! The pure comparison of two replicas' trees and leaf contents: no I/O.
//! The exchange driver feeds it the answers it gets from the peer.

use super::{Digest, KeyTag};
use crate::types::Version;
use std::collections::BTreeMap;

/// Indices whose digests differ (all of them if the lengths differ).
pub fn differing(mine: &[Digest], theirs: &[Digest]) -> Vec<usize> {
    if mine.len() != theirs.len() {
        return (0..mine.len().max(theirs.len())).collect();
    }
    mine.iter().zip(theirs).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect()
}

/// One record's identity in a leaf listing. On the wire it is a fixed 24
/// bytes (tag, hlc, node): leaf listings dominate repair traffic when many
/// leaves differ, and varints would make each entry ~27 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "[u8; 24]", from = "[u8; 24]")]
pub struct Entry {
    pub tag: KeyTag,
    pub version: Version,
}

impl From<Entry> for [u8; 24] {
    fn from(e: Entry) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&e.tag);
        out[8..16].copy_from_slice(&e.version.hlc.to_be_bytes());
        out[16..].copy_from_slice(&e.version.node.to_be_bytes());
        out
    }
}

impl From<[u8; 24]> for Entry {
    fn from(b: [u8; 24]) -> Entry {
        let word = |r: std::ops::Range<usize>| u64::from_be_bytes(b[r].try_into().expect("8 bytes"));
        Entry { tag: b[..8].try_into().expect("8 bytes"), version: Version { hlc: word(8..16), node: word(16..24) } }
    }
}

/// What each side must send so both end with the newest of every key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Keys I hold newer, or that they lack: I send them.
    pub send: Vec<KeyTag>,
    /// Keys they hold newer, or that I lack: they send them.
    pub request: Vec<KeyTag>,
}

/// Compares two listings of the same leaves.
pub fn plan(mine: &[Entry], theirs: &[Entry]) -> Plan {
    let theirs: BTreeMap<KeyTag, Version> = theirs.iter().map(|e| (e.tag, e.version)).collect();
    let mine_map: BTreeMap<KeyTag, Version> = mine.iter().map(|e| (e.tag, e.version)).collect();
    let mut plan = Plan::default();
    for (tag, v) in &mine_map {
        match theirs.get(tag) {
            Some(t) if t >= v => {}
            _ => plan.send.push(*tag),
        }
    }
    for (tag, v) in &theirs {
        match mine_map.get(tag) {
            Some(m) if m >= v => {}
            _ => plan.request.push(*tag),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{locate, record_digest, ShardTree};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Store = BTreeMap<Vec<u8>, (Version, Option<Vec<u8>>)>;

    fn tree(store: &Store) -> ShardTree {
        let mut t = ShardTree::default();
        for (k, (v, val)) in store {
            t.update(locate(k).0, None, &record_digest(k, *v, val.as_deref()));
        }
        t
    }

    fn entries(store: &Store, leaves: &[usize]) -> Vec<Entry> {
        store
            .iter()
            .filter(|(k, _)| leaves.contains(&(locate(k).0 as usize)))
            .map(|(k, (v, _))| Entry { tag: locate(k).1, version: *v })
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
        let p = plan(&entries(a, &leaves), &entries(b, &leaves));
        let by_tag = |s: &Store, tag: &KeyTag| s.iter().find(|(k, _)| locate(k).1 == *tag).map(|(k, r)| (k.clone(), r.clone())).unwrap();
        let sends: Vec<_> = p.send.iter().map(|t| by_tag(a, t)).collect();
        let reqs: Vec<_> = p.request.iter().map(|t| by_tag(b, t)).collect();
        for (k, r) in &sends {
            b.insert(k.clone(), r.clone());
        }
        for (k, r) in &reqs {
            a.insert(k.clone(), r.clone());
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
            let differing_keys = want.iter().filter(|(k, r)| a.get(*k) != Some(r)).count() + want.iter().filter(|(k, r)| b.get(*k) != Some(r)).count();
            let moved = sync(&mut a, &mut b);
            prop_assert_eq!(&a, &want);
            prop_assert_eq!(&b, &want);
            prop_assert_eq!(moved, differing_keys, "moved exactly the differing records");
            prop_assert_eq!(sync(&mut a, &mut b), 0);
        }
    }

    #[test]
    fn entries_are_24_bytes_on_the_wire() {
        let e = Entry { tag: [7; 8], version: Version { hlc: u64::MAX - 1, node: 3 } };
        let bytes = postcard::to_stdvec(&e).unwrap();
        assert_eq!(bytes.len(), 24);
        assert_eq!(postcard::from_bytes::<Entry>(&bytes).unwrap(), e);
    }

    #[test]
    fn plan_prefers_newer_either_way() {
        let t = |x: u8| [x; 8];
        let v = |h: u64| Version { hlc: h, node: 0 };
        let mine = [Entry { tag: t(1), version: v(5) }, Entry { tag: t(2), version: v(1) }, Entry { tag: t(3), version: v(3) }];
        let theirs = [Entry { tag: t(2), version: v(9) }, Entry { tag: t(3), version: v(3) }, Entry { tag: t(4), version: v(1) }];
        assert_eq!(plan(&mine, &theirs), Plan { send: vec![t(1)], request: vec![t(2), t(4)] });
    }
}
