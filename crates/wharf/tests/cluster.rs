//! Several real nodes on their own loopback addresses (127.a.b.N, fixed
//! ports per address). Faults are real: kill -9, and partitions with
//! iptables rules between node addresses (nodes send from their own
//! address). After every fault: acknowledged writes are all there, each app
//! ends at exactly `instances` running tasks, and every node answers.

mod common;

use common::cluster::Cluster;
use common::{alive, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Writes app `/acked/{i}` through node `via`; true when acknowledged.
async fn acked_write(c: &Cluster, via: usize, i: u32) -> bool {
    let def = json!({"id": format!("/acked/w{i}"), "args": ["sleep", "1000"], "cpus": 0.01, "mem": 8, "instances": 0});
    matches!(c.call(via, Method::POST, "/v2/apps", Some(&def)).await, Some((StatusCode::CREATED, _)))
}

async fn assert_acked_everywhere(c: &Cluster, acked: &[u32], nodes: &[usize]) {
    for &i in nodes {
        wait_for("every acknowledged write on every node", Duration::from_secs(15), || async {
            let apps = c.get(i, "/v2/apps?id=/acked/").await;
            let have: std::collections::BTreeSet<String> = apps["apps"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            acked.iter().all(|w| have.contains(&format!("/acked/w{w}")))
        })
        .await;
    }
}

async fn wait_exactly(c: &Cluster, via: usize, app: &str, n: usize) -> Vec<(String, String)> {
    let t = Instant::now();
    loop {
        let r = c.running(via, app).await;
        if r.len() == n && c.all_tasks(via, app).await == n {
            return r;
        }
        assert!(t.elapsed() < Duration::from_secs(40), "{app}: want {n} running, have {r:?}\n{}", c.log(via));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_replicate_and_survive_leader_and_node_loss() {
    let mut c = Cluster::start(4, &[]).await;
    let nodes = c.get(2, "/wharf/v1/nodes").await;
    let roles: Vec<&str> =
        nodes["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["role"].as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "voter").count(), 3, "{nodes}");
    assert_eq!(roles.iter().filter(|r| **r == "learner").count(), 1, "{nodes}");

    // Every node answers, and a write through a follower is readable there at once.
    let leader = c.leader(3).await.expect("leader");
    let follower = (leader + 1) % 4;
    let mut acked = Vec::new();
    for i in 0..5 {
        if acked_write(&c, follower, i).await {
            acked.push(i);
            let (s, _) = c.call(follower, Method::GET, &format!("/v2/apps/acked/w{i}"), None).await.expect("read");
            assert_eq!(s, StatusCode::OK, "read-your-write on the node written to");
        }
    }
    assert_eq!(acked.len(), 5);
    let (s, v) = c
        .call(
            follower,
            Method::POST,
            "/v2/apps",
            Some(&json!({"id": "/svc", "args": ["sleep", "1000"], "cpus": 0.1, "mem": 16, "instances": 4})),
        )
        .await
        .expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_exactly(&c, 0, "/svc", 4).await;

    // kill -9 the leader: another node leads, writes continue, nothing acknowledged is lost,
    // and the dead node's tasks run elsewhere.
    let leader = c.leader(0).await.expect("leader");
    c.nodes[leader].kill9();
    let other = (leader + 1) % 4;
    let t = Instant::now();
    let mut i = 100;
    loop {
        if acked_write(&c, other, i).await {
            acked.push(i);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "no write accepted after the leader died");
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = c.leader(other).await.expect("new leader");
    assert_ne!(new_leader, leader);
    let live: Vec<usize> = (0..4).filter(|j| *j != leader).collect();
    assert_acked_everywhere(&c, &acked, &live).await;
    let dead_ip = c.nodes[leader].ip.clone();
    wait_for("tasks of the dead node replaced", Duration::from_secs(30), || async {
        let r = c.running(other, "/svc").await;
        r.len() == 4 && r.iter().all(|(_, h)| *h != dead_ip)
    })
    .await;

    // It comes back: exactly 4 tasks (its stale one is killed), and it catches up.
    c.nodes[leader].spawn(None);
    c.wait_up(leader).await;
    assert_acked_everywhere(&c, &acked, &[leader]).await;
    wait_exactly(&c, leader, "/svc", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_keep_tasks_running_and_heal_to_the_right_count() {
    let c = Cluster::start(3, &[]).await;
    c.call(
        0,
        Method::POST,
        "/v2/apps",
        Some(&json!({"id": "/p", "args": ["sleep", "1000"], "cpus": 0.1, "mem": 16, "instances": 3})),
    )
    .await
    .expect("post");
    let tasks = wait_exactly(&c, 0, "/p", 3).await;

    // Partition a follower that runs a task.
    let leader = c.leader(0).await.expect("leader");
    let (victim_task, host) =
        tasks.iter().find(|(_, h)| c.node_of_host(h) != leader).cloned().expect("a task on a follower");
    let cut = c.node_of_host(&host);
    let pid = c.task_pid(cut, &victim_task).expect("pid");
    c.partition(cut);
    let healthy = (0..3).find(|j| *j != cut).expect("other node");
    wait_for("replacement outside the partitioned node", Duration::from_secs(30), || async {
        let r = c.running(healthy, "/p").await;
        r.len() == 3 && r.iter().all(|(_, h)| *h != host)
    })
    .await;
    assert!(alive(pid), "a cut-off agent keeps its task running");
    let mut acked = Vec::new();
    for i in 0..3 {
        if acked_write(&c, healthy, i).await {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 3, "the majority keeps accepting writes");
    c.heal();
    wait_exactly(&c, cut, "/p", 3).await;
    wait_for("the surplus task is killed", Duration::from_secs(20), || async { !alive(pid) }).await;
    assert_acked_everywhere(&c, &acked, &[0, 1, 2]).await;

    // Now partition the leader: the others elect a new one and go on.
    let leader = c.leader(0).await.expect("leader");
    c.partition(leader);
    let rest: Vec<usize> = (0..3).filter(|j| *j != leader).collect();
    let t = Instant::now();
    let mut i = 10;
    while !acked_write(&c, rest[0], i).await {
        assert!(t.elapsed() < Duration::from_secs(20), "majority did not recover from a partitioned leader");
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acked.push(i);
    c.heal();
    assert_acked_everywhere(&c, &acked, &[0, 1, 2]).await;
    wait_exactly(&c, leader, "/p", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_restart_loses_nothing_and_tasks_keep_running() {
    let mut c = Cluster::start(3, &[]).await;
    c.call(
        1,
        Method::POST,
        "/v2/apps",
        Some(&json!({"id": "/keep", "args": ["sleep", "1000"], "cpus": 0.1, "mem": 16, "instances": 3})),
    )
    .await
    .expect("post");
    let mut acked = Vec::new();
    for i in 0..10 {
        if acked_write(&c, (i % 3) as usize, i).await {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 10);
    let before = wait_exactly(&c, 0, "/keep", 3).await;
    let pids: Vec<i32> = before.iter().map(|(t, h)| c.task_pid(c.node_of_host(h), t).expect("pid")).collect();
    for n in &mut c.nodes {
        n.stop();
    }
    assert!(pids.iter().all(|p| alive(*p)));
    for n in &mut c.nodes {
        n.spawn(None);
    }
    for i in 0..3 {
        c.wait_up(i).await;
    }
    assert_acked_everywhere(&c, &acked, &[0, 1, 2]).await;
    let after = wait_exactly(&c, 2, "/keep", 3).await;
    let mut a: Vec<String> = after.into_iter().map(|x| x.0).collect();
    let mut b: Vec<String> = before.into_iter().map(|x| x.0).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same tasks after a full restart");
    assert!(pids.iter().all(|p| alive(*p)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_remove_and_voter_replacement() {
    let mut c = Cluster::start(4, &["--voter-replace-after", "2", "--heartbeat-timeout", "1.5"]).await;
    c.call(
        0,
        Method::POST,
        "/v2/apps",
        Some(&json!({"id": "/d", "args": ["sleep", "1000"], "cpus": 0.1, "mem": 16, "instances": 4})),
    )
    .await
    .expect("post");
    wait_exactly(&c, 0, "/d", 4).await;
    let nodes = c.get(0, "/wharf/v1/nodes").await;
    let id_of = |ip: &str| -> String {
        nodes["nodes"].as_array().expect("nodes").iter().find(|n| n["hostname"] == ip).expect("node")["id"]
            .as_str()
            .expect("id")
            .to_string()
    };

    // Drain: its tasks move and it gets none.
    let learner_ip =
        nodes["nodes"].as_array().expect("nodes").iter().find(|n| n["role"] == "learner").expect("learner")["hostname"]
            .as_str()
            .expect("ip")
            .to_string();
    let leader_now = c.leader(0).await;
    let drained = (0..4).find(|i| c.nodes[*i].ip != learner_ip && leader_now != Some(*i)).unwrap_or(1);
    let drained_ip = c.nodes[drained].ip.clone();
    let (s, v) =
        c.call(0, Method::POST, &format!("/wharf/v1/nodes/{}/drain", id_of(&drained_ip)), None).await.expect("drain");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("tasks off the drained node", Duration::from_secs(30), || async {
        let r = c.running(0, "/d").await;
        r.len() == 4 && r.iter().all(|(_, h)| *h != drained_ip) && c.all_tasks(0, "/d").await == 4
    })
    .await;

    // A voter dies for good: the learner is promoted.
    let leader = c.leader(0).await.expect("leader");
    let lost = (0..4).find(|i| *i != leader && c.nodes[*i].ip != learner_ip).expect("a follower voter");
    c.nodes[lost].kill9();
    let asker = leader;
    wait_for("the learner promoted to voter", Duration::from_secs(30), || async {
        let v = c.get(asker, "/wharf/v1/nodes").await;
        v["nodes"]
            .as_array()
            .is_some_and(|ns| ns.iter().any(|n| n["hostname"] == learner_ip.as_str() && n["role"] == "voter"))
    })
    .await;

    // Remove the dead node: gone from the list and from Raft.
    let lost_id = id_of(&c.nodes[lost].ip.clone());
    let (s, v) = c.call(asker, Method::DELETE, &format!("/wharf/v1/nodes/{lost_id}"), None).await.expect("rm");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("node gone", Duration::from_secs(10), || async {
        let v = c.get(asker, "/wharf/v1/nodes").await;
        v["nodes"].as_array().is_some_and(|ns| ns.len() == 3 && ns.iter().all(|n| n["id"] != lost_id.as_str()))
    })
    .await;
    wait_exactly(&c, asker, "/d", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_abdicates_and_every_node_tells_the_truth() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.leader(0).await.expect("leader");
    for i in 0..3 {
        let info = c.get(i, "/v2/info").await;
        assert_eq!(info["elected"], i == leader, "node {i}: {info}");
        assert_eq!(info["leader"], format!("{}:8080", c.nodes[leader].ip));
    }
    let via = (leader + 2) % 3;
    let (s, v) = c.call(via, Method::DELETE, "/v2/leader", None).await.expect("abdicate");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("another leader", Duration::from_secs(30), || async {
        let mut seen = Vec::new();
        for i in 0..3 {
            seen.push(c.leader(i).await);
        }
        seen.iter().all(|l| l.is_some() && *l != Some(leader) && *l == seen[0])
    })
    .await;
    assert!(acked_write(&c, leader, 1).await, "the old leader forwards writes to the new one");
    let resp = c.client.get(format!("{}/v2/apps", c.nodes[leader].addr())).send().await.expect("get");
    let new_leader = c.leader(0).await.expect("leader");
    assert_eq!(
        resp.headers().get("x-marathon-leader").and_then(|v| v.to_str().ok()),
        Some(format!("http://{}:8080", c.nodes[new_leader].ip).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_spread_pin_and_queue_with_a_reason() {
    let c = Cluster::start(3, &[]).await;
    let def = json!({"id": "/uniq", "args": ["sleep", "1000"], "cpus": 0.05, "mem": 16, "instances": 4,
                     "constraints": [["hostname", "UNIQUE"]]});
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_for("one task per node", Duration::from_secs(20), || async {
        let r = c.running(1, "/uniq").await;
        let hosts: std::collections::BTreeSet<String> = r.iter().map(|(_, h)| h.clone()).collect();
        r.len() == 3 && hosts.len() == 3
    })
    .await;
    wait_for("the fourth instance queued with the reason", Duration::from_secs(10), || async {
        // In Marathon's terms: all three nodes declined on the constraint.
        let q = c.get(2, "/v2/queue").await;
        let declined = |e: &Value| {
            e["processedOffersSummary"]["rejectSummaryLastOffers"].as_array().is_some_and(|s| {
                s.iter().any(|r| r["reason"] == "UnfulfilledConstraint" && r["declined"] == 3 && r["processed"] == 3)
            })
        };
        let marathon = q["queue"]
            .as_array()
            .is_some_and(|q| q.iter().any(|e| e["app"]["id"] == "/uniq" && e["count"] == 1 && declined(e)));
        // In words, under /wharf/v1.
        let w = c.get(2, "/wharf/v1/queue").await;
        let words = w["queue"].as_array().is_some_and(|q| {
            q.iter().any(|e| {
                e["app"] == "/uniq"
                    && e["reason"].as_str().is_some_and(|r| r.contains("hostname") && r.contains("Unique"))
            })
        });
        marathon && words
    })
    .await;

    // LIKE pins to one node.
    let target = c.nodes[2].ip.clone();
    let pattern = target.replace('.', "\\.");
    let def = json!({"id": "/pinned", "args": ["sleep", "1000"], "cpus": 0.05, "mem": 16, "instances": 2,
                     "constraints": [["hostname", "LIKE", pattern]]});
    let (s, v) = c.call(1, Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_for("both on the pinned node", Duration::from_secs(20), || async {
        let r = c.running(0, "/pinned").await;
        r.len() == 2 && r.iter().all(|(_, h)| *h == target)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_survives_a_leader_change() {
    let mut c = Cluster::start(3, &[]).await;
    let def = json!({"id": "/hc", "cmd": "exec python3 -m http.server $PORT0", "cpus": 0.1, "mem": 64, "instances": 3,
                     "constraints": [["hostname", "UNIQUE"]],
                     "healthChecks": [{"protocol": "HTTP", "path": "/", "intervalSeconds": 1, "gracePeriodSeconds": 30}]});
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Read where it was written: a follower may not have applied the write yet.
    wait_for("3 healthy", Duration::from_secs(30), || async {
        c.get(0, "/v2/apps/hc").await["app"]["tasksHealthy"] == 3
    })
    .await;
    let leader = c.leader(0).await.expect("leader");
    let leader_ip = c.nodes[leader].ip.clone();
    c.nodes[leader].kill9();
    let other = (leader + 1) % 3;
    wait_for("a new leader", Duration::from_secs(10), || async { c.leader(other).await.is_some_and(|l| l != leader) })
        .await;
    // Right after the failover the surviving tasks are still known healthy:
    // health lives in the replicated state, not in the old leader's memory.
    let tasks = c.get(other, "/v2/apps/hc/tasks").await;
    let survivors: Vec<&Value> =
        tasks["tasks"].as_array().expect("tasks").iter().filter(|t| t["host"] != leader_ip.as_str()).collect();
    assert_eq!(survivors.len(), 2, "{tasks}");
    for t in survivors {
        assert_eq!(t["healthCheckResults"][0]["alive"], true, "{t}");
    }
    // The dead node's task goes; UNIQUE leaves its replacement waiting.
    wait_for("the lost task expunged, the rest healthy, one queued", Duration::from_secs(40), || async {
        let app = c.get(other, "/v2/apps/hc").await;
        let q = c.get(other, "/v2/queue").await;
        app["app"]["tasksHealthy"] == 2
            && app["app"]["tasksRunning"] == 2
            && q["queue"].as_array().is_some_and(|q| q.iter().any(|e| e["app"]["id"] == "/hc" && e["count"] == 1))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_killing_the_leader_under_load() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.leader(0).await.expect("leader");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.addr()).collect();
    // Eight clients write concurrently through the followers while the leader is killed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u32 {
        let base = addrs[followers[(w % 2) as usize]].clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().expect("client");
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("/load/w{w}-{i}");
                let def = json!({"id": id, "args": ["sleep", "1"], "cpus": 0.01, "mem": 8, "instances": 0});
                if let Ok(r) = client.post(format!("{base}/v2/apps")).json(&def).send().await {
                    if r.status() == StatusCode::CREATED {
                        acked.push(id);
                    }
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.nodes[leader].kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(acked.len() > 50, "too few writes acknowledged: {}", acked.len());
    // Every acknowledged write is on both survivors, and on the old leader after it returns.
    c.nodes[leader].spawn(None);
    c.wait_up(leader).await;
    for i in 0..3 {
        wait_for("all acknowledged writes", Duration::from_secs(20), || async {
            let apps = c.get(i, "/v2/apps?id=/load/").await;
            let have: std::collections::BTreeSet<String> = apps["apps"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            acked.iter().all(|id| have.contains(id))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_join_at_the_same_time_all_get_in() {
    // Raft allows one membership change at a time: the leader must take
    // joins in turn instead of refusing the ones that arrive together.
    let c = Cluster::start_together(4).await;
    let nodes = c.get(0, "/wharf/v1/nodes").await;
    let roles: Vec<&str> =
        nodes["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["role"].as_str()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "voter").count(), 3, "{nodes}");
    assert_eq!(roles.iter().filter(|r| **r == "learner").count(), 1, "{nodes}");
}
