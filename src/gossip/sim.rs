//! The epidemic simulator behind `hearsay sim`: thousands of [`Swim`]
//! members, the same code a node runs, over a virtual clock and an
//! in-memory network that delays, loses and partitions messages. One seeded
//! RNG drives everything, so a seed replays a run exactly.

use super::message::{Envelope, State};
use super::swim::{Millis, Output, Swim, SwimConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Chance that any one message is lost.
    pub loss: f64,
    /// One-way delay, uniform in `[min, max]` ms.
    pub latency: (Millis, Millis),
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig { loss: 0.0, latency: (1, 10) }
    }
}

/// What the simulator saw happen, for tests and the report.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub messages: u64,
    pub lost: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    /// (observer, member) events where a running member was declared dead.
    pub false_deaths: u64,
    /// Suspicions raised against running members.
    pub false_suspicions: u64,
}

pub struct Sim {
    pub swim: SwimConfig,
    pub net: NetConfig,
    pub now: Millis,
    rng: SmallRng,
    nodes: Vec<Swim>,
    running: Vec<bool>,
    by_addr: HashMap<String, usize>,
    /// Partition side of each member; messages between sides are dropped.
    side: Vec<u8>,
    in_flight: BTreeMap<(Millis, u64), (usize, Envelope)>,
    next_msg: u64,
    wakeups: BinaryHeap<Reverse<(Millis, usize)>>,
    pub counters: Counters,
}

pub fn member_id(i: usize) -> String {
    format!("m{i}")
}

fn member_addr(i: usize) -> String {
    format!("sim:{i}")
}

impl Sim {
    pub fn new(swim: SwimConfig, net: NetConfig, seed: u64) -> Sim {
        Sim {
            swim,
            net,
            now: 0,
            rng: SmallRng::seed_from_u64(seed),
            nodes: Vec::new(),
            running: Vec::new(),
            by_addr: HashMap::new(),
            side: Vec::new(),
            in_flight: BTreeMap::new(),
            next_msg: 0,
            wakeups: BinaryHeap::new(),
            counters: Counters::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.running[i]
    }

    /// Starts a new member now, joining through `seeds` (member indexes).
    pub fn add_member(&mut self, seeds: &[usize]) -> usize {
        let i = self.nodes.len();
        // A fresh life's incarnation: the clock, as a node does at start.
        let swim = Swim::new(self.swim.clone(), &member_id(i), &member_addr(i), self.now, self.now);
        self.nodes.push(swim);
        self.running.push(true);
        self.side.push(0);
        self.by_addr.insert(member_addr(i), i);
        let seeds: Vec<String> = seeds.iter().map(|&s| member_addr(s)).collect();
        let mut out = Vec::new();
        self.nodes[i].join(&seeds, &mut out);
        self.perform(i, out);
        i
    }

    /// Stops a member: it neither sends nor receives again.
    pub fn crash(&mut self, i: usize) {
        self.running[i] = false;
    }

    /// Splits the members into sides; messages between sides are lost.
    pub fn partition(&mut self, side_of: impl Fn(usize) -> u8) {
        self.side = (0..self.nodes.len()).map(side_of).collect();
    }

    pub fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
    }

    /// Member `i` starts a setting, as an operator's change on that node.
    pub fn publish(&mut self, i: usize, setting: super::message::Setting) {
        let mut out = Vec::new();
        self.nodes[i].apply_setting(setting, &mut out);
        self.perform(i, out);
    }

    /// Whether every running member holds setting `name` at `stamp`.
    pub fn all_have_setting(&self, name: &str, stamp: u64) -> bool {
        (0..self.nodes.len()).filter(|&i| self.running[i]).all(|i| self.nodes[i].setting(name).is_some_and(|s| s.stamp == stamp))
    }

    pub fn view_of(&self, i: usize, member: usize) -> Option<State> {
        self.nodes[i].get(&member_id(member)).map(|u| u.state)
    }

    /// Whether every running member sees `member` in `state`.
    pub fn all_see(&self, member: usize, state: State) -> bool {
        (0..self.nodes.len()).filter(|&i| self.running[i] && i != member).all(|i| self.view_of(i, member) == Some(state))
    }

