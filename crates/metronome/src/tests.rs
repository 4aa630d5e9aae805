//! Driven by Metronome's own examples in `../shared/reference/metronome`.

use crate::*;
use model::{ConcurrencyPolicy, ContainerSpec, Job, JobHistory, RestartPolicy, Schedule, UnixMillis};
use serde_json::{json, Value};

fn reference(path: &str) -> Vec<u8> {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/metronome");
    std::fs::read(base.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn paths(e: &WireError) -> Vec<String> {
    e.body["details"].as_array().into_iter().flatten().filter_map(|d| d["path"].as_str().map(str::to_string)).collect()
}

#[test]
fn metronome_examples_parse_and_render_back() {
    let input = parse_job(&reference("api/v1/examples/job.json"), None, "/v1/jobs").expect("valid");
    let j = &input.job;
    assert_eq!(j.id.as_str(), "prod.example.app");
    assert_eq!(j.run.resources.cpus, 1.5);
    assert_eq!(j.run.restart, RestartPolicy::Never);
    assert_eq!(j.run.active_deadline_seconds, Some(120));
    assert!(
        matches!(&j.run.container, ContainerSpec::Docker(c) if c.image.as_deref() == Some("foo/bla:test") && c.volumes.len() == 1)
    );
    assert_eq!(input.schedules, Some(vec![]));
    let job = Job {
        spec: j.clone(),
        schedules: vec![],
        runs: Default::default(),
        history: JobHistory::default(),
        created_at: UnixMillis(0),
    };
    let out = render_job(&job, Embed::default(), UnixMillis(0));
    let given: Value = serde_json::from_slice(&reference("api/v1/examples/job.json")).expect("json");
    for key in ["cmd", "cpus", "mem", "disk", "env", "maxLaunchDelay", "user", "artifacts", "volumes", "restart"] {
        assert_eq!(out["run"][key], given["run"][key], "{key}");
    }
    // EQ is returned as IS, as Metronome does.
    assert_eq!(out["run"]["placement"]["constraints"][0]["operator"], "IS");
    assert_eq!(out["run"]["docker"]["image"], "foo/bla:test");
    let with_schedule =
        parse_job(&reference("docs-examples/readme_job_with_schedule.json"), None, "/v1/jobs").expect("valid");
    assert_eq!(with_schedule.schedules.map(|s| s.len()), Some(1));
    let s = parse_schedule(&reference("api/v1/examples/schedule.json"), None, "/s").expect("valid");
    assert_eq!((s.timezone.as_str(), s.starting_deadline_seconds), ("America/Chicago", 60));
}

#[test]
fn bad_jobs_name_the_path() {
    let bad = |v: Value| parse_job(v.to_string().as_bytes(), None, "/v1/jobs").expect_err("invalid");
    let e = bad(json!({"id": "Bad_Id", "run": {"cpus": 0.1, "mem": 32, "cmd": "true"}}));
    assert_eq!((e.status, paths(&e)), (422, vec!["/id".to_string()]));
    assert_eq!(e.body["message"], "Object is not valid");
    let e = bad(json!({"id": "a", "run": {"cpus": 0.001, "mem": 8}}));
    assert_eq!(paths(&e), vec!["/run/cpus", "/run/mem", "/run"]);
    let e = bad(
        json!({"id": "a", "run": {"cpus": 1, "mem": 32, "cmd": "x"}, "schedules": [{"id": "s1", "cron": "61 * * * *"}]}),
    );
    assert_eq!(paths(&e), vec!["/schedules/0/cron"]);
    let e = bad(
        json!({"id": "a", "run": {"cpus": 1, "mem": 32, "cmd": "x"}, "schedules": [{"id": "s1", "cron": "* * * * *", "timezone": "Mars/Base"}]}),
    );
    assert_eq!(paths(&e), vec!["/schedules/0/timezone"]);
    let e = bad(json!({"id": "a", "run": {"cpus": 1, "mem": 32, "cmd": "x", "restart": {"policy": "ALWAYS"}}}));
    assert_eq!(paths(&e), vec!["/run/restart/policy"]);
    let e = parse_job(b"{nope", None, "/v1/jobs").expect_err("malformed");
    assert_eq!(e.status, 400);
}

#[test]
fn schedules_defaults_and_extensions() {
    let s =
        parse_schedule(br#"{"id": "every-5s", "cron": "*/5 * * * * *", "concurrencyPolicy": "REPLACE"}"#, None, "/s")
            .expect("valid");
    assert_eq!((s.timezone.as_str(), s.starting_deadline_seconds, s.enabled), ("UTC", 900, true));
    assert_eq!(s.concurrency_policy, ConcurrencyPolicy::Replace);
    let e = parse_schedule(br#"{"id": "x", "cron": "* * * * *"}"#, None, "/s").expect_err("short id");
    assert_eq!(paths(&e), vec!["/id"]);
    let sched = Schedule { spec: s, since: UnixMillis(0), last_fire: None };
    assert_eq!(render_schedule(&sched, UnixMillis(7_000))["nextRunAt"], "1970-01-01T00:00:10.000+0000");
}

#[test]
fn embeds() {
    assert_eq!(Embed::parse(["activeRuns,history"]).map(|e| (e.active_runs, e.history)), Ok((true, true)));
    assert!(Embed::parse(["nope"]).is_err());
}

#[test]
fn secrets_are_typed_checked_and_rendered_back() {
    let body = json!({"id": "backup", "run": {"cpus": 0.1, "mem": 32, "cmd": "run-backup",
        "env": {"PLAIN": "1", "DB_PASSWORD": {"secret": "db"}},
        "secrets": {"db": {"source": "prod/db-password"}}}});
    let input = parse_job(body.to_string().as_bytes(), None, "/v1/jobs").expect("valid");
    let run = &input.job.run;
    assert_eq!(run.secret_env["DB_PASSWORD"], "db");
    assert_eq!(run.secrets["db"].source, "prod/db-password");
    assert_eq!(run.env.len(), 1);
    let app = input.job.template();
    assert_eq!(app.secret_env, run.secret_env, "the run's task gets them");
    let job = Job {
        spec: input.job.clone(),
        schedules: vec![],
        runs: Default::default(),
        history: JobHistory::default(),
        created_at: UnixMillis(0),
    };
    let out = render_job(&job, Embed::default(), UnixMillis(0));
    assert_eq!(out["run"]["env"]["DB_PASSWORD"], json!({"secret": "db"}));
    assert_eq!(out["run"]["secrets"], json!({"db": {"source": "prod/db-password"}}));

    let bad = |v: Value| parse_job(v.to_string().as_bytes(), None, "/v1/jobs").expect_err("invalid");
    let e = bad(json!({"id": "a", "run": {"cpus": 1, "mem": 32, "cmd": "x", "env": {"P": {"secret": "nope"}}}}));
    assert_eq!(paths(&e), vec!["/run/env/P"]);
    assert!(e.body.to_string().contains("nope"), "{}", e.body);
    let e = bad(json!({"id": "a", "run": {"cpus": 1, "mem": 32, "cmd": "x", "secrets": {"s": {"source": "a//b"}}}}));
    assert_eq!(paths(&e), vec!["/run/secrets/s/source"]);
}

#[test]
fn artifacts_are_typed_and_rendered_with_every_flag() {
    let body = json!({"id": "a", "run": {"cpus": 0.1, "mem": 32, "cmd": "./run.sh",
        "artifacts": [{"uri": "http://h/run.sh", "executable": true, "extract": false},
                      {"uri": "file:///opt/data.tgz"}]}});
    let input = parse_job(body.to_string().as_bytes(), None, "/v1/jobs").expect("valid");
    let arts = &input.job.run.artifacts;
    assert_eq!(arts.len(), 2);
    assert!(arts[0].executable && !arts[0].extract && !arts[0].cache);
    assert!(arts[1].extract && !arts[1].executable);
    assert_eq!(input.job.template().fetch, *arts);
    let job = Job {
        spec: input.job.clone(),
        schedules: vec![],
        runs: Default::default(),
        history: JobHistory::default(),
        created_at: UnixMillis(0),
    };
    let out = render_job(&job, Embed::default(), UnixMillis(0));
    assert_eq!(
        out["run"]["artifacts"],
        json!([{"uri": "http://h/run.sh", "extract": false, "executable": true, "cache": false},
               {"uri": "file:///opt/data.tgz", "extract": true, "executable": false, "cache": false}])
    );
    let again = parse_job(out.to_string().as_bytes(), None, "/v1/jobs").expect("renders back");
    assert_eq!(again.job.run.artifacts, *arts);
}

#[test]
fn bad_artifacts_name_the_path() {
    let bad = |arts: Value| {
        let body = json!({"id": "a", "run": {"cpus": 0.1, "mem": 32, "cmd": "true", "artifacts": arts}});
        parse_job(body.to_string().as_bytes(), None, "/v1/jobs").expect_err("invalid")
    };
    let e = bad(json!([{"extract": true}]));
    assert_eq!((e.status, paths(&e)), (422, vec!["/run/artifacts/0/uri".to_string()]));
    let e = bad(json!([{"uri": "http://h/x"}, {"uri": "hdfs://nn/x"}]));
    assert_eq!(paths(&e), vec!["/run/artifacts/1/uri"]);
    assert!(e.body.to_string().contains("unsupported scheme 'hdfs'"), "{}", e.body);
    let e = bad(json!([{"uri": "http://h/x", "destPath": "y"}]));
    assert_eq!(paths(&e), vec!["/run/artifacts/0/destPath"]);
    let e = bad(json!([{"uri": 5}]));
    assert_eq!(paths(&e), vec!["/run/artifacts/0/uri"]);
}
