//! `wharf bench logs`: how many lines per second following a task's log
//! keeps up with. A task on a node this command starts prints `--lines`
//! numbered lines as fast as `busybox seq` writes them, once a follower of
//! `/wharf/v1/tasks/{id}/logs?follow=true` is attached; the figure is lines
//! over the time from the go signal to the last line arriving, with every
//! line checked to arrive once, in order, across the rotated files. Side by
//! side (same program, same machine): `docker logs -f` of a container of
//! the Docker engine (json-file logging) printing the same lines.

use crate::bench::start_node_with;
use crate::client::Client;
use anyhow::{bail, Context};
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct LogsBenchArgs {
    pub lines: u64,
    pub max_size: String,
    pub files: u32,
}

/// Give up on a side after this long.
const LIMIT: Duration = Duration::from_secs(600);

pub async fn run(a: LogsBenchArgs) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let files = a.files.to_string();
    let flags = ["--log-max-size", a.max_size.as_str(), "--log-files", files.as_str()];
    let (node, c) = start_node_with(Some(data.path().to_path_buf()), &flags).await?;
    let wharf = wharf_side(&c, data.path(), a.lines).await;
    drop(node);
    let wharf = wharf?;
    println!(
        "wharf logs -f: {} lines in {:.2} s = {:.0} lines/s, every line once, in order ({} rotated files of {} at the end)",
        a.lines,
        wharf.0.as_secs_f64(),
        a.lines as f64 / wharf.0.as_secs_f64(),
        wharf.1,
        a.max_size
    );
    match docker_side(a.lines) {
        Ok((t, lost, repeated)) => {
            let (w, d) = (a.lines as f64 / wharf.0.as_secs_f64(), a.lines as f64 / t.as_secs_f64());
            println!(
                "docker logs -f: {} lines in {:.2} s = {d:.0} lines/s; {lost} lines never shown, {repeated} shown twice (the engine's log options: {})",
                a.lines,
                t.as_secs_f64(),
                docker_log_opts()
            );
            println!("wharf/docker lines/s: {:.2}x", w / d);
        }
        Err(e) => println!("docker logs -f: not measured ({e:#})"),
    }
    Ok(())
}

/// The engine's default log driver and options, as `docker info` says.
fn docker_log_opts() -> String {
    Command::new("docker")
        .args(["info", "--format", "{{.LoggingDriver}}"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .map(|d| {
            let opts = std::fs::read_to_string("/etc/docker/daemon.json")
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .map(|v| v["log-opts"].to_string())
                .unwrap_or_else(|| "defaults".into());
            format!("{d} {opts}")
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The command both sides run: wait for the go file, print, stay up.
fn program(go: &str, lines: u64) -> String {
    format!("while [ ! -f {go} ]; do sleep 0.05; done; busybox seq 1 {lines}; exec sleep 100000")
}

/// Time from go to the last line, and the rotated files left.
async fn wharf_side(c: &Client, data: &Path, lines: u64) -> anyhow::Result<(Duration, usize)> {
    let def = json!({"id": "/bench-logs", "cmd": program("go", lines), "cpus": 1, "mem": 128, "instances": 1});
    c.ok(Method::POST, "/v2/apps", Some(&def)).await?;
    let started = Instant::now();
    let task = loop {
        let v = c.ok(Method::GET, "/v2/apps/bench-logs/tasks", None).await?;
        if let Some(id) = v["tasks"][0]["id"].as_str().filter(|_| v["tasks"][0]["state"] == "TASK_RUNNING") {
            break id.to_string();
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the benchmark task did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut body = c.stream(&format!("/wharf/v1/tasks/{task}/logs?follow=true")).await?.bytes_stream();
    let sandbox = data.join("sandboxes").join(&task);
    let t0 = Instant::now();
    std::fs::write(sandbox.join("go"), b"").context("writing the go file")?;
    let mut check = Checker::strict();
    while check.last < lines {
        let chunk = tokio::time::timeout(LIMIT, body.next()).await.context("no output for too long")?;
        let Some(chunk) = chunk else { bail!("the log stream ended after {} lines", check.last) };
        check.feed(&chunk?)?;
    }
    let took = t0.elapsed();
    let rotated = (1..).take_while(|i| sandbox.join(format!("stdout.{i}")).exists()).count();
    let _ = c.ok(Method::DELETE, "/v2/apps/bench-logs?force=true", None).await;
    crate::bench::cleanup(c).await?;
    Ok((took, rotated))
}

/// Follows the numbers: the highest seen, how many were skipped over and
/// how many came again. Strict: a gap or a repeat is an error.
#[derive(Default)]
struct Checker {
    strict: bool,
    last: u64,
    lost: u64,
    /// Lines shown again after later ones.
    repeated: u64,
    partial: Vec<u8>,
}

impl Checker {
    fn strict() -> Checker {
        Checker { strict: true, ..Checker::default() }
    }

    fn feed(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let line: &[u8] = if self.partial.is_empty() {
                &rest[..end]
            } else {
                self.partial.extend_from_slice(&rest[..end]);
                &self.partial
            };
            let n: u64 = std::str::from_utf8(line).ok().and_then(|l| l.parse().ok()).unwrap_or(0);
            if self.strict && n != self.last + 1 {
                bail!(
                    "line {} read as {:?}: a line was lost or repeated",
                    self.last + 1,
                    String::from_utf8_lossy(line)
                );
            }
            if n <= self.last {
                self.repeated += 1;
            } else {
                self.lost += n - self.last - 1;
                self.last = n;
            }
            self.partial.clear();
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }
}

/// Time to the last line, the lines `docker logs -f` never showed and those
/// it showed twice (it can skip or re-read around the engine's json-file
/// rotation).
fn docker_side(lines: u64) -> anyhow::Result<(Duration, u64, u64)> {
    agent::driver::docker::build_busybox_image().map_err(anyhow::Error::msg)?;
    let name = format!("wharf-bench-logs-{}", std::process::id());
    let run = Command::new("docker")
        .args(["run", "-d", "--name", &name, agent::driver::docker::BUSYBOX_IMAGE, "sh", "-c"])
        .arg(program("/go", lines))
        .output()
        .context("docker run")?;
    if !run.status.success() {
        bail!("docker run: {}", String::from_utf8_lossy(&run.stderr).trim());
    }
    let result = (|| {
        let mut follower = Command::new("docker")
            .args(["logs", "-f", &name])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("docker logs -f")?;
        let mut out = follower.stdout.take().context("stdout")?;
        let mut go = Command::new("docker");
        go.args(["exec", &name, "busybox", "touch", "/go"]);
        let t0 = Instant::now();
        let status = go.status().context("docker exec")?;
        if !status.success() {
            bail!("docker exec touch failed");
        }
        let mut check = Checker::default();
        let mut buf = vec![0u8; 256 * 1024];
        while check.last < lines {
            let n = out.read(&mut buf)?;
            if n == 0 || t0.elapsed() > LIMIT {
                bail!("docker logs -f ended after line {}", check.last);
            }
            check.feed(&buf[..n])?;
        }
        let took = t0.elapsed();
        let _ = follower.kill();
        let _ = follower.wait();
        Ok((took, check.lost, check.repeated))
    })();
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    result
}
