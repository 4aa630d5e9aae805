//! Health events on `GET /v2/events`: a task that turns healthy, then fails
//! its check until the agent kills it, shows up as
//! `health_status_changed_event`, `failed_health_check_event` and
//! `unhealthy_instance_kill_event` with Marathon's payloads, in that order.

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
        let resp = reqwest::Client::new()
            .get(format!("{}/v2/events{query}", node.addr()))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("open stream");
        assert_eq!(resp.status(), StatusCode::OK);
        Stream { resp, buf: String::new() }
    }

    /// The next event as (type, data); None on timeout.
    async fn next(&mut self, timeout: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut kind, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if kind.is_empty() {
                    continue;
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
            let Some((k, v)) = self.next(Duration::from_secs(40)).await else {
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

    let up = events.until("healthy", |k, v| k == "health_status_changed_event" && v["alive"] == true).await;
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
    let down = events.until("the unhealthy kill", |k, _| k == "unhealthy_instance_kill_event").await;
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
