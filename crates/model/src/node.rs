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
