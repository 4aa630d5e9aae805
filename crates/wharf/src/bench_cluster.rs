//! `wharf bench cluster`: starts three real nodes on 127.77.0.1-3 (this
//! binary, scratch data dirs) and measures, with default settings:
//! - durable write throughput and p99 latency with 1 and 64 concurrent
//!   clients (app creations with 0 instances, sent to the leader);
//! - leader failover: kill -9 of the leader -> first successful write
//!   through another node;
//! - node loss: kill -9 of a node -> all its tasks running elsewhere.
//!
//! Nodes talk mutual TLS as always; `--vs-insecure-rpc` runs the same
//! measurements again on a cluster started with `--insecure-rpc` and prints
//! what mTLS costs (the ratio of each figure).

use crate::client::Client;
use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Proc {
    ip: String,
    dir: std::path::PathBuf,
    child: Option<Child>,
    ports: String,
    insecure_rpc: bool,
}

impl Proc {
    /// `join`: a member's RPC address and the cluster's join token (none
    /// with --insecure-rpc).
    fn spawn(&mut self, join: Option<(&str, Option<&str>)>) -> anyhow::Result<()> {
        let exe = std::env::current_exe()?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--http", &format!("{}:8080", self.ip), "--rpc", &format!("{}:5050", self.ip)])
            .args(["--ports", &self.ports, "--hostname", &self.ip])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((j, token)) = join {
            cmd.args(["--join", j]);
            if let Some(t) = token {
                cmd.args(["--join-token", t]);
            }
        }
        if self.insecure_rpc {
            cmd.arg("--insecure-rpc");
        }
        self.child = Some(cmd.spawn().context("starting a benchmark node")?);
        Ok(())
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// The node's API base URL.
    pub fn addr(&self) -> String {
        format!("http://{}:8080", self.ip)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

async fn wait_leader(c: &Client) -> anyhow::Result<String> {
    let t = Instant::now();
    loop {
        if let Ok((StatusCode::OK, v)) = c.call(Method::GET, "/v2/leader", None).await {
            if let Some(l) = v["leader"].as_str() {
                return Ok(l.to_string());
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn write(c: &Client, id: &str) -> bool {
    let def = json!({"id": id, "args": ["sleep", "1"], "cpus": 0.01, "mem": 8, "instances": 0});
    matches!(c.call(Method::POST, "/v2/apps", Some(&def)).await, Ok((StatusCode::CREATED, _)))
}

/// How long the closed-loop load runs: requests started in the warm-up are
/// not counted, so connection set-up and the first log segment don't skew
/// the figures.
#[derive(Clone, Copy)]
pub struct LoadSpec {
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

/// What one load run saw: successful writes per second over the measured
/// window and their latency percentiles.
pub struct LoadResult {
    pub writes: usize,
    pub errors: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The one load generator for every system compared: `clients` tasks each
/// send one request, wait for its answer, then send the next, all through the
/// same HTTP client settings. `request(client, seq)` builds the write;
/// `accepted` says whether the answer is an acknowledged write.
pub async fn load<F>(spec: LoadSpec, request: F, accepted: fn(StatusCode) -> bool) -> anyhow::Result<LoadResult>
where
    F: Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(30)).pool_max_idle_per_host(spec.clients).build()?;
    let request = Arc::new(request);
    let start = Instant::now();
    let counted_from = start + spec.warmup;
    let end = counted_from + spec.measure;
    let mut handles = Vec::new();
    for k in 0..spec.clients {
        let (http, request) = (http.clone(), request.clone());
        handles.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut seq) = (Vec::new(), 0usize, 0usize);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let ok = match request(&http, k, seq).send().await {
                    // Read the body so the connection goes back to the pool.
                    Ok(resp) => accepted(resp.status()) && resp.bytes().await.is_ok(),
                    Err(_) => false,
                };
                seq += 1;
                let done = Instant::now();
                // Only requests wholly inside the measured window count.
                if t >= counted_from && done <= end {
                    if ok {
                        lat.push(done.duration_since(t).as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for h in handles {
        let (lat, e) = h.await?;
        all.extend(lat);
        errors += e;
    }
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(LoadResult {
        writes: all.len(),
        errors,
        per_sec: all.len() as f64 / spec.measure.as_secs_f64(),
        p50_ms: pct(&all, 0.5),
        p99_ms: pct(&all, 0.99),
    })
}

/// The app definition every benchmark write carries (Wharf's POST body and
/// etcd's value): no instances, and no service port, so a long run does not
/// use up the 10,001 ports of the service port range (a write past that is
/// refused, as Marathon refuses it).
pub fn bench_app(id: &str) -> Value {
    json!({"id": id, "args": ["sleep", "1"], "cpus": 0.01, "mem": 8, "instances": 0, "portDefinitions": []})
}

/// Durable app writes against Wharf's leader: `POST /v2/apps` of a new app
/// with no instances (one Raft entry, nothing to launch).
pub async fn wharf_writes(leader: &str, spec: LoadSpec, tag: &str) -> anyhow::Result<LoadResult> {
    let url = format!("http://{leader}/v2/apps");
    let tag = tag.to_string();
    load(
        spec,
        move |http, k, seq| {
            let id = format!("/bench/{tag}/c{k}-w{seq}");
            http.post(&url).json(&bench_app(&id))
        },
        |s| s == StatusCode::CREATED,
    )
    .await
}

fn print_result(clients: usize, r: &LoadResult) {
    println!(
        "  {clients:>2} client(s): {} writes = {:.0} writes/s, p50 {:.1} ms, p99 {:.1} ms{}",
        r.writes,
        r.per_sec,
        r.p50_ms,
        r.p99_ms,
        if r.errors > 0 { format!(", {} failed", r.errors) } else { String::new() }
    );
}

/// The join token the first node wrote into its data dir.
async fn join_token(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join(crate::admission::TOKEN_FILE);
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            return Ok(s.trim().to_string());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the first node wrote no join token ({})", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three Wharf nodes on 127.77.0.1-3 with scratch data dirs under `dir`
/// (mutual TLS between them unless `insecure_rpc`); returns them (stopped
/// on drop) and the leader's HTTP address.
pub async fn start_wharf(dir: &std::path::Path, insecure_rpc: bool) -> anyhow::Result<(Vec<Proc>, String)> {
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| Proc {
            ip: format!("127.77.0.{}", i + 1),
            dir: dir.join(format!("n{i}")),
            child: None,
            ports: format!("{}-{}", 45000 + i * 1000, 45000 + i * 1000 + 999),
            insecure_rpc,
        })
        .collect();
    nodes[0].spawn(None)?;
    wait_leader(&Client::new(&nodes[0].addr())?).await?;
    let token = if insecure_rpc { None } else { Some(join_token(&nodes[0].dir).await?) };
    for n in nodes.iter_mut().skip(1) {
        n.spawn(Some(("127.77.0.1:5050", token.as_deref())))?;
        wait_leader(&Client::new(&n.addr())?).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = wait_leader(&Client::new(&nodes[0].addr())?).await?;
    Ok((nodes, leader))
}

/// One cluster's figures.
struct Figures {
    writes_1: f64,
    writes_64: f64,
    failover_ms: f64,
    node_loss_ms: f64,
}

pub async fn run(rounds: u32, spec: LoadSpec, vs_insecure: bool) -> anyhow::Result<()> {
    let tls = measure(rounds, spec, false).await?;
    if !vs_insecure {
        return Ok(());
    }
    let plain = measure(rounds, spec, true).await?;
    println!("mutual TLS vs --insecure-rpc (same run; ratio = TLS / plain):");
    let row = |what: &str, t: f64, p: f64, unit: &str| {
        let ratio = if p > 0.0 { t / p } else { 0.0 };
        println!("  {what:<22} TLS {t:>8.0} {unit:<9} plain {p:>8.0} {unit:<9} ratio {ratio:.2}");
    };
    row("writes/s, 1 client", tls.writes_1, plain.writes_1, "writes/s");
    row("writes/s, 64 clients", tls.writes_64, plain.writes_64, "writes/s");
    row("leader failover", tls.failover_ms, plain.failover_ms, "ms");
    row("node loss", tls.node_loss_ms, plain.node_loss_ms, "ms");
    Ok(())
}

async fn measure(rounds: u32, spec: LoadSpec, insecure_rpc: bool) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    let (mut nodes, leader) = start_wharf(tmp.path(), insecure_rpc).await?;
    let transport = if insecure_rpc { "PLAIN HTTP (--insecure-rpc)" } else { "mutual TLS" };
    println!("3-node cluster on 127.77.0.1-3, {transport} between nodes, every write durable (redb fsync) on a quorum");
    let mut per_clients = Vec::new();
    println!(
        "write throughput (POST /v2/apps to the leader {leader}, {:.0} s after {:.0} s warm-up):",
        spec.measure.as_secs_f64(),
        spec.warmup.as_secs_f64()
    );
    for clients in [1, 64] {
        let r = wharf_writes(&leader, LoadSpec { clients, ..spec }, &format!("c{clients}")).await?;
        print_result(clients, &r);
        per_clients.push(r.per_sec);
    }

    println!("leader failover (kill -9 the leader -> first successful write through another node):");
    let mut times = Vec::new();
    for r in 0..rounds {
        let l = wait_leader(&Client::new(&nodes[0].addr())?).await?;
        let li = nodes.iter().position(|n| format!("{}:8080", n.ip) == l).context("leader among nodes")?;
        let other = Client::new(&nodes[(li + 1) % 3].addr())?;
        let t = Instant::now();
        nodes[li].kill9();
        let mut k = 0;
        while !write(&other, &format!("/bench/failover/r{r}-{k}")).await {
            k += 1;
            if t.elapsed() > Duration::from_secs(30) {
                bail!("no write within 30s of killing the leader");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!("  round {}: {:.0} ms", r + 1, ms);
        times.push(ms);
        nodes[li].spawn(None)?;
        wait_leader(&Client::new(&nodes[li].addr())?).await?;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let failover_ms = pct(&times, 0.5);
    println!("  median {failover_ms:.0} ms, max {:.0} ms", times.last().copied().unwrap_or(0.0));

    println!("node loss (kill -9 a node -> its tasks running elsewhere):");
    let c0 = Client::new(&nodes[0].addr())?;
    let def = json!({"id": "/bench/spread", "args": ["sleep", "3600"], "cpus": 0.01, "mem": 8, "instances": 6});
    c0.ok(Method::POST, "/v2/apps", Some(&def)).await?;
    let running = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t["state"] == "TASK_RUNNING")
                    .filter_map(|t| t["host"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let t = Instant::now();
    loop {
        let (_, v) = c0.call(Method::GET, "/v2/apps/bench/spread/tasks", None).await?;
        if running(&v).len() == 6 {
            break;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("spread app did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let l = wait_leader(&c0).await?;
    let victim = nodes.iter().position(|n| format!("{}:8080", n.ip) != l).context("a follower")?;
    let observer = Client::new(&nodes[(victim + 1) % 3].addr())?;
    let dead_ip = nodes[victim].ip.clone();
    let t = Instant::now();
    nodes[victim].kill9();
    loop {
        if let Ok((_, v)) = observer.call(Method::GET, "/v2/apps/bench/spread/tasks", None).await {
            let r = running(&v);
            if r.len() == 6 && r.iter().all(|h| *h != dead_ip) {
                break;
            }
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("tasks were not replaced within 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let node_loss_ms = t.elapsed().as_secs_f64() * 1000.0;
    println!("  {node_loss_ms:.0} ms (heartbeat timeout 3 s by default)");

    // Clean up tasks: delete the app, then restart the dead node so its
    // orphaned executor is reconciled away too.
    nodes[victim].spawn(None)?;
    wait_leader(&Client::new(&nodes[victim].addr())?).await?;
    c0.ok(Method::DELETE, "/v2/apps/bench/spread?force=true", None).await?;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let (_, v) = c0.call(Method::GET, "/v2/tasks", None).await?;
        if v["tasks"].as_array().is_none_or(|a| a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Figures {
        writes_1: per_clients.first().copied().unwrap_or(0.0),
        writes_64: per_clients.get(1).copied().unwrap_or(0.0),
        failover_ms,
        node_loss_ms,
    })
}
