//! `wharf app deploy|ls|show|diff|scale|restart|rm`.

use super::progress::{self, Goal};
use super::{app_path, force_q, normalise, num, print_json, str_of, table::table};
use crate::cli::AppCommand;
use crate::client::Client;
use anyhow::{anyhow, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

pub async fn run(c: &Client, cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Deploy { file, force, timeout } => deploy(c, &file, force, Duration::from_secs(timeout)).await,
        AppCommand::Ls { json } => ls(c, json).await,
        AppCommand::Show { id, json } => show(c, &id, json).await,
        AppCommand::Diff { file } => diff(c, &file).await,
        AppCommand::Scale { id, instances, force, timeout } => {
            let path = format!("{}{}", app_path(&id), force_q(force));
            let body = json!({ "instances": instances });
            write_and_follow(c, &id, Method::PUT, &path, Some(&body), Goal::Deploy, timeout).await
        }
        AppCommand::Rm { id, force, timeout } => {
            let path = format!("{}{}", app_path(&id), force_q(force));
            write_and_follow(c, &id, Method::DELETE, &path, None, Goal::Remove, timeout).await
        }
        AppCommand::Restart { id, force, timeout } => {
            let path = format!("{}/restart{}", app_path(&id), force_q(force));
            write_and_follow(c, &id, Method::POST, &path, None, Goal::Deploy, timeout).await
        }
    }
}

fn read_definition(file: &Path) -> anyhow::Result<(String, Value)> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let def: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))?;
    let id = def
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{}: field \"id\" is missing (e.g. \"id\": \"/web\")", file.display()))?;
    Ok((normalise(id), def))
}

/// The deployment a write started, from either answer shape.
fn deployment_of(v: &Value) -> Option<String> {
    v.get("deploymentId").or_else(|| v.pointer("/deployments/0/id")).and_then(Value::as_str).map(str::to_string)
}

async fn deploy(c: &Client, file: &Path, force: bool, timeout: Duration) -> anyhow::Result<()> {
    let (id, def) = read_definition(file)?;
    let exists = c.call(Method::GET, &app_path(&id), None).await?.0.is_success();
    let events = c.events().await?;
    let v = if exists {
        c.ok(Method::PUT, &format!("{}{}", app_path(&id), force_q(force)), Some(&def)).await?
    } else {
        c.ok(Method::POST, &format!("/v2/apps{}", force_q(force)), Some(&def)).await?
    };
    match deployment_of(&v) {
        Some(d) => progress::follow(c, events, &id, &d, Goal::Deploy, timeout).await,
        None => {
            println!("{id} updated (nothing to deploy)");
            Ok(())
        }
    }
}

async fn write_and_follow(
    c: &Client,
    id: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    goal: Goal,
    timeout: u64,
) -> anyhow::Result<()> {
    let events = c.events().await?;
    let v = c.ok(method, path, body).await?;
    let d = deployment_of(&v).ok_or_else(|| anyhow!("the node started no deployment: {v}"))?;
    progress::follow(c, events, &normalise(id), &d, goal, Duration::from_secs(timeout)).await
}

async fn ls(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/v2/apps?embed=apps.deployments", None).await?;
    if json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v["apps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let deploying = a["deployments"].as_array().is_some_and(|d| !d.is_empty());
            vec![
                str_of(&a["id"]),
                num(&a["instances"]),
                num(&a["tasksRunning"]),
                num(&a["tasksHealthy"]),
                num(&a["tasksStaged"]),
                num(&a["cpus"]),
                num(&a["mem"]),
                if deploying { "deploying".into() } else { "-".into() },
                command_of(a),
            ]
        })
        .collect();
    let header = ["ID", "INSTANCES", "RUNNING", "HEALTHY", "STAGED", "CPUS", "MEM", "DEPLOYMENT", "CMD"];
    print!("{}", table(&header, &rows, &[1, 2, 3, 4, 5, 6]));
    Ok(())
}

fn command_of(a: &Value) -> String {
    a["cmd"]
        .as_str()
        .map(str::to_string)
        .or_else(|| a["args"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" ")))
        .or_else(|| a.pointer("/container/docker/image").and_then(Value::as_str).map(|i| format!("(image {i})")))
        .unwrap_or_default()
}

