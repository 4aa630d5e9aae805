//! The Raft log's entries on disk: an append-only, segmented file.
//!
//! A redb commit of a few entries wrote ~12 scattered pages before its
//! fsync; here a batch is one sequential write into a preallocated segment
//! and one `fdatasync`, which then has no file size or block map to update
//! (as etcd's WAL does). Written here rather than taken from a crate:
//! `raft-engine` brings protobuf, compression and its own entry trait, and
//! `okaywal` is checkpoint-shaped with no way to cut the log's tail, which
//! Raft needs (`truncate`).
//!
//! Layout: `<dir>/<seq:016x>.wal` segments, each preallocated to
//! `segment_size` with `fallocate` and written in place over the zeros.
//! A record is `len: u32 LE | crc32(kind, body): u32 LE | kind: u8 | body`;
//! the body is an entry's JSON or a commit index's (a restart hint that
//! rides on the next batch's sync). A zero header ends a segment's data.
//! At open the segments are replayed in order; the first record that is
//! torn, fails its checksum or breaks the run of indexes ends the log, and
//! everything after it is cut (the rest of that segment zeroed, later
//! segments deleted): a batch is acknowledged only after its sync, so
//! nothing acknowledged lies past a bad record. The cut zeroes the tail so
//! that stale records can never line up after later appends; a `truncate`
//! does the same. `purge` drops whole segments; the caller keeps the purged
//! id (entries at or below it that share a segment with newer ones are
//! hidden, not erased).
//!
//! The next segment is made ahead, on a thread of its own (created,
//! preallocated, synced, its directory entry synced), so that rolling over
//! is a switch of files on the write path instead of two fsyncs there. It
//! lies on disk under its final name, all zeros; a reopen takes an empty
//! last segment after others as the one made ahead again, so appends go
//! on where the last entries are.

use crate::raft_types::{Entry, LogId};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Preallocated size of a segment: big enough that rolling to a new one
/// (a file creation and a directory sync) is rare.
pub(crate) const SEGMENT_SIZE: u64 = 8 << 20;

const HEADER: usize = 9;
const KIND_ENTRY: u8 = 1;
const KIND_COMMITTED: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("raft log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("raft log record cannot be encoded or decoded: {0}")]
    Codec(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io { path: path.to_path_buf(), source }
}

/// Where one entry's body lies.
#[derive(Clone, Copy, Debug)]
struct Loc {
    id: LogId,
    /// Offset of the record's header in its segment.
    at: u64,
    /// Length of the body (the JSON after the header).
    len: u32,
}

struct Segment {
    seq: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where the next record goes.
    end: u64,
    /// Bytes preallocated (more when one record was larger).
    capacity: u64,
    /// Its entries, contiguous by index.
    entries: Vec<Loc>,
}

/// The log's segments; the last one takes appends.
pub(crate) struct Wal {
    dir: PathBuf,
    segment_size: u64,
    segments: Vec<Segment>,
    /// Entries at or below this index are purged (hidden from reads).
    purged: Option<u64>,
    /// The last commit index written (or read back at open).
    committed: Option<Option<LogId>>,
    /// The next segment, made ahead (see the module's doc).
    spare: Option<Ahead>,
}

enum Ahead {
    Making(std::thread::JoinHandle<Result<Spare, WalError>>),
    Made(Spare),
}

/// A segment made ahead: empty, preallocated, durable by name.
struct Spare {
    seq: u64,
    path: PathBuf,
    file: File,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Not left running: a reopen of the directory would race with it.
        if let Some(Ahead::Making(h)) = self.spare.take() {
            let _ = h.join();
        }
    }
}

/// Records of one append not yet written to their segment.
struct Batch {
    buf: Vec<u8>,
    locs: Vec<Loc>,
    unsynced: Unsynced,
}

/// Files written since their last sync: syncing them makes a batch durable.
pub(crate) struct Unsynced(Vec<(PathBuf, Arc<File>)>);

