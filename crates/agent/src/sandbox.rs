//! The per-task sandbox directory and the files in it that the agent and the
//! executor share: `spec.json` (written by the agent, read by the executor),
//! `state.json` (written atomically by the executor, read by the agent, also
//! after an agent restart), `stdout`/`stderr` (the task's output, rotated by
//! size into `stdout.1`, ... by the `logfiles` crate) and
//! `executor.log` (the executor's own diagnostics). Also the one-line messages
//! the executor sends to the agent on its stdout pipe.

use model::{CommandSpec, Resources, TaskId, TaskState, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SPEC_FILE: &str = "spec.json";
pub const STATE_FILE: &str = "state.json";
pub const STDOUT_FILE: &str = "stdout";
pub const STDERR_FILE: &str = "stderr";
pub const EXECUTOR_LOG: &str = "executor.log";

/// What to run, as the agent hands it to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub task_id: TaskId,
    /// `Shell(s)` runs `/bin/sh -c s`; `Argv(v)` executes `v` directly.
    pub command: CommandSpec,
    /// The complete environment of the task (see [`crate::task_env`]).
    pub env: BTreeMap<String, String>,
    /// cpus -> cpu shares (1024 * cpus) and CFS quota; mem (MiB) -> memory limit.
    pub resources: Resources,
    /// SIGTERM first, SIGKILL after this.
    pub kill_grace: Duration,
    /// Rotation of `stdout` and `stderr` (specs written before rotation
    /// existed get the defaults).
    #[serde(default)]
    pub log: logfiles::LogLimits,
    /// Run the task as this user (Marathon's `user`); `None`: as the agent.
    #[serde(default)]
    pub user: Option<String>,
    /// Set for an image run by the built-in runtime: `command` is then the
    /// container's final argv, `env` its final environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciLaunch>,
    /// The task has secrets: the executor reads them (`TaskSecrets` as
    /// JSON) from its stdin, so they are never in this file.
    #[serde(default)]
    pub secrets_on_stdin: bool,
    /// The agent's steps of the start so far (the executor adds its own).
    #[serde(default, skip_serializing_if = "Timeline::is_empty")]
    pub timeline: Timeline,
}

/// Wall-clock stamps (µs since the epoch) of the steps of a task's start,
/// in order: the agent's, from taking the task to writing its spec, travel
/// in `spec.json`; the executor adds its own and records them all in
/// `state.json` with the task's start. `wharf bench containers` breaks the
/// start latency down with them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub Vec<(String, u64)>);

impl Timeline {
    /// Stamps `step` now.
    pub fn mark(&mut self, step: &str) {
        self.0.push((step.to_string(), now_micros()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// When `step` was stamped (µs since the epoch).
    pub fn at(&self, step: &str) -> Option<u64> {
        self.0.iter().find(|(s, _)| s == step).map(|(_, t)| *t)
    }
}

/// A container of the built-in runtime, as the agent prepared it (image
/// pulled, command merged); the executor creates and starts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OciLaunch {
    /// The directory holding the image store's layers.
    pub layers_root: PathBuf,
    /// Layer directory names below `layers_root`, lowest first.
    pub layers: Vec<String>,
    /// The task's container directory: the writable layer, overlay work
    /// dir, root mount and the runtime's state.
    pub dir: PathBuf,
    /// The image's user (`name`, `uid` or `uid:gid`), resolved in the image.
    pub user: Option<String>,
    /// Working directory inside the container.
    pub cwd: String,
    pub mounts: Vec<BindMount>,
    pub privileged: bool,
    /// `container/bridge`: the network the executor attaches the container
    /// to; `None`: the node's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::ContainerNetwork>,
    /// The container's `/etc/resolv.conf` (the node's DNS server and the
    /// cluster domain); `None`: the node's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
}

/// A host path mounted into the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// How the task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// `Finished`, `Failed` or `Killed`.
    pub state: TaskState,
    pub message: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: UnixMillis,
}

/// `state.json`: the executor's record of the task, replaced atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StateFile {
    pub executor_pid: u32,
    /// Start time of the executor (clock ticks since boot, /proc/PID/stat
    /// field 22): tells a live executor from a recycled pid.
    pub executor_start: u64,
    pub pid: Option<u32>,
    pub started_at: Option<UnixMillis>,
    pub exit: Option<ExitRecord>,
    /// The container's address on the node's bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
    /// The steps of the task's start, the agent's and the executor's.
    #[serde(default, skip_serializing_if = "Timeline::is_empty")]
    pub timeline: Timeline,
}

/// A line the executor writes to the agent on its stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExecMsg {
    Running {
        pid: u32,
        at: UnixMillis,
        /// The container's address on the node's bridge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<std::net::IpAddr>,
    },
    Failed {
        message: String,
    },
}

/// The agent's clock (the edge where time enters).
pub fn now() -> UnixMillis {
    UnixMillis::from_system_time(std::time::SystemTime::now())
}

/// The agent's clock in µs since the epoch (for [`Timeline`]).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Writes `data` to `dir/name` via a temporary file and rename, so readers
/// see the old or the new content, never a torn one.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        // No fsync: the file must survive the agent, not the machine (after a
        // reboot every task is gone anyway).
    }
    std::fs::rename(&tmp, dir.join(name))
}

pub fn write_json<T: Serialize>(dir: &Path, name: &str, v: &T) -> std::io::Result<()> {
    let data = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    write_atomic(dir, name, &data)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> std::io::Result<T> {
    let data = std::fs::read(dir.join(name))?;
    serde_json::from_slice(&data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Start time of process `pid` in clock ticks since boot, if it exists.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse
    // after the last ')'. Fields after it start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_keeps_its_steps_in_order_and_old_state_files_still_read() {
        let mut t = Timeline::default();
        t.mark("agent");
        t.mark("spec");
        let state = StateFile { timeline: t.clone(), ..StateFile::default() };
        let back: StateFile = serde_json::from_slice(&serde_json::to_vec(&state).expect("encode")).expect("decode");
        let steps: Vec<&str> = back.timeline.0.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(steps, ["agent", "spec"]);
        assert!(back.timeline.at("agent") <= back.timeline.at("spec"));
        let old: StateFile =
            serde_json::from_str(r#"{"executor_pid":1,"executor_start":2,"pid":null,"started_at":null,"exit":null}"#)
                .expect("a state file from before timelines");
        assert!(old.timeline.is_empty());
    }
}
