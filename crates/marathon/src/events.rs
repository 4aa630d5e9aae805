//! Marathon's event bus payloads (`GET /v2/events`): every event is a JSON
//! object with `eventType` and `timestamp`, in the shapes of
//! `api-examples/events.txt` and Marathon's event classes. Pure: the caller
//! passes `now` and decides which events happened.

use crate::render::{health_check_wire, instance_id, render_deployment, render_task};
use crate::time::format_time;
use model::{AppId, ClusterState, Deployment, DeploymentAction, Task, UnixMillis};
use serde_json::{json, Map, Value};

/// One event: its type (the SSE `event:` line) and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct MarathonEvent {
    pub event_type: &'static str,
    pub body: Value,
}

fn event(event_type: &'static str, fields: Value, now: UnixMillis) -> MarathonEvent {
    let mut m = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.insert("eventType".into(), json!(event_type));
    m.insert("timestamp".into(), json!(format_time(now)));
    MarathonEvent { event_type, body: Value::Object(m) }
}

/// Sent first on every new stream.
pub fn stream_attached(remote_address: &str, now: UnixMillis) -> MarathonEvent {
    event("event_stream_attached", json!({"remoteAddress": remote_address}), now)
}

/// An app was created or changed through the API; `app` is its rendered definition.
pub fn api_post(client_ip: &str, app: Value, now: UnixMillis) -> MarathonEvent {
    let uri = format!("/v2/apps{}", app["id"].as_str().unwrap_or_default());
    event("api_post_event", json!({"clientIp": client_ip, "uri": uri, "appDefinition": app}), now)
}

/// A task changed state.
pub fn status_update(task: &Task, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    let t = render_task(task, state);
    event(
        "status_update_event",
        json!({
            "slaveId": t["slaveId"],
            "taskId": t["id"],
            "taskStatus": task.state.marathon_name(),
            "message": task.message.clone().unwrap_or_default(),
            "appId": t["appId"],
            "host": t["host"],
            "ipAddresses": t["ipAddresses"],
            "ports": t["ports"],
            "version": t["version"],
        }),
        now,
    )
}

/// An instance left the cluster's books (the leader expunged the ended
/// task): Marathon's `instance_changed_event`, with the condition it ended
/// in.
pub fn instance_gone(task: &Task, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    let t = render_task(task, state);
    event(
        "instance_changed_event",
        json!({
            "instanceId": task.id.instance_id(),
            "condition": condition(task.state),
            "runSpecId": t["appId"],
            "agentId": t["slaveId"],
            "host": t["host"],
            "runSpecVersion": t["version"],
        }),
        now,
    )
}

/// Marathon's instance condition for a task state.
fn condition(s: model::TaskState) -> &'static str {
    use model::TaskState::*;
    match s {
        Staging => "Staging",
        Starting => "Starting",
        Running => "Running",
        Killing => "Killing",
        Finished => "Finished",
        Failed => "Failed",
        Killed => "Killed",
        Lost => "Gone",
        Unreachable => "Unreachable",
        Error => "Error",
    }
}

/// A task's health verdict changed (`alive`).
pub fn health_status_changed(task: &Task, alive: bool, now: UnixMillis) -> MarathonEvent {
    event(
        "health_status_changed_event",
        json!({
            "appId": task.app_id.as_str(),
            "instanceId": instance_id(task),
            "taskId": task.id.as_str(),
            "version": format_time(task.app_version),
            "alive": alive,
        }),
        now,
    )
}

/// A task turned unhealthy; `healthCheck` is the app's (first) check.
pub fn failed_health_check(task: &Task, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    let check = state
        .apps
        .get(&task.app_id)
        .and_then(|a| a.spec.health_checks.first())
        .map(|h| Value::Object(health_check_wire(h)))
        .unwrap_or(Value::Null);
    event(
        "failed_health_check_event",
        json!({
            "appId": task.app_id.as_str(),
            "taskId": task.id.as_str(),
            "instanceId": instance_id(task),
            "healthCheck": check,
        }),
        now,
    )
}

