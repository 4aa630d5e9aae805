//! The HTTP API: Marathon's `/v2`, `/ping`, and Wharf's own `/wharf/v1`.
//!
//! Handlers only translate: HTTP in -> a typed store `Command` (through the
//! `marathon` crate's parsing and validation) -> HTTP out. They never change
//! state themselves and hold no state of their own; reads come from the
//! local replica, writes go through `Store::propose`. (The big listings keep
//! rendered pieces of snapshot values between reads, `listing`, each valid
//! for the very value it was rendered from.)
//!
//! The proposer stamps ids and times, so this is where the clock is read.

mod apps;
pub mod auth;
mod context;
mod deployments;
mod error;
mod events;
mod groups;
mod info;
mod jobs;
mod join_token;
pub mod listing;
mod logs;
mod metrics;
mod query;
mod secrets;
mod tasks;
mod tokens;
mod trace;
mod ui;
mod wharf;

pub use auth::{Access, Credentials};
pub use context::ApiContext;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use std::sync::Arc;

type Ctx = Arc<ApiContext>;

/// The API's routes, each added with its method so that the same definition
/// builds the router and lists the routes ([`routes`]): the test that walks
/// every route with every kind of credentials cannot miss one.
fn book() -> RouteBook {
    RouteBook::default()
        .get("/ping", info::ping)
        .get("/v2/info", info::info)
        .get("/v2/leader", info::leader)
        .delete("/v2/leader", info::abdicate)
        .get("/v2/apps", apps::list)
        .post("/v2/apps", apps::create)
        .put("/v2/apps", apps::put_many)
        .patch("/v2/apps", apps::patch_many)
        .get("/v2/apps/", apps::list)
        .post("/v2/apps/", apps::create)
        .get("/v2/apps/{*path}", apps::get_path)
        .put("/v2/apps/{*path}", apps::put_path)
        .patch("/v2/apps/{*path}", apps::patch_path)
        .delete("/v2/apps/{*path}", apps::delete_path)
        .post("/v2/apps/{*path}", apps::post_path)
        .get("/v2/tasks", tasks::list)
        .post("/v2/tasks/delete", tasks::delete_many)
        .get("/v2/deployments", deployments::list)
        .delete("/v2/deployments/{id}", deployments::delete)
        .get("/v2/queue", info::queue)
        .delete("/v2/queue/{*path}", info::reset_delay)
        .get("/v2/events", events::stream_events)
        .get("/v2/groups", groups::get_root)
        .post("/v2/groups", groups::create)
        .put("/v2/groups", groups::put_root)
        .delete("/v2/groups", groups::delete_root)
        .get("/v2/groups/", groups::get_root)
        .post("/v2/groups/", groups::create)
        .put("/v2/groups/", groups::put_root)
        .delete("/v2/groups/", groups::delete_root)
        .get("/v2/groups/{*path}", groups::get_path)
        .put("/v2/groups/{*path}", groups::put_path)
        .delete("/v2/groups/{*path}", groups::delete_path)
        .post("/v2/groups/{*path}", groups::create)
        // Metronome's jobs API (Mesos-DNS's `/v1/{version,config,hosts,services,enumerate}`
        // share the prefix and are merged in by the node).
        .get("/v1/jobs", jobs::list)
        .post("/v1/jobs", jobs::create)
        .get("/v1/jobs/{id}", jobs::get_job)
        .put("/v1/jobs/{id}", jobs::put_job)
        .delete("/v1/jobs/{id}", jobs::delete_job)
        .get("/v1/jobs/{id}/runs", jobs::list_runs)
        .post("/v1/jobs/{id}/runs", jobs::start_run)
        .get("/v1/jobs/{id}/runs/{run}", jobs::get_run)
        .post("/v1/jobs/{id}/runs/{run}/actions/stop", jobs::stop_run)
        .get("/v1/jobs/{id}/schedules", jobs::list_schedules)
        .post("/v1/jobs/{id}/schedules", jobs::create_schedule)
        .get("/v1/jobs/{id}/schedules/{schedule}", jobs::get_schedule)
        .put("/v1/jobs/{id}/schedules/{schedule}", jobs::put_schedule)
        .delete("/v1/jobs/{id}/schedules/{schedule}", jobs::delete_schedule)
        .get("/v1/queue", jobs::queue)
        .get("/wharf/v1/nodes", wharf::nodes)
        .get("/wharf/v1/queue", wharf::queue)
        .delete("/wharf/v1/nodes/{id}", wharf::remove)
        .post("/wharf/v1/nodes/{id}/drain", wharf::drain)
        .get("/wharf/v1/tasks/{id}/files/{name}", wharf::task_file)
        .get("/wharf/v1/tasks/{id}/logs", logs::task_logs)
        .get("/wharf/v1/tokens", tokens::list)
        .post("/wharf/v1/tokens", tokens::create)
        .delete("/wharf/v1/tokens/{id}", tokens::delete)
        .get("/wharf/v1/join-token", join_token::show)
        .post("/wharf/v1/join-token/rotate", join_token::rotate)
        .get("/wharf/v1/secrets", secrets::list)
        .get("/wharf/v1/secrets/{*path}", secrets::show)
        .put("/wharf/v1/secrets/{*path}", secrets::put)
        .delete("/wharf/v1/secrets/{*path}", secrets::delete)
        .post("/wharf/v1/unlock", secrets::unlock)
        .get("/metrics", metrics::scrape)
        .get("/", ui::root)
        .get("/ui", ui::root)
        .get("/ui/", ui::index)
        .get("/ui/{file}", ui::file)
}

