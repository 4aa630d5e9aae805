//! Real processes in real cgroups: the executor binary of this crate, driven
//! through `ExecDriver`.

use agent::cgroup::TaskCgroup;
use agent::{DriverError, ExecDriver, LaunchSpec, TaskEvent};
use model::{AppId, CommandSpec, Resources, TaskId, TaskState};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

struct Fixture {
    root: PathBuf,
    driver: ExecDriver,
    events: UnboundedReceiver<TaskEvent>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn executor() -> Vec<OsString> {
    vec![env!("CARGO_BIN_EXE_wharf-executor").into()]
}

fn fixture() -> Fixture {
    let root = std::env::temp_dir().join(format!("wharf-agent-test-{}", uuid::Uuid::new_v4()));
    let (tx, events) = unbounded_channel();
    Fixture { driver: ExecDriver::new(root.clone(), executor(), tx), root, events }
}

fn task_id() -> TaskId {
    TaskId::new(&AppId::parse("/test/exec").expect("valid app id"), uuid::Uuid::new_v4(), 1)
}

fn spec(command: CommandSpec) -> LaunchSpec {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), "/usr/bin:/bin".to_string());
    LaunchSpec {
        task_id: task_id(),
        command,
        env,
        resources: Resources { cpus: 0.5, mem: 64.0, disk: 0.0, gpus: 0 },
        kill_grace: Duration::from_secs(3),
        oci: None,
        log: Default::default(),
        user: None,
        secrets_on_stdin: false,
        timeline: Default::default(),
    }
}

fn sh(s: &str) -> LaunchSpec {
    spec(CommandSpec::Shell(s.to_string()))
}

async fn next_event(rx: &mut UnboundedReceiver<TaskEvent>, within: Duration) -> TaskEvent {
    tokio::time::timeout(within, rx.recv()).await.expect("event in time").expect("channel open")
}

async fn running(rx: &mut UnboundedReceiver<TaskEvent>, id: &TaskId) -> u32 {
    match next_event(rx, Duration::from_secs(5)).await {
        TaskEvent::Running { task_id, pid, .. } if &task_id == id => pid,
        other => panic!("expected Running for {id}, got {other:?}"),
    }
}

async fn exited(rx: &mut UnboundedReceiver<TaskEvent>, id: &TaskId, within: Duration) -> (TaskState, String) {
    match next_event(rx, within).await {
        TaskEvent::Exited { task_id, state, message, .. } if &task_id == id => (state, message),
        other => panic!("expected Exited for {id}, got {other:?}"),
    }
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as dead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn runs_captures_output_and_finishes() {
    let mut f = fixture();
    let mut s = sh("echo hello; echo oops >&2; pwd; echo \"$GREETING\"; sleep 0.3");
    s.env.insert("GREETING".into(), "hi there".into());
    let id = s.task_id.clone();
    let t0 = Instant::now();
    let pid = f.driver.launch(s).await.expect("launch");
    eprintln!("launch took {:?}", t0.elapsed());
    assert_eq!(running(&mut f.events, &id).await, pid);
    assert!(alive(pid), "task process is alive while running");
    // It is in its cgroup (Running is reported as soon as the task is
    // forked; it joins its cgroup before it executes the command).
    let cg = TaskCgroup::open(&id).expect("cgroup handle");
    wait_for("task in its cgroup", || cg.pids().iter().any(|p| p.as_raw() as u32 == pid)).await;

    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(5)).await;
    assert_eq!(state, TaskState::Finished, "{message}");
    assert_eq!(message, "exited with status 0");
    let dir = f.driver.sandbox_dir(&id);
    let out = std::fs::read_to_string(dir.join("stdout")).expect("stdout file");
    let canon = dir.canonicalize().expect("sandbox path");
    assert_eq!(out, format!("hello\n{}\nhi there\n", canon.display()));
    let err = std::fs::read_to_string(dir.join("stderr")).expect("stderr file");
    assert_eq!(err, "oops\n");
    assert!(cg.pids().is_empty(), "cgroup is gone");

    f.driver.remove_sandbox(&id).expect("remove sandbox");
    assert!(!dir.exists());
    f.driver.remove_sandbox(&id).expect("remove is idempotent");
}

#[tokio::test]
async fn nonzero_exit_fails_with_status() {
    let mut f = fixture();
    let s = sh("exit 3");
    let id = s.task_id.clone();
    f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(5)).await;
    assert_eq!(state, TaskState::Failed);
    assert_eq!(message, "exited with status 3");
    // Kill after the end is fine.
    f.driver.kill(&id).await.expect("kill after exit");
}

