//! Marathon app JSON -> validated `AppSpec`: defaults, normalisation (ports,
//! networking, containers), rule checks, partial updates and service ports.
//! Fields Wharf does not model are kept verbatim in `AppSpec.passthrough`.

use crate::error::{ApiError, ErrorDetail};
use crate::read::{get, take, Cx};
use crate::validate::{self, valid_port_name, valid_protocol};
use model::{AppId, AppSpec, CommandSpec, KillSelection, PortSpec};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// `AppInfo` fields Marathon renders but never reads back (a client may
/// POST what it got from GET): dropped on input.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "tasksStats",
    "readinessCheckResults",
];

/// Marathon's id rule, quoted in errors.
const ID_PATTERN: &str =
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$";

/// How the app's tasks are networked; decides whether ports come from
/// `portDefinitions` (host) or `container.portMappings` (bridge/container).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetMode {
    Host,
    Bridge,
    Container,
}

pub(crate) fn net_mode(m: &Map<String, Value>) -> NetMode {
    net_mode_of(get(m, "networks"), get(m, "container"), get(m, "ipAddress"))
}

/// Networking from `networks`, else `container.docker.network`, else `ipAddress`.
pub(crate) fn net_mode_of(networks: Option<&Value>, container: Option<&Value>, ip_address: Option<&Value>) -> NetMode {
    if let Some(Value::Array(nets)) = networks {
        if !nets.is_empty() {
            let modes: Vec<&str> =
                nets.iter().map(|n| n.get("mode").and_then(Value::as_str).unwrap_or("container")).collect();
            return if modes.contains(&"container/bridge") {
                NetMode::Bridge
            } else if modes.contains(&"container") {
                NetMode::Container
            } else {
                NetMode::Host
            };
        }
    }
    let docker_net = container.and_then(|c| c.get("docker")).and_then(|d| d.get("network")).and_then(Value::as_str);
    match docker_net {
        Some("BRIDGE") => return NetMode::Bridge,
        Some("USER") => return NetMode::Container,
        Some(_) => return NetMode::Host,
        None => {}
    }
    if matches!(ip_address, Some(Value::Object(_))) {
        return NetMode::Container;
    }
    NetMode::Host
}

/// Where a container app's port mappings live (1.5+ `container.portMappings`,
/// or the deprecated `container.docker.portMappings`).
pub(crate) fn port_mappings_mut(container: &mut Value) -> Option<&mut Vec<Value>> {
    if matches!(container.get("portMappings"), Some(Value::Array(_))) {
        return container.get_mut("portMappings").and_then(Value::as_array_mut);
    }
    container.get_mut("docker").and_then(|d| d.get_mut("portMappings")).and_then(Value::as_array_mut)
}

/// POST /v2/apps body -> validated spec.
pub fn parse_app(body: &[u8]) -> Result<AppSpec, ApiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(vec![ErrorDetail::new("/", e.to_string())]))?;
    app_from_value(v, "")
}

/// One app definition (already parsed JSON) -> validated spec. `path_prefix`
/// is put before every error path (`/apps(0)` for an app inside a group).
pub fn app_from_value(v: Value, path_prefix: &str) -> Result<AppSpec, ApiError> {
    let mut cx = Cx::new(path_prefix);
    let spec = read_app(&mut cx, v);
    cx.finish()?;
    spec.ok_or_else(|| ApiError::unprocessable(vec![ErrorDetail::new("/", "invalid app")]))
}

