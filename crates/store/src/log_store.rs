//! The Raft log: entries and the commit index in an append-only log file
//! (`wal`), the vote and the purged id in redb (rare writes).
//!
//! Appends are group-committed: `append` hands entries to one writer thread
//! and returns; the thread writes everything queued meanwhile in one write
//! to the log file and one fdatasync, and only then fires each batch's
//! flush callback — so an acknowledged write is on disk, and concurrent
//! writers share fsyncs instead of queueing behind one each. A follower's
//! entries, when nothing is queued before them, are written and synced by
//! the appending task itself (`append_inline`): openraft waits for that
//! append before it answers the leader anyway, so the hand-off to the
//! writer and back only added two wake-ups to every replicated write. Entries not yet
//! flushed, and the newest `KEEP_RECENT` flushed ones, are served to readers
//! from memory: replication reads what was just appended without a file
//! read and a JSON decode per entry. Truncate, purge and vote
//! writes first wait for the writer to drain, so operations stay ordered.
//! The commit index goes through the writer too, so saving it never waits
//! on a write (and its fsync) in flight: openraft's core awaits it on
//! every commit.
//!
//! A data directory from before the log file kept the entries in redb's
//! `raft_log` table: they move into the log file once, at open.
//!
//! A leader's own entries are acknowledged to openraft before their fsync
//! (`Durable`): openraft 0.9 starts replicating an entry only once the
//! leader's append is acknowledged, so an honest answer would put the
//! leader's fsync and the follower's one after another on every write.
//! Raft allows the leader to write its log in parallel with replication
//! (Ongaro's thesis, 10.2.1) as long as nothing treats an entry as
//! committed before a majority of the voters holds it on disk; openraft
//! counts the leader's early acknowledgement, so the leader's copy counts
//! only once it is durable. Two gates keep that true: `save_committed`,
//! which openraft awaits before it applies anything (and so before any
//! client is answered), and the network (`network::PeerClient`), before it
//! tells followers a commit index, both wait until the leader's
//! early-acknowledged entries up to the commit index are on disk on a
//! majority: the leader's own copy once its fsync is done, or, sooner when
//! the leader's disk is the slow one, a majority of the voters among the
//! followers, whose AppendEntries answers (`Durable::acked`) come only
//! after their fsync. Followers answer honestly.

use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::wal::{Wal, WalError};
use crate::StoreError;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// Where the entries were kept before the log file (read once, to migrate).
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// The newest entries, by index: every one handed to the writer but not yet
/// durable, and up to `KEEP_RECENT` durable ones before them. Always a
/// contiguous run that ends at the log's last entry (appends extend it,
/// truncate cuts its tail, purge its head), so a read starting inside it
/// needs nothing from the log file.
type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// Durable entries kept in memory for readers (replication to a follower
/// a few batches behind, the state machine's apply).
const KEEP_RECENT: usize = 1024;

enum Op {
    /// Entries and their flush callback; `None` when already acknowledged
    /// (a leader's own entries, see `Durable`).
    Append(Vec<Entry>, Option<LogFlushed<TypeConfig>>),
    /// Answered once everything queued before it is durable.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// The newest commit index, a restart hint written with the next batch.
    Committed(Option<LogId>),
}

#[derive(Clone)]
pub struct LogStore {
    /// Declared before `db`: dropped first, so the log file is let go of
    /// by the time redb's database is (a reopen waits for the latter).
    wal: Arc<Mutex<Wal>>,
    db: Arc<Database>,
    pending: Pending,
    writer: mpsc::Sender<Op>,
    /// The last commit index handed to the writer, for `read_committed`
    /// before the writer has stored it.
    committed: Arc<Mutex<Option<Option<LogId>>>>,
    /// This node's id: its entries as leader are acknowledged early.
    me: u64,
    /// The vote as last saved or read: who this node thinks leads.
    vote: Arc<Mutex<Option<Vote>>>,
    durable: Durable,
    /// Appends and barriers handed to the writer and not yet done: a
    /// follower's entries skip the writer only when none are, so the log
    /// file keeps the order of the appends.
    queued: Arc<AtomicUsize>,
    after: After,
}

