//! The leader writes cluster-wide settings given as flags
//! (`--job-history-count`, `--service-ports`) into the replicated
//! `Settings`, so `apply` reads them from the log and never from a node's
//! flags: every replica decides the same way.

use model::ClusterState;
use std::sync::Arc;
use store::{Command, Store};

/// While this node leads, makes `read(state)` equal `want` by proposing
/// `command(want)`: once per leadership and only when it differs. A node
/// without the flag never calls this and leaves the cluster's value as it is.
pub async fn keep<T>(store: Arc<Store>, want: T, read: fn(&ClusterState) -> Option<T>, command: fn(T) -> Command)
where
    T: PartialEq + Copy + std::fmt::Debug,
{
    let mut leadership = store.leadership();
    loop {
        if leadership.borrow_and_update().is_self && store.read(read) != Some(want) {
            match store.propose(command(want)).await {
                Ok(_) => tracing::info!(value = ?want, "cluster setting written"),
                Err(e) => {
                    tracing::debug!(error = %e, "cluster setting not written yet");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

/// `--job-history-count`: finished runs kept per job.
pub async fn keep_history_count(store: Arc<Store>, count: u32) {
    keep(store, count, |s| s.settings.job_history_count, |count| Command::SetJobHistoryCount { count }).await
}

/// `--service-ports`: the range service ports are assigned from.
pub async fn keep_service_ports(store: Arc<Store>, range: model::ServicePortRange) {
    keep(store, range, |s| s.settings.service_ports, |range| Command::SetServicePorts { range }).await
}
