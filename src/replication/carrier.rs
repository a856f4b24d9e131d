//! The mail carrier: one worker per peer that drains its retry buffer,
//! oldest first, in batches, backing off exponentially (with jitter) while
//! the peer does not answer.

use super::Replication;
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
        let letters = mailbox.next_batch(&self.peer, BATCH_RECORDS, BATCH_BYTES).map_err(|e| e.to_string())?;
        if letters.is_empty() {
            return Ok(());
        }
        match self.repl.send_records(&self.peer, letters.iter().map(|l| (&l.key, &l.record)), Duration::from_secs(10)).await {
            Ok(_) => {
                let seqs: Vec<u64> = letters.iter().map(|l| l.seq).collect();
                mailbox.delivered(&self.peer, &seqs).map_err(|e| e.to_string())
            }
            Err(e) => {
                mailbox.failed_attempt(&self.peer, letters.len());
                Err(e.to_string())
            }
        }
    }
}