/// A read of the log file's size that holds its lock only to add up its
/// segments (cheap to clone).
#[derive(Clone)]
pub(crate) struct LogSize(Arc<Mutex<Wal>>);

impl LogSize {
    /// Bytes the log holds after entry `index` (all of it for `None`).
    pub(crate) fn bytes_after(&self, index: Option<u64>) -> u64 {
        self.0.lock().map(|w| w.bytes_after(index)).unwrap_or(0)
    }
}

/// Where the entries this node acknowledged early are on disk, for those
/// that must not act on one before a majority holds it (cheap to clone).
#[derive(Clone)]
pub(crate) struct Durable {
    /// What the writer has made durable and what followers acknowledged.
    written: Arc<tokio::sync::watch::Sender<Written>>,
    /// The highest index acknowledged to openraft before its fsync.
    early: Arc<AtomicU64>,
    /// The term in which this node last acknowledged its own entries early.
    early_term: Arc<AtomicU64>,
    /// This node's id.
    me: u64,
}

#[derive(Clone, Debug, Default)]
struct Written {
    /// The last log index the writer has made durable (exact: lowered by a
    /// truncate).
    upto: u64,
    /// The log store failed: nothing more will be durable.
    failed: bool,
    /// Per follower, the last entry it answered an AppendEntries for (so
    /// it holds everything up to it, on disk, as this leader's log has it).
    acked: BTreeMap<u64, LogId>,
    /// The voters while a single configuration is in force; `None` while
    /// unknown or joint, when only the leader's own copy opens a gate.
    voters: Option<BTreeSet<u64>>,
    /// The log id of the membership entry `voters` comes from: an older
    /// view (openraft's metrics trail the log) never replaces a newer one.
    voters_at: Option<LogId>,
}

impl Written {
    /// Whether the early-acknowledged entries up to `target`, written by
    /// this node as leader of `term`, are on disk on a majority: the
    /// leader's own copy, or a majority of the voters without it.
    fn on_majority(&self, target: u64, term: u64, me: u64) -> bool {
        if self.upto >= target {
            return true;
        }
        let Some(voters) = &self.voters else { return false };
        // An answer covers the leader's entries only for the leader's own
        // term: one leader per term, so the follower's log up to it is
        // this log (Log Matching), and entries up to `target` were not cut
        // since (a truncate lowers `early`, and so `target`, below the cut).
        let holders = voters
            .iter()
            .filter(|v| **v != me)
            .filter_map(|v| self.acked.get(v))
            .filter(|a| a.leader_id.term == term && a.leader_id.node_id == me && a.index >= target)
            .count();
        holders > voters.len() / 2
    }
}

impl Durable {
    fn new(me: u64) -> Durable {
        Durable {
            written: Arc::new(tokio::sync::watch::channel(Written::default()).0),
            early: Arc::default(),
            early_term: Arc::default(),
            me,
        }
    }

    /// Waits until every entry up to `index` that was acknowledged early is
    /// on disk on a majority; at once when none was. An error when the log
    /// store failed.
    pub(crate) async fn wait(&self, index: u64) -> Result<(), std::io::Error> {
        let target = index.min(self.early.load(Ordering::Acquire));
        let term = self.early_term.load(Ordering::Acquire);
        let mut rx = self.written.subscribe();
        let seen =
            rx.wait_for(|w| w.failed || w.on_majority(target, term, self.me)).await.map_err(std::io::Error::other)?;
        if seen.failed {
            return Err(std::io::Error::other("the Raft log could not be written"));
        }
        Ok(())
    }

    /// Records that follower `target` answered an AppendEntries up to
    /// `last`: followers answer only once it is on their disk.
    pub(crate) fn acked(&self, target: u64, last: LogId) {
        self.written.send_if_modified(|w| match w.acked.get(&target) {
            Some(seen) if *seen >= last => false,
            _ => {
                w.acked.insert(target, last);
                true
            }
        });
    }

    /// The voters of the membership entry at `at`; `None` while a
    /// configuration change is under way (joint). Ignored when a newer
    /// membership entry was seen.
    pub(crate) fn set_voters(&self, at: Option<LogId>, voters: Option<BTreeSet<u64>>) {
        self.written.send_if_modified(|w| {
            if at < w.voters_at || (at == w.voters_at && voters == w.voters) {
                return false;
            }
            w.voters_at = at;
            w.voters = voters;
            true
        });
    }

