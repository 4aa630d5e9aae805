//! Container addresses out of the bridge's subnet, one file per address
//! under `/run/wharf/net/<bridge>/`: created with `O_EXCL` (so two
//! executors, even of different agents on the host, never take the same
//! one), holding the [`Lease`] (task, host-side veth, nat rules) that lets
//! anyone undo the container's networking, and deleted on release. Under
//! `/run` (a tmpfs) because the containers they describe end with the boot;
//! they survive an agent restart, and a lease whose task no live executor
//! claims is swept by the agent on recovery.

use super::{BridgeConfig, NetError};
use model::TaskId;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where the leases of `bridge` live.
pub fn lease_dir(bridge: &BridgeConfig) -> PathBuf {
    PathBuf::from("/run/wharf/net").join(&bridge.name)
}

/// What a container's address stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub task_id: TaskId,
    pub ip: Ipv4Addr,
    /// The host side of the container's veth pair.
    pub veth: String,
    /// The container's nat rules, as added (see `nat::container_rules`).
    pub rules: Vec<String>,
}

/// Takes the lowest free address of the subnet (never the network, the
/// bridge's or the broadcast address) for the lease `make` builds for it.
pub fn allocate(bridge: &BridgeConfig, make: impl Fn(Ipv4Addr) -> Lease) -> Result<Lease, NetError> {
    let dir = lease_dir(bridge);
    std::fs::create_dir_all(&dir)
        .map_err(|source| NetError::Io { context: format!("create {}", dir.display()), source })?;
    for ip in bridge.hosts() {
        let path = dir.join(ip.to_string());
        let mut file = match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(NetError::Io { context: format!("create {}", path.display()), source }),
        };
        let lease = make(ip);
        let data = serde_json::to_vec(&lease)
            .map_err(|e| NetError::Io { context: format!("encode lease of {ip}"), source: std::io::Error::other(e) })?;
        if let Err(source) = file.write_all(&data) {
            let _ = std::fs::remove_file(&path);
            return Err(NetError::Io { context: format!("write {}", path.display()), source });
        }
        return Ok(lease);
    }
    Err(NetError::Exhausted(bridge.cidr()))
}

/// Every lease of `bridge` (unreadable files are skipped: one being
/// written right now, or garbage).
pub fn leases(bridge: &BridgeConfig) -> Vec<Lease> {
    let Ok(entries) = std::fs::read_dir(lease_dir(bridge)) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|data| serde_json::from_slice(&data).ok())
        .collect()
}

/// The lease of `ip`, if there is one.
pub fn lease_of(bridge: &BridgeConfig, ip: Ipv4Addr) -> Option<Lease> {
    let data = std::fs::read(lease_dir(bridge).join(ip.to_string())).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Gives `ip` back.
pub fn release(bridge: &BridgeConfig, ip: Ipv4Addr) {
    let _ = std::fs::remove_file(lease_dir(bridge).join(ip.to_string()));
}
