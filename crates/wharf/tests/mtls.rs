//! Trust between nodes, end to end: real clusters on their own loopback
//! addresses, real `curl` against the RPC port (plain HTTP, no certificate,
//! another cluster's certificate, a revoked one, an expired one), and real
//! `wharf agent --join` processes with missing, wrong, rotated and foreign
//! join tokens, and a captured RPC replayed from outside the cluster.

mod common;

use common::cluster::Cluster;
use common::{wait_for, WHARF};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A node's TLS files.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certs_of(c: &Cluster, i: usize) -> Certs {
    let tls = c.nodes[i].dir.join("data/tls");
    Certs { ca: tls.join("ca.pem"), cert: tls.join("node.pem"), key: tls.join("node-key.pem") }
}

/// What `curl` got from a node's RPC port: its exit code and the HTTP status
/// (`000` when there was no HTTP answer). The server's certificate is checked
/// against `ca` under the name every node certificate carries.
fn curl_rpc(ip: &str, scheme: &str, ca: &Path, client: Option<(&Path, &Path)>) -> (i32, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"]);
    cmd.args(["--resolve", &format!("wharf-node:5050:{ip}"), "--cacert"]).arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    // A task-file read: harmless, and answered by a handler only once the
    // caller got through the handshake and the member check.
    cmd.arg(format!("{scheme}://wharf-node:5050/wharf/v1/tasks/none/files/stdout"));
    let out = cmd.stderr(Stdio::null()).output().expect("curl (apt-get install curl)");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).to_string())
}

fn assert_refused(what: &str, (code, status): (i32, String)) {
    assert!(code != 0 && status == "000", "{what}: curl exit {code}, HTTP {status}: expected a refused handshake");
}

/// The answer of a handler (the task id is not one: 400) proves the caller
/// was let in.
fn assert_let_in(what: &str, (code, status): (i32, String)) {
    assert!(code == 0 && status == "400", "{what}: curl exit {code}, HTTP {status}: expected to be let in");
}

