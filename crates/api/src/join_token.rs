//! `/wharf/v1/join-token` (admin only, see `auth::access`): the token a new
//! node joins with (`WHARF-1-<CA fingerprint>-<secret>`), and its rotation.
//! The secret lives in the replicated state so any member can admit nodes.

use crate::error::{ApiResult, HttpError};
use crate::ApiContext;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use marathon::ApiError;
use serde_json::json;
use std::sync::Arc;
use store::{Applied, Command, Rejection};

fn current(ctx: &ApiContext) -> Result<String, HttpError> {
    let trust = ctx.store.read(|s| s.trust.clone()).ok_or(HttpError::from(Rejection::NoClusterCa))?;
    let token = trust::JoinToken::of(&trust).map_err(|e| HttpError(ApiError::new(500, e.to_string())))?;
    Ok(token.to_string())
}

/// `GET /wharf/v1/join-token`: `{"token": "WHARF-1-..."}`.
pub async fn show(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    Ok(Json(json!({ "token": current(&ctx)? })).into_response())
}

/// `POST /wharf/v1/join-token/rotate`: a new secret; tokens with the old
/// one are refused from the moment it commits. Answers the new token.
pub async fn rotate(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let secret = trust::new_secret().map_err(|e| HttpError(ApiError::new(500, e.to_string())))?;
    match ctx.store.propose(Command::RotateJoinSecret { secret }).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(json!({ "token": current(&ctx)? })).into_response()),
    }
}
