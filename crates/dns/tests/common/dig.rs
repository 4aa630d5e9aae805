//! `dig` (Debian's bind9-dnsutils) run and its answer parsed: the tests ask
//! Wharf's DNS server as any resolver would. Shared by the `dns` crate's
//! tests and the end-to-end tests in `crates/wharf/tests`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command as Proc;

/// One `dig` answer, parsed.
#[derive(Debug, Default)]
pub struct Dig {
    pub status: String,
    pub flags: BTreeSet<String>,
    pub answer: Vec<(String, String, String)>,
    pub authority: Vec<(String, String, String)>,
    pub additional: Vec<(String, String, String)>,
    pub raw: String,
}

impl Dig {
    /// The data of the answers of one type, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self.answer.iter().filter(|a| a.1 == rtype).map(|a| a.2.clone()).collect();
        v.sort();
        v
    }
}

/// Runs `dig @addr name type` plus `extra` options.
pub fn dig(addr: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    dig_with(Proc::new("dig"), addr, name, rtype, extra)
}

/// `dig` run inside the network namespace `netns` (`ip netns exec`), as a
/// resolver on another host would ask.
pub fn dig_in_netns(netns: &str, addr: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let mut cmd = Proc::new("ip");
    cmd.args(["netns", "exec", netns, "dig"]);
    dig_with(cmd, addr, name, rtype, extra)
}

fn dig_with(mut cmd: Proc, addr: SocketAddr, name: &str, rtype: &str, extra: &[&str]) -> Dig {
    let out = cmd
        .arg(format!("@{}", addr.ip()))
        .args([
            "-p",
            &addr.port().to_string(),
            "+time=2",
            "+tries=1",
            "+noall",
            "+comments",
            "+answer",
            "+authority",
            "+additional",
        ])
        .args(extra)
        .args([name, rtype])
        .output()
        .expect("dig runs (Debian's bind9-dnsutils)");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let mut d = Dig { raw: raw.clone(), ..Dig::default() };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            let flags = rest.split(';').next().unwrap_or("");
            d.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if line.contains("ANSWER SECTION") {
            section = "answer";
        } else if line.contains("AUTHORITY SECTION") {
            section = "authority";
        } else if line.contains("ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(';') || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                let rec = (f[0].to_string(), f[3].to_string(), f[4..].join(" "));
                match section {
                    "answer" => d.answer.push(rec),
                    "authority" => d.authority.push(rec),
                    "additional" => d.additional.push(rec),
                    _ => {}
                }
            }
        }
    }
    d
}
