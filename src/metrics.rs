//! Prometheus metrics of a node: one registry, the metric families every part
//! updates, and the text rendering served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// Counters of peer traffic, shared with the peer client.
#[derive(Clone, Debug, Default)]
pub struct WireStats {
    pub requests: Counter,
    pub bytes_sent: Counter,
    pub bytes_received: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// What the gossip worker does and concludes, shared with it.
#[derive(Clone, Debug, Default)]
pub struct GossipStats {
    /// Messages sent, by kind (ping, ack, ping-req, gossip, sync).
    pub messages: Family<KindLabels, Counter>,
    /// Changes this node adopted about other members, by their new state.
    pub changes: Family<StateLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub shard: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub shard_keys: Family<ShardLabels, Gauge>,
    pub shard_records: Family<ShardLabels, Gauge>,
    pub storage_bytes: Gauge<u64, AtomicU64>,
    /// 1 once a storage write has failed and the node takes no more writes.
    pub storage_failed: Gauge,
    pub quarantined: Gauge<u64, AtomicU64>,
    /// How far ahead this node's clock is while it refuses writes for it; 0 otherwise.
    pub clock_refusing_ms: Gauge<u64, AtomicU64>,
    /// Steps of this node's wall clock ([`crate::clock::ClockWatch`]).
    pub clock_steps: Counter,
    pub wire: WireStats,
    /// Gossip traffic, apart from `wire` so that stays the cost of moving data.
    pub gossip_wire: WireStats,
    pub gossip: GossipStats,
    /// Members by gossip state, set at each scrape.
    pub members: Family<StateLabels, Gauge>,
    pub mail_dropped: Family<PeerLabels, Counter>,
    pub mail_pending: Family<PeerLabels, Gauge>,
    pub peer_clock_offset: Family<PeerLabels, Gauge>,
    pub tombstones_purged: Counter,
    pub records_below_floor: Counter,
    pub stale_records_dropped: Counter,
    pub handed_off: Counter,
    pub handoffs_deferred: Counter,
    /// Seconds repair exchanges waited on the bandwidth limit.
    pub repair_throttled: Counter<f64, AtomicU64>,
    pub ae_runs: Counter,
    pub ae_hops: Counter,
    pub ae_keys_repaired: Counter,
    pub ae_bytes: Counter,
    pub ae_shards_diverged: Counter,
    pub shard_last_verified: Family<ShardLabels, Gauge<f64, AtomicU64>>,
    /// Client and peer connections open ([`crate::api::server`]).
    pub http_connections: Gauge,
    pub http_connections_refused: Counter,
    pub http_read_timeouts: Counter,
    pub http_idle_closes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hearsay");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let shard_keys = Family::<ShardLabels, Gauge>::default();
        let shard_records = Family::<ShardLabels, Gauge>::default();
        let storage_bytes = Gauge::<u64, AtomicU64>::default();
        let storage_failed = Gauge::default();
        let quarantined = Gauge::<u64, AtomicU64>::default();
        let clock_refusing_ms = Gauge::<u64, AtomicU64>::default();
        let clock_steps = Counter::default();
        let wire = WireStats::default();
        let mail_dropped = Family::<PeerLabels, Counter>::default();
        let mail_pending = Family::<PeerLabels, Gauge>::default();
        let peer_clock_offset = Family::<PeerLabels, Gauge>::default();
        let tombstones_purged = Counter::default();
        registry.register("tombstones_purged", "Tombstones purged from verified shards after the grace", tombstones_purged.clone());
        let (records_below_floor, stale_records_dropped, handed_off) = (Counter::default(), Counter::default(), Counter::default());
        registry.register(
            "records_below_purge_floor",
            "Peer records refused as older than their shard's purge floor: deleted values a stale copy still held",
            records_below_floor.clone(),
        );
        registry.register(
            "stale_records_dropped",
            "Records this node dropped from its own copy after a replica refused them as below its purge floor",
            stale_records_dropped.clone(),
        );
        registry.register(
            "handed_off_records",
            "Records of shards this node no longer replicates, pushed to their replicas and then dropped here",
            handed_off.clone(),
        );
        let repair_throttled = Counter::<f64, AtomicU64>::default();
        registry.register(
            "repair_throttled_seconds",
            "Seconds this node's repair exchanges and hand-offs waited on the repair bandwidth limit",
            repair_throttled.clone(),
        );
        let handoffs_deferred = Counter::default();
        registry.register(
            "handoffs_deferred",
            "Hand-off rounds that kept a shard's records here because not every replica took the push yet",
            handoffs_deferred.clone(),
        );
        registry.register("peer_requests", "Requests this node sent to peers", wire.requests.clone());
        registry.register("peer_bytes_sent", "Bytes of peer requests sent (request line, headers, body)", wire.bytes_sent.clone());
        registry.register("peer_bytes_received", "Bytes of peer replies received (headers, body)", wire.bytes_received.clone());
        let gossip_wire = WireStats::default();
        registry.register("gossip_requests", "Gossip messages this node sent", gossip_wire.requests.clone());
        registry.register("gossip_bytes_sent", "Bytes of gossip messages sent", gossip_wire.bytes_sent.clone());
        registry.register("gossip_bytes_received", "Bytes of gossip replies received", gossip_wire.bytes_received.clone());
        let gossip = GossipStats::default();
        registry.register("gossip_messages", "Gossip messages this node sent, by kind", gossip.messages.clone());
        registry.register(
            "member_changes",
            "Changes of other members' state this node adopted, by new state (suspect: a suspicion; alive: a join or a refutation)",
            gossip.changes.clone(),
        );
        let members = Family::<StateLabels, Gauge>::default();
        registry.register("members", "Members of the view by gossip state (alive, suspect, dead, left, unknown)", members.clone());
        registry.register("mail_dropped", "Records dropped because a peer's retry buffer was full", mail_dropped.clone());
        registry.register("mail_pending", "Records waiting in a peer's retry buffer", mail_pending.clone());
        registry.register(
            "peer_clock_offset_ms",
            "How far each peer's clock is behind this node's (negative: ahead), from its signed requests",
            peer_clock_offset.clone(),
        );
        let (ae_runs, ae_hops, ae_keys_repaired, ae_bytes, ae_shards_diverged) =
            (Counter::default(), Counter::default(), Counter::default(), Counter::default(), Counter::default());
        let shard_last_verified = Family::<ShardLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("anti_entropy_runs", "Anti-entropy runs started on this node", ae_runs.clone());
        registry.register("anti_entropy_hops", "Replica-to-replica exchanges made by anti-entropy runs", ae_hops.clone());
        registry.register("anti_entropy_keys_repaired", "Records moved by anti-entropy", ae_keys_repaired.clone());
        registry.register("anti_entropy_bytes", "Peer-protocol bytes moved by anti-entropy", ae_bytes.clone());
        registry.register("anti_entropy_shards_diverged", "Shards found with differing replicas", ae_shards_diverged.clone());
        registry.register(
            "shard_last_verified_seconds",
            "Seconds since each shard was last verified equal on all its replicas (absent: never, since start)",
            shard_last_verified.clone(),
        );
        registry.register("http_requests", "HTTP requests served, by route and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency, by route and status", http_latency.clone());
        registry.register("shard_keys", "Live keys stored per shard on this node", shard_keys.clone());
        registry.register("shard_records", "Records (values and tombstones) per shard on this node", shard_records.clone());
        registry.register("storage_bytes", "Bytes the storage engine occupies on disk", storage_bytes.clone());
        registry.register(
            "storage_failed",
            "1 once a storage write failed with an I/O error: the node takes no more writes until it is restarted",
            storage_failed.clone(),
        );
        registry.register(
            "quarantined_records",
            "Damaged records moved aside at open (held for inspection in the data dir's quarantine tree)",
            quarantined.clone(),
        );
        registry.register(
            "clock_ahead_refusing_writes_ms",
            "While this node refuses writes because its clock is ahead (of most peers', or of its own newest version), by how much; 0 otherwise",
            clock_refusing_ms.clone(),
        );
        registry.register(
            "clock_steps",
            "Steps of this node's wall clock (it moved over 1 s more or less than real time between two readings); peers' clock offsets are measured afresh after each",
            clock_steps.clone(),
        );
        let http_connections = Gauge::default();
        let http_connections_refused = Counter::default();
        let http_read_timeouts = Counter::default();
        let http_idle_closes = Counter::default();
        registry.register("http_connections", "HTTP connections open (clients and peers)", http_connections.clone());
        registry.register(
            "http_connections_refused",
            "Connections refused because --max-connections were open and the peers' reserve was full (answered 503, or closed unanswered), and client requests refused (503) on connections kept for peers",
            http_connections_refused.clone(),
        );
        registry.register(
            "http_read_timeouts",
            "Slow clients: connections closed because a request head they had begun did not arrive whole within --read-timeout-secs, and requests answered 408 because their body did not",
            http_read_timeouts.clone(),
        );
        registry.register(
            "http_idle_closes",
            "Connections closed after --read-timeout-secs with nothing sent since their last response (idle keep-alive connections) or since they opened",
            http_idle_closes.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_latency,
            shard_keys,
            shard_records,
            storage_bytes,
            storage_failed,
            quarantined,
            clock_refusing_ms,
            clock_steps,
            wire,
            gossip_wire,
            gossip,
            members,
            mail_dropped,
            mail_pending,
            peer_clock_offset,
            tombstones_purged,
            records_below_floor,
            stale_records_dropped,
            handed_off,
            handoffs_deferred,
            repair_throttled,
            ae_runs,
            ae_hops,
            ae_keys_repaired,
            ae_bytes,
            ae_shards_diverged,
            shard_last_verified,
            http_connections,
            http_connections_refused,
            http_read_timeouts,
            http_idle_closes,
        }
    }

    pub fn observe_request(&self, labels: HttpLabels, seconds: f64) {
        self.http_latency.get_or_create(&labels).observe(seconds);
        self.http_requests.get_or_create(&labels).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
