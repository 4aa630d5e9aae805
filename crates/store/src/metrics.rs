//! The store's own series for `/metrics`: proposals by outcome and their
//! latency (counted in `Store::propose`), and a read of Raft's progress.
//! The registry and the endpoint belong to the API; this only owns the
//! values the store alone can see.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

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
}

impl Default for StoreMetrics {
    fn default() -> StoreMetrics {
        StoreMetrics {
            proposals: Family::default(),
            // 0.5 ms .. ~4 s: a local fsync is ~2 ms, a forwarded write a few more.
            propose_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
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
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}
