//! The exec driver: the agent-side handle on per-task executors. It creates
//! sandboxes, starts one executor per task (in its own session, so tasks
//! survive an agent restart), turns the executor's "running" message and its
//! exit into [`TaskEvent`]s, forwards kill requests, and re-attaches to live
//! executors after an agent restart. On that restart it also sweeps task
//! cgroups that no live executor owns (their executor died with the agent).
//!
//! Exit notification uses a pidfd per executor registered with tokio
//! (`AsyncFd`): no polling, and it works for executors that are not the
//! agent's children (after a restart). Executors that are the agent's
//! children are reaped with `waitid(P_PIDFD)`.

use super::{io_err, DriverError, RecoveredTask, TaskEvent};
use crate::cgroup::TaskCgroup;
use crate::launcher::{LaunchError, Launcher, LAUNCHER_FLAG};
use crate::sandbox::{self, ExecMsg, ExitRecord, LaunchSpec, StateFile, EXECUTOR_LOG, SPEC_FILE, STATE_FILE};
use crate::secrets::TaskSecrets;
use model::{TaskId, TaskState};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader, Interest};
use tokio::sync::mpsc::UnboundedSender;

/// How long `launch` waits for the executor to report the task started.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The executor's flag naming its sandbox; the sweep of orphan cgroups finds
/// live executors by it.
const SANDBOX_FLAG: &str = "--sandbox";
/// How long to keep SIGKILLing what is left in an orphan cgroup.
const ORPHAN_SWEEP_TIMEOUT: Duration = Duration::from_secs(5);

struct Attached {
    exec_pid: u32,
    pidfd: Arc<OwnedFd>,
    watcher: tokio::task::AbortHandle,
}

struct Inner {
    root: PathBuf,
    executor: Vec<OsString>,
    events: UnboundedSender<TaskEvent>,
    tasks: Mutex<HashMap<TaskId, Attached>>,
    /// Whether this driver's tasks are containers (the oci driver's) or
    /// plain commands: each recovers only its own from the shared root.
    containers: bool,
    /// Rotation of the tasks' `stdout` and `stderr`, done by the executor.
    log: logfiles::LogLimits,
    /// Brings a task's artifacts into its sandbox before the executor starts.
    fetcher: crate::artifacts::Fetcher,
    /// Forks executors (see `crate::launcher`); started by `recover` or on
    /// the first launch.
    launcher: Mutex<LauncherState>,
}

/// The executor launcher, if one runs; `Unusable` once a fresh one failed
/// (an executor command without `--launcher`): executors are then started
/// directly.
enum LauncherState {
    NotStarted,
    /// With whether it has forked an executor yet.
    Running(Launcher, bool),
    Unusable,
}

impl Inner {
    fn tasks(&self) -> MutexGuard<'_, HashMap<TaskId, Attached>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs tasks as plain processes, one executor each. Dropping the driver
/// stops watching (no further events) but leaves every task running.
pub struct ExecDriver {
    inner: Arc<Inner>,
}

impl Drop for ExecDriver {
    fn drop(&mut self) {
        for (_, a) in self.inner.tasks().drain() {
            a.watcher.abort();
        }
    }
}

impl ExecDriver {
    /// `root`: directory holding one sandbox dir per task; `executor`:
    /// program + leading args that run the executor (production:
    /// `[current_exe, "executor"]`); the executor gets `--sandbox DIR`
    /// appended.
    pub fn new(root: PathBuf, executor: Vec<OsString>, events: UnboundedSender<TaskEvent>) -> Self {
        ExecDriver::with_log_limits(root, executor, events, logfiles::LogLimits::default())
    }

    /// As `new`, with the tasks' logs rotated by `log` (`--log-max-size`, `--log-files`).
    pub fn with_log_limits(
        root: PathBuf,
        executor: Vec<OsString>,
        events: UnboundedSender<TaskEvent>,
        log: logfiles::LogLimits,
    ) -> Self {
        Self::with(root, executor, events, log, false)
    }

