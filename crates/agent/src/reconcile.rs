//! The agent's reconcile loop: makes this node run exactly the tasks the
//! store assigns to it, and reports what happens to them.
//!
//! Reacts to the store's change feed and to driver events; never polls.
//! Status reports are batched into one `TaskStatuses` command per round
//! trip and retried until committed, so no report is lost. After a restart
//! it re-attaches to surviving tasks (`Driver::recover` of every driver)
//! before doing anything else, so running tasks are neither killed nor
//! launched twice. Each task goes to the driver of its app's container kind;
//! this module talks to drivers only through the `Driver` trait.

use crate::driver::{DockerDriver, Driver, ExecDriver, OciDriver, TaskEvent, TaskLaunch};
use crate::env::task_env;
use crate::health::{run_checker, CheckTarget, CheckerEvent};
use crate::readiness::Runners;
use model::{AppSpec, DriverKind, NodeId, Task, TaskGoal, TaskId, TaskState, TaskStatus};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use store::{Change, Command, Effect, Store, Update};
use tokio::sync::{mpsc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Launching,
    Running,
    Killing,
    Exited,
}

struct Local {
    phase: Phase,
    /// When this agent started launching it (for the launch latency).
    launched_at: Option<std::time::Instant>,
    driver: DriverKind,
    /// Held while launching; a kill waits for the launch to finish.
    guard: Arc<Mutex<()>>,
}

pub struct AgentConfig {
    pub node: NodeId,
    pub sandbox_root: PathBuf,
    /// Program and leading args that run the executor.
    pub executor: Vec<OsString>,
    /// Sandboxes (logs) of finished tasks kept on this node.
    pub keep_sandboxes: usize,
    /// The client for health and readiness checks ([`crate::health::check_client`]),
    /// built by the caller so a failure stops the node before the agent starts.
    pub check_client: reqwest::Client,
    /// Launch and exit counts for `/metrics`.
    pub metrics: crate::AgentMetrics,
    /// The drivers this node offers ([`probe_drivers`]), as registered.
    pub drivers: Vec<DriverKind>,
    /// The node's image store, for the oci driver.
    pub images: Option<image::ImageStore>,
    /// `--docker-apps=builtin`: `DOCKER` apps run on the built-in runtime.
    pub docker_builtin: bool,
    /// Rotation of every task's `stdout` and `stderr` (`--log-max-size`, `--log-files`).
    pub log: logfiles::LogLimits,
    /// The user tasks of apps without a `user` run as (`None`: as the agent).
    pub default_task_user: Option<String>,
    /// Fail exec launches that would run as root (uid 0).
    pub refuse_root_tasks: bool,
    /// Asks every node's load balancer whether a task being killed is
    /// drained (`None`: wait `LB_DRAIN` instead).
    pub lb_drain: Option<Arc<dyn crate::LbDrain>>,
    /// `--image-gc-after`: images no task used for this long are removed.
    pub image_gc_after: Duration,
    /// Containers' networking: the bridge, the node's DNS server, the domain.
    pub network: crate::network::NodeNetwork,
}

/// The drivers this node can offer: `exec` always, `oci` where the kernel
/// can run containers, `docker` when an engine answers now (or, with
/// `docker_builtin`, when the built-in runtime can take its apps).
pub async fn probe_drivers(docker_builtin: bool) -> Vec<DriverKind> {
    let mut out = vec![DriverKind::Exec];
    match crate::driver::oci::supported() {
        Ok(()) => out.push(DriverKind::Oci),
        Err(e) => tracing::info!(error = %e, "the oci driver (built-in container runtime) is not offered"),
    }
    if docker_builtin {
        if out.contains(&DriverKind::Oci) {
            out.push(DriverKind::Docker);
        }
        return out;
    }
    match crate::driver::docker::connect_engine().await {
        Ok(_) => out.push(DriverKind::Docker),
        Err(e) => tracing::info!(error = %e, "no docker engine: the docker driver is not offered"),
    }
    out
}

/// This node's drivers by kind.
type Drivers = BTreeMap<DriverKind, Arc<dyn Driver>>;

