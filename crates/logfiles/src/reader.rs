//! The reading side: a cursor that reads one stream across its rotated
//! files, oldest first, and keeps reading as it grows and rotates.

use crate::file_path;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes read backwards at a time when looking for the last lines.
const BLOCK: u64 = 64 * 1024;

/// Where a reader is: an open log file (by inode, whatever its name is now)
/// and its offset in it.
pub struct Cursor {
    dir: PathBuf,
    name: String,
    file: Option<(File, u64)>,
}

impl Cursor {
    /// From the oldest byte still kept.
    pub fn from_start(dir: &Path, name: &str) -> io::Result<Cursor> {
        let mut c = Cursor { dir: dir.to_path_buf(), name: name.to_string(), file: None };
        c.open_oldest()?;
        Ok(c)
    }

    /// At the start of the last `lines` lines (a last line without its
    /// newline counts); from the oldest byte if there are fewer.
    pub fn from_tail(dir: &Path, name: &str, lines: usize) -> io::Result<Cursor> {
        let mut first = true;
        let mut count = 0;
        for (_, path, _) in chain(dir, name).into_iter().rev() {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut end = f.metadata()?.len();
            if lines == 0 {
                return Cursor::at(dir, name, f, end);
            }
            while end > 0 {
                let start = end.saturating_sub(BLOCK);
                let mut block = vec![0u8; (end - start) as usize];
                f.seek(SeekFrom::Start(start))?;
                f.read_exact(&mut block)?;
                for (i, b) in block.iter().enumerate().rev() {
                    let terminal = std::mem::take(&mut first);
                    if *b == b'\n' && !terminal {
                        count += 1;
                        if count == lines {
                            return Cursor::at(dir, name, f, start + i as u64 + 1);
                        }
                    }
                }
                end = start;
            }
        }
        Cursor::from_start(dir, name)
    }

    fn at(dir: &Path, name: &str, mut f: File, offset: u64) -> io::Result<Cursor> {
        f.seek(SeekFrom::Start(offset))?;
        let ino = f.metadata()?.ino();
        Ok(Cursor { dir: dir.to_path_buf(), name: name.to_string(), file: Some((f, ino)) })
    }

    /// Reads what is there now; 0 means nothing yet (the stream may grow).
    /// At the end of a file that was rotated away it moves on to the next
    /// newer one.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some((file, ino)) = self.file.as_mut() else {
                if !self.open_oldest()? {
                    return Ok(0);
                }
                continue;
            };
            let n = file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            let files = chain(&self.dir, &self.name);
            let next = match files.iter().position(|(_, _, i)| i == ino) {
                // Still the file being written: nothing more yet.
                Some(p) if p + 1 == files.len() && files[p].0 == 0 => return Ok(0),
                Some(p) => files.get(p + 1),
                // Ours was dropped (or emptied, with one file): the oldest
                // left is the next.
                None => files.first(),
            };
            let Some((_, path, next_ino)) = next.cloned() else { return Ok(0) };
            // The writer wrote ours completely before renaming it.
            let n = file.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            match File::open(&path) {
                Ok(f) if f.metadata()?.ino() == next_ino => self.file = Some((f, next_ino)),
                // Renamed again meanwhile: look again.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn open_oldest(&mut self) -> io::Result<bool> {
        for (_, path, ino) in chain(&self.dir, &self.name) {
            match File::open(&path) {
                Ok(f) if f.metadata()?.ino() == ino => {
                    self.file = Some((f, ino));
                    return Ok(true);
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// The stream's files, oldest first: `(index, path, inode)`. The writer
/// renames from the oldest down, so a transient gap of one index can be
/// seen; the scan stops after two missing in a row.
fn chain(dir: &Path, name: &str) -> Vec<(u32, PathBuf, u64)> {
    let mut out = Vec::new();
    let mut missing = 0;
    for i in 0u32.. {
        let p = file_path(dir, name, i);
        match std::fs::metadata(&p) {
            Ok(m) => {
                missing = 0;
                out.push((i, p, m.ino()));
            }
            Err(_) if i == 0 => {}
            Err(_) => {
                missing += 1;
                if missing == 2 {
                    break;
                }
            }
        }
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogLimits, RotatingWriter};

    fn drain(c: &mut Cursor) -> io::Result<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = c.read(&mut buf)?;
            if n == 0 {
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn reads_across_rotations_while_writing() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut w = RotatingWriter::open(d.path(), "stdout", LogLimits { max_size: 20, files: 3 })?;
        let mut c = Cursor::from_start(d.path(), "stdout")?;
        let mut expected = String::new();
        let mut got = String::new();
        for i in 0..200 {
            let line = format!("line {i}\n");
            w.write_all(line.as_bytes())?;
            expected.push_str(&line);
            // Read now and then: at most two rotations between reads.
            if i % 3 == 0 {
                got.push_str(&drain(&mut c)?);
            }
        }
        got.push_str(&drain(&mut c)?);
        assert_eq!(got, expected);
        Ok(())
    }

    #[test]
    fn tail_counts_lines_across_files() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut w = RotatingWriter::open(d.path(), "stdout", LogLimits { max_size: 16, files: 5 })?;
        for i in 0..10 {
            w.write_all(format!("l{i}\n").as_bytes())?;
        }
        assert!(d.path().join("stdout.1").exists());
        assert_eq!(drain(&mut Cursor::from_tail(d.path(), "stdout", 3)?)?, "l7\nl8\nl9\n");
        assert_eq!(drain(&mut Cursor::from_tail(d.path(), "stdout", 7)?)?, "l3\nl4\nl5\nl6\nl7\nl8\nl9\n");
        assert_eq!(drain(&mut Cursor::from_tail(d.path(), "stdout", 0)?)?, "");
        assert_eq!(drain(&mut Cursor::from_tail(d.path(), "stdout", 99)?)?.lines().count(), 10);
        w.write_all(b"partial")?;
        assert_eq!(drain(&mut Cursor::from_tail(d.path(), "stdout", 2)?)?, "l9\npartial");
        Ok(())
    }

    #[test]
    fn a_reader_left_behind_starts_at_the_oldest_kept() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut w = RotatingWriter::open(d.path(), "stdout", LogLimits { max_size: 6, files: 2 })?;
        w.write_all(b"a1\n")?;
        let mut c = Cursor::from_start(d.path(), "stdout")?;
        assert_eq!(drain(&mut c)?, "a1\n");
        for l in ["b2\n", "c3\n", "d4\n", "e5\n", "f6\n"] {
            w.write_all(l.as_bytes())?;
        }
        // Files now: stdout.1 = "c3\nd4\n", stdout = "e5\nf6\n"; "b2" is gone
        // from disk, but the cursor held the file it was in.
        assert_eq!(drain(&mut c)?, "b2\nc3\nd4\ne5\nf6\n");
        Ok(())
    }

    #[test]
    fn no_file_yet_reads_nothing_then_everything() -> io::Result<()> {
        let d = tempfile::tempdir()?;
        let mut c = Cursor::from_start(d.path(), "stderr")?;
        assert_eq!(drain(&mut c)?, "");
        let mut w = RotatingWriter::open(d.path(), "stderr", LogLimits::default())?;
        w.write_all(b"x\n")?;
        assert_eq!(drain(&mut c)?, "x\n");
        Ok(())
    }
}
