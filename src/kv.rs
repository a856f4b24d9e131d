//! The node's read/write path for one key: stamps versions with the HLC,
//! applies records to local storage, waits for durability under
//! `--sync=always`, and lists keys across shards.

use crate::clock::Hlc;
use crate::rpc::ApplyReply;
use crate::storage::group_commit::GroupCommit;
use crate::storage::{Applied, Precondition, Storage, StorageError};
use crate::types::{shard_of, Key, NodeId, Record, Version};

use bytes::Bytes;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("precondition failed: the key's current version is {}", current.map_or("absent".to_string(), |v| v.to_string()))]
    PreconditionFailed { current: Option<Version> },
    #[error(transparent)]
    ClockSkew(#[from] crate::clock::TooFarAhead),
    #[error(transparent)]
    ClockAhead(#[from] crate::clock::ClockAhead),
}

/// One page of a key listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<Bytes>,
    /// More keys follow the last one.
    pub more: bool,
}

impl KeyPage {
    /// The first `limit` of keys gathered from sources that each gave their
    /// first `limit + 1` (or `limit` and said `more`): any key beyond those
    /// follows every key a source gave, so the merged page is exact.
    pub fn merged(mut keys: Vec<Bytes>, source_had_more: bool, limit: usize) -> KeyPage {
        keys.sort_unstable();
        keys.dedup();
        let more = source_had_more || keys.len() > limit;
        keys.truncate(limit);
        KeyPage { keys, more }
    }
}

/// How often a write waiting for peers' verdict on the clock looks again.
const JUDGEMENT_POLL: std::time::Duration = std::time::Duration::from_millis(10);

pub struct KvService {
    storage: Arc<dyn Storage>,
    hlc: Arc<Hlc>,
    node: NodeId,
    commit: Option<GroupCommit>,
}

impl KvService {
    pub fn new(storage: Arc<dyn Storage>, hlc: Arc<Hlc>, node: NodeId, commit: Option<GroupCommit>) -> KvService {
        KvService { storage, hlc, node, commit }
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn hlc(&self) -> &Arc<Hlc> {
        &self.hlc
    }

    /// A fresh version stamped by this node.
    pub async fn stamp(&self) -> Result<Version, KvError> {
        self.trusted_clock().await?;
        Ok(self.fresh_version()?)
    }

    /// The next version by this node's HLC; callers check the clock first.
    fn fresh_version(&self) -> Result<Version, StorageError> {
        Ok(Version { hlc: self.hlc.now()?, node: self.node.tag() })
    }

    /// Whether this node may stamp by its clock. Just after start, until a
    /// peer has answered (a few ms when peers are up, at most the HLC's
    /// grace when none is), a write waits for that verdict instead of being
    /// refused: its clock may be the one that is wrong.
    async fn trusted_clock(&self) -> Result<(), KvError> {
        while let Some(left) = self.hlc.unjudged_for() {
            tokio::time::sleep(left.min(JUDGEMENT_POLL)).await;
        }
        Ok(self.hlc.check_trusted()?)
    }

    /// Applies one record locally; once it is stored, waits until it is
    /// durable under `--sync=always`.
    pub async fn apply(&self, key: &Key, record: &Record, pre: Precondition) -> Result<Applied, KvError> {
        self.hlc.check_drift(record.version.hlc)?;
        let outcome = self.apply_one(key, record, pre)?;
        self.settle(&outcome).await?;
        Ok(outcome)
    }

    /// Writes a new version of `key` stamped now (see
    /// [`Storage::write_fresh`]): the record to send to other replicas and
    /// what the local store did; once stored, waits as [`KvService::apply`].
    pub async fn write_fresh(&self, key: &Key, value: Option<Bytes>, pre: Precondition) -> Result<(Record, Applied), KvError> {
        self.trusted_clock().await?;
        let shard = shard_of(key.as_bytes(), self.storage.shard_count());
        let (record, outcome) = self.storage.write_fresh(shard, key.as_bytes(), value, pre, &|| self.fresh_version())?;
        self.settle(&outcome).await?;
        Ok((record, outcome))
    }

    /// A failed precondition becomes the error; anything stored is waited on
    /// until durable under `--sync=always`.
    async fn settle(&self, outcome: &Applied) -> Result<(), KvError> {
        if let Applied::PreconditionFailed { current } = outcome {
            return Err(KvError::PreconditionFailed { current: current.filter(|r| !r.tombstone).map(|r| r.version) });
        }
        self.wait_durable().await
    }

    /// Applies records received from a peer (advancing the clock past each)
    /// with one durability wait for the batch; the outcome is the peer's reply.
    pub async fn apply_batch(&self, records: &[(Key, Record)]) -> Result<ApplyReply, KvError> {
        // The whole batch is checked first, so a refused one applies nothing.
        for (_, record) in records {
            self.hlc.check_drift(record.version.hlc)?;
        }
        let mut out = ApplyReply { applied: 0, created: Vec::with_capacity(records.len()), below_floor: Vec::new() };
        for (i, (key, record)) in records.iter().enumerate() {
            let outcome = self.apply_one(key, record, Precondition::None)?;
            match outcome {
                Applied::Stored { .. } => out.applied += 1,
                Applied::BelowFloor => out.below_floor.push(i as u32),
                Applied::Stale { .. } | Applied::PreconditionFailed { .. } => {}
            }
            out.created.push(outcome.created_live(record));
        }
        if out.applied > 0 {
            self.wait_durable().await?;
        }
        Ok(out)
    }

    /// Every local apply goes through here: the clock moves past each version
    /// the node applies (its own stamps change nothing), then storage decides.
    fn apply_one(&self, key: &Key, record: &Record, pre: Precondition) -> Result<Applied, StorageError> {
        self.hlc.observe(record.version.hlc)?;
        let shard = shard_of(key.as_bytes(), self.storage.shard_count());
        self.storage.apply(shard, key.as_bytes(), record, pre)
    }

    async fn wait_durable(&self) -> Result<(), KvError> {
        if let Some(commit) = &self.commit {
            commit.wait_durable().await?;
        }
        Ok(())
    }

    pub fn read(&self, key: &Key) -> Result<Option<Record>, KvError> {
        let shard = shard_of(key.as_bytes(), self.storage.shard_count());
        Ok(self.storage.get(shard, key.as_bytes())?)
    }

    /// Live keys of `shards` starting with `prefix` and greater than `after`,
    /// in byte order, at most `limit`: each shard contributes its first
    /// `limit + 1` matches and the merge keeps the smallest.
    pub fn list(&self, shards: &[u32], prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<KeyPage, KvError> {
        let mut all = Vec::new();
        for &s in shards {
            all.extend(self.live_keys(crate::types::ShardId(s), prefix, after, limit + 1)?);
        }
        Ok(KeyPage::merged(all, false, limit))
    }

    fn live_keys(&self, shard: crate::types::ShardId, prefix: &[u8], after: Option<&[u8]>, want: usize) -> Result<Vec<Bytes>, KvError> {
        let mut out = Vec::new();
        let mut cursor: Option<Bytes> = after.map(Bytes::copy_from_slice);
        loop {
            let page = self.storage.scan(shard, prefix, cursor.as_deref(), want)?;
            let exhausted = page.len() < want;
            cursor = page.last().map(|(k, _)| k.clone());
            out.extend(page.into_iter().filter(|(_, r)| !r.is_tombstone()).map(|(k, _)| k));
            if out.len() >= want || exhausted {
                out.truncate(want);
                return Ok(out);
            }
        }
    }
}
