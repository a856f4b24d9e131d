//! What members tell each other: member updates, cluster settings, and the
//! messages that carry them. An update is one member's (incarnation, state,
//! address); a setting is a named value with a stamp. Both are totally
//! ordered ([`Update::supersedes`], [`Setting::supersedes`]), so keeping the
//! greatest one seen is a join: every member that has seen the same rumors
//! holds the same view, whatever order they came in. Encoded with the one
//! peer codec ([`crate::rpc::codec`]).

use serde::{Deserialize, Serialize};

/// A member's state. At equal incarnations a later variant wins: a suspicion
/// beats the alive claim it doubts, a death beats the suspicion. Only the
/// member itself can answer either, by raising its incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    Alive,
    Suspect,
    /// Declared failed. A dead member keeps its shards (DESIGN.md §2) until an
    /// operator removes it; it comes back by refuting with a higher incarnation.
    Dead,
    /// Stopped on purpose (a clean shutdown); back with a higher incarnation.
    Left,
    /// Taken out of the cluster by an operator: out of placement, its shards
    /// re-placed. If it ever runs again its new incarnation brings it back.
    Removed,
}

impl State {
    pub const ALL: [State; 5] = [State::Alive, State::Suspect, State::Dead, State::Left, State::Removed];

    /// Whether the member is probed and sent rumors: it may be running.
    pub fn reachable(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Dead => "dead",
            State::Left => "left",
            State::Removed => "removed",
        }
    }
}

/// One member's state as some member last heard it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub id: String,
    pub addr: String,
    pub incarnation: u64,
    pub state: State,
}

impl Update {
    /// Whether this update replaces `known` (about the same member). The order
    /// is total: incarnation, then state, then address (two claims that tie on
    /// both still pick the same winner everywhere).
    pub fn supersedes(&self, known: &Update) -> bool {
        (self.incarnation, self.state, &self.addr) > (known.incarnation, known.state, &known.addr)
    }
}

/// A cluster-wide setting (e.g. the anti-entropy schedule): the highest
/// stamp wins, then the greater value, so a tie still picks one everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub name: String,
    pub stamp: u64,
    pub value: Vec<u8>,
}

impl Setting {
    pub fn supersedes(&self, known: &Setting) -> bool {
        (self.stamp, &self.value) > (known.stamp, &known.value)
    }
}

/// What a rumor tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rumor {
    Member(Update),
    Setting(Setting),
}

impl Rumor {
    /// What the rumor is about: a newer rumor about the same thing replaces it.
    pub fn subject(&self) -> (u8, &str) {
        match self {
            Rumor::Member(u) => (0, &u.id),
            Rumor::Setting(s) => (1, &s.name),
        }
    }
}

/// A gossip message; every kind but `Sync` piggybacks rumors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A direct probe of `target` (named, so a different member now at the
    /// address does not answer for it).
    Ping {
        seq: u64,
        target: String,
        rumors: Vec<Rumor>,
    },
    Ack {
        seq: u64,
        rumors: Vec<Rumor>,
    },
    /// Asks the receiver to probe `target` and forward the ack: the indirect
    /// probe that tells a dead member from a lossy link.
    PingReq {
        seq: u64,
        target: String,
        target_addr: String,
        rumors: Vec<Rumor>,
    },
    /// Rumors pushed to a few random members every gossip interval.
    Gossip {
        rumors: Vec<Rumor>,
    },
    /// The whole view and every setting, on joining and every sync
    /// interval; `reply` asks for the receiver's back (push-pull).
    Sync {
        members: Vec<Update>,
        settings: Vec<Setting>,
        reply: bool,
    },
}

/// A message with its sender's own claim about itself: a reply can find the
/// sender, and any contact refreshes the receiver's view of it (a member
/// wrongly held dead is put right as soon as it speaks to you).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: Update,
    pub msg: Message,
}

/// An [`Envelope`] as one node sends it to another (`POST /internal/gossip`),
/// with the sender's shard count and replication factor. A receiver learns
/// an unknown sender from its envelope, as from a hello, so it checks them
/// first, as a hello's are: a node of another shape must not get into any
/// member's view by gossip. Added by the runtime; the state machine never
/// sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipPacket {
    pub shards: u32,
    pub rf: u32,
    pub envelope: Envelope,
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Ping { .. } => "ping",
            Message::Ack { .. } => "ack",
            Message::PingReq { .. } => "ping-req",
            Message::Gossip { .. } => "gossip",
            Message::Sync { .. } => "sync",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::codec;

    fn update(inc: u64, state: State, addr: &str) -> Update {
        Update { id: "n1".into(), addr: addr.into(), incarnation: inc, state }
    }

    #[test]
    fn a_higher_incarnation_wins_then_the_graver_state() {
        assert!(update(2, State::Alive, "a").supersedes(&update(1, State::Dead, "a")));
        assert!(update(1, State::Suspect, "a").supersedes(&update(1, State::Alive, "a")));
        assert!(update(1, State::Dead, "a").supersedes(&update(1, State::Suspect, "a")));
        assert!(!update(1, State::Alive, "a").supersedes(&update(1, State::Suspect, "a")));
        assert!(!update(1, State::Alive, "a").supersedes(&update(1, State::Alive, "a")));
        assert!(update(1, State::Alive, "b").supersedes(&update(1, State::Alive, "a")));
    }

    #[test]
    fn an_envelope_has_fixed_bytes() {
        let env = Envelope {
            from: update(3, State::Alive, "h:1"),
            msg: Message::Ping { seq: 7, target: "n2".into(), rumors: vec![Rumor::Member(update(3, State::Suspect, "h:2"))] },
        };
        let bytes = codec::encode(&env);
        assert_eq!(
            bytes,
            [codec::FORMAT, 2, b'n', b'1', 3, b'h', b':', b'1', 3, 0, 0, 7, 2, b'n', b'2', 1, 0, 2, b'n', b'1', 3, b'h', b':', b'2', 3, 1]
        );
        assert_eq!(codec::decode::<Envelope>(&bytes).unwrap(), env);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // Empty; a format alone; huge lengths; truncated strings; another format.
        let f = codec::FORMAT;
        for bytes in [&[][..], &[f], &[f, 0, 0xff, 0xff, 0xff, 0xff, 0x0f], &[f, 0, 1, b'x', 9, 9, 9, 9, 9], &[f + 1, 0]] {
            assert!(codec::decode::<Envelope>(bytes).is_err(), "{bytes:?}");
        }
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
        for _ in 0..2000 {
            let len = rand::Rng::gen_range(&mut rng, 0..64);
            let bytes: Vec<u8> = (0..len).map(|_| rand::Rng::gen(&mut rng)).collect();
            let _ = codec::decode::<Envelope>(&bytes);
        }
    }
}
