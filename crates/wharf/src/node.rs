//! `wharf agent`: wires one node together — store, RPC server, API server,
//! the leader's orchestrator and liveness monitor, heartbeats and this node's
//! agent — runs them under the [`Supervisor`], and shuts the node down on
//! SIGTERM/SIGINT (or when a vital subsystem stops) without touching running
//! tasks.

use crate::cli::AgentArgs;
use crate::orchestrator::SchedulerMetrics;
use crate::resources;
use crate::supervisor::{Backoff, Policy, Supervisor};
use anyhow::Context;
use model::NodeInfo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Command, Store, StoreConfig};
use tokio::net::TcpListener;

use crate::clock::now;

fn parse_addr(flag: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse().with_context(|| format!("{flag}: '{s}' is not IP:PORT"))
}

/// Runs a node until SIGTERM/SIGINT, or until a vital subsystem stops (then
/// the error names it and `wharf agent` exits non-zero). Tasks keep running
/// either way.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let log_limits = logfiles::LogLimits::parse_size(&args.log_max_size)
        .and_then(|size| logfiles::LogLimits::new(size, args.log_files))
        .map_err(|e| anyhow::anyhow!("--log-max-size/--log-files: {e}"))?;
    let (http, rpc) = (parse_addr("--http", &args.http)?, parse_addr("--rpc", &args.rpc)?);
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None if !http.ip().is_unspecified() => http.ip().to_string(),
        None => "127.0.0.1".to_string(),
    };
    if !(1..=7).contains(&args.voters) {
        anyhow::bail!("--voters: must be between 1 and 7 (3 or 5 recommended), got {}", args.voters);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir: cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    // Every flag is checked before anything listens or any state changes.
    let local = describe_node(&args, &data_dir, &advertise)?;
    let https = match (&args.https_cert, &args.https_key) {
        (Some(cert), Some(key)) => Some(crate::https::server_config(cert, key)?),
        _ => None,
    };
    let credentials = match &args.http_credentials {
        Some(c) => Some(api::Credentials::parse(c).map_err(|e| anyhow::anyhow!("--http-credentials: {e}"))?),
        None => None,
    };
    let exe = std::env::current_exe().context("locating the wharf binary for executors")?;
    let check_client = agent::health::check_client().context("starting the agent")?;

    // Listeners first: a port in use is reported before any state changes.
    let rpc_listener = TcpListener::bind(rpc).await.with_context(|| format!("--rpc: cannot listen on {rpc}"))?;
    let http_listener = TcpListener::bind(http).await.with_context(|| format!("--http: cannot listen on {http}"))?;
    let dns_at = crate::dns_setup::listen_addr(&args.dns, http)?;
    let mut dns_cfg = crate::dns_setup::config(&args.dns, dns_at.map(|(a, _)| a), advertise.parse().ok())?;
    let bridge = agent::network::BridgeConfig::parse(agent::network::BRIDGE_NAME, &args.bridge_subnet)
        .map_err(|e| anyhow::anyhow!("--bridge-subnet: {e}"))?;
    // Bridge containers ask this node's DNS server for names outside the domain too.
    if let Ok(net) = bridge.cidr().parse::<ipnet::IpNet>() {
        dns_cfg.forward_from.push(net);
    }
    let dns_listeners = match dns_at {
        Some((addr, explicit)) => crate::dns_setup::bind(addr, explicit).await?,
        None => None,
    };
    let network = agent::network::NodeNetwork {
        bridge,
        dns: dns_listeners.as_ref().map(|l| l.addr),
        domain: dns_cfg.zone.domain.clone(),
    };
    let (lb_cfg, http_lb) = lb_listener(&args, http).await?;
    let rpc_advertise = format!("{advertise}:{}", rpc_listener.local_addr()?.port());
    let http_advertise = format!("{advertise}:{}", http_listener.local_addr()?.port());

    // The node's certificate comes before its state: a node that cannot
    // join (wrong token, another cluster) has received nothing.
    let state_dir = data_dir.join("state");
    let node_id = store::node_id_in(&state_dir).context("--data-dir: reading this node's id")?;
    let local_ip: Option<std::net::IpAddr> = advertise.parse().ok();
    let lifetime = Duration::from_secs(args.cert_lifetime);
    let tls_dir = data_dir.join(trust::TLS_DIR);
    let identity = node_identity(&args, &tls_dir, node_id, local_ip, lifetime).await?;
    let revoked = Arc::new(trust::Revocations::default());
    let rpc_client = match &identity {
        Some(id) => trust::RpcClient::mutual(local_ip, id, revoked.clone())?,
        None => trust::RpcClient::plain(local_ip)?,
    };
    let mut store_cfg = StoreConfig::new(state_dir, rpc_advertise.clone());
    store_cfg.max_voters = args.voters;
    store_cfg.rpc_client = Some(rpc_client);
    let store = Arc::new(Store::open(store_cfg).await.context("opening the state store")?);
    revoked.set(&store.read(|s| s.removed_nodes.clone()));
    let liveness = Arc::new(crate::liveness::Liveness::default());
    let mut sup = Supervisor::new(Backoff::default());
    let sandbox_root = data_dir.join("sandboxes");
    std::fs::create_dir_all(&sandbox_root)?;
    // The RPC server runs before joining: Raft needs it to hear the leader.
    // The LB's table exists before its listeners: the RPC answers other
    // agents' drain questions from it.
    let lb = lb::Lb::new(lb_cfg);
    let node_api = Arc::new(api::ApiContext::new(store.clone(), sandbox_root.clone()));
    let rpc_router = store
        .rpc_router()
        .merge(crate::liveness::router(liveness.clone()))
        .merge(crate::admission::router(store.clone()))
        .merge(api::node_router(node_api))
        .merge(lb::rpc_router(lb.clone()));
    match &identity {
        Some(id) => {
            let tls = id.server_config(revoked.clone())?;
            let peers = crate::https::Peers::NodesOnly { open: &[crate::admission::JOIN_PATH] };
            let serve = crate::https::serve(rpc_listener, rpc_router, tls, peers, std::future::pending());
            sup.start_once("RPC server", serve);
        }
        None => sup.start_once("RPC server", async move { axum::serve(rpc_listener, rpc_router).await }),
    }
    let (s, r, d) = (store.clone(), revoked.clone(), data_dir.clone());
    sup.start("trust follower", Policy::Restart, move || crate::admission::follow(s.clone(), r.clone(), d.clone()));
    join_cluster(&store, &args.join).await?;
    if let Some(id) = &identity {
        crate::admission::record_pending_trust(&store, &tls_dir, &rpc_advertise).await?;
        let (s, id) = (store.clone(), id.clone());
        sup.start("certificate renewal", Policy::Restart, move || {
            crate::admission::renew_loop(s.clone(), id.clone(), lifetime)
        });
    }
    match store.ensure_data_key(&args.join, args.autolock).context("the cluster data key")? {
        store::KeyStatus::Created { unlock_key } => {
            tracing::info!("made the cluster data key (it seals secrets)");
            if let Some(k) = unlock_key {
                print_unlock_key(&k);
            }
        }
        store::KeyStatus::Fetching => tracing::info!("asking the cluster for its data key"),
        store::KeyStatus::Locked => tracing::warn!("this node is locked: secrets stay sealed until `wharf unlock`"),
        store::KeyStatus::Held => {}
    }

    // The drivers are found before the node registers, so the scheduler
    // never sends it a task it has no driver for.
    if args.cgroup_favordynmods {
        match tokio::task::spawn_blocking(agent::cgroup::favor_dynamic_modifications).await {
            Ok(Ok(true)) => tracing::info!("turned on cgroup favordynmods: cgroup joins wait for no RCU grace period"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot turn on cgroup favordynmods"),
            Err(e) => tracing::warn!(error = %e, "cannot turn on cgroup favordynmods"),
        }
    }
    let docker_builtin = args.docker_apps == "builtin";
    let drivers = agent::probe_drivers(docker_builtin).await;
    let node = NodeInfo {
        id: store.node_id(),
        drivers: drivers.clone(),
        http_addr: http_advertise.clone(),
        rpc_addr: rpc_advertise,
        registered_at: now(),
        ..local
    };
    register(&store, node).await?;

    // One registry for /metrics: the agent and the scheduler count into it
    // where things happen; the API adds its own series and encodes it.
    let mut registry = prometheus_client::registry::Registry::with_prefix("wharf");
    let (agent_metrics, scheduler_metrics) = (agent::AgentMetrics::default(), SchedulerMetrics::default());
    agent_metrics.register(&mut registry);
    scheduler_metrics.register(&mut registry);
    let dns = dns::server::Dns::new(dns_cfg);
    dns.metrics.register(&mut registry);
    start_dns(&mut sup, &store, &dns, dns_listeners);
    lb::metrics::register(lb.clone(), &mut registry);
    start_lb(&mut sup, &store, &lb, http_lb);
    let ctx = api::ApiContext::with_registry(store.clone(), sandbox_root.clone(), registry)
        .with_credentials(credentials)
        .with_https(https.is_some());
    let stop_http = start_http(&mut sup, http_listener, https, Arc::new(ctx), &dns, &lb);
    start_loops(&mut sup, &store, liveness, &args, scheduler_metrics);
    let executor = vec![exe.into_os_string(), "executor".into()];
    let agent = AgentParts {
        sandbox_root,
        executor,
        keep_sandboxes: args.keep_sandboxes,
        check_client,
        metrics: agent_metrics,
        images: image::ImageStore::open_with(
            data_dir.join("images"),
            image::StoreConfig {
                insecure: args.insecure_registries.clone(),
                registry_config: image::default_registry_config(args.registry_config.clone()),
            },
        )
        .context("opening the image store (--registry-config)")?,
        image_gc_after: args.image_gc_after,
        docker_builtin,
        drivers,
        log: log_limits,
        default_task_user: args.default_task_user.clone(),
        refuse_root_tasks: args.refuse_root_tasks,
        lb_drain: crate::lb_drain::RpcDrain::new(store.clone()),
        network,
    };
    start_agent(&mut sup, &store, agent);

    tracing::info!(http = %http_advertise, node = %store.node_id(), "wharf node ready");
    let outcome = sup.run_until(wait_for_signal()).await;
    match &outcome {
        Ok(()) => tracing::info!("shutting down; tasks keep running"),
        Err(fatal) => tracing::error!("{fatal}; shutting down, tasks keep running"),
    }
    let _ = stop_http.send(true);
    sup.wait_for(HTTP_SERVER, Duration::from_secs(2)).await;
    store.shutdown().await;
    // Dropping the supervisor aborts what is still running.
    drop(sup);
    outcome.map_err(anyhow::Error::from)
}

const HTTP_SERVER: &str = "HTTP server";

/// Human-readable lines by default; with `json`, one JSON object per line
/// carrying the fields of every span it happened in (request, deployment,
/// task launch).
fn init_logging(format: crate::cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,hickory_server=warn,hickory_proto=warn,hickory_net=warn")
    });
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        crate::cli::LogFormat::Text => fmt.init(),
        crate::cli::LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).init(),
    }
}

