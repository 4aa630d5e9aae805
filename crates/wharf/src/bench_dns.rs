//! `wharf bench dns`: Wharf's DNS server beside NSD, in the same run, with
//! `dnsperf` (Debian's) on loopback, and the time from a task's health
//! turning passing to its name answering on another node.
//!
//! A real leader store runs in this process (on 127.76.0.1) and a real
//! `wharf agent` follower on 127.76.0.2 serves DNS from its replica. `--apps`
//! apps with one task each on simulated nodes are written as commands; the
//! queries are each app's A and SRV names. NSD (on 127.76.0.3) answers the
//! same records from a zone file written from the follower's own records
//! (its Mesos-DNS `/v1/enumerate`), so both serve identical answers.

use anyhow::{bail, Context};
use dns::names::{canonical, label, mesos_task_name, LabelSpec};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use model::{AppId, AppSpec, HealthReport, PortSpec, Resources, Task, TaskId, TaskState, TaskStatus};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{Command, Store, StoreConfig};
use tokio::net::{TcpListener, UdpSocket};

use crate::bench_scale::{follower, propose_all, sim_node, wait_until, wait_until_leader};
use crate::clock::now;

pub struct DnsBenchArgs {
    pub apps: usize,
    pub seconds: u64,
    pub tasks: usize,
}

const LEADER: &str = "127.76.0.1";
const FOLLOWER: &str = "127.76.0.2";
const NSD: &str = "127.76.0.3";

