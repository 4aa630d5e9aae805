//! Bridge networking for the built-in runtime (Marathon's
//! `container/bridge`, `BRIDGE` in the container's docker section).
//!
//! The node has one bridge, `wharf0`, with the first address of its subnet
//! (`--bridge-subnet`, default `172.31.0.1/24`: away from Docker's
//! 172.17/16; every node may use the same one, since nothing routes between
//! nodes' bridges), made by the agent on first need ([`ensure_bridge`])
//! with the node-wide iptables rules (`nat`). Each bridge container gets,
//! from its executor ([`attach`]): a network namespace of its own, a veth
//! pair (`vw<address in hex>` on the bridge, `eth0` inside, with a MAC
//! derived from the address as Docker does, so a reused address never meets
//! a stale ARP entry), an address leased from the subnet (`ipam`), loopback
//! up, a default route via the bridge, and DNAT rules from each allocated
//! host port to its container port and from the bridge's port 53 to the
//! node's DNS server. The executor undoes it all when the container ends
//! ([`detach`]); the agent's recovery undoes it for tasks whose executor
//! died ([`sweep`]).
//!
//! The namespace is made by the executor with `unshare(CLONE_NEWNET)` and
//! left again with `setns`, keeping an fd to it; the container joins it
//! through `/proc/<executor>/fd/<n>`. Nothing is mounted, so nothing can
//! leak: the namespace (and with it the veth pair) is gone once the
//! executor and the container's processes are.

mod ipam;
pub mod nat;
mod netlink;

pub use ipam::Lease;

use model::TaskId;
use netlink::Netlink;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// The node's bridge.
pub const BRIDGE_NAME: &str = "wharf0";
/// `--bridge-subnet`'s default.
pub const DEFAULT_SUBNET: &str = "172.31.0.1/24";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("iptables {rules}: {message}")]
    Iptables { rules: String, message: String },
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("the bridge {0} does not exist (the agent makes it before launching)")]
    NoBridge(String),
}

fn nl(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let op = op.into();
    move |source| NetError::Netlink { op, source }
}

/// The node's bridge: its name and its address in its subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConfig {
    pub name: String,
    /// The bridge's own address, the containers' gateway.
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

impl BridgeConfig {
    /// `A.B.C.D/N`: the bridge takes `A.B.C.D`, or the first host address
    /// when that is the network's address. Between /8 and /30.
    pub fn parse(name: &str, s: &str) -> Result<BridgeConfig, String> {
        let (ip, prefix) = s.split_once('/').ok_or_else(|| format!("'{s}' is not an IPv4 CIDR (A.B.C.D/N)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("'{ip}' is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("'{prefix}' is not a prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(format!("the prefix must be between /8 and /30, got /{prefix}"));
        }
        let mut cfg = BridgeConfig { name: name.to_string(), gateway: ip, prefix };
        if ip == cfg.network() {
            cfg.gateway = Ipv4Addr::from(u32::from(ip) + 1);
        } else if ip == cfg.broadcast() {
            return Err(format!("{ip} is the broadcast address of /{prefix}"));
        }
        Ok(cfg)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & self.mask())
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) | !self.mask())
    }

    /// `network/prefix`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network(), self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The addresses containers can have.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (u32::from(self.network()) + 1..u32::from(self.broadcast()))
            .map(Ipv4Addr::from)
            .filter(|ip| *ip != self.gateway)
    }
}

/// Transport of a mapped port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One `portMappings` entry on one transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub transport: Proto,
    pub host_port: u16,
    pub container_port: u16,
}

/// The node's networking settings for containers: the bridge
/// (`--bridge-subnet`), the node's DNS server (as bound) and the cluster
/// domain (`--dns-domain`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeNetwork {
    pub bridge: BridgeConfig,
    pub dns: Option<SocketAddr>,
    pub domain: String,
}

