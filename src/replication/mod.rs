//! Replication by direct mail (DESIGN.md §3): the coordinator that any node
//! runs for any key. A write is stamped, applied locally if this node is a
//! replica, and sent to the other replicas in parallel; the reply waits for
//! `w` acknowledgements. A send that fails goes to the peer's retry buffer
//! ([`mailbox`]), which a [`carrier`] worker per peer drains. Reads ask `r`
//! replicas, return the newest version and repair stale replicas behind.

pub mod carrier;
pub mod courier;
mod listing;
pub mod mailbox;

use crate::clock::{Clock, SystemClock};
use crate::kv::{KvError, KvService};
use crate::membership::Membership;
use crate::rpc::client::{PeerClient, RpcError};
use crate::rpc::{ReadReply, ReadRequest, PATH_READ};
use crate::storage::{Precondition, StorageError};
use crate::types::{shard_of, Consistency, Key, NodeId, Record, Version};
use bytes::Bytes;
use courier::Delivery;
use mailbox::{Enqueued, Mailbox};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("only {acked} of the {required} required replicas acknowledged the write in time (replicas: {replicas}){}; the write is still in flight and not rolled back", reasons_text(missing))]
    NotEnoughAcks { acked: usize, required: usize, replicas: usize, missing: Vec<String> },
    #[error(
        "only {answered} of the {required} required replicas answered the read in time (replicas: {replicas}){}",
        reasons_text(missing)
    )]
    NotEnoughAnswers { answered: usize, required: usize, replicas: usize, missing: Vec<String> },
    #[error("no replica of shards {shards:?} answered; a listing without them would be incomplete")]
    ShardsUnavailable { shards: Vec<u32> },
}

