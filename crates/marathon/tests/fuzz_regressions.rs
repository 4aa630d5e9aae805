//! Replays the committed fuzz inputs of the `marathon_app` and
//! `marathon_group` targets (`fuzz/regressions/<target>/`, crashes found by
//! `cargo fuzz`, and the seeds in `fuzz/corpus/<target>/`) through the same
//! entry points as the targets, on stable: each body is a spec or a clear
//! 4xx with a message, never a panic.

use marathon::groups::parse_group;
use marathon::ApiError;
use model::AppId;
#[path = "../../../fuzz/committed_inputs.rs"]
mod committed_inputs;

use committed_inputs::committed_inputs as inputs;
use std::path::Path;

fn clear(path: &Path, e: &ApiError) {
    assert!((400..500).contains(&e.status), "{}: status {} for {e:?}", path.display(), e.status);
    assert!(!e.message.is_empty(), "{}: no message: {e:?}", path.display());
}

const EXISTING: &str = r#"{"id": "/prod/web", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 32,
  "portDefinitions": [{"port": 0, "name": "http"}], "labels": {"HAPROXY_0_VHOST": "web.example"},
  "env": {"A": "1"}, "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0}],
  "constraints": [["hostname", "UNIQUE"]], "upgradeStrategy": {"minimumHealthCapacity": 0.5}}"#;

#[test]
fn committed_app_inputs_parse_and_merge_or_get_a_clear_4xx() {
    let old = marathon::parse_app(EXISTING.as_bytes()).expect("the existing app parses");
    for (path, body) in inputs("marathon_app") {
        if let Err(e) = marathon::parse_app(&body) {
            clear(&path, &e);
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else { continue };
        if let Err(e) = marathon::merge_app(&old, &old.id, value.clone()) {
            clear(&path, &e);
        }
        if let Err(e) = marathon::app_from_value(value, "") {
            clear(&path, &e);
        }
    }
}

#[test]
fn committed_group_inputs_parse_or_get_a_clear_4xx() {
    let id = AppId::parse("/prod").expect("id");
    for (path, body) in inputs("marathon_group") {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else { continue };
        for default_id in [None, Some(&id)] {
            if let Err(e) = parse_group(value.clone(), default_id) {
                clear(&path, &e);
            }
        }
    }
}
