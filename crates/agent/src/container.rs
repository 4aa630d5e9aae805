//! The built-in container runtime, as the executor uses it: the root
//! filesystem (an overlayfs of the image's layers and a writable layer per
//! task), the OCI runtime config (pid, mount, uts and ipc namespaces on the
//! host's network or in the namespace of its bridge network; the task's cgroup with its limits; a default seccomp
//! profile and Docker's default capability set unless privileged; the
//! sandbox at `/mnt/mesos/sandbox`; the app's volumes; the node's resolver),
//! and creating and starting the container with youki's `libcontainer`.
//!
//! Only the single-threaded executor calls this module: libcontainer forks
//! and clones, which is unsafe in a multi-threaded process (the agent).

use crate::sandbox::{BindMount, LaunchSpec, OciLaunch};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use model::CommandSpec;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Where the sandbox appears in the container (as under Mesos).
pub const SANDBOX_MOUNT: &str = "/mnt/mesos/sandbox";

/// Docker's default capabilities: what a container gets unless privileged.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability up to the kernel's `cap_last_cap` (CAP_CHECKPOINT_RESTORE, 40).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The default seccomp profile: everything allowed except the system calls
/// Docker's default profile withholds from containers without extra
/// capabilities (kernel modules, kexec, clocks, swap, mounts and
/// namespaces, tracing other processes, kernel keyring, BPF, perf...).
/// A deny list rather than Docker's allow list of ~350 calls: the same
/// protection against these calls, less to keep in step with new kernels.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "fsopen",
    "fsmount",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "_sysctl",
    "sysfs",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
];

/// Paths of the task's container directory.
pub struct ContainerDirs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub state: PathBuf,
}

impl ContainerDirs {
    pub fn new(dir: &Path) -> ContainerDirs {
        ContainerDirs {
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            bundle: dir.join("bundle"),
            state: dir.join("state"),
        }
    }
}

/// The container's final argv, Mesos's rule for images: the app's `cmd`
/// runs via `/bin/sh -c` instead of the image's entrypoint; the app's
/// `args` replace the image's cmd after its entrypoint; without either the
/// image's entrypoint and cmd run.
pub fn container_argv(
    command: Option<&CommandSpec>,
    entrypoint: &[String],
    image_cmd: &[String],
) -> Result<Vec<String>, String> {
    let argv: Vec<String> = match command {
        Some(CommandSpec::Shell(s)) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Some(CommandSpec::Argv(args)) => entrypoint.iter().chain(args).cloned().collect(),
        None => entrypoint.iter().chain(image_cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err("the image has no entrypoint or cmd and the app gives neither cmd nor args".into());
    }
    Ok(argv)
}

/// Mounts the overlay root filesystem of the container.
pub fn mount_rootfs(oci: &OciLaunch, dirs: &ContainerDirs) -> Result<(), String> {
    for d in [&dirs.upper, &dirs.work, &dirs.rootfs, &dirs.bundle] {
        std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    // overlayfs needs a lower dir; an image without layers gets an empty one.
    let empty = oci.dir.join("empty");
    let lowers: Vec<String> = if oci.layers.is_empty() {
        std::fs::create_dir_all(&empty).map_err(|e| format!("create {}: {e}", empty.display()))?;
        vec![empty.display().to_string()]
    } else {
        // Relative to the layers root (the cwd while mounting), so many
        // layers fit into the one page of mount options. Top layer first.
        oci.layers.iter().rev().cloned().collect()
    };
    let opts =
        format!("lowerdir={},upperdir={},workdir={}", lowers.join(":"), dirs.upper.display(), dirs.work.display());
    let back = std::env::current_dir().ok();
    std::env::set_current_dir(&oci.layers_root)
        .map_err(|e| format!("image layers at {}: {e}", oci.layers_root.display()))?;
    let r = mount(Some("overlay"), &dirs.rootfs, Some("overlay"), MsFlags::empty(), Some(opts.as_str()));
    if let Some(b) = back {
        let _ = std::env::set_current_dir(b);
    }
    r.map_err(|e| format!("mount the overlay root filesystem: {e}"))
}

/// Unmounts the root filesystem and forgets the runtime's state; the
/// writable layer stays (with the sandbox) until the task is removed.
pub fn cleanup(oci: &OciLaunch) {
    let dirs = ContainerDirs::new(&oci.dir);
    let _ = umount2(&dirs.rootfs, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&dirs.state);
}

/// uid, gid and supplementary gids of `user` (`name`, `uid`, `name:group`
/// or `uid:gid`), looked up in the image's `/etc/passwd` and `/etc/group`.
pub fn resolve_user(rootfs: &Path, user: Option<&str>) -> Result<(u32, u32), String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else { return Ok((0, 0)) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let entry = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.len() > 3 && f[0] == u);
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| format!("user {u:?} of the image is not in its /etc/passwd"))?,
    };
    let gid = match g {
        None => entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .ok_or_else(|| format!("group {g:?} of the image is not in its /etc/group"))?
            }
        },
    };
    Ok((uid, gid))
}

