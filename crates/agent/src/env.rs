//! The environment a task sees: Marathon's and Mesos's variables (ports,
//! host, ids, app version, resources, labels) with the app's own `env` on top.

use model::{AppSpec, Task};
use std::collections::BTreeMap;
use std::path::Path;

/// The complete environment of `task` (an instance of `app`) running in
/// `sandbox`. The app's own `env` comes last and overrides everything.
pub fn task_env(app: &AppSpec, task: &Task, sandbox: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    if let Ok(path) = std::env::var("PATH") {
        env.insert("PATH".to_string(), path);
    } else {
        env.insert("PATH".to_string(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string());
    }

    for (i, port) in task.ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), port.to_string());
        if let Some(def) = app.ports.get(i) {
            if let Some(name) = &def.name {
                env.insert(format!("PORT_{}", name.to_uppercase()), port.to_string());
            }
            // Marathon also maps each requested (service) port to the host port.
            if def.port != 0 {
                env.insert(format!("PORT_{}", def.port), port.to_string());
            }
        }
    }
    if let Some(first) = task.ports.first() {
        env.insert("PORT".to_string(), first.to_string());
    }
    if !task.ports.is_empty() {
        let list: Vec<String> = task.ports.iter().map(u16::to_string).collect();
        env.insert("PORTS".to_string(), list.join(","));
    }

    env.insert("HOST".to_string(), task.host.clone());
    env.insert("MESOS_TASK_ID".to_string(), task.id.to_string());
    env.insert("MESOS_SANDBOX".to_string(), sandbox.to_string_lossy().into_owned());
    env.insert("MARATHON_APP_ID".to_string(), app.id.to_string());
    // The same formatter as the API, so the env matches the task's `version`.
    env.insert("MARATHON_APP_VERSION".to_string(), marathon::format_time(task.app_version));
    let r = &app.resources;
    env.insert("MARATHON_APP_RESOURCE_CPUS".to_string(), double(r.cpus));
    env.insert("MARATHON_APP_RESOURCE_MEM".to_string(), double(r.mem));
    env.insert("MARATHON_APP_RESOURCE_DISK".to_string(), double(r.disk));
    env.insert("MARATHON_APP_RESOURCE_GPUS".to_string(), r.gpus.to_string());
    if let Some(image) = app.container.image() {
        env.insert("MARATHON_APP_DOCKER_IMAGE".to_string(), image.to_string());
    }

    // Marathon leaves out labels whose value is too long for an env var.
    let labels: Vec<(&String, &String)> = app.labels.iter().filter(|(_, v)| v.len() <= 512).collect();
    let names: Vec<String> = labels.iter().map(|(k, _)| label_name(k)).collect();
    env.insert("MARATHON_APP_LABELS".to_string(), names.join(" "));
    for (name, (_, value)) in names.iter().zip(&labels) {
        env.insert(format!("MARATHON_APP_LABEL_{name}"), (*value).clone());
    }

    for (k, v) in &app.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// A label key as it appears in a variable name: upper case, every run of
/// characters other than `[A-Za-z0-9_]` replaced by `_` (as Marathon does).
fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut in_run = false;
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c.to_ascii_uppercase());
            in_run = false;
        } else if !in_run {
            out.push('_');
            in_run = true;
        }
    }
    out
}

/// A double as the JVM prints it for the values Marathon uses (`1.0`, `0.5`).
fn double(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{AppId, NodeId, PortSpec, Resources, TaskGoal, TaskId, TaskState, UnixMillis};

    fn fixture() -> (AppSpec, Task) {
        let id = AppId::parse("/prod/web").expect("valid id");
        let mut app = AppSpec::new(id.clone());
        app.resources = Resources { cpus: 0.5, mem: 64.0, disk: 0.0, gpus: 0 };
        app.ports = vec![
            PortSpec { port: 10000, name: Some("http".into()), protocol: "tcp".into(), labels: BTreeMap::new() },
            PortSpec { port: 0, name: None, protocol: "tcp".into(), labels: BTreeMap::new() },
        ];
        app.labels.insert("HAPROXY_0_VHOST".into(), "web.example".into());
        app.labels.insert("team.name".into(), "core".into());
        app.env.insert("PORT1".into(), "override".into());
        app.env.insert("FOO".into(), "bar".into());
        let task = Task {
            id: TaskId::new(&id, uuid::Uuid::nil(), 1),
            app_id: id,
            node: NodeId(1),
            host: "10.0.0.5".into(),
            app_version: UnixMillis(1_443_194_028_343),
            ports: vec![31001, 31002],
            resources: app.resources,
            state: TaskState::Staging,
            goal: TaskGoal::Running,
            staged_at: UnixMillis(0),
            started_at: None,
            updated_at: UnixMillis(0),
            message: None,
            healthy: None,
            health: None,
            ready: None,
            readiness: Vec::new(),
            job_run: None,
            container_ip: None,
        };
        (app, task)
    }

    #[test]
    fn marathon_variables() {
        let (app, task) = fixture();
        let env = task_env(&app, &task, Path::new("/var/lib/wharf/sandbox/t1"));
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("PORT0"), Some("31001"));
        assert_eq!(get("PORT"), Some("31001"));
        assert_eq!(get("PORTS"), Some("31001,31002"));
        assert_eq!(get("PORT_HTTP"), Some("31001"));
        assert_eq!(get("PORT_10000"), Some("31001"));
        assert_eq!(get("HOST"), Some("10.0.0.5"));
        assert_eq!(get("MESOS_TASK_ID"), Some(task.id.as_str()));
        assert_eq!(get("MESOS_SANDBOX"), Some("/var/lib/wharf/sandbox/t1"));
        assert_eq!(get("MARATHON_APP_ID"), Some("/prod/web"));
        assert_eq!(get("MARATHON_APP_VERSION"), Some("2015-09-25T15:13:48.343Z"));
        assert_eq!(get("MARATHON_APP_RESOURCE_CPUS"), Some("0.5"));
        assert_eq!(get("MARATHON_APP_RESOURCE_MEM"), Some("64.0"));
        assert_eq!(get("MARATHON_APP_RESOURCE_DISK"), Some("0.0"));
        assert_eq!(get("MARATHON_APP_LABELS"), Some("HAPROXY_0_VHOST TEAM_NAME"));
        assert_eq!(get("MARATHON_APP_LABEL_HAPROXY_0_VHOST"), Some("web.example"));
        assert_eq!(get("MARATHON_APP_LABEL_TEAM_NAME"), Some("core"));
        assert!(get("PATH").is_some());
        // The app's env overrides.
        assert_eq!(get("PORT1"), Some("override"));
        assert_eq!(get("FOO"), Some("bar"));
    }

    #[test]
    fn no_ports_no_port_vars() {
        let (app, mut task) = fixture();
        task.ports.clear();
        let env = task_env(&app, &task, Path::new("/s"));
        assert!(!env.contains_key("PORT"));
        assert!(!env.contains_key("PORTS"));
        assert!(!env.contains_key("PORT0"));
    }
}
