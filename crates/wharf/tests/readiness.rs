//! `readinessChecks` gate deployments (Marathon semantics): a running task
//! counts only once its readiness check has passed, `/v2/deployments` shows
//! the results meanwhile, and a rolling upgrade keeps the old task until the
//! new one is ready.

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

async fn deployments(node: &Node) -> Vec<Value> {
    node.get("/v2/deployments").await.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_hold_deployments_until_they_pass() {
    let node = Node::start().await;
    let def = json!({
        "id": "/rdy", "cmd": "exec python3 -m http.server $PORT0",
        "cpus": 0.1, "mem": 64, "instances": 1,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "readinessChecks": [{"name": "ready", "protocol": "HTTP", "path": "/ready", "portName": "http",
                             "intervalSeconds": 2, "timeoutSeconds": 1, "preserveLastResponse": true}]
    });
    let (s, created) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["readinessChecks"][0]["httpStatusCodesForReady"], json!([200]));
    let dep = created["deployments"][0]["id"].as_str().expect("deployment").to_string();
    let first = node.wait_running("/rdy", 1).await.remove(0);
    let first_id = first["id"].as_str().expect("id").to_string();

    // Running but not ready: the deployment waits and shows why.
    wait_for("a not-ready result", Duration::from_secs(20), || async {
        deployments(&node).await.iter().any(|d| {
            let r = &d["currentActions"][0]["readinessCheckResults"][0];
            d["id"] == dep.as_str() && r["ready"] == false && r["lastResponse"]["status"] == 404
        })
    })
    .await;
    let d = deployments(&node).await.into_iter().find(|d| d["id"] == dep.as_str()).expect("deployment");
    let r = &d["currentActions"][0]["readinessCheckResults"][0];
    assert_eq!(r["taskId"], first_id.as_str(), "{d}");
    assert_eq!(r["name"], "ready");

    // The endpoint turns ready: the deployment finishes.
    std::fs::write(node.sandbox(&first_id).join("ready"), "yes").expect("write ready");
    wait_for("the deployment to finish", Duration::from_secs(20), || async { deployments(&node).await.is_empty() })
        .await;
    let app = node.get("/v2/apps/rdy?embed=apps.readiness").await["app"].clone();
    assert_eq!(app["readinessCheckResults"][0]["ready"], true, "{app}");
    assert_eq!(app["readinessCheckResults"][0]["lastResponse"]["body"], "yes", "{app}");

    // A new version: the old task stays until the new one is ready.
    let (s, v) = node.call(Method::PATCH, "/v2/apps/rdy", Some(&json!({"env": {"V": "2"}}))).await.expect("patch");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the new task running", Duration::from_secs(20), || async {
        node.running("/rdy").await.iter().any(|t| t["id"] != first_id.as_str())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running = node.running("/rdy").await;
    assert_eq!(running.len(), 2, "old and new both run while the new one is not ready: {running:?}");
    assert_eq!(deployments(&node).await.len(), 1);
    let new_id = running.iter().find(|t| t["id"] != first_id.as_str()).and_then(|t| t["id"].as_str()).expect("new");
    std::fs::write(node.sandbox(new_id).join("ready"), "yes").expect("write ready");
    wait_for("the old task replaced", Duration::from_secs(30), || async {
        let r = node.running("/rdy").await;
        r.len() == 1 && r[0]["id"] == new_id && deployments(&node).await.is_empty()
    })
    .await;
}
