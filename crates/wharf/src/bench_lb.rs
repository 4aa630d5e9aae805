//! `wharf bench lb`: Wharf's load balancer beside HAProxy, in the same run,
//! with `wrk` (Debian's) on loopback. A real `wharf agent` node on
//! 127.75.0.1 runs an app of two nginx tasks; `wrk` asks them directly,
//! through Wharf's HTTP front (by virtual host) and an L4 service port, and
//! through HAProxy (127.75.0.2) in HTTP and TCP mode in front of the very
//! same two tasks; then new connections per second (`Connection: close`)
//! through both L4 proxies. The pairs run back to back, `--rounds` times,
//! each round in the other order, so a busy machine's swings land on both
//! sides: the table shows medians and each pair's ratio per round.
//!
//! wrk's closed loop saturates the proxies, so its p99 is mostly how the
//! OS schedules a few busy processes on shared cores. The nginx tasks get a
//! whole core each, since a task's `cpus` is its CFS quota too: at 0.2 the
//! quota throttled them for seconds of each run (80 ms stalls), and that,
//! not the proxy, set the p99; the tables show the backends' throttled time. Beside it, the HTTP
//! and L4 pairs also run at fixed rates (shares of HAProxy's requests/s in
//! the first round), open loop, from the bench's own generator
//! (`bench_lb_load`), whose latencies count from each request's due time.

use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub struct LbBenchArgs {
    pub seconds: u64,
    pub connections: u32,
    pub rounds: u32,
    /// Fixed rates to offer, in percent of HAProxy's requests/s.
    pub rates: Vec<u32>,
    /// The paths measured.
    pub paths: Vec<LbPath>,
}

/// A path through a proxy that the bench measures.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LbPath {
    /// The HTTP front (HAProxy in HTTP mode).
    Http,
    /// A service port over keep-alive connections (HAProxy in TCP mode).
    L4,
    /// A service port with a new connection per request.
    New,
}

const NODE: &str = "127.75.0.1";
const HAPROXY: &str = "127.75.0.2";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.0.wait();
    }
}

pub async fn run(args: LbBenchArgs) -> anyhow::Result<()> {
    for tool in ["wrk", "haproxy", "nginx"] {
        if which(tool).is_none() {
            bail!("`{tool}` is not installed: apt-get install wrk haproxy nginx-light");
        }
    }
    let dir = std::env::temp_dir().join(format!("wharf-bench-lb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let base = format!("http://{NODE}:8080");
    let r = measure(&dir, &base, &args).await;
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("(kept {} for a look at the logs)", dir.display());
    }
    r
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]).map(|d| d.join(tool)).find(|p| p.is_file())
}

