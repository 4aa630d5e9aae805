//! The cluster RPC server against arbitrary bodies: a real store serving
//! `Store::rpc_router` on loopback gets random bytes and randomly shaped JSON
//! (openraft's field names with wrong types and values) on every RPC route.
//! Every request gets an HTTP answer (no handler panics, the connection is
//! never dropped), and the node still commits writes afterwards. Bounded
//! (a fixed number of cases), so it runs in the normal suite on stable.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Map, Value};
use std::time::Duration;
use store::{Applied, Command, Store, StoreConfig};

const ROUTES: &[&str] = &["/raft/append", "/raft/vote", "/raft/snapshot", "/raft/propose"];

/// Membership routes act on any well-formed request by design (a join of a
/// made-up address waits for that learner): they get only bodies that are
/// not JSON. (That anyone can call them is what mTLS between nodes is for.)
const MEMBERSHIP: &[&str] = &["/cluster/join", "/cluster/elect", "/cluster/abdicate"];

const KEYS: &[&str] = &[
    "vote",
    "leader_id",
    "term",
    "node_id",
    "committed",
    "prev_log_id",
    "entries",
    "leader_commit",
    "last_log_id",
    "meta",
    "offset",
    "data",
    "done",
    "index",
    "log_id",
    "payload",
    "Normal",
    "Membership",
    "snapshot_id",
    "last_membership",
    "RegisterNode",
    "PutApp",
    "id",
    "addr",
    "node",
    "voter",
];

fn body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![0u64, 1, 2, u64::MAX]).prop_map(|n| json!(n)),
        ".{0,8}".prop_map(Value::String),
    ];
    let shaped = leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        shaped.prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
    ]
}

fn register() -> Command {
    Command::PutApiToken(model::ApiToken {
        id: "probe".into(),
        role: model::Role::Viewer,
        name: String::new(),
        secret_sha256: "00".repeat(32),
        created_at: model::UnixMillis(1),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_rpc_bodies_get_answers_and_the_node_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut cfg = StoreConfig::new(dir.path().to_path_buf(), addr.to_string());
    cfg.election_timeout_ms = (150, 300);
    let store = Store::open(cfg).await.expect("open");
    let router = store.rpc_router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    store.bootstrap_if_new().await.expect("bootstrap");

    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let mut runner = TestRunner::deterministic();
    let strategy = body();
    for case in 0..300 {
        let bytes = strategy.new_tree(&mut runner).expect("case").current();
        let mut not_json = vec![0xff];
        not_json.extend_from_slice(&bytes);
        let sends = ROUTES.iter().map(|r| (r, &bytes)).chain(MEMBERSHIP.iter().map(|r| (r, &not_json)));
        for (route, bytes) in sends {
            let resp = client
                .post(format!("http://{addr}{route}"))
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send()
                .await;
            let status = match resp {
                Ok(r) => r.status(),
                Err(e) => {
                    panic!("case {case}: {route} dropped the request ({e}) for {:?}", String::from_utf8_lossy(bytes))
                }
            };
            assert!(
                !status.is_server_error() || status.as_u16() == 503,
                "case {case}: {route} answered {status} for {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    // Still a working node: a write commits (after a re-election, if a
    // random vote request happened to carry a higher term).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match store.propose(register()).await {
            Ok(Applied::Done) => break,
            other if tokio::time::Instant::now() < deadline => {
                let _ = other;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the node no longer commits: {other:?}"),
        }
    }
    assert!(store.read(|s| s.api_tokens.contains_key("probe")));
    server.abort();
    store.shutdown().await;
}
