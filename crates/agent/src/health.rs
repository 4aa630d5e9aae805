//! Health checks, run by the agent that hosts the task (Marathon's
//! leader-run checks overloaded its leader at scale).
//!
//! One checker per task runs each of the app's checks on its own interval
//! (HTTP via reqwest, TCP connect, COMMAND via `sh -c` in the sandbox), and
//! combines the results: healthy when every check's latest result passed.
//! Only a change of that verdict (or the first one) is reported, so steady
//! health costs no Raft traffic. Failures inside `gracePeriodSeconds` are
//! ignored until the task has been healthy once. A check that fails
//! `maxConsecutiveFailures` times in a row (0 = never) gets the task killed;
//! the scheduler replaces it.

use model::{HealthCheck, HealthProtocol, HealthReport, TaskId, UnixMillis};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// Everything a checker needs about one running task.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    pub task_id: TaskId,
    pub host: String,
    pub ports: Vec<u16>,
    pub checks: Vec<HealthCheck>,
    /// When the task started; the grace period counts from here.
    pub started_at: UnixMillis,
    pub env: BTreeMap<String, String>,
    pub sandbox: PathBuf,
}

/// What the checker asks of the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckerEvent {
    Report(HealthReport),
    /// Kill the task: it failed a check too often.
    Kill {
        task_id: TaskId,
        cause: String,
    },
}

use crate::sandbox::now;

/// The HTTP client for health and readiness checks could not be built (its
/// TLS backend failed to start). A default client would check HTTPS tasks
/// with a different certificate policy, so the agent does not start instead.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for health and readiness checks")]
pub struct CheckClientError(#[source] reqwest::Error);

/// The HTTP(S) client for checks, built once per agent. Like Marathon, HTTPS
/// checks do not verify the task's certificate: tasks commonly serve
/// self-signed ones, and the check asks "does it answer", not "is it who it
/// claims".
pub fn check_client() -> Result<reqwest::Client, CheckClientError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(CheckClientError)
}

/// Outcome of one check run: `Ok` passed, `Err(cause)` failed, `None`
/// no verdict (an ignored 1xx answer).
async fn run_check(check: &HealthCheck, t: &CheckTarget, client: &reqwest::Client) -> Option<Result<(), String>> {
    let timeout = Duration::from_secs_f64(check.timeout_seconds.max(0.1));
    let port = check.port.or_else(|| t.ports.get(check.port_index.unwrap_or(0)).copied());
    match check.protocol {
        HealthProtocol::Http | HealthProtocol::Https => {
            let Some(port) = port else { return Some(Err("no port to check".into())) };
            let scheme = if check.protocol == HealthProtocol::Https { "https" } else { "http" };
            let path = check.path.as_deref().unwrap_or("/");
            let url = format!("{scheme}://{}:{port}{path}", t.host);
            match client.get(&url).timeout(timeout).send().await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    if (100..200).contains(&code) && check.ignore_http1xx {
                        None
                    } else if (200..400).contains(&code) {
                        Some(Ok(()))
                    } else {
                        Some(Err(format!("HTTP {code} from {url}")))
                    }
                }
                Err(e) => Some(Err(format!("{url}: {e}"))),
            }
        }
        HealthProtocol::Tcp => {
            let Some(port) = port else { return Some(Err("no port to check".into())) };
            let addr = format!("{}:{port}", t.host);
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => Some(Ok(())),
                Ok(Err(e)) => Some(Err(format!("TCP {addr}: {e}"))),
                Err(_) => Some(Err(format!("TCP {addr}: timed out"))),
            }
        }
        HealthProtocol::Command => {
            let Some(cmd) = check.command.as_deref() else { return Some(Err("no command".into())) };
            let mut child = match tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .env_clear()
                .envs(&t.env)
                .current_dir(&t.sandbox)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(c) => c,
                Err(e) => return Some(Err(format!("command: {e}"))),
            };
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(s)) if s.success() => Some(Ok(())),
                Ok(Ok(s)) => Some(Err(format!("command exited with {s}"))),
                Ok(Err(e)) => Some(Err(format!("command: {e}"))),
                Err(_) => Some(Err("command timed out".into())),
            }
        }
    }
}

