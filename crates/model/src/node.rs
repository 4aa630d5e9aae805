//! A node as the cluster knows it: addresses, resources it offers, attributes.

use crate::{DriverKind, NodeId, Resources, UnixMillis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    pub hostname: String,
    /// Address other nodes and clients use to reach this node's tasks.
    pub advertise: String,
    pub http_addr: String,
    pub rpc_addr: String,
    pub resources: Resources,
    /// Inclusive range of host ports handed to tasks.
    pub port_range: (u16, u16),
    pub attributes: BTreeMap<String, String>,
    pub registered_at: UnixMillis,
    /// Drained nodes get no new tasks and their tasks move elsewhere.
    pub draining: bool,
    /// Set while the leader hears no heartbeat from the node.
    #[serde(default)]
    pub unreachable_since: Option<UnixMillis>,
    /// The drivers this node can run tasks with, found at agent start. A
    /// node registered before drivers were recorded runs commands only.
    #[serde(default = "exec_only")]
    pub drivers: Vec<DriverKind>,
    /// The built-in runtime's images on the node, as its agent last
    /// reported them (`Command::NodeImages`, sent only when they change).
    #[serde(default)]
    pub images: Vec<NodeImage>,
}

/// One image in a node's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImage {
    pub reference: String,
    /// The manifest's digest.
    pub digest: String,
    /// Bytes of its layers (compressed, as pulled).
    pub size: u64,
    /// When a task last started from it or was seen running it (within a
    /// minute; reports do not follow every launch).
    pub last_used: UnixMillis,
}

fn exec_only() -> Vec<DriverKind> {
    vec![DriverKind::Exec]
}

impl NodeInfo {
    pub fn is_reachable(&self) -> bool {
        self.unreachable_since.is_none()
    }

    pub fn has_driver(&self, d: DriverKind) -> bool {
        self.drivers.contains(&d)
    }
}
