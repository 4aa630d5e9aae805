//! The typed commands replicated through Raft, and what applying one yields.
//!
//! Append-only: variants are only ever added, never changed or removed, so
//! every node can replay any log. Every id, version and time inside a command
//! was chosen by its proposer; `apply` reads no clock and makes no ids.

use model::{
    AppId, AppSpec, Deployment, DeploymentId, GroupMeta, NodeId, NodeInfo, Plan, TaskId, TaskStatus, UnixMillis,
};
use serde::{Deserialize, Serialize};

// Commands live briefly (proposed, serialised, applied), never in bulk, so a
// large variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A node announces itself (or updates its resources/addresses).
    RegisterNode(NodeInfo),
    /// Create or replace an app. `deployment` describes the change; with
    /// `force`, deployments holding the app are cancelled instead of refusing.
    PutApp {
        app: AppSpec,
        at: UnixMillis,
        deployment: Deployment,
        force: bool,
        /// With `create_only`, an existing app is refused (`POST /v2/apps`).
        #[serde(default)]
        create_only: bool,
        /// The state the proposer computed `app` from (a PATCH merged onto
        /// one version): refused with `Conflict` if the app has changed
        /// since, so the proposer merges again onto the newer version and no
        /// concurrent update is lost.
        #[serde(default)]
        expect: Option<Precondition>,
        /// When the put leaves nothing to launch or kill (the app wants no
        /// instances and has no task), `apply` ends `deployment` at once
        /// instead of leaving it to the scheduler's next plan (a second Raft
        /// entry). Logs written before this field replay as before.
        #[serde(default)]
        finish_if_idle: bool,
    },
    /// Start deleting an app: its tasks are killed, then the app is removed.
    DeleteApp {
        id: AppId,
        at: UnixMillis,
        deployment: Deployment,
        force: bool,
    },
    /// Restart every task of an app (new version, same spec).
    RestartApp {
        id: AppId,
        at: UnixMillis,
        deployment: Deployment,
        force: bool,
    },
    /// Kill specific tasks; with `scale`, the apps' instance counts drop too.
    KillTasks {
        ids: Vec<TaskId>,
        scale: bool,
        at: UnixMillis,
        /// Recorded when `scale` lowers instance counts.
        #[serde(default)]
        deployment: Option<Deployment>,
    },
    /// The leader's scheduling decisions, re-checked on apply.
    ApplyPlan(Plan),
    /// Task state reports from agents, batched.
    TaskStatuses(Vec<TaskStatus>),
    /// Drop a deployment without touching its apps (`DELETE /v2/deployments/{id}?force=true`).
    CancelDeployment {
        id: DeploymentId,
    },
    /// The leader lost (or regained) a node's heartbeat. Its tasks turn
    /// `TASK_UNREACHABLE` (or back to running).
    NodeLiveness {
        node: NodeId,
        reachable: bool,
        at: UnixMillis,
    },
    /// A node's agent reports the images its store holds (when they changed,
    /// at a low rate; not on every launch).
    NodeImages {
        node: NodeId,
        images: Vec<model::NodeImage>,
    },
    /// Drain (or undrain) a node: no new tasks; its tasks move elsewhere.
    DrainNode {
        node: NodeId,
        draining: bool,
    },
    /// Forget a node; its tasks are lost and replaced elsewhere.
    RemoveNode {
        node: NodeId,
        at: UnixMillis,
    },
    /// Create, update and delete many apps and group settings as one change
    /// (`/v2/groups`): one deployment, refused whole if any part is refused.
    PutGroup {
        apps: Vec<AppSpec>,
        /// Apps to delete: their tasks are killed, then they are removed.
        remove_apps: Vec<AppId>,
        groups: Vec<(AppId, GroupMeta)>,
        /// Groups whose settings are forgotten.
        remove_groups: Vec<AppId>,
        at: UnixMillis,
        deployment: Deployment,
        force: bool,
    },
    /// Health transitions from agents, batched.
    TaskHealth(Vec<model::HealthReport>),
    /// An agent kills a task that failed its health checks too often:
    /// applied like `KillTasks` (no scaling), and `reason` becomes the task's
    /// message (Marathon's `unhealthy_instance_kill_event`).
    KillUnhealthy {
        id: TaskId,
        reason: String,
        at: UnixMillis,
    },
    /// Readiness transitions from agents, batched: a task's first result and
    /// its pass.
    TaskReadiness(Vec<model::ReadinessReport>),
    /// Create or update several apps as one change (`PUT /v2/apps` with an
    /// array): one deployment; refused whole if any app is refused.
    PutApps {
        apps: Vec<AppPut>,
        at: UnixMillis,
        deployment: Deployment,
        force: bool,
    },
    /// Roll a deployment back (`DELETE /v2/deployments/{id}`): every app it
    /// affects returns to its newest version older than the deployment (an
    /// app it created is deleted), as one new deployment `new_id`; the rolled
    /// back deployment is dropped.
    RollbackDeployment {
        id: DeploymentId,
        new_id: DeploymentId,
        at: UnixMillis,
    },
    /// Forget an app's launch backoff (`DELETE /v2/queue/{app}/delay`).
    ResetDelay {
        id: AppId,
    },
    /// Add an HTTP API bearer token (its hash; the proposer made the
    /// secret). Refused if its id is taken.
    PutApiToken(model::ApiToken),
    /// Revoke an HTTP API bearer token.
    RemoveApiToken {
        id: String,
    },
    /// Create or replace a secret. Its value is sealed with the cluster's
    /// data key before it is proposed: the log never holds it in clear.
    PutSecret(model::StoredSecret),
    /// Delete a secret (tasks already running keep what they were given).
    RemoveSecret {
        path: model::SecretPath,
    },
    /// Create (`create_only`, `POST /v1/jobs`) or replace a job. `schedules`
    /// replace the job's schedules; `None` keeps them (Metronome's PUT).
    PutJob {
        job: model::JobSpec,
        schedules: Option<Vec<model::ScheduleSpec>>,
        at: UnixMillis,
        create_only: bool,
    },
    /// Delete a job and its history; active runs are refused unless `stop_runs`.
    RemoveJob {
        id: model::JobId,
        stop_runs: bool,
        at: UnixMillis,
    },
    /// Create (`create_only`) or replace one schedule of a job.
    PutSchedule {
        job: model::JobId,
        schedule: model::ScheduleSpec,
        at: UnixMillis,
        create_only: bool,
    },
    RemoveSchedule {
        job: model::JobId,
        id: String,
    },
    /// Start a run. The proposer makes the id; a scheduled run's id is a
    /// function of (schedule, fire time), and a fire time at or before the
    /// schedule's last one is refused, so no fire time starts twice.
    StartJobRun {
        job: model::JobId,
        run: model::JobRunId,
        at: UnixMillis,
        trigger: model::RunTrigger,
    },
    /// End an active run as FAILED (the stop action, or a missed deadline) and kill its task.
    StopJobRun {
        job: model::JobId,
        run: model::JobRunId,
        at: UnixMillis,
        reason: String,
    },
    /// Record the cluster's CA and join secret (the first node proposes
    /// them once it leads). Only the first is kept: a node that proposes
    /// again after a restart changes nothing.
    InitTrust(model::ClusterTrust),
    /// A new join secret (`wharf token rotate`): tokens with the old one are
    /// refused from now on.
    RotateJoinSecret {
        secret: String,
    },
    /// Finished runs kept per job, cluster-wide (the leader's
    /// `--job-history-count`); longer histories are cut at once.
    SetJobHistoryCount {
        count: u32,
    },
    /// The range service ports are assigned from, cluster-wide (the
    /// leader's `--service-ports`). Ports apps already hold stay theirs.
    SetServicePorts {
        range: model::ServicePortRange,
    },
    /// Many `StartJobRun`s as one entry: the leader's job clock starts every
    /// run due at one instant together (a thousand jobs firing the same
    /// minute are one commit, not a thousand). Each is judged as alone.
    StartJobRuns {
        at: UnixMillis,
        starts: Vec<RunStart>,
    },
    /// Commands proposed together as one entry (group commit: see
    /// `proposer`). Each part is applied in order as if alone; the answer
    /// is `Applied::Each`, one per part, and the feed carries each part as
    /// a change of its own at the entry's index.
    Batch(Vec<Command>),
}

