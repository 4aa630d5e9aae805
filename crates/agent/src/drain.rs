//! The seam through which the agent drains a task from the load balancers
//! before it signals it: a task that a deployment or a scale-down kills is
//! already out of every node's rotation (each LB reads the kill from the
//! replicated state); the agent then waits until no node has a connection or
//! request in flight to it, within a bound (the app's kill grace period).
//! How the nodes are asked (the node RPC) is wired in by `wharf`, which
//! knows the LB; the agent only knows this trait.

use model::TaskId;
use std::time::Duration;

#[async_trait::async_trait]
pub trait LbDrain: Send + Sync {
    /// Returns once no node's load balancer sends to `task` any more and
    /// nothing it proxied to it is still open, or once `bound` has passed.
    /// True when drained, false when the bound ended the wait.
    async fn wait(&self, task: &TaskId, bound: Duration) -> bool;
}
