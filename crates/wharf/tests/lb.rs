//! The load balancer on a three-node cluster, through real sockets: an
//! app's service port answers on every node and reaches every up task; a
//! rolling upgrade under steady load through a service port and through the
//! HTTP front fails no request; a task killed from outside mid-load costs at
//! most the request it was serving; virtual hosts route to their apps, an
//! unknown host is 404 and an app with no healthy task 503; a taken service
//! port is refused; bad HTTP gets 4xx or a closed connection, and leaves no
//! socket open on the node.

mod common;

use common::cluster::Cluster;
use common::wait_for;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn app(id: &str, vhost: &str, version: &str, health_path: &str) -> Value {
    json!({
        "id": id,
        "cmd": "echo $MESOS_TASK_ID > id; echo $V > v; echo ok > ok; exec python3 -m http.server --bind $HOST $PORT0",
        "cpus": 0.1, "mem": 64, "instances": 3,
        "env": {"V": version},
        "labels": {"HAPROXY_0_VHOST": vhost},
        "healthChecks": [{"protocol": "HTTP", "path": health_path, "portIndex": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "gracePeriodSeconds": 15, "maxConsecutiveFailures": 3}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1}
    })
}

async fn healthy(c: &Cluster, id: &str) -> Vec<Value> {
    let v = c.get(0, &format!("/v2/apps{id}/tasks")).await;
    v["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter(|t| {
            t["healthCheckResults"].as_array().is_some_and(|r| !r.is_empty() && r.iter().all(|h| h["alive"] == true))
        })
        .collect()
}

/// No deployment of `app` in flight.
async fn deployed(c: &Cluster, app: &str) -> bool {
    let d = c.get(0, "/v2/deployments").await;
    !d.as_array().into_iter().flatten().any(|d| d["affectedApps"].as_array().is_some_and(|a| a.contains(&json!(app))))
}

/// A fresh connection per request, as a load test's client makes them.
fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().expect("client")
}

