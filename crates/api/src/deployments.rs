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

/// `DELETE /v2/deployments/{id}?force=true` stops tracking the deployment and
/// leaves apps as they are. Without `force`, Marathon rolls back; that needs
/// app versions and is answered as not supported yet.
pub async fn delete(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let id = DeploymentId(id);
    if !ctx.store.read(|s| s.deployments.contains_key(&id)) {
        return Err(HttpError(ApiError::not_found(format!("DeploymentPlan {id} does not exist"))));
    }
    if !p.flag("force")? {
        return Err(HttpError(ApiError::new(
            422,
            "Rolling back a deployment is not supported yet; use force=true to cancel it",
        )));
    }
    match ctx.store.propose(Command::CancelDeployment { id }).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(StatusCode::ACCEPTED.into_response()),
    }
}
