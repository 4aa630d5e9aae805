//! Readiness checks (Marathon's `readinessChecks`), run by the agent that
//! hosts the task.
//!
//! A task of the app's current version is checked until every check has
//! passed once; then the runner stops for good (the store keeps
//! `Task.ready`). Only transitions are reported: the first round of
//! results, a change of what the checks see (verdict or HTTP status), and
//! the pass, so the scheduler can hold a deployment and `/v2/deployments`
//! can show why without a Raft write per check.

use model::{AppSpec, HttpResponse, ReadinessCheck, ReadinessProtocol, ReadinessReport, ReadinessResult, Task, TaskId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bodies kept for `preserveLastResponse` are cut to this many bytes.
const MAX_BODY: usize = 4096;

/// What a runner needs about one running task.
#[derive(Debug, Clone)]
pub struct ReadyTarget {
    pub task_id: TaskId,
    pub host: String,
    /// The task's host ports by port name.
    pub ports: HashMap<String, u16>,
    pub checks: Vec<ReadinessCheck>,
}

impl ReadyTarget {
    pub fn of(task: &Task, app: &AppSpec) -> ReadyTarget {
        let ports = app
            .ports
            .iter()
            .zip(&task.ports)
            .filter_map(|(p, host_port)| p.name.clone().map(|n| (n, *host_port)))
            .collect();
        ReadyTarget { task_id: task.id.clone(), host: task.host.clone(), ports, checks: app.readiness_checks.clone() }
    }
}

fn now() -> model::UnixMillis {
    crate::sandbox::now()
}

async fn run_check(check: &ReadinessCheck, t: &ReadyTarget, client: &reqwest::Client) -> ReadinessResult {
    let result = |ready, last_response| ReadinessResult { name: check.name.clone(), ready, last_response };
    let Some(port) = t.ports.get(&check.port_name) else {
        return result(false, None);
    };
    let scheme = if check.protocol == ReadinessProtocol::Https { "https" } else { "http" };
    let url = format!("{scheme}://{}:{port}{}", t.host, check.path);
    let timeout = Duration::from_secs_f64(check.timeout_seconds.max(0.1));
    let Ok(resp) = client.get(&url).timeout(timeout).send().await else {
        return result(false, None);
    };
    let status = resp.status().as_u16();
    let ready = check.http_status_codes_for_ready.contains(&status);
    if !check.preserve_last_response {
        return result(ready, None);
    }
    let content_type =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.bytes().await.map(|b| String::from_utf8_lossy(&b[..b.len().min(MAX_BODY)]).into_owned());
    result(ready, Some(HttpResponse { status, content_type, body: body.unwrap_or_default() }))
}

/// Checks until every check has passed once, reporting transitions (see the
/// module doc). Runs until done or aborted.
pub async fn run_readiness(t: ReadyTarget, client: reqwest::Client, reports: mpsc::UnboundedSender<ReadinessReport>) {
    if t.checks.is_empty() {
        return;
    }
    let interval = t.checks.iter().map(|c| c.interval_seconds).fold(f64::INFINITY, f64::min).clamp(0.1, 3600.0);
    let mut results: Vec<Option<ReadinessResult>> = vec![None; t.checks.len()];
    // What was last reported: each check's verdict and HTTP status.
    let mut reported: Option<Vec<(bool, Option<u16>)>> = None;
    loop {
        for (i, check) in t.checks.iter().enumerate() {
            if !results[i].as_ref().is_some_and(|r| r.ready) {
                results[i] = Some(run_check(check, &t, &client).await);
            }
        }
        let all: Vec<ReadinessResult> = results.iter().flatten().cloned().collect();
        let ready = all.iter().all(|r| r.ready);
        let key: Vec<(bool, Option<u16>)> =
            all.iter().map(|r| (r.ready, r.last_response.as_ref().map(|l| l.status))).collect();
        if ready || reported.as_ref() != Some(&key) {
            reported = Some(key);
            let report = ReadinessReport { task_id: t.task_id.clone(), ready, results: all, at: now() };
            if reports.send(report).is_err() || ready {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
    }
}

/// The readiness runners of tasks running here.
pub struct Runners {
    running: HashMap<TaskId, tokio::task::AbortHandle>,
    tx: mpsc::UnboundedSender<ReadinessReport>,
    client: reqwest::Client,
}

impl Runners {
    pub fn new(tx: mpsc::UnboundedSender<ReadinessReport>, client: reqwest::Client) -> Runners {
        Runners { running: HashMap::new(), tx, client }
    }

    /// Starts checking `task` unless it is being checked already.
    pub fn ensure(&mut self, task: &Task, app: &AppSpec) {
        if self.running.contains_key(&task.id) {
            return;
        }
        let h = tokio::spawn(run_readiness(ReadyTarget::of(task, app), self.client.clone(), self.tx.clone()));
        self.running.insert(task.id.clone(), h.abort_handle());
    }

    /// Stops the runners of tasks not in `keep`.
    pub fn retain(&mut self, keep: &HashSet<TaskId>) {
        self.running.retain(|id, h| {
            let k = keep.contains(id);
            if !k {
                h.abort();
            }
            k
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers 503 to the first `fail` requests, then 200 with a JSON body.
    async fn server(fail: usize) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let status = if n < fail { 503 } else { 200 };
                n += 1;
                let body = "{\"up\":true}";
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        port
    }

    fn target(port: u16) -> ReadyTarget {
        ReadyTarget {
            task_id: TaskId::new(&model::AppId::parse("/r").expect("id"), uuid::Uuid::nil(), 1),
            host: "127.0.0.1".into(),
            ports: [("http".to_string(), port)].into(),
            checks: vec![ReadinessCheck {
                name: "ready".into(),
                protocol: ReadinessProtocol::Http,
                path: "/".into(),
                port_name: "http".into(),
                interval_seconds: 0.1,
                timeout_seconds: 1.0,
                http_status_codes_for_ready: vec![200],
                preserve_last_response: true,
            }],
        }
    }

    #[tokio::test]
    async fn reports_the_first_result_then_the_pass_and_stops() {
        let port = server(3).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = tokio::spawn(run_readiness(target(port), crate::health::check_client().expect("client"), tx));
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten().expect("first result");
        assert!(!first.ready);
        assert_eq!(first.results[0].last_response.as_ref().map(|r| r.status), Some(503));
        let pass = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.ok().flatten().expect("pass");
        assert!(pass.ready);
        let last = pass.results[0].last_response.clone().expect("kept");
        assert_eq!(
            (last.status, last.content_type.as_str(), last.body.as_str()),
            (200, "application/json", "{\"up\":true}")
        );
        tokio::time::timeout(Duration::from_secs(1), h).await.expect("runner ends").expect("no panic");
        assert!(rx.recv().await.is_none(), "nothing after the pass");
    }
}
