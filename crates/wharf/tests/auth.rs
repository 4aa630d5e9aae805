//! HTTP API authentication against a real node: every route of the API's
//! router (listed by `api::routes()`, the same definition that builds it)
//! with no, wrong, viewer, deployer and admin credentials; bearer tokens made
//! and revoked through the `wharf` CLI; marathon-python with HTTP Basic.

mod common;

use common::{basic_auth, Node, WHARF};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const USER: &str = "admin";
const PASS: &str = "s3cret:with-colon";

/// A request with exactly this Authorization header (or none).
async fn send(node: &Node, method: Method, path: &str, auth: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let c = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let mut req = c.request(method, format!("{}{path}", node.addr()));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
    // The event stream never ends: its headers say enough.
    let body = if path == "/v2/events" && status.is_success() {
        Value::Null
    } else {
        let text = resp.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, challenge, body)
}

async fn make_token(node: &Node, role: &str) -> String {
    let (s, v) = node.call(Method::POST, "/wharf/v1/tokens", Some(&json!({"role": role}))).await.expect("POST");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["token"].as_str().expect("token").to_string()
}

/// A path that matches the route's pattern and names nothing that exists.
fn concrete(pattern: &str) -> String {
    pattern
        .replace("{*path}", "nosuch/app")
        .replace("{id}", "nosuch")
        .replace("{name}", "stdout")
        .replace("{file}", "app.js")
}

fn refused(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_asks_for_the_role_it_needs() {
    let node = Node::start_with_credentials(USER, PASS).await;
    let admin = basic_auth(USER, PASS);
    let viewer = format!("Bearer {}", make_token(&node, "viewer").await);
    let deployer = format!("Bearer {}", make_token(&node, "deployer").await);
    let wrong = [basic_auth(USER, "wrong"), basic_auth("nobody", PASS), "Bearer nosuch.secret".to_string(), {
        // A real token's id with another secret.
        let id = viewer.trim_start_matches("Bearer ").split('.').next().expect("id").to_string();
        format!("Bearer {id}.{}", "0".repeat(64))
    }];

    let mut routes = api::routes();
    assert!(routes.len() >= 40, "the router lists its routes: {routes:?}");
    // Abdicating last: the walk should not wait for a new election.
    routes.sort_by_key(|(m, p)| *m == Method::DELETE && *p == "/v2/leader");
    for (method, pattern) in routes {
        let path = concrete(pattern);
        let needs = match api::auth::access(&method, &path) {
            api::Access::Open => None,
            api::Access::Needs(role) => Some(role),
        };
        let what = format!("{method} {path}");

        let (s, challenge, body) = send(&node, method.clone(), &path, None).await;
        if needs.is_none() {
            assert!(!refused(s), "{what} is open but answered {s} without credentials");
        } else {
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} without credentials: {body}");
            assert_eq!(challenge.as_deref(), Some("Basic realm=\"Wharf\""), "{what}");
            assert!(body["message"].as_str().is_some_and(|m| m.contains("Authentication required")), "{what}: {body}");
            for w in &wrong {
                let (s, _, body) = send(&node, method.clone(), &path, Some(w)).await;
                assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} with wrong credentials {w}: {body}");
                assert!(body["message"].is_string(), "{what}: {body}");
            }
        }
        for (role, auth) in
            [(model::Role::Viewer, &viewer), (model::Role::Deployer, &deployer), (model::Role::Admin, &admin)]
        {
            let (s, _, body) = send(&node, method.clone(), &path, Some(auth)).await;
            if needs.is_some_and(|n| n > role) {
                assert_eq!(s, StatusCode::FORBIDDEN, "{what} as {role}: {body}");
                let message = body["message"].as_str().unwrap_or_default();
                assert!(message.contains(&format!("needs the {}", needs.expect("role"))), "{what}: {body}");
            } else {
                assert!(!refused(s), "{what} as {role} answered {s}: {body}");
            }
        }
    }

    // Routes merged into the API's router (DNS, LB) and unknown paths are
    // behind the same layer.
    for path in ["/v1/version", "/wharf/v1/lb", "/no/such/route"] {
        let (s, _, _) = send(&node, Method::GET, path, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "GET {path}");
        let (s, _, _) = send(&node, Method::GET, path, Some(&viewer)).await;
        assert!(!refused(s), "GET {path} as a viewer: {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_changes_nothing_and_roles_do_what_they_say() {
    let node = Node::start_with_credentials(USER, PASS).await;
    let viewer = format!("Bearer {}", make_token(&node, "viewer").await);
    let deployer = format!("Bearer {}", make_token(&node, "deployer").await);
    let app = json!({"id": "/authed", "cmd": "exec sleep 1000", "cpus": 0.05, "mem": 16, "instances": 0});
    let c = reqwest::Client::new();
    let post = |auth: &str| {
        c.post(format!("{}/v2/apps", node.addr())).header("authorization", auth.to_string()).json(&app).send()
    };
    assert_eq!(post(&viewer).await.expect("post").status(), StatusCode::FORBIDDEN);
    assert!(
        node.get("/v2/apps").await["apps"].as_array().is_some_and(|a| a.is_empty()),
        "a viewer's POST stored nothing"
    );
    assert_eq!(post(&deployer).await.expect("post").status(), StatusCode::CREATED);
    assert_eq!(node.get("/v2/apps/authed").await["app"]["id"], "/authed");

    // A deployer manages apps, not tokens or nodes.
    let r = c
        .post(format!("{}/wharf/v1/tokens", node.addr()))
        .header("authorization", &deployer)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(node.get("/wharf/v1/tokens").await["tokens"].as_array().map(Vec::len), Some(2));

    // A viewer follows the event stream.
    let r = c.get(format!("{}/v2/events", node.addr())).header("authorization", &viewer).send().await.expect("events");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("text/event-stream")));
    // The UI's cookie works for reads, never for writes.
    let cookie = format!("wharf_auth={}", deployer.replacen(' ', ":", 1));
    let r = c.get(format!("{}/v2/apps", node.addr())).header("cookie", &cookie).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.delete(format!("{}/v2/apps/authed", node.addr())).header("cookie", &cookie).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The UI is offered no Basic challenge (its browser would pop a dialog).
    let r = c.get(format!("{}/v2/info", node.addr())).header("x-wharf-ui", "1").send().await.expect("get");
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"Wharf\"");
    // /ping and the UI's files stay open.
    for path in ["/ping", "/ui/", "/ui/app.js"] {
        let r = c.get(format!("{}{path}", node.addr())).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // Bad token requests name the field.
    let (s, v) = node.call(Method::POST, "/wharf/v1/tokens", Some(&json!({"role": "root"}))).await.expect("post");
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"][0]["path"], "/role");
}