/// Runs `wharf agent` for a new node at `ip` joining through `seed` with
/// `token`; it must end by itself. Returns its exit status, its stderr and
/// its data dir.
fn join_attempt(ip: &str, seed: &str, token: Option<&str>, dir: &Path) -> (std::process::ExitStatus, String) {
    let log = dir.with_extension("log");
    let mut cmd = Command::new(WHARF);
    cmd.arg("agent")
        .arg("--data-dir")
        .arg(dir)
        .args(["--http", &format!("{ip}:8080"), "--rpc", &format!("{ip}:5050"), "--join", seed])
        .args(["--http-lb", "off", "--hostname", ip])
        .env_remove("WHARF_JOIN_TOKEN")
        .env_remove("WHARF_TOKEN")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    if let Some(t) = token {
        cmd.args(["--join-token", t]);
    }
    let mut child = cmd.spawn().expect("spawn");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the joining node did not give up:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// What a refused node keeps: its id and nothing of the cluster (no Raft
/// state, no certificate).
fn assert_learned_nothing(dir: &Path, stderr: &str, secret_names: &[&str]) {
    let mut files: Vec<String> =
        walk(dir).iter().map(|p| p.strip_prefix(dir).expect("under").display().to_string()).collect();
    files.sort();
    assert_eq!(files, vec!["state/node-id".to_string()], "a refused node keeps nothing but its id");
    for name in secret_names {
        assert!(!stderr.contains(name), "the refused node's log names '{name}':\n{stderr}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An address in cluster `c`'s /24 that no node of it uses.
fn spare_ip(c: &Cluster, last: u8) -> String {
    let ip = &c.nodes[0].ip;
    format!("{}.{last}", &ip[..ip.rfind('.').expect("dotted")])
}

fn token_file(c: &Cluster) -> String {
    std::fs::read_to_string(c.nodes[0].dir.join("data/join-token")).expect("join token file").trim().to_string()
}

async fn deploy_marker(c: &Cluster, id: &str) {
    let def = json!({"id": id, "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0});
    let r = c.call(0, Method::POST, "/v2/apps", Some(&def)).await;
    assert!(matches!(r, Some((StatusCode::CREATED, _))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_different_cas_cannot_talk_and_the_rpc_port_takes_members_only() {
    let a = Cluster::start(2, &[]).await;
    let b = Cluster::start(1, &[]).await;
    let (ca_a, ca_b) = (certs_of(&a, 0), certs_of(&b, 0));
    let member = certs_of(&a, 1);
    let ip = a.nodes[0].ip.clone();

    assert_let_in("a member's certificate", curl_rpc(&ip, "https", &ca_a.ca, Some((&member.cert, &member.key))));
    assert_refused(
        "a certificate from another cluster's CA",
        curl_rpc(&ip, "https", &ca_a.ca, Some((&ca_b.cert, &ca_b.key))),
    );
    assert_refused("plain HTTP", curl_rpc(&ip, "http", &ca_a.ca, None));
    // TLS without a certificate reaches only the join exchange.
    let (code, status) = curl_rpc(&ip, "https", &ca_a.ca, None);
    assert!(code == 0 && status == "403", "no certificate: curl exit {code}, HTTP {status}");
    // And the other way round: A's certificate means nothing to B.
    assert_refused(
        "A's certificate at B",
        curl_rpc(&b.nodes[0].ip, "https", &ca_b.ca, Some((&member.cert, &member.key))),
    );
    // A client that checks the server against B's CA does not accept A.
    let (code, status) = curl_rpc(&ip, "https", &ca_b.ca, Some((&ca_b.cert, &ca_b.key)));
    assert!(code != 0 && status == "000", "A's server passed a check against B's CA: {code} {status}");

    // A node holding B's token cannot join A: it refuses A's CA before it
    // sends anything, and says why.
    deploy_marker(&a, "/mtls/only-in-a").await;
    let dir = a.nodes[0].dir.parent().expect("cluster dir").join("foreign");
    let (status, stderr) = join_attempt(&spare_ip(&a, 9), &a.nodes[0].rpc(), Some(&token_file(&b)), &dir);
    assert!(!status.success(), "joined with another cluster's token:\n{stderr}");
    assert!(stderr.contains("belongs to another cluster"), "{stderr}");
    assert_learned_nothing(&dir, &stderr, &["only-in-a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_valid_token_cannot_join_and_learns_nothing() {
    let a = Cluster::start(1, &[]).await;
    deploy_marker(&a, "/mtls/hidden-app").await;
    let seed = a.nodes[0].rpc();
    let base = a.nodes[0].dir.parent().expect("cluster dir").to_path_buf();
    let good = token_file(&a);
    let shown = Command::new(WHARF).args(["token", "show"]).env("WHARF_ADDR", a.nodes[0].addr()).output().expect("cli");
    assert!(shown.status.success());
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), good, "`wharf token show` and the token file agree");

    let (status, stderr) = join_attempt(&spare_ip(&a, 7), &seed, None, &base.join("none"));
    assert!(!status.success() && stderr.contains("--join-token"), "{stderr}");
    assert_learned_nothing(&base.join("none"), &stderr, &["hidden-app"]);

    let wrong = format!("{}-{}", &good[..good.rfind('-').expect("secret")], "0123456789abcdef0123456789abcdef");
    let (status, stderr) = join_attempt(&spare_ip(&a, 7), &seed, Some(&wrong), &base.join("wrong"));
    assert!(!status.success() && stderr.contains("join token is not valid"), "{stderr}");
    assert_learned_nothing(&base.join("wrong"), &stderr, &["hidden-app"]);

    let rotated =
        Command::new(WHARF).args(["token", "rotate"]).env("WHARF_ADDR", a.nodes[0].addr()).output().expect("cli");
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let new = String::from_utf8_lossy(&rotated.stdout).trim().to_string();
    assert_ne!(new, good);
    wait_for("the token file to follow the rotation", Duration::from_secs(10), || async { token_file(&a) == new })
        .await;
    let (status, stderr) = join_attempt(&spare_ip(&a, 7), &seed, Some(&good), &base.join("old"));
    assert!(!status.success() && stderr.contains("join token is not valid"), "{stderr}");
    assert_learned_nothing(&base.join("old"), &stderr, &["hidden-app"]);

    // The current token works: the node joins and sees the app.
    let mut a = a;
    a.nodes.push(common::cluster::ClusterNode {
        ip: spare_ip(&a, 8),
        dir: base.join("n-new"),
        child: None,
        ports: (a.nodes[0].ports.1 + 1, a.nodes[0].ports.1 + 30),
        extra: Vec::new(),
        token: Some(new),
    });
    std::fs::create_dir_all(&a.nodes[1].dir).expect("dir");
    a.nodes[1].spawn(Some(&seed));
    a.wait_up(1).await;
    a.wait_nodes(2).await;
    assert_eq!(a.get(1, "/v2/apps/mtls/hidden-app").await["app"]["id"], "/mtls/hidden-app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_nodes_certificate_is_refused_for_good() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.leader(0).await.expect("leader");
    let victim = (leader + 1) % 3;
    let other = 3 - leader - victim;
    let gone = certs_of(&c, victim);
    let kept = certs_of(&c, other);
    let ip = c.nodes[leader].ip.clone();
    assert_let_in("before removal", curl_rpc(&ip, "https", &kept.ca, Some((&gone.cert, &gone.key))));

    let nodes = c.get(leader, "/wharf/v1/nodes").await;
    let id = nodes["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["address"] == c.nodes[victim].ip.as_str()))
        .and_then(|n| n["id"].as_str().map(str::to_string))
        .expect("victim id");
    c.nodes[victim].stop();
    let r = c.call(leader, Method::DELETE, &format!("/wharf/v1/nodes/{id}"), None).await;
    assert!(matches!(r, Some((StatusCode::OK, _))), "{r:?}");

    for i in [leader, other] {
        let ip = c.nodes[i].ip.clone();
        wait_for("every member to refuse the removed node", Duration::from_secs(15), || async {
            curl_rpc(&ip, "https", &kept.ca, Some((&gone.cert, &gone.key))).1 == "000"
        })
        .await;
        assert_let_in("a member still", curl_rpc(&ip, "https", &kept.ca, Some((&kept.cert, &kept.key))));
    }
    let listed = c.get(leader, "/wharf/v1/nodes").await;
    assert!(listed["nodes"].as_array().is_some_and(|ns| ns.iter().all(|n| n["id"] != id.as_str())), "{listed}");
}

/// A follower's certificate lives 9 s and is renewed every 6 s while a
/// writer sends app writes through it: every acknowledged write is on every
/// node, none failed, the renewed certificate is accepted and the first one,
/// expired, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_certificate_rotates_while_writes_continue_with_none_lost() {
    let c = Cluster::start(3, &["--cert-lifetime", "9"]).await;
    let leader = c.leader(0).await.expect("leader");
    let follower = (leader + 1) % 3;
    let certs = certs_of(&c, follower);
    let first = c.nodes[0].dir.parent().expect("dir").join("first");
    std::fs::create_dir_all(&first).expect("dir");
    // The first certificate and its key, kept to try once expired.
    let (first_cert, first_key) = (first.join("node.pem"), first.join("node-key.pem"));
    std::fs::copy(&certs.cert, &first_cert).expect("copy");
    std::fs::copy(&certs.key, &first_key).expect("copy");
    let first_pem = std::fs::read_to_string(&first_cert).expect("read");
    let first_not_after: Value =
        serde_json::from_str(&std::fs::read_to_string(certs.cert.with_file_name("node.json")).expect("validity"))
            .expect("json");

    let (mut acked, mut failed, mut seen, mut last) = (Vec::new(), Vec::new(), 0, first_pem.clone());
    let mut i = 0u32;
    // Two renewals seen, and the first certificate run out.
    while seen < 2 || now_secs() <= first_not_after["not_after"].as_u64().expect("not_after") {
        let def = json!({"id": format!("/rotate/w{i}"), "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 0});
        match c.call(follower, Method::POST, "/v2/apps", Some(&def)).await {
            Some((StatusCode::CREATED, _)) => acked.push(i),
            other => failed.push((i, other)),
        }
        i += 1;
        let pem = std::fs::read_to_string(&certs.cert).unwrap_or_default();
        if !pem.is_empty() && pem != last {
            seen += 1;
            last = pem;
        }
        assert!(i < 100_000, "no renewal seen");
    }
    assert!(failed.is_empty(), "writes failed during rotation: {failed:?}\n{}", c.log(follower));
    for n in 0..3 {
        wait_for("every acknowledged write on every node", Duration::from_secs(15), || async {
            let apps = c.get(n, "/v2/apps?id=/rotate/").await;
            apps["apps"].as_array().map(Vec::len) == Some(acked.len())
        })
        .await;
    }
    let ip = c.nodes[leader].ip.clone();
    assert_let_in("the renewed certificate", curl_rpc(&ip, "https", &certs.ca, Some((&certs.cert, &certs.key))));
    assert_refused(
        "the first, expired, certificate",
        curl_rpc(&ip, "https", &certs.ca, Some((&first_cert, &first_key))),
    );
    assert!(c.log(follower).contains("renewed this node's certificate"), "{}", c.log(follower));
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Records the first HTTP request sent to it (head and body) and answers it
/// as a leader that could not apply it, so the sender is satisfied.
async fn capture_one(listener: tokio::net::TcpListener) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, _) = listener.accept().await.expect("accept");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the sender closed before its request ended");
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("content-length"))
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            break;
        }
    }
    let answer = br#"{"Failed":"captured"}"#;
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", answer.len());
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(answer).await.expect("write");
    got
}

/// Sends `body` as `POST /raft/propose` to a node's RPC port from `from`,
/// as `curl_rpc` does; returns curl's exit code, the HTTP status and the
/// answer.
fn replay(ip: &str, from: &str, body: &Path, ca: &Path, client: Option<(&Path, &Path)>) -> (i32, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "10", "-w", "\n%{http_code}", "--interface", from]);
    cmd.args(["--resolve", &format!("wharf-node:5050:{ip}"), "--cacert"]).arg(ca);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(["-H", "content-type: application/json", "--data-binary"]).arg(format!("@{}", body.display()));
    cmd.arg("https://wharf-node:5050/raft/propose");
    let out = cmd.stderr(Stdio::null()).output().expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (answer, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (out.status.code().unwrap_or(-1), status.to_string(), answer.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_rpc_replayed_from_an_outside_address_is_refused() {
    let a = Cluster::start(2, &[]).await;
    let b = Cluster::start(1, &[]).await;
    let leader = a.leader(0).await.expect("cluster A has a leader");
    let ip = a.nodes[leader].ip.clone();
    let outside = spare_ip(&a, 9);

    // Capture a forwarded write exactly as a follower's forwarding code
    // (`store::network::forward`) puts it on the wire: a grant of an admin
    // API token, the write an attacker would most like to replay.
    let token = model::ApiToken {
        id: "replayed".into(),
        role: model::Role::Admin,
        name: "captured".into(),
        secret_sha256: "ab".repeat(32),
        created_at: model::UnixMillis(1),
    };
    let recorder = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let recorder_addr = recorder.local_addr().expect("addr").to_string();
    let captured = tokio::spawn(capture_one(recorder));
    let client = trust::RpcClient::plain(None).expect("client");
    let sent = store::network::forward(&client, &recorder_addr, &store::Command::PutApiToken(token)).await;
    assert!(matches!(sent, Ok(store::network::ForwardResult::Failed(_))), "{sent:?}");
    let request = captured.await.expect("capture");
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert!(request.starts_with(b"POST /raft/propose "), "{}", String::from_utf8_lossy(&request));
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("propose.json");
    std::fs::write(&body, &request[head_end..]).expect("write body");

    // The cluster is open (no token yet): the API answers without credentials.
    let open = a.call(leader, Method::GET, "/v2/apps", None).await.map(|(s, _)| s);
    assert_eq!(open, Some(StatusCode::OK));

    let (ca_a, ca_b) = (certs_of(&a, 0), certs_of(&b, 0));
    // No client certificate: the handshake is let through for the join
    // exchange only; the RPC itself is refused.
    let (code, status, answer) = replay(&ip, &outside, &body, &ca_a.ca, None);
    assert!(code == 0 && status == "403", "no certificate: curl exit {code}, HTTP {status}: {answer}");
    // Another cluster's certificate: the handshake fails.
    let (code, status, answer) = replay(&ip, &outside, &body, &ca_a.ca, Some((&ca_b.cert, &ca_b.key)));
    assert!(code != 0 && status == "000", "B's certificate: curl exit {code}, HTTP {status}: {answer}");
    // Nothing was applied: no node asks for credentials.
    for i in 0..2 {
        let open = a.call(i, Method::GET, "/v2/apps", None).await.map(|(s, _)| s);
        assert_eq!(open, Some(StatusCode::OK), "node {i} after the replays");
    }

    // The same bytes from a member are a working write (so the replays were
    // refused for who sent them, not for what they carried): the token now
    // exists and the API asks for credentials.
    let member = certs_of(&a, 1 - leader);
    let (code, status, answer) = replay(&ip, &outside, &body, &ca_a.ca, Some((&member.cert, &member.key)));
    assert!(code == 0 && status == "200" && answer.contains("Applied"), "member: {code} {status}: {answer}");
    let closed = a.call(leader, Method::GET, "/v2/apps", None).await.map(|(s, _)| s);
    assert_eq!(closed, Some(StatusCode::UNAUTHORIZED));
}
