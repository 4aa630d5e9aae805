//! Metronome's wire format (`/v1/jobs`): parsing and validating job and
//! schedule definitions into `model` types, and rendering jobs, schedules,
//! runs and history as Metronome's JSON. The only crate that knows it.
//!
//! Invariants: a pure library, like `marathon`: no I/O, no clock (renderers
//! take `now`), no state. Deliberate differences from Metronome are listed
//! in `read.rs` beside the rule they change.

mod error;
mod read;
mod render;
#[cfg(test)]
mod tests;

pub use error::{Detail, WireError};
pub use read::{parse_job, parse_schedule, JobInput};
pub use render::{format_time, render_job, render_run, render_schedule, Embed};
