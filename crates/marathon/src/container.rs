//! Marathon's `container` object <-> `model::ContainerSpec`: the typed fields
//! (type, image, volumes, port mappings, privileged, parameters,
//! forcePullImage, pullConfig) and their rules (image references, volume
//! paths, persistent volumes). What the typed form does not say (a
//! persistent volume's type and constraints, the
//! deprecated `docker.network`, unknown keys) is kept as a *residue*: the
//! difference between the original JSON and the typed rendering, laid back
//! over it on output, so a definition renders exactly as it was given.

use crate::convert::NetMode;
use crate::read::{get, Cx};
use model::{Container, ContainerSpec, NetworkMode, PortMapping, PortSpec, Volume, VolumeMode};
use serde_json::{json, Map, Value};

/// Reads a `container` object (already normalised: default port mapping,
/// explicit service ports). `mode` is the app's networking.
pub(crate) fn read(cx: &mut Cx, c: &Value, mode: NetMode) -> ContainerSpec {
    let Some(o) = cx.object(c, "/container") else {
        return ContainerSpec::None;
    };
    let kind = match get(o, "type") {
        None => "DOCKER".to_string(),
        Some(t) => cx.string(t, "/container/type").unwrap_or_default(),
    };
    let mut out = Container {
        network: match mode {
            NetMode::Host => NetworkMode::Host,
            NetMode::Bridge => NetworkMode::Bridge,
            NetMode::Container => NetworkMode::Container,
        },
        ..Container::default()
    };
    if let Some(d) = get(o, "docker").and_then(|d| cx.object(d, "/container/docker")) {
        read_docker(cx, d, &mut out);
    }
    if let Some(v) = get(o, "volumes").and_then(|v| cx.array(v, "/container/volumes")) {
        for (i, vol) in v.iter().enumerate() {
            if let Some(vol) = read_volume(cx, vol, &format!("/container/volumes({i})")) {
                out.volumes.push(vol);
            }
        }
    }
    let (pms, base) = match (get(o, "portMappings"), o.get("docker").and_then(|d| d.get("portMappings"))) {
        (Some(Value::Array(a)), _) => (Some(a), "/container/portMappings"),
        (_, Some(Value::Array(a))) => (Some(a), "/container/docker/portMappings"),
        _ => (None, ""),
    };
    for (i, pm) in pms.into_iter().flatten().enumerate() {
        if let Some(pm) = read_port_mapping(cx, pm, &format!("{base}({i})")) {
            out.port_mappings.push(pm);
        }
    }
    match kind.as_str() {
        "DOCKER" => {
            if out.image.is_none() {
                cx.invalid("/container/docker/image", "is required for a DOCKER container");
            }
            ContainerSpec::Docker(out)
        }
        "MESOS" => ContainerSpec::Oci(out),
        _ => {
            cx.invalid("/container/type", "must be one of MESOS, DOCKER");
            ContainerSpec::None
        }
    }
}

fn read_docker(cx: &mut Cx, d: &Map<String, Value>, out: &mut Container) {
    if let Some(i) = get(d, "image").and_then(|i| cx.string(i, "/container/docker/image")) {
        if let Err(why) = check_image_reference(&i) {
            cx.invalid("/container/docker/image", format!("'{i}' is not a valid image reference: {why}"));
        }
        out.image = Some(i);
    }
    if let Some(b) = get(d, "privileged") {
        out.privileged = cx.boolean(b, "/container/docker/privileged").unwrap_or(false);
    }
    if let Some(b) = get(d, "forcePullImage") {
        out.force_pull_image = cx.boolean(b, "/container/docker/forcePullImage").unwrap_or(false);
    }
    if let Some(p) = get(d, "pullConfig").and_then(|p| cx.object(p, "/container/docker/pullConfig")) {
        match get(p, "secret").and_then(|s| cx.string(s, "/container/docker/pullConfig/secret")) {
            Some(name) if !name.is_empty() => out.pull_config = Some(name),
            _ => cx.invalid("/container/docker/pullConfig/secret", "must name one of the app's secrets"),
        }
    }
    if let Some(a) = get(d, "parameters").and_then(|p| cx.array(p, "/container/docker/parameters")) {
        for (i, p) in a.iter().enumerate() {
            let rel = format!("/container/docker/parameters({i})");
            let Some(p) = cx.object(p, &rel) else { continue };
            let key = get(p, "key").and_then(|k| cx.string(k, &format!("{rel}/key")));
            let value = get(p, "value").and_then(|v| cx.string(v, &format!("{rel}/value")));
            match key {
                Some(k) if !k.is_empty() => out.parameters.push((k, value.unwrap_or_default())),
                _ => cx.invalid(&format!("{rel}/key"), "must not be empty"),
            }
        }
    }
}

