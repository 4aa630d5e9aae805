//! `GET /metrics`: Prometheus series in the OpenMetrics text format.
//!
//! Owns the node's registry. Counters and histograms are updated where
//! things happen (API requests by the `track` middleware, proposals inside
//! the store); gauges of the cluster, this node's agent, the apps and Raft
//! are computed at scrape time from one immutable `Store::snapshot()`, so
//! nothing polls in the background and a scrape never blocks a write.

use crate::context::ApiContext;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::{ClusterState, NodeId, TaskState};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// OpenMetrics text, which Prometheus asks for and parses.
const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    /// The route template (`/v2/apps/*path`, `/v2/deployments/:id`), never
    /// the raw path, so the number of series stays bounded.
    route: String,
    /// `2xx`, `4xx`, ...
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

/// Gauges set from the snapshot at each scrape.
#[derive(Default)]
struct Gauges {
    raft_term: Gauge,
    raft_leader: Gauge,
    raft_is_leader: Gauge,
    raft_role: Family<RoleLabel, Gauge>,
    raft_last_log: Gauge,
    raft_committed: Gauge,
    raft_applied: Gauge,
    raft_snapshot_age: FloatGauge,
    raft_snapshot: Gauge,
    raft_log_entries: Gauge,
    state_applied: Gauge,
    nodes: Family<StatusLabel, Gauge>,
    apps: Gauge,
    tasks: Family<StateLabel, Gauge>,
    deployments: Gauge,
    queue_apps: Gauge,
    queue_instances: Gauge,
    node_total: Family<ResourceLabel, FloatGauge>,
    node_used: Family<ResourceLabel, FloatGauge>,
    agent_tasks: Family<StateLabel, Gauge>,
    app_instances: Family<AppLabel, Gauge>,
    app_running: Family<AppLabel, Gauge>,
    app_healthy: Family<AppLabel, Gauge>,
    app_staged: Family<AppLabel, Gauge>,
    event_subscribers: Gauge,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    gauges: Gauges,
    /// One scrape at a time: gauges are reset and refilled, then encoded.
    scrape: Mutex<()>,
}

