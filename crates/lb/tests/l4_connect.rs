//! `lb::l4::connect` against real loopback sockets: a backend that refuses
//! is skipped for one that listens before the caller sees anything, and a
//! service whose every backend refuses gets no connection.

use lb::{Lb, LbConfig};
use model::*;
use std::sync::Arc;

fn app(json: &str) -> App {
    let spec = marathon::parse_app(json.as_bytes()).expect("app parses");
    App {
        spec,
        version: UnixMillis(1),
        last_config_change_at: UnixMillis(1),
        last_scaling_at: UnixMillis(1),
        backoff: Default::default(),
        last_task_failure: None,
        deleting: false,
        resident: Default::default(),
    }
}

/// An LB whose service port 10000 has one task per host port given.
fn lb_with(host_ports: &[u16]) -> Arc<Lb> {
    let lb = Lb::new(LbConfig::default());
    let mut state = ClusterState::default();
    let web = app(r#"{"id": "/web", "cmd": "x", "portDefinitions": [{"port": 10000}]}"#);
    let endpoints = host_ports
        .iter()
        .enumerate()
        .map(|(i, &host_port)| Endpoint {
            app: web.spec.id.clone(),
            task: TaskId::parse(&format!("web.instance-00000000-0000-0000-0000-00000000000{}._app.0", i + 1))
                .expect("task"),
            node: NodeId(1),
            host: "127.0.0.1".into(),
            ip: Some("127.0.0.1".parse().expect("ip")),
            container_ip: None,
            ports: vec![EndpointPort {
                index: 0,
                host_port,
                service_port: 10000,
                name: None,
                transports: vec![Transport::Tcp],
            }],
        })
        .collect();
    state.apps.insert(web.spec.id.clone(), web);
    lb.apply(&store::EndpointUpdate::Reset { index: 1, endpoints, state: Arc::new(state) });
    lb
}

#[tokio::test]
async fn a_refusing_backend_is_skipped_for_a_listening_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let live = listener.local_addr().expect("addr");
    // Port 1 on loopback: nothing listens, the connection is refused.
    let lb = lb_with(&[1, live.port()]);
    for _ in 0..10 {
        let (backend, stream) = lb::l4::connect(&lb, 10000).await.expect("a connection to the live backend");
        assert_eq!(backend.addr, live);
        assert_eq!(stream.peer_addr().expect("connected"), live);
        listener.accept().await.expect("the live backend sees it");
    }
}

#[tokio::test]
async fn no_connection_when_every_backend_refuses() {
    let lb = lb_with(&[1]);
    assert!(lb::l4::connect(&lb, 10000).await.is_none());
}
