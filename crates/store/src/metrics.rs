//! The store's own series for `/metrics`: proposals by outcome and their
//! latency (counted in `Store::propose`), and a read of Raft's progress.
//! The registry and the endpoint belong to the API; this only owns the
//! values the store alone can see.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `applied`, `rejected` (refused by `apply`, e.g. a conflict) or
    /// `error` (no leader, forwarding failed).
    pub outcome: &'static str,
}

#[derive(Clone, Debug)]
pub struct StoreMetrics {
    pub(crate) proposals: Family<OutcomeLabels, Counter>,
    pub(crate) propose_seconds: Histogram,
    /// Time to apply one batch of committed entries (apply, effects, swap,
    /// publication on the feed).
    pub(crate) apply_seconds: Histogram,
    pub(crate) applied_entries: Counter,
    /// One durable transaction of the Raft log (write and fsync), and how
    /// many entries it carried (group commit).
    pub(crate) log_flush_seconds: Histogram,
    pub(crate) log_flush_entries: Histogram,
    /// The leader's AppendEntries round trips that carried entries (send,
    /// the follower's append and fsync, answer), and their entry counts.
    pub(crate) append_rpc_seconds: Histogram,
    pub(crate) append_rpc_entries: Histogram,
    /// Time a follower took to answer one AppendEntries with entries.
    pub(crate) append_served_seconds: Histogram,
    /// Unix ms when this node last built or installed a snapshot (0: not
    /// since it started).
    snapshot_at: Arc<AtomicU64>,
    /// Size of this node's current snapshot (built, installed or loaded).
    snapshot_bytes: Gauge,
}

impl Default for StoreMetrics {
    fn default() -> StoreMetrics {
        StoreMetrics {
            proposals: Family::default(),
            // 0.5 ms .. ~4 s: a local fsync is ~2 ms, a forwarded write a few more.
            propose_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            // 10 µs .. ~160 ms: most batches are a few entries over
            // persistent maps; a large plan takes milliseconds.
            apply_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 15)),
            applied_entries: Counter::default(),
            // 0.1 ms .. ~1.6 s: an fsync here is 1-5 ms.
            log_flush_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            log_flush_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            append_rpc_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            append_rpc_entries: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            append_served_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            snapshot_at: Arc::default(),
            snapshot_bytes: Gauge::default(),
        }
    }
}

impl StoreMetrics {
    /// Adds the store's series to `registry` (under its prefix, `wharf`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("store_proposals", "Commands proposed through this node, by outcome", self.proposals.clone());
        registry.register_with_unit(
            "store_propose",
            "Time from proposing a command to it being applied on this node",
            Unit::Seconds,
            self.propose_seconds.clone(),
        );
        registry.register_with_unit(
            "store_apply",
            "Time to apply one batch of committed Raft entries to this node's state",
            Unit::Seconds,
            self.apply_seconds.clone(),
        );
        registry.register("store_applied_entries", "Raft entries applied on this node", self.applied_entries.clone());
        registry.register_with_unit(
            "store_log_flush",
            "Time of one durable write of the Raft log (one fsync for every entry queued meanwhile)",
            Unit::Seconds,
            self.log_flush_seconds.clone(),
        );
        registry.register(
            "store_log_flush_entries",
            "Raft log entries made durable by one write",
            self.log_flush_entries.clone(),
        );
        registry.register_with_unit(
            "store_append_rpc",
            "Round trip of an AppendEntries with entries from this leader to a follower",
            Unit::Seconds,
            self.append_rpc_seconds.clone(),
        );
        registry.register(
            "store_append_rpc_entries",
            "Entries carried by one AppendEntries from this leader",
            self.append_rpc_entries.clone(),
        );
        registry.register_with_unit(
            "store_append_served",
            "Time this node took to answer an AppendEntries with entries (append and fsync)",
            Unit::Seconds,
            self.append_served_seconds.clone(),
        );
        registry.register_with_unit(
            "store_snapshot_size",
            "Size of this node's current Raft snapshot",
            Unit::Bytes,
            self.snapshot_bytes.clone(),
        );
    }

    /// Seconds since this node last built or installed a snapshot; `None`
    /// when it has not since it started (one loaded at start has no
    /// recorded time).
    pub fn snapshot_age_seconds(&self, now_unix_ms: u64) -> Option<f64> {
        match self.snapshot_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(now_unix_ms.saturating_sub(at) as f64 / 1000.0),
        }
    }

    /// Size of this node's current snapshot, 0 when it has none.
    pub fn snapshot_bytes(&self) -> u64 {
        u64::try_from(self.snapshot_bytes.get()).unwrap_or(0)
    }

    /// A snapshot of `bytes` was loaded at start (no build time recorded).
    pub(crate) fn snapshot_loaded(&self, bytes: u64) {
        self.snapshot_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn snapshot_taken(&self, bytes: u64) {
        self.snapshot_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.snapshot_at.store(now, Ordering::Relaxed);
    }

    pub(crate) fn observe(&self, outcome: &'static str, seconds: f64) {
        self.proposals.get_or_create(&OutcomeLabels { outcome }).inc();
        self.propose_seconds.observe(seconds);
    }
}

/// Raft's progress as this node sees it (openraft's metrics, without its types).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RaftStatus {
    pub term: u64,
    pub leader: Option<model::NodeId>,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: &'static str,
    pub last_log_index: Option<u64>,
    /// The highest index this node knows to be committed (what openraft
    /// hands the log store before applying; its metrics do not carry it).
    pub committed_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}
