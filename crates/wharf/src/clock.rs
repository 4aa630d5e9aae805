//! The binary's clock: the one place its loops read wall time.

use model::UnixMillis;

pub fn now() -> UnixMillis {
    UnixMillis::from_system_time(std::time::SystemTime::now())
}
