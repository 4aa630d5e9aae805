//! What a long-running app asks for. Fields Wharf acts on are typed; fields it
//! only stores and echoes back (Marathon has many) live in `passthrough`, so a
//! definition round-trips unchanged through the API.

use crate::{AppId, Resources, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandSpec {
    /// Run through `/bin/sh -c`.
    Shell(String),
    /// Executed directly, no shell.
    Argv(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSpec {
    /// The service port (load balancer port); 0 until assigned.
    pub port: u16,
    pub name: Option<String>,
    pub protocol: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `hostname` or a node attribute name.
    pub field: String,
    pub op: ConstraintOp,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BackoffPolicy {
    pub seconds: f64,
    pub factor: f64,
    pub max_launch_delay_seconds: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy { seconds: 1.0, factor: 1.15, max_launch_delay_seconds: 300.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy { minimum_health_capacity: 1.0, maximum_over_capacity: 1.0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Command,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    pub path: Option<String>,
    pub port_index: Option<usize>,
    pub port: Option<u16>,
    pub command: Option<String>,
    pub grace_period_seconds: f64,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub max_consecutive_failures: u32,
    pub delay_seconds: f64,
    pub ignore_http1xx: bool,
    /// Marathon's Mesos-side forms (`MESOS_*`, `COMMAND`): the first check
    /// waits `delay_seconds`, as Mesos does; Marathon-side ones start at once.
    #[serde(default)]
    pub mesos_side: bool,
}

/// Protocol of a readiness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadinessProtocol {
    Http,
    Https,
}

/// Marathon's `readinessChecks[]`: during a deployment a new task counts as
/// up only once this check has passed (once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessCheck {
    pub name: String,
    pub protocol: ReadinessProtocol,
    pub path: String,
    /// Names one of the app's ports.
    pub port_name: String,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    pub http_status_codes_for_ready: Vec<u16>,
    pub preserve_last_response: bool,
}

/// Marathon's `unreachableStrategy`: after `inactive_after_seconds` an
/// unreachable task no longer counts (a replacement starts); after
/// `expunge_after_seconds` it is forgotten (and killed if its node returns).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum UnreachableStrategy {
    Enabled {
        inactive_after_seconds: f64,
        expunge_after_seconds: f64,
    },
    /// Unreachable tasks are never replaced.
    Disabled,
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled { inactive_after_seconds: 0.0, expunge_after_seconds: 0.0 }
    }
}

/// How the task's process is started, by Marathon's `container.type`.
///
/// The stored form is externally tagged (`"None"`, `{"Oci": {..}}`,
/// `{"Docker": {..}}`); logs written before the other fields existed carry
/// only `image`, and every later field defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum ContainerSpec {
    /// No `container`: a plain command in a cgroup.
    #[default]
    None,
    /// `MESOS`: the built-in runtime when there is an image, else a plain
    /// command (Mesos's containerizer without an image).
    Oci(Container),
    /// `DOCKER`: the Docker engine.
    Docker(Container),
}

/// Marathon's `container.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerKind {
    Mesos,
    Docker,
}

/// What runs a task on a node. Nodes advertise the drivers they have
/// (`NodeInfo::drivers`); a task goes only to a node with its driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// A command in a cgroup, supervised by `wharf executor`.
    Exec,
    /// An image run by the built-in OCI runtime.
    Oci,
    /// An image run by the Docker engine.
    Docker,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Exec => "exec",
            DriverKind::Oci => "oci",
            DriverKind::Docker => "docker",
        }
    }
}

/// How a container is networked (Marathon's `networks[].mode`, or the
/// older `container.docker.network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NetworkMode {
    /// The node's network; the task listens on its allocated host ports.
    #[default]
    Host,
    /// A bridge: container ports are published on allocated host ports.
    Bridge,
    /// A named container network (Marathon's `container`/`USER`).
    Container,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum VolumeMode {
    #[default]
    Rw,
    Ro,
}

