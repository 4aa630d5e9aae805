//! Data-driven tests over Marathon's own fixtures (`../shared/reference/marathon`),
//! one test per validation rule, round trips, merges and rendering.

use crate::*;
use model::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn reference(rel: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/marathon").join(rel);
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ok(v: Value) -> AppSpec {
    match app_from_value(v.clone(), "") {
        Ok(s) => s,
        Err(e) => panic!("rejected {v}: {}", e.to_json()),
    }
}

fn err(v: Value) -> ApiError {
    match app_from_value(v.clone(), "") {
        Ok(s) => panic!("accepted {v}: {s:?}"),
        Err(e) => e,
    }
}

/// 422 with a detail at `path`.
fn rejected_at(v: Value, path: &str) -> ApiError {
    let e = err(v);
    assert_eq!(e.status, 422, "{}", e.to_json());
    assert!(e.has_path(path), "no detail at {path}: {}", e.to_json());
    e
}

fn app_of(spec: AppSpec) -> App {
    App::new(spec, UnixMillis(1_440_628_404_225))
}

fn render_spec(spec: &AppSpec) -> Value {
    render_app(&app_of(spec.clone()), &ClusterState::default(), &Embed::default())
}

/// Every value of `input` is found in `out` (objects may have more keys;
/// numbers compare as numbers).
fn contains(out: &Value, input: &Value, path: &str) -> Result<(), String> {
    match (out, input) {
        (_, Value::Null) => Ok(()),
        (Value::Object(o), Value::Object(i)) => {
            for (k, v) in i {
                let ov = o.get(k).unwrap_or(&Value::Null);
                contains(ov, v, &format!("{path}/{k}"))?;
            }
            Ok(())
        }
        (Value::Array(o), Value::Array(i)) if o.len() == i.len() => {
            for (n, (a, b)) in o.iter().zip(i).enumerate() {
                contains(a, b, &format!("{path}({n})"))?;
            }
            Ok(())
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        (a, b) if a == b => Ok(()),
        (a, b) => Err(format!("{path}: rendered {a}, input {b}")),
    }
}

/// Fields the round trip may legitimately change: normalised ids, read-only
/// status fields, and port definitions Marathon drops for non-host networking.
fn assert_round_trip(input: &Value) {
    let spec = ok(input.clone());
    let out = render_spec(&spec);
    let host = out["portDefinitions"].as_array().map(|a| !a.is_empty()) == Some(true)
        || spec.ports.is_empty() && out["networks"].is_null();
    for (k, v) in input.as_object().expect("object") {
        let skip = matches!(
            k.as_str(),
            "id" | "version"
                | "versionInfo"
                | "tasks"
                | "tasksStaged"
                | "tasksRunning"
                | "tasksHealthy"
                | "tasksUnhealthy"
                | "deployments"
        ) || (!host && matches!(k.as_str(), "portDefinitions" | "ports"));
        if skip {
            continue;
        }
        if k == "constraints" {
            // ["hostname", "UNIQUE", ""] is rendered without the empty value.
            assert_eq!(out[k].as_array().map(Vec::len), v.as_array().map(Vec::len), "{k}");
            continue;
        }
        if let Err(e) = contains(&out[k], v, &format!("/{k}")) {
            panic!("round trip of {}: {e}", input["id"]);
        }
    }
    assert_eq!(AppId::parse(input["id"].as_str().expect("id")).ok(), Some(spec.id.clone()));
    // What we render parses back to the same spec.
    let again = ok(out);
    assert_eq!(again, spec, "re-parse of rendered {}", input["id"]);
}

fn apps_in(v: &Value) -> Vec<Value> {
    if let Some(a) = v.get("apps").and_then(Value::as_array) {
        let mut out = a.clone();
        for g in v.get("groups").and_then(Value::as_array).into_iter().flatten() {
            out.extend(apps_in(g));
        }
        out
    } else if let Some(a) = v.get("app") {
        vec![a.clone()]
    } else if let Some(a) = v.as_array() {
        a.clone()
    } else {
        vec![v.clone()]
    }
}

// ---------------------------------------------------------------- fixtures

#[test]
fn system_test_apps_are_accepted_and_round_trip() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/marathon/system-tests/apps");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 20);
    for n in names {
        let v = reference(&format!("system-tests/apps/{n}"));
        assert_round_trip(&v);
    }
}

#[test]
fn system_test_apps_map_to_the_right_container_and_ports() {
    let s = ok(reference("system-tests/apps/ucr-docker-http-server.json"));
    assert_eq!(s.container.kind(), Some(ContainerKind::Mesos));
    assert_eq!(s.container.image(), Some("python:3.5-alpine"));
    assert_eq!(s.container.driver(), DriverKind::Oci);
    let s = ok(reference("system-tests/apps/docker-http-server.json"));
    assert_eq!(s.container.kind(), Some(ContainerKind::Docker));
    assert_eq!(s.container.image(), Some("python:3.5-alpine"));
    assert_eq!(s.container.driver(), DriverKind::Docker);
    assert_eq!(s.ports.len(), 1, "one mapping from docker.portMappings");
    let s = ok(reference("system-tests/apps/mesos-app.json"));
    // MESOS without an image runs the command as a plain process.
    assert_eq!(s.container.kind(), Some(ContainerKind::Mesos));
    assert_eq!(s.container.driver(), DriverKind::Exec);
    assert_eq!(s.command, Some(CommandSpec::Shell("sleep 1000".into())));
    // host networking without ports: Marathon's single default port definition
    assert_eq!(s.ports.len(), 1);
    assert_eq!(s.ports[0].name.as_deref(), Some("default"));
    let s = ok(reference("system-tests/apps/pinger-localhost-app.json"));
    assert!(s.require_ports);
    assert_eq!(s.ports[0].port, 7777);
    assert!(!s.fetch.is_empty() && !s.passthrough.contains_key("fetch"));
    // ipAddress (container networking) without port mappings: no ports
    let s = ok(reference("system-tests/apps/pinger-container-app.json"));
    assert!(s.ports.is_empty());
    let s = ok(reference("system-tests/apps/external-volume-mesos-app.json"));
    assert_eq!(s.health_checks[0].protocol, HealthProtocol::Http);
    assert_eq!(s.health_checks[0].port_index, Some(0));
    assert_eq!(s.health_checks[0].grace_period_seconds, 300.0);
    assert_eq!(s.upgrade.minimum_health_capacity, 0.0);
    let out = render_spec(&s);
    assert_eq!(out["healthChecks"][0]["protocol"], "MESOS_HTTP");
    let s = ok(reference("system-tests/apps/large-sleep.json"));
    assert_eq!(s.id.as_str(), "/sleep");
    let s = ok(reference("system-tests/apps/private-ucr-docker-app.json"));
    assert_eq!(render_spec(&s)["secrets"], json!({"pullConfigSecret": {"source": "/pullconfig"}}));
}

#[test]
fn api_example_app_has_cmd_and_args_so_marathon_rejects_it() {
    let e = rejected_at(reference("api-examples/app.json"), "/cmd");
    assert_eq!(e.message, "Object is not valid");
    // PASSWORD refers to secret "/db/password", which `secrets` does not declare.
    assert!(e.has_path("/env/PASSWORD"), "{}", e.to_json());
    // Without args (and with the secret declared) it is valid and round-trips.
    let mut v = reference("api-examples/app.json");
    let o = v.as_object_mut().expect("object");
    o.remove("args");
    o["secrets"]["/db/password"] = json!({"source": "/db/password"});
    assert_round_trip(&v);
    let s = ok(v);
    assert_eq!(s.constraints[0].op, ConstraintOp::Like);
    assert_eq!(s.kill_grace_seconds, 30.0);
    assert_eq!(s.backoff.max_launch_delay_seconds, 3600.0);
    assert_eq!(s.ports[0].port, 10019, "service port of the bridge mapping");
    assert_eq!(s.dependencies, vec![AppId::parse("/prod/group").expect("id")]);
    let out = render_spec(&s);
    assert_eq!(out["env"]["PASSWORD"], json!({"secret": "/db/password"}));
    assert_eq!(out["tty"], json!(true));
}

#[test]
fn api_examples_create_and_simple_are_accepted() {
    let apps = reference("api-examples/apps_create.json");
    let specs: Vec<AppSpec> = apps_in(&apps).into_iter().map(ok).collect();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].dependencies.len(), 2);
    assert_eq!(specs[0].resources.mem, 9.0);
    for a in apps_in(&apps) {
        assert_round_trip(&a);
    }
    let s = ok(reference("articles/app-simple.json"));
    assert_eq!(s.instances, 2);
    assert_eq!(s.resources.cpus, 0.1);
    assert_round_trip(&reference("articles/app-simple.json"));
    assert_round_trip(&reference("api-examples/app-check-http-example.json"));
}

