//! Jobs, schedules, runs and history out, in Metronome's shapes.
//!
//! Additions beyond Metronome's fields: a run's tasks carry `node` and
//! `message` (the exit status in words), a run carries `trigger`, and a
//! finished run's `message` says why it failed.

use model::cron::CronClock;
use model::{
    CommandSpec, ConcurrencyPolicy, ConstraintOp, ContainerSpec, Job, JobRun, RestartPolicy, RunTrigger, Schedule,
    UnixMillis, VolumeMode,
};
use serde_json::{json, Map, Value};

/// `2016-07-15T13:02:59.735+0000`, Metronome's timestamps.
pub fn format_time(t: UnixMillis) -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(t.0)
        .single()
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string())
        .unwrap_or_default()
}

/// Whole numbers as integers (`"mem": 32`), as they are usually written.
fn num(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

fn time_or_null(t: Option<UnixMillis>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_time(t)))
}

/// What `embed=` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Embed {
    pub active_runs: bool,
    pub schedules: bool,
    pub history: bool,
    pub history_summary: bool,
}

impl Embed {
    /// Reads every `embed` value (repeated or comma-separated); an unknown
    /// one is an error naming it.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Embed, String> {
        let mut e = Embed::default();
        for v in values.into_iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()) {
            match v {
                "activeRuns" => e.active_runs = true,
                "schedules" => e.schedules = true,
                "history" => e.history = true,
                "historySummary" => e.history_summary = true,
                other => return Err(format!("Unknown embed option: {other}")),
            }
        }
        Ok(e)
    }
}

pub fn render_job(job: &Job, embed: Embed, now: UnixMillis) -> Value {
    let spec = &job.spec;
    let r = &spec.run;
    let mut run = Map::new();
    run.insert("cpus".into(), num(r.resources.cpus));
    run.insert("mem".into(), num(r.resources.mem));
    run.insert("disk".into(), num(r.resources.disk));
    run.insert("gpus".into(), json!(r.resources.gpus));
    match &r.command {
        Some(CommandSpec::Shell(c)) => {
            run.insert("cmd".into(), json!(c));
        }
        Some(CommandSpec::Argv(a)) => {
            run.insert("args".into(), json!(a));
        }
        None => {}
    }
    let mut env: Map<String, Value> = r.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    for (k, name) in &r.secret_env {
        env.insert(k.clone(), json!({ "secret": name }));
    }
    run.insert("env".into(), Value::Object(env));
    if !r.secrets.is_empty() {
        let secrets: Map<String, Value> =
            r.secrets.iter().map(|(k, s)| (k.clone(), json!({ "source": s.source }))).collect();
        run.insert("secrets".into(), Value::Object(secrets));
    }
    if let Some(u) = &r.user {
        run.insert("user".into(), json!(u));
    }
    let volumes = match &r.container {
        ContainerSpec::Docker(c) => {
            let params: Vec<Value> = c.parameters.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
            let mut d = json!({"image": c.image, "forcePullImage": c.force_pull_image, "privileged": c.privileged});
            if !params.is_empty() {
                d["parameters"] = Value::Array(params);
            }
            run.insert("docker".into(), d);
            c.volumes.clone()
        }
        ContainerSpec::Oci(c) => c.volumes.clone(),
        ContainerSpec::None => Vec::new(),
    };
    let mut vols: Vec<Value> = volumes
        .iter()
        .map(|v| {
            let mode = if v.mode == VolumeMode::Ro { "RO" } else { "RW" };
            json!({"containerPath": v.container_path, "hostPath": v.host_path, "mode": mode})
        })
        .collect();
    if let Some(Value::Array(kept)) = r.passthrough.get("volumes") {
        vols.extend(kept.iter().cloned());
    }
    run.insert("volumes".into(), Value::Array(vols));
    let constraints: Vec<Value> = r
        .constraints
        .iter()
        .map(|c| {
            let op = match c.op {
                ConstraintOp::Like => "LIKE",
                ConstraintOp::Unlike => "UNLIKE",
                _ => "IS",
            };
            json!({"attribute": c.field, "operator": op, "value": c.value})
        })
        .collect();
    run.insert("placement".into(), json!({ "constraints": constraints }));
    let mut restart = json!({"policy": if r.restart == RestartPolicy::OnFailure { "ON_FAILURE" } else { "NEVER" }});
    if let Some(d) = r.active_deadline_seconds {
        restart["activeDeadlineSeconds"] = json!(d);
    }
    run.insert("restart".into(), restart);
    run.insert("maxLaunchDelay".into(), json!(r.max_launch_delay_seconds as u64));
    if r.parallelism != 1 || r.completions != 1 {
        run.insert("parallelism".into(), json!(r.parallelism));
        run.insert("completions".into(), json!(r.completions));
    }
    let artifacts: Vec<Value> = r
        .artifacts
        .iter()
        .map(|a| json!({"uri": a.uri, "extract": a.extract, "executable": a.executable, "cache": a.cache}))
        .collect();
    run.insert("artifacts".into(), Value::Array(artifacts));
    for (k, v) in &r.passthrough {
        // Jobs stored before artifacts were typed kept them here.
        if k != "volumes" {
            run.insert(k.clone(), v.clone());
        }
    }
    let mut out = Map::new();
    out.insert("id".into(), json!(spec.id.as_str()));
    if let Some(d) = &spec.description {
        out.insert("description".into(), json!(d));
    }
    out.insert("labels".into(), json!(spec.labels));
    out.insert("run".into(), Value::Object(run));
    if !spec.dependencies.is_empty() {
        let deps: Vec<Value> = spec.dependencies.iter().map(|d| json!({"id": d.as_str()})).collect();
        out.insert("dependencies".into(), Value::Array(deps));
    }
    // Schedules are always returned (Metronome deprecated the embed for it).
    let schedules: Vec<Value> = job.schedules.iter().map(|s| render_schedule(s, now)).collect();
    out.insert("schedules".into(), Value::Array(schedules));
    if embed.active_runs {
        let runs: Vec<Value> = job.runs.values().map(render_run).collect();
        out.insert("activeRuns".into(), Value::Array(runs));
    }
    if embed.history || embed.history_summary {
        let h = &job.history;
        let mut hist = json!({
            "successCount": h.success_count,
            "failureCount": h.failure_count,
            "lastSuccessAt": time_or_null(h.last_success_at),
            "lastFailureAt": time_or_null(h.last_failure_at),
        });
        if embed.history {
            let entry = |r: &JobRun| {
                json!({
                    "id": r.id.0,
                    "createdAt": format_time(r.created_at),
                    "finishedAt": time_or_null(r.completed_at),
                    "tasks": r.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
                })
            };
            let ok: Vec<Value> =
                h.finished.iter().filter(|r| r.status == model::RunStatus::Success).map(entry).collect();
            let bad: Vec<Value> =
                h.finished.iter().filter(|r| r.status != model::RunStatus::Success).map(entry).collect();
            hist["successfulFinishedRuns"] = Value::Array(ok);
            hist["failedFinishedRuns"] = Value::Array(bad);
            out.insert("history".into(), hist);
        } else {
            out.insert("historySummary".into(), hist);
        }
    }
    Value::Object(out)
}

