//! `/v2/apps`: list, create, update (PUT/PATCH), delete, restart, and an
//! app's tasks. App ids contain slashes, so `/v2/apps/{*path}` is split here
//! into the app id and what follows it (`tasks`, `restart`, `versions`).

use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use crate::tasks::kill_and_answer;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use marathon::{ApiError, Embed};
use model::{App, AppId, AppSpec, Deployment, DeploymentAction, Step, TaskId, UnixMillis};
use serde_json::{json, Value};
use std::sync::Arc;
use store::{AppPut, Applied, Command, Precondition, Rejection};

type Ctx = State<Arc<ApiContext>>;

/// What a `/v2/apps/...` path names.
enum Target {
    App(AppId),
    Tasks(AppId),
    Task(AppId, String),
    Restart(AppId),
    Versions(AppId),
    Version(AppId, String),
}

fn parse_target(path: &str) -> Result<Target, HttpError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let app = |n: usize| {
        AppId::parse(&format!("/{}", segs[..n].join("/")))
            .map_err(|e| HttpError(ApiError::bad_request(format!("Invalid app id '{path}': {e}"))))
    };
    let n = segs.len();
    Ok(match segs.as_slice() {
        [.., "tasks"] if n > 1 => Target::Tasks(app(n - 1)?),
        [.., "tasks", id] if n > 2 => Target::Task(app(n - 2)?, id.to_string()),
        [.., "restart"] if n > 1 => Target::Restart(app(n - 1)?),
        [.., "versions"] if n > 1 => Target::Versions(app(n - 1)?),
        [.., "versions", v] if n > 2 => Target::Version(app(n - 2)?, v.to_string()),
        _ => Target::App(app(n)?),
    })
}

fn not_found(id: &AppId) -> HttpError {
    HttpError(ApiError::not_found(format!("App '{id}' does not exist")))
}

fn body_json(body: &Bytes) -> Result<Value, HttpError> {
    serde_json::from_slice(body)
        .map_err(|e| HttpError(ApiError::invalid_json(vec![marathon::ErrorDetail::new("/", e.to_string())])))
}

pub(crate) fn deployment(ctx: &ApiContext, at: UnixMillis, steps: Vec<Vec<(DeploymentAction, AppId)>>) -> Deployment {
    let mut affected: Vec<AppId> = steps.iter().flatten().map(|(_, a)| a.clone()).collect();
    affected.sort();
    affected.dedup();
    Deployment {
        id: ctx.new_deployment_id(),
        version: at,
        affected_apps: affected,
        steps: steps.into_iter().map(|actions| Step { actions }).collect(),
        current_step: 1,
        started_at: at,
    }
}

fn deployment_for_put(ctx: &ApiContext, old: Option<&App>, new: &AppSpec, at: UnixMillis) -> Deployment {
    deployment(ctx, at, steps_for_put(old, new))
}

/// A put's deployment steps: create then scale, restart, or scale.
fn steps_for_put(old: Option<&App>, new: &AppSpec) -> Vec<Vec<(DeploymentAction, AppId)>> {
    let id = new.id.clone();
    match old {
        None => {
            vec![vec![(DeploymentAction::StartApplication, id.clone())], vec![(DeploymentAction::ScaleApplication, id)]]
        }
        Some(o) if o.spec.config_differs(new) => vec![vec![(DeploymentAction::RestartApplication, id)]],
        Some(_) => vec![vec![(DeploymentAction::ScaleApplication, id)]],
    }
}

pub(crate) fn version_answer(version: UnixMillis, deployment: &Deployment) -> Value {
    json!({"version": marathon::format_time(version), "deploymentId": deployment.id.0})
}

/// How often a write computed from the current app is computed again when
/// another write changed the app first.
pub(crate) const WRITE_ATTEMPTS: usize = 64;

/// The precondition for a write computed from `old`.
pub(crate) fn expect_of(old: Option<&App>) -> Precondition {
    old.map_or(Precondition::Absent, |a| Precondition::Version(a.version))
}

/// A stored app, its deployment, and whether the write created it.
struct PutResult {
    app: App,
    deployment: Deployment,
    created: bool,
}