fn wharf(addr: &str, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(WHARF);
    cmd.env("WHARF_ADDR", addr).env_remove("WHARF_TOKEN").args(args);
    if let Some(t) = token {
        cmd.env("WHARF_TOKEN", t);
    }
    cmd.output().expect("run wharf")
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_token_turns_authentication_on_and_the_cli_sends_it() {
    let node = Node::start().await;
    let addr = node.addr();
    let (s, _) = node.call(Method::GET, "/v2/apps", None).await.expect("get");
    assert_eq!(s, StatusCode::OK, "no credentials configured: open, as Marathon");

    let out = wharf(&addr, None, &["token", "create", "--role", "admin", "--name", "ops"]);
    assert!(out.status.success(), "{}", text(&out));
    let admin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(admin.contains('.') && !admin.contains(' '), "stdout is the token alone: {admin}");
    let (s, v) = node.call(Method::GET, "/v2/apps", None).await.expect("get");
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a token exists now: {v}");

    let out = wharf(&addr, None, &["app", "ls"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("(401)"), "{}", text(&out));
    let out = wharf(&addr, Some(&admin), &["token", "create", "--role", "viewer", "--name", "dash"]);
    assert!(out.status.success(), "{}", text(&out));
    let viewer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let viewer_id = viewer.split('.').next().expect("id").to_string();

    let out = wharf(&addr, Some(&viewer), &["app", "ls"]);
    assert!(out.status.success(), "{}", text(&out));
    let file = node.data_dir().join("app.json");
    std::fs::write(&file, json!({"id": "/cli-auth", "cmd": "sleep 100", "instances": 0}).to_string()).expect("write");
    let out = wharf(&addr, Some(&viewer), &["app", "deploy", file.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("needs the deployer role"), "{}", text(&out));

    let out = wharf(&addr, Some(&admin), &["token", "ls"]);
    let listing = text(&out);
    assert!(out.status.success() && listing.contains(&viewer_id) && listing.contains("viewer"), "{listing}");
    for secret in [&admin, &viewer] {
        let s = secret.split('.').nth(1).expect("secret");
        assert!(!listing.contains(s), "token ls shows no secret");
        let (_, v) = node.call(Method::GET, "/wharf/v1/tokens", None).await.expect("get");
        assert!(!v.to_string().contains(s));
        assert!(!grep_dir(&node.data_dir().join("data"), s.as_bytes()), "the secret is nowhere in the data directory");
    }

    let out = wharf(&addr, Some(&admin), &["token", "rm", &viewer_id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = wharf(&addr, Some(&viewer), &["app", "ls"]);
    assert!(!out.status.success() && text(&out).contains("(401)"), "a revoked token: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_basic_credentials_from_the_address() {
    let node = Node::start_with_credentials(USER, PASS).await;
    let with_creds = format!("http://{USER}:{}@127.0.0.1:{}", PASS.replace(':', "%3A"), node.http);
    let out = wharf(&with_creds, None, &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out));
    let wrong = format!("http://{USER}:nope@127.0.0.1:{}", node.http);
    let out = wharf(&wrong, None, &["node", "ls"]);
    assert!(!out.status.success() && text(&out).contains("(401)"), "{}", text(&out));
    let out = wharf(&node.addr(), Some("nosuch.token"), &["app", "ls"]);
    assert!(!out.status.success() && text(&out).contains("(401)"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_with_basic_auth() {
    if !common::python::have_marathon_python() {
        return;
    }
    let node = Node::start_with_credentials(USER, PASS).await;
    let viewer = make_token(&node, "viewer").await;
    common::python::run_on(&node, "auth_check.py", &[USER.into(), PASS.into(), viewer]).await;
}

/// Whether any file under `dir` contains `needle`.
fn grep_dir(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            grep_dir(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
        }
    })
}

/// A task's output read through a node that does not run it: the node
/// proxies with the caller's credentials (the task's node checks them too)
/// and passes a refusal back as a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_files_through_another_node_carry_the_credentials() {
    let c = common::cluster::Cluster::start(2, &[]).await;
    let app =
        json!({"id": "/proxied", "cmd": "echo proxied-line; sleep 1000", "cpus": 0.05, "mem": 16, "instances": 1});
    let (s, v) = c.call(0, Method::POST, "/v2/apps", Some(&app)).await.expect("post");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (task, host) = loop {
        if let Some(t) = c.running(0, "/proxied").await.into_iter().next() {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "the task did not start:\n{}", c.log(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Ask the node that does not run it.
    let via = if c.node_of_host(&host) == 0 { 1 } else { 0 };
    let (s, v) = c.call(0, Method::POST, "/wharf/v1/tokens", Some(&json!({"role": "admin"}))).await.expect("token");
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let admin = v["token"].as_str().expect("token").to_string();
    let r = c.client.post(format!("{}/wharf/v1/tokens", c.nodes[0].addr())).bearer_auth(&admin);
    let v: Value = r.json(&json!({"role": "viewer"})).send().await.expect("post").json().await.expect("json");
    let viewer = v["token"].as_str().expect("viewer token").to_string();

    let url = format!("{}/wharf/v1/tasks/{task}/files/stdout", c.nodes[via].addr());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.client.get(&url).bearer_auth(&viewer).send().await.expect("get");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status == StatusCode::OK && text.contains("proxied-line") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "through node {via}: {status} {text}\n{}", c.log(via));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c.client.get(&url).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no credentials, no output");
    let r = c.client.get(&url).header("cookie", format!("wharf_auth=Bearer:{viewer}")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "the UI's cookie is passed on too");
    // The logs stream is passed through the same way.
    let logs = format!("{}/wharf/v1/tasks/{task}/logs", c.nodes[via].addr());
    let r = c.client.get(&logs).bearer_auth(&viewer).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap_or_default().contains("proxied-line"));
    let r = c.client.get(&logs).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no credentials, no logs");
    let r = c.client.get(&logs).header("cookie", format!("wharf_auth=Bearer:{viewer}")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK, "the UI's cookie is passed on for logs too");

    // With no token left the cluster is open again (and the harness cleans up).
    for t in [&viewer, &admin] {
        let id = t.split('.').next().expect("id");
        let r = c.client.delete(format!("{}/wharf/v1/tokens/{id}", c.nodes[0].addr())).bearer_auth(&admin).send().await;
        assert_eq!(r.expect("delete").status(), StatusCode::OK);
    }
    let (s, _) = c.call(0, Method::GET, "/v2/apps", None).await.expect("get");
    assert_eq!(s, StatusCode::OK);
}
