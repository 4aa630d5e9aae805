//! The per-task executor: the body of `wharf executor --sandbox DIR`.
//!
//! One small, single-threaded process per task (no tokio here), started by the
//! agent in its own session so it outlives the agent. It owns the task's life:
//! puts it into its cgroup before it runs any code, starts it, forwards a kill
//! request (its own SIGTERM) to the task's process group and SIGKILLs
//! whatever is left in the cgroup after the grace period, records the task's
//! state atomically in the sandbox, and removes the cgroup at the end.
//!
//! Signals are blocked and read from a signalfd; the only wait is `poll` on
//! it (with the grace deadline as timeout), so there are no races with signal
//! handlers. The executor is a child subreaper: orphaned grandchildren of the
//! task are re-parented to it and reaped.

use crate::cgroup::{CurrentCgroup, TaskCgroup};
use crate::sandbox::{
    self, ExecMsg, ExitRecord, LaunchSpec, StateFile, SPEC_FILE, STATE_FILE, STDERR_FILE, STDOUT_FILE,
};
use model::{CommandSpec, TaskState};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long to keep sweeping a cgroup with SIGKILL before giving up.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the executor for the task in `sandbox`; returns the process exit
/// code (0 when the task's outcome was recorded, whatever it was).
pub fn executor_main(sandbox: &Path) -> i32 {
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

    let spec: LaunchSpec = match sandbox::read_json(sandbox, SPEC_FILE) {
        Ok(s) => s,
        Err(e) => {
            let message = format!("cannot read task spec: {e}");
            return fail_to_start(&mut state, sandbox, None, message);
        }
    };
    let cgroup = match TaskCgroup::open(&spec.task_id) {
        Ok(c) => c,
        Err(e) => return fail_to_start(&mut state, sandbox, None, e.to_string()),
    };
    let child = match start_task(&spec, sandbox, &cgroup) {
        Ok(c) => c,
        Err(message) => return fail_to_start(&mut state, sandbox, Some(&cgroup), message),
    };
    let pid = Pid::from_raw(child);
    let started = sandbox::now();
    state.pid = Some(child as u32);
    state.started_at = Some(started);
    save(&state)?;
    tell_agent(&ExecMsg::Running { pid: child as u32, at: started });

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
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
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
    let oom = cgroup.oom_killed();
    let max_usage = cgroup.max_usage();
    if let Err(e) = cgroup.remove() {
        log(&format!("cannot remove cgroup: {e}"));
    }

    let (code, signal, how) = match status {
        WaitStatus::Exited(_, c) => (Some(c), None, format!("exited with status {c}")),
        WaitStatus::Signaled(_, s, _) => {
            (None, Some(s as i32), format!("killed by signal {} ({})", s as i32, s.as_str()))
        }
        other => (None, None, format!("ended: {other:?}")),
    };
    let (task_state, message) = if kill_requested {
        (TaskState::Killed, format!("killed on request; {how}"))
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

/// Creates the cgroup, spawns the task inside it, and returns its pid.
fn start_task(spec: &LaunchSpec, sandbox: &Path, cgroup: &TaskCgroup) -> Result<i32, String> {
    let mut cmd = match &spec.command {
        CommandSpec::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        CommandSpec::Argv(v) => {
            let (prog, args) = v.split_first().ok_or("empty command")?;
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
    };
    let open = |name: &str| {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(sandbox.join(name))
            .map_err(|e| format!("open {name}: {e}"))
    };
    cmd.env_clear()
        .envs(&spec.env)
        .current_dir(sandbox)
        .stdin(Stdio::null())
        .stdout(open(STDOUT_FILE)?)
        .stderr(open(STDERR_FILE)?);
    // SAFETY: only async-signal-safe calls (setsid, signal, sigprocmask)
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }

    // Join the task's cgroup ourselves, fork the task (it inherits the
    // cgroup, so it is limited from its first instruction), then leave.
    let home = CurrentCgroup::capture().map_err(|e| e.to_string())?;
    let spawned = match cgroup.create_and_join(&spec.resources) {
        Ok(()) => cmd.spawn().map_err(|e| format!("{}: {e}", describe(&spec.command))),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = home.rejoin() {
        log(&format!("cannot leave the task's cgroup: {e}"));
    }
    let child = spawned?;
    Ok(child.id() as i32)
}

fn describe(c: &CommandSpec) -> String {
    match c {
        CommandSpec::Shell(_) => "/bin/sh".to_string(),
        CommandSpec::Argv(v) => v.first().cloned().unwrap_or_default(),
    }
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
