//! A cluster of real nodes on their own loopback addresses (127.a.b.N, fixed
//! ports per address), and the faults tests inflict on them: kill -9,
//! SIGSTOP/SIGCONT, and partitions with iptables rules between node
//! addresses (nodes send from their own address). Dropping the cluster heals
//! it, deletes its apps and stops every node.

use super::{wait_for, WHARF};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ClusterNode {
    pub ip: String,
    pub dir: std::path::PathBuf,
    pub child: Option<Child>,
    pub ports: (u16, u16),
    pub extra: Vec<String>,
    /// The cluster's join token, passed when the node joins.
    pub token: Option<String>,
}

impl ClusterNode {
    pub fn addr(&self) -> String {
        format!("http://{}:8080", self.ip)
    }
    pub fn rpc(&self) -> String {
        format!("{}:5050", self.ip)
    }
    pub fn spawn(&mut self, join: Option<&str>) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).expect("log");
        let mut cmd = Command::new(WHARF);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--http", &format!("{}:8080", self.ip), "--rpc", &self.rpc()])
            .args(["--ports", &format!("{}-{}", self.ports.0, self.ports.1)])
            .args(["--hostname", &self.ip])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(j) = join {
            cmd.args(["--join", j]);
            if let Some(t) = &self.token {
                cmd.args(["--join-token", t]);
            }
        }
        self.child = Some(cmd.spawn().expect("spawn"));
    }
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGSTOP: the process stays but answers nothing (a long GC pause, a hung host).
    pub fn pause(&self) {
        self.signal(nix::sys::signal::SIGSTOP);
    }
    pub fn resume(&self) {
        self.signal(nix::sys::signal::SIGCONT);
    }
    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }
    pub fn stop(&mut self) {
        // A paused node would never see the SIGTERM.
        self.resume();
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    _dir: tempfile::TempDir,
    pub chain: String,
    pub client: reqwest::Client,
}

