//! `wharf ps`: tasks as a table, or `/v2/tasks` as JSON.

use super::{app_path, print_json, str_of, table::table};
use crate::client::Client;
use reqwest::Method;
use serde_json::Value;

pub async fn ps(c: &Client, app: Option<String>, json: bool) -> anyhow::Result<()> {
    let path = match &app {
        Some(a) => format!("{}/tasks", app_path(a)),
        None => "/v2/tasks".to_string(),
    };
    let v = c.ok(Method::GET, &path, None).await?;
    if json {
        return print_json(&v);
    }
    let rows: Vec<Vec<String>> = v["tasks"].as_array().cloned().unwrap_or_default().iter().map(task_row).collect();
    print!("{}", table(&["TASK", "APP", "STATE", "HEALTH", "HOST", "STARTED", "PORTS"], &rows, &[]));
    Ok(())
}

/// One task's cells under `TASK APP STATE HEALTH HOST STARTED PORTS`.
pub fn task_row(t: &Value) -> Vec<String> {
    let ports: Vec<String> =
        t["ports"].as_array().map(|p| p.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
    vec![
        str_of(&t["id"]),
        str_of(&t["appId"]),
        str_of(&t["state"]),
        health(t),
        str_of(&t["host"]),
        str_of(&t["startedAt"]),
        if ports.is_empty() { "-".to_string() } else { ports.join(",") },
    ]
}

/// `healthy`, `unhealthy`, or `-` for a task of an app without checks.
fn health(t: &Value) -> String {
    match t["healthCheckResults"].as_array() {
        Some(r) if !r.is_empty() => {
            if r.iter().all(|x| x["alive"] == Value::Bool(true)) {
                "healthy".into()
            } else {
                "unhealthy".into()
            }
        }
        _ => "-".into(),
    }
}
