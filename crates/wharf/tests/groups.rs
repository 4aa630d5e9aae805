//! `/v2/groups`: the tree derived from app ids, group create/update/scale/
//! delete as one deployment, dry runs, and dependency-ordered steps.

mod common;

use common::{reference_dir, wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

fn fixture(path: &str) -> Value {
    let p = reference_dir().join("marathon").join(path);
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
}

async fn settled(node: &Node) {
    wait_for("no deployments", Duration::from_secs(30), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;
}

fn app_ids(group: &Value) -> Vec<String> {
    group["apps"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lifecycle_with_the_sleep_group_fixture() {
    let node = Node::start().await;
    let (s, v) = node
        .call(Method::POST, "/v2/groups", Some(&fixture("system-tests/groups/sleep-group.json")))
        .await
        .expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["deploymentId"].is_string() && v["version"].is_string(), "{v}");
    node.wait_running("/sleep-group/sleep/goodnight-1", 1).await;
    node.wait_running("/sleep-group/sleep/goodnight-2", 1).await;
    settled(&node).await;

    // The tree: / > /sleep-group > /sleep-group/sleep > two apps.
    let root = node.get("/v2/groups").await;
    assert_eq!(root["id"], "/");
    assert_eq!(root["groups"][0]["id"], "/sleep-group");
    let sleep = &root["groups"][0]["groups"][0];
    assert_eq!(sleep["id"], "/sleep-group/sleep");
    assert_eq!(app_ids(sleep), ["/sleep-group/sleep/goodnight-1", "/sleep-group/sleep/goodnight-2"]);
    assert!(sleep["dependencies"].is_array() && sleep["version"].is_string(), "{sleep}");
    let one = node.get("/v2/groups/sleep-group/sleep").await;
    assert_eq!(app_ids(&one).len(), 2);
    let apps_only = node.get("/v2/groups/sleep-group?embed=group.apps").await;
    assert!(apps_only.get("groups").is_none(), "{apps_only}");
    let (s, _) = node.call(Method::GET, "/v2/groups/nope", None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = node
        .call(Method::POST, "/v2/groups", Some(&fixture("system-tests/groups/sleep-group.json")))
        .await
        .expect("again");
    assert_eq!(s, StatusCode::CONFLICT, "{v}");

    // scaleBy: a dry run shows the plan and changes nothing; then for real.
    let (s, plan) =
        node.call(Method::PUT, "/v2/groups/sleep-group?dryRun=true", Some(&json!({"scaleBy": 2}))).await.expect("dry");
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["steps"][0]["actions"].as_array().map(Vec::len), Some(2), "{plan}");
    assert_eq!(plan["steps"][0]["actions"][0]["action"], "ScaleApplication");
    assert_eq!(node.get("/v2/apps/sleep-group/sleep/goodnight-1").await["app"]["instances"], 1);
    let (s, v) = node.call(Method::PUT, "/v2/groups/sleep-group", Some(&json!({"scaleBy": 2}))).await.expect("scale");
    assert_eq!(s, StatusCode::OK, "{v}");
    node.wait_running("/sleep-group/sleep/goodnight-1", 2).await;
    node.wait_running("/sleep-group/sleep/goodnight-2", 2).await;
    settled(&node).await;

    // PUT without goodnight-2: it is removed.
    let mut def = fixture("system-tests/groups/sleep-group.json");
    def["groups"][0]["apps"].as_array_mut().expect("apps").truncate(1);
    let (s, v) = node.call(Method::PUT, "/v2/groups/sleep-group", Some(&def)).await.expect("put");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("goodnight-2 removed", Duration::from_secs(20), || async {
        node.call(Method::GET, "/v2/apps/sleep-group/sleep/goodnight-2", None).await.is_ok_and(|(s, _)| s == 404)
    })
    .await;
    node.wait_running("/sleep-group/sleep/goodnight-1", 1).await;

    // DELETE removes every app below.
    let (s, v) = node.call(Method::DELETE, "/v2/groups/sleep-group", None).await.expect("delete");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("group gone", Duration::from_secs(20), || async {
        node.call(Method::GET, "/v2/groups/sleep-group", None).await.is_ok_and(|(s, _)| s == 404)
    })
    .await;
    assert!(node.get("/v2/apps").await["apps"].as_array().is_some_and(|a| a.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_order_steps_and_are_kept() {
    let node = Node::start().await;
    let def = json!({
        "id": "/shop",
        "groups": [
            {"id": "db", "apps": [{"id": "pg", "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16}]},
            {"id": "front", "dependencies": ["/shop/api"],
             "apps": [{"id": "web", "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16}]}
        ],
        "apps": [{"id": "api", "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16, "dependencies": ["db"]}]
    });
    let (s, plan) = node.call(Method::POST, "/v2/groups?dryRun=true", Some(&def)).await.expect("dry");
    assert!(s.is_success(), "{plan}");
    let steps: Vec<Vec<(String, String)>> = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|st| {
            st["actions"]
                .as_array()
                .expect("actions")
                .iter()
                .map(|a| (a["action"].as_str().unwrap_or("").to_string(), a["app"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .collect();
    let step_of = |app: &str| steps.iter().position(|s| s.iter().any(|(a, id)| a == "ScaleApplication" && id == app));
    let (pg, api, web) = (step_of("/shop/db/pg"), step_of("/shop/api"), step_of("/shop/front/web"));
    assert!(pg < api && api < web, "dependency order: {steps:?}");
    assert!(node.get("/v2/apps").await["apps"].as_array().is_some_and(|a| a.is_empty()), "dry run stores nothing");

    let (s, v) = node.call(Method::POST, "/v2/groups", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for app in ["/shop/db/pg", "/shop/api", "/shop/front/web"] {
        node.wait_running(app, 1).await;
    }
    let front = node.get("/v2/groups/shop/front").await;
    assert_eq!(front["dependencies"], json!(["/shop/api"]));
    assert_eq!(node.get("/v2/apps/shop/api").await["app"]["dependencies"], json!(["/shop/db"]));

    // A cycle is refused.
    let cyclic = json!({"id": "/cyc", "apps": [
        {"id": "a", "cmd": "sleep 1", "dependencies": ["b"]}, {"id": "b", "cmd": "sleep 1", "dependencies": ["a"]}]});
    let (s, v) = node.call(Method::POST, "/v2/groups", Some(&cyclic)).await.expect("cyclic");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // A foreign app id is refused with Marathon's hint.
    let foreign = json!({"id": "/group", "apps": [{"id": "/app", "cmd": "sleep 1"}]});
    let (s, v) = node.call(Method::POST, "/v2/groups", Some(&foreign)).await.expect("foreign");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"][0]["path"], "/apps(0)/id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_group_is_accepted() {
    let node = Node::start().await;
    let (s, v) = node.call(Method::POST, "/v2/groups", Some(&fixture("benchmark/155_100.json"))).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let g = node.get("/v2/groups/cudcos?embed=group.apps&embed=group.groups").await;
    fn count(g: &Value) -> usize {
        app_ids(g).len() + g["groups"].as_array().map(|gs| gs.iter().map(count).sum()).unwrap_or(0)
    }
    assert_eq!(count(&g), 100);
}
