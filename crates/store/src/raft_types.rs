//! openraft's type configuration. openraft's API is pre-1.0, so its types stay
//! inside this crate; the rest of Wharf sees `Store`, `Command` and `Applied`.

use crate::command::{Applied, Command};
use std::io::Cursor;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type NodeIdT = u64;
pub type LogId = openraft::LogId<NodeIdT>;
pub type Vote = openraft::Vote<NodeIdT>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeIdT>;
pub type StoredMembership = openraft::StoredMembership<NodeIdT, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeIdT, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