#[test]
fn marathon_lb_fixtures_are_accepted() {
    let files = [
        "tests/1-nginx-marathon1.5.json",
        "tests/1-nginx.json",
        "tests/marathon15_apps.json",
        "tests/zdd_app_blue.json",
        "tests/zdd_app_blue_marathon1.5.json",
        "tests/zdd_apps.json",
        "ci-backends/docker_bridge.json",
        "ci-backends/docker_host.json",
        "ci-backends/docker_ippc.json",
        "ci-backends/ucr_bridge.json",
        "ci-backends/ucr_host.json",
        "ci-backends/ucr_ippc.json",
        "ci-backends_1.9/docker_bridge.json",
        "ci-backends_1.9/docker_host.json",
        "ci-backends_1.9/docker_ippc.json",
        "ci-backends_1.9/ucr_host.json",
    ];
    for f in files {
        let v = reference(&format!("marathon-lb/{f}"));
        for app in apps_in(&v) {
            assert_round_trip(&app);
        }
    }
    // GET output of Marathon 1.4 (bridge, service port 10000) keeps its service port.
    let s = ok(apps_in(&reference("marathon-lb/tests/zdd_apps.json"))[0].clone());
    assert_eq!(s.ports.iter().map(|p| p.port).collect::<Vec<_>>(), vec![10000]);
    assert_eq!(s.labels["HAPROXY_GROUP"], "external");
}

#[test]
fn benchmark_group_apps_are_accepted() {
    let apps = apps_in(&reference("benchmark/155_100.json"));
    assert_eq!(apps.len(), 100);
    for a in &apps {
        let s = ok(a.clone());
        assert_eq!(s.constraints.len(), 2);
        assert_eq!(s.constraints[0].op, ConstraintOp::Cluster);
        assert!(matches!(s.container, ContainerSpec::Docker { .. }));
        assert_round_trip(a);
    }
}

// ---------------------------------------------------------------- rules

fn base() -> Value {
    json!({"id": "/app", "cmd": "sleep 10"})
}

fn with(k: &str, v: Value) -> Value {
    let mut b = base();
    b[k] = v;
    b
}

