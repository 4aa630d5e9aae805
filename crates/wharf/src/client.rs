//! The CLI's side of the HTTP API: requests, readable errors (naming the
//! field Marathon's validation complained about), tables and progress.

use crate::cli::AppCommand;
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(addr: &str) -> anyhow::Result<Client> {
        Client::with_auth(addr, None, None)
    }

    /// A client that sends `token` as a bearer token, or the user and
    /// password in `addr` (`http://user:pass@host:port`) as HTTP Basic, and
    /// trusts `cacert` (PEM) for `https://` addresses.
    pub fn with_auth(addr: &str, token: Option<&str>, cacert: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let mut url = reqwest::Url::parse(addr).with_context(|| format!("--addr: '{addr}' is not a URL"))?;
        let basic = (!url.username().is_empty()).then(|| {
            let user = percent_decode(url.username());
            let pass = url.password().map(percent_decode).unwrap_or_default();
            format!("{user}:{pass}")
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let base = url.as_str().trim_end_matches('/').to_string();
        let auth = match (token, basic) {
            (Some(t), _) => Some(format!("Bearer {}", t.trim())),
            (None, Some(b)) => Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(b))),
            (None, None) => None,
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(a) = auth {
            let mut v = reqwest::header::HeaderValue::from_str(&a)
                .context("the token or password has characters HTTP cannot carry")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30)).default_headers(headers);
        if let Some(path) = cacert {
            let pem = std::fs::read(path).with_context(|| format!("--cacert: cannot read {}", path.display()))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("--cacert: {} is not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(ca);
        }
        Ok(Client { base, http: builder.build()? })
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach Wharf at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// Like `call`, but a non-2xx answer becomes an error that says why.
    pub async fn ok(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(api_error(status, &v))
        }
    }

    pub async fn get_bytes(&self, path: &str) -> anyhow::Result<(StatusCode, Option<u64>, Vec<u8>)> {
        let resp = self.http.get(format!("{}{}", self.base, path)).send().await?;
        let status = resp.status();
        let next = resp.headers().get("x-wharf-offset").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        Ok((status, next, resp.bytes().await?.to_vec()))
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// `422: /cpus: must be at least 0.001` — one line per failed field.
pub fn api_error(status: StatusCode, v: &Value) -> anyhow::Error {
    let msg = v.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string());
    let mut lines = vec![format!("{} ({})", msg, status.as_u16())];
    if let Some(details) = v.get("details").and_then(Value::as_array) {
        for d in details {
            let path = d.get("path").and_then(Value::as_str).unwrap_or("/");
            let errors: Vec<&str> = d
                .get("errors")
                .and_then(Value::as_array)
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            lines.push(format!("  field {path}: {}", errors.join("; ")));
        }
    }
    if let Some(deps) = v.get("deployments").and_then(Value::as_array) {
        for d in deps {
            lines.push(format!("  held by deployment {}", d.get("id").and_then(Value::as_str).unwrap_or("?")));
        }
    }
    anyhow!(lines.join("\n"))
}

fn app_path(id: &str) -> String {
    format!("/v2/apps/{}", id.trim_start_matches('/'))
}

fn force_q(force: bool) -> &'static str {
    if force {
        "?force=true"
    } else {
        ""
    }
}