async fn measure(dir: &std::path::Path, base: &str, args: &LbBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let node = Proc(
        std::process::Command::new(exe)
            .arg("agent")
            .arg("--data-dir")
            .arg(dir.join("node"))
            .args(["--http", &format!("{NODE}:8080"), "--rpc", &format!("{NODE}:5050"), "--dns", "off"])
            .args(["--http-lb", &format!("{NODE}:80")])
            // Room for the two whole-core nginx tasks and the failover app's
            // beside them on a two-core machine.
            .args(["--resources", "cpus:4"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("node.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .context("starting the node")?,
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/ping")).send().await.is_err() {
        if Instant::now() > deadline {
            bail!("the node did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = with_node(dir, base, args, &http, node.0.id()).await;
    // The apps' tasks outlive the node by design: delete them while it
    // still runs (it stops when `node` drops), or their nginx processes
    // linger at the measuring priority beside the next run.
    let deadline = Instant::now() + Duration::from_secs(20);
    for app in ["bench/nginx", "bench/fail"] {
        let _ = http.delete(format!("{base}/v2/apps/{app}?force=true")).send().await;
        while Instant::now() < deadline {
            match http.get(format!("{base}/v2/apps/{app}")).send().await {
                Ok(resp) if resp.status() == 404 => break,
                Err(_) => break,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    r
}

/// The runs against the node `node` (its process id) serving at `base`.
async fn with_node(
    dir: &std::path::Path,
    base: &str,
    args: &LbBenchArgs,
    http: &reqwest::Client,
    node: u32,
) -> anyhow::Result<()> {
    let nginx = which("nginx").unwrap_or_else(|| "nginx".into());
    let tmpl = dir.join("nginx.tmpl");
    std::fs::write(
        &tmpl,
        "worker_processes 1; daemon off; pid nginx.pid; error_log stderr;\nevents { worker_connections 4096; }\nhttp { access_log off; server { listen HOSTPORT; location / { return 200 \"ok\\n\"; } } }\n",
    )?;
    let cmd = format!(
        "sed \"s/HOSTPORT/$HOST:$PORT0/\" {} > nginx.conf && exec {} -p \"$PWD\" -c \"$PWD/nginx.conf\"",
        tmpl.display(),
        nginx.display()
    );
    // A whole core each: a task's `cpus` is also its CFS quota, and at 0.2
    // a single-worker nginx run flat out by a proxy spent seconds of every
    // run throttled (80 ms of each 100 ms period), a stall that the faster
    // proxy's closed-loop p99 caught most of.
    let app = json!({"id": "/bench/nginx", "cmd": cmd, "cpus": 1.0, "mem": 64, "instances": 2,
                     "labels": {"HAPROXY_0_VHOST": "bench.test"}});
    let resp = http.post(format!("{base}/v2/apps")).json(&app).send().await?;
    if !resp.status().is_success() {
        bail!("deploying the nginx app: {}", resp.text().await.unwrap_or_default());
    }
    let service_port = resp.json::<Value>().await?["portDefinitions"][0]["port"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (backends, task_ids): (Vec<String>, Vec<String>) = loop {
        let v: Value = http.get(format!("{base}/v2/apps/bench/nginx/tasks")).send().await?.json().await?;
        let (up, ids): (Vec<String>, Vec<String>) = v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| {
                let addr = format!("{}:{}", t["host"].as_str().unwrap_or(""), t["ports"][0]);
                (addr, t["id"].as_str().unwrap_or("").to_string())
            })
            .unzip();
        if up.len() == 2
            && reqwest::get(format!("http://{}/", up[0])).await.is_ok()
            && reqwest::get(format!("http://{}/", up[1])).await.is_ok()
        {
            break (up, ids);
        }
        if Instant::now() > deadline {
            bail!("the nginx tasks did not come up (see the node's log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let servers: String = backends.iter().enumerate().map(|(i, b)| format!("  server s{i} {b}\n")).collect();
    let conf = format!(
        "global\n  maxconn 4000\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend web\n  mode http\n  bind {HAPROXY}:80\n  default_backend nginx\nbackend nginx\n  mode http\n  balance leastconn\n{servers}listen tcp\n  mode tcp\n  bind {HAPROXY}:81\n  balance leastconn\n{servers}"
    );
    std::fs::write(dir.join("haproxy.cfg"), conf)?;
    let _haproxy = Proc(
        std::process::Command::new(which("haproxy").unwrap_or_else(|| "haproxy".into()))
            .args(["-db", "-f"])
            .arg(dir.join("haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .context("starting haproxy")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("http://{HAPROXY}:80/")).await.is_err() {
        if Instant::now() > deadline {
            bail!("haproxy did not start (see haproxy.log)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wharf_front = format!("http://{NODE}:80/");
    let wharf_l4 = format!("http://{NODE}:{service_port}/");
    let direct = format!("http://{}/", backends[0]);
    println!(
        "== wrk, 1 thread, {} connections, {} s each, {} rounds; two nginx tasks {}; load average {}",
        args.connections,
        args.seconds,
        args.rounds,
        backends.join(" and "),
        loadavg()
    );
    let (wharf, haproxy) = (Some(node), Some(_haproxy.0.id()));
    println!(
        "threads: haproxy {} (its default, one per core); wharf {} per LB listener (beside the node's own runtime)",
        threads(_haproxy.0.id()).map_or("?".into(), |n| n.to_string()),
        lb::l4::threads()
    );
    let direct = Row { name: "nginx task directly (one of the two)", url: direct, host: None, close: false, pid: None };
    let pairs = [
        (
            LbPath::Http,
            "HTTP",
            Row {
                name: "wharf HTTP front (Host: bench.test)",
                url: wharf_front,
                host: Some("bench.test"),
                close: false,
                pid: wharf,
            },
            Row {
                name: "haproxy HTTP mode",
                url: format!("http://{HAPROXY}:80/"),
                host: None,
                close: false,
                pid: haproxy,
            },
        ),
        (
            LbPath::L4,
            "L4",
            Row { name: "wharf L4 service port", url: wharf_l4.clone(), host: None, close: false, pid: wharf },
            Row {
                name: "haproxy TCP mode",
                url: format!("http://{HAPROXY}:81/"),
                host: None,
                close: false,
                pid: haproxy,
            },
        ),
        (
            LbPath::New,
            "L4 new connections",
            Row { name: "wharf L4, new connection per request", url: wharf_l4, host: None, close: true, pid: wharf },
            Row {
                name: "haproxy TCP, new connection per request",
                url: format!("http://{HAPROXY}:81/"),
                host: None,
                close: true,
                pid: haproxy,
            },
        ),
    ];
    let pairs: Vec<(&str, Row, Row)> =
        pairs.into_iter().filter(|(path, ..)| args.paths.contains(path)).map(|(_, l, w, h)| (l, w, h)).collect();
    let probe = Backends::new(&task_ids);
    let mut direct_runs = Vec::new();
    let mut runs: Vec<(Vec<Run>, Vec<Run>)> = pairs.iter().map(|_| (Vec::new(), Vec::new())).collect();
    let mut fixed: Vec<Fixed> = Vec::new();
    for round in 0..args.rounds.max(1) {
        direct_runs.push(direct.run(args, &probe)?);
        for ((_, w, h), (wr, hr)) in pairs.iter().zip(runs.iter_mut()) {
            // Every other round HAProxy goes first.
            if round % 2 == 0 {
                wr.push(w.run(args, &probe)?);
                hr.push(h.run(args, &probe)?);
            } else {
                hr.push(h.run(args, &probe)?);
                wr.push(w.run(args, &probe)?);
            }
        }
        if round == 0 {
            // The keep-alive pairs (HTTP, L4), at rates set by HAProxy's first round.
            let keep_alive = pairs.iter().zip(&runs).enumerate().filter(|(_, ((_, w, _), _))| !w.close);
            for (pair, (_, (_, hr))) in keep_alive {
                for &percent in args.rates.iter().filter(|&&p| p > 0) {
                    let rate = hr[0].rps * f64::from(percent) / 100.0;
                    fixed.push(Fixed { pair, percent, rate, wharf: Vec::new(), haproxy: Vec::new() });
                }
            }
        }
        for f in &mut fixed {
            let (_, w, h) = &pairs[f.pair];
            if round % 2 == 0 {
                f.wharf.push(w.fixed(f.rate, args, &probe)?);
                f.haproxy.push(h.fixed(f.rate, args, &probe)?);
            } else {
                f.haproxy.push(h.fixed(f.rate, args, &probe)?);
                f.wharf.push(w.fixed(f.rate, args, &probe)?);
            }
        }
    }
    // CPU per request is the proxy process's own (user + system) time over
    // the requests wrk completed: on a busy machine the requests/s follow
    // the CPU the proxies are given, this does not.
    println!("| path | requests/s | p50 | p99 | errors | proxy CPU per request | backends throttled |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    print_row(direct.name, &direct_runs);
    for ((_, w, h), (wr, hr)) in pairs.iter().zip(&runs) {
        print_row(w.name, wr);
        print_row(h.name, hr);
    }
    // Every pair's wharf/haproxy ratio of one figure, round by round.
    let each_pair = |ratio: fn(&Run, &Run) -> f64, better: Better| -> String {
        let lines: Vec<String> = pairs
            .iter()
            .zip(&runs)
            .map(|((label, _, _), (wr, hr))| {
                let per_round: Vec<f64> = wr.iter().zip(hr).map(|(w, h)| ratio(w, h)).collect();
                ratios(label, &per_round, better)
            })
            .collect();
        lines.join("; ")
    };
    println!(
        "wharf/haproxy requests/s, median (per round): {}",
        each_pair(|w, h| w.rps / h.rps.max(1.0), Better::Above)
    );
    println!(
        "wharf/haproxy p99 (below 1 is better), median (per round): {}",
        each_pair(|w, h| w.p99 / h.p99, Better::Below)
    );
    if !fixed.is_empty() {
        print_fixed(&pairs, &fixed, args);
    }
    // Both proxies must have kept the priority they started with: a
    // measuring wrapper that renices what is not its own (or anything
    // else on the box) would otherwise skew the comparison unseen.
    let nice = |pid: Option<u32>| pid.and_then(nice).map_or("?".into(), |n| n.to_string());
    println!("load average after: {}; nice after: wharf {}, haproxy {}", loadavg(), nice(wharf), nice(haproxy));
    failover(dir, base, http, &nginx).await
}

/// The time from a backend's health check turning failing to the last
/// request the LB sends it, under keep-alive load through the HTTP front:
/// both ends are read from that task's own nginx access log (one clock),
/// the first `/health` answered 404 and the last `/` after it.
async fn failover(
    dir: &std::path::Path,
    base: &str,
    http: &reqwest::Client,
    nginx: &std::path::Path,
) -> anyhow::Result<()> {
    let tmpl = dir.join("fail.tmpl");
    std::fs::write(
        &tmpl,
        "worker_processes 1; daemon off; pid nginx.pid; error_log stderr;\nevents { worker_connections 4096; }\nhttp { log_format t '$msec $status $request_uri'; access_log access.log t; server { listen HOSTPORT; location = /health { root SANDBOX; try_files /healthy =404; } location / { return 200 \"ok\\n\"; } } }\n",
    )?;
    let cmd = format!(
        "touch healthy && sed -e \"s/HOSTPORT/$HOST:$PORT0/\" -e \"s|SANDBOX|$PWD|\" {} > nginx.conf && exec {} -p \"$PWD\" -c \"$PWD/nginx.conf\"",
        tmpl.display(),
        nginx.display()
    );
    let app = json!({"id": "/bench/fail", "cmd": cmd, "cpus": 0.2, "mem": 64, "instances": 2,
                     "labels": {"HAPROXY_0_VHOST": "fail.test"},
                     "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 1,
                                       "timeoutSeconds": 1, "gracePeriodSeconds": 10, "maxConsecutiveFailures": 3}]});
    let resp = http.post(format!("{base}/v2/apps")).json(&app).send().await?;
    if !resp.status().is_success() {
        bail!("deploying the failover app: {}", resp.text().await.unwrap_or_default());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let v: Value = http.get(format!("{base}/v2/apps/bench/fail/tasks")).send().await?.json().await?;
        let healthy: Vec<String> = v["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| {
                t["healthCheckResults"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true))
            })
            .filter_map(|t| t["id"].as_str().map(str::to_string))
            .collect();
        if healthy.len() == 2 {
            break healthy[0].clone();
        }
        if Instant::now() > deadline {
            bail!("the failover app did not turn healthy (see the node's log)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let sandbox = dir.join("node").join("sandboxes").join(&victim);
    let load = std::process::Command::new("wrk")
        .args(["-t1", "-c", "20", "-d", "8s", "-H", "Host: fail.test"])
        .arg(format!("http://{NODE}:80/"))
        .stdout(Stdio::null())
        .spawn()
        .context("running wrk")?;
    let _load = Proc(load);
    tokio::time::sleep(Duration::from_secs(3)).await;
    std::fs::remove_file(sandbox.join("healthy")).context("failing the victim's health check")?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let log = std::fs::read_to_string(sandbox.join("access.log")).context("reading the victim's access log")?;
    let lines: Vec<(f64, &str, &str)> = log
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            Some((f.next()?.parse().ok()?, f.next()?, f.next()?))
        })
        .collect();
    let failed = lines.iter().find(|(_, status, uri)| *uri == "/health" && *status == "404").map(|l| l.0);
    let Some(failed) = failed else { bail!("the victim's health check never failed (see {})", sandbox.display()) };
    let last = lines.iter().filter(|(_, _, uri)| *uri != "/health").map(|l| l.0).fold(0.0, f64::max);
    let after = lines.iter().filter(|(t, _, uri)| *t >= failed && *uri != "/health").count();
    println!(
        "failover (HTTP front, keep-alive load): health check failing -> last request to that task {:.1} ms ({after} requests in between)",
        (last - failed).max(0.0) * 1000.0
    );
    Ok(())
}

/// The fixed-rate table: each rate's runs per proxy, and the p99 ratios.
fn print_fixed(pairs: &[(&str, Row, Row)], fixed: &[Fixed], args: &LbBenchArgs) {
    println!(
        "== fixed rate, open loop (bench's own generator: 1 thread, {} keep-alive connections, {} s each; latency from each request's due time), rates in percent of haproxy's requests/s in round 1",
        args.connections, args.seconds
    );
    println!("| path | offered req/s | achieved req/s | p50 | p99 | p99.9 | errors | backends throttled |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for f in fixed {
        let (_, w, h) = &pairs[f.pair];
        for (name, runs) in [(w.name, &f.wharf), (h.name, &f.haproxy)] {
            let med = |g: fn(&FixedRun) -> f64| median(&runs.iter().map(g).collect::<Vec<_>>());
            let throttled: Vec<String> =
                runs.iter().map(|r| r.throttled_ms.map_or("-".into(), |t| format!("{t:.0}"))).collect();
            println!(
                "| {name} @ {}% | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} ms |",
                f.percent,
                f.rate,
                med(|r| r.achieved),
                med(|r| r.p50),
                med(|r| r.p99),
                med(|r| r.p999),
                runs.iter().map(|r| r.errors).sum::<u64>(),
                throttled.join(", ")
            );
        }
    }
    let ratios: Vec<String> = fixed
        .iter()
        .map(|f| {
            let per_round: Vec<f64> = f.wharf.iter().zip(&f.haproxy).map(|(w, h)| w.p99 / h.p99).collect();
            ratios(&format!("{} {}%", pairs[f.pair].0, f.percent), &per_round, Better::Below)
        })
        .collect();
    println!("wharf/haproxy p99 at a fixed rate (below 1 is better), median (per round): {}", ratios.join("; "));
}

/// One fixed rate offered to both proxies of a pair, and their runs.
struct Fixed {
    /// Index in the pairs (HTTP, L4).
    pair: usize,
    percent: u32,
    rate: f64,
    wharf: Vec<FixedRun>,
    haproxy: Vec<FixedRun>,
}

/// One fixed-rate run of a row.
struct FixedRun {
    achieved: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: u64,
    throttled_ms: Option<f64>,
}

/// One path wrk measures, and the proxy process whose CPU it reports.
struct Row {
    name: &'static str,
    url: String,
    host: Option<&'static str>,
    close: bool,
    pid: Option<u32>,
}

/// The backends' CFS bandwidth throttling (their `cpus` quota), read from
/// their cgroups' `cpu.stat`: a run that drives a task into its quota
/// stalls every request that task holds until the next period.
struct Backends {
    cpu_stats: Vec<std::path::PathBuf>,
}

impl Backends {
    /// The cgroups of the tasks `ids` (v1 `cpu` hierarchy or v2).
    fn new(ids: &[String]) -> Backends {
        let roots = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"];
        let cpu_stats = ids
            .iter()
            .filter_map(|id| {
                roots.iter().map(|r| std::path::Path::new(r).join("wharf").join(id).join("cpu.stat")).find(|p| {
                    std::fs::read_to_string(p)
                        .is_ok_and(|s| s.contains("throttled_time") || s.contains("throttled_usec"))
                })
            })
            .collect();
        Backends { cpu_stats }
    }

    /// Milliseconds the backends spent throttled so far, summed.
    fn throttled_ms(&self) -> Option<f64> {
        if self.cpu_stats.is_empty() {
            return None;
        }
        let mut ms = 0.0;
        for p in &self.cpu_stats {
            ms += throttled_ms(&std::fs::read_to_string(p).ok()?)?;
        }
        Some(ms)
    }
}

/// The throttled time in a cgroup's `cpu.stat`, in milliseconds: v1 says
/// `throttled_time` in nanoseconds, v2 `throttled_usec`.
fn throttled_ms(stat: &str) -> Option<f64> {
    stat.lines().find_map(|line| match line.split_once(' ') {
        Some(("throttled_time", ns)) => Some(ns.trim().parse::<f64>().ok()? / 1e6),
        Some(("throttled_usec", us)) => Some(us.trim().parse::<f64>().ok()? / 1e3),
        _ => None,
    })
}

/// One wrk run of a row.
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
    /// The proxy's CPU time per request, in microseconds.
    cpu_us: Option<f64>,
    /// Milliseconds the backends were throttled during the run.
    throttled_ms: Option<f64>,
}

impl Row {
    fn run(&self, args: &LbBenchArgs, backends: &Backends) -> anyhow::Result<Run> {
        let before = self.pid.and_then(cpu_seconds);
        let throttled = backends.throttled_ms();
        let r = wrk(&self.url, self.host, self.close, args)?;
        let cpu_us = match (before, self.pid.and_then(cpu_seconds)) {
            (Some(a), Some(b)) if r.requests > 0 => Some((b - a) * 1e6 / r.requests as f64),
            _ => None,
        };
        let throttled_ms = throttled.zip(backends.throttled_ms()).map(|(a, b)| b - a);
        Ok(Run { rps: r.rps, p50: r.p50, p99: r.p99, errors: r.errors, cpu_us, throttled_ms })
    }

    /// A fixed-rate run over keep-alive connections.
    fn fixed(&self, rate: f64, args: &LbBenchArgs, backends: &Backends) -> anyhow::Result<FixedRun> {
        let throttled = backends.throttled_ms();
        let authority = self.url.trim_start_matches("http://").trim_end_matches('/');
        let addr = authority.parse().with_context(|| format!("not an address: {authority}"))?;
        let o = crate::bench_lb_load::run(crate::bench_lb_load::Spec {
            addr,
            host: self.host.unwrap_or(authority).to_string(),
            rate,
            connections: args.connections as usize,
            duration: Duration::from_secs(args.seconds),
        })?;
        Ok(FixedRun {
            achieved: o.achieved,
            p50: o.percentile_ms(50.0),
            p99: o.percentile_ms(99.0),
            p999: o.percentile_ms(99.9),
            errors: o.errors(),
            throttled_ms: throttled.zip(backends.throttled_ms()).map(|(a, b)| b - a),
        })
    }
}

fn print_row(name: &str, runs: &[Run]) {
    let med = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_us).collect();
    let cpu = if cpu.is_empty() { "-".to_string() } else { format!("{:.1} us", median(&cpu)) };
    let throttled: Vec<String> =
        runs.iter().map(|r| r.throttled_ms.map_or("-".into(), |t| format!("{t:.0}"))).collect();
    println!(
        "| {name} | {:.0} | {:.2} ms | {:.2} ms | {} | {cpu} | {} ms |",
        med(|r| r.rps),
        med(|r| r.p50),
        med(|r| r.p99),
        runs.iter().map(|r| r.errors).sum::<u64>(),
        throttled.join(", ")
    );
}

/// Which side of 1 a wharf/haproxy ratio is better on.
#[derive(Clone, Copy)]
enum Better {
    Above,
    Below,
}

/// A pair's ratios: the median, each round's, and in how many rounds Wharf
/// came out ahead. A p99 swings by 2x from round to round on two shared
/// cores, so a median of a few rounds can land on either side of 1: the
/// count says whether one proxy is ahead round after round.
fn ratios(label: &str, per_round: &[f64], better: Better) -> String {
    let shown: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
    let ahead = per_round
        .iter()
        .filter(|&&r| match better {
            Better::Above => r > 1.0,
            Better::Below => r < 1.0,
        })
        .count();
    format!("{label} {:.2}x ({}; wharf ahead in {ahead} of {})", median(per_round), shown.join(", "), per_round.len())
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A process's thread count, from `/proc/PID/status`.
fn threads(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// A process's nice value, from `/proc/PID/stat`.
fn nice(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The 19th field of the line, the 17th after the command name.
    stat[stat.rfind(')')? + 2..].split(' ').nth(16)?.parse().ok()
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A process's CPU time so far (user + system, all its threads), from
/// `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses:
    // utime and stime are the 14th and 15th of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    Some(ticks / hz)
}

struct Wrk {
    rps: f64,
    requests: u64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn wrk(url: &str, host: Option<&str>, close: bool, args: &LbBenchArgs) -> anyhow::Result<Wrk> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t1", "-c", &args.connections.to_string(), "-d", &format!("{}s", args.seconds), "--latency"]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("wrk said:\n{text}"))?;
    let pct = |p: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| v.trim().to_string()))
            .map(|v| parse_duration_ms(&v))
            .unwrap_or(f64::NAN)
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).collect::<Vec<_>>())
        .sum();
    // "  123456 requests in 10.00s, 1.2MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ").and_then(|(n, _)| n.trim().parse().ok()))
        .unwrap_or(0);
    Ok(Wrk { rps, requests, p50: pct("50%"), p99: pct("99%"), errors })
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`.
fn parse_duration_ms(v: &str) -> f64 {
    let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    if let Some(us) = v.strip_suffix("us") {
        num(us) / 1000.0
    } else if let Some(ms) = v.strip_suffix("ms") {
        num(ms)
    } else if let Some(s) = v.strip_suffix('s') {
        num(s) * 1000.0
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_durations() {
        assert!((super::parse_duration_ms("812.00us") - 0.812).abs() < 1e-9);
        assert!((super::parse_duration_ms("1.5ms") - 1.5).abs() < 1e-9);
        assert!((super::parse_duration_ms("2.00s") - 2000.0).abs() < 1e-9);
    }

    #[test]
    fn reads_throttled_time_from_v1_and_v2_cpu_stat() {
        let v1 = "nr_periods 50\nnr_throttled 45\nthrottled_time 2484902858\nnr_bursts 0\nburst_time 0\n";
        assert!((super::throttled_ms(v1).expect("v1") - 2484.902858).abs() < 1e-6);
        let v2 = "usage_usec 100\nnr_periods 3\nnr_throttled 1\nthrottled_usec 1500\n";
        assert!((super::throttled_ms(v2).expect("v2") - 1.5).abs() < 1e-9);
        assert_eq!(super::throttled_ms("usage_usec 100\n"), None);
    }

    #[test]
    fn ratios_count_the_rounds_wharf_was_ahead_in() {
        use super::{ratios, Better};
        assert_eq!(ratios("L4", &[0.5, 1.5, 0.9], Better::Below), "L4 0.90x (0.50, 1.50, 0.90; wharf ahead in 2 of 3)");
        assert_eq!(ratios("L4", &[0.5, 1.5, 1.0], Better::Above), "L4 1.00x (0.50, 1.50, 1.00; wharf ahead in 1 of 3)");
    }

    #[test]
    fn medians() {
        assert_eq!(super::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(super::median(&[]).is_nan());
    }

    #[test]
    fn reads_a_process_cpu_time() {
        let t = super::cpu_seconds(std::process::id()).expect("own /proc/PID/stat");
        assert!(t >= 0.0);
        assert_eq!(super::cpu_seconds(u32::MAX), None);
        let nice = super::nice(std::process::id()).expect("own nice value");
        assert!((-20..=19).contains(&nice), "nice {nice}");
        assert_eq!(super::nice(u32::MAX), None);
    }
}