#[test]
fn defaults_are_marathons() {
    let s = ok(base());
    assert_eq!(s.resources.cpus, 1.0);
    assert_eq!(s.resources.mem, 128.0);
    assert_eq!(s.resources.disk, 0.0);
    assert_eq!(s.resources.gpus, 0);
    assert_eq!(s.instances, 1);
    assert_eq!(s.backoff, BackoffPolicy::default());
    assert_eq!(s.kill_grace_seconds, 3.0);
    assert_eq!(s.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(s.upgrade, UpgradeStrategy::default());
    assert!(!s.require_ports);
    assert_eq!(s.ports.len(), 1);
    assert_eq!(s.ports[0].port, 0);
    assert!(s.passthrough.is_empty());
}

#[test]
fn malformed_json_is_400() {
    let e = parse_app(b"{\"id\": ").expect_err("bad json");
    assert_eq!(e.status, 400);
    assert_eq!(e.message, "Invalid JSON");
    let e = parse_app(br#"{"id": "/a", "cmd": "x", "cpus": "lots"}"#).expect_err("type");
    assert_eq!(e.status, 400);
    assert!(e.has_path("/cpus"));
    assert_eq!(e.details[0].errors[0], "error.expected.jsnumber");
    let e = parse_app(b"[1]").expect_err("array");
    assert_eq!(e.status, 400);
    let s = parse_app(br#"{"id": "a", "cmd": "x", "args": null, "container": null}"#).expect("nulls are absent");
    assert_eq!(s.id.as_str(), "/a");
}

#[test]
fn rule_cmd_and_args_exclusive() {
    rejected_at(with("args", json!(["a"])), "/cmd");
}

#[test]
fn rule_needs_cmd_args_or_image() {
    rejected_at(json!({"id": "/a"}), "/");
    rejected_at(json!({"id": "/a", "container": {"type": "MESOS"}}), "/");
    ok(json!({"id": "/a", "args": ["sleep", "1"]}));
    ok(json!({"id": "/a", "container": {"type": "MESOS", "docker": {"image": "x"}}}));
    rejected_at(json!({"id": "/a", "container": {"type": "DOCKER"}}), "/container/docker/image");
    rejected_at(json!({"id": "/a", "container": {"type": "RKT", "docker": {"image": "x"}}}), "/container/type");
    rejected_at(with("cmd", json!("")), "/cmd");
}

#[test]
fn rule_resources() {
    rejected_at(with("cpus", json!(0)), "/cpus");
    rejected_at(with("cpus", json!(-1)), "/cpus");
    ok(with("cpus", json!(0.001)));
    rejected_at(with("mem", json!(-1)), "/mem");
    rejected_at(with("disk", json!(-0.5)), "/disk");
    rejected_at(with("gpus", json!(-1)), "/gpus");
    rejected_at(with("instances", json!(-1)), "/instances");
    assert_eq!(err(with("instances", json!(1.5))).status, 400);
    assert_eq!(ok(with("instances", json!(3.0))).instances, 3);
}

#[test]
fn rule_id() {
    let e = rejected_at(with("id", json!("/Bad_Id")), "/id");
    assert!(e.details[0].errors[0].contains("regular expression"));
    rejected_at(with("id", json!("/a//b")), "/id");
    rejected_at(with("id", json!("/")), "/id");
    rejected_at(json!({"cmd": "x"}), "/id");
    assert_eq!(ok(with("id", json!("a/b/"))).id.as_str(), "/a/b");
}

#[test]
fn rule_constraints() {
    let c = |v: Value| with("constraints", json!([v]));
    rejected_at(c(json!(["hostname", "NEAR"])), "/constraints(0)");
    rejected_at(c(json!(["hostname"])), "/constraints(0)");
    rejected_at(c(json!(["hostname", "LIKE", "a", "b"])), "/constraints(0)");
    rejected_at(c(json!(["", "UNIQUE"])), "/constraints(0)");
    rejected_at(c(json!(["hostname", "LIKE"])), "/constraints(0)");
    rejected_at(c(json!(["hostname", "UNLIKE", "a("])), "/constraints(0)");
    rejected_at(c(json!(["hostname", "UNIQUE", "x"])), "/constraints(0)");
    rejected_at(c(json!(["hostname", "MAX_PER"])), "/constraints(0)");
    rejected_at(c(json!(["hostname", "MAX_PER", "two"])), "/constraints(0)");
    rejected_at(c(json!(["rack", "GROUP_BY", "x"])), "/constraints(0)");
    rejected_at(c(json!(["rack", "CLUSTER"])), "/constraints(0)");
    rejected_at(c(json!(["rack", "IS"])), "/constraints(0)");
    assert_eq!(err(c(json!("hostname:UNIQUE"))).status, 400);
    let s = ok(with(
        "constraints",
        json!([
            ["hostname", "UNIQUE"],
            ["hostname", "UNIQUE", ""],
            ["rack", "GROUP_BY"],
            ["rack", "GROUP_BY", "3"],
            ["hostname", "MAX_PER", "2"],
            ["hostname", "LIKE", "srv[0-9]+"],
            ["rack", "CLUSTER", "a"],
            ["os", "IS", "linux"]
        ]),
    ));
    assert_eq!(s.constraints.len(), 7, "duplicate UNIQUE folded");
    assert_eq!(s.constraints[0].value, None);
    assert_eq!(render_spec(&s)["constraints"][0], json!(["hostname", "UNIQUE"]));
    let e = rejected_at(with("constraints", json!([["a", "UNIQUE"], ["b", "NOPE"]])), "/constraints(1)");
    assert!(!e.has_path("/constraints(0)"));
}

#[test]
fn rule_ports() {
    let pd = |v: Value| with("portDefinitions", v);
    rejected_at(pd(json!([{"port": 0, "name": "web"}, {"port": 0, "name": "web"}])), "/portDefinitions(1)/name");
    rejected_at(pd(json!([{"name": "Web_1"}])), "/portDefinitions(0)/name");
    rejected_at(pd(json!([{"port": 70000}])), "/portDefinitions(0)/port");
    rejected_at(pd(json!([{"port": 8080}, {"port": 8080}])), "/portDefinitions(1)/port");
    rejected_at(pd(json!([{"protocol": "sctp"}])), "/portDefinitions(0)/protocol");
    let s = ok(pd(json!([])));
    assert!(s.ports.is_empty(), "an explicit empty list means no ports");
    let s = ok(with("ports", json!([0, 0])));
    assert_eq!(s.ports.len(), 2);
    let s = ok(pd(json!([{"port": 0, "name": "http", "protocol": "udp,tcp", "labels": {"VIP_0": "x"}}])));
    assert_eq!(s.ports[0].protocol, "udp,tcp");
    assert_eq!(s.ports[0].labels["VIP_0"], "x");
    rejected_at(
        json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "x"},
            "portMappings": [{"containerPort": 80, "name": "a"}, {"containerPort": 81, "name": "a"}]},
            "networks": [{"mode": "container/bridge"}]}),
        "/container/portMappings(1)/name",
    );
}

#[test]
fn rule_env_and_labels() {
    rejected_at(with("env", json!({"N": 1})), "/env/N");
    rejected_at(with("env", json!({"S": {"secret": "nope"}})), "/env/S");
    let mut v = with("env", json!({"A": "1", "S": {"secret": "db"}}));
    v["secrets"] = json!({"db": {"source": "/db/pw"}});
    let s = ok(v);
    assert_eq!(s.env.len(), 1);
    assert_eq!(s.secret_env["S"], "db");
    assert_eq!(s.secrets["db"].source, "/db/pw");
    assert!(!s.passthrough.contains_key("env") && !s.passthrough.contains_key("secrets"));
    rejected_at(with("labels", json!({"a": 1})), "/labels/a");
}

#[test]
fn rule_upgrade_and_backoff() {
    rejected_at(
        with("upgradeStrategy", json!({"minimumHealthCapacity": 1.5})),
        "/upgradeStrategy/minimumHealthCapacity",
    );
    rejected_at(with("upgradeStrategy", json!({"maximumOverCapacity": -0.1})), "/upgradeStrategy/maximumOverCapacity");
    rejected_at(with("backoffFactor", json!(0.5)), "/backoffFactor");
    rejected_at(with("backoffSeconds", json!(-1)), "/backoffSeconds");
    rejected_at(with("maxLaunchDelaySeconds", json!(-1)), "/maxLaunchDelaySeconds");
    rejected_at(with("taskKillGracePeriodSeconds", json!(-1)), "/taskKillGracePeriodSeconds");
    rejected_at(with("killSelection", json!("RANDOM")), "/killSelection");
    let s = ok(with("upgradeStrategy", json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0})));
    assert_eq!(s.upgrade.minimum_health_capacity, 0.5);
    assert_eq!(s.upgrade.maximum_over_capacity, 0.0);
    assert_eq!(ok(with("killSelection", json!("OLDEST_FIRST"))).kill_selection, KillSelection::OldestFirst);
}

