//! The logs demo (examples/logs-demo) on three nodes, brought up by `wharf
//! demo up`: a log line sent to the shipper's service port is found through
//! the viewer's search on the HTTP front by its virtual host; Prometheus has
//! every node's /metrics as a target (found by DNS SRV); and after the host
//! of the store dies (its agent and its tasks killed -9) the stack answers
//! again and finds a new line. The first run builds the image from Debian
//! packages (minutes); it is cached in $WHARF_DEMO_CACHE (default
//! /var/cache/wharf-demo), so later runs only import it.

mod common;

use common::cluster::Cluster;
use common::wait_for;
use reqwest::Method;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const VHOST: &str = "logs.demo.local";
const RESOURCES: [&str; 2] = ["--resources", "cpus:8;mem:8192;disk:10000;gpus:0"];

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/logs-demo")
}

fn ready() -> bool {
    match agent::driver::oci::supported() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipped: no built-in runtime here ({e})");
            false
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client")
}

/// The service port `index` of `app`, as node `i` renders the app.
async fn service_port(c: &Cluster, i: usize, app: &str, index: usize) -> u16 {
    let v = c.get(i, &format!("/v2/apps{app}")).await;
    let port = v["app"]["portDefinitions"][index]["port"].as_u64().expect("a service port");
    u16::try_from(port).expect("a port")
}

/// POSTs `line` to the shipper through node `ip`'s service port; true once
/// the shipper took it.
async fn ship(ip: &str, port: u16, line: &str) -> bool {
    let r = client().post(format!("http://{ip}:{port}/log")).body(line.to_string()).send().await;
    r.is_ok_and(|r| r.status().is_success())
}

/// The lines the viewer's search finds for `words`, asked through node
/// `ip`'s HTTP front with the viewer's virtual host; None if it does not
/// answer 200.
async fn search(ip: &str, words: &str) -> Option<Vec<String>> {
    let r = client()
        .get(format!("http://{ip}:80/api/search"))
        .query(&[("q", words)])
        .header("Host", VHOST)
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    Some(v["hits"].as_array()?.iter().filter_map(|h| h["line"].as_str().map(str::to_string)).collect())
}

/// The HTML result page a person sees for `words`.
async fn search_page(ip: &str, words: &str) -> String {
    let r = client()
        .get(format!("http://{ip}:80/search"))
        .query(&[("q", words)])
        .header("Host", VHOST)
        .send()
        .await
        .expect("the search page");
    r.text().await.expect("body")
}

/// Sends `line` through node `ip` until the shipper takes it, then waits
/// until the search through the same node's front finds it.
async fn ship_and_find(ip: &str, shipper_port: u16, line: &str, word: &str, timeout: Duration) {
    wait_for("the shipper to take the line", timeout, || async { ship(ip, shipper_port, line).await }).await;
    wait_for(&format!("the viewer to find '{word}'"), timeout, || async {
        search(ip, word).await.is_some_and(|hits| hits.iter().any(|h| h == line))
    })
    .await;
}

/// Active Prometheus targets of `job` that are up: their `instance` labels.
async fn prometheus_up(ip: &str, port: u16, job: &str) -> Vec<String> {
    let Ok(r) = client().get(format!("http://{ip}:{port}/api/v1/targets")).send().await else {
        return Vec::new();
    };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let mut up: Vec<String> = v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["labels"]["job"] == job && t["health"] == "up")
        .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_string))
        .collect();
    up.sort();
    up
}

/// Prometheus's `instance` for nodes `which`: the SRV record's target (the
/// node's name under `slave.mesos`) and its HTTP port.
fn instances(ips: &[String], which: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = which.iter().map(|i| format!("{}.slave.mesos:8080", ips[*i].replace('.', "-"))).collect();
    v.sort();
    v
}

