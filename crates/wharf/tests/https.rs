//! HTTPS for the HTTP API: a real node with `--https-cert`/`--https-key`
//! (a certificate made by `openssl`) answers over TLS only, still asks for
//! credentials, and the CLI reaches it with `--cacert`. A key that does not
//! fit, or is not PEM, stops the node with a message naming the flag.

mod common;

use common::{basic_auth, free_port, WHARF};
use reqwest::StatusCode;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl (scripts/test installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `<name>-ca.pem` (a CA) and `<name>.pem`/`<name>.key`, a server
/// certificate for 127.0.0.1 it signed, as an operator would make them.
fn make_cert(dir: &Path, name: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let (ca_key, ca) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let mut args = vec!["req", "-x509", "-days", "2", "-subj", "/CN=wharf-test-ca", "-keyout", &ca_key, "-out", &ca];
    args.extend(ec);
    openssl(&args, dir);
    let mut args = vec!["req", "-new", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr];
    args.extend(ec);
    openssl(&args, dir);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").expect("ext");
    let args = ["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-days", "2"];
    let mut args = args.to_vec();
    args.extend(["-extfile", "ext.cnf", "-out", &pem]);
    openssl(&args, dir);
}

fn agent(dir: &Path, http: u16, cert: &Path, key: &Path) -> Command {
    let mut c = Command::new(WHARF);
    c.arg("agent")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http", &format!("127.0.0.1:{http}"), "--rpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--dns", "off", "--http-lb", "off", "--http-credentials", "admin:pw"])
        .arg("--https-cert")
        .arg(cert)
        .arg("--https-key")
        .arg(key);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_cert(dir.path(), "node");
    let (cert, key) = (dir.path().join("node.pem"), dir.path().join("node.key"));
    let http = free_port();
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let _node = Agent(agent(dir.path(), http, &cert, &key).stdout(Stdio::null()).stderr(log).spawn().expect("spawn"));
    let node_log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    let ca_pem = dir.path().join("node-ca.pem");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_pem).expect("pem")).expect("cert");
    let tls =
        reqwest::Client::builder().add_root_certificate(ca).timeout(Duration::from_secs(10)).build().expect("client");
    let base = format!("https://127.0.0.1:{http}");
    let t = Instant::now();
    loop {
        match tls.get(format!("{base}/ping")).send().await {
            Ok(r) => {
                assert_eq!(r.status(), StatusCode::OK);
                break;
            }
            Err(e) => assert!(t.elapsed() < Duration::from_secs(30), "no HTTPS answer ({e:?}):\n{}", node_log()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = tls.get(format!("{base}/v2/info")).send().await.expect("info");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "still asks for credentials");
    let r = tls
        .get(format!("{base}/v2/info"))
        .header("authorization", basic_auth("admin", "pw"))
        .send()
        .await
        .expect("info");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-marathon-leader"], format!("https://127.0.0.1:{http}").as_str());
    assert_eq!(r.json::<serde_json::Value>().await.expect("json")["name"], "marathon");

    // Plain HTTP gets no answer from the API, and a client that does not
    // trust the certificate refuses it.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{http}/ping")).send().await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != StatusCode::OK));
    let untrusted = reqwest::Client::new().get(format!("{base}/ping")).send().await;
    assert!(untrusted.is_err(), "a certificate from no known CA is refused");

    let addr = format!("https://admin:pw@127.0.0.1:{http}");
    let out = Command::new(WHARF)
        .env("WHARF_ADDR", &addr)
        .arg("--cacert")
        .arg(&ca_pem)
        .args(["node", "ls"])
        .output()
        .expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(WHARF)
        .env("WHARF_ADDR", &addr)
        .env_remove("WHARF_CACERT")
        .args(["node", "ls"])
        .output()
        .expect("cli");
    assert!(!out.status.success(), "without --cacert the self-signed certificate is refused");
}

#[test]
fn a_key_that_does_not_fit_stops_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_cert(dir.path(), "a");
    make_cert(dir.path(), "b");
    let out =
        agent(dir.path(), free_port(), &dir.path().join("a.pem"), &dir.path().join("b.key")).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--https-cert/--https-key"), "{err}");
    std::fs::write(dir.path().join("junk.key"), "not a key").expect("write");
    let out =
        agent(dir.path(), free_port(), &dir.path().join("a.pem"), &dir.path().join("junk.key")).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--https-key: cannot read a PEM private key"), "{err}");
}
