//! Raft log, vote and commit index in redb.
//!
//! Appends are group-committed: `append` hands entries to one writer thread
//! and returns; the thread writes everything queued meanwhile in a single
//! durable redb transaction (one fsync) and only then fires each batch's
//! flush callback — so an acknowledged write is on disk, and concurrent
//! writers share fsyncs instead of queueing behind one each. Entries not yet
//! flushed, and the newest `KEEP_RECENT` flushed ones, are served to readers
//! from memory: replication reads what was just appended without a redb
//! read and a JSON decode per entry. Truncate, purge and vote
//! writes first wait for the writer to drain, so operations stay ordered.
//! The commit index goes through the writer too, so saving it never waits
//! on a transaction (and its fsync) in flight: openraft's core awaits it on
//! every commit.
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
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

/// The newest entries, by index: every one handed to the writer but not yet
/// durable, and up to `KEEP_RECENT` durable ones before them. Always a
/// contiguous run that ends at the log's last entry (appends extend it,
/// truncate cuts its tail, purge its head), so a read starting inside it
/// needs nothing from redb.
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
    /// The newest commit index (JSON), a restart hint written with the next batch.
    Committed(Vec<u8>),
}

#[derive(Clone)]
pub struct LogStore {
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

/// The writer thread: drains every queued op, writes all appends in one
/// transaction, then acknowledges in order.
fn writer_loop(
    db: Arc<Database>,
    pending: Pending,
    rx: mpsc::Receiver<Op>,
    keep: usize,
    metrics: crate::StoreMetrics,
    durable: Durable,
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
            Op::Committed(c) => Some(c.as_slice()),
            _ => None,
        });
        let started = std::time::Instant::now();
        let result = write_entries(&db, &entries, committed);
        if !entries.is_empty() {
            metrics.log_flush_seconds.observe(started.elapsed().as_secs_f64());
            metrics.log_flush_entries.observe(entries.len() as f64);
        }
        if let (Ok(()), Some(last)) = (&result, entries.last()) {
            let last = last.log_id.index;
            if let Ok(mut p) = pending.lock() {
                trim_durable(&mut p, last, keep);
            }
            durable.written.send_modify(|w| w.upto = w.upto.max(last));
        }
        let failed = result.is_err();
        if let Err(e) = &result {
            tracing::error!(reason = %e, "writing the Raft log failed; this node's store stops");
            durable.written.send_modify(|w| w.failed = true);
        }
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
            return;
        }
    }
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

/// One transaction: durable when it holds entries; a commit index alone
/// rides without an fsync (a lost hint only means re-applying later).
fn write_entries(db: &Database, entries: &[&Entry], committed: Option<&[u8]>) -> Result<(), String> {
    if entries.is_empty() && committed.is_none() {
        return Ok(());
    }
    let mut tx = db.begin_write().map_err(|e| e.to_string())?;
    if entries.is_empty() {
        let _ = tx.set_durability(redb::Durability::None);
    }
    {
        let mut table = tx.open_table(LOGS).map_err(|e| e.to_string())?;
        for e in entries {
            let bytes = serde_json::to_vec(e).map_err(|e| e.to_string())?;
            table.insert(e.log_id.index, bytes.as_slice()).map_err(|e| e.to_string())?;
        }
    }
    if let Some(c) = committed {
        let mut meta = tx.open_table(META).map_err(|e| e.to_string())?;
        meta.insert(KEY_COMMITTED, c).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())
}

fn read_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, openraft::AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Write, openraft::AnyError::new(&e)).into()
}

impl LogStore {
    /// The log of node `me` in `db`.
    pub fn new(db: Arc<Database>, me: u64, metrics: crate::StoreMetrics) -> Result<LogStore, redb::Error> {
        Self::keeping(db, me, KEEP_RECENT, metrics)
    }

