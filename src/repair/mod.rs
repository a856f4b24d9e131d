//! Anti-entropy (DESIGN.md §5): finding and repairing what direct mail
//! missed. [`exchange`] syncs one shard with one peer through the Merkle
//! trees; [`ring`] runs a repair over many shards (the closed loop); this
//! module owns the runs (one at a time, progress, cancel, a bounded
//! persisted history) and the cluster-wide schedule that starts them.
//! [`purge`] decides when verified shards may drop old tombstones;
//! [`handoff`] moves the records of shards a node no longer replicates;
//! [`throttle`] paces both by the schedule's bandwidth limit; [`skipped`]
//! keeps a run's list of skipped replicas bounded.

pub mod exchange;
pub mod handoff;
pub mod purge;
pub mod ring;
pub mod skipped;
pub mod throttle;

use crate::gossip::Setting;
use crate::replication::Replication;
use crate::rpc::codec;
pub use crate::rpc::Schedule;
pub use skipped::SkippedReplica;

/// The gossip setting that carries the anti-entropy schedule.
pub const SCHEDULE_SETTING: &str = "anti-entropy/schedule";
use crate::storage::StorageError;
use crate::types::ShardId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const HISTORY_TREE: &str = "ae/history";
const HISTORY_MAX: usize = 50;
const META_SCHEDULE: &str = "ae_schedule";
/// How often a node that may lack records at start (quarantined at open, or
/// lost in an unclean stop) checks whether the cluster is known, to start
/// the run that restores them.
const STARTUP_READY_CHECK: Duration = Duration::from_millis(200);
/// How often due tombstone purges are looked for.
const PURGE_CHECK: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    #[default]
    Ring,
    Push,
    Pull,
    PushPull,
}

/// A run's progress while it runs, and its record in the history after.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub id: String,
    pub mode: RunMode,
    /// What started it: `admin` (a request), `schedule`, or a run a node
    /// owes its copy at start: `unclean-stop`, `quarantine`. Empty in the
    /// history of older builds.
    #[serde(default)]
    pub trigger: String,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub duration_ms: u64,
    pub shards_total: u64,
    pub shards_done: u64,
    pub shards_checked: u64,
    pub shards_diverged: u64,
    /// Records moved, either direction.
    pub keys_sent: u64,
    /// Peer-protocol bytes the run moved (headers included).
    pub bytes_sent: u64,
    /// Bytes of the moved records themselves (key + value).
    pub record_bytes: u64,
    pub hops: u64,
    pub root_comparisons: u64,
    pub replicas_skipped: Vec<SkippedReplica>,
    pub current_shard: Option<u32>,
    pub current_hop: u64,
    /// running | completed | partial (a replica was skipped) | cancelled
    pub outcome: String,
}