fn read_app(cx: &mut Cx, v: Value) -> Option<AppSpec> {
    let Value::Object(mut m) = v else {
        cx.type_err("", "object");
        return None;
    };
    for k in READ_ONLY {
        m.remove(*k);
    }

    // id
    let id = match take(&mut m, "id") {
        None => {
            cx.invalid("/id", "error.path.missing");
            None
        }
        Some(v) => cx.string(&v, "/id").and_then(|s| match AppId::parse(&s) {
            Ok(id) if id.is_root() => {
                cx.invalid("/id", "Path must not be the root group");
                None
            }
            Ok(id) => Some(id),
            Err(e) => {
                cx.invalid("/id", format!("'{s}' must fully match regular expression '{ID_PATTERN}' ({e})"));
                None
            }
        }),
    };
    let mut spec = AppSpec::new(id.clone().unwrap_or_else(AppId::root));

    // command
    let cmd = take(&mut m, "cmd").and_then(|v| cx.string(&v, "/cmd"));
    let args = take(&mut m, "args").and_then(|v| {
        let a = cx.array(&v, "/args")?;
        let mut out = Vec::new();
        for (i, s) in a.iter().enumerate() {
            out.push(cx.string(s, &format!("/args({i})"))?);
        }
        Some(out)
    });
    if matches!(&cmd, Some(c) if c.is_empty()) {
        cx.invalid("/cmd", "must not be empty");
    }
    spec.command = match (cmd, args) {
        (Some(_), Some(_)) => {
            cx.invalid("/cmd", "'cmd' and 'args' are mutually exclusive: give only one");
            None
        }
        (Some(c), None) => Some(CommandSpec::Shell(c)),
        (None, Some(a)) => Some(CommandSpec::Argv(a)),
        (None, None) => None,
    };

    // resources and scalars
    if let Some(v) = take(&mut m, "cpus") {
        if let Some(c) = cx.number(&v, "/cpus") {
            if c < 0.001 {
                cx.invalid("/cpus", format!("got {c}, expected 0.001 or more"));
            }
            spec.resources.cpus = c;
        }
    }
    for (key, slot) in [("mem", 0), ("disk", 1)] {
        if let Some(v) = take(&mut m, key) {
            if let Some(n) = cx.number(&v, &format!("/{key}")) {
                if n < 0.0 {
                    cx.invalid(&format!("/{key}"), format!("got {n}, expected 0.0 or more"));
                }
                if slot == 0 {
                    spec.resources.mem = n;
                } else {
                    spec.resources.disk = n;
                }
            }
        }
    }
    if let Some(v) = take(&mut m, "gpus") {
        if let Some(g) = cx.non_negative(&v, "/gpus") {
            spec.resources.gpus = u32::try_from(g).unwrap_or(u32::MAX);
        }
    }
    if let Some(v) = take(&mut m, "instances") {
        if let Some(i) = cx.non_negative(&v, "/instances") {
            spec.instances = u32::try_from(i).unwrap_or(u32::MAX);
        }
    }
    if let Some(v) = take(&mut m, "backoffSeconds") {
        if let Some(i) = cx.non_negative(&v, "/backoffSeconds") {
            spec.backoff.seconds = i as f64;
        }
    }
    if let Some(v) = take(&mut m, "backoffFactor") {
        if let Some(f) = cx.number(&v, "/backoffFactor") {
            if f < 1.0 {
                cx.invalid("/backoffFactor", format!("got {f}, expected 1.0 or more"));
            }
            spec.backoff.factor = f;
        }
    }
    if let Some(v) = take(&mut m, "maxLaunchDelaySeconds") {
        if let Some(i) = cx.non_negative(&v, "/maxLaunchDelaySeconds") {
            spec.backoff.max_launch_delay_seconds = i as f64;
        }
    }
    if let Some(v) = take(&mut m, "taskKillGracePeriodSeconds") {
        if let Some(i) = cx.non_negative(&v, "/taskKillGracePeriodSeconds") {
            spec.kill_grace_seconds = i as f64;
        }
    }
    if let Some(v) = take(&mut m, "killSelection") {
        match cx.string(&v, "/killSelection").as_deref() {
            Some("YOUNGEST_FIRST") => spec.kill_selection = KillSelection::YoungestFirst,
            Some("OLDEST_FIRST") => spec.kill_selection = KillSelection::OldestFirst,
            Some(_) => cx.invalid("/killSelection", "must be one of YOUNGEST_FIRST, OLDEST_FIRST"),
            None => {}
        }
    }
    if let Some(v) = take(&mut m, "requirePorts") {
        spec.require_ports = cx.boolean(&v, "/requirePorts").unwrap_or(false);
    }
    if let Some(v) = take(&mut m, "user") {
        spec.user = cx.string(&v, "/user");
    }
    let upgrade_given = m.contains_key("upgradeStrategy");
    if let Some(v) = take(&mut m, "upgradeStrategy") {
        if let Some(o) = cx.object(&v, "/upgradeStrategy") {
            for key in ["minimumHealthCapacity", "maximumOverCapacity"] {
                let rel = format!("/upgradeStrategy/{key}");
                if let Some(f) = get(o, key).and_then(|x| cx.number(x, &rel)) {
                    if !(0.0..=1.0).contains(&f) {
                        cx.invalid(&rel, format!("got {f}, expected between 0.0 and 1.0"));
                    }
                    if key == "minimumHealthCapacity" {
                        spec.upgrade.minimum_health_capacity = f;
                    } else {
                        spec.upgrade.maximum_over_capacity = f;
                    }
                }
            }
        }
    }

    // labels, secrets and env (secret references are checked against `secrets`)
    if let Some(v) = take(&mut m, "labels") {
        spec.labels = cx.string_map(&v, "/labels");
    }
    if let Some(v) = take(&mut m, "secrets") {
        spec.secrets = read_secrets(cx, &v, "/secrets");
    }
    if let Some(v) = take(&mut m, "env") {
        let (env, secret_env) = read_env(cx, &v, "/env", &spec.secrets);
        spec.env = env;
        spec.secret_env = secret_env;
    }

    // constraints
    if let Some(v) = take(&mut m, "constraints") {
        if let Some(a) = cx.array(&v, "/constraints") {
            for (i, c) in a.iter().enumerate() {
                if let Some(c) = validate::constraint(cx, c, &format!("/constraints({i})")) {
                    if !spec.constraints.contains(&c) {
                        spec.constraints.push(c);
                    }
                }
            }
        }
    }

    // dependencies (relative ids resolve against the app's group)
    if let Some(v) = take(&mut m, "dependencies") {
        if let Some(a) = cx.array(&v, "/dependencies") {
            let base = id.as_ref().map(AppId::parent).unwrap_or_else(AppId::root);
            for (i, d) in a.iter().enumerate() {
                let rel = format!("/dependencies({i})");
                if let Some(s) = cx.string(d, &rel) {
                    match AppId::parse_relative(&s, &base) {
                        Ok(dep) if !spec.dependencies.contains(&dep) => spec.dependencies.push(dep),
                        Ok(_) => {}
                        Err(e) => cx.invalid(&rel, e.to_string()),
                    }
                }
            }
        }
    }

    // artifacts: `fetch`, or the legacy `uris` turned into fetch entries
    let fetch = take(&mut m, "fetch");
    let uris = take(&mut m, "uris");
    spec.fetch = crate::fetch::read(cx, fetch.as_ref(), uris.as_ref());

    // container
    let mode = net_mode(&m);
    if let Some(mut c) = take(&mut m, "container") {
        if mode == NetMode::Bridge && port_mappings_mut(&mut c).is_none() {
            // Marathon's default for bridge networking: one dynamic mapping.
            if let Value::Object(co) = &mut c {
                co.insert(
                    "portMappings".into(),
                    json!([{"containerPort": 0, "hostPort": 0, "servicePort": 0, "protocol": "tcp", "name": "default"}]),
                );
            }
        }
        spec.ports = match mode {
            NetMode::Host => Vec::new(),
            _ => read_port_mappings(cx, &mut c),
        };
        if mode != NetMode::Host {
            // servicePort is always explicit, as Marathon renders it.
            if let Some(pms) = port_mappings_mut(&mut c) {
                for (pm, p) in pms.iter_mut().zip(&spec.ports) {
                    if let Value::Object(o) = pm {
                        o.insert("servicePort".into(), json!(p.port));
                    }
                }
            }
        }
        spec.container = crate::container::read(cx, &c, mode);
        check_secret_volumes(cx, &spec);
        if spec.container.has_persistent_volumes() {
            // Marathon's resident tasks: a replacement reuses its
            // instance's volume, so it cannot start beside the old task.
            if !upgrade_given {
                spec.upgrade.minimum_health_capacity = 0.5;
                spec.upgrade.maximum_over_capacity = 0.0;
            } else if spec.upgrade.maximum_over_capacity != 0.0 {
                cx.invalid(
                    "/upgradeStrategy/maximumOverCapacity",
                    "must be 0 for an app with persistent volumes (its instances keep their node and volumes)",
                );
            }
        }
        if let Some(name) = spec.container.container().and_then(|c| c.pull_config.as_ref()) {
            if !spec.secrets.contains_key(name) {
                cx.invalid(
                    "/container/docker/pullConfig/secret",
                    format!("references an undefined secret named '{name}'"),
                );
            }
        }
        // Only what the typed form does not say is kept (see `container`).
        if let Some(rest) = crate::container::residue(&c, &crate::container::wire(&spec.container, &spec.ports)) {
            spec.passthrough.insert("container".into(), rest);
        }
    }

    // ports (host networking)
    let port_defs = take(&mut m, "portDefinitions");
    let ports = take(&mut m, "ports");
    if mode == NetMode::Host {
        spec.ports = match (port_defs, ports) {
            (Some(pd), _) => read_port_definitions(cx, &pd),
            (None, Some(p)) => {
                let mut out = Vec::new();
                if let Some(a) = cx.array(&p, "/ports") {
                    for (i, x) in a.iter().enumerate() {
                        if let Some(port) = cx.port(x, &format!("/ports({i})")) {
                            out.push(PortSpec { port, name: None, protocol: "tcp".into(), labels: BTreeMap::new() });
                        }
                    }
                }
                out
            }
            (None, None) => vec![PortSpec {
                port: 0,
                name: Some("default".into()),
                protocol: "tcp".into(),
                labels: BTreeMap::new(),
            }],
        };
        check_unique_ports(cx, &spec.ports, "/portDefinitions");
    }

    // health checks: typed, plus the original kept for echo (MESOS_* names, ipProtocol, ...)
    if let Some(v) = take(&mut m, "healthChecks") {
        if let Some(a) = cx.array(&v, "/healthChecks") {
            let n = spec.ports.len();
            for (i, h) in a.iter().enumerate() {
                if let Some(h) = validate::health_check(cx, h, &format!("/healthChecks({i})"), n) {
                    spec.health_checks.push(h);
                }
            }
            let extras = health_check_extras(a, &spec.health_checks);
            if extras.iter().any(|e| e.as_object().is_some_and(|o| !o.is_empty())) {
                spec.passthrough.insert("healthChecks".into(), Value::Array(extras));
            }
        }
    }

    // readiness checks: typed (they gate deployments); each names a port
    if let Some(v) = take(&mut m, "readinessChecks") {
        let names: BTreeSet<&str> = spec.ports.iter().filter_map(|p| p.name.as_deref()).collect();
        spec.readiness_checks = crate::readiness::parse(cx, &v, &names);
    }

    if spec.command.is_none() && spec.container.image().is_none() {
        cx.invalid("", "AppDefinition must either contain one of 'cmd' or 'args', and/or a 'container'.");
    }

    // everything else is kept verbatim (but not values equal to what is
    // rendered when absent, so that rendered output parses back the same)
    for (k, v) in m {
        if !v.is_null() && !is_rendered_default(&k, &v) {
            spec.passthrough.insert(k, v);
        }
    }
    spec.unreachable = unreachable_strategy(spec.passthrough.get("unreachableStrategy"));
    id.map(|_| spec)
}