    /// The voters of a membership entry this node appends, before openraft
    /// hears the entry is stored (so no gate counts with the old voters).
    fn membership_appended(&self, entries: &[Entry]) {
        for e in entries {
            if let EntryPayload::Membership(m) = &e.payload {
                let single = m.get_joint_config().len() == 1;
                self.set_voters(Some(e.log_id), single.then(|| m.voter_ids().collect()));
            }
        }
    }

    /// After a truncate at `index`: a membership entry cut off no longer
    /// counts; until openraft's metrics tell the one in force again, only
    /// the leader's own copy opens a gate.
    fn truncated(&self, index: u64) {
        self.written.send_modify(|w| {
            if w.voters_at.is_some_and(|at| at.index >= index) {
                w.voters_at = None;
                w.voters = None;
            }
        });
    }
}

/// The writer thread: drains every queued op, writes all appends to the
/// log file at once (one fdatasync), then acknowledges in order.
fn writer_loop(
    wal: Arc<Mutex<Wal>>,
    db: Arc<Database>,
    rx: mpsc::Receiver<Op>,
    queued: Arc<AtomicUsize>,
    after: After,
) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while let Ok(more) = rx.try_recv() {
            ops.push(more);
        }
        let entries: Vec<&Entry> = ops
            .iter()
            .filter_map(|op| match op {
                Op::Append(es, _) => Some(es.iter()),
                Op::Barrier(_) | Op::Committed(_) => None,
            })
            .flatten()
            .collect();
        let committed = ops.iter().rev().find_map(|op| match op {
            Op::Committed(c) => Some(*c),
            _ => None,
        });
        let ordered = ops.iter().filter(|op| !matches!(op, Op::Committed(_))).count();
        let started = std::time::Instant::now();
        let result = write_entries(&wal, &entries, committed);
        let written = WriteDone::new(&result, &entries, started);
        written.record(&after);
        let failed = result.is_err();
        queued.fetch_sub(ordered, Ordering::AcqRel);
        for op in ops {
            match op {
                Op::Append(_, Some(cb)) => {
                    cb.log_io_completed(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.clone())))
                }
                Op::Append(_, None) | Op::Committed(_) => {}
                Op::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
        // Entries may have been acknowledged early: after a failed write
        // nothing may pretend they are durable, so the writer stops and
        // every later log operation fails (openraft then stops the node).
        if failed {
            break;
        }
    }
    // The log file first: whoever reopens waits for the database.
    drop(wal);
    drop(db);
}

/// What a write of entries updates once done, wherever it ran.
#[derive(Clone)]
struct After {
    pending: Pending,
    /// Durable entries kept in `pending`.
    keep: usize,
    metrics: crate::StoreMetrics,
    durable: Durable,
}

/// What one write of entries did, for the bookkeeping after it.
struct WriteDone {
    /// The last index written, when the write held entries and succeeded.
    last: Option<u64>,
    entries: usize,
    took: std::time::Duration,
    failed: bool,
}

impl WriteDone {
    fn new(result: &Result<(), String>, entries: &[&Entry], started: std::time::Instant) -> WriteDone {
        if let Err(e) = result {
            tracing::error!(reason = %e, "writing the Raft log failed; this node's store stops");
        }
        WriteDone {
            last: entries.last().filter(|_| result.is_ok()).map(|e| e.log_id.index),
            entries: entries.len(),
            took: started.elapsed(),
            failed: result.is_err(),
        }
    }

    /// The flush's metrics, the durable mark, and the in-memory entries it
    /// lets go.
    fn record(&self, after: &After) {
        let After { pending, keep, metrics, durable } = after;
        if self.entries > 0 {
            metrics.log_flush_seconds.observe(self.took.as_secs_f64());
            metrics.log_flush_entries.observe(self.entries as f64);
        }
        if let Some(last) = self.last {
            if let Ok(mut p) = pending.lock() {
                trim_durable(&mut p, last, *keep);
            }
            durable.written.send_modify(|w| w.upto = w.upto.max(last));
        }
        if self.failed {
            durable.written.send_modify(|w| w.failed = true);
        }
    }
}

