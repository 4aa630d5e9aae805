//! `GET /metrics`: a real HTTP client scrapes a real node, a Prometheus text
//! parser reads the answer, and the series a user watches move with a
//! deployment (tasks running 0 -> 2, requests counted by route and status).

mod common;

use common::cluster::Cluster;
use common::sse::Stream;
use common::Node;
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;

struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn take(node: &Node) -> Scrape {
        Scrape::from(&node.client, &node.addr()).await
    }

    async fn from(client: &reqwest::Client, base: &str) -> Scrape {
        let resp = client.get(format!("{base}/metrics")).send().await.expect("scrape");
        assert_eq!(resp.status(), StatusCode::OK);
        let ctype = resp.headers()["content-type"].to_str().expect("content type").to_string();
        assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
        let text = resp.text().await.expect("body");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF:\n{text}");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("parse"))
    }

    /// The value of `name` whose labels include every pair of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
            |s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name}: not a number: {other:?}"),
            },
        )
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            let names: Vec<_> = self.0.samples.iter().map(|s| format!("{} {:?}", s.metric, s.labels)).collect();
            panic!("no {name} {labels:?} in the scrape: {names:#?}")
        })
    }

    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b.iter().map(|b| b.count).fold(0.0, f64::max),
                other => panic!("{name}: not a histogram: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_deployment() {
    let node = Node::start_with(&["--resources", "cpus:4;mem:4096;disk:1000;gpus:0"]).await;

    let before = Scrape::take(&node).await;
    assert_eq!(before.get("wharf_raft_is_leader", &[]), 1.0);
    assert_eq!(before.get("wharf_raft_role", &[("role", "leader")]), 1.0);
    assert!(before.get("wharf_raft_term", &[]) >= 1.0);
    assert!(before.get("wharf_raft_leader_id", &[]) > 0.0);
    assert_eq!(before.get("wharf_cluster_nodes", &[("status", "up")]), 1.0);
    assert_eq!(before.get("wharf_cluster_apps", &[]), 0.0);
    assert_eq!(before.get("wharf_agent_tasks", &[("state", "TASK_RUNNING")]), 0.0);
    assert_eq!(before.get("wharf_cluster_tasks", &[("state", "TASK_RUNNING")]), 0.0);
    assert_eq!(before.get("wharf_node_resources_total", &[("resource", "cpus")]), 4.0);
    assert_eq!(before.get("wharf_node_resources_total", &[("resource", "ports")]), 100.0);
    assert_eq!(before.get("wharf_node_resources_used", &[("resource", "cpus")]), 0.0);
    assert_eq!(before.get("wharf_events_subscribers", &[]), 0.0);
    let applied_before = before.get("wharf_store_proposals_total", &[("outcome", "applied")]);
    let index_before = before.get("wharf_raft_last_applied_index", &[]);

    let events = Stream::open(&node, "").await;
    let def = json!({"id": "/metrics/web", "cmd": "exec sleep 1000", "cpus": 0.25, "mem": 16, "instances": 2});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = node.call(Method::POST, "/v2/apps", Some(&json!({"id": "/bad", "cpus": -1}))).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    node.wait_running("/metrics/web", 2).await;

    let after = Scrape::take(&node).await;
    assert_eq!(after.get("wharf_agent_tasks", &[("state", "TASK_RUNNING")]), 2.0);
    assert_eq!(after.get("wharf_cluster_tasks", &[("state", "TASK_RUNNING")]), 2.0);
    assert_eq!(after.get("wharf_cluster_apps", &[]), 1.0);
    assert_eq!(after.get("wharf_app_instances", &[("app", "/metrics/web")]), 2.0);
    assert_eq!(after.get("wharf_app_tasks_running", &[("app", "/metrics/web")]), 2.0);
    assert_eq!(after.get("wharf_queue_instances", &[]), 0.0);
    assert_eq!(after.get("wharf_node_resources_used", &[("resource", "cpus")]), 0.5);
    // Marathon gives each task one host port unless told otherwise.
    assert_eq!(after.get("wharf_node_resources_used", &[("resource", "ports")]), 2.0);
    assert_eq!(after.get("wharf_events_subscribers", &[]), 1.0);
    // The app, the plan and the agent's reports all went through the store.
    assert!(after.get("wharf_store_proposals_total", &[("outcome", "applied")]) >= applied_before + 3.0);
    assert!(after.get("wharf_raft_last_applied_index", &[]) >= index_before + 3.0);
    // Nothing purged yet: the log holds every entry.
    assert_eq!(after.get("wharf_raft_log_entries", &[]), after.get("wharf_raft_last_log_index", &[]));
    assert!(after.histogram_count("wharf_store_propose_seconds", &[]) >= 3.0);
    let post_ok = [("method", "POST"), ("route", "/v2/apps"), ("status", "2xx")];
    let post_bad = [("method", "POST"), ("route", "/v2/apps"), ("status", "4xx")];
    assert_eq!(after.get("wharf_http_requests_total", &post_ok), 1.0);
    assert_eq!(after.get("wharf_http_requests_total", &post_bad), 1.0);
    assert_eq!(after.histogram_count("wharf_http_request_duration_seconds", &post_ok), 1.0);
    // Raw paths never become labels: the template does.
    let tasks = [("method", "GET"), ("route", "/v2/apps/*path"), ("status", "2xx")];
    assert!(after.get("wharf_http_requests_total", &tasks) >= 1.0);
    assert!(after.value("wharf_http_requests_total", &[("route", "/v2/apps/metrics/web/tasks")]).is_none());
    // The agent launched both; the leader's scheduler placed them.
    assert_eq!(after.get("wharf_agent_launches_total", &[("driver", "exec"), ("outcome", "started")]), 2.0);
    assert_eq!(after.histogram_count("wharf_agent_launch_seconds", &[]), 2.0);
    assert_eq!(after.get("wharf_scheduler_placements_total", &[]), 2.0);
    assert!(after.histogram_count("wharf_scheduler_plan_seconds", &[]) >= 1.0);
    // Raft: what is committed is at least what is applied; each applied
    // batch is timed. No snapshot was taken since the node started.
    let applied = after.get("wharf_raft_last_applied_index", &[]);
    assert!(after.get("wharf_raft_commit_index", &[]) >= applied && applied > 0.0);
    assert!(after.histogram_count("wharf_store_apply_seconds", &[]) >= 3.0);
    assert!(after.get("wharf_store_applied_entries_total", &[]) >= 3.0);
    assert!(after.get("wharf_raft_snapshot_age_seconds", &[]).is_nan());
    // No task of the app ended on its own.
    assert!(after.value("wharf_app_restarts_total", &[("app", "/metrics/web")]).is_none());
    drop(events);

    // A task that keeps failing is counted per app each time it is replaced.
    let crash = json!({"id": "/metrics/crash", "cmd": "exit 1", "cpus": 0.1, "mem": 16, "instances": 1,
                       "backoffSeconds": 1, "backoffFactor": 1.0});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&crash)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    common::wait_for("two restarts of /metrics/crash", Duration::from_secs(30), || async {
        Scrape::take(&node)
            .await
            .value("wharf_app_restarts_total", &[("app", "/metrics/crash")])
            .is_some_and(|v| v >= 2.0)
    })
    .await;
    let (s, v) = node.call(Method::DELETE, "/v2/apps/metrics/crash?force=true", None).await.expect("delete");
    assert!(s.is_success(), "{v}");

    // An instance no node can take shows up by the reason the nodes gave.
    let huge = json!({"id": "/metrics/huge", "cmd": "exec sleep 1000", "cpus": 64, "mem": 16, "instances": 1});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&huge)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    common::wait_for("the unplaced instance", Duration::from_secs(20), || async {
        Scrape::take(&node).await.value("wharf_scheduler_unplaced_instances", &[("reason", "InsufficientCpus")])
            == Some(1.0)
    })
    .await;
    let waiting = Scrape::take(&node).await;
    assert_eq!(waiting.get("wharf_queue_instances", &[]), 1.0);
    assert_eq!(waiting.get("wharf_cluster_deployments", &[]), 1.0);
    let (s, v) = node.call(Method::DELETE, "/v2/apps/metrics/huge?force=true", None).await.expect("delete");
    assert!(s.is_success(), "{v}");

    // Scaled to zero: the gauges say so on the next scrape.
    let (s, v) = node.call(Method::PUT, "/v2/apps/metrics/web", Some(&json!({"instances": 0}))).await.expect("put");
    assert!(s.is_success(), "{v}");
    node.wait_running("/metrics/web", 0).await;
    common::wait_for("agent tasks back to 0", Duration::from_secs(20), || async {
        Scrape::take(&node).await.get("wharf_agent_tasks", &[("state", "TASK_RUNNING")]) == 0.0
    })
    .await;
    let last = Scrape::take(&node).await;
    assert_eq!(last.get("wharf_app_instances", &[("app", "/metrics/web")]), 0.0);
    assert_eq!(last.get("wharf_node_resources_used", &[("resource", "cpus")]), 0.0);
    assert_eq!(last.get("wharf_agent_task_exits_total", &[("state", "TASK_KILLED")]), 2.0);
}