async fn start_drivers(cfg: &AgentConfig, events: mpsc::UnboundedSender<TaskEvent>) -> Drivers {
    let mut out: Drivers = BTreeMap::new();
    let exec = ExecDriver::with_log_limits(cfg.sandbox_root.clone(), cfg.executor.clone(), events.clone(), cfg.log);
    out.insert(DriverKind::Exec, Arc::new(exec));
    if let (true, Some(images)) = (cfg.drivers.contains(&DriverKind::Oci), &cfg.images) {
        let containers = cfg.sandbox_root.with_file_name("containers");
        let oci: Arc<dyn Driver> = Arc::new(OciDriver::new(
            cfg.sandbox_root.clone(),
            containers,
            cfg.executor.clone(),
            events.clone(),
            images.clone(),
            cfg.log,
            cfg.network.clone(),
        ));
        if cfg.docker_builtin {
            // The same driver under both kinds: it recovers its tasks once
            // per kind, the second time finding them attached already.
            out.insert(DriverKind::Docker, oci.clone());
        }
        out.insert(DriverKind::Oci, oci);
    }
    if cfg.drivers.contains(&DriverKind::Docker) && !cfg.docker_builtin {
        match DockerDriver::connect_with_log_limits(cfg.sandbox_root.clone(), events, cfg.log).await {
            Ok(d) => {
                let node_file = cfg.images.as_ref().and_then(|i| i.registry_config().map(std::path::Path::to_path_buf));
                out.insert(DriverKind::Docker, Arc::new(d.with_registry_config(node_file)));
            }
            // Launches fail with a message (the node was placed while its
            // engine answered); the agent's restart tries again.
            Err(e) => tracing::warn!(error = %e, "the docker engine is gone; docker tasks cannot start"),
        }
    }
    out
}

use crate::sandbox::now;

/// What this agent knows of its tasks beyond the store.
#[derive(Default)]
struct Tracked {
    local: HashMap<TaskId, Local>,
    /// Finished tasks whose sandboxes are still kept, oldest first.
    finished: VecDeque<(TaskId, DriverKind)>,
}

