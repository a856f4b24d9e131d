//! Who is in the cluster: this node plus every node reachable through
//! `--seeds`, learned by a `hello` exchange and persisted so a restart knows
//! its peers even while they are down, and each member's health as the
//! gossip worker ([`Membership::gossip`]) sees it: alive, suspect, dead or
//! left. Gossip also spreads joins, and removals an operator asks for:
//! of a member that is down, or of this node itself while it runs (a
//! decommission, [`Membership::retire`]). Everything else asks this one type
//! for members, addresses and the placement table. Placement follows
//! removals only: a dead member keeps its shards (DESIGN.md §2) until it is
//! removed.

use crate::clock::{Clock, SystemClock};
use crate::gossip::{Envelope, GossipPacket, Message, Millis, Output, Peer, Rumor, Setting, State as Health, Swim, SwimConfig, Update};
use crate::metrics::{GossipStats, KindLabels, StateLabels};
use crate::placement::PlacementTable;
use crate::rpc::client::PeerClient;
use crate::rpc::{Hello, HelloReply, PATH_GOSSIP, PATH_HELLO};
use crate::storage::{Storage, StorageError};
use crate::types::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const META_MEMBERS: &str = "members";
/// Members an operator removed: `[(id, (incarnation removed at, address))]`.
const META_REMOVED: &str = "removed_members";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub id: String,
    pub addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("node {name:?} has {theirs} shards, this cluster has {ours}; refusing it")]
    ShardMismatch { name: String, ours: u32, theirs: u32 },
    #[error("node {name:?} runs with replication factor {theirs}, this node with {ours}; refusing it: placement depends on it, so every member must run with the same --replication-factor")]
    RfMismatch { name: String, ours: u32, theirs: u32 },
    #[error("node names {a:?} and {b:?} hash to the same 64-bit tag; rename one")]
    TagCollision { a: String, b: String },
    #[error("member {0:?} was removed from the cluster; it comes back only by running again (with a new incarnation)")]
    Removed(String),
    #[error("{0:?} is not a member")]
    NotAMember(String),
    #[error("a node cannot remove itself; to take a running node out, decommission it (POST /admin/decommission on it)")]
    RemoveSelf,
    #[error("member {name:?} is {state}: only a member that is down (dead or left) can be removed; stop it first")]
    NotDown { name: String, state: &'static str },
    #[error("the gossip worker is busy; try again")]
    Busy,
    #[error("this node does not know its cluster yet (seeds have not answered); try again once /ready says so")]
    NotReady,
    #[error("decommissioning would leave {remaining} members for replication factor {rf}; add a node first")]
    TooFewMembers { remaining: usize, rf: usize },
    #[error("invalid node id: {0}")]
    BadId(#[from] crate::types::NodeIdError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

struct State {
    members: BTreeMap<String, Member>,
    placement: Arc<PlacementTable>,
    answered_seeds: HashSet<String>,
    /// Why each seed that answered and refused this node (or was refused by
    /// it) did, until it is met: for `/ready` and a log line per new reason.
    seed_refusals: BTreeMap<String, String>,
    /// (state, incarnation) per member, as the gossip worker last heard.
    health: BTreeMap<String, (Health, u64)>,
    /// Removed members: the incarnation they were removed at, and their
    /// last address (persisted).
    removed: BTreeMap<String, (u64, String)>,
}

impl State {
    fn is_removed_addr(&self, addr: &str) -> bool {
        self.removed.values().any(|(_, a)| a == addr)
    }
}

/// Gossip messages waiting for the worker; beyond this many the route
/// answers 503 and the sender's probe times out, as on a lossy link.
const GOSSIP_INBOX: usize = 1024;
/// How long a gossip send may take: an ack later than the probe timeout is
/// worthless anyway.
const GOSSIP_SEND_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Membership {
    me: Member,
    shards: u32,
    rf: usize,
    seeds: Vec<String>,
    state: RwLock<State>,
    storage: Arc<dyn Storage>,
    inbox: tokio::sync::mpsc::Sender<Envelope>,
    /// Cluster settings as gossip last heard them, by name.
    settings: tokio::sync::watch::Sender<BTreeMap<String, Setting>>,
    /// The worker's end of `inbox`, taken once by [`Membership::gossip`].
    inbox_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Envelope>>>,
    /// Wakes the gossip worker to spread the retirement.
    retire_now: tokio::sync::Notify,
    /// Bumped whenever placement is rebuilt, so data can follow it at once.
    placement_generation: tokio::sync::watch::Sender<u64>,
    /// Whether `removed` holds this node: asked on every peer apply and
    /// read, so kept apart from the lock.
    retired: AtomicBool,
}

impl Membership {
    /// This node, its seeds, and the members a previous run persisted.
    pub fn open(me: Member, seeds: Vec<String>, shards: u32, rf: usize, storage: Arc<dyn Storage>) -> Result<Membership, MembershipError> {
        let mut members = BTreeMap::new();
        if let Some(raw) = storage.meta_get(META_MEMBERS)? {
            let saved: Vec<(String, String)> =
                serde_json::from_slice(&raw).map_err(|e| StorageError::Corrupt(format!("persisted members: {e}")))?;
            for (id, addr) in saved {
                members.insert(id.clone(), Member { id, addr });
            }
        }
        let removed: BTreeMap<String, (u64, String)> = match storage.meta_get(META_REMOVED)? {
            Some(raw) => serde_json::from_slice::<Vec<(String, (u64, String))>>(&raw)
                .map_err(|e| StorageError::Corrupt(format!("persisted removed members: {e}")))?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        // A node that retired stays out of its own placement across restarts,
        // so whatever it still holds keeps being handed off.
        let retired = removed.contains_key(&me.id);
        if !retired {
            members.insert(me.id.clone(), me.clone());
        }
        let seeds: Vec<String> = seeds.into_iter().filter(|s| !s.is_empty() && *s != me.addr).collect();
        let (inbox, rx) = tokio::sync::mpsc::channel(GOSSIP_INBOX);
        let m = Membership {
            me,
            shards,
            rf,
            seeds,
            state: RwLock::new(State {
                members,
                placement: Arc::default(),
                answered_seeds: HashSet::new(),
                seed_refusals: BTreeMap::new(),
                health: BTreeMap::new(),
                removed,
            }),
            storage,
            inbox,
            settings: tokio::sync::watch::Sender::new(BTreeMap::new()),
            inbox_rx: std::sync::Mutex::new(Some(rx)),
            retire_now: tokio::sync::Notify::new(),
            placement_generation: tokio::sync::watch::Sender::new(0),
            retired: AtomicBool::new(retired),
        };
        m.rebuild(&mut m.state.write().expect("membership lock"));
        Ok(m)
    }

    fn rebuild(&self, state: &mut State) {
        let ids: Vec<NodeId> = state.members.keys().filter_map(|n| NodeId::new(n).ok()).collect();
        state.placement = Arc::new(PlacementTable::new(&ids, self.shards, self.rf));
        self.placement_generation.send_modify(|g| *g += 1);
    }

    /// Changes whenever placement does (a join, a removal, a decommission).
    pub fn placement_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.placement_generation.subscribe()
    }

    pub fn me(&self) -> &Member {
        &self.me
    }

    pub fn members(&self) -> Vec<Member> {
        self.state.read().expect("membership lock").members.values().cloned().collect()
    }

    pub fn placement(&self) -> Arc<PlacementTable> {
        self.state.read().expect("membership lock").placement.clone()
    }

    pub fn addr_of(&self, id: &str) -> Option<String> {
        self.state.read().expect("membership lock").members.get(id).map(|m| m.addr.clone())
    }

    /// Ready once every seed has answered at least once; a seed that is a
    /// removed member's address is not waited for. A retired node knows all
    /// it needs (where its data goes) from its persisted view; the seeds
    /// would refuse its hello anyway.
    pub fn is_ready(&self) -> bool {
        if self.is_retired() {
            return true;
        }
        let state = self.state.read().expect("membership lock");
        self.seeds.iter().all(|s| state.answered_seeds.contains(s) || state.is_removed_addr(s))
    }

    fn is_removed_addr(&self, addr: &str) -> bool {
        self.state.read().expect("membership lock").is_removed_addr(addr)
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Adds or updates a member; returns whether anything changed. A node
    /// met directly has passed [`Self::check_shape`] first.
    pub fn learn(&self, id: &str, addr: &str) -> Result<bool, MembershipError> {
        let node = NodeId::new(id)?;
        let mut state = self.state.write().expect("membership lock");
        if state.removed.contains_key(id) {
            return Err(MembershipError::Removed(id.to_string()));
        }
        if let Some(other) = state.members.keys().find(|n| *n != id && NodeId::new(n).is_ok_and(|o| o.tag() == node.tag())) {
            return Err(MembershipError::TagCollision { a: other.clone(), b: id.to_string() });
        }
        let member = Member { id: id.to_string(), addr: addr.to_string() };
        if state.members.get(id) == Some(&member) {
            return Ok(false);
        }
        state.members.insert(id.to_string(), member);
        self.rebuild(&mut state);
        self.persist(&state)?;
        tracing::info!(member = id, addr, members = state.members.len(), "member joined the view");
        Ok(true)
    }

    fn persist(&self, state: &State) -> Result<(), StorageError> {
        let saved: Vec<(&String, &String)> = state.members.values().map(|m| (&m.id, &m.addr)).collect();
        self.storage.meta_put(META_MEMBERS, &serde_json::to_vec(&saved).expect("plain data serializes"))?;
        let removed: Vec<(&String, &(u64, String))> = state.removed.iter().collect();
        self.storage.meta_put(META_REMOVED, &serde_json::to_vec(&removed).expect("plain data serializes"))
    }

    /// Takes a member out of the view and placement, for good unless it runs
    /// again with a higher incarnation than `incarnation`.
    fn drop_removed(&self, id: &str, incarnation: u64, addr: &str) -> Result<(), StorageError> {
        let mut state = self.state.write().expect("membership lock");
        if state.removed.get(id).is_some_and(|(inc, _)| *inc >= incarnation) {
            return Ok(());
        }
        state.removed.insert(id.to_string(), (incarnation, addr.to_string()));
        self.retired.store(state.removed.contains_key(&self.me.id), Ordering::SeqCst);
        state.members.remove(id);
        self.rebuild(&mut state);
        self.persist(&state)?;
        tracing::warn!(member = id, members = state.members.len(), "member removed from the cluster; its shards are placed on the others");
        Ok(())
    }

    /// Forgets a removal that a newer life of the member outbids.
    fn readmit(&self, id: &str, incarnation: u64) -> Result<(), StorageError> {
        let mut state = self.state.write().expect("membership lock");
        if state.removed.get(id).is_some_and(|(inc, _)| *inc < incarnation) {
            state.removed.remove(id);
            self.retired.store(state.removed.contains_key(&self.me.id), Ordering::SeqCst);
            self.persist(&state)?;
            tracing::info!(member = id, "a removed member runs again; taking it back");
        }
        Ok(())
    }

    /// `POST /admin/members/{id}/remove`: removes a member that is down by
    /// spreading a `removed` claim at its current incarnation.
    pub fn remove(&self, id: &str) -> Result<(), MembershipError> {
        if id == self.me.id {
            return Err(MembershipError::RemoveSelf);
        }
        let (addr, health) = {
            let state = self.state.read().expect("membership lock");
            let member = state.members.get(id).ok_or_else(|| MembershipError::NotAMember(id.to_string()))?;
            (member.addr.clone(), state.health.get(id).copied())
        };
        let incarnation = match health {
            Some((Health::Dead | Health::Left, inc)) => inc,
            other => {
                let state = other.map_or("not yet heard from by gossip", |(s, _)| s.name());
                return Err(MembershipError::NotDown { name: id.to_string(), state });
            }
        };
        let claim = Update { id: id.to_string(), addr, incarnation, state: Health::Removed };
        if !self.hand_to_worker(Rumor::Member(claim)) {
            return Err(MembershipError::Busy);
        }
        Ok(())
    }

    /// `POST /admin/decommission`: takes this running node out of the
    /// cluster. Gossip spreads its removal at its own incarnation; every
    /// member then places its shards on the others, this one included, and
    /// the hand-off worker moves what it holds to their new replicas.
    /// Asking again is harmless.
    /// The removal is persisted before this returns, so a crash cannot bring
    /// the node back as a member; it never is again (only a wiped data dir
    /// joins anew).
    pub fn retire(&self) -> Result<(), MembershipError> {
        if self.is_retired() {
            return Ok(());
        }
        if !self.is_ready() {
            return Err(MembershipError::NotReady);
        }
        let incarnation = {
            let state = self.state.read().expect("membership lock");
            let remaining = state.members.len().saturating_sub(1);
            if remaining < self.rf {
                return Err(MembershipError::TooFewMembers { remaining, rf: self.rf });
            }
            // The gossip worker reports this node's claim as soon as it starts.
            state.health.get(&self.me.id).map_or(0, |(_, inc)| *inc)
        };
        tracing::warn!(node = %self.me.id, "decommission: leaving the cluster; every record this node holds is handed off to its new replicas");
        self.drop_removed(&self.me.id, incarnation, &self.me.addr)?;
        self.retire_now.notify_one();
        Ok(())
    }

    /// Whether this node was decommissioned: it is out of its own placement,
    /// replicates nothing, and only hands off what it still holds.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Gives a rumor this node starts to the gossip worker, as if heard from
    /// itself, so it spreads like any other; false when the inbox is full.
    fn hand_to_worker(&self, rumor: Rumor) -> bool {
        // The sender's own claim is skipped for this node, so its fields do not matter.
        let me = Update { id: self.me.id.clone(), addr: self.me.addr.clone(), incarnation: 0, state: Health::Alive };
        self.deliver(Envelope { from: me, msg: Message::Gossip { rumors: vec![rumor] } })
    }

    /// Spreads a cluster setting (newest stamp wins); false when the gossip
    /// worker's inbox is full.
    pub fn publish_setting(&self, setting: Setting) -> bool {
        self.hand_to_worker(Rumor::Setting(setting))
    }

    /// Cluster settings as gossip last heard them; changes wake the receiver.
    pub fn subscribe_settings(&self) -> tokio::sync::watch::Receiver<BTreeMap<String, Setting>> {
        self.settings.subscribe()
    }

    /// Whether gossip holds `id` dead or left: not worth waiting for.
    pub fn is_down(&self, id: &str) -> bool {
        matches!(self.state.read().expect("membership lock").health.get(id), Some((Health::Dead | Health::Left, _)))
    }

    pub fn is_removed(&self, id: &str) -> bool {
        self.state.read().expect("membership lock").removed.contains_key(id)
    }

    /// Members removed, with the incarnation they were removed at.
    pub fn removed(&self) -> BTreeMap<String, u64> {
        self.state.read().expect("membership lock").removed.iter().map(|(id, (inc, _))| (id.clone(), *inc)).collect()
    }

    pub fn hello(&self) -> Hello {
        Hello { node: self.me.id.clone(), addr: self.me.addr.clone(), shards: self.shards, rf: self.rf_u32() }
    }

    pub fn hello_reply(&self) -> HelloReply {
        let members = self.members().into_iter().map(|m| (m.id, m.addr)).collect();
        HelloReply { node: self.me.id.clone(), addr: self.me.addr.clone(), shards: self.shards, rf: self.rf_u32(), members }
    }

    fn rf_u32(&self) -> u32 {
        u32::try_from(self.rf).unwrap_or(u32::MAX)
    }

    /// Refuses a node (met by hello or gossip) whose shard count or
    /// replication factor differs from this node's: each would place shards
    /// on other replicas, so writes, repair and hand-off would disagree on
    /// who holds what.
    pub fn check_shape(&self, name: &str, shards: u32, rf: u32) -> Result<(), MembershipError> {
        if shards != self.shards {
            return Err(MembershipError::ShardMismatch { name: name.to_string(), ours: self.shards, theirs: shards });
        }
        if rf != self.rf_u32() {
            return Err(MembershipError::RfMismatch { name: name.to_string(), ours: self.rf_u32(), theirs: rf });
        }
        Ok(())
    }

    fn absorb(&self, reply: &HelloReply) -> Result<(), MembershipError> {
        self.check_shape(&reply.node, reply.shards, reply.rf)?;
        self.learn(&reply.node, &reply.addr)?;
        for (id, addr) in &reply.members {
            if *id != self.me.id {
                match self.learn(id, addr) {
                    // The seed has not heard of the removal yet.
                    Err(MembershipError::Removed(_)) => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Notes why `seed` and this node did not meet; logs it when it is new,
    /// not at every retry.
    fn seed_refused(&self, seed: &str, reason: String) {
        let mut state = self.state.write().expect("membership lock");
        if state.seed_refusals.get(seed) != Some(&reason) {
            tracing::error!(seed, "{reason}");
            state.seed_refusals.insert(seed.to_string(), reason);
        }
    }

    /// Why a seed and this node did not meet, for the first seed that
    /// refused (or was refused), if any.
    pub fn seed_refusal(&self) -> Option<String> {
        self.state.read().expect("membership lock").seed_refusals.values().next().cloned()
    }

    /// Worker: says hello to every seed, every second until all have
    /// answered, then every 30 s; stops when `shutdown` resolves.
    pub async fn discover(self: Arc<Self>, peers: PeerClient, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            // A retired node is not joining: the seeds refuse a removed member.
            // Nor is a removed member's address asked (a retired node still
            // answers, with a hello this node must refuse).
            let seeds = if self.is_retired() { &[][..] } else { &self.seeds[..] };
            for seed in seeds.iter().filter(|s| !self.is_removed_addr(s)) {
                match peers.call::<_, HelloReply>(("", seed), PATH_HELLO, &self.hello(), Duration::from_secs(2)).await {
                    Ok(reply) => match self.absorb(&reply) {
                        Ok(()) => {
                            let mut state = self.state.write().expect("membership lock");
                            state.answered_seeds.insert(seed.clone());
                            state.seed_refusals.remove(seed);
                        }
                        Err(e) => self.seed_refused(seed, format!("this node refuses seed {seed}: {e}")),
                    },
                    // A seed that answers and refuses (another shard count or
                    // replication factor, another secret) will not change its
                    // mind by itself: that is for the operator to see.
                    Err(e @ crate::rpc::client::RpcError::Refused { .. }) => {
                        self.seed_refused(seed, format!("seed {seed} refused this node: {e}"));
                    }
                    Err(e) => tracing::debug!(seed, error = %e, "seed did not answer"),
                }
            }
            let pause = if self.is_ready() { Duration::from_secs(30) } else { Duration::from_millis(500) };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => return,
            }
        }
    }
}

/// A member and its health, for `/admin/cluster`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberStatus {
    pub id: String,
    pub addr: String,
    /// `alive`, `suspect`, `dead` or `left`; `unknown` until gossip has
    /// heard of the member.
    pub state: &'static str,
    pub incarnation: Option<u64>,
}

impl Membership {
    /// Every member with its health.
    pub fn statuses(&self) -> Vec<MemberStatus> {
        let state = self.state.read().expect("membership lock");
        state
            .members
            .values()
            .map(|m| {
                let health = state.health.get(&m.id);
                MemberStatus {
                    id: m.id.clone(),
                    addr: m.addr.clone(),
                    state: health.map_or("unknown", |h| h.0.name()),
                    incarnation: health.map(|h| h.1),
                }
            })
            .collect()
    }

    /// Hands a received gossip message to the worker; false when its inbox
    /// is full (the message is dropped, like a lost packet).
    pub fn deliver(&self, envelope: Envelope) -> bool {
        self.inbox.try_send(envelope).is_ok()
    }

    /// Takes in what the gossip worker saw change about a member.
    fn observe(&self, update: &Update) {
        self.state.write().expect("membership lock").health.insert(update.id.clone(), (update.state, update.incarnation));
        if update.id == self.me.id {
            // Only [`Swim::retire`] makes this node's own claim `removed`.
            if update.state == Health::Removed {
                if let Err(e) = self.drop_removed(&update.id, update.incarnation, &update.addr) {
                    tracing::error!(error = %e, "retirement not persisted");
                }
            }
            return;
        }
        let done = match update.state {
            Health::Removed => self.drop_removed(&update.id, update.incarnation, &update.addr).map_err(MembershipError::from),
            // A join spread by rumor, a member back at a new address, or a
            // removed member running again.
            Health::Alive => self
                .readmit(&update.id, update.incarnation)
                .map_err(MembershipError::from)
                .and_then(|()| self.learn(&update.id, &update.addr).map(|_| ())),
            _ => Ok(()),
        };
        if let Err(e) = done {
            tracing::warn!(member = %update.id, state = update.state.name(), error = %e, "membership change not applied");
        }
    }

    fn perform(&self, peers: &PeerClient, stats: &GossipStats, out: &mut Vec<Output>) {
        for o in out.drain(..) {
            match o {
                Output::Send { to: Peer { id, addr }, envelope } => {
                    stats.messages.get_or_create(&KindLabels { kind: envelope.msg.kind().to_string() }).inc();
                    let peers = peers.clone();
                    let packet = GossipPacket { shards: self.shards, rf: self.rf_u32(), envelope };
                    tokio::spawn(async move {
                        let sent = peers.call::<_, ()>((id.as_str(), addr.as_str()), PATH_GOSSIP, &packet, GOSSIP_SEND_TIMEOUT).await;
                        if let Err(e) = sent {
                            tracing::trace!(to = %addr, kind = packet.envelope.msg.kind(), error = %e, "gossip message not delivered");
                        }
                    });
                }
                Output::Setting(setting) => {
                    tracing::info!(setting = %setting.name, stamp = setting.stamp, "cluster setting changed");
                    self.settings.send_modify(|all| {
                        all.insert(setting.name.clone(), setting);
                    });
                }
                Output::Changed(update) => {
                    if update.id != self.me.id {
                        stats.changes.get_or_create(&StateLabels { state: update.state.name().to_string() }).inc();
                        tracing::info!(member = %update.id, state = update.state.name(), incarnation = update.incarnation, "member state changed");
                    }
                    self.observe(&update);
                }
            }
        }
    }

    /// Worker: runs the SWIM state machine ([`Swim`]) on this node: probes
    /// members, spreads rumors, answers what `/internal/gossip` delivers.
    /// Joins through the seeds and every member a previous run knew; on
    /// shutdown tells a few members it leaves.
    pub async fn gossip(
        self: Arc<Self>,
        cfg: SwimConfig,
        peers: PeerClient,
        stats: GossipStats,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let Some(mut inbox) = self.inbox_rx.lock().expect("inbox lock").take() else { return };
        tokio::pin!(shutdown);
        let start = tokio::time::Instant::now();
        let now = || start.elapsed().as_millis() as Millis;
        // A fresh life's incarnation: the wall clock, above any earlier life's.
        let mut swim = Swim::new(cfg, &self.me.id, &self.me.addr, SystemClock.now_ms(), now());
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_entropy();
        let mut out = Vec::new();
        let mut contacts = self.seeds.clone();
        contacts.extend(self.members().into_iter().filter(|m| m.id != self.me.id).map(|m| m.addr));
        contacts.sort();
        contacts.dedup();
        if self.is_retired() {
            // Retired in an earlier run: this life claims removal too.
            swim.retire(&mut rng, &mut out);
        }
        swim.join(&contacts, &mut out);
        out.push(Output::Changed(swim.me().clone()));
        loop {
            self.perform(&peers, &stats, &mut out);
            let wake = start + Duration::from_millis(swim.next_wakeup());
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => swim.tick(now(), &mut rng, &mut out),
                _ = self.retire_now.notified() => swim.retire(&mut rng, &mut out),
                received = inbox.recv() => match received {
                    Some(envelope) => swim.handle(now(), envelope, &mut rng, &mut out),
                    None => return,
                },
                _ = &mut shutdown => {
                    swim.leave(&mut rng, &mut out);
                    self.perform(&peers, &stats, &mut out);
                    return;
                }
            }
        }
    }
}
