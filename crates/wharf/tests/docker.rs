//! End to end through this machine's Docker engine: Marathon `DOCKER` apps
//! run from an image the test builds locally (`FROM scratch` plus Debian's
//! static busybox, no network), reached with a real HTTP client, in host and
//! bridge networking; env and volumes arrive; containers survive an agent
//! restart; an image that cannot be pulled fails the task with the engine's
//! reason without a hot loop. Skipped, saying why, only when no engine
//! answers.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const IMAGE: &str = agent::driver::docker::BUSYBOX_IMAGE;

/// Builds the test image once per run. `None` (with the reason printed)
/// when no Docker engine answers; a missing busybox is a failure.
fn image() -> Option<&'static str> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        let ok = Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output();
        match ok {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("no docker engine: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("no docker client: {e}")),
        }
        agent::driver::docker::build_busybox_image().expect("the test image");
        Ok(())
    });
    match r {
        Ok(()) => Some(IMAGE),
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A node whose containers are removed from the engine when the test ends
/// (after the harness has deleted the apps).
struct DockerNode {
    node: Option<Node>,
    root: String,
}

impl DockerNode {
    async fn start() -> DockerNode {
        let node = Node::start().await;
        let root = node.data_dir().join("data").join("sandboxes").display().to_string();
        DockerNode { node: Some(node), root }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("node")
    }

    fn node_mut(&mut self) -> &mut Node {
        self.node.as_mut().expect("node")
    }

    /// Names of this node's containers in the engine.
    fn containers(&self, all: bool) -> Vec<String> {
        let mut cmd = Command::new("docker");
        cmd.args(["ps", "--format", "{{.Names}}", "--filter", &format!("label=wharf.sandbox-root={}", self.root)]);
        if all {
            cmd.arg("-a");
        }
        let out = cmd.output().expect("docker ps");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

impl Drop for DockerNode {
    fn drop(&mut self) {
        drop(self.node.take());
        let names = self.containers(true);
        if !names.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f"]).args(&names).output();
        }
    }
}

fn host_port(task: &Value, i: usize) -> u16 {
    task["ports"][i].as_u64().expect("host port") as u16
}

async fn stdout_of(node: &Node, task: &str) -> String {
    match node.call(Method::GET, &format!("/wharf/v1/tasks/{task}/files/stdout"), None).await.expect("files") {
        (StatusCode::OK, Value::String(s)) => s,
        (s, v) => panic!("stdout of {task}: {s} {v}"),
    }
}

/// Serves `hello from $MARATHON_APP_ID` with busybox httpd on `port`.
fn httpd(port: &str) -> String {
    format!(
        "mkdir -p /tmp/www && echo \"hello from $MARATHON_APP_ID\" > /tmp/www/index.html \
         && exec busybox httpd -f -p {port} -h /tmp/www"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_app_in_host_networking_serves_on_port0_and_the_node_lists_the_driver() {
    let Some(image) = image() else { return };
    let d = DockerNode::start().await;
    let node = d.node();
    let nodes = node.get("/wharf/v1/nodes").await;
    assert_eq!(nodes["nodes"][0]["drivers"], json!(["exec", "oci", "docker"]), "{nodes}");
    node.deploy(json!({"id": "/web", "cmd": httpd("$PORT0"), "cpus": 0.1, "mem": 32, "instances": 1,
               "container": {"type": "DOCKER", "docker": {"image": image}}}))
        .await;
    let tasks = node.wait_running("/web", 1).await;
    let port = host_port(&tasks[0], 0);
    let body = http_get(&format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(body.trim(), "hello from /web");
    let id = tasks[0]["id"].as_str().expect("id");
    assert_eq!(d.containers(false), vec![format!("wharf-{id}")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bridge_apps_on_container_port_80_answer_on_their_own_host_ports() {
    let Some(image) = image() else { return };
    let d = DockerNode::start().await;
    let node = d.node();
    for name in ["a", "b"] {
        node.deploy(json!({"id": format!("/bridge/{name}"), "cmd": httpd("80"), "cpus": 0.1, "mem": 32,
                   "networks": [{"mode": "container/bridge"}],
                   "container": {"type": "DOCKER", "docker": {"image": image},
                                 "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]}}))
            .await;
    }
    let a = node.wait_running("/bridge/a", 1).await;
    let b = node.wait_running("/bridge/b", 1).await;
    let (pa, pb) = (host_port(&a[0], 0), host_port(&b[0], 0));
    assert_ne!(pa, pb);
    assert_eq!(http_get(&format!("http://127.0.0.1:{pa}/")).await.trim(), "hello from /bridge/a");
    assert_eq!(http_get(&format!("http://127.0.0.1:{pb}/")).await.trim(), "hello from /bridge/b");
}

#[tokio::test(flavor = "multi_thread")]
async fn env_and_a_read_only_volume_arrive_and_output_reaches_the_sandbox() {
    let Some(image) = image() else { return };
    let d = DockerNode::start().await;
    let vol = tempfile::tempdir().expect("tempdir");
    std::fs::write(vol.path().join("greeting"), "from the host\n").expect("write");
    let node = d.node();
    let cmd = "echo \"GREETING=$GREETING TASK=$MESOS_TASK_ID SANDBOX=$MESOS_SANDBOX\"; cat data/greeting; \
               cd $MESOS_SANDBOX && cat data/greeting; touch data/x 2>/dev/null || echo read-only; \
               echo to-stderr >&2; exec sleep 1000";
    node.deploy(json!({"id": "/env", "cmd": cmd, "cpus": 0.1, "mem": 32, "env": {"GREETING": "hi there"},
               "container": {"type": "DOCKER", "docker": {"image": image},
                             "volumes": [{"containerPath": "data", "hostPath": vol.path(), "mode": "RO"}]}}))
        .await;
    let tasks = node.wait_running("/env", 1).await;
    let id = tasks[0]["id"].as_str().expect("id").to_string();
    let want = format!("GREETING=hi there TASK={id} SANDBOX=/mnt/mesos/sandbox");
    let mut out = String::new();
    for _ in 0..100 {
        out = stdout_of(node, &id).await;
        if out.contains("read-only") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<&str> = out.lines().collect();
    // The first `cat` runs in / (no such file there); the second in the sandbox.
    assert_eq!(lines, vec![want.as_str(), "from the host", "read-only"], "{out}");
    let err = std::fs::read_to_string(node.sandbox(&id).join("stderr")).expect("stderr");
    assert!(err.contains("to-stderr"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_keep_running_across_an_agent_restart() {
    let Some(image) = image() else { return };
    let mut d = DockerNode::start().await;
    let node = d.node_mut();
    node.deploy(json!({"id": "/keep", "cmd": httpd("$PORT0"), "cpus": 0.1, "mem": 32, "taskKillGracePeriodSeconds": 1,
               "container": {"type": "DOCKER", "docker": {"image": image}}}))
        .await;
    let before = node.wait_running("/keep", 1).await;
    let id = before[0]["id"].as_str().expect("id").to_string();
    let port = host_port(&before[0], 0);
    node.stop();
    // The agent is gone; the container still answers.
    assert_eq!(http_get(&format!("http://127.0.0.1:{port}/")).await.trim(), "hello from /keep");
    node.spawn().await;
    let after = node.wait_running("/keep", 1).await;
    assert_eq!(after[0]["id"], json!(id), "the same task after the restart");
    assert_eq!(http_get(&format!("http://127.0.0.1:{port}/")).await.trim(), "hello from /keep");
    // Still supervised: a kill through the API stops the container.
    let (s, v) = node.call(Method::DELETE, &format!("/v2/apps/keep/tasks/{id}?scale=true"), None).await.expect("kill");
    assert!(s.is_success(), "{s} {v}");
    let names = d.containers(false);
    let d2 = &d;
    wait_for("the container to stop", Duration::from_secs(15), || async move { d2.containers(false).is_empty() }).await;
    assert_eq!(names.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_cannot_be_pulled_fails_the_task_with_the_engines_reason_and_backs_off() {
    if image().is_none() {
        return;
    }
    let d = DockerNode::start().await;
    let node = d.node();
    // A registry on a closed loopback port: no network needed, refused at once.
    let missing = format!("127.0.0.1:{}/wharf-test/missing:1", free_port());
    node.deploy(json!({"id": "/nopull", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "backoffSeconds": 5,
               "container": {"type": "DOCKER", "docker": {"image": missing}}}))
        .await;
    let mut failure = Value::Null;
    for _ in 0..200 {
        failure = node.get("/v2/apps/nopull?embed=app.lastTaskFailure").await["app"]["lastTaskFailure"].clone();
        if !failure.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failure["state"], "TASK_FAILED", "{failure}");
    let msg = failure["message"].as_str().expect("message");
    assert!(msg.contains("pulling image") && msg.contains("connection refused"), "{msg}");
    // Backoff: within the next 2 s no new attempt starts a new failure (no hot loop).
    let first = failure["taskId"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let app = node.get("/v2/apps/nopull?embed=app.lastTaskFailure").await;
    assert_eq!(app["app"]["lastTaskFailure"]["taskId"], first, "relaunched within the backoff");
    let queue = node.get("/v2/queue").await;
    let item = &queue["queue"][0];
    assert_eq!(item["app"]["id"], "/nopull", "{queue}");
    assert!(item["delay"]["timeLeftSeconds"].as_u64().unwrap_or(0) > 0, "{item}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_container_definitions_are_422_naming_the_field() {
    let node = Node::start().await;
    let cases = [
        (json!({"type": "DOCKER", "docker": {"image": "Bad Image!"}}), "/container/docker/image"),
        (
            json!({"type": "DOCKER", "docker": {"image": "busybox"},
                   "volumes": [{"containerPath": "../../etc", "hostPath": "/etc", "mode": "RW"}]}),
            "/container/volumes(0)/containerPath",
        ),
    ];
    for (container, path) in cases {
        let app = json!({"id": "/bad", "cmd": "true", "container": container});
        let (s, v) = node.call(Method::POST, "/v2/apps", Some(&app)).await.expect("POST");
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["details"][0]["path"], path, "{v}");
    }
    assert_eq!(node.get("/v2/apps").await["apps"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_the_memory_limit_end_tasks_failed_with_the_reason() {
    let Some(image) = image() else { return };
    let d = DockerNode::start().await;
    let node = d.node();
    let app = |id: &str, cmd: &str| {
        json!({"id": id, "cmd": cmd, "cpus": 0.1, "mem": 32, "backoffSeconds": 60,
               "container": {"type": "DOCKER", "docker": {"image": image}}})
    };
    node.deploy(app("/exit3", "echo bye; exit 3")).await;
    // 200 MB held in a shell variable, under a 32 MB limit.
    node.deploy(app("/hog", "x=$(busybox head -c 200000000 /dev/zero | busybox tr '\\0' a); echo survived")).await;
    let f = node.last_failure("/exit3").await;
    assert_eq!((f["state"].as_str(), f["message"].as_str()), (Some("TASK_FAILED"), Some("exited with status 3")));
    let id = f["taskId"].as_str().expect("task id");
    assert_eq!(std::fs::read_to_string(node.sandbox(id).join("stdout")).expect("stdout"), "bye\n");
    let f = node.last_failure("/hog").await;
    assert_eq!(f["state"], "TASK_FAILED");
    assert!(f["message"].as_str().is_some_and(|m| m.contains("Memory limit exceeded")), "{f}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_engine_the_node_offers_no_docker_driver_and_docker_apps_wait_saying_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nowhere = format!("unix://{}", dir.path().join("no-docker.sock").display());
    let node = Node::start_with_env(&[], &[("DOCKER_HOST", &nowhere)]).await;
    let nodes = node.get("/wharf/v1/nodes").await;
    assert_eq!(nodes["nodes"][0]["drivers"], json!(["exec", "oci"]), "{nodes}");
    node.deploy(json!({"id": "/waits", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
               "container": {"type": "DOCKER", "docker": {"image": IMAGE}}}))
        .await;
    let mut reasons = Value::Null;
    for _ in 0..100 {
        reasons = node.get("/wharf/v1/queue").await;
        if reasons["queue"].as_array().is_some_and(|q| q.len() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reason = |app: &str| {
        reasons["queue"].as_array().and_then(|q| q.iter().find(|i| i["app"] == app)).map(|i| i["reason"].clone())
    };
    assert_eq!(
        reason("/waits"),
        Some(json!(
            "1 of 1 nodes declined: no docker driver (no Docker engine answered when the agent started) (1 node)"
        )),
        "{reasons}"
    );
    assert!(node.tasks("/waits").await.is_empty(), "nothing launched, nothing failed");
    let app = node.get("/v2/apps/waits?embed=app.lastTaskFailure").await;
    assert!(app["app"]["lastTaskFailure"].is_null(), "{app}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_stops_the_container_politely_then_after_the_grace_period() {
    let Some(image) = image() else { return };
    let d = DockerNode::start().await;
    let node = d.node();
    let app = |id: &str, cmd: &str| {
        json!({"id": id, "cmd": cmd, "cpus": 0.1, "mem": 32, "taskKillGracePeriodSeconds": 2,
               "container": {"type": "DOCKER", "docker": {"image": image}}})
    };
    node.deploy(app("/polite", "trap 'echo got-term; exit 0' TERM; echo ready; sleep 1000 & wait")).await;
    node.deploy(app("/stubborn", "trap 'echo ignoring' TERM; echo ready; while true; do sleep 1 & wait; done")).await;
    let polite = node.wait_running("/polite", 1).await[0]["id"].as_str().expect("id").to_string();
    let stubborn = node.wait_running("/stubborn", 1).await[0]["id"].as_str().expect("id").to_string();
    for id in [&polite, &stubborn] {
        wait_for("the trap to be set", Duration::from_secs(10), || async move {
            stdout_of(node, id).await.contains("ready")
        })
        .await;
    }
    let t = std::time::Instant::now();
    for app in ["/polite", "/stubborn"] {
        let (s, v) = node.call(Method::DELETE, &format!("/v2/apps{app}"), None).await.expect("delete");
        assert!(s.is_success(), "{s} {v}");
    }
    wait_for("both containers to stop", Duration::from_secs(15), || async { d.containers(false).is_empty() }).await;
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(2), "the stubborn one was given its grace period ({took:?})");
    assert!(took < Duration::from_secs(8), "and then killed ({took:?})");
    assert_eq!(std::fs::read_to_string(node.sandbox(&polite).join("stdout")).expect("stdout"), "ready\ngot-term\n");
    assert!(std::fs::read_to_string(node.sandbox(&stubborn).join("stdout")).expect("stdout").contains("ignoring"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restarted_without_its_engine_neither_fails_nor_duplicates_the_running_container() {
    let Some(image) = image() else { return };
    let mut d = DockerNode::start().await;
    let node = d.node_mut();
    node.deploy(json!({"id": "/engine", "cmd": httpd("$PORT0"), "cpus": 0.1, "mem": 32,
               "container": {"type": "DOCKER", "docker": {"image": image}}}))
        .await;
    let id = node.wait_running("/engine", 1).await[0]["id"].clone();
    node.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    node.env = vec![("DOCKER_HOST".into(), format!("unix://{}", dir.path().join("gone.sock").display()))];
    node.spawn().await;
    assert_eq!(node.get("/wharf/v1/nodes").await["nodes"][0]["drivers"], json!(["exec", "oci"]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks = node.wait_running("/engine", 1).await;
    assert_eq!(tasks[0]["id"], id, "still the same task, not failed");
    node.stop();
    node.env.clear();
    node.spawn().await;
    let tasks = node.wait_running("/engine", 1).await;
    assert_eq!(tasks[0]["id"], id, "recovered once the engine is back");
    let port = host_port(&tasks[0], 0);
    assert_eq!(http_get(&format!("http://127.0.0.1:{port}/")).await.trim(), "hello from /engine");
    assert_eq!(d.containers(false).len(), 1, "one container");
}

/// The container's address on the engine's default bridge, as `docker inspect` shows it.
fn engine_ip(container: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.NetworkSettings.Networks.bridge.IPAddress}}", container])
        .output()
        .expect("docker inspect");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_config_secret_logs_the_engine_in_force_pull_pulls_again_and_a_bridge_task_shows_its_address() {
    use common::registry::{docker_config, htpasswd, Registry};
    let Some(image) = image() else { return };
    let open = Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let users = htpasswd(dir.path(), "wharf", "right-password");
    // Serves what is pushed to `open`, only with credentials.
    let private = open.with_basic_auth(&users);
    let reference = open.push(image, "private/busybox:1").replacen(&open.addr, &private.addr, 1);
    let d = DockerNode::start().await;
    let node = d.node();
    for (name, password) in [("right", "right-password"), ("wrong", "wrong-password")] {
        let put = node
            .client
            .put(format!("{}/wharf/v1/secrets/registry/{name}", node.addr()))
            .body(docker_config(&[(private.addr.as_str(), "wharf", password)]))
            .send()
            .await
            .expect("PUT secret");
        assert!(put.status().is_success(), "{}", put.status());
    }
    let app = |id: &str, secret: &str, force: bool| {
        json!({"id": id, "cmd": httpd("80"), "cpus": 0.1, "mem": 32, "backoffSeconds": 30,
               "networks": [{"mode": "container/bridge"}],
               "secrets": {"registry": {"source": format!("registry/{secret}")}},
               "container": {"type": "DOCKER",
                             "docker": {"image": reference, "forcePullImage": force,
                                        "pullConfig": {"secret": "registry"}},
                             "portMappings": [{"containerPort": 80, "hostPort": 0}]}})
    };
    // Wrong credentials first, while the engine does not have the image.
    node.deploy(app("/wrong", "wrong", false)).await;
    let f = node.last_failure("/wrong").await;
    assert_eq!(f["state"], "TASK_FAILED", "{f}");
    let msg = f["message"].as_str().expect("message");
    assert!(msg.contains("pulling image") && msg.contains(&reference), "{msg}");
    assert!(msg.to_lowercase().contains("unauthorized"), "{msg}");

    node.deploy(app("/right", "right", false)).await;
    let tasks = node.wait_running("/right", 1).await;
    let body = http_get(&format!("http://127.0.0.1:{}/", host_port(&tasks[0], 0))).await;
    assert_eq!(body.trim(), "hello from /right");
    // The address the engine gave the container on its bridge.
    let id = tasks[0]["id"].as_str().expect("task id");
    let ips = tasks[0]["ipAddresses"].as_array().expect("ipAddresses");
    assert_eq!(ips.len(), 1, "{}", tasks[0]);
    assert_eq!(ips[0]["protocol"], "IPv4");
    assert_eq!(ips[0]["ipAddress"].as_str(), Some(engine_ip(&format!("wharf-{id}")).as_str()), "{}", tasks[0]);

    // The engine has the image now: with the wrong credentials an app runs
    // from it as it is, but with forcePullImage the engine pulls it again,
    // and the registry refuses.
    node.deploy(app("/present", "wrong", false)).await;
    node.deploy(app("/forced", "wrong", true)).await;
    node.wait_running("/present", 1).await;
    let f = node.last_failure("/forced").await;
    assert_eq!(f["state"], "TASK_FAILED", "{f}");
    assert!(f["message"].as_str().is_some_and(|m| m.to_lowercase().contains("unauthorized")), "{f}");
    assert!(node.log().lines().all(|l| !l.contains("right-password")), "the password is never logged");
    drop(d);
    let _ = Command::new("docker").args(["rmi", &reference]).output();
}
