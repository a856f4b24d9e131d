//! The membership state machine (DESIGN.md §6), sans I/O: SWIM failure
//! detection (probe, indirect probe through `k` others, suspect, dead; a
//! suspect refutes by raising its incarnation) with membership changes and
//! cluster settings spread as rumors piggybacked on probes and pushed to
//! `fanout` random members, plus a full push-pull sync of the view and the
//! settings with one random member every `sync_interval`. The caller owns
//! time, sockets and randomness: it feeds `tick` and `handle` with `now` and
//! an RNG and sends the `Output`s.

use super::message::{Envelope, Message, Rumor, Setting, State, Update};
use super::rumors::{retransmit_limit, Rumors};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};

/// Milliseconds on the caller's clock.
pub type Millis = u64;

#[derive(Debug, Clone)]
pub struct SwimConfig {
    pub probe_interval: Millis,
    /// No ack within this → ask `indirect_probes` others to probe.
    pub probe_timeout: Millis,
    pub indirect_probes: usize,
    /// Suspicion lasts `suspicion_mult · log10(n + 1) · probe_interval`.
    pub suspicion_mult: u32,
    pub gossip_interval: Millis,
    pub fanout: usize,
    /// Each rumor is told `retransmit_mult · log10(n + 1)` times.
    pub retransmit_mult: u32,
    pub sync_interval: Millis,
    /// Rumors piggybacked on one message. Peers talk HTTP, not UDP, so a
    /// message need not fit a datagram: 64 rumors are ~2.5 KB. With 16, a
    /// burst of joins queued faster than it drained (1000 members started
    /// at once: views complete after 30 s, by the sync, against 12 s).
    pub max_rumors: usize,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            probe_interval: 1000,
            probe_timeout: 500,
            indirect_probes: 3,
            suspicion_mult: 4,
            gossip_interval: 200,
            fanout: 3,
            retransmit_mult: 4,
            sync_interval: 30_000,
            max_rumors: 64,
        }
    }
}

/// Where a message goes: a member's id (empty for a seed not met yet) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub addr: String,
}

