//! The executor launcher: one small, single-threaded process per agent,
//! started once with the agent's executor command and `--launcher`, that
//! forks a per-task executor on request. The agent would otherwise execute
//! the `wharf` binary for every task: the dynamic loader relocating that
//! large binary (most of an executor's start and its page faults) and the
//! relocated pages, private to each executor. A fork of the launcher starts
//! with all of that done, and its executors share those pages with it
//! copy-on-write.
//!
//! Protocol, over a `SOCK_SEQPACKET` socket pair (the launcher's stdin): the
//! agent sends the sandbox path with the executor's stdin, stdout and stderr
//! as `SCM_RIGHTS`; the launcher answers with the executor's pid (4 bytes,
//! 0 when the fork failed) and a pidfd for it. A forked executor keeps the
//! launcher's command line (`executor --launcher`) and works in its sandbox
//! directory: that tells which task it serves (the sweep of orphan cgroups
//! finds live executors so, and by `--sandbox DIR` for those the agent
//! started itself). The launcher exits when the agent's end closes; its executors live on, in
//! their own sessions, and the kernel reaps them (SIGCHLD is ignored): the
//! agent learns of their end through the pidfd, as for an executor it did
//! not start (after a restart).

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use std::ffi::{OsStr, OsString};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The flag that makes the executor command a launcher.
pub const LAUNCHER_FLAG: &str = "--launcher";
/// Longest sandbox path a request carries.
const MAX_PATH: usize = 4096;

/// The agent's handle on its launcher. Dropping it ends the launcher.
pub struct Launcher {
    sock: OwnedFd,
    child: Option<Child>,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // The launcher exits on EOF: closing our end (with `self`) ends it;
        // reaped off this thread.
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
            std::thread::spawn(move || child.wait());
        }
    }
}

impl Launcher {
    /// Starts `executor` (program and leading args) with `--launcher`.
    pub fn start(executor: &[OsString]) -> std::io::Result<Launcher> {
        let (program, args) = executor.split_first().ok_or_else(|| std::io::Error::other("no executor command"))?;
        let (ours, theirs) =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(errno)?;
        let child = Command::new(program)
            .args(args)
            .arg(LAUNCHER_FLAG)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .spawn()?;
        Ok(Launcher { sock: ours, child: Some(child) })
    }

    /// Has the launcher fork an executor for `sandbox` with this stdio;
    /// returns its pid and a pidfd for it.
    pub fn launch(&self, sandbox: &Path, stdio: [BorrowedFd<'_>; 3]) -> Result<(u32, OwnedFd), LaunchError> {
        let path = sandbox.as_os_str().as_bytes();
        if path.len() > MAX_PATH {
            return Err(LaunchError::NotSent(std::io::Error::other("sandbox path too long")));
        }
        let fds = stdio.map(|f| f.as_raw_fd());
        let cmsg = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(self.sock.as_raw_fd(), &[IoSlice::new(path)], &cmsg, MsgFlags::empty(), None)
            .map_err(|e| LaunchError::NotSent(errno(e)))?;
        self.answer().map_err(LaunchError::Unanswered)
    }

    fn answer(&self) -> std::io::Result<(u32, OwnedFd)> {
        let mut buf = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = loop {
                match recvmsg::<()>(self.sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    r => break r.map_err(errno)?,
                }
            };
            (msg.bytes, received_fds(&msg))
        };
        let mut fds = fds.into_iter();
        let pid = u32::from_ne_bytes(buf);
        match (n, pid, fds.next()) {
            (4, pid, Some(pidfd)) if pid > 0 => Ok((pid, pidfd)),
            (0, ..) => Err(std::io::Error::other("the executor launcher is gone")),
            _ => Err(std::io::Error::other("the executor launcher could not fork")),
        }
    }
}

/// Why a launch through the launcher failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The request never reached the launcher: nothing was forked.
    #[error("sending to the executor launcher: {0}")]
    NotSent(std::io::Error),
    /// Sent, but no answer: an executor may have been forked.
    #[error("no answer from the executor launcher: {0}")]
    Unanswered(std::io::Error),
}

fn errno(e: nix::errno::Errno) -> std::io::Error {
    std::io::Error::from(e)
}

/// The file descriptors a message carried, owned.
fn received_fds(msg: &nix::sys::socket::RecvMsg<'_, '_, ()>) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel installed these fds in this process for us.
                out.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
    }
    out
}

/// The launcher's body (`executor --launcher`): serves requests on stdin
/// until the agent closes it. Never returns in a forked executor.
pub fn launcher_main() -> i32 {
    // SAFETY: dispositions without handler code. Ignoring SIGCHLD makes the
    // kernel reap the executors; SIGPIPE: a gone agent shows as EPIPE.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // SAFETY: fd 0 is the socket the agent gave us; we own it from here.
    let sock = unsafe { OwnedFd::from_raw_fd(0) };
    loop {
        let mut buf = vec![0u8; MAX_PATH];
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let (n, fds) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
                Ok(msg) => (msg.bytes, received_fds(&msg)),
            }
        };
        if n == 0 {
            return 0;
        }
        let sandbox = Path::new(OsStr::from_bytes(&buf[..n])).to_path_buf();
        let reply = match <[OwnedFd; 3]>::try_from(fds) {
            // SAFETY: single-threaded: the child may run any code.
            Ok(stdio) => match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => executor_child(sock, stdio, &sandbox),
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    let pid = child.as_raw() as u32;
                    pidfd_open(pid).map(|fd| (pid, fd)).ok()
                }
                Err(_) => None,
            },
            Err(_) => None,
        };
        let sent = match &reply {
            Some((pid, pidfd)) => {
                let fds = [pidfd.as_raw_fd()];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&pid.to_ne_bytes())], &cmsg, MsgFlags::empty(), None)
            }
            None => sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&0u32.to_ne_bytes())], &[], MsgFlags::empty(), None),
        };
        if sent.is_err() {
            return 1;
        }
    }
}

/// The forked executor: default SIGCHLD, its stdio in place, its sandbox
/// as its working directory; then the executor.
fn executor_child(sock: OwnedFd, stdio: [OwnedFd; 3], sandbox: &Path) -> ! {
    drop(sock);
    // SAFETY: restoring defaults; dup2 onto 0-2 of fds we own.
    unsafe {
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for (i, fd) in stdio.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), i as i32) < 0 {
                libc::_exit(127);
            }
        }
    }
    drop(stdio);
    // Says which task this executor serves (see `live_executor_tasks`):
    // its command line is the launcher's.
    if std::env::set_current_dir(sandbox).is_err() {
        // SAFETY: plain exit of a forked child.
        unsafe { libc::_exit(127) };
    }
    std::process::exit(crate::executor_main(sandbox))
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
