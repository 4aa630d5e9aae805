//! Wharf state -> Marathon JSON: apps (`GET /v2/apps/{id}`), tasks,
//! deployments and the launch queue, in the shapes of Marathon's API examples.

use crate::convert::{net_mode, net_mode_of, port_mappings_mut, NetMode};
use crate::time::format_time;
use crate::validate::{constraint_op_name, health_protocol_name};
use model::{
    App, AppId, AppSpec, ClusterState, CommandSpec, Deployment, HealthCheck, KillSelection, OfferSummary, Task,
    TaskState, UnixMillis,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What `embed=` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Embed {
    pub tasks: bool,
    pub counts: bool,
    pub deployments: bool,
    pub last_task_failure: bool,
    pub readiness: bool,
}

impl Embed {
    /// Accepts `apps.tasks`, `app.tasks`, `apps.counts`, `apps.deployments`,
    /// `apps.lastTaskFailure` (or `apps.failures`), `apps.readiness`, also
    /// comma-separated; unknown values are ignored as Marathon does.
    pub fn parse(values: &[String]) -> Embed {
        let mut e = Embed::default();
        for v in values.iter().flat_map(|v| v.split(',')) {
            let key = v.trim().rsplit('.').next().unwrap_or_default();
            match key {
                "tasks" => e.tasks = true,
                "counts" => e.counts = true,
                "deployments" => e.deployments = true,
                "lastTaskFailure" | "failures" => e.last_task_failure = true,
                "readiness" => e.readiness = true,
                _ => {}
            }
        }
        e
    }
}

pub(crate) fn f64_json(x: f64) -> Value {
    // Every whole number an i64 field (backoffSeconds, ...) can hold renders as
    // an integer, so it parses back; `as` saturates at i64::MAX, which reads
    // back as the same f64.
    if x.fract() == 0.0 && x.abs() <= i64::MAX as f64 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Copies keys of `extra` missing from `base` (or all of them with `override_all`).
fn overlay(base: &mut Map<String, Value>, extra: &Value, override_all: bool) {
    if let Value::Object(o) = extra {
        for (k, v) in o {
            if override_all || !base.contains_key(k) {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The definition part of an app (what a client may PUT back), every field
/// present with its value or Marathon's default.
pub(crate) fn spec_wire(spec: &AppSpec) -> Map<String, Value> {
    let pt = &spec.passthrough;
    let mut m = Map::new();
    m.insert("id".into(), json!(spec.id.as_str()));
    let (cmd, args) = match &spec.command {
        Some(CommandSpec::Shell(c)) => (json!(c), Value::Null),
        Some(CommandSpec::Argv(a)) => (Value::Null, json!(a)),
        None => (Value::Null, Value::Null),
    };
    m.insert("cmd".into(), cmd);
    m.insert("args".into(), args);
    m.insert("user".into(), json!(spec.user));
    let mut env: Map<String, Value> = spec.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    for (k, name) in &spec.secret_env {
        env.insert(k.clone(), json!({ "secret": name }));
    }
    // Apps stored before secret references were typed kept them here.
    if let Some(Value::Object(secret_env)) = pt.get("env") {
        for (k, v) in secret_env {
            env.insert(k.clone(), v.clone());
        }
    }
    m.insert("env".into(), Value::Object(env));
    m.insert("instances".into(), json!(spec.instances));
    m.insert("cpus".into(), f64_json(spec.resources.cpus));
    m.insert("mem".into(), f64_json(spec.resources.mem));
    m.insert("disk".into(), f64_json(spec.resources.disk));
    m.insert("gpus".into(), json!(spec.resources.gpus));
    m.insert("executor".into(), json!(""));
    let constraints: Vec<Value> = spec
        .constraints
        .iter()
        .map(|c| {
            let mut a = vec![json!(c.field), json!(constraint_op_name(c.op))];
            if let Some(v) = &c.value {
                a.push(json!(v));
            }
            Value::Array(a)
        })
        .collect();
    m.insert("constraints".into(), Value::Array(constraints));
    m.insert("uris".into(), json!([]));
    m.insert("fetch".into(), crate::fetch::render(&spec.fetch));
    m.insert("storeUrls".into(), json!([]));
    m.insert("backoffSeconds".into(), f64_json(spec.backoff.seconds));
    m.insert("backoffFactor".into(), f64_json(spec.backoff.factor));
    m.insert("maxLaunchDelaySeconds".into(), f64_json(spec.backoff.max_launch_delay_seconds));
    m.insert("container".into(), container_wire(spec));
    m.insert("healthChecks".into(), health_checks_wire(spec));
    m.insert("readinessChecks".into(), crate::readiness::render(&spec.readiness_checks));
    let deps: Vec<&str> = spec.dependencies.iter().map(|d| d.as_str()).collect();
    m.insert("dependencies".into(), json!(deps));
    m.insert(
        "upgradeStrategy".into(),
        json!({
            "minimumHealthCapacity": f64_json(spec.upgrade.minimum_health_capacity),
            "maximumOverCapacity": f64_json(spec.upgrade.maximum_over_capacity),
        }),
    );
    m.insert("labels".into(), json!(spec.labels));
    m.insert("acceptedResourceRoles".into(), Value::Null);
    m.insert("ipAddress".into(), Value::Null);
    m.insert("residency".into(), Value::Null);
    let secrets: Map<String, Value> =
        spec.secrets.iter().map(|(k, s)| (k.clone(), json!({ "source": s.source }))).collect();
    m.insert("secrets".into(), Value::Object(secrets));
    m.insert("taskKillGracePeriodSeconds".into(), f64_json(spec.kill_grace_seconds));
    m.insert("unreachableStrategy".into(), json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}));
    m.insert(
        "killSelection".into(),
        json!(match spec.kill_selection {
            KillSelection::YoungestFirst => "YOUNGEST_FIRST",
            KillSelection::OldestFirst => "OLDEST_FIRST",
        }),
    );
    // Everything kept verbatim (networks, fetch, secrets, ...) wins over defaults.
    for (k, v) in pt {
        if !matches!(k.as_str(), "env" | "container" | "healthChecks") {
            m.insert(k.clone(), v.clone());
        }
    }
    let host = net_mode(&m) == NetMode::Host;
    let defs: Vec<Value> = if host {
        spec.ports
            .iter()
            .map(|p| {
                let mut d = Map::new();
                d.insert("port".into(), json!(p.port));
                d.insert("protocol".into(), json!(p.protocol));
                if let Some(n) = &p.name {
                    d.insert("name".into(), json!(n));
                }
                d.insert("labels".into(), json!(p.labels));
                Value::Object(d)
            })
            .collect()
    } else {
        Vec::new()
    };
    m.insert("portDefinitions".into(), Value::Array(defs));
    let ports: Vec<u16> = spec.ports.iter().map(|p| p.port).collect();
    m.insert("ports".into(), json!(ports));
    m.insert("requirePorts".into(), json!(spec.require_ports));
    m
}

/// The typed container with what it does not say laid over from
/// `passthrough["container"]`, and service ports as assigned (also in the
/// deprecated `docker.portMappings`).
fn container_wire(spec: &AppSpec) -> Value {
    let mut c = crate::container::wire(&spec.container, &spec.ports);
    if let Some(rest) = spec.passthrough.get("container") {
        crate::container::overlay(&mut c, rest);
    }
    let pt = &spec.passthrough;
    let host = net_mode_of(pt.get("networks"), Some(&c), pt.get("ipAddress")) == NetMode::Host;
    if !host {
        if let Some(pms) = port_mappings_mut(&mut c) {
            for (pm, p) in pms.iter_mut().zip(&spec.ports) {
                if let Value::Object(o) = pm {
                    o.insert("servicePort".into(), json!(p.port));
                }
            }
        }
    }
    c
}

/// One typed health check with every field Marathon renders.
pub(crate) fn health_check_wire(h: &HealthCheck) -> Map<String, Value> {
    let mut o = Map::new();
    o.insert("protocol".into(), json!(health_protocol_name(h.protocol)));
    if let Some(p) = &h.path {
        o.insert("path".into(), json!(p));
    }
    if let Some(p) = h.port_index {
        o.insert("portIndex".into(), json!(p));
    }
    if let Some(p) = h.port {
        o.insert("port".into(), json!(p));
    }
    if let Some(c) = &h.command {
        o.insert("command".into(), json!({"value": c}));
    }
    o.insert("gracePeriodSeconds".into(), f64_json(h.grace_period_seconds));
    o.insert("intervalSeconds".into(), f64_json(h.interval_seconds));
    o.insert("timeoutSeconds".into(), f64_json(h.timeout_seconds));
    o.insert("maxConsecutiveFailures".into(), json!(h.max_consecutive_failures));
    o.insert("delaySeconds".into(), f64_json(h.delay_seconds));
    o.insert("ignoreHttp1xx".into(), json!(h.ignore_http1xx));
    o
}

/// Typed checks, with what the typed form cannot say (`MESOS_HTTP`,
/// `ipProtocol`, ...) laid over from `passthrough["healthChecks"]`.
fn health_checks_wire(spec: &AppSpec) -> Value {
    let extras = spec.passthrough.get("healthChecks").and_then(Value::as_array);
    let out: Vec<Value> = spec
        .health_checks
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut o = health_check_wire(h);
            if let Some(extra) = extras.and_then(|a| a.get(i)) {
                overlay(&mut o, extra, true);
            }
            Value::Object(o)
        })
        .collect();
    Value::Array(out)
}

fn is_counted(t: &Task) -> bool {
    !t.state.is_terminal()
}

/// One app as `GET /v2/apps/{id}` returns it (the object inside `{"app": ...}`).
pub fn render_app(app: &App, state: &ClusterState, embed: &Embed) -> Value {
    let deployments: Vec<&str> = state.deployments_of(&app.spec.id).map(|d| d.id.0.as_str()).collect();
    serde_json::to_value(app_wire(app, state, embed, &deployments)).unwrap_or(Value::Null)
}

/// The deployments holding each app, computed once for a listing (asking
/// `deployments_of` per app scans every deployment for every app).
pub fn deployments_by_app(state: &ClusterState) -> BTreeMap<&AppId, Vec<&str>> {
    let mut out: BTreeMap<&AppId, Vec<&str>> = BTreeMap::new();
    for d in state.deployments.values() {
        for a in &d.affected_apps {
            out.entry(a).or_default().push(d.id.0.as_str());
        }
    }
    out
}

/// Marathon's app object: the definition and counts as a map, the embedded
/// tasks serialised straight from the tasks (see `TaskWire`).
#[derive(serde::Serialize)]
pub struct AppWire<'a> {
    #[serde(flatten)]
    fields: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<Vec<TaskWire<'a>>>,
}

/// `render_app` as a value to serialise; `deployments` are the ids of the
/// deployments holding the app.
pub fn app_wire<'a>(app: &'a App, state: &'a ClusterState, embed: &Embed, deployments: &[&str]) -> AppWire<'a> {
    let tasks = counted_tasks(app, state);
    let mut m = app_own_fields(app, embed);
    for (k, v) in app_live_fields(app, &tasks, state, embed, deployments) {
        m.insert(k.to_string(), v);
    }
    let tasks = embed.tasks.then(|| tasks.iter().map(|t| task_wire(t, state)).collect());
    AppWire { fields: m, tasks }
}

/// The tasks an app's object counts and embeds: those not yet terminal.
pub fn counted_tasks<'a>(app: &App, state: &'a ClusterState) -> Vec<&'a Task> {
    state.tasks_of(&app.spec.id).filter(|t| is_counted(t)).collect()
}

