//! Task logs end to end: `wharf logs -f` sees what a task prints after the
//! command started, across size rotations of the sandbox's files; `--tail`;
//! and `/wharf/v1/tasks/{id}/logs` streamed through a node that does not
//! run the task.

mod common;

use common::cluster::Cluster;
use common::{wait_for, Node, WHARF};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Lines the chatty task prints: about 240 KB, several rotations at 64K.
const LINES: usize = 20_000;

fn wharf(node: &Node, args: &[&str]) -> std::process::Output {
    Command::new(WHARF).args(args).env("WHARF_ADDR", node.addr()).output().expect("run wharf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_sees_new_lines_across_rotations_and_tail_reads_back() {
    // 5 files of 64K hold everything the task prints, so even a follower
    // slowed down by a loaded machine must see every line.
    let node = Node::start_with(&["--log-max-size", "64K", "--log-files", "5"]).await;
    let cmd = format!(
        "echo ready; while [ ! -f go ]; do sleep 0.05; done; i=0; while [ $i -lt {LINES} ]; do echo \"line $i\"; i=$((i+1)); done; echo done; exec sleep 1000"
    );
    let def = json!({"id": "/chatty", "cmd": cmd, "cpus": 0.1, "mem": 32, "instances": 1});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert!(s.is_success(), "{v}");
    let task = node.wait_running("/chatty", 1).await[0]["id"].as_str().expect("id").to_string();
    let sandbox = node.sandbox(&task);
    wait_for("the task to start", Duration::from_secs(30), || {
        let p = sandbox.join("stdout");
        async move { std::fs::read_to_string(p).is_ok_and(|s| s.contains("ready")) }
    })
    .await;

    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_file = out_dir.path().join("out");
    let mut follower = Command::new(WHARF)
        .args(["logs", "-f", &task])
        .env("WHARF_ADDR", node.addr())
        .stdout(std::fs::File::create(&out_file).expect("out"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("wharf logs -f");
    // The follower has read what was there before the task goes on.
    let seen = out_file.clone();
    wait_for("logs -f to print what is there", Duration::from_secs(30), || {
        let p = seen.clone();
        async move { std::fs::read_to_string(p).is_ok_and(|s| s.contains("ready")) }
    })
    .await;
    std::fs::write(sandbox.join("go"), b"").expect("go");

    let want: String = std::iter::once("ready".to_string())
        .chain((0..LINES).map(|i| format!("line {i}")))
        .chain(["done".into()])
        .map(|l| l + "\n")
        .collect();
    let seen = out_file.clone();
    let w = want.clone();
    wait_for("logs -f to print every line", Duration::from_secs(60), || {
        let (p, w) = (seen.clone(), w.clone());
        async move { std::fs::read_to_string(p).is_ok_and(|s| s.len() >= w.len()) }
    })
    .await;
    // The task still runs (sleeping), so the follower is still following.
    assert!(follower.try_wait().expect("try_wait").is_none(), "logs -f ended while the task runs");
    let got = std::fs::read_to_string(&out_file).expect("read");
    assert!(got == want, "logs -f printed {} bytes, not every line once in order (want {})", got.len(), want.len());
    let rotated: Vec<String> = (1..5).map(|i| format!("stdout.{i}")).filter(|f| sandbox.join(f).exists()).collect();
    assert!(rotated.len() >= 2, "the sandbox's stdout was rotated: {rotated:?}");
    let on_disk = std::fs::metadata(sandbox.join("stdout")).expect("stdout").len();
    assert!(on_disk <= 64 * 1024, "the current file stays under --log-max-size: {on_disk}");

    // A kill ends the task, and with it the follow.
    let (s, _) = node.call(Method::DELETE, "/v2/apps/chatty", None).await.expect("delete");
    assert!(s.is_success());
    let ended = tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            if let Some(st) = follower.try_wait().expect("try_wait") {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = follower.kill();
        None
    })
    .await
    .expect("join");
    assert!(ended.is_some_and(|s| s.success()), "logs -f ends when the task has ended");

    // --tail reads back across the rotated files.
    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", "--tail", "3", &task]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("line {}\nline {}\ndone\n", LINES - 2, LINES - 1));
    let out = tokio::task::block_in_place(|| wharf(&node, &["logs", "--tail", "15000", &task]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text.lines().count(), 15000);
    assert_eq!(text.lines().next(), Some(format!("line {}", LINES - 14999).as_str()));
}

fn uuid_of(task: &str) -> &str {
    task.split(".instance-").nth(1).and_then(|r| r.split("._app.").next()).expect("uuid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stream_through_a_node_that_does_not_run_the_task() {
    let c = Cluster::start(2, &[]).await;
    let def = json!({"id": "/ticker", "cmd": "i=0; while true; do echo tick $i; echo err $i >&2; i=$((i+1)); sleep 0.2; done", "cpus": 0.1, "mem": 16, "instances": 1});
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert!(s.is_success(), "{v}");
    let started = std::time::Instant::now();
    let (task, host) = loop {
        if let [one] = c.running(0, "/ticker").await.as_slice() {
            break one.clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the ticker did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let other = 1 - c.node_of_host(&host);

    // Follow from the other node: lines printed after the request started
    // arrive as they are printed.
    let url = format!("{}/wharf/v1/tasks/{task}/logs?follow=true&tail=1", c.nodes[other].addr());
    let client = reqwest::Client::new();
    let resp = client.get(&url).send().await.expect("logs");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("text/plain")));
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let first_tick = tokio::time::timeout(Duration::from_secs(20), async {
        while !text.contains('\n') {
            text.push_str(&String::from_utf8_lossy(&body.next().await.expect("more").expect("chunk")));
        }
    })
    .await;
    assert!(first_tick.is_ok(), "the last line arrives: {text:?}");
    let first: usize =
        text.lines().next().and_then(|l| l.strip_prefix("tick ")).and_then(|n| n.parse().ok()).expect("a tick");
    let later = format!("tick {}\n", first + 5);
    let got_later = tokio::time::timeout(Duration::from_secs(30), async {
        while !text.contains(&later) {
            text.push_str(&String::from_utf8_lossy(&body.next().await.expect("more").expect("chunk")));
        }
    })
    .await;
    assert!(got_later.is_ok(), "later lines arrive while following: {text:?}");
    // In order, none lost.
    let ticks: Vec<usize> = text.lines().filter_map(|l| l.strip_prefix("tick ")?.parse().ok()).collect();
    assert_eq!(ticks, (first..first + ticks.len()).collect::<Vec<_>>(), "{text}");

    // stderr, not following: what is there, then the answer ends.
    let url = format!("{}/wharf/v1/tasks/{task}/logs?stream=stderr&tail=2", c.nodes[other].addr());
    let text = tokio::time::timeout(Duration::from_secs(20), async {
        client.get(&url).send().await.expect("logs").text().await
    })
    .await
    .expect("a log without follow ends")
    .expect("text");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.starts_with("err ")), "{text}");

    // Bad input says what is wrong.
    let base = format!("{}/wharf/v1/tasks", c.nodes[other].addr());
    let r = client.get(format!("{base}/{task}/logs?stream=stdin")).send().await.expect("logs");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.expect("body").contains("stdout or stderr"));
    let r = client.get(format!("{base}/{task}/logs?tail=-1")).send().await.expect("logs");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // An encoded path separator never reaches outside the sandboxes.
    let r =
        client.get(format!("{base}/..%2F..%2Fx.instance-{}._app.1/logs", uuid_of(&task))).send().await.expect("logs");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = client
        .get(format!("{base}/ticker.instance-00000000-0000-0000-0000-000000000000._app.1/logs"))
        .send()
        .await
        .expect("logs");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_logs_as_json_carry_request_deployment_and_launch_ids() {
    let node = Node::start_with_env(&["--log-format", "json"], &[("RUST_LOG", "info,api=debug")]).await;
    let def = json!({"id": "/traced", "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16, "instances": 1});
    let resp = node
        .client
        .post(format!("{}/v2/apps", node.addr()))
        .header("x-request-id", "req-42")
        .json(&def)
        .send()
        .await
        .expect("post");
    assert!(resp.status().is_success());
    assert_eq!(resp.headers()["x-request-id"], "req-42", "the id comes back");
    let deployment = resp.json::<serde_json::Value>().await.expect("json")["deployments"][0]["id"]
        .as_str()
        .expect("deployment")
        .to_string();
    let task = node.wait_running("/traced", 1).await[0]["id"].as_str().expect("id").to_string();

    let lines = || -> Vec<serde_json::Value> {
        node.log().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
    };
    wait_for("the deployment's end in the log", Duration::from_secs(30), || {
        let found = lines()
            .iter()
            .any(|l| l["span"]["id"] == deployment.as_str() && l["fields"]["message"] == "deployment succeeded");
        async move { found }
    })
    .await;
    let all = lines();
    let request = all
        .iter()
        .find(|l| l["span"]["request_id"] == "req-42")
        .unwrap_or_else(|| panic!("a line in the request's span: {all:#?}"));
    assert_eq!(request["span"]["method"], "POST");
    assert_eq!(request["span"]["route"], "/v2/apps");
    let launch = all
        .iter()
        .find(|l| l["span"]["name"] == "launch" && l["fields"]["message"] == "task started")
        .unwrap_or_else(|| panic!("the launch's line: {all:#?}"));
    assert_eq!(launch["span"]["task"], task.as_str());
    assert_eq!(launch["span"]["app"], "/traced");
    assert_eq!(launch["span"]["driver"], "exec");
    assert!(all.iter().any(|l| l["span"]["name"] == "deployment"
        && l["span"]["id"] == deployment.as_str()
        && l["fields"]["message"] == "deployment started"));
}
