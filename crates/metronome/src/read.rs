//! Job and schedule definitions in, with Metronome's defaults and rules.
//! Every broken rule is collected with its path, so one answer lists them all.
//!
//! Deliberate differences from Metronome:
//! - `run.disk` defaults to 0 instead of being required (Metronome's own
//!   docs examples leave it out); `cpus` and `mem` stay required.
//! - A job may have several schedules (Metronome allows one).
//! - `startingDeadlineSeconds` must be at least 1 (Metronome's code wants
//!   60), so second-granular schedules are useful.
//! - Cron: a 6-field expression has a leading seconds field (Metronome's 6th
//!   field is a year; 7 fields are seconds to year here). `L`, `W` and `#`
//!   are not supported (the `cron` crate has no such rules).
//! - `concurrencyPolicy` also takes `REPLACE`.
//! - `run.parallelism` and `run.completions` (default 1): a run starts up to
//!   `parallelism` tasks at a time and succeeds when `completions` of them
//!   have succeeded.
//! - Secrets (`run.secrets`, env `{"secret"}`) come from Wharf's own secret
//!   store (`/wharf/v1/secrets`), not DC/OS's.

use crate::error::{Detail, WireError};
use model::cron::CronClock;
use model::{
    Artifact, CommandSpec, ConcurrencyPolicy, Constraint, ConstraintOp, Container, ContainerSpec, JobId, JobRunSpec,
    JobSpec, Resources, RestartPolicy, ScheduleSpec, SecretSource, Volume, VolumeMode,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A parsed `POST/PUT /v1/jobs` body: the job and the schedules it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInput {
    pub job: JobSpec,
    /// `None` when the body had no `schedules` key.
    pub schedules: Option<Vec<ScheduleSpec>>,
}

struct Ctx {
    errs: Vec<Detail>,
}

impl Ctx {
    fn err(&mut self, path: &str, error: impl Into<String>) {
        self.errs.push(Detail { path: path.to_string(), error: error.into() });
    }

    fn str_opt(&mut self, o: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.err(&format!("{path}/{key}"), "must be a string");
                None
            }
        }
    }

    fn num_opt(&mut self, o: &Map<String, Value>, key: &str, path: &str) -> Option<f64> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => {
                self.err(&format!("{path}/{key}"), "must be a number");
                None
            }
        }
    }

    fn int_opt(&mut self, o: &Map<String, Value>, key: &str, path: &str) -> Option<u64> {
        match o.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(_) => {
                self.err(&format!("{path}/{key}"), "must be a non-negative integer");
                None
            }
        }
    }

    fn bool_or(&mut self, o: &Map<String, Value>, key: &str, path: &str, default: bool) -> bool {
        match o.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                self.err(&format!("{path}/{key}"), "must be a boolean");
                default
            }
        }
    }

    fn obj<'v>(&mut self, v: Option<&'v Value>, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => {
                self.err(path, "must be an object");
                None
            }
        }
    }

    fn arr<'v>(&mut self, v: Option<&'v Value>, path: &str) -> &'v [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(_) => {
                self.err(path, "must be an array");
                &[]
            }
        }
    }

    fn string_map(&mut self, v: Option<&Value>, path: &str, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(o) = self.obj(v, path) {
            for (k, v) in o {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    _ => self.err(&format!("{path}/{k}"), format!("{what} values must be strings")),
                }
            }
        }
        out
    }
}

