//! Provisioning as a user does it: `wharf cluster up|status|down` on this
//! machine (real agents on their own loopback addresses, a deploy through the
//! second node, nothing left after `down`), and `wharf install --root` files
//! that `wharf agent --config` runs from, with WHARF_* variables on top.

mod common;

use common::{alive, free_port, wait_for, WHARF};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::task::block_in_place(|| {
        Command::new(WHARF).args(args).envs(env.iter().copied()).output().expect("run wharf")
    })
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A loopback /24 of this test's own (the cluster tests use 127.100-199.x).
fn base_ip() -> String {
    let seed = free_port();
    format!("127.{}.{}.1", 200 + seed % 50, (seed / 50) % 250)
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc").expect("proc").flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// Every cgroup directory named for `task` in any hierarchy.
fn cgroups_of(task: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    roots.extend(std::fs::read_dir("/sys/fs/cgroup").expect("cgroupfs").flatten().map(|e| e.path()));
    for root in roots {
        let dir = root.join("wharf").join(task);
        if dir.is_dir() {
            found.push(dir);
        }
    }
    found
}

/// Stops the cluster however the test ends.
struct Down(PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(WHARF).args(["cluster", "down", "--purge", "--dir"]).arg(&self.0).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_deploy_through_node_2_down_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cluster");
    let d = dir.to_str().expect("path");
    let base = base_ip();
    let _down = Down(dir.clone());

    let out = run(&["cluster", "up", "--nodes", "3", "--dir", d, "--base", &base], &[]);
    let said = text(&out);
    assert!(out.status.success(), "cluster up failed: {said}");
    assert!(said.contains("nodes joined: 3/3") && said.contains("3 nodes up in "), "{said}");
    let first = format!("http://{base}:8080");
    assert!(said.contains(&format!("export WHARF_ADDR={first}")), "{said}");
    // One suffix only: `trim_end_matches` would also eat a third octet of 1.
    let prefix = base.strip_suffix(".1").expect("the base address ends in .1");
    let second = format!("http://{prefix}.2:8080");
    for i in 1..=3 {
        assert!(said.contains(&format!("http://{prefix}.{i}:8080")), "node {i} listed: {said}");
    }

    let layout: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("layout")).expect("json");
    let agents: Vec<i32> =
        layout["nodes"].as_array().expect("nodes").iter().map(|n| n["pid"].as_i64().expect("pid") as i32).collect();
    assert_eq!(agents.len(), 3);

    let app = tmp.path().join("app.json");
    std::fs::write(
        &app,
        json!({"id": "/sleepy", "cmd": "exec sleep 4242", "cpus": 0.1, "mem": 16, "instances": 3,
               "constraints": [["hostname", "UNIQUE"]]})
        .to_string(),
    )
    .expect("write");
    let out = run(&["app", "deploy", app.to_str().expect("path")], &[("WHARF_ADDR", &second)]);
    assert!(out.status.success(), "deploy through node 2: {}", text(&out));
    let out = run(&["ps", "--json"], &[("WHARF_ADDR", &second)]);
    let tasks: Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    let tasks = tasks["tasks"].as_array().expect("tasks").clone();
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let mut hosts: Vec<&str> = tasks.iter().map(|t| t["host"].as_str().expect("host")).collect();
    hosts.sort();
    assert_eq!(hosts, vec![format!("{prefix}.1"), format!("{prefix}.2"), format!("{prefix}.3")], "one task per node");
    let ids: Vec<String> = tasks.iter().map(|t| t["id"].as_str().expect("id").to_string()).collect();
    // The tasks' processes, each in its task's cgroup.
    let sleepers: Vec<i32> = pids().into_iter().filter(|&p| cmdline(p) == ["sleep", "4242"]).collect();
    assert_eq!(sleepers.len(), 3, "three task processes");
    for p in &sleepers {
        let cg = std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap_or_default();
        assert!(ids.iter().any(|id| cg.contains(&format!("/wharf/{id}"))), "pid {p} in a task cgroup: {cg}");
    }
    for id in &ids {
        assert!(!cgroups_of(id).is_empty(), "task {id} has a cgroup");
    }

    let out = run(&["cluster", "status", "--dir", d], &[]);
    let status = text(&out);
    assert!(out.status.success(), "{status}");
    assert_eq!(status.lines().filter(|l| l.contains(" running ") && l.contains(" up ")).count(), 3, "{status}");
    assert!(status.contains("3 of 3 nodes running"), "{status}");

    let out = run(&["cluster", "down", "--dir", d], &[]);
    let said = text(&out);
    assert!(out.status.success(), "down: {said}");
    assert!(said.contains("3 nodes stopped, 3 tasks ended"), "{said}");
    for p in agents.iter().chain(&sleepers) {
        assert!(!alive(*p), "process {p} ({:?}) left after down", cmdline(*p));
    }
    let executors: Vec<i32> =
        pids().into_iter().filter(|&p| cmdline(p).iter().any(|a| a.starts_with(d)) && alive(p)).collect();
    assert!(
        executors.is_empty(),
        "processes of the cluster left: {:?}",
        executors.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
    );
    for id in &ids {
        assert_eq!(cgroups_of(id), Vec::<PathBuf>::new(), "task {id}'s cgroup left");
    }
    let out = run(&["cluster", "status", "--dir", d], &[]);
    assert!(text(&out).contains("0 of 3 nodes running"), "{}", text(&out));
    assert!(dir.join("node-2").is_dir(), "data kept without --purge");

    let out = run(&["cluster", "down", "--purge", "--dir", d], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!dir.exists(), "--purge removes the data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_writes_files_the_agent_runs_from() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let ip = base_ip();
    let (http, rpc) = (format!("{ip}:8080"), format!("{ip}:5050"));
    let data = tmp.path().join("data");
    let p = free_port();
    let ports = format!("{p}-{}", p + 9);

    if !Path::new("/run/systemd/system").exists() {
        let out = run(&["install", "--join", "10.0.0.5:5050", "--attributes", "rack:r1;zone:a"], &[]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert!(said.contains("does not run systemd"), "{said}");
        assert!(said.contains(" agent --join 10.0.0.5:5050") || said.contains(" agent --attributes"), "{said}");
        assert!(said.contains("'rack:r1;zone:a'"), "quoted for a shell: {said}");
        assert!(said.contains("Nothing was written"), "{said}");
    }

    let args = [
        "install",
        "--root",
        root.to_str().expect("path"),
        "--http",
        &http,
        "--rpc",
        &rpc,
        "--data-dir",
        data.to_str().expect("path"),
        "--ports",
        &ports,
        "--attributes",
        "rack:r1",
        "--dns",
        "off",
        "--http-lb",
        "off",
    ];
    let out = run(&args, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let config = root.join("etc/wharf/wharf.toml");
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/wharf.service")).expect("unit written");
    assert!(unit.contains(&format!("ExecStart={WHARF} agent --config /etc/wharf/wharf.toml")), "{unit}");
    assert!(unit.contains("WantedBy=multi-user.target") && unit.contains("KillMode=process"), "{unit}");
    let toml = std::fs::read_to_string(&config).expect("config written");
    assert!(toml.contains(&format!("http = \"{http}\"")) && toml.contains("attributes = \"rack:r1\""), "{toml}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).expect("meta").permissions().mode() & 0o777, 0o600, "it may hold a token");

    // The file's settings, a variable over one of them, and one only a variable sets.
    let log = std::fs::File::create(tmp.path().join("agent.log")).expect("log");
    let mut agent = Command::new(WHARF)
        .args(["agent", "--config", config.to_str().expect("path")])
        .env("WHARF_ATTRIBUTES", "rack:r2")
        .env("WHARF_HOSTNAME", "from-env")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("agent");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("client");
    let nodes_url = format!("http://{http}/wharf/v1/nodes");
    let nodes = || async {
        let r = client.get(&nodes_url).send().await.ok()?;
        r.json::<Value>().await.ok()
    };
    wait_for("the agent on the file's --http", Duration::from_secs(30), || async {
        nodes().await.is_some_and(|v| v["nodes"].as_array().is_some_and(|n| n.len() == 1))
    })
    .await;
    let seen = nodes().await.expect("nodes");
    let node = &seen["nodes"][0];
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::SIGTERM);
    let _ = agent.wait();
    assert_eq!(node["hostname"], "from-env", "{node}");
    assert_eq!(node["attributes"]["rack"], "r2", "the variable wins over the file: {node}");
    assert!(data.join("state").is_dir(), "the file's --data-dir is used");

    let out = run(&["uninstall", "--root", root.to_str().expect("path")], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!root.join("etc/systemd/system/wharf.service").exists() && config.exists(), "unit removed, config kept");
    let out = run(&["uninstall", "--root", root.to_str().expect("path"), "--purge"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!config.exists(), "--purge removes the config");
    let out = run(&["agent", "--config", config.to_str().expect("path")], &[]);
    assert!(!out.status.success() && text(&out).contains("--config: cannot read"), "{}", text(&out));
}
