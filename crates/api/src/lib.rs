//! The HTTP API: Marathon's `/v2`, `/ping`, and Wharf's own `/wharf/v1`.
//!
//! Handlers only translate: HTTP in -> a typed store `Command` (through the
//! `marathon` crate's parsing and validation) -> HTTP out. They never change
//! state themselves and hold no state of their own; reads come from the
//! local replica, writes go through `Store::propose`.
//!
//! The proposer stamps ids and times, so this is where the clock is read.

mod apps;
mod context;
mod deployments;
mod error;
mod events;
mod groups;
mod info;
mod jobs;
mod metrics;
mod query;
mod tasks;
mod ui;
mod wharf;

pub use context::ApiContext;

use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/ping", get(info::ping))
        .route("/v2/info", get(info::info))
        .route("/v2/leader", get(info::leader).delete(info::abdicate))
        .route("/v2/apps", get(apps::list).post(apps::create).put(apps::put_many).patch(apps::patch_many))
        .route("/v2/apps/", get(apps::list).post(apps::create))
        .route(
            "/v2/apps/{*path}",
            get(apps::get_path)
                .put(apps::put_path)
                .patch(apps::patch_path)
                .delete(apps::delete_path)
                .post(apps::post_path),
        )
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::delete_many))
        .route("/v2/deployments", get(deployments::list))
        .route("/v2/deployments/{id}", axum::routing::delete(deployments::delete))
        .route("/v2/queue", get(info::queue))
        .route("/v2/queue/{*path}", axum::routing::delete(info::reset_delay))
        .route("/v2/events", get(events::stream_events))
        .route(
            "/v2/groups",
            get(groups::get_root).post(groups::create).put(groups::put_root).delete(groups::delete_root),
        )
        .route(
            "/v2/groups/",
            get(groups::get_root).post(groups::create).put(groups::put_root).delete(groups::delete_root),
        )
        .route(
            "/v2/groups/{*path}",
            get(groups::get_path).put(groups::put_path).delete(groups::delete_path).post(groups::create),
        )
        .merge(jobs_router())
        .route("/wharf/v1/nodes", get(wharf::nodes))
        .route("/wharf/v1/queue", get(wharf::queue))
        .route("/wharf/v1/nodes/{id}", axum::routing::delete(wharf::remove))
        .route("/wharf/v1/nodes/{id}/drain", post(wharf::drain))
        .route("/wharf/v1/tasks/{id}/files/{name}", get(wharf::task_file))
        .route("/metrics", get(metrics::scrape))
        .route("/", get(ui::root))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), leader_headers))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics::track))
        .with_state(ctx)
}

/// Metronome's `/v1/jobs` and `/v1/queue` (Mesos-DNS's `/v1/{version,config,hosts,services,enumerate}`
/// share the prefix and are merged in by the node).
fn jobs_router() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v1/jobs", get(jobs::list).post(jobs::create))
        .route("/v1/jobs/{id}", get(jobs::get_job).put(jobs::put_job).delete(jobs::delete_job))
        .route("/v1/jobs/{id}/runs", get(jobs::list_runs).post(jobs::start_run))
        .route("/v1/jobs/{id}/runs/{run}", get(jobs::get_run))
        .route("/v1/jobs/{id}/runs/{run}/actions/stop", post(jobs::stop_run))
        .route("/v1/jobs/{id}/schedules", get(jobs::list_schedules).post(jobs::create_schedule))
        .route(
            "/v1/jobs/{id}/schedules/{schedule}",
            get(jobs::get_schedule).put(jobs::put_schedule).delete(jobs::delete_schedule),
        )
        .route("/v1/queue", get(jobs::queue))
}

/// Marathon's proxy headers: every answer names the leader
/// (`X-Marathon-Leader`); a write taken by a non-leader (and forwarded by
/// the store) also carries `X-Marathon-Via`.
async fn leader_headers(
    axum::extract::State(ctx): axum::extract::State<Arc<ApiContext>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = req.method() != axum::http::Method::GET && req.method() != axum::http::Method::HEAD;
    let mut resp = next.run(req).await;
    let l = ctx.store.leadership().borrow().clone();
    let addrs = ctx.store.read(|s| {
        let leader = l.leader.and_then(|id| s.nodes.get(&id)).map(|n| n.http_addr.clone());
        let me = s.nodes.get(&ctx.node).map(|n| n.http_addr.clone());
        (leader, me)
    });
    if let Some(Ok(v)) = addrs.0.map(|a| axum::http::HeaderValue::from_str(&format!("http://{a}"))) {
        resp.headers_mut().insert("x-marathon-leader", v);
    }
    if write && !l.is_self {
        if let Some(Ok(v)) = addrs.1.map(|a| axum::http::HeaderValue::from_str(&format!("1.1 {a}"))) {
            resp.headers_mut().insert("x-marathon-via", v);
        }
    }
    resp
}