/// Computes the new definition of app `id` from its current one (`None`
/// when absent) and puts it. The put only applies if the app is still as it
/// was read; otherwise it is computed again from the newer version. So
/// concurrent writes to one app (a PATCH of one field each) are applied one
/// after another in commit order and none is lost.
async fn put_computed(
    ctx: &ApiContext,
    id: &AppId,
    force: bool,
    create_only: bool,
    compute: impl Fn(Option<&App>) -> Result<AppSpec, HttpError>,
) -> Result<PutResult, HttpError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let snap = ctx.store.snapshot();
        let stored = snap.apps.get(id);
        // An app being deleted is gone for its users (Marathon removes it when
        // the DELETE is answered): a write starts a new app from what it gives.
        let old = stored.filter(|a| !a.deleting);
        let spec = compute(old)?;
        let at = ctx.version_after(stored.map(|a| a.version));
        let dep = deployment_for_put(ctx, old, &spec, at);
        let expect = Some(expect_of(stored));
        // A put with nothing to launch or kill ends its deployment in `apply`.
        let cmd = Command::PutApp {
            app: spec,
            at,
            deployment: dep.clone(),
            force,
            create_only,
            expect,
            finish_if_idle: true,
        };
        match ctx.store.propose(cmd).await? {
            Applied::App(app) => return Ok(PutResult { app: *app, deployment: dep, created: old.is_none() }),
            Applied::Rejected(Rejection::Conflict(_)) if attempt < WRITE_ATTEMPTS => {}
            Applied::Rejected(r) => return Err(r.into()),
            other => return Err(unexpected(other)),
        }
    }
}

pub(crate) fn unexpected(answer: Applied) -> HttpError {
    tracing::error!(?answer, "the store answered a write with the wrong kind of answer");
    HttpError(ApiError::new(500, "internal error: the store gave an answer of the wrong kind"))
}

pub async fn list(State(ctx): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let query = crate::listing::AppsQuery {
        embed: Embed::parse(&p.all("embed")),
        id: p.get("id").map(str::to_string),
        cmd: p.get("cmd").map(str::to_string),
        label: p.get("label").map(str::to_string),
    };
    let c = ctx.clone();
    crate::context::render_bytes_blocking(&ctx.store, move |s| c.pieces.apps(s, &query)).await
}

pub async fn create(State(ctx): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let force = p.flag("force")?;
    let spec = marathon::parse_app(&body)?;
    let id = spec.id.clone();
    let PutResult { app, deployment, .. } = put_computed(&ctx, &id, force, true, |_| Ok(spec.clone())).await?;
    let embed = Embed { deployments: true, counts: true, ..Embed::default() };
    // Written straight from the typed wire form (no JSON tree in between):
    // this answer is on every create's path.
    let body = ctx.store.read(|s| {
        let mut deps: Vec<&str> = s.deployments_of(&app.spec.id).map(|d| d.id.0.as_str()).collect();
        // Marathon's answer names the create's deployment; one with nothing
        // to do has already finished in the store, so it is not among the app's.
        if !deps.contains(&deployment.id.0.as_str()) {
            deps.push(deployment.id.0.as_str());
        }
        serde_json::to_vec(&marathon::app_wire(&app, s, &embed, &deps))
    });
    let body = body.map_err(|e| HttpError(ApiError::new(500, format!("rendering failed: {e}"))))?;
    let location = format!("/v2/apps{}", app.spec.id);
    let content_type = (header::CONTENT_TYPE, "application/json");
    Ok((StatusCode::CREATED, [(header::LOCATION, location.as_str()), content_type], body).into_response())
}

/// `PUT /v2/apps` and `PATCH /v2/apps`: update (or create) several apps.
async fn update_many(ctx: Arc<ApiContext>, q: Option<String>, body: Bytes) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let force = p.flag("force")?;
    let Value::Array(items) = body_json(&body)? else {
        return Err(HttpError(ApiError::invalid_json(vec![marathon::ErrorDetail::new(
            "/",
            "expected an array of apps",
        )])));
    };
    let mut ids = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = item.get("id").and_then(Value::as_str).and_then(|s| AppId::parse(s).ok()).ok_or_else(|| {
            HttpError(ApiError::unprocessable(vec![marathon::ErrorDetail::new(format!("/{i}/id"), "id is required")]))
        })?;
        ids.push(id);
    }
    // One command for the whole array: every app is merged onto the version
    // it was read at; all are stored with one deployment, or none is.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let snap = ctx.store.snapshot();
        let mut puts = Vec::new();
        let mut steps = Vec::new();
        for (i, (id, item)) in ids.iter().zip(&items).enumerate() {
            let stored = snap.apps.get(id);
            let old = stored.filter(|a| !a.deleting);
            let spec = match old {
                Some(old) => marathon::merge_app(&old.spec, id, item.clone())?,
                None => marathon::app_from_value(item.clone(), &format!("/{i}"))?,
            };
            steps.push(steps_for_put(old, &spec));
            puts.push(AppPut { app: spec, expect: Some(expect_of(stored)) });
        }
        if puts.is_empty() {
            return Ok(Json(json!({})).into_response());
        }
        let latest = ids.iter().filter_map(|id| snap.apps.get(id).map(|a| a.version)).max();
        let at = ctx.version_after(latest);
        let dep = deployment(&ctx, at, merge_steps(steps));
        let cmd = Command::PutApps { apps: puts, at, deployment: dep.clone(), force };
        match ctx.store.propose(cmd).await? {
            Applied::Apps(_) => return Ok(Json(version_answer(at, &dep)).into_response()),
            Applied::Rejected(Rejection::Conflict(_)) if attempt < WRITE_ATTEMPTS => {}
            Applied::Rejected(r) => return Err(r.into()),
            other => return Err(unexpected(other)),
        }
    }
}