/// Every node answers /metrics from its own replica: one leader, the same
/// term and leader id everywhere, and each agent counting its own tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_a_cluster_reports_its_own_view() {
    let c = Cluster::start(3, &[]).await;
    let def = json!({"id": "/spread", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 16, "instances": 3,
                     "constraints": [["hostname", "UNIQUE"]]});
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    common::wait_for("3 tasks running on every replica", Duration::from_secs(30), || async {
        for i in 0..3 {
            let m = Scrape::from(&c.client, &c.nodes[i].addr()).await;
            if m.value("wharf_cluster_tasks", &[("state", "TASK_RUNNING")]) != Some(3.0) {
                return false;
            }
        }
        true
    })
    .await;
    let mut scrapes = Vec::new();
    for i in 0..3 {
        scrapes.push(Scrape::from(&c.client, &c.nodes[i].addr()).await);
    }
    let leaders: f64 = scrapes.iter().map(|m| m.get("wharf_raft_is_leader", &[])).sum();
    assert_eq!(leaders, 1.0, "exactly one node says it leads");
    let followers = scrapes.iter().filter(|m| m.value("wharf_raft_role", &[("role", "follower")]) == Some(1.0)).count();
    assert_eq!(followers, 2);
    for m in &scrapes {
        assert_eq!(m.get("wharf_raft_leader_id", &[]), scrapes[0].get("wharf_raft_leader_id", &[]));
        assert_eq!(m.get("wharf_raft_term", &[]), scrapes[0].get("wharf_raft_term", &[]));
        assert_eq!(m.get("wharf_cluster_nodes", &[("status", "up")]), 3.0);
        // UNIQUE hostname: one task on each node, and each agent sees its own.
        assert_eq!(m.get("wharf_agent_tasks", &[("state", "TASK_RUNNING")]), 1.0);
    }
    // Only the leader plans.
    let placements: Vec<f64> =
        scrapes.iter().map(|m| m.value("wharf_scheduler_placements_total", &[]).unwrap_or(0.0)).collect();
    assert_eq!(placements.iter().sum::<f64>(), 3.0, "{placements:?}");
}
