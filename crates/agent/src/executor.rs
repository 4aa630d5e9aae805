//! The per-task executor: the body of `wharf executor --sandbox DIR`.
//!
//! One small, single-threaded process per task (no tokio here), started by the
//! agent in its own session so it outlives the agent. It owns the task's life:
//! it forks the task, reports it running, puts it into its cgroup and only then
//! lets it execute the command (the child waits on a pipe), forwards a kill
//! request (its own SIGTERM) to the task's process group and SIGKILLs
//! whatever is left in the cgroup after the grace period, records the task's
//! state atomically in the sandbox, and removes the cgroup at the end.
//!
//! Signals are blocked and read from a signalfd; the only wait is `poll` on
//! it and on the task's stdout and stderr pipes (with the grace deadline as
//! timeout), so there are no races with signal handlers. The executor copies
//! what the task writes to those pipes into the sandbox's log files as it
//! arrives, rotating them by size (`logfiles`), and drains them after the
//! task ended, before it records the end: a reader that sees the task ended
//! has every line. The executor is a child subreaper: orphaned grandchildren of the
//! task are re-parented to it and reaped.

use crate::cgroup::TaskCgroup;
use crate::sandbox::{
    self, ExecMsg, ExitRecord, LaunchSpec, StateFile, SPEC_FILE, STATE_FILE, STDERR_FILE, STDOUT_FILE,
};
use crate::secrets::TaskSecrets;
use logfiles::RotatingWriter;
use model::{CommandSpec, TaskState};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use nix::unistd::{fork, pipe2, ForkResult};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long to keep sweeping a cgroup with SIGKILL before giving up.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(10);
/// After the task's processes are gone, how long to wait for its output
/// pipes to close (only a process that left the cgroup can hold them).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes copied from one pipe before the loop looks at signals again, so a
/// chatty task cannot delay a kill.
const PUMP_BUDGET: usize = 1 << 20;
/// Pipe buffer asked for each output stream: fewer wake-ups for a fast
/// writer, and room for bursts while the executor writes to disk.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Runs the executor for the task in `sandbox`; returns the process exit
/// code (0 when the task's outcome was recorded, whatever it was).
pub fn executor_main(sandbox: &Path) -> i32 {
    // Its own session, so the task outlives the agent and signals to the
    // agent's process group (a terminal's ^C) never reach it. Done here
    // rather than between fork and exec in the agent, so the agent can
    // start executors with posix_spawn.
    // SAFETY: setsid takes no arguments; it fails only for a group leader.
    unsafe { libc::setsid() };
    // libcontainer says what went wrong through tracing: into executor.log.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        // libcgroups warns about every controller this host lacks.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHARF_EXECUTOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libcgroups=error")),
        )
        .try_init();
    match run(sandbox) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wharf executor: {e}");
            1
        }
    }
}

fn log(msg: &str) {
    // stderr is `executor.log` in the sandbox.
    eprintln!("{} {msg}", sandbox::now().0);
}

/// Sends a message to the agent; a gone agent (EPIPE) is fine.
fn tell_agent(msg: &ExecMsg) {
    if let Ok(mut line) = serde_json::to_vec(msg) {
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line).and_then(|()| out.flush());
    }
}

