//! The Docker driver: runs Marathon `DOCKER` containers through the Docker
//! engine's API (`bollard`, version negotiated with the engine).
//!
//! Each container carries labels naming its task, its app and this agent's
//! sandbox root, so a restarted agent finds its own containers (and only
//! those, when several agents share one engine) and re-attaches without
//! killing anything. The engine keeps a container's output; the driver copies
//! it into the task's sandbox (`stdout`, `stderr`), rewriting the files from
//! the start whenever it attaches, so a restart neither loses nor repeats
//! lines. A container is removed only with its sandbox ([`Driver::remove`]).

use super::{io_err, Driver, DriverError, RecoveredTask, TaskEvent, TaskLaunch};
use crate::sandbox::{self, now, STDERR_FILE, STDOUT_FILE};
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use model::{CommandSpec, DriverKind, NetworkMode, TaskId, TaskState, VolumeMode};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// Labels on every container this driver makes.
const LABEL_TASK: &str = "wharf.task-id";
const LABEL_APP: &str = "wharf.app-id";
/// The agent's sandbox root: tells this agent's containers from another's.
const LABEL_ROOT: &str = "wharf.sandbox-root";
/// Where the sandbox appears inside the container (as Mesos mounts it).
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";
/// The driver's record in the sandbox (also tells its sandboxes from exec's).
const RECORD_FILE: &str = "docker.json";
/// How long to wait for the engine to answer at start.
/// An engine busy starting many containers can take seconds to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `docker.json`: what `kill` and `recover` need after an agent restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    container: String,
    kill_grace_ms: u64,
    /// The memory limit, for the OOM message.
    #[serde(default)]
    mem_mb: f64,
    /// Set when a kill was asked for: the exit is then `Killed`.
    #[serde(default)]
    killing: bool,
}

struct Inner {
    docker: Docker,
    root: PathBuf,
    events: UnboundedSender<TaskEvent>,
    /// Rotation of the sandbox's copies of the output.
    log: logfiles::LogLimits,
    /// Tasks whose container is being watched.
    watching: Mutex<HashMap<TaskId, tokio::task::AbortHandle>>,
    /// Brings a task's artifacts into its sandbox before the container starts.
    fetcher: crate::artifacts::Fetcher,
    /// The node's Docker `config.json` (`--registry-config`): credentials
    /// for pulls an app's `pullConfig` has none for, as the oci driver.
    registry_config: Option<PathBuf>,
}

