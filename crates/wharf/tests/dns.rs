//! DNS on a three-node cluster, as a user sees it with `dig`: an app is
//! found by name from every node and from inside another task, and reached
//! at the address and port DNS gives; a task that turns unhealthy leaves the
//! answers and comes back when healthy again; a killed task's replacement
//! takes its place; other names are forwarded to an upstream server
//! (dnsmasq, started by the test on loopback).

mod common;

#[path = "../../dns/tests/common/dig.rs"]
mod dig;

use common::cluster::Cluster;
use common::{free_port, wait_for};
use dig::dig;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// The upstream resolver: dnsmasq answering one name of its own.
struct Upstream(std::process::Child);

impl Upstream {
    fn start(port: u16) -> Upstream {
        let child = std::process::Command::new("dnsmasq")
            .args(["-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces", "--pid-file="])
            .args(["--listen-address=127.0.0.1", &format!("--port={port}"), "--address=/outside.test/192.0.2.7"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base) starts");
        Upstream(child)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dns_of(c: &Cluster, i: usize) -> SocketAddr {
    format!("{}:53", c.nodes[i].ip).parse().expect("addr")
}

/// The SRV answer for the web app on node `i`: its ports.
fn srv_ports(c: &Cluster, i: usize) -> BTreeSet<u16> {
    dig(dns_of(c, i), "_web-dns._tcp.marathon.mesos.", "SRV", &[])
        .data("SRV")
        .iter()
        .filter_map(|d| d.split_whitespace().nth(2).and_then(|p| p.parse().ok()))
        .collect()
}

fn a_records(c: &Cluster, i: usize) -> BTreeSet<String> {
    dig(dns_of(c, i), "web-dns.marathon.mesos.", "A", &[]).data("A").into_iter().collect()
}

/// Running tasks of /dns/web as (id, host, port, healthy).
async fn web_tasks(c: &Cluster) -> Vec<(String, String, u16, bool)> {
    let v = c.get(0, "/v2/apps/dns/web/tasks").await;
    v["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .map(|t| {
            let healthy = t["healthCheckResults"]
                .as_array()
                .is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true));
            (
                t["id"].as_str().unwrap_or_default().to_string(),
                t["host"].as_str().unwrap_or_default().to_string(),
                t["ports"][0].as_u64().unwrap_or(0) as u16,
                healthy,
            )
        })
        .collect()
}

