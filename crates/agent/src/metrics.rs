//! The agent's series for `/metrics`: launches by outcome, the time from
//! launch to running, and task exits by state. Counted where they happen;
//! the node's registry (owned by the API) encodes them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriverLabels {
    pub driver: &'static str,
    /// `started` (the driver started it) or `failed` (it could not).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExitLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    pub app: String,
}

#[derive(Clone, Debug)]
pub struct AgentMetrics {
    pub(crate) launches: Family<DriverLabels, Counter>,
    pub(crate) launch_seconds: Histogram,
    pub(crate) exits: Family<ExitLabels, Counter>,
    /// Per app: its tasks here that ended without being asked to (and are
    /// replaced), or were killed as unhealthy.
    pub(crate) restarts: Family<AppLabel, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> AgentMetrics {
        AgentMetrics {
            launches: Family::default(),
            // 1 ms .. ~16 s: an exec launch is tens of milliseconds.
            launch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            exits: Family::default(),
            restarts: Family::default(),
        }
    }
}

impl AgentMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("agent_launches", "Task launches on this node by driver and outcome", self.launches.clone());
        registry.register_with_unit(
            "agent_launch",
            "Time from the agent starting a launch to the task running",
            Unit::Seconds,
            self.launch_seconds.clone(),
        );
        registry.register("agent_task_exits", "Tasks on this node that ended, by final state", self.exits.clone());
        registry.register(
            "app_restarts",
            "Tasks of an app on this node that failed, exited or were killed as unhealthy (each is replaced); sum over nodes for the app's total",
            self.restarts.clone(),
        );
    }

    pub(crate) fn restarted(&self, task: &model::TaskId) {
        self.restarts.get_or_create(&AppLabel { app: task.app_id().as_str().to_string() }).inc();
    }

    pub(crate) fn launched(&self, ok: bool) {
        let outcome = if ok { "started" } else { "failed" };
        self.launches.get_or_create(&DriverLabels { driver: "exec", outcome }).inc();
    }
}