impl NodeNetwork {
    /// `wharf0` on the default subnet, no DNS server, domain `mesos`.
    pub fn default_for_tests() -> NodeNetwork {
        NodeNetwork {
            bridge: BridgeConfig::parse(BRIDGE_NAME, DEFAULT_SUBNET).unwrap_or(BridgeConfig {
                name: BRIDGE_NAME.into(),
                gateway: Ipv4Addr::new(172, 31, 0, 1),
                prefix: 24,
            }),
            dns: None,
            domain: "mesos".into(),
        }
    }

    /// A container's `/etc/resolv.conf`: the node's DNS server (the
    /// bridge's address for a bridge container; for one on the node's
    /// network the server's own address when it listens on port 53) with
    /// `search marathon.<domain> <domain>`. Without a server reachable that
    /// way, the node's own name servers.
    pub fn resolv_conf(&self, bridge: bool, node_resolv: &str) -> String {
        let node_servers: Vec<String> = node_resolv
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let servers = match self.dns {
            Some(_) if bridge => vec![self.bridge.gateway.to_string()],
            Some(a) if a.port() == 53 && a.ip().is_unspecified() => vec!["127.0.0.1".to_string()],
            Some(a) if a.port() == 53 => vec![a.ip().to_string()],
            _ => node_servers,
        };
        let mut out = String::new();
        for s in servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        out.push_str(&format!("search marathon.{d} {d}\n", d = self.domain));
        out
    }
}

/// A bridge container's networking, as the agent hands it to the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerNetwork {
    pub bridge: BridgeConfig,
    pub ports: Vec<PortForward>,
    /// The node's DNS server, reached from the container at the bridge's
    /// address, port 53.
    pub dns: Option<SocketAddr>,
}

/// Creates the bridge with its address and the node-wide rules, and turns
/// on forwarding and `route_localnet` (for `127.0.0.1:hostPort`). Each step
/// keeps what is there, so it is safe on every agent start.
pub fn ensure_bridge(bridge: &BridgeConfig) -> Result<(), NetError> {
    let mut nl_host = Netlink::open().map_err(nl("open a socket"))?;
    let index = nl_host.create_bridge(&bridge.name).map_err(nl(format!("create bridge {}", bridge.name)))?;
    nl_host
        .add_address(index, bridge.gateway, bridge.prefix)
        .map_err(nl(format!("address {}/{} on {}", bridge.gateway, bridge.prefix, bridge.name)))?;
    nl_host.set_up(index).map_err(nl(format!("bring {} up", bridge.name)))?;
    for (path, what) in [
        ("/proc/sys/net/ipv4/ip_forward".to_string(), "IP forwarding"),
        (format!("/proc/sys/net/ipv4/conf/{}/route_localnet", bridge.name), "route_localnet"),
    ] {
        std::fs::write(&path, "1")
            .map_err(|source| NetError::Io { context: format!("turn on {what} ({path})"), source })?;
    }
    nat::ensure_node_rules(bridge)
}

/// The host-side veth name of the container at `ip` (15 bytes at most).
pub fn veth_name(ip: Ipv4Addr) -> String {
    format!("vw{:08x}", u32::from(ip))
}

fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A container's network, attached: its address and its namespace, held
/// open by the executor.
pub struct Attached {
    pub ip: Ipv4Addr,
    pub bridge: BridgeConfig,
    netns: OwnedFd,
}

impl Attached {
    /// The path through which the container joins the namespace (valid
    /// while the executor lives).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.netns.as_raw_fd()))
    }
}