/// Per-check bookkeeping and the combined verdict.
struct Verdicts {
    latest: Vec<Option<bool>>,
    failures: Vec<u32>,
    reported: Option<bool>,
    ever_healthy: bool,
}

/// Runs until aborted (the agent aborts it when the task stops running).
pub async fn run_checker(t: CheckTarget, client: reqwest::Client, events: mpsc::UnboundedSender<CheckerEvent>) {
    if t.checks.is_empty() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Option<Result<(), String>>)>();
    let mut loops = tokio::task::JoinSet::new();
    for (i, check) in t.checks.iter().cloned().enumerate() {
        let (t, tx, client) = (t.clone(), tx.clone(), client.clone());
        loops.spawn(async move {
            let interval = Duration::from_secs_f64(check.interval_seconds.max(0.1));
            if check.mesos_side {
                tokio::time::sleep(Duration::from_secs_f64(check.delay_seconds.max(0.0))).await;
            }
            loop {
                let res = run_check(&check, &t, &client).await;
                if tx.send((i, res)).is_err() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
    }
    drop(tx);
    let n = t.checks.len();
    let mut v = Verdicts { latest: vec![None; n], failures: vec![0; n], reported: None, ever_healthy: false };
    while let Some((i, res)) = rx.recv().await {
        let at = now();
        let check = &t.checks[i];
        let in_grace = !v.ever_healthy && at < t.started_at.plus_secs_f64(check.grace_period_seconds);
        let mut cause = None;
        match res {
            None => continue,
            Some(Ok(())) => {
                v.latest[i] = Some(true);
                v.failures[i] = 0;
            }
            Some(Err(_)) if in_grace => continue,
            Some(Err(e)) => {
                v.latest[i] = Some(false);
                v.failures[i] += 1;
                cause = Some(e);
            }
        }
        let alive = if v.latest.contains(&Some(false)) {
            Some(false)
        } else if v.latest.iter().all(|x| *x == Some(true)) {
            Some(true)
        } else {
            None
        };
        if alive == Some(true) {
            v.ever_healthy = true;
        }
        if let Some(alive) = alive {
            if v.reported != Some(alive) {
                v.reported = Some(alive);
                let report = HealthReport {
                    task_id: t.task_id.clone(),
                    alive,
                    consecutive_failures: v.failures.iter().copied().max().unwrap_or(0),
                    at,
                    cause: cause.clone(),
                };
                if events.send(CheckerEvent::Report(report)).is_err() {
                    return;
                }
            }
        }
        let max = check.max_consecutive_failures;
        if max > 0 && v.failures[i] >= max {
            let cause = format!("{} consecutive health check failures: {}", v.failures[i], cause.unwrap_or_default());
            let _ = events.send(CheckerEvent::Kill { task_id: t.task_id.clone(), cause });
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn check(protocol: HealthProtocol, max: u32) -> HealthCheck {
        HealthCheck {
            protocol,
            path: Some("/".into()),
            port_index: Some(0),
            port: None,
            command: None,
            grace_period_seconds: 0.0,
            interval_seconds: 0.1,
            timeout_seconds: 1.0,
            max_consecutive_failures: max,
            delay_seconds: 0.0,
            ignore_http1xx: false,
            mesos_side: false,
        }
    }

    fn client() -> reqwest::Client {
        check_client().expect("check client")
    }

    fn target(port: u16, checks: Vec<HealthCheck>) -> CheckTarget {
        CheckTarget {
            task_id: TaskId::new(&model::AppId::parse("/t").expect("id"), uuid_nil(), 1),
            host: "127.0.0.1".into(),
            ports: vec![port],
            checks,
            started_at: now(),
            env: BTreeMap::new(),
            sandbox: std::env::temp_dir(),
        }
    }

    fn uuid_nil() -> uuid::Uuid {
        uuid::Uuid::nil()
    }

    /// A tiny HTTP server answering `status` to everything, on a real socket.
    async fn server(status: u16) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn healthy_http_is_reported_once() {
        let port = server(200).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = tokio::spawn(run_checker(target(port, vec![check(HealthProtocol::Http, 3)]), client(), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("report");
        assert!(matches!(first, Some(CheckerEvent::Report(ref r)) if r.alive), "{first:?}");
        // Steady health: nothing more is reported.
        assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err());
        h.abort();
    }

    #[tokio::test]
    async fn failing_checks_report_then_ask_for_a_kill() {
        let port = server(503).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(run_checker(target(port, vec![check(HealthProtocol::Http, 3)]), client(), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("report");
        match first {
            Some(CheckerEvent::Report(r)) => {
                assert!(!r.alive);
                assert!(r.cause.is_some_and(|c| c.contains("503")));
            }
            other => panic!("{other:?}"),
        }
        let kill = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("kill");
        assert!(
            matches!(kill, Some(CheckerEvent::Kill { ref cause, .. }) if cause.starts_with("3 consecutive")),
            "{kill:?}"
        );
    }

    #[tokio::test]
    async fn tcp_and_command_checks() {
        let port = server(200).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut cmd = check(HealthProtocol::Command, 0);
        cmd.command = Some("test -d /".into());
        let h = tokio::spawn(run_checker(target(port, vec![check(HealthProtocol::Tcp, 0), cmd]), client(), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("report");
        assert!(matches!(first, Some(CheckerEvent::Report(ref r)) if r.alive), "{first:?}");
        h.abort();

        // Nothing listens: TCP fails, but with maxConsecutiveFailures 0 it is never killed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead = closed.local_addr().expect("addr").port();
        drop(closed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = tokio::spawn(run_checker(target(dead, vec![check(HealthProtocol::Tcp, 0)]), client(), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("report");
        assert!(matches!(first, Some(CheckerEvent::Report(ref r)) if !r.alive), "{first:?}");
        assert!(tokio::time::timeout(Duration::from_millis(600), rx.recv()).await.is_err(), "no kill");
        h.abort();
    }

    #[tokio::test]
    async fn mesos_side_checks_wait_their_delay() {
        let mut c = check(HealthProtocol::Command, 0);
        c.command = Some("true".into());
        c.mesos_side = true;
        c.delay_seconds = 0.8;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = tokio::spawn(run_checker(target(1, vec![c]), client(), tx));
        assert!(
            tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err(),
            "no check before the delay"
        );
        let first = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.expect("report");
        assert!(matches!(first, Some(CheckerEvent::Report(ref r)) if r.alive), "{first:?}");
        h.abort();
    }

    #[tokio::test]
    async fn failures_in_the_grace_period_are_ignored() {
        let port = server(500).await;
        let mut c = check(HealthProtocol::Http, 1);
        c.grace_period_seconds = 60.0;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = tokio::spawn(run_checker(target(port, vec![c]), client(), tx));
        assert!(tokio::time::timeout(Duration::from_millis(700), rx.recv()).await.is_err());
        h.abort();
    }
}

#[cfg(test)]
mod https_tests {
    use super::*;

    fn client() -> reqwest::Client {
        check_client().expect("check client")
    }

    /// A real HTTPS server (python3's ssl with a self-signed certificate
    /// made by openssl) passes an HTTPS check.
    #[tokio::test]
    async fn https_check_passes_against_a_self_signed_server() {
        let dir = tempfile_dir();
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let script = format!(
            "import http.server, ssl\ns = http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)\n\
             c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain('{0}/cert.pem', '{0}/key.pem')\n\
             s.socket = c.wrap_socket(s.socket, server_side=True)\ns.serve_forever()\n",
            dir.display()
        );
        let mut server = std::process::Command::new("python3")
            .args(["-c", &script])
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let mut check = HealthCheck {
            protocol: HealthProtocol::Https,
            path: Some("/".into()),
            port_index: Some(0),
            port: None,
            command: None,
            grace_period_seconds: 30.0,
            interval_seconds: 0.2,
            timeout_seconds: 1.0,
            max_consecutive_failures: 0,
            delay_seconds: 0.0,
            ignore_http1xx: false,
            mesos_side: false,
        };
        check.port = Some(port);
        let target = CheckTarget {
            task_id: TaskId::new(&model::AppId::parse("/tls").expect("id"), uuid::Uuid::nil(), 1),
            host: "127.0.0.1".into(),
            ports: vec![port],
            checks: vec![check],
            started_at: now(),
            env: BTreeMap::new(),
            sandbox: dir.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = tokio::spawn(run_checker(target, client(), tx));
        let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        h.abort();
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(first, Ok(Some(CheckerEvent::Report(ref r))) if r.alive), "{first:?}");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wharf-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }
}