/// The fields of an app's object that depend on the app alone (its
/// definition, version, and last failure when embedded), so a listing may
/// keep them, rendered, for as long as the app is unchanged.
pub fn app_own_fields(app: &App, embed: &Embed) -> Map<String, Value> {
    let spec = &app.spec;
    let mut m = spec_wire(spec);
    m.insert("version".into(), json!(format_time(app.version)));
    m.insert(
        "versionInfo".into(),
        json!({
            "lastScalingAt": format_time(app.last_scaling_at),
            "lastConfigChangeAt": format_time(app.last_config_change_at),
        }),
    );
    if embed.last_task_failure {
        if let Some(f) = &app.last_task_failure {
            m.insert(
                "lastTaskFailure".into(),
                json!({
                    "appId": spec.id.as_str(),
                    "host": f.host,
                    "message": f.message,
                    "state": f.state.marathon_name(),
                    "taskId": f.task_id.as_str(),
                    "timestamp": format_time(f.timestamp),
                    "version": format_time(f.version),
                }),
            );
        }
    }
    m
}

/// Whether `a` and `b` have the same own fields (`app_own_fields`): what
/// those fields read is equal. (A launch or a backoff copies an app without
/// changing any of it.)
pub fn same_own_fields(a: &App, b: &App, embed: &Embed) -> bool {
    a.version == b.version
        && a.last_scaling_at == b.last_scaling_at
        && a.last_config_change_at == b.last_config_change_at
        && (!embed.last_task_failure || a.last_task_failure == b.last_task_failure)
        && a.spec == b.spec
}