pub fn render_schedule(s: &Schedule, now: UnixMillis) -> Value {
    let sp = &s.spec;
    let policy = match sp.concurrency_policy {
        ConcurrencyPolicy::Allow => "ALLOW",
        ConcurrencyPolicy::Forbid => "FORBID",
        ConcurrencyPolicy::Replace => "REPLACE",
    };
    // The next fire time not yet started: due ones (about to start) count.
    let next = CronClock::parse(&sp.cron, &sp.timezone)
        .ok()
        .and_then(|c| c.next_after(UnixMillis(s.fired_up_to().0.max(now.0 - 1000))));
    let mut v = json!({
        "id": sp.id,
        "cron": sp.cron,
        "timezone": sp.timezone,
        "startingDeadlineSeconds": sp.starting_deadline_seconds,
        "concurrencyPolicy": policy,
        "enabled": sp.enabled,
    });
    if sp.enabled {
        v["nextRunAt"] = time_or_null(next);
    }
    v
}

pub fn render_run(r: &JobRun) -> Value {
    let tasks: Vec<Value> = r
        .tasks
        .iter()
        .map(|t| {
            json!({
                "id": t.id.as_str(),
                "status": t.state.marathon_name(),
                "startedAt": time_or_null(t.started_at),
                "completedAt": time_or_null(t.completed_at),
                "node": t.node.to_string(),
                "message": t.message,
            })
        })
        .collect();
    let trigger = match &r.trigger {
        RunTrigger::Manual => json!({"type": "manual"}),
        RunTrigger::Schedule { id, fire_at } => {
            json!({"type": "schedule", "scheduleId": id, "fireAt": format_time(*fire_at)})
        }
        RunTrigger::Dependency { parent, run } => {
            json!({"type": "dependency", "jobId": parent.as_str(), "runId": run.0})
        }
    };
    let mut v = json!({
        "id": r.id.0,
        "jobId": r.job.as_str(),
        "status": r.status.metronome_name(),
        "createdAt": format_time(r.created_at),
        "completedAt": time_or_null(r.completed_at),
        "tasks": tasks,
        "trigger": trigger,
    });
    if let Some(m) = &r.message {
        v["message"] = json!(m);
    }
    v
}
