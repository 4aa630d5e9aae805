//! Wall-clock instants as plain numbers. The proposer of a command reads the
//! clock and stamps the value in, so `apply` stays deterministic.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// Converts a wall-clock reading (taken by the caller, never here).
    pub fn from_system_time(t: std::time::SystemTime) -> UnixMillis {
        UnixMillis(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
    }

    pub fn plus_secs_f64(self, secs: f64) -> UnixMillis {
        UnixMillis(self.0.saturating_add((secs * 1000.0).round() as i64))
    }
    pub fn secs_until(self, later: UnixMillis) -> f64 {
        (later.0 - self.0) as f64 / 1000.0
    }
}
