//! `GET /v2/events`: the server-sent event stream shows a deployment's
//! events in order with Marathon's payloads, and `event_type=` filters.

mod common;

use common::sse::Stream;
use common::Node;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// How long to wait for each next event.
const WAIT: Duration = Duration::from_secs(30);

fn position(events: &[(String, Value)], f: impl Fn(&str, &Value) -> bool) -> usize {
    events.iter().position(|(k, v)| f(k, v)).unwrap_or_else(|| panic!("event missing in {events:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_events_arrive_in_order_and_filter() {
    let node = Node::start().await;
    let mut all = Stream::open(&node, "").await;
    let (kind, attached) = all.next(Duration::from_secs(10)).await.expect("attached");
    assert_eq!(kind, "event_stream_attached");
    assert_eq!(attached["eventType"], "event_stream_attached");
    assert!(attached["timestamp"].is_string());
    let mut status_only = Stream::open(&node, "?event_type=status_update_event").await;
    let mut two_kinds = Stream::open(&node, "?event_type=deployment_info&event_type=app_terminated_event").await;

    let def = json!({"id": "/ev", "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16, "instances": 1});
    let (s, created) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let dep_id = created["deployments"][0]["id"].as_str().expect("deployment id").to_string();
    let events =
        all.until("deployment_success", WAIT, |k, v| k == "deployment_success" && v["id"] == dep_id.as_str()).await;

    let post = position(&events, |k, v| k == "api_post_event" && v["appDefinition"]["id"] == "/ev");
    let info = position(&events, |k, v| k == "deployment_info" && v["plan"]["id"] == dep_id.as_str());
    let running = position(&events, |k, v| k == "status_update_event" && v["taskStatus"] == "TASK_RUNNING");
    let success = events.len() - 1;
    assert!(post < info && info < running && running < success, "order: {events:#?}");

    let (_, p) = &events[post];
    assert_eq!(p["uri"], "/v2/apps/ev");
    assert_eq!(p["appDefinition"]["cmd"], "exec sleep 1000");
    let (_, i) = &events[info];
    assert_eq!(i["plan"]["steps"][0]["actions"][0]["action"], "StartApplication");
    assert!(i["currentStep"]["actions"].is_array());
    let (_, r) = &events[running];
    let task = node.wait_running("/ev", 1).await.remove(0);
    assert_eq!(r["taskId"], task["id"]);
    assert_eq!(r["appId"], "/ev");
    assert_eq!(r["host"], task["host"]);
    assert_eq!(r["ports"], task["ports"]);
    assert_eq!(r["version"], created["version"]);
    assert_eq!(r["slaveId"], task["slaveId"]);
    for (k, v) in &events {
        assert_eq!(v["eventType"], k.as_str());
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    }
    assert!(events.iter().any(|(k, _)| k == "deployment_step_success"));

    // Filtered: only status updates, no attach event.
    let filtered = status_only.until("TASK_RUNNING", WAIT, |_, v| v["taskStatus"] == "TASK_RUNNING").await;
    assert!(filtered.iter().all(|(k, _)| k == "status_update_event"), "{filtered:#?}");

    // Deleting the app: killed task, app_terminated_event, and the repeated filter.
    let (s, _) = node.call(Method::DELETE, "/v2/apps/ev", None).await.expect("delete");
    assert_eq!(s, StatusCode::OK);
    let gone = all.until("app_terminated_event", WAIT, |k, v| k == "app_terminated_event" && v["appId"] == "/ev").await;
    assert!(gone.iter().any(|(k, v)| k == "status_update_event" && v["taskStatus"] == "TASK_KILLED"), "{gone:#?}");
    // The leader forgetting the killed task is an event too (the UI reads
    // the app's lastTaskFailure and tasks again on it).
    let killed = gone.iter().position(|(k, v)| k == "status_update_event" && v["taskStatus"] == "TASK_KILLED");
    let expunged = gone.iter().position(|(k, v)| {
        k == "instance_changed_event"
            && v["condition"] == "Killed"
            && v["runSpecId"] == "/ev"
            && v["instanceId"].is_string()
    });
    assert!(expunged.is_some() && expunged > killed, "instance_changed_event after the kill: {gone:#?}");
    let picked = two_kinds.until("app_terminated_event", WAIT, |k, _| k == "app_terminated_event").await;
    assert!(picked.iter().all(|(k, _)| k == "deployment_info" || k == "app_terminated_event"), "{picked:#?}");
    assert!(picked.iter().any(|(k, _)| k == "deployment_info"));
}
