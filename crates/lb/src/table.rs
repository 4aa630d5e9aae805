//! The routing table: for every service port and virtual host, the app's
//! backends (its up tasks), with live counters. Built from the endpoint
//! stream; a backend keeps its identity (and counters) across updates as
//! long as its task stays up. Readers take an `ArcSwap` snapshot, so a
//! connection never waits for an update.

use arc_swap::ArcSwap;
use model::{AppId, Endpoint, TaskId};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use store::EndpointUpdate;

#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Where service ports listen (`--lb-bind`).
    pub bind: IpAddr,
    /// How long a backend that refused a connection gets no new ones.
    pub down_for: Duration,
    pub connect_timeout: Duration,
    /// A proxied connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
    /// `--lb-group`: `None` proxies every app without `HAPROXY_GROUP` (and
    /// no app with one); `Some(groups)` proxies only the apps whose
    /// `HAPROXY_GROUP` names one of `groups` (`*` means every app).
    pub groups: Option<Vec<String>>,
}

impl LbConfig {
    /// Whether this node proxies an app labelled `HAPROXY_GROUP=label`
    /// (comma-separated groups), as a marathon-lb user expects: an app put
    /// in a group (say `external`) is exposed only on the nodes of that
    /// group (edge nodes running `--lb-group external`); an app without a
    /// group is proxied on every node that is not restricted to groups.
    pub fn serves(&self, label: Option<&str>) -> bool {
        let app: Vec<&str> =
            label.map(|l| l.split(',').map(str::trim).filter(|g| !g.is_empty()).collect()).unwrap_or_default();
        match &self.groups {
            None => app.is_empty(),
            Some(mine) => mine.iter().any(|g| g == "*" || app.contains(&g.as_str())),
        }
    }
}

impl Default for LbConfig {
    fn default() -> LbConfig {
        LbConfig {
            bind: IpAddr::from([0, 0, 0, 0]),
            down_for: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
            groups: None,
        }
    }
}

/// One up task's port, as a place to send connections.
#[derive(Debug)]
pub struct Backend {
    pub task: TaskId,
    pub addr: SocketAddr,
    /// `addr` as a `Host` field value, for a request that came without one.
    pub host: String,
    /// Open connections (L4) or requests in flight (HTTP).
    pub active: AtomicUsize,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub bytes: AtomicU64,
    /// Sum of request (or connection set-up) latencies in microseconds.
    pub latency_us: AtomicU64,
    /// Connections accepted for it (L4); requests are counted in `requests`.
    pub connections: AtomicU64,
    /// Marked down until this many milliseconds after `epoch()` (0: up);
    /// an atomic, as every pick reads it.
    down_until_ms: AtomicU64,
}

/// The process's clock origin for `down_until_ms`.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64
}

impl Backend {
    fn new(task: TaskId, addr: SocketAddr) -> Backend {
        Backend {
            task,
            addr,
            host: addr.to_string(),
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            down_until_ms: AtomicU64::new(0),
        }
    }

    pub fn is_down(&self, now: Instant) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) > millis(now)
    }

    /// Refused a connection: no new ones for a while.
    pub fn mark_down(&self, for_: Duration) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.down_until_ms.store(millis(Instant::now() + for_).max(1), Ordering::Relaxed);
    }
}

/// An app's port, with its backends.
#[derive(Debug)]
pub struct Service {
    pub app: AppId,
    pub port_index: usize,
    pub service_port: u16,
    pub backends: Vec<Arc<Backend>>,
}

impl Service {
    /// Power of two choices on open connections, skipping `tried` and
    /// backends marked down (unless every one is). Allocates nothing: it
    /// runs for every request of the HTTP front.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let now = Instant::now();
        for strict in [true, false] {
            let ok = |b: &&Arc<Backend>| !(tried.contains(&b.addr) || strict && b.is_down(now));
            let n = self.backends.iter().filter(ok).count();
            let nth = |i: usize| self.backends.iter().filter(ok).nth(i);
            let pick = match n {
                0 => continue,
                1 => nth(0),
                n => {
                    let a = rand::random::<usize>() % n;
                    let mut b = rand::random::<usize>() % (n - 1);
                    if b >= a {
                        b += 1;
                    }
                    match (nth(a), nth(b)) {
                        (Some(x), Some(y)) => {
                            Some(if y.active.load(Ordering::Relaxed) < x.active.load(Ordering::Relaxed) {
                                y
                            } else {
                                x
                            })
                        }
                        (x, y) => x.or(y),
                    }
                }
            };
            return pick.cloned();
        }
        None
    }
}

