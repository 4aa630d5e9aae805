//! A plan: what the leader's scheduler wants changed, committed as one store
//! command. The store re-checks each launch against the newest state
//! (Nomad's plan/apply split) and drops launches that no longer fit.

use crate::{AppId, DeploymentId, LaunchBackoff, Task, TaskFailure, TaskId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    /// New tasks, fully formed (id, node, ports), in state `Staging`.
    pub launches: Vec<Task>,
    /// Tasks whose goal becomes `Killed`.
    pub kills: Vec<TaskId>,
    /// Terminal tasks to forget.
    pub expunges: Vec<TaskId>,
    /// Failures to record as the app's `lastTaskFailure`.
    pub failures: Vec<(AppId, TaskFailure)>,
    /// New launch backoff per app.
    pub backoffs: Vec<(AppId, LaunchBackoff)>,
    pub finished_deployments: Vec<DeploymentId>,
    /// Apps whose delete has completed (no tasks left).
    pub removed_apps: Vec<AppId>,
    /// Deployments that moved on to a later step (1-based).
    #[serde(default)]
    pub deployment_steps: Vec<(DeploymentId, usize)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.launches.is_empty()
            && self.kills.is_empty()
            && self.expunges.is_empty()
            && self.failures.is_empty()
            && self.backoffs.is_empty()
            && self.finished_deployments.is_empty()
            && self.removed_apps.is_empty()
            && self.deployment_steps.is_empty()
    }
}
