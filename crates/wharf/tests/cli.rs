//! The `wharf` CLI against a real node: what a user types and sees.

mod common;

use common::{Node, WHARF};
use serde_json::json;
use std::process::{Command, Output};

fn wharf(node: &Node, args: &[&str]) -> Output {
    Command::new(WHARF).args(args).env("WHARF_ADDR", node.addr()).output().expect("run wharf")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_ps_logs_scale_rm() {
    let node = Node::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app.json");
    std::fs::write(
        &file,
        json!({"id": "/hello", "cmd": "echo hello from $MESOS_TASK_ID; exec sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2})
            .to_string(),
    )
    .expect("write");
    let f = file.to_str().expect("path");

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "deploy", f]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "deploy failed: {stdout}{stderr}");
    assert!(stdout.contains("/hello deployed: 2/2 tasks running"), "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "ls"]));
    let (stdout, _) = text(&out);
    let line = stdout.lines().find(|l| l.starts_with("/hello")).expect("app listed");
    assert!(line.split_whitespace().nth(1) == Some("2") && line.split_whitespace().nth(2) == Some("2"), "{line}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["ps"]));
    let (stdout, _) = text(&out);
    let task = stdout.lines().find(|l| l.contains("TASK_RUNNING")).expect("a running task");
    let task_id = task.split_whitespace().next().expect("id").to_string();
    assert_eq!(stdout.lines().filter(|l| l.contains("/hello")).count(), 2, "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", &task_id]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("hello from {task_id}"));

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "scale", "/hello", "3"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("3/3 tasks running"), "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "rm", "/hello"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("/hello removed"), "{stdout}");
    assert!(node.get("/v2/tasks").await["tasks"].as_array().is_some_and(|a| a.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_field_and_failing_deploys_exit_nonzero() {
    let node = Node::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, json!({"id": "/bad", "cmd": "sleep 1", "cpus": -2}).to_string()).expect("write");
    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "deploy", bad.to_str().expect("path")]));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("/cpus"), "the error names the field: {stderr}");

    let crash = dir.path().join("crash.json");
    std::fs::write(
        &crash,
        json!({"id": "/crash", "cmd": "echo boom >&2; exit 3", "cpus": 0.1, "mem": 16, "backoffSeconds": 1, "backoffFactor": 1.0})
            .to_string(),
    )
    .expect("write");
    let out = tokio::task::block_in_place(|| {
        wharf(&node, &["app", "deploy", crash.to_str().expect("path"), "--timeout", "60"])
    });
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("exited with status 3"), "the failure reason is shown: {stderr}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", "nonsense"]));
    assert!(!out.status.success());

    let out = Command::new(WHARF).args(["app", "ls"]).env("WHARF_ADDR", "http://127.0.0.1:1").output().expect("run");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach Wharf at http://127.0.0.1:1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ls_shows_resources_used_of_total() {
    let node = Node::start_with(&["--resources", "cpus:2;mem:1024;disk:500;gpus:0", "--attributes", "rack:r1"]).await;
    let def = json!({"id": "/sized", "cmd": "exec sleep 1000", "cpus": 0.5, "mem": 128, "disk": 10, "instances": 1});
    let (s, v) = node.call(reqwest::Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert!(s.is_success(), "{v}");
    node.wait_running("/sized", 1).await;

    let out = tokio::task::block_in_place(|| wharf(&node, &["node", "ls"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let (header, row) = (lines[0], lines[1]);
    for (col, want) in [("CPUS", "0.5/2"), ("MEM MB", "128/1024"), ("DISK MB", "10/500"), ("PORTS", "1/100")] {
        // Numbers are right-aligned under their header.
        let end = header.find(col).expect(col) + col.len();
        assert_eq!(&row[end - want.len()..end], want, "{col} in\n{stdout}");
    }
    assert!(row.contains("voter (leader)") && row.contains(" up ") && row.ends_with("rack:r1"), "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["node", "ls", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["nodes"][0]["portsUsed"], 1);
    assert_eq!(v["nodes"][0]["used"]["mem"], 128.0);
    assert_eq!(v["raft"]["role"], "leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_an_app_with_each_line_prefixed() {
    let node = Node::start().await;
    // Each task prints one line at once and one a second later, after
    // `logs -f` has started.
    let def = json!({"id": "/chatty", "cmd": "echo first from $MESOS_TASK_ID; sleep 1; echo later from $MESOS_TASK_ID; exec sleep 1000",
                     "cpus": 0.05, "mem": 16, "instances": 2});
    let (s, v) = node.call(reqwest::Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert!(s.is_success(), "{v}");
    let tasks = node.wait_running("/chatty", 2).await;
    let ids: Vec<String> = tasks.iter().map(|t| t["id"].as_str().expect("id").to_string()).collect();

    let mut child = Command::new(WHARF)
        .args(["logs", "-f", "--app", "/chatty"])
        .env("WHARF_ADDR", node.addr())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run wharf logs");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            seen.push(line);
            if seen.iter().filter(|l| l.contains("later from")).count() == 2 {
                break;
            }
        }
        seen
    });
    let lines =
        tokio::time::timeout(std::time::Duration::from_secs(20), lines).await.expect("lines in time").expect("join");
    let _ = child.kill();
    let _ = child.wait();
    for id in &ids {
        let uuid = id.split(".instance-").nth(1).expect("uuid");
        let prefix = format!("instance-{} | ", &uuid[..8]);
        for word in ["first", "later"] {
            let want = format!("{prefix}{word} from {id}");
            assert!(lines.contains(&want), "no {want:?} in {lines:#?}");
        }
    }

    // Without -f: what is there now, then exit.
    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", "--app", "/chatty"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
}
