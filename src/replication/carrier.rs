//! The mail carrier: one worker per peer that drains its retry buffer,
//! oldest first, in batches, backing off exponentially (with jitter) while
//! the peer does not answer. Mail older than the tombstone grace is dropped
//! instead (counted, its shard marked dirty), which tombstone purge relies on.

use super::Replication;
use crate::clock::{Clock, SystemClock};
use crate::types::shard_of;
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

const BATCH_RECORDS: usize = 256;
const BATCH_BYTES: u64 = 1 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Carrier {
    repl: Arc<Replication>,
    peer: String,
    backoff: Duration,
}

impl Carrier {
    pub fn new(repl: Arc<Replication>, peer: String) -> Carrier {
        Carrier { repl, peer, backoff: BACKOFF_MIN }
    }

    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let notify = self.repl.mailbox.notifier(&self.peer);
        loop {
            if self.repl.mailbox.pending(&self.peer) == 0 {
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = &mut shutdown => return,
                }
                continue;
            }
            let pause = match self.deliver_batch().await {
                Ok(()) => {
                    self.backoff = BACKOFF_MIN;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "retry delivery failed; backing off");
                    let jittered = self.backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.5));
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    jittered
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    async fn deliver_batch(&self) -> Result<(), String> {
        let mailbox = &self.repl.mailbox;
        if self.repl.membership.is_removed(&self.peer) {
            let dropped = mailbox.forget_peer(&self.peer).map_err(|e| e.to_string())?;
            tracing::warn!(peer = %self.peer, records = dropped, "mail for a removed member dropped; its shards' new replicas are filled by anti-entropy");
            return Ok(());
        }
        let mut letters = mailbox.next_batch(&self.peer, BATCH_RECORDS, BATCH_BYTES).map_err(|e| e.to_string())?;
        if let Some(grace) = self.repl.tombstone_grace {
            // A record older than the grace may already have been purged on
            // the peer's side of a tombstone; delivering it could bring a
            // deleted value back. Anti-entropy repairs the shard instead.
            let oldest_ms = SystemClock.now_ms().saturating_sub(grace.as_millis() as u64);
            let shards = self.repl.membership.shards();
            let (stale, fresh): (Vec<_>, Vec<_>) = letters.into_iter().partition(|l| l.record.version.hlc >> 16 < oldest_ms);
            if !stale.is_empty() {
                let expired: Vec<_> = stale.iter().map(|l| (l.seq, shard_of(l.key.as_bytes(), shards))).collect();
                tracing::info!(peer = %self.peer, records = expired.len(), "mail older than the tombstone grace dropped; anti-entropy repairs its shards");
                mailbox.expire(&self.peer, &expired).map_err(|e| e.to_string())?;
            }
            letters = fresh;
        }
        if letters.is_empty() {
            return Ok(());
        }
        match self.repl.send_records(&self.peer, letters.iter().map(|l| (&l.key, &l.record)), Duration::from_secs(10)).await {
            Ok(_) => {
                let seqs: Vec<u64> = letters.iter().map(|l| l.seq).collect();
                mailbox.delivered(&self.peer, &seqs).map_err(|e| e.to_string())
            }
            Err(e) => {
                let error = e.to_string();
                mailbox.failed_attempt(&self.peer, letters.len(), &error);
                Err(error)
            }
        }
    }
}
