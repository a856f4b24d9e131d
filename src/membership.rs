//! Who is in the cluster, for now a static view: this node plus every node
//! reachable through `--seeds`, learned by a `hello` exchange and persisted
//! so a restart knows its peers even while they are down. Everything else
//! asks this one type for members, addresses and the placement table, so the
//! gossip-based membership can replace it without touching its callers.

use crate::placement::PlacementTable;
use crate::rpc::client::PeerClient;
use crate::rpc::{Hello, HelloReply, PATH_HELLO};
use crate::storage::{Storage, StorageError};
use crate::types::NodeId;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const META_MEMBERS: &str = "members";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub id: String,
    pub addr: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("node {name:?} has {theirs} shards, this cluster has {ours}; refusing it")]
    ShardMismatch { name: String, ours: u32, theirs: u32 },
    #[error("node names {a:?} and {b:?} hash to the same 64-bit tag; rename one")]
    TagCollision { a: String, b: String },
    #[error("invalid node id: {0}")]
    BadId(#[from] crate::types::NodeIdError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

struct State {
    members: BTreeMap<String, Member>,
    placement: Arc<PlacementTable>,
    answered_seeds: HashSet<String>,
}

pub struct Membership {
    me: Member,
    shards: u32,
    rf: usize,
    seeds: Vec<String>,
    state: RwLock<State>,
    storage: Arc<dyn Storage>,
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
        members.insert(me.id.clone(), me.clone());
        let seeds: Vec<String> = seeds.into_iter().filter(|s| !s.is_empty() && *s != me.addr).collect();
        let m = Membership {
            me,
            shards,
            rf,
            seeds,
            state: RwLock::new(State { members, placement: Arc::default(), answered_seeds: HashSet::new() }),
            storage,
        };
        m.rebuild(&mut m.state.write().expect("membership lock"));
        Ok(m)
    }

    fn rebuild(&self, state: &mut State) {
        let ids: Vec<NodeId> = state.members.keys().filter_map(|n| NodeId::new(n).ok()).collect();
        state.placement = Arc::new(PlacementTable::new(&ids, self.shards, self.rf));
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

    /// Ready once every seed has answered at least once.
    pub fn is_ready(&self) -> bool {
        let state = self.state.read().expect("membership lock");
        self.seeds.iter().all(|s| state.answered_seeds.contains(s))
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Adds or updates a member; returns whether anything changed.
    pub fn learn(&self, id: &str, addr: &str, shards: u32) -> Result<bool, MembershipError> {
        if shards != self.shards {
            return Err(MembershipError::ShardMismatch { name: id.to_string(), ours: self.shards, theirs: shards });
        }
        let node = NodeId::new(id)?;
        let mut state = self.state.write().expect("membership lock");
        if let Some(other) = state.members.keys().find(|n| *n != id && NodeId::new(n).is_ok_and(|o| o.tag() == node.tag())) {
            return Err(MembershipError::TagCollision { a: other.clone(), b: id.to_string() });
        }
        let member = Member { id: id.to_string(), addr: addr.to_string() };
        if state.members.get(id) == Some(&member) {
            return Ok(false);
        }
        state.members.insert(id.to_string(), member);
        self.rebuild(&mut state);
        let saved: Vec<(&String, &String)> = state.members.values().map(|m| (&m.id, &m.addr)).collect();
        self.storage.meta_put(META_MEMBERS, &serde_json::to_vec(&saved).expect("plain data serializes"))?;
        tracing::info!(member = id, addr, members = state.members.len(), "member joined the view");
        Ok(true)
    }

    pub fn hello(&self) -> Hello {
        Hello { node: self.me.id.clone(), addr: self.me.addr.clone(), shards: self.shards }
    }

    pub fn hello_reply(&self) -> HelloReply {
        let members = self.members().into_iter().map(|m| (m.id, m.addr)).collect();
        HelloReply { node: self.me.id.clone(), addr: self.me.addr.clone(), shards: self.shards, members }
    }

    fn absorb(&self, reply: &HelloReply) -> Result<(), MembershipError> {
        self.learn(&reply.node, &reply.addr, reply.shards)?;
        for (id, addr) in &reply.members {
            if *id != self.me.id {
                self.learn(id, addr, reply.shards)?;
            }
        }
        Ok(())
    }

    /// Worker: says hello to every seed, every second until all have
    /// answered, then every 30 s; stops when `shutdown` resolves.
    pub async fn discover(self: Arc<Self>, peers: PeerClient, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            for seed in &self.seeds {
                match peers.call::<_, HelloReply>(("seed", seed), PATH_HELLO, &self.hello(), Duration::from_secs(2)).await {
                    Ok(reply) => match self.absorb(&reply) {
                        Ok(()) => {
                            self.state.write().expect("membership lock").answered_seeds.insert(seed.clone());
                        }
                        Err(e) => tracing::error!(seed, error = %e, "refusing seed"),
                    },
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
