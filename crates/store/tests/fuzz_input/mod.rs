//! The `rpc_body` fuzz target's input format, fixture and checks, shared
//! by the target (`fuzz/fuzz_targets/rpc_body.rs`) and the stable replay
//! of its committed inputs (`tests/fuzz_regressions.rs`).
//!
//! Bodies on the cluster RPC routes a node serves (`Store::rpc_router`:
//! `/raft/{append,vote,snapshot,propose}`), sent through the router of a
//! real one-node store in a temporary directory. The first input byte picks
//! the route, the rest is the body. Every request gets an answer that is
//! not a server error (503 aside: a node between leaders says so).
//! Membership routes (`/cluster/join` ...) are left out: a well-formed join
//! of a made-up address waits for that learner by design.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::OnceLock;
use std::time::Duration;
use store::{Store, StoreConfig};
use tower::ServiceExt;

const ROUTES: &[&str] = &["/raft/append", "/raft/vote", "/raft/snapshot", "/raft/propose"];

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _store: Store,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = StoreConfig::new(dir.path().to_path_buf(), "127.0.0.1:1".into());
        cfg.election_timeout_ms = (150, 300);
        let store = rt.block_on(async {
            let store = Store::open(cfg).await.expect("open");
            store.bootstrap_if_new().await.expect("bootstrap");
            store
        });
        let router = store.rpc_router();
        Fixture { rt, router, _store: store, _dir: dir }
    })
}

/// Feeds one fuzz input through; panics on a wrong answer.
pub fn run(input: &[u8]) {
    let Some((&pick, body)) = input.split_first() else { return };
    let route = ROUTES[pick as usize % ROUTES.len()];
    let f = fixture();
    let req = Request::post(route)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request");
    let resp = f.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), f.router.clone().oneshot(req)).await.expect("the RPC hangs")
    });
    let status = resp.expect("infallible").status();
    assert!(!status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE, "{route} answered {status}");
}