/// A new node becomes a one-member cluster, or joins through `join`; a node
/// with Raft state is already a member and does neither.
async fn join_cluster(store: &Store, join: &[String]) -> anyhow::Result<()> {
    if join.is_empty() {
        if store.bootstrap_if_new().await? {
            tracing::info!(node = %store.node_id(), "initialised a new one-node cluster");
        }
    } else if !store.is_initialized().await? {
        let voter = store.join(join).await.context("--join: joining the cluster")?;
        tracing::info!(node = %store.node_id(), voter, "joined the cluster");
    }
    Ok(())
}

/// This node's certificate: the stored one; a new CA and a certificate from
/// it for the first node of a new cluster; or, for a node joining, one
/// traded for the join token. None with `--insecure-rpc`.
async fn node_identity(
    args: &AgentArgs,
    tls: &std::path::Path,
    node: model::NodeId,
    local: Option<std::net::IpAddr>,
    lifetime: Duration,
) -> anyhow::Result<Option<Arc<trust::Identity>>> {
    if args.insecure_rpc {
        tracing::warn!(
            "--insecure-rpc: NODE-TO-NODE CALLS ARE PLAIN HTTP, UNENCRYPTED AND UNAUTHENTICATED; \
             anyone who reaches the RPC port can join, write to and read the cluster (for benchmarks only)"
        );
        return Ok(None);
    }
    if let Some(id) = trust::Identity::load(tls, node).context("reading this node's certificate")? {
        return Ok(Some(id));
    }
    if args.join.is_empty() {
        return Ok(Some(crate::admission::bootstrap_identity(tls, node, lifetime)?));
    }
    let Some(token) = &args.join_token else {
        anyhow::bail!(
            "--join: this node has no certificate yet; give the cluster's join token with --join-token \
             (`wharf token show` on a member prints it, as does the file join-token in its data dir)"
        );
    };
    let token: trust::JoinToken = token.parse().map_err(|e| anyhow::anyhow!("--join-token: {e}"))?;
    let id = crate::admission::join_identity(&args.join, &token, node, local, lifetime, tls).await?;
    tracing::info!(node = %node, "received this node's certificate from the cluster");
    Ok(Some(id))
}

