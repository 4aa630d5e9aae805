//! Marathon's `user` end to end: a node started with `--default-task-user
//! nobody` runs an app without a `user` as nobody and an app with
//! `"user": "root"` as root, as their own output says; a node with
//! `--refuse-root-tasks` runs a `nobody` app and fails a `root` one, saying why.

mod common;

use common::Node;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

async fn stdout_of(node: &Node, app: &str) -> String {
    let task = node.wait_running(app, 1).await[0]["id"].as_str().expect("task id").to_string();
    let url = format!("/wharf/v1/tasks/{task}/files/stdout");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((StatusCode::OK, v)) = node.call(Method::GET, &url, None).await {
            let out = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            if out.contains("uid=") {
                return out;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no output from {app}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_run_as_their_user_or_the_default_task_user() {
    let node = Node::start_with(&["--default-task-user", "nobody"]).await;
    // The sandboxes are under the test's private temporary directory; the
    // task user must be able to reach its own.
    std::fs::set_permissions(node.data_dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (id, user) in [("/as-default", None), ("/as-root", Some("root"))] {
        let mut app =
            json!({"id": id, "cmd": "echo uid=$(id -u); sleep 1000", "cpus": 0.05, "mem": 16, "instances": 1});
        if let Some(u) = user {
            app["user"] = json!(u);
        }
        let (s, v) = node.call(Method::POST, "/v2/apps", Some(&app)).await.expect("post");
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let nobody = nix::unistd::User::from_name("nobody").expect("lookup").expect("nobody exists");
    assert!(stdout_of(&node, "/as-default").await.contains(&format!("uid={}\n", nobody.uid)));
    assert!(stdout_of(&node, "/as-root").await.contains("uid=0\n"));
    let (_, v) = node.call(Method::GET, "/v2/apps/as-root", None).await.expect("get");
    assert_eq!(v["app"]["user"], "root", "the field renders as given");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_refuses_root_tasks_fails_them_saying_why() {
    let node = Node::start_with(&["--refuse-root-tasks"]).await;
    std::fs::set_permissions(node.data_dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (id, user) in [("/rootless", "nobody"), ("/wants-root", "root")] {
        let app = json!({"id": id, "cmd": "echo uid=$(id -u); sleep 1000", "cpus": 0.05, "mem": 16, "user": user});
        let (s, v) = node.call(Method::POST, "/v2/apps", Some(&app)).await.expect("post");
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let nobody = nix::unistd::User::from_name("nobody").expect("lookup").expect("nobody exists");
    assert!(stdout_of(&node, "/rootless").await.contains(&format!("uid={}\n", nobody.uid)));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = node.call(Method::GET, "/v2/apps/wants-root?embed=app.lastTaskFailure", None).await.expect("get");
        let message = v["app"]["lastTaskFailure"]["message"].as_str().unwrap_or_default().to_string();
        if !message.is_empty() {
            assert!(message.contains("runs no task as root (--refuse-root-tasks)"), "{message}");
            assert_eq!(v["app"]["tasksRunning"], 0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failure recorded: {v}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
