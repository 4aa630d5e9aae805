//! A task's secrets in clear, on the node that runs it only: opened from the
//! store's sealed values with the cluster's data key just before launch
//! (`resolve`), handed to the driver in `TaskLaunch::secrets`, and from
//! there into the task's environment or files in its sandbox. The exec and
//! oci drivers pass them to the executor over its stdin, never in
//! `spec.json`. Their bytes are wiped when dropped; `Debug` shows names only.
//!
//! Error messages name the secret and its path, never a value.

use model::{AppSpec, ClusterState, SecretPath};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use store::Keyring;
use zeroize::{Zeroize, Zeroizing};

/// Why a task's secret could not be given to it.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret '{name}' is not declared in the app's secrets")]
    Undeclared { name: String },
    #[error("secret '{name}': '{source_path}' is not a valid secret path")]
    BadSource { name: String, source_path: String },
    #[error("secret '{name}' ({path}) does not exist in the secret store")]
    NotFound { name: String, path: SecretPath },
    #[error("secret '{name}' ({path}) cannot be opened on this node: {reason}")]
    Unavailable { name: String, path: SecretPath, reason: store::KeyError },
    #[error("secret '{name}' is not UTF-8 text, so it cannot be the environment variable {var}")]
    NotText { name: String, var: String },
}

/// A file secret: `path` is relative to the sandbox.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretFile {
    pub path: String,
    pub data: Vec<u8>,
}

/// Everything secret a task gets.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSecrets {
    pub env: BTreeMap<String, String>,
    pub files: Vec<SecretFile>,
}

impl TaskSecrets {
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.files.is_empty()
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

impl Drop for TaskSecrets {
    fn drop(&mut self) {
        for v in self.env.values_mut() {
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for TaskSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<&str> = self.files.iter().map(|s| s.path.as_str()).collect();
        f.debug_struct("TaskSecrets").field("env", &self.env.keys().collect::<Vec<_>>()).field("files", &files).finish()
    }
}

/// The value of the app's secret `name` (for a task's env and files, and
/// for credentials such as `container.docker.pullConfig`).
pub fn open_secret(
    state: &ClusterState,
    keyring: &Keyring,
    app: &AppSpec,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let source = app.secrets.get(name).ok_or_else(|| SecretError::Undeclared { name: name.to_string() })?;
    let path = source
        .path()
        .map_err(|_| SecretError::BadSource { name: name.to_string(), source_path: source.source.clone() })?;
    let stored =
        state.secrets.get(&path).ok_or_else(|| SecretError::NotFound { name: name.to_string(), path: path.clone() })?;
    let unavailable = |reason| SecretError::Unavailable { name: name.to_string(), path: path.clone(), reason };
    let key = keyring.get().map_err(unavailable)?;
    key.open(&path, &stored.sealed).map_err(unavailable)
}

/// Opens every secret the app's tasks get (env references and file secrets).
pub fn resolve(state: &ClusterState, keyring: &Keyring, app: &AppSpec) -> Result<TaskSecrets, SecretError> {
    let mut out = TaskSecrets::default();
    for (var, name) in &app.secret_env {
        let value = open_secret(state, keyring, app, name)?;
        let text =
            std::str::from_utf8(&value).map_err(|_| SecretError::NotText { name: name.clone(), var: var.clone() })?;
        out.env.insert(var.clone(), text.to_string());
    }
    for v in app.container.container().into_iter().flat_map(|c| &c.volumes) {
        if let Some(name) = &v.secret {
            let value = open_secret(state, keyring, app, name)?;
            out.files.push(SecretFile { path: v.container_path.clone(), data: value.to_vec() });
        }
    }
    Ok(out)
}

/// Writes file secrets into the sandbox: readable by the task's user only
/// (mode 0400, owned by `owner`, else by the executor's user).
pub fn write_files(sandbox: &Path, files: &[SecretFile], owner: Option<(u32, u32)>) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    for f in files {
        let rel = Path::new(&f.path);
        let safe = rel.is_relative() && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(format!("file secret path '{}' must stay inside the sandbox", f.path));
        }
        let path = sandbox.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("file secret '{}': {e}", f.path))?;
            if let Some((uid, gid)) = owner {
                let _ = std::os::unix::fs::chown(parent, Some(uid), Some(gid));
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("file secret '{}': {e}", f.path))?;
        file.write_all(&f.data).map_err(|e| format!("file secret '{}': {e}", f.path))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| format!("file secret '{}': giving it to the task's user: {e}", f.path))?;
        }
    }
    Ok(())
}

/// An image's user given as `uid` or `uid:gid` (a name is resolved inside
/// the image later; its files then stay the executor's).
pub fn numeric_user(user: Option<&str>) -> Option<(u32, u32)> {
    let (u, g) = match user?.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user?, None),
    };
    let uid = u.parse().ok()?;
    let gid = match g {
        Some(g) => g.parse().ok()?,
        None => uid,
    };
    Some((uid, gid))
}
