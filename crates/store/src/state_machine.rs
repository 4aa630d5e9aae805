//! The Raft state machine: the in-memory `ClusterState`, snapshots of it kept
//! in redb, and the change feed fed by every applied entry.
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
use crate::command::Applied;
use crate::effect;
use crate::raft_types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::watch::Change;
use crate::watch::Feed;
use arc_swap::ArcSwap;
use model::ClusterState;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
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
    #[error(
        "the stored snapshot has format {found}, newer than this wharf reads ({SNAPSHOT_FORMAT}); run a newer wharf"
    )]
    TooNew { found: u32 },
}

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
/// Written before snapshot formats existed: the whole `StoredSnapshot` as JSON.
const KEY_CURRENT: &str = "current";
/// The current snapshot's metadata (JSON) and body (the JSON bytes as they are).
const KEY_META: &str = "current.meta";
const KEY_DATA: &str = "current.data";

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

impl StateMachine {
    pub fn open(
        db: Arc<Database>,
        state: SharedState,
        feed: Feed,
        metrics: crate::StoreMetrics,
    ) -> Result<StateMachine, crate::StoreError> {
        let tx = db.begin_write().map_err(redb::Error::from)?;
        tx.open_table(SNAPSHOT).map_err(redb::Error::from)?;
        tx.commit().map_err(redb::Error::from)?;
        let sm = StateMachine {
            db,
            state,
            last_applied: Arc::new(RwLock::new((None, StoredMembership::default()))),
            feed,
            frozen: None,
            metrics,
        };
        if let Some(stored) = sm.read_stored_checked()? {
            sm.install_body(decode_body(&stored.data)?);
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
            Ok((get(KEY_META)?, get(KEY_DATA)?, get(KEY_CURRENT)?))
        };
        match read().map_err(SnapshotError::Read)? {
            (Some(meta), Some(data), _) => {
                let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(SnapshotError::Decode)?;
                Ok(Some(StoredSnapshot { meta, data }))
            }
            (_, _, Some(old)) => serde_json::from_slice(&old).map(Some).map_err(SnapshotError::Decode),
            _ => Ok(None),
        }
    }

    fn read_stored(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        self.read_stored_checked().map_err(|e| sm_err(ErrorVerb::Read, e))
    }

    fn write_stored(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let meta = serde_json::to_vec(&stored.meta).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let tx = self.db.begin_write().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        {
            let mut table = tx.open_table(SNAPSHOT).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            // Meta and body in one transaction: never one without the other.
            table.insert(KEY_META, meta.as_slice()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            table.insert(KEY_DATA, stored.data.as_slice()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            table.remove(KEY_CURRENT).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        tx.commit().map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn freeze(&self) -> Result<Frozen, StorageError> {
        let (last_applied, membership) = self.last_applied.read().map_err(|_| Self::poisoned())?.clone();
        Ok((self.state.load_full(), last_applied, membership))
    }

    fn poisoned() -> StorageError {
        sm_err(ErrorVerb::Read, std::io::Error::other("state lock poisoned"))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (state, last_applied, membership) = match self.frozen.take() {
            Some(f) => f,
            None => self.freeze()?,
        };
        // Serialising a large state takes a while: off the async workers,
        // and on an immutable copy, so writes go on meanwhile.
        let body = SnapshotBody {
            format: SNAPSHOT_FORMAT,
            last_applied,
            membership: membership.clone(),
            state: (*state).clone(),
        };
        let data = tokio::task::spawn_blocking(move || serde_json::to_vec(&body))
            .await
            .map_err(|e| sm_err(ErrorVerb::Write, std::io::Error::other(e.to_string())))?
            .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("none-{}", data.len()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        self.write_stored(&stored)?;
        self.metrics.snapshot_taken();
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
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
                    EntryPayload::Normal(cmd) => {
                        let before = state.clone();
                        let res = apply(&mut state, &cmd);
                        let effects = effect::collect(&before, &mut state, &cmd);
                        changes.push(Change {
                            index: entry.log_id.index,
                            command: Arc::new(cmd),
                            effects: effects.into(),
                            state: Arc::new(state.clone()),
                        });
                        results.push(res);
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
        self.write_stored(&StoredSnapshot { meta: meta.clone(), data })?;
        self.install_body(body);
        self.metrics.snapshot_taken();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.read_stored()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