#[test]
fn rule_health_checks() {
    let hc = |v: Value| with("healthChecks", json!([v]));
    rejected_at(hc(json!({"protocol": "GOPHER"})), "/healthChecks(0)/protocol");
    rejected_at(hc(json!({"protocol": "COMMAND"})), "/healthChecks(0)");
    rejected_at(hc(json!({"port": 80, "portIndex": 0})), "/healthChecks(0)");
    rejected_at(hc(json!({"portIndex": 1})), "/healthChecks(0)");
    rejected_at(hc(json!({"intervalSeconds": -1})), "/healthChecks(0)/intervalSeconds");
    let s = ok(hc(json!({})));
    let h = &s.health_checks[0];
    assert_eq!(h.protocol, HealthProtocol::Http);
    assert_eq!(h.path.as_deref(), Some("/"));
    assert_eq!(h.port_index, Some(0));
    assert_eq!(
        (h.grace_period_seconds, h.interval_seconds, h.timeout_seconds, h.delay_seconds),
        (300.0, 60.0, 20.0, 15.0)
    );
    assert_eq!(h.max_consecutive_failures, 3);
    assert!(!h.ignore_http1xx);
    let s = ok(hc(json!({"protocol": "COMMAND", "command": {"value": "true"}})));
    assert_eq!(s.health_checks[0].command.as_deref(), Some("true"));
    assert_eq!(s.health_checks[0].port_index, None);
    let s = ok(hc(json!({"protocol": "MESOS_TCP", "port": 8080})));
    assert_eq!(s.health_checks[0].protocol, HealthProtocol::Tcp);
    assert_eq!(s.health_checks[0].path, None);
    assert_eq!(render_spec(&s)["healthChecks"][0]["protocol"], "MESOS_TCP");
}

#[test]
fn rule_readiness_port_name() {
    let mut v = with("readinessChecks", json!([{"name": "r", "protocol": "HTTP", "path": "/", "portName": "api"}]));
    rejected_at(v.clone(), "/readinessChecks(0)");
    v["portDefinitions"] = json!([{"port": 0, "name": "api"}]);
    ok(v);
}

#[test]
fn readiness_checks_are_typed_with_marathon_defaults_and_round_trip() {
    let mut v = with("readinessChecks", json!([{"path": "/ready", "httpStatusCodesForReady": [200, 204]}]));
    v["portDefinitions"] = json!([{"port": 0, "name": "http"}]);
    let s = ok(v);
    let rc = &s.readiness_checks[0];
    assert_eq!((rc.name.as_str(), rc.path.as_str(), rc.port_name.as_str()), ("readinessCheck", "/ready", "http"));
    assert_eq!((rc.interval_seconds, rc.timeout_seconds), (30.0, 10.0));
    assert_eq!(rc.http_status_codes_for_ready, vec![200, 204]);
    assert!(!s.passthrough.contains_key("readinessChecks"));
    let out = render_spec(&s);
    assert_eq!(out["readinessChecks"][0]["protocol"], "HTTP");
    assert_eq!(out["readinessChecks"][0]["intervalSeconds"], 30);
    let back = ok(out);
    assert_eq!(back.readiness_checks, s.readiness_checks);
    let mut bad = with("readinessChecks", json!([{"protocol": "TCP", "intervalSeconds": 5, "timeoutSeconds": 5}]));
    bad["portDefinitions"] = json!([{"port": 0, "name": "http"}]);
    rejected_at(bad.clone(), "/readinessChecks(0)/protocol");
    rejected_at(bad, "/readinessChecks(0)");
}

#[test]
fn rule_dependencies_resolve_relative_to_the_group() {
    let mut v = with("dependencies", json!(["db", "/other/x", "../top"]));
    v["id"] = json!("/prod/web");
    let s = ok(v);
    let ids: Vec<&str> = s.dependencies.iter().map(|d| d.as_str()).collect();
    assert_eq!(ids, vec!["/prod/db", "/other/x", "/top"]);
    rejected_at(with("dependencies", json!(["BAD"])), "/dependencies(0)");
}

#[test]
fn path_prefix_applies_to_details() {
    let e = app_from_value(with("cpus", json!(0)), "/apps(3)").expect_err("invalid");
    assert!(e.has_path("/apps(3)/cpus"), "{}", e.to_json());
}

#[test]
fn unknown_and_unmodelled_fields_are_kept() {
    let mut v = base();
    v["acceptedResourceRoles"] = json!(["*"]);
    v["unreachableStrategy"] = json!("disabled");
    v["role"] = json!("slave_public");
    v["somethingNew"] = json!({"a": [1, 2]});
    v["tasksRunning"] = json!(5);
    let s = ok(v.clone());
    assert!(!s.passthrough.contains_key("tasksRunning"));
    let out = render_spec(&s);
    for k in ["acceptedResourceRoles", "unreachableStrategy", "role", "somethingNew"] {
        assert_eq!(out[k], v[k], "{k}");
    }
    assert_eq!(out["tasksRunning"], json!(0));
}

// ---------------------------------------------------------------- merge

#[test]
fn merge_keeps_absent_fields_and_url_id_wins() {
    let mut existing = ok(json!({"id": "/a", "cmd": "sleep 1", "cpus": 0.5, "instances": 2,
        "env": {"A": "1"}, "labels": {"l": "v"}, "healthChecks": [{"protocol": "MESOS_HTTP"}]}));
    existing.ports[0].port = 10000; // as the store assigns it
    let id = AppId::parse("/a").expect("id");
    let m = merge_app(&existing, &id, json!({"id": "/elsewhere", "instances": 5})).expect("merge");
    assert_eq!(m.id, id);
    assert_eq!(m.instances, 5);
    assert_eq!(m.resources.cpus, 0.5);
    assert_eq!(m.env, existing.env);
    assert_eq!(m.ports[0].port, 10000, "assigned service port kept");
    assert!(!existing.config_differs(&m), "a scale is not a config change");
    let mut scaled_back = m.clone();
    scaled_back.instances = existing.instances;
    assert_eq!(scaled_back, existing);
}

#[test]
fn merge_switches_cmd_and_args() {
    let existing = ok(base());
    let id = existing.id.clone();
    let m = merge_app(&existing, &id, json!({"args": ["sleep", "5"]})).expect("merge");
    assert_eq!(m.command, Some(CommandSpec::Argv(vec!["sleep".into(), "5".into()])));
    let m = merge_app(&m, &id, json!({"cmd": "echo"})).expect("merge back");
    assert_eq!(m.command, Some(CommandSpec::Shell("echo".into())));
}

