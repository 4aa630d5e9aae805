//! `wharf bench cluster --vs-etcd`: durable writes side by side with etcd.
//! Starts a 3-member etcd cluster on 127.78.0.1-3 (Debian's `etcd-server`,
//! default settings, so every put is fsynced on a quorum) and three Wharf
//! nodes on 127.77.0.1-3, then drives each leader in turn with the same load
//! generator (`bench_cluster::load`) and prints writes/s, p50, p99 and the
//! Wharf/etcd ratios.

use crate::bench_cluster::{load, start_wharf, wharf_writes, LoadResult, LoadSpec};
use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// One etcd member; stopped (SIGTERM, then reaped) on drop.
struct Member {
    name: String,
    ip: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// `etcd` on the PATH, or an error that says how to get it.
fn find_etcd() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context("`etcd` is not on the PATH; install Debian's etcd server with `apt-get install etcd-server`")
}

fn version(etcd: &Path) -> String {
    std::process::Command::new(etcd)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "etcd (version unknown)".to_string())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn start_etcd(etcd: &Path, dir: &Path) -> anyhow::Result<Vec<Member>> {
    let members: Vec<(String, String)> = (1..=3).map(|i| (format!("e{i}"), format!("127.78.0.{i}"))).collect();
    let initial = members.iter().map(|(n, ip)| format!("{n}=http://{ip}:2380")).collect::<Vec<_>>().join(",");
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, ip) in members {
        let data = dir.join(&name);
        let log = dir.join(format!("{name}.log"));
        let logfile = std::fs::File::create(&log)?;
        let child = std::process::Command::new(etcd)
            .args(["--name", &name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{ip}:2379")])
            .args(["--advertise-client-urls", &format!("http://{ip}:2379")])
            .args(["--listen-peer-urls", &format!("http://{ip}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{ip}:2380")])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "wharf-bench", "--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .context("starting an etcd member")?;
        out.push(Member { name, ip, log, child: Some(child) });
    }
    Ok(out)
}

/// `POST {url}/v3/maintenance/status`: (this member's id, the leader's id);
/// etcd's gateway renders uint64s as strings.
async fn status(http: &reqwest::Client, url: &str) -> Option<(String, String)> {
    let resp = http.post(format!("{url}/v3/maintenance/status")).json(&json!({})).send().await.ok()?;
    let v: Value = resp.json().await.ok()?;
    let me = v["header"]["member_id"].as_str()?.to_string();
    let leader = v["leader"].as_str()?.to_string();
    Some((me, leader))
}

/// Waits until every member answers and agrees on a leader; returns the
/// leader's client URL.
async fn etcd_leader(members: &mut [Member]) -> anyhow::Result<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let t = Instant::now();
    loop {
        let mut seen = Vec::new();
        for m in members.iter() {
            if let Some(s) = status(&http, &m.client_url()).await {
                seen.push((m.client_url(), s));
            }
        }
        if seen.len() == members.len() {
            let leader = &seen[0].1 .1;
            if leader != "0" && seen.iter().all(|(_, (_, l))| l == leader) {
                if let Some((url, _)) = seen.iter().find(|(_, (me, _))| me == leader) {
                    return Ok(url.clone());
                }
            }
        }
        for m in members.iter_mut() {
            if let Some(Ok(Some(code))) = m.child.as_mut().map(|c| c.try_wait()) {
                bail!("etcd member {} exited ({code}):\n{}", m.name, tail(&m.log));
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!(
                "etcd elected no leader within 30 s; last log lines of {}:\n{}",
                members[0].name,
                tail(&members[0].log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Base64 (standard alphabet, padded), as etcd's JSON gateway wants keys and
/// values; a few lines instead of a dependency for the benchmark.
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                s.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Durable puts against etcd's leader: a new key per request whose value is
/// the same app definition Wharf is sent, so both carry a similar payload.
async fn etcd_writes(leader: &str, spec: LoadSpec, tag: &str) -> anyhow::Result<LoadResult> {
    let url = format!("{leader}/v3/kv/put");
    let tag = tag.to_string();
    load(
        spec,
        move |http, k, seq| {
            let id = format!("/bench/{tag}/c{k}-w{seq}");
            let value = crate::bench_cluster::bench_app(&id).to_string();
            http.post(&url).json(&json!({"key": b64(id.as_bytes()), "value": b64(value.as_bytes())}))
        },
        |s| s == StatusCode::OK,
    )
    .await
}

pub async fn run(spec: LoadSpec, client_counts: &[usize]) -> anyhow::Result<()> {
    let etcd = find_etcd()?;
    let tmp = tempfile::tempdir()?;
    // Members are declared after `tmp`, so they stop before it is removed.
    let mut members = start_etcd(&etcd, &tmp.path().join("etcd"))?;
    let (nodes, wharf_leader) = start_wharf(&tmp.path().join("wharf"), false).await?;
    let etcd_leader = etcd_leader(&mut members).await?;
    println!("durable writes, side by side, on loopback:");
    println!("  wharf: 3 nodes on 127.77.0.1-3, POST /v2/apps (instances: 0) to the leader {wharf_leader}");
    println!("  etcd:  3 members on 127.78.0.1-3 ({}), POST /v3/kv/put to the leader {etcd_leader}", version(&etcd));
    println!(
        "  each client sends one write after another; {:.0} s measured after {:.0} s warm-up",
        spec.measure.as_secs_f64(),
        spec.warmup.as_secs_f64()
    );
    let mut rows = Vec::new();
    for &clients in client_counts {
        let s = LoadSpec { clients, ..spec };
        let http = reqwest::Client::new();
        let mut scrapes = Vec::new();
        for n in &nodes {
            scrapes.push((n.addr(), crate::bench_stages::scrape(&http, &n.addr()).await));
        }
        let w = wharf_writes(&wharf_leader, s, &format!("c{clients}")).await?;
        let mut stages = Vec::new();
        for (addr, before) in scrapes {
            let after = crate::bench_stages::scrape(&http, &addr).await;
            stages.push((addr, before, after));
        }
        println!(
            "  wharf, {clients} client(s): {:.0} writes/s, p50 {:.1} ms, p99 {:.1} ms",
            w.per_sec, w.p50_ms, w.p99_ms
        );
        crate::bench_stages::print(&stages, &wharf_leader);
        let e = etcd_writes(&etcd_leader, s, &format!("c{clients}")).await?;
        rows.push((clients, w, e));
    }
    println!();
    println!("| clients | system | writes/s | p50 ms | p99 ms | failed |");
    println!("|--------:|--------|---------:|-------:|-------:|-------:|");
    for (clients, w, e) in &rows {
        for (name, r) in [("wharf", w), ("etcd", e)] {
            println!("| {clients} | {name} | {:.0} | {:.1} | {:.1} | {} |", r.per_sec, r.p50_ms, r.p99_ms, r.errors);
        }
    }
    println!();
    for (clients, w, e) in &rows {
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "n/a".to_string() };
        println!(
            "wharf/etcd with {clients} client(s): writes/s {}, p99 {}",
            ratio(w.per_sec, e.per_sec),
            ratio(w.p99_ms, e.p99_ms)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::b64;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(b64(plain.as_bytes()), encoded);
        }
    }
}