/// Whether this task may block its thread on a write and fsync: only on a
/// multi-thread runtime, where `block_in_place` hands the worker's other
/// tasks to another thread meanwhile.
fn may_block() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Drops the oldest entries beyond `keep`, but only durable ones (at or
/// below `durable`): the rest exist nowhere else yet.
fn trim_durable(p: &mut BTreeMap<u64, Entry>, durable: u64, keep: usize) {
    while p.len() > keep {
        match p.first_key_value() {
            Some((i, _)) if *i <= durable => {
                p.pop_first();
            }
            _ => return,
        }
    }
}

/// One write and, when it holds entries, one fdatasync; a commit index
/// alone rides without one (a lost hint only means re-applying later).
fn write_entries(wal: &Mutex<Wal>, entries: &[&Entry], committed: Option<Option<LogId>>) -> Result<(), String> {
    if entries.is_empty() && committed.is_none() {
        return Ok(());
    }
    // The lock is held for the write only: readers wait for no fsync.
    let unsynced = wal
        .lock()
        .map_err(|_| "the Raft log's lock is poisoned".to_string())?
        .append(entries, committed)
        .map_err(|e| e.to_string())?;
    if entries.is_empty() {
        return Ok(());
    }
    unsynced.sync().map_err(|e| e.to_string())
}

/// Moves the entries of a data directory from before the log file (redb's
/// `raft_log` table) into `wal`, once. A crash before the table is dropped
/// redoes it all: the log file holds nothing newer until then.
fn migrate(db: &Database, wal: &mut Wal) -> Result<(), StoreError> {
    let (entries, committed) = {
        let tx = db.begin_read().map_err(redb::Error::from)?;
        let table = match tx.open_table(LOGS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        let mut entries: Vec<Entry> = Vec::new();
        for item in table.iter().map_err(redb::Error::from)? {
            let (_, v) = item.map_err(redb::Error::from)?;
            entries.push(serde_json::from_slice(v.value()).map_err(WalError::from)?);
        }
        let committed: Option<Option<LogId>> = match tx.open_table(META) {
            Ok(meta) => match meta.get(KEY_COMMITTED).map_err(redb::Error::from)? {
                Some(v) => Some(serde_json::from_slice(v.value()).map_err(WalError::from)?),
                None => None,
            },
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(redb::Error::from(e).into()),
        };
        (entries, committed)
    };
    if !entries.is_empty() {
        tracing::info!(entries = entries.len(), "moving the Raft log from the state database to its log file");
        wal.clear()?;
        let refs: Vec<&Entry> = entries.iter().collect();
        wal.append(&refs, committed)?.sync()?;
    }
    let tx = db.begin_write().map_err(redb::Error::from)?;
    tx.delete_table(LOGS).map_err(redb::Error::from)?;
    tx.commit().map_err(redb::Error::from)?;
    Ok(())
}

fn read_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, openraft::AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Write, openraft::AnyError::new(&e)).into()
}

impl LogStore {
    /// The log of node `me`: its entries in `dir`, the rest in `db`.
    pub fn new(db: Arc<Database>, dir: &Path, me: u64, metrics: crate::StoreMetrics) -> Result<LogStore, StoreError> {
        Self::keeping(db, dir, me, KEEP_RECENT, crate::wal::SEGMENT_SIZE, metrics)
    }

