//! The Raft state machine: the in-memory `ClusterState`, snapshots of it (the
//! body in a file, `snapshot_file`, named in redb beside its metadata), and
//! the change feed fed by every applied entry.
//!
//! On restart the latest snapshot is loaded and openraft re-applies the
//! committed log after it, so the state is rebuilt exactly. A snapshot that
//! cannot be read stops the node with a clear error: skipping it would
//! replay a log that starts after it and silently lose state.
//!
//! The applied state is an immutable `ClusterState` behind an `ArcSwap`:
//! `apply` works on a cheap copy (persistent maps) and swaps it in, so
//! readers and snapshot builders never block a write.

use crate::apply::apply;
use crate::command::{Applied, Command};
use crate::effect;
use crate::raft_types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::snapshot_file;
use crate::watch::Change;
use crate::watch::Feed;
use arc_swap::ArcSwap;
use model::ClusterState;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The snapshot body's format. Readers refuse a newer one; any change to
/// `SnapshotBody` or `ClusterState` that old readers cannot decode bumps it
/// (fields added with `#[serde(default)]` need no bump).
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Why a stored or received snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the stored snapshot cannot be read ({0}); the data directory is damaged: restore it from a backup, or remove it and join the node to the cluster again")]
    Read(#[source] redb::Error),
    #[error("the stored snapshot cannot be decoded ({0}); the data directory is damaged: restore it from a backup, or remove it and join the node to the cluster again")]
    Decode(#[source] serde_json::Error),
    #[error("the stored snapshot's file {path} cannot be read ({source}); the data directory is damaged: restore it from a backup, or remove it and join the node to the cluster again")]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error(
        "the stored snapshot has format {found}, newer than this wharf reads ({SNAPSHOT_FORMAT}); run a newer wharf"
    )]
    TooNew { found: u32 },
}

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// Written before snapshot formats existed: the whole `StoredSnapshot` as JSON.
const KEY_CURRENT: &str = "current";
/// The current snapshot's metadata (JSON).
const KEY_META: &str = "current.meta";
/// The body (the JSON bytes as they are), where it was kept before bodies
/// went to files (still read).
const KEY_DATA: &str = "current.data";
/// The name of the current snapshot's file in the snapshot directory.
const KEY_FILE: &str = "current.file";

/// The applied state, swapped whole after every batch of entries.
pub type SharedState = Arc<ArcSwap<ClusterState>>;

#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    /// `SNAPSHOT_FORMAT` of the writer (0: written before formats existed).
    #[serde(default)]
    format: u32,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, openraft::AnyError::new(&e)).into()
}

/// What a snapshot builder serialises: a consistent copy taken between
/// two applies.
type Frozen = (Arc<ClusterState>, Option<LogId>, StoredMembership);

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    /// Where snapshot bodies are kept.
    dir: PathBuf,
    state: SharedState,
    last_applied: Arc<RwLock<(Option<LogId>, StoredMembership)>>,
    feed: Feed,
    frozen: Option<Frozen>,
    metrics: crate::StoreMetrics,
}

/// Decodes a snapshot body, refusing formats newer than this build reads.
pub(crate) fn decode_body(data: &[u8]) -> Result<SnapshotBody, SnapshotError> {
    let body: SnapshotBody = serde_json::from_slice(data).map_err(SnapshotError::Decode)?;
    if body.format > SNAPSHOT_FORMAT {
        return Err(SnapshotError::TooNew { found: body.format });
    }
    Ok(body)
}

