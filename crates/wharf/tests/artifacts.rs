//! Artifacts end to end: a real node fetches an app's `fetch` entries, the
//! legacy `uris` and a job's `run.artifacts` from a real HTTP server on
//! loopback (`python3 -m http.server`) into the sandbox before the task
//! starts; the task uses them. A missing artifact fails the task naming the
//! URI and the 404, and the app launches again once it is there. Bad
//! entries are refused with the field's path.

mod common;

use common::{free_port, wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `python3 -m http.server` serving a directory of its own on loopback.
struct FileServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl FileServer {
    async fn start() -> FileServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let server = FileServer { child, dir, port };
        wait_for("the file server to listen", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        server
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `greet.sh` (not executable here: the fetch makes it so) and
    /// `site.tgz` holding `site/index.txt` with `text`.
    fn publish(&self, text: &str) {
        std::fs::write(self.path("greet.sh"), "#!/bin/sh\necho \"greeting: $1\"\n").expect("script");
        let src = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(src.path().join("site")).expect("site dir");
        std::fs::write(src.path().join("site/index.txt"), text).expect("index");
        tar_czf(&self.path("site.tgz"), src.path(), "site");
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tar czf archive -C dir entry` with the system's tar.
fn tar_czf(archive: &Path, dir: &Path, entry: &str) {
    let ok = Command::new("tar").arg("czf").arg(archive).arg("-C").arg(dir).arg(entry).status().expect("tar");
    assert!(ok.success(), "tar czf failed");
}

async fn task_file(node: &Node, task: &str, file: &str) -> String {
    let url = format!("{}/wharf/v1/tasks/{task}/files/{file}", node.addr());
    node.client.get(url).send().await.expect("logs").text().await.expect("text")
}

/// The task's `file` once it holds every one of `needles` (a task that just
/// started may not have printed yet).
async fn output_with(node: &Node, task: &str, file: &str, needles: &[&str]) -> String {
    let start = std::time::Instant::now();
    loop {
        let out = task_file(node, task, file).await;
        if needles.iter().all(|n| out.contains(n)) {
            return out;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{task}'s {file} lacks {needles:?}: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_runs_with_the_script_and_archive_it_fetched() {
    let files = FileServer::start().await;
    files.publish("served by the archive");
    let node = Node::start().await;
    // Run as nobody: what was fetched is the task user's.
    let app = json!({"id": "/fetcher", "instances": 1, "cpus": 0.1, "mem": 32, "user": "nobody",
        "cmd": "./greet.sh \"$(cat site/index.txt)\" && ls -l greet.sh && echo \"owner: $(stat -c %U site/index.txt)\" && sleep 600",
        "fetch": [{"uri": files.url("greet.sh"), "executable": true},
                  {"uri": files.url("site.tgz"), "extract": true}]});
    node.deploy(app).await;
    let tasks = node.wait_running("/fetcher", 1).await;
    let tid = tasks[0]["id"].as_str().expect("task id").to_string();
    let out = output_with(&node, &tid, "stdout", &["greeting:", "greet.sh", "owner:"]).await;
    assert!(out.contains("greeting: served by the archive"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.contains(" nobody ") && l.ends_with("greet.sh")),
        "{out}"
    );
    assert!(out.contains("owner: nobody"), "{out}");
    assert!(node.sandbox(&tid).join("site.tgz").is_file(), "the archive is kept beside what it held");
    // GET shows the entries as Marathon does, every flag present.
    let got = node.get("/v2/apps/fetcher").await;
    assert_eq!(
        got["app"]["fetch"],
        json!([{"uri": files.url("greet.sh"), "extract": true, "executable": true, "cache": false},
               {"uri": files.url("site.tgz"), "extract": true, "executable": false, "cache": false}]),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_artifact_fails_the_task_naming_the_uri_and_the_app_launches_once_it_is_there() {
    let files = FileServer::start().await;
    let node = Node::start().await;
    // Legacy `uris`: the archive is extracted, as Marathon converts them.
    let uri = files.url("site.tgz");
    let app = json!({"id": "/late", "cpus": 0.1, "mem": 32, "backoffSeconds": 1, "backoffFactor": 1,
        "cmd": "cat site/index.txt && sleep 600", "uris": [uri]});
    node.deploy(app).await;
    let failure = node.last_failure("/late").await;
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    let message = failure["message"].as_str().expect("message");
    assert!(message.contains(&uri) && message.contains("404"), "{message}");
    let got = node.get("/v2/apps/late").await;
    assert_eq!(got["app"]["fetch"][0]["extract"], true, "{got}");
    // The app backs off and tries again; once the file is served it runs
    // and its deployment ends.
    files.publish("arrived late");
    let tasks = node.wait_running("/late", 1).await;
    let tid = tasks[0]["id"].as_str().expect("task id").to_string();
    wait_for("the deployment to finish", Duration::from_secs(30), || async {
        node.get("/v2/deployments").await.as_array().is_some_and(|d| d.is_empty())
    })
    .await;
    output_with(&node, &tid, "stdout", &["arrived late"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_uses_its_artifacts_and_a_missing_one_fails_the_run() {
    let files = FileServer::start().await;
    files.publish("job data");
    let node = Node::start().await;
    let def = json!({"id": "fetching", "run": {"cpus": 0.1, "mem": 32, "disk": 0,
        "cmd": "./greet.sh \"$(cat site/index.txt)\"",
        "artifacts": [{"uri": files.url("greet.sh"), "executable": true, "extract": false},
                      {"uri": files.url("site.tgz")}]}});
    let (s, created) = node.call(Method::POST, "/v1/jobs", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["run"]["artifacts"][1],
        json!({"uri": files.url("site.tgz"), "extract": true, "executable": false, "cache": false})
    );
    let done = run_to_end(&node, "fetching").await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    let tid = done["tasks"][0]["id"].as_str().expect("task id");
    assert_eq!(task_file(&node, tid, "stdout").await.trim(), "greeting: job data");

    let missing = files.url("nothing-here.sh");
    let def = json!({"id": "broken", "run": {"cpus": 0.1, "mem": 32, "disk": 0, "cmd": "./nothing-here.sh",
        "artifacts": [{"uri": missing, "executable": true}]}});
    let (s, v) = node.call(Method::POST, "/v1/jobs", Some(&def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let done = run_to_end(&node, "broken").await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let task = &done["tasks"][0];
    assert_eq!(task["status"], "TASK_FAILED", "{done}");
    let message = task["message"].as_str().unwrap_or_default();
    assert!(message.contains(&missing) && message.contains("404"), "{done}");
    // The reason is in the task's stderr too, where `wharf logs` looks.
    let tid = task["id"].as_str().expect("task id");
    assert!(task_file(&node, tid, "stderr").await.contains("404"));
}

/// Starts a run of `job` and waits for its end.
async fn run_to_end(node: &Node, job: &str) -> Value {
    let (s, v) = node.call(Method::POST, &format!("/v1/jobs/{job}/runs"), None).await.expect("run");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let path = format!("/v1/jobs/{job}/runs/{}", v["id"].as_str().expect("run id"));
    let start = std::time::Instant::now();
    loop {
        let last = node.get(&path).await;
        if matches!(last["status"].as_str(), Some("SUCCESS" | "FAILED")) {
            return last;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "run of {job} did not finish: {last}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_artifacts_are_refused_with_the_field_and_nothing_is_stored() {
    let node = Node::start().await;
    let cases = [
        (json!([{"extract": true}]), "/fetch(0)/uri"),
        (json!([{"uri": "ftp://example.com/x.tgz"}]), "/fetch(0)/uri"),
        (json!([{"uri": "http://example.com/x", "destPath": "../outside"}]), "/fetch(0)/destPath"),
    ];
    for (fetch, path) in cases {
        let app = json!({"id": "/bad", "cmd": "true", "fetch": fetch});
        let (s, v) = node.call(Method::POST, "/v2/apps", Some(&app)).await.expect("post");
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert!(v["message"].is_string(), "{v}");
        let paths: Vec<&str> =
            v["details"].as_array().expect("details").iter().filter_map(|d| d["path"].as_str()).collect();
        assert_eq!(paths, vec![path], "{v}");
    }
    let app = json!({"id": "/bad", "cmd": "true", "uris": ["http://h/a"], "fetch": [{"uri": "http://h/b"}]});
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&app)).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let job = json!({"id": "bad", "run": {"cpus": 0.1, "mem": 32, "cmd": "true",
        "artifacts": [{"uri": "s3://bucket/key"}]}});
    let (s, v) = node.call(Method::POST, "/v1/jobs", Some(&job)).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"][0]["path"], "/run/artifacts/0/uri", "{v}");
    assert!(v["details"][0]["errors"][0].as_str().is_some_and(|e| e.contains("unsupported scheme 's3'")), "{v}");
    let (s, v) = node.call(Method::GET, "/v2/apps/bad", None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, v) = node.call(Method::GET, "/v1/jobs/bad", None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
}