fn bind(source: &Path, destination: &str, read_only: bool) -> Value {
    let mut options = vec!["rbind", "nosuid", "nodev"];
    if read_only {
        options.push("ro");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

/// The OCI runtime config (`config.json`) of the container.
pub fn runtime_config(
    spec: &LaunchSpec,
    oci: &OciLaunch,
    sandbox: &Path,
    rootfs: &Path,
    (uid, gid): (u32, u32),
    resources: Value,
    (hostname, netns): (&str, Option<&Path>),
) -> Value {
    let argv: Vec<String> = match &spec.command {
        CommandSpec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        CommandSpec::Argv(v) => v.clone(),
    };
    let caps: &[&str] = if oci.privileged { ALL_CAPS } else { DEFAULT_CAPS };
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        bind(sandbox, SANDBOX_MOUNT, false),
    ];
    // The resolver the agent wrote (the node's DNS server, the cluster
    // domain in `search`), else the node's; the node's hosts file.
    match &oci.resolv_conf {
        Some(r) => mounts.push(bind(r, "/etc/resolv.conf", true)),
        None if Path::new("/etc/resolv.conf").exists() => {
            mounts.push(bind(Path::new("/etc/resolv.conf"), "/etc/resolv.conf", true))
        }
        None => {}
    }
    if Path::new("/etc/hosts").exists() {
        mounts.push(bind(Path::new("/etc/hosts"), "/etc/hosts", true));
    }
    mounts.extend(oci.mounts.iter().map(|m: &BindMount| bind(&m.source, &m.destination, m.read_only)));
    let mut namespaces =
        vec![json!({"type": "pid"}), json!({"type": "mount"}), json!({"type": "uts"}), json!({"type": "ipc"})];
    if let Some(ns) = netns {
        // The namespace the executor made for the bridge (else the node's network).
        namespaces.push(json!({"type": "network", "path": ns}));
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": crate::cgroup::cgroup_name(&spec.task_id),
        "resources": resources,
    });
    if !oci.privileged {
        linux["maskedPaths"] = json!([
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap"
        ]);
        linux["readonlyPaths"] = json!(["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]);
        linux["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}],
        });
    }
    json!({
        "ociVersion": "1.0.2",
        "root": {"path": rootfs, "readonly": false},
        "hostname": hostname,
        "mounts": mounts,
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid},
            "args": argv,
            "env": env,
            "cwd": oci.cwd,
            "noNewPrivileges": !oci.privileged,
            // No rlimits: the task inherits the node's, as exec tasks do.
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        },
        "linux": linux,
    })
}