fn run(sandbox: &Path) -> Result<(), String> {
    let entered = sandbox::now_micros();
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
    unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map_err(|e| format!("ignore SIGPIPE: {e}"))?;
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        mask.add(s);
    }
    mask.thread_block().map_err(|e| format!("block signals: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        log("cannot become child subreaper; orphans of the task go to init");
    }

    let me = std::process::id();
    let mut state = StateFile {
        executor_pid: me,
        executor_start: sandbox::proc_start_time(me).unwrap_or(0),
        ..StateFile::default()
    };
    let save = |st: &StateFile| sandbox::write_json(sandbox, STATE_FILE, st).map_err(|e| format!("write state: {e}"));
    save(&state)?;

    let mut spec: LaunchSpec = match sandbox::read_json(sandbox, SPEC_FILE) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("cannot read task spec: {e}");
            return fail_to_start(&mut state, sandbox, None, message);
        }
    };
    let secrets = match read_secrets(&spec) {
        Ok(s) => s,
        Err(message) => return fail_to_start(&mut state, sandbox, None, message),
    };
    let mut timeline = std::mem::take(&mut spec.timeline);
    timeline.0.push(("executor".into(), entered));
    // In memory only: `spec.json` on disk never holds them.
    for (k, v) in &secrets.env {
        spec.env.insert(k.clone(), v.clone());
    }
    let (mut output, stdio) = match Output::open(sandbox, spec.log) {
        Ok(o) => o,
        Err(message) => return fail_to_start(&mut state, sandbox, None, message),
    };
    let cgroup = match TaskCgroup::open(&spec.task_id) {
        Ok(c) => c,
        Err(e) => return fail_to_start(&mut state, sandbox, None, e.to_string()),
    };
    // The container's bridge network, undone when the task ends.
    let mut attached: Option<crate::network::Attached> = None;
    let (pid, start_error) = match &spec.oci {
        None => {
            let prepared = match prepare(&spec, sandbox) {
                Ok(p) => p,
                Err(message) => return fail_to_start(&mut state, sandbox, Some(&cgroup), message),
            };
            let owner = prepared.ids.as_ref().map(|i| (i.uid, i.gid));
            if let Err(message) = crate::secrets::write_files(sandbox, &secrets.files, owner) {
                return fail_to_start(&mut state, sandbox, Some(&cgroup), message);
            }
            let forked = match fork_task(&prepared, &stdio) {
                Ok(f) => f,
                Err(message) => return fail_to_start(&mut state, sandbox, Some(&cgroup), message),
            };
            // Only the task holds the pipes' write ends now: they close when it ends.
            drop(stdio);
            let pid = forked.pid;
            timeline.mark("forked");
            running(&mut state, pid, None, timeline, &save)?;
            (pid, release(forked, &cgroup, &spec, &prepared).err())
        }
        Some(oci) => {
            if let Err(message) =
                crate::secrets::write_files(sandbox, &secrets.files, crate::secrets::numeric_user(oci.user.as_deref()))
            {
                return fail_to_start(&mut state, sandbox, Some(&cgroup), message);
            }
            if let Some(net) = &oci.network {
                match crate::network::attach(&spec.task_id, net) {
                    Ok(a) => attached = Some(a),
                    Err(e) => {
                        let message = format!("bridge network: {e}");
                        return fail_to_start(&mut state, sandbox, Some(&cgroup), message);
                    }
                }
            }
            let netns = attached.as_ref().map(|a| a.netns_path());
            let created = create_container(
                &spec,
                &secrets,
                oci,
                sandbox,
                (&cgroup, &mask),
                (stdio, netns.as_deref()),
                &mut timeline,
            )
            .and_then(|c| c.pid().map(|p| (c, p)).ok_or_else(|| "no container process".to_string()));
            let (mut container, pid) = match created {
                Ok(c) => c,
                Err(message) => {
                    crate::container::cleanup(oci);
                    detach(&spec, attached.take());
                    return fail_to_start(&mut state, sandbox, Some(&cgroup), message);
                }
            };
            let ip = attached.as_ref().map(|a| std::net::IpAddr::V4(a.ip));
            // Running once its init has been told to execute the task.
            let started = crate::container::start(&mut container);
            timeline.mark("started");
            running(&mut state, pid, ip, timeline, &save)?;
            let started = started.and_then(|()| cgroup.apply_cpu_quota(&spec.resources).map_err(|e| e.to_string()));
            (pid, started.err())
        }
    };
    if let Some(e) = &start_error {
        log(&format!("cannot start task: {e}"));
    }

    // Wait for the main process, handling kill requests.
    let mut kill_requested = false;
    let mut deadline: Option<Instant> = None;
    let status = 'wait: loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so we never spin on a sub-millisecond remainder.
                PollTimeout::try_from(left.as_millis() as u64 + 1).unwrap_or(PollTimeout::MAX)
            }
        };
        let ready = match output.poll_with(sfd.as_fd(), timeout) {
            Ok(r) => r,
            Err(e) => return Err(format!("poll: {e}")),
        };
        output.pump(&ready, PUMP_BUDGET);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            log("grace period over: SIGKILL to the task's cgroup");
            deadline = None;
            let _ = killpg(pid, Signal::SIGKILL);
            for p in cgroup.pids() {
                let _ = nix::sys::signal::kill(p, Signal::SIGKILL);
            }
        }
        let mut main_exited = None;
        while let Ok(Some(info)) = sfd.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGCHLD {
                if let Some(st) = reap_children(pid) {
                    main_exited = Some(st);
                }
            } else if (sig == libc::SIGTERM || sig == libc::SIGINT) && !kill_requested {
                log("kill requested: SIGTERM to the task's process group");
                kill_requested = true;
                let _ = killpg(pid, Signal::SIGTERM);
                // Also the main process itself, in case it has not yet made
                // its own process group (setsid right after fork).
                let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                deadline = Some(Instant::now() + spec.kill_grace);
            }
        }
        if let Some(st) = main_exited {
            break 'wait st;
        }
    };

    // The main process is gone: nothing else of the task may stay behind.
    if !cgroup.kill_all(SWEEP_TIMEOUT, || {
        let _ = reap_children(pid);
    }) {
        log("processes survive in the task's cgroup after SIGKILL");
    }
    output.drain(DRAIN_TIMEOUT);
    let oom = cgroup.oom_killed();
    let max_usage = cgroup.max_usage();
    if let Err(e) = cgroup.remove() {
        log(&format!("cannot remove cgroup: {e}"));
    }
    if let Some(oci) = &spec.oci {
        crate::container::cleanup(oci);
    }
    detach(&spec, attached.take());

    let (code, signal, how) = match status {
        WaitStatus::Exited(_, c) => (Some(c), None, format!("exited with status {c}")),
        WaitStatus::Signaled(_, s, _) => {
            (None, Some(s as i32), format!("killed by signal {} ({})", s as i32, s.as_str()))
        }
        other => (None, None, format!("ended: {other:?}")),
    };
    let (task_state, message) = if kill_requested {
        (TaskState::Killed, format!("killed on request; {how}"))
    } else if let Some(e) = start_error {
        (TaskState::Failed, format!("failed to start: {e}"))
    } else if oom {
        let used = max_usage.map(|b| format!(" Maximum Used: {}MB", b / (1024 * 1024))).unwrap_or_default();
        (TaskState::Failed, format!("Memory limit exceeded: Requested: {}MB{used} ({how})", spec.resources.mem))
    } else if code == Some(0) {
        (TaskState::Finished, how)
    } else {
        (TaskState::Failed, how)
    };
    log(&format!("task ended: {task_state:?}: {message}"));
    state.exit = Some(ExitRecord { state: task_state, message, code, signal, at: sandbox::now() });
    save(&state)
}

