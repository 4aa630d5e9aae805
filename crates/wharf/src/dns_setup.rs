//! `wharf agent`'s DNS flags turned into the DNS server's configuration, and
//! the listener with Mesos-DNS's fallback (53, else 8053).

use crate::cli::DnsArgs;
use anyhow::Context;
use dns::forward::{resolv_conf_servers, Forwarder};
use dns::names::LabelSpec;
use dns::server::{DnsConfig, Listeners};
use dns::zone::ZoneConfig;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where DNS should listen: `None` for `--dns off`; the flag says whether
/// the address was asked for (then failing to bind it is fatal).
pub fn listen_addr(args: &DnsArgs, http: SocketAddr) -> anyhow::Result<Option<(SocketAddr, bool)>> {
    match args.listen.as_deref() {
        Some("off") => Ok(None),
        Some(a) => {
            Ok(Some((parse_server(a, 53).with_context(|| format!("--dns: '{a}' is not IP:PORT or off"))?, true)))
        }
        None => Ok(Some((SocketAddr::new(http.ip(), 53), false))),
    }
}

fn parse_server(s: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let ip: IpAddr = s.trim_matches(|c| c == '[' || c == ']').parse()?;
    Ok(SocketAddr::new(ip, default_port))
}

/// Checks every DNS flag; `own` is the DNS listener, never its own upstream.
pub fn config(args: &DnsArgs, own: Option<SocketAddr>, ns_ip: Option<IpAddr>) -> anyhow::Result<DnsConfig> {
    let domain = args.domain.trim_matches('.').to_ascii_lowercase();
    if domain.is_empty() || hickory_name_ok(&domain).is_none() {
        anyhow::bail!("--dns-domain: '{}' is not a domain name", args.domain);
    }
    let mut upstreams = Vec::new();
    for u in &args.upstream {
        upstreams.push(parse_server(u, 53).with_context(|| format!("--dns-upstream: '{u}' is not IP[:PORT]"))?);
    }
    if args.upstream.is_empty() {
        upstreams = std::fs::read_to_string("/etc/resolv.conf").map(|t| resolv_conf_servers(&t)).unwrap_or_default();
    }
    let is_self = |u: &SocketAddr| {
        own.is_some_and(|o| o == *u || (o.ip().is_unspecified() && o.port() == u.port() && u.ip().is_loopback()))
    };
    upstreams.retain(|u| !is_self(u));
    let mut zones = Vec::new();
    for z in &args.zone_upstream {
        let (zone, addrs) =
            z.split_once('=').with_context(|| format!("--dns-zone-upstream: '{z}' is not ZONE=IP[:PORT]"))?;
        let mut ups = Vec::new();
        for a in addrs.split('+') {
            ups.push(parse_server(a, 53).with_context(|| format!("--dns-zone-upstream: '{a}' is not IP[:PORT]"))?);
        }
        zones.push((format!("{}.", zone.trim_matches('.').to_ascii_lowercase()), ups));
    }
    zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.len()));
    let mut forward_from = Vec::new();
    for c in &args.forward_from {
        let net: ipnet::IpNet = c
            .parse()
            .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
            .with_context(|| format!("--dns-forward-from: '{c}' is not a CIDR"))?;
        forward_from.push(net);
    }
    if !(args.timeout > 0.0 && args.timeout <= 60.0) {
        anyhow::bail!("--dns-timeout: must be between 0 and 60 seconds, got {}", args.timeout);
    }
    Ok(DnsConfig {
        zone: ZoneConfig {
            domain,
            spec: if args.rfc952 { LabelSpec::Rfc952 } else { LabelSpec::Rfc1123 },
            ttl: args.ttl,
        },
        forwarder: Forwarder { upstreams, zones, timeout: Duration::from_secs_f64(args.timeout) },
        forward_from,
        ns_ip,
    })
}

fn hickory_name_ok(d: &str) -> Option<()> {
    d.split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then_some(())
}

/// Binds the DNS listener. An address given with `--dns` must bind; the
/// default falls back from 53 to 8053, and if neither binds the node runs
/// without a DNS listener (said loudly) rather than not at all.
pub async fn bind(addr: SocketAddr, explicit: bool) -> anyhow::Result<Option<Listeners>> {
    match dns::server::bind(addr).await {
        Ok(l) => return Ok(Some(l)),
        Err(e) if explicit => return Err(e.into()),
        Err(e) => tracing::warn!("DNS: cannot listen on {addr} ({}); trying port 8053", e.source),
    }
    let fallback = SocketAddr::new(addr.ip(), 8053);
    match dns::server::bind(fallback).await {
        Ok(l) => {
            tracing::warn!("DNS: listening on {fallback} instead of {addr}");
            Ok(Some(l))
        }
        Err(e) => {
            tracing::error!(
                "DNS: cannot listen on {fallback} either ({}); this node serves no DNS (set --dns)",
                e.source
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        dns: DnsArgs,
    }

    fn args(a: &[&str]) -> DnsArgs {
        T::parse_from(std::iter::once("t").chain(a.iter().copied())).dns
    }

    #[test]
    fn flags_become_a_config() {
        let own: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        let c = config(
            &args(&[
                "--dns-upstream",
                "127.0.0.1,10.0.0.1:5353",
                "--dns-zone-upstream",
                "corp=10.1.1.1",
                "--dns-domain",
                "Cluster.",
            ]),
            Some(own),
            None,
        )
        .expect("config");
        assert_eq!(c.zone.domain, "cluster");
        // Our own listener is never an upstream (no forwarding loop).
        assert_eq!(c.forwarder.upstreams, vec!["10.0.0.1:5353".parse::<SocketAddr>().expect("a")]);
        assert_eq!(c.forwarder.zones[0].0, "corp.");
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = config(&args(&["--dns-upstream", "nope"]), None, None).expect_err("bad upstream");
        assert!(e.to_string().contains("--dns-upstream"), "{e}");
        let e = config(&args(&["--dns-domain", "a..b"]), None, None).expect_err("bad domain");
        assert!(e.to_string().contains("--dns-domain"), "{e}");
        let e = config(&args(&["--dns-forward-from", "x/8"]), None, None).expect_err("bad cidr");
        assert!(e.to_string().contains("--dns-forward-from"), "{e}");
        let e = listen_addr(&args(&["--dns", "x"]), "127.0.0.1:8080".parse().expect("a")).expect_err("bad listen");
        assert!(e.to_string().contains("--dns"), "{e}");
    }
}
