//! Tombstone purge: when a delete's tombstone may finally go. Dropping a
//! tombstone is safe once no replica holds anything older of its key and
//! nothing older can reach a replica again. Three rules give that:
//! 1. A run verified the shard equal on every replica, with roots read
//!    after `checked_at` (carried in [`crate::rpc::Verified`]). A tombstone
//!    acknowledged by a replica is then on all of them, or superseded.
//! 2. Retry-buffer mail stamped longer ago than the grace is dropped, not
//!    delivered (`replication::carrier`), so after `checked_at` no record
//!    stamped before `checked_at - grace - max drift` arrives by mail.
//! 3. The purge waits `delay` after `checked_at`, longer than any read or
//!    repair hop that began before it and may still carry an older copy.
//!
//! So at `checked_at + delay` every tombstone stamped before
//! `checked_at - grace - max drift` can go, on every replica alike, which
//! keeps their roots equal. A replica that was away cannot be verified, so
//! nothing its shards hold is purged while it is gone.
//!
//! One copy escapes rule 1: a former replica's. Placement with bounded
//! loads can move a shard away from a node when a member joins and back
//! when another joins, and the node keeps its old copy meanwhile. So each
//! purge also raises the shard's purge floor (`storage::floor`) on the
//! verified replicas, which then refuse anything older for a key they lack.
//! Only members among the verified replicas purge; others' copies were not
//! verified. [`Purges`] is the pure bookkeeping: verifications in, due
//! purges out, time passed in.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The purge rules of a node (all nodes must agree on `grace`).
#[derive(Debug, Clone, Copy)]
pub struct PurgePolicy {
    pub grace: Duration,
    pub max_drift: Duration,
    pub delay: Duration,
}

/// Verifications waiting for their purge, per shard: the oldest not yet
/// purged and the newest seen. Keeping the oldest means frequent
/// verifications never push a purge back forever.
#[derive(Default)]
pub struct Purges {
    pending: Mutex<BTreeMap<u32, (u64, u64)>>,
}

impl Purges {
    /// A run verified `shard` equal on every replica, roots read after `checked_at_ms`.
    pub fn note_verified(&self, shard: u32, checked_at_ms: u64) {
        let mut pending = self.pending.lock().expect("purges lock");
        let e = pending.entry(shard).or_insert((checked_at_ms, checked_at_ms));
        *e = (e.0.min(checked_at_ms), e.1.max(checked_at_ms));
    }

    /// The purges due at `now_ms` as (shard, purge tombstones stamped before
    /// this HLC), each from the newest verification old enough; a newer one
    /// stays pending.
    pub fn due(&self, policy: &PurgePolicy, now_ms: u64) -> Vec<(u32, u64)> {
        let delay = policy.delay.as_millis() as u64;
        let ripe = |at: u64| at.saturating_add(delay) <= now_ms;
        let mut out = Vec::new();
        self.pending.lock().expect("purges lock").retain(|&shard, (oldest, newest)| {
            if !ripe(*oldest) {
                return true;
            }
            let at = if ripe(*newest) { *newest } else { *oldest };
            let before_ms = at.saturating_sub((policy.grace + policy.max_drift).as_millis() as u64);
            out.push((shard, before_ms << 16));
            if at == *newest {
                return false;
            }
            *oldest = *newest;
            true
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_is_due_a_delay_after_its_verification_and_reaches_back_grace_and_drift() {
        let policy = PurgePolicy { grace: Duration::from_secs(100), max_drift: Duration::from_secs(60), delay: Duration::from_secs(900) };
        let purges = Purges::default();
        let t = 10_000_000;
        purges.note_verified(3, t);
        assert_eq!(purges.due(&policy, t + 899_999), vec![]);
        assert_eq!(purges.due(&policy, t + 900_000), vec![(3, (t - 160_000) << 16)]);
        assert_eq!(purges.due(&policy, t + 2_000_000), vec![], "done once");
    }

    #[test]
    fn frequent_verifications_do_not_postpone_a_purge_forever() {
        let policy = PurgePolicy { grace: Duration::ZERO, max_drift: Duration::ZERO, delay: Duration::from_secs(10) };
        let purges = Purges::default();
        // Verified every 4 s: each purge uses the newest verification that is ripe.
        let mut purged = Vec::new();
        for i in 0..10u64 {
            let now = i * 4_000;
            purges.note_verified(0, now);
            purged.extend(purges.due(&policy, now).into_iter().map(|(_, before)| before >> 16));
        }
        assert_eq!(purged, vec![0, 12_000, 24_000], "purged as verifications ripen, never starved");
        assert_eq!(purges.due(&policy, 100_000), vec![(0, 36_000 << 16)], "the last one too");
    }
}
