//! Group commit for `--sync=always`: a write waits until a flush that started
//! after it was applied has finished. Concurrent writers share one flush, so
//! the cost of an fsync is split across everyone waiting for it.

use super::{Storage, StorageError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Progress of the flusher: every ticket `<= durable` is on disk; every
/// ticket in `(durable, failed]` was covered by a flush that failed.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    durable: u64,
    failed: u64,
}

struct Inner {
    storage: Arc<dyn Storage>,
    applied: AtomicU64,
    progress: watch::Sender<Progress>,
    wake: Notify,
}

/// Handle shared by writers; [`GroupCommit::run`] is the flusher worker.
#[derive(Clone)]
pub struct GroupCommit(Arc<Inner>);

impl GroupCommit {
    pub fn new(storage: Arc<dyn Storage>) -> GroupCommit {
        let (progress, _) = watch::channel(Progress::default());
        GroupCommit(Arc::new(Inner { storage, applied: AtomicU64::new(0), progress, wake: Notify::new() }))
    }

    /// Call after an apply has returned: resolves once that apply is on disk.
    pub async fn wait_durable(&self) -> Result<(), StorageError> {
        let ticket = self.0.applied.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.0.progress.subscribe();
        self.0.wake.notify_one();
        let p = *rx.wait_for(|p| p.durable >= ticket || p.failed >= ticket).await.map_err(|_| StorageError::FlushFailed)?;
        if p.durable >= ticket {
            Ok(())
        } else {
            Err(StorageError::FlushFailed)
        }
    }

    /// The flusher: one flush at a time, each covering every ticket taken
    /// before it began. Returns (after a last flush) when `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = self.0.wake.notified() => {}
                _ = &mut shutdown => break,
            }
            self.flush_pending().await;
        }
        self.flush_pending().await;
    }

    async fn flush_pending(&self) {
        let target = self.0.applied.load(Ordering::SeqCst);
        if target <= self.0.progress.borrow().durable {
            return;
        }
        let storage = self.0.storage.clone();
        let result = tokio::task::spawn_blocking(move || storage.flush()).await;
        self.0.progress.send_modify(|p| match result {
            Ok(Ok(())) => p.durable = p.durable.max(target),
            other => {
                tracing::error!(?other, "flush failed; failing the writes that waited on it");
                p.failed = p.failed.max(target);
            }
        });
    }
}