pub async fn app(c: &Client, cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Deploy { file, force, timeout } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let def: Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", file.display()))?;
            let id = def
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{}: field \"id\" is missing", file.display()))?
                .to_string();
            let exists = c.call(Method::GET, &app_path(&id), None).await?.0.is_success();
            let deployment = if exists {
                let v = c.ok(Method::PUT, &format!("{}{}", app_path(&id), force_q(force)), Some(&def)).await?;
                v.get("deploymentId").and_then(Value::as_str).map(str::to_string)
            } else {
                let v = c.ok(Method::POST, &format!("/v2/apps{}", force_q(force)), Some(&def)).await?;
                v.pointer("/deployments/0/id").and_then(Value::as_str).map(str::to_string)
            };
            let id = normalise(&id);
            match deployment {
                Some(d) => wait_deployment(c, &id, &d, Duration::from_secs(timeout)).await,
                None => {
                    println!("{id} updated");
                    Ok(())
                }
            }
        }
        AppCommand::Ls => {
            let v = c.ok(Method::GET, "/v2/apps", None).await?;
            println!("{:<32} {:>9} {:>7} {:>6} {:>7}  CMD", "ID", "INSTANCES", "RUNNING", "CPUS", "MEM");
            for a in v.get("apps").and_then(Value::as_array).cloned().unwrap_or_default() {
                let cmd = a
                    .get("cmd")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| {
                        a.get("args")
                            .and_then(Value::as_array)
                            .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
                    })
                    .unwrap_or_default();
                println!(
                    "{:<32} {:>9} {:>7} {:>6} {:>7}  {}",
                    a["id"].as_str().unwrap_or("?"),
                    a["instances"],
                    a["tasksRunning"],
                    a["cpus"],
                    a["mem"],
                    cmd
                );
            }
            Ok(())
        }
        AppCommand::Scale { id, instances, force } => {
            let v = c
                .ok(
                    Method::PUT,
                    &format!("{}{}", app_path(&id), force_q(force)),
                    Some(&json!({"instances": instances})),
                )
                .await?;
            let d = v.get("deploymentId").and_then(Value::as_str).unwrap_or_default().to_string();
            wait_deployment(c, &normalise(&id), &d, Duration::from_secs(300)).await
        }
        AppCommand::Rm { id, force } => {
            let v = c.ok(Method::DELETE, &format!("{}{}", app_path(&id), force_q(force)), None).await?;
            let d = v.get("deploymentId").and_then(Value::as_str).unwrap_or_default().to_string();
            wait_deployment(c, &normalise(&id), &d, Duration::from_secs(120)).await
        }
        AppCommand::Restart { id, force } => {
            let v = c.ok(Method::POST, &format!("{}/restart{}", app_path(&id), force_q(force)), None).await?;
            let d = v.get("deploymentId").and_then(Value::as_str).unwrap_or_default().to_string();
            wait_deployment(c, &normalise(&id), &d, Duration::from_secs(300)).await
        }
    }
}

fn normalise(id: &str) -> String {
    format!("/{}", id.trim_matches('/'))
}

