//! Hosts with IP addresses of their own on one kernel. Each host is a
//! network namespace with one veth onto a test bridge and an address from a
//! private test subnet, 10.231.N.0/24, and runs the real `wharf agent`
//! inside it on the ports a real host would use (HTTP 8080, RPC 5050, DNS
//! 53, the load balancer's). The bridge lives in a namespace of its own (so
//! the host's firewall, which drops bridged traffic once Docker is
//! installed, never sees the hosts' traffic), and the test process reaches
//! the hosts through one more veth whose end here has 10.231.N.254.
//!
//! N is a slot held with a lock file for as long as the test lives, so tests
//! run in parallel, in one process or several. Everything of a slot is named
//! after it (`wharf-tN-hI` for host I, `wharf-tN-sw` for the bridge,
//! `whtcN` for the test's own leg) and removed on drop, a failed test's
//! included; slots whose lock nobody holds are cleaned of what a killed test
//! left before a new test starts.

use super::{wait_for, WHARF};
use nix::fcntl::{Flock, FlockArg};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const LOCK_DIR: &str = "/run/wharf-test-hosts";
const NS_PREFIX: &str = "wharf-t";
/// Slots 1..=SLOTS: the third octet of a test's subnet.
const SLOTS: usize = 250;
pub const HTTP_PORT: u16 = 8080;
pub const RPC_PORT: u16 = 5050;
/// Host ports for tasks: the same on every host, as on real machines.
const TASK_PORTS: &str = "31000-31099";