    /// The executor machinery for the oci driver's containers.
    pub(crate) fn for_containers(
        root: PathBuf,
        executor: Vec<OsString>,
        events: UnboundedSender<TaskEvent>,
        log: logfiles::LogLimits,
    ) -> Self {
        Self::with(root, executor, events, log, true)
    }

    fn with(
        root: PathBuf,
        executor: Vec<OsString>,
        events: UnboundedSender<TaskEvent>,
        log: logfiles::LogLimits,
        containers: bool,
    ) -> Self {
        let tasks = Mutex::new(HashMap::new());
        let fetcher = crate::artifacts::Fetcher::default();
        let launcher = Mutex::new(LauncherState::NotStarted);
        ExecDriver { inner: Arc::new(Inner { root, executor, events, tasks, log, containers, fetcher, launcher }) }
    }

    pub fn log_limits(&self) -> logfiles::LogLimits {
        self.inner.log
    }

    pub fn sandbox_dir(&self, id: &TaskId) -> PathBuf {
        self.inner.root.join(id.as_str())
    }

    /// Creates the sandbox, writes the spec there, starts the executor and
    /// returns the task's pid once the executor has spawned it (the
    /// `Running` event is sent before this returns). On error no event is
    /// sent; the sandbox stays (with a `Failed` state when the executor got
    /// that far) until [`ExecDriver::remove_sandbox`].
    pub async fn launch(&self, spec: LaunchSpec) -> Result<u32, DriverError> {
        self.launch_with_secrets(spec, &TaskSecrets::default()).await
    }

    /// As `launch`, handing the task's secrets to the executor over its
    /// stdin (as JSON; `spec.secrets_on_stdin` tells it to read them).
    pub async fn launch_with_secrets(&self, spec: LaunchSpec, secrets: &TaskSecrets) -> Result<u32, DriverError> {
        self.launch_task(spec, secrets, &[]).await
    }

    /// As `launch_with_secrets`, fetching `artifacts` into the new sandbox
    /// first. A failed fetch fails the launch with the fetcher's message,
    /// also written to the sandbox's `stderr` (where `wharf logs` looks).
    pub async fn launch_task(
        &self,
        spec: LaunchSpec,
        secrets: &TaskSecrets,
        artifacts: &[model::Artifact],
    ) -> Result<u32, DriverError> {
        let id = spec.task_id.clone();
        let dir = self.sandbox_dir(&id);
        let (inner, d, i) = (self.inner.clone(), dir.clone(), id.clone());
        let blocking_err = |e: tokio::task::JoinError| DriverError::Launch {
            task_id: id.clone(),
            message: format!("launch thread: {e}"),
        };
        tokio::task::spawn_blocking(move || create_sandbox(&inner, &i, &d)).await.map_err(blocking_err)??;
        if !artifacts.is_empty() {
            // Fetching can take a while: the task is TASK_STARTING meanwhile.
            let _ = self.inner.events.send(TaskEvent::Starting { task_id: id.clone(), at: sandbox::now() });
            // A task of another user gets what was fetched (containers see
            // the files as the agent wrote them, readable by all).
            let owner = match (&spec.user, self.inner.containers) {
                (Some(user), false) => {
                    let user = user.clone();
                    tokio::task::spawn_blocking(move || nix::unistd::User::from_name(&user).ok().flatten())
                        .await
                        .ok()
                        .flatten()
                        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
                }
                _ => None,
            };
            if let Err(e) = self.inner.fetcher.fetch_all(&dir, artifacts, owner).await {
                let message = e.to_string();
                let _ = std::fs::write(dir.join(sandbox::STDERR_FILE), format!("{message}\n"));
                return Err(DriverError::Launch { task_id: id, message });
            }
        }
        // Files and the process start block: on the blocking pool, so a
        // thousand launches at once neither stall the node's other work
        // (its HTTP API, the feed) nor wait on each other's syscalls.
        let inner = self.inner.clone();
        let d = dir.clone();
        let started =
            tokio::task::spawn_blocking(move || start_executor(&inner, spec, &d)).await.map_err(blocking_err)?;
        let (exec_pid, stdout, stdin, pidfd) = started?;
        if let Some(mut pipe) = stdin {
            let payload = zeroize::Zeroizing::new(serde_json::to_vec(secrets).unwrap_or_default());
            // The executor reads it before anything else; a failed write shows
            // as its failure to start ("cannot read the task's secrets").
            let _ = tokio::task::spawn_blocking(move || {
                use std::io::Write;
                let _ = pipe.write_all(&payload);
            })
            .await;
        }
        let pidfd = Arc::new(pidfd);

        let first = match stdout {
            Some(out) => read_first_line(out).await,
            None => Err("executor stdout missing".to_string()),
        };
        let msg = match first {
            Ok(line) => serde_json::from_str::<ExecMsg>(line.trim())
                .map_err(|e| format!("bad message from executor {line:?}: {e}")),
            Err(e) => Err(e),
        };
        match msg {
            Ok(ExecMsg::Running { pid, at, ip }) => {
                let _ = self.inner.events.send(TaskEvent::Running { task_id: id.clone(), pid, at, ip });
                attach(&self.inner, id, exec_pid, pidfd);
                Ok(pid)
            }
            Ok(ExecMsg::Failed { message }) => {
                reap_later(pidfd);
                Err(DriverError::Launch { task_id: id, message })
            }
            Err(e) => {
                let _ = pidfd_signal(&pidfd, libc::SIGKILL);
                reap_later(pidfd);
                let message = format!("executor failed: {e} (see {EXECUTOR_LOG})");
                let _ = record_exit(&dir, TaskState::Failed, &message);
                Err(DriverError::Launch { task_id: id, message })
            }
        }
    }