/// Requests `url` (with `host`) in a loop until stopped: (ok, failed, last failures).
fn load(
    url: String,
    host: Option<&'static str>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, Vec<String>)> {
    tokio::spawn(async move {
        let http = client();
        let (mut ok, mut failed, mut why) = (0u64, 0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let mut req = http.get(&url);
            if let Some(h) = host {
                req = req.header("Host", h);
            }
            match req.send().await {
                Ok(r) if r.status() == StatusCode::OK => ok += 1,
                Ok(r) => {
                    failed += 1;
                    why.push(format!("{} {}", r.status(), r.text().await.unwrap_or_default()));
                }
                Err(e) => {
                    failed += 1;
                    why.push(e.to_string());
                }
            }
        }
        (ok, failed, why)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ports_and_virtual_hosts_survive_a_rolling_upgrade() {
    let c = Cluster::start(3, &[]).await;
    let (s, v) =
        c.call(0, Method::POST, "/v2/apps", Some(&app("/lb/web", "web.test", "v1", "/ok"))).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let port = v["portDefinitions"][0]["port"].as_u64().expect("service port") as u16;
    wait_for("three healthy tasks", Duration::from_secs(40), || async { healthy(&c, "/lb/web").await.len() == 3 })
        .await;
    wait_for("the first deployment", Duration::from_secs(20), || async { deployed(&c, "/lb/web").await }).await;
    let ids: BTreeSet<String> =
        healthy(&c, "/lb/web").await.iter().map(|t| t["id"].as_str().unwrap_or_default().to_string()).collect();

    // The service port answers on every node and reaches every task.
    let http = client();
    for n in &c.nodes {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("http://{}:{port}/id", n.ip)).send().await {
                seen.insert(r.text().await.unwrap_or_default().trim().to_string());
            }
            if seen == ids {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, ids, "every task through {}:{port}", n.ip);
    }
    let lb = c.get(1, "/wharf/v1/lb").await;
    assert_eq!(lb["servicePorts"][0]["servicePort"], port, "{lb}");
    assert_eq!(lb["servicePorts"][0]["backends"].as_array().map(Vec::len), Some(3), "{lb}");

    // Virtual hosts: two apps, an unknown host, an app with no healthy task.
    let (s, v) =
        c.call(0, Method::POST, "/v2/apps", Some(&app("/lb/other", "other.test", "o1", "/ok"))).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) =
        c.call(0, Method::POST, "/v2/apps", Some(&app("/lb/sick", "sick.test", "s1", "/never"))).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    wait_for("the other app healthy", Duration::from_secs(40), || async { healthy(&c, "/lb/other").await.len() == 3 })
        .await;
    let front = |i: usize| format!("http://{}:80", c.nodes[i].ip);
    let get = |url: String, host: &'static str| {
        let http = http.clone();
        async move {
            let r = http.get(url).header("Host", host).send().await.expect("front answers");
            (r.status(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get(format!("{}/v", front(2)), "web.test").await, (StatusCode::OK, "v1\n".into()));
    assert_eq!(get(format!("{}/v", front(2)), "other.test:80").await, (StatusCode::OK, "o1\n".into()));
    let (s, body) = get(format!("{}/v", front(0)), "nope.test").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = get(format!("{}/v", front(1)), "sick.test").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("/lb/sick"), "{body}");

    // A service port another app holds is refused, naming both.
    let mut taken = app("/lb/taken", "taken.test", "t", "/ok");
    taken["portDefinitions"] = json!([{"port": port}]);
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&taken)).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let msg = v.to_string();
    assert!(msg.contains(&port.to_string()) && msg.contains("/lb/web"), "{msg}");

    // A rolling upgrade under load through a service port and the front.
    let stop = Arc::new(AtomicBool::new(false));
    let l4 = load(format!("http://{}:{port}/ok", c.nodes[1].ip), None, stop.clone());
    let l7 = load(format!("{}/ok", front(2)), Some("web.test"), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, v) = c.call(0, Method::PATCH, "/v2/apps/lb/web", Some(&json!({"env": {"V": "v2"}}))).await.expect("patch");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the rolling upgrade", Duration::from_secs(90), || async {
        deployed(&c, "/lb/web").await && healthy(&c, "/lb/web").await.len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok4, failed4, why4) = l4.await.expect("l4 load");
    let (ok7, failed7, why7) = l7.await.expect("l7 load");
    assert!(ok4 > 50 && ok7 > 50, "too little load: {ok4} / {ok7}");
    assert_eq!(failed4, 0, "service port: {why4:?}");
    assert_eq!(failed7, 0, "HTTP front: {why7:?}");
    assert_eq!(get(format!("{}/v", front(0)), "web.test").await, (StatusCode::OK, "v2\n".into()));

    // A task killed from outside mid-load: at most the request it was serving fails.
    let victim = healthy(&c, "/lb/web").await[0].clone();
    let (vid, vhost) = (
        victim["id"].as_str().unwrap_or_default().to_string(),
        victim["host"].as_str().unwrap_or_default().to_string(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let l4 = load(format!("http://{}:{port}/ok", c.nodes[0].ip), None, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = c.task_pid(c.node_of_host(&vhost), &vid).expect("pid");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, why) = l4.await.expect("load");
    assert!(ok > 20, "{ok}");
    assert!(failed <= 1, "{failed} failed: {why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_gets_4xx_or_a_closed_connection() {
    let c = Cluster::start(1, &[]).await;
    let (s, v) =
        c.call(0, Method::POST, "/v2/apps", Some(&app("/lb/bad", "bad.test", "b1", "/ok"))).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let port = v["portDefinitions"][0]["port"].as_u64().expect("service port") as u16;
    wait_for("healthy tasks", Duration::from_secs(40), || async { healthy(&c, "/lb/bad").await.len() == 3 }).await;
    let ip = c.nodes[0].ip.clone();
    let talk = |addr: String, bytes: Vec<u8>, half_close: bool| -> String {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        s.write_all(&bytes).expect("write");
        if half_close {
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    let front = format!("{ip}:80");
    assert!(talk(front.clone(), b"NOT HTTP AT ALL\r\n\r\n".to_vec(), false).starts_with("HTTP/1.1 400"));
    let mut big = b"GET / HTTP/1.1\r\nHost: bad.test\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let r = talk(front.clone(), big, false);
    assert!(r.is_empty() || r.lines().next().is_some_and(|l| l.contains(" 431 ")), "{r}");
    // A client that never finishes its headers is cut off.
    let t = std::time::Instant::now();
    assert!(!talk(front.clone(), b"GET / HTTP/1.1\r\nHost: bad".to_vec(), false).starts_with("HTTP/1.1 200"));
    assert!(t.elapsed() < Duration::from_secs(14), "the slow client was not cut off");
    // Half-close through a service port: the answer still comes back whole.
    let r = talk(format!("{ip}:{port}"), b"GET /v HTTP/1.0\r\n\r\n".to_vec(), true);
    assert!(r.starts_with("HTTP/1.0 200") && r.ends_with("b1\n"), "{r}");
    // Others are unaffected, and the front still answers.
    let r = talk(front, b"GET /v HTTP/1.1\r\nHost: bad.test\r\nConnection: close\r\n\r\n".to_vec(), false);
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("b1\n"), "{r}");
    // Every client above is gone: the node holds no socket of theirs open
    // (`ss` lists the process's sockets on the front's and the service
    // port's address; closed ones linger only as TIME-WAIT, owned by no process).
    let pid = c.nodes[0].child.as_ref().map(|ch| ch.id()).expect("node 0 runs");
    let mine = format!("pid={pid},");
    let locals = [format!("{ip}:80"), format!("{ip}:{port}")];
    wait_for("the bad clients' sockets closed on the node", Duration::from_secs(20), || {
        let out = std::process::Command::new("ss").args(["-Htanp"]).output().expect("ss");
        let held: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&mine) && !l.starts_with("LISTEN"))
            .filter(|l| l.split_whitespace().nth(3).is_some_and(|local| locals.iter().any(|a| a == local)))
            .map(str::to_string)
            .collect();
        async move { held.is_empty() }
    })
    .await;
}

/// A task serving HTTP (health), a websocket echo on `$PORT0` and a UDP
/// echo on `$PORT1` that names the task in each reply (python3's stdlib).
const ECHO: &str = r#"
import socket, threading, hashlib, base64, os
tid = os.environ['MESOS_TASK_ID'].encode()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((os.environ['HOST'], int(os.environ['PORT1'])))
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(tid + b' ' + d, a)
threading.Thread(target=udp, daemon=True).start()
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((os.environ['HOST'], int(os.environ['PORT0'])))
t.listen(64)
def serve(c):
    f = c.makefile('rb')
    f.readline()
    hs = {}
    while True:
        l = f.readline().decode().strip()
        if not l:
            break
        k, v = l.split(':', 1)
        hs[k.strip().lower()] = v.strip()
    if hs.get('upgrade', '').lower() != 'websocket':
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n')
        c.close()
        return
    acc = base64.b64encode(hashlib.sha1((hs['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').encode()).digest())
    c.sendall(b'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' + acc + b'\r\n\r\n')
    while True:
        h = f.read(2)
        if len(h) < 2:
            break
        m = f.read(4)
        p = bytes(b ^ m[i % 4] for i, b in enumerate(f.read(h[1] & 127)))
        reply = b'echo: ' + p
        c.sendall(bytes([0x81, len(reply)]) + reply)
    c.close()
while True:
    c, _ = t.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_ports_websockets_groups_and_metrics() {
    let mut c = Cluster::start(2, &[]).await;
    // Node 1 is an edge node: it proxies only apps of group `edge`.
    c.nodes[1].stop();
    c.nodes[1].extra.extend(["--lb-group".to_string(), "edge".to_string()]);
    let seed = c.nodes[0].rpc();
    c.nodes[1].spawn(Some(&seed));
    c.wait_up(1).await;
    let echo = json!({
        "id": "/lb/echo", "cmd": format!("exec python3 -c \"{}\"", ECHO.replace('"', "\\\"")),
        "cpus": 0.1, "mem": 64, "instances": 2,
        "portDefinitions": [{"port": 0, "protocol": "tcp"}, {"port": 0, "protocol": "udp"}],
        "labels": {"HAPROXY_0_VHOST": "ws.test"},
        "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 1,
                          "timeoutSeconds": 1, "gracePeriodSeconds": 15, "maxConsecutiveFailures": 3}]
    });
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&echo)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let udp_port = v["portDefinitions"][1]["port"].as_u64().expect("udp service port") as u16;
    let mut edge = app("/lb/edge", "edge.test", "e1", "/ok");
    edge["instances"] = json!(1);
    edge["labels"]["HAPROXY_GROUP"] = json!("edge");
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&edge)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let edge_port = v["portDefinitions"][0]["port"].as_u64().expect("service port") as u16;
    wait_for("healthy echo tasks", Duration::from_secs(60), || async { healthy(&c, "/lb/echo").await.len() == 2 })
        .await;
    wait_for("a healthy edge task", Duration::from_secs(60), || async { healthy(&c, "/lb/edge").await.len() == 1 })
        .await;
    let ip0 = c.nodes[0].ip.clone();

    // UDP: one client's datagrams all reach one task (affinity), and the
    // replies come from the service port.
    let sock = std::net::UdpSocket::bind(format!("{ip0}:0")).expect("udp socket");
    sock.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let target: std::net::SocketAddr = format!("{ip0}:{udp_port}").parse().expect("addr");
    let mut tasks = BTreeSet::new();
    let mut answered = 0;
    for i in 0..40 {
        sock.send_to(format!("ping {i}").as_bytes(), target).expect("send");
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(from, target, "the reply comes from the service port");
            let reply = String::from_utf8_lossy(&buf[..n]).to_string();
            let (task, rest) = reply.split_once(' ').expect("task and payload");
            assert_eq!(rest, format!("ping {i}"));
            tasks.insert(task.to_string());
            answered += 1;
        }
        if answered >= 10 {
            break;
        }
    }
    assert!(answered >= 10, "UDP answered {answered} of the datagrams");
    assert_eq!(tasks.len(), 1, "one client, one task: {tasks:?}");

    // A websocket through the HTTP front: the handshake and frames pass.
    let mut ws = std::net::TcpStream::connect(format!("{ip0}:80")).expect("connect");
    ws.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    ws.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).expect("handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's own example key and accept value.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 5];
    frame.extend_from_slice(&mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).expect("frame");
    let mut reply = [0u8; 2 + 11];
    ws.read_exact(&mut reply).expect("echo frame");
    assert_eq!(&reply[2..], b"echo: hello");

    // Groups: the grouped app only on the edge node, the others everywhere else.
    let lb0 = c.get(0, "/wharf/v1/lb").await.to_string();
    let lb1 = c.get(1, "/wharf/v1/lb").await.to_string();
    assert!(lb0.contains("/lb/echo") && !lb0.contains("/lb/edge"), "{lb0}");
    assert!(lb1.contains("/lb/edge") && !lb1.contains("/lb/echo"), "{lb1}");
    let http = client();
    let r = http.get(format!("http://{}:{edge_port}/v", c.nodes[1].ip)).send().await.expect("edge node");
    assert_eq!(r.text().await.unwrap_or_default(), "e1\n");
    assert!(http.get(format!("http://{ip0}:{edge_port}/v")).send().await.is_err(), "not proxied on node 0");

    // The LB's series in /metrics.
    let text = c.client.get(format!("{}/metrics", c.nodes[0].addr())).send().await.expect("metrics");
    let text = text.text().await.unwrap_or_default();
    let udp_requests: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("wharf_lb_backend_requests_total{") && l.contains(&format!("frontend=\"udp:{udp_port}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(udp_requests >= 10.0, "{text}");
    assert!(text.contains("wharf_lb_backend_connections_total{frontend=\"http:ws.test/\""), "{text}");
}

/// An HTTP server (python3's stdlib, a thread per request) whose `/slow`
/// answers after 5 s; SIGTERM ends it at once.
const SLOW: &str = r#"
import http.server, os, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == '/slow':
            time.sleep(5)
        body = b'done\n'
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((os.environ['HOST'], int(os.environ['PORT0'])), H).serve_forever()
"#;

/// The agent's log lines about draining before kills, without the colours.
fn drain_lines(c: &Cluster) -> Vec<String> {
    let plain = |l: &str| {
        let mut out = String::new();
        let mut chars = l.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                // Skip to the end of the escape sequence (`ESC [ ... m`).
                for e in chars.by_ref() {
                    if e == 'm' {
                        break;
                    }
                }
            } else {
                out.push(ch);
            }
        }
        out
    };
    (0..c.nodes.len())
        .flat_map(|i| c.log(i).lines().map(plain).collect::<Vec<_>>())
        .filter(|l| l.contains("load balancers drained before the kill"))
        .collect()
}