/// Runs until the store shuts down.
pub async fn run(store: Arc<Store>, cfg: AgentConfig) {
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let drivers = start_drivers(&cfg, ev_tx).await;
    // Image upkeep ends with the agent (a restarted agent starts it again).
    let _upkeep = cfg.images.clone().filter(|_| drivers.contains_key(&DriverKind::Oci)).map(|images| {
        let upkeep = crate::images::upkeep(store.clone(), cfg.node, images, cfg.image_gc_after, volumes_root(&cfg));
        crate::images::AbortOnDrop(tokio::spawn(upkeep).abort_handle())
    });
    let reports = spawn_batcher(store.clone(), Command::TaskStatuses, "status report");
    let health_reports = spawn_batcher(store.clone(), Command::TaskHealth, "health report");
    let mut ready = Runners::new(
        spawn_batcher(store.clone(), Command::TaskReadiness, "readiness report"),
        cfg.check_client.clone(),
    );
    let (check_tx, mut check_rx) = mpsc::unbounded_channel::<CheckerEvent>();
    let mut checks = Checkers { running: HashMap::new(), tx: check_tx, client: cfg.check_client.clone() };
    let mut tracked = Tracked::default();
    let mut sub = store.subscribe();

    // A replica that trails the cluster (restored from disk after a crash
    // without the last commits it had applied) would not know a task this
    // agent launched just before: it would kill it as unknown, or never
    // report its exit. Catch up first.
    if let Err(e) = store.barrier().await {
        tracing::warn!(error = %e, "could not catch up with the cluster; going on with this node's replica as it is");
    }
    for (kind, driver) in &drivers {
        let found = match driver.recover().await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(driver = kind.name(), error = %e, "could not recover tasks");
                continue;
            }
        };
        for r in found {
            let phase = if r.state.is_terminal() { Phase::Exited } else { Phase::Running };
            let local = Local { phase, launched_at: None, driver: *kind, guard: Arc::new(Mutex::new(())) };
            tracked.local.insert(r.task_id.clone(), local);
            let known = store.read(|s| s.tasks.get(&r.task_id).map(|t| t.state));
            if let Some(st) = known {
                if st != r.state && !st.is_terminal() {
                    let at = if r.state == TaskState::Running { r.started_at.unwrap_or_else(now) } else { now() };
                    let _ = reports.send(TaskStatus {
                        task_id: r.task_id,
                        state: r.state,
                        at,
                        message: r.message,
                        container_ip: None,
                    });
                }
            }
        }
    }

    reconcile(&store, &cfg, &drivers, &reports, &mut tracked, &mut checks, &mut ready);
    loop {
        tokio::select! {
            u = sub.next() => {
                match u {
                    None => return,
                    Some(Update::Change(c)) if !concerns(&c, cfg.node) => continue,
                    Some(_) => {}
                }
                sub.drain();
                reconcile(&store, &cfg, &drivers, &reports, &mut tracked, &mut checks, &mut ready);
            }
            Some(ev) = check_rx.recv() => match ev {
                CheckerEvent::Report(r) => {
                    let _ = health_reports.send(r);
                }
                CheckerEvent::Kill { task_id, cause } => {
                    tracing::info!(task = %task_id, %cause, "killing an unhealthy task");
                    checks.stop(&task_id);
                    cfg.metrics.restarted(&task_id);
                    let store = store.clone();
                    tokio::spawn(async move {
                        let cmd = Command::KillUnhealthy { id: task_id, reason: cause, at: now() };
                        if let Err(e) = store.propose(cmd).await {
                            tracing::warn!(error = %e, "could not kill an unhealthy task");
                        }
                    });
                }
            },
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { return };
                let status = match ev {
                    TaskEvent::Starting { task_id, at } => {
                        // Only while this agent launches it: never over a kill.
                        if !tracked.local.get(&task_id).is_some_and(|l| l.phase == Phase::Launching) {
                            continue;
                        }
                        TaskStatus { task_id, state: TaskState::Starting, at, message: None, container_ip: None }
                    }
                    TaskEvent::Running { task_id, at, ip, .. } => {
                        if let Some(l) = tracked.local.get_mut(&task_id) {
                            if l.phase == Phase::Launching {
                                l.phase = Phase::Running;
                                if let Some(t) = l.launched_at.take() {
                                    cfg.metrics.launched(true);
                                    cfg.metrics.launch_seconds.observe(t.elapsed().as_secs_f64());
                                }
                            }
                        }
                        TaskStatus { task_id, state: TaskState::Running, at, message: None, container_ip: ip }
                    }
                    TaskEvent::Exited { task_id, state, message, at } => {
                        if let Some(l) = tracked.local.get_mut(&task_id) {
                            l.phase = Phase::Exited;
                        }
                        cfg.metrics.exits.get_or_create(&crate::metrics::ExitLabels { state: state.marathon_name() }).inc();
                        if matches!(state, TaskState::Failed | TaskState::Finished) {
                            cfg.metrics.restarted(&task_id);
                        }
                        TaskStatus { task_id, state, at, message: Some(message), container_ip: None }
                    }
                };
                let _ = reports.send(status);
            }
        }
    }
}

/// Whether a change can matter to this node's agent: one of its tasks, its
/// own record, or an app it runs tasks of changed. Others (the rest of the
/// cluster) are skipped without reading the state.
fn concerns(c: &Change, node: NodeId) -> bool {
    c.effects.iter().any(|e| match e {
        Effect::TaskChanged { .. } => e.task().is_some_and(|t| t.node == node),
        Effect::NodeChanged { id, .. } => *id == node,
        Effect::AppPut { after, .. } => c.state.tasks_of(&after.spec.id).any(|t| t.node == node),
        Effect::AppRemoved { .. } => true,
        _ => false,
    })
}

