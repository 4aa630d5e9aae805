//! Following one deployment on `/v2/events` until it ends: the progress
//! (instances started and healthy of wanted, the current step) on a spinner,
//! or as lines when stderr is not a terminal, then a one-line summary or
//! the reason it failed. Events only say when to look: the counts are read
//! from the app after each burst of events about it.

use super::app_path;
use crate::client::{Client, Events};
use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Task failures of the new version after which the CLI stops waiting.
const FAILURES_TO_GIVE_UP: usize = 3;
/// Events arriving this close together are read before looking again.
const BURST: Duration = Duration::from_millis(30);
/// After the deployment ended, how long the app must stay complete.
const SETTLE: Duration = Duration::from_millis(500);

/// What the user asked for, for the summary.
#[derive(Clone, Copy, PartialEq)]
pub enum Goal {
    Deploy,
    Remove,
}

struct Shown {
    bar: ProgressBar,
    last: String,
}

impl Shown {
    fn new() -> Shown {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Shown { bar, last: String::new() }
    }

    /// On a terminal the spinner's message; otherwise one line per change.
    fn progress(&mut self, msg: String) {
        if msg == self.last {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.set_message(msg.clone());
        }
        self.last = msg;
    }

    fn note(&self, msg: String) {
        if self.bar.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.bar.println(msg);
        }
    }
}

/// Waits for `deployment` of `app` to end. `events` must have been opened
/// before the write that started it, so no event of it is missed.
///
/// Marathon ends a deployment once its tasks run; a task that dies right
/// after must not count as success, so after the end the CLI waits
/// `SETTLE` for failures, and with a failure keeps waiting for the app to
/// be at its count again (or gives up after `FAILURES_TO_GIVE_UP`).
pub async fn follow(
    c: &Client,
    mut events: Events,
    app: &str,
    deployment: &str,
    goal: Goal,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = Instant::now() + timeout;
    let mut shown = Shown::new();
    let mut failures: Vec<String> = Vec::new();
    // The deployment has ended well (it may be gone before we looked).
    let mut done = !is_active(c, deployment).await?;
    // Since when the app has looked complete after the end.
    let mut settling: Option<Instant> = None;
    let mut pending = true;
    loop {
        let now = Instant::now();
        let wait = if pending {
            Duration::ZERO
        } else if let Some(t) = settling {
            (t + SETTLE).saturating_duration_since(now)
        } else {
            deadline.saturating_duration_since(now)
        };
        let ev = if wait.is_zero() { None } else { tokio::time::timeout(wait, events.next()).await.ok() };
        let Some(ev) = ev else {
            // Quiet for `wait`: look at the app.
            let status = state(c, app).await?;
            pending = false;
            match (&status, settling) {
                (None, _) if done => {
                    shown.bar.finish_and_clear();
                    return finish(app, deployment, goal, true, status, started, &failures);
                }
                (Some(s), Some(t)) if done && s.running >= s.wanted && t + SETTLE <= Instant::now() => {
                    shown.bar.finish_and_clear();
                    return finish(app, deployment, goal, true, status, started, &failures);
                }
                (Some(s), None) if done && s.running >= s.wanted => settling = Some(Instant::now()),
                (Some(s), _) if done && s.running < s.wanted => settling = None,
                _ => {}
            }
            if let Some(s) = &status {
                shown.progress(s.line(app));
            }
            if settling.is_none() && Instant::now() >= deadline {
                shown.bar.finish_and_clear();
                bail!(
                    "deployment {deployment} of {app} did not finish within {}s; it goes on: see `wharf deployment ls`, or `wharf deployment rm {deployment}` to roll it back",
                    timeout.as_secs()
                );
            }
            continue;
        };
        let Some(first) = ev? else {
            shown.bar.finish_and_clear();
            bail!("the node closed the event stream; the deployment goes on: see `wharf deployment ls`");
        };
        // Read the rest of a burst before looking.
        let mut burst = vec![first];
        while let Ok(Ok(Some(more))) = tokio::time::timeout(BURST, events.next()).await {
            burst.push(more);
        }
        for (kind, e) in burst {
            match what(&kind, &e, app, deployment) {
                Seen::Other => {}
                Seen::Progress => pending = true,
                Seen::Succeeded => {
                    done = true;
                    pending = true;
                }
                Seen::Failed => {
                    shown.bar.finish_and_clear();
                    return finish(app, deployment, goal, false, None, started, &failures);
                }
                Seen::TaskFailed { task, message } => {
                    shown.note(format!("task {task} failed: {message}"));
                    failures.push(message);
                    settling = None;
                    pending = true;
                }
            }
        }
        if failures.len() >= FAILURES_TO_GIVE_UP && goal == Goal::Deploy {
            shown.bar.finish_and_clear();
            bail!(
                "deployment {deployment} of {app} is failing: {} tasks failed, last: {}. Wharf goes on retrying (see `wharf app show {app}`); `wharf deployment rm {deployment}` rolls it back while it runs",
                failures.len(),
                failures.last().map(String::as_str).unwrap_or("")
            );
        }
    }
}