/// Shows the deployment's progress until it finishes (exit 0), or fails:
/// repeated task failures of the new version, or the timeout (error).
async fn wait_deployment(c: &Client, app: &str, deployment: &str, timeout: Duration) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let start = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut settled = 0;
    let mut first_failure_seen: Option<String> = None;
    let initial = c.call(Method::GET, &format!("{}?embed=app.lastTaskFailure", app_path(app)), None).await?;
    if let Some(f) = initial.1.pointer("/app/lastTaskFailure/taskId").and_then(Value::as_str) {
        first_failure_seen = Some(f.to_string());
    }
    loop {
        let deps = c.ok(Method::GET, "/v2/deployments", None).await?;
        let active = deps.as_array().is_some_and(|ds| ds.iter().any(|d| d["id"].as_str() == Some(deployment)));
        let (status, app_v) =
            c.call(Method::GET, &format!("{}?embed=app.lastTaskFailure", app_path(app)), None).await?;
        if !active {
            if status == StatusCode::NOT_FOUND {
                bar.finish_and_clear();
                println!("{app} removed");
                return Ok(());
            }
            // Marathon ends a deployment once tasks run; a task that dies
            // right after must not count as success, so also require the
            // app to be at its instance count on two polls in a row.
            let a = &app_v["app"];
            if a["tasksRunning"] == a["instances"] {
                settled += 1;
                if settled >= 2 {
                    bar.finish_and_clear();
                    println!("{app} deployed: {}/{} tasks running", a["tasksRunning"], a["instances"]);
                    return Ok(());
                }
            } else {
                settled = 0;
            }
        }
        if status.is_success() {
            let a = &app_v["app"];
            bar.set_message(format!(
                "deploying {app}: {}/{} running, {} staged",
                a["tasksRunning"], a["instances"], a["tasksStaged"]
            ));
            if let Some(f) = a.pointer("/lastTaskFailure/taskId").and_then(Value::as_str) {
                if first_failure_seen.as_deref() != Some(f) && !failures.iter().any(|x| x == f) {
                    failures.push(f.to_string());
                    let msg = a.pointer("/lastTaskFailure/message").and_then(Value::as_str).unwrap_or("");
                    bar.println(format!("task {f} failed: {msg}"));
                    if failures.len() >= 3 {
                        bar.finish_and_clear();
                        bail!(
                            "deployment {deployment} of {app} is failing: {} tasks failed, last: {msg}",
                            failures.len()
                        );
                    }
                }
            }
        }
        if start.elapsed() > timeout {
            bar.finish_and_clear();
            bail!("deployment {deployment} of {app} did not finish within {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn ps(c: &Client, app: Option<String>) -> anyhow::Result<()> {
    let path = match &app {
        Some(a) => format!("{}/tasks", app_path(a)),
        None => "/v2/tasks".to_string(),
    };
    let v = c.ok(Method::GET, &path, None).await?;
    println!("{:<64} {:<24} {:<14} {:<16} PORTS", "TASK", "APP", "STATE", "HOST");
    for t in v.get("tasks").and_then(Value::as_array).cloned().unwrap_or_default() {
        let ports: Vec<String> =
            t["ports"].as_array().map(|p| p.iter().map(|x| x.to_string()).collect()).unwrap_or_default();
        println!(
            "{:<64} {:<24} {:<14} {:<16} {}",
            t["id"].as_str().unwrap_or("?"),
            t["appId"].as_str().unwrap_or("?"),
            t["state"].as_str().unwrap_or("?"),
            t["host"].as_str().unwrap_or("?"),
            ports.join(",")
        );
    }
    Ok(())
}

pub async fn logs(c: &Client, task: &str, follow: bool, stderr: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let file = if stderr { "stderr" } else { "stdout" };
    let mut offset = 0u64;
    loop {
        let (status, next, bytes) =
            c.get_bytes(&format!("/wharf/v1/tasks/{task}/files/{file}?offset={offset}")).await?;
        if !status.is_success() {
            let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(status, &v));
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        out.flush()?;
        offset = next.unwrap_or(offset + bytes.len() as u64);
        if !follow {
            return Ok(());
        }
        if bytes.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `wharf logs --app ID`: the output of every task of the app, each
/// complete line prefixed with its instance; with `follow`, tasks that start
/// later are picked up too.
pub async fn app_logs(c: &Client, app: &str, follow: bool, stderr: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let file = if stderr { "stderr" } else { "stdout" };
    let app = format!("/{}", app.trim_start_matches('/'));
    // Per task: where the next read starts and a line not yet ended.
    let mut tails: std::collections::BTreeMap<String, (u64, Vec<u8>)> = Default::default();
    loop {
        let v = c.ok(Method::GET, &format!("/v2/apps{app}/tasks"), None).await?;
        for t in v["tasks"].as_array().cloned().unwrap_or_default() {
            if let Some(id) = t["id"].as_str() {
                tails.entry(id.to_string()).or_default();
            }
        }
        let mut read_any = false;
        for (id, (offset, partial)) in tails.iter_mut() {
            let (status, next, bytes) =
                c.get_bytes(&format!("/wharf/v1/tasks/{id}/files/{file}?offset={offset}")).await?;
            if !status.is_success() {
                continue; // a task whose sandbox is gone has nothing more to say
            }
            *offset = next.unwrap_or(*offset + bytes.len() as u64);
            read_any |= !bytes.is_empty();
            partial.extend_from_slice(&bytes);
            let prefix = instance_label(id);
            let mut out = std::io::stdout().lock();
            while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                write!(out, "{prefix} | ")?;
                out.write_all(&line)?;
            }
            out.flush()?;
        }
        if !follow {
            let mut out = std::io::stdout().lock();
            for (id, (_, partial)) in &tails {
                if !partial.is_empty() {
                    write!(out, "{} | ", instance_label(id))?;
                    out.write_all(partial)?;
                    writeln!(out)?;
                }
            }
            return Ok(());
        }
        if !read_any {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// `instance-1a2b3c4d` from a Marathon task id: short, and unique enough to
/// tell an app's tasks apart.
fn instance_label(task_id: &str) -> String {
    match task_id.split_once(".instance-") {
        Some((_, rest)) => format!("instance-{}", rest.chars().take(8).collect::<String>()),
        None => task_id.to_string(),
    }
}

pub async fn node_ls(c: &Client, json: bool) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/wharf/v1/nodes", None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let num = |v: &Value| match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.2}").trim_end_matches('0').to_string(),
        None => "?".to_string(),
    };
    let used = |n: &Value, r: &str| format!("{}/{}", num(&n["used"][r]), num(&n["resources"][r]));
    let header =
        ["ID", "HOSTNAME", "ADDRESS", "ROLE", "STATUS", "CPUS", "MEM MB", "DISK MB", "PORTS", "TASKS", "ATTRIBUTES"];
    let rows: Vec<Vec<String>> = v
        .get("nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|n| {
            let attrs: Vec<String> = n["attributes"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or(""))).collect())
                .unwrap_or_default();
            let role = n["role"].as_str().unwrap_or("?");
            vec![
                n["id"].as_str().unwrap_or("?").to_string(),
                n["hostname"].as_str().unwrap_or("?").to_string(),
                n["http"].as_str().unwrap_or("?").to_string(),
                if n["leader"].as_bool().unwrap_or(false) { format!("{role} (leader)") } else { role.to_string() },
                n["status"].as_str().unwrap_or("?").to_string(),
                used(n, "cpus"),
                used(n, "mem"),
                used(n, "disk"),
                format!("{}/{}", num(&n["portsUsed"]), num(&n["portsTotal"])),
                num(&n["tasks"]),
                attrs.join(";"),
            ]
        })
        .collect();
    print!("{}", table(&header, &rows, &[5, 6, 7, 8, 9]));
    Ok(())
}