#[tokio::test]
async fn argv_runs_without_shell_and_bad_program_fails_launch() {
    let mut f = fixture();
    let s = spec(CommandSpec::Argv(vec!["echo".into(), "$NOT_EXPANDED".into()]));
    let id = s.task_id.clone();
    f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let (state, _) = exited(&mut f.events, &id, Duration::from_secs(5)).await;
    assert_eq!(state, TaskState::Finished);
    let out = std::fs::read_to_string(f.driver.sandbox_dir(&id).join("stdout")).expect("stdout");
    assert_eq!(out, "$NOT_EXPANDED\n");

    let bad = spec(CommandSpec::Argv(vec!["/nonexistent/program".into()]));
    let bad_id = bad.task_id.clone();
    match f.driver.launch(bad).await {
        Err(DriverError::Launch { message, .. }) => {
            assert!(message.contains("/nonexistent/program"), "{message}")
        }
        other => panic!("expected launch error, got {other:?}"),
    }
    // The failure is recorded for recovery, too.
    let rec = f.driver.recover().await.expect("recover");
    let r = rec.iter().find(|r| r.task_id == bad_id).expect("found");
    assert_eq!(r.state, TaskState::Failed);
    // Launching the same task id twice is refused.
    let mut again = spec(CommandSpec::Shell("true".into()));
    again.task_id = bad_id.clone();
    assert!(matches!(f.driver.launch(again).await, Err(DriverError::AlreadyExists(_))));
}

#[tokio::test]
async fn kill_stops_the_whole_tree() {
    let mut f = fixture();
    let s = sh("sleep 100 & sleep 100");
    let id = s.task_id.clone();
    let pid = f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let cg = TaskCgroup::open(&id).expect("cgroup handle");
    wait_for("sh and two sleeps", || cg.pids().len() >= 3).await;
    let pids: Vec<u32> = cg.pids().iter().map(|p| p.as_raw() as u32).collect();
    assert!(pids.contains(&pid));

    f.driver.kill(&id).await.expect("kill");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(5)).await;
    assert_eq!(state, TaskState::Killed, "{message}");
    for p in pids {
        assert!(!alive(p), "process {p} of the task survived");
    }
    assert!(cg.pids().is_empty());
    f.driver.kill(&id).await.expect("kill is idempotent");
    f.driver.kill(&task_id()).await.expect("kill of an unknown task is Ok");
}

#[tokio::test]
async fn sigterm_ignoring_task_is_sigkilled_after_grace() {
    let mut f = fixture();
    let mut s = sh("trap '' TERM; sleep 100 & sleep 100");
    s.kill_grace = Duration::from_millis(300);
    let id = s.task_id.clone();
    f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let cg = TaskCgroup::open(&id).expect("cgroup handle");
    wait_for("sh and two sleeps", || cg.pids().len() >= 3).await;
    let t0 = Instant::now();
    f.driver.kill(&id).await.expect("kill");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(5)).await;
    let took = t0.elapsed();
    assert_eq!(state, TaskState::Killed, "{message}");
    assert!(message.contains("signal 9"), "{message}");
    assert!(took >= Duration::from_millis(300), "killed after {took:?}");
    assert!(took < Duration::from_secs(2), "killed after {took:?}");
}

#[tokio::test]
async fn memory_limit_kills_and_says_so() {
    let mut f = fixture();
    let mut s = sh("head -c 200M /dev/zero | tail");
    s.resources.mem = 32.0;
    let id = s.task_id.clone();
    f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(10)).await;
    assert_eq!(state, TaskState::Failed, "{message}");
    assert!(message.contains("Memory limit exceeded"), "{message}");
}

