//! The task's cgroup: creation with the task's limits (memory, cpu shares and
//! quota), the race-free hand-over of the task into it, OOM detection, killing
//! everything left inside, and removal.
//!
//! Built on youki's `libcgroups`, which detects pure v1, pure v2 and hybrid
//! hosts (on hybrid hosts the controllers live on the v1 hierarchies, so the v1
//! manager is used). The cgroup is `/wharf/<task_id>` below the root of every
//! hierarchy. Only the few files `libcgroups` does not cover (OOM counters) are
//! read here directly, and the `/wharf` directories are listed here to find
//! cgroups left behind by dead executors ([`task_cgroups`]).

use libcgroups::common::{self, AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, ControllerOpt};
use model::{Resources, TaskId};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// CFS period used for the cpu quota (the kernel default).
const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot detect the host's cgroup setup: {0}")]
    Setup(String),
    #[error("cgroup {path}: {message}")]
    Manager { path: String, message: String },
    #[error("invalid cgroup resources: {0}")]
    Resources(String),
}

/// The parent of every task cgroup, below each hierarchy's root.
const WHARF_PARENT: &str = "wharf";

/// The cgroup name of a task, relative to each hierarchy's root.
pub fn cgroup_name(id: &TaskId) -> PathBuf {
    PathBuf::from(format!("/{WHARF_PARENT}/{}", id.as_str()))
}

/// Every task whose cgroup (`/wharf/<task-id>`) exists on this host, in any
/// hierarchy, whichever agent made it. Directories whose name is not a task
/// id are not Wharf's and are ignored.
pub fn task_cgroups() -> Result<BTreeSet<TaskId>, CgroupError> {
    let roots = match setup()? {
        CgroupSetup::Unified => vec![PathBuf::from(CGROUP_ROOT)],
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            libcgroups::v1::util::list_subsystem_mount_points().map_err(|e| CgroupError::Setup(e.to_string()))?
        }
    };
    let mut ids = BTreeSet::new();
    for root in roots {
        // A hierarchy without `/wharf` has never held a task.
        let Ok(entries) = std::fs::read_dir(root.join(WHARF_PARENT)) else { continue };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(id) = entry.file_name().to_str().and_then(|n| TaskId::parse(n).ok()) {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Turns on the kernel's `favordynmods` (a cgroup2 mount option that, on
/// the kernels that have it, switches the lock every hierarchy's task
/// migration takes, v1 ones included). Without it each container start
/// waits for an RCU grace period when its first process joins its cgroup
/// (10-20 ms on an idle host, hundreds of ms under load: the stalls of the
/// built-in runtime's p99); with it that costs well under a millisecond,
/// and forks and exits a little more. Host-wide and, from Linux 6.18, not
/// undone before a reboot: only with `wharf agent --cgroup-favordynmods`.
/// Returns whether this call turned it on (`false`: it already was).
pub fn favor_dynamic_modifications() -> Result<bool, CgroupError> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| CgroupError::Setup(format!("read /proc/self/mountinfo: {e}")))?;
    let Some((point, favored)) = cgroup2_mount(&mounts) else {
        return Err(CgroupError::Setup("no cgroup2 hierarchy is mounted (favordynmods is set on one)".into()));
    };
    if favored {
        return Ok(false);
    }
    // mount(8) keeps the mount's other options (a bare remount would drop
    // them, nsdelegate and the memory options included).
    let out = std::process::Command::new("mount")
        .args(["-o", "remount,favordynmods", &point])
        .output()
        .map_err(|e| CgroupError::Setup(format!("running mount: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(CgroupError::Setup(format!("remount {point} with favordynmods: {why}")));
    }
    Ok(true)
}

/// The first cgroup2 mount point in a mount table (`/proc/self/mountinfo`)
/// and whether it has `favordynmods`.
fn cgroup2_mount(mountinfo: &str) -> Option<(String, bool)> {
    // `ID PARENT DEV ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER-OPTS`
    mountinfo.lines().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        let mut tail = tail.split(' ');
        if tail.next()? != "cgroup2" {
            return None;
        }
        let favored = tail.nth(1).is_some_and(|o| o.split(',').any(|o| o == "favordynmods"));
        Some((head.split(' ').nth(4)?.to_string(), favored))
    })
}

fn setup() -> Result<CgroupSetup, CgroupError> {
    common::get_cgroup_setup().map_err(|e| CgroupError::Setup(e.to_string()))
}

fn manager(path: &Path) -> Result<AnyCgroupManager, CgroupError> {
    common::create_cgroup_manager(CgroupConfig {
        cgroup_path: path.to_path_buf(),
        systemd_cgroup: false,
        container_name: String::new(),
    })
    .map_err(|e| CgroupError::Manager { path: path.display().to_string(), message: e.to_string() })
}

fn merr(path: &Path, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Manager { path: path.display().to_string(), message: e.to_string() }
}

/// One task's cgroup.
pub struct TaskCgroup {
    name: PathBuf,
    /// Made on first use: making it reads the mount table once per
    /// hierarchy, which a container's start need not wait for (the runtime
    /// makes its own).
    mgr: std::cell::OnceCell<AnyCgroupManager>,
    /// Directory holding the memory controller's files (for OOM counters).
    memory_dir: Option<PathBuf>,
    unified: bool,
}