/// Stores `stored` as the current snapshot: the body's file durable first,
/// then its name and the metadata in one transaction (never one without
/// the other), then older files go. A snapshot older than the one stored
/// is not stored (its file goes instead): openraft may build one while it
/// installs a newer one from the leader, and the build can finish last;
/// keeping the older would make a restart replay more log, or name a file
/// the newer one's cleanup removed. Returns whether it was stored.
fn write_stored(db: &Database, dir: &Path, stored: &StoredSnapshot) -> Result<bool, StorageError> {
    let meta = serde_json::to_vec(&stored.meta).map_err(|e| sm_err(ErrorVerb::Write, e))?;
    let name = snapshot_file::name(stored.meta.last_log_id.map(|l| l.index), stored.data.len());
    snapshot_file::write(dir, &name, &stored.data).map_err(|e| sm_err(ErrorVerb::Write, e))?;
    // redb runs one write transaction at a time: the check and the
    // replacement are one step for two writers.
    let tx = db.begin_write().map_err(|e| sm_err(ErrorVerb::Write, e))?;
    {
        let mut table = tx.open_table(SNAPSHOT).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let current = table.get(KEY_META).map_err(|e| sm_err(ErrorVerb::Read, e))?.and_then(|v| {
            // Unreadable metadata is replaced, not kept.
            serde_json::from_slice::<SnapshotMeta>(v.value()).ok()
        });
        if current.is_some_and(|c| c.last_log_id > stored.meta.last_log_id) {
            drop(table);
            tx.abort().map_err(|e| sm_err(ErrorVerb::Write, e))?;
            snapshot_file::remove(dir, &name);
            return Ok(false);
        }
        table.insert(KEY_META, meta.as_slice()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        table.insert(KEY_FILE, name.as_bytes()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        table.remove(KEY_DATA).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        table.remove(KEY_CURRENT).map_err(|e| sm_err(ErrorVerb::Write, e))?;
    }
    tx.commit().map_err(|e| sm_err(ErrorVerb::Write, e))?;
    snapshot_file::remove_others(dir, &name);
    Ok(true)
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19)
/// and returns what it returned.
async fn in_background<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> std::io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("wharf-snapshot".into()).spawn(move || {
        // SAFETY: setpriority(2) takes no pointer; on Linux `who` 0 is the
        // calling thread alone. Failing to lower it only costs latency.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, 19);
        }
        let _ = tx.send(work());
    })?;
    rx.await.map_err(|_| std::io::Error::other("the snapshot thread ended without an answer"))
}

impl StateMachine {
    pub fn open(
        db: Arc<Database>,
        dir: PathBuf,
        state: SharedState,
        feed: Feed,
        metrics: crate::StoreMetrics,
    ) -> Result<StateMachine, crate::StoreError> {
        let tx = db.begin_write().map_err(redb::Error::from)?;
        tx.open_table(SNAPSHOT).map_err(redb::Error::from)?;
        tx.commit().map_err(redb::Error::from)?;
        let sm = StateMachine {
            db,
            dir,
            state,
            last_applied: Arc::new(RwLock::new((None, StoredMembership::default()))),
            feed,
            frozen: None,
            metrics,
        };
        // Nothing writes a snapshot yet: a write cut off by a crash goes.
        snapshot_file::remove_partial(&sm.dir);
        if let Some(stored) = sm.read_stored_checked()? {
            sm.install_body(decode_body(&stored.data)?);
            sm.metrics.snapshot_loaded(stored.data.len() as u64);
        }
        Ok(sm)
    }

    fn install_body(&self, body: SnapshotBody) {
        let mut state = body.state;
        state.applied_index = body.last_applied.map(|l| l.index).unwrap_or(0);
        let state = Arc::new(state);
        self.state.store(state.clone());
        if let Ok(mut la) = self.last_applied.write() {
            *la = (body.last_applied, body.membership);
        }
        self.feed.reset(state);
    }