/// The agent killed a task that failed its health checks too often.
pub fn unhealthy_instance_kill(task: &Task, reason: &str, now: UnixMillis) -> MarathonEvent {
    event(
        "unhealthy_instance_kill_event",
        json!({
            "appId": task.app_id.as_str(),
            "taskId": task.id.as_str(),
            "instanceId": instance_id(task),
            "version": format_time(task.app_version),
            "reason": reason,
            "host": task.host,
            "slaveId": task.node.to_string(),
        }),
        now,
    )
}

/// The deployment plan as events carry it: Marathon's `DeploymentPlan`
/// (`id`, `original`, `target`, `steps`, `version`) and nothing else, since
/// marathon-python builds its plan object from every field.
fn plan(d: &Deployment, state: &ClusterState) -> Value {
    let r = render_deployment(d, state);
    json!({
        "id": r["id"],
        "original": plan_group(d, state, false),
        "target": plan_group(d, state, true),
        "steps": r["steps"],
        "version": r["version"],
    })
}

/// A root group with the deployment's apps as they were before it
/// (`target` false) or as it makes them (a stopped app is gone). Marathon sends the whole tree; Wharf
/// sends the apps the plan touches, from their stored versions.
fn plan_group(d: &Deployment, state: &ClusterState, target: bool) -> Value {
    let apps: Vec<Value> = d
        .affected_apps
        .iter()
        .filter_map(|id| {
            let stopped = d
                .steps
                .iter()
                .flat_map(|s| &s.actions)
                .any(|(a, app)| app == id && *a == DeploymentAction::StopApplication);
            if target && stopped {
                return None;
            }
            let versions = state.app_versions.get(id)?;
            let v = if target {
                versions.iter().filter(|v| v.version <= d.version).max_by_key(|v| v.version)
            } else {
                versions.iter().filter(|v| v.version < d.version).max_by_key(|v| v.version)
            };
            v.map(crate::history::render_app_version)
        })
        .collect();
    json!({
        "id": "/",
        "apps": apps,
        "groups": [],
        "pods": [],
        "dependencies": [],
        "version": format_time(d.version),
    })
}

fn current_step(d: &Deployment, state: &ClusterState) -> Value {
    let r = render_deployment(d, state);
    json!({"actions": r["currentActions"]})
}

/// A deployment started.
pub fn deployment_info(d: &Deployment, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    event("deployment_info", json!({"plan": plan(d, state), "currentStep": current_step(d, state)}), now)
}

/// The last step of a deployment finished (Wharf finishes steps together).
pub fn deployment_step_success(d: &Deployment, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    event("deployment_step_success", json!({"plan": plan(d, state), "currentStep": current_step(d, state)}), now)
}

pub fn deployment_success(d: &Deployment, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    event("deployment_success", json!({"id": d.id.0, "plan": plan(d, state)}), now)
}

/// The current step of a deployment that is cancelled did not finish.
pub fn deployment_step_failure(d: &Deployment, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    event("deployment_step_failure", json!({"plan": plan(d, state), "currentStep": current_step(d, state)}), now)
}

/// A deployment ended without reaching its target (cancelled or replaced).
pub fn deployment_failed(d: &Deployment, state: &ClusterState, now: UnixMillis) -> MarathonEvent {
    event("deployment_failed", json!({"id": d.id.0, "plan": plan(d, state)}), now)
}

/// The group tree changed to `version` (sent when its deployment succeeds).
pub fn group_change_success(group: &AppId, version: UnixMillis, now: UnixMillis) -> MarathonEvent {
    event("group_change_success", json!({"groupId": group.as_str(), "version": format_time(version)}), now)
}

/// An app was removed.
pub fn app_terminated(app: &AppId, now: UnixMillis) -> MarathonEvent {
    event("app_terminated_event", json!({"appId": app.as_str()}), now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_type_and_timestamp() {
        let now = UnixMillis(1_443_617_070_061);
        let e = stream_attached("127.0.0.1", now);
        assert_eq!(
            e.body,
            json!({"remoteAddress": "127.0.0.1", "eventType": "event_stream_attached", "timestamp": "2015-09-30T12:44:30.061Z"})
        );
        let a = app_terminated(&AppId::parse("/x").expect("id"), now);
        assert_eq!(a.event_type, "app_terminated_event");
        assert_eq!(a.body["appId"], "/x");
        let p = api_post("", json!({"id": "/x"}), now);
        assert_eq!(p.body["uri"], "/v2/apps/x");
    }
}
