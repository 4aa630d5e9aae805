//! Marathon's JSON wire format, and nothing else: app definitions in
//! (parse, default, validate, merge), apps/tasks/deployments/queue out, and
//! Marathon's error bodies and timestamps.
//!
//! Invariants: a pure library. No I/O, no clock (callers pass `now`), no
//! state changes; the only crate that knows Marathon field names.

pub mod container;
pub mod convert;
pub mod error;
pub mod events;
mod fetch;
pub mod groups;
pub mod history;
pub mod pieces;
mod read;
pub mod readiness;
pub mod render;
pub mod time;
mod validate;

pub use container::check_image_reference;
pub use convert::{app_from_value, merge_app, parse_app};
pub use error::{ApiError, ErrorDetail};
pub use history::{render_app_version, render_versions};
pub use render::{
    app_live_fields, app_own_fields, app_wire, counted_tasks, deployments_by_app, render_app, render_deployment,
    render_queue, render_task, same_own_fields, task_wire, task_wire_for, AppWire, Embed, TaskAppFacts, TaskWire,
};
pub use time::{format_time, parse_bool_param, parse_time};

#[cfg(test)]
mod tests;
