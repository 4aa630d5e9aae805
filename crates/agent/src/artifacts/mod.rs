//! Artifacts into a task's sandbox before the task starts, as the Mesos
//! fetcher did: each `model::Artifact` is downloaded (http/https with the
//! agent's HTTP client, `file://` and absolute paths copied from this node)
//! under its URI's file name or `destPath`, made 0755 when `executable`,
//! else unpacked into the sandbox when `extract` and it is an archive
//! (`extract.rs`). The first failure stops the launch; its message names
//! the URI and the reason (HTTP status, refused connection, limit).
//!
//! Bounds (`FetchLimits`): bytes per download, bytes unpacked per archive,
//! a connect timeout and a deadline per artifact (the whole transfer).
//! `cache` is accepted but nothing is cached: every launch downloads again.

mod extract;

use model::{Artifact, ArtifactSource};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How much one artifact may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Bytes one download (or local copy) may have.
    pub max_bytes: u64,
    /// Bytes one archive may unpack to.
    pub max_unpacked: u64,
    /// The whole transfer of one artifact, connection included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_bytes: 2 << 30,
            max_unpacked: 8 << 30,
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why an artifact did not reach the sandbox.
#[derive(Debug, thiserror::Error)]
#[error("fetching artifact {uri} failed: {reason}")]
pub struct FetchError {
    pub uri: String,
    pub reason: String,
}

fn fail(uri: &str, reason: impl Into<String>) -> FetchError {
    FetchError { uri: uri.to_string(), reason: reason.into() }
}

/// An error with its causes ("error sending request ...: ... Connection
/// refused"): reqwest's own message leaves the cause out.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Fetches artifacts with one shared HTTP client.
#[derive(Clone)]
pub struct Fetcher {
    client: Result<reqwest::Client, String>,
    limits: FetchLimits,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new(FetchLimits::default())
    }
}

impl Fetcher {
    /// A client failing to build (no TLS backend) fails only the launches
    /// that have an http(s) artifact, saying why.
    pub fn new(limits: FetchLimits) -> Fetcher {
        let client = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .user_agent(concat!("wharf-fetcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| chain(&e));
        Fetcher { client, limits }
    }

    pub fn limits(&self) -> FetchLimits {
        self.limits
    }

    /// Fetches every artifact into `sandbox`, in order, and gives what they
    /// brought to `owner` (uid, gid) when the task runs as another user.
    pub async fn fetch_all(
        &self,
        sandbox: &Path,
        artifacts: &[Artifact],
        owner: Option<(u32, u32)>,
    ) -> Result<(), FetchError> {
        for a in artifacts {
            let deadline = self.limits.timeout;
            match tokio::time::timeout(deadline, self.fetch_one(sandbox, a)).await {
                Ok(r) => r?,
                Err(_) => return Err(fail(&a.uri, format!("not done within {}s", deadline.as_secs()))),
            }
        }
        if let (Some((uid, gid)), false) = (owner, artifacts.is_empty()) {
            let dir = sandbox.to_path_buf();
            tokio::task::spawn_blocking(move || chown_tree(&dir, uid, gid))
                .await
                .map_err(|e| fail("(all)", format!("giving the artifacts to the task's user: {e}")))?
                .map_err(|e| fail("(all)", format!("giving the artifacts to the task's user: {e}")))?;
        }
        Ok(())
    }

    async fn fetch_one(&self, sandbox: &Path, a: &Artifact) -> Result<(), FetchError> {
        let uri = a.uri.as_str();
        let name = a.file_name().ok_or_else(|| fail(uri, "the URI names no file"))?;
        let dest = target_in(sandbox, name).map_err(|e| fail(uri, e))?;
        match a.source() {
            Some(ArtifactSource::Http(url)) => self.download(url, &dest).await?,
            Some(ArtifactSource::Local(path)) => {
                copy_local(path, &dest, self.limits.max_bytes).await.map_err(|e| fail(uri, format!("{path}: {e}")))?
            }
            None => return Err(fail(uri, "unsupported URI")),
        }
        let (dest2, dir) = (dest.clone(), sandbox.to_path_buf());
        let (executable, extract, max) = (a.executable, a.extract, self.limits.max_unpacked);
        // Mesos's order: an executable is never unpacked.
        let done = tokio::task::spawn_blocking(move || {
            if executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest2, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
            } else if extract {
                extract::unpack(&dest2, &dir, max).map(|_| ())
            } else {
                Ok(())
            }
        })
        .await
        .map_err(|e| fail(uri, e.to_string()))?;
        done.map_err(|e| fail(uri, e))
    }

    async fn download(&self, url: &str, dest: &Path) -> Result<(), FetchError> {
        let client = self.client.as_ref().map_err(|e| fail(url, format!("no HTTP client: {e}")))?;
        let mut resp = client.get(url).send().await.map_err(|e| fail(url, chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(url, format!("HTTP {status}")));
        }
        let max = self.limits.max_bytes;
        if let Some(len) = resp.content_length().filter(|l| *l > max) {
            return Err(fail(url, format!("{len} bytes, more than the limit of {max}")));
        }
        let part = with_suffix(dest, ".part");
        // Never write through whatever an earlier archive left at that name.
        let _ = tokio::fs::remove_file(&part).await;
        let mut file =
            tokio::fs::File::create(&part).await.map_err(|e| fail(url, format!("{}: {e}", part.display())))?;
        let mut got: u64 = 0;
        let result = async {
            while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
                got += chunk.len() as u64;
                if got > max {
                    return Err(format!("more than the limit of {max} bytes"));
                }
                file.write_all(&chunk).await.map_err(|e| format!("writing {}: {e}", part.display()))?;
            }
            file.flush().await.map_err(|e| format!("writing {}: {e}", part.display()))?;
            tokio::fs::rename(&part, dest).await.map_err(|e| format!("{}: {e}", dest.display()))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result.map_err(|e| fail(url, e))
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `name` under `sandbox`, its directories created, refusing a path that
/// leaves the sandbox or goes through a symlink (an archive unpacked
/// earlier may have made one), and removing a symlink in its place.
fn target_in(sandbox: &Path, name: &str) -> Result<PathBuf, String> {
    let mut at = sandbox.to_path_buf();
    let parts: Vec<Component> = Path::new(name).components().collect();
    for (i, c) in parts.iter().enumerate() {
        let Component::Normal(part) = c else {
            if matches!(c, Component::CurDir) {
                continue;
            }
            return Err(format!("'{name}' leaves the sandbox"));
        };
        at.push(part);
        let meta = std::fs::symlink_metadata(&at);
        let last = i + 1 == parts.len();
        match meta {
            Ok(m) if m.file_type().is_symlink() && last => {
                std::fs::remove_file(&at).map_err(|e| format!("{}: {e}", at.display()))?
            }
            Ok(m) if m.file_type().is_symlink() => return Err(format!("'{name}' goes through a symlink")),
            Ok(m) if last && m.is_dir() => return Err(format!("'{name}' is a directory in the sandbox")),
            Ok(_) => {}
            Err(_) if !last => std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?,
            Err(_) => {}
        }
    }
    Ok(at)
}

async fn copy_local(src: &str, dest: &Path, max: u64) -> Result<(), String> {
    let meta = tokio::fs::metadata(src).await.map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > max {
        return Err(format!("{} bytes, more than the limit of {max}", meta.len()));
    }
    tokio::fs::copy(src, dest).await.map(|_| ()).map_err(|e| e.to_string())
}

/// lchown of everything under `dir` (the sandbox itself is the executor's
/// to give away).
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