    /// Whether every running member holds `member` alive or suspect.
    pub fn all_know(&self, member: usize) -> bool {
        (0..self.nodes.len())
            .filter(|&i| self.running[i] && i != member)
            .all(|i| matches!(self.view_of(i, member), Some(State::Alive | State::Suspect)))
    }

    /// Whether every running member knows every running member and holds
    /// none of them dead (a passing suspicion, which loss causes, is allowed).
    pub fn converged(&self) -> bool {
        // Every member in a view is a simulated one, so counts suffice.
        let running = self.running.iter().filter(|r| **r).count();
        (0..self.nodes.len())
            .filter(|&i| self.running[i])
            .all(|i| self.nodes[i].count(State::Alive) + self.nodes[i].count(State::Suspect) == running)
    }

    /// Runs `ms` of simulated time.
    pub fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        self.run_until(end, end, |_| false);
    }

    /// Runs until `cond` holds (checked every `check_every` ms) or `until`;
    /// returns the time it first held.
    pub fn run_until(&mut self, until: Millis, check_every: Millis, cond: impl Fn(&Sim) -> bool) -> Option<Millis> {
        let mut next_check = self.now;
        loop {
            if self.now >= next_check {
                if cond(self) {
                    return Some(self.now);
                }
                next_check = self.now + check_every;
            }
            if self.now >= until {
                return None;
            }
            self.step(next_check.min(until));
        }
    }

    /// Processes every event up to `to`, then sets the clock there.
    fn step(&mut self, to: Millis) {
        loop {
            let msg_at = self.in_flight.first_key_value().map(|(k, _)| k.0);
            let wake_at = self.wakeups.peek().map(|Reverse((t, _))| *t);
            let at = match (msg_at, wake_at) {
                (Some(m), Some(w)) => m.min(w),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => break,
            };
            if at > to {
                break;
            }
            self.now = self.now.max(at);
            if msg_at == Some(at) {
                let (_, (to_node, envelope)) = self.in_flight.pop_first().expect("peeked");
                if self.running[to_node] {
                    let mut out = Vec::new();
                    self.nodes[to_node].handle(self.now, envelope, &mut self.rng, &mut out);
                    self.perform(to_node, out);
                }
            } else {
                let Reverse((_, i)) = self.wakeups.pop().expect("peeked");
                if self.running[i] && self.nodes[i].next_wakeup() <= at {
                    let mut out = Vec::new();
                    self.nodes[i].tick(self.now, &mut self.rng, &mut out);
                    self.perform(i, out);
                }
            }
        }
        self.now = self.now.max(to);
    }

    fn perform(&mut self, from: usize, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send { to, envelope } => {
                    self.counters.messages += 1;
                    *self.counters.by_kind.entry(envelope.msg.kind()).or_default() += 1;
                    let Some(&to) = self.by_addr.get(&to.addr) else { continue };
                    if self.side[from] != self.side[to] || self.rng.gen_bool(self.net.loss.clamp(0.0, 1.0)) {
                        self.counters.lost += 1;
                        continue;
                    }
                    let delay = self.rng.gen_range(self.net.latency.0..=self.net.latency.1.max(self.net.latency.0));
                    self.next_msg += 1;
                    self.in_flight.insert((self.now + delay, self.next_msg), (to, envelope));
                }
                Output::Setting(_) => {}
                Output::Changed(update) => {
                    let running = self.by_addr.get(&update.addr).is_some_and(|&m| self.running[m]);
                    match update.state {
                        State::Dead if running => self.counters.false_deaths += 1,
                        State::Suspect if running => self.counters.false_suspicions += 1,
                        _ => {}
                    }
                }
            }
        }
        let at = self.nodes[from].next_wakeup();
        self.wakeups.push(Reverse((at, from)));
    }
}

