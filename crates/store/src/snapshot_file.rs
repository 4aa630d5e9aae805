//! A snapshot's body on disk: one file beside the database, written in
//! slices that each reach the disk before the next is written
//! (`sync_file_range`), then synced and renamed into place. Handing a
//! snapshot of tens of megabytes to the disk in one go (as a redb commit
//! does) queues it in front of the Raft log's next fsync, which then waits
//! for all of it: a write stalled for tens of milliseconds on every node.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Bytes written before waiting for them to reach the disk: small enough
/// that a log fsync behind them waits about a millisecond.
const SLICE: usize = 1 << 20;

/// The file holding the snapshot named `name` in `dir`.
pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A file name for the snapshot after `index` with a body of `len` bytes.
pub(crate) fn name(index: Option<u64>, len: usize) -> String {
    match index {
        Some(i) => format!("snapshot-{i}-{len}.json"),
        None => format!("snapshot-none-{len}.json"),
    }
}

/// Writes `data` as `dir/name`, durably (file and directory entry), a
/// slice at a time.
pub(crate) fn write(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    let mut at = 0usize;
    for slice in data.chunks(SLICE) {
        f.write_all(slice)?;
        written_back(&f, at, slice.len())?;
        at += slice.len();
    }
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, path(dir, name))?;
    File::open(dir)?.sync_all()
}

/// Waits until the `len` bytes at `at` are written back to the disk.
fn written_back(f: &File, at: usize, len: usize) -> std::io::Result<()> {
    // No crate wraps sync_file_range(2) (nix does not); it is one call.
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    let (off, n) = (i64::try_from(at).unwrap_or(i64::MAX), i64::try_from(len).unwrap_or(i64::MAX));
    // SAFETY: the descriptor is open for the whole call; no memory is passed.
    let rc = unsafe { libc::sync_file_range(f.as_raw_fd(), off, n, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads the snapshot `name` in `dir`.
pub(crate) fn read(dir: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(path(dir, name))
}

/// Removes every finished snapshot file in `dir` but `keep`. Files still
/// being written (`.tmp`) stay: a snapshot built and one installed may be
/// written at once. A file that cannot be removed stays for the next time.
pub(crate) fn remove_others(dir: &Path, keep: &str) {
    remove_where(dir, |name| name != keep && !name.ends_with(".tmp"));
}

/// Removes the snapshot file `name` in `dir`, if it can.
pub(crate) fn remove(dir: &Path, name: &str) {
    let _ = std::fs::remove_file(path(dir, name));
}

/// Removes writes cut off half-way (at open, before anything writes).
pub(crate) fn remove_partial(dir: &Path) {
    remove_where(dir, |name| name.ends_with(".tmp"));
}

fn remove_where(dir: &Path, remove: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_str().is_some_and(&remove) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_of_several_slices_reads_back_whole_and_older_files_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body: Vec<u8> = (0..(SLICE * 2 + 123)).map(|i| (i % 251) as u8).collect();
        write(dir.path(), "old.json", b"{}").expect("write");
        let n = name(Some(7), body.len());
        write(dir.path(), &n, &body).expect("write");
        assert_eq!(read(dir.path(), &n).expect("read"), body);
        // Another snapshot being written meanwhile keeps its file.
        std::fs::write(dir.path().join("other.json.tmp"), b"{").expect("partial");
        remove_others(dir.path(), &n);
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        left.sort();
        assert_eq!(left, vec![std::ffi::OsString::from("other.json.tmp"), std::ffi::OsString::from(&n)]);
        remove_partial(dir.path());
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from(&n)]);
    }
}