/// The task's secrets, from the agent over stdin when it has any.
fn read_secrets(spec: &LaunchSpec) -> Result<TaskSecrets, String> {
    if !spec.secrets_on_stdin {
        return Ok(TaskSecrets::default());
    }
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the task's secrets from the agent: {e}"))?;
    // serde's message could quote the input: it is not passed on.
    serde_json::from_slice(&buf).map_err(|_| "the task's secrets from the agent are malformed".to_string())
}

/// Records and reports the task's process as started. Joining the cgroup
/// costs an RCU grace period on the first migration (10-15 ms on v1 hosts),
/// which the agent need not wait for; the task itself does.
fn running(
    state: &mut StateFile,
    pid: Pid,
    ip: Option<std::net::IpAddr>,
    timeline: sandbox::Timeline,
    save: &dyn Fn(&StateFile) -> Result<(), String>,
) -> Result<(), String> {
    let started = sandbox::now();
    state.pid = Some(pid.as_raw() as u32);
    state.started_at = Some(started);
    state.ip = ip;
    state.timeline = timeline;
    save(state)?;
    tell_agent(&ExecMsg::Running { pid: pid.as_raw() as u32, at: started, ip });
    Ok(())
}

/// Undoes the container's bridge network (its processes are gone).
fn detach(spec: &LaunchSpec, attached: Option<crate::network::Attached>) {
    if let Some(a) = attached {
        crate::network::detach(&a.bridge, &spec.task_id, a.ip);
    }
}