/// Parses a job body. `path_id` (PUT) wins over the body's id, as in Metronome.
pub fn parse_job(body: &[u8], path_id: Option<&str>, request_path: &str) -> Result<JobInput, WireError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| WireError::malformed(format!("Invalid JSON: {e}"), request_path))?;
    let mut cx = Ctx { errs: Vec::new() };
    let Some(o) = v.as_object() else {
        return Err(WireError::invalid(&[Detail { path: "/".into(), error: "must be an object".into() }]));
    };
    let id_text = match path_id {
        Some(p) => Some(p.to_string()),
        None => {
            let id = cx.str_opt(o, "id", "");
            if id.is_none() && !o.contains_key("id") {
                cx.err("/id", "is required");
            }
            id
        }
    };
    let id = id_text.and_then(|s| match JobId::parse(&s) {
        Ok(id) => Some(id),
        Err(_) => {
            cx.err(
                "/id",
                "must be dot-separated segments of lowercase letters, digits and hyphens, each starting and ending with a letter or digit",
            );
            None
        }
    });
    let description = cx.str_opt(o, "description", "");
    let labels = cx.string_map(o.get("labels"), "/labels", "label");
    let mut dependencies = Vec::new();
    for (i, d) in cx.arr(o.get("dependencies"), "/dependencies").iter().enumerate() {
        let p = format!("/dependencies/{i}");
        match d.get("id").and_then(Value::as_str).map(JobId::parse) {
            Some(Ok(j)) if !dependencies.contains(&j) => dependencies.push(j),
            Some(Ok(_)) => cx.err(&p, "dependencies must be unique"),
            _ => cx.err(&format!("{p}/id"), "must be a valid job id"),
        }
    }
    let run = match cx.obj(o.get("run"), "/run") {
        Some(r) => read_run(&mut cx, r),
        None => {
            if !o.contains_key("run") {
                cx.err("/run", "is required");
            }
            None
        }
    };
    let schedules = match o.get("schedules") {
        None | Some(Value::Null) => None,
        Some(_) => {
            let list = cx.arr(o.get("schedules"), "/schedules");
            let mut out: Vec<ScheduleSpec> = Vec::new();
            for (i, s) in list.iter().enumerate() {
                let p = format!("/schedules/{i}");
                if let Some(sch) = cx.obj(Some(s), &p).and_then(|so| read_schedule(&mut cx, so, &p, None)) {
                    if out.iter().any(|x| x.id == sch.id) {
                        cx.err(&format!("{p}/id"), "schedule ids must be unique");
                    }
                    out.push(sch);
                }
            }
            Some(out)
        }
    };
    if !dependencies.is_empty() && schedules.as_ref().is_some_and(|s| !s.is_empty()) {
        cx.err("/dependencies", "a job with dependencies cannot have schedules");
    }
    match (id, run, cx.errs.is_empty()) {
        (Some(id), Some(run), true) => {
            Ok(JobInput { job: JobSpec { id, description, labels, run, dependencies }, schedules })
        }
        _ => Err(WireError::invalid(&cx.errs)),
    }
}

fn read_run(cx: &mut Ctx, r: &Map<String, Value>) -> Option<JobRunSpec> {
    let p = "/run";
    let cpus = cx.num_opt(r, "cpus", p);
    let mem = cx.num_opt(r, "mem", p);
    let disk = cx.num_opt(r, "disk", p).unwrap_or(0.0);
    let gpus = cx.int_opt(r, "gpus", p).unwrap_or(0);
    match cpus {
        None if !r.contains_key("cpus") => cx.err("/run/cpus", "is required"),
        Some(c) if c < 0.01 => cx.err("/run/cpus", "must be at least 0.01"),
        _ => {}
    }
    match mem {
        None if !r.contains_key("mem") => cx.err("/run/mem", "is required"),
        Some(m) if m < 32.0 => cx.err("/run/mem", "must be at least 32"),
        _ => {}
    }
    if disk < 0.0 {
        cx.err("/run/disk", "must be at least 0");
    }
    let cmd = cx.str_opt(r, "cmd", p).filter(|c| !c.is_empty());
    let args: Option<Vec<String>> = match r.get("args") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            Some(a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        }
        Some(_) => {
            cx.err("/run/args", "must be an array of strings");
            None
        }
    };
    let user = cx.str_opt(r, "user", p);
    let secrets = read_secrets(cx, r.get("secrets"));
    let (env, secret_env) = read_env(cx, r.get("env"), &secrets);
    let mut passthrough = BTreeMap::new();
    for key in ["networks", "ucr", "taskKillGracePeriodSeconds"] {
        if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
            passthrough.insert(key.to_string(), v.clone());
        }
    }
    let artifacts = read_artifacts(cx, r.get("artifacts"));
    let volumes = read_volumes(cx, r.get("volumes"));
    let container = read_container(cx, r, gpus, &volumes);
    if container == ContainerSpec::None && !volumes.is_empty() {
        // Kept for the wire; a plain command sees the node's file system.
        passthrough.insert("volumes".to_string(), r.get("volumes").cloned().unwrap_or(Value::Null));
    }
    if cmd.is_none() && args.is_none() && container.image().is_none() {
        cx.err("/run", "must have a cmd, args, a docker image or a ucr image");
    }
    if cmd.is_some() && args.is_some() {
        cx.err("/run", "cmd and args cannot both be given");
    }
    let constraints = read_constraints(cx, r.get("placement"));
    let (restart, active_deadline_seconds) = read_restart(cx, r.get("restart"));
    let max_launch_delay_seconds = cx.int_opt(r, "maxLaunchDelay", p).unwrap_or(3600) as f64;
    let kill_grace_seconds = cx.num_opt(r, "taskKillGracePeriodSeconds", p).unwrap_or(3.0);
    let parallelism = cx.int_opt(r, "parallelism", p).unwrap_or(1);
    let completions = cx.int_opt(r, "completions", p).unwrap_or(1);
    for (key, v) in [("parallelism", parallelism), ("completions", completions)] {
        if !(1..=10_000).contains(&v) {
            cx.err(&format!("/run/{key}"), "must be between 1 and 10000");
        }
    }
    let command = match (cmd, args) {
        (Some(c), _) => Some(CommandSpec::Shell(c)),
        (None, Some(a)) => Some(CommandSpec::Argv(a)),
        _ => None,
    };
    Some(JobRunSpec {
        command,
        resources: Resources { cpus: cpus.unwrap_or(1.0), mem: mem.unwrap_or(128.0), disk, gpus: gpus as u32 },
        env,
        container,
        constraints,
        restart,
        active_deadline_seconds,
        max_launch_delay_seconds,
        kill_grace_seconds,
        user,
        secrets,
        secret_env,
        artifacts,
        passthrough,
        parallelism: parallelism as u32,
        completions: completions as u32,
    })
}

