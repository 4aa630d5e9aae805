//! Health checks run by the agent, seen through Marathon's API: healthy
//! counts, rolling upgrades that keep minimumHealthCapacity, replacement of
//! tasks that turn unhealthy, and deployments that never get healthy.

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn healthy(tasks: &[Value]) -> usize {
    tasks
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter(|t| {
            t["healthCheckResults"].as_array().is_some_and(|r| !r.is_empty() && r.iter().all(|c| c["alive"] == true))
        })
        .count()
}

fn web(id: &str, path: &str, extra: Value) -> Value {
    let mut def = json!({
        "id": id,
        "cmd": "echo ok > ok; exec python3 -m http.server $PORT0",
        "cpus": 0.1, "mem": 64, "instances": 3,
        "healthChecks": [{"protocol": "HTTP", "path": path, "portIndex": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "gracePeriodSeconds": 10, "maxConsecutiveFailures": 2}]
    });
    if let (Some(d), Some(e)) = (def.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            d.insert(k.clone(), v.clone());
        }
    }
    def
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_keeps_minimum_health_capacity() {
    let node = Node::start().await;
    let def = web("/roll", "/ok", json!({"upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}));
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_for("3 healthy tasks", Duration::from_secs(30), || async { healthy(&node.tasks("/roll").await) == 3 }).await;
    let app = node.get("/v2/apps/roll").await["app"].clone();
    assert_eq!(app["tasksHealthy"], 3);
    let t = &node.tasks("/roll").await[0];
    assert_eq!(t["healthCheckResults"][0]["alive"], true, "{t}");
    assert!(t["healthCheckResults"][0]["firstSuccess"].is_string(), "{t}");
    wait_for("first deployment done", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;

    let (s, v) = node.call(Method::PATCH, "/v2/apps/roll", Some(&json!({"env": {"V": "2"}}))).await.expect("patch");
    assert_eq!(s, StatusCode::OK, "{v}");
    let new_version = node.get("/v2/apps/roll").await["app"]["version"].clone();
    let min = 2; // ceil(3 * 0.5)
    let start = Instant::now();
    let mut lowest = usize::MAX;
    let mut samples = 0;
    loop {
        let tasks = node.tasks("/roll").await;
        let h = healthy(&tasks);
        lowest = lowest.min(h);
        samples += 1;
        let done = tasks.len() == 3 && h == 3 && tasks.iter().all(|t| t["version"] == new_version);
        if done && node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "upgrade did not finish: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lowest >= min, "healthy tasks dropped to {lowest} (< {min}) during the upgrade ({samples} samples)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_turns_unhealthy_is_replaced() {
    let node = Node::start().await;
    let def = web("/sick", "/ok", json!({"instances": 1}));
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    wait_for("healthy", Duration::from_secs(30), || async { healthy(&node.tasks("/sick").await) == 1 }).await;
    let first = node.tasks("/sick").await[0]["id"].as_str().expect("id").to_string();
    // Its health endpoint starts failing.
    std::fs::remove_file(node.sandbox(&first).join("ok")).expect("remove ok");
    wait_for("a healthy replacement", Duration::from_secs(40), || async {
        let t = node.tasks("/sick").await;
        healthy(&t) == 1 && t.len() == 1 && t[0]["id"] != first.as_str()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_that_never_gets_healthy_waits_visibly_and_rolls_back() {
    let node = Node::start().await;
    let good = web("/rb", "/ok", json!({"instances": 1}));
    node.call(Method::POST, "/v2/apps", Some(&good)).await.expect("post");
    wait_for("healthy", Duration::from_secs(30), || async { healthy(&node.tasks("/rb").await) == 1 }).await;
    wait_for("deployment done", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    let good_version = node.get("/v2/apps/rb").await["app"]["version"].clone();

    // A new version whose check can never pass (and never kills).
    let bad = json!({"healthChecks": [{"protocol": "HTTP", "path": "/missing", "portIndex": 0, "intervalSeconds": 1,
                                         "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0}]});
    let (s, v) = node.call(Method::PUT, "/v2/apps/rb", Some(&bad)).await.expect("put");
    assert_eq!(s, StatusCode::OK, "{v}");
    let dep = v["deploymentId"].as_str().expect("deployment").to_string();
    wait_for("the new task reported unhealthy", Duration::from_secs(20), || async {
        node.tasks("/rb").await.iter().any(|t| t["healthCheckResults"][0]["alive"] == false)
    })
    .await;
    // Visible: still in /v2/deployments, and the old healthy task keeps serving.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deps = node.get("/v2/deployments").await;
    assert!(deps.as_array().is_some_and(|a| a.iter().any(|d| d["id"] == dep.as_str())), "{deps}");
    assert_eq!(healthy(&node.tasks("/rb").await), 1, "the old version keeps running");
    let app = node.get("/v2/apps/rb").await["app"].clone();
    assert_eq!(app["tasksUnhealthy"], 1, "{app}");

    // Roll back: DELETE the deployment.
    let (s, v) = node.call(Method::DELETE, &format!("/v2/deployments/{dep}"), None).await.expect("rollback");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("back to one healthy task of the old definition", Duration::from_secs(30), || async {
        let t = node.tasks("/rb").await;
        t.len() == 1 && healthy(&t) == 1
    })
    .await;
    let app = node.get("/v2/apps/rb").await["app"].clone();
    assert_eq!(app["healthChecks"][0]["path"], "/ok", "{app}");
    assert_ne!(app["version"], good_version, "a rollback is a new version");
    wait_for("no deployment left", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;
}
