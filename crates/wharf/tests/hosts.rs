//! Multi-host clusters: every host a network namespace with an address of
//! its own on a test bridge (tests/common/hosts.rs), running the real
//! `wharf agent`. Hosts join with the join token over their own addresses;
//! an app's tasks are reached at their host's address from another host,
//! and found with `dig @<host>` from another host. Faults are real: a host's
//! link goes down, a host's agent is killed with SIGKILL, a host is added.
//! Only what a user sees is checked: API answers, DNS answers, HTTP.

mod common;

#[path = "../../dns/tests/common/dig.rs"]
mod dig;

use common::hosts::Hosts;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A lost host is noticed after 1.5 s of silence instead of 3.
const FAST: &[&str] = &["--heartbeat-timeout", "1.5"];

/// What the hosts serve: Python's HTTP server on the task's port.
fn web(instances: u32) -> Value {
    json!({
        "id": "/web",
        "cmd": "exec python3 -m http.server $PORT0",
        "instances": instances,
        "cpus": 0.1,
        "mem": 64,
        "portDefinitions": [{"port": 0}],
    })
}

async fn deploy(h: &Hosts, via: usize, app: Value) {
    let (s, v) = h.call(via, Method::POST, "/v2/apps", Some(&app)).await.expect("POST /v2/apps");
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Waits until host `via` lists exactly `n` tasks of `app`, all running.
async fn wait_exactly(h: &Hosts, via: usize, app: &str, n: usize) -> Vec<(String, String, u16)> {
    let t = Instant::now();
    loop {
        let running = h.running(via, app).await;
        if running.len() == n && h.tasks(via, app).await.len() == n {
            return running;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "{app} on host {via}: want {n} running, have {:?}\n{}",
            h.tasks(via, app).await,
            h.log(via)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn hosts_of(tasks: &[(String, String, u16)]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.1.clone()).collect()
}

/// Writes app `/acked/w{i}` through host `via`; true when acknowledged.
async fn acked_write(h: &Hosts, via: usize, i: u32) -> bool {
    let def = json!({"id": format!("/acked/w{i}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0});
    matches!(h.call(via, Method::POST, "/v2/apps", Some(&def)).await, Some((StatusCode::CREATED, _)))
}

/// Writes through `via` until one is acknowledged (a new leader may be
/// being elected), then `more` more that must all be; returns their numbers.
async fn writes_accepted(h: &Hosts, via: usize, first: u32, more: u32) -> Vec<u32> {
    let t = Instant::now();
    let mut i = first;
    while !acked_write(h, via, i).await {
        assert!(t.elapsed() < Duration::from_secs(20), "host {via} accepted no write:\n{}", h.log(via));
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut acked = vec![i];
    for j in i + 1..=i + more {
        assert!(acked_write(h, via, j).await, "write {j} through host {via} refused");
        acked.push(j);
    }
    acked
}

async fn assert_acked_on(h: &Hosts, acked: &[u32], on: usize) {
    let t = Instant::now();
    loop {
        let have: BTreeSet<String> = match h.call(on, Method::GET, "/v2/apps?id=/acked/", None).await {
            Some((StatusCode::OK, v)) => v["apps"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            _ => BTreeSet::new(),
        };
        if acked.iter().all(|w| have.contains(&format!("/acked/w{w}"))) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "host {on} lacks acknowledged writes {acked:?}: {have:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every task answers HTTP at its host's address, asked from host `from`.
async fn assert_reachable_from(h: &Hosts, from: usize, tasks: &[(String, String, u16)]) {
    for (id, host, port) in tasks {
        let url = format!("http://{host}:{port}/");
        let t = Instant::now();
        // A task that just started may not listen yet.
        loop {
            if h.curl_from(from, &url).is_some_and(|b| b.contains("Directory listing")) {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(15), "task {id} at {url} does not answer host {from}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The A records of `web.marathon.mesos` that host `server`'s DNS gives a
/// resolver on host `from`.
fn web_addresses(h: &Hosts, from: usize, server: usize) -> BTreeSet<String> {
    let addr = format!("{}:53", h.ip(server)).parse().expect("dns addr");
    dig::dig_in_netns(h.ns(from), addr, "web.marathon.mesos.", "A", &[]).data("A").into_iter().collect()
}

async fn wait_dns(h: &Hosts, from: usize, server: usize, want: &BTreeSet<String>) {
    let t = Instant::now();
    loop {
        let have = web_addresses(h, from, server);
        if &have == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "dig @{} from host {from}: {have:?}, want {want:?}",
            h.ip(server)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn leader(h: &Hosts, via: usize) -> usize {
    let v = h.get(via, "/v2/leader").await;
    let addr = v["leader"].as_str().expect("a leader").to_string();
    h.index_of(addr.split(':').next().unwrap_or(""))
}

/// A task endpoint of a host that rejoined answers only if it is one of
/// the app's tasks again (its stale task is killed).
async fn assert_stale_gone(h: &Hosts, from: usize, stale: &(String, String, u16), now: &[(String, String, u16)]) {
    if now.iter().any(|t| t.1 == stale.1 && t.2 == stale.2) {
        return;
    }
    let url = format!("http://{}:{}/", stale.1, stale.2);
    let t = Instant::now();
    while h.curl_from(from, &url).is_some() {
        assert!(t.elapsed() < Duration::from_secs(20), "the stale task at {url} still answers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_with_the_token_and_serve_an_app_by_address_and_name() {
    let h = Hosts::start(3, FAST).await;
    // Every host lists the three, up, at their own addresses.
    for i in 0..3 {
        h.wait_nodes_up(i, 3).await;
    }
    deploy(&h, 1, web(3)).await;
    let tasks = wait_exactly(&h, 2, "/web", 3).await;
    let all: BTreeSet<String> = (0..3).map(|i| h.ip(i).to_string()).collect();
    assert_eq!(hosts_of(&tasks), all, "one task per host: {tasks:?}");
    for i in 0..3 {
        assert_eq!(hosts_of(&wait_exactly(&h, i, "/web", 3).await), all, "host {i} lists the same tasks");
    }
    // Each task from the next host over; each host's DNS from another host.
    for (k, task) in tasks.iter().enumerate() {
        let from = (h.index_of(&task.1) + 1) % 3;
        assert_reachable_from(&h, from, &tasks[k..=k]).await;
    }
    for server in 0..3 {
        wait_dns(&h, (server + 2) % 3, server, &all).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_is_replaced_and_rejoins_without_extra_tasks() {
    let h = Hosts::start(3, FAST).await;
    deploy(&h, 0, web(3)).await;
    let before = wait_exactly(&h, 0, "/web", 3).await;
    let mut acked = writes_accepted(&h, 0, 0, 2).await;

    // Cut the leader off: the other two elect one and go on.
    let cut = leader(&h, 0).await;
    let rest: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    let stale = before.iter().find(|t| t.1 == h.ip(cut)).cloned().expect("a task on the cut host");
    h.cut(cut);
    let others: Vec<_> = before.iter().filter(|t| t.1 != h.ip(cut)).cloned().collect();
    assert_reachable_from(&h, rest[1], &others).await;
    acked.extend(writes_accepted(&h, rest[0], 100, 2).await);
    acked.extend(writes_accepted(&h, rest[1], 200, 0).await);

    // Its task is replaced on the others after the node-loss timeout.
    let t = Instant::now();
    let replaced = loop {
        let r = h.running(rest[0], "/web").await;
        if r.len() == 3 && r.iter().all(|x| x.1 != h.ip(cut)) && h.tasks(rest[0], "/web").await.len() == 3 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no replacement off the cut host: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(h.node_status(rest[1]).await.get(h.ip(cut)).map(String::as_str), Some("unreachable"));
    assert_reachable_from(&h, rest[1], &replaced).await;
    wait_dns(&h, rest[1], rest[0], &hosts_of(&replaced)).await;

    // Back on the network: it rejoins and converges; exactly three tasks,
    // every acknowledged write on it, its DNS agrees.
    h.reconnect(cut);
    h.wait_nodes_up(cut, 3).await;
    assert_acked_on(&h, &acked, cut).await;
    let mut now = Vec::new();
    for i in 0..3 {
        now = wait_exactly(&h, i, "/web", 3).await;
    }
    assert_reachable_from(&h, cut, &now).await;
    assert_stale_gone(&h, rest[0], &stale, &now).await;
    wait_dns(&h, rest[0], cut, &hosts_of(&now)).await;
    assert_eq!(wait_exactly(&h, cut, "/web", 3).await.len(), 3, "still three once settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_is_replaced_and_comes_back_after_a_restart() {
    let mut h = Hosts::start(3, FAST).await;
    deploy(&h, 2, web(3)).await;
    let before = wait_exactly(&h, 2, "/web", 3).await;

    // kill -9 a follower's agent.
    let lead = leader(&h, 0).await;
    let victim = (lead + 1) % 3;
    let rest: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let stale = before.iter().find(|t| t.1 == h.ip(victim)).cloned().expect("a task on the victim");
    h.hosts[victim].kill9();
    let acked = writes_accepted(&h, rest[1], 0, 3).await;
    let t = Instant::now();
    let replaced = loop {
        let r = h.running(rest[0], "/web").await;
        if r.len() == 3 && r.iter().all(|x| x.1 != h.ip(victim)) && h.tasks(rest[0], "/web").await.len() == 3 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no replacement off the killed host: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(h.node_status(rest[0]).await.get(h.ip(victim)).map(String::as_str), Some("unreachable"));
    assert_reachable_from(&h, victim, &replaced).await;
    wait_dns(&h, victim, rest[1], &hosts_of(&replaced)).await;

    // Restarted on its data: back, caught up, and its orphaned task gone.
    h.restart(victim).await;
    h.wait_nodes_up(rest[0], 3).await;
    assert_acked_on(&h, &acked, victim).await;
    let mut now = Vec::new();
    for i in 0..3 {
        now = wait_exactly(&h, i, "/web", 3).await;
    }
    assert_stale_gone(&h, rest[0], &stale, &now).await;
    wait_dns(&h, rest[0], victim, &hosts_of(&now)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_after_the_first_deploy_gets_tasks_on_a_scale_up() {
    let mut h = Hosts::start(3, FAST).await;
    deploy(&h, 0, web(3)).await;
    wait_exactly(&h, 0, "/web", 3).await;

    let new = h.join_new_host().await;
    h.wait_nodes_up(0, 4).await;
    h.wait_nodes_up(new, 4).await;
    let (s, v) = h.call(new, Method::PUT, "/v2/apps/web", Some(&json!({"instances": 4}))).await.expect("PUT");
    assert_eq!(s, StatusCode::OK, "{v}");
    let tasks = wait_exactly(&h, 1, "/web", 4).await;
    let all: BTreeSet<String> = (0..4).map(|i| h.ip(i).to_string()).collect();
    assert_eq!(hosts_of(&tasks), all, "the new host runs the fourth task: {tasks:?}");
    let on_new: Vec<_> = tasks.iter().filter(|t| t.1 == h.ip(new)).cloned().collect();
    assert_reachable_from(&h, 0, &on_new).await;
    wait_dns(&h, 1, new, &all).await;
    wait_dns(&h, new, 2, &all).await;
}