impl Inner {
    fn watching(&self) -> MutexGuard<'_, HashMap<TaskId, tokio::task::AbortHandle>> {
        self.watching.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct DockerDriver {
    inner: Arc<Inner>,
}

impl Drop for DockerDriver {
    fn drop(&mut self) {
        for (_, h) in self.inner.watching().drain() {
            h.abort();
        }
    }
}

fn docker_err(context: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DriverError {
    let context = context.into();
    move |source| DriverError::Docker { context, source }
}

/// The engine's own words for an error (its message, without bollard's wrapping).
fn engine_reason(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Connects to the local engine (`DOCKER_HOST` or the default socket),
/// negotiates the API version (the engine may be older than bollard) and
/// checks that the engine answers. A node whose engine fails this does not
/// offer the `docker` driver.
pub async fn connect_engine() -> Result<Docker, DriverError> {
    // Once more after a moment: a loaded engine may drop the first call.
    match try_connect_engine().await {
        Ok(d) => Ok(d),
        Err(e) => {
            tracing::debug!(error = %e, "the docker engine did not answer; asking once more");
            tokio::time::sleep(Duration::from_millis(500)).await;
            try_connect_engine().await
        }
    }
}

async fn try_connect_engine() -> Result<Docker, DriverError> {
    let silent = || DriverError::Unsupported("the docker engine did not answer".into());
    let docker = Docker::connect_with_local_defaults().map_err(docker_err("connect"))?;
    let docker = tokio::time::timeout(PROBE_TIMEOUT, docker.negotiate_version())
        .await
        .map_err(|_| silent())?
        .map_err(docker_err("negotiate the API version"))?;
    tokio::time::timeout(PROBE_TIMEOUT, docker.ping()).await.map_err(|_| silent())?.map_err(docker_err("ping"))?;
    Ok(docker)
}

/// The image the tests and `wharf bench containers` run: `FROM scratch`
/// with the static `/bin/busybox` (Debian's busybox-static) as `/bin/busybox`
/// and `/bin/sh`. Needs no network.
pub const BUSYBOX_IMAGE: &str = "wharf-test/busybox:1";

/// Builds [`BUSYBOX_IMAGE`] with `docker build` from `/bin/busybox`.
pub fn build_busybox_image() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("wharf-busybox-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let built = (|| {
        std::fs::copy("/bin/busybox", dir.join("busybox"))
            .map_err(|e| format!("copy /bin/busybox (install Debian's busybox-static): {e}"))?;
        std::fs::write(
            dir.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY busybox /bin/sh\nENV PATH=/bin\n",
        )
        .map_err(|e| format!("write the Dockerfile: {e}"))?;
        let out = std::process::Command::new("docker")
            .args(["build", "-q", "-t", BUSYBOX_IMAGE])
            .arg(&dir)
            .output()
            .map_err(|e| format!("run docker build: {e}"))?;
        if !out.status.success() {
            return Err(format!("docker build: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    built
}

fn container_name(id: &TaskId) -> String {
    format!("wharf-{}", id.as_str())
}

impl DockerDriver {
    /// Connects to the local engine (see [`connect_engine`]).
    pub async fn connect(root: PathBuf, events: UnboundedSender<TaskEvent>) -> Result<DockerDriver, DriverError> {
        DockerDriver::connect_with_log_limits(root, events, logfiles::LogLimits::default()).await
    }

    /// As `connect`, with the sandbox's copies of the output rotated by `log`.
    pub async fn connect_with_log_limits(
        root: PathBuf,
        events: UnboundedSender<TaskEvent>,
        log: logfiles::LogLimits,
    ) -> Result<DockerDriver, DriverError> {
        let docker = connect_engine().await?;
        let fetcher = crate::artifacts::Fetcher::default();
        let watching = Mutex::new(HashMap::new());
        let inner = Inner { docker, root, events, log, watching, fetcher, registry_config: None };
        Ok(DockerDriver { inner: Arc::new(inner) })
    }

    /// Pulls use the node's registry file (Docker's `config.json` format)
    /// for registries the app's `pullConfig` names no credentials for.
    pub fn with_registry_config(mut self, path: Option<PathBuf>) -> DockerDriver {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.registry_config = path;
        }
        self
    }

    fn sandbox_dir(&self, id: &TaskId) -> PathBuf {
        self.inner.root.join(id.as_str())
    }

    /// Pulls the image unless it is present (always with `forcePullImage`),
    /// with the registry's credentials from the app's `pullConfig` or the
    /// node's file (the engine reads no client's `config.json` itself).
    async fn ensure_image(
        &self,
        reference: &str,
        force: bool,
        auth: Option<&image::RegistryConfig>,
    ) -> Result<(), String> {
        if !force && self.inner.docker.inspect_image(reference).await.is_ok() {
            return Ok(());
        }
        let (registry, credentials) = image::pull_credentials(reference, auth, self.inner.registry_config.as_deref())
            .map_err(|e| format!("pulling image {reference} failed: {e}"))?;
        let credentials = credentials.map(|c| DockerCredentials {
            username: Some(c.username),
            password: Some(c.password),
            serveraddress: Some(server_address(&registry)),
            ..Default::default()
        });
        let opts = CreateImageOptions { from_image: Some(reference.to_string()), ..Default::default() };
        let mut pull = self.inner.docker.create_image(Some(opts), None, credentials);
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                return Err(format!("pulling image {reference} failed: {}", engine_reason(&e)));
            }
        }
        Ok(())
    }

    fn create_body(&self, task: &TaskLaunch, dir: &std::path::Path) -> Result<ContainerCreateBody, String> {
        let c = &task.container;
        let image = c.image.clone().ok_or("a DOCKER container needs docker.image")?;
        let mut env = task.env.clone();
        env.insert("MESOS_SANDBOX".into(), CONTAINER_SANDBOX.into());
        // The engine keeps a container's environment in its own config
        // (outside Wharf's data directory): there is no other way in.
        for (k, v) in &task.secrets.env {
            env.insert(k.clone(), v.clone());
        }
        let (mut entrypoint, mut cmd) = match &task.command {
            // As Mesos's docker containerizer: a shell command replaces the
            // entrypoint; args are given to the image's entrypoint.
            Some(CommandSpec::Shell(s)) => (Some(vec!["/bin/sh".to_string(), "-c".to_string()]), Some(vec![s.clone()])),
            Some(CommandSpec::Argv(a)) if !a.is_empty() => (None, Some(a.clone())),
            _ => (None, None),
        };
        let mut binds = vec![format!("{}:{CONTAINER_SANDBOX}", dir.display())];
        for v in &c.volumes {
            let Some(host) = &v.host_path else {
                return Err(format!("volume {}: only host volumes (hostPath) are supported", v.container_path));
            };
            let target = if v.container_path.starts_with('/') {
                v.container_path.clone()
            } else {
                format!("{CONTAINER_SANDBOX}/{}", v.container_path)
            };
            let mode = if v.mode == VolumeMode::Ro { "ro" } else { "rw" };
            binds.push(format!("{host}:{target}:{mode}"));
        }
        let mut labels = HashMap::from([
            (LABEL_TASK.to_string(), task.task_id.as_str().to_string()),
            (LABEL_APP.to_string(), task.task_id.app_id().to_string()),
            (LABEL_ROOT.to_string(), self.inner.root.display().to_string()),
        ]);
        let mut host_config = HostConfig {
            binds: Some(binds),
            privileged: Some(c.privileged),
            // Mesos gives a container its cpu share and a hard memory limit
            // without swap.
            cpu_shares: Some((task.resources.cpus * 1024.0).round().max(2.0) as i64),
            memory: Some((task.resources.mem * 1024.0 * 1024.0) as i64),
            memory_swap: Some((task.resources.mem * 1024.0 * 1024.0) as i64),
            ..Default::default()
        };
        let mut exposed = Vec::new();
        match c.network {
            NetworkMode::Host => host_config.network_mode = Some("host".into()),
            NetworkMode::Bridge => {
                host_config.network_mode = Some("bridge".into());
                let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
                for (i, pm) in c.port_mappings.iter().enumerate() {
                    let host = task.host_ports.get(i).copied().unwrap_or(pm.host_port);
                    let inside = if pm.container_port == 0 { host } else { pm.container_port };
                    for proto in pm.protocol.split(',') {
                        let key = format!("{inside}/{proto}");
                        exposed.push(key.clone());
                        bindings
                            .entry(key)
                            .or_insert_with(|| Some(Vec::new()))
                            .get_or_insert_with(Vec::new)
                            .push(PortBinding { host_ip: None, host_port: Some(host.to_string()) });
                    }
                }
                host_config.port_bindings = Some(bindings);
            }
            NetworkMode::Container => return Err("named container networks are not supported yet".into()),
        }
        let mut hostname = None;
        let mut user = None;
        let mut workdir = None;
        for (k, v) in &c.parameters {
            match k.as_str() {
                "label" => {
                    let (lk, lv) = v.split_once('=').unwrap_or((v.as_str(), ""));
                    labels.insert(lk.to_string(), lv.to_string());
                }
                "env" | "e" => {
                    let (ek, ev) = v.split_once('=').unwrap_or((v.as_str(), ""));
                    env.insert(ek.to_string(), ev.to_string());
                }
                "hostname" | "h" => hostname = Some(v.clone()),
                "user" | "u" => user = Some(v.clone()),
                "workdir" | "w" => workdir = Some(v.clone()),
                "entrypoint" => {
                    entrypoint = Some(vec![v.clone()]);
                    if matches!(task.command, Some(CommandSpec::Shell(_))) {
                        cmd = None;
                    }
                }
                "init" => host_config.init = Some(v != "false"),
                other => return Err(format!("docker parameter '{other}' is not supported")),
            }
        }
        Ok(ContainerCreateBody {
            image: Some(image),
            entrypoint,
            cmd,
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            hostname,
            user,
            working_dir: workdir,
            exposed_ports: if exposed.is_empty() { None } else { Some(exposed) },
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Creates and starts the container; returns its init's pid and, on a
    /// bridge or user network, its address there.
    async fn start(&self, task: &TaskLaunch, dir: &std::path::Path) -> Result<(u32, Option<IpAddr>), String> {
        let c = &task.container;
        let image = c.image.as_deref().ok_or("a DOCKER container needs docker.image")?;
        let body = self.create_body(task, dir)?;
        self.ensure_image(image, c.force_pull_image, task.registry_auth.as_ref()).await?;
        let name = container_name(&task.task_id);
        let opts = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let docker = &self.inner.docker;
        docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| format!("creating the container failed: {}", engine_reason(&e)))?;
        if let Err(e) = docker.start_container(&name, None).await {
            let _ = force_remove(docker, &name).await;
            return Err(format!("starting the container failed: {}", engine_reason(&e)));
        }
        let info = docker.inspect_container(&name, None).await.map_err(|e| engine_reason(&e))?;
        let ip = container_ip(&info);
        Ok((info.state.and_then(|s| s.pid).and_then(|p| u32::try_from(p).ok()).unwrap_or(0), ip))
    }
}

/// The address the engine gave the container on its first network that
/// has one (bridge or a user network; none with host networking).
fn container_ip(info: &bollard::models::ContainerInspectResponse) -> Option<IpAddr> {
    let networks = info.network_settings.as_ref()?.networks.as_ref()?;
    // The engine lists networks in a map: by name, so the choice is stable.
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    names.into_iter().find_map(|n| networks[n].ip_address.as_deref().and_then(|a| a.parse().ok()))
}

/// What the engine expects as a registry's `serveraddress`: Docker Hub's
/// v1 URL (as `docker login` writes it), else `host[:port]`.
fn server_address(registry: &str) -> String {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/".to_string(),
        other => other.to_string(),
    }
}

async fn force_remove(docker: &Docker, name: &str) -> Result<(), bollard::errors::Error> {
    let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
    match docker.remove_container(name, Some(opts)).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        r => r,
    }
}

/// Copies the container's output into the sandbox, waits for its end and
/// reports it. Runs until the container exits (or the driver is dropped).
fn watch(inner: &Arc<Inner>, id: TaskId, name: String) {
    let mut watching = inner.watching();
    let i = inner.clone();
    let task_id = id.clone();
    let h = tokio::spawn(async move {
        let dir = i.root.join(task_id.as_str());
        let logs = copy_logs(i.docker.clone(), name.clone(), dir.clone(), i.log);
        let wait = async {
            let mut w = i.docker.wait_container(&name, None::<WaitContainerOptions>);
            // The stream ends with the exit; a non-zero code comes as an error.
            while let Some(r) = w.next().await {
                if r.is_err() {
                    break;
                }
            }
        };
        let (_, ()) = tokio::join!(logs, wait);
        let (state, message) = exit_of(&i.docker, &name, &dir).await;
        i.watching().remove(&task_id);
        let _ = i.events.send(TaskEvent::Exited { task_id, state, message, at: now() });
    });
    if let Some(old) = watching.insert(id, h.abort_handle()) {
        old.abort();
    }
}

/// Every attach starts the sandbox's files over (rotated ones too) and
/// copies the engine's whole log again, rotating by `limits`.
async fn copy_logs(docker: Docker, name: String, dir: PathBuf, limits: logfiles::LogLimits) {
    let open = |f: &str| logfiles::RotatingWriter::create(&dir, f, limits);
    let (Ok(mut out), Ok(mut err)) = (open(STDOUT_FILE), open(STDERR_FILE)) else {
        tracing::warn!(container = %name, "cannot open the sandbox's log files");
        return;
    };
    let opts = LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
    let mut logs = docker.logs(&name, Some(opts));
    while let Some(chunk) = logs.next().await {
        let r = match chunk {
            Ok(bollard::container::LogOutput::StdErr { message }) => err.write_all(&message),
            Ok(bollard::container::LogOutput::StdOut { message })
            | Ok(bollard::container::LogOutput::Console { message }) => out.write_all(&message),
            Ok(_) => Ok(()),
            Err(_) => break,
        };
        if let Err(e) = r {
            tracing::warn!(container = %name, error = %e, "copying container output failed");
            break;
        }
    }
}

/// How an exited container ended, in task terms (worded as the exec
/// driver's executor words it).
async fn exit_of(docker: &Docker, name: &str, dir: &std::path::Path) -> (TaskState, String) {
    let record = sandbox::read_json::<Record>(dir, RECORD_FILE).ok();
    let killing = record.as_ref().is_some_and(|r| r.killing);
    let state = match docker.inspect_container(name, None).await {
        Ok(info) => info.state,
        Err(e) => return (TaskState::Failed, format!("container vanished: {}", engine_reason(&e))),
    };
    let st = state.unwrap_or_default();
    let code = st.exit_code.unwrap_or(-1);
    if st.oom_killed == Some(true) {
        let mem = record.map_or(0.0, |r| r.mem_mb);
        return (
            TaskState::Failed,
            format!("Memory limit exceeded: Requested: {mem}MB (the container was OOM-killed)"),
        );
    }
    // Docker reports death by signal N as status 128 + N, as a shell does.
    let how = match code {
        c if c > 128 && c < 128 + 65 => format!("killed by signal {}", c - 128),
        c => format!("exited with status {c}"),
    };
    if killing {
        return (TaskState::Killed, format!("killed on request; {how}"));
    }
    match (code, st.error.filter(|e| !e.is_empty())) {
        (0, _) => (TaskState::Finished, how),
        (_, Some(e)) => (TaskState::Failed, format!("{how}: {e}")),
        (_, None) => (TaskState::Failed, how),
    }
}

#[async_trait::async_trait]
impl Driver for DockerDriver {
    fn kind(&self) -> DriverKind {
        DriverKind::Docker
    }

    async fn launch(&self, task: TaskLaunch) -> Result<u32, DriverError> {
        let id = task.task_id.clone();
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&self.inner.root).map_err(io_err(format!("create {}", self.inner.root.display())))?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(DriverError::AlreadyExists(id)),
            Err(e) => return Err(io_err(format!("create {}", dir.display()))(e)),
        }
        let record = Record {
            container: container_name(&id),
            kill_grace_ms: task.kill_grace.as_millis() as u64,
            mem_mb: task.resources.mem,
            killing: false,
        };
        sandbox::write_json(&dir, RECORD_FILE, &record).map_err(io_err("write the container record"))?;
        let user = task.container.parameters.iter().rev().find(|(k, _)| k == "user").map(|(_, v)| v.as_str());
        if let Err(message) = crate::secrets::write_files(&dir, &task.secrets.files, crate::secrets::numeric_user(user))
        {
            return Err(DriverError::Launch { task_id: id, message });
        }
        // The sandbox is the container's /mnt/mesos/sandbox: artifacts
        // fetched here are there (readable by all; the container's user is
        // the image's).
        if !task.artifacts.is_empty() {
            let _ = self.inner.events.send(TaskEvent::Starting { task_id: id.clone(), at: now() });
        }
        if let Err(e) = self.inner.fetcher.fetch_all(&dir, &task.artifacts, None).await {
            let message = e.to_string();
            let _ = std::fs::write(dir.join(STDERR_FILE), format!("{message}\n"));
            return Err(DriverError::Launch { task_id: id, message });
        }
        match self.start(&task, &dir).await {
            Ok((pid, ip)) => {
                let _ = self.inner.events.send(TaskEvent::Running { task_id: id.clone(), pid, at: now(), ip });
                watch(&self.inner, id, record.container);
                Ok(pid)
            }
            Err(message) => {
                // The reason goes where `wharf logs` looks, too.
                if let Ok(mut f) = std::fs::File::create(dir.join(STDERR_FILE)) {
                    let _ = writeln!(f, "{message}");
                }
                Err(DriverError::Launch { task_id: id, message })
            }
        }
    }

    async fn kill(&self, id: &TaskId) -> Result<(), DriverError> {
        let dir = self.sandbox_dir(id);
        let Ok(mut record) = sandbox::read_json::<Record>(&dir, RECORD_FILE) else {
            return Ok(());
        };
        record.killing = true;
        sandbox::write_json(&dir, RECORD_FILE, &record).map_err(io_err("write the container record"))?;
        let t = i32::try_from(record.kill_grace_ms.div_ceil(1000)).unwrap_or(i32::MAX);
        let opts = StopContainerOptions { t: Some(t), ..Default::default() };
        match self.inner.docker.stop_container(&record.container, Some(opts)).await {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: already gone.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(()),
            Err(e) => Err(docker_err(format!("stop {}", record.container))(e)),
        }
    }

    async fn recover(&self) -> Result<Vec<RecoveredTask>, DriverError> {
        let filters =
            HashMap::from([("label".to_string(), vec![format!("{LABEL_ROOT}={}", self.inner.root.display())])]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self.inner.docker.list_containers(Some(opts)).await.map_err(docker_err("list containers"))?;
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for c in list {
            let Some(id) = c.labels.as_ref().and_then(|l| l.get(LABEL_TASK)).and_then(|t| TaskId::parse(t).ok()) else {
                continue;
            };
            seen.insert(id.clone());
            let name = container_name(&id);
            let dir = self.sandbox_dir(&id);
            let st = match self.inner.docker.inspect_container(&name, None).await {
                Ok(info) => info.state.unwrap_or_default(),
                Err(_) => continue,
            };
            if st.running == Some(true) {
                let pid = st.pid.and_then(|p| u32::try_from(p).ok());
                if !self.inner.watching().contains_key(&id) {
                    watch(&self.inner, id.clone(), name);
                }
                found.push(RecoveredTask {
                    task_id: id,
                    state: TaskState::Running,
                    pid,
                    started_at: None,
                    message: None,
                });
            } else {
                let (state, message) = exit_of(&self.inner.docker, &name, &dir).await;
                found.push(RecoveredTask { task_id: id, state, pid: None, started_at: None, message: Some(message) });
            }
        }
        // Sandboxes of this driver whose container is gone.
        if let Ok(entries) = std::fs::read_dir(&self.inner.root) {
            for e in entries.flatten() {
                let Some(id) = e.file_name().to_str().and_then(|n| TaskId::parse(n).ok()) else { continue };
                if seen.contains(&id) || !e.path().join(RECORD_FILE).exists() {
                    continue;
                }
                found.push(RecoveredTask {
                    task_id: id,
                    state: TaskState::Failed,
                    pid: None,
                    started_at: None,
                    message: Some("the container is gone".into()),
                });
            }
        }
        Ok(found)
    }

    fn remove(&self, id: &TaskId) -> Result<(), DriverError> {
        if self.inner.watching().contains_key(id) {
            return Err(DriverError::StillRunning(id.clone()));
        }
        let (docker, name) = (self.inner.docker.clone(), container_name(id));
        tokio::spawn(async move {
            if let Err(e) = force_remove(&docker, &name).await {
                tracing::warn!(container = %name, error = %e, "could not remove a finished container");
            }
        });
        let dir = self.sandbox_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("remove {}", dir.display()))(e)),
        }
    }
}