/// `run.secrets`: `{NAME: {"source": PATH}}`.
fn read_secrets(cx: &mut Ctx, v: Option<&Value>) -> BTreeMap<String, SecretSource> {
    let mut out = BTreeMap::new();
    let Some(o) = cx.obj(v, "/run/secrets") else { return out };
    for (name, s) in o {
        let p = format!("/run/secrets/{name}");
        let Some(so) = cx.obj(Some(s), &p) else { continue };
        let Some(source) = cx.str_opt(so, "source", &p) else {
            cx.err(&format!("{p}/source"), "is required");
            continue;
        };
        match model::SecretPath::parse(&source) {
            Ok(_) => {
                out.insert(name.clone(), SecretSource { source });
            }
            Err(e) => cx.err(&format!("{p}/source"), e.to_string()),
        }
    }
    out
}

/// `run.env`: plain strings, and `{"secret": NAME}` naming a declared secret.
fn read_env(
    cx: &mut Ctx,
    v: Option<&Value>,
    secrets: &BTreeMap<String, SecretSource>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut env, mut secret_env) = (BTreeMap::new(), BTreeMap::new());
    let Some(o) = cx.obj(v, "/run/env") else { return (env, secret_env) };
    for (k, v) in o {
        let p = format!("/run/env/{k}");
        match v {
            Value::String(s) => {
                env.insert(k.clone(), s.clone());
            }
            Value::Object(sec) if sec.len() == 1 && sec.contains_key("secret") => match sec.get("secret") {
                Some(Value::String(name)) if secrets.contains_key(name) => {
                    secret_env.insert(k.clone(), name.clone());
                }
                Some(Value::String(name)) => cx.err(&p, format!("references an undefined secret named '{name}'")),
                _ => cx.err(&p, "secret must be a string"),
            },
            _ => cx.err(&p, "env values must be strings or secret references {\"secret\": \"name\"}"),
        }
    }
    (env, secret_env)
}

/// `run.artifacts`: `{uri, extract, executable, cache}` with Metronome's
/// defaults (extract true, the others false).
fn read_artifacts(cx: &mut Ctx, v: Option<&Value>) -> Vec<Artifact> {
    let mut out = Vec::new();
    for (i, a) in cx.arr(v, "/run/artifacts").iter().enumerate() {
        let p = format!("/run/artifacts/{i}");
        let Some(o) = cx.obj(Some(a), &p) else { continue };
        if o.contains_key("destPath") {
            // Metronome's artifacts have no destPath (its schema refuses
            // extra keys); saying so beats dropping it silently.
            cx.err(&format!("{p}/destPath"), "is not a field of a job's artifact");
        }
        let extract = cx.bool_or(o, "extract", &p, true);
        let executable = cx.bool_or(o, "executable", &p, false);
        let cache = cx.bool_or(o, "cache", &p, false);
        let Some(uri) = cx.str_opt(o, "uri", &p) else {
            if !matches!(o.get("uri"), Some(x) if !x.is_null()) {
                cx.err(&format!("{p}/uri"), "is required");
            }
            continue;
        };
        let art = Artifact { uri, executable, extract, cache, dest_path: None };
        match art.check() {
            Ok(()) => out.push(art),
            Err((field, e)) => cx.err(&format!("{p}/{field}"), e.to_string()),
        }
    }
    out
}