/// Makes `task`'s network: address, namespace, veth, routes and rules. On
/// error nothing of it is left. Called by the (single-threaded) executor:
/// it enters the new namespace and leaves it again.
pub fn attach(task: &TaskId, net: &ContainerNetwork) -> Result<Attached, NetError> {
    let bridge = &net.bridge;
    let mut host = Netlink::open().map_err(nl("open a socket"))?;
    let bridge_index = host
        .link_index(&bridge.name)
        .map_err(nl(format!("find {}", bridge.name)))?
        .ok_or_else(|| NetError::NoBridge(bridge.name.clone()))?;
    let lease = ipam::allocate(bridge, |ip| Lease {
        task_id: task.clone(),
        ip,
        veth: veth_name(ip),
        rules: nat::container_rules(ip, bridge, &net.ports, net.dns),
    })?;
    let made = (|| {
        let (netns, mut inside) = new_netns()?;
        host.create_veth(&lease.veth, bridge_index, "eth0", mac_of(lease.ip), netns.as_raw_fd())
            .map_err(nl(format!("create veth {}", lease.veth)))?;
        let veth = host.link_index(&lease.veth).map_err(nl("find the veth"))?;
        host.set_up(veth.ok_or_else(|| NetError::NoBridge(lease.veth.clone()))?)
            .map_err(nl(format!("bring {} up", lease.veth)))?;
        let lo = inside.link_index("lo").map_err(nl("find lo"))?;
        let eth0 = inside.link_index("eth0").map_err(nl("find eth0"))?;
        let (Some(lo), Some(eth0)) = (lo, eth0) else {
            return Err(NetError::NoBridge("eth0".into()));
        };
        inside.set_up(lo).map_err(nl("bring lo up"))?;
        inside.add_address(eth0, lease.ip, bridge.prefix).map_err(nl(format!("address {} on eth0", lease.ip)))?;
        inside.set_up(eth0).map_err(nl("bring eth0 up"))?;
        inside.add_default_route(bridge.gateway).map_err(nl("default route"))?;
        nat::add(&lease.rules)?;
        Ok(netns)
    })();
    match made {
        Ok(netns) => Ok(Attached { ip: lease.ip, bridge: bridge.clone(), netns }),
        Err(e) => {
            undo(bridge, &lease);
            Err(e)
        }
    }
}

/// A new network namespace (an fd to it) and a netlink socket inside it;
/// the calling thread is back in its own namespace on return.
fn new_netns() -> Result<(OwnedFd, Netlink), NetError> {
    use nix::sched::{setns, unshare, CloneFlags};
    let io = |context: &str| {
        let context = context.to_string();
        move |e: nix::Error| NetError::Io { context, source: std::io::Error::from(e) }
    };
    let open = |p: &str| {
        std::fs::File::open(p)
            .map(OwnedFd::from)
            .map_err(|source| NetError::Io { context: format!("open {p}"), source })
    };
    let own = open("/proc/thread-self/ns/net")?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(io("unshare the network namespace"))?;
    let made = open("/proc/thread-self/ns/net").and_then(|ns| Ok((ns, Netlink::open().map_err(nl("open a socket"))?)));
    // Back home whatever happened; staying in the new namespace would put
    // the executor's iptables calls in the wrong place.
    setns(&own, CloneFlags::CLONE_NEWNET).map_err(io("return to the node's network namespace"))?;
    made
}

fn undo(bridge: &BridgeConfig, lease: &Lease) {
    if let Ok(mut host) = Netlink::open() {
        let _ = host.delete_link(&lease.veth);
    }
    nat::delete(&lease.rules);
    ipam::release(bridge, lease.ip);
}

/// Undoes `task`'s network at `ip`: the veth pair, the rules, the lease.
/// Only if the lease is still `task`'s (a sweep may have taken it back and
/// another container leased the address since).
pub fn detach(bridge: &BridgeConfig, task: &TaskId, ip: Ipv4Addr) {
    if let Some(lease) = ipam::lease_of(bridge, ip).filter(|l| &l.task_id == task) {
        undo(bridge, &lease);
    }
}

/// Undoes every network `task` has on `bridge` (its executor died).
pub fn detach_task(bridge: &BridgeConfig, task: &TaskId) {
    for lease in ipam::leases(bridge).into_iter().filter(|l| &l.task_id == task) {
        undo(bridge, &lease);
    }
}

