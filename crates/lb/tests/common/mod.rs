//! What the lb crate's socket tests set up alike: an app from Marathon JSON,
//! an LB whose service port 10000 (`/web`, virtual host `web.example`) has
//! one task per given host port on loopback, and the HTTP front over it.

#![allow(dead_code)] // each test file uses its own part of this

use lb::http::Front;
use lb::{Lb, LbConfig};
use model::*;
use std::sync::Arc;

/// A stored app from Marathon's JSON, at version 1.
pub fn app(json: &str) -> App {
    let spec = marathon::parse_app(json.as_bytes()).expect("app parses");
    App::new(spec, UnixMillis(1))
}

/// An LB whose service port 10000 (app `/web`, virtual host `web.example`)
/// has one task per host port given, all on 127.0.0.1.
pub fn lb_with(host_ports: &[u16]) -> Arc<Lb> {
    lb_on(LbConfig::default(), host_ports)
}

/// `lb_with` with its own configuration (say, where service ports listen).
pub fn lb_on(cfg: LbConfig, host_ports: &[u16]) -> Arc<Lb> {
    let lb = Lb::new(cfg);
    let mut state = ClusterState::default();
    let web = app(r#"{"id": "/web", "cmd": "x", "portDefinitions": [{"port": 10000}],
        "labels": {"HAPROXY_0_VHOST": "web.example"}}"#);
    let endpoints = host_ports
        .iter()
        .enumerate()
        .map(|(i, &host_port)| Endpoint {
            app: web.spec.id.clone(),
            task: TaskId::parse(&format!("web.instance-00000000-0000-0000-0000-{:012}._app.0", i + 1)).expect("task"),
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

/// The HTTP front over `lb_with(&[port])`.
pub fn front(port: u16) -> Front {
    Front::new(lb_with(&[port]), 80)
}
