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

/// The agents' own heartbeat timeout (3 s) is kept: under a loaded 2-core
/// machine a shorter one declares busy hosts lost and the tests would
/// measure the load, not the cluster.
const FLAGS: &[&str] = &[];

type Task = (String, String, u16);

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

/// `web` with at most one task per host (Marathon's `hostname:UNIQUE`).
fn web_spread(instances: u32) -> Value {
    let mut app = web(instances);
    app["constraints"] = json!([["hostname", "UNIQUE"]]);
    app
}

/// A host that runs one of `tasks`, one for which `prefer` holds if any.
fn host_running(h: &Hosts, tasks: &[Task], prefer: impl Fn(usize) -> bool) -> usize {
    let with_task: Vec<usize> = tasks.iter().map(|t| h.index_of(&t.1)).collect();
    with_task.iter().copied().find(|i| prefer(*i)).or(with_task.first().copied()).expect("a host with a task")
}

async fn deploy(h: &Hosts, via: usize, app: Value) {
    let (s, v) = h.call(via, Method::POST, "/v2/apps", Some(&app)).await.expect("POST /v2/apps");
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// Waits until host `via` lists exactly `n` tasks of /web, all running and
/// none on host `down`, and each answers HTTP at its host's address when
/// asked from another host (not `down`). The list is read again each time:
/// what counts is a state the cluster settles in.
async fn wait_serving(h: &Hosts, via: usize, n: usize, down: Option<usize>) -> Vec<Task> {
    let t = Instant::now();
    loop {
        let tasks = h.running(via, "/web").await;
        let settled = tasks.len() == n
            && h.tasks(via, "/web").await.len() == n
            && tasks.iter().all(|x| down.is_none_or(|d| x.1 != h.ip(d)));
        if settled && tasks.iter().all(|x| answers(h, x, down)) {
            return tasks;
        }
        if t.elapsed() > Duration::from_secs(45) {
            panic!("host {via}: want {n} tasks serving, none on {down:?}\n{}", diagnose(h).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether `task` answers HTTP at its host's address, asked from the next
/// host that is neither its own nor `down`.
fn answers(h: &Hosts, task: &Task, down: Option<usize>) -> bool {
    let own = h.index_of(&task.1);
    let n = h.hosts.len();
    let from = (1..n).map(|k| (own + k) % n).find(|i| Some(*i) != down).expect("another host");
    h.curl_from(from, &format!("http://{}:{}/", task.1, task.2)).is_some_and(|b| b.contains("Directory listing"))
}

fn hosts_of(tasks: &[Task]) -> BTreeSet<String> {
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
async fn assert_reachable_from(h: &Hosts, from: usize, tasks: &[Task]) {
    for (id, host, port) in tasks {
        let url = format!("http://{host}:{port}/");
        let t = Instant::now();
        // A task that just started may not listen yet.
        loop {
            if h.curl_from(from, &url).is_some_and(|b| b.contains("Directory listing")) {
                break;
            }
            if t.elapsed() > Duration::from_secs(15) {
                panic!("task {id} at {url} does not answer host {from}\n{}", diagnose(h).await);
            }
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

/// Waits until host `server`'s DNS, asked from host `from`, gives the
/// addresses of the hosts whose tasks host `via` lists.
async fn wait_dns(h: &Hosts, from: usize, server: usize, via: usize) {
    let t = Instant::now();
    loop {
        let want = hosts_of(&h.running(via, "/web").await);
        let have = web_addresses(h, from, server);
        if have == want && !want.is_empty() {
            return;
        }
        if t.elapsed() > Duration::from_secs(20) {
            panic!("dig @{} from host {from}: {have:?}, want {want:?}\n{}", h.ip(server), diagnose(h).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What every host says of /web (API, DNS, HTTP), for a failure message.
async fn diagnose(h: &Hosts) -> String {
    let mut out = String::new();
    for i in 0..h.hosts.len() {
        let tasks = h.running(i, "/web").await;
        out.push_str(&format!(
            "host {i} ({}): tasks {tasks:?}, dns {:?}\n",
            h.ip(i),
            web_addresses(h, (i + 1) % h.hosts.len(), i)
        ));
        for t in &tasks {
            let url = format!("http://{}:{}/", t.1, t.2);
            out.push_str(&format!("  curl {url} from host {i}: {:?}\n", h.curl_from(i, &url).map(|b| b.len())));
        }
    }
    for i in 0..h.hosts.len() {
        let log = h.log(i);
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        out.push_str(&format!("--- host {i} log tail:\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    out
}

async fn leader(h: &Hosts, via: usize) -> usize {
    let v = h.get(via, "/v2/leader").await;
    let addr = v["leader"].as_str().expect("a leader").to_string();
    h.index_of(addr.split(':').next().unwrap_or(""))
}

/// A task of a host that was lost and came back, replaced meanwhile: it
/// stops answering (the cluster kills it) unless the cluster took it back
/// as one of the app's tasks.
async fn assert_stale_gone(h: &Hosts, via: usize, from: usize, stale: &Task) {
    let url = format!("http://{}:{}/", stale.1, stale.2);
    let t = Instant::now();
    loop {
        let kept = h.running(via, "/web").await.iter().any(|x| x.1 == stale.1 && x.2 == stale.2);
        if kept || h.curl_from(from, &url).is_none() {
            return;
        }
        if t.elapsed() > Duration::from_secs(20) {
            panic!("the replaced task at {url} still answers\n{}", diagnose(h).await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_with_the_token_and_serve_an_app_by_address_and_name() {
    let h = Hosts::start(3, FLAGS).await;
    // Every host lists the three, up, at their own addresses.
    for i in 0..3 {
        h.wait_nodes_up(i, 3).await;
    }
    deploy(&h, 1, web_spread(3)).await;
    let tasks = wait_serving(&h, 2, 3, None).await;
    let all: BTreeSet<String> = (0..3).map(|i| h.ip(i).to_string()).collect();
    assert_eq!(hosts_of(&tasks), all, "one task per host: {tasks:?}");
    // Each host's DNS, asked from another host.
    for server in 0..3 {
        wait_dns(&h, (server + 2) % 3, server, server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_cut_off_is_replaced_and_rejoins_without_extra_tasks() {
    let h = Hosts::start(3, FLAGS).await;
    deploy(&h, 0, web(3)).await;
    let before = wait_serving(&h, 0, 3, None).await;
    let mut acked = writes_accepted(&h, 0, 0, 2).await;

    // Cut a host off, the leader when it runs a task: the other two go on.
    let lead = leader(&h, 0).await;
    let cut = host_running(&h, &before, |i| i == lead);
    let rest: Vec<usize> = (0..3).filter(|i| *i != cut).collect();
    let stale = before.iter().find(|t| t.1 == h.ip(cut)).cloned().expect("a task on the cut host");
    h.cut(cut);
    let others: Vec<Task> = before.iter().filter(|t| t.1 != h.ip(cut)).cloned().collect();
    assert_reachable_from(&h, rest[1], &others).await;
    acked.extend(writes_accepted(&h, rest[0], 100, 2).await);
    acked.extend(writes_accepted(&h, rest[1], 200, 0).await);

    // Its task is replaced on the others after the node-loss timeout.
    wait_serving(&h, rest[0], 3, Some(cut)).await;
    assert_eq!(h.node_status(rest[1]).await.get(h.ip(cut)).map(String::as_str), Some("unreachable"));
    wait_dns(&h, rest[1], rest[0], rest[0]).await;

    // Back on the network: it rejoins and converges; exactly three tasks
    // wherever asked, every acknowledged write on it, its DNS agrees.
    h.reconnect(cut);
    h.wait_nodes_up(cut, 3).await;
    assert_acked_on(&h, &acked, cut).await;
    assert_stale_gone(&h, cut, rest[0], &stale).await;
    for via in [cut, rest[0], rest[1]] {
        wait_serving(&h, via, 3, None).await;
    }
    wait_dns(&h, rest[0], cut, cut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_host_is_replaced_and_comes_back_after_a_restart() {
    let mut h = Hosts::start(3, FLAGS).await;
    deploy(&h, 2, web(3)).await;
    let before = wait_serving(&h, 2, 3, None).await;

    // kill -9 the agent of a host with a task, a follower when one has a task
    // (its task goes on, orphaned).
    let lead = leader(&h, 0).await;
    let victim = host_running(&h, &before, |i| i != lead);
    let rest: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let stale = before.iter().find(|t| t.1 == h.ip(victim)).cloned().expect("a task on the victim");
    h.hosts[victim].kill9();
    let acked = writes_accepted(&h, rest[1], 0, 3).await;
    wait_serving(&h, rest[0], 3, Some(victim)).await;
    assert_eq!(h.node_status(rest[0]).await.get(h.ip(victim)).map(String::as_str), Some("unreachable"));
    // Its namespace still has its network: it resolves through the others.
    wait_dns(&h, victim, rest[1], rest[1]).await;

    // Restarted on its data: back, caught up, its orphaned task gone.
    h.restart(victim).await;
    h.wait_nodes_up(rest[0], 3).await;
    assert_acked_on(&h, &acked, victim).await;
    assert_stale_gone(&h, victim, rest[0], &stale).await;
    for via in [victim, rest[0], rest[1]] {
        wait_serving(&h, via, 3, None).await;
    }
    wait_dns(&h, rest[0], victim, victim).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_added_after_the_first_deploy_gets_tasks_on_a_scale_up() {
    let mut h = Hosts::start(3, FLAGS).await;
    deploy(&h, 0, web_spread(3)).await;
    wait_serving(&h, 0, 3, None).await;

    let new = h.join_new_host().await;
    h.wait_nodes_up(0, 4).await;
    h.wait_nodes_up(new, 4).await;
    let (s, v) = h.call(new, Method::PUT, "/v2/apps/web", Some(&json!({"instances": 4}))).await.expect("PUT");
    assert_eq!(s, StatusCode::OK, "{v}");
    let tasks = wait_serving(&h, 1, 4, None).await;
    let all: BTreeSet<String> = (0..4).map(|i| h.ip(i).to_string()).collect();
    assert_eq!(hosts_of(&tasks), all, "the new host runs the fourth task: {tasks:?}");
    wait_dns(&h, 1, new, 1).await;
    wait_dns(&h, new, 2, 2).await;
}
