//! Jobs: run-to-completion work (Metronome's jobs). A `Job` holds its spec,
//! its schedules, its active runs and its history; each run's task is an
//! ordinary `Task` whose owner is the run (`Task::job_run`), placed by the
//! same scheduler and run by the same agent and drivers as an app's.
//!
//! ```text
//!   StartJobRun ──► STARTING ──(task placed, staging/running)──► ACTIVE
//!                      ▲                                           │
//!                      └──── task failed, ON_FAILURE, in deadline ◄┤
//!                                       task finished (0) ──► SUCCESS
//!     task failed (NEVER or past the deadline), stop, deadline ──► FAILED
//! ```
//!
//! A run's task template is an `AppSpec` built from the job (`JobSpec::template`),
//! so placement, the task environment and the drivers need nothing new.

use crate::{
    AppId, AppSpec, CommandSpec, Constraint, ContainerSpec, IdError, NodeId, Resources, TaskId, TaskState, UnixMillis,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Finished runs kept per job unless the cluster says otherwise
/// (`Settings::job_history_count`, from the leader's `--job-history-count`).
/// Metronome keeps 1000 (`METRONOME_HISTORY_COUNT`); Wharf keeps fewer by
/// default, as every run is replicated state.
pub const JOB_HISTORY_KEPT: usize = 100;

/// Metronome's job id: dot-separated segments of `[a-z0-9-]`, each starting
/// and ending with a letter or digit (consecutive hyphens allowed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    pub fn parse(s: &str) -> Result<JobId, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        let ok = s.split('.').all(|seg| {
            let b = seg.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
        if ok {
            Ok(JobId(s.to_string()))
        } else {
            Err(IdError::BadSegment(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for JobId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        JobId::parse(&s)
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

/// A run's id: `yyyyMMddHHmmss` and five letters or digits, as Metronome's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRunId(pub String);

impl JobRunId {
    /// `yyyyMMddHHmmss` of `at` (UTC) followed by `suffix`.
    pub fn new(at: UnixMillis, suffix: &str) -> JobRunId {
        use chrono::TimeZone;
        let stamp = chrono::Utc
            .timestamp_millis_opt(at.0)
            .single()
            .map(|t| t.format("%Y%m%d%H%M%S").to_string())
            .unwrap_or_default();
        JobRunId(format!("{stamp}{suffix}"))
    }

    /// The id of a schedule's run at a fire time: the same on every leader,
    /// so a failover that proposes the fire time again names the same run.
    pub fn scheduled(job: &JobId, schedule: &str, fire_at: UnixMillis) -> JobRunId {
        // FNV-1a: a stable hash (std's may change between releases).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in job.as_str().bytes().chain([0]).chain(schedule.bytes()).chain(fire_at.0.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let suffix: String =
            (0..5).map(|i| ALPHABET[((h >> (i * 8)) % ALPHABET.len() as u64) as usize] as char).collect();
        JobRunId::new(fire_at, &suffix)
    }
}

impl fmt::Display for JobRunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The run a job task belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobRunRef {
    pub job: JobId,
    pub run: JobRunId,
}

impl TaskId {
    /// A task of a job run: `<job>_<run>.instance-<uuid>._app.<attempt>`, so
    /// tools that read Marathon-style task ids still parse it.
    pub fn for_run(run: &JobRunRef, instance: uuid::Uuid, attempt: u32) -> TaskId {
        TaskId::from_raw(format!("{}_{}.instance-{}._app.{}", run.job, run.run, instance, attempt))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ConcurrencyPolicy {
    #[default]
    Allow,
    /// A fire time is skipped while a run of the job is active.
    Forbid,
    /// Extension: active runs are stopped and the new one starts.
    Replace,
}

/// What one run executes: the task template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRunSpec {
    pub command: Option<CommandSpec>,
    pub resources: Resources,
    pub env: BTreeMap<String, String>,
    pub container: ContainerSpec,
    pub constraints: Vec<Constraint>,
    pub restart: RestartPolicy,
    pub active_deadline_seconds: Option<u64>,
    pub max_launch_delay_seconds: f64,
    pub kill_grace_seconds: f64,
    pub user: Option<String>,
    /// Metronome's `run.secrets`: name -> where its value is in the store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, crate::SecretSource>,
    /// `run.env` entries that reference a secret: VAR -> name in `secrets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Metronome's `run.artifacts`: files fetched into the run's sandbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<crate::Artifact>,
    /// Fields stored and returned but not acted on (networks, ucr, ...),
    /// as given.
    #[serde(default)]
    pub passthrough: BTreeMap<String, serde_json::Value>,
    /// Extension: tasks of one run at a time (fan-out).
    #[serde(default = "one")]
    pub parallelism: u32,
    /// Extension: successful tasks that make the run a SUCCESS.
    #[serde(default = "one")]
    pub completions: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: JobId,
    pub description: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub run: JobRunSpec,
    /// Jobs whose successful runs start a run of this one.
    #[serde(default)]
    pub dependencies: Vec<JobId>,
}

impl JobSpec {
    /// The template a run's task is placed and launched from: an app of one
    /// instance named like the job (`MARATHON_APP_ID` is `/<job id>`).
    pub fn template(&self) -> AppSpec {
        let id = AppId::parse(self.id.as_str()).unwrap_or_else(|_| AppId::root());
        let mut app = AppSpec::new(id);
        app.command = self.run.command.clone();
        app.resources = self.run.resources;
        app.instances = 1;
        app.env = self.run.env.clone();
        app.secrets = self.run.secrets.clone();
        app.secret_env = self.run.secret_env.clone();
        app.fetch = self.run.artifacts.clone();
        app.labels = self.labels.clone();
        app.constraints = self.run.constraints.clone();
        app.container = self.run.container.clone();
        app.kill_grace_seconds = self.run.kill_grace_seconds;
        app.user = self.run.user.clone();
        app.require_ports = false;
        app.ports = Vec::new();
        app
    }
}

/// Metronome's schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub id: String,
    pub cron: String,
    /// IANA name.
    pub timezone: String,
    pub starting_deadline_seconds: u64,
    pub concurrency_policy: ConcurrencyPolicy,
    pub enabled: bool,
}

/// A stored schedule: its spec and where its clock stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    /// Fire times after this instant count (when the schedule was written).
    pub since: UnixMillis,
    /// The latest fire time a run was started (or skipped) for; a fire time
    /// at or before it is never started again.
    pub last_fire: Option<UnixMillis>,
}

impl Schedule {
    /// The instant after which the next fire time is looked for.
    pub fn fired_up_to(&self) -> UnixMillis {
        self.last_fire.map_or(self.since, |l| l.max(self.since))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    Initial,
    Starting,
    Active,
    Success,
    Failed,
}

impl RunStatus {
    pub fn metronome_name(self) -> &'static str {
        match self {
            RunStatus::Initial => "INITIAL",
            RunStatus::Starting => "STARTING",
            RunStatus::Active => "ACTIVE",
            RunStatus::Success => "SUCCESS",
            RunStatus::Failed => "FAILED",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::Failed)
    }
}

/// Why a run was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunTrigger {
    /// `POST /v1/jobs/{id}/runs`.
    Manual,
    /// A schedule's fire time.
    Schedule { id: String, fire_at: UnixMillis },
    /// A parent job's run succeeded.
    Dependency { parent: JobId, run: JobRunId },
}

/// One task a run had, as the run remembers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTask {
    pub id: TaskId,
    pub node: NodeId,
    pub state: TaskState,
    pub started_at: Option<UnixMillis>,
    pub completed_at: Option<UnixMillis>,
    /// The exit status in words ("exited with status 1", ...).
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    pub id: JobRunId,
    pub job: JobId,
    pub status: RunStatus,
    pub trigger: RunTrigger,
    pub created_at: UnixMillis,
    pub completed_at: Option<UnixMillis>,
    /// Every task the run had, oldest first.
    pub tasks: Vec<RunTask>,
    /// Failed attempts so far (for the restart backoff).
    pub failures: u32,
    /// No launch before this instant (restart backoff).
    pub not_before: UnixMillis,
    /// A run not placed by then fails (`startingDeadlineSeconds`; scheduled runs only).
    pub starting_deadline: Option<UnixMillis>,
    /// Why it failed, for people.
    pub message: Option<String>,
}

impl JobRun {
    pub fn reference(&self) -> JobRunRef {
        JobRunRef { job: self.job.clone(), run: self.id.clone() }
    }

    /// The tasks of this run that have not ended yet.
    pub fn live_tasks(&self) -> impl Iterator<Item = &RunTask> + '_ {
        self.tasks.iter().filter(|t| !t.state.is_terminal())
    }

    /// Tasks that finished successfully.
    pub fn succeeded(&self) -> u32 {
        self.tasks.iter().filter(|t| t.state == TaskState::Finished).count() as u32
    }

    /// How many more tasks the run wants now: at most `parallelism` live,
    /// and no more than the completions still missing.
    pub fn wanted(&self, spec: &JobRunSpec) -> u32 {
        let live = self.live_tasks().count() as u32;
        let missing = spec.completions.max(1).saturating_sub(self.succeeded());
        spec.parallelism.max(1).min(missing).saturating_sub(live)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobHistory {
    pub success_count: u64,
    pub failure_count: u64,
    pub last_success_at: Option<UnixMillis>,
    pub last_failure_at: Option<UnixMillis>,
    /// Finished runs, newest first, at most `Settings::job_history_kept`.
    pub finished: Vec<JobRun>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub spec: JobSpec,
    pub schedules: Vec<Schedule>,
    pub runs: BTreeMap<JobRunId, JobRun>,
    pub history: JobHistory,
    pub created_at: UnixMillis,
}

impl Job {
    pub fn schedule(&self, id: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.spec.id == id)
    }

    /// Whether a run with this id exists, active or finished.
    pub fn has_run(&self, id: &JobRunId) -> bool {
        self.runs.contains_key(id) || self.history.finished.iter().any(|r| &r.id == id)
    }

    /// Moves a finished run from the active ones into the history, which
    /// keeps the newest `kept`.
    pub fn finish_run(&mut self, id: &JobRunId, kept: usize) {
        let Some(run) = self.runs.remove(id) else { return };
        let at = run.completed_at.unwrap_or(run.created_at);
        match run.status {
            RunStatus::Success => {
                self.history.success_count += 1;
                self.history.last_success_at = Some(at);
            }
            _ => {
                self.history.failure_count += 1;
                self.history.last_failure_at = Some(at);
            }
        }
        self.history.finished.insert(0, run);
        self.history.finished.truncate(kept);
    }
}