    /// Asks the task's executor to stop the task: SIGTERM to its process
    /// group, SIGKILL to everything left in its cgroup after the grace
    /// period. Returns once the request is delivered; the exit comes as an
    /// `Exited` event. Idempotent; Ok if the task is already gone.
    pub async fn kill(&self, id: &TaskId) -> Result<(), DriverError> {
        let attached = self.inner.tasks().get(id).map(|a| a.pidfd.clone());
        let pidfd = match attached {
            Some(fd) => fd,
            None => {
                let dir = self.sandbox_dir(id);
                match sandbox::read_json::<StateFile>(&dir, STATE_FILE) {
                    Ok(st) if st.exit.is_none() => match open_live_executor(&st) {
                        Some(fd) => Arc::new(fd),
                        None => return Ok(()),
                    },
                    _ => return Ok(()),
                }
            }
        };
        match pidfd_signal(&pidfd, libc::SIGTERM) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(io_err(format!("signal executor of {id}"))(e)),
        }
    }

    /// After an agent restart: scans the sandboxes, re-attaches to live
    /// executors (their exit is reported as an `Exited` event) and returns
    /// every task found with its current state. A sandbox whose executor
    /// died without recording the task's end is cleaned up (its cgroup
    /// killed) and reported `Failed`. Last, task cgroups on this host that
    /// no live executor owns (their sandbox is gone, or the executor died
    /// after recording the exit) are killed and removed.
    /// The executor launcher is started here too, at the agent's start:
    /// the first launch would otherwise wait for it (executing the large
    /// `wharf` binary, 15-150 ms on a just-started node).
    pub async fn recover(&self) -> Result<Vec<RecoveredTask>, DriverError> {
        self.start_launcher();
        let found = self.recover_sandboxes()?;
        let owned: HashSet<TaskId> = self.inner.tasks().keys().cloned().collect();
        match tokio::task::spawn_blocking(move || sweep_orphan_cgroups(&owned)).await {
            Ok(swept) if !swept.is_empty() => tracing::info!(count = swept.len(), "removed orphan task cgroups"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping orphan task cgroups failed"),
        }
        Ok(found)
    }

    /// Starts the launcher unless one runs (or none can be had).
    fn start_launcher(&self) {
        let mut state = self.inner.launcher.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, LauncherState::NotStarted) {
            if let Ok(l) = Launcher::start(&self.inner.executor) {
                *state = LauncherState::Running(l, false);
            }
        }
    }