/// A host directory mounted into the container, or a file secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Where it appears in the container (relative: under the sandbox).
    pub container_path: String,
    /// The host directory; `None` for persistent volumes (the agent makes
    /// theirs), external ones (kept for the wire only) and secrets.
    pub host_path: Option<String>,
    pub mode: VolumeMode,
    /// Marathon's persistent local volume: a directory on the node kept
    /// across the instance's restarts, which pins the instance to the node.
    #[serde(default)]
    pub persistent: Option<PersistentVolume>,
    /// Marathon's file-based secret (`{"containerPath", "secret": NAME}`):
    /// the value of the app's secret NAME is written to `container_path`
    /// in the sandbox (mode 0400, owned by the task's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `persistent: {size}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentVolume {
    /// MiB; a soft limit (reported, not enforced).
    pub size_mb: u64,
}

/// Where one instance of an app with persistent volumes keeps them: its
/// node, and its last task's attempt number (the next one counts on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentInstance {
    pub node: crate::NodeId,
    pub attempt: u32,
}

/// One `portMappings` entry. Its service port is the app's `ports[i]` (the
/// one place service ports are assigned), not stored twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// 0: the same as the host port (Marathon's rule for host networking).
    pub container_port: u16,
    /// 0: allocated from the node's range.
    pub host_port: u16,
    pub protocol: String,
    pub name: Option<String>,
}

/// A container's settings, for both kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Container {
    pub image: Option<String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub network: NetworkMode,
    #[serde(default)]
    pub privileged: bool,
    /// `docker.parameters`: extra `docker run` options, in order.
    #[serde(default)]
    pub parameters: Vec<(String, String)>,
    #[serde(default)]
    pub force_pull_image: bool,
    /// `docker.pullConfig.secret`: the app secret holding a Docker
    /// `config.json` with credentials for pulling the image.
    #[serde(default)]
    pub pull_config: Option<String>,
}

impl ContainerSpec {
    pub fn kind(&self) -> Option<ContainerKind> {
        match self {
            ContainerSpec::None => None,
            ContainerSpec::Oci(_) => Some(ContainerKind::Mesos),
            ContainerSpec::Docker(_) => Some(ContainerKind::Docker),
        }
    }

    pub fn container(&self) -> Option<&Container> {
        match self {
            ContainerSpec::None => None,
            ContainerSpec::Oci(c) | ContainerSpec::Docker(c) => Some(c),
        }
    }

    /// Whether the app's instances are resident: some volume is persistent.
    pub fn has_persistent_volumes(&self) -> bool {
        self.container().is_some_and(|c| c.volumes.iter().any(|v| v.persistent.is_some()))
    }

    pub fn image(&self) -> Option<&str> {
        self.container().and_then(|c| c.image.as_deref())
    }