#[test]
fn merge_revalidates_and_replaces_whole_fields() {
    let existing = ok(with("env", json!({"A": "1", "B": "2"})));
    let id = existing.id.clone();
    let e = merge_app(&existing, &id, json!({"cpus": -1})).expect_err("invalid");
    assert_eq!(e.status, 422);
    assert!(e.has_path("/cpus"));
    let m = merge_app(&existing, &id, json!({"env": {"C": "3"}})).expect("merge");
    assert_eq!(m.env.keys().collect::<Vec<_>>(), vec!["C"]);
    assert_eq!(merge_app(&existing, &id, json!([])).expect_err("array").status, 400);
}

#[test]
fn merge_to_bridge_networking_takes_ports_from_mappings() {
    let existing = ok(with("portDefinitions", json!([{"port": 0, "name": "a"}, {"port": 0}])));
    let id = existing.id.clone();
    let m = merge_app(
        &existing,
        &id,
        json!({"networks": [{"mode": "container/bridge"}],
               "container": {"type": "DOCKER", "docker": {"image": "nginx"},
                             "portMappings": [{"containerPort": 80, "name": "web"}]}}),
    )
    .expect("merge");
    assert_eq!(m.ports.len(), 1);
    assert_eq!(m.ports[0].name.as_deref(), Some("web"));
    assert_eq!(render_spec(&m)["portDefinitions"], json!([]));
}

// ---------------------------------------------------------------- service ports

#[test]
fn assigned_service_ports_render_in_the_container_port_mappings() {
    // bridge: the service port the store assigned shows in the port mappings
    let mut s = ok(json!({"id": "/b", "container": {"type": "DOCKER", "docker": {"image": "x",
        "network": "BRIDGE", "portMappings": [{"containerPort": 80, "hostPort": 0}]}}}));
    s.ports[0].port = 10000;
    let out = render_spec(&s);
    assert_eq!(out["container"]["docker"]["portMappings"][0]["servicePort"], 10000);
    assert_eq!(out["ports"], json!([10000]));
}

// ---------------------------------------------------------------- rendering

fn state_with_app(spec: AppSpec) -> (ClusterState, AppId) {
    let id = spec.id.clone();
    let mut st = ClusterState::default();
    st.apps.insert(id.clone(), app_of(spec));
    (st, id)
}

fn task(app: &AppId, n: u128, state: TaskState, healthy: Option<bool>) -> Task {
    Task {
        id: TaskId::new(app, uuid_of(n), 1),
        app_id: app.clone(),
        node: NodeId(1),
        host: "10.0.0.5".into(),
        app_version: UnixMillis(1_440_628_404_225),
        ports: vec![31000],
        resources: Resources::default(),
        state,
        goal: TaskGoal::Running,
        staged_at: UnixMillis(1_440_628_400_000),
        started_at: Some(UnixMillis(1_440_628_401_000)),
        updated_at: UnixMillis(1_440_628_401_000),
        message: None,
        healthy,
        health: None,
        ready: None,
        readiness: Vec::new(),
        job_run: None,
        container_ip: None,
    }
}

fn uuid_of(n: u128) -> uuid::Uuid {
    uuid::Uuid::from_u128(n)
}

#[test]
fn render_app_counts_and_embeds() {
    let spec = ok(json!({"id": "/web", "cmd": "x", "instances": 3,
        "healthChecks": [{"protocol": "HTTP"}]}));
    let (mut st, id) = state_with_app(spec);
    for (n, state, h) in [
        (1, TaskState::Running, Some(true)),
        (2, TaskState::Running, Some(false)),
        (3, TaskState::Staging, None),
        (4, TaskState::Failed, None),
    ] {
        let t = task(&id, n, state, h);
        st.tasks.insert(t);
    }
    let d = Deployment {
        id: DeploymentId("dep-1".into()),
        version: UnixMillis(0),
        affected_apps: vec![id.clone()],
        steps: vec![Step { actions: vec![(DeploymentAction::StartApplication, id.clone())] }],
        current_step: 1,
        started_at: UnixMillis(0),
    };
    st.deployments.insert(d.id.clone(), d);
    let app = st.apps[&id].clone();
    let out = render_app(&app, &st, &Embed::default());
    assert_eq!(out["tasksRunning"], 2);
    assert_eq!(out["tasksStaged"], 1);
    assert_eq!(out["tasksHealthy"], 1);
    assert_eq!(out["tasksUnhealthy"], 1);
    assert_eq!(out["deployments"], json!([{"id": "dep-1"}]));
    assert_eq!(out["version"], "2015-08-26T22:33:24.225Z");
    assert_eq!(out["versionInfo"]["lastConfigChangeAt"], "2015-08-26T22:33:24.225Z");
    assert!(out.get("tasks").is_none());
    // every field of Marathon's app shape is there
    let shape = reference("api-examples/app.json");
    for k in shape.as_object().expect("object").keys() {
        assert!(k == "tty" || out.get(k).is_some(), "missing {k}");
    }
    for k in ["ports", "requirePorts", "residency", "storeUrls", "uris", "executor", "gpus"] {
        assert!(out.get(k).is_some(), "missing {k}");
    }
    let embed = Embed::parse(&["apps.tasks".into(), "apps.lastTaskFailure,apps.readiness".into()]);
    let mut app = app;
    app.last_task_failure = Some(TaskFailure {
        task_id: TaskId::new(&id, uuid_of(4), 1),
        state: TaskState::Failed,
        message: "exit 1".into(),
        host: "10.0.0.5".into(),
        timestamp: UnixMillis(0),
        version: UnixMillis(0),
    });
    let out = render_app(&app, &st, &embed);
    assert_eq!(out["tasks"].as_array().map(Vec::len), Some(3), "terminal task left out");
    assert_eq!(out["lastTaskFailure"]["state"], "TASK_FAILED");
    assert_eq!(out["lastTaskFailure"]["appId"], "/web");
    assert_eq!(out["readinessCheckResults"], json!([]));
}

#[test]
fn embed_parse_accepts_list_and_single_forms() {
    let e = Embed::parse(&["app.tasks".into(), "app.counts".into()]);
    assert!(e.tasks && e.counts && !e.deployments);
    let e = Embed::parse(&["apps.deployments".into(), "apps.failures".into(), "bogus".into()]);
    assert!(e.deployments && e.last_task_failure && !e.tasks);
    assert_eq!(Embed::parse(&[]), Embed::default());
}

