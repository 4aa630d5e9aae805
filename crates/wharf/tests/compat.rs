//! Marathon's own system-test app definitions that use only `cmd`/`args`
//! are accepted and run. (`/opt/mesosphere/bin/python` is DC/OS's python;
//! here it is `python3`.)

mod common;

use common::{reference_dir, Node};
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn command_only(v: &Value) -> bool {
    let c = &v["container"];
    let image = c["docker"]["image"].is_string();
    (v["cmd"].is_string() || v["args"].is_array())
        && !image
        && c["volumes"].as_array().is_none_or(|a| a.is_empty())
        && v["fetch"].as_array().is_none_or(|a| a.is_empty())
        && v.get("ipAddress").is_none()
        && v.get("networks").is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_system_test_apps_run() {
    let node = Node::start_with(&["--resources", "cpus:16;mem:8192"]).await;
    let dir = reference_dir().join("marathon/system-tests/apps");
    let mut ran = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir).expect("fixtures").filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let text = std::fs::read_to_string(e.path()).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        if !command_only(&v) {
            continue;
        }
        let text = text.replace("/opt/mesosphere/bin/python", "python3");
        let (s, body) = node.raw(Method::POST, "/v2/apps", &text).await;
        assert_eq!(s, StatusCode::CREATED, "{}: {body}", e.path().display());
        let id = body["id"].as_str().expect("id").to_string();
        let n = body["instances"].as_u64().expect("instances") as usize;
        node.wait_running(&id, n).await;
        // Two fixtures share the id /sleep: remove each before the next.
        let (s, _) = node.call(Method::DELETE, &format!("/v2/apps{id}?force=true"), None).await.expect("delete");
        assert_eq!(s, StatusCode::OK);
        common::wait_for("the app to go", std::time::Duration::from_secs(20), || async {
            node.call(Method::GET, &format!("/v2/apps{id}"), None)
                .await
                .map(|(s, _)| s == StatusCode::NOT_FOUND)
                .unwrap_or(false)
        })
        .await;
        ran.push(id);
    }
    ran.sort();
    assert_eq!(
        ran,
        vec!["/fake-framework", "/http-server", "/mesos-app", "/readiness-and-health-app", "/sleep", "/sleep"],
        "every command-only fixture ran"
    );
}