impl Unsynced {
    /// `fdatasync` of every file written, oldest segment first.
    pub(crate) fn sync(self) -> Result<(), WalError> {
        for (path, f) in &self.0 {
            f.sync_data().map_err(io(path))?;
        }
        Ok(())
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

/// Reserves `[0, len)` of `f` so writes into it change no metadata; where
/// the file system cannot, a plain (sparse) size does.
fn preallocate(f: &File, len: u64) -> std::io::Result<()> {
    let n = i64::try_from(len).map_err(std::io::Error::other)?;
    match nix::fcntl::fallocate(f.as_raw_fd(), nix::fcntl::FallocateFlags::empty(), 0, n) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP) => f.set_len(len.max(f.metadata()?.len())),
        Err(e) => Err(e.into()),
    }
}

/// Segment `seq` in `dir`, empty and preallocated to `size`, durable by
/// name.
fn make_segment(dir: &Path, seq: u64, size: u64) -> Result<Spare, WalError> {
    let path = segment_path(dir, seq);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).map_err(io(&path))?;
    preallocate(&file, size).map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    sync_dir(dir)?;
    Ok(Spare { seq, path, file })
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn encode(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(body);
    // Bodies are far below 4 GiB (RPC bodies are capped at 64 MiB).
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

/// One valid record at `at` in `data`: its kind, body and length in total;
/// `None` at the end of the data or where a record is torn or corrupt.
fn decode(data: &[u8], at: usize) -> Option<(u8, &[u8], usize)> {
    let head = data.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let kind = head[8];
    if kind != KIND_ENTRY && kind != KIND_COMMITTED {
        return None;
    }
    let body = data.get(at + HEADER..at + HEADER + len)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(body);
    (h.finalize() == crc).then_some((kind, body, HEADER + len))
}

/// What a replay found in one segment's bytes.
struct Scanned {
    entries: Vec<Loc>,
    /// Where the valid records end.
    end: u64,
    /// A record was bad (or broke the run of indexes) before the data's end.
    cut: bool,
    committed: Option<Option<LogId>>,
}

/// Reads the valid records of `data`; `next` is the index the next entry
/// must have (`None`: any), `purged` the purged index.
fn scan(data: &[u8], next: &mut Option<u64>, purged: Option<u64>) -> Result<Scanned, WalError> {
    let mut s = Scanned { entries: Vec::new(), end: 0, cut: false, committed: None };
    let mut at = 0usize;
    loop {
        let Some((kind, body, size)) = decode(data, at) else {
            // Zeros to the end are the preallocated rest; anything else is a
            // torn or corrupt tail.
            s.cut = data.get(at..).is_some_and(|rest| rest.iter().any(|b| *b != 0));
            break;
        };
        if kind == KIND_ENTRY {
            let e: Entry = match serde_json::from_slice(body) {
                Ok(e) => e,
                Err(_) => {
                    s.cut = true;
                    break;
                }
            };
            let index = e.log_id.index;
            // After the purged id, indexes run on without a gap (a purge
            // that leaves none in the last segment starts a new one).
            let want = match (*next, purged) {
                (Some(n), Some(p)) if index > p => Some(n.max(p + 1)),
                (Some(n), None) => Some(n),
                _ => None,
            };
            if want.is_some_and(|w| w != index) {
                s.cut = true;
                break;
            }
            *next = Some(index + 1);
            s.entries.push(Loc { id: e.log_id, at: at as u64, len: (size - HEADER) as u32 });
        } else {
            match serde_json::from_slice(body) {
                Ok(c) => s.committed = Some(c),
                Err(_) => {
                    s.cut = true;
                    break;
                }
            }
        }
        at += size;
    }
    s.end = at as u64;
    Ok(s)
}

impl Wal {
    /// Opens (or creates) the log in `dir`, entries up to `purged` being
    /// purged, and cuts whatever follows the last valid record.
    pub(crate) fn open(dir: &Path, segment_size: u64, purged: Option<u64>) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut seqs: Vec<u64> = Vec::new();
        for item in std::fs::read_dir(dir).map_err(io(dir))? {
            let name = item.map_err(io(dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(seq) = name.strip_suffix(".wal").and_then(|s| u64::from_str_radix(s, 16).ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut wal =
            Wal { dir: dir.to_path_buf(), segment_size, segments: Vec::new(), purged, committed: None, spare: None };
        let mut next = None;
        let mut cut = false;
        for seq in seqs {
            let path = segment_path(dir, seq);
            if cut {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            let data = std::fs::read(&path).map_err(io(&path))?;
            let s = scan(&data, &mut next, purged)?;
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io(&path))?;
            let capacity = (data.len() as u64).max(segment_size);
            if s.committed.is_some() {
                wal.committed = s.committed;
            }
            cut = s.cut;
            wal.segments.push(Segment { seq, path, file: Arc::new(file), end: s.end, capacity, entries: s.entries });
        }
        // Always: a segment made ahead by an earlier run may be durable by
        // name only once this sync is done, and appends may go into it.
        sync_dir(dir)?;
        // An empty last segment after one with live entries was made ahead:
        // appends go on in the one before it. (After a purge of everything,
        // the empty one is where they go.)
        let n = wal.segments.len();
        let live = |s: &Segment| s.entries.last().is_some_and(|l| purged.is_none_or(|p| l.id.index > p));
        if n > 1 && wal.segments[n - 1].entries.is_empty() && wal.segments[n - 1].end == 0 && live(&wal.segments[n - 2])
        {
            if let Some(seg) = wal.segments.pop() {
                zero_from(&seg.file, 0, segment_size).map_err(io(&seg.path))?;
                let file = Arc::try_unwrap(seg.file).map_err(|_| WalError::Io {
                    path: seg.path.clone(),
                    source: std::io::Error::other("segment file still shared"),
                })?;
                wal.spare = Some(Ahead::Made(Spare { seq: seg.seq, path: seg.path, file }));
            }
        }
        // Zero whatever lies past the last valid record, so that nothing
        // stale can ever read as a record after later appends.
        match wal.segments.last() {
            Some(last) => {
                let (end, cap, path, file) = (last.end, last.capacity, last.path.clone(), last.file.clone());
                zero_from(&file, end, cap).map_err(io(&path))?;
            }
            None => wal.roll()?,
        }
        wal.drop_purged()?;
        wal.make_spare();
        Ok(wal)
    }

    /// Appends `entries` and, after them, the commit index `committed`.
    /// Durable once the returned files are synced.
    pub(crate) fn append(
        &mut self,
        entries: &[&Entry],
        committed: Option<Option<LogId>>,
    ) -> Result<Unsynced, WalError> {
        let mut batch = Batch { buf: Vec::new(), locs: Vec::new(), unsynced: Unsynced(Vec::new()) };
        let mut body = Vec::new();
        for e in entries {
            body.clear();
            serde_json::to_writer(&mut body, e)?;
            self.push(&mut batch, KIND_ENTRY, &body, Some(e.log_id))?;
        }
        if let Some(c) = committed {
            body.clear();
            serde_json::to_writer(&mut body, &c)?;
            self.push(&mut batch, KIND_COMMITTED, &body, None)?;
            self.committed = Some(c);
        }
        self.flush(&mut batch)?;
        Ok(batch.unsynced)
    }

    /// Adds one record to `batch`, first writing out what it holds and
    /// rolling to a new segment when the record would not fit.
    fn push(&mut self, batch: &mut Batch, kind: u8, body: &[u8], id: Option<LogId>) -> Result<(), WalError> {
        let size = (HEADER + body.len()) as u64;
        let seg = self.tail()?;
        let used = seg.end + batch.buf.len() as u64;
        if used + size > seg.capacity && used > 0 {
            self.flush(batch)?;
            self.roll()?;
        }
        let seg = self.tail()?;
        if let Some(id) = id {
            batch.locs.push(Loc { id, at: seg.end + batch.buf.len() as u64, len: body.len() as u32 });
        }
        encode(kind, body, &mut batch.buf);
        Ok(())
    }

    fn tail(&mut self) -> Result<&mut Segment, WalError> {
        if self.segments.is_empty() {
            self.roll()?;
        }
        let last = self.segments.len().saturating_sub(1);
        self.segments
            .get_mut(last)
            .ok_or_else(|| WalError::Io { path: self.dir.clone(), source: std::io::Error::other("no segment") })
    }

    /// Writes the batch's records at the end of the last segment.
    fn flush(&mut self, batch: &mut Batch) -> Result<(), WalError> {
        if batch.buf.is_empty() {
            return Ok(());
        }
        let seg = self.tail()?;
        seg.file.write_all_at(&batch.buf, seg.end).map_err(io(&seg.path))?;
        seg.end += batch.buf.len() as u64;
        seg.capacity = seg.capacity.max(seg.end);
        seg.entries.append(&mut batch.locs);
        if !batch.unsynced.0.iter().any(|(p, _)| *p == seg.path) {
            batch.unsynced.0.push((seg.path.clone(), seg.file.clone()));
        }
        batch.buf.clear();
        Ok(())
    }

    /// Starts a new, preallocated segment (durable by name before use):
    /// the one made ahead when it is there, then makes the next ahead.
    fn roll(&mut self) -> Result<(), WalError> {
        let seq = self.segments.last().map_or(0, |s| s.seq + 1);
        let spare = match self.take_spare() {
            // Later than `seq` after a truncate dropped segments: any
            // sequence that only grows orders the segments.
            Some(Ok(s)) if s.seq >= seq => Some(s),
            Some(Ok(s)) => {
                std::fs::remove_file(&s.path).map_err(io(&s.path))?;
                None
            }
            // Made on this thread instead (the error, if it lasts, shows there).
            Some(Err(e)) => {
                tracing::warn!(reason = %e, "the next Raft log segment could not be made ahead");
                None
            }
            None => None,
        };
        let Spare { seq, path, file } = match spare {
            Some(s) => s,
            None => make_segment(&self.dir, seq, self.segment_size)?,
        };
        self.segments.push(Segment {
            seq,
            path,
            file: Arc::new(file),
            end: 0,
            capacity: self.segment_size,
            entries: Vec::new(),
        });
        self.make_spare();
        Ok(())
    }

    /// Starts making the segment after the last one, off the write path.
    fn make_spare(&mut self) {
        if self.spare.is_some() {
            return;
        }
        let seq = self.segments.last().map_or(0, |s| s.seq + 1);
        let (dir, size) = (self.dir.clone(), self.segment_size);
        // Without a thread, the next roll makes it itself.
        self.spare = std::thread::Builder::new()
            .name("raft-log-segment".into())
            .spawn(move || make_segment(&dir, seq, size))
            .ok()
            .map(Ahead::Making);
    }

    /// The segment made ahead, waiting for it if it is being made; `None`
    /// when none is (or its thread died).
    fn take_spare(&mut self) -> Option<Result<Spare, WalError>> {
        match self.spare.take()? {
            Ahead::Making(h) => h.join().ok(),
            Ahead::Made(s) => Some(Ok(s)),
        }
    }

    /// The path of the segment made ahead, once made (tests).
    #[cfg(test)]
    pub(crate) fn spare_path(&mut self) -> Option<PathBuf> {
        let s = self.take_spare()?.ok()?;
        let path = s.path.clone();
        self.spare = Some(Ahead::Made(s));
        Some(path)
    }

    /// Removes the entries from `index` on; durable on return.
    pub(crate) fn truncate(&mut self, index: u64) -> Result<(), WalError> {
        let found = self.segments.iter().enumerate().find_map(|(i, s)| {
            let pos = s.entries.iter().position(|l| l.id.index >= index)?;
            Some((i, pos))
        });
        let Some((cut, pos)) = found else { return Ok(()) };
        // Newest first, so a crash midway leaves a log that ends earlier,
        // never one with a hole.
        while self.segments.len() > cut + 1 {
            if let Some(seg) = self.segments.pop() {
                std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            }
        }
        sync_dir(&self.dir)?;
        let seg = &mut self.segments[cut];
        let at = seg.entries[pos].at;
        zero_from(&seg.file, at, seg.capacity).map_err(io(&seg.path))?;
        seg.end = at;
        seg.entries.truncate(pos);
        Ok(())
    }

    /// Drops the entries up to `index` (whole segments of them; the rest
    /// are hidden). The caller has stored the purged id durably first.
    pub(crate) fn purge(&mut self, index: u64) -> Result<(), WalError> {
        self.purged = self.purged.max(Some(index));
        // Entries after the purge must follow it without a gap: a log all
        // purged starts a new segment.
        if self.segments.last().is_some_and(|s| s.entries.last().is_some_and(|l| l.id.index <= index)) {
            self.roll()?;
        }
        self.drop_purged()
    }

    /// Deletes every segment but the last whose entries are all purged.
    fn drop_purged(&mut self) -> Result<(), WalError> {
        let Some(purged) = self.purged else { return Ok(()) };
        let mut dropped = false;
        while self.segments.len() > 1 && self.segments[0].entries.last().is_none_or(|l| l.id.index <= purged) {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
            dropped = true;
        }
        if dropped {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Drops every entry (before migrating a log in).
    pub(crate) fn clear(&mut self) -> Result<(), WalError> {
        self.truncate(0)
    }

    /// The entries with indexes in `[start, end)` that are not purged.
    pub(crate) fn read(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, WalError> {
        let from = start.max(self.purged.map_or(0, |p| p + 1));
        let mut out = Vec::new();
        for seg in &self.segments {
            let (Some(first), Some(last)) = (seg.entries.first(), seg.entries.last()) else { continue };
            if last.id.index < from || end.is_some_and(|e| first.id.index >= e) {
                continue;
            }
            for loc in &seg.entries {
                if loc.id.index < from || end.is_some_and(|e| loc.id.index >= e) {
                    continue;
                }
                let mut body = vec![0; loc.len as usize];
                seg.file.read_exact_at(&mut body, loc.at + HEADER as u64).map_err(io(&seg.path))?;
                out.push(serde_json::from_slice(&body)?);
            }
        }
        Ok(out)
    }

    /// Bytes the log holds after entry `index` (all of it for `None`),
    /// commit records between them included: what a snapshot at `index`
    /// would let go, for the snapshot cadence.
    pub(crate) fn bytes_after(&self, index: Option<u64>) -> u64 {
        let next = index.map_or(0, |i| i + 1);
        self.segments
            .iter()
            .filter_map(|seg| {
                let first = seg.entries.first()?.id.index;
                // Contiguous by index: the first entry after `index` is found
                // by position.
                let pos = usize::try_from(next.saturating_sub(first)).ok()?;
                seg.entries.get(pos).map(|loc| seg.end.saturating_sub(loc.at))
            })
            .sum()
    }

    /// The last entry's id (purged or not).
    pub(crate) fn last(&self) -> Option<LogId> {
        self.segments.iter().rev().find_map(|s| s.entries.last()).map(|l| l.id)
    }

    /// The last commit index written (or read back at open).
    pub(crate) fn committed(&self) -> Option<Option<LogId>> {
        self.committed
    }

    /// How many segment files the log has.
    #[cfg(test)]
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Cuts `f` at `at` and preallocates it to `capacity` again: everything
/// from `at` on reads as zeros, durably.
fn zero_from(f: &File, at: u64, capacity: u64) -> std::io::Result<()> {
    f.set_len(at)?;
    preallocate(f, capacity)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::{Wal, WalError};
    use crate::raft_types::{Entry, LogId};
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::os::unix::fs::FileExt;

    fn blank(term: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Blank }
    }

    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.log_id.leader_id.term, e.log_id.index)).collect()
    }

    fn append(wal: &mut Wal, entries: &[Entry]) -> Result<(), WalError> {
        let refs: Vec<&Entry> = entries.iter().collect();
        wal.append(&refs, None)?.sync()
    }

    fn run(term: u64, from: u64, to: u64) -> Vec<Entry> {
        (from..=to).map(|i| blank(term, i)).collect()
    }

    fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir).expect("dir").map(|e| e.expect("entry").path()).collect();
        v.sort();
        v
    }

    /// The segment files on disk besides the one made ahead.
    fn in_use(wal: &mut Wal, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let spare = wal.spare_path().expect("the next segment is made ahead");
        let files = segments(dir);
        assert!(files.contains(&spare), "the segment made ahead is on disk");
        files.into_iter().filter(|f| *f != spare).collect()
    }

    #[test]
    fn rolling_over_takes_the_segment_made_ahead_and_a_reopen_keeps_appending_where_the_entries_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 4096, None).expect("open");
        append(&mut wal, &run(1, 1, 5)).expect("append");
        let next = wal.spare_path().expect("made ahead at open");
        assert_eq!(std::fs::metadata(&next).expect("on disk").len(), 4096, "preallocated");
        // Enough to fill the first segment.
        append(&mut wal, &run(1, 6, 60)).expect("append");
        assert!(wal.segment_count() > 1);
        assert_eq!(wal.segments[1].path, next, "the roll took the segment made ahead");
        let after = wal.spare_path().expect("the one after is made ahead too");
        assert!(after > next);
        drop(wal);
        // Reopened with the one made ahead on disk, empty: it stays the
        // next one, and the entries go on in the segment before it.
        let mut wal = Wal::open(dir.path(), 4096, None).expect("reopen");
        let segs = wal.segment_count();
        assert_eq!(wal.spare_path(), Some(after));
        append(&mut wal, &run(1, 61, 62)).expect("append");
        assert_eq!(wal.segment_count(), segs);
        drop(wal);
        let wal = Wal::open(dir.path(), 4096, None).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 62)));
    }

    #[test]
    fn appended_entries_read_back_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 1 << 20, None).expect("open");
        append(&mut wal, &run(1, 1, 10)).expect("append");
        let committed = Some(blank(1, 7).log_id);
        wal.append(&[], Some(committed)).expect("commit index").sync().expect("sync");
        assert_eq!(ids(&wal.read(3, Some(6)).expect("read")), vec![(1, 3), (1, 4), (1, 5)]);
        drop(wal);
        let wal = Wal::open(dir.path(), 1 << 20, None).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 10)));
        assert_eq!(wal.last(), Some(blank(1, 10).log_id));
        assert_eq!(wal.committed(), Some(committed));
    }

    #[test]
    fn bytes_after_an_index_count_what_follows_it_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 4096, None).expect("open");
        append(&mut wal, &run(1, 1, 100)).expect("append");
        assert!(wal.segment_count() > 1, "spans segments");
        let all = wal.bytes_after(None);
        let on_disk: u64 = wal.segments.iter().map(|s| s.end).sum();
        assert_eq!(all, on_disk);
        let half = wal.bytes_after(Some(50));
        assert!(half > 0 && half < all);
        // Same-sized records: about half the bytes follow the 50th.
        assert!(half.abs_diff(all / 2) < all / 10, "{half} of {all}");
        assert_eq!(wal.bytes_after(Some(100)), 0);
        assert_eq!(wal.bytes_after(Some(500)), 0);
        wal.purge(60).expect("purge");
        assert!(wal.bytes_after(Some(60)) < half, "entries after 60 are fewer than after 50");
    }

    #[test]
    fn segments_roll_over_and_purge_drops_whole_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        // ~100 bytes a record: a few dozen per segment.
        let mut wal = Wal::open(dir.path(), 4096, None).expect("open");
        for i in 0..10 {
            append(&mut wal, &run(1, i * 30 + 1, i * 30 + 30)).expect("append");
        }
        let before = wal.segment_count();
        assert!(before > 5, "{before} segments");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 300)));
        wal.purge(150).expect("purge");
        assert!(wal.segment_count() < before && wal.segment_count() > 1);
        assert_eq!(in_use(&mut wal, dir.path()).len(), wal.segment_count(), "purged segments are deleted");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 151, 300)));
        drop(wal);
        let mut wal = Wal::open(dir.path(), 4096, Some(150)).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 151, 300)));
        // A snapshot past the log's end purges everything: the log goes on
        // after it, and reopens so.
        wal.purge(1000).expect("purge all");
        assert_eq!(wal.segment_count(), 1);
        assert!(wal.read(0, None).expect("read").is_empty());
        append(&mut wal, &run(2, 1001, 1003)).expect("append after a gap");
        drop(wal);
        let wal = Wal::open(dir.path(), 4096, Some(1000)).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(2, 1001, 1003)));
    }

    #[test]
    fn truncated_entries_never_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 4096, None).expect("open");
        append(&mut wal, &run(1, 1, 100)).expect("append");
        wal.truncate(60).expect("truncate");
        assert_eq!(wal.last(), Some(blank(1, 59).log_id));
        // Same-sized records from a newer term: the old ones after them
        // would line up exactly if they were still on disk.
        append(&mut wal, &run(2, 60, 61)).expect("append");
        drop(wal);
        let mut wal = Wal::open(dir.path(), 4096, None).expect("reopen");
        let mut want = ids(&run(1, 1, 59));
        want.extend(ids(&run(2, 60, 61)));
        assert_eq!(ids(&wal.read(0, None).expect("read")), want);
        // A cut in an older segment deletes the newer ones.
        wal.truncate(5).expect("truncate");
        assert_eq!(wal.segment_count(), 1);
        assert_eq!(in_use(&mut wal, dir.path()).len(), 1);
        drop(wal);
        let wal = Wal::open(dir.path(), 4096, None).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 4)));
    }

    #[test]
    fn a_torn_or_garbage_tail_is_cut_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::open(dir.path(), 1 << 20, None).expect("open");
        append(&mut wal, &run(1, 1, 20)).expect("append");
        let end = wal.segments[0].end;
        let last_at = wal.segments[0].entries[19].at;
        drop(wal);
        let path = segments(dir.path())[0].clone();
        let write_at = |bytes: &[u8], at: u64| {
            let f = std::fs::OpenOptions::new().write(true).open(&path).expect("segment");
            f.write_all_at(bytes, at).expect("write");
        };
        let zeros_after = |valid: u64| std::fs::read(&path).expect("read")[valid as usize..].iter().all(|b| *b == 0);
        // A crash mid-batch where a later page of the batch reached the
        // disk and the first did not: zeros, then a stray record's bytes.
        write_at(b"{\"log_id\":", end + 4000);
        let mut wal = Wal::open(dir.path(), 1 << 20, None).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 20)));
        assert!(zeros_after(end), "the stray page is zeroed");
        append(&mut wal, &run(1, 21, 22)).expect("append after the cut");
        let end = wal.segments[0].end;
        drop(wal);
        // Garbage right after the last record.
        write_at(&[0xAB; 300], end);
        let wal = Wal::open(dir.path(), 1 << 20, None).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 22)));
        assert!(zeros_after(end), "the garbage is zeroed");
        drop(wal);
        // A record torn in its middle (its checksum fails) is cut with
        // everything after it.
        write_at(b"X", last_at + 12);
        let wal = Wal::open(dir.path(), 1 << 20, None).expect("reopen");
        assert_eq!(ids(&wal.read(0, None).expect("read")), ids(&run(1, 1, 19)));
        assert!(zeros_after(wal.segments[0].end), "everything past the last valid record is zeroed");
    }
}