impl RunSummary {
    /// Notes that `node` was skipped on `shard` for `reason`.
    pub fn skip(&mut self, shard: u32, node: &str, reason: &str) {
        skipped::note(&mut self.replicas_skipped, shard, node, reason);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("anti-entropy run {0} is already running on this node")]
    AlreadyRunning(String),
    #[error("no run {0} is running on this node")]
    NoSuchRun(String),
    #[error("shard {shard} does not exist (the cluster has {shards})")]
    NoSuchShard { shard: u32, shards: u32 },
    /// `{"shards": []}`: most likely a script's empty selection, and a run
    /// over nothing would report "completed" having checked nothing.
    #[error("shards is empty: omit it to run over every shard this node holds")]
    NoShards,
    #[error("interval_secs must be {min}..={max}, got {0}", min = crate::config::ANTI_ENTROPY_INTERVAL_SECS.start(), max = crate::config::ANTI_ENTROPY_INTERVAL_SECS.end())]
    BadInterval(u64),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stamping the schedule failed (this node's clock is in doubt).
    #[error(transparent)]
    Kv(#[from] crate::kv::KvError),
}

struct Running {
    summary: Arc<Mutex<RunSummary>>,
    cancel: CancellationToken,
}

pub struct AntiEntropy {
    repl: Arc<Replication>,
    running: Mutex<Option<Running>>,
    history: Mutex<VecDeque<RunSummary>>,
    schedule: Mutex<Schedule>,
    schedule_changed: Notify,
    verified: Arc<Mutex<Vec<Option<u64>>>>,
    /// Verifications waiting to purge tombstones; `policy` is `None` when
    /// tombstones are kept forever.
    pub(crate) purges: Arc<purge::Purges>,
    policy: Option<purge::PurgePolicy>,
    /// The node before this one on the store did not stop cleanly.
    unclean_stop: bool,
}

impl AntiEntropy {
    /// Loads the persisted history and schedule (`initial` if none is stored).
    pub fn open(repl: Arc<Replication>, initial: Schedule, policy: Option<purge::PurgePolicy>) -> Result<AntiEntropy, StorageError> {
        let storage = repl.kv.storage().clone();
        let mut history: VecDeque<RunSummary> =
            storage.aux_scan(HISTORY_TREE, None, usize::MAX)?.into_iter().filter_map(|(_, v)| serde_json::from_slice(&v).ok()).collect();
        while history.len() > HISTORY_MAX {
            history.pop_front();
        }
        let schedule = match storage.meta_get(META_SCHEDULE)? {
            Some(raw) => serde_json::from_slice(&raw).unwrap_or(initial),
            None => initial,
        };
        let shards = storage.shard_count() as usize;
        repl.repair_bandwidth.set_rate(schedule.max_bytes_per_sec);
        Ok(AntiEntropy {
            repl,
            running: Mutex::new(None),
            history: Mutex::new(history),
            schedule: Mutex::new(schedule),
            schedule_changed: Notify::new(),
            verified: Arc::new(Mutex::new(vec![None; shards])),
            purges: Arc::default(),
            policy,
            unclean_stop: false,
        })
    }

    /// Shards this node replicates that had records quarantined when the
    /// store opened and have not been verified since: their copy here lacks
    /// those records until a run brings them back.
    fn unrepaired_quarantine(&self) -> Vec<u32> {
        let verified = self.verified.lock().expect("verified lock");
        let placement = self.repl.membership.placement();
        let moved = self.repl.kv.storage().quarantine().moved_at_open;
        moved
            .into_iter()
            .filter(|s| verified.get(*s as usize).is_some_and(Option::is_none))
            .filter(|s| placement.replicas(ShardId(*s)).contains(self.repl.me()))
            .collect()
    }

    /// Shards this node replicates (or the requested ones): dirty ones and
    /// ones with unrepaired quarantined records first.
    fn plan_shards(&self, requested: Option<Vec<u32>>) -> Result<Vec<ShardId>, RepairError> {
        let shards = self.repl.membership.shards();
        let placement = self.repl.membership.placement();
        let mine: Vec<u32> = match requested {
            Some(list) => {
                if list.is_empty() {
                    return Err(RepairError::NoShards);
                }
                if let Some(&bad) = list.iter().find(|s| **s >= shards) {
                    return Err(RepairError::NoSuchShard { shard: bad, shards });
                }
                list.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
            }
            None => (0..shards).filter(|s| placement.replicas(ShardId(*s)).contains(self.repl.me())).collect(),
        };
        let mut urgent: BTreeSet<u32> = self.repl.membership.members().iter().flat_map(|m| self.repl.mailbox.dirty_shards(&m.id)).collect();
        urgent.extend(self.unrepaired_quarantine());
        let (mut first, rest): (Vec<u32>, Vec<u32>) = mine.into_iter().partition(|s| urgent.contains(s));
        first.extend(rest);
        Ok(first.into_iter().map(ShardId).collect())
    }

    /// Whether the store was left running by a node that crashed: then the
    /// scheduler's first run covers every shard here, to restore what it lost.
    pub fn after_unclean_stop(self, unclean_stop: bool) -> Self {
        AntiEntropy { unclean_stop, ..self }
    }

    /// Starts a run in the background; one at a time per node. `trigger`
    /// says why, in its summary.
    pub fn start(self: &Arc<Self>, shards: Option<Vec<u32>>, mode: RunMode, trigger: &str) -> Result<String, RepairError> {
        let mut running = self.running.lock().expect("ae lock");
        if let Some(r) = running.as_ref() {
            return Err(RepairError::AlreadyRunning(r.summary.lock().expect("run lock").id.clone()));
        }
        let shards = self.plan_shards(shards)?;
        let now = self.repl.kv.hlc().wall_ms();
        let id = format!("ae-{now}-{:04x}", rand::thread_rng().gen::<u16>());
        let summary = Arc::new(Mutex::new(RunSummary {
            id: id.clone(),
            mode,
            trigger: trigger.to_string(),
            started_at_ms: now,
            shards_total: shards.len() as u64,
            outcome: "running".into(),
            ..RunSummary::default()
        }));
        let cancel = CancellationToken::new();
        *running = Some(Running { summary: summary.clone(), cancel: cancel.clone() });
        self.repl.metrics().ae_runs.inc();
        let runner = ring::Runner {
            repl: self.repl.clone(),
            summary: summary.clone(),
            cancel,
            verified: self.verified.clone(),
            purges: self.purges.clone(),
        };
        let this = self.clone();
        self.repl.spawn(async move {
            runner.run(shards, mode).await;
            this.finish(&summary);
        });
        tracing::info!(run = %id, ?mode, trigger, "anti-entropy run started");
        Ok(id)
    }

    fn finish(&self, summary: &Arc<Mutex<RunSummary>>) {
        let done = {
            let mut s = summary.lock().expect("run lock");
            let now = self.repl.kv.hlc().wall_ms();
            s.finished_at_ms = Some(now);
            s.duration_ms = now.saturating_sub(s.started_at_ms);
            s.current_shard = None;
            if s.outcome == "running" {
                s.outcome = if s.replicas_skipped.is_empty() { "completed".into() } else { "partial".into() };
            }
            s.clone()
        };
        tracing::info!(run = %done.id, outcome = %done.outcome, hops = done.hops, keys = done.keys_sent, bytes = done.bytes_sent, "anti-entropy run ended");
        let storage = self.repl.kv.storage();
        let key = format!("{:020}-{}", done.started_at_ms, done.id);
        if let Err(e) = storage.aux_put(HISTORY_TREE, key.as_bytes(), &serde_json::to_vec(&done).expect("plain data")) {
            tracing::warn!(error = %e, "persisting run history failed");
        }
        let mut history = self.history.lock().expect("ae lock");
        history.push_back(done);
        while history.len() > HISTORY_MAX {
            if let Some(old) = history.pop_front() {
                let _ = storage.aux_remove(HISTORY_TREE, format!("{:020}-{}", old.started_at_ms, old.id).as_bytes());
            }
        }
        *self.running.lock().expect("ae lock") = None;
    }

    pub fn cancel(&self, id: &str) -> Result<(), RepairError> {
        let running = self.running.lock().expect("ae lock");
        match running.as_ref() {
            Some(r) if r.summary.lock().expect("run lock").id == id => {
                r.cancel.cancel();
                Ok(())
            }
            _ => Err(RepairError::NoSuchRun(id.to_string())),
        }
    }

    pub fn running(&self) -> Option<RunSummary> {
        self.running.lock().expect("ae lock").as_ref().map(|r| r.summary.lock().expect("run lock").clone())
    }

    pub fn history(&self) -> Vec<RunSummary> {
        self.history.lock().expect("ae lock").iter().rev().cloned().collect()
    }

    pub fn schedule(&self) -> Schedule {
        *self.schedule.lock().expect("ae lock")
    }

    /// Unix ms each shard was last verified equal on all replicas.
    pub fn last_verified(&self) -> Vec<Option<u64>> {
        self.verified.lock().expect("verified lock").clone()
    }

    /// Applies a schedule if it is newer than the current one; persists it.
    pub fn adopt_schedule(&self, update: Schedule) -> Result<bool, RepairError> {
        let mut current = self.schedule.lock().expect("ae lock");
        if update.stamp <= current.stamp {
            return Ok(false);
        }
        self.repl.kv.storage().meta_put(META_SCHEDULE, &serde_json::to_vec(&update).expect("plain data"))?;
        self.repl.repair_bandwidth.set_rate(update.max_bytes_per_sec);
        *current = update;
        self.schedule_changed.notify_waiters();
        Ok(true)
    }

    /// Sets the schedule here and spreads it by gossip.
    pub async fn set_schedule(&self, enabled: bool, interval_secs: u64, max_bytes_per_sec: u64) -> Result<Schedule, RepairError> {
        if !crate::config::ANTI_ENTROPY_INTERVAL_SECS.contains(&interval_secs) {
            return Err(RepairError::BadInterval(interval_secs));
        }
        let stamp = self.repl.kv.stamp().await?;
        let schedule = Schedule { enabled, interval_secs, max_bytes_per_sec, stamp: stamp.hlc };
        self.adopt_schedule(schedule)?;
        self.publish_schedule();
        Ok(schedule)
    }

    /// Gives the current schedule (if one was ever set) to gossip, which
    /// spreads it as a rumor and in every sync; members keep the newest.
    fn publish_schedule(&self) {
        let s = self.schedule();
        if s.stamp == 0 {
            return;
        }
        let value = codec::encode(&s);
        if !self.repl.membership.publish_setting(Setting { name: SCHEDULE_SETTING.into(), stamp: s.stamp, value }) {
            tracing::warn!("gossip inbox full: the new anti-entropy schedule spreads with the next sync");
        }
    }

    /// Adopts a schedule gossip brought, if it is newer than this node's.
    fn take_gossiped_schedule(&self, settings: &std::collections::BTreeMap<String, Setting>) {
        let Some(setting) = settings.get(SCHEDULE_SETTING) else { return };
        match codec::decode::<Schedule>(&setting.value) {
            Ok(schedule) => {
                if let Err(e) = self.adopt_schedule(schedule) {
                    tracing::warn!(error = %e, "storing the anti-entropy schedule gossip brought failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "an anti-entropy schedule from gossip does not decode; ignored"),
        }
    }

    /// Worker: starts a ring run every `interval_secs` (±10% jitter) while
    /// enabled, and adopts the schedule gossip brings (newest stamp wins;
    /// gossip's sync reaches a member that was down when it changed).
    pub async fn scheduler(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut settings = self.repl.membership.subscribe_settings();
        self.publish_schedule();
        let mut next_run = self.next_run();
        // Records quarantined at open, or lost in an unclean stop, are
        // missing here until a run restores them, so such a node gets a run
        // as soon as the cluster is known.
        let mut owed = self.unclean_stop || !self.repl.kv.storage().quarantine().moved_at_open.is_empty();
        let mut ready_check = tokio::time::interval(STARTUP_READY_CHECK);
        let mut purge_check = tokio::time::interval(PURGE_CHECK);
        loop {
            let changed = self.schedule_changed.notified();
            tokio::select! {
                _ = ready_check.tick(), if owed => {
                    if self.repl.membership.is_ready() {
                        owed = false;
                        self.repair_at_start();
                    }
                }
                _ = purge_check.tick(), if self.policy.is_some() => {
                    self.purge_due().await;
                    continue;
                }
                Ok(()) = settings.changed() => {
                    let all = settings.borrow_and_update().clone();
                    self.take_gossiped_schedule(&all);
                    continue;
                }
                _ = tokio::time::sleep_until(next_run) => {
                    next_run = self.next_run();
                    if self.schedule().enabled {
                        match self.start(None, RunMode::Ring, "schedule") {
                            Ok(id) => tracing::info!(run = %id, "scheduled anti-entropy run"),
                            Err(e) => tracing::info!(error = %e, "scheduled anti-entropy run not started"),
                        }
                    }
                }
                _ = changed => next_run = self.next_run(),
                _ = &mut shutdown => return,
            }
        }
    }

    /// Purges the tombstones of every shard whose verification has ripened.
    async fn purge_due(&self) {
        let Some(policy) = self.policy else { return };
        // A clock found ahead would ripen verifications early; they wait for it.
        if self.repl.kv.hlc().check_trusted().is_err() {
            return;
        }
        for (shard, before_hlc) in self.purges.due(&policy, self.repl.kv.hlc().wall_ms()) {
            let storage = self.repl.kv.storage().clone();
            match tokio::task::spawn_blocking(move || storage.purge_tombstones(ShardId(shard), before_hlc)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    self.repl.metrics().tombstones_purged.inc_by(n);
                    tracing::info!(shard, tombstones = n, "purged tombstones older than the grace on a verified shard");
                }
                Ok(Err(e)) => tracing::warn!(shard, error = %e, "purging tombstones failed; the next verification tries again"),
                Err(e) => tracing::error!(shard, error = %e, "purge task panicked"),
            }
        }
    }

    /// The run a node owes its copy at start: every shard it replicates
    /// after an unclean stop (writes it acknowledged last may be gone), else
    /// the shards whose records were quarantined at open. Quarantined shards
    /// go first either way ([`Self::plan_shards`]).
    fn repair_at_start(self: &Arc<Self>) {
        let (shards, trigger, why) = if self.unclean_stop {
            (None, "unclean-stop", "this node did not stop cleanly and may lack the writes it took last")
        } else {
            let shards = self.unrepaired_quarantine();
            if shards.is_empty() {
                return;
            }
            (Some(shards), "quarantine", "records were quarantined at open")
        };
        if !self.schedule().enabled {
            tracing::warn!(?shards, "{why}, and anti-entropy is off: POST /admin/anti-entropy to restore them");
            return;
        }
        match self.start(shards.clone(), RunMode::Ring, trigger) {
            Ok(id) => tracing::warn!(run = %id, ?shards, "anti-entropy run at start: {why}"),
            Err(e) => {
                tracing::warn!(error = %e, ?shards, "no run at start ({why}); the run under way or the next scheduled one covers them")
            }
        }
    }

    fn next_run(&self) -> tokio::time::Instant {
        let secs = self.schedule().interval_secs as f64 * rand::thread_rng().gen_range(0.9..1.1);
        tokio::time::Instant::now() + Duration::from_secs_f64(secs)
    }
}