/// A virtual host route of the HTTP front.
#[derive(Debug, Clone)]
pub struct VHost {
    pub host: String,
    /// Path prefix ("/" when none).
    pub path: String,
    pub service: Arc<Service>,
}

/// The whole table, swapped in whole on each update.
#[derive(Debug, Default)]
pub struct Routes {
    /// TCP service ports.
    pub ports: BTreeMap<u16, Arc<Service>>,
    /// UDP service ports (a port of protocol `udp` or `tcp,udp`).
    pub udp: BTreeMap<u16, Arc<Service>>,
    /// Longest path first for each host.
    pub vhosts: Vec<VHost>,
}

impl Routes {
    /// The route for a request's `Host` (without port) and path.
    pub fn vhost(&self, host: &str, path: &str) -> Option<&VHost> {
        self.vhosts.iter().find(|v| v.host.eq_ignore_ascii_case(host) && path.starts_with(&v.path))
    }
}

/// The load balancer's state on one node.
pub struct Lb {
    pub cfg: LbConfig,
    routes: ArcSwap<Routes>,
    table: Mutex<Table>,
}

/// What the routes are built from, kept between updates.
#[derive(Default)]
struct Table {
    /// Up tasks by app, from the endpoint stream.
    by_app: HashMap<AppId, BTreeMap<TaskId, Endpoint>>,
    /// Backends by (task, port index), so they outlive table rebuilds.
    backends: HashMap<(TaskId, usize), Arc<Backend>>,
    /// Backends taken out of rotation. Whatever still uses one (a proxied
    /// connection, a request or a response body in flight) holds it, so a
    /// task is drained here once none of its weak references upgrades.
    leaving: HashMap<TaskId, Vec<Weak<Backend>>>,
}

impl Table {
    /// Takes `b` out of rotation, keeping sight of it while anything uses it.
    fn retire(&mut self, b: &Arc<Backend>) {
        self.leaving.entry(b.task.clone()).or_default().push(Arc::downgrade(b));
    }

    /// Forgets retired backends nothing uses any more.
    fn prune_leaving(&mut self) {
        self.leaving.retain(|_, weak| {
            weak.retain(|w| w.strong_count() > 0);
            !weak.is_empty()
        });
    }
}

/// How one node's LB stands towards a task (`Lb::drain_state`), as the
/// node RPC's `/lb/drain/{task}` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainState {
    /// New connections and requests may still go to it.
    pub in_rotation: bool,
    /// Connections and requests to it still open.
    pub in_flight: usize,
}

impl DrainState {
    pub fn drained(&self) -> bool {
        !self.in_rotation && self.in_flight == 0
    }
}

/// marathon-lb's labels for the first port, and Wharf's own.
const VHOST_LABELS: [&str; 2] = ["HAPROXY_0_VHOST", "wharf.vhost"];
const PATH_LABELS: [&str; 2] = ["HAPROXY_0_PATH", "wharf.path"];
/// marathon-lb's group label (see `LbConfig::serves`).
pub const GROUP_LABEL: &str = "HAPROXY_GROUP";

impl Lb {
    pub fn new(cfg: LbConfig) -> Arc<Lb> {
        Arc::new(Lb { cfg, routes: ArcSwap::from_pointee(Routes::default()), table: Mutex::new(Table::default()) })
    }

    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Folds in one endpoint update. A `Reset` rebuilds the whole table; a
    /// delta rebuilds only the routes of the apps it touches (their
    /// endpoints came or went, or their ports or labels changed), so an
    /// update costs what it changed, not the size of the cluster.
    pub fn apply(&self, update: &EndpointUpdate) {
        self.apply_all(std::slice::from_ref(update));
    }

    /// Folds in endpoint updates in order, rebuilding the routes of the
    /// apps they touch once for all of them (an app whose tasks start over
    /// several batches of reports is rebuilt once, not once per batch).
    pub fn apply_all(&self, updates: &[EndpointUpdate]) {
        // A reset replaces everything before it.
        let from = updates.iter().rposition(|u| matches!(u, EndpointUpdate::Reset { .. })).unwrap_or(0);
        let updates = &updates[from..];
        let Some(last) = updates.last() else { return };
        let Ok(mut t) = self.table.lock() else { return };
        let mut affected: BTreeSet<&AppId> = BTreeSet::new();
        for update in updates {
            match update {
                EndpointUpdate::Reset { endpoints, state, .. } => self.reset(&mut t, endpoints, state),
                EndpointUpdate::Delta { removed, added, changed_apps, .. } => {
                    affected.extend(changed_apps);
                    for e in removed {
                        if let Some(eps) = t.by_app.get_mut(&e.app) {
                            eps.remove(&e.task);
                            if eps.is_empty() {
                                t.by_app.remove(&e.app);
                            }
                        }
                        for i in 0..e.ports.len() {
                            if let Some(b) = t.backends.remove(&(e.task.clone(), i)) {
                                t.retire(&b);
                            }
                        }
                        affected.insert(&e.app);
                    }
                    for e in added {
                        t.by_app.entry(e.app.clone()).or_default().insert(e.task.clone(), e.clone());
                        affected.insert(&e.app);
                    }
                }
            }
        }
        if !affected.is_empty() {
            self.rebuild_apps(&mut t, &affected, last.state());
        }
    }