/// Backends of `app` on node `i`'s LB with something in flight (service
/// ports and virtual hosts).
async fn in_flight(c: &Cluster, i: usize, app: &str) -> u64 {
    let lb = c.get(i, "/wharf/v1/lb").await;
    ["servicePorts", "virtualHosts"]
        .iter()
        .flat_map(|k| lb[*k].as_array().cloned().unwrap_or_default())
        .filter(|s| s["appId"] == app)
        .flat_map(|s| s["backends"].as_array().cloned().unwrap_or_default())
        .map(|b| b["active"].as_u64().unwrap_or_default())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_to_a_task_being_scaled_away_completes() {
    let c = Cluster::start(3, &[]).await;
    let def = json!({
        "id": "/lb/slow", "cmd": "printf '%s' \"$SRV\" > srv.py; exec python3 srv.py",
        "env": {"SRV": SLOW}, "cpus": 0.1, "mem": 64, "instances": 1,
        "taskKillGracePeriodSeconds": 30,
        "labels": {"HAPROXY_0_VHOST": "slow.test"}
    });
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let port = v["portDefinitions"][0]["port"].as_u64().expect("service port") as u16;
    wait_for("the task running", Duration::from_secs(30), || async { c.running(0, "/lb/slow").await.len() == 1 }).await;
    wait_for("the first deployment done", Duration::from_secs(20), || deployed(&c, "/lb/slow")).await;
    let host = c.running(0, "/lb/slow").await[0].1.clone();
    let ran_on = c.node_of_host(&host);
    // Through two other nodes: one service port, one HTTP front.
    let (a, b) = ((ran_on + 1) % 3, (ran_on + 2) % 3);
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(60)).build().expect("client");
    wait_for("the service port on both nodes", Duration::from_secs(20), || async {
        let ok = |url: String, vhost: bool| {
            let mut req = http.get(url);
            if vhost {
                req = req.header("Host", "slow.test");
            }
            async move { req.send().await.is_ok_and(|r| r.status() == StatusCode::OK) }
        };
        ok(format!("http://{}:{port}/ok", c.nodes[a].ip), false).await
            && ok(format!("http://{}:80/ok", c.nodes[b].ip), true).await
    })
    .await;
    let l4 = tokio::spawn(http.get(format!("http://{}:{port}/slow", c.nodes[a].ip)).send());
    let l7 = tokio::spawn(http.get(format!("http://{}:80/slow", c.nodes[b].ip)).header("Host", "slow.test").send());
    wait_for("both requests in flight", Duration::from_secs(10), || async {
        in_flight(&c, a, "/lb/slow").await >= 1 && in_flight(&c, b, "/lb/slow").await >= 1
    })
    .await;
    let (s, v) = c.call(0, Method::PATCH, "/v2/apps/lb/slow", Some(&json!({"instances": 0}))).await.expect("scale");
    assert_eq!(s, StatusCode::OK, "{v}");
    for (name, r) in [("service port", l4), ("HTTP front", l7)] {
        let r = r.await.expect("join").unwrap_or_else(|e| panic!("{name}: the request failed: {e}"));
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        assert_eq!(r.text().await.expect("body"), "done\n", "{name}");
    }
    wait_for("the task gone", Duration::from_secs(40), || async { c.all_tasks(0, "/lb/slow").await == 0 }).await;
    let lines = drain_lines(&c);
    assert!(lines.iter().any(|l| l.contains("drained=true")), "the kill waited for the drain: {lines:?}");
    // A task running is not yet a finished deployment: a scale during one is refused (409).
    wait_for("the scale-down deployment done", Duration::from_secs(20), || deployed(&c, "/lb/slow")).await;

    // Without anything in flight the kill follows at once (the figure is in the log).
    let (s, v) = c.call(0, Method::PATCH, "/v2/apps/lb/slow", Some(&json!({"instances": 1}))).await.expect("scale");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the task running again", Duration::from_secs(30), || async { c.running(0, "/lb/slow").await.len() == 1 })
        .await;
    wait_for("the scale-up deployment done", Duration::from_secs(20), || deployed(&c, "/lb/slow")).await;
    let (s, v) = c.call(0, Method::PATCH, "/v2/apps/lb/slow", Some(&json!({"instances": 0}))).await.expect("scale");
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_for("the task gone again", Duration::from_secs(40), || async { c.all_tasks(0, "/lb/slow").await == 0 }).await;
    for l in drain_lines(&c) {
        eprintln!("{l}");
    }
}
