//! Unpacking a fetched archive into the sandbox: `.tar`, `.tar.gz`/`.tgz`,
//! `.tar.bz2`/`.tbz2` (the `tar` crate over `flate2`/`bzip2`) and `.zip`
//! (the `zip` crate). An entry that would land outside the sandbox (`..`,
//! or through a symlink) fails the fetch; so does unpacking more than the
//! limit. Other names are left as fetched (Mesos did the same).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tar,
    TarGz,
    TarBz2,
    Zip,
}

fn kind_of(name: &str) -> Option<Kind> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Some(Kind::TarGz)
    } else if n.ends_with(".tar.bz2") || n.ends_with(".tbz2") {
        Some(Kind::TarBz2)
    } else if n.ends_with(".tar") {
        Some(Kind::Tar)
    } else if n.ends_with(".zip") {
        Some(Kind::Zip)
    } else {
        None
    }
}

/// Unpacks `archive` into `dir` when its name is an archive's; returns
/// whether it was one.
pub(super) fn unpack(archive: &Path, dir: &Path, max: u64) -> Result<bool, String> {
    let name = archive.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(kind) = kind_of(name) else { return Ok(false) };
    let file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let reader = BufReader::new(file);
    match kind {
        Kind::Tar => untar(reader, dir, max),
        Kind::TarGz => untar(flate2::read::MultiGzDecoder::new(reader), dir, max),
        Kind::TarBz2 => untar(bzip2::read::MultiBzDecoder::new(reader), dir, max),
        Kind::Zip => unzip(reader, dir, max),
    }
    .map(|()| true)
    .map_err(|e| format!("unpacking {name}: {e}"))
}

fn untar(reader: impl Read, dir: &Path, max: u64) -> Result<(), String> {
    let mut ar = tar::Archive::new(reader);
    // Ownership stays the agent's (the fetcher gives files to the task's
    // user afterwards); modes come from the archive, set-id bits dropped.
    ar.set_preserve_ownerships(false);
    ar.set_preserve_permissions(false);
    let mut total: u64 = 0;
    for entry in ar.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!("entry '{}' leaves the sandbox", path.display()));
        }
        total = total.saturating_add(entry.size());
        if total > max {
            return Err(format!("more than the limit of {max} bytes unpacked"));
        }
        // `unpack_in` refuses a target whose parent resolves outside `dir`
        // (through a symlink) with an error, `..` with `false`.
        match entry.unpack_in(dir) {
            Ok(true) => {}
            Ok(false) => return Err(format!("entry '{}' leaves the sandbox", path.display())),
            Err(e) => return Err(format!("entry '{}': {e}", path.display())),
        }
    }
    Ok(())
}

fn unzip(reader: BufReader<File>, dir: &Path, max: u64) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| e.to_string())?;
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| e.to_string())?;
        let Some(rel) = f.enclosed_name() else {
            return Err(format!("entry '{}' leaves the sandbox", f.name().unwrap_or_default()));
        };
        let out = inside(dir, &rel).map_err(|e| format!("entry '{}': {e}", rel.display()))?;
        if f.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            continue;
        }
        if f.is_symlink() {
            let mut target = String::new();
            f.read_to_string(&mut target).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink(&target, &out).map_err(|e| format!("{}: {e}", out.display()))?;
            continue;
        }
        let left = max.saturating_sub(total);
        // Written with create_new after removing what was there: never
        // through a symlink an earlier entry made.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&out)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        // Declared sizes can lie: the limit counts bytes actually written.
        let n = std::io::copy(&mut (&mut f).take(left.saturating_add(1)), &mut file)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        total = total.saturating_add(n);
        if total > max {
            return Err(format!("more than the limit of {max} bytes unpacked"));
        }
        if let Some(mode) = f.unix_mode() {
            let _ = std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode & 0o777));
        }
    }
    Ok(())
}

/// `rel` (already free of `..` and roots) under `dir`, its parents
/// created; refused when a parent is a symlink; whatever non-directory is
/// at the path itself is removed (unzip overwrites).
fn inside(dir: &Path, rel: &Path) -> Result<PathBuf, String> {
    let mut at = dir.to_path_buf();
    let parts: Vec<_> = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    for (i, c) in parts.iter().enumerate() {
        at.push(c);
        let last = i + 1 == parts.len();
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() && !last => return Err("goes through a symlink".into()),
            Ok(m) if last && !m.is_dir() => std::fs::remove_file(&at).map_err(|e| e.to_string())?,
            Ok(m) if !m.is_dir() && !last => return Err("a parent is not a directory".into()),
            Ok(_) => {}
            Err(_) if !last => std::fs::create_dir(&at).map_err(|e| e.to_string())?,
            Err(_) => {}
        }
    }
    if parts.is_empty() {
        return Err("empty name".into());
    }
    Ok(at)
}
