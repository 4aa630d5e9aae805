//! The `lb_http` fuzz target's input format, fixture and checks, shared
//! by the target (`fuzz/fuzz_targets/lb_http.rs`) and the stable replay
//! of its committed inputs (`tests/fuzz_regressions.rs`).
//!
//! Bytes a client sends to the LB's HTTP front, served by the front's own
//! connection handler (`lb::http::Front::serve_connection`: it reads the
//! request heads, the front routes them) over an in-memory stream. Routes:
//! `web.example` with one backend that refuses (502), `empty.example` with
//! none (503), anything else 404. The front answers or closes; it never
//! panics or hangs.

#[path = "../common/mod.rs"]
mod common;

use common::app;
use lb::http::Front;
use lb::{Lb, LbConfig};
use model::*;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Fixture {
    rt: tokio::runtime::Runtime,
    front: Front,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let lb = Lb::new(LbConfig { connect_timeout: Duration::from_millis(200), ..LbConfig::default() });
        let mut state = ClusterState::default();
        let web = app(r#"{"id": "/web", "cmd": "x", "portDefinitions": [{"port": 10000}],
            "labels": {"HAPROXY_0_VHOST": "web.example", "HAPROXY_0_PATH": "/api"}}"#);
        let empty = app(r#"{"id": "/empty", "cmd": "x", "portDefinitions": [{"port": 10001}],
            "labels": {"HAPROXY_0_VHOST": "empty.example"}}"#);
        let endpoint = Endpoint {
            app: web.spec.id.clone(),
            task: TaskId::parse("web.instance-00000000-0000-0000-0000-000000000001._app.0").expect("task"),
            node: NodeId(1),
            host: "127.0.0.1".into(),
            ip: Some("127.0.0.1".parse().expect("ip")),
            container_ip: None,
            // Port 1 on loopback: nothing listens, the backend refuses.
            ports: vec![EndpointPort {
                index: 0,
                host_port: 1,
                service_port: 10000,
                name: None,
                transports: vec![Transport::Tcp],
            }],
        };
        state.apps.insert(web.spec.id.clone(), web);
        state.apps.insert(empty.spec.id.clone(), empty);
        lb.apply(&store::EndpointUpdate::Reset { index: 1, endpoints: vec![endpoint], state: Arc::new(state) });
        let front = rt.block_on(async { Front::new(lb, 80) });
        Fixture { rt, front }
    })
}

/// Feeds one fuzz input through; panics on a wrong answer.
pub fn run(input: &[u8]) {
    let f = fixture();
    let out = f.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let serve = tokio::spawn(f.front.clone().serve_connection(server, "192.0.2.1:40000".parse().expect("addr")));
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let write = async {
            let _ = wr.write_all(input).await;
            let _ = wr.shutdown().await;
        };
        let mut out = Vec::new();
        let exchange = async { tokio::join!(write, rd.read_to_end(&mut out)) };
        // A read error is the connection ending; only a hang is a failure.
        let ((), _read) = tokio::time::timeout(Duration::from_secs(30), exchange).await.expect("the front hangs");
        if let Err(e) = serve.await {
            if let Ok(panic) = e.try_into_panic() {
                std::panic::resume_unwind(panic);
            }
        }
        out
    });
    if !out.is_empty() {
        // HTTP/1.0 requests get HTTP/1.0 answers.
        assert!(out.starts_with(b"HTTP/1."), "not an HTTP answer: {:?}", String::from_utf8_lossy(&out));
    }
}
