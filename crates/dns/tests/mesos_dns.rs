//! Conformance with Mesos-DNS: the state of Mesos-DNS's own fixture
//! (`shared/reference/mesos-dns/fake.json`) is built by commands into a real
//! store, and every record Mesos-DNS generates for it
//! (`expected-records.json`, variant `host-rfc952`: Wharf's tasks use host
//! networking, so their address is the node's) is asked of Wharf's DNS
//! server with `dig`.
//!
//! Deliberate differences, each checked below rather than skipped:
//! - Only Marathon's tasks: the fixture's other frameworks (`ipv6-framework`,
//!   `chronos with a space…`, `no pid`) do not exist in a Wharf cluster.
//! - `big.dog2` is left out: the fixture gives it the same task id as
//!   `liquor.store`, which one store cannot hold.
//! - Canonical names hash Wharf's task ids (`hash5` is checked against the
//!   fixture's ids in `names.rs`), and the named-port SRV records carry the
//!   host ports (the fixture's 80/443 are Docker container ports).
//! - Mesos-DNS's legacy records with the raw DiscoveryInfo name
//!   (`liquor.store.marathon.mesos.`) are not generated.
//! - Every Wharf node runs tasks, so the leader is also in `slave.<domain>`
//!   and `_slave._tcp`; `marathon.<domain>` and `_framework._tcp` point at
//!   the leader's HTTP API (where Marathon's API is), not a scheduler port.
//! - `ns1.<domain>` (the SOA's mname) instead of `mesos-dns.mesos.`.

mod common;

use common::*;
use dns::names::{hash5, LabelSpec};
use model::TaskState;
use serde_json::Value;
use std::collections::BTreeMap;

const MASTER: &str = "144.76.157.37";

struct Fixture {
    served: Served,
    /// Fixture canonical label -> Wharf's, and the task's host ports.
    tasks: BTreeMap<&'static str, (String, Vec<u16>)>,
}

async fn fixture(spec: LabelSpec) -> Fixture {
    let served = serve(config(spec, vec![]), MASTER, 5050).await;
    let s = &served.store;
    // Agents of fake.json; the id is the agent id's last field.
    for (id, ip) in [(0, "1.2.3.11"), (1, "1.2.3.12"), (2, "1.2.3.10"), (3, "2001:db8::1")] {
        propose(s, store::Command::RegisterNode(node(id, ip, 5051))).await;
    }
    let liquor = app(s, "/store/liquor", &[Some("http"), Some("https")], 10).await;
    let car = app(s, "/store/car", &[None, None], 11).await;
    let chronos = app(s, "/chronos", &[None], 12).await;
    let nginx = app(s, "/nginx", &[], 13).await;
    let reviewbot = app(s, "/reviewbot", &[None], 14).await;
    let poseidon = app(s, "/poseidon", &[None], 15).await;
    let mut tasks = BTreeMap::new();
    let mut add = |fixture: &'static str, label: &str, id: model::TaskId, node: u64, ports: &[u16]| {
        tasks.insert(fixture, (format!("{label}-{}-{node}", hash5(id.as_str())), ports.to_vec()));
    };
    let run = TaskState::Running;
    add("liquor-store-4dfjd-0", "liquor-store", task(s, &liquor, 1, 0, &[31354, 31355], run).await, 0, &[31354, 31355]);
    add("liquor-store-zasmd-1", "liquor-store", task(s, &liquor, 2, 1, &[31737, 31738], run).await, 1, &[31737, 31738]);
    add("car-store-zinaz-0", "car-store", task(s, &car, 3, 0, &[31364, 31365], run).await, 0, &[31364, 31365]);
    add("chronos-rx8q6-0", "chronos", task(s, &chronos, 4, 0, &[31332], run).await, 0, &[31332]);
    add("nginx-6ud99-0", "nginx", task(s, &nginx, 5, 0, &[], run).await, 0, &[]);
    add("reviewbot-8sq89-1", "reviewbot", task(s, &reviewbot, 6, 1, &[31744], run).await, 1, &[31744]);
    task(s, &poseidon, 7, 0, &[31112], TaskState::Killed).await;
    let f = Fixture { served, tasks };
    let addr = f.served.addr;
    eventually("the zone to hold the fixture", || !dig(addr, "reviewbot.marathon.mesos.", "A", &[]).answer.is_empty())
        .await;
    f
}