fn read_volume(cx: &mut Cx, v: &Value, rel: &str) -> Option<Volume> {
    let o = cx.object(v, rel)?;
    let container_path = match get(o, "containerPath") {
        None => {
            cx.invalid(&format!("{rel}/containerPath"), "error.path.missing");
            return None;
        }
        Some(p) => cx.string(p, &format!("{rel}/containerPath"))?,
    };
    if container_path.is_empty() {
        cx.invalid(&format!("{rel}/containerPath"), "must not be empty");
    } else if container_path.split('/').any(|c| c == "..") {
        cx.invalid(&format!("{rel}/containerPath"), format!("'{container_path}' must not escape the sandbox (..)"));
    }
    let host_path = match get(o, "hostPath") {
        None => None,
        Some(p) => Some(cx.string(p, &format!("{rel}/hostPath"))?),
    };
    // A file secret (Marathon's `{"containerPath", "secret"}`); the app
    // reader checks the name against `secrets`.
    let secret = match get(o, "secret") {
        None => None,
        Some(s) => Some(cx.string(s, &format!("{rel}/secret"))?),
    };
    if secret.is_some() && host_path.is_some() {
        cx.invalid(&format!("{rel}/secret"), "a volume is either a host path or a secret, not both");
    }
    let mode = match get(o, "mode").and_then(|m| cx.string(m, &format!("{rel}/mode"))).as_deref() {
        None | Some("RW") => VolumeMode::Rw,
        Some("RO") => VolumeMode::Ro,
        Some(_) => {
            cx.invalid(&format!("{rel}/mode"), "must be one of RO, RW");
            VolumeMode::Rw
        }
    };
    let persistent = match get(o, "persistent") {
        None => None,
        Some(p) => read_persistent(cx, p, rel, &container_path, host_path.is_some()),
    };
    Some(Volume { container_path, host_path, mode, persistent, secret })
}

/// `persistent: {size}` (MiB), Marathon's rules: a size of at least 1, a
/// one-level relative `containerPath`, no `hostPath`.
fn read_persistent(
    cx: &mut Cx,
    p: &Value,
    rel: &str,
    container_path: &str,
    has_host_path: bool,
) -> Option<model::PersistentVolume> {
    let o = cx.object(p, &format!("{rel}/persistent"))?;
    let size_rel = format!("{rel}/persistent/size");
    let size = match get(o, "size") {
        None => {
            cx.invalid(&size_rel, "error.path.missing");
            return None;
        }
        Some(s) => cx.number(s, &size_rel)?,
    };
    if size < 1.0 || size.fract() != 0.0 {
        cx.invalid(&size_rel, format!("got {size}, expected a whole number of MiB, at least 1"));
    }
    if container_path.contains('/') {
        cx.invalid(
            &format!("{rel}/containerPath"),
            format!("'{container_path}': a persistent volume's path is one relative name (no '/')"),
        );
    }
    if has_host_path {
        cx.invalid(&format!("{rel}/hostPath"), "a persistent volume has no hostPath");
    }
    Some(model::PersistentVolume { size_mb: size as u64 })
}

