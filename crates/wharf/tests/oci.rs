//! End to end through the built-in runtime (the oci driver): Marathon
//! `MESOS` apps with `docker.image`, pulled from Debian's `docker-registry`
//! on a loopback port (plain HTTP, as for any loopback registry). The images
//! are built locally without network (`FROM scratch` plus Debian's static
//! busybox) and pushed there with `docker push`. The image's entrypoint runs
//! and serves on `$PORT0`; env, volumes and the sandbox mount arrive; a
//! memory hog fails with the reason; a file deleted in an upper layer is
//! absent; an agent restart keeps the container and its task id; images that
//! cannot be pulled fail the task naming the cause, under the app's backoff.
//! Skipped, saying why, when the kernel cannot run containers (no overlayfs)
//! or no Docker engine answers to build the images.

mod common;

use common::registry::{docker_config, htpasswd, Registry};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const BUSYBOX: &str = agent::driver::docker::BUSYBOX_IMAGE;
/// The busybox image with an entrypoint serving HTTP on `$PORT0`.
const HTTPD: &str = "wharf-test/oci-httpd:1";
/// Two layers above busybox: one adds `/etc/gone` and `/etc/kept`, the
/// next deletes `/etc/gone`.
const WHITEOUT: &str = "wharf-test/oci-whiteout:1";

fn docker_build(tag: &str, dockerfile: &str, files: &[(&str, &str)]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).map_err(|e| e.to_string())?;
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).map_err(|e| e.to_string())?;
    }
    let out =
        Command::new("docker").args(["build", "-q", "-t", tag]).arg(dir.path()).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("docker build {tag}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Builds the test images once; `false` (saying why) when this machine
/// cannot run the test.
fn ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        agent::driver::oci::supported().map_err(|e| format!("no built-in runtime here: {e}"))?;
        match Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("no docker engine to build the images: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => return Err(format!("no docker client to build the images: {e}")),
        }
        agent::driver::docker::build_busybox_image().expect("the busybox image");
        let serve = "mkdir -p /tmp/www && echo \"hello $GREETING from $MARATHON_APP_ID\" > /tmp/www/index.html \
                     && exec httpd -f -p $PORT0 -h /tmp/www";
        let dockerfile = format!(
            "FROM {BUSYBOX}\nENV GREETING=image-default WHERE=image\nWORKDIR /tmp\nENTRYPOINT [\"/bin/sh\", \"-c\", {}]\n",
            serde_json::to_string(serve).expect("json")
        );
        docker_build(HTTPD, &dockerfile, &[]).expect("the httpd image");
        docker_build(
            WHITEOUT,
            &format!("FROM {BUSYBOX}\nCOPY gone kept /etc/\nRUN rm /etc/gone\n"),
            &[("gone", "deleted above\n"), ("kept", "kept\n")],
        )
        .expect("the whiteout image");
        Ok(())
    });
    if let Err(why) = r {
        eprintln!("skipped: {why}");
    }
    r.is_ok()
}