#[test]
fn render_task_has_marathon_shape() {
    let mut spec = ok(json!({"id": "/web", "cmd": "x", "healthChecks": [{}]}));
    spec.ports[0].port = 10000; // as the store assigns it
    let (st, id) = state_with_app(spec);
    let t = task(&id, 7, TaskState::Running, Some(true));
    let out = render_task(&t, &st);
    assert_eq!(out["id"], t.id.as_str());
    assert_eq!(out["appId"], "/web");
    assert_eq!(out["host"], "10.0.0.5");
    assert_eq!(out["ports"], json!([31000]));
    assert_eq!(out["servicePorts"], json!([10000]));
    assert_eq!(out["slaveId"], "1");
    assert_eq!(out["state"], "TASK_RUNNING");
    assert_eq!(out["stagedAt"], "2015-08-26T22:33:20.000Z");
    assert_eq!(out["startedAt"], "2015-08-26T22:33:21.000Z");
    assert_eq!(out["version"], "2015-08-26T22:33:24.225Z");
    assert_eq!(out["ipAddresses"], json!([{"ipAddress": "10.0.0.5", "protocol": "IPv4"}]));
    assert_eq!(out["healthCheckResults"][0]["alive"], true);
    let shape = reference("api-examples/tasks.json");
    for k in shape["tasks"][0].as_object().expect("object").keys() {
        if !matches!(k.as_str(), "region" | "zone") {
            assert!(out.get(k).is_some(), "missing {k}");
        }
    }
    let staging = task(&id, 8, TaskState::Staging, None);
    let mut staging = staging;
    staging.started_at = None;
    let out = render_task(&staging, &st);
    assert_eq!(out["startedAt"], Value::Null);
    assert_eq!(out["healthCheckResults"], json!([]));
}

#[test]
fn render_deployment_has_marathon_shape() {
    let a = AppId::parse("/a").expect("id");
    let b = AppId::parse("/b").expect("id");
    let d = Deployment {
        id: DeploymentId("97c136bf".into()),
        version: UnixMillis(1_443_604_157_614),
        affected_apps: vec![a.clone(), b.clone()],
        steps: vec![
            Step { actions: vec![(DeploymentAction::StartApplication, a.clone())] },
            Step { actions: vec![(DeploymentAction::ScaleApplication, b.clone())] },
        ],
        current_step: 2,
        started_at: UnixMillis(0),
    };
    let out = render_deployment(&d, &ClusterState::default());
    assert_eq!(
        out,
        json!({
            "id": "97c136bf",
            "version": "2015-09-30T09:09:17.614Z",
            "affectedApps": ["/a", "/b"],
            "affectedPods": [],
            "steps": [
                {"actions": [{"action": "StartApplication", "app": "/a"}]},
                {"actions": [{"action": "ScaleApplication", "app": "/b"}]}
            ],
            "currentActions": [{"action": "ScaleApplication", "app": "/b", "readinessCheckResults": []}],
            "currentStep": 2,
            "totalSteps": 2
        })
    );
    let shape = reference("api-examples/deployments.json");
    for k in shape[0].as_object().expect("object").keys() {
        assert!(out.get(k).is_some(), "missing {k}");
    }
}

#[test]
fn render_queue_lists_apps_missing_tasks() {
    let spec = ok(json!({"id": "/q", "cmd": "x", "instances": 3}));
    let (mut st, id) = state_with_app(spec);
    let t = task(&id, 1, TaskState::Running, None);
    st.tasks.insert(t);
    let full = ok(json!({"id": "/full", "cmd": "x", "instances": 0}));
    st.apps.insert(full.id.clone(), app_of(full));
    let now = UnixMillis(1_440_628_410_000);
    st.apps.get_mut(&id).expect("app").backoff =
        LaunchBackoff { delay_seconds: 4.0, not_before: UnixMillis(1_440_628_414_000) };
    let out = render_queue(&st, now, &Default::default(), false);
    let q = out["queue"].as_array().expect("queue");
    assert_eq!(q.len(), 1);
    assert_eq!(q[0]["app"]["id"], "/q");
    assert_eq!(q[0]["count"], 2);
    assert_eq!(q[0]["delay"], json!({"timeLeftSeconds": 4, "overdue": false}));
    let later = render_queue(&st, UnixMillis(1_440_628_420_000), &Default::default(), false);
    assert_eq!(later["queue"][0]["delay"]["overdue"], true);
    // Exactly Marathon's keys: those of the fixture's first item, without
    // `role` (marathon-python 0.13.0 rejects it) and `lastUnusedOffers`
    // (only with embed=lastUnusedOffers).
    let shape = reference("api-examples/queue.json");
    let want: BTreeSet<&String> =
        shape["queue"][0].as_object().expect("object").keys().filter(|k| *k != "role").collect();
    let got: BTreeSet<&String> = q[0].as_object().expect("object").keys().collect();
    assert_eq!(got, want);
    let embedded = render_queue(&st, now, &Default::default(), true);
    assert_eq!(embedded["queue"][0]["lastUnusedOffers"], json!([]));
}

#[test]
fn render_queue_summarises_declines_in_marathons_funnel() {
    let spec = ok(json!({"id": "/u", "cmd": "x", "instances": 1, "constraints": [["hostname", "UNIQUE"]]}));
    let (st, id) = state_with_app(spec);
    let mut o = OfferSummary::default();
    o.decline(DeclineReason::UnfulfilledConstraint);
    o.decline(DeclineReason::InsufficientCpus);
    o.decline(DeclineReason::InsufficientMemory);
    let now = UnixMillis(1_440_628_410_000);
    let out = render_queue(&st, now, &[(id, o)].into(), false);
    let summary = &out["queue"][0]["processedOffersSummary"];
    assert_eq!(summary["processedOffersCount"], 3);
    assert_eq!(summary["unusedOffersCount"], 3);
    assert_eq!(summary["lastUnusedOfferAt"], format_time(now));
    let fixture = reference("api-examples/queue.json");
    let fixture_summary = &fixture["queue"][1]["processedOffersSummary"];
    let keys = |v: &Value| v.as_object().expect("object").keys().cloned().collect::<BTreeSet<_>>();
    // Marathon's keys, except lastUsedOfferAt: no node took a task.
    let mut want = keys(fixture_summary);
    want.remove("lastUsedOfferAt");
    assert_eq!(keys(summary), want);
    for list in ["rejectSummaryLastOffers", "rejectSummaryLaunchAttempt"] {
        let steps = summary[list].as_array().expect("steps");
        let names: Vec<&str> = steps.iter().map(|s| s["reason"].as_str().expect("reason")).collect();
        assert_eq!(
            names,
            [
                "UnfulfilledRole",
                "UnfulfilledConstraint",
                "NoCorrespondingReservationFound",
                "AgentMaintenance",
                "InsufficientCpus",
                "InsufficientMemory",
                "InsufficientDisk",
                "InsufficientGpus",
                "InsufficientPorts",
                "DeclinedScarceResources"
            ]
        );
        // Every name is one Marathon uses (the fixture omits InsufficientPorts).
        let known: BTreeSet<&str> = fixture_summary["rejectSummaryLaunchAttempt"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| s["reason"].as_str())
            .collect();
        assert!(names.iter().all(|n| known.contains(n) || *n == "InsufficientPorts"), "{names:?}");
        assert_eq!(steps[1], json!({"reason": "UnfulfilledConstraint", "declined": 1, "processed": 3}));
        assert_eq!(steps[4], json!({"reason": "InsufficientCpus", "declined": 1, "processed": 2}));
        assert_eq!(steps[5], json!({"reason": "InsufficientMemory", "declined": 1, "processed": 1}));
        assert_eq!(steps[6], json!({"reason": "InsufficientDisk", "declined": 0, "processed": 0}));
    }
}