    fn recover_sandboxes(&self) -> Result<Vec<RecoveredTask>, DriverError> {
        let entries = match std::fs::read_dir(&self.inner.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("read {}", self.inner.root.display()))(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read sandbox root"))?;
            let Some(id) = entry.file_name().to_str().and_then(|n| TaskId::parse(n).ok()) else {
                continue;
            };
            let dir = entry.path();
            match sandbox::read_json::<LaunchSpec>(&dir, SPEC_FILE) {
                Ok(spec) if spec.oci.is_some() == self.inner.containers => {}
                // The other driver's task.
                Ok(_) => continue,
                // No spec: not an executor's sandbox (docker's); an
                // unreadable one is the exec driver's to report.
                Err(_) if !dir.join(SPEC_FILE).exists() || self.inner.containers => continue,
                Err(_) => {}
            }
            let mut state = sandbox::read_json::<StateFile>(&dir, STATE_FILE).ok();
            let already = self.inner.tasks().contains_key(&id);
            let live = match &state {
                Some(st) if st.exit.is_none() && !already => open_live_executor(st),
                _ => None,
            };
            if live.is_none() && !already && state.as_ref().is_some_and(|st| st.exit.is_none()) {
                // The executor may have recorded the end and exited between
                // the read and the open: only a state still without an end
                // makes the task an orphan.
                state = sandbox::read_json::<StateFile>(&dir, STATE_FILE).ok();
            }
            let task = match state {
                Some(st) if already || live.is_some() => {
                    if let Some(fd) = live {
                        attach(&self.inner, id.clone(), st.executor_pid, Arc::new(fd));
                    }
                    RecoveredTask {
                        task_id: id,
                        state: if st.pid.is_some() { TaskState::Running } else { TaskState::Starting },
                        pid: st.pid,
                        started_at: st.started_at,
                        message: None,
                    }
                }
                Some(StateFile { pid, started_at, exit: Some(exit), .. }) => {
                    RecoveredTask { task_id: id, state: exit.state, pid, started_at, message: Some(exit.message) }
                }
                other => {
                    let exit = finish_orphan(&id, &dir);
                    RecoveredTask {
                        task_id: id,
                        state: exit.state,
                        pid: other.as_ref().and_then(|s| s.pid),
                        started_at: other.as_ref().and_then(|s| s.started_at),
                        message: Some(exit.message),
                    }
                }
            };
            found.push(task);
        }
        Ok(found)
    }

    /// Deletes a finished task's sandbox (after the store forgot it).
    pub fn remove_sandbox(&self, id: &TaskId) -> Result<(), DriverError> {
        if self.inner.tasks().contains_key(id) {
            return Err(DriverError::StillRunning(id.clone()));
        }
        let dir = self.sandbox_dir(id);
        if let Ok(st) = sandbox::read_json::<StateFile>(&dir, STATE_FILE) {
            if st.exit.is_none() && open_live_executor(&st).is_some() {
                return Err(DriverError::StillRunning(id.clone()));
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", dir.display()))(e)),
        }
    }
}

/// A started executor: its pid, stdout, stdin (when it reads secrets) and a pidfd.
type Started = (u32, Option<OwnedFd>, Option<std::fs::File>, OwnedFd);

/// Creates the sandbox, writes the spec and starts the executor.
/// Makes the task's sandbox (refusing one that exists: a task id runs once).
fn create_sandbox(inner: &Inner, id: &TaskId, dir: &Path) -> Result<(), DriverError> {
    std::fs::create_dir_all(&inner.root).map_err(io_err(format!("create {}", inner.root.display())))?;
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(DriverError::AlreadyExists(id.clone())),
        Err(e) => Err(io_err(format!("create {}", dir.display()))(e)),
    }
}