/// `; <reason>; <reason>`: why each replica that did not count did not.
fn reasons_text(missing: &[String]) -> String {
    missing.iter().map(|r| format!("; {r}")).collect()
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOutcome {
    pub version: Version,
    /// The key held no live value before (as far as the acknowledging replicas know).
    pub created: bool,
}

/// The coordinator's own settings.
#[derive(Clone)]
pub struct ReplicationSettings {
    pub me: NodeId,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How long a request waits for its w/r replicas (also each send's deadline).
    pub timeout: Duration,
    pub max_value_bytes: usize,
    /// Mail stamped longer ago than this is dropped, not delivered (see
    /// `repair::purge`); `None`: mail never expires.
    pub tombstone_grace: Option<Duration>,
}

pub struct Replication {
    pub kv: Arc<KvService>,
    pub membership: Arc<Membership>,
    pub peers: PeerClient,
    pub mailbox: Arc<Mailbox>,
    me: NodeId,
    pub(crate) timeout: Duration,
    max_value_bytes: usize,
    pub(crate) tombstone_grace: Option<Duration>,
    carriers: Mutex<HashSet<String>>,
    couriers: Mutex<HashMap<String, mpsc::Sender<courier::Parcel>>>,
    stop: watch::Receiver<bool>,
    /// Every task this coordinator spawns, so shutdown can wait for them
    /// before the store is closed.
    pub(crate) tasks: TaskTracker,
    metrics: Arc<crate::metrics::Metrics>,
    /// Bandwidth for moving records in the background (anti-entropy and
    /// hand-off); its rate follows the anti-entropy schedule.
    pub repair_bandwidth: crate::repair::throttle::Throttle,
}

impl Replication {
    pub fn new(
        kv: Arc<KvService>,
        membership: Arc<Membership>,
        peers: PeerClient,
        mailbox: Arc<Mailbox>,
        settings: ReplicationSettings,
        stop: watch::Receiver<bool>,
    ) -> Replication {
        let ReplicationSettings { me, metrics, timeout, max_value_bytes, tombstone_grace } = settings;
        Replication {
            kv,
            membership,
            peers,
            mailbox,
            me,
            timeout,
            max_value_bytes,
            tombstone_grace,
            carriers: Mutex::default(),
            couriers: Mutex::default(),
            stop,
            tasks: TaskTracker::new(),
            metrics,
            repair_bandwidth: crate::repair::throttle::Throttle::new(0),
        }
    }

    pub fn me(&self) -> &NodeId {
        &self.me
    }

    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// This node is among `shard`'s replicas by its current view.
    pub fn replicates(&self, shard: crate::types::ShardId) -> bool {
        self.membership.placement().replicas(shard).contains(&self.me)
    }

    /// Clears this node's dirty marks for a shard that a run verified equal on
    /// all its replicas. A replica clears only if its own root still equals
    /// the verified one (so a drop after the check stays marked); a node that
    /// holds no copy clears outright: marks only order repair work, and
    /// scheduled runs still cover every shard.
    pub fn settle_dirty(&self, v: &crate::rpc::Verified) {
        let shard = crate::types::ShardId(v.shard);
        if v.shard >= self.membership.shards() {
            return;
        }
        if self.replicates(shard) && self.kv.storage().trees().shard(v.shard).root() != v.root {
            return;
        }
        for peer in v.replicas.iter().filter(|p| **p != self.me.name()) {
            if let Err(e) = self.mailbox.clear_dirty(peer, shard) {
                tracing::warn!(error = %e, "clearing a dirty mark failed");
            }
        }
    }

    /// Spawns a task that shutdown waits for.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// The placement table and the key's shard: callers borrow the replica
    /// list from the shared table instead of copying it on every request.
    fn placement_of(&self, key: &Key) -> (Arc<crate::placement::PlacementTable>, crate::types::ShardId) {
        (self.membership.placement(), shard_of(key.as_bytes(), self.membership.shards()))
    }

    /// Resolves once the node is stopping.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    /// Sends records to `peer` as one batch (used by the courier and the carrier).
    pub(crate) async fn send_records<'a>(
        &self,
        peer: &str,
        records: impl Iterator<Item = (&'a Key, &'a Record)>,
        timeout: Duration,
    ) -> Result<crate::rpc::ApplyReply, RpcError> {
        let addr = self
            .membership
            .addr_of(peer)
            .ok_or_else(|| RpcError::Unreachable { peer: peer.to_string(), message: "address unknown".into() })?;
        let batch = crate::rpc::ApplyBatch { records: records.map(|(k, r)| crate::rpc::WireRecord::new(k, r)).collect() };
        let sent = self.peers.call((peer, &addr), crate::rpc::PATH_APPLY, &batch, timeout).await;
        if let Err(e @ RpcError::Refused { .. }) = &sent {
            // A peer that answers and refuses mail (a clock too far ahead, a
            // record over its limits) will refuse it again: say so loudly.
            tracing::warn!(peer, error = %e, "peer refused direct mail; it stays buffered and is retried");
        }
        sent
    }

    /// Writes a value (`Some`) or tombstone (`None`) with `w` acknowledgements.
    pub async fn write(
        self: &Arc<Self>,
        key: Key,
        value: Option<Bytes>,
        pre: Precondition,
        w: Consistency,
    ) -> Result<WriteOutcome, ReplicationError> {
        let (placement, shard) = self.placement_of(&key);
        let replicas = placement.replicas(shard);
        let required = w.required(replicas.len());
        let local = replicas.contains(&self.me);
        if pre != Precondition::None && !local {
            // Compare-and-set on the coordinator's view: the newest a replica knows.
            let current = self.read(&key, Consistency::One).await?.map(|r| r.head());
            if !pre.holds(current.as_ref()) {
                let current = current.filter(|r| !r.tombstone).map(|r| r.version);
                return Err(KvError::PreconditionFailed { current }.into());
            }
        }
        let mut acked = 0usize;
        let mut created = None;
        let record = if local {
            let (record, outcome) = self.kv.write_fresh(&key, value, pre).await?;
            created = Some(outcome.created_live(&record));
            acked += 1;
            record
        } else {
            Record { version: self.kv.stamp().await?, value }
        };
        let mut pending = Vec::new();
        let mut missing = Vec::new();
        for peer in replicas.iter().filter(|r| **r != self.me) {
            // A peer with undelivered mail is failing or catching up: queue
            // behind that mail (in write order) instead of racing it.
            if self.mailbox.pending(peer.name()) > 0 {
                self.buffer(peer.name(), &key, &record);
                let why = self.mailbox.last_error(peer.name()).map_or_else(String::new, |e| format!(" (its last delivery failed: {e})"));
                missing.push(format!("peer {peer} has undelivered mail{why}, so this write is queued behind it"));
                continue;
            }
            pending.push((peer.name(), self.mail(peer.name(), key.clone(), record.clone()).await));
        }
        if acked < required {
            let deadline = tokio::time::sleep(self.timeout);
            tokio::pin!(deadline);
            while acked < required && !pending.is_empty() {
                tokio::select! {
                    ack = next_ack(&mut pending) => match ack {
                        Delivery::Applied { created: was_created } => {
                            acked += 1;
                            created.get_or_insert(was_created);
                        }
                        Delivery::Buffered { reason } => missing.push(reason),
                    },
                    _ = &mut deadline => break,
                }
            }
        }
        if acked < required {
            missing.extend(pending.iter().map(|(peer, _)| self.silent(peer)));
            return Err(ReplicationError::NotEnoughAcks { acked, required, replicas: replicas.len(), missing });
        }
        Ok(WriteOutcome { version: record.version, created: created.unwrap_or(true) })
    }

    /// Hands a record to the peer's courier; resolves to what became of it.
    async fn mail(self: &Arc<Self>, peer: &str, key: Key, record: Record) -> oneshot::Receiver<Delivery> {
        let (ack, answer) = oneshot::channel();
        let inbox = {
            let mut couriers = self.couriers.lock().expect("couriers lock");
            match couriers.get(peer) {
                Some(inbox) => inbox.clone(),
                None => {
                    let (tx, rx) = mpsc::channel(courier::QUEUE);
                    let courier = courier::Courier::new(self.clone(), peer.to_string(), rx);
                    self.tasks.spawn(courier.run(self.stopped()));
                    couriers.insert(peer.to_string(), tx.clone());
                    tx
                }
            }
        };
        if let Err(mpsc::error::SendError(p)) = inbox.send(courier::Parcel { key, record, ack }).await {
            // The courier stopped (shutdown): keep the record for later.
            self.buffer(peer, &p.key, &p.record);
            let _ = p.ack.send(Delivery::Buffered { reason: format!("peer {peer}: this node is shutting down; the write is kept for it") });
        }
        answer
    }

    pub(crate) fn buffer(self: &Arc<Self>, peer: &str, key: &Key, record: &Record) {
        let shard = shard_of(key.as_bytes(), self.membership.shards());
        match self.mailbox.enqueue(peer, shard, key, record, SystemClock.now_ms()) {
            Ok(Enqueued::Dropped) => tracing::warn!(peer, shard = shard.0, "retry buffer full: record dropped, shard marked dirty"),
            Ok(_) => self.ensure_carrier(peer),
            Err(e) => tracing::error!(peer, error = %e, "retry buffer write failed"),
        }
    }

    /// Starts the delivery worker for `peer` unless it runs already.
    pub fn ensure_carrier(self: &Arc<Self>, peer: &str) {
        if !self.carriers.lock().expect("carriers lock").insert(peer.to_string()) {
            return;
        }
        let carrier = carrier::Carrier::new(self.clone(), peer.to_string());
        self.tasks.spawn(carrier.run(self.stopped()));
    }

    /// Waits (after the stop signal) for every task this coordinator started.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Reads with `r` replicas answering; the newest version wins and stale
    /// replicas are repaired in the background.
    pub async fn read(self: &Arc<Self>, key: &Key, r: Consistency) -> Result<Option<Record>, ReplicationError> {
        let (placement, shard) = self.placement_of(key);
        let replicas = placement.replicas(shard);
        let required = r.required(replicas.len());
        if required <= 1 && replicas.contains(&self.me) {
            return Ok(self.kv.read(key)?);
        }
        let (tx, mut rx) = mpsc::channel::<(NodeId, Result<Option<Record>, String>)>(replicas.len().max(1));
        for peer in replicas {
            let (this, peer, key, tx) = (self.clone(), peer.clone(), key.clone(), tx.clone());
            self.tasks.spawn(async move {
                let answer = this.read_one(&peer, &key).await;
                let _ = tx.send((peer, answer)).await;
            });
        }
        drop(tx);
        let mut answers: Vec<(NodeId, Option<Record>)> = Vec::new();
        let mut failed: Vec<(NodeId, String)> = Vec::new();
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        while answers.len() < required {
            tokio::select! {
                a = rx.recv() => match a {
                    Some((peer, Ok(rec))) => answers.push((peer, rec)),
                    Some((peer, Err(reason))) => failed.push((peer, reason)),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        if answers.len() < required {
            let heard = |r: &&NodeId| answers.iter().any(|(a, _)| a == *r) || failed.iter().any(|(f, _)| f == *r);
            let silent: Vec<String> = replicas.iter().filter(|r| !heard(r)).map(|r| self.silent(r.name())).collect();
            let missing = failed.into_iter().map(|(_, reason)| reason).chain(silent).collect();
            return Err(ReplicationError::NotEnoughAnswers { answered: answers.len(), required, replicas: replicas.len(), missing });
        }
        let newest = answers.iter().filter_map(|(_, r)| r.clone()).max_by_key(|r| r.version);
        if let Some(newest) = &newest {
            for (peer, rec) in &answers {
                if rec.as_ref().is_none_or(|r| r.version < newest.version) {
                    self.repair(peer.clone(), key.clone(), newest.clone());
                }
            }
        }
        Ok(newest)
    }

    /// Why a replica that neither answered nor failed by the deadline does not count.
    fn silent(&self, peer: &str) -> String {
        format!("peer {peer} had not answered within {:?}", self.timeout)
    }

    /// One replica's record, or why it gave none.
    async fn read_one(&self, peer: &NodeId, key: &Key) -> Result<Option<Record>, String> {
        if *peer == self.me {
            return self.kv.read(key).map_err(|e| format!("this node's own copy could not be read: {e}"));
        }
        let addr = self.membership.addr_of(peer.name()).ok_or_else(|| format!("peer {peer} has no known address"))?;
        let request = ReadRequest { key: key.bytes() };
        let reply: ReadReply = self.peers.call((peer.name(), &addr), PATH_READ, &request, self.timeout).await.map_err(|e| e.to_string())?;
        match reply.record.map(|w| w.into_parts(self.max_value_bytes)) {
            None => Ok(None),
            Some(Ok((k, rec))) if k == *key => Ok(Some(rec)),
            Some(Ok(_)) => Err(format!("peer {peer} answered with another key's record")),
            Some(Err(e)) => Err(format!("peer {peer} answered with a record this node refuses: {e}")),
        }
    }

    /// Read repair: brings one stale replica up to `record`, off the request path.
    fn repair(self: &Arc<Self>, peer: NodeId, key: Key, record: Record) {
        let this = self.clone();
        self.tasks.spawn(async move {
            if peer == this.me {
                let _ = this.kv.apply(&key, &record, Precondition::None).await;
            } else {
                let _ = this.mail(peer.name(), key, record).await.await;
            }
        });
    }
}

/// The next answer among pending mail acks, in the order they come (a
/// courier that went away counts as buffered). Polled in place, so a write
/// waits on its replicas without a task per replica.
async fn next_ack(pending: &mut Vec<(&str, oneshot::Receiver<Delivery>)>) -> Delivery {
    std::future::poll_fn(|cx| {
        for i in 0..pending.len() {
            if let std::task::Poll::Ready(answer) = std::future::Future::poll(std::pin::Pin::new(&mut pending[i].1), cx) {
                let (peer, _) = pending.swap_remove(i);
                let lost = || Delivery::Buffered { reason: format!("peer {peer}: its mail courier stopped (this node is shutting down)") };
                return std::task::Poll::Ready(answer.unwrap_or_else(|_| lost()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}
