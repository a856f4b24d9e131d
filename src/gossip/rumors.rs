//! Rumors waiting to be retold (the SIR model's "infective" updates): each is
//! sent a bounded number of times, least-told first, and then retired
//! ("removed"). At most one rumor per subject (a member, a setting) is kept:
//! a newer one replaces the older, which no longer needs telling.

use super::message::Rumor;

#[derive(Debug, Default)]
pub struct Rumors {
    /// (rumor, times told), in the order the rumors came in.
    items: Vec<(Rumor, u32)>,
}

impl Rumors {
    pub fn push(&mut self, rumor: Rumor) {
        self.items.retain(|(r, _)| r.subject() != rumor.subject());
        self.items.push((rumor, 0));
    }

    /// Forgets, untold, every rumor `keep` rejects.
    pub fn retain(&mut self, keep: impl Fn(&Rumor) -> bool) {
        self.items.retain(|(r, _)| keep(r));
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Up to `max` rumors to piggyback on one message, least-told first; each
    /// counts as told once more, and one told `limit` times is retired.
    pub fn take(&mut self, max: usize, limit: u32) -> Vec<Rumor> {
        if self.items.is_empty() || max == 0 {
            return Vec::new();
        }
        // Stable: among equally told rumors the older goes first.
        self.items.sort_by_key(|(_, told)| *told);
        let n = max.min(self.items.len());
        let taken = self.items[..n]
            .iter_mut()
            .map(|(u, told)| {
                *told += 1;
                u.clone()
            })
            .collect();
        self.items.retain(|(_, told)| *told < limit);
        taken
    }
}

/// How often each rumor is told: `mult · ceil(log10(n + 1))`, the bound
/// memberlist uses. With fanout f and this many rounds a rumor reaches all n
/// members with high probability; the full sync catches the rest.
pub fn retransmit_limit(mult: u32, members: usize) -> u32 {
    let scale = ((members + 1) as f64).log10().ceil().max(1.0) as u32;
    mult.saturating_mul(scale).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::message::{State, Update};

    fn update(id: &str, inc: u64) -> Rumor {
        Rumor::Member(Update { id: id.into(), addr: format!("{id}:1"), incarnation: inc, state: State::Alive })
    }

    fn id(r: Rumor) -> String {
        r.subject().1.to_string()
    }

    #[test]
    fn rumors_are_told_least_told_first_and_retired_at_the_limit() {
        let mut r = Rumors::default();
        r.push(update("a", 1));
        r.push(update("b", 1));
        r.push(update("c", 1));
        let first: Vec<String> = r.take(2, 2).into_iter().map(id).collect();
        assert_eq!(first, ["a", "b"]);
        let second: Vec<String> = r.take(2, 2).into_iter().map(id).collect();
        assert_eq!(second, ["c", "a"]);
        // a: told twice, retired; b and c once each.
        assert_eq!(r.len(), 2);
        assert_eq!(r.take(5, 2).len(), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn a_newer_update_replaces_the_rumor_about_the_same_member() {
        let mut r = Rumors::default();
        r.push(update("a", 1));
        r.take(1, 10);
        r.push(update("a", 2));
        assert_eq!(r.len(), 1);
        let told = r.take(1, 10);
        assert_eq!(told, [update("a", 2)]);
    }

    #[test]
    fn the_limit_grows_with_the_log_of_the_cluster() {
        assert_eq!(retransmit_limit(4, 1), 4);
        assert_eq!(retransmit_limit(4, 9), 4);
        assert_eq!(retransmit_limit(4, 10), 8);
        assert_eq!(retransmit_limit(4, 1000), 16);
        assert_eq!(retransmit_limit(0, 5), 1);
    }
}