    /// A log store that keeps `keep` durable entries in memory.
    pub(crate) fn keeping(
        db: Arc<Database>,
        me: u64,
        keep: usize,
        metrics: crate::StoreMetrics,
    ) -> Result<LogStore, redb::Error> {
        let tx = db.begin_write()?;
        {
            tx.open_table(LOGS)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        let pending: Pending = Arc::default();
        let (writer, rx) = mpsc::channel();
        let durable = Durable::new(me);
        let (db2, p2, d2) = (db.clone(), pending.clone(), durable.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(db2, p2, rx, keep, metrics, d2))
            .map_err(redb::Error::Io)?;
        Ok(LogStore { db, pending, writer, committed: Arc::default(), me, vote: Arc::default(), durable })
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
        self.writer.send(Op::Append(entries, None)).map_err(|_| write_err(std::io::Error::other("log writer stopped")))
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
        self.writer.send(Op::Barrier(tx)).map_err(|_| write_err(std::io::Error::other("log writer stopped")))?;
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

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOGS).map_err(read_err)?;
        let last = table.last().map_err(read_err)?;
        let id = match last {
            Some((_, v)) => {
                let e: Entry = serde_json::from_slice(v.value()).map_err(read_err)?;
                Some(e.log_id)
            }
            None => None,
        };
        Ok(id)
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
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOGS).map_err(read_err)?;
        let iter = match end {
            Some(end) => table.range(start..end),
            None => table.range(start..),
        }
        .map_err(read_err)?;
        let mut by_index: BTreeMap<u64, Entry> = BTreeMap::new();
        for item in iter {
            let (k, v) = item.map_err(read_err)?;
            by_index.insert(k.value(), serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        // Entries not yet flushed are newer than what redb holds.
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
        let last = pending_last.or(self.last_entry_id()?).or(last_purged);
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
        let bytes = serde_json::to_vec(&committed).map_err(write_err)?;
        if let Ok(mut c) = self.committed.lock() {
            *c = Some(committed);
        }
        self.writer.send(Op::Committed(bytes)).map_err(|_| write_err(std::io::Error::other("log writer stopped")))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        if let Some(c) = self.committed.lock().ok().and_then(|c| *c) {
            return Ok(c);
        }
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
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
        self.writer
            .send(Op::Append(entries, Some(callback)))
            .map_err(|_| write_err(std::io::Error::other("log writer stopped")))
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
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            table.retain_in(log_id.index.., |_, _| false).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.drain().await?;
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|i, _| *i > log_id.index);
        }
        let bytes = serde_json::to_vec(&Some(log_id)).map_err(write_err)?;
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut meta = tx.open_table(META).map_err(write_err)?;
            meta.insert(KEY_PURGED, bytes.as_slice()).map_err(write_err)?;
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            table.retain_in(..=log_id.index, |_, _| false).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::LogStore;
    use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
    use crate::state_machine::StateMachine;
    use crate::watch::Feed;
    use crate::StoreMetrics;
    use model::ClusterState;
    use openraft::storage::RaftLogStorage;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload};
    use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
    use redb::ReadableDatabase;
    use std::sync::Arc;

    /// A log store and state machine on a fresh database, keeping `keep`
    /// durable entries in memory, as node `me`.
    struct OnDisk {
        keep: usize,
        me: u64,
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
            let log = LogStore::keeping(db.clone(), self.me, self.keep, metrics.clone()).map_err(err)?;
            let sm = StateMachine::open(db, state.clone(), Feed::new(state), metrics).map_err(err)?;
            Ok((dir, log, sm))
        }
    }

    // openraft's conformance suite for log stores and state machines, with
    // reads served from redb (nothing kept in memory once durable) and from
    // memory (everything the suite writes fits in what is kept). The suite
    // writes as node 0: as that node, entries of its own votes take the
    // leader's path (acknowledged before their fsync); as another node,
    // every append is acknowledged after it.
    #[test]
    fn the_log_store_passes_openraft_s_suite_reading_from_disk() {
        Suite::test_all(OnDisk { keep: 0, me: 0 }).expect("the suite passes");
        Suite::test_all(OnDisk { keep: 0, me: 7 }).expect("the suite passes");
    }

    fn blank(term: u64, node: u64, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, node), index), payload: EntryPayload::Blank }
    }

    #[tokio::test]
    async fn only_the_leader_s_own_entries_of_its_term_are_acknowledged_early() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = Arc::new(redb::Database::create(dir.path().join("state.redb")).expect("a database"));
        let mut log = LogStore::keeping(db, 1, 16, StoreMetrics::default()).expect("a log store");
        assert!(!log.own_as_leader(&[blank(3, 1, 1)]), "no vote yet: nobody leads");
        log.save_vote(&Vote::new_committed(3, 1)).await.expect("vote saved");
        assert!(log.own_as_leader(&[blank(3, 1, 1), blank(3, 1, 2)]));
        assert!(!log.own_as_leader(&[blank(2, 1, 1)]), "an older term's entry comes from a leader");
        assert!(!log.own_as_leader(&[blank(3, 1, 1), blank(3, 2, 2)]));
        log.save_vote(&Vote::new_committed(4, 2)).await.expect("vote saved");
        assert!(!log.own_as_leader(&[blank(4, 2, 1)]), "a follower's entries are acknowledged after their fsync");
    }

    #[tokio::test]
    async fn the_commit_gate_holds_until_early_acknowledged_entries_are_on_disk() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = Arc::new(redb::Database::create(dir.path().join("state.redb")).expect("a database"));
        let log = LogStore::keeping(db.clone(), 1, 16, StoreMetrics::default()).expect("a log store");
        let durable = log.durable();
        // Holding redb's one write transaction keeps the writer from
        // flushing, as a slow fsync would.
        let blocker = db.begin_write().expect("a write transaction");
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
        let tx = db.begin_read().expect("a read transaction");
        let table = tx.open_table(super::LOGS).expect("the log table");
        assert!(table.get(2).expect("read").is_some(), "the entry is on disk once the gate opens");
    }

    #[tokio::test]
    async fn the_commit_gate_opens_once_a_majority_of_voters_hold_the_entries_on_disk() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = Arc::new(redb::Database::create(dir.path().join("state.redb")).expect("a database"));
        let log = LogStore::keeping(db.clone(), 1, 16, StoreMetrics::default()).expect("a log store");
        let durable = log.durable();
        let membership_at = |index| Some(blank(3, 1, index).log_id);
        durable.set_voters(membership_at(1), Some([1, 2, 3].into()));
        // The leader's own fsync never finishes while this is held.
        let _blocker = db.begin_write().expect("a write transaction");
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
        Suite::test_all(OnDisk { keep: super::KEEP_RECENT, me: 0 }).expect("the suite passes");
        Suite::test_all(OnDisk { keep: super::KEEP_RECENT, me: 7 }).expect("the suite passes");
    }
}
