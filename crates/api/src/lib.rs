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
mod info;
mod query;
mod tasks;
mod wharf;

pub use context::ApiContext;

use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/ping", get(info::ping))
        .route("/v2/info", get(info::info))
        .route("/v2/leader", get(info::leader))
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
        .route("/wharf/v1/nodes", get(wharf::nodes))
        .route("/wharf/v1/tasks/{id}/files/{name}", get(wharf::task_file))
        .with_state(ctx)
}
