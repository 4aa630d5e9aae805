//! The bridge's iptables rules (Debian's `iptables`, nft or legacy backend).
//!
//! Port mappings are DNAT rules, not a userspace proxy: the kernel forwards
//! every packet (no copy through a process per connection, no process to
//! supervise per port, and the container sees the client's real address),
//! as Docker does with `--userland-proxy=false`. Connections to
//! `127.0.0.1:hostPort` from the node itself work too: the `OUTPUT` hook
//! sends locally addressed traffic through the same chain,
//! `route_localnet` on the bridge lets such packets leave with a loopback
//! source, and a masquerade rule gives them the bridge's address.
//!
//! Node-wide rules are added once (checked with `-C` first, so a restarted
//! agent adds nothing twice); a container's own rules are added and
//! deleted as one `iptables-restore --noflush` batch, one process each way.

use super::{BridgeConfig, NetError, PortForward};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};

/// The nat chain holding every port mapping of the node's containers.
pub const DNAT_CHAIN: &str = "WHARF-DNAT";

fn iptables(args: &[&str]) -> Result<std::process::Output, NetError> {
    Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetError::Io { context: "run iptables (Debian's iptables package)".into(), source })
}

/// Adds `rule` (`-t TABLE CHAIN ARGS...` without the action) unless it is
/// there; `insert` puts it first in its chain.
fn ensure(table: &str, chain: &str, rule: &[&str], insert: bool) -> Result<(), NetError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check)?.status.success() {
        return Ok(());
    }
    let mut add = vec!["-t", table, if insert { "-I" } else { "-A" }, chain];
    if insert {
        add.push("1");
    }
    add.extend_from_slice(rule);
    let out = iptables(&add)?;
    if !out.status.success() {
        return Err(NetError::Iptables {
            rules: add.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The rules every bridge container relies on: the DNAT chain hooked into
/// `PREROUTING` and `OUTPUT` for local destinations, masquerade for
/// outbound traffic, for the node's own connections into the bridge and for
/// hairpin (a container reaching another through a host port), and
/// `FORWARD` accepting the bridge's traffic (Docker sets that policy to DROP).
pub fn ensure_node_rules(bridge: &BridgeConfig) -> Result<(), NetError> {
    let out = iptables(&["-t", "nat", "-N", DNAT_CHAIN])?;
    if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("exists") {
        return Err(NetError::Iptables {
            rules: format!("-t nat -N {DNAT_CHAIN}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let br = bridge.name.as_str();
    let subnet = bridge.cidr();
    let local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN];
    ensure("nat", "PREROUTING", &local, false)?;
    ensure("nat", "OUTPUT", &local, false)?;
    ensure("nat", "POSTROUTING", &["-s", &subnet, "!", "-o", br, "-j", "MASQUERADE"], false)?;
    ensure("nat", "POSTROUTING", &["-o", br, "-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE"], false)?;
    ensure(
        "nat",
        "POSTROUTING",
        &["-s", &subnet, "-o", br, "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"],
        false,
    )?;
    ensure("filter", "FORWARD", &["-i", br, "-j", "ACCEPT"], true)?;
    ensure("filter", "FORWARD", &["-o", br, "-j", "ACCEPT"], true)?;
    Ok(())
}

/// A container's nat rules (chain and match, without the action): one DNAT
/// per mapped port and transport, and its DNS queries to the bridge's
/// address sent to this node's DNS server.
pub fn container_rules(
    ip: Ipv4Addr,
    bridge: &BridgeConfig,
    ports: &[PortForward],
    dns: Option<SocketAddr>,
) -> Vec<String> {
    let mut rules: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{DNAT_CHAIN} -p {t} -m {t} --dport {h} -j DNAT --to-destination {ip}:{c}",
                t = p.transport.as_str(),
                h = p.host_port,
                c = p.container_port
            )
        })
        .collect();
    if let Some(SocketAddr::V4(dns)) = dns {
        // A DNS server listening on every address is reached on the bridge's.
        let to = if dns.ip().is_unspecified() { bridge.gateway } else { *dns.ip() };
        if !(to == bridge.gateway && dns.port() == 53) {
            for t in ["udp", "tcp"] {
                rules.push(format!(
                    "{DNAT_CHAIN} -s {ip}/32 -d {gw}/32 -p {t} -m {t} --dport 53 -j DNAT --to-destination {to}:{port}",
                    gw = bridge.gateway,
                    port = dns.port()
                ));
            }
        }
    }
    rules
}

fn restore(action: &str, rules: &[String]) -> Result<(), String> {
    let mut input = String::from("*nat\n");
    for r in rules {
        input.push_str(&format!("{action} {r}\n"));
    }
    input.push_str("COMMIT\n");
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|e| format!("write to iptables-restore: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait for iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Adds a container's rules, all or none.
pub fn add(rules: &[String]) -> Result<(), NetError> {
    if rules.is_empty() {
        return Ok(());
    }
    restore("-A", rules).map_err(|message| NetError::Iptables { rules: rules.join("; "), message })
}

/// Deletes a container's rules. One batch when they are all there; else
/// (a crash between adding and recording, a sweep racing the executor)
/// each rule on its own, a missing one being fine.
pub fn delete(rules: &[String]) {
    if rules.is_empty() || restore("-D", rules).is_ok() {
        return;
    }
    for r in rules {
        let mut args = vec!["-t", "nat", "-D"];
        args.extend(r.split_whitespace());
        let _ = iptables(&args);
    }
}
