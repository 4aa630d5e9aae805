//! `readinessChecks` on the wire: parsed into `model::ReadinessCheck` with
//! Marathon's defaults, rendered back in full, and the per-task results that
//! `/v2/deployments` shows as `currentActions[].readinessCheckResults`.

use crate::read::{get, Cx};
use crate::time::format_time;
use model::{App, ClusterState, ReadinessCheck, ReadinessProtocol, TaskState};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Parses `readinessChecks` (already taken out of the definition). Every
/// check must name one of `port_names`.
pub(crate) fn parse(cx: &mut Cx, v: &Value, port_names: &BTreeSet<&str>) -> Vec<ReadinessCheck> {
    let Some(a) = cx.array(v, "/readinessChecks") else {
        return Vec::new();
    };
    a.iter()
        .enumerate()
        .filter_map(|(i, rc)| parse_one(cx, rc, &format!("/readinessChecks({i})"), port_names))
        .collect()
}

fn parse_one(cx: &mut Cx, v: &Value, rel: &str, port_names: &BTreeSet<&str>) -> Option<ReadinessCheck> {
    let o = cx.object(v, rel)?;
    let string = |cx: &mut Cx, key: &str, default: &str| match get(o, key) {
        None => default.to_string(),
        Some(v) => cx.string(v, &format!("{rel}/{key}")).unwrap_or_else(|| default.to_string()),
    };
    let name = string(cx, "name", "readinessCheck");
    let protocol = match string(cx, "protocol", "HTTP").as_str() {
        "HTTP" => ReadinessProtocol::Http,
        "HTTPS" => ReadinessProtocol::Https,
        _ => {
            cx.invalid(&format!("{rel}/protocol"), "must be one of HTTP, HTTPS");
            ReadinessProtocol::Http
        }
    };
    let path = string(cx, "path", "/");
    let port_name = string(cx, "portName", "http");
    if !port_names.contains(port_name.as_str()) {
        cx.invalid(rel, format!("readinessCheck's portName '{port_name}' must be defined as a port"));
    }
    let secs = |cx: &mut Cx, key: &str, default: f64| match get(o, key) {
        None => default,
        Some(v) => cx.non_negative(v, &format!("{rel}/{key}")).map(|i| i as f64).unwrap_or(default),
    };
    let interval_seconds = secs(cx, "intervalSeconds", 30.0);
    let timeout_seconds = secs(cx, "timeoutSeconds", 10.0);
    if timeout_seconds >= interval_seconds {
        cx.invalid(rel, "timeoutSeconds must be smaller than intervalSeconds");
    }
    let codes = match get(o, "httpStatusCodesForReady") {
        None => vec![200],
        Some(v) => cx
            .array(v, &format!("{rel}/httpStatusCodesForReady"))
            .map(|a| {
                a.iter()
                    .enumerate()
                    .filter_map(|(j, c)| {
                        let at = format!("{rel}/httpStatusCodesForReady({j})");
                        match cx.integer(c, &at) {
                            Some(n) if (100..600).contains(&n) => Some(n as u16),
                            Some(_) => {
                                cx.invalid(&at, "must be an HTTP status code");
                                None
                            }
                            None => None,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    if codes.is_empty() {
        cx.invalid(&format!("{rel}/httpStatusCodesForReady"), "must not be empty");
    }
    let preserve_last_response = match get(o, "preserveLastResponse") {
        None => false,
        Some(v) => cx.boolean(v, &format!("{rel}/preserveLastResponse")).unwrap_or(false),
    };
    Some(ReadinessCheck {
        name,
        protocol,
        path,
        port_name,
        interval_seconds,
        timeout_seconds,
        http_status_codes_for_ready: codes,
        preserve_last_response,
    })
}

/// The checks in Marathon's shape, every field present.
pub(crate) fn render(checks: &[ReadinessCheck]) -> Value {
    Value::Array(
        checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "protocol": match c.protocol {
                        ReadinessProtocol::Http => "HTTP",
                        ReadinessProtocol::Https => "HTTPS",
                    },
                    "path": c.path,
                    "portName": c.port_name,
                    "intervalSeconds": c.interval_seconds as u64,
                    "timeoutSeconds": c.timeout_seconds as u64,
                    "httpStatusCodesForReady": c.http_status_codes_for_ready,
                    "preserveLastResponse": c.preserve_last_response,
                })
            })
            .collect(),
    )
}

/// `readinessCheckResults` of an app's tasks at its current version that
/// are still alive: one entry per task and check, as the agents reported.
pub fn results(app: &App, state: &ClusterState) -> Vec<Value> {
    if app.spec.readiness_checks.is_empty() {
        return Vec::new();
    }
    state
        .tasks_of(&app.spec.id)
        .filter(|t| t.app_version >= app.last_config_change_at && t.state == TaskState::Running)
        .flat_map(|t| {
            t.readiness.iter().map(move |r| {
                let last = r
                    .last_response
                    .as_ref()
                    .map(|l| json!({"status": l.status, "contentType": l.content_type, "body": l.body}));
                json!({
                    "name": r.name,
                    "taskId": t.id.as_str(),
                    "ready": r.ready,
                    "lastResponse": last,
                    "version": format_time(t.app_version),
                })
            })
        })
        .collect()
}
