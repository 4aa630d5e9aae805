//! A group deploys in dependency order: an app starts only once the apps it
//! depends on are running (and healthy, when they have health checks).

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_start_after_their_dependencies_are_healthy() {
    let node = Node::start().await;
    let def = json!({
        "id": "/stack",
        "apps": [
            {"id": "db", "cmd": "sleep 2; exec python3 -m http.server $PORT0", "cpus": 0.1, "mem": 64,
             "healthChecks": [{"protocol": "HTTP", "path": "/", "intervalSeconds": 1, "gracePeriodSeconds": 30}]},
            // web takes a second to stop, so stopping db at the same time shows.
            {"id": "web", "cmd": "trap 'sleep 1; exit 0' TERM; sleep 1000 & wait",
             "cpus": 0.05, "mem": 16, "instances": 2, "dependencies": ["db"]}
        ]
    });
    let (s, v) = node.call(Method::POST, "/v2/groups", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // While /stack/db is not healthy yet, /stack/web has no task at all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(node.tasks("/stack/web").await.is_empty(), "web waits for db");
    let deps = node.get("/v2/deployments").await;
    // Step 1 created both apps; step 2 scales /stack/db; /stack/web's step is 3.
    assert_eq!(deps[0]["currentStep"].as_u64(), Some(2), "{deps}");
    assert_eq!(deps[0]["currentActions"][0]["app"], "/stack/db", "{deps}");
    let web = node.wait_running("/stack/web", 2).await;
    let db = node.tasks("/stack/db").await;
    let healthy_at = db[0]["healthCheckResults"][0]["firstSuccess"].as_str().expect("db healthy").to_string();
    for t in &web {
        let staged = t["stagedAt"].as_str().expect("staged");
        assert!(staged >= healthy_at.as_str(), "web staged at {staged}, before db was healthy at {healthy_at}");
    }
    wait_for("the deployment to finish", Duration::from_secs(20), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;

    // Removal goes the other way: db stops only once no task of web is
    // alive. A killed web task stays listed (TASK_KILLED) until the leader
    // expunges it; that is not a running task. db is read before web: web
    // can only lose live tasks, so a live web task seen after db had stopped
    // was also alive when db stopped.
    let (s, v) = node.call(Method::DELETE, "/v2/groups/stack", None).await.expect("delete");
    assert!(s.is_success(), "{v}");
    let t = std::time::Instant::now();
    loop {
        let db = node.running("/stack/db").await.len();
        let web: Vec<Value> = node.tasks("/stack/web").await.into_iter().filter(|t| !is_terminal(t)).collect();
        assert!(db > 0 || web.is_empty(), "db stopped while web still had live task(s): {web:?}");
        if web.is_empty() && db == 0 && node.tasks("/stack/db").await.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "group not removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("the apps to go", Duration::from_secs(20), || async {
        node.get("/v2/apps").await["apps"].as_array().is_some_and(|a| a.is_empty())
    })
    .await;
}

/// Whether the API shows `task` in a terminal state (its process is gone).
fn is_terminal(task: &Value) -> bool {
    let state = task["state"].as_str().and_then(model::TaskState::from_marathon_name);
    state.is_some_and(model::TaskState::is_terminal)
}
