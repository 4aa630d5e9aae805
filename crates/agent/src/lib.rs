//! The agent's process layer: the drivers behind one `Driver` trait (exec:
//! the agent side of per-task executors; docker: the Docker engine), the
//! per-task executor (a separate single-threaded process), the task's cgroup,
//! the sandbox files they share, and the task environment.
//!
//! Owns: starting, stopping, watching and recovering task processes on this
//! node. Only `reconcile` touches the store: it turns assignments into
//! launches and kills, and [`TaskEvent`]s and [`RecoveredTask`]s into store
//! commands; the driver and executor below it know nothing of the store.

pub mod artifacts;
pub mod cgroup;
pub mod container;
pub mod drain;
pub mod driver;
pub mod env;
pub mod executor;
pub mod health;
pub mod images;
pub mod launcher;
pub mod metrics;
pub mod network;
pub mod readiness;
pub mod reconcile;
pub mod sandbox;
pub mod secrets;
pub mod volumes;

pub use drain::LbDrain;
pub use driver::{DockerDriver, Driver, DriverError, ExecDriver, OciDriver, RecoveredTask, TaskEvent, TaskLaunch};
pub use env::task_env;
pub use executor::executor_main;
pub use metrics::AgentMetrics;
pub use reconcile::{probe_drivers, run as run_agent, AgentConfig};
pub use sandbox::LaunchSpec;