    /// A log store that keeps `keep` durable entries in memory, its log
    /// file in segments of `segment_size` bytes.
    pub(crate) fn keeping(
        db: Arc<Database>,
        dir: &Path,
        me: u64,
        keep: usize,
        segment_size: u64,
        metrics: crate::StoreMetrics,
    ) -> Result<LogStore, StoreError> {
        let tx = db.begin_write().map_err(redb::Error::from)?;
        let purged: Option<LogId> = {
            let meta = tx.open_table(META).map_err(redb::Error::from)?;
            let v = meta.get(KEY_PURGED).map_err(redb::Error::from)?;
            match v {
                Some(v) => serde_json::from_slice::<Option<LogId>>(v.value()).map_err(WalError::from)?,
                None => None,
            }
        };
        tx.commit().map_err(redb::Error::from)?;
        let mut wal = Wal::open(dir, segment_size, purged.map(|p| p.index))?;
        migrate(&db, &mut wal)?;
        let wal = Arc::new(Mutex::new(wal));
        let pending: Pending = Arc::default();
        let (writer, rx) = mpsc::channel();
        let durable = Durable::new(me);
        let queued: Arc<AtomicUsize> = Arc::default();
        let after = After { pending: pending.clone(), keep, metrics, durable: durable.clone() };
        let (w2, db2, q2, a2) = (wal.clone(), db.clone(), queued.clone(), after.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(w2, db2, rx, q2, a2))
            .map_err(redb::Error::Io)?;
        Ok(LogStore {
            wal,
            db,
            pending,
            writer,
            committed: Arc::default(),
            me,
            vote: Arc::default(),
            durable,
            queued,
            after,
        })
    }

    /// How large the log has grown (for the snapshot cadence).
    pub(crate) fn size(&self) -> LogSize {
        LogSize(self.wal.clone())
    }

    /// What the writer has made durable (for the network's commit gate).
    pub(crate) fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// Hands a leader's own entries to the writer as already acknowledged.
    /// They count as early before openraft hears of them, so no commit gate
    /// can miss them.
    fn append_early(&self, entries: Vec<Entry>) -> Result<(), StorageError> {
        self.durable.membership_appended(&entries);
        if let Some(last) = entries.last() {
            self.durable.early_term.store(last.log_id.leader_id.term, Ordering::Release);
            self.durable.early.fetch_max(last.log_id.index, Ordering::AcqRel);
        }
        self.send_ordered(Op::Append(entries, None))
    }