impl Cluster {
    fn prepare(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // A /24 of loopback addresses of our own, so parallel tests never meet.
        let seed = super::free_port();
        let (a, b) = (100 + (seed % 100) as u8, (seed / 100 % 250) as u8);
        let base = 20000 + (seed % 60) * 200;
        let mut nodes = Vec::new();
        for i in 0..n {
            let d = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&d).expect("dir");
            nodes.push(ClusterNode {
                ip: format!("127.{a}.{b}.{}", i + 1),
                dir: d,
                child: None,
                ports: (base + i as u16 * 30, base + i as u16 * 30 + 29),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                token: None,
            });
        }
        let chain = format!("WHARF{a}x{b}");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        Cluster { nodes, _dir: dir, chain, client }
    }

    /// The join token the first node keeps in its data dir (written once
    /// the cluster's CA is in the replicated state), given to every node.
    pub async fn share_join_token(&mut self) {
        let path = self.nodes[0].dir.join("data/join-token");
        wait_for("the first node's join token", Duration::from_secs(30), || async { path.exists() }).await;
        let token = std::fs::read_to_string(&path).expect("join token").trim().to_string();
        for n in &mut self.nodes {
            n.token = Some(token.clone());
        }
    }

    /// `n` nodes: the first starts alone, the others join it one by one.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster::prepare(n, extra);
        c.nodes[0].spawn(None);
        c.wait_up(0).await;
        c.share_join_token().await;
        let seed_rpc = c.nodes[0].rpc();
        for i in 1..n {
            c.nodes[i].spawn(Some(&seed_rpc));
            c.wait_up(i).await;
        }
        c.wait_nodes(n).await;
        c
    }

    /// `n` nodes: the first starts alone, then all others join it at once
    /// (as hosts provisioned together do).
    pub async fn start_together(n: usize) -> Cluster {
        let mut c = Cluster::prepare(n, &[]);
        c.nodes[0].spawn(None);
        c.wait_up(0).await;
        c.share_join_token().await;
        let seed_rpc = c.nodes[0].rpc();
        for i in 1..n {
            c.nodes[i].spawn(Some(&seed_rpc));
        }
        for i in 1..n {
            c.wait_up(i).await;
        }
        c.wait_nodes(n).await;
        c
    }

    pub async fn call(&self, i: usize, m: Method, path: &str, body: Option<&Value>) -> Option<(StatusCode, Value)> {
        let mut req = self.client.request(m, format!("{}{}", self.nodes[i].addr(), path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.ok()?;
        let s = resp.status();
        let v = resp.json().await.unwrap_or(Value::Null);
        Some((s, v))
    }

    pub async fn get(&self, i: usize, path: &str) -> Value {
        match self.call(i, Method::GET, path, None).await {
            Some((s, v)) if s.is_success() => v,
            other => panic!("GET {path} on node {i}: {other:?}\n{}", self.log(i)),
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("agent.log")).unwrap_or_default()
    }

    pub async fn wait_up(&self, i: usize) {
        let t = Instant::now();
        loop {
            if let Some((StatusCode::OK, v)) = self.call(i, Method::GET, "/v2/leader", None).await {
                if v["leader"].is_string() {
                    return;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(30), "node {i} did not come up:\n{}", self.log(i));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_nodes(&self, n: usize) {
        wait_for("all nodes registered", Duration::from_secs(40), || async {
            self.get(0, "/wharf/v1/nodes").await["nodes"].as_array().map(Vec::len) == Some(n)
        })
        .await;
    }

    /// Index of the node that currently leads, as node `asker` sees it.
    pub async fn leader(&self, asker: usize) -> Option<usize> {
        let (_, v) = self.call(asker, Method::GET, "/v2/leader", None).await?;
        let addr = v["leader"].as_str()?.to_string();
        self.nodes.iter().position(|n| format!("{}:8080", n.ip) == addr)
    }

    /// Running tasks of `app` as node `i` sees them: (id, host).
    pub async fn running(&self, i: usize, app: &str) -> Vec<(String, String)> {
        let Some((_, v)) = self.call(i, Method::GET, &format!("/v2/apps{app}/tasks"), None).await else {
            return Vec::new();
        };
        v["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| (t["id"].as_str().unwrap_or("").to_string(), t["host"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    pub async fn all_tasks(&self, i: usize, app: &str) -> usize {
        self.call(i, Method::GET, &format!("/v2/apps{app}/tasks"), None)
            .await
            .and_then(|(_, v)| v["tasks"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// Cuts node `i` off from every other node (both directions).
    pub fn partition(&self, i: usize) {
        let ipt = |args: &[&str]| {
            let ok = quiet("iptables").args(args).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "iptables {args:?} failed (tests need root and iptables)");
        };
        let _ = quiet("iptables").args(["-N", &self.chain]).status();
        let _ = quiet("iptables").args(["-D", "INPUT", "-j", &self.chain]).status();
        ipt(&["-I", "INPUT", "-j", &self.chain]);
        let me = &self.nodes[i].ip;
        for (j, other) in self.nodes.iter().enumerate() {
            if j != i {
                ipt(&["-A", &self.chain, "-s", me, "-d", &other.ip, "-j", "DROP"]);
                ipt(&["-A", &self.chain, "-s", &other.ip, "-d", me, "-j", "DROP"]);
            }
        }
    }

    pub fn heal(&self) {
        let _ = quiet("iptables").args(["-F", &self.chain]).status();
    }

    pub fn task_pid(&self, i: usize, task: &str) -> Option<i32> {
        let s = std::fs::read_to_string(self.nodes[i].dir.join("data/sandboxes").join(task).join("state.json")).ok()?;
        let v: Value = serde_json::from_str(&s).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    pub fn node_of_host(&self, host: &str) -> usize {
        self.nodes.iter().position(|n| n.ip == host).expect("known host")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.heal();
        for n in &self.nodes {
            n.resume();
        }
        let _ = quiet("iptables").args(["-D", "INPUT", "-j", &self.chain]).status();
        let _ = quiet("iptables").args(["-X", &self.chain]).status();
        // Tasks outlive agents by design: delete the apps through a live node first.
        super::remove_all_apps_blocking(self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.addr()).collect());
        for n in &mut self.nodes {
            n.stop();
        }
        // Tasks still running now belong to nodes a test killed for good, or
        // to a cluster too broken to delete its apps; stop them through their
        // executors so no test leaks processes.
        for n in &self.nodes {
            let Ok(dir) = std::fs::read_dir(n.dir.join("data/sandboxes")) else { continue };
            for sandbox in dir.filter_map(Result::ok) {
                let state = std::fs::read_to_string(sandbox.path().join("state.json")).unwrap_or_default();
                let v: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
                if let (Some(pid), Value::Null) = (v["executor_pid"].as_i64(), &v["exit"]) {
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
                }
            }
        }
    }
}

pub fn quiet(program: &str) -> Command {
    let mut c = Command::new(program);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}
