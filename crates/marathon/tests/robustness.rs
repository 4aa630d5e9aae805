//! Robustness of the wire-format parsers against arbitrary input, as
//! property tests in the normal suite (bounded: a fixed number of cases per
//! property). Fuzzing with cargo-fuzz would need nightly in CI; these run on
//! stable everywhere. Properties: no input panics; an app that parses
//! renders, and its rendering parses again to the same definition.

use marathon::groups::parse_group;
use marathon::{app_from_value, merge_app, parse_app, render_app, Embed};
use model::{App, AppId, AppSpec, ClusterState, UnixMillis};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Field names Marathon apps use, so generated objects reach the
/// validation of each field rather than stopping at an unknown key.
const APP_FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "instances",
    "env",
    "labels",
    "ports",
    "portDefinitions",
    "requirePorts",
    "constraints",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "taskKillGracePeriodSeconds",
    "killSelection",
    "upgradeStrategy",
    "healthChecks",
    "readinessChecks",
    "container",
    "dependencies",
    "user",
    "unreachableStrategy",
    "fetch",
    "uris",
    "networks",
    "secrets",
    "version",
    "executor",
    "acceptedResourceRoles",
];

const NESTED_FIELDS: &[&str] = &[
    "type",
    "docker",
    "image",
    "network",
    "portMappings",
    "containerPort",
    "hostPort",
    "servicePort",
    "protocol",
    "volumes",
    "containerPath",
    "hostPath",
    "mode",
    "parameters",
    "key",
    "value",
    "privileged",
    "forcePullImage",
    "name",
    "port",
    "path",
    "portIndex",
    "intervalSeconds",
    "timeoutSeconds",
    "gracePeriodSeconds",
    "maxConsecutiveFailures",
    "command",
    "minimumHealthCapacity",
    "maximumOverCapacity",
    "inactiveAfterSeconds",
    "expungeAfterSeconds",
    "labels",
    "secret",
    "source",
];

const WORDS: &[&str] = &[
    "/",
    "//",
    "..",
    "/a/../b",
    "DOCKER",
    "MESOS",
    "BRIDGE",
    "HOST",
    "tcp",
    "udp,tcp",
    "UNIQUE",
    "hostname",
    "busybox:1",
    "",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        prop::sample::select(vec![0i64, 1, -1, 65535, 65536, i64::MAX]).prop_map(|n| json!(n)),
        "[a-z/._:-]{0,12}".prop_map(Value::String),
        ".{0,8}".prop_map(Value::String),
        prop::sample::select(WORDS).prop_map(|s| Value::String(s.to_string())),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(NESTED_FIELDS), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())),
        ]
    })
}

/// An app-shaped object: Marathon's field names with arbitrary values,
/// usually with a valid id and command so deeper rules are reached.
fn app_json() -> impl Strategy<Value = Value> {
    (prop::collection::vec((prop::sample::select(APP_FIELDS), value()), 0..8), any::<bool>()).prop_map(
        |(kv, valid_base)| {
            let mut m = Map::new();
            if valid_base {
                m.insert("id".into(), json!("/fuzz/app"));
                m.insert("cmd".into(), json!("sleep 1"));
            }
            for (k, v) in kv {
                m.insert(k.to_string(), v);
            }
            Value::Object(m)
        },
    )
}

fn rendered(spec: AppSpec) -> Value {
    let app = App::new(spec, UnixMillis(1_000));
    render_app(&app, &ClusterState::default(), &Embed::default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_app(&bytes);
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            let _ = parse_group(v, None);
        }
    }

    #[test]
    fn an_app_that_parses_renders_and_parses_back_the_same(v in app_json()) {
        let body = serde_json::to_vec(&v).expect("encode");
        if let Ok(spec) = parse_app(&body) {
            let wire = rendered(spec.clone());
            let again = app_from_value(wire.clone(), "");
            prop_assert!(again.is_ok(), "rendering of {} does not parse: {} -> {:?}", v, wire, again.err());
            prop_assert_eq!(again.ok(), Some(spec), "input {}", v);
        }
    }

    #[test]
    fn merging_any_patch_never_panics(base in app_json(), patch in app_json()) {
        let Ok(spec) = parse_app(&serde_json::to_vec(&base).expect("encode")) else { return Ok(()) };
        let id = AppId::parse("/fuzz/app").expect("id");
        if let Ok(merged) = merge_app(&spec, &id, patch) {
            prop_assert!(app_from_value(rendered(merged), "").is_ok());
        }
    }

    #[test]
    fn group_shaped_json_never_panics(apps in prop::collection::vec(app_json(), 0..3), extra in value(), id in scalar()) {
        let group = json!({"id": id, "apps": apps, "groups": [{"id": "sub", "apps": extra.clone()}], "dependencies": extra});
        let _ = parse_group(group, None);
    }
}