/// One run of `Command::StartJobRuns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    pub job: model::JobId,
    pub run: model::JobRunId,
    pub trigger: model::RunTrigger,
}

/// What the app must look like for a write computed from it to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// The app did not exist.
    Absent,
    /// The app was at this version.
    Version(UnixMillis),
}

/// One app of `Command::PutApps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppPut {
    pub app: AppSpec,
    pub expect: Option<Precondition>,
}

/// Why a plan's launch was not committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// The app is gone or being deleted.
    AppGone,
    /// The node is gone or draining.
    NodeUnavailable,
    /// A task with this id exists already.
    DuplicateTask,
    /// The node no longer has the cpus, mem, disk or gpus.
    InsufficientResources,
    /// One of the task's host ports is taken on the node.
    PortTaken(u16),
}

/// A launch of a plan that was not committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub task: TaskId,
    pub node: NodeId,
    pub reason: DropReason,
}

/// Why a command changed nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("App '{0}' does not exist")]
    NoSuchApp(AppId),
    #[error("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.")]
    Locked(Vec<DeploymentId>),
    #[error("An app with id '{0}' already exists while being deleted")]
    BeingDeleted(AppId),
    #[error("no free service port in range {0}-{1}")]
    NoServicePort(u16, u16),
    #[error("service port {0} is already used by app '{1}'")]
    ServicePortTaken(u16, AppId),
    #[error("service port {0} is outside the service port range {1} (--service-ports)")]
    ServicePortOutOfRange(u16, model::ServicePortRange),
    #[error("An app with id [{0}] already exists.")]
    AlreadyExists(AppId),
    #[error("Node '{0}' does not exist")]
    NoSuchNode(NodeId),
    #[error("Node '{0}' was removed from the cluster; start it with a fresh data directory to rejoin")]
    NodeRemoved(NodeId),
    #[error("Deployment '{0}' does not exist")]
    NoSuchDeployment(DeploymentId),
    /// The app changed after the proposer read it (see `Precondition`).
    #[error("App '{0}' was changed by another request; try again")]
    Conflict(AppId),
    #[error("API token '{0}' does not exist")]
    NoSuchToken(String),
    #[error("secret '{0}' does not exist")]
    NoSuchSecret(model::SecretPath),
    #[error("API token '{0}' already exists")]
    TokenExists(String),
    #[error("Job '{0}' does not exist")]
    NoSuchJob(model::JobId),
    #[error("Job with this id already exists")]
    JobExists(model::JobId),
    #[error("Schedule '{1}' of job '{0}' does not exist")]
    NoSuchSchedule(model::JobId, String),
    #[error("A schedule with id '{1}' already exists")]
    ScheduleExists(model::JobId, String),
    #[error("Job Run '{1}' of job '{0}' does not exist or has finished")]
    NoSuchJobRun(model::JobId, model::JobRunId),
    /// The run id exists, or the schedule's fire time already started.
    #[error("Job Run '{1}' of job '{0}' was already started")]
    JobRunExists(model::JobId, model::JobRunId),
    #[error("Job '{0}' has active runs; stop them first or use stopCurrentJobRuns=true")]
    JobBusy(model::JobId),
    #[error("Job '{0}' is a dependency of {1:?}")]
    JobHasDependents(model::JobId, Vec<model::JobId>),
    #[error("The dependencies of job '{0}' form a cycle")]
    DependencyCycle(model::JobId),
    #[error("The cluster has no certificate authority yet (it runs with --insecure-rpc, or its first node has not recorded it)")]
    NoClusterCa,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum Applied {
    #[default]
    Done,
    /// The stored app after a put/restart.
    App(Box<model::App>),
    /// Tasks actually killed by `KillTasks`.
    Killed(Vec<TaskId>),
    /// Outcome of a plan: the launches that no longer fit were dropped;
    /// the scheduler plans again from a state at or after `index`.
    Planned {
        launched: usize,
        dropped: Vec<Dropped>,
        index: u64,
    },
    Rejected(Rejection),
    /// The stored apps after `PutApps`.
    Apps(Vec<model::App>),
    /// The deployment a rollback started (`None`: nothing to roll back).
    RolledBack(Option<Box<Deployment>>),
    /// The stored job after a write (or as it was, after a delete).
    Job(Box<model::Job>),
    /// A run as started or stopped.
    JobRun(Box<model::JobRun>),
    /// A schedule's fire time was skipped (FORBID with an active run).
    RunSkipped,
    /// One answer per part of a batched command (`StartJobRuns`), in order.
    Each(Vec<Applied>),
}
