//! Node liveness. Every node heartbeats the leader over the cluster RPC
//! port (not through Raft: a thousand idle nodes cost no log entries). The
//! leader marks a node unreachable when its heartbeats stop, reachable again
//! when they resume, replaces a lost voter with a healthy learner, and drops
//! removed nodes from Raft membership. All liveness decisions are store
//! commands, so they survive a leader change.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use model::{NodeId, UnixMillis};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Command, Store};

#[derive(Clone, Copy)]
pub struct LivenessConfig {
    pub heartbeat_interval: Duration,
    /// Silence after which a node is unreachable.
    pub heartbeat_timeout: Duration,
    /// How long a voter may stay unreachable before a learner replaces it.
    pub voter_replace_after: Duration,
}

#[derive(Default)]
pub struct Liveness {
    last_seen: Mutex<HashMap<NodeId, Instant>>,
}

impl Liveness {
    fn saw(&self, node: NodeId) {
        if let Ok(mut m) = self.last_seen.lock() {
            m.insert(node, Instant::now());
        }
    }

    fn reset(&self, nodes: impl Iterator<Item = NodeId>) {
        if let Ok(mut m) = self.last_seen.lock() {
            m.clear();
            let now = Instant::now();
            for n in nodes {
                m.insert(n, now);
            }
        }
    }

    fn silent_for(&self, node: NodeId) -> Duration {
        self.last_seen.lock().ok().and_then(|m| m.get(&node).map(|t| t.elapsed())).unwrap_or(Duration::MAX)
    }
}

use crate::clock::now;

/// `/cluster/heartbeat`, served on the RPC port.
pub fn router(liveness: Arc<Liveness>) -> Router {
    Router::new().route("/cluster/heartbeat", post(heartbeat)).with_state(liveness)
}

async fn heartbeat(State(l): State<Arc<Liveness>>, Json(node): Json<NodeId>) -> Json<bool> {
    l.saw(node);
    Json(true)
}

/// Every node: tell the leader we are alive.
pub async fn send_heartbeats(store: Arc<Store>, liveness: Arc<Liveness>, cfg: LivenessConfig) {
    let client = store.rpc_client();
    let me = store.node_id();
    loop {
        let l = store.leadership().borrow().clone();
        if l.is_self {
            liveness.saw(me);
        } else if let Some(addr) = l.leader_rpc {
            let req = client.http().post(client.url(&addr, "/cluster/heartbeat")).timeout(cfg.heartbeat_interval * 2);
            let _ = req.json(&me).send().await;
        }
        tokio::time::sleep(cfg.heartbeat_interval).await;
    }
}

/// Leader only: turn heartbeats into liveness commands and keep the voter
/// count up.
pub async fn monitor(store: Arc<Store>, liveness: Arc<Liveness>, cfg: LivenessConfig) {
    let mut leadership = store.leadership();
    loop {
        while !leadership.borrow_and_update().is_self {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        // A new leader has heard nobody yet: everyone gets a full timeout.
        liveness.reset(store.read(|s| s.nodes.keys().copied().collect::<Vec<_>>()).into_iter());
        while store.is_leader() {
            check(&store, &liveness, &cfg).await;
            tokio::time::sleep(cfg.heartbeat_interval).await;
        }
    }
}

async fn check(store: &Store, liveness: &Liveness, cfg: &LivenessConfig) {
    let me = store.node_id();
    let nodes: Vec<(NodeId, bool, Option<UnixMillis>)> =
        store.read(|s| s.nodes.values().map(|n| (n.id, n.is_reachable(), n.unreachable_since)).collect());
    for (id, reachable, _) in &nodes {
        let silent = *id != me && liveness.silent_for(*id) > cfg.heartbeat_timeout;
        if silent == *reachable {
            let cmd = Command::NodeLiveness { node: *id, reachable: !silent, at: now() };
            match store.propose(cmd).await {
                Ok(_) => tracing::info!(node = %id, reachable = !silent, "node liveness changed"),
                Err(e) => tracing::warn!(node = %id, error = %e, "could not record node liveness"),
            }
        }
    }

    let membership = store.membership();
    // Replace a voter lost for too long by a learner that is alive.
    for (id, _, since) in nodes.iter().filter(|(id, r, _)| !r && membership.voters.contains(id)) {
        let lost_for = since.map(|s| now().0 - s.0).unwrap_or(0);
        if lost_for < cfg.voter_replace_after.as_millis() as i64 {
            continue;
        }
        let candidate = membership
            .learners
            .iter()
            .find(|l| nodes.iter().any(|(n, r, _)| n == *l && *r) && liveness.silent_for(**l) < cfg.heartbeat_timeout);
        if let Some(l) = candidate {
            match store.replace_voter(*id, *l).await {
                Ok(()) => tracing::info!(lost = %id, promoted = %l, "replaced a lost voter"),
                Err(e) => tracing::warn!(error = %e, "could not replace a lost voter"),
            }
            return;
        }
    }
    // Drop removed nodes from Raft.
    let removed = store.read(|s| s.removed_nodes.clone());
    for id in removed.iter().filter(|id| membership.voters.contains(id) || membership.learners.contains(id)) {
        if *id == me {
            continue;
        }
        match store.remove_member(*id).await {
            Ok(()) => tracing::info!(node = %id, "removed from raft membership"),
            Err(e) => tracing::warn!(node = %id, error = %e, "could not remove from membership"),
        }
    }
}
