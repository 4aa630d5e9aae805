//! `/ping`, `/v2/info`, `/v2/leader`, `/v2/queue`.

use crate::context::ApiContext;
use crate::error::{ApiResult, HttpError};
use crate::query::Params;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use axum::Json;
use marathon::ApiError;
use rand::SeedableRng;
use serde_json::json;
use std::sync::Arc;

pub async fn ping() -> &'static str {
    "pong"
}

/// The leader's HTTP address, from the node registry.
fn leader_http(ctx: &ApiContext) -> Option<String> {
    let l = ctx.store.leadership().borrow().clone();
    let leader = l.leader?;
    ctx.store.read(|s| s.nodes.get(&leader).map(|n| n.http_addr.clone()))
}

pub async fn leader(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    match leader_http(&ctx) {
        Some(addr) => Ok(Json(json!({ "leader": addr })).into_response()),
        None => Err(HttpError(ApiError::not_found("There is no leader"))),
    }
}

/// `DELETE /v2/leader`: the leader steps down and another voter takes over.
pub async fn abdicate(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    if ctx.store.abdicate().await? {
        Ok(Json(json!({ "message": "Leadership abdicated" })).into_response())
    } else {
        Err(HttpError(ApiError::new(503, "No other voter took over leadership")))
    }
}

pub async fn info(State(ctx): State<Arc<ApiContext>>) -> ApiResult {
    let leader = leader_http(&ctx);
    let (me, ports) = ctx.store.read(|s| (s.nodes.get(&ctx.node).cloned(), s.settings.service_port_range()));
    let hostname = me.as_ref().map(|n| n.hostname.clone()).unwrap_or_default();
    let http = me.as_ref().map(|n| n.http_addr.clone()).unwrap_or_default();
    let http_port: u16 = http.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(8080);
    Ok(Json(json!({
        "name": "marathon",
        "version": "1.11.0",
        "buildref": concat!("wharf-", env!("CARGO_PKG_VERSION")),
        "elected": ctx.store.is_leader(),
        "leader": leader,
        "frameworkId": format!("wharf-{}", ctx.node),
        "marathon_config": {
            "framework_name": "marathon",
            "hostname": hostname,
            "ha": true,
            "executor": "//cmd",
            "local_port_min": ports.lo,
            "local_port_max": ports.hi,
            "webui_url": format!("http://{http}"),
            "features": [],
            "env_vars_prefix": null
        },
        "zookeeper_config": {},
        "http_config": { "http_port": http_port, "https_port": null }
    }))
    .into_response())
}

/// What the scheduler would say now about work that waits. It is pure, so
/// any node can ask it without changing anything.
pub(crate) fn unplaced(s: &model::ClusterState, now: model::UnixMillis) -> Vec<scheduler::Unplaced> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(now.0 as u64);
    scheduler::plan(s, now, &mut rng).unplaced
}

/// `GET /v2/queue` (`embed=lastUnusedOffers` adds that list).
pub async fn queue(State(ctx): State<Arc<ApiContext>>, RawQuery(q): RawQuery) -> ApiResult {
    let now = ctx.now();
    let embed = Params::parse(q.as_deref()).all("embed");
    let last_unused = embed.iter().flat_map(|e| e.split(',')).any(|e| e.trim() == "lastUnusedOffers");
    let body = ctx.store.read(|s| {
        let offers: std::collections::BTreeMap<model::AppId, model::OfferSummary> =
            unplaced(s, now).into_iter().map(|u| (u.app.clone(), u.offers())).collect();
        marathon::render_queue(s, now, &offers, last_unused)
    });
    Ok(Json(body).into_response())
}

/// `DELETE /v2/queue/{app}/delay`: forget the app's launch backoff.
pub async fn reset_delay(State(ctx): State<Arc<ApiContext>>, Path(path): Path<String>) -> ApiResult {
    let id = path.trim_end_matches('/').strip_suffix("/delay").unwrap_or(&path).to_string();
    let id = model::AppId::parse(&id).map_err(|e| HttpError(ApiError::bad_request(e.to_string())))?;
    if ctx.store.read(|s| !s.apps.contains_key(&id)) {
        return Err(HttpError(ApiError::not_found(format!("Application {id} not found in tasks queue."))));
    }
    match ctx.store.propose(store::Command::ResetDelay { id }).await? {
        store::Applied::Rejected(r) => Err(r.into()),
        _ => Ok(axum::http::StatusCode::NO_CONTENT.into_response()),
    }
}