#[test]
fn api_example_patches_merge_onto_created_apps() {
    let created: Vec<AppSpec> = apps_in(&reference("api-examples/apps_create.json")).into_iter().map(ok).collect();
    for patch in apps_in(&reference("api-examples/apps_patch.json")) {
        let id = AppId::parse(patch["id"].as_str().expect("id")).expect("id");
        let existing = created.iter().find(|s| s.id == id).expect("created");
        let merged = merge_app(existing, &id, patch.clone()).expect("merge");
        if let Some(c) = patch.get("cpus") {
            assert_eq!(Some(merged.resources.cpus), c.as_f64());
        }
        assert_eq!(merged.command, existing.command);
        assert_eq!(merged.dependencies, existing.dependencies);
    }
    let app = ok(json!({"id": "/foo", "cmd": "sleep 1"}));
    let id = app.id.clone();
    let merged = merge_app(&app, &id, reference("api-examples/app_patch.json")).expect("merge");
    assert_eq!(merged.instances, 2);
}

// ---------------------------------------------------------------- containers

#[test]
fn persistent_volumes_are_typed_make_the_app_resident_and_follow_marathons_rules() {
    let app = |vol: Value| json!({"id": "/db", "cmd": "x", "container": {"type": "MESOS", "docker": {"image": "a/b:1"}, "volumes": [vol]}});
    let input = app(json!({"containerPath": "data", "mode": "RW", "persistent": {"size": 64, "type": "root"}}));
    let s = ok(input.clone());
    let c = s.container.container().expect("container");
    assert_eq!(c.volumes[0].persistent, Some(model::PersistentVolume { size_mb: 64 }));
    assert!(s.container.has_persistent_volumes());
    // Resident instances are replaced in place: no over-capacity.
    assert_eq!((s.upgrade.minimum_health_capacity, s.upgrade.maximum_over_capacity), (0.5, 0.0));
    assert_eq!(render_spec(&s)["container"]["volumes"][0]["persistent"], json!({"size": 64, "type": "root"}));
    assert_round_trip(&input);
    rejected_at(
        app(json!({"containerPath": "/data", "mode": "RW", "persistent": {"size": 1}})),
        "/container/volumes(0)/containerPath",
    );
    rejected_at(
        app(json!({"containerPath": "d", "mode": "RW", "persistent": {"size": 0}})),
        "/container/volumes(0)/persistent/size",
    );
    rejected_at(
        app(json!({"containerPath": "d", "mode": "RW", "persistent": {}})),
        "/container/volumes(0)/persistent/size",
    );
    let mut over = app(json!({"containerPath": "d", "mode": "RW", "persistent": {"size": 1}}));
    over["upgradeStrategy"] = json!({"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5});
    rejected_at(over, "/upgradeStrategy/maximumOverCapacity");
}

#[test]
fn pull_config_names_a_declared_secret() {
    let app = |pull: Value| json!({"id": "/p", "cmd": "x", "container": {"type": "MESOS", "docker": {"image": "a/b:1", "pullConfig": pull}}});
    let e = rejected_at(app(json!({"secret": "nope"})), "/container/docker/pullConfig/secret");
    assert!(e.to_json().to_string().contains("undefined secret named 'nope'"), "{}", e.to_json());
    // Wrong JSON types are 400s, as everywhere.
    assert!(err(app(json!({"secret": 3}))).has_path("/container/docker/pullConfig/secret"));
    assert!(err(app(json!("config"))).has_path("/container/docker/pullConfig"));
}

#[test]
fn docker_container_fields_are_typed_and_render_as_given() {
    let input = json!({"id": "/d", "cmd": "httpd", "networks": [{"mode": "container/bridge"}],
        "secrets": {"s": {"source": "/registry/config"}},
        "container": {"type": "DOCKER",
            "docker": {"image": "wharf-test/busybox:1", "privileged": true, "forcePullImage": true,
                       "parameters": [{"key": "hostname", "value": "h1"}], "pullConfig": {"secret": "s"}},
            "volumes": [{"containerPath": "data", "hostPath": "/tmp/x", "mode": "RO"},
                        {"containerPath": "p", "mode": "RW", "persistent": {"size": 10}}],
            "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp", "name": "web"}]}});
    let s = ok(input.clone());
    let ContainerSpec::Docker(c) = &s.container else { panic!("not docker: {:?}", s.container) };
    assert_eq!(c.image.as_deref(), Some("wharf-test/busybox:1"));
    assert!(c.privileged && c.force_pull_image);
    assert_eq!(c.parameters, vec![("hostname".to_string(), "h1".to_string())]);
    assert_eq!(c.network, NetworkMode::Bridge);
    assert_eq!(
        c.volumes[0],
        Volume {
            container_path: "data".into(),
            host_path: Some("/tmp/x".into()),
            mode: VolumeMode::Ro,
            persistent: None,
            secret: None
        }
    );
    assert_eq!(c.volumes[1].host_path, None);
    assert_eq!(
        c.port_mappings,
        vec![PortMapping { container_port: 80, host_port: 0, protocol: "tcp".into(), name: Some("web".into()) }]
    );
    assert_eq!(c.pull_config.as_deref(), Some("s"));
    assert_eq!(c.volumes[1].persistent, Some(model::PersistentVolume { size_mb: 10 }));
    // Everything here is typed: nothing is left over.
    assert_eq!(s.passthrough.get("container"), None, "{:?}", s.passthrough);
    let out = render_spec(&s);
    let mut want = input["container"].clone();
    want["portMappings"][0]["servicePort"] = json!(0);
    assert_eq!(out["container"], want);
    assert_round_trip(&input);
}

#[test]
fn an_app_made_in_code_renders_marathons_full_container() {
    let mut s = AppSpec::new(AppId::parse("/x").expect("id"));
    s.container = ContainerSpec::Docker(Container { image: Some("busybox".into()), ..Container::default() });
    let out = render_spec(&s);
    assert_eq!(
        out["container"],
        json!({"type": "DOCKER", "docker": {"image": "busybox", "privileged": false, "parameters": [],
               "forcePullImage": false}, "volumes": []})
    );
}