/// This node as the cluster will see it, from the flags and the host: its
/// resources, ports, attributes and names. Id, addresses and registration
/// time are filled in once the store and listeners exist.
fn describe_node(args: &AgentArgs, data_dir: &std::path::Path, advertise: &str) -> anyhow::Result<NodeInfo> {
    let mut resources = resources::detect(data_dir);
    if let Some(spec) = &args.resources {
        resources = resources::apply_override(resources, spec)?;
    }
    let attributes = match &args.attributes {
        Some(a) => resources::attributes(a)?,
        None => Default::default(),
    };
    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None => {
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| advertise.to_string())
        }
    };
    Ok(NodeInfo {
        id: model::NodeId(0),
        hostname,
        advertise: advertise.to_string(),
        http_addr: String::new(),
        rpc_addr: String::new(),
        resources,
        port_range: resources::port_range(&args.ports)?,
        attributes,
        registered_at: model::UnixMillis(0),
        draining: false,
        unreachable_since: None,
        drivers: vec![model::DriverKind::Exec],
        images: Vec::new(),
    })
}

/// The HTTP API, with DNS's and the LB's routes, all behind the one
/// authentication layer; it drains its connections once the returned sender
/// says so.
fn start_http(
    sup: &mut Supervisor,
    listener: TcpListener,
    https: Option<Arc<rustls::ServerConfig>>,
    ctx: Arc<api::ApiContext>,
    dns: &Arc<dns::server::Dns>,
    lb: &Arc<lb::Lb>,
) -> tokio::sync::watch::Sender<bool> {
    let app = api::router(ctx.clone()).merge(dns::http::router(dns.clone())).merge(lb::router(lb.clone()));
    let app = api::auth::require(app, ctx);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        let _ = stop_rx.changed().await;
    };
    match https {
        Some(tls) => {
            sup.start_once(HTTP_SERVER, crate::https::serve(listener, app, tls, crate::https::Peers::Anyone, shutdown))
        }
        None => sup
            .start_once(HTTP_SERVER, async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await }),
    }
    stop_tx
}