/// The scenario `hearsay sim` runs, and what it measured.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub members: usize,
    pub crash: usize,
    pub seed: u64,
    pub net: NetConfig,
    pub swim: SwimConfig,
    /// How long to keep running after the crash is detected, counting false alarms.
    pub soak: Millis,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    /// All members start at once, each joining through member 0: until
    /// every one sees every one alive.
    pub converged_ms: Option<Millis>,
    /// One more member joins through a random member: until all see it.
    pub join_spread_ms: Option<Millis>,
    /// After `crash` members stop: until one member suspects one of them,
    /// and until every running member holds all of them dead.
    pub first_suspicion_ms: Option<Millis>,
    pub all_dead_ms: Option<Millis>,
    pub counters: Counters,
    pub elapsed_ms: Millis,
}

pub fn run(scenario: Scenario) -> Report {
    let mut sim = Sim::new(scenario.swim.clone(), scenario.net.clone(), scenario.seed);
    sim.add_member(&[]);
    for _ in 1..scenario.members.max(1) {
        sim.add_member(&[0]);
    }
    let horizon = 600_000;
    let check = 100;
    let converged_ms = sim.run_until(horizon, check, Sim::converged);

    let t0 = sim.now;
    let seed = sim.rng.gen_range(0..sim.len());
    let newcomer = sim.add_member(&[seed]);
    let join_spread_ms = sim.run_until(t0 + horizon, check, |s| s.all_know(newcomer)).map(|t| t - t0);

    let t1 = sim.now;
    let mut victims = Vec::new();
    while victims.len() < scenario.crash.min(sim.len().saturating_sub(1)) {
        let v = sim.rng.gen_range(0..sim.len());
        if !victims.contains(&v) {
            victims.push(v);
            sim.crash(v);
        }
    }
    let suspected = |s: &Sim| victims.iter().any(|&v| (0..s.len()).any(|i| s.is_running(i) && s.view_of(i, v) != Some(State::Alive)));
    let first_suspicion_ms = if victims.is_empty() { None } else { sim.run_until(t1 + horizon, check, suspected).map(|t| t - t1) };
    let all_dead = |s: &Sim| victims.iter().all(|&v| s.all_see(v, State::Dead));
    let all_dead_ms = if victims.is_empty() { None } else { sim.run_until(t1 + horizon, check, all_dead).map(|t| t - t1) };
    sim.run_for(scenario.soak);
    Report { scenario, converged_ms, join_spread_ms, first_suspicion_ms, all_dead_ms, counters: sim.counters.clone(), elapsed_ms: sim.now }
}

impl Report {
    /// The report `hearsay sim` prints.
    pub fn text(&self) -> String {
        let s = &self.scenario;
        let ms = |v: Option<Millis>| v.map_or_else(|| "never".to_string(), |v| format!("{:.1} s", v as f64 / 1000.0));
        let rounds =
            |v: Option<Millis>| v.map_or_else(String::new, |v| format!(" ({:.1} gossip rounds)", v as f64 / s.swim.gossip_interval as f64));
        let n = s.members + 1;
        let per_member_s = self.counters.messages as f64 / n as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0);
        let mut out = format!(
            "members {} (+1 joining), loss {:.0}%, latency {}-{} ms, seed {}\n",
            s.members,
            s.net.loss * 100.0,
            s.net.latency.0,
            s.net.latency.1,
            s.seed
        );
        out += &format!("  all views complete after start   {}\n", ms(self.converged_ms));
        out += &format!(
            "  a join reached every member in   {}{}  (log2 n = {:.1})\n",
            ms(self.join_spread_ms),
            rounds(self.join_spread_ms),
            (n as f64).log2()
        );
        if s.crash > 0 {
            out += &format!("  {} crashed: first suspicion after {}\n", s.crash, ms(self.first_suspicion_ms));
            out += &format!("  {} crashed: dead everywhere after {}\n", s.crash, ms(self.all_dead_ms));
        }
        out += &format!(
            "  false alarms about running members (one per member that raised or heard it): {} suspicions, {} deaths\n",
            self.counters.false_suspicions, self.counters.false_deaths
        );
        let kinds: Vec<String> = self.counters.by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!(
            "  messages: {:.1} per member per second over {:.0} s ({}; {} lost)\n",
            per_member_s,
            self.elapsed_ms as f64 / 1000.0,
            kinds.join(", "),
            self.counters.lost
        );
        out
    }
}