#[test]
fn rule_image_reference_and_volume_paths() {
    let e = rejected_at(
        json!({"id": "/a", "container": {"type": "DOCKER", "docker": {"image": "Not A/Valid:ref"}}}),
        "/container/docker/image",
    );
    assert!(format!("{e:?}").contains("not a valid image reference"), "{e:?}");
    rejected_at(
        json!({"id": "/a", "container": {"type": "MESOS", "docker": {"image": "x:"}}}),
        "/container/docker/image",
    );
    let e = rejected_at(
        json!({"id": "/a", "cmd": "x", "container": {"type": "DOCKER", "docker": {"image": "x"},
               "volumes": [{"containerPath": "../../etc", "hostPath": "/tmp", "mode": "RW"}]}}),
        "/container/volumes(0)/containerPath",
    );
    assert!(format!("{e:?}").contains("escape the sandbox"), "{e:?}");
    rejected_at(
        json!({"id": "/a", "cmd": "x", "container": {"type": "DOCKER", "docker": {"image": "x"},
               "volumes": [{"containerPath": "/data", "hostPath": "/tmp", "mode": "RX"}]}}),
        "/container/volumes(0)/mode",
    );
    ok(json!({"id": "/a", "cmd": "x", "container": {"type": "DOCKER", "docker": {"image": "x"},
              "volumes": [{"containerPath": "/data/..x", "hostPath": "/tmp", "mode": "RO"}]}}));
}

#[test]
fn file_secrets_are_typed_checked_and_round_trip() {
    let mut v = with(
        "container",
        json!({"type": "MESOS", "volumes": [{"containerPath": "secrets/db", "secret": "db"},
                                             {"containerPath": "data", "hostPath": "/tmp/d", "mode": "RO"}]}),
    );
    v["secrets"] = json!({"db": {"source": "/prod/db"}});
    v["env"] = json!({"PW": {"secret": "db"}});
    assert_round_trip(&v);
    let s = ok(v.clone());
    let c = s.container.container().expect("container");
    assert_eq!(c.volumes[0].secret.as_deref(), Some("db"));
    assert_eq!(c.volumes[0].host_path, None);
    assert_eq!(s.secret_names().collect::<Vec<_>>(), ["db", "db"]);
    assert_eq!(render_spec(&s)["container"]["volumes"][0], json!({"containerPath": "secrets/db", "secret": "db"}));

    let mut undeclared = v.clone();
    undeclared["container"]["volumes"][0]["secret"] = json!("nope");
    rejected_at(undeclared, "/container/volumes(0)/secret");
    let mut absolute = v.clone();
    absolute["container"]["volumes"][0]["containerPath"] = json!("/etc/pw");
    rejected_at(absolute, "/container/volumes(0)/containerPath");
    let mut both = v.clone();
    both["container"]["volumes"][0]["hostPath"] = json!("/tmp");
    rejected_at(both, "/container/volumes(0)/secret");
    let mut bad_source = v;
    bad_source["secrets"]["db"]["source"] = json!("a/../b");
    rejected_at(bad_source, "/secrets/db/source");
}

// ---------------------------------------------------------------- fetch

#[test]
fn fetch_is_typed_with_marathons_defaults_and_renders_back() {
    let v = with(
        "fetch",
        json!([{"uri": "https://foo.com/setup.py"},
               {"uri": "https://foo.com/archive.zip", "executable": false, "extract": true, "cache": true, "destPath": "newname.zip"},
               {"uri": "/opt/tools/run.sh", "executable": true, "extract": false}]),
    );
    let s = ok(v);
    assert_eq!(s.fetch.len(), 3);
    assert_eq!(
        s.fetch[0],
        Artifact {
            uri: "https://foo.com/setup.py".into(),
            executable: false,
            extract: true,
            cache: false,
            dest_path: None
        }
    );
    assert_eq!(s.fetch[1].dest_path.as_deref(), Some("newname.zip"));
    assert!(s.fetch[2].executable && !s.fetch[2].extract);
    let out = render_spec(&s);
    assert_eq!(
        out["fetch"][0],
        json!({"uri": "https://foo.com/setup.py", "extract": true, "executable": false, "cache": false})
    );
    assert_eq!(out["fetch"][1]["destPath"], "newname.zip");
    assert_eq!(out["uris"], json!([]));
    // What GET shows parses back to the same spec.
    assert_eq!(ok(out).fetch, s.fetch);
}

#[test]
fn legacy_uris_become_fetch_entries_extracting_archives() {
    let s = ok(with("uris", json!(["http://h/a/bundle.tgz", "file:///opt/run.sh"])));
    assert_eq!(s.fetch, vec![Artifact::from_uri("http://h/a/bundle.tgz"), Artifact::from_uri("file:///opt/run.sh")]);
    assert!(s.fetch[0].extract && !s.fetch[1].extract);
    let out = render_spec(&s);
    assert_eq!(out["fetch"][0]["uri"], "http://h/a/bundle.tgz");
    assert_eq!(out["uris"], json!([]));
    // A PATCH giving uris replaces the fetch list it renders.
    let patched = merge_app(&s, &s.id, json!({"uris": ["http://h/other.sh"]})).expect("merge");
    assert_eq!(patched.fetch, vec![Artifact::from_uri("http://h/other.sh")]);
}

#[test]
fn bad_fetch_entries_name_the_field() {
    rejected_at(with("fetch", json!([{"extract": true}])), "/fetch(0)/uri");
    rejected_at(with("fetch", json!([{"uri": "ftp://h/x.tgz"}])), "/fetch(0)/uri");
    rejected_at(with("fetch", json!([{"uri": "http://h/ok"}, {"uri": "relative/x"}])), "/fetch(1)/uri");
    rejected_at(with("fetch", json!([{"uri": "http://h/dir/"}])), "/fetch(0)/uri");
    rejected_at(with("fetch", json!([{"uri": "http://h/x", "destPath": "../../etc/x"}])), "/fetch(0)/destPath");
    rejected_at(with("fetch", json!([{"uri": "http://h/x", "destPath": "/etc/x"}])), "/fetch(0)/destPath");
    rejected_at(with("uris", json!(["s3://bucket/x"])), "/uris(0)");
    let mut both = with("uris", json!(["http://h/a"]));
    both["fetch"] = json!([{"uri": "http://h/b"}]);
    rejected_at(both, "/uris");
    let e = err(with("fetch", json!([{"uri": "http://h/x", "executable": "yes"}])));
    assert_eq!(e.status, 400, "{}", e.to_json());
    let e = rejected_at(with("fetch", json!([{"uri": "gopher://h/x"}])), "/fetch(0)/uri");
    assert!(e.to_json().to_string().contains("unsupported scheme 'gopher'"), "{}", e.to_json());
}
