//! One real node runs Marathon apps end to end: deploy, reach, scale, kill
//! from outside, delete, restart the agent, memory limit.

mod common;

use common::{alive, wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_is_reachable_scales_and_is_replaced_when_killed() {
    let node = Node::start().await;
    let def = json!({"id": "/web", "cmd": "exec python3 -m http.server $PORT0", "cpus": 0.1, "mem": 64});
    let (status, body) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "/web");
    assert!(body["deployments"][0]["id"].is_string(), "{body}");

    let tasks = node.wait_running("/web", 1).await;
    let port = tasks[0]["ports"][0].as_u64().expect("port") as u16;
    assert!((node.ports.0..=node.ports.1).contains(&port), "host port from the node's range: {port}");
    let url = format!("http://127.0.0.1:{port}/");
    wait_for("the server to answer", Duration::from_secs(15), || async {
        reqwest::get(&url).await.map(|r| r.status().is_success()).unwrap_or(false)
    })
    .await;

    // Scale to 3.
    let (s, v) = node.call(Method::PUT, "/v2/apps/web", Some(&json!({"instances": 3}))).await.expect("scale");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["deploymentId"].is_string());
    let tasks = node.wait_running("/web", 3).await;
    let pids: Vec<i32> = tasks.iter().map(|t| node.task_pid(t["id"].as_str().expect("id"))).collect();
    assert!(pids.iter().all(|p| alive(*p)));
    wait_for("the scale deployment to finish", Duration::from_secs(10), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|a| a.is_empty())
    })
    .await;

    // Kill one task's process from outside: it is replaced.
    let victim = tasks[0]["id"].as_str().expect("id").to_string();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), nix::sys::signal::SIGKILL).expect("kill");
    wait_for("a replacement", Duration::from_secs(20), || async {
        let t = node.running("/web").await;
        t.len() == 3 && t.iter().all(|x| x["id"] != victim.as_str())
    })
    .await;
    let app = node.get("/v2/apps/web?embed=app.lastTaskFailure").await;
    assert_eq!(app["app"]["lastTaskFailure"]["taskId"], victim.as_str());
    assert_eq!(app["app"]["lastTaskFailure"]["state"], "TASK_FAILED");
    assert_eq!(app["app"]["tasksRunning"], 3);

    // Delete: every process is gone.
    let all: Vec<i32> =
        node.running("/web").await.iter().map(|t| node.task_pid(t["id"].as_str().expect("id"))).collect();
    let (s, _) = node.call(Method::DELETE, "/v2/apps/web", None).await.expect("delete");
    assert_eq!(s, StatusCode::OK);
    wait_for("the app to disappear", Duration::from_secs(20), || async {
        node.call(Method::GET, "/v2/apps/web", None).await.map(|(s, _)| s == StatusCode::NOT_FOUND).unwrap_or(false)
    })
    .await;
    for p in all {
        assert!(!alive(p), "process {p} survived the delete");
    }
    assert!(node.get("/v2/tasks").await["tasks"].as_array().is_some_and(|a| a.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_environment_follows_marathon() {
    let node = Node::start().await;
    let def = json!({
        "id": "/env/probe",
        "cmd": "env | sort; exec sleep 1000",
        "cpus": 0.1, "mem": 32, "disk": 5,
        "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0, "name": "admin"}],
        "labels": {"team": "infra", "tier": "web"},
        "env": {"CUSTOM": "yes", "MARATHON_APP_ID": "overridden"}
    });
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tasks = node.wait_running("/env/probe", 1).await;
    let id = tasks[0]["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("env_probe.instance-"), "{id}");
    let ports: Vec<u64> = tasks[0]["ports"].as_array().expect("ports").iter().filter_map(|p| p.as_u64()).collect();
    wait_for("env output", Duration::from_secs(10), || {
        let url = format!("{}/wharf/v1/tasks/{id}/files/stdout", node.addr());
        let c = node.client.clone();
        async move { c.get(url).send().await.expect("get").text().await.expect("text").contains("PORT0=") }
    })
    .await;
    let out = std::fs::read_to_string(node.sandbox(&id).join("stdout")).expect("stdout file");
    let has = |kv: &str| out.lines().any(|l| l == kv);
    assert!(has(&format!("PORT0={}", ports[0])), "{out}");
    assert!(has(&format!("PORT1={}", ports[1])), "{out}");
    assert!(has(&format!("PORT={}", ports[0])), "{out}");
    assert!(has(&format!("PORTS={},{}", ports[0], ports[1])), "{out}");
    assert!(has(&format!("PORT_HTTP={}", ports[0])), "{out}");
    assert!(has(&format!("PORT_ADMIN={}", ports[1])), "{out}");
    assert!(has("HOST=127.0.0.1"), "{out}");
    assert!(has(&format!("MESOS_TASK_ID={id}")), "{out}");
    assert!(has(&format!("MESOS_SANDBOX={}", node.sandbox(&id).canonicalize().expect("path").display())), "{out}");
    assert!(has("MARATHON_APP_ID=overridden"), "the app's env comes last: {out}");
    assert!(has("MARATHON_APP_RESOURCE_CPUS=0.1"), "{out}");
    assert!(has("MARATHON_APP_RESOURCE_MEM=32.0") || has("MARATHON_APP_RESOURCE_MEM=32"), "{out}");
    assert!(has("MARATHON_APP_LABEL_TEAM=infra"), "{out}");
    assert!(has("CUSTOM=yes"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("MARATHON_APP_VERSION=20")), "{out}");
    assert!(out.lines().any(|l| l == "MARATHON_APP_LABELS=TEAM TIER"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_an_agent_restart_and_are_still_supervised() {
    let mut node = Node::start().await;
    let def = json!({"id": "/sleepy", "args": ["sleep", "1000"], "cpus": 0.1, "mem": 16, "instances": 2});
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    let before = node.wait_running("/sleepy", 2).await;
    let ids: Vec<String> = before.iter().map(|t| t["id"].as_str().expect("id").to_string()).collect();
    let pids: Vec<i32> = ids.iter().map(|id| node.task_pid(id)).collect();

    node.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pids.iter().all(|p| alive(*p)), "tasks keep running while the agent is down");

    node.spawn().await;
    let after = node.wait_running("/sleepy", 2).await;
    let mut after_ids: Vec<String> = after.iter().map(|t| t["id"].as_str().expect("id").to_string()).collect();
    after_ids.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(after_ids, sorted, "the same tasks are listed after the restart");
    assert!(pids.iter().all(|p| alive(*p)));

    // The re-attached agent still notices a task dying and replaces it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[0]), nix::sys::signal::SIGKILL).expect("kill");
    let victim = ids[0].clone();
    wait_for("a replacement after restart", Duration::from_secs(20), || async {
        let t = node.running("/sleepy").await;
        t.len() == 2 && t.iter().all(|x| x["id"] != victim.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_memory_fails_the_task_with_the_reason() {
    let node = Node::start().await;
    let def = json!({
        "id": "/hog",
        "cmd": "python3 -c 'import time; b = bytearray(256 * 1024 * 1024); time.sleep(60)'",
        "cpus": 0.1, "mem": 32,
        "backoffSeconds": 60
    });
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    wait_for("an OOM failure", Duration::from_secs(30), || async {
        let app = node.get("/v2/apps/hog?embed=app.lastTaskFailure").await;
        app["app"]["lastTaskFailure"]["state"] == "TASK_FAILED"
    })
    .await;
    let app = node.get("/v2/apps/hog?embed=app.lastTaskFailure").await;
    let msg = app["app"]["lastTaskFailure"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("Memory limit exceeded"), "{msg}");
    // Backoff keeps the replacement waiting, and the queue says so.
    let q = node.get("/v2/queue").await;
    let entry = q["queue"].as_array().and_then(|a| a.iter().find(|e| e["app"]["id"] == "/hog")).cloned();
    let entry = entry.expect("the app waits in the queue");
    assert!(entry["delay"]["timeLeftSeconds"].as_f64().unwrap_or(0.0) > 0.0, "{entry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_kill_selection_and_kill_with_scale() {
    let node = Node::start().await;
    let def = json!({"id": "/pool", "args": ["sleep", "1000"], "cpus": 0.1, "mem": 16, "instances": 3});
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    let tasks = node.wait_running("/pool", 3).await;
    let mut by_age = tasks.clone();
    by_age.sort_by_key(|t| t["stagedAt"].as_str().unwrap_or_default().to_string());

    // DELETE one task with scale=true: instances drop to 2 and it is not replaced.
    let victim = by_age[0]["id"].as_str().expect("id").to_string();
    let (s, v) =
        node.call(Method::DELETE, &format!("/v2/apps/pool/tasks/{victim}?scale=True"), None).await.expect("kill");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["deploymentId"].is_string(), "{v}");
    node.wait_running("/pool", 2).await;
    assert_eq!(node.get("/v2/apps/pool").await["app"]["instances"], 2);

    // POST /v2/tasks/delete without scale: replaced.
    let t = node.running("/pool").await;
    let id = t[0]["id"].as_str().expect("id").to_string();
    let (s, _) =
        node.call(Method::POST, "/v2/tasks/delete", Some(&json!({"ids": [id.clone()]}))).await.expect("delete");
    assert_eq!(s, StatusCode::OK);
    wait_for("replacement", Duration::from_secs(20), || async {
        let t = node.running("/pool").await;
        t.len() == 2 && t.iter().all(|x| x["id"] != id.as_str())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_the_launch_delay_relaunches_at_once() {
    let node = Node::start().await;
    let def = json!({"id": "/flaky", "cmd": "exit 1", "cpus": 0.05, "mem": 16, "backoffSeconds": 600});
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    wait_for("a delayed queue entry", Duration::from_secs(20), || async {
        let q = node.get("/v2/queue").await;
        q["queue"].as_array().is_some_and(|q| {
            q.iter()
                .any(|e| e["app"]["id"] == "/flaky" && e["delay"]["timeLeftSeconds"].as_f64().unwrap_or(0.0) > 500.0)
        })
    })
    .await;
    let failed = node.get("/v2/apps/flaky?embed=app.lastTaskFailure").await["app"]["lastTaskFailure"]["taskId"].clone();
    let (s, _) = node.call(Method::DELETE, "/v2/queue/flaky/delay", None).await.expect("reset");
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_for("a new attempt right away", Duration::from_secs(10), || async {
        let f = node.get("/v2/apps/flaky?embed=app.lastTaskFailure").await["app"]["lastTaskFailure"]["taskId"].clone();
        f != failed
    })
    .await;
    let (s, _) = node.call(Method::DELETE, "/v2/queue/nope/delay", None).await.expect("reset");
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_sandboxes_are_removed_recent_ones_kept() {
    let node = Node::start_with(&["--keep-sandboxes", "2"]).await;
    let def =
        json!({"id": "/brief", "cmd": "exit 1", "cpus": 0.05, "mem": 16, "backoffSeconds": 0, "backoffFactor": 1.0});
    node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    let sandboxes = node.data_dir().join("data/sandboxes");
    let count = || std::fs::read_dir(&sandboxes).map(|d| d.count()).unwrap_or(0);
    // Many short-lived tasks come and go...
    let mut attempts = std::collections::BTreeSet::new();
    let mut max_seen = 0;
    let t = std::time::Instant::now();
    while attempts.len() < 8 {
        assert!(t.elapsed() < Duration::from_secs(30), "only {} attempts", attempts.len());
        let app = node.get("/v2/apps/brief?embed=app.lastTaskFailure").await;
        if let Some(id) = app["app"]["lastTaskFailure"]["taskId"].as_str() {
            attempts.insert(id.to_string());
        }
        max_seen = max_seen.max(count());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...but only the kept ones (plus the attempt in flight) stay on disk.
    assert!(max_seen <= 3, "{max_seen} sandboxes on disk after {} attempts", attempts.len());
    assert!(count() >= 1, "recent sandboxes stay for their logs");
}
