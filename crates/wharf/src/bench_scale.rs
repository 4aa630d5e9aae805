//! `wharf bench scale`: the core under a cluster far larger than this
//! machine. A real leader runs in this process (real store on redb, real
//! Raft with two more voters, which are `wharf agent` processes on loopback
//! with no resources, the real orchestrator and the real HTTP API). Thousands
//! of simulated nodes register through the same command real nodes use
//! (`RegisterNode`), and simulated agents report their tasks through the
//! same commands real agents send (`TaskStatuses`), in-process: no task
//! process is started.
//!
//! Each run deploys `--apps` apps with `--tasks-per-node` tasks per node in
//! all over HTTP, rolls 10% of the apps, then loses 10% of the nodes (the
//! `NodeLiveness` the liveness monitor proposes when heartbeats stop), and
//! reports placements/s end to end through Raft, read latency of the big
//! API answers during the run (at least `--reads` of each: a percentile of
//! a score of reads says little, so while there are fewer the run keeps
//! rolling 10% of the apps, the same load, and reading), the time to
//! replace the lost nodes' tasks, memory, and the snapshot's size and build
//! time.

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt};
use model::{NodeId, NodeInfo, Resources, TaskGoal, TaskState, TaskStatus};
use serde_json::json;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Command, Effect, Store, StoreConfig, Update};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::clock::now;

/// Ids of simulated nodes start here, far from the random ids of real ones.
const SIM_BASE: u64 = 1 << 40;

pub struct ScaleArgs {
    pub nodes: Vec<usize>,
    pub apps: usize,
    pub tasks_per_node: usize,
    /// Reads of each listing per run at least (see the module's doc).
    pub reads: usize,
    /// Seconds to keep each run's cluster up after measuring, to look at it
    /// (the UI, `/metrics`) before it is torn down.
    pub hold: f64,
}

struct Row {
    nodes: usize,
    tasks: usize,
    register_s: f64,
    deploy_s: f64,
    roll_s: f64,
    replace_s: f64,
    apps_read: Latency,
    tasks_read: Latency,
    rss_mib: f64,
    snapshot_mib: f64,
    snapshot_ms: f64,
    entries: u64,
}

/// Request latencies in microseconds.
#[derive(Default, Clone)]
struct Latency {
    samples: Vec<i64>,
}

impl Latency {
    /// The `p`th percentile (0-100) in milliseconds.
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.samples.clone();
        v.sort_unstable();
        crate::bench::percentile(&v, p / 100.0) as f64 / 1000.0
    }
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    if args.apps == 0 || args.nodes.is_empty() {
        bail!("--apps and --nodes must be positive");
    }
    let mut rows = Vec::new();
    for &n in &args.nodes {
        let tasks = n * args.tasks_per_node;
        let per_app = tasks.div_ceil(args.apps);
        println!("== {n} nodes, {} apps x {per_app} instances = {} tasks", args.apps, args.apps * per_app);
        rows.push(one_run(n, args.apps, per_app, args.reads, args.hold).await?);
    }
    println!();
    println!(
        "| nodes | tasks | register nodes | deploy (placements/s) | roll 10% | replace 10% of nodes | GET /v2/apps?embed=apps.tasks p50/p99 (reads) | GET /v2/tasks p50/p99 (reads) | leader RSS | snapshot | Raft entries |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} s | {:.1} s ({:.0}/s) | {:.1} s | {:.1} s | {:.0} / {:.0} ms ({}) | {:.0} / {:.0} ms ({}) | {:.0} MiB | {:.1} MiB in {:.0} ms | {} |",
            r.nodes,
            r.tasks,
            r.register_s,
            r.deploy_s,
            r.tasks as f64 / r.deploy_s,
            r.roll_s,
            r.replace_s,
            r.apps_read.pct(50.0),
            r.apps_read.pct(99.0),
            r.apps_read.samples.len(),
            r.tasks_read.pct(50.0),
            r.tasks_read.pct(99.0),
            r.tasks_read.samples.len(),
            r.rss_mib,
            r.snapshot_mib,
            r.snapshot_ms,
            r.entries,
        );
    }
    Ok(())
}

