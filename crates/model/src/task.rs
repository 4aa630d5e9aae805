//! A task: one running instance of an app on one node.
//!
//! ```text
//!   (leader places)          (agent)             (agent)
//!   TASK_STAGING ──────► TASK_STARTING ──────► TASK_RUNNING
//!        │                    │                    │
//!        │   goal=Killed      ▼                    ▼
//!        └──────────────► TASK_KILLING ───► TASK_KILLED
//!                             process exits ───► TASK_FINISHED (0) / TASK_FAILED (≠0, OOM)
//!   node gone ───► TASK_UNREACHABLE / TASK_LOST
//! ```
//! Terminal tasks are expunged by the leader, which replaces them (with
//! backoff for failures) while the app still wants instances.

use crate::{AppId, NodeId, Resources, TaskId, UnixMillis};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Lost,
    Unreachable,
    Error,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost | TaskState::Error)
    }

    /// Marathon's name (`TASK_RUNNING`, ...).
    pub fn marathon_name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Error => "TASK_ERROR",
        }
    }

    pub fn from_marathon_name(s: &str) -> Option<TaskState> {
        [
            TaskState::Staging,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Finished,
            TaskState::Failed,
            TaskState::Killed,
            TaskState::Lost,
            TaskState::Unreachable,
            TaskState::Error,
        ]
        .into_iter()
        .find(|st| st.marathon_name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum TaskGoal {
    #[default]
    Running,
    /// The leader wants it gone; the agent kills it.
    Killed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub app_id: AppId,
    pub node: NodeId,
    /// The node's advertised host name/address (Marathon's `host`).
    pub host: String,
    /// The app version this task runs.
    pub app_version: UnixMillis,
    /// Host ports allocated on the node, in port-definition order.
    pub ports: Vec<u16>,
    pub resources: Resources,
    pub state: TaskState,
    pub goal: TaskGoal,
    pub staged_at: UnixMillis,
    pub started_at: Option<UnixMillis>,
    pub updated_at: UnixMillis,
    /// Why the task is in its state (exit status, OOM, ...).
    pub message: Option<String>,
    /// Latest health (None: unknown / no checks).
    pub healthy: Option<bool>,
    /// Details of the latest health transition.
    #[serde(default)]
    pub health: Option<HealthInfo>,
    /// Whether the app's readiness checks have passed for this task (None:
    /// not checked yet, or the app has none). Once true, it stays true.
    #[serde(default)]
    pub ready: Option<bool>,
    /// The latest result of each readiness check, as the agent reported it.
    #[serde(default)]
    pub readiness: Vec<ReadinessResult>,
    /// The job run this task belongs to (its `app_id` is then the root `/`,
    /// which no app can have, so app queries never see it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_run: Option<crate::JobRunRef>,
    /// The container's own address (bridge networking), as its agent
    /// reported it; `None` on the node's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ip: Option<std::net::IpAddr>,
}

/// One readiness check's latest result for a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessResult {
    /// The check's `name`.
    pub name: String,
    pub ready: bool,
    /// The last HTTP answer, kept when the check has `preserveLastResponse`.
    pub last_response: Option<HttpResponse>,
}

/// An HTTP answer as readiness results carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// An agent's report of a readiness transition (first result, then the pass).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessReport {
    pub task_id: TaskId,
    /// True once every check has passed.
    pub ready: bool,
    pub results: Vec<ReadinessResult>,
    pub at: UnixMillis,
}

/// What the store keeps of a task's health. Agents write it only when the
/// verdict changes (or on the first result), so steady health costs no
/// Raft traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthInfo {
    pub alive: bool,
    pub consecutive_failures: u32,
    pub first_success: Option<UnixMillis>,
    pub last_success: Option<UnixMillis>,
    pub last_failure: Option<UnixMillis>,
    pub last_failure_cause: Option<String>,
}

/// An agent's report of a health transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub task_id: TaskId,
    pub alive: bool,
    pub consecutive_failures: u32,
    pub at: UnixMillis,
    pub cause: Option<String>,
}

impl Task {
    /// A task just placed: `Staging`, to run, nothing reported yet; its
    /// version and times are `at`.
    pub fn staged(
        id: TaskId,
        app_id: AppId,
        node: NodeId,
        ports: Vec<u16>,
        resources: Resources,
        at: UnixMillis,
    ) -> Task {
        Task {
            id,
            app_id,
            node,
            host: String::new(),
            app_version: at,
            ports,
            resources,
            state: TaskState::Staging,
            goal: TaskGoal::Running,
            staged_at: at,
            started_at: None,
            updated_at: at,
            message: None,
            healthy: None,
            health: None,
            ready: None,
            readiness: Vec::new(),
            job_run: None,
            container_ip: None,
        }
    }

    /// Counts against the app's instances (not terminal, not being killed).
    pub fn is_active(&self) -> bool {
        !self.state.is_terminal() && self.goal == TaskGoal::Running
    }

    /// Holds node resources (anything not yet terminal).
    pub fn holds_resources(&self) -> bool {
        !self.state.is_terminal()
    }
}

/// What the agent reports about a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub task_id: TaskId,
    pub state: TaskState,
    pub at: UnixMillis,
    pub message: Option<String>,
    /// The container's own address, reported with `Running` (bridge networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ip: Option<std::net::IpAddr>,
}