/// Marathon's `secrets`: `{NAME: {"source": PATH}}`.
pub(crate) fn read_secrets(cx: &mut Cx, v: &Value, rel: &str) -> BTreeMap<String, model::SecretSource> {
    let mut out = BTreeMap::new();
    let Some(o) = cx.object(v, rel) else { return out };
    for (name, s) in o {
        let at = format!("{rel}/{name}");
        let Some(so) = cx.object(s, &at) else { continue };
        let source = match get(so, "source") {
            None => {
                cx.invalid(&format!("{at}/source"), "error.path.missing");
                continue;
            }
            Some(src) => cx.string(src, &format!("{at}/source")),
        };
        if let Some(source) = source {
            match model::SecretPath::parse(&source) {
                Ok(_) => {
                    out.insert(name.clone(), model::SecretSource { source });
                }
                Err(e) => cx.invalid(&format!("{at}/source"), e.to_string()),
            }
        }
    }
    out
}

/// `env`: plain values, and references to a declared secret
/// (`{"secret": NAME}`), as (plain, var -> secret name).
pub(crate) fn read_env(
    cx: &mut Cx,
    v: &Value,
    rel: &str,
    secrets: &BTreeMap<String, model::SecretSource>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let (mut env, mut secret_env) = (BTreeMap::new(), BTreeMap::new());
    let Some(o) = cx.object(v, rel) else { return (env, secret_env) };
    for (k, val) in o {
        let at = format!("{rel}/{k}");
        match val {
            Value::String(s) => {
                env.insert(k.clone(), s.clone());
            }
            Value::Object(so) if so.len() == 1 && so.contains_key("secret") => match so.get("secret") {
                Some(Value::String(name)) if secrets.contains_key(name) => {
                    secret_env.insert(k.clone(), name.clone());
                }
                Some(Value::String(name)) => cx.invalid(&at, format!("references an undefined secret named '{name}'")),
                _ => cx.invalid(&at, "secret must be a string"),
            },
            _ => cx.invalid(&at, "must be a string or a secret reference {\"secret\": \"name\"}"),
        }
    }
    (env, secret_env)
}