/// Mounts the container's root filesystem and creates the container with
/// libcontainer (its init waits in the task's cgroup until started). The
/// executor's signals are unblocked meanwhile, since the container's
/// processes inherit the signal mask (the agent sends no kill before the
/// launch returns, so none is lost).
fn create_container(
    spec: &LaunchSpec,
    secrets: &TaskSecrets,
    oci: &crate::sandbox::OciLaunch,
    sandbox: &Path,
    (cgroup, mask): (&TaskCgroup, &SigSet),
    (stdio, netns): (ChildStdio, Option<&Path>),
    timeline: &mut sandbox::Timeline,
) -> Result<libcontainer::container::Container, String> {
    let dirs = crate::container::ContainerDirs::new(&oci.dir);
    crate::container::mount_rootfs(oci, &dirs)?;
    timeline.mark("rootfs");
    let resources = cgroup.linux_resources(&spec.resources).map_err(|e| e.to_string())?;
    let mut resources = serde_json::to_value(resources).map_err(|e| format!("encode resources: {e}"))?;
    // The runtime's own set-up (mounts, pivot_root, seccomp) runs inside
    // the cgroup: under a quota of a few ms per 100 ms (cpus 0.01) it would
    // take hundreds of ms. The quota is applied once the container started.
    if let Some(cpu) = resources.get_mut("cpu").and_then(|c| c.as_object_mut()) {
        cpu.remove("quota");
    }
    if !oci.privileged {
        // No device but the runtime's defaults (null, zero, tty, ...).
        resources["devices"] = serde_json::json!([{"allow": false, "access": "rwm"}]);
    }
    // SAFETY: restoring the default disposition installs no handler code.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = mask.thread_unblock();
    // The container's init takes the output pipes; the runtime closes our
    // copies once it is created.
    let secret_vars: Vec<&str> = secrets.env.keys().map(String::as_str).collect();
    let created = crate::container::create(
        spec,
        &secret_vars,
        oci,
        sandbox,
        resources,
        netns,
        (stdio.stdin, stdio.stdout, stdio.stderr),
        timeline,
    );
    timeline.mark("created");
    let _ = mask.thread_block();
    // SAFETY: as above.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
    created.map(|(c, _)| c)
}

/// Reaps every child that has exited; returns the main process's status if
/// it was among them.
fn reap_children(main: Pid) -> Option<WaitStatus> {
    let mut main_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return main_status,
            Ok(st) => {
                if st.pid() == Some(main) && matches!(st, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                    main_status = Some(st);
                }
            }
        }
    }
}

fn fail_to_start(
    state: &mut StateFile,
    sandbox: &Path,
    cgroup: Option<&TaskCgroup>,
    message: String,
) -> Result<(), String> {
    log(&format!("cannot start task: {message}"));
    if let Some(cg) = cgroup {
        let _ = cg.remove();
    }
    let message = format!("failed to start: {message}");
    state.exit = Some(ExitRecord {
        state: TaskState::Failed,
        message: message.clone(),
        code: None,
        signal: None,
        at: sandbox::now(),
    });
    sandbox::write_json(sandbox, STATE_FILE, state).map_err(|e| format!("write state: {e}"))?;
    tell_agent(&ExecMsg::Failed { message });
    Ok(())
}

/// Everything the forked child needs, prepared before the fork so the child
/// only makes system calls.
struct Prepared {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    /// The task's uid, gid and supplementary groups (Marathon's `user`).
    ids: Option<TaskIds>,
}