/// Writes the spec into the sandbox and starts the executor. The spec is
/// written after the artifacts are in, so a task cannot have replaced it.
fn start_executor(inner: &Inner, mut spec: LaunchSpec, dir: &Path) -> Result<Started, DriverError> {
    let (program, args) = inner.executor.split_first().ok_or(DriverError::NoExecutor)?;
    spec.timeline.mark("spec");
    sandbox::write_json(dir, SPEC_FILE, &spec).map_err(io_err("write task spec"))?;
    let log = std::fs::File::create(dir.join(EXECUTOR_LOG)).map_err(io_err("create executor log"))?;
    if let Some(started) = fork_executor(inner, &spec, dir, &log)? {
        return Ok(started);
    }

    let mut cmd = std::process::Command::new(program);
    let stdin = if spec.secrets_on_stdin { Stdio::piped() } else { Stdio::null() };
    cmd.args(args).arg(SANDBOX_FLAG).arg(dir).stdin(stdin).stdout(Stdio::piped()).stderr(log);
    // No pre_exec hook: without one std starts the executor with
    // posix_spawn (a vfork-style clone), not fork, which would copy the
    // agent's page tables for every launch. The executor makes its own
    // session first thing (`executor_main`).
    let mut child = cmd.spawn().map_err(io_err(format!("start executor {}", program.to_string_lossy())))?;
    let exec_pid = child.id();
    let (stdout, stdin) = (child.stdout.take().map(OwnedFd::from), child.stdin.take().map(|s| OwnedFd::from(s).into()));
    // Dropping a std Child neither kills nor waits: the pidfd watches and
    // reaps the executor.
    drop(child);
    let pidfd = pidfd_open(exec_pid).map_err(io_err("pidfd_open executor"))?;
    Ok((exec_pid, stdout, stdin, pidfd))
}

/// Has the launcher fork the executor (starting the launcher on first
/// use, and again once if it died). `None`: no launcher can be had; the
/// caller starts the executor itself.
fn fork_executor(
    inner: &Inner,
    spec: &LaunchSpec,
    dir: &Path,
    log: &std::fs::File,
) -> Result<Option<Started>, DriverError> {
    use std::os::fd::AsFd;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe")(e.into()));
    let (out_r, out_w) = pipe()?;
    let (stdin_child, stdin_ours): (OwnedFd, Option<std::fs::File>) = if spec.secrets_on_stdin {
        let (r, w) = pipe()?;
        (r, Some(w.into()))
    } else {
        (std::fs::File::open("/dev/null").map_err(io_err("open /dev/null"))?.into(), None)
    };
    let mut state = inner.launcher.lock().unwrap_or_else(|e| e.into_inner());
    for fresh in [false, true] {
        if fresh || matches!(*state, LauncherState::NotStarted) {
            *state = match Launcher::start(&inner.executor) {
                Ok(l) => LauncherState::Running(l, false),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the executor launcher; starting executors directly");
                    LauncherState::Unusable
                }
            };
        }
        let LauncherState::Running(launcher, served) = &mut *state else { return Ok(None) };
        match launcher.launch(dir, [stdin_child.as_fd(), out_w.as_fd(), log.as_fd()]) {
            Ok((pid, pidfd)) => {
                *served = true;
                return Ok(Some((pid, Some(out_r), stdin_ours, pidfd)));
            }
            // A launcher that worked may have forked an executor for this
            // sandbox before it died: starting another could run the task
            // twice, so this launch fails (a new launcher serves the next).
            Err(e @ LaunchError::Unanswered(_)) if *served => {
                *state = LauncherState::NotStarted;
                return Err(DriverError::Launch { task_id: spec.task_id.clone(), message: e.to_string() });
            }
            Err(e) if fresh => {
                tracing::warn!(error = %e, "the executor launcher does not work; starting executors directly");
                *state = LauncherState::Unusable;
            }
            Err(e) => tracing::info!(error = %e, "the executor launcher is gone; starting it again"),
        }
    }
    Ok(None)
}

async fn read_first_line(out: OwnedFd) -> Result<String, String> {
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(out).map_err(|e| format!("executor pipe: {e}"))?;
    let mut line = String::new();
    let mut reader = BufReader::new(rx);
    match tokio::time::timeout(LAUNCH_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => Err(format!("no word from the executor within {LAUNCH_TIMEOUT:?}")),
        Ok(Err(e)) => Err(format!("reading from executor: {e}")),
        Ok(Ok(0)) => Err("executor exited before starting the task".to_string()),
        Ok(Ok(_)) => Ok(line),
    }
}

