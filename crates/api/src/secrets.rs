//! `/wharf/v1/secrets`: the cluster's secret store. Writes need an admin,
//! reads a deployer (see `auth::access`). A value is sealed here with the
//! cluster's data key before it is proposed, and is never rendered again:
//! reading a secret gives its metadata only; only the agent of the node that
//! runs a task opens it.
//!
//! `PUT` takes the value as the raw body, or as `{"value": "..."}` when the
//! body is sent as `application/json`. Error messages never quote the body.

use crate::error::{ApiResult, HttpError};
use crate::ApiContext;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use marathon::{ApiError, ErrorDetail};
use model::{SecretPath, StoredSecret, MAX_SECRET_BYTES};
use serde_json::{json, Value};
use std::sync::Arc;
use store::{Applied, Command, KeyError};

fn render(s: &StoredSecret) -> Value {
    json!({
        "path": s.path.as_str(),
        "createdAt": marathon::format_time(s.created_at),
        "updatedAt": marathon::format_time(s.updated_at),
    })
}

fn invalid(path: &str, message: impl Into<String>) -> HttpError {
    HttpError(ApiError::unprocessable(vec![ErrorDetail::new(path, message)]))
}

fn parse_path(p: &str) -> Result<SecretPath, HttpError> {
    SecretPath::parse(p).map_err(|e| invalid("/path", e.to_string()))
}

/// `GET /wharf/v1/secrets`: every secret's path and times, never a value.
pub async fn list(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let secrets: Vec<Value> = ctx.store.read(|s| s.secrets.values().map(render).collect());
    Ok(Json(json!({ "secrets": secrets })).into_response())
}

/// `GET /wharf/v1/secrets/{path}`: the secret's metadata (not its value).
pub async fn show(State(ctx): State<Arc<ApiContext>>, Path(path): Path<String>) -> ApiResult {
    let path = parse_path(&path)?;
    match ctx.store.read(|s| s.secrets.get(&path).map(render)) {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(HttpError(ApiError::not_found(format!("secret '{path}' does not exist")))),
    }
}

/// The value in a PUT body (raw, or `{"value": string}` as JSON).
fn value_of(headers: &HeaderMap, body: &Bytes) -> Result<zeroize::Zeroizing<Vec<u8>>, HttpError> {
    let json =
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/json"));
    let value = if json {
        // serde's messages can quote the input: none of them is passed on.
        let v: Value = serde_json::from_slice(body)
            .map_err(|_| HttpError(ApiError::invalid_json(vec![ErrorDetail::new("/", "the body is not JSON")])))?;
        match v.get("value") {
            Some(Value::String(s)) => zeroize::Zeroizing::new(s.clone().into_bytes()),
            _ => return Err(invalid("/value", "expected {\"value\": \"...\"} (a string)")),
        }
    } else {
        zeroize::Zeroizing::new(body.to_vec())
    };
    if value.len() > MAX_SECRET_BYTES {
        return Err(invalid("/value", format!("a secret holds at most {MAX_SECRET_BYTES} bytes")));
    }
    Ok(value)
}

fn key_unavailable(e: KeyError) -> HttpError {
    HttpError(ApiError::new(503, format!("cannot seal the secret on this node: {e}")))
}

/// `PUT /wharf/v1/secrets/{path}`: creates (201) or replaces (200) it.
pub async fn put(
    State(ctx): State<Arc<ApiContext>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let path = parse_path(&path)?;
    let value = value_of(&headers, &body)?;
    let key = ctx.store.keyring().get().map_err(key_unavailable)?;
    let sealed = key.seal(&path, &value).map_err(key_unavailable)?;
    let now = ctx.now();
    let existed = ctx.store.read(|s| s.secrets.contains_key(&path));
    let secret = StoredSecret { path, sealed, created_at: now, updated_at: now };
    match ctx.store.propose(Command::PutSecret(secret.clone())).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => {
            let stored = ctx.store.read(|s| s.secrets.get(&secret.path).cloned()).unwrap_or(secret);
            let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
            Ok((status, Json(render(&stored))).into_response())
        }
    }
}

/// `POST /wharf/v1/unlock` with `{"key": "WHARFKEY-1-..."}`: an autolocked
/// node opens its copy of the data key (this node only; the key is checked
/// against the wrapped data key and never stored or logged).
pub async fn unlock(State(ctx): State<Arc<ApiContext>>, body: Bytes) -> ApiResult {
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| HttpError(ApiError::invalid_json(vec![ErrorDetail::new("/", "the body is not JSON")])))?;
    let Some(key) = v.get("key").and_then(Value::as_str) else {
        return Err(invalid("/key", "expected {\"key\": \"WHARFKEY-1-...\"}"));
    };
    match ctx.store.keyring().unlock(key) {
        Ok(()) => Ok(Json(json!({"unlocked": true})).into_response()),
        Err(KeyError::WrongUnlockKey) => Err(invalid("/key", "this is not the node's unlock key")),
        Err(e) => Err(HttpError(ApiError::new(409, format!("nothing to unlock: {e}")))),
    }
}

/// `DELETE /wharf/v1/secrets/{path}`.
pub async fn delete(State(ctx): State<Arc<ApiContext>>, Path(path): Path<String>) -> ApiResult {
    let path = parse_path(&path)?;
    match ctx.store.propose(Command::RemoveSecret { path }).await? {
        Applied::Rejected(r) => Err(r.into()),
        _ => Ok(Json(json!({})).into_response()),
    }
}