/// Several apps' steps as one deployment's: the first steps of each app
/// together, then the second ones.
fn merge_steps(per_app: Vec<Vec<Vec<(DeploymentAction, AppId)>>>) -> Vec<Vec<(DeploymentAction, AppId)>> {
    let mut out: Vec<Vec<(DeploymentAction, AppId)>> = Vec::new();
    for steps in per_app {
        for (i, step) in steps.into_iter().enumerate() {
            if out.len() <= i {
                out.push(Vec::new());
            }
            out[i].extend(step);
        }
    }
    out
}

pub async fn put_many(State(ctx): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    update_many(ctx, q, body).await
}

pub async fn patch_many(State(ctx): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    update_many(ctx, q, body).await
}

pub async fn get_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    match parse_target(&path)? {
        Target::App(id) => {
            let embed = Embed::parse(&p.all("embed"));
            let embed = Embed { counts: true, deployments: true, ..embed };
            let body = ctx.store.read(|s| s.apps.get(&id).map(|a| marathon::render_app(a, s, &embed)));
            match body {
                Some(app) => Ok(Json(json!({ "app": app })).into_response()),
                None => Err(not_found(&id)),
            }
        }
        Target::Tasks(id) => {
            let tasks = ctx.store.read(|s| {
                s.apps.get(&id).map(|_| s.tasks_of(&id).map(|t| marathon::render_task(t, s)).collect::<Vec<_>>())
            });
            match tasks {
                Some(tasks) => Ok(Json(json!({ "tasks": tasks })).into_response()),
                None => Err(not_found(&id)),
            }
        }
        Target::Task(id, task) => {
            let found = ctx.store.read(|s| {
                s.tasks.values().find(|t| t.app_id == id && t.id.as_str() == task).map(|t| marathon::render_task(t, s))
            });
            match found {
                Some(t) => Ok(Json(json!({ "task": t })).into_response()),
                None => Err(HttpError(ApiError::not_found(format!("Task '{task}' does not exist")))),
            }
        }
        Target::Versions(id) => {
            let v = ctx.store.read(|s| s.apps.get(&id).map(|_| marathon::render_versions(s.versions_of(&id))));
            match v {
                Some(v) => Ok(Json(v).into_response()),
                None => Err(not_found(&id)),
            }
        }
        Target::Version(id, version) => {
            let at = marathon::parse_time(&version);
            let body = ctx.store.read(|s| at.and_then(|at| s.app_version(&id, at)).map(marathon::render_app_version));
            match body {
                Some(app) => Ok(Json(app).into_response()),
                None => Err(no_version(&id, &version)),
            }
        }
        Target::Restart(_) => Err(method_not_allowed()),
    }
}

fn no_version(id: &AppId, version: &str) -> HttpError {
    HttpError(ApiError::not_found(format!("App '{id}' does not exist in version {version}")))
}

/// A body that only names a version (`{"version": ts}`, maybe with the id)
/// asks for a rollback to that stored version.
fn rollback_target(value: &Value) -> Option<&str> {
    let m = value.as_object()?;
    let v = m.get("version")?.as_str()?;
    m.keys().all(|k| k == "version" || k == "id").then_some(v)
}

fn method_not_allowed() -> HttpError {
    HttpError(ApiError::new(405, "Method not allowed"))
}

