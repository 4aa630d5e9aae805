//! `/v2/deployments`: what the leader is working on.

use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use marathon::ApiError;
use model::DeploymentId;
use std::sync::Arc;
use store::{Applied, Command};

pub async fn list(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let list =
        ctx.store.read(|s| s.deployments.values().map(|d| marathon::render_deployment(d, s)).collect::<Vec<_>>());
    Ok(Json(list).into_response())
}

/// `DELETE /v2/deployments/{id}`: rolls the change back — every affected
/// app returns to its version from before the deployment (an app the
/// deployment created is deleted), as one new deployment, in one command.
/// With `force=true` the deployment is only forgotten and apps stay as they
/// are.
pub async fn delete(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let id = DeploymentId(id);
    let Some(dep) = ctx.store.read(|s| s.deployments.get(&id).cloned()) else {
        return Err(HttpError(ApiError::not_found(format!("DeploymentPlan {id} does not exist"))));
    };
    if p.flag("force")? {
        return match ctx.store.propose(Command::CancelDeployment { id }).await? {
            Applied::Rejected(r) => Err(r.into()),
            _ => Ok(StatusCode::ACCEPTED.into_response()),
        };
    }
    let latest = ctx.store.read(|s| dep.affected_apps.iter().filter_map(|a| s.apps.get(a).map(|a| a.version)).max());
    let at = ctx.version_after(latest);
    let cmd = Command::RollbackDeployment { id, new_id: ctx.new_deployment_id(), at };
    match ctx.store.propose(cmd).await? {
        Applied::RolledBack(Some(d)) => Ok(Json(crate::apps::version_answer(at, &d)).into_response()),
        Applied::RolledBack(None) => Ok(Json(serde_json::json!({})).into_response()),
        Applied::Rejected(r) => Err(r.into()),
        other => Err(crate::apps::unexpected(other)),
    }
}
