//! Wires a node together and runs it: opens storage, starts the clock and
//! background workers, serves HTTP on a given listener until `shutdown`
//! resolves, then drains in-flight requests and closes storage cleanly.

use crate::api::{self, AppState};
use crate::clock::Hlc;
use crate::config::{NodeConfig, SyncMode};
use crate::kv::KvService;
use crate::membership::{Member, Membership};
use crate::metrics::Metrics;
use crate::replication::mailbox::{MailLimits, Mailbox};
use crate::replication::{Replication, ReplicationSettings};
use crate::rpc::client::PeerClient;
use crate::rpc::mac::MacKey;
use crate::storage::group_commit::GroupCommit;
use crate::storage::sled_engine::{SledOptions, SledStorage};
use crate::storage::{claim_for_node, mark_running, mark_stopped, MetaHighWater, Storage, StorageError};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cluster secret: {0}")]
    Secret(#[from] crate::rpc::mac::AuthError),
    #[error("membership: {0}")]
    Membership(#[from] crate::membership::MembershipError),
    #[error("opening the data dir {dir}: {source}")]
    Storage { dir: String, source: StorageError },
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
    let storage_error = |source| NodeError::Storage { dir: dir.clone(), source };
    let hlc = Arc::new(
        Hlc::open(config.clock.0.clone(), Arc::new(MetaHighWater(storage.clone())))
            .map_err(storage_error)?
            .with_max_drift_ms(config.max_clock_drift.as_millis() as u64)
            // A node without seeds has nobody to judge its clock.
            .with_unjudged_grace(if config.seeds.is_empty() { std::time::Duration::ZERO } else { crate::clock::UNJUDGED_GRACE }),
    );
    if let Err(e) = hlc.check_lead() {
        tracing::error!(error = %e, "the clock mark persisted before this start is ahead of the wall clock");
    }
    let marking = storage.clone();
    let unclean_stop = tokio::task::spawn_blocking(move || mark_running(marking.as_ref()))
        .await
        .unwrap_or(Err(StorageError::FlushFailed))
        .map_err(storage_error)?;
    if unclean_stop {
        tracing::warn!(sync = ?config.sync, "the last run on this data dir did not stop cleanly (a crash, SIGKILL or power loss); anti-entropy restores from peers whatever it lost once the cluster is known");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut workers = vec![tokio::spawn(renew_clock_reservation(hlc.clone(), stopped()))];
    let commit = (config.sync == SyncMode::Always).then(|| GroupCommit::new(storage.clone()));
    if let Some(c) = &commit {
        workers.push(tokio::spawn(c.clone().run(stopped())));
    }

    let kv = Arc::new(KvService::new(storage.clone(), hlc, config.node_id.clone(), commit));
    let mac = config.cluster_secret.as_deref().map(MacKey::from_secret).transpose()?.map(Arc::new);
    let addr = config.advertise.clone().unwrap_or_else(|| listener.local_addr().map(|a| a.to_string()).unwrap_or_default());
    let me = Member { id: config.node_id.name().to_string(), addr };
    let membership =
        Arc::new(Membership::open(me, config.seeds.clone(), storage.shard_count(), config.replication_factor, storage.clone())?);
    let metrics = Arc::new(Metrics::new());
    let clocks = Arc::new(crate::clock::ClockWatch::new(kv.hlc().clone()).with_step_counter(metrics.clock_steps.clone()));
    let peers =
        PeerClient::new(config.node_id.name(), mac.clone(), config.links.0.clone(), metrics.wire.clone()).with_clock_watch(clocks.clone());
    let limits = MailLimits { max_records: config.retry_max_records, max_bytes: config.retry_max_bytes };
    let mailbox = Arc::new(Mailbox::open(storage.clone(), limits, metrics.mail_dropped.clone()).map_err(storage_error)?);
    let repl = Arc::new(Replication::new(
        kv,
        membership.clone(),
        peers.clone(),
        mailbox.clone(),
        ReplicationSettings {
            me: config.node_id.clone(),
            metrics: metrics.clone(),
            timeout: config.write_timeout,
            max_value_bytes: config.max_value_bytes,
            tombstone_grace: config.tombstone_grace,
        },
        stop_tx.subscribe(),
    ));
    for peer in mailbox.peers_with_mail() {
        repl.ensure_carrier(&peer);
    }
    workers.push(tokio::spawn(membership.clone().discover(peers.clone(), stopped())));
    // Gossip gets its own byte counters: the peer_bytes metrics stay the cost of moving data.
    let gossip_peers = PeerClient::new(config.node_id.name(), mac.clone(), config.links.0.clone(), metrics.gossip_wire.clone())
        .with_clock_watch(clocks.clone());
    let gossip_stats = metrics.gossip.clone();
    workers.push(tokio::spawn(membership.clone().gossip(config.gossip.clone(), gossip_peers, gossip_stats, stopped())));
    let initial = crate::repair::Schedule {
        enabled: config.anti_entropy_enabled,
        interval_secs: config.anti_entropy_interval_secs,
        max_bytes_per_sec: config.repair_max_bytes_per_sec,
        stamp: 0,
    };
    let ae = crate::repair::AntiEntropy::open(repl.clone(), initial, purge_policy(&config)).map_err(storage_error)?;
    let ae = Arc::new(ae.after_unclean_stop(unclean_stop));
    workers.push(tokio::spawn(ae.clone().scheduler(stopped())));
    if let Some(every) = config.handoff_every {
        workers.push(tokio::spawn(crate::repair::handoff::worker(repl.clone(), every, stopped())));
    }
    let state = AppState::new(crate::api::Shared {
        repl: repl.clone(),
        ae: ae.clone(),
        admin_token: config.admin_token.as_deref().map(Arc::from),
        metrics: metrics.clone(),
        node: config.node_id.name().to_string(),
        max_value_bytes: config.max_value_bytes,
        max_internal_bytes: (config.max_value_bytes * 2).max(8 << 20),
        read_timeout: config.connections.read_timeout,
        mac,
        clocks,
    });
    tracing::info!(node = %config.node_id, addr = ?listener.local_addr().ok(), data_dir = %dir, shards = storage.shard_count(), sync = ?config.sync, "serving");
    crate::api::server::serve(listener, api::router(state), config.connections, metrics.clone(), shutdown).await;

    let _ = stop_tx.send(true);
    for w in workers {
        let _ = w.await;
    }
    if let Some(run) = ae.running() {
        let _ = ae.cancel(&run.id);
    }
    repl.drain().await;
    drop(ae);
    drop(repl);
    let flushed = tokio::task::spawn_blocking(move || mark_stopped(storage.as_ref())).await.unwrap_or(Err(StorageError::FlushFailed));
    flushed.map_err(NodeError::Close)?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Worker: renews the clock's persisted reservation ahead of the stamps
/// ([`Hlc::renew_reservation`]), so writes do not wait for that flush.
async fn renew_clock_reservation(hlc: Arc<Hlc>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(crate::clock::RENEW_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let hlc = hlc.clone();
                match tokio::task::spawn_blocking(move || hlc.renew_reservation()).await {
                    Ok(Ok(_)) => {}
                    // A write that needs the mark tries again itself and fails visibly.
                    // A failed storage was logged once when it failed.
                    Ok(Err(e)) if !matches!(e, StorageError::Failed(_)) => tracing::warn!(error = %e, "renewing the clock's persisted reservation failed"),
                    Ok(Err(_)) => {}
                    Err(e) => tracing::error!(error = %e, "clock reservation task panicked"),
                }
            }
            _ = &mut shutdown => return,
        }
    }
}

/// The purge rules from the node's settings; `None` keeps tombstones forever.
fn purge_policy(config: &NodeConfig) -> Option<crate::repair::purge::PurgePolicy> {
    config.tombstone_grace.map(|grace| crate::repair::purge::PurgePolicy {
        grace,
        max_drift: config.max_clock_drift,
        delay: config.purge_delay,
    })
}