/// Registers a live executor and starts watching for its exit.
fn attach(inner: &Arc<Inner>, id: TaskId, exec_pid: u32, pidfd: Arc<OwnedFd>) {
    let mut tasks = inner.tasks();
    // Holding the lock while spawning: the watcher's own removal of the
    // entry cannot overtake this insertion.
    let watcher = tokio::spawn(watch(inner.clone(), id.clone(), exec_pid, pidfd.clone()));
    if let Some(old) = tasks.insert(id, Attached { exec_pid, pidfd, watcher: watcher.abort_handle() }) {
        old.watcher.abort();
    }
}

async fn wait_exit(pidfd: &Arc<OwnedFd>) {
    // SAFETY: the AsyncFd holds an Arc of the OwnedFd, so the fd stays open
    // (and is not replaced) for as long as it is registered.
    match unsafe { AsyncFd::register_with_interest(pidfd.clone(), Interest::READABLE) } {
        Ok(afd) => {
            // A pidfd turns readable when the process exits; an error here
            // means the fd is unusable, and we fall through to the check.
            let _ = afd.readable().await;
        }
        Err(e) => {
            tracing::warn!("cannot register pidfd with the reactor ({e}); polling");
            while pidfd_signal(pidfd, 0).is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn watch(inner: Arc<Inner>, id: TaskId, exec_pid: u32, pidfd: Arc<OwnedFd>) {
    wait_exit(&pidfd).await;
    pidfd_reap(&pidfd);
    let dir = inner.root.join(id.as_str());
    let exit = match sandbox::read_json::<StateFile>(&dir, STATE_FILE) {
        Ok(StateFile { exit: Some(exit), .. }) => exit,
        _ => {
            let (id2, dir2) = (id.clone(), dir.clone());
            match tokio::task::spawn_blocking(move || finish_orphan(&id2, &dir2)).await {
                Ok(exit) => exit,
                Err(_) => ExitRecord {
                    state: TaskState::Failed,
                    message: "executor exited without recording the task's end".into(),
                    code: None,
                    signal: None,
                    at: sandbox::now(),
                },
            }
        }
    };
    {
        let mut tasks = inner.tasks();
        if tasks.get(&id).is_some_and(|a| a.exec_pid == exec_pid) {
            tasks.remove(&id);
        }
    }
    let _ = inner.events.send(TaskEvent::Exited { task_id: id, state: exit.state, message: exit.message, at: exit.at });
}

/// Kills and removes every task cgroup on this host that neither `owned`
/// (this driver's attached executors) nor a live executor of any agent on
/// the host claims: several agents may share a host, and each sweeps when
/// it starts. Returns the tasks whose cgroups were removed.
fn sweep_orphan_cgroups(owned: &HashSet<TaskId>) -> Vec<TaskId> {
    let cgroups = match crate::cgroup::task_cgroups() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list task cgroups; orphans stay");
            return Vec::new();
        }
    };
    // Listed before the process scan: an executor that made one of these
    // cgroups was started before the listing, so the scan sees it if it
    // still lives.
    let live = live_executor_tasks();
    let mut swept = Vec::new();
    for id in cgroups.into_iter().filter(|id| !owned.contains(id) && !live.contains(id)) {
        let cg = match TaskCgroup::open(&id) {
            Ok(cg) => cg,
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "cannot open an orphan task cgroup");
                continue;
            }
        };
        let left = cg.pids().len();
        if !cg.kill_all(ORPHAN_SWEEP_TIMEOUT, || {}) {
            tracing::warn!(task = %id, "processes survive SIGKILL in an orphan task cgroup");
        }
        match cg.remove() {
            Ok(()) => {
                tracing::info!(task = %id, killed = left, "removed the cgroup of a task whose executor is gone");
                swept.push(id);
            }
            Err(e) => tracing::warn!(task = %id, error = %e, "cannot remove an orphan task cgroup"),
        }
    }
    swept
}

/// Tasks whose executor is alive on this host, whichever agent started it.
pub(crate) fn live_executor_tasks() -> HashSet<TaskId> {
    live_executors().into_iter().map(|(_, id)| id).collect()
}

