//! `wharf bench jobs`: starts its own node and measures scheduled jobs.
//! 1. Fire-to-running latency: one job firing every second; for each of
//!    `runs` runs, the time from its fire time to its task's process running
//!    (the agent's `startedAt`), p50/p99.
//! 2. Load: `jobs` jobs each firing every minute (`* * * * *`) for
//!    `minutes` minutes: the node's CPU (leader, scheduler and agent are one
//!    process) and the spread of actual start times after each fire time.
//!
//! No peer runs beside it: Metronome needs Mesos, ZooKeeper and a JVM, none
//! of which this machine can install; the figures stand alone.

use crate::bench::{cpu_ticks, percentile, start_node};
use crate::client::Client;
use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn parse_ms(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_str(v.as_str()?, "%Y-%m-%dT%H:%M:%S%.3f%z").ok().map(|t| t.timestamp_millis())
}

/// Fire time and task start (ms) of every finished run of `job`.
async fn starts(c: &Client, job: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let j = c.ok(Method::GET, &format!("/v1/jobs/{job}?embed=history"), None).await?;
    let mut out = Vec::new();
    for r in j["history"]["successfulFinishedRuns"].as_array().into_iter().flatten() {
        let id = r["id"].as_str().unwrap_or_default();
        let run = c.ok(Method::GET, &format!("/v1/jobs/{job}/runs/{id}"), None).await?;
        if let (Some(fire), Some(start)) =
            (parse_ms(&run["trigger"]["fireAt"]), parse_ms(&run["tasks"][0]["startedAt"]))
        {
            out.push((fire, start));
        }
    }
    Ok(out)
}

fn job(id: &str, cron: &str) -> Value {
    json!({"id": id, "run": {"cmd": "true", "cpus": 0.01, "mem": 32, "disk": 0},
        "schedules": [{"id": "bench", "cron": cron, "startingDeadlineSeconds": 60}]})
}

fn stats(label: &str, mut ms: Vec<i64>) {
    ms.sort();
    println!(
        "{label}: n={} min={} ms p50={} ms p99={} ms max={} ms",
        ms.len(),
        ms.first().copied().unwrap_or(0),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(0)
    );
}

pub async fn run(runs: u32, jobs: u32, minutes: u32) -> anyhow::Result<()> {
    let (node, c) = start_node(None).await?;
    let pid = node.pid();

    // 1. Latency, one fire time per second.
    c.ok(Method::POST, "/v1/jobs", Some(&job("bench.latency", "* * * * * *"))).await?;
    let t0 = Instant::now();
    let limit = Duration::from_secs(u64::from(runs) * 3 + 60);
    let mut seen = 0;
    while seen < runs as usize {
        if t0.elapsed() > limit {
            bail!("only {seen} of {runs} runs finished in {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let j = c.ok(Method::GET, "/v1/jobs/bench.latency?embed=historySummary", None).await?;
        seen = j["historySummary"]["successCount"].as_u64().unwrap_or(0) as usize;
    }
    c.ok(Method::DELETE, "/v1/jobs/bench.latency/schedules/bench", None).await?;
    let mut got = starts(&c, "bench.latency").await?;
    got.sort();
    got.truncate(runs as usize);
    println!("wharf bench jobs: fire time -> task running, one job every second");
    stats("latency", got.iter().map(|(f, s)| s - f).collect());

    // 2. Many jobs firing each minute.
    if jobs == 0 || minutes == 0 {
        return Ok(());
    }
    for i in 0..jobs {
        c.ok(Method::POST, "/v1/jobs", Some(&job(&format!("bench.load-{i}"), "* * * * *"))).await?;
    }
    // Measure from the first whole minute at least 5 s away.
    let now = crate::clock::now().0;
    let first = (now / 60_000 + 1) * 60_000 + if now % 60_000 > 55_000 { 60_000 } else { 0 };
    let last = first + i64::from(minutes - 1) * 60_000;
    tokio::time::sleep(Duration::from_millis((first - crate::clock::now().0).max(0) as u64)).await;
    let ticks0 = cpu_ticks(pid).context("reading the node's CPU time")?;
    let w0 = Instant::now();
    // Until the last measured minute's runs have had time to start and end.
    tokio::time::sleep(Duration::from_millis((last + 50_000 - crate::clock::now().0).max(0) as u64)).await;
    let ticks = cpu_ticks(pid).context("reading the node's CPU time")? - ticks0;
    let wall = w0.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    let mut per_minute: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    let mut missing = 0;
    for i in 0..jobs {
        let name = format!("bench.load-{i}");
        let runs = starts(&c, &name).await?;
        for m in (first..=last).step_by(60_000) {
            match runs.iter().find(|(f, _)| *f == m) {
                Some((f, s)) => per_minute.entry(m).or_default().push(s - f),
                None => missing += 1,
            }
        }
        c.ok(Method::DELETE, &format!("/v1/jobs/{name}?stopCurrentJobRuns=true"), None).await?;
    }
    println!("{jobs} jobs each firing every minute, {minutes} minute(s) measured");
    println!(
        "node CPU (leader + scheduler + agent): {:.1}% of one core over {wall:.0}s",
        ticks as f64 / hz / wall * 100.0
    );
    for (m, delays) in per_minute {
        let label = format!("start after fire time {}", metronome::format_time(model::UnixMillis(m)));
        let spread = delays.iter().max().copied().unwrap_or(0) - delays.iter().min().copied().unwrap_or(0);
        stats(&label, delays);
        println!("  spread (last start - first start): {spread} ms");
    }
    if missing > 0 {
        println!("runs missing (not started by the end): {missing}");
    }
    Ok(())
}
