//! End-to-end harness: a real `wharf agent` process on loopback ports with
//! its own data directory, driven over HTTP with a real client. Dropping a
//! node deletes its apps (tasks outlive the agent by design), then stops it.

#![allow(dead_code)]

pub mod cluster;
pub mod hosts;
pub mod python;
pub mod registry;
pub mod sse;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Node {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub rpc: u16,
    pub ports: (u16, u16),
    pub extra: Vec<String>,
    /// Environment set for the agent process only.
    pub env: Vec<(String, String)>,
    /// The Authorization header the harness sends (`--http-credentials`).
    pub auth: Option<String>,
    pub client: reqwest::Client,
}

impl Node {
    pub async fn start() -> Node {
        Node::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Node {
        Node::start_with_env(extra, &[]).await
    }

    /// A node with `--http-credentials user:pass`; the harness's own
    /// requests (and the cleanup) send them.
    pub async fn start_with_credentials(user: &str, pass: &str) -> Node {
        let creds = format!("{user}:{pass}");
        Node::start_with_env_auth(&["--http-credentials", &creds], &[], Some(basic_auth(user, pass))).await
    }

    pub async fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Node {
        Node::start_with_env_auth(extra, env, None).await
    }

    async fn start_with_env_auth(extra: &[&str], env: &[(&str, &str)], auth: Option<String>) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(a) = &auth {
            headers.insert(reqwest::header::AUTHORIZATION, a.parse().expect("header"));
        }
        // A port range of its own per node, so parallel tests never collide.
        let base = 20000 + (free_port() % 120) * 100;
        let mut n = Node {
            child: None,
            dir,
            http: free_port(),
            rpc: free_port(),
            ports: (base, base + 99),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            auth,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .default_headers(headers)
                .build()
                .expect("client"),
        };
        // A port picked free can be taken by another process before the
        // node binds it: pick new ones and try again.
        for _ in 0..5 {
            if n.try_spawn().await {
                return n;
            }
            if !n.log().contains("Address already in use") {
                break;
            }
            n.http = free_port();
            n.rpc = free_port();
        }
        panic!("node did not come up:\n{}", n.log());
    }

    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn spawn(&mut self) {
        assert!(self.try_spawn().await, "node did not come up:\n{}", self.log());
    }

    /// Starts the agent and waits until it knows a leader; `false` when it
    /// exited or did not come up in 20 s.
    async fn try_spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log file");
        let child = Command::new(WHARF)
            .arg("agent")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--http", &format!("127.0.0.1:{}", self.http)])
            .args(["--rpc", &format!("127.0.0.1:{}", self.rpc)])
            .args(["--ports", &format!("{}-{}", self.ports.0, self.ports.1)])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // What the node prints for its operator (an autolock unlock key).
            .stdout(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("agent.stdout"))
                    .expect("stdout file"),
            )
            .stderr(log)
            .spawn()
            .expect("start wharf agent");
        self.child = Some(child);
        let t = Instant::now();
        loop {
            if let Ok((StatusCode::OK, v)) = self.call(Method::GET, "/v2/leader", None).await {
                if v["leader"].is_string() {
                    return true;
                }
            }
            let exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || t.elapsed() > Duration::from_secs(20) {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the agent process (SIGTERM) and waits for it; tasks keep running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        self.dir.path().join("data").join("sandboxes").join(task_id)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> reqwest::Result<(StatusCode, Value)> {
        let mut req = self.client.request(method, format!("{}{}", self.addr(), path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    pub async fn raw(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .request(method, format!("{}{}", self.addr(), path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await.expect("GET");
        assert!(s.is_success(), "GET {path}: {s} {v}");
        v
    }

    pub async fn tasks(&self, app: &str) -> Vec<Value> {
        let (s, v) = self.call(Method::GET, &format!("/v2/apps{app}/tasks"), None).await.expect("tasks");
        if !s.is_success() {
            return Vec::new();
        }
        v["tasks"].as_array().cloned().unwrap_or_default()
    }

    pub async fn running(&self, app: &str) -> Vec<Value> {
        self.tasks(app).await.into_iter().filter(|t| t["state"] == "TASK_RUNNING").collect()
    }

    /// Waits until `app` has exactly `n` running tasks and no others.
    pub async fn wait_running(&self, app: &str, n: usize) -> Vec<Value> {
        let t = Instant::now();
        loop {
            let all = self.tasks(app).await;
            let running: Vec<Value> = all.iter().filter(|t| t["state"] == "TASK_RUNNING").cloned().collect();
            if running.len() == n && all.len() == n {
                return running;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{app}: wanted {n} running tasks, have {all:?}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pid of a task's main process, from its executor's state file.
    /// POSTs an app and expects 201.
    pub async fn deploy(&self, app: Value) {
        let (s, v) = self.call(Method::POST, "/v2/apps", Some(&app)).await.expect("POST");
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Waits for an app's `lastTaskFailure` and returns it.
    pub async fn last_failure(&self, app: &str) -> Value {
        for _ in 0..300 {
            let f =
                self.get(&format!("/v2/apps{app}?embed=app.lastTaskFailure")).await["app"]["lastTaskFailure"].clone();
            if !f.is_null() {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{app}: no task failure recorded\n{}", self.log());
    }

    pub fn task_pid(&self, task_id: &str) -> i32 {
        let state = std::fs::read_to_string(self.sandbox(task_id).join("state.json")).expect("state.json");
        let v: Value = serde_json::from_str(&state).expect("state json");
        v["pid"].as_i64().expect("pid") as i32
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.child.is_some() {
            remove_all_apps_as(vec![self.addr()], self.auth.clone());
        }
        self.stop();
    }
}

/// Tasks outlive agents by design, so a test cleans up through the API:
/// through the first of `bases` that answers, delete every app and wait
/// (bounded) until no task is left. Blocking, for use in `Drop`.
pub fn remove_all_apps_blocking(bases: Vec<String>) {
    remove_all_apps_as(bases, None)
}

/// `remove_all_apps_blocking` sending `auth` as the Authorization header.
pub fn remove_all_apps_as(bases: Vec<String>, auth: Option<String>) {
    let cleanup = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(a) = auth.as_deref().and_then(|a| a.parse().ok()) {
                headers.insert(reqwest::header::AUTHORIZATION, a);
            }
            let c = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .default_headers(headers)
                .build()
                .expect("client");
            for base in &bases {
                let Ok(r) = c.get(format!("{base}/v2/apps")).send().await else { continue };
                let Ok(v) = r.json::<Value>().await else { continue };
                for a in v["apps"].as_array().cloned().unwrap_or_default() {
                    if let Some(id) = a["id"].as_str() {
                        let _ = c.delete(format!("{base}/v2/apps{id}?force=true")).send().await;
                    }
                }
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(15) {
                    let Ok(r) = c.get(format!("{base}/v2/tasks")).send().await else { break };
                    let Ok(v) = r.json::<Value>().await else { break };
                    if v["tasks"].as_array().is_none_or(|a| a.is_empty()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                return;
            }
        });
    });
    let _ = cleanup.join();
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The Authorization header value of HTTP Basic credentials.
pub fn basic_auth(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference")
}

/// GETs `url` until it answers 2xx (a task that just started may not listen
/// yet) and returns the body.
pub async fn http_get(url: &str) -> String {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().expect("client");
    let mut last = String::new();
    for _ in 0..100 {
        match c.get(url).send().await {
            Ok(r) if r.status().is_success() => return r.text().await.expect("body"),
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("GET {url}: {last}");
}
