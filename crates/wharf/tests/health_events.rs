//! Health events on `GET /v2/events`: a task that turns healthy, then fails
//! its check until the agent kills it, shows up as
//! `health_status_changed_event`, `failed_health_check_event` and
//! `unhealthy_instance_kill_event` with Marathon's payloads, in that order.

mod common;

use common::sse::Stream;
use common::Node;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

/// How long to wait for each next event.
const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_transitions_and_the_unhealthy_kill_are_events() {
    let node = Node::start().await;
    let mut events = Stream::open(
        &node,
        "?event_type=health_status_changed_event&event_type=failed_health_check_event\
         &event_type=unhealthy_instance_kill_event",
    )
    .await;
    let def = json!({
        "id": "/hev", "cmd": "echo ok > ok; exec python3 -m http.server $PORT0",
        "cpus": 0.1, "mem": 64, "instances": 1,
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "portIndex": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "gracePeriodSeconds": 10, "maxConsecutiveFailures": 2}]
    });
    let (s, created) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{created}");

    let up = events.until("healthy", WAIT, |k, v| k == "health_status_changed_event" && v["alive"] == true).await;
    let (_, e) = up.last().expect("event");
    let task = node.wait_running("/hev", 1).await.remove(0);
    let task_id = task["id"].as_str().expect("id").to_string();
    assert_eq!(e["appId"], "/hev");
    assert_eq!(e["taskId"], task_id.as_str());
    assert!(task_id.starts_with(e["instanceId"].as_str().expect("instanceId")), "{e}");
    assert_eq!(e["version"], created["version"]);
    assert!(e["timestamp"].is_string());

    // The health endpoint starts failing: two failures get the task killed.
    std::fs::remove_file(node.sandbox(&task_id).join("ok")).expect("remove ok");
    let down = events.until("the unhealthy kill", WAIT, |k, _| k == "unhealthy_instance_kill_event").await;
    let at = |kind: &str| down.iter().position(|(k, _)| k == kind).unwrap_or_else(|| panic!("no {kind} in {down:#?}"));
    let failed = at("failed_health_check_event");
    let changed = at("health_status_changed_event");
    let kill = down.len() - 1;
    assert!(failed < kill && changed < kill, "{down:#?}");
    let (_, f) = &down[failed];
    assert_eq!(f["taskId"], task_id.as_str());
    assert_eq!(f["appId"], "/hev");
    assert_eq!(f["healthCheck"]["path"], "/ok");
    assert_eq!(f["healthCheck"]["maxConsecutiveFailures"], 2);
    assert_eq!(down[changed].1["alive"], false);
    let (_, k) = &down[kill];
    assert_eq!(k["taskId"], task_id.as_str());
    assert_eq!(k["appId"], "/hev");
    assert_eq!(k["version"], created["version"]);
    assert_eq!(k["host"], task["host"]);
    assert_eq!(k["slaveId"], task["slaveId"]);
    assert!(k["reason"].as_str().is_some_and(|r| r.contains("consecutive health check failures")), "{k}");
    assert!(task_id.starts_with(k["instanceId"].as_str().expect("instanceId")), "{k}");
}
