//! Marathon groups: a `GroupUpdate` body in (nested apps and groups, ids
//! relative to their group, `dependencies`, `scaleBy`, `version`), and the
//! group tree out (`GET /v2/groups`), derived from app ids plus the stored
//! group settings.

use crate::convert::app_from_value;
use crate::error::{ApiError, ErrorDetail};
use crate::render::{render_app, Embed};
use crate::time::format_time;
use model::{AppId, AppSpec, ClusterState, UnixMillis};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// A parsed group definition (`POST /v2/groups`, `PUT /v2/groups/{id}`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupUpdate {
    pub id: AppId,
    pub apps: Vec<AppSpec>,
    pub groups: Vec<GroupUpdate>,
    pub dependencies: Vec<AppId>,
    pub scale_by: Option<f64>,
    /// Rollback target (`{"version": ts}`), as sent.
    pub version: Option<String>,
}

impl GroupUpdate {
    /// Every app of this group and its subgroups.
    pub fn all_apps(&self) -> Vec<&AppSpec> {
        let mut out: Vec<&AppSpec> = self.apps.iter().collect();
        for g in &self.groups {
            out.extend(g.all_apps());
        }
        out
    }

    /// This group and every subgroup, with their dependencies.
    pub fn all_groups(&self) -> Vec<(&AppId, &[AppId])> {
        let mut out = vec![(&self.id, self.dependencies.as_slice())];
        for g in &self.groups {
            out.extend(g.all_groups());
        }
        out
    }
}

/// Parses a group body; `default_id` is used when the body has no `id`
/// (`PUT /v2/groups/{id}`). App and group ids resolve relative to their group.
pub fn parse_group(v: Value, default_id: Option<&AppId>) -> Result<GroupUpdate, ApiError> {
    read_group(v, &AppId::root(), default_id, "")
}

fn bad(path: String, msg: impl Into<String>) -> ApiError {
    ApiError::unprocessable(vec![ErrorDetail::new(path, msg)])
}

fn read_group(v: Value, parent: &AppId, default_id: Option<&AppId>, path: &str) -> Result<GroupUpdate, ApiError> {
    let Value::Object(mut m) = v else {
        return Err(ApiError::invalid_json(vec![ErrorDetail::new(format!("{path}/"), "error.expected.jsobject")]));
    };
    let id = match (m.get("id"), default_id) {
        (Some(Value::String(s)), _) => {
            AppId::parse_relative(s, parent).map_err(|e| bad(format!("{path}/id"), e.to_string()))?
        }
        (Some(_), _) => {
            return Err(ApiError::invalid_json(vec![ErrorDetail::new(format!("{path}/id"), "error.expected.jsstring")]))
        }
        (None, Some(d)) => d.clone(),
        (None, None) => return Err(bad(format!("{path}/id"), "error.path.missing")),
    };
    if !id.is_within(parent) || (!parent.is_root() && id == *parent && !path.is_empty()) {
        return Err(bad(
            format!("{path}/id"),
            format!("identifier {id} is not child of {parent}. Hint: use relative paths."),
        ));
    }
    let dependencies = ids(m.remove("dependencies"), &id, &format!("{path}/dependencies"))?;
    let scale_by = match m.remove("scaleBy") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f >= 0.0 => Some(f),
            _ => return Err(bad(format!("{path}/scaleBy"), "must be greater than or equal to 0")),
        },
        Some(_) => {
            return Err(ApiError::invalid_json(vec![ErrorDetail::new(
                format!("{path}/scaleBy"),
                "error.expected.jsnumber",
            )]))
        }
    };
    let version = m.remove("version").and_then(|v| v.as_str().map(str::to_string));
    let mut apps = Vec::new();
    for (i, mut a) in array(m.remove("apps"), &format!("{path}/apps"))?.into_iter().enumerate() {
        let at = format!("{path}/apps({i})");
        let app_id = match a.get("id") {
            Some(Value::String(s)) => {
                AppId::parse_relative(s, &id).map_err(|e| bad(format!("{at}/id"), e.to_string()))?
            }
            _ => return Err(bad(format!("{at}/id"), "error.path.missing")),
        };
        if app_id == id || !app_id.is_within(&id) {
            return Err(bad(
                format!("{at}/id"),
                format!("identifier {app_id} is not child of {id}. Hint: use relative paths."),
            ));
        }
        if let Value::Object(o) = &mut a {
            o.insert("id".into(), json!(app_id.as_str()));
            // App dependencies resolve relative to the group too.
            if let Some(Value::Array(deps)) = o.get_mut("dependencies") {
                for d in deps.iter_mut() {
                    if let Some(Ok(abs)) = d.as_str().map(|s| AppId::parse_relative(s, &id)) {
                        *d = json!(abs.as_str());
                    }
                }
            }
        }
        apps.push(app_from_value(a, &at)?);
    }
    let mut groups = Vec::new();
    for (i, g) in array(m.remove("groups"), &format!("{path}/groups"))?.into_iter().enumerate() {
        groups.push(read_group(g, &id, None, &format!("{path}/groups({i})"))?);
    }
    let mut seen = BTreeSet::new();
    for a in apps.iter().map(|a| &a.id).chain(groups.iter().map(|g| &g.id)) {
        if !seen.insert(a.clone()) {
            return Err(bad(format!("{path}/"), format!("{a} is defined more than once")));
        }
    }
    Ok(GroupUpdate { id, apps, groups, dependencies, scale_by, version })
}

