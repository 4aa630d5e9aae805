//! `/v2/deployments`: what the leader is working on.

use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use marathon::ApiError;
use model::{DeploymentAction, DeploymentId};
use std::sync::Arc;
use store::{Applied, Command};

pub async fn list(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let list =
        ctx.store.read(|s| s.deployments.values().map(|d| marathon::render_deployment(d, s)).collect::<Vec<_>>());
    Ok(Json(list).into_response())
}

/// `DELETE /v2/deployments/{id}`: rolls the change back — every affected
/// app returns to its version from before the deployment (an app the
/// deployment created is deleted), as a new deployment. With `force=true`
/// the deployment is only forgotten and apps stay as they are.
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
    let mut answer = None;
    for app in &dep.affected_apps {
        // The newest version older than the deployment.
        let previous = ctx.store.read(|s| {
            s.app_versions.get(app).and_then(|vs| vs.iter().rev().find(|v| v.version < dep.version).cloned())
        });
        let exists = ctx.store.read(|s| s.apps.get(app).map(|a| a.version));
        let Some(current) = exists else { continue };
        let at = ctx.version_after(Some(current));
        let (cmd, d) = match previous {
            Some(v) => {
                let d =
                    crate::apps::deployment(&ctx, at, vec![vec![(DeploymentAction::RestartApplication, app.clone())]]);
                (Command::PutApp { app: v.spec, at, deployment: d.clone(), force: true, create_only: false }, d)
            }
            None => {
                let d = crate::apps::deployment(&ctx, at, vec![vec![(DeploymentAction::StopApplication, app.clone())]]);
                (Command::DeleteApp { id: app.clone(), at, deployment: d.clone(), force: true }, d)
            }
        };
        match ctx.store.propose(cmd).await? {
            Applied::Rejected(r) => return Err(r.into()),
            _ => answer = Some(crate::apps::version_answer(at, &d)),
        }
    }
    // The rolled-back deployment itself is gone (force replaced it).
    let _ = ctx.store.propose(Command::CancelDeployment { id }).await;
    Ok(Json(answer.unwrap_or_else(|| serde_json::json!({}))).into_response())
}