    /// Rebuilds the whole table from every endpoint.
    fn reset(&self, t: &mut Table, endpoints: &[Endpoint], state: &model::ClusterState) {
        t.by_app.clear();
        for e in endpoints {
            t.by_app.entry(e.app.clone()).or_default().insert(e.task.clone(), e.clone());
        }
        let mut keep = HashMap::new();
        let mut routes = Routes::default();
        for app in state.apps.values() {
            self.add_app(app, t, &mut keep, &mut routes);
        }
        let old = std::mem::replace(&mut t.backends, keep);
        for (key, b) in &old {
            if t.backends.get(key).is_none_or(|k| !Arc::ptr_eq(k, b)) {
                t.retire(b);
            }
        }
        t.prune_leaving();
        routes.vhosts.sort_by_key(|v| std::cmp::Reverse(v.path.len()));
        self.routes.store(Arc::new(routes));
    }

    /// Rebuilds the routes of `affected` from the table, as of `state`.
    fn rebuild_apps(&self, t: &mut Table, affected: &BTreeSet<&AppId>, state: &model::ClusterState) {
        let old = self.routes.load();
        let mut routes = Routes { ports: old.ports.clone(), udp: old.udp.clone(), vhosts: old.vhosts.clone() };
        routes.ports.retain(|_, s| !affected.contains(&s.app));
        routes.udp.retain(|_, s| !affected.contains(&s.app));
        routes.vhosts.retain(|v| !affected.contains(&v.service.app));
        let mut fresh = HashMap::new();
        for id in affected {
            if let Some(app) = state.apps.get(id) {
                self.add_app(app, t, &mut fresh, &mut routes);
            }
        }
        for (key, b) in fresh {
            if let Some(old) = t.backends.insert(key, b.clone()) {
                if !Arc::ptr_eq(&old, &b) {
                    t.retire(&old);
                }
            }
        }
        t.prune_leaving();
        routes.vhosts.sort_by_key(|v| std::cmp::Reverse(v.path.len()));
        self.routes.store(Arc::new(routes));
    }

    /// Adds `app`'s services (if this node exposes it) to `routes`; the
    /// backends used go into `keep` (the same `Backend` as before while its
    /// task and address stay, so its counters carry on).
    fn add_app(
        &self,
        app: &model::App,
        t: &Table,
        keep: &mut HashMap<(TaskId, usize), Arc<Backend>>,
        routes: &mut Routes,
    ) {
        if app.deleting || !self.cfg.serves(app.spec.labels.get(GROUP_LABEL).map(String::as_str)) {
            return;
        }
        let eps = t.by_app.get(&app.spec.id);
        for (index, port) in app.spec.ports.iter().enumerate() {
            let mut backends = Vec::new();
            for e in eps.into_iter().flat_map(|m| m.values()) {
                let (Some(ip), Some(p)) = (e.ip, e.ports.get(index)) else { continue };
                let key = (e.task.clone(), index);
                let addr = SocketAddr::new(ip, p.host_port);
                let b = match t.backends.get(&key) {
                    Some(b) if b.addr == addr => b.clone(),
                    _ => Arc::new(Backend::new(e.task.clone(), addr)),
                };
                keep.insert(key, b.clone());
                backends.push(b);
            }
            // Ordered by task (the endpoints are kept in task order).
            let service =
                Arc::new(Service { app: app.spec.id.clone(), port_index: index, service_port: port.port, backends });
            let transports = model::Transport::parse_list(&port.protocol);
            if port.port != 0 && transports.contains(&model::Transport::Tcp) {
                routes.ports.insert(port.port, service.clone());
            }
            if port.port != 0 && transports.contains(&model::Transport::Udp) {
                routes.udp.insert(port.port, service.clone());
            }
            if index == 0 {
                let label = |keys: &[&str]| keys.iter().find_map(|k| app.spec.labels.get(*k)).cloned();
                let path = label(&PATH_LABELS).filter(|p| p.starts_with('/')).unwrap_or_else(|| "/".into());
                for host in label(&VHOST_LABELS).unwrap_or_default().split(',') {
                    let host = host.trim().to_ascii_lowercase();
                    if !host.is_empty() {
                        routes.vhosts.push(VHost { host, path: path.clone(), service: service.clone() });
                    }
                }
            }
        }
    }

