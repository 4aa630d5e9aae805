//! App version history: every change keeps the whole definition, the list is
//! newest first, one version reads back as it was, and PUT with only a
//! `version` rolls the app back through a new deployment.

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

async fn settled(node: &Node) {
    wait_for("no deployments", Duration::from_secs(20), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;
}

async fn versions(node: &Node) -> Vec<String> {
    let v = node.get("/v2/apps/hist/versions").await;
    v["versions"].as_array().expect("versions").iter().filter_map(|x| x.as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_a_version_and_rollback_restores_it() {
    let node = Node::start().await;
    let def = json!({"id": "/hist", "cmd": "echo v1; exec sleep 1000", "cpus": 0.05, "mem": 16, "instances": 1});
    let (s, created) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{created}");
    node.wait_running("/hist", 1).await;
    settled(&node).await;
    let v1 = created["version"].as_str().expect("version").to_string();
    assert_eq!(versions(&node).await, vec![v1.clone()]);

    // A config change (PATCH), a scale (PUT), a restart: four versions.
    let (s, v) = node
        .call(Method::PATCH, "/v2/apps/hist", Some(&json!({"cmd": "echo v2; exec sleep 1000"})))
        .await
        .expect("patch");
    assert_eq!(s, StatusCode::OK, "{v}");
    node.wait_running("/hist", 1).await;
    settled(&node).await;
    let (s, v) = node.call(Method::PUT, "/v2/apps/hist", Some(&json!({"instances": 2}))).await.expect("scale");
    assert_eq!(s, StatusCode::OK, "{v}");
    node.wait_running("/hist", 2).await;
    settled(&node).await;
    let (s, v) = node.call(Method::POST, "/v2/apps/hist/restart", None).await.expect("restart");
    assert_eq!(s, StatusCode::OK, "{v}");
    let restarted = v["version"].as_str().expect("version").to_string();
    settled(&node).await;

    let list = versions(&node).await;
    assert_eq!(list.len(), 4, "{list:?}");
    assert_eq!(list[0], restarted, "newest first");
    assert_eq!(list[3], v1, "oldest last");
    let mut sorted = list.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(list, sorted);

    // Each version reads back as it was.
    let old = node.get(&format!("/v2/apps/hist/versions/{v1}")).await;
    assert_eq!(old["id"], "/hist");
    assert_eq!(old["cmd"], "echo v1; exec sleep 1000");
    assert_eq!(old["instances"], 1);
    assert_eq!(old["version"], v1.as_str());
    let scaled = node.get(&format!("/v2/apps/hist/versions/{}", list[1])).await;
    assert_eq!(scaled["instances"], 2);
    assert_eq!(scaled["cmd"], "echo v2; exec sleep 1000");
    let (s, _) =
        node.call(Method::GET, "/v2/apps/hist/versions/2001-01-01T00:00:00.000Z", None).await.expect("missing");
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Roll back to v1: a new deployment, a new version, v1's definition.
    let (s, v) = node.call(Method::PUT, "/v2/apps/hist", Some(&json!({"version": v1}))).await.expect("rollback");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["deploymentId"].is_string(), "{v}");
    let rolled = v["version"].as_str().expect("version").to_string();
    assert!(rolled > restarted);
    wait_for("rolled-back tasks", Duration::from_secs(20), || async {
        let running = node.running("/hist").await;
        running.len() == 1
            && running.iter().all(|t| t["version"] == rolled.as_str())
            && node.tasks("/hist").await.len() == 1
    })
    .await;
    let app: Value = node.get("/v2/apps/hist").await["app"].clone();
    assert_eq!(app["cmd"], "echo v1; exec sleep 1000");
    assert_eq!(app["instances"], 1);
    assert_eq!(versions(&node).await.len(), 5);
    let out = std::fs::read_to_string(
        node.sandbox(node.running("/hist").await[0]["id"].as_str().expect("id")).join("stdout"),
    )
    .unwrap_or_default();
    assert!(out.contains("v1"), "the rolled-back task runs v1's command: {out}");

    // Rolling back to a version that never existed is a 404 and changes nothing.
    let (s, _) = node
        .call(Method::PUT, "/v2/apps/hist", Some(&json!({"version": "2001-01-01T00:00:00.000Z"})))
        .await
        .expect("bad rollback");
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(versions(&node).await.len(), 5);
}
