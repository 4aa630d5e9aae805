//! A task's log files in its sandbox, rotated by size, and reading them
//! across the rotation.
//!
//! Layout, per stream (`stdout`, `stderr`): `NAME` is the file being
//! written; when it would grow past [`LogLimits::max_size`] it is renamed
//! `NAME.1` (the previous `NAME.1` becomes `NAME.2`, and so on), and the
//! oldest beyond [`LogLimits::files`] is dropped, like Docker's json-file
//! `max-size`/`max-file`. The writers are the executor (exec tasks) and the
//! Docker driver's copier; the reader is the API's `logs` endpoint.
//!
//! Readers hold an open file, so a rotation never loses bytes they have not
//! read yet: after a rename they finish the file they hold and move on to
//! the next newer one, found by inode ([`Cursor`]). Only a reader slower
//! than the whole rotation window skips what was dropped.

mod limits;
mod reader;
mod watch;
mod writer;

pub use limits::{LimitsError, LogLimits};
pub use reader::Cursor;
pub use watch::DirWatch;
pub use writer::RotatingWriter;

use std::path::{Path, PathBuf};

/// `dir/NAME` for `index` 0, `dir/NAME.index` for older files.
pub fn file_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    if index == 0 {
        dir.join(name)
    } else {
        dir.join(format!("{name}.{index}"))
    }
}