    /// Whether this node still sends to `task`, and what it has in flight
    /// to it (each backend still held counts at least one).
    pub fn drain_state(&self, task: &TaskId) -> DrainState {
        let Ok(t) = self.table.lock() else { return DrainState { in_rotation: false, in_flight: 0 } };
        let in_rotation = t.backends.keys().any(|(id, _)| id == task);
        let in_flight = t
            .leaving
            .get(task)
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .map(|b| b.active.load(Ordering::Relaxed).max(1))
            .sum();
        DrainState { in_rotation, in_flight }
    }

    /// `GET /wharf/v1/lb`: every service port and virtual host with its
    /// backends, their state and counters.
    pub fn status(&self) -> Value {
        let routes = self.routes();
        let now = Instant::now();
        let backends = |s: &Service| -> Vec<Value> {
            s.backends
                .iter()
                .map(|b| {
                    let requests = b.requests.load(Ordering::Relaxed);
                    json!({
                        "taskId": b.task.as_str(),
                        "address": b.addr.to_string(),
                        "state": if b.is_down(now) { "down" } else { "up" },
                        "active": b.active.load(Ordering::Relaxed),
                        "requests": requests,
                        "errors": b.errors.load(Ordering::Relaxed),
                        "bytes": b.bytes.load(Ordering::Relaxed),
                        "connections": b.connections.load(Ordering::Relaxed),
                        "meanLatencyMs": if requests == 0 { 0.0 } else { b.latency_us.load(Ordering::Relaxed) as f64 / requests as f64 / 1000.0 },
                    })
                })
                .collect()
        };
        let port = |s: &Arc<Service>, protocol: &str| json!({"servicePort": s.service_port, "protocol": protocol, "appId": s.app.as_str(), "portIndex": s.port_index, "backends": backends(s)});
        let tcp = routes.ports.values().map(|s| port(s, "tcp"));
        let ports: Vec<Value> = tcp.chain(routes.udp.values().map(|s| port(s, "udp"))).collect();
        let vhosts: Vec<Value> = routes
            .vhosts
            .iter()
            .map(|v| json!({"host": v.host, "path": v.path, "appId": v.service.app.as_str(), "backends": backends(&v.service)}))
            .collect();
        json!({"servicePorts": ports, "virtualHosts": vhosts})
    }
}

/// Endpoint updates folded in at once at most (a bound, so a busy feed
/// cannot hold the routes back for long).
const MAX_COALESCED: usize = 1024;

/// Keeps the table in step with the store; ends when the store does.
pub async fn follow(store: Arc<store::Store>, lb: Arc<Lb>, ports: Arc<tokio::sync::watch::Sender<crate::l4::Wanted>>) {
    let mut stream = store.endpoints();
    while let Some(u) = stream.next().await {
        // Every update already queued goes in with it: the routes of an app
        // are rebuilt once for all of them, and the ports compared once.
        let mut batch = vec![u];
        while batch.len() < MAX_COALESCED {
            match stream.next_ready().await {
                Some(u) => batch.push(u),
                None => break,
            }
        }
        lb.apply_all(&batch);
        let routes = lb.routes();
        let tcp = routes.ports.keys().map(|p| (*p, model::Transport::Tcp));
        let wanted: crate::l4::Wanted = tcp.chain(routes.udp.keys().map(|p| (*p, model::Transport::Udp))).collect();
        ports.send_if_modified(|p| {
            let changed = *p != wanted;
            if changed {
                *p = wanted.clone();
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_expose_apps_as_marathon_lb_users_expect() {
        let node = |groups: Option<&[&str]>| LbConfig {
            groups: groups.map(|g| g.iter().map(|s| s.to_string()).collect()),
            ..LbConfig::default()
        };
        let everywhere = node(None);
        assert!(everywhere.serves(None), "an app without a group is proxied on unrestricted nodes");
        assert!(everywhere.serves(Some(" ")), "an empty label is no group");
        assert!(!everywhere.serves(Some("external")), "a grouped app only on its group's nodes");
        let edge = node(Some(&["external"]));
        assert!(edge.serves(Some("internal, external")));
        assert!(!edge.serves(Some("internal")));
        assert!(!edge.serves(None), "a restricted node proxies only its groups");
        let all = node(Some(&["*"]));
        assert!(all.serves(None) && all.serves(Some("internal")));
    }
}