async fn every_node_says(c: &Cluster, what: &str, ports: &BTreeSet<u16>) {
    for i in 0..c.nodes.len() {
        wait_for(&format!("node {i}: {what}"), Duration::from_secs(20), || async { &srv_ports(c, i) == ports }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_found_by_name_from_every_node_and_follows_its_health() {
    let up_port = free_port();
    let _upstream = Upstream::start(up_port);
    let upstream = format!("127.0.0.1:{up_port}");
    let c = Cluster::start(3, &["--dns-upstream", &upstream]).await;
    let web = json!({
        "id": "/dns/web",
        "cmd": "echo ok > ok; exec python3 -m http.server $PORT0",
        "cpus": 0.1, "mem": 64, "instances": 2,
        "portDefinitions": [{"port": 0, "name": "http"}],
        "constraints": [["hostname", "UNIQUE"]],
        "healthChecks": [{"protocol": "HTTP", "path": "/ok", "portIndex": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "gracePeriodSeconds": 10, "maxConsecutiveFailures": 1000}]
    });
    let (s, v) = c.call(1, Method::POST, "/v2/apps", Some(&web)).await.expect("post");
    assert!(s.is_success(), "{v}");
    wait_for("two healthy web tasks", Duration::from_secs(40), || async {
        web_tasks(&c).await.iter().filter(|t| t.3).count() == 2
    })
    .await;
    let tasks = web_tasks(&c).await;
    let ports: BTreeSet<u16> = tasks.iter().map(|t| t.2).collect();
    let hosts: BTreeSet<String> = tasks.iter().map(|t| t.1.clone()).collect();
    every_node_says(&c, "both tasks in SRV", &ports).await;
    for i in 0..3 {
        assert_eq!(a_records(&c, i), hosts, "node {i}");
    }

    // Connect where DNS says: the SRV target's address and port.
    let d = dig(dns_of(&c, 2), "_web-dns._tcp.marathon.mesos.", "SRV", &[]);
    let srv: Vec<String> = d.data("SRV");
    let fields: Vec<&str> = srv[0].split_whitespace().collect();
    let ip = d.additional.iter().find(|r| r.0 == fields[3] && r.1 == "A").map(|r| r.2.clone()).expect("target address");
    let body = reqwest::get(format!("http://{ip}:{}/ok", fields[2])).await.expect("get").text().await.expect("body");
    assert_eq!(body.trim(), "ok");

    // From inside another task, with nothing but the node's DNS server.
    let client = json!({
        "id": "/dns/client", "cpus": 0.1, "mem": 32, "instances": 1,
        "cmd": "for i in $(seq 120); do set -- $(dig +short @$HOST _web-dns._tcp.marathon.mesos SRV | head -1); \
                ip=$(dig +short @$HOST \"$4\" | head -1); \
                if [ -n \"$ip\" ] && curl -sf \"http://$ip:$3/ok\"; then echo CONNECTED; exec sleep 1000; fi; sleep 0.5; done"
    });
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&client)).await.expect("post client");
    assert!(s.is_success(), "{v}");
    wait_for("the client task to connect by name", Duration::from_secs(40), || async {
        let Some(id) = c.get(0, "/v2/apps/dns/client/tasks").await["tasks"][0]["id"].as_str().map(str::to_string)
        else {
            return false;
        };
        let url = format!("{}/wharf/v1/tasks/{id}/files/stdout", c.nodes[0].addr());
        let Ok(resp) = c.client.get(url).send().await else { return false };
        let out = resp.text().await.unwrap_or_default();
        out.contains("ok") && out.contains("CONNECTED")
    })
    .await;

    // One task turns unhealthy: it leaves every node's answers at once, and
    // comes back when it is healthy again.
    let (sick_id, sick_host, sick_port, _) = tasks[0].clone();
    let ok_file = c.nodes[c.node_of_host(&sick_host)].dir.join("data/sandboxes").join(&sick_id).join("ok");
    std::fs::remove_file(&ok_file).expect("remove the health file");
    let rest: BTreeSet<u16> = ports.iter().copied().filter(|p| *p != sick_port).collect();
    every_node_says(&c, "the unhealthy task gone", &rest).await;
    assert!(!a_records(&c, 1).contains(&sick_host), "its host left the A records");
    assert!(web_tasks(&c).await.iter().any(|t| t.0 == sick_id), "unhealthy but still running");
    std::fs::write(&ok_file, "ok\n").expect("restore the health file");
    every_node_says(&c, "the task back once healthy", &ports).await;

    // Kill the other task from outside: its replacement takes its place.
    let (dead_id, dead_host, _, _) = tasks[1].clone();
    let pid = c.task_pid(c.node_of_host(&dead_host), &dead_id).expect("pid");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    wait_for("a healthy replacement", Duration::from_secs(40), || async {
        let t = web_tasks(&c).await;
        t.iter().filter(|t| t.3).count() == 2 && t.iter().all(|t| t.0 != dead_id)
    })
    .await;
    let now: BTreeSet<u16> = web_tasks(&c).await.iter().map(|t| t.2).collect();
    every_node_says(&c, "the replacement in SRV", &now).await;

    // Other names go upstream; missing cluster names are NXDOMAIN.
    for i in 0..3 {
        let d = dig(dns_of(&c, i), "outside.test.", "A", &[]);
        assert_eq!(d.data("A"), vec!["192.0.2.7"], "node {i}: {}", d.raw);
        assert!(d.flags.contains("ra"), "{}", d.raw);
        assert_eq!(dig(dns_of(&c, i), "nope.marathon.mesos.", "A", &[]).status, "NXDOMAIN");
    }
    let leader = c.leader(0).await.expect("leader");
    assert_eq!(dig(dns_of(&c, 1), "leader.mesos.", "A", &[]).data("A"), vec![c.nodes[leader].ip.clone()]);
    let v: Value = c.get(2, "/v1/hosts/web-dns.marathon.mesos").await;
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
}