async fn update_one(ctx: Arc<ApiContext>, path: String, q: Option<String>, body: Bytes) -> ApiResult {
    let Target::App(id) = parse_target(&path)? else {
        return Err(method_not_allowed());
    };
    let p = Params::parse(q.as_deref());
    let force = p.flag("force")?;
    let value = body_json(&body)?;
    if let Some(version) = rollback_target(&value) {
        let at = marathon::parse_time(version);
        let spec = ctx.store.read(|s| at.and_then(|at| s.app_version(&id, at)).map(|v| v.spec.clone()));
        let spec = spec.ok_or_else(|| no_version(&id, version))?;
        let r = put_computed(&ctx, &id, force, false, |_| Ok(spec.clone())).await?;
        return Ok(Json(version_answer(r.app.version, &r.deployment)).into_response());
    }
    let merge = |old: Option<&App>| match old {
        Some(old) => Ok(marathon::merge_app(&old.spec, &id, value.clone())?),
        None => {
            let mut v = value.clone();
            if let Value::Object(m) = &mut v {
                m.insert("id".into(), json!(id.as_str()));
            }
            Ok(marathon::app_from_value(v, "")?)
        }
    };
    let PutResult { app, deployment: dep, created } = put_computed(&ctx, &id, force, false, merge).await?;
    if created {
        let embed = Embed { deployments: true, counts: true, ..Embed::default() };
        let body = ctx.store.read(|s| marathon::render_app(&app, s, &embed));
        return Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v2/apps{id}"))], Json(body)).into_response());
    }
    Ok(Json(version_answer(app.version, &dep)).into_response())
}

pub async fn put_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    update_one(ctx, path, q, body).await
}

pub async fn patch_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    update_one(ctx, path, q, body).await
}

pub async fn delete_path(State(ctx): Ctx, Path(path): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let force = p.flag("force")?;
    match parse_target(&path)? {
        Target::App(id) => {
            let prev = ctx.store.read(|s| s.apps.get(&id).map(|a| a.version)).ok_or_else(|| not_found(&id))?;
            let at = ctx.version_after(Some(prev));
            let dep = deployment(&ctx, at, vec![vec![(DeploymentAction::StopApplication, id.clone())]]);
            let cmd = Command::DeleteApp { id, at, deployment: dep.clone(), force };
            match ctx.store.propose(cmd).await? {
                Applied::Rejected(r) => Err(r.into()),
                _ => Ok(Json(version_answer(at, &dep)).into_response()),
            }
        }
        Target::Tasks(id) => {
            let host = p.get("host").map(str::to_string);
            let ids: Vec<TaskId> = ctx.store.read(|s| {
                s.tasks_of(&id)
                    .filter(|t| !t.state.is_terminal())
                    .filter(|t| host.as_ref().is_none_or(|h| &t.host == h))
                    .map(|t| t.id.clone())
                    .collect()
            });
            if ctx.store.read(|s| !s.apps.contains_key(&id)) {
                return Err(not_found(&id));
            }
            kill_and_answer(&ctx, ids, p.flag("scale")?).await
        }
        Target::Task(id, task) => {
            let tid = ctx
                .store
                .read(|s| s.tasks.values().find(|t| t.app_id == id && t.id.as_str() == task).map(|t| t.id.clone()));
            let Some(tid) = tid else {
                return Err(HttpError(ApiError::not_found(format!("Task '{task}' does not exist"))));
            };
            let scale = p.flag("scale")?;
            let answer = kill_and_answer(&ctx, vec![tid.clone()], scale).await?;
            if scale {
                return Ok(answer);
            }
            let t = ctx.store.read(|s| s.tasks.get(&tid).map(|t| marathon::render_task(t, s)));
            Ok(Json(json!({ "task": t })).into_response())
        }
        _ => Err(method_not_allowed()),
    }
}

pub async fn post_path(
    State(ctx): Ctx,
    Path(path): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let Target::Restart(id) = parse_target(&path)? else {
        return Err(method_not_allowed());
    };
    let p = Params::parse(q.as_deref());
    let force = p.flag("force")?;
    let prev = ctx.store.read(|s| s.apps.get(&id).map(|a| a.version)).ok_or_else(|| not_found(&id))?;
    let at = ctx.version_after(Some(prev));
    let dep = deployment(&ctx, at, vec![vec![(DeploymentAction::RestartApplication, id.clone())]]);
    let cmd = Command::RestartApp { id, at, deployment: dep.clone(), force };
    match ctx.store.propose(cmd).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(version_answer(at, &dep)).into_response()),
    }
}