fn array(v: Option<Value>, path: &str) -> Result<Vec<Value>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::invalid_json(vec![ErrorDetail::new(path, "error.expected.jsarray")])),
    }
}

fn ids(v: Option<Value>, base: &AppId, path: &str) -> Result<Vec<AppId>, ApiError> {
    array(v, path)?
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            d.as_str()
                .and_then(|s| AppId::parse_relative(s, base).ok())
                .ok_or_else(|| bad(format!("{path}({i})"), "must be a valid path"))
        })
        .collect()
}

/// What `embed=` asked of a group answer (default: apps and groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupEmbed {
    pub apps: bool,
    pub groups: bool,
    pub app: Embed,
}

impl GroupEmbed {
    pub fn parse(values: &[String]) -> GroupEmbed {
        let all: Vec<&str> = values.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
        if all.is_empty() {
            return GroupEmbed { apps: true, groups: true, app: Embed::default() };
        }
        let app_embeds: Vec<String> =
            all.iter().filter(|v| v.starts_with("group.apps.")).map(|v| v.to_string()).collect();
        GroupEmbed {
            apps: all.iter().any(|v| v.starts_with("group.apps")),
            groups: all.contains(&"group.groups"),
            app: Embed::parse(&app_embeds),
        }
    }
}

/// Whether `id` names a group: the root, a stored group, or a prefix of an app id.
pub fn group_exists(state: &ClusterState, id: &AppId) -> bool {
    id.is_root()
        || state.groups.contains_key(id)
        || state.apps.keys().any(|a| a != id && a.is_within(id))
        || state.groups.keys().any(|g| g != id && g.is_within(id))
}

/// Every group in the tree: ancestors of apps and stored groups.
fn all_groups(state: &ClusterState) -> BTreeSet<AppId> {
    let mut out = BTreeSet::from([AppId::root()]);
    let mut add = |mut g: AppId| {
        while !g.is_root() && out.insert(g.clone()) {
            g = g.parent();
        }
    };
    for a in state.apps.keys() {
        add(a.parent());
    }
    for g in state.groups.keys() {
        add(g.clone());
    }
    out
}

/// The newest change below `id` (its apps' versions and stored settings).
pub fn group_version(state: &ClusterState, id: &AppId) -> UnixMillis {
    let apps = state.apps.values().filter(|a| a.spec.id.is_within(id)).map(|a| a.version);
    let metas = state.groups.iter().filter(|(g, _)| g.is_within(id)).map(|(_, m)| m.version);
    apps.chain(metas).max().unwrap_or_default()
}

/// One group as `GET /v2/groups/{id}` answers it.
pub fn render_group(state: &ClusterState, id: &AppId, embed: &GroupEmbed) -> Value {
    let groups = all_groups(state);
    render_node(state, &groups, id, embed)
}

fn render_node(state: &ClusterState, groups: &BTreeSet<AppId>, id: &AppId, embed: &GroupEmbed) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(id.as_str()));
    if embed.apps {
        let apps: Vec<Value> = state
            .apps
            .values()
            .filter(|a| a.spec.id.parent() == *id)
            .map(|a| render_app(a, state, &embed.app))
            .collect();
        m.insert("apps".into(), Value::Array(apps));
    }
    if embed.groups {
        let subs: Vec<Value> = groups
            .iter()
            .filter(|g| !g.is_root() && g.parent() == *id)
            .map(|g| render_node(state, groups, g, embed))
            .collect();
        m.insert("groups".into(), Value::Array(subs));
    }
    m.insert("pods".into(), json!([]));
    let deps: Vec<&str> =
        state.groups.get(id).map(|g| g.dependencies.iter().map(|d| d.as_str()).collect()).unwrap_or_default();
    m.insert("dependencies".into(), json!(deps));
    m.insert("version".into(), json!(format_time(group_version(state, id))));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> Value {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/marathon").join(path);
        serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("json")
    }

    #[test]
    fn sleep_group_fixture_is_accepted() {
        let g = parse_group(fixture("system-tests/groups/sleep-group.json"), None).expect("accepted");
        assert_eq!(g.id.as_str(), "/sleep-group");
        let ids: Vec<&str> = g.all_apps().iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["/sleep-group/sleep/goodnight-1", "/sleep-group/sleep/goodnight-2"]);
    }

    #[test]
    fn benchmark_group_is_accepted() {
        let g = parse_group(fixture("benchmark/155_100.json"), None).expect("accepted");
        assert_eq!(g.all_apps().len(), 100);
    }

    #[test]
    fn relative_ids_and_foreign_children() {
        let g = parse_group(
            json!({"id": "prod", "dependencies": ["/db"], "apps": [{"id": "web", "cmd": "x", "dependencies": ["api"]}],
                   "groups": [{"id": "back", "apps": [{"id": "api", "cmd": "y"}]}]}),
            None,
        )
        .expect("ok");
        assert_eq!(g.apps[0].id.as_str(), "/prod/web");
        assert_eq!(g.apps[0].dependencies[0].as_str(), "/prod/api");
        assert_eq!(g.groups[0].apps[0].id.as_str(), "/prod/back/api");
        assert_eq!(g.dependencies[0].as_str(), "/db");
        let e = parse_group(json!({"id": "/group", "apps": [{"id": "/app", "cmd": "x"}]}), None).expect_err("foreign");
        assert!(e.has_path("/apps(0)/id"), "{e:?}");
        assert_eq!(e.status, 422);
    }
}