/// The fields of an app's object that depend on its tasks (`tasks`: its
/// counted tasks) and deployments, in key order. They win over an own field
/// of the same name (one kept verbatim from the definition).
pub fn app_live_fields(
    app: &App,
    tasks: &[&Task],
    state: &ClusterState,
    embed: &Embed,
    deployments: &[&str],
) -> Vec<(&'static str, Value)> {
    let checked = !app.spec.health_checks.is_empty();
    let staged = tasks.iter().filter(|t| matches!(t.state, TaskState::Staging | TaskState::Starting)).count();
    let running = tasks.iter().filter(|t| t.state == TaskState::Running).count();
    let healthy = tasks.iter().filter(|t| checked && t.state == TaskState::Running && t.healthy == Some(true)).count();
    let unhealthy = tasks.iter().filter(|t| checked && t.healthy == Some(false)).count();
    let deps: Vec<Value> = deployments.iter().map(|d| json!({"id": d})).collect();
    let mut out = vec![("deployments", Value::Array(deps))];
    if embed.readiness {
        out.push(("readinessCheckResults", json!(crate::readiness::results(app, state))));
    }
    out.extend([
        ("tasksHealthy", json!(healthy)),
        ("tasksRunning", json!(running)),
        ("tasksStaged", json!(staged)),
        ("tasksUnhealthy", json!(unhealthy)),
    ]);
    out
}