fn read_port_mapping(cx: &mut Cx, v: &Value, rel: &str) -> Option<PortMapping> {
    // Type errors are reported where the app's ports are read.
    let o = v.as_object()?;
    let port = |cx: &mut Cx, key: &str| get(o, key).and_then(|p| cx.port(p, &format!("{rel}/{key}"))).unwrap_or(0);
    let container_port = port(cx, "containerPort");
    let host_port = port(cx, "hostPort");
    let protocol = get(o, "protocol").and_then(Value::as_str).unwrap_or("tcp").to_string();
    let name = get(o, "name").and_then(Value::as_str).map(str::to_string);
    Some(PortMapping { container_port, host_port, protocol, name })
}

/// Checks a reference against Docker's grammar:
/// `[host[:port]/]component(/component)*[:tag][@algorithm:hex]`.
pub fn check_image_reference(r: &str) -> Result<(), &'static str> {
    if r.is_empty() {
        return Err("it is empty");
    }
    if r.len() > 255 + 128 + 80 {
        return Err("it is too long");
    }
    let (rest, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("a digest is algorithm:hex")?;
        let algo_ok = !algo.is_empty()
            && algo.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !algo_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            return Err("the digest is not algorithm:hex");
        }
        if algo == "sha256" && hex.len() != 64 {
            return Err("a sha256 digest has 64 hex digits");
        }
    }
    // A tag follows the last ':' that comes after the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let first_ok = t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || t.len() > 128 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err("the tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        }
    }
    if name.len() > 255 {
        return Err("the name is longer than 255 characters");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let is_host = parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if is_host {
        let (host, port) = match first.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        // Docker wants a numeric port, but Marathon's own example app uses
        // `mesosphere:marathon/latest` and Marathon accepts it: such a name
        // is let through here and fails at pull time with the engine's reason.
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err("the registry host is not host[:port]");
        }
        parts.remove(0);
    }
    for p in parts {
        if !path_component_ok(p) {
            return Err("path components are lowercase letters and digits, separated by '.', '_', '__' or '-'");
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-');
        if !ok {
            return false;
        }
    }
    true
}

/// The typed container in Marathon's full form, with service ports from the
/// app's `ports` (non-host networking only, as Marathon renders them).
pub(crate) fn wire(c: &ContainerSpec, ports: &[PortSpec]) -> Value {
    let (kind, x) = match c {
        ContainerSpec::None => return Value::Null,
        ContainerSpec::Oci(x) => ("MESOS", x),
        ContainerSpec::Docker(x) => ("DOCKER", x),
    };
    let mut o = Map::new();
    o.insert("type".into(), json!(kind));
    let mut d = Map::new();
    if let Some(i) = &x.image {
        d.insert("image".into(), json!(i));
    }
    if kind == "DOCKER" {
        d.insert("privileged".into(), json!(x.privileged));
        let params: Vec<Value> = x.parameters.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
        d.insert("parameters".into(), Value::Array(params));
    }
    if let Some(secret) = &x.pull_config {
        d.insert("pullConfig".into(), json!({"secret": secret}));
    }
    if kind == "DOCKER" || x.image.is_some() {
        d.insert("forcePullImage".into(), json!(x.force_pull_image));
        o.insert("docker".into(), Value::Object(d));
    }
    let vols: Vec<Value> = x
        .volumes
        .iter()
        .map(|v| {
            let mut m = Map::new();
            m.insert("containerPath".into(), json!(v.container_path));
            if let Some(h) = &v.host_path {
                m.insert("hostPath".into(), json!(h));
            }
            if let Some(s) = &v.secret {
                // Marathon renders a secret volume with these two fields only.
                m.insert("secret".into(), json!(s));
                return Value::Object(m);
            }
            m.insert("mode".into(), json!(if v.mode == VolumeMode::Ro { "RO" } else { "RW" }));
            if let Some(p) = &v.persistent {
                m.insert("persistent".into(), json!({"size": p.size_mb}));
            }
            Value::Object(m)
        })
        .collect();
    o.insert("volumes".into(), Value::Array(vols));
    if !x.port_mappings.is_empty() {
        let pms: Vec<Value> = x
            .port_mappings
            .iter()
            .enumerate()
            .map(|(i, pm)| {
                let mut m = Map::new();
                m.insert("containerPort".into(), json!(pm.container_port));
                m.insert("hostPort".into(), json!(pm.host_port));
                // With host networking the app's ports are its
                // portDefinitions, not these mappings.
                let service = ports.get(i).filter(|_| x.network != NetworkMode::Host);
                if let Some(p) = service {
                    m.insert("servicePort".into(), json!(p.port));
                }
                m.insert("protocol".into(), json!(pm.protocol));
                if let Some(n) = &pm.name {
                    m.insert("name".into(), json!(n));
                }
                if let Some(l) = service.map(|p| &p.labels).filter(|l| !l.is_empty()) {
                    m.insert("labels".into(), json!(l));
                }
                Value::Object(m)
            })
            .collect();
        o.insert("portMappings".into(), Value::Array(pms));
    }
    Value::Object(o)
}

