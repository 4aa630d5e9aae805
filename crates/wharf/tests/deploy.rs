//! Changing an app replaces its tasks; restart does too; reads embed what
//! clients ask for.

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn ids(tasks: &[Value]) -> BTreeSet<String> {
    tasks.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_and_restart_replace_every_task() {
    let node = Node::start().await;
    let def = json!({"id": "/svc", "cmd": "echo v1; exec sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2});
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    let first = ids(&node.wait_running("/svc", 2).await);
    let v1 = node.get("/v2/apps/svc").await["app"]["version"].clone();
    wait_for("deployment", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;

    // PATCH the command: a new version, all tasks replaced.
    let (s, v) = node
        .call(Method::PATCH, "/v2/apps/svc", Some(&json!({"cmd": "echo v2; exec sleep 1000"})))
        .await
        .expect("patch");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("new tasks", Duration::from_secs(20), || async {
        let t = node.running("/svc").await;
        t.len() == 2 && ids(&t).is_disjoint(&first) && node.tasks("/svc").await.len() == 2
    })
    .await;
    let app = node.get("/v2/apps/svc").await["app"].clone();
    assert_ne!(app["version"], v1);
    assert_eq!(app["cmd"], "echo v2; exec sleep 1000");
    assert_eq!(app["versionInfo"]["lastConfigChangeAt"], app["version"]);
    let second = ids(&node.running("/svc").await);
    for t in node.running("/svc").await {
        assert_eq!(t["version"], app["version"], "tasks run the new version");
    }

    // Scaling is not a config change: existing tasks stay.
    node.call(Method::PUT, "/v2/apps/svc?force=true", Some(&json!({"instances": 3}))).await.expect("scale");
    let third = ids(&node.wait_running("/svc", 3).await);
    assert!(second.is_subset(&third));
    let app = node.get("/v2/apps/svc").await["app"].clone();
    assert_ne!(app["versionInfo"]["lastScalingAt"], app["versionInfo"]["lastConfigChangeAt"]);

    // Restart: every task replaced, same spec.
    wait_for("deployment", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;
    let (s, v) = node.call(Method::POST, "/v2/apps/svc/restart", None).await.expect("restart");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["deploymentId"].is_string());
    wait_for("restarted tasks", Duration::from_secs(20), || async {
        let t = node.running("/svc").await;
        t.len() == 3 && ids(&t).is_disjoint(&third) && node.tasks("/svc").await.len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeds_filters_and_shapes() {
    let node = Node::start().await;
    for (id, label) in [("/a/one", "x"), ("/a/two", "y"), ("/b", "x")] {
        let def = json!({"id": id, "args": ["sleep", "1000"], "cpus": 0.05, "mem": 16, "labels": {"team": label}});
        let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    for id in ["/a/one", "/a/two", "/b"] {
        node.wait_running(id, 1).await;
    }
    let all = node.get("/v2/apps?embed=apps.tasks&embed=apps.counts").await;
    let apps = all["apps"].as_array().expect("apps");
    assert_eq!(apps.len(), 3);
    for a in apps {
        assert_eq!(a["tasks"].as_array().map(Vec::len), Some(1), "{a}");
        assert_eq!(a["tasksRunning"], 1);
        assert!(a["ports"][0].as_u64().is_some_and(|p| (10000..=20000).contains(&p)), "service port assigned: {a}");
    }
    let filtered = node.get("/v2/apps?id=/a/").await;
    assert_eq!(filtered["apps"].as_array().map(Vec::len), Some(2));
    let labelled = node.get("/v2/apps?label=team==x").await;
    assert_eq!(labelled["apps"].as_array().map(Vec::len), Some(2));
    let plain = node.get("/v2/apps").await;
    assert!(plain["apps"][0].get("tasks").is_none(), "tasks only when embedded");

    let tasks = node.get("/v2/tasks?status=running").await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(3));
    let t = &tasks["tasks"][0];
    for field in
        ["id", "appId", "host", "ports", "servicePorts", "slaveId", "stagedAt", "startedAt", "version", "state"]
    {
        assert!(t.get(field).is_some(), "task field {field}: {t}");
    }
    let info = node.get("/v2/info").await;
    assert_eq!(info["name"], "marathon");
    assert_eq!(info["elected"], true);
    assert_eq!(node.get("/v2/leader").await["leader"], format!("127.0.0.1:{}", node.http));
    let r = reqwest::get(format!("{}/ping", node.addr())).await.expect("ping");
    assert_eq!(r.text().await.expect("text"), "pong");
}

/// `--service-ports` (here from its `WHARF_SERVICE_PORTS` variable) bounds
/// the service ports: assigned ones come from the range, an asked-for one
/// outside it and one too many are refused with 422 naming port and range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ports_come_from_the_service_ports_range() {
    let node = Node::start_with_env(&[], &[("WHARF_SERVICE_PORTS", "19990-19991")]).await;
    // The leader writes the range into the replicated settings after it is elected.
    wait_for("the range in /v2/info", Duration::from_secs(20), || async {
        let info = node.get("/v2/info").await;
        info["marathon_config"]["local_port_min"] == 19990 && info["marathon_config"]["local_port_max"] == 19991
    })
    .await;
    let def =
        |id: &str, ports: Value| json!({"id": id, "args": ["sleep", "1000"], "instances": 0, "portDefinitions": ports});
    let (s, v) =
        node.call(Method::POST, "/v2/apps", Some(&def("/two", json!([{"port": 0}, {"port": 0}])))).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(node.get("/v2/apps/two").await["app"]["ports"], json!([19990, 19991]));
    let (s, v) =
        node.call(Method::POST, "/v2/apps", Some(&def("/outside", json!([{"port": 10000}])))).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains("10000") && msg.contains("19990-19991"), "{v}");
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def("/more", json!([{"port": 0}])))).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap_or_default().contains("19990-19991"), "{v}");
    let (s, v) = node.call(Method::GET, "/v2/apps/outside", None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing stored: {v}");
}