/// One task, in the shape of `api-examples/tasks.json`.
pub fn render_task(task: &Task, state: &ClusterState) -> Value {
    serde_json::to_value(task_wire(task, state)).unwrap_or(Value::Null)
}

/// A Marathon time stamp, written without an intermediate `Value`.
struct Time(UnixMillis);

impl serde::Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(self.0))
    }
}

#[derive(serde::Serialize)]
struct IpWire {
    #[serde(rename = "ipAddress")]
    ip_address: String,
    protocol: &'static str,
}

/// Marathon's task object, serialised straight from the task: listings of
/// tens of thousands of tasks build no `Value` tree per task.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskWire<'a> {
    id: &'a str,
    app_id: &'a str,
    host: &'a str,
    ip_addresses: Vec<IpWire>,
    ports: &'a [u16],
    service_ports: Vec<u16>,
    slave_id: String,
    staged_at: Time,
    started_at: Option<Time>,
    version: Time,
    state: &'static str,
    health_check_results: Vec<Value>,
    local_volumes: [u8; 0],
    role: &'static str,
}

/// `render_task` as a value to serialise (see `TaskWire`).
pub fn task_wire<'a>(task: &'a Task, state: &ClusterState) -> TaskWire<'a> {
    let app = state.apps.get(&task.app_id);
    task_wire_for(task, &TaskAppFacts::of(app))
}

/// What a task's object takes from its app: the app's service ports and
/// how many health checks it has (none when the app is gone).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskAppFacts {
    pub service_ports: Vec<u16>,
    pub checks: usize,
}

impl TaskAppFacts {
    pub fn of(app: Option<&App>) -> TaskAppFacts {
        app.map_or_else(TaskAppFacts::default, |a| TaskAppFacts {
            service_ports: a.spec.ports.iter().map(|p| p.port).collect(),
            checks: a.spec.health_checks.len(),
        })
    }
}