/// File secrets name a declared secret and a path under the sandbox.
fn check_secret_volumes(cx: &mut Cx, spec: &AppSpec) {
    let Some(c) = spec.container.container() else { return };
    for (i, v) in c.volumes.iter().enumerate() {
        let Some(name) = &v.secret else { continue };
        let rel = format!("/container/volumes({i})");
        if !spec.secrets.contains_key(name) {
            cx.invalid(&format!("{rel}/secret"), format!("references an undefined secret named '{name}'"));
        }
        if v.container_path.starts_with('/') {
            cx.invalid(
                &format!("{rel}/containerPath"),
                "a file secret's containerPath must be relative (the file is written in the task's sandbox)",
            );
        }
    }
}

/// The typed form of `unreachableStrategy` (the original stays in
/// passthrough for rendering).
fn unreachable_strategy(v: Option<&Value>) -> model::UnreachableStrategy {
    match v {
        Some(Value::String(s)) if s.eq_ignore_ascii_case("disabled") => model::UnreachableStrategy::Disabled,
        Some(Value::Object(m)) => model::UnreachableStrategy::Enabled {
            inactive_after_seconds: m.get("inactiveAfterSeconds").and_then(Value::as_f64).unwrap_or(0.0).max(0.0),
            expunge_after_seconds: m.get("expungeAfterSeconds").and_then(Value::as_f64).unwrap_or(0.0).max(0.0),
        },
        _ => model::UnreachableStrategy::default(),
    }
}

