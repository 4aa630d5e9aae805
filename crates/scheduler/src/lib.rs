//! The scheduler: a pure function from a state snapshot to a plan.
//!
//! `plan(state, now, rng)` decides which tasks to launch where (cpus, mem,
//! disk, ports and constraints accounted per node), which to kill (scale
//! down, replaced versions, deleted apps), which terminal tasks to forget,
//! the restart backoff, and which deployments are done.
//!
//! Invariants: no I/O, no clock, no global randomness — `now` and the RNG are
//! inputs, so the same inputs give the same plan and a simulation of many
//! nodes runs it without sockets or sleeps. It never mutates state: the
//! store applies the plan and re-checks every launch against newer state.

mod backoff;
mod constraints;
mod jobs;
mod placement;
mod reconcile;

pub use constraints::{check as check_constraint, ConstraintViolation};
pub use jobs::{timers, Timers, WaitingRun};
pub use placement::{Decline, Declined};
pub use reconcile::{plan, plan_scoped, Outcome, Scope, Unplaced, Waiting};