/// `task_wire` with the app's part given: the task's object depends on
/// nothing else.
pub fn task_wire_for<'a>(task: &'a Task, app: &TaskAppFacts) -> TaskWire<'a> {
    let service_ports = app.service_ports.clone();
    // A bridge container's own address, as Marathon shows Mesos's NetworkInfo;
    // else the node's.
    let ip_addresses: Vec<IpWire> = match task.container_ip.map_or_else(|| task.host.parse(), Ok) {
        Ok(ip) => {
            vec![IpWire { ip_address: ip.to_string(), protocol: if ip.is_ipv4() { "IPv4" } else { "IPv6" } }]
        }
        Err(_) => Vec::new(),
    };
    let checks = app.checks;
    let health: Vec<Value> = match (&task.health, task.healthy) {
        (Some(h), Some(_)) if task.state == TaskState::Running => (0..checks)
            .map(|_| {
                json!({
                    "alive": h.alive,
                    "consecutiveFailures": h.consecutive_failures,
                    "firstSuccess": h.first_success.map(format_time),
                    "lastFailure": h.last_failure.map(format_time),
                    "lastSuccess": h.last_success.map(format_time),
                    "lastFailureCause": h.last_failure_cause,
                    "taskId": task.id.as_str(),
                    "instanceId": instance_id(task),
                })
            })
            .collect(),
        (None, Some(alive)) if task.state == TaskState::Running => (0..checks)
            .map(|_| {
                json!({
                    "alive": alive,
                    "consecutiveFailures": if alive { 0 } else { 1 },
                    "firstSuccess": Value::Null,
                    "lastFailure": Value::Null,
                    "lastSuccess": Value::Null,
                    "lastFailureCause": Value::Null,
                    "taskId": task.id.as_str(),
                    "instanceId": instance_id(task),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    TaskWire {
        id: task.id.as_str(),
        app_id: task.app_id.as_str(),
        host: &task.host,
        ip_addresses,
        ports: &task.ports,
        service_ports,
        slave_id: task.node.to_string(),
        staged_at: Time(task.staged_at),
        started_at: task.started_at.map(Time),
        version: Time(task.app_version),
        state: task.state.marathon_name(),
        health_check_results: health,
        local_volumes: [],
        role: "*",
    }
}

/// `prefix.instance-<uuid>` of `prefix.instance-<uuid>._app.<n>`.
pub(crate) fn instance_id(task: &Task) -> String {
    task.id.instance_id().to_string()
}

/// One deployment, in the shape of `api-examples/deployments.json`.
pub fn render_deployment(d: &Deployment, state: &ClusterState) -> Value {
    let step_json = |s: &model::Step| -> Value {
        let actions: Vec<Value> =
            s.actions.iter().map(|(a, app)| json!({"action": a.marathon_name(), "app": app.as_str()})).collect();
        json!({"actions": actions})
    };
    let steps: Vec<Value> = d.steps.iter().map(step_json).collect();
    let current: Vec<Value> = d
        .steps
        .get(d.current_step.saturating_sub(1))
        .map(|s| {
            s.actions
                .iter()
                .map(|(a, app)| {
                    let results = state.apps.get(app).map(|x| crate::readiness::results(x, state)).unwrap_or_default();
                    json!({"action": a.marathon_name(), "app": app.as_str(), "readinessCheckResults": results})
                })
                .collect()
        })
        .unwrap_or_default();
    let affected: Vec<&str> = d.affected_apps.iter().map(|a| a.as_str()).collect();
    json!({
        "id": d.id.0,
        "version": format_time(d.version),
        "affectedApps": affected,
        "affectedPods": [],
        "steps": steps,
        "currentActions": current,
        "currentStep": d.current_step,
        "totalSteps": d.steps.len(),
    })
}

/// `GET /v2/queue`: one entry per app with fewer active tasks than instances,
/// in Marathon's shape and nothing more (strict clients such as
/// marathon-python build objects from every field). `offers`: how the nodes
/// answered each waiting app (from the scheduler); Wharf's own explanation is
/// served at `/wharf/v1/queue`. `last_unused_offers`: `embed=lastUnusedOffers`.
pub fn render_queue(
    state: &ClusterState,
    now: UnixMillis,
    offers: &std::collections::BTreeMap<model::AppId, OfferSummary>,
    last_unused_offers: bool,
) -> Value {
    let mut queue = Vec::new();
    for app in state.apps.values().filter(|a| !a.deleting) {
        let active = state.tasks_of(&app.spec.id).filter(|t| t.is_active()).count();
        let wanted = app.spec.instances as usize;
        if active >= wanted {
            continue;
        }
        let left = now.secs_until(app.backoff.not_before).max(0.0).ceil() as i64;
        let mut a = spec_wire(&app.spec);
        a.insert("version".into(), json!(format_time(app.version)));
        a.insert(
            "versionInfo".into(),
            json!({
                "lastScalingAt": format_time(app.last_scaling_at),
                "lastConfigChangeAt": format_time(app.last_config_change_at),
            }),
        );
        let o = offers.get(&app.spec.id).copied().unwrap_or_default();
        // Wharf keeps no history of earlier rounds: the launch attempt's
        // summary is the latest round's, where each node made one offer.
        let funnel: Vec<Value> = o
            .funnel()
            .iter()
            .map(|s| json!({"reason": s.reason.marathon_name(), "declined": s.declined, "processed": s.processed}))
            .collect();
        let mut summary = json!({
            "processedOffersCount": o.processed,
            "unusedOffersCount": o.unused(),
            "rejectSummaryLastOffers": funnel,
            "rejectSummaryLaunchAttempt": funnel,
        });
        if o.unused() > 0 {
            summary["lastUnusedOfferAt"] = json!(format_time(now));
        }
        // No `role`: Marathon 1.9+ sends it here, but marathon-python 0.13.0
        // fails on it (its queue item takes no `role`); the app carries none.
        let mut item = json!({
            "app": Value::Object(a),
            "count": wanted - active,
            "delay": {"timeLeftSeconds": left, "overdue": left == 0},
            "since": format_time(app.version.max(app.backoff.not_before.min(now))),
            "processedOffersSummary": summary,
        });
        if last_unused_offers {
            // Wharf does not keep the offers themselves (Mesos offer ids,
            // resources per offer): the list is empty but present, as asked.
            item["lastUnusedOffers"] = json!([]);
        }
        queue.push(item);
    }
    json!({ "queue": queue })
}
