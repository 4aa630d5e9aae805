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
    // One summary line on stdout; progress lines (stderr is no terminal here)
    // counting up to the wanted instances.
    let summary: Vec<&str> = stdout.lines().collect();
    assert_eq!(summary.len(), 1, "{stdout}");
    assert!(summary[0].starts_with("/hello deployed: 2/2 tasks running in "), "{stdout}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("/hello: ")).collect();
    assert!(!progress.is_empty(), "progress lines: {stderr}");
    assert!(progress.iter().all(|l| l.contains("/2 running")), "{stderr}");
    assert!(
        progress
            .iter()
            .any(|l| l.contains("(step 1/2: StartApplication)") || l.contains("(step 2/2: ScaleApplication)")),
        "the step is shown: {stderr}"
    );

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "ls"]));
    let (stdout, _) = text(&out);
    let header = stdout.lines().next().expect("header");
    assert!(header.starts_with("ID") && header.contains("INSTANCES  RUNNING  HEALTHY  STAGED"), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("/hello")).expect("app listed");
    assert!(line.split_whitespace().nth(1) == Some("2") && line.split_whitespace().nth(2) == Some("2"), "{line}");
    // Numbers right-aligned under their header.
    let end = header.find("RUNNING").expect("RUNNING") + "RUNNING".len();
    assert_eq!(&line[end - 1..end], "2", "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "ls", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("app ls --json prints JSON");
    assert_eq!(v["apps"][0]["id"], "/hello");
    assert_eq!(v["apps"][0]["tasksRunning"], 2);

    let out = tokio::task::block_in_place(|| wharf(&node, &["ps"]));
    let (stdout, _) = text(&out);
    let header = stdout.lines().next().expect("header");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["TASK", "APP", "STATE", "HEALTH", "HOST", "STARTED", "PORTS"]
    );
    let task = stdout.lines().find(|l| l.contains("TASK_RUNNING")).expect("a running task");
    let task_id = task.split_whitespace().next().expect("id").to_string();
    assert_eq!(stdout.lines().filter(|l| l.contains("/hello")).count(), 2, "{stdout}");
    // Aligned: every row's APP column starts where the header's does.
    let col = header.find("APP").expect("APP");
    assert!(stdout.lines().skip(1).all(|l| l[col..].starts_with("/hello")), "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["ps", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps --json prints JSON");
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(2));

    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "show", "/hello"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let field = |name: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    assert_eq!(field("instances:"), "2 wanted, 2 running, 0 healthy, 0 staged", "{stdout}");
    assert_eq!(field("deployments:"), "none", "{stdout}");
    assert_eq!(field("resources:"), "cpus 0.1, mem 16 MB, disk 0 MB", "{stdout}");
    assert!(stdout.contains(&task_id), "the tasks are listed: {stdout}");

    // diff: what a deploy of a changed file would change, field by field.
    let changed = dir.path().join("changed.json");
    std::fs::write(
        &changed,
        json!({"id": "/hello", "cmd": "echo hello from $MESOS_TASK_ID; exec sleep 1000", "cpus": 0.1, "mem": 32, "instances": 3, "labels": {"tier": "web"}})
            .to_string(),
    )
    .expect("write");
    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "diff", changed.to_str().expect("path")]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["/hello: 3 changes", "  /instances: 2 -> 3", "  /labels/tier: (unset) -> \"web\"", "  /mem: 16 -> 32"],
        "{stdout}"
    );
    let out = tokio::task::block_in_place(|| wharf(&node, &["app", "diff", f]));
    assert_eq!(text(&out).0.trim(), "/hello: no changes");

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
    assert!(stdout.starts_with("/hello removed in "), "{stdout}");
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
    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", "--app", "/nothing-here"]));
    assert!(!out.status.success(), "an unknown app is an error");
    // An app without tasks has no output: the command ends at once.
    let idle = json!({"id": "/idle", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 0});
    let (s, v) = node.call(reqwest::Method::POST, "/v2/apps", Some(&idle)).await.expect("post");
    assert!(s.is_success(), "{v}");
    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", "--app", "/idle"]));
    assert!(out.status.success() && out.stdout.is_empty(), "{:?}", text(&out));

    let out = Command::new(WHARF).args(["app", "ls"]).env("WHARF_ADDR", "http://127.0.0.1:1").output().expect("run");
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot reach Wharf at http://127.0.0.1:1"), "{stderr}");
    assert!(stderr.contains("WHARF_ADDR"), "says what to do: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_are_listed_and_rolled_back() {
    let node = Node::start_with(&["--resources", "cpus:1;mem:512;disk:100;gpus:0"]).await;
    // More than the node has: the deployment waits.
    let def = json!({"id": "/big", "cmd": "exec sleep 1000", "cpus": 4, "mem": 16, "instances": 1});
    let (s, v) = node.call(reqwest::Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert!(s.is_success(), "{v}");
    let id = v["deployments"][0]["id"].as_str().expect("deployment id").to_string();
    // It starts the app (step 1), then waits to scale it (step 2).
    common::wait_for("the deployment's scale step", std::time::Duration::from_secs(30), || async {
        node.get("/v2/deployments").await[0]["currentStep"] == 2
    })
    .await;

    let out = tokio::task::block_in_place(|| wharf(&node, &["deployment", "ls"]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().take(4).collect::<Vec<_>>(), ["ID", "APPS", "STEP", "VERSION"], "{stdout}");
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[1].starts_with(&id) && lines[1].contains(" /big ") && lines[1].contains(" 2/2 "), "{stdout}");
    assert!(lines[1].ends_with("ScaleApplication /big"), "{stdout}");

    let out = tokio::task::block_in_place(|| wharf(&node, &["deployment", "ls", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v[0]["id"], id.as_str());

    let out = tokio::task::block_in_place(|| wharf(&node, &["deployment", "rm", &id]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with(&format!("deployment {id} stopped; deployment ")), "{stdout}");
    // The rollback of a create removes the app.
    common::wait_for("the rollback", std::time::Duration::from_secs(30), || async {
        node.call(reqwest::Method::GET, "/v2/apps/big", None)
            .await
            .is_ok_and(|(s, _)| s == reqwest::StatusCode::NOT_FOUND)
    })
    .await;
    let out = tokio::task::block_in_place(|| wharf(&node, &["deployment", "rm", &id]));
    assert!(!out.status.success(), "a gone deployment is an error");

    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(WHARF).args(["completion", shell]).output().expect("run");
        let (stdout, _) = text(&out);
        assert!(out.status.success() && stdout.contains("deployment") && stdout.contains("logs"), "{shell}: {stdout}");
    }
    let out = Command::new(WHARF).args(["app", "deploy", "--help"]).output().expect("run");
    assert!(text(&out).0.contains("Example:\n  echo"), "{}", text(&out).0);
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

#[test]
fn every_command_has_an_example_in_its_help() {
    let commands = [
        "",
        "agent",
        "app",
        "app deploy",
        "app ls",
        "app show",
        "app diff",
        "app scale",
        "app rm",
        "app restart",
        "ps",
        "logs",
        "deployment",
        "deployment ls",
        "deployment rm",
        "node",
        "node ls",
        "node drain",
        "node rm",
        "completion",
        "bench",
        "bench launch",
        "bench containers",
        "bench health",
        "bench scale",
        "bench dns",
        "bench lb",
        "bench cluster",
        "bench logs",
        "token",
        "token create",
        "token ls",
        "token rm",
    ];
    for c in commands {
        let out = Command::new(WHARF).args(c.split_whitespace()).arg("--help").output().expect("run");
        let (stdout, _) = text(&out);
        assert!(out.status.success() && stdout.contains("Example"), "`wharf {c} --help` has no example:\n{stdout}");
    }
}
