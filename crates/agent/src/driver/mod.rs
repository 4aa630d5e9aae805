//! The driver seam: one [`Driver`] trait for everything that runs tasks on
//! this node (`exec`: a command under `wharf executor`; `docker`: a container
//! in the Docker engine), the [`TaskLaunch`] they take, the [`TaskEvent`]s
//! they send and the [`RecoveredTask`]s they find after an agent restart.
//! `reconcile` picks a driver per task from the app's container kind
//! (`ContainerSpec::driver`) and talks to it only through this trait.
//!
//! Every driver keeps a task's sandbox at `<root>/<task-id>/` with the task's
//! output in `stdout` and `stderr`, so logs read the same for every driver.

pub mod docker;
pub mod exec;
pub mod oci;

pub use docker::DockerDriver;
pub use exec::ExecDriver;
pub use oci::OciDriver;

use model::{CommandSpec, Container, DriverKind, Resources, TaskId, TaskState, UnixMillis};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the driver reports about tasks, on the channel given to it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// Preparing to run (the oci driver pulling the task's image).
    Starting { task_id: TaskId, at: UnixMillis },
    Running {
        task_id: TaskId,
        pid: u32,
        at: UnixMillis,
        /// The container's own address (bridge networking).
        ip: Option<std::net::IpAddr>,
    },
    Exited {
        task_id: TaskId,
        /// `Finished`, `Failed` or `Killed`.
        state: TaskState,
        message: String,
        at: UnixMillis,
    },
}

/// A task found by [`Driver::recover`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredTask {
    pub task_id: TaskId,
    /// `Running` (alive; its exit will be reported as an event), `Starting`
    /// (alive, task not spawned yet), or the final state.
    pub state: TaskState,
    pub pid: Option<u32>,
    pub started_at: Option<UnixMillis>,
    pub message: Option<String>,
}

/// One task to start, as every driver takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLaunch {
    pub task_id: TaskId,
    /// `None`: the image's own entrypoint and cmd (containers only).
    pub command: Option<CommandSpec>,
    /// The complete environment of the task (see [`crate::task_env`]).
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    /// Stop politely first, forcibly after this.
    pub kill_grace: Duration,
    /// The app's container settings (the default for a plain command).
    pub container: Container,
    /// The host ports allocated to the task, one per app port.
    pub host_ports: Vec<u16>,
    /// The user the task runs as (the app's `user`, else the agent's
    /// `--default-task-user`); `None`: as the agent. Honoured by the exec
    /// driver.
    pub user: Option<String>,
    /// Registry credentials the app brings (its `pullConfig`), tried before
    /// the node's own.
    pub registry_auth: Option<image::RegistryConfig>,
    /// The task's secrets in clear (environment and sandbox files); each
    /// driver delivers them without writing them to `spec.json`.
    pub secrets: crate::secrets::TaskSecrets,
    /// Files fetched into the sandbox before the task starts (the app's
    /// `fetch`, a job's `artifacts`); every driver fetches them.
    pub artifacts: Vec<model::Artifact>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("task {0} already has a sandbox")]
    AlreadyExists(TaskId),
    #[error("task {0} is still running")]
    StillRunning(TaskId),
    #[error("no executor command configured")]
    NoExecutor,
    #[error("task {task_id} did not start: {message}")]
    Launch { task_id: TaskId, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("docker engine: {context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> DriverError {
    let context = context.into();
    move |source| DriverError::Io { context, source }
}

/// Runs tasks of one kind. Tasks outlive the driver (and the agent): dropping
/// it stops watching, never the tasks.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    fn kind(&self) -> DriverKind;

    /// Starts the task and returns once it runs (the `Running` event is sent
    /// before this returns). On error no event is sent; the sandbox stays
    /// for its logs until [`Driver::remove`].
    async fn launch(&self, task: TaskLaunch) -> Result<u32, DriverError>;

    /// Asks the task to stop (forcibly after its grace period). Returns once
    /// the request is delivered; the exit comes as an `Exited` event.
    /// Idempotent; Ok if the task is already gone.
    async fn kill(&self, id: &TaskId) -> Result<(), DriverError>;

    /// After an agent restart: finds this driver's tasks, re-attaches to the
    /// live ones (their exit will be an event) and returns every one found.
    /// Kills nothing that is still wanted.
    async fn recover(&self) -> Result<Vec<RecoveredTask>, DriverError>;

    /// Forgets a finished task: deletes its sandbox before returning (so
    /// disk use stays bounded); what an engine keeps for it (a stopped
    /// container) is removed in the background.
    fn remove(&self, id: &TaskId) -> Result<(), DriverError>;
}

#[async_trait::async_trait]
impl Driver for ExecDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Exec
    }

    async fn launch(&self, task: TaskLaunch) -> Result<u32, DriverError> {
        let mut timeline = crate::sandbox::Timeline::default();
        timeline.mark("agent");
        let unsupported = |m: &str| DriverError::Unsupported(m.to_string());
        let command = match task.command {
            None => return Err(unsupported("the app has neither cmd nor args")),
            Some(CommandSpec::Argv(v)) if v.is_empty() => return Err(unsupported("args is empty")),
            Some(c) => c,
        };
        let spec = crate::sandbox::LaunchSpec {
            task_id: task.task_id,
            command,
            env: task.env,
            resources: task.resources,
            kill_grace: task.kill_grace,
            oci: None,
            log: self.log_limits(),
            user: task.user,
            secrets_on_stdin: !task.secrets.is_empty(),
            timeline,
        };
        ExecDriver::launch_task(self, spec, &task.secrets, &task.artifacts).await
    }

    async fn kill(&self, id: &TaskId) -> Result<(), DriverError> {
        ExecDriver::kill(self, id).await
    }

    async fn recover(&self) -> Result<Vec<RecoveredTask>, DriverError> {
        ExecDriver::recover(self).await
    }

    fn remove(&self, id: &TaskId) -> Result<(), DriverError> {
        self.remove_sandbox(id)
    }
}