impl TaskCgroup {
    /// A handle on the task's cgroup; creates nothing yet (and reads
    /// nothing of the hierarchies but where the memory controller is).
    pub fn open(id: &TaskId) -> Result<TaskCgroup, CgroupError> {
        let name = cgroup_name(id);
        let rel = name.strip_prefix("/").unwrap_or(&name).to_path_buf();
        let (unified, memory_dir) = match setup()? {
            CgroupSetup::Unified => (true, Some(Path::new(CGROUP_ROOT).join(&rel))),
            CgroupSetup::Legacy | CgroupSetup::Hybrid => (
                false,
                libcgroups::v1::util::get_subsystem_mount_point(&libcgroups::v1::ControllerType::Memory)
                    .ok()
                    .map(|m| m.join(&rel)),
            ),
        };
        Ok(TaskCgroup { mgr: std::cell::OnceCell::new(), name, memory_dir, unified })
    }

    fn mgr(&self) -> Result<&AnyCgroupManager, CgroupError> {
        if let Some(m) = self.mgr.get() {
            return Ok(m);
        }
        let m = manager(&self.name)?;
        Ok(self.mgr.get_or_init(|| m))
    }

    /// Creates the cgroup, moves `pid` into it and applies the limits. The
    /// caller keeps `pid` from running user code until this returns.
    pub fn create_with(&self, pid: Pid, res: &Resources) -> Result<(), CgroupError> {
        self.mgr()?.add_task(pid).map_err(|e| merr(&self.name, e))?;
        self.apply(&self.linux_resources(res)?)
    }

    /// Applies the task's cpu quota to the existing cgroup (the built-in
    /// runtime's containers get it once started; see the executor).
    pub fn apply_cpu_quota(&self, res: &Resources) -> Result<(), CgroupError> {
        let mut resources = self.linux_resources(res)?;
        // Only the cpu settings: the rest is in place, and the v1 manager
        // would re-add the default device rules for nothing.
        resources.set_memory(None);
        self.apply(&resources)
    }

    fn apply(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
        self.mgr()?
            .apply(&ControllerOpt { resources, disable_oom_killer: false, oom_score_adj: None, freezer_state: None })
            .map_err(|e| merr(&self.name, e))
    }

    /// The task's limits as OCI resources.
    pub fn linux_resources(&self, res: &Resources) -> Result<oci_spec::runtime::LinuxResources, CgroupError> {
        let rerr = |e: oci_spec::OciSpecError| CgroupError::Resources(e.to_string());
        let mut b = LinuxResourcesBuilder::default();
        if res.mem > 0.0 {
            let limit = (res.mem * 1024.0 * 1024.0) as i64;
            let mut m = LinuxMemoryBuilder::default().limit(limit);
            // Memory+swap equal to the limit, so the limit really kills
            // instead of pushing the task into swap. Only where the kernel
            // accounts swap (v1: memsw files; v2: memory.swap.max).
            let swap_file = if self.unified { "memory.swap.max" } else { "memory.memsw.limit_in_bytes" };
            if self.memory_dir.as_ref().is_some_and(|d| d.join(swap_file).exists()) {
                m = m.swap(limit);
            }
            b = b.memory(m.build().map_err(rerr)?);
        }
        if res.cpus > 0.0 {
            let shares = ((res.cpus * 1024.0) as u64).max(2);
            let quota = ((res.cpus * CFS_PERIOD_US as f64) as i64).max(1000);
            let cpu =
                LinuxCpuBuilder::default().shares(shares).quota(quota).period(CFS_PERIOD_US).build().map_err(rerr)?;
            b = b.cpu(cpu);
        }
        b.build().map_err(rerr)
    }

    /// Whether the kernel OOM-killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = &self.memory_dir else {
            return false;
        };
        if self.unified {
            return counter(&dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0);
        }
        match counter(&dir.join("memory.oom_control"), "oom_kill") {
            Some(n) => n > 0,
            // Kernels before 4.13 have no oom_kill counter: a failed charge
            // against the limit is the best evidence there is.
            None => {
                ["memory.memsw.failcnt", "memory.failcnt"].iter().any(|f| read_u64(&dir.join(f)).is_some_and(|n| n > 0))
            }
        }
    }

    /// Peak memory use in bytes, where the kernel reports it.
    pub fn max_usage(&self) -> Option<u64> {
        let dir = self.memory_dir.as_ref()?;
        let file = if self.unified { "memory.peak" } else { "memory.max_usage_in_bytes" };
        read_u64(&dir.join(file))
    }

    /// Pids currently in the cgroup (empty if it does not exist).
    pub fn pids(&self) -> Vec<Pid> {
        self.mgr().ok().and_then(|m| m.get_all_pids().ok()).unwrap_or_default()
    }

    /// SIGKILLs everything in the cgroup until it is empty (or `timeout`
    /// passes), calling `reap` between sweeps so the caller can collect the
    /// zombies it is parent of. Returns whether the cgroup is empty.
    pub fn kill_all(&self, timeout: Duration, mut reap: impl FnMut()) -> bool {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return true;
            }
            for p in pids {
                let _ = kill(p, Signal::SIGKILL);
            }
            reap();
            if Instant::now() >= deadline {
                return self.pids().is_empty();
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Kills what is left and deletes the cgroup directories.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.mgr()?.remove().map_err(|e| merr(&self.name, e))
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `key N` line of a flat-keyed cgroup file.
fn counter(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::cgroup2_mount;

    #[test]
    fn finds_the_cgroup2_mount_and_its_favordynmods() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(hybrid), Some(("/sys/fs/cgroup/unified".to_string(), false)));
        let v2 = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,favordynmods\n";
        assert_eq!(cgroup2_mount(v2), Some(("/sys/fs/cgroup".to_string(), true)));
        assert_eq!(cgroup2_mount("30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"), None);
    }
}
