//! Wires a node together and runs it: opens storage, starts the clock and
//! background workers, serves HTTP on a given listener until `shutdown`
//! resolves, then drains in-flight requests and closes storage cleanly.

use crate::api::{self, AppState};
use crate::clock::{Hlc, SystemClock};
use crate::config::{NodeConfig, SyncMode};
use crate::kv::KvService;
use crate::metrics::Metrics;
use crate::storage::group_commit::GroupCommit;
use crate::storage::sled_engine::{SledOptions, SledStorage};
use crate::storage::{claim_for_node, MetaHighWater, Storage, StorageError};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("opening the data dir {dir}: {source}")]
    Storage { dir: String, source: StorageError },
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error("closing storage: {0}")]
    Close(StorageError),
}

/// Opens the node's sled data dir (running migrations) off the async runtime.
pub async fn open_storage(config: &NodeConfig) -> Result<Arc<dyn Storage>, NodeError> {
    let opts = SledOptions { path: config.data_dir.clone(), shards: config.shards, cache_bytes: config.cache_bytes };
    let dir = config.data_dir.display().to_string();
    let node = config.node_id.name().to_string();
    let opened = tokio::task::spawn_blocking(move || {
        let s = SledStorage::open(&opts)?;
        claim_for_node(&s, &node)?;
        Ok::<_, StorageError>(s)
    })
    .await
    .expect("open task panicked");
    opened.map(|s| Arc::new(s) as Arc<dyn Storage>).map_err(|source| NodeError::Storage { dir, source })
}

/// Runs a node on sled storage in `config.data_dir`.
pub async fn run(listener: TcpListener, config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    let storage = open_storage(&config).await?;
    run_with_storage(listener, config, storage, shutdown).await
}

/// Runs a node over an already opened store (tests pass the memory engine).
pub async fn run_with_storage(
    listener: TcpListener,
    config: NodeConfig,
    storage: Arc<dyn Storage>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let dir = config.data_dir.display().to_string();
    let hlc = Hlc::open(Arc::new(SystemClock), Arc::new(MetaHighWater(storage.clone())))
        .map_err(|source| NodeError::Storage { dir: dir.clone(), source })?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut workers = Vec::new();
    let commit = (config.sync == SyncMode::Always).then(|| GroupCommit::new(storage.clone()));
    if let Some(c) = &commit {
        workers.push(tokio::spawn(c.clone().run(stopped())));
    }

    let kv = Arc::new(KvService::new(storage.clone(), Arc::new(hlc), config.node_id.clone(), commit));
    let state = AppState {
        kv,
        metrics: Arc::new(Metrics::new()),
        node: config.node_id.name().to_string(),
        max_value_bytes: config.max_value_bytes,
    };
    tracing::info!(node = %config.node_id, addr = ?listener.local_addr().ok(), data_dir = %dir, shards = storage.shard_count(), sync = ?config.sync, "serving");
    let served = axum::serve(listener, api::router(state)).with_graceful_shutdown(shutdown).await;

    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    let flushed = tokio::task::spawn_blocking(move || storage.flush()).await.expect("flush task panicked");
    served?;
    flushed.map_err(NodeError::Close)?;
    tracing::info!("stopped cleanly");
    Ok(())
}
