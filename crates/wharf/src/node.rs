//! `wharf agent`: wires one node together — store, RPC server, API server,
//! the leader's orchestrator and this node's agent — and shuts it down on
//! SIGTERM/SIGINT without touching running tasks.

use crate::cli::AgentArgs;
use crate::resources;
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

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let http: SocketAddr = parse_addr("--http", &args.http)?;
    let rpc: SocketAddr = parse_addr("--rpc", &args.rpc)?;
    let advertise = match &args.advertise {
        Some(a) => a.clone(),
        None if !http.ip().is_unspecified() => http.ip().to_string(),
        None => "127.0.0.1".to_string(),
    };
    let port_range = resources::port_range(&args.ports)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir: cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let mut res = resources::detect(&data_dir);
    if let Some(spec) = &args.resources {
        res = resources::apply_override(res, spec)?;
    }
    let attributes = match &args.attributes {
        Some(a) => resources::attributes(a)?,
        None => Default::default(),
    };
    let hostname = match &args.hostname {
        Some(h) => h.clone(),
        None => nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| advertise.clone()),
    };

    // Listeners first: a port in use is reported before any state changes.
    let rpc_listener = TcpListener::bind(rpc).await.with_context(|| format!("--rpc: cannot listen on {rpc}"))?;
    let http_listener = TcpListener::bind(http).await.with_context(|| format!("--http: cannot listen on {http}"))?;
    let rpc_advertise = format!("{advertise}:{}", rpc_listener.local_addr()?.port());
    let http_advertise = format!("{advertise}:{}", http_listener.local_addr()?.port());

    if !(1..=7).contains(&args.voters) {
        anyhow::bail!("--voters: must be between 1 and 7 (3 or 5 recommended), got {}", args.voters);
    }
    let mut store_cfg = StoreConfig::new(data_dir.join("state"), rpc_advertise.clone());
    store_cfg.max_voters = args.voters;
    let store = Arc::new(Store::open(store_cfg).await.context("opening the state store")?);
    let liveness = Arc::new(crate::liveness::Liveness::default());
    let live_cfg = crate::liveness::LivenessConfig {
        heartbeat_interval: Duration::from_millis(500),
        heartbeat_timeout: Duration::from_secs_f64(args.heartbeat_timeout.max(0.5)),
        voter_replace_after: Duration::from_secs_f64(args.voter_replace_after.max(0.0)),
    };
    let rpc_router = store.rpc_router().merge(crate::liveness::router(liveness.clone()));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(rpc_listener, rpc_router).await {
            tracing::error!(error = %e, "RPC server stopped");
        }
    });
    if args.join.is_empty() {
        if store.bootstrap_if_new().await? {
            tracing::info!(node = %store.node_id(), "initialised a new one-node cluster");
        }
    } else if !store.is_initialized().await? {
        // A node with Raft state never joins again: it is already a member.
        let voter = store.join(&args.join).await.context("--join: joining the cluster")?;
        tracing::info!(node = %store.node_id(), voter, "joined the cluster");
    }

    let node = NodeInfo {
        id: store.node_id(),
        hostname,
        advertise: advertise.clone(),
        http_addr: http_advertise.clone(),
        rpc_addr: rpc_advertise,
        resources: res,
        port_range,
        attributes,
        registered_at: now(),
        draining: false,
        unreachable_since: None,
    };
    register(&store, node).await?;

    let sandbox_root = data_dir.join("sandboxes");
    std::fs::create_dir_all(&sandbox_root)?;
    let ctx = Arc::new(api::ApiContext::new(store.clone(), sandbox_root.clone()));
    let app = api::router(ctx);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let http_server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.changed().await;
        };
        if let Err(e) = axum::serve(http_listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    tokio::spawn(crate::orchestrator::run(store.clone()));
    tokio::spawn(crate::liveness::send_heartbeats(store.clone(), liveness.clone(), live_cfg));
    tokio::spawn(crate::liveness::monitor(store.clone(), liveness, live_cfg));
    let exe = std::env::current_exe().context("locating the wharf binary for executors")?;
    let agent_cfg = agent::AgentConfig {
        node: store.node_id(),
        sandbox_root,
        executor: vec![exe.into_os_string(), "executor".into()],
        keep_sandboxes: args.keep_sandboxes,
        check_client: agent::health::check_client().context("starting the agent")?,
    };
    tokio::spawn(agent::run_agent(store.clone(), agent_cfg));

    tracing::info!(http = %http_advertise, node = %store.node_id(), "wharf node ready");
    wait_for_signal().await;
    tracing::info!("shutting down; tasks keep running");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http_server).await;
    store.shutdown().await;
    Ok(())
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
