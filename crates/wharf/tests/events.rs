//! `GET /v2/events`: the server-sent event stream shows a deployment's
//! events in order with Marathon's payloads, and `event_type=` filters.

mod common;

use common::Node;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A reader of one SSE response.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(node: &Node, query: &str) -> Stream {
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("{}/v2/events{query}", node.addr()))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("open stream");
        assert_eq!(resp.status(), StatusCode::OK);
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Stream { resp, buf: String::new() }
    }

    /// The next event as (type, data); None on timeout.
    async fn next(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if kind.is_empty() {
                    continue; // keep-alive comment
                }
                return Some((kind, serde_json::from_str(&data).expect("event data is JSON")));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Events until `stop` holds for one (included).
    async fn until(&mut self, what: &str, stop: impl Fn(&str, &Value) -> bool) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let Some((k, v)) = self.next(Duration::from_secs(30)).await else {
                panic!("no {what} in {seen:#?}");
            };
            let done = stop(&k, &v);
            seen.push((k, v));
            if done {
                return seen;
            }
        }
    }
}

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
    let events = all.until("deployment_success", |k, v| k == "deployment_success" && v["id"] == dep_id.as_str()).await;

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
    let filtered = status_only.until("TASK_RUNNING", |_, v| v["taskStatus"] == "TASK_RUNNING").await;
    assert!(filtered.iter().all(|(k, _)| k == "status_update_event"), "{filtered:#?}");

    // Deleting the app: killed task, app_terminated_event, and the repeated filter.
    let (s, _) = node.call(Method::DELETE, "/v2/apps/ev", None).await.expect("delete");
    assert_eq!(s, StatusCode::OK);
    let gone = all.until("app_terminated_event", |k, v| k == "app_terminated_event" && v["appId"] == "/ev").await;
    assert!(gone.iter().any(|(k, v)| k == "status_update_event" && v["taskStatus"] == "TASK_KILLED"), "{gone:#?}");
    let picked = two_kinds.until("app_terminated_event", |k, _| k == "app_terminated_event").await;
    assert!(picked.iter().all(|(k, _)| k == "deployment_info" || k == "app_terminated_event"), "{picked:#?}");
    assert!(picked.iter().any(|(k, _)| k == "deployment_info"));
}
