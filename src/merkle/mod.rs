//! Per-shard Merkle trees (DESIGN.md §4). A tree has [`LEAVES`] leaves,
//! picked by more bits of `blake3(key)`, under [`FANOUT`]-way inner nodes and
//! a root: three levels, `0` = root, `1` = inner, `2` = leaves.
//!
//! A leaf is the sum (mod 2^256) of [`record_digest`] over its records, so a
//! write updates it in O(1) as `leaf - h(old) + h(new)` without reading the
//! leaf's other records, and concurrent updates commute. The digest covers
//! key, version and value hash, so replicas whose values differ under one
//! version differ in the tree too. Inner nodes and the root are domain-separated blake3
//! over their children, recomputed lazily when asked for.
//! The pure comparison of two trees is in [`diff`].

pub mod diff;

use crate::types::Version;
use std::sync::Mutex;

pub type Digest = [u8; 32];
pub const LEAVES: usize = 1024;
pub const FANOUT: usize = 32;
pub const INNER: usize = LEAVES / FANOUT;

/// Which leaf a key falls in (more bits of the hash that picked its shard).
pub fn leaf_of(key: &[u8]) -> u32 {
    let h = blake3::hash(key);
    let leaf = (u64::from_le_bytes(h.as_bytes()[8..16].try_into().expect("8 bytes")) % LEAVES as u64) as u32;
    leaf
}

/// Bytes of a digest sent on the wire: 128 bits detect accidental divergence
/// with certainty for practical purposes, and peers are authenticated.
pub const WIRE_DIGEST: usize = 16;

pub fn wire_digest(d: &Digest) -> [u8; WIRE_DIGEST] {
    d[..WIRE_DIGEST].try_into().expect("16 bytes")
}

/// `h(r) = blake3(len ‖ key ‖ hlc ‖ node ‖ blake3(value or tombstone mark))`.
pub fn record_digest(key: &[u8], version: Version, value: Option<&[u8]>) -> Digest {
    record_digest_with(key, version, &value_hash(value))
}

/// The inner `blake3(value or tombstone mark)` of [`record_digest`]; stored
/// with each record so the digest of a stored record costs no value hashing.
pub fn value_hash(value: Option<&[u8]>) -> Digest {
    match value {
        Some(v) => *blake3::Hasher::new().update(&[1]).update(v).finalize().as_bytes(),
        None => *blake3::hash(&[0]).as_bytes(),
    }
}

/// [`record_digest`] from an already computed [`value_hash`].
pub fn record_digest_with(key: &[u8], version: Version, value_hash: &Digest) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u32).to_be_bytes());
    h.update(key);
    h.update(&version.hlc.to_be_bytes());
    h.update(&version.node.to_be_bytes());
    h.update(value_hash);
    *h.finalize().as_bytes()
}

type Sum = [u64; 4];

fn add(sum: &mut Sum, d: &Digest) {
    let mut carry = 0u64;
    for (i, limb) in sum.iter_mut().enumerate() {
        let x = u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let (a, c1) = limb.overflowing_add(x);
        let (b, c2) = a.overflowing_add(carry);
        *limb = b;
        carry = u64::from(c1) + u64::from(c2);
    }
}

fn sub(sum: &mut Sum, d: &Digest) {
    let mut borrow = 0u64;
    for (i, limb) in sum.iter_mut().enumerate() {
        let x = u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let (a, b1) = limb.overflowing_sub(x);
        let (b, b2) = a.overflowing_sub(borrow);
        *limb = b;
        borrow = u64::from(b1) + u64::from(b2);
    }
}

fn sum_bytes(sum: &Sum) -> Digest {
    let mut out = [0u8; 32];
    for (i, limb) in sum.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
    }
    out
}

/// One shard's tree.
#[derive(Clone)]
pub struct ShardTree {
    leaves: Vec<Sum>,
    inner: Vec<Option<Digest>>,
    root: Option<Digest>,
}

impl Default for ShardTree {
    fn default() -> Self {
        ShardTree { leaves: vec![[0; 4]; LEAVES], inner: vec![None; INNER], root: None }
    }
}

impl ShardTree {
    /// Replaces `old` (if any) by `new` in `leaf`.
    pub fn update(&mut self, leaf: u32, old: Option<&Digest>, new: &Digest) {
        let l = &mut self.leaves[leaf as usize];
        if let Some(old) = old {
            sub(l, old);
        }
        add(l, new);
        self.inner[leaf as usize / FANOUT] = None;
        self.root = None;
    }