fn read_volumes(cx: &mut Ctx, v: Option<&Value>) -> Vec<Volume> {
    let mut out = Vec::new();
    for (i, vol) in cx.arr(v, "/run/volumes").iter().enumerate() {
        let p = format!("/run/volumes/{i}");
        let Some(o) = cx.obj(Some(vol), &p) else { continue };
        if o.contains_key("secret") {
            cx.err(&p, "file secrets are not supported for jobs: reference the secret from run.env");
            continue;
        }
        let container_path = cx.str_opt(o, "containerPath", &p);
        let host_path = cx.str_opt(o, "hostPath", &p);
        let mode = match o.get("mode").and_then(Value::as_str) {
            Some("RO") => VolumeMode::Ro,
            Some("RW") => VolumeMode::Rw,
            _ => {
                cx.err(&format!("{p}/mode"), "must be RO or RW");
                VolumeMode::Rw
            }
        };
        match (container_path, host_path) {
            (Some(c), Some(h)) if !c.split('/').any(|s| s == "..") => {
                out.push(Volume { container_path: c, host_path: Some(h), mode, persistent: None, secret: None })
            }
            (Some(_), Some(_)) => cx.err(&format!("{p}/containerPath"), "must not contain '..'"),
            (None, _) => cx.err(&format!("{p}/containerPath"), "is required"),
            (_, None) => cx.err(&format!("{p}/hostPath"), "is required"),
        }
    }
    out
}

fn read_container(cx: &mut Ctx, r: &Map<String, Value>, gpus: u64, volumes: &[Volume]) -> ContainerSpec {
    let docker = cx.obj(r.get("docker"), "/run/docker");
    let ucr = cx.obj(r.get("ucr"), "/run/ucr");
    if docker.is_some() && ucr.is_some() {
        cx.err("/run", "docker and ucr cannot both be given");
    }
    if let Some(d) = docker {
        if gpus > 0 {
            cx.err("/run/gpus", "GPUs are not supported with docker");
        }
        let image = cx.str_opt(d, "image", "/run/docker").filter(|i| !i.is_empty());
        if image.is_none() {
            cx.err("/run/docker/image", "is required");
        }
        let mut parameters = Vec::new();
        for (i, kv) in cx.arr(d.get("parameters"), "/run/docker/parameters").iter().enumerate() {
            match (kv.get("key").and_then(Value::as_str), kv.get("value").and_then(Value::as_str)) {
                (Some(k), Some(v)) => parameters.push((k.to_string(), v.to_string())),
                _ => cx.err(&format!("/run/docker/parameters/{i}"), "needs a string key and value"),
            }
        }
        return ContainerSpec::Docker(Container {
            image,
            volumes: volumes.to_vec(),
            privileged: cx.bool_or(d, "privileged", "/run/docker", false),
            force_pull_image: cx.bool_or(d, "forcePullImage", "/run/docker", false),
            parameters,
            ..Container::default()
        });
    }
    if let Some(u) = ucr {
        let image = u.get("image").and_then(|i| i.get("id")).and_then(Value::as_str).map(str::to_string);
        if image.is_none() {
            cx.err("/run/ucr/image/id", "is required");
        }
        return ContainerSpec::Oci(Container { image, volumes: volumes.to_vec(), ..Container::default() });
    }
    ContainerSpec::None
}

fn read_constraints(cx: &mut Ctx, v: Option<&Value>) -> Vec<Constraint> {
    let mut out = Vec::new();
    let Some(pl) = cx.obj(v, "/run/placement") else { return out };
    for (i, c) in cx.arr(pl.get("constraints"), "/run/placement/constraints").iter().enumerate() {
        let p = format!("/run/placement/constraints/{i}");
        let Some(o) = cx.obj(Some(c), &p) else { continue };
        let attribute = cx.str_opt(o, "attribute", &p);
        let op = match o.get("operator").and_then(Value::as_str) {
            Some("IS") | Some("EQ") => Some(ConstraintOp::Is),
            Some("LIKE") => Some(ConstraintOp::Like),
            Some("UNLIKE") => Some(ConstraintOp::Unlike),
            _ => {
                cx.err(&format!("{p}/operator"), "must be one of IS, EQ, LIKE, UNLIKE");
                None
            }
        };
        let value = cx.str_opt(o, "value", &p);
        if attribute.is_none() {
            cx.err(&format!("{p}/attribute"), "is required");
        }
        if let (Some(field), Some(op), Some(value)) = (attribute, op, value) {
            if matches!(op, ConstraintOp::Like | ConstraintOp::Unlike) && regex_invalid(&value) {
                cx.err(&format!("{p}/value"), "is not a valid regular expression");
            }
            // A constraint without a value is ignored, as in Metronome.
            out.push(Constraint { field, op, value: Some(value) });
        }
    }
    out
}