#[tokio::test]
async fn restarted_agent_recovers_running_tasks() {
    let mut f = fixture();
    let s = sh("sleep 1");
    let id = s.task_id.clone();
    let done = sh("exit 0");
    let done_id = done.task_id.clone();
    let pid = f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    f.driver.launch(done).await.expect("launch");
    running(&mut f.events, &done_id).await;
    exited(&mut f.events, &done_id, Duration::from_secs(5)).await;

    // The agent restarts: a new driver on the same root.
    let (tx, mut events) = unbounded_channel();
    let old = std::mem::replace(&mut f.driver, ExecDriver::new(f.root.clone(), executor(), tx));
    drop(old);
    assert!(alive(pid), "the task outlives the agent");

    let mut found = f.driver.recover().await.expect("recover");
    found.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    assert_eq!(found.len(), 2);
    let r = found.iter().find(|r| r.task_id == id).expect("running task");
    assert_eq!(r.state, TaskState::Running);
    assert_eq!(r.pid, Some(pid));
    assert!(r.started_at.is_some());
    let d = found.iter().find(|r| r.task_id == done_id).expect("done task");
    assert_eq!(d.state, TaskState::Finished);
    assert_eq!(d.message.as_deref(), Some("exited with status 0"));

    // Recovering twice attaches once.
    assert_eq!(f.driver.recover().await.expect("recover").len(), 2);
    assert!(matches!(f.driver.remove_sandbox(&id), Err(DriverError::StillRunning(_))));

    let (state, message) = exited(&mut events, &id, Duration::from_secs(5)).await;
    assert_eq!(state, TaskState::Finished, "{message}");
    assert!(tokio::time::timeout(Duration::from_millis(100), events.recv()).await.is_err(), "exactly one event");
}

#[tokio::test]
async fn recovered_task_can_be_killed() {
    let mut f = fixture();
    let s = sh("sleep 100");
    let id = s.task_id.clone();
    let pid = f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let (tx, mut events) = unbounded_channel();
    drop(std::mem::replace(&mut f.driver, ExecDriver::new(f.root.clone(), executor(), tx)));
    // kill works even before recover() (it finds the executor on disk).
    f.driver.kill(&id).await.expect("kill");
    let found = f.driver.recover().await.expect("recover");
    assert_eq!(found.len(), 1);
    // The executor may have finished the kill before recover() scanned the
    // sandbox (then recover reports the end), or after (then it comes as an
    // event): either way the task ends Killed, and exactly once.
    let state = match found[0].state {
        TaskState::Running | TaskState::Starting => exited(&mut events, &id, Duration::from_secs(5)).await.0,
        ended => ended,
    };
    assert_eq!(state, TaskState::Killed, "{:?}", found[0]);
    assert!(tokio::time::timeout(Duration::from_millis(200), events.recv()).await.is_err(), "ended once");
    assert!(!alive(pid));
}

#[tokio::test]
async fn limits_are_applied_and_dead_executor_is_cleaned_up() {
    let mut f = fixture();
    let mut s = sh("sleep 100 & sleep 100");
    s.resources.cpus = 0.25;
    s.resources.mem = 48.0;
    let id = s.task_id.clone();
    let pid = f.driver.launch(s).await.expect("launch");
    running(&mut f.events, &id).await;
    let cg = TaskCgroup::open(&id).expect("cgroup handle");
    wait_for("sh and two sleeps", || cg.pids().len() >= 3).await;

    // Check the limits where this host keeps them (v1 or v2).
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory").is_dir();
    let name = format!("wharf/{id}");
    let read = |p: String| std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"));
    if v1 {
        let mem = read(format!("/sys/fs/cgroup/memory/{name}/memory.limit_in_bytes"));
        assert_eq!(mem.trim(), (48 * 1024 * 1024).to_string());
        let shares = read(format!("/sys/fs/cgroup/cpu/{name}/cpu.shares"));
        assert_eq!(shares.trim(), "256");
        let quota = read(format!("/sys/fs/cgroup/cpu/{name}/cpu.cfs_quota_us"));
        assert_eq!(quota.trim(), "25000");
    } else {
        let mem = read(format!("/sys/fs/cgroup/{name}/memory.max"));
        assert_eq!(mem.trim(), (48 * 1024 * 1024).to_string());
        let max = read(format!("/sys/fs/cgroup/{name}/cpu.max"));
        assert_eq!(max.trim(), "25000 100000");
    }

    // The executor dies hard: the task is cleaned up and reported failed.
    let pids: Vec<u32> = cg.pids().iter().map(|p| p.as_raw() as u32).collect();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.driver.sandbox_dir(&id).join("state.json")).expect("state file"))
            .expect("state json");
    let exec_pid = state["executor_pid"].as_i64().expect("executor pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec_pid), nix::sys::signal::SIGKILL).expect("kill executor");
    let (state, message) = exited(&mut f.events, &id, Duration::from_secs(10)).await;
    assert_eq!(state, TaskState::Failed);
    assert!(message.contains("executor"), "{message}");
    assert!(pids.contains(&pid));
    for p in pids {
        assert!(!alive(p), "process {p} of the task survived its executor");
    }
}

