//! Marathon app JSON as `POST /v2/apps` (`parse_app`), `PUT /v2/apps/{id}`
//! of a new app (`app_from_value`) and `PUT`/`PATCH` of an existing one
//! (`merge_app`) read it. Every body is a spec or a clear 4xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use marathon::ApiError;
use model::{AppId, AppSpec};
use std::sync::OnceLock;

const EXISTING: &str = r#"{"id": "/prod/web", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 32,
  "portDefinitions": [{"port": 0, "name": "http"}], "labels": {"HAPROXY_0_VHOST": "web.example"},
  "env": {"A": "1"}, "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0}],
  "constraints": [["hostname", "UNIQUE"]], "upgradeStrategy": {"minimumHealthCapacity": 0.5}}"#;

fn existing() -> &'static (AppId, AppSpec) {
    static APP: OnceLock<(AppId, AppSpec)> = OnceLock::new();
    APP.get_or_init(|| {
        let spec = marathon::parse_app(EXISTING.as_bytes()).expect("the existing app parses");
        (spec.id.clone(), spec)
    })
}

fn clear(e: &ApiError) {
    assert!((400..500).contains(&e.status), "status {} for {e:?}", e.status);
    assert!(!e.message.is_empty(), "no message: {e:?}");
}

fuzz_target!(|body: &[u8]| {
    if let Err(e) = marathon::parse_app(body) {
        clear(&e);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    let (id, old) = existing();
    if let Err(e) = marathon::merge_app(old, id, value.clone()) {
        clear(&e);
    }
    if let Err(e) = marathon::app_from_value(value, "") {
        clear(&e);
    }
});
