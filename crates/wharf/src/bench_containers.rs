//! `wharf bench containers`: container start latency with the image present,
//! for Wharf's Docker driver beside `docker run --rm` on the same engine in
//! the same run. Wharf: from placement (the task's `stagedAt`, stamped when
//! the plan is made) to the container's process running (`startedAt`, after
//! the engine started it). Docker: from spawning `docker run --rm IMAGE sh -c "echo up"`
//! to that process's first line of output. Sequential starts; p50/p99
//! and the ratio. Cleans up every task and container it made. Then the
//! built-in runtime's figures (`bench_oci`).

use crate::bench::{cleanup, percentile, start_node};
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::json;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The image the tests build; made here the same way when it is missing.
pub const DEFAULT_IMAGE: &str = agent::driver::docker::BUSYBOX_IMAGE;

/// Builds [`DEFAULT_IMAGE`] (`FROM scratch` plus the static `/bin/busybox`)
/// unless `image` is already present.
fn ensure_image(image: &str) -> anyhow::Result<()> {
    let present = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running docker")?;
    if present.success() {
        return Ok(());
    }
    if image != DEFAULT_IMAGE {
        bail!("image {image} is not present on this engine (the benchmark measures starts with the image present)");
    }
    agent::driver::docker::build_busybox_image().map_err(anyhow::Error::msg)
}

pub(crate) fn summary(name: &str, ms: &mut [i64]) -> (i64, i64) {
    ms.sort_unstable();
    let (p50, p99) = (percentile(ms, 0.5), percentile(ms, 0.99));
    println!("  {name:<28} p50 {p50:>5} ms   p99 {p99:>5} ms   ({} starts)", ms.len());
    (p50, p99)
}

pub async fn run(starts: u32, image: String, runtimes: Vec<String>, skip: Vec<String>) -> anyhow::Result<()> {
    if let Some(other) = runtimes.iter().find(|r| !["docker", "builtin"].contains(&r.as_str())) {
        bail!("--runtimes: unknown runtime {other:?} (docker, builtin)");
    }
    if let Some(other) = skip.iter().find(|s| !["bridge", "memory", "pulls"].contains(&s.as_str())) {
        bail!("--skip: unknown part {other:?} (bridge, memory, pulls)");
    }
    ensure_image(&image)?;
    if runtimes.iter().any(|r| r == "docker") {
        docker(starts, &image).await?;
    }
    if runtimes.iter().any(|r| r == "builtin") {
        crate::bench_oci::run(starts, &image, &skip).await?;
    }
    Ok(())
}

async fn docker(starts: u32, image: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = std::fs::canonicalize(dir.path())?;
    let (node, c) = start_node(Some(data.clone())).await?;
    let nodes = c.ok(Method::GET, "/wharf/v1/nodes", None).await?;
    if !nodes["nodes"][0]["drivers"].as_array().is_some_and(|d| d.iter().any(|x| x == "docker")) {
        bail!("the benchmark node has no docker driver (is the engine reachable?): {}", nodes["nodes"][0]);
    }
    println!("container start latency, image {image} present, {starts} sequential starts each:");
    let container = json!({"type": "DOCKER", "docker": {"image": image}});
    let result = wharf_starts(&c, starts, container, None).await;
    cleanup(&c).await?;
    drop(node);
    let root = format!("label=wharf.sandbox-root={}", data.join("sandboxes").display());
    let names = Command::new("docker").args(["ps", "-aq", "--filter", &root]).output()?;
    let names: Vec<String> = String::from_utf8_lossy(&names.stdout).lines().map(str::to_string).collect();
    if !names.is_empty() {
        Command::new("docker").args(["rm", "-f"]).args(&names).output()?;
    }
    let mut wharf = result?;
    let mut docker = docker_run_starts(starts, image)?;
    let (w50, w99) = summary("wharf (docker driver)", &mut wharf);
    let (d50, d99) = summary("docker run --rm", &mut docker);
    let ratio = |a: i64, b: i64| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
    println!("  wharf / docker run: p50 {:.2}x, p99 {:.2}x", ratio(w50, d50), ratio(w99, d99));
    Ok(())
}

/// Sequential starts of one-instance apps with `container`; placement to
/// process running, in ms. With `steps`, each start's timeline is read
/// from its sandbox under that directory.
pub(crate) async fn wharf_starts(
    c: &crate::client::Client,
    starts: u32,
    container: serde_json::Value,
    mut steps: Option<(&std::path::Path, &mut crate::bench_steps::Steps)>,
) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for i in 0..starts {
        let id = format!("/bench/containers/c{i}");
        let def = json!({"id": id, "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 16,
                         "taskKillGracePeriodSeconds": 0,
                         "container": container});
        c.ok(Method::POST, "/v2/apps", Some(&def)).await?;
        let t = Instant::now();
        let ms = loop {
            let v = c.ok(Method::GET, &format!("/v2/apps{id}/tasks"), None).await?;
            if let Some(task) = v["tasks"].as_array().and_then(|a| a.first()) {
                let at = |k: &str| task[k].as_str().and_then(marathon::parse_time).map(|t| t.0);
                match (task["state"].as_str(), at("stagedAt"), at("startedAt")) {
                    (Some("TASK_RUNNING"), Some(staged), Some(started)) => {
                        if let (Some((dir, steps)), Some(task)) = (steps.as_mut(), task["id"].as_str()) {
                            steps.record(&dir.join(task), staged, started - staged);
                        }
                        break started - staged;
                    }
                    (Some("TASK_FAILED"), ..) => bail!("a benchmark task failed: {task}"),
                    _ => {}
                }
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("{id} did not start within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        out.push(ms);
        c.ok(Method::DELETE, &format!("/v2/apps{id}?force=true"), None).await?;
        // One start at a time, as `docker run --rm` (which returns after the
        // removal): the next start does not share the engine with this stop.
        let t = Instant::now();
        while c.call(Method::GET, &format!("/v2/apps{id}"), None).await?.0 != reqwest::StatusCode::NOT_FOUND {
            if t.elapsed() > Duration::from_secs(60) {
                bail!("{id} was not removed within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(out)
}

fn docker_run_starts(starts: u32, image: &str) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for _ in 0..starts {
        let t = Instant::now();
        let mut child = Command::new("docker")
            .args(["run", "--rm", "--network", "host", image, "sh", "-c", "echo up"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("docker run")?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            std::io::BufReader::new(stdout).read_line(&mut line)?;
        }
        let ms = t.elapsed().as_millis() as i64;
        let status = child.wait()?;
        if line.trim() != "up" || !status.success() {
            bail!("docker run --rm {image} sh -c 'echo up': {status}, printed {line:?}");
        }
        out.push(ms);
    }
    Ok(out)
}