/// What `original` has that `rendered` does not say the same way; `null`
/// marks a key the rendering adds and the original lacked. `None` when they
/// are equal. `overlay(rendered, residue)` gives `original` back.
pub(crate) fn residue(original: &Value, rendered: &Value) -> Option<Value> {
    if original == rendered {
        return None;
    }
    match (original, rendered) {
        (Value::Object(o), Value::Object(r)) => {
            let mut out = Map::new();
            for (k, v) in o {
                match r.get(k) {
                    Some(rv) => {
                        if let Some(d) = residue(v, rv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in r.keys().filter(|k| !o.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Some(Value::Object(out))
        }
        (Value::Array(o), Value::Array(r)) if o.len() == r.len() => {
            // Element by element; `{}` for an element rendered as given.
            Some(Value::Array(o.iter().zip(r).map(|(a, b)| residue(a, b).unwrap_or_else(|| json!({}))).collect()))
        }
        _ => Some(original.clone()),
    }
}

/// Lays a residue from [`residue`] over a rendering.
pub(crate) fn overlay(rendered: &mut Value, residue: &Value) {
    match (rendered, residue) {
        (Value::Object(r), Value::Object(d)) => {
            for (k, v) in d {
                match (r.get_mut(k), v) {
                    (_, Value::Null) => {
                        r.remove(k);
                    }
                    (Some(rv), v) => overlay(rv, v),
                    (None, v) => {
                        r.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(r), Value::Array(d)) if r.len() == d.len() => {
            for (rv, dv) in r.iter_mut().zip(d) {
                if dv != &json!({}) {
                    overlay(rv, dv);
                }
            }
        }
        (r, d) => *r = d.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_dockers_grammar() {
        for good in [
            "busybox",
            "wharf-test/busybox:1",
            "python:3.5-alpine",
            "library/nginx:1.25",
            "127.0.0.1:5000/x/y:latest",
            "localhost/a",
            "registry.example.com/a__b/c.d-e:v1.0_rc",
            "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "mesosphere/marathon-lb:v1.12.2",
            "mesosphere:marathon/latest",
        ] {
            assert_eq!(check_image_reference(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Busybox",
            "a b",
            "nginx:",
            "nginx:-x",
            "/nginx",
            "nginx/",
            "a//b",
            "a..b",
            "nginx@sha256:abc",
            "host:/x",
            "ho st/x",
            "-x",
        ] {
            assert!(check_image_reference(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn residue_restores_the_original() {
        let cases = [
            (json!({"a": 1, "b": {"c": [1, 2], "d": "x"}}), json!({"a": 1, "b": {"c": [1, 3]}, "e": false})),
            (json!({"v": [{"p": "x", "size": 3}]}), json!({"v": [{"p": "x", "mode": "RW"}]})),
            (json!({"v": [1, 2, 3]}), json!({"v": [1]})),
        ];
        for (orig, rendered) in cases {
            let d = residue(&orig, &rendered).expect("they differ");
            let mut out = rendered.clone();
            overlay(&mut out, &d);
            assert_eq!(out, orig);
        }
    }
}