/// Values `render` shows for an absent field: not worth keeping.
fn is_rendered_default(key: &str, v: &Value) -> bool {
    match key {
        "executor" => v == &json!(""),
        "storeUrls" => v == &json!([]),
        "secrets" => v == &json!({}),
        "unreachableStrategy" => v == &json!({"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0}),
        _ => false,
    }
}

/// Per health check, the original fields whose value the typed form does not
/// reproduce (`"protocol": "MESOS_HTTP"`, `ipProtocol`, unknown keys).
fn health_check_extras(originals: &[Value], typed: &[model::HealthCheck]) -> Vec<Value> {
    originals
        .iter()
        .zip(typed)
        .map(|(orig, h)| {
            let rendered = crate::render::health_check_wire(h);
            let mut extra = Map::new();
            if let Value::Object(o) = orig {
                for (k, v) in o {
                    let same = match (rendered.get(k), v) {
                        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
                        (Some(a), b) => a == b,
                        (None, b) => b.is_null(),
                    };
                    if !same {
                        extra.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(extra)
        })
        .collect()
}

fn read_port_definitions(cx: &mut Cx, v: &Value) -> Vec<PortSpec> {
    let mut out = Vec::new();
    let Some(a) = cx.array(v, "/portDefinitions") else {
        return out;
    };
    for (i, pd) in a.iter().enumerate() {
        let rel = format!("/portDefinitions({i})");
        let Some(o) = cx.object(pd, &rel) else {
            continue;
        };
        if let Some(p) = read_port_fields(cx, o, &rel, "port") {
            out.push(p);
        }
    }
    check_unique_names(cx, &out, "/portDefinitions");
    out
}

/// `port`/`servicePort`, `protocol`, `name`, `labels` of one definition or mapping.
fn read_port_fields(cx: &mut Cx, o: &Map<String, Value>, rel: &str, port_key: &str) -> Option<PortSpec> {
    let port = match get(o, port_key) {
        None => 0,
        Some(p) => cx.port(p, &format!("{rel}/{port_key}"))?,
    };
    let protocol = match get(o, "protocol") {
        None => "tcp".to_string(),
        Some(p) => cx.string(p, &format!("{rel}/protocol"))?,
    };
    if !valid_protocol(&protocol) {
        cx.invalid(&format!("{rel}/protocol"), "must be one of tcp, udp, udp,tcp");
    }
    let name = match get(o, "name") {
        None => None,
        Some(n) => {
            let n = cx.string(n, &format!("{rel}/name"))?;
            if !valid_port_name(&n) {
                cx.invalid(
                    &format!("{rel}/name"),
                    "must fully match regular expression '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
                );
            }
            Some(n)
        }
    };
    let labels = match get(o, "labels") {
        None => BTreeMap::new(),
        Some(l) => cx.string_map(l, &format!("{rel}/labels")),
    };
    Some(PortSpec { port, name, protocol, labels })
}

fn read_port_mappings(cx: &mut Cx, c: &mut Value) -> Vec<PortSpec> {
    let rel_base = if matches!(c.get("portMappings"), Some(Value::Array(_))) {
        "/container/portMappings"
    } else {
        "/container/docker/portMappings"
    };
    let mut out = Vec::new();
    let Some(a) = port_mappings_mut(c) else {
        return out;
    };
    for (i, pm) in a.iter().enumerate() {
        let rel = format!("{rel_base}({i})");
        let Some(o) = cx.object(pm, &rel) else {
            continue;
        };
        for key in ["containerPort", "hostPort"] {
            if let Some(p) = get(o, key) {
                cx.port(p, &format!("{rel}/{key}"));
            }
        }
        if let Some(p) = read_port_fields(cx, o, &rel, "servicePort") {
            out.push(p);
        }
    }
    check_unique_names(cx, &out, rel_base);
    out
}

fn check_unique_names(cx: &mut Cx, ports: &[PortSpec], rel_base: &str) {
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if let Some(n) = &p.name {
            if !seen.insert(n.clone()) {
                cx.invalid(&format!("{rel_base}({i})/name"), "Port names must be unique.");
            }
        }
    }
}

fn check_unique_ports(cx: &mut Cx, ports: &[PortSpec], rel_base: &str) {
    let mut seen = BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if p.port != 0 && !seen.insert(p.port) {
            cx.invalid(&format!("{rel_base}({i})/port"), "Ports must be unique.");
        }
    }
}

/// PUT /v2/apps/{id} and PATCH: the fields given replace those of `existing`
/// (absent or `null` fields keep their value); the result is re-validated.
/// The id from the URL wins over one in the body.
pub fn merge_app(existing: &AppSpec, id: &AppId, patch: Value) -> Result<AppSpec, ApiError> {
    let Value::Object(patch) = patch else {
        return Err(ApiError::invalid_json(vec![ErrorDetail::new("/", "error.expected.jsobject")]));
    };
    let mut base = crate::render::spec_wire(existing);
    // Fields that exclude each other: giving one drops the other.
    let exclusive = [("cmd", "args"), ("portDefinitions", "ports"), ("fetch", "uris")];
    for (a, b) in exclusive {
        for (given, other) in [(a, b), (b, a)] {
            if get(&patch, given).is_some() && get(&patch, other).is_none() {
                base.remove(other);
            }
        }
    }
    let before = net_mode(&base);
    let ports_given = get(&patch, "portDefinitions").is_some() || get(&patch, "ports").is_some();
    for (k, v) in patch {
        if !v.is_null() {
            base.insert(k, v);
        }
    }
    // Switching networking mode drops the old mode's port settings.
    if !ports_given && net_mode(&base) != before {
        base.remove("portDefinitions");
        base.remove("ports");
    }
    base.insert("id".into(), Value::String(id.to_string()));
    app_from_value(Value::Object(base), "")
}
