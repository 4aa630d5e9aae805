//! `wharf cluster up|status|down`: a cluster of N `wharf agent` processes on
//! this machine, each on its own loopback address (every listener: HTTP,
//! RPC, DNS, service ports, HTTP front), with their data and logs under one
//! directory. The layout is kept in `DIR/cluster.json`, so `status` and
//! `down` find the nodes again; `down` also ends the nodes' tasks (their
//! executors, containers and cgroups), which a stopped node leaves running
//! by design.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LAYOUT: &str = "cluster.json";
const HTTP_PORT: u16 = 8080;
const RPC_PORT: u16 = 5050;
/// Host ports handed to one node's tasks: node i gets
/// `31000 + i*PORTS_PER_NODE ..`, so tasks of different nodes never collide.
const PORTS_PER_NODE: u16 = 200;
const MAX_NODES: usize = 100;
/// Flags `cluster up` sets per node; giving them after `--` would contradict it.
const OWN_FLAGS: [&str; 4] = ["--data-dir", "--http", "--rpc", "--join"];

pub struct UpArgs {
    pub nodes: usize,
    pub dir: PathBuf,
    pub base: Ipv4Addr,
    pub timeout: Duration,
    pub agent_args: Vec<String>,
}

/// One node as `up` started it.
#[derive(Serialize, Deserialize, Clone)]
struct LocalNode {
    name: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    log: PathBuf,
    pid: Option<i32>,
}

impl LocalNode {
    fn http(&self) -> String {
        format!("{}:{HTTP_PORT}", self.ip)
    }
    fn rpc(&self) -> String {
        format!("{}:{RPC_PORT}", self.ip)
    }
    fn url(&self) -> String {
        format!("http://{}", self.http())
    }
    /// The pid, if that process is still this node's agent (a pid can be reused).
    fn live_pid(&self) -> Option<i32> {
        let pid = self.pid?;
        let args = cmdline(pid)?;
        let ours = args.iter().any(|a| a == "agent") && args.iter().any(|a| Path::new(a) == self.data_dir);
        (ours && !zombie(pid)).then_some(pid)
    }
}

#[derive(Serialize, Deserialize)]
struct Layout {
    nodes: Vec<LocalNode>,
    agent_args: Vec<String>,
}

fn layout_path(dir: &Path) -> PathBuf {
    dir.join(LAYOUT)
}

fn read_layout(dir: &Path) -> anyhow::Result<Option<Layout>> {
    match std::fs::read(layout_path(dir)) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a cluster layout", layout_path(dir).display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", layout_path(dir).display())),
    }
}

fn write_layout(dir: &Path, layout: &Layout) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{LAYOUT}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(layout)?)?;
    std::fs::rename(&tmp, layout_path(dir)).with_context(|| format!("writing {}", layout_path(dir).display()))
}

fn plan(args: &UpArgs, dir: &Path) -> anyhow::Result<Vec<LocalNode>> {
    if args.nodes == 0 || args.nodes > MAX_NODES {
        bail!("--nodes: between 1 and {MAX_NODES}, got {}", args.nodes);
    }
    if !args.base.is_loopback() {
        bail!("--base: {} is not a loopback address (127.x.y.z); every node listens on its own one", args.base);
    }
    let [a, b, c, d] = args.base.octets();
    if usize::from(d) + args.nodes > 255 || d == 0 {
        bail!("--base: {} leaves no room for {} addresses before {a}.{b}.{c}.255", args.base, args.nodes);
    }
    for flag in &args.agent_args {
        let name = flag.split('=').next().unwrap_or(flag);
        if OWN_FLAGS.contains(&name) {
            bail!("{name}: `wharf cluster up` sets it for every node (use --dir and --base instead)");
        }
    }
    Ok((0..args.nodes)
        .map(|i| {
            let name = format!("node-{}", i + 1);
            LocalNode {
                ip: Ipv4Addr::new(a, b, c, d + i as u8),
                data_dir: dir.join(&name),
                log: dir.join(format!("{name}.log")),
                name,
                pid: None,
            }
        })
        .collect())
}

