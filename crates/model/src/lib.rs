//! The cluster's vocabulary: typed ids, app/task/node/deployment specs and the
//! `ClusterState` snapshot that every other crate reads.
//!
//! Invariants: no I/O, no clock, no randomness. Nothing here knows Marathon's
//! wire format (that is the `marathon` crate) or how state is replicated (the
//! `store` crate). Values here are plain data; the store is the only place that
//! changes a `ClusterState`.

pub mod app;
pub mod artifact;
pub mod auth;
pub mod cron;
pub mod deployment;
pub mod endpoint;
pub mod ids;
pub mod job;
pub mod node;
pub mod offers;
pub mod plan;
pub mod resources;
pub mod secret;
pub mod state;
pub mod table;
pub mod task;
pub mod time;
pub mod trust;

pub use app::*;
pub use artifact::*;
pub use auth::*;
pub use deployment::*;
pub use endpoint::*;
pub use ids::*;
pub use job::*;
pub use node::*;
pub use offers::*;
pub use plan::*;
pub use resources::*;
pub use secret::*;
pub use state::*;
pub use table::*;
pub use task::*;
pub use time::*;
pub use trust::*;