/// An executor that died together with its agent leaves its task's cgroup,
/// with the task's processes, behind; the sandbox may be gone already.
/// Recovery kills what is in such a cgroup and removes it, and leaves the
/// cgroup of a task whose executor lives alone.
#[tokio::test]
async fn recovery_sweeps_cgroups_no_executor_owns() {
    let mut f = fixture();
    let live = sh("sleep 100");
    let live_id = live.task_id.clone();
    let live_pid = f.driver.launch(live).await.expect("launch");
    running(&mut f.events, &live_id).await;

    // What a dead executor leaves: a task cgroup with a process in it and no
    // executor (here, no sandbox either).
    let orphan_id = task_id();
    let mut orphan = std::process::Command::new("sleep").arg("100").spawn().expect("spawn sleep");
    let orphan_cg = TaskCgroup::open(&orphan_id).expect("cgroup handle");
    let limits = Resources { cpus: 0.1, mem: 32.0, disk: 0.0, gpus: 0 };
    orphan_cg.create_with(nix::unistd::Pid::from_raw(orphan.id() as i32), &limits).expect("orphan cgroup");
    assert!(cgroup_exists(&orphan_id), "the orphan cgroup was made");

    // The agent restarts.
    let (tx, mut events) = unbounded_channel();
    drop(std::mem::replace(&mut f.driver, ExecDriver::new(f.root.clone(), executor(), tx)));
    let found = f.driver.recover().await.expect("recover");

    assert!(!cgroup_exists(&orphan_id), "the orphan cgroup is removed");
    let status = tokio::task::spawn_blocking(move || orphan.wait()).await.expect("join").expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the orphan's process was killed: {status:?}");
    assert!(!found.iter().any(|r| r.task_id == orphan_id), "an orphan cgroup is not a task: {found:?}");

    // The live task is untouched: recovered, its cgroup and process alive.
    assert!(found.iter().any(|r| r.task_id == live_id && r.state == TaskState::Running), "{found:?}");
    assert!(cgroup_exists(&live_id), "the live task's cgroup stays");
    assert!(alive(live_pid), "the live task keeps running");
    assert!(TaskCgroup::open(&live_id).expect("handle").pids().iter().any(|p| p.as_raw() as u32 == live_pid));
    f.driver.kill(&live_id).await.expect("kill");
    let (state, _) = exited(&mut events, &live_id, Duration::from_secs(10)).await;
    assert_eq!(state, TaskState::Killed);
    assert!(!cgroup_exists(&live_id), "the executor removes its cgroup when the task ends");
}

/// Whether `/wharf/<id>` exists in any hierarchy of this host (v2, or the
/// v1 memory controller).
fn cgroup_exists(id: &TaskId) -> bool {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/memory"]
        .iter()
        .any(|root| std::path::Path::new(root).join("wharf").join(id.as_str()).is_dir())
}

/// The parent pid of `pid`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let (_, rest) = stat.rsplit_once(')').expect("stat format");
    rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("ppid")
}

#[tokio::test]
async fn executors_are_forked_by_one_launcher_and_count_as_live() {
    let mut f = fixture();
    let (a, b) = (sh("exec sleep 100"), sh("exec sleep 100"));
    let (ia, ib) = (a.task_id.clone(), b.task_id.clone());
    f.driver.launch(a).await.expect("launch a");
    running(&mut f.events, &ia).await;
    f.driver.launch(b).await.expect("launch b");
    running(&mut f.events, &ib).await;
    // What the sweep of orphan cgroups goes by: both executors, live.
    let live = agent::driver::exec::live_executors();
    let executor_of = |id: &TaskId| live.iter().find(|(_, t)| t == id).map(|(p, _)| *p).expect("a live executor");
    let (ea, eb) = (executor_of(&ia), executor_of(&ib));
    assert_ne!(ea, eb);
    // Children of one launcher, which this process (the agent) started.
    let launcher = parent_of(ea);
    assert_eq!(parent_of(eb), launcher);
    assert_eq!(parent_of(launcher), std::process::id());
    let cmdline = std::fs::read(format!("/proc/{launcher}/cmdline")).expect("cmdline");
    assert!(cmdline.split(|b| *b == 0).any(|a| a == b"--launcher"), "{}", String::from_utf8_lossy(&cmdline));
    for id in [&ia, &ib] {
        f.driver.kill(id).await.expect("kill");
        let (state, message) = exited(&mut f.events, id, Duration::from_secs(5)).await;
        assert_eq!(state, TaskState::Killed, "{message}");
    }
}
