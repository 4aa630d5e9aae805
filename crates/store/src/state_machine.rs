//! The Raft state machine: the in-memory `ClusterState`, snapshots of it kept
//! in redb, and the change feed fed by every applied entry.
//!
//! On restart the latest snapshot is loaded and openraft re-applies the
//! committed log after it, so the state is rebuilt exactly.

use crate::apply::apply;
use crate::command::Applied;
use crate::raft_types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::watch::Feed;
use model::ClusterState;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, RwLock};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const KEY_CURRENT: &str = "current";

/// Shared, read-mostly view of the applied state.
pub type SharedState = Arc<RwLock<ClusterState>>;

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, openraft::AnyError::new(&e)).into()
}

#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    state: SharedState,
    last_applied: Arc<RwLock<(Option<LogId>, StoredMembership)>>,
    feed: Feed,
}

impl StateMachine {
    pub fn open(db: Arc<Database>, feed: Feed) -> Result<StateMachine, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(SNAPSHOT)?;
        tx.commit()?;
        let sm = StateMachine {
            db,
            state: Arc::new(RwLock::new(ClusterState::default())),
            last_applied: Arc::new(RwLock::new((None, StoredMembership::default()))),
            feed,
        };
        if let Some(stored) = sm.read_stored().ok().flatten() {
            if let Ok(body) = serde_json::from_slice::<SnapshotBody>(&stored.data) {
                sm.install_body(body);
            }
        }
        Ok(sm)
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    fn install_body(&self, body: SnapshotBody) {
        let index = body.last_applied.map(|l| l.index).unwrap_or(0);
        if let Ok(mut s) = self.state.write() {
            *s = body.state;
        }
        if let Ok(mut la) = self.last_applied.write() {
            *la = (body.last_applied, body.membership);
        }
        self.feed.reset(index);
    }

    fn read_stored(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let tx = self.db.begin_read().map_err(|e| sm_err(ErrorVerb::Read, e))?;
        let table = tx.open_table(SNAPSHOT).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        match table.get(KEY_CURRENT).map_err(|e| sm_err(ErrorVerb::Read, e))? {
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| sm_err(ErrorVerb::Read, e)),
            None => Ok(None),
        }
    }

    fn write_stored(&self, stored: &StoredSnapshot) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(stored).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let tx = self.db.begin_write().map_err(|e| sm_err(ErrorVerb::Write, e))?;
        {
            let mut table = tx.open_table(SNAPSHOT).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            table.insert(KEY_CURRENT, bytes.as_slice()).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        }
        tx.commit().map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn poisoned() -> StorageError {
        sm_err(ErrorVerb::Read, std::io::Error::other("state lock poisoned"))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (last_applied, membership) = self.last_applied.read().map_err(|_| Self::poisoned())?.clone();
        let state = self.state.read().map_err(|_| Self::poisoned())?.clone();
        let body = SnapshotBody { last_applied, membership: membership.clone(), state };
        let data = serde_json::to_vec(&body).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, data.len()),
            None => format!("none-{}", data.len()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        self.write_stored(&stored)?;
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
        let mut results = Vec::new();
        let mut changes = Vec::new();
        {
            let mut state = self.state.write().map_err(|_| Self::poisoned())?;
            let mut la = self.last_applied.write().map_err(|_| Self::poisoned())?;
            for entry in entries {
                la.0 = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(Applied::Done),
                    EntryPayload::Normal(cmd) => {
                        let res = apply(&mut state, &cmd);
                        changes.push((entry.log_id.index, Arc::new(cmd)));
                        results.push(res);
                    }
                    EntryPayload::Membership(m) => {
                        la.1 = StoredMembership::new(Some(entry.log_id), m);
                        results.push(Applied::Done);
                    }
                }
            }
        }
        // Published after the write lock is released: a consumer woken by the
        // feed always reads a state that contains the change.
        for (index, cmd) in changes {
            self.feed.publish(index, cmd);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
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
        let body: SnapshotBody = serde_json::from_slice(&data).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.write_stored(&StoredSnapshot { meta: meta.clone(), data })?;
        self.install_body(body);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.read_stored()?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
