//! The replicas an anti-entropy run skipped, kept bounded: one entry per
//! node and reason, with how many shards and the first few of them.

use serde::{Deserialize, Serialize};

/// Replicas a run skipped, one entry per node and reason: on how many
/// shards, and the first [`SKIPPED_SHARDS_LISTED`] of them. A replica down
/// for a whole run is one entry, not one per shard in every history record
/// (65536 of them at the largest shard count).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(from = "StoredSkip")]
pub struct SkippedReplica {
    pub node: String,
    pub reason: String,
    pub count: u64,
    pub shards: Vec<u32>,
}

pub const SKIPPED_SHARDS_LISTED: usize = 16;
/// Past this many entries, a new reason for a node is counted under
/// [`OTHER_REASONS`]: an error text that names its shard would otherwise
/// make one entry per shard again.
const SKIPPED_ENTRIES: usize = 32;
pub const OTHER_REASONS: &str = "other reasons";

/// A [`SkippedReplica`] as stored: builds before the grouping stored one
/// entry per shard, with a `shard` field and no count.
#[derive(Deserialize)]
struct StoredSkip {
    node: String,
    reason: String,
    #[serde(default)]
    count: u64,
    #[serde(default)]
    shards: Vec<u32>,
    #[serde(default)]
    shard: Option<u32>,
}

impl From<StoredSkip> for SkippedReplica {
    fn from(s: StoredSkip) -> SkippedReplica {
        match s.shard {
            Some(shard) => SkippedReplica { node: s.node, reason: s.reason, count: 1, shards: vec![shard] },
            None => SkippedReplica { node: s.node, reason: s.reason, count: s.count, shards: s.shards },
        }
    }
}

/// Notes in `entries` that `node` was skipped on `shard` for `reason`.
pub fn note(entries: &mut Vec<SkippedReplica>, shard: u32, node: &str, reason: &str) {
    let known = |entries: &[SkippedReplica], reason: &str| entries.iter().position(|e| e.node == node && e.reason == reason);
    let reason = match known(entries, reason) {
        None if entries.len() >= SKIPPED_ENTRIES => OTHER_REASONS,
        _ => reason,
    };
    match known(entries, reason) {
        Some(i) => {
            let entry = &mut entries[i];
            entry.count += 1;
            if entry.shards.len() < SKIPPED_SHARDS_LISTED {
                entry.shards.push(shard);
            }
        }
        None => entries.push(SkippedReplica { node: node.into(), reason: reason.into(), count: 1, shards: vec![shard] }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_are_grouped_by_node_and_reason_and_bounded() {
        let mut entries = Vec::new();
        for shard in 0..1000 {
            note(&mut entries, shard, "n3", "down, as gossip holds it");
        }
        note(&mut entries, 7, "n2", "address unknown");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].count, 1000);
        assert_eq!(entries[0].shards, (0..SKIPPED_SHARDS_LISTED as u32).collect::<Vec<_>>());
        assert_eq!((entries[1].node.as_str(), entries[1].count, entries[1].shards.as_slice()), ("n2", 1, &[7][..]));
        // Reasons that name their shard stop making new entries at the cap.
        for shard in 0..1000 {
            note(&mut entries, shard, "n4", &format!("shard {shard} failed"));
        }
        assert_eq!(entries.len(), SKIPPED_ENTRIES + 1);
        let other = entries.iter().find(|e| e.reason == OTHER_REASONS).unwrap();
        assert_eq!((other.node.as_str(), other.count), ("n4", 1000 - (SKIPPED_ENTRIES as u64 - 2)));
        assert_eq!(entries.iter().map(|e| e.count).sum::<u64>(), 2001);
    }

    #[test]
    fn history_of_older_builds_still_reads() {
        let old: SkippedReplica = serde_json::from_str(r#"{"shard":5,"node":"n3","reason":"did not answer"}"#).unwrap();
        assert_eq!(old, SkippedReplica { node: "n3".into(), reason: "did not answer".into(), count: 1, shards: vec![5] });
        let new = SkippedReplica { node: "n3".into(), reason: "x".into(), count: 40, shards: vec![1, 2] };
        let json = serde_json::to_string(&new).unwrap();
        assert_eq!(json, r#"{"node":"n3","reason":"x","count":40,"shards":[1,2]}"#);
        assert_eq!(serde_json::from_str::<SkippedReplica>(&json).unwrap(), new);
    }
}