pub async fn run(args: DnsBenchArgs) -> anyhow::Result<()> {
    for tool in ["dnsperf", "nsd"] {
        if which(tool).is_none() {
            bail!("`{tool}` is not installed: apt-get install dnsperf nsd");
        }
    }
    if args.apps == 0 || args.tasks == 0 {
        bail!("--apps and --tasks must be positive");
    }
    let dir = std::env::temp_dir().join(format!("wharf-bench-dns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let r = measure(&dir, &args).await;
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("(kept {} for a look at the logs)", dir.display());
    }
    r
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).chain(["/usr/sbin".into(), "/sbin".into()]).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

async fn measure(dir: &std::path::Path, args: &DnsBenchArgs) -> anyhow::Result<()> {
    let leader_rpc = format!("{LEADER}:5050");
    let rpc = TcpListener::bind(&leader_rpc).await.with_context(|| format!("listening on {leader_rpc}"))?;
    let store = Arc::new(Store::open(StoreConfig::new(dir.join("leader"), leader_rpc.clone())).await?);
    let rpc_router = store.rpc_router().merge(crate::liveness::router(Arc::new(crate::liveness::Liveness::default())));
    tokio::spawn(async move { axum::serve(rpc, rpc_router).await });
    store.bootstrap_if_new().await?;
    wait_until_leader(&store).await?;
    let dns_addr = format!("{FOLLOWER}:53");
    let _follower = follower(&dir.join("follower"), FOLLOWER, &leader_rpc, &["--dns", &dns_addr])?;
    wait_until("the follower to join", Duration::from_secs(30), || store.membership().voters.len() >= 2).await?;

    // Apps and their tasks, as commands.
    let nodes: Vec<model::NodeInfo> = (0..10).map(sim_node).collect();
    propose_all(&store, nodes.iter().cloned().map(Command::RegisterNode)).await?;
    let ids: Vec<AppId> = (0..args.apps).map(|i| AppId::parse(&format!("/bench/app{i}"))).collect::<Result<_, _>>()?;
    propose_all(&store, ids.iter().map(|id| put_app(id, false))).await?;
    let tasks: Vec<Task> = ids.iter().enumerate().map(|(i, id)| task(id, i, &nodes)).collect();
    place_running(&store, tasks).await?;
    let dns: std::net::SocketAddr = dns_addr.parse()?;
    let last = format!("app{}-bench.marathon.mesos.", args.apps - 1);
    wait_dns(dns, &last, Duration::from_secs(30)).await.context("the follower's DNS never answered")?;

    // The same questions to both servers.
    let queries = dir.join("queries.txt");
    let mut q = String::new();
    for i in 0..args.apps {
        q.push_str(&format!("app{i}-bench.marathon.mesos A\n_app{i}-bench._tcp.marathon.mesos SRV\n"));
    }
    std::fs::write(&queries, q)?;
    let _nsd = start_nsd(dir).await?;
    println!("== dnsperf, {} s each, {} names (A and SRV of {} apps)", args.seconds, args.apps * 2, args.apps);
    let wharf = dnsperf(FOLLOWER, &queries, args.seconds)?;
    let nsd = dnsperf(NSD, &queries, args.seconds)?;
    let wharf2 = dnsperf(FOLLOWER, &queries, args.seconds)?;
    println!("| server | queries/s | avg latency | lost |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, r) in [("wharf (1st)", &wharf), ("nsd", &nsd), ("wharf (2nd)", &wharf2)] {
        println!("| {name} | {:.0} | {:.3} ms | {} |", r.qps, r.avg_ms, r.lost);
    }
    println!(
        "wharf / nsd queries/s: {:.2}x and {:.2}x (mean {:.2}x)",
        wharf.qps / nsd.qps,
        wharf2.qps / nsd.qps,
        (wharf.qps + wharf2.qps) / 2.0 / nsd.qps
    );

    // Propagation: health passes on the leader -> name answers on the follower.
    let prop = AppId::parse("/bench/prop")?;
    store.propose(put_app(&prop, true)).await?;
    let prop_tasks: Vec<Task> = (0..args.tasks).map(|i| task(&prop, args.apps + i, &nodes)).collect();
    place_running(&store, prop_tasks.clone()).await?;
    let sock = UdpSocket::bind(format!("{LEADER}:0")).await?;
    let app_label = label(&mesos_task_name(&prop), LabelSpec::Rfc1123);
    let mut samples = Vec::new();
    for t in &prop_tasks {
        let name = format!("{}.marathon.mesos.", canonical(&app_label, t.id.as_str(), &t.node.to_string()));
        let report =
            HealthReport { task_id: t.id.clone(), alive: true, consecutive_failures: 0, at: now(), cause: None };
        let start = Instant::now();
        store.propose(Command::TaskHealth(vec![report])).await?;
        loop {
            if answers(&sock, dns, &name).await {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("{name} never appeared in the follower's DNS");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(start.elapsed().as_micros() as i64);
    }
    samples.sort_unstable();
    let ms = |p: f64| crate::bench::percentile(&samples, p) as f64 / 1000.0;
    println!(
        "propagation, health passing on the leader -> A record on another node, {} tasks: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
    Ok(())
}

fn put_app(id: &AppId, health: bool) -> Command {
    let mut spec = AppSpec::new(id.clone());
    spec.instances = 0;
    spec.resources = Resources { cpus: 0.01, mem: 1.0, disk: 0.0, gpus: 0 };
    spec.ports =
        vec![PortSpec { port: 0, name: Some("http".into()), protocol: "tcp".into(), labels: Default::default() }];
    if health {
        spec.health_checks.push(model::HealthCheck {
            protocol: model::HealthProtocol::Tcp,
            path: None,
            port_index: Some(0),
            port: None,
            command: None,
            grace_period_seconds: 300.0,
            interval_seconds: 60.0,
            timeout_seconds: 20.0,
            max_consecutive_failures: 3,
            delay_seconds: 0.0,
            ignore_http1xx: false,
            mesos_side: false,
        });
    }
    let at = now();
    let deployment = model::Deployment {
        id: model::DeploymentId(format!("bench-{}", id.as_str())),
        version: at,
        affected_apps: vec![id.clone()],
        steps: vec![],
        current_step: 0,
        started_at: at,
    };
    Command::PutApp { app: spec, at, deployment, force: true, create_only: false, expect: None }
}

/// The `n`th task of the bench: round robin over `nodes`, a port of its own on each.
fn task(app: &AppId, n: usize, nodes: &[model::NodeInfo]) -> Task {
    let at = now();
    let node = nodes[n % nodes.len()].id;
    let id = TaskId::new(app, uuid::Uuid::from_u128(n as u128 + 1), 1);
    let port = 31000 + (n / nodes.len()) as u16;
    Task::staged(id, app.clone(), node, vec![port], Resources { cpus: 0.01, mem: 1.0, disk: 0.0, gpus: 0 }, at)
}

async fn place_running(store: &Store, tasks: Vec<Task>) -> anyhow::Result<()> {
    for chunk in tasks.chunks(1000) {
        let plan = model::Plan { launches: chunk.to_vec(), ..Default::default() };
        if let store::Applied::Planned { dropped, .. } = store.propose(Command::ApplyPlan(plan)).await? {
            if let Some(d) = dropped.first() {
                bail!("{} of the bench's tasks were refused, e.g. {:?}", dropped.len(), d.reason);
            }
        }
        let st = chunk
            .iter()
            .map(|t| TaskStatus {
                task_id: t.id.clone(),
                state: TaskState::Running,
                at: now(),
                message: None,
                container_ip: None,
            })
            .collect();
        store.propose(Command::TaskStatuses(st)).await?;
    }
    Ok(())
}

/// True when `name` has an A record at `server`.
async fn answers(sock: &UdpSocket, server: std::net::SocketAddr, name: &str) -> bool {
    let Ok(n) = Name::from_ascii(name) else { return false };
    let mut m = Message::query();
    m.add_query(Query::query(n, RecordType::A));
    let id = rand::random::<u16>();
    m.metadata.id = id;
    let Ok(bytes) = m.to_vec() else { return false };
    if sock.send_to(&bytes, server).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await {
            Ok(Ok((len, _))) => match Message::from_vec(&buf[..len]) {
                Ok(r) if r.metadata.id == id => return !r.answers.is_empty(),
                _ => continue,
            },
            _ => return false,
        }
    }
}

async fn wait_dns(server: std::net::SocketAddr, name: &str, limit: Duration) -> anyhow::Result<()> {
    let sock = UdpSocket::bind(format!("{LEADER}:0")).await?;
    let deadline = Instant::now() + limit;
    while !answers(&sock, server, name).await {
        if Instant::now() > deadline {
            bail!("no answer for {name} from {server}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

struct Nsd(Child);

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// NSD serving the follower's records from a zone file, with as many
/// server processes as this machine has cores (its best here).
async fn start_nsd(dir: &std::path::Path) -> anyhow::Result<Nsd> {
    let enumerate: serde_json::Value =
        reqwest::get(format!("http://{FOLLOWER}:8080/v1/enumerate")).await?.json().await?;
    let mut zone = String::from(
        "$ORIGIN mesos.\n$TTL 5\n@ IN SOA ns1.mesos. root.ns1.mesos. 1 60 600 86400 5\n@ IN NS ns1.mesos.\nns1 IN A 127.76.0.3\n",
    );
    let mut n = 0;
    for t in enumerate["frameworks"][0]["tasks"].as_array().into_iter().flatten() {
        for r in t["records"].as_array().into_iter().flatten() {
            let (name, host, rtype) = (r["name"].as_str(), r["host"].as_str(), r["rtype"].as_str());
            let (Some(name), Some(host), Some(rtype)) = (name, host, rtype) else { continue };
            let line = match rtype {
                "SRV" => match host.rsplit_once(':') {
                    Some((target, port)) => format!("{name} IN SRV 0 1 {port} {target}\n"),
                    None => continue,
                },
                _ => format!("{name} IN {rtype} {host}\n"),
            };
            zone.push_str(&line);
            n += 1;
        }
    }
    if n == 0 {
        bail!("the follower listed no records for NSD's zone");
    }
    std::fs::write(dir.join("mesos.zone"), zone)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: {NSD}\n  port: 53\n  server-count: {cores}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: mesos\n  zonefile: mesos.zone\n"
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf)?;
    let child = std::process::Command::new(which("nsd").unwrap_or_else(|| "nsd".into()))
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nsd.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
        .spawn()
        .context("starting nsd")?;
    let nsd = Nsd(child);
    wait_dns(format!("{NSD}:53").parse()?, "app0-bench.marathon.mesos.", Duration::from_secs(10))
        .await
        .context("NSD never answered (see nsd.log)")?;
    Ok(nsd)
}

struct Perf {
    qps: f64,
    avg_ms: f64,
    lost: u64,
}

fn dnsperf(server: &str, queries: &std::path::Path, seconds: u64) -> anyhow::Result<Perf> {
    let out = std::process::Command::new("dnsperf")
        .args(["-s", server, "-p", "53", "-l", &seconds.to_string(), "-q", "200", "-d"])
        .arg(queries)
        .output()
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(key))?;
        line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
    };
    let qps = field("Queries per second").with_context(|| format!("dnsperf said:\n{text}"))?;
    let avg = field("Average Latency (s)").unwrap_or(0.0) * 1000.0;
    let lost = field("Queries lost").unwrap_or(0.0) as u64;
    Ok(Perf { qps, avg_ms: avg, lost })
}