/// A cheap check for the obviously broken patterns (unbalanced brackets);
/// the scheduler compiles the pattern and a bad one matches nothing.
fn regex_invalid(p: &str) -> bool {
    let (mut depth_paren, mut depth_brack) = (0i32, 0i32);
    let mut escaped = false;
    for c in p.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '(') => depth_paren += 1,
            (false, ')') => depth_paren -= 1,
            (false, '[') => depth_brack += 1,
            (false, ']') => depth_brack -= 1,
            _ => {}
        }
        if depth_paren < 0 || depth_brack < 0 {
            return true;
        }
    }
    depth_paren != 0 || depth_brack != 0
}

fn read_restart(cx: &mut Ctx, v: Option<&Value>) -> (RestartPolicy, Option<u64>) {
    let Some(o) = cx.obj(v, "/run/restart") else { return (RestartPolicy::Never, None) };
    let policy = match o.get("policy").and_then(Value::as_str) {
        None => RestartPolicy::Never,
        Some("NEVER") => RestartPolicy::Never,
        Some("ON_FAILURE") => RestartPolicy::OnFailure,
        Some(_) => {
            cx.err("/run/restart/policy", "must be NEVER or ON_FAILURE");
            RestartPolicy::Never
        }
    };
    (policy, cx.int_opt(o, "activeDeadlineSeconds", "/run/restart"))
}

/// Parses a schedule body (`POST/PUT .../schedules`); `path_id` (PUT) wins.
pub fn parse_schedule(body: &[u8], path_id: Option<&str>, request_path: &str) -> Result<ScheduleSpec, WireError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| WireError::malformed(format!("Invalid JSON: {e}"), request_path))?;
    let mut cx = Ctx { errs: Vec::new() };
    let Some(o) = v.as_object() else {
        return Err(WireError::invalid(&[Detail { path: "/".into(), error: "must be an object".into() }]));
    };
    match read_schedule(&mut cx, o, "", path_id) {
        Some(s) if cx.errs.is_empty() => Ok(s),
        _ => Err(WireError::invalid(&cx.errs)),
    }
}

fn read_schedule(cx: &mut Ctx, o: &Map<String, Value>, p: &str, path_id: Option<&str>) -> Option<ScheduleSpec> {
    let id = match path_id {
        Some(i) => Some(i.to_string()),
        None => cx.str_opt(o, "id", p),
    };
    let id_ok = id.as_deref().is_some_and(|i| {
        let b = i.as_bytes();
        b.len() >= 2
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    });
    if !id_ok {
        cx.err(
            &format!("{p}/id"),
            "must be at least 2 lowercase letters, digits or hyphens, starting and ending with a letter or digit",
        );
    }
    let cron = cx.str_opt(o, "cron", p);
    let timezone = cx.str_opt(o, "timezone", p).unwrap_or_else(|| "UTC".to_string());
    match &cron {
        None => cx.err(&format!("{p}/cron"), "is required"),
        Some(c) => match CronClock::parse(c, &timezone) {
            Ok(_) => {}
            Err(model::cron::CronError::TimeZone(z)) => {
                cx.err(&format!("{p}/timezone"), format!("'{z}' is not a known IANA time zone"))
            }
            Err(e) => cx.err(&format!("{p}/cron"), e.to_string()),
        },
    }
    let starting_deadline_seconds = cx.int_opt(o, "startingDeadlineSeconds", p).unwrap_or(900);
    if starting_deadline_seconds < 1 {
        cx.err(&format!("{p}/startingDeadlineSeconds"), "must be at least 1");
    }
    let concurrency_policy = match o.get("concurrencyPolicy").and_then(Value::as_str) {
        None => ConcurrencyPolicy::Allow,
        Some("ALLOW") => ConcurrencyPolicy::Allow,
        Some("FORBID") => ConcurrencyPolicy::Forbid,
        Some("REPLACE") => ConcurrencyPolicy::Replace,
        Some(_) => {
            cx.err(&format!("{p}/concurrencyPolicy"), "must be ALLOW, FORBID or REPLACE");
            ConcurrencyPolicy::Allow
        }
    };
    let enabled = cx.bool_or(o, "enabled", p, true);
    Some(ScheduleSpec {
        id: id.filter(|_| id_ok)?,
        cron: cron?,
        timezone,
        starting_deadline_seconds,
        concurrency_policy,
        enabled,
    })
}