async fn show(c: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let path = format!("{}?embed=app.tasks&embed=app.deployments&embed=app.lastTaskFailure", app_path(id));
    let v = c.ok(Method::GET, &path, None).await?;
    if json {
        return print_json(&v);
    }
    let a = &v["app"];
    let mut fields: Vec<(&str, String)> = vec![
        ("id", str_of(&a["id"])),
        ("version", str_of(&a["version"])),
        ("command", command_of(a)),
        (
            "instances",
            format!(
                "{} wanted, {} running, {} healthy, {} staged",
                num(&a["instances"]),
                num(&a["tasksRunning"]),
                num(&a["tasksHealthy"]),
                num(&a["tasksStaged"])
            ),
        ),
        ("resources", format!("cpus {}, mem {} MB, disk {} MB", num(&a["cpus"]), num(&a["mem"]), num(&a["disk"]))),
    ];
    if let Some(ports) = a["portDefinitions"].as_array().filter(|p| !p.is_empty()) {
        let p: Vec<String> = ports.iter().map(|p| num(&p["port"])).collect();
        fields.push(("service ports", p.join(", ")));
    }
    if let Some(cs) = a["constraints"].as_array().filter(|c| !c.is_empty()) {
        let cs: Vec<String> = cs
            .iter()
            .map(|c| c.as_array().map(|x| x.iter().map(str_of).collect::<Vec<_>>().join(":")).unwrap_or_default())
            .collect();
        fields.push(("constraints", cs.join(", ")));
    }
    if let Some(h) = a["healthChecks"].as_array().filter(|h| !h.is_empty()) {
        let hs: Vec<String> = h.iter().map(|h| str_of(&h["protocol"])).collect();
        fields.push(("health checks", hs.join(", ")));
    }
    let deps: Vec<String> =
        a["deployments"].as_array().map(|d| d.iter().map(|d| str_of(&d["id"])).collect()).unwrap_or_default();
    fields.push(("deployments", if deps.is_empty() { "none".into() } else { deps.join(", ") }));
    if a["lastTaskFailure"].is_object() {
        let f = &a["lastTaskFailure"];
        fields.push((
            "last failure",
            format!(
                "{} {} at {}: {}",
                str_of(&f["taskId"]),
                str_of(&f["state"]),
                str_of(&f["timestamp"]),
                str_of(&f["message"])
            ),
        ));
    }
    let w = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &fields {
        println!("{:<w$}  {v}", format!("{k}:"), w = w + 1);
    }
    let tasks: Vec<Vec<String>> =
        a["tasks"].as_array().cloned().unwrap_or_default().iter().map(super::tasks::task_row).collect();
    println!();
    print!("{}", table(&["TASK", "APP", "STATE", "HEALTH", "HOST", "STARTED", "PORTS"], &tasks, &[]));
    Ok(())
}

/// Fields the node fills in: never part of what a deploy changes.
const STATUS_FIELDS: &[&str] = &[
    "version",
    "versionInfo",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "readinessCheckResults",
];

async fn diff(c: &Client, file: &Path) -> anyhow::Result<()> {
    let (id, def) = read_definition(file)?;
    let (status, current) = c.call(Method::GET, &app_path(&id), None).await?;
    if status == StatusCode::NOT_FOUND {
        println!("{id} does not exist: a deploy creates it");
        return Ok(());
    }
    if !status.is_success() {
        return Err(crate::client::api_error(status, &current));
    }
    let lines = changes(&current["app"], &def);
    if lines.is_empty() {
        println!("{id}: no changes");
    } else {
        println!("{id}: {} change{}", lines.len(), if lines.len() == 1 { "" } else { "s" });
        for l in lines {
            println!("  {l}");
        }
    }
    Ok(())
}

/// `path: old -> new` for every field of `new` whose value differs from
/// `old`'s (objects compared key by key, numbers by value: 16 = 16.0).
fn changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(fields) = new.as_object() else { return out };
    for (k, v) in fields {
        if STATUS_FIELDS.contains(&k.as_str()) {
            continue;
        }
        walk(&format!("/{k}"), &old[k], v, &mut out);
    }
    out
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in n {
                walk(&format!("{path}/{k}"), o.get(k).unwrap_or(&Value::Null), v, out);
            }
        }
        _ if same(old, new) => {}
        (Value::Null, _) => out.push(format!("{path}: (unset) -> {new}")),
        _ => out.push(format!("{path}: {old} -> {new}")),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn changes_name_the_fields_that_differ() {
        let old = json!({"id": "/web", "cmd": "a", "instances": 2, "mem": 16.0, "labels": {"x": "1"}, "version": "v1"});
        let new = json!({"id": "/web", "cmd": "b", "instances": 2, "mem": 16, "labels": {"x": "1", "y": "2"}, "version": "v2"});
        assert_eq!(super::changes(&old, &new), vec!["/cmd: \"a\" -> \"b\"", "/labels/y: (unset) -> \"2\""]);
        assert!(super::changes(&old, &old).is_empty());
    }
}
