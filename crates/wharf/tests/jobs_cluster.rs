//! Scheduled jobs across a leader failover on three real nodes: killing the
//! leader (kill -9) right at a fire time starts that fire time's run exactly
//! once, and no fire time is skipped.

mod common;

use common::cluster::Cluster;
use common::wait_for;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Runs per fire time (seconds since the epoch, from the run id's stamp).
fn runs_per_fire(job: &Value) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    let lists = [&job["activeRuns"], &job["history"]["successfulFinishedRuns"], &job["history"]["failedFinishedRuns"]];
    for r in lists.into_iter().filter_map(Value::as_array).flatten() {
        let id = r["id"].as_str().expect("id");
        let t = chrono::NaiveDateTime::parse_from_str(&id[..14], "%Y%m%d%H%M%S").expect("stamp").and_utc().timestamp();
        *out.entry(t).or_default() += 1;
    }
    out
}

fn parse_time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_str(v.as_str().expect("time"), "%Y-%m-%dT%H:%M:%S%.3f%z").expect("time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_at_a_fire_time_gives_exactly_one_run() {
    let mut c = Cluster::start(3, &[]).await;
    let def = json!({"id": "failover", "run": {"cmd": "true", "cpus": 0.01, "mem": 32, "disk": 0},
        "schedules": [{"id": "every-10s", "cron": "*/10 * * * * *", "startingDeadlineSeconds": 60}]});
    let (s, v) = c.call(0, Method::POST, "/v1/jobs", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Followers apply the write a replication round later.
    for i in 0..3 {
        wait_for("the job on every node", Duration::from_secs(10), || async {
            c.call(i, Method::GET, "/v1/jobs/failover", None).await.is_some_and(|(s, _)| s == StatusCode::OK)
        })
        .await;
    }
    let mut killed_at = Vec::new();
    // Three failovers, each with the kill a little before, at and after the fire time.
    for offset_ms in [-30i64, 0, 40] {
        let leader = c.leader(0).await.or(c.leader(1).await).expect("a leader");
        let other = (leader + 1) % 3;
        let next = c.get(other, "/v1/jobs/failover/schedules/every-10s").await;
        let mut fire = parse_time(&next["nextRunAt"]);
        let now = chrono::Utc::now();
        if (fire.timestamp_millis() - now.timestamp_millis()) < 1000 {
            // Too close to aim at: take the one after.
            fire += chrono::Duration::seconds(10);
        }
        let wait = fire.timestamp_millis() + offset_ms - chrono::Utc::now().timestamp_millis();
        tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
        c.nodes[leader].kill9();
        killed_at.push(fire.timestamp());
        wait_for("a new leader", Duration::from_secs(15), || async {
            c.leader(other).await.is_some_and(|l| l != leader)
        })
        .await;
        // The fire time's run exists once the new leader has caught up.
        let want = fire.timestamp();
        wait_for("the fire time's run", Duration::from_secs(30), || async {
            let job = c.get(other, "/v1/jobs/failover?embed=activeRuns&embed=history").await;
            runs_per_fire(&job).contains_key(&want)
        })
        .await;
        c.nodes[leader].spawn(None);
        c.wait_up(leader).await;
    }
    // Let one more fire time pass with everyone up, then look from every node.
    let last = *killed_at.last().expect("rounds");
    wait_for("a run after the last failover", Duration::from_secs(40), || async {
        let job = c.get(0, "/v1/jobs/failover?embed=activeRuns&embed=history").await;
        runs_per_fire(&job).keys().any(|t| *t > last)
    })
    .await;
    for i in 0..3 {
        let job = c.get(i, "/v1/jobs/failover?embed=activeRuns&embed=history").await;
        let per_fire = runs_per_fire(&job);
        for t in &killed_at {
            assert_eq!(per_fire.get(t), Some(&1), "node {i}: fire time {t} has one run: {per_fire:?}");
        }
        assert!(per_fire.values().all(|n| *n == 1), "node {i}: no fire time twice: {per_fire:?}");
        let times: Vec<i64> = per_fire.keys().copied().collect();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 10), "node {i}: no fire time skipped: {times:?}");
    }
    let _ = c.call(0, Method::DELETE, "/v1/jobs/failover?stopCurrentJobRuns=true", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_runs_output_is_read_through_any_node() {
    let c = Cluster::start(3, &["--job-history-count", "2"]).await;
    let def = json!({"id": "where", "run": {"cmd": "echo out of $MESOS_TASK_ID; echo err >&2", "cpus": 0.01, "mem": 32, "disk": 0}});
    let (s, v) = c.call(0, Method::POST, "/v1/jobs", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut started = Vec::new();
    for _ in 0..3 {
        let (s, v) = c.call(0, Method::POST, "/v1/jobs/where/runs", None).await.expect("run");
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let run = v["id"].as_str().expect("run id").to_string();
        wait_for("the run's end", Duration::from_secs(30), || async {
            c.get(0, &format!("/v1/jobs/where/runs/{run}")).await["status"] == "SUCCESS"
        })
        .await;
        started.push(run);
    }
    // Every node keeps the same two newest runs (the setting is replicated).
    for i in 0..3 {
        wait_for("two runs in every node's history", Duration::from_secs(10), || async {
            let job = c.get(i, "/v1/jobs/where?embed=history").await;
            let ids: Vec<&str> = job["history"]["successfulFinishedRuns"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["id"].as_str()).collect())
                .unwrap_or_default();
            ids == [started[2].as_str(), started[1].as_str()] && job["history"]["successCount"] == 3
        })
        .await;
    }
    // Each kept run's task, read through both nodes that did not run it.
    let job = c.get(0, "/v1/jobs/where?embed=history").await;
    let nodes = c.get(0, "/wharf/v1/nodes").await;
    let host_of = |id: &str| -> String {
        let all = nodes["nodes"].as_array().cloned().unwrap_or_default();
        let n = all.iter().find(|n| n["id"] == id).expect("the run's node is known");
        n["hostname"].as_str().unwrap_or_default().to_string()
    };
    for run in job["history"]["successfulFinishedRuns"].as_array().expect("history") {
        let run = c.get(0, &format!("/v1/jobs/where/runs/{}", run["id"].as_str().expect("run id"))).await;
        let task = &run["tasks"][0];
        let tid = task["id"].as_str().expect("task id");
        let ran_on = c.node_of_host(&host_of(task["node"].as_str().expect("node")));
        for i in (0..3).filter(|i| *i != ran_on) {
            for (stream, want) in [("stdout", format!("out of {tid}\n")), ("stderr", "err\n".to_string())] {
                let url = format!("{}/wharf/v1/tasks/{tid}/logs?stream={stream}", c.nodes[i].addr());
                let r = c.client.get(&url).send().await.expect("logs");
                assert_eq!(r.status(), StatusCode::OK, "logs of {tid} through node {i}");
                assert_eq!(r.text().await.expect("text"), want, "{stream} of {tid} through node {i}");
            }
            let url = format!("{}/wharf/v1/tasks/{tid}/files/stdout", c.nodes[i].addr());
            let r = c.client.get(&url).send().await.expect("file");
            assert_eq!(r.status(), StatusCode::OK, "stdout file of {tid} through node {i}");
            assert_eq!(r.text().await.expect("text"), format!("out of {tid}\n"));
        }
    }
    let _ = c.call(0, Method::DELETE, "/v1/jobs/where", None).await;
}