impl Peer {
    fn of(update: &Update) -> Peer {
        Peer { id: update.id.clone(), addr: update.addr.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `envelope` to `to`.
    Send { to: Peer, envelope: Envelope },
    /// This node's view of a member changed (or the member is new).
    Changed(Update),
    /// A setting changed (or was heard of for the first time).
    Setting(Setting),
}

#[derive(Debug)]
struct Probe {
    target: String,
    seq: u64,
    started: Millis,
    indirect_sent: bool,
}

/// A probe run for another member; its ack is forwarded to the requester.
#[derive(Debug)]
struct Relay {
    to: Peer,
    seq: u64,
    expires: Millis,
}

pub struct Swim {
    cfg: SwimConfig,
    me: Update,
    /// Every other member's latest update, by id.
    members: BTreeMap<String, Update>,
    rumors: Rumors,
    probe_order: Vec<String>,
    probe_pos: usize,
    probe: Option<Probe>,
    relays: HashMap<u64, Relay>,
    next_seq: u64,
    next_probe: Millis,
    next_gossip: Millis,
    next_sync: Millis,
    /// Addresses to join through, asked again every probe interval until
    /// some member has sent this one a view.
    seeds: Vec<String>,
    joined: bool,
    /// Other members per state (index: `State as usize`), kept with `members`.
    counts: [usize; 5],
    /// Suspects and when this node began suspecting them: each member's
    /// suspicion clock starts when it adopts the suspicion.
    suspects: HashMap<String, Millis>,
    settings: BTreeMap<String, Setting>,
}

impl Swim {
    /// A member that knows only itself. `incarnation` must exceed any this
    /// member used before (a restart passes its clock's milliseconds), so its
    /// alive claim beats what the cluster remembers of its last life.
    pub fn new(cfg: SwimConfig, id: &str, addr: &str, incarnation: u64, now: Millis) -> Swim {
        let me = Update { id: id.to_string(), addr: addr.to_string(), incarnation, state: State::Alive };
        let mut rumors = Rumors::default();
        rumors.push(Rumor::Member(me.clone()));
        Swim {
            next_probe: now + cfg.probe_interval,
            next_gossip: now + cfg.gossip_interval,
            next_sync: now + cfg.sync_interval,
            cfg,
            me,
            members: BTreeMap::new(),
            rumors,
            probe_order: Vec::new(),
            probe_pos: 0,
            probe: None,
            relays: HashMap::new(),
            next_seq: 1,
            seeds: Vec::new(),
            joined: false,
            counts: [0; 5],
            suspects: HashMap::new(),
            settings: BTreeMap::new(),
        }
    }

    pub fn me(&self) -> &Update {
        &self.me
    }

    /// Every member this node knows of, itself included, by id.
    pub fn view(&self) -> impl Iterator<Item = &Update> {
        std::iter::once(&self.me).chain(self.members.values())
    }

    pub fn get(&self, id: &str) -> Option<&Update> {
        if id == self.me.id {
            return Some(&self.me);
        }
        self.members.get(id)
    }

    /// Members this node holds in `state`, itself included.
    pub fn count(&self, state: State) -> usize {
        usize::from(self.me.state == state) + self.counts[state as usize]
    }

    /// Members alive or suspect, this node included: the `n` of the timeouts.
    fn live_count(&self) -> usize {
        1 + self.counts[State::Alive as usize] + self.counts[State::Suspect as usize]
    }

    fn suspicion_timeout(&self) -> Millis {
        let scale = ((self.live_count() + 1) as f64).log10().max(1.0);
        (self.cfg.suspicion_mult as f64 * scale * self.cfg.probe_interval as f64) as Millis
    }

    fn rumor_limit(&self) -> u32 {
        retransmit_limit(self.cfg.retransmit_mult, self.live_count())
    }

    /// The earliest time `tick` has work to do.
    pub fn next_wakeup(&self) -> Millis {
        let mut at = self.next_probe.min(self.next_gossip).min(self.next_sync);
        if let Some(p) = self.probe.as_ref().filter(|p| !p.indirect_sent) {
            at = at.min(p.started + self.cfg.probe_timeout);
        }
        if let Some(first) = self.suspects.values().min() {
            at = at.min(first + self.suspicion_timeout());
        }
        at
    }

    fn envelope(&self, msg: Message) -> Envelope {
        Envelope { from: self.me.clone(), msg }
    }

    fn send(&self, to: Peer, msg: Message, out: &mut Vec<Output>) {
        out.push(Output::Send { to, envelope: self.envelope(msg) });
    }

    fn piggyback(&mut self) -> Vec<Rumor> {
        let limit = self.rumor_limit();
        self.rumors.take(self.cfg.max_rumors, limit)
    }

    /// Rumors for a ping to `target`. A target this member suspects is
    /// always told so (Lifeguard's "buddy system"): the ping reaches the one
    /// member that can refute, even once the rumor was retired here or is
    /// crowded out by others, and the ack brings the refutation straight back.
    fn piggyback_for(&mut self, target: &str) -> Vec<Rumor> {
        let mut rumors = self.piggyback();
        if let Some(suspected) = self.members.get(target).filter(|k| k.state == State::Suspect) {
            if !rumors.iter().any(|r| matches!(r, Rumor::Member(u) if u.id == target)) {
                rumors.push(Rumor::Member(suspected.clone()));
            }
        }
        rumors
    }

    /// The whole state, for a sync: every member and every setting.
    fn sync_message(&self, reply: bool) -> Message {
        Message::Sync { members: self.view().cloned().collect(), settings: self.settings.values().cloned().collect(), reply }
    }

    pub fn setting(&self, name: &str) -> Option<&Setting> {
        self.settings.get(name)
    }

    /// Merges a setting; a newer one is kept, told as a rumor and reported.
    pub fn apply_setting(&mut self, setting: Setting, out: &mut Vec<Output>) -> bool {
        if self.settings.get(&setting.name).is_some_and(|known| !setting.supersedes(known)) {
            return false;
        }
        self.settings.insert(setting.name.clone(), setting.clone());
        self.rumors.push(Rumor::Setting(setting.clone()));
        out.push(Output::Setting(setting));
        true
    }

    /// Asks each seed (an address) for its view and sends ours: the join.
    pub fn join(&mut self, seeds: &[String], out: &mut Vec<Output>) {
        self.seeds = seeds.iter().filter(|s| **s != self.me.addr).cloned().collect();
        self.joined = self.seeds.is_empty();
        self.ask_seeds(out);
    }

    fn ask_seeds(&self, out: &mut Vec<Output>) {
        for seed in &self.seeds {
            let msg = self.sync_message(true);
            self.send(Peer { id: String::new(), addr: seed.clone() }, msg, out);
        }
    }

    /// Whether some member has answered with its view since `join`.
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// Announces that this member leaves on purpose, to `fanout` members now.
    pub fn leave(&mut self, rng: &mut impl Rng, out: &mut Vec<Output>) {
        self.claim_own(State::Left, rng, out);
    }

    /// Takes this member out of the cluster for good (a decommission): it
    /// claims `removed` at its own incarnation, which every member adopts,
    /// and never out-bids that claim again. It keeps running the protocol so
    /// its view stays current while it hands its data off.
    pub fn retire(&mut self, rng: &mut impl Rng, out: &mut Vec<Output>) {
        self.claim_own(State::Removed, rng, out);
    }

    /// Sets this member's own state and tells `fanout` members now. A
    /// retired member stays removed: any other news of it is weaker.
    fn claim_own(&mut self, state: State, rng: &mut impl Rng, out: &mut Vec<Output>) {
        if self.me.state == State::Removed {
            return;
        }
        self.me.state = state;
        self.rumors.push(Rumor::Member(self.me.clone()));
        out.push(Output::Changed(self.me.clone()));
        self.gossip(rng, out);
    }

    /// Merges one update into the view. Returns whether the view changed.
    pub fn apply(&mut self, now: Millis, update: Update, rng: &mut impl Rng, out: &mut Vec<Output>) -> bool {
        if update.id == self.me.id {
            // Someone holds a claim about this member at least as strong as its
            // own: out-bid it, unless this member is leaving or retired.
            if update.supersedes(&self.me) && !matches!(self.me.state, State::Left | State::Removed) {
                // Claims of removal included: a member that runs is a member.
                self.me.incarnation = update.incarnation + 1;
                self.rumors.push(Rumor::Member(self.me.clone()));
                out.push(Output::Changed(self.me.clone()));
                return true;
            }
            return false;
        }
        if update.id.is_empty() {
            return false;
        }
        match self.members.get_mut(&update.id) {
            Some(known) if !update.supersedes(known) => return false,
            Some(known) => {
                self.counts[known.state as usize] -= 1;
                *known = update.clone();
            }
            None => {
                self.members.insert(update.id.clone(), update.clone());
                // At a random spot still ahead in this pass: members learned in
                // the same order everywhere must not be probed in lockstep.
                let at = rng.gen_range(self.probe_pos.min(self.probe_order.len())..=self.probe_order.len());
                self.probe_order.insert(at, update.id.clone());
            }
        }
        self.counts[update.state as usize] += 1;
        if update.state == State::Suspect {
            self.suspects.insert(update.id.clone(), now);
        } else {
            self.suspects.remove(&update.id);
        }
        self.rumors.push(Rumor::Member(update.clone()));
        out.push(Output::Changed(update));
        true
    }

    /// A death read from another member's whole view is news of unknown age:
    /// after a partition each side holds the other dead, and taking that at
    /// its word would kill members this one reaches right now. Such a member
    /// is suspected instead, so it has a suspicion timeout to refute, as
    /// memberlist does with push-pull state. Deaths that arrive as rumors are
    /// fresh, and stand.
    fn doubt_death(&self, update: Update) -> Update {
        let reachable_here = self.members.get(&update.id).is_some_and(|known| known.state.reachable());
        if update.state == State::Dead && reachable_here {
            Update { state: State::Suspect, ..update }
        } else {
            update
        }
    }

    fn apply_rumors(&mut self, now: Millis, rumors: Vec<Rumor>, rng: &mut impl Rng, out: &mut Vec<Output>) {
        for rumor in rumors.into_iter().take(MAX_UPDATES_PER_MESSAGE) {
            match rumor {
                Rumor::Member(u) => {
                    self.apply(now, u, rng, out);
                }
                Rumor::Setting(s) => {
                    self.apply_setting(s, out);
                }
            }
        }
    }

    /// Up to `k` distinct random members whose state passes `ok`, as
    /// (id, address). Samples the probe order instead of scanning the view,
    /// so a tick costs O(k log n) however large the cluster.
    fn random_members(&self, k: usize, ok: impl Fn(&Update) -> bool, rng: &mut impl Rng) -> Vec<Peer> {
        let mut picked: Vec<Peer> = Vec::with_capacity(k);
        if self.probe_order.is_empty() {
            return picked;
        }
        for _ in 0..k * 8 {
            if picked.len() >= k {
                break;
            }
            let id = &self.probe_order[rng.gen_range(0..self.probe_order.len())];
            if let Some(known) = self.members.get(id).filter(|m| ok(m)) {
                if !picked.iter().any(|p| p.id == *id) {
                    picked.push(Peer::of(known));
                }
            }
        }
        picked
    }

    /// Runs whatever is due at `now`: suspicions that ran out, the probe
    /// cycle, gossip and the periodic sync.
    pub fn tick(&mut self, now: Millis, rng: &mut impl Rng, out: &mut Vec<Output>) {
        self.expire_suspicions(now, rng, out);
        self.relays.retain(|_, r| r.expires > now);
        self.probe_step(now, rng, out);
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            self.gossip(rng, out);
        }
        if now >= self.next_sync {
            self.next_sync = now + self.cfg.sync_interval;
            self.sync(rng, out);
        }
    }

    fn expire_suspicions(&mut self, now: Millis, rng: &mut impl Rng, out: &mut Vec<Output>) {
        let timeout = self.suspicion_timeout();
        let expired: Vec<Update> = self
            .suspects
            .iter()
            .filter(|(_, since)| now >= **since + timeout)
            .filter_map(|(id, _)| self.members.get(id))
            .map(|k| Update { state: State::Dead, ..k.clone() })
            .collect();
        for dead in expired {
            self.apply(now, dead, rng, out);
        }
    }

    fn probe_step(&mut self, now: Millis, rng: &mut impl Rng, out: &mut Vec<Output>) {
        if let Some(p) = self.probe.as_mut().filter(|p| !p.indirect_sent && now >= p.started + self.cfg.probe_timeout) {
            p.indirect_sent = true;
            let (target, seq) = (p.target.clone(), p.seq);
            self.probe_indirectly(&target, seq, rng, out);
        }
        if now < self.next_probe {
            return;
        }
        self.next_probe = now + self.cfg.probe_interval;
        if !self.joined {
            self.ask_seeds(out);
        }
        if let Some(failed) = self.probe.take() {
            // Neither the member nor anyone asking for us heard it this round.
            if let Some(k) = self.members.get(&failed.target).filter(|k| k.state == State::Alive) {
                let suspect = Update { state: State::Suspect, ..k.clone() };
                self.apply(now, suspect, rng, out);
            }
        }
        let Some(target) = self.next_probe_target(rng) else { return };
        let seq = self.take_seq();
        let to = Peer::of(&self.members[&target]);
        let rumors = self.piggyback_for(&target);
        self.send(to, Message::Ping { seq, target: target.clone(), rumors }, out);
        self.probe = Some(Probe { target, seq, started: now, indirect_sent: false });
    }

    /// Round-robin over a shuffled order, reshuffled after each pass, so
    /// every member is probed once per pass (SWIM's bounded detection time).
    fn next_probe_target(&mut self, rng: &mut impl Rng) -> Option<String> {
        for _ in 0..2 {
            while self.probe_pos < self.probe_order.len() {
                let id = &self.probe_order[self.probe_pos];
                self.probe_pos += 1;
                if self.members.get(id).is_some_and(|k| k.state.reachable()) {
                    return Some(id.clone());
                }
            }
            self.probe_order.retain(|id| self.members.contains_key(id));
            self.probe_order.shuffle(rng);
            self.probe_pos = 0;
        }
        None
    }

    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn probe_indirectly(&mut self, target: &str, seq: u64, rng: &mut impl Rng, out: &mut Vec<Output>) {
        let Some(target_addr) = self.members.get(target).map(|k| k.addr.clone()) else { return };
        let helpers = self.random_members(self.cfg.indirect_probes, |u| u.id != target && u.state == State::Alive, rng);
        for helper in helpers {
            let rumors = self.piggyback();
            let msg = Message::PingReq { seq, target: target.to_string(), target_addr: target_addr.clone(), rumors };
            self.send(helper, msg, out);
        }
    }

    fn gossip(&mut self, rng: &mut impl Rng, out: &mut Vec<Output>) {
        if self.rumors.is_empty() {
            return;
        }
        let targets = self.random_members(self.cfg.fanout, |u| u.state.reachable(), rng);
        if targets.is_empty() {
            // Nobody to tell: this member is cut off, and what it says about
            // others describes the cut. Kept, it would be told once the member
            // is back, stale: a death declared alone would kill members the
            // others reached all along. Its view still travels, doubted, in
            // syncs. Claims about itself (a refutation) and settings stay.
            let me = self.me.id.clone();
            self.rumors.retain(|r| !matches!(r, Rumor::Member(u) if u.id != me));
            return;
        }
        for to in targets {
            let rumors = self.piggyback();
            if rumors.is_empty() {
                break;
            }
            self.send(to, Message::Gossip { rumors }, out);
        }
    }

    /// Push-pull with one random member, dead ones included: after a
    /// partition both sides think the other dead, and only a sync across it
    /// lets them find out otherwise and refute.
    fn sync(&mut self, rng: &mut impl Rng, out: &mut Vec<Output>) {
        if let Some(to) = self.random_members(1, |u| matches!(u.state, State::Alive | State::Suspect | State::Dead), rng).pop() {
            let msg = self.sync_message(true);
            self.send(to, msg, out);
        }
    }

    /// Handles one message that arrived at `now`.
    pub fn handle(&mut self, now: Millis, envelope: Envelope, rng: &mut impl Rng, out: &mut Vec<Output>) {
        let Envelope { from, msg } = envelope;
        let sender = Peer::of(&from);
        if from.id != self.me.id {
            self.apply(now, from, rng, out);
        }
        match msg {
            Message::Ping { seq, target, rumors } => {
                self.apply_rumors(now, rumors, rng, out);
                if target == self.me.id {
                    let rumors = self.piggyback();
                    self.send(sender, Message::Ack { seq, rumors }, out);
                }
            }
            Message::Ack { seq, rumors } => {
                self.apply_rumors(now, rumors, rng, out);
                if self.probe.as_ref().is_some_and(|p| p.seq == seq) {
                    self.probe = None;
                } else if let Some(relay) = self.relays.remove(&seq) {
                    let rumors = self.piggyback();
                    self.send(relay.to, Message::Ack { seq: relay.seq, rumors }, out);
                }
            }
            Message::PingReq { seq, target, target_addr, rumors } => {
                self.apply_rumors(now, rumors, rng, out);
                if target == self.me.id {
                    let rumors = self.piggyback();
                    self.send(sender, Message::Ack { seq, rumors }, out);
                } else if self.relays.len() < MAX_RELAYS {
                    let own = self.take_seq();
                    self.relays.insert(own, Relay { to: sender, seq, expires: now + self.cfg.probe_interval });
                    let rumors = self.piggyback_for(&target);
                    self.send(Peer { id: target.clone(), addr: target_addr }, Message::Ping { seq: own, target, rumors }, out);
                }
            }
            Message::Gossip { rumors } => self.apply_rumors(now, rumors, rng, out),
            Message::Sync { members, settings, reply } => {
                for u in members.into_iter().take(MAX_UPDATES_PER_MESSAGE) {
                    let u = self.doubt_death(u);
                    self.apply(now, u, rng, out);
                }
                for setting in settings.into_iter().take(MAX_UPDATES_PER_MESSAGE) {
                    self.apply_setting(setting, out);
                }
                self.joined = true;
                if reply {
                    let msg = self.sync_message(false);
                    self.send(sender, msg, out);
                }
            }
        }
    }
}

/// Updates taken from one message; a larger view is cut (its rest arrives
/// by later syncs), so one message cannot make a node work without bound.
pub const MAX_UPDATES_PER_MESSAGE: usize = 16_384;
/// Indirect probes run for others at once.
const MAX_RELAYS: usize = 1024;

#[cfg(test)]
#[path = "swim_tests.rs"]
mod tests;
