//! Secrets end to end, on real nodes: a secret put through the API reaches
//! the task (its environment, read from `/proc`, and a file in its sandbox)
//! and appears nowhere else: not in any file under the node's directory (redb
//! with the Raft log and snapshots, sandboxes, `spec.json`, the node's log),
//! any API answer, or the events sent during the deploy. A node restart keeps
//! the data key; a node that joins gets it from the cluster. Bad input: an
//! undeclared reference is refused at POST, a missing secret fails the task
//! naming it, and a viewer (or deployer, for writes) is refused.

mod common;

use common::cluster::Cluster;
use common::{basic_auth, sse, wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A fresh random value (the kernel's random UUIDs), never seen before.
fn random_value() -> String {
    let read = || std::fs::read_to_string("/proc/sys/kernel/random/uuid").expect("uuid").trim().to_string();
    format!("pw-{}-{}", read(), read())
}

fn sha256_hex(s: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("hash").to_string()
}

/// An app whose task checks the secret against its hash (the definition
/// never holds the value) in its environment and in a file, and says so.
fn app(id: &str, hash: &str, source: &str) -> Value {
    let cmd = format!(
        "e=$(printf %s \"$DB_PASSWORD\" | sha256sum | cut -d' ' -f1); \
         f=$(sha256sum < secrets/db | cut -d' ' -f1); \
         [ \"$e\" = {hash} ] && echo env-ok || echo env-bad; \
         [ \"$f\" = {hash} ] && echo file-ok || echo file-bad; \
         echo mode=$(stat -c %a secrets/db); sleep 600"
    );
    json!({
        "id": id, "cmd": cmd, "cpus": 0.05, "mem": 32,
        "env": {"DB_PASSWORD": {"secret": "db"}, "PLAIN": "x"},
        "secrets": {"db": {"source": source}},
        "container": {"type": "MESOS", "volumes": [{"containerPath": "secrets/db", "secret": "db"}]}
    })
}

/// Every file under `dir` whose bytes contain `needle` (or its base64),
/// except `skip`.
fn files_containing(dir: &Path, needle: &str, skip: &[std::path::PathBuf]) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(needle);
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else { continue };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && !skip.contains(&p) {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let text = String::from_utf8_lossy(&bytes);
                if text.contains(needle) || text.contains(&b64) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

async fn put_secret(node: &Node, path: &str, value: &str) -> (StatusCode, Value) {
    let resp = node
        .client
        .put(format!("{}/wharf/v1/secrets/{path}", node.addr()))
        .body(value.to_string())
        .send()
        .await
        .expect("PUT");
    let s = resp.status();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn stdout_of(node: &Node, task: &str, want: &str) -> String {
    let file = node.sandbox(task).join("stdout");
    let mut out = String::new();
    wait_for(&format!("{task} printing {want}"), Duration::from_secs(30), || {
        out = std::fs::read_to_string(&file).unwrap_or_default();
        let done = out.contains(want);
        async move { done }
    })
    .await;
    out
}

fn environ_of(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).expect("environ")).replace('\0', "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_task_and_appears_nowhere_else() {
    let mut node = Node::start().await;
    let value = random_value();
    let hash = sha256_hex(&value);
    let mut events = sse::Stream::open(&node, "").await;

    let (s, v) = put_secret(&node, "prod/db-password", &value).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["path"], "prod/db-password");
    let (s, _) = put_secret(&node, "prod/db-password", &value).await;
    assert_eq!(s, StatusCode::OK, "a second PUT replaces it");

    node.deploy(app("/secret-app", &hash, "/prod/db-password")).await;
    let tasks = node.wait_running("/secret-app", 1).await;
    let task = tasks[0]["id"].as_str().expect("task id").to_string();
    let out = stdout_of(&node, &task, "mode=").await;
    assert!(out.contains("env-ok") && out.contains("file-ok"), "the task got the value: {out}");
    assert!(out.contains("mode=400"), "the file secret is 0400: {out}");
    let environ = environ_of(node.task_pid(&task));
    assert!(environ.contains(&format!("DB_PASSWORD={value}")), "in the task's environment");
    let file = node.sandbox(&task).join("secrets/db");
    assert_eq!(std::fs::read_to_string(&file).expect("secret file"), value);

    // The API renders the reference, not the value.
    let shown = node.get("/v2/apps/secret-app").await;
    assert_eq!(shown["app"]["env"]["DB_PASSWORD"], json!({"secret": "db"}));
    assert_eq!(shown["app"]["secrets"], json!({"db": {"source": "/prod/db-password"}}));
    assert_eq!(shown["app"]["container"]["volumes"][0], json!({"containerPath": "secrets/db", "secret": "db"}));
    let listed = node.get("/wharf/v1/secrets").await;
    assert_eq!(listed["secrets"][0]["path"], "prod/db-password");
    let meta = node.get("/wharf/v1/secrets/prod/db-password").await;
    assert_eq!(meta["path"], "prod/db-password");

    // A restarted node keeps the data key: a new task gets the value too.
    node.stop();
    node.spawn().await;
    let (s, v) = node.call(Method::PUT, "/v2/apps/secret-app", Some(&json!({"instances": 2}))).await.expect("scale");
    assert!(s.is_success(), "{v}");
    let tasks = node.wait_running("/secret-app", 2).await;
    let second = tasks.iter().filter_map(|t| t["id"].as_str()).find(|id| *id != task).expect("new task").to_string();
    let out = stdout_of(&node, &second, "mode=").await;
    assert!(out.contains("env-ok") && out.contains("file-ok"), "after a restart: {out}");

    let mut answers = Vec::new();
    for path in [
        "/v2/apps?embed=apps.tasks&embed=apps.counts&embed=apps.deployments&embed=apps.lastTaskFailure&embed=apps.taskStats&embed=apps.readiness",
        "/v2/apps/secret-app?embed=app.tasks&embed=app.lastTaskFailure",
        "/v2/apps/secret-app/versions",
        "/v2/tasks",
        "/v2/deployments",
        "/v2/groups?embed=group.apps&embed=group.apps.tasks",
        "/v2/queue",
        "/wharf/v1/secrets",
        "/wharf/v1/secrets/prod/db-password",
        "/wharf/v1/nodes",
        "/metrics",
    ] {
        let (_, v) = node.call(Method::GET, path, None).await.expect("GET");
        answers.push((path.to_string(), v.to_string()));
    }
    let versions = node.get("/v2/apps/secret-app/versions").await;
    for ts in versions["versions"].as_array().cloned().unwrap_or_default() {
        let path = format!("/v2/apps/secret-app/versions/{}", ts.as_str().unwrap_or_default());
        answers.push((path.clone(), node.get(&path).await.to_string()));
    }
    let mut seen = Vec::new();
    while let Some((kind, data)) = events.next(Duration::from_millis(500)).await {
        seen.push(format!("{kind} {data}"));
    }
    assert!(seen.iter().any(|e| e.starts_with("deployment_success")), "events were captured: {seen:?}");
    for (path, body) in &answers {
        assert!(!body.contains(&value), "GET {path} shows the value");
    }
    for e in &seen {
        assert!(!e.contains(&value), "an event shows the value: {e}");
    }
    node.stop();
    let skip: Vec<_> = [&task, &second].iter().map(|t| node.sandbox(t).join("secrets/db")).collect();
    let hits = files_containing(node.data_dir(), &value, &skip);
    assert!(hits.is_empty(), "files holding the value in clear: {hits:?}");
    // The search does find the value where it belongs.
    assert_eq!(files_containing(node.data_dir(), &value, &[]).len(), 2, "the two tasks' secret files");
    assert!(node.data_dir().join("data/state/data-key.json").exists());
    node.spawn().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_refuse_bad_input_and_callers_without_the_role() {
    let node = Node::start_with_credentials("admin", "pw").await;
    // An undeclared reference: 422 naming it, nothing stored.
    let mut bad = app("/undeclared", "x", "/prod/a");
    bad["env"]["OTHER"] = json!({"secret": "nosuch"});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&bad)).await.expect("POST");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("nosuch") && v.to_string().contains("/env/OTHER"), "{v}");
    let (s, v) = node
        .call(
            Method::POST,
            "/v2/apps",
            Some(&json!({"id": "/badsrc", "cmd": "true",
        "env": {"A": {"secret": "s"}}, "secrets": {"s": {"source": "a/../b"}}})),
        )
        .await
        .expect("POST");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v.to_string().contains("/secrets/s/source"), "{v}");
    assert_eq!(node.call(Method::GET, "/v2/apps/undeclared", None).await.expect("GET").0, StatusCode::NOT_FOUND);

    // A secret missing from the store: the task fails saying which.
    node.deploy(app("/missing", "x", "/prod/missing")).await;
    let failure = node.last_failure("/missing").await;
    let message = failure["message"].as_str().unwrap_or_default();
    assert!(message.contains("'db'") && message.contains("prod/missing"), "{failure}");

    // Bad paths and values, and a delete of what is not there.
    let (s, v) = put_secret(&node, "bad%20path/x", "x").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = put_secret(&node, "big", &"x".repeat(64 * 1024 + 1)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, v) = node.call(Method::DELETE, "/wharf/v1/secrets/nosuch", None).await.expect("DELETE");
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = node.raw(Method::PUT, "/wharf/v1/secrets/json", r#"{"value": 12345678}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(!v.to_string().contains("12345678"), "errors never quote the body: {v}");
    let (s, _) = node.raw(Method::PUT, "/wharf/v1/secrets/json", r#"{"value": "v1"}"#).await;
    assert_eq!(s, StatusCode::CREATED);

    // Roles: a viewer can neither list nor put; a deployer lists but cannot put.
    let mut tokens = Vec::new();
    for role in ["viewer", "deployer"] {
        let (s, v) = node.call(Method::POST, "/wharf/v1/tokens", Some(&json!({"role": role}))).await.expect("token");
        assert_eq!(s, StatusCode::CREATED, "{v}");
        tokens.push(format!("Bearer {}", v["token"].as_str().expect("token")));
    }
    let c = reqwest::Client::new();
    let send = |m: Method, path: &str, auth: &str| {
        c.request(m, format!("{}{path}", node.addr())).header("authorization", auth).body("v").send()
    };
    for (auth, list, put) in [(&tokens[0], 403, 403), (&tokens[1], 200, 403)] {
        let l = send(Method::GET, "/wharf/v1/secrets", auth).await.expect("GET").status();
        let p = send(Method::PUT, "/wharf/v1/secrets/x", auth).await.expect("PUT").status();
        let r = send(Method::DELETE, "/wharf/v1/secrets/json", auth).await.expect("DELETE").status();
        assert_eq!((l.as_u16(), p.as_u16(), r.as_u16()), (list, put, 403));
    }
    let s = send(Method::PUT, "/wharf/v1/secrets/x", &basic_auth("admin", "pw")).await.expect("PUT").status();
    assert_eq!(s, StatusCode::CREATED);
    let listed = node.get("/wharf/v1/secrets").await;
    let paths: Vec<&str> =
        listed["secrets"].as_array().expect("list").iter().filter_map(|s| s["path"].as_str()).collect();
    assert_eq!(paths, ["json", "x"], "nothing half-stored by the refused writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_gets_the_data_key_and_opens_secrets() {
    let c = Cluster::start(2, &[]).await;
    let value = random_value();
    let hash = sha256_hex(&value);
    let (s, v) = {
        let resp = c
            .client
            .put(format!("{}/wharf/v1/secrets/prod/db", c.nodes[0].addr()))
            .body(value.clone())
            .send()
            .await
            .expect("PUT");
        (resp.status(), resp.text().await.unwrap_or_default())
    };
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut def = app("/joined", &hash, "prod/db");
    def["constraints"] = json!([["hostname", "CLUSTER", c.nodes[1].ip]]);
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&def)).await.expect("POST");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut running = Vec::new();
    wait_for("the task on the joined node", Duration::from_secs(30), || {
        let c = &c;
        async move { c.running(1, "/joined").await.len() == 1 }
    })
    .await;
    running.extend(c.running(1, "/joined").await);
    let (task, host) = &running[0];
    assert_eq!(host, &c.nodes[1].ip);
    let sandbox = c.nodes[1].dir.join("data/sandboxes").join(task);
    wait_for("the task's report", Duration::from_secs(30), || {
        let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
        async move { out.contains("mode=") }
    })
    .await;
    let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default();
    assert!(out.contains("env-ok") && out.contains("file-ok"), "{out}\n{}", c.log(1));
    for i in 0..2 {
        let skip = vec![sandbox.join("secrets/db")];
        let hits = files_containing(&c.nodes[i].dir, &value, &skip);
        assert!(hits.is_empty(), "node {i}: files holding the value in clear: {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autolocked_node_opens_secrets_only_after_unlock() {
    let mut node = Node::start_with(&["--autolock"]).await;
    let printed = std::fs::read_to_string(node.dir.path().join("agent.stdout")).expect("stdout");
    let key = printed.lines().find(|l| l.starts_with("WHARFKEY-1-")).expect("the unlock key is printed").to_string();
    assert!(!node.log().contains(&key), "the unlock key is not in the node's log");
    let state = node.data_dir().join("data/state");
    assert!(state.join("data-key.json").exists() && !state.join("key-encryption-key").exists());
    let value = random_value();
    let hash = sha256_hex(&value);
    assert_eq!(put_secret(&node, "prod/db", &value).await.0, StatusCode::CREATED);

    node.stop();
    node.spawn().await;
    // Locked: nothing is sealed or opened until the operator unlocks.
    let (s, v) = put_secret(&node, "prod/other", "x").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("locked")), "{v}");
    node.deploy(app("/locked", &hash, "prod/db")).await;
    let failure = node.last_failure("/locked").await;
    assert!(failure["message"].as_str().is_some_and(|m| m.contains("locked") && m.contains("'db'")), "{failure}");

    let cli = |args: &[&str]| {
        std::process::Command::new(common::WHARF)
            .args(args)
            .env("WHARF_ADDR", node.addr())
            .output()
            .expect("wharf unlock")
    };
    let wrong = cli(&["unlock", "WHARFKEY-1-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not the node's unlock key"), "{wrong:?}");
    let ok = cli(&["unlock", &key]);
    assert!(ok.status.success(), "{ok:?}");
    // The app's next launch (after its backoff) gets the secret.
    let tasks = node.wait_running("/locked", 1).await;
    let task = tasks[0]["id"].as_str().expect("id").to_string();
    let out = stdout_of(&node, &task, "mode=").await;
    assert!(out.contains("env-ok") && out.contains("file-ok"), "{out}");
    let (s, _) = put_secret(&node, "prod/other", "x").await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_gets_its_secret() {
    let node = Node::start().await;
    let value = random_value();
    let hash = sha256_hex(&value);
    assert_eq!(put_secret(&node, "batch/token", &value).await.0, StatusCode::CREATED);
    let cmd = format!("[ \"$(printf %s \"$TOKEN\" | sha256sum | cut -d' ' -f1)\" = {hash} ]");
    let def = json!({"id": "batch.secret", "run": {"cmd": cmd, "cpus": 0.05, "mem": 32,
        "env": {"TOKEN": {"secret": "tok"}}, "secrets": {"tok": {"source": "batch/token"}}}});
    let (s, v) = node.call(Method::POST, "/v1/jobs", Some(&def)).await.expect("POST");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["run"]["env"]["TOKEN"], json!({"secret": "tok"}));
    let (s, v) = node.call(Method::POST, "/v1/jobs/batch.secret/runs", None).await.expect("run");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let run = v["id"].as_str().expect("run id").to_string();
    let path = format!("/v1/jobs/batch.secret/runs/{run}");
    wait_for("the run to finish", Duration::from_secs(30), || async {
        matches!(node.get(&path).await["status"].as_str(), Some("SUCCESS" | "FAILED"))
    })
    .await;
    let done = node.get(&path).await;
    assert_eq!(done["status"], "SUCCESS", "the run's task saw the value: {done}");
    let job = node.get("/v1/jobs/batch.secret?embed=history&embed=activeRuns").await;
    assert!(!job.to_string().contains(&value));
    let _ = node.call(Method::DELETE, "/v1/jobs/batch.secret?stopCurrentJobRuns=true", None).await;
    let hits = files_containing(node.data_dir(), &value, &[]);
    assert!(hits.is_empty(), "files holding the value in clear: {hits:?}");
}