fn reconcile(
    store: &Store,
    cfg: &AgentConfig,
    drivers: &Drivers,
    reports: &mpsc::UnboundedSender<TaskStatus>,
    tracked: &mut Tracked,
    checks: &mut Checkers,
    ready: &mut Runners,
) {
    let Tracked { local, finished } = tracked;
    // Each task with its app's spec, and whether it runs the app's current version.
    let mine: Vec<(Task, Option<AppSpec>, bool)> = store.read(|s| {
        s.tasks_on(cfg.node)
            .map(|t| {
                if let Some(r) = &t.job_run {
                    // A job run's task launches from the job's template.
                    return (t.clone(), s.jobs.get(&r.job).map(|j| j.spec.template()), false);
                }
                let app = s.apps.get(&t.app_id);
                let current = app.is_some_and(|a| t.app_version >= a.last_config_change_at);
                (t.clone(), app.map(|a| a.spec.clone()), current)
            })
            .collect()
    });
    let mut assigned = std::collections::HashSet::new();
    let mut checked = std::collections::HashSet::new();
    let mut readying = std::collections::HashSet::new();
    for (task, app, current) in mine {
        assigned.insert(task.id.clone());
        let running_here = local.get(&task.id).is_some_and(|l| l.phase == Phase::Running);
        if task.state == TaskState::Running && task.goal == TaskGoal::Running && running_here {
            if let Some(app) = app.as_ref().filter(|a| !a.health_checks.is_empty()) {
                checked.insert(task.id.clone());
                checks.ensure(&task, app, &cfg.sandbox_root);
            }
            // Readiness: checked until it passes once, for the current version only.
            if let Some(app) = app.as_ref().filter(|a| current && !a.readiness_checks.is_empty()) {
                if task.ready != Some(true) {
                    readying.insert(task.id.clone());
                    ready.ensure(&task, app);
                }
            }
        }
        if task.state.is_terminal() {
            continue;
        }
        let entry = local.get_mut(&task.id);
        match (task.goal, entry) {
            (TaskGoal::Running, None) => {
                let kind = app.as_ref().map_or(DriverKind::Exec, |a| a.container.driver());
                if !drivers.contains_key(&kind) && task.state != TaskState::Staging {
                    // It ran here before; its driver (the engine) is gone for
                    // now. Neither failed nor started twice: the next agent
                    // start recovers it.
                    tracing::warn!(task = %task.id, driver = kind.name(), "no driver to supervise the task with");
                    continue;
                }
                let guard = Arc::new(Mutex::new(()));
                let launched_at = Some(std::time::Instant::now());
                let local_task = Local { phase: Phase::Launching, launched_at, driver: kind, guard: guard.clone() };
                local.insert(task.id.clone(), local_task);
                let driver = drivers.get(&kind).cloned();
                // Opened here, on the node that runs the task, and nowhere else.
                let secrets = match &app {
                    Some(a) => store.read(|s| {
                        let secrets = crate::secrets::resolve(s, store.keyring(), a).map_err(|e| e.to_string())?;
                        let open = |name: &str| crate::secrets::open_secret(s, store.keyring(), a, name);
                        Ok((secrets, crate::images::pull_config(a, open)?))
                    }),
                    None => Ok(Default::default()),
                };
                spawn_launch(driver, kind, reports.clone(), guard, (task, app), secrets, cfg);
            }
            (TaskGoal::Killed, None) => {
                // Never started here: it is simply gone.
                let msg = Some("killed before it started".to_string());
                let _ = reports.send(TaskStatus {
                    task_id: task.id,
                    state: TaskState::Killed,
                    at: now(),
                    message: msg,
                    container_ip: None,
                });
            }
            (TaskGoal::Killed, Some(l)) if matches!(l.phase, Phase::Launching | Phase::Running) => {
                l.phase = Phase::Killing;
                let bound = app.as_ref().map(|a| lb_drain(&task, a)).unwrap_or_default();
                let drain = Drain { bound, lb: cfg.lb_drain.clone() };
                spawn_kill(drivers.get(&l.driver).cloned(), l.guard.clone(), task.id, drain);
            }
            _ => {}
        }
    }
    // Tasks running here that the store no longer assigns to this node.
    for (id, l) in local.iter_mut() {
        if !assigned.contains(id) && matches!(l.phase, Phase::Launching | Phase::Running) {
            tracing::info!(task = %id, "killing a task the cluster no longer knows");
            l.phase = Phase::Killing;
            spawn_kill(drivers.get(&l.driver).cloned(), l.guard.clone(), id.clone(), Drain::none());
        }
    }
    local.retain(|id, l| {
        let keep = assigned.contains(id) || l.phase != Phase::Exited;
        if !keep {
            finished.push_back((id.clone(), l.driver));
        }
        keep
    });
    // Sandboxes (logs) of the most recent finished tasks stay for people to
    // read; older ones go, so disk use stays bounded.
    while finished.len() > cfg.keep_sandboxes {
        if let Some((old, kind)) = finished.pop_front() {
            if let Some(driver) = drivers.get(&kind) {
                if let Err(e) = driver.remove(&old) {
                    tracing::warn!(task = %old, error = %e, "could not remove a finished sandbox");
                }
            }
        }
    }
    checks.retain(&checked);
    ready.retain(&readying);
}

/// The health checkers of tasks running here.
struct Checkers {
    running: HashMap<TaskId, tokio::task::AbortHandle>,
    tx: mpsc::UnboundedSender<CheckerEvent>,
    client: reqwest::Client,
}

