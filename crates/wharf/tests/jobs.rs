//! Jobs end to end on a real node through Metronome's `/v1` API: one-off
//! runs and their output, ON_FAILURE restarts until the deadline, a
//! seconds-field schedule firing on time, FORBID, a dependency chain, and
//! bad input refused with the path and nothing stored.

mod common;

use common::{wait_for, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

async fn post_job(node: &Node, def: &Value) -> Value {
    let (s, v) = node.call(Method::POST, "/v1/jobs", Some(def)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

async fn start_run(node: &Node, job: &str) -> String {
    let (s, v) = node.call(Method::POST, &format!("/v1/jobs/{job}/runs"), None).await.expect("run");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["jobId"], job);
    assert_eq!(v["status"], "STARTING", "{v}");
    v["id"].as_str().expect("run id").to_string()
}

/// Waits until the run has finished and returns it.
async fn finished_run(node: &Node, job: &str, run: &str, timeout: Duration) -> Value {
    let path = format!("/v1/jobs/{job}/runs/{run}");
    let start = std::time::Instant::now();
    loop {
        let last = node.get(&path).await;
        if matches!(last["status"].as_str(), Some("SUCCESS" | "FAILED")) {
            return last;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for run {run} of {job} to finish: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop_all(node: &Node, jobs: &[&str]) {
    for j in jobs {
        let _ = node.call(Method::DELETE, &format!("/v1/jobs/{j}?stopCurrentJobRuns=true"), None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_run_succeeds_and_its_output_is_readable() {
    let node = Node::start().await;
    let def = json!({"id": "batch.hello", "description": "says hello",
        "run": {"cmd": "echo hello from $MESOS_TASK_ID; echo done >&2", "cpus": 0.1, "mem": 32, "disk": 0}});
    let created = post_job(&node, &def).await;
    assert_eq!(created["run"]["restart"]["policy"], "NEVER", "Metronome's default: {created}");
    assert_eq!(created["run"]["maxLaunchDelay"], 3600);
    let run = start_run(&node, "batch.hello").await;
    let done = finished_run(&node, "batch.hello", &run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    assert!(done["completedAt"].is_string());
    let task = &done["tasks"][0];
    assert_eq!(task["status"], "TASK_FINISHED");
    let tid = task["id"].as_str().expect("task id");
    let out = node.client.get(format!("{}/wharf/v1/tasks/{tid}/files/stdout", node.addr())).send().await.expect("logs");
    let text = out.text().await.expect("text");
    assert_eq!(text.trim(), format!("hello from {tid}"));
    // History, and the task is not one of Marathon's.
    let job = node.get("/v1/jobs/batch.hello?embed=history").await;
    assert_eq!(job["history"]["successCount"], 1, "{job}");
    assert_eq!(job["history"]["successfulFinishedRuns"][0]["id"], run.as_str());
    assert!(node.get("/v1/jobs/batch.hello/runs").await.as_array().is_some_and(|a| a.is_empty()));
    let tasks = node.get("/v2/tasks").await;
    assert!(tasks["tasks"].as_array().is_some_and(|a| a.is_empty()), "{tasks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_with_on_failure_is_retried_until_its_deadline_and_fails() {
    let node = Node::start().await;
    let def = json!({"id": "flaky", "run": {"cmd": "echo attempt; exit 3", "cpus": 0.1, "mem": 32, "disk": 0,
        "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 6}}});
    post_job(&node, &def).await;
    let run = start_run(&node, "flaky").await;
    let done = finished_run(&node, "flaky", &run, Duration::from_secs(40)).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    let tasks = done["tasks"].as_array().expect("tasks");
    assert!(tasks.len() >= 2, "restarted at least once: {done}");
    assert!(tasks.iter().all(|t| t["status"] == "TASK_FAILED" && t["message"] == "exited with status 3"), "{done}");
    let created = chrono::DateTime::parse_from_str(done["createdAt"].as_str().expect("t"), "%Y-%m-%dT%H:%M:%S%.3f%z")
        .expect("time");
    let completed =
        chrono::DateTime::parse_from_str(done["completedAt"].as_str().expect("t"), "%Y-%m-%dT%H:%M:%S%.3f%z")
            .expect("time");
    assert!((completed - created).num_seconds() >= 6, "retried until the deadline: {done}");
    let job = node.get("/v1/jobs/flaky?embed=historySummary").await;
    assert_eq!(job["historySummary"]["failureCount"], 1, "{job}");
    assert_eq!(job["historySummary"]["successCount"], 0);
}

fn fire_times(job: &Value) -> Vec<i64> {
    let mut runs: Vec<&Value> = Vec::new();
    for key in ["successfulFinishedRuns", "failedFinishedRuns"] {
        runs.extend(job["history"][key].as_array().into_iter().flatten());
    }
    runs.extend(job["activeRuns"].as_array().into_iter().flatten());
    let mut ids: Vec<i64> = runs
        .iter()
        .filter_map(|r| r["id"].as_str())
        // The id starts with the fire time's yyyyMMddHHmmss.
        .filter_map(|id| chrono::NaiveDateTime::parse_from_str(&id[..14], "%Y%m%d%H%M%S").ok())
        .map(|t| t.and_utc().timestamp())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seconds_field_schedule_fires_on_time() {
    let node = Node::start().await;
    let def = json!({"id": "tick", "run": {"cmd": "true", "cpus": 0.1, "mem": 32, "disk": 0},
        "schedules": [{"id": "every-3s", "cron": "*/3 * * * * *", "startingDeadlineSeconds": 2}]});
    let created = post_job(&node, &def).await;
    assert!(created["schedules"][0]["nextRunAt"].is_string(), "{created}");
    wait_for("four scheduled runs", Duration::from_secs(40), || async {
        node.get("/v1/jobs/tick?embed=history").await["history"]["successCount"].as_u64().unwrap_or(0) >= 4
    })
    .await;
    let job = node.get("/v1/jobs/tick?embed=history&embed=activeRuns").await;
    let fires = fire_times(&job);
    assert!(fires.iter().all(|t| t % 3 == 0), "fire times on the 3 s grid: {fires:?}");
    // No fire time skipped and none twice: consecutive runs are 3 s apart.
    let gaps: Vec<i64> = fires.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g == 3), "gaps {gaps:?} in {job}");
    for r in job["history"]["successfulFinishedRuns"].as_array().expect("runs") {
        let id = r["id"].as_str().expect("id");
        let fire = chrono::NaiveDateTime::parse_from_str(&id[..14], "%Y%m%d%H%M%S").expect("t").and_utc();
        let created = chrono::DateTime::parse_from_str(r["createdAt"].as_str().expect("t"), "%Y-%m-%dT%H:%M:%S%.3f%z")
            .expect("time");
        let late = (created.timestamp_millis() - fire.timestamp_millis()) as f64 / 1000.0;
        // Started within its starting deadline (2 s), not before its fire time.
        assert!((0.0..2.0).contains(&late), "run {id} started {late}s after its fire time");
    }
    stop_all(&node, &["tick"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_fire_times_while_a_run_is_active() {
    let node = Node::start().await;
    let def = json!({"id": "slow", "run": {"cmd": "sleep 5", "cpus": 0.1, "mem": 32, "disk": 0},
        "schedules": [{"id": "every-second", "cron": "* * * * * *", "concurrencyPolicy": "FORBID", "startingDeadlineSeconds": 5}]});
    post_job(&node, &def).await;
    wait_for("two runs to finish", Duration::from_secs(60), || async {
        let job = node.get("/v1/jobs/slow?embed=activeRuns").await;
        assert!(job["activeRuns"].as_array().map_or(0, |a| a.len()) <= 1, "never two runs at once: {job}");
        node.get("/v1/jobs/slow?embed=historySummary").await["historySummary"]["successCount"].as_u64().unwrap_or(0)
            >= 2
    })
    .await;
    let job = node.get("/v1/jobs/slow?embed=history").await;
    let runs = job["history"]["successfulFinishedRuns"].as_array().expect("runs");
    let time =
        |v: &Value| chrono::DateTime::parse_from_str(v.as_str().expect("t"), "%Y-%m-%dT%H:%M:%S%.3f%z").expect("time");
    // Newest first: the newer run started after the older had finished.
    assert!(time(&runs[0]["createdAt"]) >= time(&runs[1]["finishedAt"]), "{job}");
    let fires = fire_times(&job);
    assert!(fires.windows(2).all(|w| w[1] - w[0] >= 5), "fire times in between were skipped: {fires:?}");
    stop_all(&node, &["slow"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_job_runs_after_its_parent_succeeds() {
    let node = Node::start().await;
    let dir = node.dir.path().join("dag");
    std::fs::create_dir_all(&dir).expect("dir");
    let mark = |name: &str| format!("sleep 1; date +%s%N > {}/{name}", dir.display());
    post_job(&node, &json!({"id": "extract", "run": {"cmd": mark("extract"), "cpus": 0.1, "mem": 32, "disk": 0}}))
        .await;
    post_job(&node, &json!({"id": "load", "dependencies": [{"id": "extract"}],
        "run": {"cmd": format!("test -f {0}/extract && {1}", dir.display(), mark("load")), "cpus": 0.1, "mem": 32, "disk": 0}}))
    .await;
    // Deleting a parent with dependents is refused.
    let (s, v) = node.call(Method::DELETE, "/v1/jobs/extract", None).await.expect("delete");
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let run = start_run(&node, "extract").await;
    assert!(node.get("/v1/jobs/load/runs").await.as_array().is_some_and(|a| a.is_empty()), "not before the parent");
    let done = finished_run(&node, "extract", &run, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "SUCCESS");
    // The child's run carries the parent's run id.
    let child = finished_run(&node, "load", &run, Duration::from_secs(30)).await;
    assert_eq!(child["status"], "SUCCESS", "{child}");
    assert_eq!(child["trigger"]["jobId"], "extract");
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).expect("mark").trim().parse::<u128>().expect("ns");
    assert!(read("load") > read("extract"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_path_and_nothing_is_stored() {
    let node = Node::start().await;
    let run = json!({"cmd": "true", "cpus": 0.1, "mem": 32, "disk": 0});
    let cases = [
        (json!({"id": "Bad_Id", "run": run}), "/id"),
        (json!({"id": "cron", "run": run, "schedules": [{"id": "s1", "cron": "* * 32 * *"}]}), "/schedules/0/cron"),
        (json!({"id": "cron", "run": run, "schedules": [{"id": "s1", "cron": "every minute"}]}), "/schedules/0/cron"),
        (
            json!({"id": "tz", "run": run, "schedules": [{"id": "s1", "cron": "* * * * *", "timezone": "Europe/Atlantis"}]}),
            "/schedules/0/timezone",
        ),
        (json!({"id": "orphan", "run": run, "dependencies": [{"id": "missing"}]}), "/dependencies"),
        (json!({"id": "mem", "run": {"cmd": "true", "cpus": 0.1, "mem": 1}}), "/run/mem"),
    ];
    for (def, path) in &cases {
        let (s, v) = node.call(Method::POST, "/v1/jobs", Some(def)).await.expect("post");
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{def}: {v}");
        assert_eq!(v["message"], "Object is not valid", "{v}");
        assert!(v["details"].as_array().expect("details").iter().any(|d| d["path"] == *path), "{path} in {v}");
    }
    let (s, v) = node.raw(Method::POST, "/v1/jobs", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    // A cycle: a <- b, then a made to depend on b.
    post_job(&node, &json!({"id": "a", "run": run})).await;
    post_job(&node, &json!({"id": "b", "run": run, "dependencies": [{"id": "a"}]})).await;
    let (s, v) = node
        .call(Method::PUT, "/v1/jobs/a", Some(&json!({"id": "a", "run": run, "dependencies": [{"id": "b"}]})))
        .await
        .expect("put");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"][0]["path"], "/dependencies", "{v}");
    assert!(node.get("/v1/jobs/a").await.get("dependencies").is_none(), "the cycle was not stored");
    // A schedule for a missing job: Metronome's 404, nothing stored.
    let sched = json!({"id": "s1", "cron": "* * * * *"});
    let (s, v) = node.call(Method::POST, "/v1/jobs/nope/schedules", Some(&sched)).await.expect("post");
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v, json!({"id": "nope", "message": "Job not found"}));
    let (s, v) = node
        .call(Method::POST, "/v1/jobs/a/schedules", Some(&json!({"id": "s1", "cron": "* * * *"})))
        .await
        .expect("post");
    assert_eq!((s, v["details"][0]["path"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("/cron")), "{v}");
    // Only a and b exist, without schedules.
    let jobs = node.get("/v1/jobs").await;
    let ids: Vec<&str> = jobs.as_array().expect("list").iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert!(jobs.as_array().expect("list").iter().all(|j| j["schedules"] == json!([])));
    let (s, v) = node.call(Method::GET, "/v1/jobs/a?embed=bogus", None).await.expect("get");
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

fn wharf(node: &Node, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::WHARF).arg("--addr").arg(node.addr()).args(args).output().expect("wharf runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_deploys_runs_waits_and_exits_with_the_run_status() {
    let node = Node::start().await;
    let file = node.dir.path().join("job.json");
    let def = json!({"id": "cli.job", "run": {"cmd": "echo from-the-job; exit ${CODE:-0}", "cpus": 0.1, "mem": 32, "disk": 0},
        "schedules": [{"id": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}]});
    std::fs::write(&file, def.to_string()).expect("write");
    let out = wharf(&node, &["job", "deploy", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Deploying again updates: the schedule changes, no duplicate.
    let mut def2 = def.clone();
    def2["schedules"][0]["cron"] = json!("0 4 * * *");
    def2["run"]["env"] = json!({"CODE": "7"});
    std::fs::write(&file, def2.to_string()).expect("write");
    let out = wharf(&node, &["job", "deploy", file.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sched = node.get("/v1/jobs/cli.job/schedules").await;
    assert_eq!(sched.as_array().map(Vec::len), Some(1));
    assert_eq!(sched[0]["cron"], "0 4 * * *");
    let out = wharf(&node, &["job", "ls"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("cli.job") && table.contains("0 4 * * * Europe/Berlin"), "{table}");
    // The run fails with status 7: --wait prints its output and exits 7.
    let node2 = &node;
    let out = tokio::task::block_in_place(|| wharf(node2, &["job", "run", "cli.job", "--wait", "--timeout", "60"]));
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from-the-job");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED: exited with status 7"));
    std::fs::write(&file, def.to_string()).expect("write");
    assert!(wharf(&node, &["job", "deploy", file.to_str().expect("path")]).status.success());
    let out = tokio::task::block_in_place(|| wharf(node2, &["job", "run", "cli.job", "--wait"]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = wharf(&node, &["job", "runs", "cli.job"]);
    let runs = String::from_utf8_lossy(&out.stdout);
    assert!(runs.contains("SUCCESS") && runs.contains("FAILED"), "{runs}");
    let out = wharf(&node, &["job", "rm", "cli.job"]);
    assert!(out.status.success());
    let (s, _) = node.call(Method::GET, "/v1/jobs/cli.job", None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Bad input names the field.
    std::fs::write(&file, json!({"id": "x", "run": {"cmd": "true", "cpus": 0.1, "mem": 1}}).to_string())
        .expect("write");
    let out = wharf(&node, &["job", "deploy", file.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("field /run/mem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_fans_a_run_out_until_its_completions_succeed() {
    let node = Node::start().await;
    let def = json!({"id": "fan", "run": {"cmd": "sleep 1", "cpus": 0.1, "mem": 32, "disk": 0,
        "parallelism": 3, "completions": 6}});
    let created = post_job(&node, &def).await;
    assert_eq!((created["run"]["parallelism"].as_u64(), created["run"]["completions"].as_u64()), (Some(3), Some(6)));
    let run = start_run(&node, "fan").await;
    let done = finished_run(&node, "fan", &run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    let tasks = done["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 6, "{done}");
    assert!(tasks.iter().all(|t| t["status"] == "TASK_FINISHED"));
    let time =
        |v: &Value| chrono::DateTime::parse_from_str(v.as_str().expect("t"), "%Y-%m-%dT%H:%M:%S%.3f%z").expect("time");
    let spans: Vec<_> = tasks.iter().map(|t| (time(&t["startedAt"]), time(&t["completedAt"]))).collect();
    // The most tasks running at one instant (at each start).
    let most = spans.iter().map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count()).max().unwrap_or(0);
    assert!((2..=3).contains(&most), "fanned out, at most 3 at a time: {most} in {done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_job_runs_through_the_docker_driver() {
    let ok = std::process::Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
    if !ok.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no docker engine answers");
        return;
    }
    agent::driver::docker::build_busybox_image().expect("the test image");
    let node = Node::start().await;
    let def = json!({"id": "in.docker", "run": {"cmd": "echo from-docker; cat /etc/hostname >/dev/null", "cpus": 0.1, "mem": 32,
        "disk": 0, "docker": {"image": agent::driver::docker::BUSYBOX_IMAGE}}});
    post_job(&node, &def).await;
    let run = start_run(&node, "in.docker").await;
    let done = finished_run(&node, "in.docker", &run, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "SUCCESS", "{done}");
    let tid = done["tasks"][0]["id"].as_str().expect("task id");
    let out = node.client.get(format!("{}/wharf/v1/tasks/{tid}/files/stdout", node.addr())).send().await.expect("logs");
    assert_eq!(out.text().await.expect("text").trim(), "from-docker");
    // The container is gone from the engine's running list once the run ended.
    let ps = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("name=wharf-{tid}")])
        .output()
        .expect("docker ps");
    assert!(String::from_utf8_lossy(&ps.stdout).trim().is_empty());
}

/// Successful finished runs in the job's history, newest first.
async fn history_ids(node: &Node, job: &str) -> (u64, Vec<String>) {
    let j = node.get(&format!("/v1/jobs/{job}?embed=history")).await;
    let ids = j["history"]["successfulFinishedRuns"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    (j["history"]["successCount"].as_u64().unwrap_or_default(), ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_keeps_the_configured_number_of_runs() {
    // Metronome's METRONOME_HISTORY_COUNT, as Wharf's env/flag.
    let mut node = Node::start_with_env(&[], &[("WHARF_JOB_HISTORY_COUNT", "3")]).await;
    post_job(&node, &json!({"id": "short", "run": {"cmd": "true", "cpus": 0.1, "mem": 32, "disk": 0}})).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        let run = start_run(&node, "short").await;
        let done = finished_run(&node, "short", &run, Duration::from_secs(30)).await;
        assert_eq!(done["status"], "SUCCESS", "{done}");
        runs.push(run);
    }
    let (count, kept) = history_ids(&node, "short").await;
    assert_eq!(count, 5, "the counters count every run");
    let newest: Vec<String> = runs.iter().rev().take(3).cloned().collect();
    assert_eq!(kept, newest, "only the newest 3 runs are kept");
    let (s, _) = node.call(Method::GET, &format!("/v1/jobs/short/runs/{}", runs[0]), None).await.expect("get");
    assert_eq!(s, StatusCode::NOT_FOUND, "a run cut from the history is gone");

    // Restarted with a smaller number: the leader writes it, and longer
    // histories are cut at once.
    node.stop();
    node.env = vec![("WHARF_JOB_HISTORY_COUNT".into(), "1".into())];
    node.spawn().await;
    wait_for("the history cut to one run", Duration::from_secs(20), || async {
        history_ids(&node, "short").await == (5, vec![runs[4].clone()])
    })
    .await;
    stop_all(&node, &["short"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_follows_every_attempt_of_a_retried_run() {
    let node = Node::start().await;
    post_job(
        &node,
        &json!({"id": "retried", "run": {"cmd": "echo attempt $MESOS_TASK_ID; exit 3", "cpus": 0.1,
        "mem": 32, "disk": 0, "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 3}}}),
    )
    .await;
    let n = &node;
    let out = tokio::task::block_in_place(|| wharf(n, &["job", "run", "retried", "--wait", "--timeout", "60"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "a FAILED run: {}", String::from_utf8_lossy(&out.stderr));
    // Every attempt's output, each once, in order.
    let lines: Vec<&str> = stdout.lines().collect();
    let job = node.get("/v1/jobs/retried?embed=history").await;
    let run = job["history"]["failedFinishedRuns"][0]["tasks"].clone();
    let want: Vec<String> =
        run.as_array().expect("tasks").iter().map(|t| format!("attempt {}", t.as_str().expect("id"))).collect();
    assert!(want.len() >= 2, "the run was retried: {job}");
    assert_eq!(lines, want, "{stdout}");
    stop_all(&node, &["retried"]).await;
}