    /// Hands an append or a barrier to the writer.
    fn send_ordered(&self, op: Op) -> Result<(), StorageError> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.writer.send(op).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            write_err(std::io::Error::other("log writer stopped"))
        })
    }

    /// A follower's entries, written and synced on this task when nothing
    /// handed to the writer is still to be written (then they are next in
    /// the file); gives the callback back otherwise. Nothing else appends
    /// meanwhile: openraft calls `append`, `truncate` and `purge` from one
    /// task, one at a time. A commit index the writer may be storing at the
    /// same time only ever names entries already durable.
    fn append_inline(&self, entries: &[Entry], callback: LogFlushed<TypeConfig>) -> Option<LogFlushed<TypeConfig>> {
        if self.queued.load(Ordering::Acquire) > 0 || !may_block() {
            return Some(callback);
        }
        if self.durable.written.borrow().failed {
            callback.log_io_completed(Err(std::io::Error::other("the Raft log could not be written")));
            return None;
        }
        let refs: Vec<&Entry> = entries.iter().collect();
        let started = std::time::Instant::now();
        let result = tokio::task::block_in_place(|| write_entries(&self.wal, &refs, None));
        WriteDone::new(&result, &refs, started).record(&self.after);
        callback.log_io_completed(result.map_err(std::io::Error::other));
        None
    }

    /// Whether `entries` are this node's own as the leader it believes it
    /// is: appended by its client writes, never received from another.
    fn own_as_leader(&self, entries: &[Entry]) -> bool {
        let Some(vote) = self.vote.lock().ok().and_then(|v| *v) else { return false };
        let leader = vote.leader_id;
        leader.node_id == self.me
            && !entries.is_empty()
            && entries.iter().all(|e| e.log_id.leader_id.node_id == self.me && e.log_id.leader_id.term == leader.term)
    }

    /// The commit index as openraft last handed it to `save_committed`.
    pub(crate) fn committed_handle(&self) -> Arc<Mutex<Option<Option<LogId>>>> {
        self.committed.clone()
    }

    /// Waits until every append handed to the writer is durable.
    async fn drain(&self) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send_ordered(Op::Barrier(tx))?;
        rx.await.map_err(|_| write_err(std::io::Error::other("log writer stopped")))
    }

    /// Entries in `[start, end)` held in memory, and whether they are all
    /// there is (the run in memory starts at or before `start`).
    fn pending_in(&self, start: u64, end: Option<u64>) -> (Vec<Entry>, bool) {
        let Ok(p) = self.pending.lock() else { return (Vec::new(), false) };
        let whole = p.first_key_value().is_some_and(|(first, _)| *first <= start);
        let entries = match end {
            Some(end) if end <= start => Vec::new(),
            Some(end) => p.range(start..end).map(|(_, e)| e.clone()).collect(),
            None => p.range(start..).map(|(_, e)| e.clone()).collect(),
        };
        (entries, whole)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(META).map_err(write_err)?;
            table.insert(key, bytes.as_slice()).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    fn wal(&self) -> Result<std::sync::MutexGuard<'_, Wal>, StorageError> {
        self.wal.lock().map_err(|_| read_err(std::io::Error::other("the Raft log's lock is poisoned")))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        let (recent, whole) = self.pending_in(start, end);
        if whole {
            return Ok(recent);
        }
        let stored = self.wal()?.read(start, end).map_err(read_err)?;
        let mut by_index: BTreeMap<u64, Entry> = stored.into_iter().map(|e| (e.log_id.index, e)).collect();
        // Entries not yet flushed are newer than what the file holds.
        for e in recent {
            by_index.insert(e.log_id.index, e);
        }
        Ok(by_index.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let pending_last = self.pending.lock().ok().and_then(|p| p.values().next_back().map(|e| e.log_id));
        // The file may still hold entries up to the purged id (hidden).
        let stored = self.wal()?.last().filter(|l| last_purged.is_none_or(|p| l.index > p.index));
        let last = pending_last.or(stored).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.drain().await?;
        self.put_meta(KEY_VOTE, vote)?;
        if let Ok(mut v) = self.vote.lock() {
            *v = Some(*vote);
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = self.get_meta(KEY_VOTE)?;
        if let Ok(mut v) = self.vote.lock() {
            *v = vote;
        }
        Ok(vote)
    }

    /// The commit index is a hint for re-applying after a restart (without
    /// it the node re-applies once a leader commits again), so it rides on
    /// the writer's next transaction instead of costing an fsync of its own
    /// or waiting here for the one in flight.
    ///
    /// openraft applies committed entries right after this returns, so it
    /// first waits until this leader's early-acknowledged entries up to the
    /// commit index are durable (see `Durable`).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.durable.wait(c.index).await.map_err(write_err)?;
        }
        if let Ok(mut c) = self.committed.lock() {
            *c = Some(committed);
        }
        self.writer.send(Op::Committed(committed)).map_err(|_| write_err(std::io::Error::other("log writer stopped")))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(c) = self.committed.lock().ok().and_then(|c| *c) {
            return Ok(c);
        }
        Ok(self.wal()?.committed().flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Ok(mut p) = self.pending.lock() {
            for e in &entries {
                p.insert(e.log_id.index, e.clone());
            }
        }
        if self.own_as_leader(&entries) {
            self.append_early(entries)?;
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.durable.membership_appended(&entries);
        match self.append_inline(&entries, callback) {
            None => Ok(()),
            Some(callback) => self.send_ordered(Op::Append(entries, Some(callback))),
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|i, _| *i < log_id.index);
        }
        // Everything queued is durable now; what follows the cut is gone.
        let below = log_id.index.saturating_sub(1);
        self.durable.truncated(log_id.index);
        self.durable.early.fetch_min(below, Ordering::AcqRel);
        self.durable.written.send_modify(|w| w.upto = w.upto.min(below));
        self.wal()?.truncate(log_id.index).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|i, _| *i > log_id.index);
        }
        // Durable before any segment goes: a reopen then hides what remains.
        self.put_meta(KEY_PURGED, &Some(log_id))?;
        self.wal()?.purge(log_id.index).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::LogStore;
    use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
    use crate::state_machine::StateMachine;
    use crate::wal::SEGMENT_SIZE;
    use crate::watch::Feed;
    use crate::StoreMetrics;
    use model::ClusterState;
    use openraft::storage::RaftLogStorage;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::RaftLogReader;
    use openraft::{CommittedLeaderId, EntryPayload};
    use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
    use redb::ReadableDatabase;
    use std::sync::Arc;

    /// A log store and state machine on a fresh database, keeping `keep`
    /// durable entries in memory, as node `me`, its log file in segments of
    /// `segment` bytes.
    struct OnDisk {
        keep: usize,
        me: u64,
        segment: u64,
    }

    fn err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
        StorageIOError::new(ErrorSubject::Store, ErrorVerb::Write, openraft::AnyError::new(&e)).into()
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
            let dir = tempfile::tempdir().map_err(err)?;
            let db = redb::Database::create(dir.path().join("state.redb")).map_err(|e| err(redb::Error::from(e)))?;
            let db = Arc::new(db);
            let state = Arc::new(arc_swap::ArcSwap::from_pointee(ClusterState::default()));
            let metrics = StoreMetrics::default();
            let log = LogStore::keeping(
                db.clone(),
                &dir.path().join("raft-log"),
                self.me,
                self.keep,
                self.segment,
                metrics.clone(),
            )
            .map_err(err)?;
            let sm = StateMachine::open(db, dir.path().join("snapshots"), state.clone(), Feed::new(state), metrics)
                .map_err(err)?;
            Ok((dir, log, sm))
        }
    }

    // openraft's conformance suite for log stores and state machines, with
    // reads served from the log file (nothing kept in memory once durable;
    // small segments, so it rolls, purges and cuts across segments) and
    // from memory (everything the suite writes fits in what is kept). The suite
    // writes as node 0: as that node, entries of its own votes take the
    // leader's path (acknowledged before their fsync); as another node,
    // every append is acknowledged after it.
    #[test]
    fn the_log_store_passes_openraft_s_suite_reading_from_disk() {
        Suite::test_all(OnDisk { keep: 0, me: 0, segment: 2048 }).expect("the suite passes");
        Suite::test_all(OnDisk { keep: 0, me: 7, segment: 2048 }).expect("the suite passes");
    }

    fn blank(term: u64, node: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, node), index), payload: EntryPayload::Blank }
    }

    /// Node `me`'s log store in `dir`, keeping 16 entries in memory (once
    /// the writer thread of one opened before has let go of the database).
    fn open(dir: &std::path::Path, me: u64) -> LogStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match redb::Database::create(dir.join("state.redb")) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break Arc::new(other.expect("a database")),
            }
        };
        LogStore::keeping(db, &dir.join("raft-log"), me, 16, SEGMENT_SIZE, StoreMetrics::default())
            .expect("a log store")
    }

    #[tokio::test]
    async fn a_log_kept_in_redb_moves_to_the_log_file_once() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let entries: Vec<Entry> = (1..=5).map(|i| blank(2, 1, i)).collect();
        let committed = Some(blank(2, 1, 4).log_id);
        {
            // The layout before the log file: entries in redb's `raft_log`.
            let db = redb::Database::create(dir.path().join("state.redb")).expect("a database");
            let tx = db.begin_write().expect("a write transaction");
            {
                let mut logs = tx.open_table(super::LOGS).expect("the log table");
                for e in &entries {
                    let bytes = serde_json::to_vec(e).expect("encode");
                    logs.insert(e.log_id.index, bytes.as_slice()).expect("insert");
                }
                let mut meta = tx.open_table(super::META).expect("the meta table");
                let c = serde_json::to_vec(&committed).expect("encode");
                meta.insert(super::KEY_COMMITTED, c.as_slice()).expect("insert");
            }
            tx.commit().expect("commit");
        }
        for _ in 0..2 {
            let mut log = open(dir.path(), 1);
            let read = log.try_get_log_entries(0..).await.expect("read");
            assert_eq!(
                read.iter().map(|e| e.log_id).collect::<Vec<_>>(),
                entries.iter().map(|e| e.log_id).collect::<Vec<_>>()
            );
            assert_eq!(log.read_committed().await.expect("commit index"), committed);
            assert_eq!(log.get_log_state().await.expect("state").last_log_id, Some(blank(2, 1, 5).log_id));
            let tx = log.db.begin_read().expect("a read transaction");
            assert!(tx.open_table(super::LOGS).is_err(), "the old table is gone");
        }
    }

    #[tokio::test]
    async fn only_the_leader_s_own_entries_of_its_term_are_acknowledged_early() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut log = open(dir.path(), 1);
        assert!(!log.own_as_leader(&[blank(3, 1, 1)]), "no vote yet: nobody leads");
        log.save_vote(&Vote::new_committed(3, 1)).await.expect("vote saved");
        assert!(log.own_as_leader(&[blank(3, 1, 1), blank(3, 1, 2)]));
        assert!(!log.own_as_leader(&[blank(2, 1, 1)]), "an older term's entry comes from a leader");
        assert!(!log.own_as_leader(&[blank(3, 1, 1), blank(3, 2, 2)]));
        log.save_vote(&Vote::new_committed(4, 2)).await.expect("vote saved");
        assert!(!log.own_as_leader(&[blank(4, 2, 1)]), "a follower's entries are acknowledged after their fsync");
    }

    // The log file's lock is held across polls on purpose: it stalls the
    // writer thread, not this task.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn the_commit_gate_holds_until_early_acknowledged_entries_are_on_disk() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = open(dir.path(), 1);
        let durable = log.durable();
        // Holding the log file's lock keeps the writer from flushing, as a
        // slow fsync would.
        let blocker = log.wal.lock().expect("the log file");
        log.append_early(vec![blank(3, 1, 1), blank(3, 1, 2)]).expect("handed to the writer");
        let gate = durable.wait(2);
        tokio::pin!(gate);
        assert!(futures::poll!(&mut gate).is_pending(), "nothing may count as committed before it is durable");
        assert!(
            futures::poll!(Box::pin(durable.wait(0))).is_ready(),
            "an index below the early ones waits for nothing"
        );
        drop(blocker);
        gate.await.expect("the writer flushed");
        let on_disk = log.wal.lock().expect("the log file").read(2, Some(3)).expect("read");
        assert_eq!(on_disk.len(), 1, "the entry is on disk once the gate opens");
    }

    // The log file's lock is held across polls on purpose: it stalls the
    // writer thread, not this task.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn the_commit_gate_opens_once_a_majority_of_voters_hold_the_entries_on_disk() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = open(dir.path(), 1);
        let durable = log.durable();
        let membership_at = |index| Some(blank(3, 1, index).log_id);
        durable.set_voters(membership_at(1), Some([1, 2, 3].into()));
        // The leader's own fsync never finishes while this is held.
        let _blocker = log.wal.lock().expect("the log file");
        log.append_early(vec![blank(3, 1, 2), blank(3, 1, 3)]).expect("handed to the writer");
        let gate = durable.wait(3);
        tokio::pin!(gate);
        durable.acked(2, blank(3, 1, 3).log_id);
        assert!(futures::poll!(&mut gate).is_pending(), "one follower of three is no majority without the leader");
        durable.acked(4, blank(3, 1, 3).log_id);
        assert!(futures::poll!(&mut gate).is_pending(), "a learner's copy does not count");
        durable.acked(3, blank(2, 1, 3).log_id);
        assert!(futures::poll!(&mut gate).is_pending(), "an answer from an older term says nothing of this log");
        durable.set_voters(membership_at(0), Some([1, 2, 4].into()));
        assert!(futures::poll!(&mut gate).is_pending(), "an older membership does not replace a newer one");
        durable.acked(3, blank(3, 1, 2).log_id);
        assert!(futures::poll!(&mut gate).is_pending(), "the follower holds only part of what is to commit");
        durable.acked(3, blank(3, 1, 3).log_id);
        assert!(futures::poll!(&mut gate).is_ready(), "two of three voters hold it on disk");
        durable.set_voters(membership_at(4), None);
        assert!(
            futures::poll!(Box::pin(durable.wait(3))).is_pending(),
            "during a configuration change only the leader's own copy opens the gate"
        );
    }

    #[test]
    fn the_log_store_passes_openraft_s_suite_reading_recent_entries_from_memory() {
        Suite::test_all(OnDisk { keep: super::KEEP_RECENT, me: 0, segment: SEGMENT_SIZE }).expect("the suite passes");
        Suite::test_all(OnDisk { keep: super::KEEP_RECENT, me: 7, segment: SEGMENT_SIZE }).expect("the suite passes");
    }
}