/// Runs `ip` with `args`, panicking with its error output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (Debian's iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Runs `ip` with `args`; failures are expected (cleaning what may not exist).
fn ip_quiet(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn host_ns(slot: usize, i: usize) -> String {
    format!("{NS_PREFIX}{slot}-h{i}")
}

fn switch_ns(slot: usize) -> String {
    format!("{NS_PREFIX}{slot}-sw")
}

fn test_leg(slot: usize) -> String {
    format!("whtc{slot}")
}

/// Every network namespace named by `ip netns list`.
fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The lock of slot `slot`, if nobody holds it.
fn try_lock(slot: usize) -> Option<Flock<File>> {
    std::fs::create_dir_all(LOCK_DIR).expect("lock dir");
    let f = File::create(format!("{LOCK_DIR}/{slot}.lock")).expect("lock file");
    Flock::lock(f, FlockArg::LockExclusiveNonblock).ok()
}

/// Kills every process left in slot `slot`'s namespaces and deletes them.
fn clean_slot(slot: usize) {
    let prefix = format!("{NS_PREFIX}{slot}-");
    for ns in namespaces().into_iter().filter(|n| n.starts_with(&prefix)) {
        for pid in pids_in(&ns) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        ip_quiet(&["netns", "del", &ns]);
    }
    ip_quiet(&["link", "del", &test_leg(slot)]);
}

fn pids_in(ns: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output().expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// What tests killed before their drop left behind: slots with namespaces
/// whose lock nobody holds.
fn sweep_stale() {
    let mut slots: Vec<usize> =
        namespaces().iter().filter_map(|n| n.strip_prefix(NS_PREFIX)?.split('-').next()?.parse().ok()).collect();
    slots.sort();
    slots.dedup();
    for slot in slots {
        if let Some(lock) = try_lock(slot) {
            clean_slot(slot);
            drop(lock);
        }
    }
}

/// One test's subnet: the bridge, the test's leg onto it, and the hosts'
/// namespaces. Held until dropped.
pub struct Net {
    pub slot: usize,
    _lock: Flock<File>,
}

impl Net {
    pub fn new() -> Net {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        sweep_stale();
        let start = std::process::id() as usize + NEXT.fetch_add(1, Ordering::Relaxed) * 7;
        for k in 0..SLOTS {
            let slot = (start + k) % SLOTS + 1;
            let Some(lock) = try_lock(slot) else { continue };
            clean_slot(slot);
            let net = Net { slot, _lock: lock };
            net.make_switch();
            return net;
        }
        panic!("no free test subnet 10.231.N.0/24");
    }

    fn make_switch(&self) {
        let sw = switch_ns(self.slot);
        ip(&["netns", "add", &sw]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        // Bridged frames skip iptables here whatever br_netfilter does elsewhere.
        let _ = Command::new("ip")
            .args(["netns", "exec", &sw, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"])
            .stderr(Stdio::null())
            .status();
        let leg = test_leg(self.slot);
        ip(&["link", "add", &leg, "type", "veth", "peer", "name", "test", "netns", &sw]);
        ip(&["-n", &sw, "link", "set", "test", "master", "br0", "up"]);
        ip(&["addr", "add", &format!("10.231.{}.254/24", self.slot), "dev", &leg]);
        ip(&["link", "set", &leg, "up"]);
    }

    pub fn ip_of(&self, i: usize) -> String {
        format!("10.231.{}.{}", self.slot, i + 1)
    }

    /// Host `i`'s namespace, wired to the bridge, with its address and `lo` up.
    pub fn add_host(&self, i: usize) -> String {
        let ns = host_ns(self.slot, i);
        let sw = switch_ns(self.slot);
        let port = format!("h{i}");
        ip(&["netns", "add", &ns]);
        ip(&["-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.ip_of(i)), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        clean_slot(self.slot);
    }
}

/// One host: its namespace, address, data and agent process.
pub struct Host {
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Host {
    pub fn addr(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }

    pub fn rpc(&self) -> String {
        format!("{}:{RPC_PORT}", self.ip)
    }

    /// Starts `wharf agent` in the host's namespace, joining through `join`
    /// (an RPC address and the join token) when given.
    pub fn spawn(&mut self, join: Option<(&str, &str)>, extra: &[String]) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("agent.log")).expect("log");
        // `nsenter --net` rather than `ip netns exec`: the latter also gives
        // the process a fresh /sys, without the cgroup hierarchies the agent
        // puts its tasks in. nsenter execs, so the child is the agent itself.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.ns))
            .arg("--")
            .arg(WHARF)
            .arg("agent")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--http", &format!("{}:{HTTP_PORT}", self.ip), "--rpc", &self.rpc()])
            .args(["--advertise", &self.ip, "--dns", &format!("{}:53", self.ip)])
            // Namespaces share the kernel's host name; real hosts each have their own.
            .args(["--hostname", &self.ip])
            .args(["--ports", TASK_PORTS])
            .args(extra)
            .env_remove("WHARF_JOIN_TOKEN")
            .env_remove("WHARF_TOKEN")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some((seed, token)) = join {
            cmd.args(["--join", seed, "--join-token", token]);
        }
        self.child = Some(cmd.spawn().expect("nsenter (util-linux) starts wharf agent"));
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if the agent has not ended within 10 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if c.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Hosts of one cluster on one test subnet.
pub struct Hosts {
    pub hosts: Vec<Host>,
    /// Flags every agent gets.
    pub extra: Vec<String>,
    pub token: String,
    pub client: reqwest::Client,
    net: Net,
    dir: tempfile::TempDir,
}

impl Hosts {
    /// `n` hosts: the first starts alone, the others join it with its join
    /// token over their own addresses.
    pub async fn start(n: usize, extra: &[&str]) -> Hosts {
        let net = Net::new();
        let mut h = Hosts {
            hosts: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            token: String::new(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client"),
            net,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        h.new_host();
        h.hosts[0].spawn(None, &h.extra);
        h.wait_up(0).await;
        let path = h.hosts[0].dir.join("data/join-token");
        wait_for("the first host's join token", Duration::from_secs(30), || async { path.exists() }).await;
        h.token = std::fs::read_to_string(&path).expect("join token").trim().to_string();
        for _ in 1..n {
            h.join_new_host().await;
        }
        h.wait_nodes_up(0, n).await;
        h
    }

    fn new_host(&mut self) -> usize {
        let i = self.hosts.len();
        let ns = self.net.add_host(i);
        let dir = self.dir.path().join(format!("h{i}"));
        std::fs::create_dir_all(&dir).expect("host dir");
        self.hosts.push(Host { ns, ip: self.net.ip_of(i), dir, child: None });
        i
    }

    /// A new host that joins through the first host's RPC address; returns its index.
    pub async fn join_new_host(&mut self) -> usize {
        let i = self.new_host();
        let seed = self.hosts[0].rpc();
        let (token, extra) = (self.token.clone(), self.extra.clone());
        self.hosts[i].spawn(Some((&seed, &token)), &extra);
        self.wait_up(i).await;
        i
    }

    /// Starts host `i`'s agent again on its data (it is a member already).
    pub async fn restart(&mut self, i: usize) {
        let extra = self.extra.clone();
        self.hosts[i].spawn(None, &extra);
        self.wait_up(i).await;
    }

    pub fn ip(&self, i: usize) -> &str {
        &self.hosts[i].ip
    }

    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i].ns
    }

    pub fn index_of(&self, ip: &str) -> usize {
        self.hosts.iter().position(|h| h.ip == ip).unwrap_or_else(|| panic!("{ip} is none of the hosts"))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].dir.join("agent.log")).unwrap_or_default()
    }

    pub async fn call(&self, i: usize, m: Method, path: &str, body: Option<&Value>) -> Option<(StatusCode, Value)> {
        let mut req = self.client.request(m, format!("{}{}", self.hosts[i].addr(), path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.ok()?;
        let s = resp.status();
        Some((s, resp.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, i: usize, path: &str) -> Value {
        match self.call(i, Method::GET, path, None).await {
            Some((s, v)) if s.is_success() => v,
            other => panic!("GET {path} on host {i}: {other:?}\n{}", self.log(i)),
        }
    }

    pub async fn wait_up(&self, i: usize) {
        let t = Instant::now();
        loop {
            if let Some((StatusCode::OK, v)) = self.call(i, Method::GET, "/v2/leader", None).await {
                if v["leader"].is_string() {
                    return;
                }
            }
            assert!(t.elapsed() < Duration::from_secs(30), "host {i} did not come up:\n{}", self.log(i));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Node statuses as host `via` sees them: advertised address → status.
    pub async fn node_status(&self, via: usize) -> std::collections::BTreeMap<String, String> {
        let Some((_, v)) = self.call(via, Method::GET, "/wharf/v1/nodes", None).await else {
            return Default::default();
        };
        v["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| (n["address"].as_str().unwrap_or("").to_string(), n["status"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    /// Waits until host `via` lists `n` nodes, all up, at the hosts' addresses.
    pub async fn wait_nodes_up(&self, via: usize, n: usize) {
        let want: std::collections::BTreeMap<String, String> =
            self.hosts[..n].iter().map(|h| (h.ip.clone(), "up".to_string())).collect();
        let t = Instant::now();
        loop {
            let have = self.node_status(via).await;
            if have == want {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(40), "host {via} sees nodes {have:?}, want {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Running tasks of `app` as host `via` sees them: (id, host, first port).
    pub async fn running(&self, via: usize, app: &str) -> Vec<(String, String, u16)> {
        self.tasks(via, app)
            .await
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or("").to_string(),
                    t["host"].as_str().unwrap_or("").to_string(),
                    t["ports"][0].as_u64().unwrap_or(0) as u16,
                )
            })
            .collect()
    }

    /// Every task of `app` host `via` lists, whatever its state.
    pub async fn tasks(&self, via: usize, app: &str) -> Vec<Value> {
        let Some((_, v)) = self.call(via, Method::GET, &format!("/v2/apps{app}/tasks"), None).await else {
            return Vec::new();
        };
        v["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Runs `args` inside host `i`'s namespace (`ip netns exec`).
    pub fn exec_in(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", self.ns(i)]).args(args).output().expect("ip netns exec")
    }

    /// `curl` from host `from` to `url`: the body if it answered 2xx.
    pub fn curl_from(&self, from: usize, url: &str) -> Option<String> {
        let out = self.exec_in(from, &["curl", "-sSf", "-m", "3", url]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// Cuts host `i` off the network: its link goes down inside its namespace.
    pub fn cut(&self, i: usize) {
        ip(&["-n", self.ns(i), "link", "set", "eth0", "down"]);
    }

    pub fn reconnect(&self, i: usize) {
        ip(&["-n", self.ns(i), "link", "set", "eth0", "up"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            ip_quiet(&["-n", self.ns(i), "link", "set", "eth0", "up"]);
        }
        // Tasks outlive agents by design: delete the apps through a live host first.
        super::remove_all_apps_blocking(self.hosts.iter().filter(|h| h.child.is_some()).map(|h| h.addr()).collect());
        for h in &mut self.hosts {
            h.stop();
        }
        // Tasks of hosts a test killed for good: their executors end them
        // (and their cgroups) on SIGTERM; `Net` kills whatever is left.
        for h in &self.hosts {
            let Ok(dir) = std::fs::read_dir(h.dir.join("data/sandboxes")) else { continue };
            for sandbox in dir.filter_map(Result::ok) {
                let state = std::fs::read_to_string(sandbox.path().join("state.json")).unwrap_or_default();
                let v: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
                if let (Some(pid), Value::Null) = (v["executor_pid"].as_i64(), &v["exit"]) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::SIGTERM);
                }
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) && self.hosts.iter().any(|h| !pids_in(&h.ns).is_empty()) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
