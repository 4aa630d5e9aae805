//! Unpacking one layer (a tar, gzip-compressed or not) into its own
//! directory for use as an overlayfs lower dir: OCI whiteouts become
//! overlayfs whiteouts (`.wh.NAME` → a 0/0 character device `NAME`;
//! `.wh..wh..opq` → the `trusted.overlay.opaque=y` attribute on its
//! directory). Paths are kept inside the directory by `tar`'s `unpack_in`.

use std::ffi::CString;
use std::io::{BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Unpacks the blob file at `blob` into `dest` (created).
pub(crate) fn unpack_blob(blob: &Path, dest: &Path) -> std::io::Result<()> {
    let mut file = BufReader::with_capacity(1 << 20, std::fs::File::open(blob)?);
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let reader = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        unpack_layer(flate2::read::GzDecoder::new(reader), dest)
    } else {
        unpack_layer(reader, dest)
    }
}

/// Unpacks an uncompressed layer tar into `dest` (created).
pub fn unpack_layer(tar: impl Read, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            entry.unpack_in(dest)?;
            continue;
        };
        if !name.starts_with(WHITEOUT_PREFIX) {
            entry.unpack_in(dest)?;
            continue;
        }
        let Some(parent) = safe_join(dest, path.parent().unwrap_or(Path::new(""))) else {
            continue;
        };
        std::fs::create_dir_all(&parent)?;
        if name == OPAQUE {
            set_xattr(&parent, "trusted.overlay.opaque", b"y")?;
        } else {
            let target = parent.join(&name[WHITEOUT_PREFIX.len()..]);
            make_whiteout(&target)?;
        }
    }
    Ok(())
}

/// `dest/rel` when `rel` stays inside `dest` (no `..`, no root).
fn safe_join(dest: &Path, rel: &Path) -> Option<PathBuf> {
    let mut out = dest.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("path contains a NUL byte"))
}

fn make_whiteout(target: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(target)?,
        Ok(_) => std::fs::remove_file(target)?,
        Err(_) => {}
    }
    let p = cpath(target)?;
    // SAFETY: mknod with a valid NUL-terminated path.
    if unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_xattr(dir: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let p = cpath(dir)?;
    let n = CString::new(name).map_err(|_| std::io::Error::other("bad xattr name"))?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    if unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// An uncompressed layer holding `files` (the layout tests use it too).
    pub(crate) fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let dir = std::env::temp_dir().join(format!("wharf-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tar = layer(&[("etc/keep", b"x"), ("etc/.wh.gone", b""), ("var/.wh..wh..opq", b"")]);
        unpack_layer(&tar[..], &dir).expect("unpack");
        assert_eq!(std::fs::read(dir.join("etc/keep")).expect("keep"), b"x");
        let m = std::fs::symlink_metadata(dir.join("etc/gone")).expect("whiteout");
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(!dir.join("etc/.wh.gone").exists());
        let mut buf = [0u8; 4];
        let p = cpath(&dir.join("var")).expect("path");
        let n = CString::new("trusted.overlay.opaque").expect("name");
        // SAFETY: valid strings and buffer.
        let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(len, 1, "opaque xattr set");
        assert_eq!(buf[0], b'y');
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn whiteouts_outside_the_layer_are_ignored() {
        assert_eq!(safe_join(Path::new("/d"), Path::new("../x")), None);
        assert_eq!(safe_join(Path::new("/d"), Path::new("a/./b")), Some(PathBuf::from("/d/a/b")));
    }
}