    /// The driver that runs this app's tasks.
    pub fn driver(&self) -> DriverKind {
        match self {
            ContainerSpec::Docker(_) => DriverKind::Docker,
            ContainerSpec::Oci(c) if c.image.is_some() => DriverKind::Oci,
            _ => DriverKind::Exec,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub id: AppId,
    pub command: Option<CommandSpec>,
    pub resources: Resources,
    pub instances: u32,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    pub require_ports: bool,
    pub constraints: Vec<Constraint>,
    pub backoff: BackoffPolicy,
    pub kill_grace_seconds: f64,
    pub kill_selection: KillSelection,
    pub upgrade: UpgradeStrategy,
    pub health_checks: Vec<HealthCheck>,
    pub container: ContainerSpec,
    pub dependencies: Vec<AppId>,
    pub user: Option<String>,
    /// What happens to tasks on a node that stops answering.
    #[serde(default)]
    pub unreachable: UnreachableStrategy,
    /// Checks that gate deployments (a task is up once they all passed).
    #[serde(default)]
    pub readiness_checks: Vec<ReadinessCheck>,
    /// Marathon's `secrets`: name -> where its value is in the secret store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::SecretSource>,
    /// Environment variables whose value is a secret
    /// (`"env": {"VAR": {"secret": NAME}}`): VAR -> NAME in `secrets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Files fetched into each task's sandbox before it starts (Marathon's
    /// `fetch`, and `uris` turned into fetch entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<crate::Artifact>,
    /// Marathon fields Wharf keeps but does not interpret, by wire name.
    pub passthrough: BTreeMap<String, serde_json::Value>,
}

impl AppSpec {
    /// A spec with Marathon's defaults (cpus 1, mem 128, one instance).
    pub fn new(id: AppId) -> AppSpec {
        AppSpec {
            id,
            command: None,
            resources: Resources { cpus: 1.0, mem: 128.0, disk: 0.0, gpus: 0 },
            instances: 1,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            require_ports: false,
            constraints: Vec::new(),
            backoff: BackoffPolicy::default(),
            kill_grace_seconds: 3.0,
            kill_selection: KillSelection::default(),
            upgrade: UpgradeStrategy::default(),
            health_checks: Vec::new(),
            container: ContainerSpec::None,
            dependencies: Vec::new(),
            user: None,
            unreachable: UnreachableStrategy::default(),
            readiness_checks: Vec::new(),
            secrets: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            fetch: Vec::new(),
            passthrough: BTreeMap::new(),
        }
    }

    /// The secret names the app's tasks need: env references and file
    /// secrets (each is declared in `secrets`; the parser checks that).
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        let files = self.container.container().into_iter().flat_map(|c| &c.volumes).filter_map(|v| v.secret.as_deref());
        self.secret_env.values().map(String::as_str).chain(files)
    }

    /// Whether changing from `self` to `other` needs new tasks (anything but
    /// the instance count changed).
    pub fn config_differs(&self, other: &AppSpec) -> bool {
        let mut a = self.clone();
        a.instances = other.instances;
        a != *other
    }
}

/// A stored app: its spec plus the bookkeeping the store keeps for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    pub spec: AppSpec,
    /// Time of the last change of any kind (Marathon's `version`).
    pub version: UnixMillis,
    pub last_config_change_at: UnixMillis,
    pub last_scaling_at: UnixMillis,
    /// Launches of this app wait until then (restart backoff).
    pub backoff: LaunchBackoff,
    pub last_task_failure: Option<TaskFailure>,
    /// Set when a delete is in progress: tasks are being killed.
    pub deleting: bool,
    /// The app's resident instances (persistent volumes) by instance UUID:
    /// a replacement task of one goes to the same node, with the same
    /// volumes. Recorded when a task of the instance is first placed; gone
    /// with the app.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resident: BTreeMap<uuid::Uuid, ResidentInstance>,
}

impl App {
    /// A new app created at `at`: every stamp `at`, no backoff, no failure,
    /// no resident instances yet.
    pub fn new(spec: AppSpec, at: UnixMillis) -> Self {
        App {
            spec,
            version: at,
            last_config_change_at: at,
            last_scaling_at: at,
            backoff: LaunchBackoff::default(),
            last_task_failure: None,
            deleting: false,
            resident: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct LaunchBackoff {
    pub delay_seconds: f64,
    pub not_before: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub task_id: crate::TaskId,
    pub state: crate::TaskState,
    pub message: String,
    pub host: String,
    pub timestamp: UnixMillis,
    pub version: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_stored_before_the_typed_fields_still_decode() {
        let old: ContainerSpec = serde_json::from_str(r#"{"Docker":{"image":"nginx"}}"#).expect("decode");
        assert_eq!(old, ContainerSpec::Docker(Container { image: Some("nginx".into()), ..Container::default() }));
        let old: ContainerSpec = serde_json::from_str(r#"{"Oci":{"image":"x"}}"#).expect("decode");
        assert_eq!(old.driver(), DriverKind::Oci);
        let none: ContainerSpec = serde_json::from_str(r#""None""#).expect("decode");
        assert_eq!(none.driver(), DriverKind::Exec);
        let no_image = ContainerSpec::Oci(Container::default());
        assert_eq!(no_image.driver(), DriverKind::Exec, "MESOS without an image is a plain command");
    }
}
