//! Load balancing on every node: each app's TCP service ports listen on
//! every node and forward to the app's up tasks anywhere in the cluster
//! (`l4`), and an HTTP front routes by `Host` and path to apps with a
//! virtual host (`http`). Backends come from the store's endpoint stream
//! (`table`); nothing reloads and no listener restarts on a change.
//!
//! Hand-written on tokio on purpose: `pingora` would bring 200+
//! crates, C builds and a runtime of its own for what is a small proxy.

pub mod h1;
pub mod http;
pub mod l4;
pub mod metrics;
pub mod pool;
pub mod table;
pub mod udp;

pub use table::{DrainState, Lb, LbConfig};

use axum::response::IntoResponse;
use std::sync::Arc;

/// `GET /wharf/v1/lb`, merged into the node's HTTP API.
pub fn router(lb: Arc<Lb>) -> axum::Router {
    axum::Router::new()
        .route(
            "/wharf/v1/lb",
            axum::routing::get(|axum::extract::State(lb): axum::extract::State<Arc<Lb>>| async move {
                axum::Json(lb.status())
            }),
        )
        .with_state(lb)
}

/// The node RPC's path at which a node says how its LB stands towards a
/// task (`GET`, JSON `DrainState`); an agent asks every node before it
/// signals a task the LBs send to.
pub const DRAIN_PATH: &str = "/lb/drain";

/// `GET /lb/drain/{task}`, merged into the node's RPC router (beside
/// `/raft/*`, so it gets the same transport and protection).
pub fn rpc_router(lb: Arc<Lb>) -> axum::Router {
    use axum::extract::{Path, State};
    axum::Router::new()
        .route(
            &format!("{DRAIN_PATH}/{{task}}"),
            axum::routing::get(|State(lb): State<Arc<Lb>>, Path(task): Path<String>| async move {
                match model::TaskId::parse(&task) {
                    Ok(t) => axum::Json(lb.drain_state(&t)).into_response(),
                    Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
                }
            }),
        )
        .with_state(lb)
}