/// A follower voter: `wharf agent` with nothing to offer, so no task lands on it.
pub(crate) struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.0.wait();
    }
}

pub(crate) fn follower(dir: &std::path::Path, ip: &str, leader_rpc: &str, extra: &[&str]) -> anyhow::Result<Follower> {
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .arg("agent")
        .arg("--data-dir")
        .arg(dir)
        .args(["--http", &format!("{ip}:8080"), "--rpc", &format!("{ip}:5050"), "--join", leader_rpc])
        .args(["--resources", "cpus:0;mem:0;disk:0;gpus:0", "--hostname", ip])
        // The in-process leader serves Raft without TLS: these benchmarks
        // measure the store, not the transport (`bench cluster` does that).
        .arg("--insecure-rpc")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
        .spawn()
        .context("starting a follower voter")?;
    Ok(Follower(child))
}

/// The `i`th simulated node: 16 cpus, 64 GiB, an address of its own.
pub(crate) fn sim_node(i: usize) -> NodeInfo {
    NodeInfo {
        id: NodeId(SIM_BASE + i as u64),
        hostname: format!("sim-{i}"),
        advertise: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        http_addr: String::new(),
        rpc_addr: String::new(),
        resources: Resources { cpus: 16.0, mem: 65536.0, disk: 100_000.0, gpus: 0 },
        port_range: (31000, 32000),
        attributes: Default::default(),
        registered_at: now(),
        draining: false,
        unreachable_since: None,
        drivers: vec![model::DriverKind::Exec],
        images: Vec::new(),
    }
}

fn simulated(node: NodeId) -> bool {
    node.0 >= SIM_BASE
}

/// What a simulated agent reports for a task, as a real one would: a staged
/// task starts, a task asked to die is killed.
fn report_for(t: &model::Task) -> Option<TaskStatus> {
    if !simulated(t.node) || t.state.is_terminal() {
        return None;
    }
    let state = match (t.goal, t.state) {
        (TaskGoal::Running, TaskState::Staging) => TaskState::Running,
        (TaskGoal::Killed, TaskState::Unreachable) => return None,
        (TaskGoal::Killed, _) => TaskState::Killed,
        _ => return None,
    };
    Some(TaskStatus { task_id: t.id.clone(), state, at: now(), message: None, container_ip: None })
}