fn expected_variant(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/mesos-dns/expected-records.json");
    let text = std::fs::read_to_string(&path).expect("expected-records.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["variants"].as_array().into_iter().flatten().find(|v| v["variant"]["name"] == name).cloned().expect("variant")
}

/// Names of records Wharf does not generate on purpose (see the top).
fn left_out(name: &str) -> bool {
    ["big-dog", "big.dog", "liquor.store", "ipv6-framework", "chronoswithaspace", "nopid.", "mesos-dns.mesos."]
        .iter()
        .any(|p| name.contains(p))
}

/// The fixture's value with Wharf's canonical names and host ports.
fn translate(f: &Fixture, value: &str, discovery_srv: bool) -> String {
    let mut v = value.to_string();
    for (theirs, (ours, ports)) in &f.tasks {
        if v.contains(theirs) {
            v = v.replace(theirs, ours);
            if discovery_srv {
                v = v.replace(":80", &format!(":{}", ports[0])).replace(":443", &format!(":{}", ports[1]));
            }
        }
    }
    v
}

fn answers(f: &Fixture, name: &str, rtype: &str) -> Vec<String> {
    let d = dig(f.served.addr, name, rtype, &[]);
    assert_eq!(d.status, "NOERROR", "{name} {rtype}: {}", d.raw);
    assert!(d.flags.contains("aa"), "{name}: authoritative answers carry AA: {}", d.raw);
    let mut out: Vec<String> = d
        .data(rtype)
        .into_iter()
        .map(|data| match rtype {
            // "priority weight port target" -> "target:port", as the fixture writes them.
            "SRV" => {
                let f: Vec<&str> = data.split_whitespace().collect();
                assert_eq!((f[0], f[1]), ("0", "1"), "priority 0, weight 1: {data}");
                format!("{}:{}", f[3], f[2])
            }
            _ => data,
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_mesos_dns_generates_for_its_fixture() {
    let f = fixture(LabelSpec::Rfc952).await;
    let variant = expected_variant("host-rfc952");
    let differences: BTreeMap<(&str, &str), Vec<String>> = [
        (("slave.mesos.", "A"), vec!["1.2.3.10", "1.2.3.11", "1.2.3.12", MASTER]),
        (("_slave._tcp.mesos.", "SRV"), vec!["slave.mesos.:5050", "slave.mesos.:5051"]),
        (("marathon.mesos.", "A"), vec![MASTER]),
        (("_framework._tcp.marathon.mesos.", "SRV"), vec!["marathon.mesos.:5050"]),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.into_iter().map(str::to_string).collect()))
    .collect();
    let mut checked = 0;
    for rtype in ["A", "AAAA", "SRV"] {
        for (name, values) in variant[rtype].as_object().expect("records") {
            if left_out(name) || values.as_array().is_some_and(|v| v.iter().all(|x| left_out(x.as_str().unwrap_or(""))))
            {
                continue;
            }
            let name = translate(&f, name, false);
            let discovery =
                rtype == "SRV" && name.starts_with("_") && !name.contains(".slave.") && name.contains("liquor-store");
            let mut want: Vec<String> = match differences.get(&(name.as_str(), rtype)) {
                Some(d) => d.clone(),
                None => values
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(|v| translate(&f, v.as_str().unwrap_or(""), discovery))
                    .collect(),
            };
            want.sort();
            assert_eq!(answers(&f, &name, rtype), want, "{name} {rtype}");
            checked += 1;
        }
    }
    assert_eq!(checked, 49, "names of the fixture checked");
    // The killed task has no records at all.
    for (name, t) in [("poseidon.marathon.mesos.", "A"), ("_poseidon._tcp.marathon.mesos.", "SRV")] {
        assert_eq!(dig(f.served.addr, name, t, &[]).status, "NXDOMAIN", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_behave_as_mesos_dns_and_better() {
    let f = fixture(LabelSpec::Rfc1123).await;
    let a = f.served.addr;
    // Case-insensitive; the owner name comes back as asked, values the same.
    let d = dig(a, "cHrOnOs.MARATHON.mesoS.", "A", &[]);
    assert_eq!(d.data("A"), vec!["1.2.3.11"], "{}", d.raw);
    assert_eq!(d.answer[0].0.to_lowercase(), "chronos.marathon.mesos.");
    // SRV answers bring their targets' addresses along.
    let d = dig(a, "_liquor-store._tcp.marathon.mesos.", "SRV", &[]);
    assert_eq!(d.answer.len(), 4, "{}", d.raw);
    let mut extra: Vec<String> = d.additional.iter().filter(|r| r.1 == "A").map(|r| r.2.clone()).collect();
    extra.sort();
    assert_eq!(extra, vec!["1.2.3.11", "1.2.3.12"], "{}", d.raw);
    // A wrong type on an existing name: NODATA with the SOA, so it is cached.
    for (name, t) in [
        ("_car-store._udp.marathon.mesos.", "A"),
        ("chronos.marathon.mesos.", "AAAA"),
        ("chronos.marathon.mesos.", "TXT"),
    ] {
        let d = dig(a, name, t, &[]);
        assert_eq!(d.status, "NOERROR", "{name} {t}: {}", d.raw);
        assert!(d.answer.is_empty(), "{}", d.raw);
        assert_eq!(d.authority.first().map(|r| r.1.as_str()), Some("SOA"), "{}", d.raw);
        assert!(d.authority[0].2.starts_with("ns1.mesos. root.ns1.mesos."), "{}", d.raw);
    }
    // A missing name: NXDOMAIN with the SOA; an empty non-terminal exists.
    let d = dig(a, "missing.mesos.", "A", &[]);
    assert_eq!((d.status.as_str(), d.authority.first().map(|r| r.1.as_str())), ("NXDOMAIN", Some("SOA")), "{}", d.raw);
    assert_eq!(dig(a, "_tcp.marathon.mesos.", "A", &[]).status, "NOERROR");
    assert_eq!(dig(a, "_nope._tcp.marathon.mesos.", "SRV", &[]).status, "NXDOMAIN");
    // SOA and NS at the apex, in the answer.
    assert_eq!(dig(a, "mesos.", "SOA", &[]).data("SOA").len(), 1);
    assert_eq!(dig(a, "mesos.", "NS", &[]).data("NS"), vec!["ns1.mesos."]);
    assert_eq!(dig(a, "ns1.mesos.", "A", &[]).data("A"), vec!["127.0.0.1"]);
    // Leader and masters (the Raft voters).
    for n in ["leader.mesos.", "master.mesos.", "master0.mesos."] {
        assert_eq!(dig(a, n, "A", &[]).data("A"), vec![MASTER], "{n}");
    }
    assert_eq!(answers(&f, "_leader._tcp.mesos.", "SRV"), vec!["leader.mesos.:5050"]);
    // PTR for node addresses, which Mesos-DNS never answered.
    let d = dig(a, "11.3.2.1.in-addr.arpa.", "PTR", &[]);
    assert_eq!(d.data("PTR"), vec!["1-2-3-11.slave.mesos."], "{}", d.raw);
    assert_eq!(dig(a, "1-2-3-11.slave.mesos.", "A", &[]).data("A"), vec!["1.2.3.11"]);
    // Wharf's own SRV record per node's HTTP API (Prometheus finds the nodes' /metrics with it).
    assert_eq!(
        answers(&f, "_wharf._tcp.mesos.", "SRV"),
        vec![
            "1-2-3-10.slave.mesos.:5051",
            "1-2-3-11.slave.mesos.:5051",
            "1-2-3-12.slave.mesos.:5051",
            "2001db81.slave.mesos.:5051",
            "master.slave.mesos.:5050"
        ]
    );
    // An answer to an EDNS query carries an OPT record (RFC 6891).
    assert!(dig(a, "chronos.marathon.mesos.", "A", &["+edns=0"]).raw.contains("OPT PSEUDOSECTION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_answer_sets_tc_over_udp_and_comes_whole_over_tcp() {
    let served = serve(config(LabelSpec::Rfc1123, vec![]), MASTER, 5050).await;
    let s = &served.store;
    propose(s, store::Command::RegisterNode(node(1, "10.0.0.1", 5051))).await;
    let id = app(s, "/big", &[None], 10).await;
    for i in 0..60u16 {
        task(s, &id, i as u128 + 1, 1, &[31000 + i], TaskState::Running).await;
    }
    let a = served.addr;
    eventually("60 tasks in DNS", || dig(a, "_big._tcp.marathon.mesos.", "SRV", &["+tcp"]).answer.len() == 60).await;
    let udp = dig(a, "_big._tcp.marathon.mesos.", "SRV", &["+ignore", "+noedns"]);
    assert!(udp.flags.contains("tc"), "512 bytes without EDNS: {}", udp.raw);
    let tcp = dig(a, "_big._tcp.marathon.mesos.", "SRV", &["+tcp"]);
    assert!(!tcp.flags.contains("tc"));
    // Answers are shuffled per query.
    let first = |d: &Dig| d.answer.first().map(|r| r.2.clone());
    let firsts: std::collections::BTreeSet<_> =
        (0..8).map(|_| first(&dig(a, "_big._tcp.marathon.mesos.", "SRV", &["+tcp"]))).collect();
    assert!(firsts.len() > 1, "eight answers all started with the same record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_come_from_the_pre_encoded_path_and_follow_the_zone() {
    let served = serve(config(LabelSpec::Rfc1123, vec![]), MASTER, 5050).await;
    let s = &served.store;
    propose(s, store::Command::RegisterNode(node(1, "10.0.0.1", 5051))).await;
    propose(s, store::Command::RegisterNode(node(2, "10.0.0.2", 5051))).await;
    let a = served.addr;
    let id = app(s, "/web", &[None], 10).await;
    // Asked before the app has a task: NXDOMAIN (and cached as such).
    assert_eq!(dig(a, "web.marathon.mesos.", "A", &[]).status, "NXDOMAIN");
    for n in 1..=3u128 {
        task(s, &id, n, 1 + (n as u64 % 2), &[31000 + n as u16], TaskState::Running).await;
    }
    // Each change reaches the UDP answers at once (the caches are per zone
    // generation), with and without EDNS, in the query's case.
    eventually("three SRV answers over UDP", || dig(a, "_web._tcp.marathon.mesos.", "SRV", &[]).answer.len() == 3)
        .await;
    let d = dig(a, "WEB.Marathon.mesos.", "A", &["+noedns"]);
    let mut ips = d.data("A");
    ips.sort();
    assert_eq!(ips, vec!["10.0.0.1", "10.0.0.2"], "{}", d.raw);
    assert_eq!(d.answer[0].0, "WEB.Marathon.mesos.", "the name as asked: {}", d.raw);
    assert!(!d.raw.contains("OPT PSEUDOSECTION"), "{}", d.raw);
    assert!(d.flags.contains("aa"), "{}", d.raw);
    assert!(dig(a, "web.marathon.mesos.", "A", &["+edns=0", "+bufsize=1232"]).raw.contains("udp: 1232"));
    // Shuffled per query over UDP too.
    let firsts: std::collections::BTreeSet<_> =
        (0..8).map(|_| dig(a, "_web._tcp.marathon.mesos.", "SRV", &[]).answer.first().map(|r| r.2.clone())).collect();
    assert!(firsts.len() > 1, "eight UDP answers all started with the same record");
    // A task that stops running leaves the answer.
    let gone = model::TaskId::new(&id, uuid::Uuid::from_u128(1), 1);
    propose(
        s,
        store::Command::TaskStatuses(vec![model::TaskStatus {
            task_id: gone,
            state: TaskState::Killed,
            at: model::UnixMillis(2),
            message: None,
            container_ip: None,
        }]),
    )
    .await;
    eventually("two SRV answers over UDP", || dig(a, "_web._tcp.marathon.mesos.", "SRV", &[]).answer.len() == 2).await;
    // The queries are counted by type and outcome.
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::with_prefix("wharf");
    served.dns.metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let count = |series: &str| -> f64 {
        text.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
    };
    assert!(count("wharf_dns_queries_total{qtype=\"SRV\",outcome=\"answer\"}") >= 10.0, "{text}");
    assert!(count("wharf_dns_queries_total{qtype=\"A\",outcome=\"nxdomain\"}") >= 1.0, "{text}");
    assert!(text.contains("wharf_dns_answer_seconds_bucket{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_packets_never_take_the_server_down() {
    let served = serve(config(LabelSpec::Rfc1123, vec![]), MASTER, 5050).await;
    let a = served.addr;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300))).expect("timeout");
    let query = |name: &[u8], qtype: u16, qclass: u16| {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(name);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&qclass.to_be_bytes());
        p
    };
    let leader = b"\x06leader\x05mesos\x00";
    let rcode = |packet: &[u8]| -> Option<u8> {
        sock.send_to(packet, a).expect("send");
        let mut buf = [0u8; 4096];
        sock.recv_from(&mut buf).ok().map(|(n, _)| if n >= 4 { buf[3] & 0x0f } else { 255 })
    };
    // Garbage and truncated packets: no answer, or FORMERR (1).
    for p in [&b"\x00"[..], &b"hello world, this is not dns"[..], &query(leader, 1, 1)[..20]] {
        assert!(matches!(rcode(p), None | Some(1)), "{p:?}");
    }
    // A name past 255 bytes, a label pointer loop, two questions: FORMERR.
    let mut huge = Vec::new();
    for _ in 0..5 {
        huge.push(63u8);
        huge.extend_from_slice(&[b'a'; 63]);
    }
    huge.push(0);
    assert_eq!(rcode(&query(&huge, 1, 1)), Some(1));
    assert_eq!(rcode(&query(b"\xc0\x0c", 1, 1)), Some(1));
    let mut two = query(leader, 1, 1);
    two[5] = 2;
    two.extend_from_slice(leader);
    two.extend_from_slice(&[0, 1, 0, 1]);
    assert_eq!(rcode(&two), Some(1));
    // Unknown class in the zone: REFUSED (5); unknown type: NODATA (0).
    assert_eq!(rcode(&query(leader, 1, 3)), Some(5));
    assert_eq!(rcode(&query(leader, 65000, 1)), Some(0));
    // An opcode other than QUERY: NOTIMP (4).
    let mut notify = query(leader, 1, 1);
    notify[2] = 0x20;
    assert_eq!(rcode(&notify), Some(4));
    // A flood from one source, then a normal question is still answered.
    let flood = query(leader, 1, 1);
    for _ in 0..5000 {
        let _ = sock.send_to(&flood, a);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut buf = [0u8; 4096];
    while sock.recv_from(&mut buf).is_ok() {}
    assert_eq!(dig(a, "leader.mesos.", "A", &[]).data("A"), vec![MASTER]);
    // Garbage over TCP, then a real TCP question.
    {
        use std::io::Write;
        let mut t = std::net::TcpStream::connect(a).expect("tcp");
        let _ = t.write_all(b"\xff\xffgarbage");
    }
    assert_eq!(dig(a, "leader.mesos.", "A", &["+tcp"]).data("A"), vec![MASTER]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_in_mesos_dns_shapes() {
    let f = fixture(LabelSpec::Rfc1123).await;
    let router = dns::http::router(f.served.dns.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let get = |p: &str| {
        let url = format!("{base}{p}");
        async move {
            let r = reqwest::Client::new().get(url).header("Accept", "application/json").send().await.expect("get");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    assert_eq!(get("/v1/version").await["Service"], "Mesos-DNS");
    assert_eq!(get("/v1/config").await["Domain"], "mesos");
    assert_eq!(get("/v1/hosts/leader.mesos").await, serde_json::json!([{"host": "leader.mesos.", "ip": MASTER}]));
    assert_eq!(get("/v1/hosts/nope.mesos").await, serde_json::json!([{"host": "", "ip": ""}]));
    assert_eq!(
        get("/v1/services/_leader._tcp.mesos.").await,
        serde_json::json!([{"service": "_leader._tcp.mesos.", "host": "leader.mesos.", "ip": MASTER, "port": "5050"}])
    );
    assert_eq!(
        get("/v1/services/_nope._tcp.mesos.").await,
        serde_json::json!([{"service": "", "host": "", "ip": "", "port": ""}])
    );
    let e = get("/v1/enumerate").await;
    let tasks = e["frameworks"][0]["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 6, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_get_servfail_when_every_upstream_fails() {
    // Two upstreams that never answer: nothing listens on these ports.
    let dead = |p: u16| -> std::net::SocketAddr { ([127, 0, 0, 1], p).into() };
    let unused = [std::net::UdpSocket::bind("127.0.0.1:0"), std::net::UdpSocket::bind("127.0.0.1:0")]
        .map(|s| s.and_then(|s| s.local_addr()).map(|a| a.port()).expect("port"));
    let served = serve(config(LabelSpec::Rfc1123, vec![dead(unused[0]), dead(unused[1])]), MASTER, 5050).await;
    let d = dig(served.addr, "example.org.", "A", &["+time=5"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(!d.flags.contains("aa"), "{}", d.raw);
    // The cluster's own names do not depend on the upstreams.
    assert_eq!(dig(served.addr, "leader.mesos.", "A", &[]).data("A"), vec![MASTER]);
}