/// Undoes the network of every task with a lease on `bridge` that no live
/// executor claims (`live` is asked after the leases are listed, so an
/// executor that made a listed lease is seen if it still lives). Returns
/// those tasks.
pub fn sweep(bridge: &BridgeConfig, live: impl FnOnce() -> HashSet<TaskId>) -> Vec<TaskId> {
    let leases = ipam::leases(bridge);
    if leases.is_empty() {
        return Vec::new();
    }
    let live = live();
    let mut swept = Vec::new();
    for lease in leases {
        if !live.contains(&lease.task_id) {
            undo(bridge, &lease);
            swept.push(lease.task_id);
        }
    }
    swept
}

/// The leases on `bridge` (what `wharf` and the tests inspect).
pub fn leases(bridge: &BridgeConfig) -> Vec<Lease> {
    ipam::leases(bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_with_the_bridge_on_the_first_host_address() {
        let b = BridgeConfig::parse("wharf0", "172.31.0.0/24").expect("cidr");
        assert_eq!(b.gateway, Ipv4Addr::new(172, 31, 0, 1));
        assert_eq!(b.cidr(), "172.31.0.0/24");
        let hosts: Vec<Ipv4Addr> = b.hosts().collect();
        assert_eq!(hosts.len(), 253);
        assert_eq!(hosts[0], Ipv4Addr::new(172, 31, 0, 2));
        assert_eq!(hosts[252], Ipv4Addr::new(172, 31, 0, 254));
        let b = BridgeConfig::parse("wharf0", "10.9.8.7/16").expect("cidr");
        assert_eq!((b.gateway, b.network()), (Ipv4Addr::new(10, 9, 8, 7), Ipv4Addr::new(10, 9, 0, 0)));
        assert!(b.contains(Ipv4Addr::new(10, 9, 200, 1)) && !b.contains(Ipv4Addr::new(10, 10, 0, 1)));
        for bad in ["172.31.0.1", "172.31.0.1/31", "172.31.0.255/24", "x/24", "172.31.0.1/x"] {
            assert!(BridgeConfig::parse("wharf0", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolv_conf_names_the_nodes_dns_server_and_searches_the_cluster_domain() {
        let mut n = NodeNetwork::default_for_tests();
        let node = "nameserver 10.0.0.53\nsearch example.com\n";
        assert_eq!(n.resolv_conf(true, node), "nameserver 10.0.0.53\nsearch marathon.mesos mesos\n");
        n.dns = Some("127.0.0.1:8053".parse().expect("addr"));
        assert_eq!(n.resolv_conf(true, node), "nameserver 172.31.0.1\nsearch marathon.mesos mesos\n");
        // A port other than 53 cannot be named in resolv.conf.
        assert_eq!(n.resolv_conf(false, node), "nameserver 10.0.0.53\nsearch marathon.mesos mesos\n");
        n.dns = Some("0.0.0.0:53".parse().expect("addr"));
        assert_eq!(n.resolv_conf(false, node), "nameserver 127.0.0.1\nsearch marathon.mesos mesos\n");
    }

    #[test]
    fn container_rules_map_ports_and_send_dns_to_the_node() {
        let b = BridgeConfig::parse("wharf0", DEFAULT_SUBNET).expect("cidr");
        let ip = Ipv4Addr::new(172, 31, 0, 9);
        let ports = [PortForward { transport: Proto::Udp, host_port: 31000, container_port: 53 }];
        let dns = Some("127.0.0.1:8053".parse().expect("addr"));
        let r = nat::container_rules(ip, &b, &ports, dns);
        assert_eq!(r[0], "WHARF-DNAT -p udp -m udp --dport 31000 -j DNAT --to-destination 172.31.0.9:53");
        assert!(r[1].contains("-s 172.31.0.9/32 -d 172.31.0.1/32 -p udp") && r[1].ends_with("127.0.0.1:8053"));
        assert_eq!(r.len(), 3);
        // A server on every address at port 53 needs no rule.
        assert_eq!(nat::container_rules(ip, &b, &[], Some("0.0.0.0:53".parse().expect("addr"))).len(), 0);
        assert_eq!(veth_name(ip), "vwac1f0009");
    }
}
