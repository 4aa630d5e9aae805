//! `/v2/tasks`: every task, and killing tasks by id (with `scale`).

use crate::apps::{deployment, version_answer};
use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::Json;
use marathon::ApiError;
use model::{DeploymentAction, TaskId, TaskState};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use store::{Applied, Command};

pub async fn list(State(ctx): State<Arc<ApiContext>>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let wanted: Vec<TaskState> = p
        .all("status")
        .iter()
        .filter_map(|s| {
            let up = s.to_ascii_uppercase();
            TaskState::from_marathon_name(&up).or_else(|| TaskState::from_marathon_name(&format!("TASK_{up}")))
        })
        .collect();
    let c = ctx.clone();
    crate::context::render_bytes_blocking(&ctx.store, move |s| c.pieces.tasks(s, &wanted)).await
}

/// `POST /v2/tasks/delete` with `{"ids": [...]}`.
pub async fn delete_many(State(ctx): State<Arc<ApiContext>>, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let scale = p.flag("scale")?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| HttpError(ApiError::invalid_json(vec![marathon::ErrorDetail::new("/", e.to_string())])))?;
    let Some(ids) = v.get("ids").and_then(Value::as_array) else {
        return Err(HttpError(ApiError::unprocessable(vec![marathon::ErrorDetail::new("/ids", "error.path.missing")])));
    };
    let mut parsed = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let s = id.as_str().unwrap_or_default();
        let tid = TaskId::parse(s).map_err(|e| {
            HttpError(ApiError::unprocessable(vec![marathon::ErrorDetail::new(format!("/ids({i})"), e.to_string())]))
        })?;
        parsed.push(tid);
    }
    kill_and_answer(&ctx, parsed, scale).await
}

/// Kills `ids`; answers with the tasks, or with a deployment when scaling.
pub(crate) async fn kill_and_answer(ctx: &ApiContext, ids: Vec<TaskId>, scale: bool) -> ApiResult {
    let at = ctx.now();
    let apps: BTreeSet<_> = ids.iter().map(|t| t.app_id()).collect();
    let dep = scale.then(|| {
        deployment(ctx, at, vec![apps.iter().map(|a| (DeploymentAction::ScaleApplication, a.clone())).collect()])
    });
    let cmd = Command::KillTasks { ids, scale, at, deployment: dep.clone() };
    let killed = match ctx.store.propose(cmd).await? {
        Applied::Killed(k) => k,
        Applied::Rejected(r) => return Err(r.into()),
        _ => Vec::new(),
    };
    if let Some(dep) = dep {
        return Ok(Json(version_answer(at, &dep)).into_response());
    }
    let tasks = ctx.store.read(|s| {
        killed.iter().filter_map(|id| s.tasks.get(id)).map(|t| marathon::render_task(t, s)).collect::<Vec<_>>()
    });
    Ok(Json(json!({ "tasks": tasks })).into_response())
}
