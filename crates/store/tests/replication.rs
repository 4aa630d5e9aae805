//! Replication between two real stores on loopback (plain RPC), through each
//! AppendEntries transport: the stream (`/raft/stream`) when the follower
//! serves it, POSTs (`/raft/append`) when it does not, as an older node in a
//! rolling upgrade. With two voters a write commits only once the follower
//! holds it, so every acknowledged write here went through the transport
//! under test; the follower's replica must then show it.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Applied, Command, Store, StoreConfig};

/// Requests each node's RPC server saw, by path.
type Seen = Arc<Mutex<BTreeMap<String, usize>>>;

struct Node {
    store: Arc<Store>,
    addr: String,
    seen: Seen,
    server: tokio::task::JoinHandle<()>,
}

/// A store serving its RPC routes, answering 404 on `hidden` as a node
/// without that route would.
async fn node(dir: &std::path::Path, hidden: Option<&'static str>) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut cfg = StoreConfig::new(dir.to_path_buf(), addr.clone());
    cfg.election_timeout_ms = (300, 600);
    let store = Arc::new(Store::open(cfg).await.expect("open"));
    let seen: Seen = Arc::default();
    let layer_state = (seen.clone(), hidden);
    let router = store.rpc_router().layer(axum::middleware::from_fn_with_state(layer_state, count));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Node { store, addr, seen, server }
}

async fn count(State((seen, hidden)): State<(Seen, Option<&'static str>)>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if let Ok(mut s) = seen.lock() {
        *s.entry(path.clone()).or_default() += 1;
    }
    if hidden == Some(path.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    next.run(req).await
}

fn token(i: usize) -> Command {
    Command::PutApiToken(model::ApiToken {
        id: format!("t{i}"),
        role: model::Role::Viewer,
        name: String::new(),
        secret_sha256: "00".repeat(32),
        created_at: model::UnixMillis(1),
    })
}

/// Two voters, the follower hiding `hidden`; 50 writes on the leader, each
/// acknowledged, and all of them on the follower's replica. Returns what the
/// follower's RPC server saw.
async fn replicate_with_follower_hiding(hidden: &'static str) -> BTreeMap<String, usize> {
    let (da, db) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = node(da.path(), None).await;
    a.store.bootstrap_if_new().await.expect("bootstrap");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a.store.is_leader() {
        assert!(tokio::time::Instant::now() < deadline, "the first node never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = node(db.path(), Some(hidden)).await;
    assert!(b.store.join(std::slice::from_ref(&a.addr)).await.expect("join"), "the second node should vote");
    for i in 0..50 {
        match a.store.propose(token(i)).await {
            Ok(Applied::Done) => {}
            other => panic!("write {i}: {other:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.store.read(|s| s.api_tokens.len()) < 50 {
        assert!(tokio::time::Instant::now() < deadline, "the follower's replica lacks acknowledged writes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.store.read(|s| (0..50).all(|i| s.api_tokens.contains_key(&format!("t{i}")))));
    let seen = b.seen.lock().expect("seen").clone();
    for n in [a, b] {
        n.server.abort();
        n.store.shutdown().await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_serves_the_stream_gets_appendentries_on_it() {
    // With the POST route gone, entries can only have come by the stream.
    let seen = replicate_with_follower_hiding("/raft/append").await;
    assert!(seen.get("/raft/stream").copied().unwrap_or(0) >= 1, "{seen:?}");
    // A connection carries a replication session (a few here: the join
    // changes the membership), not one call.
    assert!(seen.get("/raft/stream").copied().unwrap_or(0) <= 5, "{seen:?}");
    assert_eq!(seen.get("/raft/append"), None, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_without_the_stream_gets_appendentries_as_posts() {
    let seen = replicate_with_follower_hiding("/raft/stream").await;
    // Asked once per replication session, then POSTs.
    assert!((1..=5).contains(&seen.get("/raft/stream").copied().unwrap_or(0)), "{seen:?}");
    assert!(seen.get("/raft/append").copied().unwrap_or(0) >= 50, "{seen:?}");
}