/// This node's DNS: the zone follows the store (restarted if it ends), and
/// the server answers on the listeners (fatal if it stops: they are gone).
fn start_dns(
    sup: &mut Supervisor,
    store: &Arc<Store>,
    dns: &Arc<dns::server::Dns>,
    listeners: Option<dns::server::Listeners>,
) {
    let (s, d) = (store.clone(), dns.clone());
    sup.start("DNS records", Policy::Restart, move || {
        let (s, d) = (s.clone(), d.clone());
        async move {
            dns::server::follow(s, d).await;
            Ok::<(), std::io::Error>(())
        }
    });
    if let Some(l) = listeners {
        tracing::info!(addr = %l.addr, domain = %dns.cfg.zone.domain, "DNS listening");
        let d = dns.clone();
        sup.start_once("DNS server", async move { dns::server::serve(l, d).await });
    }
}

/// The load balancer's settings and its HTTP front's listener: an address
/// given with --http-lb must bind; the default falls back from 80 to 9090,
/// and if neither binds the node runs without the front (said loudly).
async fn lb_listener(args: &AgentArgs, http: SocketAddr) -> anyhow::Result<(lb::LbConfig, Option<TcpListener>)> {
    let bind: std::net::IpAddr = match &args.lb_bind {
        Some(b) => b.parse().with_context(|| format!("--lb-bind: '{b}' is not an IP address"))?,
        None => http.ip(),
    };
    let groups =
        args.lb_group.as_ref().map(|g| g.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect());
    let cfg = lb::LbConfig { bind, groups, ..lb::LbConfig::default() };
    let listener = match args.http_lb.as_deref() {
        Some("off") => None,
        Some(a) => {
            let addr = parse_addr("--http-lb", a)?;
            Some(TcpListener::bind(addr).await.with_context(|| format!("--http-lb: cannot listen on {addr}"))?)
        }
        None => match TcpListener::bind(SocketAddr::new(bind, 80)).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("HTTP LB: cannot listen on {bind}:80 ({e}); trying port 9090");
                match TcpListener::bind(SocketAddr::new(bind, 9090)).await {
                    Ok(l) => {
                        tracing::warn!("HTTP LB: listening on {bind}:9090 instead of port 80");
                        Some(l)
                    }
                    Err(e) => {
                        tracing::error!(
                            "HTTP LB: cannot listen on {bind}:9090 either ({e}); no HTTP front (set --http-lb)"
                        );
                        None
                    }
                }
            }
        },
    };
    Ok((cfg, listener))
}

