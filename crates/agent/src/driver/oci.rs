//! The oci driver: images run by the built-in runtime. The agent side pulls
//! the image into the node's [`ImageStore`] (layers shared by digest),
//! merges the image's entrypoint, cmd, env, working dir and user with the
//! app's as Mesos does, and hands the prepared container to a per-task
//! `wharf executor`, which creates and starts it with libcontainer (see
//! `crate::container`), with its network (`crate::network`: the node's, or
//! the bridge's, made on first need) and a `resolv.conf` naming the node's
//! DNS server. Everything after the launch (kill with the grace
//! period, exit records, recovery after an agent restart) is the exec
//! driver's executor machinery, shared.

use super::{DriverError, ExecDriver, RecoveredTask, TaskEvent, TaskLaunch};
use crate::container::{container_argv, SANDBOX_MOUNT};
use crate::network::{ContainerNetwork, NodeNetwork, PortForward, Proto};
use crate::sandbox::{BindMount, LaunchSpec, OciLaunch, Timeline};
use image::ImageStore;
use model::{CommandSpec, TaskId};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

/// Whether this kernel can run the built-in runtime's containers (overlayfs
/// and, as root, namespaces).
pub fn supported() -> Result<(), String> {
    let fs = std::fs::read_to_string("/proc/filesystems").map_err(|e| format!("read /proc/filesystems: {e}"))?;
    if !fs.lines().any(|l| l.split_whitespace().last() == Some("overlay")) {
        return Err("the kernel has no overlayfs".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("the agent is not root (containers need namespaces and mounts)".into());
    }
    Ok(())
}

pub struct OciDriver {
    exec: ExecDriver,
    events: UnboundedSender<TaskEvent>,
    images: ImageStore,
    /// One directory per task: writable layer, root mount, runtime state.
    containers: PathBuf,
    /// The bridge, DNS server and domain containers are given.
    net: NodeNetwork,
    /// Whether the bridge and its node-wide rules were made (on first need).
    bridge_ready: tokio::sync::Mutex<bool>,
}

impl OciDriver {
    pub fn new(
        sandbox_root: PathBuf,
        containers: PathBuf,
        executor: Vec<OsString>,
        events: UnboundedSender<TaskEvent>,
        images: ImageStore,
        log: logfiles::LogLimits,
        net: NodeNetwork,
    ) -> OciDriver {
        OciDriver {
            exec: ExecDriver::for_containers(sandbox_root, executor, events.clone(), log),
            events,
            images,
            containers,
            net,
            bridge_ready: tokio::sync::Mutex::new(false),
        }
    }

    /// The container's network: `None` for the node's; for a bridge, each
    /// `portMappings` entry from its allocated host port to its container
    /// port (0: the host port, as Marathon does), per transport.
    fn network(&self, task: &TaskLaunch) -> Result<Option<ContainerNetwork>, DriverError> {
        let c = &task.container;
        match c.network {
            model::NetworkMode::Host => Ok(None),
            model::NetworkMode::Container => Err(DriverError::Launch {
                task_id: task.task_id.clone(),
                message: "named container networks (container mode) are not supported by the built-in runtime; \
                          use host or container/bridge"
                    .into(),
            }),
            model::NetworkMode::Bridge => {
                let mut ports = Vec::new();
                for (i, pm) in c.port_mappings.iter().enumerate() {
                    let host_port = task.host_ports.get(i).copied().unwrap_or(pm.host_port);
                    let container_port = if pm.container_port == 0 { host_port } else { pm.container_port };
                    for t in model::Transport::parse_list(&pm.protocol) {
                        let transport = match t {
                            model::Transport::Tcp => Proto::Tcp,
                            model::Transport::Udp => Proto::Udp,
                        };
                        ports.push(PortForward { transport, host_port, container_port });
                    }
                }
                Ok(Some(ContainerNetwork { bridge: self.net.bridge.clone(), ports, dns: self.net.dns }))
            }
        }
    }

    /// Makes the node's bridge and its rules once (again after a failure).
    async fn ensure_bridge(&self, task: &TaskId) -> Result<(), DriverError> {
        let mut ready = self.bridge_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let bridge = self.net.bridge.clone();
        let made = tokio::task::spawn_blocking(move || crate::network::ensure_bridge(&bridge))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match made {
            Ok(()) => {
                *ready = true;
                Ok(())
            }
            Err(e) => Err(DriverError::Launch { task_id: task.clone(), message: format!("bridge network: {e}") }),
        }
    }

    fn spec(&self, task: &TaskLaunch, image: &image::Image, timeline: Timeline) -> Result<LaunchSpec, DriverError> {
        let launch_err = |message: String| DriverError::Launch { task_id: task.task_id.clone(), message };
        let argv =
            container_argv(task.command.as_ref(), &image.config.entrypoint, &image.config.cmd).map_err(launch_err)?;
        // The image's env first; the task's over it, except the agent's own
        // PATH, which means nothing inside the image.
        let mut env: BTreeMap<String, String> = image
            .config
            .env
            .iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let image_path = env.get("PATH").cloned();
        env.extend(task.env.clone());
        env.insert(
            "PATH".into(),
            image_path.unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
        env.insert("MESOS_SANDBOX".into(), SANDBOX_MOUNT.into());
        let mut mounts = Vec::new();
        for v in &task.container.volumes {
            // Persistent and external volumes are not mounted (yet).
            let Some(host) = &v.host_path else { continue };
            let destination = if v.container_path.starts_with('/') {
                v.container_path.clone()
            } else {
                format!("{SANDBOX_MOUNT}/{}", v.container_path)
            };
            let source = PathBuf::from(host);
            if !source.exists() {
                // As Docker does: a missing host directory is created.
                std::fs::create_dir_all(&source)
                    .map_err(|e| launch_err(format!("volume {host}: cannot create it: {e}")))?;
            }
            mounts.push(BindMount { source, destination, read_only: v.mode == model::VolumeMode::Ro });
        }
        let layers = image
            .layers
            .iter()
            .map(|l| {
                self.images
                    .layer_dir(l)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| launch_err(format!("bad layer {l}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LaunchSpec {
            task_id: task.task_id.clone(),
            command: CommandSpec::Argv(argv),
            env,
            resources: task.resources,
            kill_grace: task.kill_grace,
            log: self.exec.log_limits(),
            // The image's user (below), not the exec driver's task user.
            user: None,
            oci: Some(OciLaunch {
                layers_root: self.images.root().join("layers"),
                layers,
                dir: self.container_dir(&task.task_id),
                user: image.config.user.clone(),
                cwd: image.config.working_dir.clone().unwrap_or_else(|| "/".into()),
                mounts,
                privileged: task.container.privileged,
                network: self.network(task)?,
                resolv_conf: Some(self.container_dir(&task.task_id).join("resolv.conf")),
            }),
            secrets_on_stdin: !task.secrets.is_empty(),
            timeline,
        })
    }

    fn container_dir(&self, id: &TaskId) -> PathBuf {
        self.containers.join(id.as_str())
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }
}

fn remove_container_dir(dir: &Path) -> Result<(), DriverError> {
    // The executor unmounted the root at the task's end; after a crash it
    // may still be mounted, and deleting through it would empty the layers.
    let rootfs = dir.join("rootfs");
    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    if is_mountpoint(&rootfs) {
        return Err(DriverError::Unsupported(format!("{} is still mounted", rootfs.display())));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(super::io_err(format!("remove {}", dir.display()))(e)),
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let target = p.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&*target))
}

#[async_trait::async_trait]
impl super::Driver for OciDriver {
    fn kind(&self) -> model::DriverKind {
        model::DriverKind::Oci
    }

    async fn launch(&self, task: TaskLaunch) -> Result<u32, DriverError> {
        let mut timeline = Timeline::default();
        timeline.mark("agent");
        let Some(reference) = task.container.image.clone() else {
            return Err(DriverError::Unsupported("the app's container has no image".into()));
        };
        if task.container.force_pull_image || self.images.get(&reference).is_none() {
            let at = crate::sandbox::now();
            let _ = self.events.send(TaskEvent::Starting { task_id: task.task_id.clone(), at });
        }
        let image = self
            .images
            .ensure(&reference, task.container.force_pull_image, task.registry_auth.as_ref())
            .await
            .map_err(|e| DriverError::Launch { task_id: task.task_id.clone(), message: e.to_string() })?;
        timeline.mark("image");
        let spec = self.spec(&task, &image, timeline)?;
        let bridge = spec.oci.as_ref().is_some_and(|o| o.network.is_some());
        if bridge {
            self.ensure_bridge(&task.task_id).await?;
        }
        let dir = self.container_dir(&task.task_id);
        std::fs::create_dir_all(&dir).map_err(super::io_err(format!("create {}", dir.display())))?;
        let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, self.net.resolv_conf(bridge, &node_resolv))
            .map_err(super::io_err(format!("write {}", resolv.display())))?;
        self.exec.launch_task(spec, &task.secrets, &task.artifacts).await
    }

    async fn kill(&self, id: &TaskId) -> Result<(), DriverError> {
        self.exec.kill(id).await
    }

    async fn recover(&self) -> Result<Vec<RecoveredTask>, DriverError> {
        // The first parse of an image reference compiles its grammar (a
        // large regex, 40-150 ms): done now, off the first launch's path.
        tokio::task::spawn_blocking(|| image::parse_reference("wharf/warm-up:1").is_ok());
        let found = self.exec.recover().await?;
        // Bridge networks of tasks whose executor died (veth, rules, address).
        let bridge = self.net.bridge.clone();
        let sweep = move || crate::network::sweep(&bridge, super::exec::live_executor_tasks);
        match tokio::task::spawn_blocking(sweep).await {
            Ok(swept) if !swept.is_empty() => {
                tracing::info!(count = swept.len(), "removed the bridge networks of tasks whose executor is gone")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping orphan bridge networks failed"),
        }
        Ok(found)
    }

    fn remove(&self, id: &TaskId) -> Result<(), DriverError> {
        self.exec.remove_sandbox(id)?;
        remove_container_dir(&self.container_dir(id))
    }
}
