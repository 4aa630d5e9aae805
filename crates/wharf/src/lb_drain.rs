//! The agent's `LbDrain` over the node RPC: before a task the load balancers
//! send to is signalled, every node is asked (`GET /lb/drain/{task}` beside
//! `/raft/*`) whether its LB still has it in rotation or anything in flight
//! to it, again until each has answered drained or the bound passes. A node
//! that does not answer within `ASK_TIMEOUT` (down, partitioned, or too old
//! to know the route) counts as drained: nothing waits on a dead node.

use model::{NodeId, TaskId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Store;

/// How long one node may take to answer before it counts as drained.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// Between two rounds of asking the nodes that were not drained yet.
const POLL: Duration = Duration::from_millis(50);

pub struct RpcDrain {
    store: Arc<Store>,
}

impl RpcDrain {
    pub fn new(store: Arc<Store>) -> Arc<RpcDrain> {
        Arc::new(RpcDrain { store })
    }
}

/// Whether `addr`'s LB is done with `task`; any failure to ask says yes.
async fn drained_at(client: &trust::RpcClient, addr: &str, task: &TaskId) -> bool {
    let url = client.url(addr, &format!("{}/{}", lb::DRAIN_PATH, task.as_str()));
    let answer = async {
        let resp = client.http().get(url).timeout(ASK_TIMEOUT).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<lb::DrainState>().await.ok()
    };
    answer.await.is_none_or(|s| s.drained())
}

#[async_trait::async_trait]
impl agent::LbDrain for RpcDrain {
    async fn wait(&self, task: &TaskId, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let client = self.store.rpc_client();
        let mut done: BTreeSet<NodeId> = BTreeSet::new();
        loop {
            // Read each round: a node that joined meanwhile is asked too, an
            // unreachable one (the liveness monitor's verdict) is not.
            let pending: Vec<(NodeId, String)> = self.store.read(|s| {
                s.nodes
                    .values()
                    .filter(|n| n.is_reachable() && !done.contains(&n.id))
                    .map(|n| (n.id, n.rpc_addr.clone()))
                    .collect()
            });
            let asks = pending.iter().map(|(id, addr)| {
                let client = &client;
                async move { (*id, drained_at(client, addr, task).await) }
            });
            for (id, drained) in futures::future::join_all(asks).await {
                if drained {
                    done.insert(id);
                }
            }
            if pending.iter().all(|(id, _)| done.contains(id)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(POLL.min(left)).await;
        }
    }
}
