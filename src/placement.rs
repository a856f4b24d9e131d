//! Placement (DESIGN.md §2): which members hold a shard, by rendezvous
//! hashing with bounded loads. Every member scores `blake3(shard_id_le ‖
//! node name)`; shards are placed in id order, each taking its highest-scoring
//! members that hold fewer than `ceil(fair share)` replicas so far. The
//! chosen members, highest score first, are the shard's **ring order**.
//! Pure: the same (members, S, RF) give the same answer on every node.
//!
//! Why the cap: plain rendezvous leaves 64 shards × 3 replicas on 10 nodes
//! off by ±40% (binomial noise). The tightest feasible cap also lifts the
//! light nodes (the late shards must go to them), keeping every node within
//! ±25% of fair, while adding a node still moves about 1/(n+1) of replicas.

use crate::types::{NodeId, ShardId};

fn score(shard: ShardId, node: &NodeId) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&shard.0.to_le_bytes());
    h.update(node.name().as_bytes());
    u64::from_le_bytes(h.finalize().as_bytes()[0..8].try_into().expect("8 bytes"))
}

/// Members ranked for `shard`, highest score first.
fn ranked(shard: ShardId, members: &[NodeId]) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = members.iter().enumerate().map(|(i, m)| (score(shard, m), i)).collect();
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| members[a.1].name().cmp(members[b.1].name())));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// Replicas of every shard, computed once per membership change.
#[derive(Debug, Clone, Default)]
pub struct PlacementTable {
    shards: Vec<Vec<NodeId>>,
}

impl PlacementTable {
    pub fn new(members: &[NodeId], shards: u32, rf: usize) -> PlacementTable {
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        let rf = rf.min(members.len());
        if rf == 0 {
            return PlacementTable { shards: vec![Vec::new(); shards as usize] };
        }
        let fair = (shards as usize * rf) as f64 / members.len() as f64;
        let cap = (fair.ceil() as usize).max(1);
        let mut load = vec![0usize; members.len()];
        let table = (0..shards)
            .map(|s| {
                let ranking = ranked(ShardId(s), &members);
                // Under the cap first; if every member is at the cap, take the best anyway.
                let mut chosen: Vec<usize> = ranking.iter().copied().filter(|&i| load[i] < cap).take(rf).collect();
                for &i in &ranking {
                    if chosen.len() >= rf {
                        break;
                    }
                    if !chosen.contains(&i) {
                        chosen.push(i);
                    }
                }
                // Ring order is score order among the chosen.
                chosen.sort_by_key(|i| ranking.iter().position(|r| r == i));
                chosen.iter().for_each(|&i| load[i] += 1);
                chosen.into_iter().map(|i| members[i].clone()).collect()
            })
            .collect();
        PlacementTable { shards: table }
    }

    pub fn replicas(&self, shard: ShardId) -> &[NodeId] {
        self.shards.get(shard.0 as usize).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn replicas(shard: ShardId, members: &[NodeId], rf: usize) -> Vec<NodeId> {
        PlacementTable::new(members, 1024, rf).replicas(shard).to_vec()
    }

    fn nodes(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId::new(&format!("n{i}")).unwrap()).collect()
    }

    #[test]
    fn deterministic_and_independent_of_member_order() {
        let a = nodes(5);
        let mut b = a.clone();
        b.reverse();
        for s in 0..64 {
            let r = replicas(ShardId(s), &a, 3);
            assert_eq!(r, replicas(ShardId(s), &b, 3));
            assert_eq!(r.len(), 3);
            let mut uniq = r.clone();
            uniq.dedup();
            assert_eq!(uniq.len(), 3);
        }
        assert_eq!(replicas(ShardId(0), &nodes(2), 3).len(), 2, "rf is capped at the member count");
    }

    #[test]
    fn balanced_within_25_percent_of_fair() {
        for n in 3..=10 {
            for shards in [64u32, 256, 1024] {
                let rf = 3.min(n);
                let mut load: HashMap<NodeId, usize> = HashMap::new();
                let table = PlacementTable::new(&nodes(n), shards, rf);
                for s in 0..shards {
                    for r in table.replicas(ShardId(s)).to_vec() {
                        *load.entry(r).or_default() += 1;
                    }
                }
                let fair = (shards as usize * rf) as f64 / n as f64;
                for (node, count) in load {
                    let dev = (count as f64 - fair).abs() / fair;
                    assert!(dev <= 0.25, "n={n} shards={shards}: {node} holds {count}, fair {fair:.1}");
                }
            }
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_plus_one() {
        for n in 3..=9 {
            let shards = 1024u32;
            let before = nodes(n);
            let after = nodes(n + 1);
            let (old_t, new_t) = (PlacementTable::new(&before, shards, 3), PlacementTable::new(&after, shards, 3));
            let mut moved = 0usize;
            for s in 0..shards {
                let old = old_t.replicas(ShardId(s));
                let new = new_t.replicas(ShardId(s));
                moved += new.iter().filter(|r| !old.contains(r)).count();
            }
            let fraction = moved as f64 / (shards as usize * 3) as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            assert!((fraction - ideal).abs() < 0.25 * ideal, "n={n}: moved {fraction:.3}, ideal {ideal:.3}");
        }
    }
}