    fn read_stored_checked(&self) -> Result<Option<StoredSnapshot>, SnapshotError> {
        let read = || -> Result<_, redb::Error> {
            let tx = self.db.begin_read()?;
            let table = tx.open_table(SNAPSHOT)?;
            let get =
                |k: &str| -> Result<Option<Vec<u8>>, redb::Error> { Ok(table.get(k)?.map(|v| v.value().to_vec())) };
            Ok((get(KEY_META)?, get(KEY_FILE)?, get(KEY_DATA)?, get(KEY_CURRENT)?))
        };
        match read().map_err(SnapshotError::Read)? {
            (Some(meta), Some(file), _, _) => {
                let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(SnapshotError::Decode)?;
                let name = String::from_utf8_lossy(&file).into_owned();
                let data = snapshot_file::read(&self.dir, &name)
                    .map_err(|source| SnapshotError::File { path: snapshot_file::path(&self.dir, &name), source })?;
                Ok(Some(StoredSnapshot { meta, data }))
            }
            (Some(meta), None, Some(data), _) => {
                let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(SnapshotError::Decode)?;
                Ok(Some(StoredSnapshot { meta, data }))
            }
            (_, _, _, Some(old)) => serde_json::from_slice(&old).map(Some).map_err(SnapshotError::Decode),
            _ => Ok(None),
        }
    }

    fn read_stored(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        self.read_stored_checked().map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    /// Stores `stored` as the current snapshot, on a blocking thread: a
    /// redb commit of a large body (write and fsync) must not hold up an
    /// async worker, and with it the node's replication and API.
    async fn write_stored(&self, stored: StoredSnapshot) -> Result<(StoredSnapshot, bool), StorageError> {
        let (db, dir) = (self.db.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || write_stored(&db, &dir, &stored).map(|kept| (stored, kept)))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))?
    }

    fn freeze(&self) -> Result<Frozen, StorageError> {
        let (last_applied, membership) = self.last_applied.read().map_err(|_| Self::poisoned())?.clone();
        Ok((self.state.load_full(), last_applied, membership))
    }

    fn poisoned() -> StorageError {
        sm_err(ErrorVerb::Read, std::io::Error::other("state lock poisoned"))
    }
}

