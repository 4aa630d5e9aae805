//! Helpers for the DNS tests: a real store with a DNS server in front of it,
//! and `dig` (Debian's bind9-dnsutils), parsed.

#![allow(dead_code)]

use dns::forward::Forwarder;
use dns::names::LabelSpec;
use dns::server::{Dns, DnsConfig};
use dns::zone::ZoneConfig;
use model::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Command, Store, StoreConfig};

#[path = "dig.rs"]
mod dig_cli;
pub use dig_cli::{dig, Dig};

pub struct Served {
    pub store: Arc<Store>,
    pub dns: Arc<Dns>,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

pub fn config(spec: LabelSpec, upstreams: Vec<SocketAddr>) -> DnsConfig {
    DnsConfig {
        zone: ZoneConfig { domain: "mesos".into(), spec, ttl: 60 },
        forwarder: Forwarder { upstreams, zones: vec![], timeout: Duration::from_millis(500) },
        forward_from: vec![],
        ns_ip: Some("127.0.0.1".parse().expect("ip")),
    }
}

/// A one-node store (its own node registered as `master_ip`) and a DNS
/// server on 127.0.0.1 that follows it.
pub async fn serve(cfg: DnsConfig, master_ip: &str, master_http_port: u16) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut scfg = StoreConfig::new(dir.path().to_path_buf(), "127.0.0.1:1".into());
    scfg.election_timeout_ms = (150, 300);
    let store = Arc::new(Store::open(scfg).await.expect("open store"));
    store.bootstrap_if_new().await.expect("bootstrap");
    let mut leader = store.leadership();
    while !leader.borrow().is_self {
        leader.changed().await.expect("leadership");
    }
    let mut me = node(store.node_id().0, master_ip, master_http_port);
    me.hostname = "master".into();
    propose(&store, Command::RegisterNode(me)).await;
    let dns = Dns::new(cfg);
    tokio::spawn(dns::server::follow(store.clone(), dns.clone()));
    let l = dns::server::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
    let addr = l.addr;
    tokio::spawn(dns::server::serve(l, dns.clone()));
    Served { store, dns, addr, _dir: dir }
}

pub async fn propose(store: &Store, c: Command) -> store::Applied {
    store.propose(c).await.expect("propose")
}

pub fn node(id: u64, ip: &str, http_port: u16) -> NodeInfo {
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    NodeInfo {
        id: NodeId(id),
        hostname: ip.to_string(),
        advertise: ip.to_string(),
        http_addr: format!("{host}:{http_port}"),
        rpc_addr: format!("{host}:5050"),
        resources: Resources { cpus: 64.0, mem: 65536.0, disk: 100000.0, gpus: 0 },
        port_range: (31000, 32000),
        attributes: Default::default(),
        registered_at: UnixMillis(1),
        draining: false,
        unreachable_since: None,
        drivers: vec![model::DriverKind::Exec],
        images: Vec::new(),
    }
}

pub fn deployment(n: u64, app: &AppId) -> Deployment {
    Deployment {
        id: DeploymentId(format!("d{n}")),
        version: UnixMillis(n as i64),
        affected_apps: vec![app.clone()],
        steps: vec![Step { actions: vec![(DeploymentAction::StartApplication, app.clone())] }],
        current_step: 1,
        started_at: UnixMillis(n as i64),
    }
}

/// Creates an app with the given port names (`None`: unnamed port).
pub async fn app(store: &Store, id: &str, ports: &[Option<&str>], seq: u64) -> AppId {
    let id = AppId::parse(id).expect("app id");
    let mut spec = AppSpec::new(id.clone());
    spec.resources = Resources { cpus: 0.1, mem: 16.0, disk: 0.0, gpus: 0 };
    spec.instances = 0;
    spec.ports = ports
        .iter()
        .map(|n| PortSpec { port: 0, name: n.map(str::to_string), protocol: "tcp".into(), labels: Default::default() })
        .collect();
    let c = Command::PutApp {
        app: spec,
        at: UnixMillis(seq as i64),
        deployment: deployment(seq, &id),
        force: true,
        create_only: false,
        expect: None,
        finish_if_idle: false,
    };
    propose(store, c).await;
    id
}

/// Places a task of `app` on `node` with `ports` and reports it `state`.
pub async fn task(store: &Store, app: &AppId, n: u128, node: u64, ports: &[u16], state: TaskState) -> TaskId {
    let id = TaskId::new(app, uuid::Uuid::from_u128(n), 1);
    let version = store.read(|s| s.apps.get(app).map(|a| a.version)).expect("app exists");
    let resources = Resources { cpus: 0.1, mem: 16.0, disk: 0.0, gpus: 0 };
    let mut t = Task::staged(id.clone(), app.clone(), NodeId(node), ports.to_vec(), resources, version);
    t.staged_at = UnixMillis(1);
    t.updated_at = UnixMillis(1);
    let applied = propose(store, Command::ApplyPlan(Plan { launches: vec![t], ..Default::default() })).await;
    assert!(matches!(&applied, store::Applied::Planned { dropped, .. } if dropped.is_empty()), "{applied:?}");
    let st = TaskStatus { task_id: id.clone(), state, at: UnixMillis(2), message: None, container_ip: None };
    propose(store, Command::TaskStatuses(vec![st])).await;
    id
}

/// Waits until `f` holds (the zone follows the store asynchronously).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