/// The load balancer: its table follows the store (restarted if it ends),
/// the service-port listeners follow the table, the HTTP front serves.
fn start_lb(sup: &mut Supervisor, store: &Arc<Store>, lb: &Arc<lb::Lb>, http: Option<TcpListener>) {
    let (ports_tx, ports_rx) = tokio::sync::watch::channel(lb::l4::Wanted::new());
    let ports_tx = Arc::new(ports_tx);
    let (s, l, tx) = (store.clone(), lb.clone(), ports_tx.clone());
    sup.start("LB table", Policy::Restart, move || {
        let (s, l, tx) = (s.clone(), l.clone(), tx.clone());
        async move {
            lb::table::follow(s, l, tx).await;
            Ok::<(), std::io::Error>(())
        }
    });
    let l = lb.clone();
    sup.start("LB service ports", Policy::Restart, move || {
        let (l, rx) = (l.clone(), ports_rx.clone());
        async move {
            lb::l4::serve_ports(l, rx).await;
            Ok::<(), std::io::Error>(())
        }
    });
    if let Some(listener) = http {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "HTTP LB listening");
        }
        sup.start_once("HTTP LB", lb::http::serve(lb.clone(), listener));
    }
}

/// The leader's orchestrator and liveness monitor and every node's
/// heartbeats: loops that read what they need from the store, so a restart
/// loses nothing.
fn start_loops(
    sup: &mut Supervisor,
    store: &Arc<Store>,
    liveness: Arc<crate::liveness::Liveness>,
    args: &AgentArgs,
    metrics: SchedulerMetrics,
) {
    let live_cfg = crate::liveness::LivenessConfig {
        heartbeat_interval: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout.max(0.5)),
        voter_replace_after: Duration::from_secs_f64(args.voter_replace_after.max(0.0)),
    };
    let s = store.clone();
    sup.start("orchestrator", Policy::Restart, move || crate::orchestrator::run(s.clone(), metrics.clone()));
    if let Some(count) = args.job_history_count {
        let s = store.clone();
        sup.start("job history setting", Policy::Restart, move || {
            crate::cluster_settings::keep_history_count(s.clone(), count)
        });
    }
    if let Some(range) = args.service_ports {
        let s = store.clone();
        sup.start("service port range setting", Policy::Restart, move || {
            crate::cluster_settings::keep_service_ports(s.clone(), range)
        });
    }
    let (s, l) = (store.clone(), liveness.clone());
    sup.start("heartbeats", Policy::Restart, move || crate::liveness::send_heartbeats(s.clone(), l.clone(), live_cfg));
    let s = store.clone();
    sup.start("liveness monitor", Policy::Restart, move || {
        crate::liveness::monitor(s.clone(), liveness.clone(), live_cfg)
    });
}

/// What the agent is started with (kept to start it again).
struct AgentParts {
    sandbox_root: std::path::PathBuf,
    executor: Vec<std::ffi::OsString>,
    keep_sandboxes: usize,
    check_client: reqwest::Client,
    metrics: agent::AgentMetrics,
    drivers: Vec<model::DriverKind>,
    images: image::ImageStore,
    docker_builtin: bool,
    log: logfiles::LogLimits,
    default_task_user: Option<String>,
    refuse_root_tasks: bool,
    lb_drain: Arc<crate::lb_drain::RpcDrain>,
    image_gc_after: Duration,
    network: agent::network::NodeNetwork,
}

/// This node's agent. A restarted agent recovers its running tasks from
/// their sandboxes, as after a process restart.
fn start_agent(sup: &mut Supervisor, store: &Arc<Store>, parts: AgentParts) {
    let s = store.clone();
    sup.start("agent", Policy::Restart, move || {
        let cfg = agent::AgentConfig {
            node: s.node_id(),
            sandbox_root: parts.sandbox_root.clone(),
            executor: parts.executor.clone(),
            keep_sandboxes: parts.keep_sandboxes,
            check_client: parts.check_client.clone(),
            metrics: parts.metrics.clone(),
            drivers: parts.drivers.clone(),
            images: Some(parts.images.clone()),
            docker_builtin: parts.docker_builtin,
            log: parts.log,
            default_task_user: parts.default_task_user.clone(),
            refuse_root_tasks: parts.refuse_root_tasks,
            lb_drain: Some(parts.lb_drain.clone()),
            image_gc_after: parts.image_gc_after,
            network: parts.network.clone(),
        };
        agent::run_agent(s.clone(), cfg)
    });
}

/// Shown once, on stdout only (never in the node's log): the operator keeps it.
pub(crate) fn print_unlock_key(key: &str) {
    println!("Autolock is on. This node's unlock key (shown only now; `wharf unlock KEY` after every restart):\n{key}");
}

/// Registers (or refreshes) this node once a leader can commit it.
async fn register(store: &Store, node: NodeInfo) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store.propose(Command::RegisterNode(node.clone())).await {
            Ok(store::Applied::Rejected(r)) => anyhow::bail!("{r}"),
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "registering this node; waiting for a leader");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("registering this node with the cluster"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
