//! Raft log, vote and commit index in redb. Every append is one durable redb
//! transaction (one fsync for the whole batch openraft hands us), and the
//! flush callback fires only after it: an acknowledged write is on disk.

use crate::raft_types::{Entry, LogId, StorageError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

fn read_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Read, openraft::AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageIOError::new(ErrorSubject::Logs, ErrorVerb::Write, openraft::AnyError::new(&e)).into()
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Result<LogStore, redb::Error> {
        let tx = db.begin_write()?;
        {
            tx.open_table(LOGS)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        Ok(LogStore { db })
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
        let tx = self.db.begin_read().map_err(read_err)?;
        let table = tx.open_table(LOGS).map_err(read_err)?;
        let iter = match end {
            Some(end) => table.range(start..end),
            None => table.range(start..),
        }
        .map_err(read_err)?;
        let mut out = Vec::new();
        for item in iter {
            let (_, v) = item.map_err(read_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let last = self.last_entry_id()?.or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.put_meta(KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            for e in entries {
                let bytes = serde_json::to_vec(&e).map_err(write_err)?;
                table.insert(e.log_id.index, bytes.as_slice()).map_err(write_err)?;
            }
        }
        let res = tx.commit();
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(write_err)?;
        {
            let mut table = tx.open_table(LOGS).map_err(write_err)?;
            table.retain_in(log_id.index.., |_, _| false).map_err(write_err)?;
        }
        tx.commit().map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
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
