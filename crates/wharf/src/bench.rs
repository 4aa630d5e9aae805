//! `wharf bench launch`: starts its own node (real process, scratch data
//! dir, loopback ports), then measures launch latency — from `POST /v2/apps`
//! to the task's process running (the executor's `startedAt` stamp) — over
//! sequential launches, burst throughput, and the node's resident memory.
//! Cleans up every task it started.

use crate::client::Client;
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    crate::clock::now().0
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) struct Node {
    child: std::process::Child,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }
}

async fn started_at(c: &Client, app: &str) -> anyhow::Result<Option<Vec<i64>>> {
    let v = c.ok(Method::GET, &format!("/v2/apps{app}/tasks"), None).await?;
    let tasks = v["tasks"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for t in &tasks {
        match t["startedAt"].as_str().and_then(marathon::parse_time).map(|t| t.0) {
            Some(ms) => out.push(ms),
            None => return Ok(None),
        }
    }
    Ok(if tasks.is_empty() { None } else { Some(out) })
}

/// Starts a benchmark node on loopback with generous resources.
pub(crate) async fn start_node(data_dir: Option<PathBuf>) -> anyhow::Result<(Node, Client)> {
    start_node_with(data_dir, &[]).await
}

/// As `start_node`, with more `wharf agent` flags.
pub(crate) async fn start_node_with(data_dir: Option<PathBuf>, extra: &[&str]) -> anyhow::Result<(Node, Client)> {
    let (dir, tmp) = match data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let http = free_port()?;
    let rpc = free_port()?;
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .args(["agent", "--data-dir"])
        .arg(&dir)
        .args(["--http", &format!("127.0.0.1:{http}"), "--rpc", &format!("127.0.0.1:{rpc}")])
        .args(["--ports", "21000-31000", "--resources", "cpus:64;mem:65536"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the benchmark node")?;
    let node = Node { child, _dir: tmp };
    let c = Client::new(&format!("http://127.0.0.1:{http}"))?;
    let ready = Instant::now();
    while c.call(Method::GET, "/ping", None).await.is_err() {
        if ready.elapsed() > Duration::from_secs(20) {
            bail!("benchmark node did not come up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok((node, c))
}

pub(crate) async fn cleanup(c: &Client) -> anyhow::Result<()> {
    let apps = c.ok(Method::GET, "/v2/apps", None).await?;
    for a in apps["apps"].as_array().cloned().unwrap_or_default() {
        if let Some(id) = a["id"].as_str() {
            c.ok(Method::DELETE, &format!("/v2/apps{id}?force=true"), None).await?;
        }
    }
    let t = Instant::now();
    loop {
        let v: Value = c.ok(Method::GET, "/v2/tasks", None).await?;
        if v["tasks"].as_array().is_none_or(|a| a.is_empty()) || t.elapsed() > Duration::from_secs(120) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

async fn wait_done(c: &Client) -> anyhow::Result<Duration> {
    let t = Instant::now();
    loop {
        let d = c.ok(Method::GET, "/v2/deployments", None).await?;
        if d.as_array().is_some_and(|a| a.is_empty()) {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(180) {
            bail!("deployment did not finish in 180s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `wharf bench health`: PUT-to-deployment-success of a 10-instance app with
/// 1 s HTTP health checks, and the node's CPU while `tasks` tasks are
/// health-checked every second (busybox httpd tasks).
pub async fn health(rounds: u32, tasks: u32) -> anyhow::Result<()> {
    let (node, c) = start_node(None).await?;
    let pid = node.child.id();
    println!("rolling deployment of a 10-instance app (python3 http.server, HTTP check every 1 s):");
    let def = |v: u32| {
        json!({"id": "/bench/web", "cmd": "exec python3 -m http.server $PORT0", "cpus": 0.2, "mem": 64, "instances": 10,
               "env": {"V": v.to_string()},
               "healthChecks": [{"protocol": "HTTP", "path": "/", "intervalSeconds": 1, "timeoutSeconds": 1, "gracePeriodSeconds": 30}]})
    };
    c.ok(Method::PUT, "/v2/apps/bench/web", Some(&def(0))).await?;
    wait_done(&c).await?;
    let mut times = Vec::new();
    for r in 1..=rounds {
        let t = Instant::now();
        c.ok(Method::PUT, "/v2/apps/bench/web", Some(&def(r))).await?;
        wait_done(&c).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        println!("  round {r}: PUT -> deployment_success {ms:.0} ms");
        times.push(ms);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!("  median {:.0} ms", times[times.len() / 2]);
    cleanup(&c).await?;

    println!(
        "{tasks} busybox httpd tasks, each HTTP-checked every 1 s (checks run on this single node, which also leads):"
    );
    let def = json!({"id": "/bench/checked", "cmd": "exec busybox httpd -f -p $PORT0 -h .", "cpus": 0.01, "mem": 8,
                     "instances": tasks, "portDefinitions": [{"port": 0}],
                     "healthChecks": [{"protocol": "HTTP", "path": "/stdout", "intervalSeconds": 1, "timeoutSeconds": 2,
                                       "gracePeriodSeconds": 60, "maxConsecutiveFailures": 0}]});
    c.ok(Method::POST, "/v2/apps", Some(&def)).await?;
    let t = Instant::now();
    loop {
        let a = c.ok(Method::GET, "/v2/apps/bench/checked", None).await?;
        if a["app"]["tasksHealthy"].as_u64() == Some(tasks as u64) {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("tasks did not all turn healthy: {}", a["app"]["tasksHealthy"]);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("  all {tasks} healthy {:.1} s after the POST", t.elapsed().as_secs_f64());
    let hz = 100.0; // USER_HZ on Linux
    let before = cpu_ticks(pid).unwrap_or(0);
    let window = Duration::from_secs(20);
    tokio::time::sleep(window).await;
    let after = cpu_ticks(pid).unwrap_or(0);
    let pct = (after - before) as f64 / hz / window.as_secs_f64() * 100.0;
    println!(
        "  wharf agent (leader) CPU over {}s: {pct:.1}% of one core; RSS {:.1} MiB",
        window.as_secs(),
        rss_kib(pid).unwrap_or(0) as f64 / 1024.0
    );
    cleanup(&c).await?;
    drop(node);
    Ok(())
}

pub async fn launch(tasks: u32, burst: u32, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let (node, c) = start_node(data_dir).await?;
    let pid = node.child.id();
    let rss_idle = rss_kib(pid).unwrap_or(0);

    println!("launch latency: {tasks} apps of 1 instance, one after another (args: sleep 3600)");
    let mut from_send = Vec::new();
    let mut from_ack = Vec::new();
    let mut rss_100 = None;
    for i in 0..tasks {
        let id = format!("/bench/lat-{i}");
        let def = json!({"id": id, "args": ["sleep", "3600"], "cpus": 0.01, "mem": 16, "portDefinitions": []});
        let sent = now_ms();
        c.ok(Method::POST, "/v2/apps", Some(&def)).await?;
        let acked = now_ms();
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            if let Some(s) = started_at(&c, &id).await? {
                break s[0];
            }
            if Instant::now() > deadline {
                bail!("task of {id} did not start within 10s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        from_send.push(started - sent);
        from_ack.push(started - acked);
        if i + 1 == 100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rss_100 = rss_kib(pid);
        }
    }
    from_send.sort_unstable();
    from_ack.sort_unstable();
    println!(
        "  POST sent     -> running: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        percentile(&from_send, 0.5),
        percentile(&from_send, 0.9),
        percentile(&from_send, 0.99),
        from_send.last().copied().unwrap_or(0)
    );
    println!(
        "  POST accepted -> running: p50 {} ms, p90 {} ms, p99 {} ms",
        percentile(&from_ack, 0.5),
        percentile(&from_ack, 0.9),
        percentile(&from_ack, 0.99)
    );

    println!("burst: one app with {burst} instances");
    let def = json!({"id": "/bench/burst", "args": ["sleep", "3600"], "cpus": 0.01, "mem": 16, "instances": burst, "portDefinitions": []});
    let sent = now_ms();
    let t0 = Instant::now();
    c.ok(Method::POST, "/v2/apps", Some(&def)).await?;
    let last = loop {
        if let Some(s) = started_at(&c, "/bench/burst").await? {
            if s.len() == burst as usize {
                break s.into_iter().max().unwrap_or(sent);
            }
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("burst did not finish within 120s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = ((last - sent) as f64 / 1000.0).max(0.001);
    println!("  {burst} tasks running {:.0} ms after the POST: {:.0} tasks/s", secs * 1000.0, burst as f64 / secs);

    let rss_all = rss_kib(pid).unwrap_or(0);
    println!("agent resident memory (VmRSS of the wharf agent process):");
    println!("  0 tasks:   {:.1} MiB", rss_idle as f64 / 1024.0);
    if let Some(r) = rss_100 {
        println!("  100 tasks: {:.1} MiB", r as f64 / 1024.0);
    }
    println!("  {} tasks: {:.1} MiB", tasks + burst, rss_all as f64 / 1024.0);

    cleanup(&c).await?;
    drop(node);
    Ok(())
}