fn agent_command(
    node: &LocalNode,
    index: usize,
    extra: &[String],
    join: Option<(&str, Option<&str>)>,
) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating the wharf binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)
        .with_context(|| format!("opening {}", node.log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("agent").arg("--data-dir").arg(&node.data_dir).args(["--http", &node.http(), "--rpc", &node.rpc()]);
    let given = |flag: &str| extra.iter().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if !given("--ports") {
        let lo = 31000 + index as u16 * PORTS_PER_NODE;
        cmd.args(["--ports", &format!("{lo}-{}", lo + PORTS_PER_NODE - 1)]);
    }
    if !given("--hostname") {
        cmd.args(["--hostname", &node.ip.to_string()]);
    }
    // Asked for explicitly, so a taken port stops the node with the reason
    // instead of falling back to 8053/9090 behind the table `up` prints.
    if !given("--dns") {
        cmd.args(["--dns", &format!("{}:53", node.ip)]);
    }
    if !given("--http-lb") {
        cmd.args(["--http-lb", &format!("{}:80", node.ip)]);
    }
    if let Some((seed, token)) = join {
        cmd.args(["--join", seed]);
        if let Some(t) = token {
            cmd.args(["--join-token", t]);
        }
    }
    cmd.args(extra).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Its own process group: a Ctrl-C meant for this command (or the shell
    // that ran it) does not reach the nodes.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    Ok(cmd)
}

fn spawn(cmd: &mut Command, node: &mut LocalNode) -> anyhow::Result<std::process::Child> {
    let child = cmd.spawn().with_context(|| format!("starting {}", node.name))?;
    node.pid = Some(child.id() as i32);
    Ok(child)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?)
}

async fn get(client: &reqwest::Client, node: &LocalNode, path: &str) -> Option<Value> {
    let resp = client.get(format!("{}{path}", node.url())).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Fails with the end of the node's log when its process has ended.
fn check_alive(child: &mut std::process::Child, node: &LocalNode) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        bail!(
            "{} exited ({status}) before it was up; the end of {}:\n{}",
            node.name,
            node.log.display(),
            tail(&node.log, 15)
        );
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The cluster's join token, from the first node's data dir, if this build
/// of the agent makes one (`--join-token`); joiners need it then.
fn join_token(first: &LocalNode) -> Option<String> {
    let token = std::fs::read_to_string(first.data_dir.join("join-token")).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("--dir: cannot create {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let (mut nodes, extra, fresh) = match read_layout(&dir)? {
        Some(old) => {
            if let Some(n) = old.nodes.iter().find(|n| n.live_pid().is_some()) {
                bail!(
                    "a cluster is already up in {} ({} runs); see `wharf cluster status --dir {0}`, or stop it with `wharf cluster down --dir {0}`",
                    dir.display(),
                    n.name
                );
            }
            if old.nodes.len() != args.nodes {
                eprintln!(
                    "{} holds a cluster of {} nodes; starting it again as it was",
                    dir.display(),
                    old.nodes.len()
                );
            }
            (old.nodes, old.agent_args, false)
        }
        None => (plan(&args, &dir)?, args.agent_args.clone(), true),
    };
    let client = http_client()?;
    let deadline = Instant::now() + args.timeout;
    let mut children = Vec::new();
    let seed = nodes[0].rpc();
    let mut cmd = agent_command(&nodes[0], 0, &extra, None)?;
    children.push(spawn(&mut cmd, &mut nodes[0])?);
    write_layout(&dir, &Layout { nodes: nodes.clone(), agent_args: extra.clone() })?;
    if fresh {
        // The first node makes the cluster (and its join token) before anyone joins.
        eprintln!("{}: starting on {}", nodes[0].name, nodes[0].http());
        while get(&client, &nodes[0], "/v2/leader").await.is_none_or(|v| !v["leader"].is_string()) {
            check_alive(&mut children[0], &nodes[0])?;
            if Instant::now() > deadline {
                bail!("{} did not come up within --timeout; its log is {}", nodes[0].name, nodes[0].log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let token = join_token(&nodes[0]);
    for (i, node) in nodes.iter_mut().enumerate().skip(1) {
        let mut cmd = agent_command(node, i, &extra, Some((&seed, token.as_deref())))?;
        children.push(spawn(&mut cmd, node)?);
    }
    write_layout(&dir, &Layout { nodes: nodes.clone(), agent_args: extra.clone() })?;

    let want = nodes.len();
    let mut shown = usize::MAX;
    loop {
        for (child, node) in children.iter_mut().zip(&nodes) {
            check_alive(child, node)?;
        }
        let joined = joined(&client, &nodes).await;
        if joined != shown {
            eprintln!("nodes joined: {joined}/{want}");
            shown = joined;
        }
        if joined == want {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {joined} of {want} nodes joined within --timeout; the nodes keep trying (`wharf cluster status --dir {}`; logs: {})",
                dir.display(),
                dir.join("node-N.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{want} nodes up in {:.1} s, data and logs in {}", started.elapsed().as_secs_f64(), dir.display());
    print_nodes(&nodes);
    println!("\nPoint the CLI at any of them:\n  export WHARF_ADDR={}\n  wharf node ls", nodes[0].url());
    println!("Stop them (and their tasks): wharf cluster down --dir {} [--purge]", dir.display());
    Ok(())
}

/// Nodes that are up in the cluster's view and answer their own API with a
/// leader known.
async fn joined(client: &reqwest::Client, nodes: &[LocalNode]) -> usize {
    let mut listed = Vec::new();
    for n in nodes {
        if let Some(v) = get(client, n, "/wharf/v1/nodes").await {
            listed = v["nodes"].as_array().cloned().unwrap_or_default();
            break;
        }
    }
    let mut count = 0;
    for n in nodes {
        // Up: registered and heard from, so the scheduler places tasks on it.
        let registered =
            listed.iter().any(|l| l["http"].as_str() == Some(n.http().as_str()) && l["status"].as_str() == Some("up"));
        let has_leader = get(client, n, "/v2/leader").await.is_some_and(|v| v["leader"].is_string());
        count += usize::from(registered && has_leader);
    }
    count
}

fn print_nodes(nodes: &[LocalNode]) {
    let header = ["NODE", "HTTP API", "RPC", "DNS", "SERVICE PORTS, HTTP FRONT", "DATA"];
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.url(),
                n.rpc(),
                format!("{}:53", n.ip),
                format!("{} (:80)", n.ip),
                n.data_dir.display().to_string(),
            ]
        })
        .collect();
    print!("{}", super::table::table(&header, &rows, &[]));
}

pub async fn status(dir: &Path) -> anyhow::Result<()> {
    let Some(layout) = read_layout(dir)? else {
        bail!("no cluster in {} (start one with `wharf cluster up --dir {0}`)", dir.display());
    };
    let client = http_client()?;
    let mut listed = Vec::new();
    for n in &layout.nodes {
        if let Some(v) = get(&client, n, "/wharf/v1/nodes").await {
            listed = v["nodes"].as_array().cloned().unwrap_or_default();
            break;
        }
    }
    let header = ["NODE", "HTTP API", "PID", "PROCESS", "ROLE", "STATUS", "TASKS"];
    let mut up = 0;
    let rows: Vec<Vec<String>> = layout
        .nodes
        .iter()
        .map(|n| {
            let pid = n.live_pid();
            up += usize::from(pid.is_some());
            let seen = listed.iter().find(|l| l["http"].as_str() == Some(n.http().as_str()));
            let field = |k: &str| seen.and_then(|s| s[k].as_str()).unwrap_or("-").to_string();
            let role = match seen {
                Some(s) if s["leader"].as_bool() == Some(true) => format!("{} (leader)", field("role")),
                _ => field("role"),
            };
            vec![
                n.name.clone(),
                n.url(),
                pid.map_or("-".to_string(), |p| p.to_string()),
                if pid.is_some() { "running" } else { "stopped" }.to_string(),
                role,
                field("status"),
                seen.map_or("-".to_string(), |s| super::num(&s["tasks"])),
            ]
        })
        .collect();
    print!("{}", super::table::table(&header, &rows, &[6]));
    println!("{up} of {} nodes running; export WHARF_ADDR={}", layout.nodes.len(), layout.nodes[0].url());
    Ok(())
}

pub async fn down(dir: &Path, purge: bool) -> anyhow::Result<()> {
    let Some(mut layout) = read_layout(dir)? else {
        bail!("no cluster in {} (nothing to stop; `wharf cluster up --dir {0}` starts one)", dir.display());
    };
    let dir = std::fs::canonicalize(dir)?;
    // Nodes first, so no agent relaunches the tasks ended below.
    let agents: Vec<i32> = layout.nodes.iter().filter_map(LocalNode::live_pid).collect();
    stop_processes("nodes", &agents, Duration::from_secs(20));
    for n in &mut layout.nodes {
        n.pid = None;
    }
    write_layout(&dir, &layout)?;
    let roots: Vec<PathBuf> = layout.nodes.iter().map(|n| n.data_dir.join("sandboxes")).collect();
    let tasks = end_tasks_under(&roots).await?;
    println!("{} nodes stopped, {tasks} tasks ended", agents.len());
    if purge {
        std::fs::remove_dir_all(&dir).with_context(|| format!("--purge: removing {}", dir.display()))?;
        println!("removed {}", dir.display());
    }
    Ok(())
}

/// SIGTERM, then SIGKILL for what is still there after `grace`.
fn stop_processes(what: &str, pids: &[i32], grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    for &p in pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| !gone(p)) {
        if Instant::now() > deadline {
            eprintln!("{what} still running after {grace:?}: killing them");
            for &p in pids.iter().filter(|&&p| !gone(p)) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ends every task whose sandbox is under `sandbox_roots` (stopped nodes'
/// tasks keep running by design): their executors (which stop the task
/// with its kill grace period and clear its cgroup), then what is left of
/// the cgroups of tasks whose executor was already gone, and the Docker
/// containers the nodes started. Returns how many tasks were still running.
pub async fn end_tasks_under(sandbox_roots: &[PathBuf]) -> anyhow::Result<usize> {
    let executors = executors_under(sandbox_roots);
    stop_processes("task executors", &executors, Duration::from_secs(60));
    let mut ended = executors.len();
    let mut ids = Vec::new();
    for root in sandbox_roots {
        let Ok(entries) = std::fs::read_dir(root) else { continue };
        ids.extend(entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| model::TaskId::parse(n).ok())));
    }
    let live = agent::cgroup::task_cgroups().unwrap_or_default();
    for id in ids.iter().filter(|id| live.contains(id)) {
        let cgroup = agent::cgroup::TaskCgroup::open(id).with_context(|| format!("task {id}'s cgroup"))?;
        // Processes left without an executor (it was killed) are tasks too.
        ended += usize::from(!cgroup.pids().is_empty());
        cgroup.kill_all(Duration::from_secs(5), || {});
        cgroup.remove().with_context(|| format!("removing task {id}'s cgroup"))?;
    }
    ended += remove_docker_containers(sandbox_roots);
    Ok(ended)
}

/// Executors whose sandbox DIR is under one of `roots`: `wharf executor
/// --sandbox DIR` processes, and those an agent's launcher forked (they keep
/// the launcher's command line and work in DIR).
fn executors_under(roots: &[PathBuf]) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Some(args) = cmdline(pid) else { return false };
            let sandbox = match args.iter().position(|a| a == "--sandbox") {
                Some(i) => args.get(i + 1).map(PathBuf::from),
                None if args.iter().any(|a| a == "--launcher") => std::fs::read_link(format!("/proc/{pid}/cwd")).ok(),
                None => None,
            };
            args.iter().any(|a| a == "executor")
                && sandbox.is_some_and(|s| roots.iter().any(|r| s.starts_with(r) && s != *r))
        })
        .collect()
}

/// The Docker driver labels its containers with the node's sandbox root.
fn remove_docker_containers(roots: &[PathBuf]) -> usize {
    let mut removed = 0;
    for root in roots {
        let label = format!("label=wharf.sandbox-root={}", root.display());
        // No engine (or no docker CLI): the nodes ran no Docker tasks.
        let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", &label]).stderr(Stdio::null()).output()
        else {
            return removed;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f"]).args(&ids).stdout(Stdio::null()).status();
            removed += ids.len();
        }
    }
    removed
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
}

fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists() || zombie(pid)
}