async fn stdout_containing(node: &Node, task: &str, what: &str) -> String {
    let mut out = String::new();
    for _ in 0..200 {
        out = std::fs::read_to_string(node.sandbox(task).join("stdout")).unwrap_or_default();
        if out.contains(what) {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stdout of {task} never said {what:?}: {out:?}\n{}", node.log());
}

fn host_port(task: &Value) -> u16 {
    task["ports"][0].as_u64().expect("host port") as u16
}

#[tokio::test(flavor = "multi_thread")]
async fn the_images_entrypoint_serves_on_port0_with_env_volumes_and_the_sandbox() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let image = reg.push(HTTPD, "web/httpd:1");
    let node = Node::start().await;
    let nodes = node.get("/wharf/v1/nodes").await;
    assert!(nodes["nodes"][0]["drivers"].as_array().is_some_and(|d| d.contains(&json!("oci"))), "{nodes}");
    let vol = tempfile::tempdir().expect("tempdir");
    std::fs::write(vol.path().join("greeting"), "from the host\n").expect("write");
    // The image's entrypoint, its env under the app's, its working dir.
    node.deploy(
        json!({"id": "/web", "cpus": 0.1, "mem": 32, "env": {"GREETING": "hi"}, "portDefinitions": [{"port": 0}],
               "container": {"type": "MESOS", "docker": {"image": image}}}),
    )
    .await;
    // A cmd runs via /bin/sh -c instead of the entrypoint.
    let cmd = "echo \"WHERE=$WHERE PWD=$(pwd) SANDBOX=$MESOS_SANDBOX TASK=$MESOS_TASK_ID\"; cat /data/greeting; \
               cat $MESOS_SANDBOX/data/greeting; touch /data/x 2>/dev/null || echo read-only; \
               echo written-inside > $MESOS_SANDBOX/inside; echo to-stderr >&2; exec sleep 1000";
    node.deploy(json!({"id": "/env", "cmd": cmd, "cpus": 0.1, "mem": 32,
               "container": {"type": "MESOS", "docker": {"image": image},
                             "volumes": [{"containerPath": "/data", "hostPath": vol.path(), "mode": "RO"},
                                         {"containerPath": "data", "hostPath": vol.path(), "mode": "RO"}]}}))
        .await;
    let web = node.wait_running("/web", 1).await;
    let body = http_get(&format!("http://127.0.0.1:{}/", host_port(&web[0]))).await;
    assert_eq!(body.trim(), "hello hi from /web");

    let id = node.wait_running("/env", 1).await[0]["id"].as_str().expect("id").to_string();
    let out = stdout_containing(&node, &id, "read-only").await;
    let want = format!("WHERE=image PWD=/tmp SANDBOX=/mnt/mesos/sandbox TASK={id}");
    assert_eq!(out.lines().collect::<Vec<_>>(), vec![want.as_str(), "from the host", "from the host", "read-only"]);
    let sandbox = node.sandbox(&id);
    wait_for("the file written inside", Duration::from_secs(10), || {
        let p = sandbox.join("inside");
        async move { p.exists() }
    })
    .await;
    assert_eq!(std::fs::read_to_string(sandbox.join("inside")).expect("inside"), "written-inside\n");
    assert!(std::fs::read_to_string(sandbox.join("stderr")).expect("stderr").contains("to-stderr"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_hog_fails_with_the_reason_and_a_file_deleted_above_is_absent() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let busybox = reg.push(BUSYBOX, "base/busybox:1");
    let whiteout = reg.push(WHITEOUT, "base/whiteout:1");
    let node = Node::start().await;
    // 200 MB held in a shell variable, under a 32 MB limit.
    node.deploy(json!({"id": "/hog", "cmd": "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
               "cpus": 0.1, "mem": 32, "backoffSeconds": 60,
               "container": {"type": "MESOS", "docker": {"image": busybox}}}))
        .await;
    node.deploy(
        json!({"id": "/layers", "cmd": "ls /etc; cat /etc/kept; test -e /etc/gone && echo present || echo absent; exec sleep 1000",
               "cpus": 0.1, "mem": 32,
               "container": {"type": "MESOS", "docker": {"image": whiteout}}}),
    )
    .await;
    let f = node.last_failure("/hog").await;
    assert_eq!(f["state"], "TASK_FAILED", "{f}");
    assert!(f["message"].as_str().is_some_and(|m| m.contains("Memory limit exceeded")), "{f}");
    let id = node.wait_running("/layers", 1).await[0]["id"].as_str().expect("id").to_string();
    let out = stdout_containing(&node, &id, "absent").await;
    assert!(out.contains("kept\n") && !out.contains("present"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_keeps_running_across_an_agent_restart() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let image = reg.push(HTTPD, "web/httpd:1");
    let mut node = Node::start().await;
    node.deploy(json!({"id": "/keep", "cpus": 0.1, "mem": 32, "taskKillGracePeriodSeconds": 1,
               "portDefinitions": [{"port": 0}],
               "container": {"type": "MESOS", "docker": {"image": image}}}))
        .await;
    let before = node.wait_running("/keep", 1).await;
    let id = before[0]["id"].as_str().expect("id").to_string();
    let url = format!("http://127.0.0.1:{}/", host_port(&before[0]));
    let pid = node.task_pid(&id);
    node.stop();
    assert_eq!(http_get(&url).await.trim(), "hello image-default from /keep", "serving without the agent");
    node.spawn().await;
    let after = node.wait_running("/keep", 1).await;
    assert_eq!(after[0]["id"], json!(id), "the same task after the restart");
    assert_eq!(node.task_pid(&id), pid, "the same process");
    assert_eq!(http_get(&url).await.trim(), "hello image-default from /keep");
    // Still supervised: deleting the app stops the container.
    let (s, v) = node.call(Method::DELETE, "/v2/apps/keep", None).await.expect("delete");
    assert!(s.is_success(), "{s} {v}");
    wait_for("the container to stop", Duration::from_secs(15), || async move { !alive(pid) }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn images_that_cannot_be_pulled_fail_the_task_naming_the_cause_and_back_off() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let node = Node::start().await;
    let app = |id: &str, image: &str| {
        json!({"id": id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "backoffSeconds": 5,
               "container": {"type": "MESOS", "docker": {"image": image}}})
    };
    // Not in the registry; a registry on a closed port.
    node.deploy(app("/missing", &format!("{}/no/such-image:1", reg.addr))).await;
    node.deploy(app("/closed", &format!("127.0.0.1:{}/no/registry:1", free_port()))).await;
    let f = node.last_failure("/missing").await;
    assert_eq!(f["state"], "TASK_FAILED", "{f}");
    let msg = f["message"].as_str().expect("message").to_lowercase();
    assert!(msg.contains("pulling") && msg.contains("no/such-image") && msg.contains("unknown"), "{msg}");
    let f = node.last_failure("/closed").await;
    let msg = f["message"].as_str().expect("message").to_lowercase();
    assert!(msg.contains("pulling") && msg.contains("connection refused"), "{msg}");
    // Backoff: no new failure of /closed within the next 2 s, and the queue says it is delayed.
    let first = f["taskId"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = node.get("/v2/apps/closed?embed=app.lastTaskFailure").await;
    assert_eq!(again["app"]["lastTaskFailure"]["taskId"], first, "relaunched within the backoff");
    let queue = node.get("/v2/queue").await;
    let item = queue["queue"].as_array().and_then(|q| q.iter().find(|i| i["app"]["id"] == "/closed")).cloned();
    assert!(item.is_some_and(|i| i["delay"]["timeLeftSeconds"].as_u64().unwrap_or(0) > 0), "{queue}");
    // A malformed reference never gets that far.
    let (s, v) = node.call(Method::POST, "/v2/apps", Some(&app("/bad", "Bad Image!"))).await.expect("POST");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"][0]["path"], "/container/docker/image", "{v}");
    assert!(node.log().lines().all(|l| !l.contains("panicked")), "no panic in the node");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_docker_apps_builtin_a_docker_app_runs_on_the_built_in_runtime() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let image = reg.push(HTTPD, "web/httpd:1");
    let node = Node::start_with(&["--docker-apps", "builtin"]).await;
    let nodes = node.get("/wharf/v1/nodes").await;
    assert_eq!(nodes["nodes"][0]["drivers"], json!(["exec", "oci", "docker"]), "{nodes}");
    node.deploy(json!({"id": "/dockerish", "cpus": 0.1, "mem": 32, "portDefinitions": [{"port": 0}],
               "container": {"type": "DOCKER", "docker": {"image": image}}}))
        .await;
    let tasks = node.wait_running("/dockerish", 1).await;
    let body = http_get(&format!("http://127.0.0.1:{}/", host_port(&tasks[0]))).await;
    assert_eq!(body.trim(), "hello image-default from /dockerish");
    // Not the engine's: no container of this node there, and the task's
    // process is in the node's own cgroup for it.
    let root = node.data_dir().join("data").join("sandboxes");
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=wharf.sandbox-root={}", root.display())])
        .output()
        .expect("docker ps");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    let id = tasks[0]["id"].as_str().expect("id");
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", node.task_pid(id))).expect("cgroup");
    assert!(cgroup.contains(&format!("/wharf/{id}")), "{cgroup}");
}

/// The container address a task shows in `ipAddresses`.
fn container_ip(task: &Value) -> std::net::Ipv4Addr {
    let ips = task["ipAddresses"].as_array().expect("ipAddresses");
    assert_eq!(ips.len(), 1, "{task}");
    assert_eq!(ips[0]["protocol"], "IPv4", "{task}");
    ips[0]["ipAddress"].as_str().and_then(|s| s.parse().ok()).expect("an IPv4 address")
}

/// What is left on the host of a bridge container that had `ip` and the
/// host port `port`: its lease (if still its task's), its veth (unless the
/// address was leased again), DNAT rules for its host port (in Wharf's chain:
/// Docker's tests may publish ports of their own).
fn bridge_leftovers(task: &str, ip: std::net::Ipv4Addr, port: u16) -> Vec<String> {
    let bridge = agent::network::NodeNetwork::default_for_tests().bridge;
    let leases = agent::network::leases(&bridge);
    let mut left: Vec<String> =
        leases.iter().filter(|l| l.task_id.as_str() == task).map(|l| format!("lease of {}", l.ip)).collect();
    let veth = agent::network::veth_name(ip);
    let leased_again = leases.iter().any(|l| l.ip == ip);
    let link = Command::new("ip").args(["-o", "link", "show", &veth]).output().expect("ip link");
    if link.status.success() && !leased_again {
        left.push(format!("veth {veth}"));
    }
    let rules = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output().expect("iptables");
    let dport = format!("--dport {port} ");
    let ours = |l: &&str| l.starts_with(&format!("-A {} ", agent::network::nat::DNAT_CHAIN)) && l.contains(&dport);
    left.extend(String::from_utf8_lossy(&rules.stdout).lines().filter(ours).map(str::to_string));
    left
}

#[tokio::test(flavor = "multi_thread")]
async fn two_bridge_containers_on_port_80_answer_through_their_host_ports_and_leave_nothing_behind() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let busybox = reg.push(BUSYBOX, "base/busybox:1");
    let node = Node::start().await;
    let serve = "mkdir -p /tmp/www && echo \"hello from $MARATHON_APP_ID port0=$PORT0 http=$PORT_HTTP\" \
                 > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www";
    for name in ["a", "b"] {
        node.deploy(json!({"id": format!("/bridge/{name}"), "cmd": serve, "cpus": 0.1, "mem": 32,
                   "networks": [{"mode": "container/bridge"}],
                   "container": {"type": "MESOS", "docker": {"image": busybox},
                                 "portMappings": [{"containerPort": 80, "hostPort": 0, "name": "http"}]}}))
            .await;
    }
    let a = node.wait_running("/bridge/a", 1).await;
    let b = node.wait_running("/bridge/b", 1).await;
    let (pa, pb) = (host_port(&a[0]), host_port(&b[0]));
    assert_ne!(pa, pb);
    // Through the host port on loopback (the OUTPUT hook and route_localnet).
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{pa}/")).await.trim(),
        format!("hello from /bridge/a port0={pa} http={pa}")
    );
    assert_eq!(
        http_get(&format!("http://127.0.0.1:{pb}/")).await.trim(),
        format!("hello from /bridge/b port0={pb} http={pb}")
    );
    // Each has its own address on the bridge, shown in ipAddresses and
    // reachable from the node on the container port.
    let bridge = agent::network::NodeNetwork::default_for_tests().bridge;
    let (ia, ib) = (container_ip(&a[0]), container_ip(&b[0]));
    assert_ne!(ia, ib);
    assert!(bridge.contains(ia) && bridge.contains(ib) && ia != bridge.gateway, "{ia} {ib}");
    assert_eq!(
        http_get(&format!("http://{ib}:80/")).await.trim(),
        format!("hello from /bridge/b port0={pb} http={pb}")
    );
    let all = node.get("/v2/tasks").await;
    let shown: Vec<&Value> = all["tasks"].as_array().expect("tasks").iter().map(|t| &t["ipAddresses"]).collect();
    assert!(shown.contains(&&json!([{"ipAddress": ia.to_string(), "protocol": "IPv4"}])), "{all}");

    let ids = [a[0]["id"].as_str().expect("id").to_string(), b[0]["id"].as_str().expect("id").to_string()];
    for name in ["a", "b"] {
        let (s, v) = node.call(Method::DELETE, &format!("/v2/apps/bridge/{name}"), None).await.expect("delete");
        assert!(s.is_success(), "{s} {v}");
    }
    let gone = [(ids[0].clone(), ia, pa), (ids[1].clone(), ib, pb)];
    wait_for("the bridge containers' networks to be undone", Duration::from_secs(30), || {
        let gone = gone.clone();
        async move { gone.iter().all(|(t, ip, port)| bridge_leftovers(t, *ip, *port).is_empty()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_container_resolves_another_apps_name_through_the_nodes_dns() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let busybox = reg.push(BUSYBOX, "base/busybox:1");
    let node = Node::start_with(&["--dns", &format!("127.0.0.1:{}", free_port())]).await;
    node.deploy(json!({"id": "/target", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32})).await;
    node.wait_running("/target", 1).await;
    // The image has no /tmp: the answer goes to the sandbox.
    let lookup = "cat /etc/resolv.conf; cd $MESOS_SANDBOX; \
                  until nslookup target.marathon.mesos > out 2>&1; do sleep 0.2; done; \
                  cat out; echo looked-up; exec sleep 1000";
    node.deploy(json!({"id": "/resolver", "cmd": lookup, "cpus": 0.1, "mem": 32,
               "networks": [{"mode": "container/bridge"}],
               "container": {"type": "MESOS", "docker": {"image": busybox}}}))
        .await;
    node.deploy(json!({"id": "/hostnet", "cmd": "cat /etc/resolv.conf; echo printed; exec sleep 1000",
               "cpus": 0.1, "mem": 32, "container": {"type": "MESOS", "docker": {"image": busybox}}}))
        .await;
    let id = node.wait_running("/resolver", 1).await[0]["id"].as_str().expect("id").to_string();
    let out = stdout_containing(&node, &id, "looked-up").await;
    assert!(out.starts_with("nameserver 172.31.0.1\nsearch marathon.mesos mesos\n"), "{out}");
    // busybox's nslookup: the server asked, then the answer.
    let answer = out.split("Name:").nth(1).unwrap_or_default();
    assert!(out.contains("172.31.0.1") && answer.contains("127.0.0.1"), "{out}");
    // On the node's network the same search list (this node's DNS port is
    // not 53, which resolv.conf cannot name: the node's own servers).
    let id = node.wait_running("/hostnet", 1).await[0]["id"].as_str().expect("id").to_string();
    let out = stdout_containing(&node, &id, "printed").await;
    assert!(out.contains("search marathon.mesos mesos\n") && !out.contains("172.31.0.1"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_executors_bridge_network_is_swept_when_the_agent_restarts() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let busybox = reg.push(BUSYBOX, "base/busybox:1");
    let mut node = Node::start().await;
    node.deploy(json!({"id": "/crash", "cmd": "exec httpd -f -p 80 -h /", "cpus": 0.1, "mem": 32,
               "networks": [{"mode": "container/bridge"}],
               "container": {"type": "MESOS", "docker": {"image": busybox},
                             "portMappings": [{"containerPort": 80}]}}))
        .await;
    let task = node.wait_running("/crash", 1).await.remove(0);
    let (id, ip, port) = (task["id"].as_str().expect("id").to_string(), container_ip(&task), host_port(&task));
    assert_eq!(bridge_leftovers(&id, ip, port).len(), 2, "its lease and its port's rule while it runs");
    // The executor dies while the agent is away: nobody undoes the network.
    let state: Value =
        serde_json::from_slice(&std::fs::read(node.sandbox(&id).join("state.json")).expect("state")).expect("json");
    let executor = state["executor_pid"].as_i64().expect("executor pid") as i32;
    node.stop();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor), nix::sys::signal::SIGKILL).expect("kill");
    wait_for("the executor to die", Duration::from_secs(10), || async move { !alive(executor) }).await;
    let lease_of_task = || {
        let bridge = agent::network::NodeNetwork::default_for_tests().bridge;
        agent::network::leases(&bridge).into_iter().any(|l| l.task_id.as_str() == id)
    };
    assert!(lease_of_task(), "the lease outlives the executor");
    node.spawn().await;
    wait_for("the agent's recovery to sweep the network", Duration::from_secs(30), || {
        let left = lease_of_task();
        async move { !left }
    })
    .await;
    // Nor is the container's root filesystem left mounted.
    let rootfs = node.data_dir().join("data").join("containers").join(&id).join("rootfs");
    let mounted =
        || std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().contains(&*rootfs.to_string_lossy());
    wait_for("the orphan's root filesystem to be unmounted", Duration::from_secs(30), || {
        let m = mounted();
        async move { !m }
    })
    .await;
    let (s, v) = node.call(Method::DELETE, "/v2/apps/crash", None).await.expect("delete");
    assert!(s.is_success(), "{s} {v}");
    wait_for("nothing of the crashed container left", Duration::from_secs(30), || {
        let left = bridge_leftovers(&id, ip, port);
        async move { left.is_empty() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_credentials_from_the_node_file_pull_and_wrong_ones_fail_the_task_with_the_registrys_reason() {
    if !ready() {
        return;
    }
    let open = Registry::start();
    open.push(HTTPD, "web/httpd:1");
    // Another name for the pullConfig apps: an image once pulled is on the
    // node for every app (as with Docker), so /wrong must not share theirs.
    open.push(HTTPD, "web/private:1");
    let dir = tempfile::tempdir().expect("tempdir");
    let users = htpasswd(dir.path(), "wharf", "right-password");
    // Both serve the images pushed above, only with credentials.
    let good = open.with_basic_auth(&users);
    let bad = open.with_basic_auth(&users);
    let config = dir.path().join("config.json");
    let auths = [(good.addr.as_str(), "wharf", "right-password"), (bad.addr.as_str(), "wharf", "wrong-password")];
    std::fs::write(&config, docker_config(&auths)).expect("config.json");
    let node = Node::start_with(&["--registry-config", config.to_str().expect("path")]).await;
    let app = |id: &str, image: String| {
        json!({"id": id, "cpus": 0.1, "mem": 32, "backoffSeconds": 30, "portDefinitions": [{"port": 0}],
               "container": {"type": "MESOS", "docker": {"image": image}}})
    };
    node.deploy(app("/private", format!("{}/web/httpd:1", good.addr))).await;
    node.deploy(app("/wrong", format!("{}/web/httpd:1", bad.addr))).await;
    // An app's own pullConfig (a secret holding a config.json) comes before
    // the node's file: with it, the registry the node has wrong credentials
    // for lets the pull through.
    let put = node
        .client
        .put(format!("{}/wharf/v1/secrets/registry/config", node.addr()))
        .body(docker_config(&[(bad.addr.as_str(), "wharf", "right-password")]))
        .send()
        .await
        .expect("PUT secret");
    assert!(put.status().is_success(), "{}", put.status());
    let with_secret = |id: &str, source: &str| {
        let mut a = app(id, format!("{}/web/private:1", bad.addr));
        a["secrets"] = json!({"registry": {"source": source}});
        a["container"]["docker"]["pullConfig"] = json!({"secret": "registry"});
        a
    };
    node.deploy(with_secret("/pullconfig", "registry/config")).await;
    // One whose secret is not in the store fails, naming it.
    node.deploy(with_secret("/missing", "registry/missing")).await;

    let tasks = node.wait_running("/private", 1).await;
    let body = http_get(&format!("http://127.0.0.1:{}/", host_port(&tasks[0]))).await;
    assert_eq!(body.trim(), "hello image-default from /private");

    let f = node.last_failure("/wrong").await;
    assert_eq!(f["state"], "TASK_FAILED", "{f}");
    let msg = f["message"].as_str().expect("message").to_lowercase();
    assert!(msg.contains("pulling") && msg.contains("web/httpd:1"), "{msg}");
    assert!(msg.contains("401 unauthorized") && msg.contains("wrong credentials"), "{msg}");
    let tasks = node.wait_running("/pullconfig", 1).await;
    let body = http_get(&format!("http://127.0.0.1:{}/", host_port(&tasks[0]))).await;
    assert_eq!(body.trim(), "hello image-default from /pullconfig");
    let f = node.last_failure("/missing").await;
    assert_eq!(f["state"], "TASK_FAILED", "{f}");
    let msg = f["message"].as_str().expect("message");
    assert!(msg.contains("pullConfig") && msg.contains("registry/missing") && msg.contains("does not exist"), "{msg}");
    // Backed off, not retried in a loop; and the apps can still be deleted
    // (their deployments wait for instances that cannot start, so, as in
    // Marathon, with force).
    let queue = node.get("/v2/queue").await;
    for id in ["/wrong", "/missing"] {
        let item = queue["queue"].as_array().and_then(|q| q.iter().find(|i| i["app"]["id"] == id)).cloned();
        assert!(item.is_some_and(|i| i["delay"]["timeLeftSeconds"].as_u64().unwrap_or(0) > 0), "{id}: {queue}");
    }
    for id in ["wrong", "missing"] {
        let (s, v) = node.call(Method::DELETE, &format!("/v2/apps/{id}?force=true"), None).await.expect("delete");
        assert!(s.is_success(), "{s} {v}");
    }
    let n = &node;
    wait_for("the failing apps to be gone", Duration::from_secs(30), || async move {
        let apps = n.get("/v2/apps").await;
        let deployments = n.get("/v2/deployments").await;
        apps["apps"].as_array().is_some_and(|a| a.len() == 2) && deployments.as_array().is_some_and(|d| d.is_empty())
    })
    .await;
    assert!(node.log().lines().all(|l| !l.contains("right-password")), "the password is never logged");
}

/// A layer tar of `files` (path, mode, content) and `links` (path → target).
fn layer_tar(files: &[(&str, u32, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    };
    for (path, mode, data) in files {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, *mode);
        b.append_data(&mut h, path, *data).expect("file");
    }
    for (path, target) in links {
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        b.append_link(&mut h, path, target).expect("link");
    }
    b.into_inner().expect("tar")
}

/// Writes an OCI image layout with one image of `layers` running
/// `entrypoint` into `dir`, the way `skopeo copy oci:` would.
fn write_oci_layout(dir: &std::path::Path, layers: &[Vec<u8>], entrypoint: &[&str]) {
    use sha2::Digest;
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let put = |media: &str, data: &[u8]| {
        let hex = format!("{:x}", sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&hex), data).expect("blob");
        json!({"mediaType": media, "digest": format!("sha256:{hex}"), "size": data.len()})
    };
    let layer_descs: Vec<Value> = layers.iter().map(|l| put("application/vnd.oci.image.layer.v1.tar", l)).collect();
    let config = json!({"architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": layer_descs.iter().map(|d| d["digest"].clone()).collect::<Vec<_>>()}});
    let config = put("application/vnd.oci.image.config.v1+json", config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layer_descs});
    let manifest = put("application/vnd.oci.image.manifest.v1+json", manifest.to_string().as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion": "1.0.0"}"#).expect("oci-layout");
    std::fs::write(dir.join("index.json"), json!({"schemaVersion": 2, "manifests": [manifest]}).to_string())
        .expect("index.json");
}

/// `wharf image ...` on a node's data dir; the output, or the failure's.
fn wharf_image(node: &Node, args: &[&str]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("image")
        .arg("--data-dir")
        .arg(node.data_dir().join("data"))
        .args(args)
        .output()
        .expect("wharf image");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The references `GET /wharf/v1/nodes` lists for the (only) node.
async fn node_images(node: &Node) -> Vec<String> {
    let nodes = node.get("/wharf/v1/nodes").await;
    nodes["nodes"][0]["images"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["reference"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_oci_layouts_run_are_listed_per_node_and_are_collected_once_unused() {
    if !ready() {
        return;
    }
    let node = Node::start_with(&["--image-gc-after", "3s"]).await;
    // Two images sharing a base layer (a static busybox), each with its own top.
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let base = layer_tar(&[("bin/busybox", 0o755, &busybox)], &[("bin/sh", "busybox"), ("bin/sleep", "busybox")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (run_dir, spare_dir) = (dir.path().join("run"), dir.path().join("spare"));
    let top = layer_tar(&[("etc/motd", 0o644, b"from an OCI layout\n")], &[]);
    let entry = ["/bin/sh", "-c", "cat /etc/motd; exec sleep 1000"];
    write_oci_layout(&run_dir, &[base.clone(), top], &entry);
    write_oci_layout(&spare_dir, &[base, layer_tar(&[("etc/spare", 0o644, b"spare\n")], &[])], &entry);
    // No registry anywhere: these names only exist in this node's store.
    let (run_ref, spare_ref) = ("layouts.example/run:1", "layouts.example/spare:1");
    let out = wharf_image(&node, &["import", run_dir.to_str().expect("path"), run_ref]).expect("import");
    assert!(out.contains(run_ref) && out.contains("2 layers"), "{out}");
    wharf_image(&node, &["import", spare_dir.to_str().expect("path"), spare_ref]).expect("import");
    // A directory that is not a layout says so.
    let err =
        wharf_image(&node, &["import", dir.path().to_str().expect("path"), "x.example/y:1"]).expect_err("no layout");
    assert!(err.contains("not an OCI image layout"), "{err}");

    node.deploy(json!({"id": "/layout", "cpus": 0.1, "mem": 32,
               "container": {"type": "MESOS", "docker": {"image": run_ref}}}))
        .await;
    let id = node.wait_running("/layout", 1).await[0]["id"].as_str().expect("id").to_string();
    stdout_containing(&node, &id, "from an OCI layout").await;

    // The node's images reach /wharf/v1/nodes (the image being used stays).
    let n = &node;
    wait_for("the running image in /wharf/v1/nodes", Duration::from_secs(20), || async move {
        node_images(n).await.contains(&run_ref.to_string())
    })
    .await;
    let nodes = node.get("/wharf/v1/nodes").await;
    let listed = nodes["nodes"][0]["images"].as_array().cloned().unwrap_or_default();
    assert!(
        listed.iter().all(|i| i["digest"].as_str().is_some_and(|d| d.starts_with("sha256:"))
            && i["size"].as_u64().is_some_and(|s| s > 1_000_000)
            && i["lastUsed"].is_string()),
        "{nodes}"
    );

    // Unused for 3 s, the spare image goes; its own layer with it, the
    // shared base stays for the running image, which is kept.
    // (A report may have gone out before the spare image was imported: the
    // store itself is asked first.)
    wait_for("the unused image to be collected and reported so", Duration::from_secs(30), || async move {
        let ls = wharf_image(n, &["ls"]).expect("ls");
        !ls.contains(spare_ref) && node_images(n).await == vec![run_ref.to_string()]
    })
    .await;
    let ls = wharf_image(&node, &["ls"]).expect("ls");
    assert!(ls.contains(run_ref), "{ls}");
    let layers = node.data_dir().join("data").join("images").join("layers");
    assert_eq!(std::fs::read_dir(&layers).expect("layers").count(), 2, "the base and the running image's top");
    // In use: `rm` refuses.
    let err = wharf_image(&node, &["rm", run_ref]).expect_err("in use");
    assert!(err.contains("in use by a running container"), "{err}");

    // Once its app is gone, the image is collected too, with every layer.
    let (s, v) = node.call(Method::DELETE, "/v2/apps/layout", None).await.expect("delete");
    assert!(s.is_success(), "{s} {v}");
    wait_for("the image of the deleted app to be collected", Duration::from_secs(30), || async move {
        node_images(n).await.is_empty()
    })
    .await;
    let layers_left = std::fs::read_dir(&layers).expect("layers").count();
    assert_eq!(layers_left, 0, "no layer without an image");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_volume_outlives_its_tasks_and_goes_with_its_app() {
    if !ready() {
        return;
    }
    let reg = Registry::start();
    let image = reg.push(BUSYBOX, "base/busybox:1");
    let node = Node::start().await;
    let cmd = "echo $MESOS_TASK_ID >> $MESOS_SANDBOX/data/runs; cat $MESOS_SANDBOX/data/runs; exec sleep 1000";
    node.deploy(json!({"id": "/db", "cmd": cmd, "cpus": 0.1, "mem": 32, "backoffSeconds": 0,
               "container": {"type": "MESOS", "docker": {"image": image},
                             "volumes": [{"containerPath": "data", "mode": "RW", "persistent": {"size": 16}}]}}))
        .await;
    let first = node.wait_running("/db", 1).await[0]["id"].as_str().expect("id").to_string();
    stdout_containing(&node, &first, &first).await;
    // Killed without scaling: the instance's next task finds the volume.
    let (s, v) = node.call(Method::DELETE, &format!("/v2/apps/db/tasks/{first}"), None).await.expect("kill");
    assert!(s.is_success(), "{s} {v}");
    let n = &node;
    let first2 = first.clone();
    wait_for("the replacement task", Duration::from_secs(30), || {
        let first = first2.clone();
        async move { n.running("/db").await.iter().any(|t| t["id"] != json!(first)) }
    })
    .await;
    let tasks = node.running("/db").await;
    let second = tasks.iter().find(|t| t["id"] != json!(first)).and_then(|t| t["id"].as_str()).expect("id").to_string();
    let instance = first.rsplit_once("._app.").expect("task id").0;
    assert_eq!(second, format!("{instance}._app.2"), "the same instance, its next attempt");
    let out = stdout_containing(&node, &second, &second).await;
    assert_eq!(out.lines().collect::<Vec<_>>(), vec![first.as_str(), second.as_str()], "what the first task wrote");
    // The volume lives on the node, not in the sandbox, and goes with the app.
    let volume = node.data_dir().join("data").join("volumes").join(instance);
    assert!(volume.join("data").join("runs").is_file(), "{}", volume.display());
    let (s, v) = node.call(Method::DELETE, "/v2/apps/db", None).await.expect("delete");
    assert!(s.is_success(), "{s} {v}");
    let gone = volume.clone();
    wait_for("the volume to be removed with its app", Duration::from_secs(30), || {
        let gone = gone.clone();
        async move { !gone.exists() }
    })
    .await;
}