/// The simulated agents of every simulated node: follow the leader's feed
/// and report through one batching reporter, as the real agent does.
fn spawn_sim_agents(store: Arc<Store>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<TaskStatus>();
    let reporter = store.clone();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(s) = rx.try_recv() {
                batch.push(s);
            }
            // Retried until committed, like the agent's reporter.
            while let Err(e) = reporter.propose(Command::TaskStatuses(batch.clone())).await {
                tracing::warn!(error = %e, "simulated status report failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut sub = store.subscribe();
    tokio::spawn(async move {
        while let Some(u) = sub.next().await {
            match u {
                Update::Change(c) => {
                    for e in c.effects.iter() {
                        if let Effect::TaskChanged { after: Some(t), .. } = e {
                            // A lost node's agent reports nothing.
                            let up = c.state.nodes.get(&t.node).is_some_and(|n| n.is_reachable());
                            if let Some(s) = report_for(t).filter(|_| up) {
                                let _ = tx.send(s);
                            }
                        }
                    }
                }
                Update::Reset { state, .. } => {
                    for t in state.tasks.values() {
                        if let Some(s) = report_for(t) {
                            let _ = tx.send(s);
                        }
                    }
                }
            }
        }
    });
}

/// Reads the two big answers over and over until told to stop; `rounds`
/// counts the rounds in which both answered.
fn spawn_readers(
    base: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    rounds: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<(Latency, Latency)> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let (mut apps, mut tasks) = (Latency::default(), Latency::default());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (path, lat) in [("/v2/apps?embed=apps.tasks", &mut apps), ("/v2/tasks", &mut tasks)] {
                let t = Instant::now();
                let ok = match http.get(format!("{base}{path}")).send().await {
                    Ok(r) => r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    lat.samples.push(t.elapsed().as_micros() as i64);
                }
            }
            rounds.store(apps.samples.len().min(tasks.samples.len()), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (apps, tasks)
    })
}

/// Tasks running at their app's current version on reachable nodes.
fn running_now(store: &Store) -> usize {
    store.read(|s| {
        s.tasks
            .values()
            .filter(|t| t.state == TaskState::Running && t.goal == TaskGoal::Running)
            .filter(|t| s.nodes.get(&t.node).is_some_and(|n| n.is_reachable()))
            .filter(|t| s.apps.get(&t.app_id).is_some_and(|a| t.app_version >= a.last_config_change_at))
            .count()
    })
}

/// Polls `done` every 20 ms; a test that scans every task should test
/// something cheap first (see the deploy wait), or the poll itself takes a
/// core from the leader it measures.
pub(crate) async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn one_run(nodes: usize, apps: usize, per_app: usize, reads: usize, hold: f64) -> anyhow::Result<Row> {
    let dir = std::env::temp_dir().join(format!("wharf-bench-scale-{}-{nodes}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir, nodes, apps, per_app, reads, hold).await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("(kept {} for a look at the followers' logs)", dir.display());
    }
    result
}

async fn measure(
    dir: &std::path::Path,
    nodes: usize,
    apps: usize,
    per_app: usize,
    reads: usize,
    hold: f64,
) -> anyhow::Result<Row> {
    let leader_rpc = "127.79.0.1:5050";
    let rpc = TcpListener::bind(leader_rpc).await.with_context(|| format!("listening on {leader_rpc}"))?;
    let http = TcpListener::bind("127.79.0.1:8080").await.context("listening on 127.79.0.1:8080")?;
    let store = Arc::new(Store::open(StoreConfig::new(dir.join("leader"), leader_rpc.into())).await?);
    let rpc_router = store.rpc_router().merge(crate::liveness::router(Arc::new(crate::liveness::Liveness::default())));
    let rpc_server = tokio::spawn(async move { axum::serve(rpc, rpc_router).await });
    store.bootstrap_if_new().await?;
    wait_until_leader(&store).await?;
    let _followers = [
        follower(&dir.join("f2"), "127.79.0.2", leader_rpc, &[])?,
        follower(&dir.join("f3"), "127.79.0.3", leader_rpc, &[])?,
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.membership().voters.len() < 3 {
        if Instant::now() > deadline {
            bail!("the two follower voters did not join");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::spawn(crate::orchestrator::run(store.clone(), Default::default()));
    let ctx = Arc::new(api::ApiContext::new(store.clone(), dir.join("sandboxes")));
    let api_server = tokio::spawn(async move { axum::serve(http, api::router(ctx)).await });
    spawn_sim_agents(store.clone());

    let t = Instant::now();
    propose_all(&store, (0..nodes).map(|i| Command::RegisterNode(sim_node(i))))
        .await
        .context("registering simulated nodes")?;
    let register_s = t.elapsed().as_secs_f64();
    println!("   {nodes} nodes registered in {register_s:.1} s");

    let base = "http://127.79.0.1:8080".to_string();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers = spawn_readers(base.clone(), stop.clone(), rounds.clone());
    let client = reqwest::Client::new();
    let total = apps * per_app;

    // Deploy.
    let t = Instant::now();
    send_all(
        "POST /v2/apps",
        (0..apps).map(|i| {
            let app = json!({"id": format!("/bench/app-{i}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 1,
                             "instances": per_app, "portDefinitions": [{"port": 0}]});
            client.post(format!("{base}/v2/apps")).json(&app)
        }),
    )
    .await?;
    // The cheap test first: counting tasks scans them all (tens of ms at
    // 100,000 tasks), which must not eat the leader's CPU while it places.
    wait_until("every task to run and every deployment to finish", Duration::from_secs(600), || {
        store.read(|s| s.deployments.is_empty()) && running_now(&store) >= total
    })
    .await?;
    let deploy_s = t.elapsed().as_secs_f64();
    println!(
        "   {total} tasks running {deploy_s:.1} s after the first POST ({:.0} placements/s)",
        total as f64 / deploy_s
    );

    // Roll 10% of the apps (a config change replaces every task).
    let rolled = (apps / 10).max(1);
    let t = Instant::now();
    roll(&store, &client, &base, rolled, total, 2).await?;
    let roll_s = t.elapsed().as_secs_f64();
    println!("   {rolled} apps ({} tasks) rolled in {roll_s:.1} s", rolled * per_app);

    // Lose 10% of the nodes.
    let lost = (nodes / 10).max(1);
    let on_lost = store.read(|s| (0..lost).map(|i| s.tasks_on(NodeId(SIM_BASE + i as u64)).count()).sum::<usize>());
    let t = Instant::now();
    let at = now();
    let lost_nodes =
        (0..lost).map(|i| Command::NodeLiveness { node: NodeId(SIM_BASE + i as u64), reachable: false, at });
    propose_all(&store, lost_nodes).await.context("marking nodes lost")?;
    // Nothing cheap to test first here: scan at most every 100 ms.
    let mut last_scan = Instant::now();
    wait_until("the lost nodes' tasks to be replaced", Duration::from_secs(600), || {
        if last_scan.elapsed() < Duration::from_millis(100) {
            return false;
        }
        last_scan = Instant::now();
        running_now(&store) >= total
    })
    .await?;
    let replace_s = t.elapsed().as_secs_f64();
    println!("   {lost} nodes lost ({on_lost} tasks): all replaced in {replace_s:.1} s");

    // Too few reads for a p99 that means something: the same churn again.
    let mut generation = 3;
    while rounds.load(std::sync::atomic::Ordering::Relaxed) < reads {
        roll(&store, &client, &base, rolled, total, generation).await?;
        generation += 1;
    }
    if generation > 3 {
        println!("   {} more rolls of {rolled} apps to read each listing {reads} times", generation - 3);
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (apps_read, tasks_read) = readers.await?;
    let snap = store.snapshot();
    let t = Instant::now();
    let bytes = serde_json::to_vec(&*snap)?;
    let snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss_mib = crate::bench::rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0;
    let row = Row {
        nodes,
        tasks: total,
        register_s,
        deploy_s,
        roll_s,
        replace_s,
        apps_read,
        tasks_read,
        rss_mib,
        snapshot_mib: bytes.len() as f64 / (1024.0 * 1024.0),
        snapshot_ms,
        entries: snap.applied_index,
    };
    drop(snap);
    if hold > 0.0 {
        println!("   holding for {hold:.0} s: {base}/ui/ and {base}/metrics");
        tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    }
    api_server.abort();
    rpc_server.abort();
    store.shutdown().await;
    // The next run reuses the addresses: give the listeners time to close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(row)
}

/// Changes the first `rolled` apps' config (`ROLL=generation`), which
/// replaces all their tasks, and waits until every task runs again.
async fn roll(
    store: &Store,
    client: &reqwest::Client,
    base: &str,
    rolled: usize,
    total: usize,
    generation: usize,
) -> anyhow::Result<()> {
    send_all(
        "PATCH",
        (0..rolled).map(|i| {
            client
                .patch(format!("{base}/v2/apps/bench/app-{i}"))
                .json(&json!({"env": {"ROLL": generation.to_string()}}))
        }),
    )
    .await?;
    wait_until("the rolled apps' deployments to finish", Duration::from_secs(600), || {
        store.read(|s| s.deployments.is_empty()) && running_now(store) >= total
    })
    .await
}

/// Sends the requests 16 at a time; fails with the first refused one.
async fn send_all(what: &str, requests: impl Iterator<Item = reqwest::RequestBuilder>) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(requests)
        .map(|req| async move {
            let r = req.send().await?;
            if !r.status().is_success() {
                bail!("{what}: {} {}", r.status(), r.text().await.unwrap_or_default());
            }
            Ok(())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// Proposes the commands 64 at a time, as many nodes (or the liveness
/// monitor) would; fails with the first store error.
pub(crate) async fn propose_all(store: &Arc<Store>, cmds: impl Iterator<Item = Command>) -> anyhow::Result<()> {
    let results: Vec<_> = stream::iter(cmds)
        .map(|cmd| {
            let store = store.clone();
            async move { store.propose(cmd).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    match results.into_iter().find(|r| r.is_err()) {
        Some(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

pub(crate) async fn wait_until_leader(store: &Store) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.is_leader() {
        if Instant::now() > deadline {
            bail!("the benchmark's store did not become leader");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
