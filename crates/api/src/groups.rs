//! `/v2/groups`: the group tree (derived from app ids), and group writes that
//! create, update, scale or delete every app of a group as one store
//! command (`PutGroup`) with one deployment.
//!
//! Dependencies (of groups and apps) order the deployment's steps; the
//! scheduler still launches a deployment's apps together (it does not yet
//! wait for one step to be healthy before the next).

use crate::apps::{deployment, version_answer};
use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use marathon::groups::{group_exists, parse_group, render_group, GroupEmbed, GroupUpdate};
use marathon::{ApiError, ErrorDetail};
use model::{AppId, AppSpec, ClusterState, DeploymentAction, GroupMeta, UnixMillis};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use store::{Applied, Command};

type Ctx = State<Arc<ApiContext>>;

fn group_id(path: &str) -> Result<AppId, HttpError> {
    AppId::parse(&format!("/{path}"))
        .map_err(|e| HttpError(ApiError::bad_request(format!("Invalid group id '{path}': {e}"))))
}

fn no_group(id: &AppId) -> HttpError {
    HttpError(ApiError::not_found(format!("Group '{id}' does not exist")))
}

fn body_json(body: &Bytes) -> Result<Value, HttpError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError(ApiError::invalid_json(vec![ErrorDetail::new("/", e.to_string())])))
}

pub async fn get_root(State(ctx): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    get_group(ctx, AppId::root(), q)
}

pub async fn get_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    if let Some(rest) = path.strip_suffix("/versions").or((path == "versions").then_some("")) {
        let id = group_id(rest)?;
        let v = ctx
            .store
            .read(|s| group_exists(s, &id).then(|| marathon::format_time(marathon::groups::group_version(s, &id))));
        return match v {
            Some(v) => Ok(Json(json!([v])).into_response()),
            None => Err(no_group(&id)),
        };
    }
    get_group(ctx, group_id(&path)?, q)
}

fn get_group(ctx: Arc<ApiContext>, id: AppId, q: Option<String>) -> ApiResult {
    let embed = GroupEmbed::parse(&Params::parse(q.as_deref()).all("embed"));
    let body = ctx.store.read(|s| group_exists(s, &id).then(|| render_group(s, &id, &embed)));
    body.map(|b| Json(b).into_response()).ok_or_else(|| no_group(&id))
}

pub async fn create(State(ctx): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let update = parse_group(body_json(&body)?, None)?;
    if !update.id.is_root() && ctx.store.read(|s| group_exists(s, &update.id)) {
        return Err(HttpError(ApiError::new(
            409,
            format!("Group {} is already created. Use PUT to change this group.", update.id),
        )));
    }
    let answer = write(&ctx, update, p.flag("force")?, p.flag("dryRun")?).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

pub async fn put_root(State(ctx): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    put(ctx, AppId::root(), q, body).await
}

pub async fn put_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    put(ctx, group_id(&path)?, q, body).await
}

async fn put(ctx: Arc<ApiContext>, id: AppId, q: Option<String>, body: Bytes) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let update = parse_group(body_json(&body)?, Some(&id))?;
    if update.id != id {
        return Err(HttpError(ApiError::unprocessable(vec![ErrorDetail::new(
            "/id",
            format!("group id {} does not match the path {id}", update.id),
        )])));
    }
    let answer = write(&ctx, update, p.flag("force")?, p.flag("dryRun")?).await?;
    Ok(Json(answer).into_response())
}

pub async fn delete_root(State(ctx): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    delete(ctx, AppId::root(), q).await
}

pub async fn delete_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    delete(ctx, group_id(&path)?, q).await
}

async fn delete(ctx: Arc<ApiContext>, id: AppId, q: Option<String>) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let (exists, apps, groups, prev, steps) = ctx.store.read(|s| {
        let apps: Vec<AppId> = s.apps.keys().filter(|a| a.is_within(&id) && **a != id).cloned().collect();
        let groups: Vec<AppId> = s.groups.keys().filter(|g| g.is_within(&id)).cloned().collect();
        let steps = reverse_dependency_stops(s, &apps);
        (group_exists(s, &id), apps, groups, marathon::groups::group_version(s, &id), steps)
    });
    if !exists {
        return Err(no_group(&id));
    }
    let at = ctx.version_after(Some(prev));
    let dep = deployment(&ctx, at, steps);
    let cmd = Command::PutGroup {
        apps: Vec::new(),
        remove_apps: apps,
        groups: Vec::new(),
        remove_groups: groups,
        at,
        deployment: dep.clone(),
        force: p.flag("force")?,
    };
    match ctx.store.propose(cmd).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(version_answer(at, &dep)).into_response()),
    }
}

