//! Bad input gets a clear Marathon-style 4xx and stores nothing.

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn paths(v: &Value) -> Vec<String> {
    v["details"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["path"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_definitions_say_why_and_store_nothing() {
    let node = Node::start().await;

    let (s, v) = node.raw(Method::POST, "/v2/apps", "{\"id\": \"/x\", \"cmd\": ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].is_string(), "{v}");

    let (s, v) = node.raw(Method::POST, "/v2/apps", "{\"id\": \"/x\", \"cmd\": \"sleep 1\", \"cpus\": \"many\"}").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "wrong JSON type: {v}");

    // (definition, a path the error must name)
    let cases: Vec<(Value, &str)> = vec![
        (json!({"id": "/both", "cmd": "sleep 1", "args": ["sleep", "1"]}), "/cmd"),
        (json!({"id": "/neg", "cmd": "sleep 1", "cpus": -1}), "/cpus"),
        (json!({"id": "/negmem", "cmd": "sleep 1", "mem": -5}), "/mem"),
        (json!({"id": "/Bad_Id", "cmd": "sleep 1"}), "/id"),
        (json!({"id": "/op", "cmd": "sleep 1", "constraints": [["hostname", "SOMETIMES"]]}), "/constraints(0)"),
        (
            json!({"id": "/dup", "cmd": "sleep 1", "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0, "name": "http"}]}),
            "/portDefinitions",
        ),
        (json!({"id": "/inst", "cmd": "sleep 1", "instances": -1}), "/instances"),
        (json!({"id": "/nothing"}), "/"),
    ];
    for (def, path) in cases {
        let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{def} -> {v}");
        assert_eq!(v["message"], "Object is not valid", "{v}");
        assert!(paths(&v).iter().any(|p| p.starts_with(path)), "{def}: expected a detail at {path}, got {v}");
        for d in v["details"].as_array().expect("details") {
            assert!(d["errors"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
        }
    }
    let apps = node.get("/v2/apps").await;
    assert_eq!(apps["apps"], json!([]), "nothing stored from rejected requests");
    assert_eq!(node.get("/v2/deployments").await, json!([]));

    // Unknown app, unknown task.
    let (s, v) = node.call(Method::GET, "/v2/apps/missing", None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["message"].as_str().is_some_and(|m| m.contains("/missing")), "{v}");
    let (s, _) = node.call(Method::DELETE, "/v2/apps/missing", None).await.expect("delete");
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = node.call(Method::GET, "/v2/apps?force=maybe", None).await.expect("get");
    assert_eq!(s, StatusCode::OK, "unknown params on GET are ignored");
    let (s, v) = node
        .call(Method::POST, "/v2/apps?force=maybe", Some(&json!({"id": "/f", "cmd": "sleep 1"})))
        .await
        .expect("post");
    assert_eq!(s, StatusCode::BAD_REQUEST, "a bad boolean is refused: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_apps_need_force_and_unplaceable_work_waits_in_the_queue() {
    let node = Node::start_with(&["--resources", "cpus:2;mem:1024"]).await;
    let def = json!({"id": "/huge", "cmd": "sleep 100", "cpus": 1.5, "mem": 16, "instances": 2});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    node.wait_running("/huge", 1).await;

    // The second instance cannot fit: queued, and the deployment stays open.
    wait_for("a queue entry", Duration::from_secs(10), || async {
        node.get("/v2/queue").await["queue"]
            .as_array()
            .is_some_and(|q| q.iter().any(|e| e["app"]["id"] == "/huge" && e["count"] == 1))
    })
    .await;
    let deployments = node.get("/v2/deployments").await;
    let dep = deployments[0]["id"].as_str().expect("deployment").to_string();
    assert_eq!(deployments[0]["affectedApps"], json!(["/huge"]));

    // A change while the deployment holds the app: 409 naming it.
    let (s, v) = node.call(Method::PUT, "/v2/apps/huge", Some(&json!({"instances": 1}))).await.expect("put");
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["deployments"][0]["id"], dep.as_str(), "{v}");
    assert_eq!(node.get("/v2/apps/huge").await["app"]["instances"], 2, "nothing changed");

    // POST of an existing id: 409 too.
    let (s, _) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CONFLICT);

    // force=True (any case) overrides.
    let (s, v) = node.call(Method::PUT, "/v2/apps/huge?force=True", Some(&json!({"instances": 1}))).await.expect("put");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the queue to empty", Duration::from_secs(10), || async {
        node.get("/v2/queue").await["queue"].as_array().is_some_and(|q| q.is_empty())
    })
    .await;
    wait_for("deployments to finish", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    node.wait_running("/huge", 1).await;
}
