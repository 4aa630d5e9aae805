//! `wharf logs [-f] [--tail N] TASK_ID` and `wharf logs [-f] --app ID`:
//! streams from `/wharf/v1/tasks/{id}/logs` (any node passes it on to the
//! node that runs the task).

use super::normalise;
use crate::client::Client;
use futures::StreamExt;
use reqwest::Method;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use tokio::sync::mpsc;

#[derive(Clone, Copy)]
pub struct LogArgs {
    pub follow: bool,
    pub stderr: bool,
    pub tail: Option<usize>,
}

fn logs_path(task: &str, a: LogArgs) -> String {
    let mut p = format!(
        "/wharf/v1/tasks/{task}/logs?stream={}&follow={}",
        if a.stderr { "stderr" } else { "stdout" },
        a.follow
    );
    if let Some(n) = a.tail {
        p.push_str(&format!("&tail={n}"));
    }
    p
}

/// One task's output, copied to stdout as it arrives.
pub async fn task(c: &Client, task: &str, a: LogArgs) -> anyhow::Result<()> {
    let mut body = c.stream(&logs_path(task, a)).await?.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("the log stream of {task} broke off: {e}"))?;
        let mut out = std::io::stdout().lock();
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(())
}

/// Every task of the app, each complete line prefixed with its instance;
/// with `follow`, tasks that start later (seen on `/v2/events`) too.
pub async fn app(c: &Client, app: &str, a: LogArgs) -> anyhow::Result<()> {
    let app = normalise(app);
    // Subscribe before listing, so a task that starts in between is seen.
    let mut events = if a.follow { Some(c.events().await?) } else { None };
    let v = c.ok(Method::GET, &format!("/v2/apps{app}/tasks"), None).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<bytes::Bytes>)>();
    let mut started: HashSet<String> = HashSet::new();
    let start = |id: &str, started: &mut HashSet<String>| {
        if started.insert(id.to_string()) {
            let (c, id, tx) = (c.clone(), id.to_string(), tx.clone());
            tokio::spawn(async move {
                if let Ok(resp) = c.stream(&logs_path(&id, a)).await {
                    let mut body = resp.bytes_stream();
                    while let Some(Ok(chunk)) = body.next().await {
                        let _ = tx.send((id.clone(), Some(chunk)));
                    }
                }
                let _ = tx.send((id, None));
            });
        }
    };
    for t in v["tasks"].as_array().cloned().unwrap_or_default() {
        if let Some(id) = t["id"].as_str() {
            start(id, &mut started);
        }
    }
    let mut partial: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut open = started.len();
    if open == 0 && events.is_none() {
        return Ok(()); // no task, and not waiting for one
    }
    loop {
        let next_event = async {
            match events.as_mut() {
                Some(e) => e.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some((id, chunk)) = msg else { break };
                let buf = partial.entry(id.clone()).or_default();
                match chunk {
                    Some(bytes) => {
                        buf.extend_from_slice(&bytes);
                        let mut out = std::io::stdout().lock();
                        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=end).collect();
                            write!(out, "{} | ", instance_label(&id))?;
                            out.write_all(&line)?;
                        }
                        out.flush()?;
                    }
                    None => {
                        if !buf.is_empty() {
                            let mut out = std::io::stdout().lock();
                            write!(out, "{} | ", instance_label(&id))?;
                            out.write_all(buf)?;
                            writeln!(out)?;
                            buf.clear();
                        }
                        open -= 1;
                        if open == 0 && events.is_none() {
                            break;
                        }
                    }
                }
            }
            ev = next_event => {
                match ev? {
                    Some((kind, e)) if kind == "status_update_event" && e["appId"].as_str() == Some(&app) => {
                        let running = matches!(e["taskStatus"].as_str(), Some("TASK_RUNNING" | "TASK_STARTING"));
                        if let (true, Some(id)) = (running, e["taskId"].as_str()) {
                            let before = started.len();
                            start(id, &mut started);
                            open += started.len() - before;
                        }
                    }
                    Some(_) => {}
                    None => anyhow::bail!("the node closed the event stream; run the command again to keep following"),
                }
            }
        }
    }
    Ok(())
}

/// `instance-1a2b3c4d` from a Marathon task id: short, and unique enough to
/// tell an app's tasks apart.
fn instance_label(task_id: &str) -> String {
    match task_id.split_once(".instance-") {
        Some((_, rest)) => format!("instance-{}", rest.chars().take(8).collect::<String>()),
        None => task_id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_labels_are_short() {
        assert_eq!(
            super::instance_label("web.instance-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d._app.1"),
            "instance-1a2b3c4d"
        );
        assert_eq!(super::instance_label("odd-id"), "odd-id");
    }
}
