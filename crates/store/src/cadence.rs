//! When this node builds a snapshot: once the log written since its last
//! snapshot is as large as that snapshot (and at least a floor), or after
//! a bound on entries. A fixed count of entries alone re-serialises a large
//! state every few thousand small writes, on every node at once (they all
//! reach the same index together); tying the cadence to size makes
//! snapshots cost in proportion to what was written since, and keeps a
//! restart's replay no longer than the state it restores. The entry bound
//! (openraft's own `LogsSinceLast`) still holds for logs of tiny entries.
//!
//! Building a snapshot slows the node that builds it. A follower's slowness
//! is hidden by the quorum (the leader needs one follower's answer of two),
//! the leader's is not: so the leader waits until its log is twice as large,
//! and each node draws a margin of up to half the threshold after every
//! snapshot, so followers that reached an index together don't build at
//! the same time.

use crate::log_store::LogSize;
use crate::raft_types::Raft;
use crate::StoreMetrics;
use std::time::{Duration, Instant};

/// How often the log's size is looked at (a sum over its segments).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// A snapshot asked for and not seen built within this is asked for again
/// (openraft ignores the request while one is being built or installed).
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Whether a log of `log_bytes` since a snapshot of `snapshot_bytes` is due
/// for a new snapshot, given the floor `min_log_bytes`, whether this node
/// leads, and its margin (a fraction of the threshold, below 1).
pub(crate) fn due(log_bytes: u64, snapshot_bytes: u64, min_log_bytes: u64, leader: bool, margin: f64) -> bool {
    let threshold = min_log_bytes.max(snapshot_bytes) as f64 * (1.0 + margin) * if leader { 2.0 } else { 1.0 };
    log_bytes as f64 >= threshold
}

/// A margin for the next snapshot: up to half the threshold.
fn draw_margin() -> f64 {
    rand::random::<f64>() * 0.5
}

/// Watches the log's size and asks openraft for a snapshot when it is due.
/// Ends when Raft shuts down.
pub(crate) fn spawn(raft: Raft, log: LogSize, metrics: StoreMetrics, min_log_bytes: u64) {
    tokio::spawn(async move {
        let mut asked: Option<(Option<u64>, Instant)> = None;
        let mut margin = draw_margin();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (at, leader) = {
                let m = raft.metrics();
                let m = m.borrow();
                (m.snapshot.map(|s| s.index), m.state == openraft::ServerState::Leader)
            };
            if asked.is_some_and(|(idx, when)| idx == at && when.elapsed() < RETRY_AFTER) {
                continue;
            }
            let log_bytes = log.bytes_after(at);
            if !due(log_bytes, metrics.snapshot_bytes(), min_log_bytes, leader, margin) {
                continue;
            }
            margin = draw_margin();
            tracing::info!(
                log_bytes,
                snapshot_bytes = metrics.snapshot_bytes(),
                "the log outgrew the snapshot: building one"
            );
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            asked = Some((at, Instant::now()));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn a_snapshot_is_due_once_the_log_outgrows_both_the_floor_and_the_last_snapshot() {
        const MIB: u64 = 1 << 20;
        // Small state: the floor decides.
        assert!(!due(31 * MIB, MIB, 32 * MIB, false, 0.0));
        assert!(due(32 * MIB, MIB, 32 * MIB, false, 0.0));
        // Large state: the log must grow as large as the snapshot first.
        assert!(!due(100 * MIB, 200 * MIB, 32 * MIB, false, 0.0));
        assert!(due(200 * MIB, 200 * MIB, 32 * MIB, false, 0.0));
        // No snapshot yet: the floor alone.
        assert!(due(40 * MIB, 0, 32 * MIB, false, 0.0));
    }

    #[test]
    fn the_leader_waits_for_twice_the_log_and_a_margin_moves_the_threshold() {
        const MIB: u64 = 1 << 20;
        assert!(!due(63 * MIB, MIB, 32 * MIB, true, 0.0));
        assert!(due(64 * MIB, MIB, 32 * MIB, true, 0.0));
        assert!(!due(39 * MIB, MIB, 32 * MIB, false, 0.25));
        assert!(due(40 * MIB, MIB, 32 * MIB, false, 0.25));
        assert!(!due(47 * MIB, MIB, 32 * MIB, false, 0.49));
    }
}