/// The child's ends of its stdio: `/dev/null` and the write ends of the
/// output pipes.
struct ChildStdio {
    stdin: File,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// One output stream: the pipe's read end and the log file it goes to.
struct Stream {
    pipe: File,
    log: RotatingWriter,
    name: &'static str,
    open: bool,
    /// Set after the first failed write (disk full): later failures are not
    /// logged again, and the pipe keeps being read so the task never blocks.
    failing: bool,
}

/// The task's stdout and stderr, copied from their pipes into the sandbox.
struct Output {
    streams: [Stream; 2],
}

impl Output {
    fn open(sandbox: &Path, limits: logfiles::LogLimits) -> Result<(Output, ChildStdio), String> {
        let stream = |name: &'static str| -> Result<(Stream, OwnedFd), String> {
            let (r, w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| format!("pipe: {e}"))?;
            // The task's end blocks as a file would; only ours polls.
            nix::fcntl::fcntl(w.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))
                .map_err(|e| format!("pipe flags: {e}"))?;
            // SAFETY: fcntl on a pipe fd we own; failure only keeps the default size.
            unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
            let log = RotatingWriter::open(sandbox, name, limits).map_err(|e| format!("open {name}: {e}"))?;
            Ok((Stream { pipe: File::from(r), log, name, open: true, failing: false }, w))
        };
        let (out, out_w) = stream(STDOUT_FILE)?;
        let (err, err_w) = stream(STDERR_FILE)?;
        let stdin = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
        Ok((Output { streams: [out, err] }, ChildStdio { stdin, stdout: out_w, stderr: err_w }))
    }

    /// Waits on `signals` and the open pipes; returns which pipes are ready.
    fn poll_with(&self, signals: std::os::fd::BorrowedFd<'_>, timeout: PollTimeout) -> nix::Result<[bool; 2]> {
        let mut fds = vec![PollFd::new(signals, PollFlags::POLLIN)];
        let mut which = Vec::new();
        for (i, s) in self.streams.iter().enumerate() {
            if s.open {
                fds.push(PollFd::new(s.pipe.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        let mut ready = [false; 2];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
        for (fd, i) in fds[1..].iter().zip(which) {
            ready[i] = fd.revents().is_some_and(|r| !r.is_empty());
        }
        Ok(ready)
    }

    /// Copies what the ready pipes hold, at most `budget` bytes each.
    fn pump(&mut self, ready: &[bool; 2], budget: usize) {
        let mut buf = vec![0u8; 64 * 1024];
        for (s, r) in self.streams.iter_mut().zip(ready) {
            if !r || !s.open {
                continue;
            }
            let mut copied = 0;
            while copied < budget {
                match s.pipe.read(&mut buf) {
                    Ok(0) => {
                        s.open = false;
                        break;
                    }
                    Ok(n) => {
                        copied += n;
                        if let Err(e) = s.log.write_all(&buf[..n]) {
                            if !std::mem::replace(&mut s.failing, true) {
                                log(&format!("cannot write {}: {e}; the task's output is lost", s.name));
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // WouldBlock: all read for now.
                    Err(_) => break,
                }
            }
        }
    }

    /// After the task's processes are gone: copies the rest until both
    /// pipes close, or `timeout` passes without them closing.
    fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.streams.iter().any(|s| s.open) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log("the task's output pipes stayed open after it ended (a process outside its cgroup holds them)");
                return;
            }
            let mut fds = Vec::new();
            let mut which = Vec::new();
            for (i, s) in self.streams.iter().enumerate() {
                if s.open {
                    fds.push(PollFd::new(s.pipe.as_fd(), PollFlags::POLLIN));
                    which.push(i);
                }
            }
            let timeout = PollTimeout::try_from(left.as_millis() as u64 + 1).unwrap_or(PollTimeout::MAX);
            if let Err(e) = poll(&mut fds, timeout) {
                if e != Errno::EINTR {
                    return;
                }
            }
            let mut ready = [false; 2];
            for (fd, i) in fds.iter().zip(which) {
                ready[i] = fd.revents().is_some_and(|r| !r.is_empty());
            }
            drop(fds);
            self.pump(&ready, usize::MAX);
        }
    }
}

struct TaskIds {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

/// Looks `name` up in the node's user database, and gives it the sandbox
/// (owner, mode 0750: other tasks' users cannot read it).
fn task_user(name: &str, sandbox: &Path) -> Result<TaskIds, String> {
    use std::os::unix::fs::PermissionsExt;
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| format!("looking up user '{name}': {e}"))?
        .ok_or_else(|| format!("user '{name}' does not exist on this node"))?;
    let cname = cstr(name, "user")?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid).map_err(|e| format!("groups of user '{name}': {e}"))?;
    std::os::unix::fs::chown(sandbox, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .and_then(|()| std::fs::set_permissions(sandbox, std::fs::Permissions::from_mode(0o750)))
        .map_err(|e| format!("giving the sandbox to user '{name}': {e}"))?;
    Ok(TaskIds { uid: user.uid.as_raw(), gid: user.gid.as_raw(), groups: groups.iter().map(|g| g.as_raw()).collect() })
}

fn cstr(s: impl Into<Vec<u8>>, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

fn prepare(spec: &LaunchSpec, sandbox: &Path) -> Result<Prepared, String> {
    let (program, argv): (String, Vec<String>) = match &spec.command {
        CommandSpec::Shell(s) => ("/bin/sh".into(), vec!["sh".into(), "-c".into(), s.clone()]),
        CommandSpec::Argv(v) => (v.first().ok_or("empty command")?.clone(), v.clone()),
    };
    let path = resolve(&program, spec.env.get("PATH").map(String::as_str), sandbox)?;
    let ids = spec.user.as_deref().map(|u| task_user(u, sandbox)).transpose()?;
    Ok(Prepared {
        ids,
        path: cstr(path.into_os_string().into_vec(), "program path")?,
        argv: argv.into_iter().map(|a| cstr(a, "argument")).collect::<Result<_, _>>()?,
        envp: spec.env.iter().map(|(k, v)| cstr(format!("{k}={v}"), "environment")).collect::<Result<_, _>>()?,
        cwd: cstr(sandbox.as_os_str().as_bytes(), "sandbox path")?,
    })
}

/// The program to execute: a path with a `/` as is (relative to the
/// sandbox), anything else searched in the task's `PATH`, like `execvp`.
fn resolve(program: &str, path_var: Option<&str>, sandbox: &Path) -> Result<PathBuf, String> {
    if program.contains('/') {
        let p = sandbox.join(program);
        return match std::fs::metadata(&p) {
            Ok(_) => Ok(p),
            Err(e) => Err(format!("{program}: {e}")),
        };
    }
    let search = path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    search
        .split(':')
        .map(|d| sandbox.join(if d.is_empty() { "." } else { d }).join(program))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| format!("{program}: not found in PATH {search}"))
}

/// A forked child waiting for the go signal before it executes the task.
struct Forked {
    pid: Pid,
    /// Writing a byte (or closing) releases the child.
    go: OwnedFd,
    /// Closed on successful exec; carries the errno of a failed one.
    exec_err: OwnedFd,
}

fn fork_task(p: &Prepared, stdio: &ChildStdio) -> Result<Forked, String> {
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: the executor is single-threaded, so the child may run any
    // code; it only makes system calls on data prepared above and never
    // returns (exec or _exit).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => unsafe { child_exec(p, stdio, &argv, &envp, go_r.as_raw_fd(), err_w.as_raw_fd()) },
        ForkResult::Parent { child } => Ok(Forked { pid: child, go: go_w, exec_err: err_r }),
    }
}

/// The child between fork and exec: new session, default signal state, the
/// sandbox's stdio and cwd; then it waits until the executor has put it into
/// its cgroup, and executes the task.
unsafe fn child_exec(
    p: &Prepared,
    stdio: &ChildStdio,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    go: libc::c_int,
    err: libc::c_int,
) -> ! {
    let fail = |stage: i32| -> ! {
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let msg = [stage, e];
        libc::write(err, msg.as_ptr().cast(), std::mem::size_of_val(&msg));
        libc::_exit(127)
    };
    if libc::setsid() < 0 {
        fail(1);
    }
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    if libc::dup2(stdio.stdin.as_raw_fd(), 0) < 0
        || libc::dup2(stdio.stdout.as_raw_fd(), 1) < 0
        || libc::dup2(stdio.stderr.as_raw_fd(), 2) < 0
    {
        fail(2);
    }
    if libc::chdir(p.cwd.as_ptr()) < 0 {
        fail(3);
    }
    let mut b = 0u8;
    loop {
        match libc::read(go, (&mut b as *mut u8).cast(), 1) {
            1 => break,
            // The executor gave up on us (cgroup failure).
            0 => libc::_exit(126),
            _ if *libc::__errno_location() == libc::EINTR => continue,
            _ => libc::_exit(126),
        }
    }
    // Dropped last: the executor (root) has moved the child into its cgroup.
    if let Some(ids) = &p.ids {
        if libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) < 0
            || libc::setgid(ids.gid) < 0
            || libc::setuid(ids.uid) < 0
        {
            fail(5);
        }
    }
    libc::execve(p.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    fail(4)
}

/// Puts the forked child into the task's cgroup, then lets it execute the
/// task; returns an error if that failed (the child then exits by itself).
fn release(f: Forked, cgroup: &TaskCgroup, spec: &LaunchSpec, p: &Prepared) -> Result<(), String> {
    if let Err(e) = cgroup.create_with(f.pid, &spec.resources) {
        let _ = nix::sys::signal::kill(f.pid, Signal::SIGKILL);
        return Err(e.to_string());
    }
    nix::unistd::write(&f.go, &[1]).map_err(|e| format!("release task: {e}"))?;
    drop(f.go);
    let mut msg = [0u8; 8];
    let mut got = 0;
    while got < msg.len() {
        match nix::unistd::read(f.exec_err.as_raw_fd(), &mut msg[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("reading exec status: {e}")),
        }
    }
    if got == 0 {
        return Ok(());
    }
    let stage = i32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let errno = i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]);
    let what = match stage {
        1 => "setsid".to_string(),
        2 => "redirecting stdio".to_string(),
        3 => "chdir to sandbox".to_string(),
        5 => format!("switching to user '{}'", spec.user.as_deref().unwrap_or("?")),
        _ => format!("exec {}", p.path.to_string_lossy()),
    };
    Err(format!("{what}: {}", std::io::Error::from_raw_os_error(errno)))
}

/// Parses `--sandbox DIR` from the executor's arguments.
pub fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<std::path::PathBuf> {
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--sandbox" {
            return it.next().map(Into::into);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--sandbox=")) {
            return Some(v.into());
        }
    }
    None
}