/// What an event means for the deployment being followed.
enum Seen {
    Other,
    Progress,
    Succeeded,
    Failed,
    TaskFailed { task: String, message: String },
}

fn what(kind: &str, e: &Value, app: &str, deployment: &str) -> Seen {
    let of_app = e["appId"].as_str() == Some(app);
    match kind {
        "deployment_success" if e["id"].as_str() == Some(deployment) => Seen::Succeeded,
        "deployment_failed" if e["id"].as_str() == Some(deployment) => Seen::Failed,
        "status_update_event" if of_app && e["taskStatus"].as_str() == Some("TASK_FAILED") => Seen::TaskFailed {
            task: e["taskId"].as_str().unwrap_or("?").to_string(),
            message: e["message"].as_str().unwrap_or("").to_string(),
        },
        "status_update_event" | "health_status_changed_event" if of_app => Seen::Progress,
        "deployment_info" | "deployment_step_success" | "deployment_step_failure"
            if e["plan"]["id"].as_str() == Some(deployment) =>
        {
            Seen::Progress
        }
        _ => Seen::Other,
    }
}

async fn is_active(c: &Client, deployment: &str) -> anyhow::Result<bool> {
    let deps = c.ok(Method::GET, "/v2/deployments", None).await?;
    Ok(deps.as_array().is_some_and(|ds| ds.iter().any(|d| d["id"].as_str() == Some(deployment))))
}

/// The app's counts and its deployment's step, as read now.
struct Status {
    wanted: u64,
    running: u64,
    healthy: Option<u64>,
    staged: u64,
    step: Option<String>,
}

impl Status {
    fn line(&self, app: &str) -> String {
        let mut s = format!("{app}: {}/{} running", self.running, self.wanted);
        if let Some(h) = self.healthy {
            s.push_str(&format!(", {h}/{} healthy", self.wanted));
        }
        if self.staged > 0 {
            s.push_str(&format!(", {} starting", self.staged));
        }
        if let Some(step) = &self.step {
            s.push_str(&format!(" ({step})"));
        }
        s
    }
}

/// `None` when the app is gone.
async fn state(c: &Client, app: &str) -> anyhow::Result<Option<Status>> {
    let (code, v) = c.call(Method::GET, &format!("{}?embed=app.deployments", app_path(app)), None).await?;
    if code == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let a = &v["app"];
    let has_checks = a["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
    let deps = c.ok(Method::GET, "/v2/deployments", None).await?;
    let step = deps.as_array().and_then(|ds| {
        ds.iter().find(|d| d["affectedApps"].as_array().is_some_and(|x| x.iter().any(|i| i.as_str() == Some(app))))
    });
    let step = step.map(|d| {
        let actions: Vec<String> = d["currentActions"]
            .as_array()
            .map(|acts| acts.iter().filter_map(|x| x["action"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        format!("step {}/{}: {}", d["currentStep"], d["totalSteps"], actions.join(", "))
    });
    Ok(Some(Status {
        wanted: a["instances"].as_u64().unwrap_or(0),
        running: a["tasksRunning"].as_u64().unwrap_or(0),
        healthy: has_checks.then(|| a["tasksHealthy"].as_u64().unwrap_or(0)),
        staged: a["tasksStaged"].as_u64().unwrap_or(0),
        step,
    }))
}

fn finish(
    app: &str,
    deployment: &str,
    goal: Goal,
    ok: bool,
    status: Option<Status>,
    started: Instant,
    failures: &[String],
) -> anyhow::Result<()> {
    let took = format!("{:.1}s", started.elapsed().as_secs_f64());
    match (goal, ok, status) {
        (Goal::Remove, true, None) => {
            println!("{app} removed in {took}");
            Ok(())
        }
        (_, true, Some(s)) => {
            let healthy = s.healthy.map(|h| format!(", {h}/{} healthy", s.wanted)).unwrap_or_default();
            println!("{app} deployed: {}/{} tasks running{healthy} in {took}", s.running, s.wanted);
            Ok(())
        }
        (_, true, None) => {
            println!("{app} removed in {took}");
            Ok(())
        }
        (_, false, _) => {
            let why = failures.last().map(|m| format!(": last task failure: {m}")).unwrap_or_default();
            bail!("deployment {deployment} of {app} failed (it was rolled back or replaced){why}")
        }
    }
}