/// Creates the container (its init waits, in the task's cgroup, until
/// [`start`]) and returns it with the init's pid. The caller has mounted
/// the root filesystem. `secret_vars` are variables of `spec.env` whose
/// value is secret: `config.json` keeps them only while the runtime reads it.
#[allow(clippy::too_many_arguments)]
pub fn create(
    spec: &LaunchSpec,
    secret_vars: &[&str],
    oci: &OciLaunch,
    sandbox: &Path,
    resources: Value,
    netns: Option<&Path>,
    (stdin, stdout, stderr): (std::fs::File, std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    timeline: &mut crate::sandbox::Timeline,
) -> Result<(Container, Pid), String> {
    let dirs = ContainerDirs::new(&oci.dir);
    let (uid, gid) = resolve_user(&dirs.rootfs, oci.user.as_deref())?;
    let hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
    let config = runtime_config(spec, oci, sandbox, &dirs.rootfs, (uid, gid), resources, (&hostname, netns));
    let data = serde_json::to_vec(&config).map_err(|e| format!("encode runtime config: {e}"))?;
    std::fs::write(dirs.bundle.join("config.json"), data).map_err(|e| format!("write runtime config: {e}"))?;
    std::fs::create_dir_all(&dirs.state).map_err(|e| format!("create {}: {e}", dirs.state.display()))?;
    timeline.mark("config");
    let built = ContainerBuilder::new(spec.task_id.to_string(), SyscallType::default())
        .with_root_path(&dirs.state)
        .map_err(|e| format!("runtime state dir: {e}"))
        .and_then(|b| {
            b.with_executor(DefaultExecutor {})
                .with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr)
                .as_init(&dirs.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(|e| format!("create container: {e}"))
        });
    if !secret_vars.is_empty() {
        // The runtime has read it (its own state keeps no environment): the
        // copy left on disk drops the secrets.
        let mut config = config;
        if let Some(Value::Array(env)) = config.pointer_mut("/process/env") {
            env.retain(|e| {
                let name = e.as_str().and_then(|s| s.split_once('=')).map(|(k, _)| k).unwrap_or_default();
                !secret_vars.contains(&name)
            });
        }
        let data = serde_json::to_vec(&config).map_err(|e| format!("encode runtime config: {e}"))?;
        std::fs::write(dirs.bundle.join("config.json"), data).map_err(|e| format!("write runtime config: {e}"))?;
    }
    let container = built?;
    let pid = container.pid().ok_or("the container has no init process")?;
    Ok((container, pid))
}

/// Lets the created container's init execute the task.
pub fn start(container: &mut Container) -> Result<(), String> {
    container.start().map_err(|e| format!("start container: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{Resources, TaskId};
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn argv_follows_mesos() {
        let ep = vec!["/bin/httpd".to_string()];
        let cmd = vec!["-f".to_string()];
        assert_eq!(container_argv(None, &ep, &cmd).expect("argv"), vec!["/bin/httpd", "-f"]);
        let args = CommandSpec::Argv(vec!["-p".into(), "80".into()]);
        assert_eq!(container_argv(Some(&args), &ep, &cmd).expect("argv"), vec!["/bin/httpd", "-p", "80"]);
        let sh = CommandSpec::Shell("echo hi".into());
        assert_eq!(container_argv(Some(&sh), &ep, &cmd).expect("argv"), vec!["/bin/sh", "-c", "echo hi"]);
        assert!(container_argv(None, &[], &[]).is_err());
    }

    #[test]
    fn the_config_is_a_valid_oci_runtime_spec() {
        let oci = OciLaunch {
            layers_root: "/l".into(),
            layers: vec!["a".into()],
            dir: "/c".into(),
            user: None,
            cwd: "/".into(),
            mounts: vec![BindMount { source: "/data".into(), destination: "/data".into(), read_only: true }],
            privileged: false,
            network: None,
            resolv_conf: None,
        };
        let spec = LaunchSpec {
            task_id: TaskId::new(&model::AppId::parse("/app").expect("app id"), uuid::Uuid::new_v4(), 1),
            command: CommandSpec::Argv(vec!["/bin/true".into()]),
            env: BTreeMap::from([("A".to_string(), "1".to_string())]),
            resources: Resources { cpus: 0.1, mem: 16.0, disk: 0.0, gpus: 0 },
            kill_grace: Duration::from_secs(1),
            log: Default::default(),
            user: None,
            oci: Some(oci.clone()),
            secrets_on_stdin: false,
            timeline: Default::default(),
        };
        let v = runtime_config(&spec, &oci, Path::new("/s"), Path::new("/c/rootfs"), (0, 0), json!({}), ("h", None));
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(v).expect("an OCI runtime spec");
        let ns: Vec<String> = parsed
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| n.typ().to_string())
            .collect();
        assert!(!ns.iter().any(|n| n.contains("net")), "host networking: {ns:?}");
        assert!(parsed
            .mounts()
            .as_ref()
            .is_some_and(|m| m.iter().any(|m| m.destination() == Path::new(SANDBOX_MOUNT))));
    }
}
