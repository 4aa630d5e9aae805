//! `wharf job ...`: jobs through Metronome's `/v1` API, as any client would.

use crate::client::{api_error, Client};
use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum JobCommand {
    /// Create or update a job and its schedules from a Metronome job file.
    Deploy { file: PathBuf },
    /// List jobs with their schedules and last results.
    Ls {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one job with its active runs and history.
    Show { id: String },
    /// Start a run now.
    Run {
        id: String,
        /// Follow the run to its end, print its output and exit with its status.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// List a job's active and recent runs.
    Runs { id: String },
    /// Stop an active run (it ends FAILED).
    Stop { id: String, run: String },
    /// Delete a job and its history.
    Rm {
        id: String,
        /// Stop its active runs instead of refusing.
        #[arg(long)]
        stop_runs: bool,
    },
}

pub async fn run(c: &Client, cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Deploy { file } => deploy(c, &file).await,
        JobCommand::Ls { json } => ls(c, json).await,
        JobCommand::Show { id } => {
            let v = c.ok(Method::GET, &format!("/v1/jobs/{id}?embed=activeRuns&embed=history"), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        JobCommand::Run { id, wait, timeout } => start(c, &id, wait, Duration::from_secs(timeout)).await,
        JobCommand::Runs { id } => runs(c, &id).await,
        JobCommand::Stop { id, run } => {
            let v = c.ok(Method::POST, &format!("/v1/jobs/{id}/runs/{run}/actions/stop"), None).await?;
            println!("stopped run {} of {id}: {}", run, v["status"].as_str().unwrap_or("?"));
            Ok(())
        }
        JobCommand::Rm { id, stop_runs } => {
            let q = if stop_runs { "?stopCurrentJobRuns=true" } else { "" };
            c.ok(Method::DELETE, &format!("/v1/jobs/{id}{q}"), None).await?;
            println!("deleted job {id}");
            Ok(())
        }
    }
}

/// POST the job; if it exists, PUT it and bring its schedules in line with the file.
async fn deploy(c: &Client, file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let def: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let id = def["id"].as_str().context("the job file has no \"id\"")?.to_string();
    let (status, v) = c.call(Method::POST, "/v1/jobs", Some(&def)).await?;
    if status == StatusCode::CREATED {
        println!("created job {id}");
        return Ok(());
    }
    if status != StatusCode::CONFLICT {
        return Err(api_error(status, &v));
    }
    c.ok(Method::PUT, &format!("/v1/jobs/{id}"), Some(&def)).await?;
    let wanted: Vec<Value> = def["schedules"].as_array().cloned().unwrap_or_default();
    let have = c.ok(Method::GET, &format!("/v1/jobs/{id}/schedules"), None).await?;
    for s in have.as_array().into_iter().flatten() {
        let sid = s["id"].as_str().unwrap_or_default();
        if !wanted.iter().any(|w| w["id"] == sid) {
            c.ok(Method::DELETE, &format!("/v1/jobs/{id}/schedules/{sid}"), None).await?;
        }
    }
    for w in &wanted {
        let sid = w["id"].as_str().context("a schedule has no \"id\"")?;
        let exists = have.as_array().into_iter().flatten().any(|h| h["id"] == sid);
        if exists {
            c.ok(Method::PUT, &format!("/v1/jobs/{id}/schedules/{sid}"), Some(w)).await?;
        } else {
            c.ok(Method::POST, &format!("/v1/jobs/{id}/schedules"), Some(w)).await?;
        }
    }
    println!("updated job {id}");
    Ok(())
}

async fn ls(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/v1/jobs?embed=activeRuns&embed=historySummary", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:<32} {:>6} {:>4} {:>4} {:<24} NEXT RUN", "ID", "ACTIVE", "OK", "FAIL", "SCHEDULE");
    for j in v.as_array().into_iter().flatten() {
        let s = &j["schedules"][0];
        let sched =
            s["cron"].as_str().map(|c| format!("{c} {}", s["timezone"].as_str().unwrap_or(""))).unwrap_or_default();
        println!(
            "{:<32} {:>6} {:>4} {:>4} {:<24} {}",
            j["id"].as_str().unwrap_or("?"),
            j["activeRuns"].as_array().map_or(0, Vec::len),
            j["historySummary"]["successCount"],
            j["historySummary"]["failureCount"],
            sched,
            s["nextRunAt"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

async fn runs(c: &Client, id: &str) -> anyhow::Result<()> {
    let j = c.ok(Method::GET, &format!("/v1/jobs/{id}?embed=activeRuns&embed=history"), None).await?;
    println!("{:<24} {:<10} {:<30} FINISHED", "RUN", "STATUS", "CREATED");
    for r in j["activeRuns"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<10} {:<30} -",
            r["id"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            r["createdAt"].as_str().unwrap_or("?")
        );
    }
    for (key, status) in [("successfulFinishedRuns", "SUCCESS"), ("failedFinishedRuns", "FAILED")] {
        for r in j["history"][key].as_array().into_iter().flatten() {
            println!(
                "{:<24} {:<10} {:<30} {}",
                r["id"].as_str().unwrap_or("?"),
                status,
                r["createdAt"].as_str().unwrap_or("?"),
                r["finishedAt"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// Starts a run; with `wait`, follows it to its end, printing each of its
/// tasks' output as it is written (a retried run's attempts one after
/// another), and exits with its last task's exit status (1 when it ended
/// another way, e.g. stopped or never placed).
async fn start(c: &Client, id: &str, wait: bool, timeout: Duration) -> anyhow::Result<()> {
    let r = c.ok(Method::POST, &format!("/v1/jobs/{id}/runs"), None).await?;
    let run = r["id"].as_str().context("the answer has no run id")?.to_string();
    if !wait {
        println!("{run}");
        return Ok(());
    }
    eprintln!("run {run} of {id} started");
    let t0 = Instant::now();
    let mut seen = String::new();
    let mut followed: Vec<String> = Vec::new();
    let done = loop {
        let v = c.ok(Method::GET, &format!("/v1/jobs/{id}/runs/{run}"), None).await?;
        let status = v["status"].as_str().unwrap_or("?").to_string();
        if status != seen {
            eprintln!("{status}");
            seen = status.clone();
        }
        let left = timeout.saturating_sub(t0.elapsed());
        // The next task that has a sandbox (it is past staging) and whose
        // output was not printed yet: follow it until it ends.
        let next = v["tasks"].as_array().into_iter().flatten().find(|t| {
            let tid = t["id"].as_str().unwrap_or_default();
            !followed.iter().any(|f| f == tid)
                && !matches!(t["status"].as_str(), Some("TASK_STAGING" | "TASK_STARTING"))
        });
        if let Some(task) = next {
            let tid = task["id"].as_str().unwrap_or_default().to_string();
            let ended = !matches!(task["status"].as_str(), Some("TASK_RUNNING"));
            let args = crate::cmd::logs::LogArgs { follow: true, stderr: false, tail: None };
            match tokio::time::timeout(left, crate::cmd::logs::task(c, &tid, args)).await {
                Ok(Ok(())) => followed.push(tid),
                // No sandbox to read (yet): try again unless it has ended.
                Ok(Err(_)) if !ended => tokio::time::sleep(Duration::from_millis(200)).await,
                Ok(Err(_)) => followed.push(tid),
                Err(_) => bail!("run {run} of {id} did not finish within {}s (still {status})", timeout.as_secs()),
            }
            continue;
        }
        if status == "SUCCESS" || status == "FAILED" {
            break v;
        }
        if left.is_zero() {
            bail!("run {run} of {id} did not finish within {}s (still {status})", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if done["status"] == "SUCCESS" {
        return Ok(());
    }
    let message = done["tasks"].as_array().and_then(|t| t.last()).and_then(|t| t["message"].as_str()).unwrap_or("");
    let why = done["message"].as_str().unwrap_or(message);
    eprintln!("run {run} of {id} FAILED: {why}");
    let code =
        message.strip_prefix("exited with status ").and_then(|n| n.trim().parse::<i32>().ok()).filter(|n| *n != 0);
    std::process::exit(code.unwrap_or(1));
}