/// Applies one command, and records its change (effects and the state
/// right after it) for the feed.
fn apply_one(state: &mut ClusterState, index: u64, cmd: Command, changes: &mut Vec<Change>) -> Applied {
    let before = state.clone();
    let res = apply(state, &cmd);
    let effects = effect::collect(&before, state, &cmd);
    changes.push(Change { index, command: Arc::new(cmd), effects: effects.into(), state: Arc::new(state.clone()) });
    res
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (state, last_applied, membership) = match self.frozen.take() {
            Some(f) => f,
            None => self.freeze()?,
        };
        // Serialising and storing a large state takes a core for a while,
        // on every node at once (they reach the snapshot point together):
        // on an immutable copy, so writes go on meanwhile, and at the lowest
        // priority, so it takes only the time writes and reads leave over.
        let body = SnapshotBody {
            format: SNAPSHOT_FORMAT,
            last_applied,
            membership: membership.clone(),
            state: (*state).clone(),
        };
        let (db, dir) = (self.db.clone(), self.dir.clone());
        let stored = in_background(move || {
            let data = serde_json::to_vec(&body).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            let snapshot_id = match last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
                None => format!("none-{}", data.len()),
            };
            let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
            let stored = StoredSnapshot { meta, data };
            let kept = write_stored(&db, &dir, &stored)?;
            Ok::<_, StorageError>((stored, kept))
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))??;
        let (stored, kept) = stored;
        // Not kept: a newer one was installed meanwhile; openraft, which
        // holds that one, ignores this older one too.
        if kept {
            self.metrics.snapshot_taken(stored.data.len() as u64);
        }
        let meta = stored.meta;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.last_applied.read().map_err(|_| Self::poisoned())?.clone())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        let mut changes = Vec::new();
        // A cheap copy (persistent maps): readers keep the old state until
        // the new one is swapped in whole.
        let mut state = ClusterState::clone(&self.state.load());
        {
            let mut la = self.last_applied.write().map_err(|_| Self::poisoned())?;
            for entry in entries {
                la.0 = Some(entry.log_id);
                state.applied_index = entry.log_id.index;
                match entry.payload {
                    EntryPayload::Blank => results.push(Applied::Done),
                    EntryPayload::Normal(Command::Batch(parts)) => {
                        let answers =
                            parts.into_iter().map(|cmd| apply_one(&mut state, entry.log_id.index, cmd, &mut changes));
                        results.push(Applied::Each(answers.collect()));
                    }
                    EntryPayload::Normal(cmd) => {
                        results.push(apply_one(&mut state, entry.log_id.index, cmd, &mut changes))
                    }
                    EntryPayload::Membership(m) => {
                        la.1 = StoredMembership::new(Some(entry.log_id), m);
                        results.push(Applied::Done);
                    }
                }
            }
        }
        self.state.store(Arc::new(state));
        // Published after the new state is visible: a consumer woken by the
        // feed always reads a state that contains the change.
        for change in changes {
            self.feed.publish(change);
        }
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.applied_entries.inc_by(results.len() as u64);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies: the copy is consistent with its log id.
        let mut builder = self.clone();
        builder.frozen = self.freeze().ok();
        builder
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body = decode_body(&data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let (stored, kept) = self.write_stored(StoredSnapshot { meta: meta.clone(), data }).await?;
        self.install_body(body);
        if kept {
            self.metrics.snapshot_taken(stored.data.len() as u64);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.read_stored()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::StateMachine;
    use crate::command::{Applied, Command, Rejection};
    use crate::raft_types::Entry;
    use crate::watch::{Feed, Update};
    use crate::{Effect, StoreMetrics};
    use model::{AppId, AppSpec, ClusterState, Deployment, DeploymentAction, DeploymentId, Step, UnixMillis};
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use std::sync::Arc;

    fn create(id: &str, at: i64) -> Command {
        let id = AppId::parse(id).expect("valid id");
        Command::PutApp {
            app: AppSpec::new(id.clone()),
            at: UnixMillis(at),
            deployment: Deployment {
                id: DeploymentId(format!("d{at}")),
                version: UnixMillis(at),
                affected_apps: vec![id.clone()],
                steps: vec![Step { actions: vec![(DeploymentAction::StartApplication, id)] }],
                current_step: 1,
                started_at: UnixMillis(at),
            },
            force: false,
            create_only: true,
            expect: None,
            finish_if_idle: true,
        }
    }

    #[tokio::test]
    async fn a_batch_entry_answers_each_part_and_puts_each_on_the_feed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(redb::Database::create(dir.path().join("state.redb")).expect("db"));
        let state = Arc::new(arc_swap::ArcSwap::from_pointee(ClusterState::default()));
        let feed = Feed::new(state.clone());
        let mut sub = feed.subscribe();
        let mut sm = StateMachine::open(db, dir.path().join("snapshots"), state.clone(), feed, StoreMetrics::default())
            .expect("open");
        let batch = Command::Batch(vec![create("/a", 1), create("/a", 2), create("/b", 3)]);
        let entry = Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 7), payload: EntryPayload::Normal(batch) };
        let answers = sm.apply([entry]).await.expect("apply");
        // One answer for the entry, holding one per part, judged in order:
        // the second create of /a finds the first.
        let [Applied::Each(parts)] = answers.as_slice() else { panic!("{answers:?}") };
        assert!(matches!(&parts[0], Applied::App(a) if a.spec.id.as_str() == "/a"), "{parts:?}");
        assert!(matches!(&parts[1], Applied::Rejected(Rejection::AlreadyExists(id)) if id.as_str() == "/a"));
        assert!(matches!(&parts[2], Applied::App(a) if a.spec.id.as_str() == "/b"), "{parts:?}");
        assert_eq!(state.load().apps.len(), 2);
        assert_eq!(state.load().applied_index, 7);
        // The feed has each part as its own change, at the entry's index,
        // with the state right after that part.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let Some(Update::Change(c)) = sub.next().await else { panic!("expected a change") };
            assert_eq!(c.index, 7);
            assert!(matches!(*c.command, Command::PutApp { .. }));
            let put = c.effects.iter().any(|e| matches!(e, Effect::AppPut { .. }));
            seen.push((put, c.state.apps.len()));
        }
        assert_eq!(seen, vec![(true, 1), (false, 1), (true, 2)]);
    }

    /// A state machine on the database and snapshot directory in `dir`
    /// (as a node opens it at start).
    fn open_in(dir: &std::path::Path) -> (Arc<redb::Database>, Arc<arc_swap::ArcSwap<ClusterState>>, StateMachine) {
        let db = Arc::new(redb::Database::create(dir.join("state.redb")).expect("db"));
        let state = Arc::new(arc_swap::ArcSwap::from_pointee(ClusterState::default()));
        let feed = Feed::new(state.clone());
        let sm = StateMachine::open(db.clone(), dir.join("snapshots"), state.clone(), feed, StoreMetrics::default())
            .expect("open");
        (db, state, sm)
    }

    #[tokio::test]
    async fn a_snapshot_stored_the_older_way_in_redb_still_loads_and_the_next_goes_to_a_file() {
        use openraft::RaftSnapshotBuilder;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || open_in(dir.path());
        let (db, _, mut sm) = open();
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Normal(create("/a", 1)),
        };
        sm.apply([entry]).await.expect("apply");
        let snap = sm.build_snapshot().await.expect("build");
        // Written as before snapshot files: the body under its redb key.
        let tx = db.begin_write().expect("tx");
        {
            let mut t = tx.open_table(super::SNAPSHOT).expect("table");
            t.remove(super::KEY_FILE).expect("remove");
            t.insert(super::KEY_DATA, snap.snapshot.into_inner().as_slice()).expect("insert");
        }
        tx.commit().expect("commit");
        drop((db, sm));
        std::fs::remove_dir_all(dir.path().join("snapshots")).expect("no files");
        let (_db, state, mut sm) = open();
        assert!(state.load().apps.contains_key(&AppId::parse("/a").expect("id")), "the old snapshot restored /a");
        sm.build_snapshot().await.expect("build");
        let files = std::fs::read_dir(dir.path().join("snapshots")).expect("dir").count();
        assert_eq!(files, 1, "the next snapshot is a file");
    }

    #[tokio::test]
    async fn a_snapshot_finished_after_a_newer_one_is_not_stored_over_it() {
        use openraft::RaftSnapshotBuilder;
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let (_, state, sm) = open_in(dir.path());
            (state, sm)
        };
        let entry = |index, cmd| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        };
        let (_, mut sm) = open();
        sm.apply([entry(3, create("/a", 1))]).await.expect("apply");
        // Frozen at index 3, built only after a newer snapshot is stored.
        let mut slow = sm.get_snapshot_builder().await;
        sm.apply([entry(9, create("/b", 2))]).await.expect("apply");
        let mut fast = sm.get_snapshot_builder().await;
        let newer = fast.build_snapshot().await.expect("build");
        assert_eq!(newer.meta.last_log_id.map(|l| l.index), Some(9));
        let older = slow.build_snapshot().await.expect("build");
        assert_eq!(older.meta.last_log_id.map(|l| l.index), Some(3));

        let current = sm.get_current_snapshot().await.expect("read").expect("a snapshot");
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(9), "the newer snapshot stays current");
        let files: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(files.len(), 1, "the older one's file is gone: {files:?}");
        drop((sm, slow, fast));
        let (state, _sm) = open();
        let s = state.load();
        assert_eq!(s.applied_index, 9, "a restart restores the newer snapshot");
        assert!(s.apps.contains_key(&AppId::parse("/b").expect("id")));
    }
}
