//! `ClusterState`: the whole replicated state as plain data, and read-only
//! queries over it. Only the store's `apply` changes it.
//!
//! Built from persistent maps (`Table`), so a clone is cheap and shares
//! everything: the store hands readers immutable snapshots.

use crate::{
    AppId, AppSpec, AppTable, Deployment, DeploymentId, NodeId, NodeInfo, Resources, Table, Task, TaskTable, UnixMillis,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClusterState {
    /// Raft log index of the last command folded into this state (set by
    /// the store before each apply; the same on every replica).
    #[serde(default)]
    pub applied_index: u64,
    pub nodes: Table<NodeId, NodeInfo>,
    pub apps: AppTable,
    pub tasks: TaskTable,
    pub deployments: Table<DeploymentId, Deployment>,
    /// Nodes removed by an operator: never re-admitted; the leader drops
    /// them from Raft membership.
    #[serde(default)]
    pub removed_nodes: BTreeSet<NodeId>,
    /// Past definitions of each app, oldest first, at most `APP_VERSIONS_KEPT`
    /// (the newest is the app's current definition).
    #[serde(default)]
    pub app_versions: Table<AppId, imbl::Vector<AppVersion>>,
    /// Settings of groups written through `/v2/groups`. The group tree
    /// itself is derived from app ids.
    #[serde(default)]
    pub groups: Table<AppId, GroupMeta>,
    /// Jobs with their schedules, active runs and history.
    #[serde(default)]
    pub jobs: Table<crate::JobId, crate::Job>,
    /// The HTTP API's bearer tokens by id (hashes only). While any exists,
    /// every node asks callers for credentials.
    #[serde(default, skip_serializing_if = "imbl::OrdMap::is_empty")]
    pub api_tokens: imbl::OrdMap<String, crate::ApiToken>,
    /// Cluster-wide settings (the leader writes them from its flags).
    #[serde(default)]
    pub settings: Settings,
    /// The cluster CA and join secret (`None` until the first node
    /// proposed them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<crate::ClusterTrust>,
    /// The secret store, sealed values only (see `secret.rs`).
    #[serde(default, skip_serializing_if = "imbl::OrdMap::is_empty")]
    pub secrets: imbl::OrdMap<crate::SecretPath, crate::StoredSecret>,
}

/// Settings that `apply` acts on, so they are replicated state rather than
/// each node's flags: every replica applies the same log the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Settings {
    /// Finished runs kept per job (`--job-history-count`, Metronome's
    /// `METRONOME_HISTORY_COUNT`); `None`: `JOB_HISTORY_KEPT`.
    #[serde(default)]
    pub job_history_count: Option<u32>,
    /// Range service ports are assigned from (`--service-ports`); `None`:
    /// `ServicePortRange::DEFAULT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ports: Option<ServicePortRange>,
}

impl Settings {
    pub fn job_history_kept(&self) -> usize {
        self.job_history_count.map_or(crate::job::JOB_HISTORY_KEPT, |n| n as usize)
    }

    pub fn service_port_range(&self) -> ServicePortRange {
        self.service_ports.unwrap_or(ServicePortRange::DEFAULT)
    }
}

/// The inclusive range `LO-HI` service ports are assigned from, and that a
/// port an app asks for must lie in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortRange {
    pub lo: u16,
    pub hi: u16,
}

impl ServicePortRange {
    /// Marathon's default.
    pub const DEFAULT: ServicePortRange = ServicePortRange { lo: 10000, hi: 20000 };

    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl std::fmt::Display for ServicePortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// Why a `LO-HI` text is not a service port range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service port range must be LO-HI with 1 <= LO <= HI <= 65535, not '{0}'")]
pub struct BadPortRange(pub String);

impl std::str::FromStr for ServicePortRange {
    type Err = BadPortRange;

    fn from_str(s: &str) -> Result<Self, BadPortRange> {
        let bad = || BadPortRange(s.to_string());
        let (lo, hi) = s.trim().split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(ServicePortRange { lo, hi })
    }
}

/// How many versions of one app `ClusterState::app_versions` keeps.
pub const APP_VERSIONS_KEPT: usize = 50;

/// One stored version of an app: its whole definition at that time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    pub version: UnixMillis,
    pub spec: AppSpec,
    #[serde(default)]
    pub last_scaling_at: UnixMillis,
    #[serde(default)]
    pub last_config_change_at: UnixMillis,
}

/// What a group has beyond its apps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GroupMeta {
    /// Groups or apps this group's apps start after (stored and returned; the
    /// scheduler does not order launches by them yet).
    pub dependencies: Vec<AppId>,
    pub version: UnixMillis,
}

/// What a node has left after the tasks placed on it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeUsage {
    pub used: Resources,
    pub free: Resources,
    pub ports_used: BTreeSet<u16>,
}

impl ClusterState {
    pub fn tasks_of<'a>(&'a self, app: &AppId) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks.of_app(app)
    }

    pub fn tasks_on(&self, node: NodeId) -> impl Iterator<Item = &Task> + '_ {
        self.tasks.on_node(node)
    }

    pub fn usage(&self, node: NodeId) -> NodeUsage {
        let mut u = NodeUsage::default();
        if let Some(n) = self.nodes.get(&node) {
            u.free = n.resources;
        }
        for t in self.tasks_on(node).filter(|t| t.holds_resources()) {
            u.used.add(&t.resources);
            u.free.sub(&t.resources);
            u.ports_used.extend(t.ports.iter().copied());
        }
        u
    }

    /// The node a job run's task ran on, after the task itself was
    /// forgotten (the run and its history remember it).
    pub fn run_task_node(&self, id: &crate::TaskId) -> Option<NodeId> {
        // `<job>_<run>.instance-…`: a job id has no `_`, so the job is the
        // part before the first one.
        let job = crate::JobId::parse(id.as_str().split_once('_')?.0).ok()?;
        let j = self.jobs.get(&job)?;
        j.runs
            .values()
            .chain(j.history.finished.iter())
            .flat_map(|r| r.tasks.iter())
            .find(|t| &t.id == id)
            .map(|t| t.node)
    }

    /// The stored version of `app` at `version`.
    pub fn app_version(&self, app: &AppId, version: UnixMillis) -> Option<&AppVersion> {
        self.app_versions.get(app)?.iter().find(|v| v.version == version)
    }

    /// Deployments that hold `app`.
    pub fn deployments_of<'a>(&'a self, app: &'a AppId) -> impl Iterator<Item = &'a Deployment> + 'a {
        self.deployments.values().filter(move |d| d.affected_apps.contains(app))
    }

    /// The version history of `app`, oldest first.
    pub fn versions_of<'a>(&'a self, app: &AppId) -> impl DoubleEndedIterator<Item = &'a AppVersion> + 'a {
        self.app_versions.get(app).into_iter().flat_map(|v| v.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::ServicePortRange;

    #[test]
    fn service_port_ranges_parse_lo_hi_and_refuse_the_rest() {
        assert_eq!("20000-20100".parse(), Ok(ServicePortRange { lo: 20000, hi: 20100 }));
        assert_eq!("5-5".parse(), Ok(ServicePortRange { lo: 5, hi: 5 }));
        for bad in ["", "10000", "20000-10000", "0-10", "1-70000", "a-b", "-5"] {
            let err = bad.parse::<ServicePortRange>().expect_err(bad);
            assert!(err.to_string().contains("LO-HI"), "{err}");
        }
        assert_eq!(ServicePortRange::DEFAULT.to_string(), "10000-20000");
    }
}
