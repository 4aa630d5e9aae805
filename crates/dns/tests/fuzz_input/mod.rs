//! The `dns_query` fuzz target's input format, fixture and checks, shared
//! by the target (`fuzz/fuzz_targets/dns_query.rs`) and the stable replay
//! of its committed inputs (`tests/fuzz_regressions.rs`).
//!
//! What a node's DNS server does with one UDP datagram
//! (`dns::server::answer_udp`: the fast path, else hickory's handler),
//! against a zone with one node and one task. The first input byte picks
//! the client (even: loopback, which may recurse; odd: an outside address),
//! the rest is the datagram. An answer, if any, is a DNS response with the
//! query's ID.

use dns::fast::Cache;
use dns::forward::Forwarder;
use dns::names::LabelSpec;
use dns::server::{answer_udp, Dns, DnsConfig};
use dns::zone::{Masters, ZoneConfig};
use model::*;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

struct Fixture {
    rt: tokio::runtime::Runtime,
    dns: Arc<Dns>,
    cache: Mutex<Cache>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dns = Dns::new(DnsConfig {
            zone: ZoneConfig { domain: "mesos".into(), spec: LabelSpec::Rfc1123, ttl: 60 },
            // No upstream: a forwarded name fails at once (SERVFAIL).
            forwarder: Forwarder { upstreams: vec![], zones: vec![], timeout: Duration::from_millis(100) },
            forward_from: vec![],
            ns_ip: Some("127.0.0.1".parse().expect("ip")),
        });
        let node = NodeInfo {
            id: NodeId(1),
            hostname: "n1".into(),
            advertise: "10.0.0.9".into(),
            http_addr: "10.0.0.9:8080".into(),
            rpc_addr: "10.0.0.9:5050".into(),
            resources: Resources { cpus: 4.0, mem: 4096.0, disk: 1000.0, gpus: 0 },
            port_range: (31000, 32000),
            attributes: Default::default(),
            registered_at: UnixMillis(1),
            draining: false,
            unreachable_since: None,
            drivers: vec![DriverKind::Exec],
            images: Vec::new(),
        };
        let mut state = ClusterState::default();
        state.nodes.insert(node.id, node);
        dns.set_cluster(&state, &Masters { leader: Some(NodeId(1)), voters: vec![NodeId(1)] });
        let app = AppId::parse("/prod/web").expect("id");
        let task = TaskId::parse("prod_web.instance-00000000-0000-0000-0000-000000000001._app.0").expect("task");
        let endpoint = Endpoint {
            app,
            task,
            node: NodeId(1),
            host: "10.0.0.9".into(),
            ip: Some("10.0.0.9".parse().expect("ip")),
            container_ip: None,
            ports: vec![EndpointPort {
                index: 0,
                host_port: 31001,
                service_port: 10000,
                name: Some("http".into()),
                transports: vec![Transport::Tcp],
            }],
        };
        dns.apply(&store::EndpointUpdate::Reset { index: 1, endpoints: vec![endpoint], state: Arc::new(state) });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Fixture { rt, dns, cache: Mutex::new(Cache::default()) }
    })
}

/// Feeds one fuzz input through; panics on a wrong answer.
pub fn run(input: &[u8]) {
    let Some((&who, packet)) = input.split_first() else { return };
    let src: SocketAddr = if who % 2 == 0 { "127.0.0.1:5353" } else { "192.0.2.1:5353" }.parse().expect("addr");
    let f = fixture();
    let mut cache = f.cache.lock().unwrap_or_else(|p| p.into_inner());
    let answer = f.rt.block_on(answer_udp(&f.dns, &mut cache, packet, src));
    if let Some(a) = answer {
        assert!(a.len() >= 12, "an answer without a header: {a:?}");
        assert_eq!(a[..2], packet[..2], "the answer carries the query's ID");
        assert!(a[2] & 0x80 != 0, "the answer is a response");
    }
}