impl Checkers {
    fn ensure(&mut self, task: &Task, app: &AppSpec, root: &std::path::Path) {
        if self.running.contains_key(&task.id) {
            return;
        }
        let sandbox = root.join(task.id.as_str());
        let target = CheckTarget {
            task_id: task.id.clone(),
            host: task.host.clone(),
            ports: task.ports.clone(),
            checks: app.health_checks.clone(),
            started_at: task.started_at.unwrap_or_else(now),
            env: task_env(app, task, &sandbox),
            sandbox,
        };
        let h = tokio::spawn(run_checker(target, self.client.clone(), self.tx.clone()));
        self.running.insert(task.id.clone(), h.abort_handle());
    }

    fn stop(&mut self, id: &TaskId) {
        if let Some(h) = self.running.remove(id) {
            h.abort();
        }
    }

    fn retain(&mut self, keep: &std::collections::HashSet<TaskId>) {
        self.running.retain(|id, h| {
            let k = keep.contains(id);
            if !k {
                h.abort();
            }
            k
        });
    }
}

/// Batches reports (task statuses, health or readiness transitions) into one command each
/// round trip; each batch is retried until it is committed.
fn spawn_batcher<T: Clone + Send + 'static>(
    store: Arc<Store>,
    command: fn(Vec<T>) -> Command,
    what: &'static str,
) -> mpsc::UnboundedSender<T> {
    let (tx, mut rx) = mpsc::unbounded_channel::<T>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let mut delay = Duration::from_millis(50);
            while let Err(e) = store.propose(command(batch.clone())).await {
                tracing::warn!(error = %e, "{what} not committed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    });
    tx
}

/// Whether a task given `user` (`None`: the agent's own) would run as uid 0.
/// An unknown name is not root (its launch fails on its own, saying so).
fn runs_as_root(user: Option<&str>) -> bool {
    match user {
        None => nix::unistd::geteuid().is_root(),
        Some(name) => nix::unistd::User::from_name(name).ok().flatten().is_some_and(|u| u.uid.is_root()),
    }
}

fn task_launch(
    task: &Task,
    app: &AppSpec,
    sandbox: PathBuf,
    default_user: Option<&str>,
    secrets: crate::secrets::TaskSecrets,
) -> TaskLaunch {
    TaskLaunch {
        secrets,
        task_id: task.id.clone(),
        command: app.command.clone(),
        env: task_env(app, task, &sandbox),
        resources: task.resources,
        kill_grace: Duration::from_secs_f64(app.kill_grace_seconds.max(0.0)),
        container: app.container.container().cloned().unwrap_or_default(),
        host_ports: task.ports.clone(),
        user: app.user.clone().or_else(|| default_user.map(str::to_string)),
        registry_auth: None,
        artifacts: app.fetch.clone(),
    }
}

/// Where this node keeps persistent volumes (beside the sandboxes).
pub fn volumes_root(cfg: &AgentConfig) -> PathBuf {
    cfg.sandbox_root.with_file_name("volumes")
}

fn spawn_launch(
    driver: Option<Arc<dyn Driver>>,
    kind: DriverKind,
    reports: mpsc::UnboundedSender<TaskStatus>,
    guard: Arc<Mutex<()>>,
    (task, app): (Task, Option<AppSpec>),
    secrets: Result<(crate::secrets::TaskSecrets, Option<image::RegistryConfig>), String>,
    cfg: &AgentConfig,
) {
    let (root, metrics) = (cfg.sandbox_root.clone(), cfg.metrics.clone());
    let volumes = volumes_root(cfg);
    let default_user = cfg.default_task_user.clone();
    let refuse_root = cfg.refuse_root_tasks && kind == DriverKind::Exec;
    let span = tracing::info_span!("launch", task = %task.id, app = %task.id.app_id(), driver = kind.name());
    let launch = async move {
        let sandbox = root.join(task.id.as_str());
        let result = match (app.as_ref(), driver) {
            (None, _) => Err("the app no longer exists".to_string()),
            (Some(_), None) => Err(format!("this node has no {} driver", kind.name())),
            (Some(app), Some(_)) if refuse_root && runs_as_root(app.user.as_deref().or(default_user.as_deref())) => {
                Err("this node runs no task as root (--refuse-root-tasks): give the app a user".to_string())
            }
            (Some(app), Some(driver)) => match secrets {
                Err(why) => Err(why),
                Ok((secrets, registry_auth)) => {
                    let mut launch = task_launch(&task, app, sandbox, default_user.as_deref(), secrets);
                    match crate::volumes::prepare(&mut launch, &volumes) {
                        Err(why) => Err(why),
                        Ok(()) => driver
                            .launch(TaskLaunch { registry_auth, ..launch })
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                    }
                }
            },
        };
        if let Err(message) = result {
            metrics.launched(false);
            tracing::warn!(%message, "launch failed");
            let _ = reports.send(TaskStatus {
                task_id: task.id,
                state: TaskState::Failed,
                at: now(),
                message: Some(message),
                container_ip: None,
            });
        } else {
            tracing::info!("task started");
        }
    };
    spawn_holding(&guard, tracing::Instrument::instrument(launch, span));
}

/// Spawns `work` holding `guard` until it ends, the guard taken before the
/// spawn rather than when the task first runs: a kill spawned just after a
/// launch (a node catching up after a partition can read a task's launch
/// and its kill in one go) could otherwise take the guard first, find
/// nothing to signal yet and end, and the task would start and run on with
/// its kill spent.
fn spawn_holding<F>(guard: &Arc<Mutex<()>>, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let held = guard.clone().try_lock_owned();
    let guard = guard.clone();
    tokio::spawn(async move {
        // Only a launch takes it first, and each has a guard of its own.
        let _held = match held {
            Ok(h) => h,
            Err(_) => guard.lock_owned().await,
        };
        work.await;
    });
}

/// Without an `LbDrain`, how long a task that load balancers send to keeps
/// running after it was asked to go: every node's LB drops it from its
/// backends at the log index that asked for the kill, so after a moment no
/// new request reaches it. Bounded by the app's kill grace period.
pub const LB_DRAIN: Duration = Duration::from_secs(1);

/// How long a kill may wait for the load balancers: the app's kill grace
/// period for a running task with service ports (zero for others, which no
/// LB sends to).
fn lb_drain(task: &model::Task, app: &model::AppSpec) -> Duration {
    let balanced = app.ports.iter().any(|p| p.port != 0);
    if balanced && task.state == TaskState::Running {
        Duration::from_secs_f64(app.kill_grace_seconds.max(0.0))
    } else {
        Duration::ZERO
    }
}

/// What a kill waits for before it signals the task.
struct Drain {
    bound: Duration,
    lb: Option<Arc<dyn crate::LbDrain>>,
}

impl Drain {
    fn none() -> Drain {
        Drain { bound: Duration::ZERO, lb: None }
    }
}

fn spawn_kill(driver: Option<Arc<dyn Driver>>, guard: Arc<Mutex<()>>, id: TaskId, drain: Drain) {
    let Some(driver) = driver else {
        tracing::warn!(task = %id, "no driver to kill the task with");
        return;
    };
    tokio::spawn(async move {
        if !drain.bound.is_zero() {
            let started = std::time::Instant::now();
            let drained = match &drain.lb {
                Some(lb) => lb.wait(&id, drain.bound).await,
                None => {
                    tokio::time::sleep(LB_DRAIN.min(drain.bound)).await;
                    true
                }
            };
            let waited_ms = started.elapsed().as_millis() as u64;
            tracing::info!(task = %id, waited_ms, drained, "load balancers drained before the kill");
        }
        let _held = guard.lock().await;
        if let Err(e) = driver.kill(&id).await {
            tracing::warn!(task = %id, error = %e, "kill failed");
        }
    });
}

#[cfg(test)]
mod launch_guard_tests {
    use super::spawn_holding;
    use std::sync::Arc;
    use tokio::sync::Mutex;

    #[tokio::test]
    async fn a_kill_that_asks_before_the_launch_first_runs_still_waits_for_it() {
        let guard = Arc::new(Mutex::new(()));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let o = order.clone();
        spawn_holding(&guard, async move {
            tokio::task::yield_now().await;
            o.lock().expect("order").push("launched");
        });
        // This test's own task goes on before the spawned launch is first
        // polled: a kill asking for the guard now must still come second.
        let _kill = guard.lock().await;
        order.lock().expect("order").push("killed");
        assert_eq!(*order.lock().expect("order"), vec!["launched", "killed"]);
    }
}