    /// Takes `old` out of `leaf` (a record that is gone, not replaced).
    pub fn remove(&mut self, leaf: u32, old: &Digest) {
        sub(&mut self.leaves[leaf as usize], old);
        self.inner[leaf as usize / FANOUT] = None;
        self.root = None;
    }

    pub fn leaf(&self, i: usize) -> Digest {
        sum_bytes(&self.leaves[i])
    }

    pub fn inner(&mut self, i: usize) -> Digest {
        if let Some(d) = self.inner[i] {
            return d;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"hearsay-inner");
        for l in &self.leaves[i * FANOUT..(i + 1) * FANOUT] {
            h.update(&sum_bytes(l));
        }
        let d = *h.finalize().as_bytes();
        self.inner[i] = Some(d);
        d
    }

    pub fn root(&mut self) -> Digest {
        if let Some(d) = self.root {
            return d;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"hearsay-root");
        for i in 0..INNER {
            h.update(&self.inner(i));
        }
        let d = *h.finalize().as_bytes();
        self.root = Some(d);
        d
    }

    /// Digests at `level` (0 root, 1 inner, 2 leaves) for the given indices;
    /// an index out of range is an error naming it.
    pub fn level(&mut self, level: u8, indices: &[u32]) -> Result<Vec<Digest>, String> {
        let width = match level {
            0 => 1,
            1 => INNER,
            2 => LEAVES,
            l => return Err(format!("tree level {l} does not exist (0..=2)")),
        };
        indices
            .iter()
            .map(|&i| {
                let i = i as usize;
                if i >= width {
                    return Err(format!("index {i} is outside level {level} (width {width})"));
                }
                Ok(match level {
                    0 => self.root(),
                    1 => self.inner(i),
                    _ => self.leaf(i),
                })
            })
            .collect()
    }
}

/// The trees of every shard of a store, each behind its own lock.
pub struct Trees(Vec<Mutex<ShardTree>>);

impl Trees {
    pub fn new(shards: u32) -> Trees {
        Trees((0..shards).map(|_| Mutex::new(ShardTree::default())).collect())
    }

    pub fn shard(&self, shard: u32) -> std::sync::MutexGuard<'_, ShardTree> {
        self.0[shard as usize].lock().expect("merkle lock")
    }

    /// Records that `key` changed from `old` to `new` (digests).
    pub fn record(&self, shard: u32, key: &[u8], old: Option<&Digest>, new: &Digest) {
        self.record_in_leaf(shard, leaf_of(key), old, new);
    }

    /// Records that `key`, whose digest was `old`, no longer has a record.
    pub fn forget(&self, shard: u32, key: &[u8], old: &Digest) {
        self.shard(shard).remove(leaf_of(key), old);
    }

    /// [`Trees::record`] for a caller that already knows the key's leaf.
    pub fn record_in_leaf(&self, shard: u32, leaf: u32, old: Option<&Digest>, new: &Digest) {
        self.shard(shard).update(leaf, old, new);
    }
}

pub fn hex(d: &Digest) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_order_independent_sums() {
        let d: Vec<Digest> = (0..50u64).map(|i| record_digest(&i.to_be_bytes(), Version { hlc: i, node: 1 }, Some(b"v"))).collect();
        let mut a = ShardTree::default();
        let mut b = ShardTree::default();
        for x in &d {
            a.update(3, None, x);
        }
        for x in d.iter().rev() {
            b.update(3, None, x);
        }
        assert_eq!(a.root(), b.root());
        // Replace then restore: back to the same root.
        let before = a.root();
        a.update(3, Some(&d[7]), &d[8]);
        assert_ne!(a.root(), before);
        a.update(3, Some(&d[8]), &d[7]);
        assert_eq!(a.root(), before);
        // Removing everything returns to the empty tree.
        for x in &d {
            sub(&mut a.leaves[3], x);
        }
        a.inner[0] = None;
        a.root = None;
        assert_eq!(a.root(), ShardTree::default().root());
    }

    #[test]
    fn digest_covers_value_bytes_and_tombstones() {
        let v = Version { hlc: 1, node: 1 };
        assert_ne!(record_digest(b"k", v, Some(b"a")), record_digest(b"k", v, Some(b"b")));
        assert_ne!(record_digest(b"k", v, Some(b"")), record_digest(b"k", v, None));
        assert!(ShardTree::default().level(3, &[0]).is_err());
        assert!(ShardTree::default().level(1, &[32]).is_err());
    }
}