/// The apps a group write sets, and those it removes.
struct Change {
    apps: Vec<AppSpec>,
    remove: Vec<AppId>,
    groups: Vec<(AppId, GroupMeta)>,
    remove_groups: Vec<AppId>,
}

fn plan_change(s: &ClusterState, update: &GroupUpdate, at: UnixMillis) -> Result<Change, HttpError> {
    let id = &update.id;
    if update.version.is_some() {
        return Err(HttpError(ApiError::new(
            422,
            "Rolling back a group to a version is not supported yet; roll back its apps with PUT /v2/apps/{id}",
        )));
    }
    if let Some(factor) = update.scale_by {
        let apps = s
            .apps
            .values()
            .filter(|a| a.spec.id.is_within(id) && !a.deleting)
            .map(|a| {
                let mut spec = a.spec.clone();
                spec.instances = (f64::from(spec.instances) * factor).ceil() as u32;
                spec
            })
            .collect();
        return Ok(Change { apps, remove: Vec::new(), groups: Vec::new(), remove_groups: Vec::new() });
    }
    let wanted: BTreeSet<&AppId> = update.all_apps().iter().map(|a| &a.id).collect();
    let remove =
        s.apps.keys().filter(|a| a.is_within(id) && *a != id && !wanted.contains(a)).cloned().collect::<Vec<_>>();
    let groups: Vec<(AppId, GroupMeta)> = update
        .all_groups()
        .into_iter()
        .map(|(g, deps)| (g.clone(), GroupMeta { dependencies: deps.to_vec(), version: at }))
        .collect();
    let kept: BTreeSet<&AppId> = groups.iter().map(|(g, _)| g).collect();
    let remove_groups = s.groups.keys().filter(|g| g.is_within(id) && !kept.contains(g)).cloned().collect();
    let apps = update.all_apps().into_iter().cloned().collect();
    Ok(Change { apps, remove, groups, remove_groups })
}

/// Dependencies of one app: its own, plus those of every enclosing group; a
/// dependency naming a group means every app in it.
fn depends_on(app: &AppSpec, groups: &BTreeMap<AppId, Vec<AppId>>, all: &[AppId]) -> BTreeSet<AppId> {
    let mut named: Vec<AppId> = app.dependencies.clone();
    for (g, deps) in groups {
        if app.id.is_within(g) {
            named.extend(deps.iter().cloned());
        }
    }
    all.iter().filter(|a| **a != app.id && named.iter().any(|n| a.is_within(n))).cloned().collect()
}

/// Stop steps for removing `apps`: dependents first, as a group write
/// removes them. A dependency cycle among stored apps must not block a
/// delete, so it falls back to stopping them all in one step.
fn reverse_dependency_stops(s: &ClusterState, apps: &[AppId]) -> Vec<Vec<(DeploymentAction, AppId)>> {
    if apps.is_empty() {
        return Vec::new();
    }
    let group_deps: BTreeMap<AppId, Vec<AppId>> =
        s.groups.iter().map(|(g, m)| (g.clone(), m.dependencies.clone())).collect();
    let specs: Vec<&AppSpec> = apps.iter().filter_map(|id| s.apps.get(id).map(|a| &a.spec)).collect();
    let stop = |layer: Vec<AppId>| layer.into_iter().map(|a| (DeploymentAction::StopApplication, a)).collect();
    match layers(&specs, &group_deps) {
        Ok(layers) => layers.into_iter().rev().map(stop).collect(),
        Err(_) => vec![stop(apps.to_vec())],
    }
}