impl Metrics {
    /// The API's series, the store's and the scrape-time gauges, added to
    /// `registry` (which may hold the node's other series already: the
    /// agent's, the scheduler's). Its prefix should be `wharf`.
    pub fn new(store: &store::Store, mut registry: Registry) -> Metrics {
        let requests = Family::<RouteLabels, Counter>::default();
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 14))) as fn() -> Histogram,
        );
        let g = Gauges::default();
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status class",
            requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (to the first byte of the body)",
            Unit::Seconds,
            request_seconds.clone(),
        );
        store.metrics().register(r);
        r.register("raft_term", "Current Raft term", g.raft_term.clone());
        r.register("raft_leader_id", "Node id of the Raft leader (0: none known)", g.raft_leader.clone());
        r.register("raft_is_leader", "1 if this node is the Raft leader", g.raft_is_leader.clone());
        r.register("raft_role", "This node's Raft role (1 for the current one)", g.raft_role.clone());
        r.register("raft_last_log_index", "Index of the last entry in this node's Raft log", g.raft_last_log.clone());
        r.register(
            "raft_commit_index",
            "Highest Raft log index this node knows to be committed",
            g.raft_committed.clone(),
        );
        r.register("raft_last_applied_index", "Index of the last Raft entry applied here", g.raft_applied.clone());
        r.register_with_unit(
            "raft_snapshot_age",
            "Time since this node last built or installed a snapshot (NaN: not since it started)",
            Unit::Seconds,
            g.raft_snapshot_age.clone(),
        );
        r.register("raft_snapshot_index", "Index the last snapshot covers", g.raft_snapshot.clone());
        r.register(
            "raft_log_entries",
            "Entries kept in this node's Raft log (after the last purge)",
            g.raft_log_entries.clone(),
        );
        r.register(
            "state_applied_index",
            "Log index of the replica the gauges below were read from",
            g.state_applied.clone(),
        );
        r.register("cluster_nodes", "Nodes by status (up, draining, unreachable)", g.nodes.clone());
        r.register("cluster_apps", "Apps in the cluster", g.apps.clone());
        r.register("cluster_tasks", "Tasks in the cluster by state", g.tasks.clone());
        r.register("cluster_deployments", "Deployments in flight", g.deployments.clone());
        r.register("queue_apps", "Apps with instances waiting to be launched", g.queue_apps.clone());
        r.register("queue_instances", "Instances waiting to be launched", g.queue_instances.clone());
        r.register(
            "node_resources_total",
            "This node's resources (cpus, mem and disk in MB, gpus, ports)",
            g.node_total.clone(),
        );
        r.register("node_resources_used", "This node's resources held by its tasks", g.node_used.clone());
        r.register("agent_tasks", "Tasks on this node by state", g.agent_tasks.clone());
        r.register("app_instances", "Instances an app asks for", g.app_instances.clone());
        r.register("app_tasks_running", "An app's running tasks", g.app_running.clone());
        r.register("app_tasks_healthy", "An app's running tasks that pass their health checks", g.app_healthy.clone());
        r.register("app_tasks_staged", "An app's tasks placed but not yet running", g.app_staged.clone());
        r.register("events_subscribers", "Clients following /v2/events on this node", g.event_subscribers.clone());
        Metrics { registry, requests, request_seconds, gauges: g, scrape: Mutex::new(()) }
    }

    fn observe(&self, labels: RouteLabels, seconds: f64) {
        self.request_seconds.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// Fills the gauges from `s` and renders everything.
    fn render(
        &self,
        s: &ClusterState,
        me: NodeId,
        raft: &store::RaftStatus,
        snapshot_age: Option<f64>,
        subscribers: usize,
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let g = &self.gauges;
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let idx = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
        g.raft_term.set(idx(Some(raft.term)));
        g.raft_leader.set(idx(raft.leader.map(|l| l.0)));
        g.raft_is_leader.set(i64::from(raft.leader == Some(me)));
        g.raft_role.clear();
        g.raft_role.get_or_create(&RoleLabel { role: raft.role }).set(1);
        g.raft_last_log.set(idx(raft.last_log_index));
        g.raft_applied.set(idx(raft.last_applied_index));
        g.raft_committed.set(idx(raft.committed_index));
        g.raft_snapshot_age.set(snapshot_age.unwrap_or(f64::NAN));
        g.raft_snapshot.set(idx(raft.snapshot_index));
        g.raft_log_entries.set(idx(raft.last_log_index).saturating_sub(idx(raft.purged_index)));
        g.state_applied.set(idx(Some(s.applied_index)));

        for status in ["up", "draining", "unreachable"] {
            g.nodes.get_or_create(&StatusLabel { status }).set(0);
        }
        for node in s.nodes.values() {
            let status = if !node.is_reachable() {
                "unreachable"
            } else if node.draining {
                "draining"
            } else {
                "up"
            };
            g.nodes.get_or_create(&StatusLabel { status }).inc();
        }
        g.apps.set(n(s.apps.len()));
        g.deployments.set(n(s.deployments.len()));

        let mut cluster: BTreeMap<&'static str, i64> = STATES.iter().map(|st| (st.marathon_name(), 0)).collect();
        let mut local = cluster.clone();
        for t in s.tasks.values() {
            *cluster.entry(t.state.marathon_name()).or_default() += 1;
            if t.node == me {
                *local.entry(t.state.marathon_name()).or_default() += 1;
            }
        }
        for (state, v) in cluster {
            g.tasks.get_or_create(&StateLabel { state }).set(v);
        }
        for (state, v) in local {
            g.agent_tasks.get_or_create(&StateLabel { state }).set(v);
        }

        let (mut queue_apps, mut queue_instances) = (0, 0);
        g.app_instances.clear();
        g.app_running.clear();
        g.app_healthy.clear();
        g.app_staged.clear();
        for app in s.apps.values() {
            let label = AppLabel { app: app.spec.id.as_str().to_string() };
            let (mut active, mut running, mut healthy, mut staged) = (0usize, 0, 0, 0);
            for t in s.tasks_of(&app.spec.id) {
                active += usize::from(t.is_active());
                running += usize::from(t.state == TaskState::Running);
                healthy += usize::from(t.state == TaskState::Running && t.healthy == Some(true));
                staged += usize::from(matches!(t.state, TaskState::Staging | TaskState::Starting));
            }
            let wanted = if app.deleting { 0 } else { app.spec.instances as usize };
            if wanted > active {
                queue_apps += 1;
                queue_instances += wanted - active;
            }
            g.app_instances.get_or_create(&label).set(n(wanted));
            g.app_running.get_or_create(&label).set(n(running));
            g.app_healthy.get_or_create(&label).set(n(healthy));
            g.app_staged.get_or_create(&label).set(n(staged));
        }
        g.queue_apps.set(queue_apps);
        g.queue_instances.set(n(queue_instances));

        if let Some(node) = s.nodes.get(&me) {
            let u = s.usage(me);
            let ports = f64::from(node.port_range.1.saturating_sub(node.port_range.0)) + 1.0;
            let total = [
                ("cpus", node.resources.cpus, u.used.cpus),
                ("mem", node.resources.mem, u.used.mem),
                ("disk", node.resources.disk, u.used.disk),
                ("gpus", f64::from(node.resources.gpus), f64::from(u.used.gpus)),
                ("ports", ports, u.ports_used.len() as f64),
            ];
            for (resource, t, used) in total {
                g.node_total.get_or_create(&ResourceLabel { resource }).set(t);
                g.node_used.get_or_create(&ResourceLabel { resource }).set(used);
            }
        }
        g.event_subscribers.set(n(subscribers));

        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Every state, so a series at 0 exists before the first task reaches it.
const STATES: [TaskState; 10] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Killing,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Lost,
    TaskState::Unreachable,
    TaskState::Error,
];

/// `GET /metrics`.
pub async fn scrape(State(ctx): State<Arc<ApiContext>>) -> Response {
    let snap = ctx.store.snapshot();
    let raft = ctx.store.raft_status();
    let snapshot_age = ctx.store.metrics().snapshot_age_seconds(ctx.now().0.max(0) as u64);
    let subscribers = ctx.events.get().map(|b| b.subscribers()).unwrap_or(0);
    let c = ctx.clone();
    // Scans every task: off the async workers, like the big listings.
    match tokio::task::spawn_blocking(move || c.metrics.render(&snap, c.node, &raft, snapshot_age, subscribers)).await {
        Ok(body) => ([(CONTENT_TYPE, CONTENT)], body).into_response(),
        Err(e) => crate::error::HttpError(marathon::ApiError::new(500, format!("rendering metrics failed: {e}")))
            .into_response(),
    }
}

/// Middleware: counts each request and its latency by route template and
/// status class.
pub async fn track(State(ctx): State<Arc<ApiContext>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req.extensions().get::<MatchedPath>().map(|p| route_label(p.as_str()));
    let resp = next.run(req).await;
    let labels = RouteLabels {
        method,
        route: route.unwrap_or_else(|| "unmatched".to_string()),
        status: format!("{}xx", resp.status().as_u16() / 100),
    };
    ctx.metrics.observe(labels, started.elapsed().as_secs_f64());
    resp
}

/// axum's `{id}` and `{*path}` as `:id` and `*path`: braces in label values
/// are legal, but some text parsers stop at the first `}`.
fn route_label(template: &str) -> String {
    template.replace("{*", "*").replace('{', ":").replace('}', "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_have_no_braces() {
        assert_eq!(super::route_label("/v2/apps/{*path}"), "/v2/apps/*path");
        assert_eq!(super::route_label("/wharf/v1/tasks/{id}/files/{name}"), "/wharf/v1/tasks/:id/files/:name");
        assert_eq!(super::route_label("/v2/apps"), "/v2/apps");
    }
}