/// Live executors on this host (pid, task), whichever agent started them:
/// processes with `--sandbox <root>/<task-id>` on their command line, and
/// those a launcher forked (`--launcher` on it), working in
/// `<root>/<task-id>`. A zombie's command line is empty, so a dead executor
/// never counts.
pub fn live_executors() -> Vec<(u32, TaskId)> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let task_of = |dir: &Path| TaskId::parse(dir.file_name()?.to_str()?).ok();
    procs
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .filter_map(|(pid, proc_dir)| {
            let cmdline = std::fs::read(proc_dir.join("cmdline")).ok()?;
            let mut args = cmdline.split(|b| *b == 0);
            let id = match args.by_ref().find(|a| *a == SANDBOX_FLAG.as_bytes() || *a == LAUNCHER_FLAG.as_bytes())? {
                a if a == SANDBOX_FLAG.as_bytes() => task_of(Path::new(std::str::from_utf8(args.next()?).ok()?)),
                // The launcher itself works elsewhere: no task.
                _ => task_of(&std::fs::read_link(proc_dir.join("cwd")).ok()?),
            };
            Some((pid, id?))
        })
        .collect()
}

/// Reaps an executor that failed to start its task, without reporting.
fn reap_later(pidfd: Arc<OwnedFd>) {
    tokio::spawn(async move {
        wait_exit(&pidfd).await;
        pidfd_reap(&pidfd);
    });
}

/// The executor of `dir` died without recording the task's end: kill what
/// is left of the task, remove its cgroup (and a container's root mount and
/// network), record a failure.
fn finish_orphan(id: &TaskId, dir: &Path) -> ExitRecord {
    if let Ok(cg) = TaskCgroup::open(id) {
        cg.kill_all(Duration::from_secs(5), || {});
        if let Err(e) = cg.remove() {
            tracing::warn!("task {id}: cannot remove cgroup: {e}");
        }
    }
    // A container's root mount and bridge network, which its executor
    // would have undone.
    if let Some(oci) = sandbox::read_json::<LaunchSpec>(dir, SPEC_FILE).ok().and_then(|s| s.oci) {
        crate::container::cleanup(&oci);
        if let Some(net) = &oci.network {
            crate::network::detach_task(&net.bridge, id);
        }
    }
    let message = "executor exited without recording the task's end";
    match record_exit(dir, TaskState::Failed, message) {
        Ok(exit) => exit,
        Err(e) => {
            tracing::warn!("task {id}: cannot record state: {e}");
            ExitRecord {
                state: TaskState::Failed,
                message: message.into(),
                code: None,
                signal: None,
                at: sandbox::now(),
            }
        }
    }
}

fn record_exit(dir: &Path, state: TaskState, message: &str) -> std::io::Result<ExitRecord> {
    let mut st = sandbox::read_json::<StateFile>(dir, STATE_FILE).unwrap_or_default();
    let exit = ExitRecord { state, message: message.to_string(), code: None, signal: None, at: sandbox::now() };
    st.exit = Some(exit.clone());
    sandbox::write_json(dir, STATE_FILE, &st)?;
    Ok(exit)
}

/// A pidfd for the executor recorded in `st`, if that very process (same
/// start time) is still alive.
fn open_live_executor(st: &StateFile) -> Option<OwnedFd> {
    if st.executor_pid == 0 {
        return None;
    }
    let fd = pidfd_open(st.executor_pid).ok()?;
    // Checked after opening: the pidfd pins the process, so a match means
    // the fd refers to our executor, not a recycled pid.
    (sandbox::proc_start_time(st.executor_pid) == Some(st.executor_start)).then_some(fd)
}

fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `r` is a fresh, valid file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn pidfd_signal(fd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: plain syscall on a valid pidfd; null siginfo is allowed.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps the process behind `fd` if it is our exited child; a no-op for
/// processes that are not our children (after an agent restart).
fn pidfd_reap(fd: &OwnedFd) {
    // SAFETY: waitid writes into the zeroed siginfo we pass.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PIDFD, fd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG);
    }
}
