//! Waking a follower when something in a sandbox changes (inotify on the
//! directory: writes, new files and renames of its files), so following a
//! log neither polls nor lags.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use tokio::io::unix::AsyncFd;

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct DirWatch {
    fd: AsyncFd<Fd>,
}

impl DirWatch {
    /// Watches `dir`; create it before reading, so no change is missed.
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        ino.add_watch(
            dir,
            AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE_SELF,
        )?;
        // SAFETY: the AsyncFd owns the Inotify, so the fd stays open and
        // the same for as long as it is registered.
        let fd = unsafe { AsyncFd::register(Fd(ino)) }.map_err(|e| e.into_parts().1)?;
        Ok(DirWatch { fd })
    }

    /// Returns after the next change (or at once if one happened since the
    /// last call).
    pub async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}