/// What one node asks of another on the RPC port (behind mutual TLS, not
/// behind `auth`: the node that took the request checked its caller): a
/// task's files and log stream, read where the task runs.
pub fn node_router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .route("/wharf/v1/tasks/{id}/files/{name}", axum::routing::get(wharf::task_file))
        .route("/wharf/v1/tasks/{id}/logs", axum::routing::get(logs::task_logs))
        .with_state(ctx)
}

/// Every route of [`router`] as (method, path pattern), in definition order.
/// (A GET route answers HEAD too.)
pub fn routes() -> Vec<(Method, &'static str)> {
    book().table
}

/// The API's routes, without the authentication layer: the node puts
/// [`auth::require`] around this and whatever it merges into it.
pub fn router(ctx: Arc<ApiContext>) -> Router {
    book()
        .build()
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), leader_headers))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), metrics::track))
        .layer(axum::middleware::from_fn(trace::request_span))
        .with_state(ctx)
}

#[derive(Default)]
struct RouteBook {
    paths: Vec<(&'static str, MethodRouter<Ctx>)>,
    table: Vec<(Method, &'static str)>,
}

impl RouteBook {
    fn on<H: Handler<T, Ctx>, T: 'static>(
        mut self,
        method: Method,
        filter: MethodFilter,
        path: &'static str,
        h: H,
    ) -> Self {
        self.table.push((method, path));
        match self.paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, mr)) => *mr = std::mem::take(mr).on(filter, h),
            None => self.paths.push((path, MethodRouter::new().on(filter, h))),
        }
        self
    }
    fn get<H: Handler<T, Ctx>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.on(Method::GET, MethodFilter::GET, path, h)
    }
    fn post<H: Handler<T, Ctx>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.on(Method::POST, MethodFilter::POST, path, h)
    }
    fn put<H: Handler<T, Ctx>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.on(Method::PUT, MethodFilter::PUT, path, h)
    }
    fn patch<H: Handler<T, Ctx>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.on(Method::PATCH, MethodFilter::PATCH, path, h)
    }
    fn delete<H: Handler<T, Ctx>, T: 'static>(self, path: &'static str, h: H) -> Self {
        self.on(Method::DELETE, MethodFilter::DELETE, path, h)
    }
    fn build(self) -> Router<Ctx> {
        self.paths.into_iter().fold(Router::new(), |r, (path, mr)| r.route(path, mr))
    }
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
    if let Some(Ok(v)) = addrs.0.map(|a| axum::http::HeaderValue::from_str(&format!("{}://{a}", ctx.scheme))) {
        resp.headers_mut().insert("x-marathon-leader", v);
    }
    if write && !l.is_self {
        if let Some(Ok(v)) = addrs.1.map(|a| axum::http::HeaderValue::from_str(&format!("1.1 {a}"))) {
            resp.headers_mut().insert("x-marathon-via", v);
        }
    }
    resp
}