/// Columns padded to their widest cell; `right` holds the columns of
/// numbers, aligned right. The last column is never padded.
fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let w = width[i];
            if i == last {
                out.push_str(cell);
            } else if right.contains(&i) {
                out.push_str(&format!("{cell:>w$}  "));
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

pub async fn node_drain(c: &Client, id: &str) -> anyhow::Result<()> {
    c.ok(Method::POST, &format!("/wharf/v1/nodes/{id}/drain"), None).await?;
    println!("node {id} draining: its tasks move to other nodes");
    Ok(())
}

pub async fn node_rm(c: &Client, id: &str) -> anyhow::Result<()> {
    c.ok(Method::DELETE, &format!("/wharf/v1/nodes/{id}"), None).await?;
    println!("node {id} removed");
    Ok(())
}

/// `wharf token create`: prints the token alone on stdout (so it can be
/// captured) and what it is on stderr.
pub async fn token_create(c: &Client, role: &str, name: &str) -> anyhow::Result<()> {
    let v = c.ok(Method::POST, "/wharf/v1/tokens", Some(&json!({"role": role, "name": name}))).await?;
    let token = v.get("token").and_then(Value::as_str).context("the node's answer has no token")?;
    eprintln!(
        "Created {} token {} (shown only now; use it as WHARF_TOKEN or --token)",
        v.get("role").and_then(Value::as_str).unwrap_or(role),
        v.get("id").and_then(Value::as_str).unwrap_or("?")
    );
    println!("{token}");
    Ok(())
}

pub async fn token_ls(c: &Client) -> anyhow::Result<()> {
    let v = c.ok(Method::GET, "/wharf/v1/tokens", None).await?;
    let field = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rows: Vec<Vec<String>> = v
        .get("tokens")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter().map(|t| vec![field(t, "id"), field(t, "role"), field(t, "name"), field(t, "createdAt")]).collect()
        })
        .unwrap_or_default();
    print!("{}", table(&["ID", "ROLE", "NAME", "CREATED"], &rows, &[]));
    Ok(())
}

pub async fn token_rm(c: &Client, id: &str) -> anyhow::Result<()> {
    c.ok(Method::DELETE, &format!("/wharf/v1/tokens/{id}"), None).await?;
    println!("Revoked token {id}");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_the_address_are_percent_decoded() {
        assert_eq!(super::percent_decode("p%40ss%3Aword"), "p@ss:word");
    }

    #[test]
    fn instance_labels_are_short() {
        assert_eq!(
            super::instance_label("web.instance-1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d._app.1"),
            "instance-1a2b3c4d"
        );
        assert_eq!(super::instance_label("odd-id"), "odd-id");
    }

    #[test]
    fn table_aligns_columns() {
        let rows =
            vec![vec!["a".to_string(), "1/2".into(), "x".into()], vec!["long".into(), "10/20".into(), "".into()]];
        let t = super::table(&["NAME", "CPUS", "ATTRS"], &rows, &[1]);
        assert_eq!(t, "NAME   CPUS  ATTRS\na       1/2  x\nlong  10/20\n");
    }
}