/// The host of node `i` dies: its agent and every process of its tasks
/// (executors, and whatever is in the tasks' cgroups) get SIGKILL.
fn kill_host(c: &mut Cluster, i: usize) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    c.nodes[i].kill9();
    let Ok(sandboxes) = std::fs::read_dir(c.nodes[i].dir.join("data/sandboxes")) else { return };
    for sandbox in sandboxes.filter_map(Result::ok) {
        let state = std::fs::read_to_string(sandbox.path().join("state.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
        if let Some(pid) = v["executor_pid"].as_i64() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let task = sandbox.file_name();
        // cgroup v2 (one tree) or v1 (a tree per controller).
        let mut trees = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            trees.extend(ctrls.filter_map(Result::ok).map(|e| e.path()));
        }
        for tree in trees {
            let procs =
                std::fs::read_to_string(tree.join("wharf").join(&task).join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_stack_finds_itself_by_name_answers_searches_and_survives_a_lost_host() {
    if !ready() {
        return;
    }
    let mut c = Cluster::start(3, &RESOURCES).await;
    let ips: Vec<String> = c.nodes.iter().map(|n| n.ip.clone()).collect();

    // One command: image (cached), import on every node, the group, healthy.
    let mut up = Command::new(common::WHARF);
    up.args(["demo", "up", "--addr", &c.nodes[0].addr(), "--front", &format!("http://{}:80", ips[0])])
        .arg("--example")
        .arg(example());
    for n in &c.nodes {
        up.arg("--data-dir").arg(n.dir.join("data"));
    }
    let out = up.output().expect("wharf demo up");
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wharf demo up failed:\n{said}\n{}", c.log(0));
    eprintln!("{said}");
    assert!(said.contains("search answering after"), "{said}");

    // Every app of the group is healthy (what `demo up` waited for, seen by a user).
    let apps = c.get(1, "/v2/apps").await;
    let demo: Vec<&Value> = apps["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter(|a| a["id"].as_str().is_some_and(|id| id.starts_with("/demo/")))
        .collect();
    assert_eq!(demo.len(), 5, "{apps}");
    assert!(demo.iter().all(|a| a["tasksHealthy"] == 1), "{apps}");

    // A line sent to the shipper (a service port, on another node than the
    // search's front) is found through the viewer by its virtual host.
    let shipper = service_port(&c, 0, "/demo/shipper", 0).await;
    let first = "wharf demo: first line from the test, marker alphaquokka";
    wait_for("the shipper to take the first line", Duration::from_secs(30), || async {
        ship(&ips[1], shipper, first).await
    })
    .await;
    wait_for("the first line to be searchable", Duration::from_secs(60), || async {
        search(&ips[2], "alphaquokka").await.is_some_and(|h| h == vec![first.to_string()])
    })
    .await;
    let page = search_page(&ips[0], "alphaquokka").await;
    assert!(page.contains("Matches: 1<") && page.contains(first), "{page}");
    // Unknown to the front without the virtual host.
    let r = client().get(format!("http://{}:80/api/search?q=x", ips[0])).send().await.expect("front");
    assert_eq!(r.status(), 404);

    // Prometheus scrapes every node's /metrics, found through `_wharf._tcp`.
    let prom = service_port(&c, 0, "/demo/prometheus", 0).await;
    let nodes = instances(&ips, &[0, 1, 2]);
    wait_for("Prometheus to scrape every node", Duration::from_secs(60), || async {
        prometheus_up(&ips[1], prom, "wharf").await == nodes
    })
    .await;

    // The store's host dies. The stack comes back on the others: the store
    // starts elsewhere (empty: its data lived in the lost container), the
    // indexer and viewer find it by name, and a new line is found.
    let store_host = c.running(0, "/demo/store").await.first().map(|t| t.1.clone()).expect("the store's task");
    let victim = c.node_of_host(&store_host);
    kill_host(&mut c, victim);
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let (a, b) = (alive[0], alive[1]);
    let (c_ref, lost_host) = (&c, store_host.as_str());
    wait_for("the store to run healthy on another node", Duration::from_secs(120), || async move {
        // A leader may be being elected: no answer is "not yet".
        let Some((_, v)) = c_ref.call(a, Method::GET, "/v2/apps/demo/store/tasks", None).await else {
            return false;
        };
        v["tasks"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["host"] != lost_host && t["state"] == "TASK_RUNNING" && t["healthCheckResults"][0]["alive"] == true
            })
        })
    })
    .await;
    let second = "wharf demo: after the host was lost, marker betaquokka";
    ship_and_find(&ips[a], shipper, second, "betaquokka", Duration::from_secs(120)).await;
    let hits = search(&ips[b], "betaquokka").await.expect("the search through another node's front");
    assert!(hits.contains(&second.to_string()), "{hits:?}");
    // Prometheus (wherever it runs now) drops the lost node's target.
    let prom_left = instances(&ips, &alive);
    let ip_a = ips[a].clone();
    wait_for("Prometheus to list the nodes left", Duration::from_secs(90), || {
        let (ip, want) = (ip_a.clone(), prom_left.clone());
        async move { prometheus_up(&ip, prom, "wharf").await == want }
    })
    .await;

    // `wharf demo down` removes it.
    let out = Command::new(common::WHARF)
        .args(["demo", "down", "--addr", &c.nodes[a].addr()])
        .arg("--example")
        .arg(example())
        .output()
        .expect("wharf demo down");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let apps = c.get(b, "/v2/apps").await;
    assert!(apps["apps"].as_array().is_some_and(|a| a.is_empty()), "{apps}");

    // The host comes back: its agent cleans up what its dead tasks left
    // (their containers' root file systems stay mounted until then).
    c.nodes[victim].spawn(None);
    c.wait_up(victim).await;
    let dir = c.nodes[victim].dir.to_string_lossy().into_owned();
    wait_for("the restarted agent to unmount its dead containers", Duration::from_secs(60), || {
        let dir = dir.clone();
        async move { !std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().contains(&dir) }
    })
    .await;
}
