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
use std::sync::Arc;

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
    pub app_versions: Table<AppId, VersionHistory>,
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

/// An app's stored versions, oldest first, at most `APP_VERSIONS_KEPT`.
///
/// Each version is shared (`Arc`), so the copy `apply` makes of a history
/// to add one is a few pointers. (An `imbl::Vector` of whole versions
/// allocated a 64-version chunk, tens of KiB, for every app's first
/// version.) Serialises as a plain list of versions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VersionHistory(Vec<Arc<AppVersion>>);

impl VersionHistory {
    /// Keeps `v` as the newest version (replacing one with the same
    /// version stamp) and drops the oldest beyond `APP_VERSIONS_KEPT`.
    pub fn record(&mut self, v: AppVersion) {
        self.0.retain(|x| x.version != v.version);
        self.0.push(Arc::new(v));
        let extra = self.0.len().saturating_sub(APP_VERSIONS_KEPT);
        self.0.drain(..extra);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &AppVersion> + ExactSizeIterator + '_ {
        self.0.iter().map(|v| v.as_ref())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for VersionHistory {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for VersionHistory {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(VersionHistory(Vec::<AppVersion>::deserialize(d)?.into_iter().map(Arc::new).collect()))
    }
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

impl NodeUsage {
    /// Takes what tasks hold, in task id order (so every sum is the same
    /// whichever way a node's usage is added up).
    fn take_all<'a>(&mut self, held: impl Iterator<Item = &'a crate::table::Held>) {
        for h in held {
            self.used.add(&h.resources);
            self.free.sub(&h.resources);
            self.ports_used.extend(h.ports.iter().copied());
        }
    }
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
        u.take_all(self.tasks.held_on(node));
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
    use super::{AppVersion, ServicePortRange, VersionHistory, APP_VERSIONS_KEPT};
    use crate::{AppId, AppSpec, UnixMillis};

    fn version(ms: i64) -> AppVersion {
        let spec = AppSpec::new(AppId::parse("/a").expect("a valid id"));
        AppVersion {
            version: UnixMillis(ms),
            spec,
            last_scaling_at: UnixMillis(ms),
            last_config_change_at: UnixMillis(ms),
        }
    }

    #[test]
    fn a_version_history_keeps_the_newest_versions_once_each_and_serialises_as_a_list() {
        let mut h = VersionHistory::default();
        for ms in 1..=(APP_VERSIONS_KEPT as i64 + 5) {
            h.record(version(ms));
        }
        // The same stamp again replaces it and moves it to the newest place.
        h.record(version(20));
        let stamps: Vec<i64> = h.iter().map(|v| v.version.0).collect();
        let mut want: Vec<i64> = (6..=APP_VERSIONS_KEPT as i64 + 5).filter(|ms| *ms != 20).collect();
        want.push(20);
        assert_eq!(stamps, want);
        // The wire (snapshots, golden files) is a plain list of versions.
        let json = serde_json::to_value(&h).expect("serialises");
        assert_eq!(json.as_array().map(Vec::len), Some(APP_VERSIONS_KEPT));
        let back: VersionHistory = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, h);
    }

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
