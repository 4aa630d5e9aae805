//! The writing side: appends to `NAME`, rotating it by size.

use crate::{file_path, LogLimits};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes one stream's log, rotating by size. Nothing is buffered: each
/// `write_all` reaches the file before it returns, so readers see a line as
/// soon as the task wrote it. A rotation happens at a line end when the
/// chunk has one, so files mostly hold whole lines.
pub struct RotatingWriter {
    dir: PathBuf,
    name: String,
    limits: LogLimits,
    file: File,
    size: u64,
}

impl RotatingWriter {
    /// Appends to an existing `NAME` (or creates it).
    pub fn open(dir: &Path, name: &str, limits: LogLimits) -> io::Result<RotatingWriter> {
        let file = File::options().create(true).append(true).open(file_path(dir, name, 0))?;
        let size = file.metadata()?.len();
        Ok(RotatingWriter { dir: dir.to_path_buf(), name: name.to_string(), limits, file, size })
    }

    /// Starts the stream over: removes every rotated file and empties `NAME`.
    pub fn create(dir: &Path, name: &str, limits: LogLimits) -> io::Result<RotatingWriter> {
        for i in 1..=limits.files.max(1) {
            remove_if_exists(&file_path(dir, name, i))?;
        }
        let file = File::create(file_path(dir, name, 0))?;
        Ok(RotatingWriter { dir: dir.to_path_buf(), name: name.to_string(), limits, file, size: 0 })
    }

    pub fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room = self.limits.max_size.saturating_sub(self.size);
            if buf.len() as u64 <= room {
                self.file.write_all(buf)?;
                self.size += buf.len() as u64;
                return Ok(());
            }
            let fits = &buf[..room as usize];
            match fits.iter().rposition(|b| *b == b'\n') {
                Some(i) => {
                    self.file.write_all(&buf[..=i])?;
                    buf = &buf[i + 1..];
                }
                // A line longer than what is left: start it in a new file,
                // unless the file is empty (a line longer than a file).
                None if self.size > 0 => {}
                None => {
                    self.file.write_all(fits)?;
                    buf = &buf[fits.len()..];
                }
            }
            self.rotate()?;
        }
        Ok(())
    }

    /// `NAME.k` -> `NAME.k+1` from the oldest down, then `NAME` -> `NAME.1`
    /// and a new `NAME`. Renames move the oldest out of the window (the
    /// last rename overwrites it), never leaving a gap readers would fall in.
    fn rotate(&mut self) -> io::Result<()> {
        let files = self.limits.files.max(1);
        if files == 1 {
            remove_if_exists(&file_path(&self.dir, &self.name, 0))?;
        } else {
            for i in (1..files - 1).rev() {
                rename_if_exists(&file_path(&self.dir, &self.name, i), &file_path(&self.dir, &self.name, i + 1))?;
            }
            std::fs::rename(file_path(&self.dir, &self.name, 0), file_path(&self.dir, &self.name, 1))?;
        }
        self.file = File::options().create(true).append(true).open(file_path(&self.dir, &self.name, 0))?;
        self.size = 0;
        Ok(())
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap_or_default()
    }

    #[test]
    fn rotates_at_line_ends_and_keeps_the_window() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut w = RotatingWriter::open(d.path(), "stdout", LogLimits { max_size: 10, files: 3 })?;
        for line in ["aaa\n", "bbb\n", "ccc\n", "ddd\n", "eee\n", "fff\n", "ggg\n"] {
            w.write_all(line.as_bytes())?;
        }
        assert_eq!(read(d.path(), "stdout"), "ggg\n");
        assert_eq!(read(d.path(), "stdout.1"), "eee\nfff\n");
        assert_eq!(read(d.path(), "stdout.2"), "ccc\nddd\n");
        assert!(!d.path().join("stdout.3").exists());
        Ok(())
    }

    #[test]
    fn a_line_longer_than_a_file_is_split() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut w = RotatingWriter::open(d.path(), "out", LogLimits { max_size: 4, files: 4 })?;
        w.write_all(b"0123456789\n")?;
        assert_eq!(read(d.path(), "out.2"), "0123");
        assert_eq!(read(d.path(), "out.1"), "4567");
        assert_eq!(read(d.path(), "out"), "89\n");
        Ok(())
    }

    #[test]
    fn one_file_starts_over() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut w = RotatingWriter::open(d.path(), "out", LogLimits { max_size: 8, files: 1 })?;
        w.write_all(b"abc\ndef\n")?;
        w.write_all(b"ghi\n")?;
        assert_eq!(read(d.path(), "out"), "ghi\n");
        assert!(!d.path().join("out.1").exists());
        Ok(())
    }
}