/// Orders changed apps into steps by dependency (Kahn's layers).
fn layers(apps: &[&AppSpec], groups: &BTreeMap<AppId, Vec<AppId>>) -> Result<Vec<Vec<AppId>>, HttpError> {
    let ids: Vec<AppId> = apps.iter().map(|a| a.id.clone()).collect();
    let mut deps: BTreeMap<AppId, BTreeSet<AppId>> =
        apps.iter().map(|a| (a.id.clone(), depends_on(a, groups, &ids))).collect();
    let mut out = Vec::new();
    while !deps.is_empty() {
        let ready: Vec<AppId> = deps.iter().filter(|(_, d)| d.is_empty()).map(|(a, _)| a.clone()).collect();
        if ready.is_empty() {
            return Err(HttpError(ApiError::unprocessable(vec![ErrorDetail::new(
                "/",
                "Dependency graph has cyclic dependencies.",
            )])));
        }
        for a in &ready {
            deps.remove(a);
        }
        for d in deps.values_mut() {
            for a in &ready {
                d.remove(a);
            }
        }
        out.push(ready);
    }
    Ok(out)
}

async fn write(ctx: &ApiContext, update: GroupUpdate, force: bool, dry_run: bool) -> Result<Value, HttpError> {
    let prev = ctx.store.read(|s| marathon::groups::group_version(s, &update.id));
    let at = ctx.version_after(Some(prev));
    let (change, steps) = ctx.store.read(|s| -> Result<_, HttpError> {
        let mut change = plan_change(s, &update, at)?;
        // Unchanged apps are left alone (no new version, no restart).
        change.apps.retain(|spec| s.apps.get(&spec.id).is_none_or(|a| a.deleting || !same_spec(&a.spec, spec)));
        let mut group_deps: BTreeMap<AppId, Vec<AppId>> =
            s.groups.iter().map(|(g, m)| (g.clone(), m.dependencies.clone())).collect();
        group_deps.extend(change.groups.iter().map(|(g, m)| (g.clone(), m.dependencies.clone())));
        let refs: Vec<&AppSpec> = change.apps.iter().collect();
        let mut steps: Vec<Vec<(DeploymentAction, AppId)>> = Vec::new();
        if !change.remove.is_empty() {
            // Removed apps stop in reverse dependency order: dependents first.
            let removed: Vec<&AppSpec> =
                change.remove.iter().filter_map(|id| s.apps.get(id).map(|a| &a.spec)).collect();
            for layer in layers(&removed, &group_deps)?.into_iter().rev() {
                steps.push(layer.into_iter().map(|a| (DeploymentAction::StopApplication, a)).collect());
            }
        }
        let new: Vec<(DeploymentAction, AppId)> = change
            .apps
            .iter()
            .filter(|a| !s.apps.contains_key(&a.id))
            .map(|a| (DeploymentAction::StartApplication, a.id.clone()))
            .collect();
        if !new.is_empty() {
            steps.push(new);
        }
        for layer in layers(&refs, &group_deps)? {
            let actions = layer
                .into_iter()
                .filter_map(|id| {
                    let spec = change.apps.iter().find(|a| a.id == id)?;
                    let action = match s.apps.get(&id) {
                        Some(old) if !old.deleting && old.spec.config_differs(spec) => {
                            DeploymentAction::RestartApplication
                        }
                        _ => DeploymentAction::ScaleApplication,
                    };
                    Some((action, id))
                })
                .collect::<Vec<_>>();
            steps.push(actions);
        }
        Ok((change, steps))
    })?;
    let dep = deployment(ctx, at, steps);
    if dry_run {
        let rendered = ctx.store.read(|s| marathon::render_deployment(&dep, s));
        return Ok(json!({"steps": rendered["steps"]}));
    }
    let cmd = Command::PutGroup {
        apps: change.apps,
        remove_apps: change.remove,
        groups: change.groups,
        remove_groups: change.remove_groups,
        at,
        deployment: dep.clone(),
        force,
    };
    match ctx.store.propose(cmd).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(version_answer(at, &dep)),
    }
}

/// Equal apart from service ports still to be assigned (0 = any).
fn same_spec(old: &AppSpec, new: &AppSpec) -> bool {
    let mut n = new.clone();
    for (p, o) in n.ports.iter_mut().zip(&old.ports) {
        if p.port == 0 {
            p.port = o.port;
        }
    }
    *old == n
}
