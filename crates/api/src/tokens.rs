//! `/wharf/v1/tokens`: the HTTP API's bearer tokens (admin only, see
//! `auth::access`). A token is `<id>.<secret>`: made here from the system's
//! random source, shown once in the answer to its creation, and stored as the
//! SHA-256 of its secret. A plain hash suffices (no slow KDF): the secret is
//! 256 random bits, not a password someone chose.

use crate::auth::{hex, sha256};
use crate::error::{ApiResult, HttpError};
use crate::ApiContext;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use marathon::{ApiError, ErrorDetail};
use model::{ApiToken, Role};
use ring::rand::SecureRandom;
use serde_json::{json, Value};
use std::sync::Arc;
use store::{Applied, Command};

fn render(t: &ApiToken) -> Value {
    json!({"id": t.id, "role": t.role, "name": t.name, "createdAt": marathon::format_time(t.created_at)})
}

/// `GET /wharf/v1/tokens`: every token's id, role and name (never a secret).
pub async fn list(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let tokens: Vec<Value> = ctx.store.read(|s| s.api_tokens.values().map(render).collect());
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

/// `POST /wharf/v1/tokens` with `{"role": "viewer|deployer|admin", "name": "..."}`:
/// 201 with the new token, the only time it is shown.
pub async fn create(State(ctx): State<Arc<ApiContext>>, body: Bytes) -> ApiResult {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| HttpError(ApiError::invalid_json(vec![ErrorDetail::new("/", e.to_string())])))?;
    let role = match v.get("role").and_then(Value::as_str) {
        Some(r) => Role::parse(r).ok_or_else(|| {
            HttpError(ApiError::unprocessable(vec![ErrorDetail::new(
                "/role",
                format!("unknown role '{r}': expected viewer, deployer or admin"),
            )]))
        })?,
        None => {
            return Err(HttpError(ApiError::unprocessable(vec![ErrorDetail::new(
                "/role",
                "role is required: viewer, deployer or admin",
            )])))
        }
    };
    let name = match v.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(n)) if n.len() <= 200 => n.clone(),
        Some(_) => {
            return Err(HttpError(ApiError::unprocessable(vec![ErrorDetail::new(
                "/name",
                "must be a string of at most 200 characters",
            )])))
        }
    };
    let (id, secret) = (random_hex(8)?, random_hex(32)?);
    let stored =
        ApiToken { id: id.clone(), role, name, secret_sha256: hex(&sha256(secret.as_bytes())), created_at: ctx.now() };
    match ctx.store.propose(Command::PutApiToken(stored.clone())).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => {
            let mut body = render(&stored);
            body["token"] = json!(format!("{id}.{secret}"));
            Ok((StatusCode::CREATED, Json(body)).into_response())
        }
    }
}

/// `DELETE /wharf/v1/tokens/{id}`: revoked on every node once committed.
pub async fn delete(State(ctx): State<Arc<ApiContext>>, Path(id): Path<String>) -> ApiResult {
    match ctx.store.propose(Command::RemoveApiToken { id }).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(json!({})).into_response()),
    }
}

fn random_hex(bytes: usize) -> Result<String, HttpError> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| HttpError(ApiError::new(500, "the system's random source failed")))?;
    Ok(hex(&buf))
}
