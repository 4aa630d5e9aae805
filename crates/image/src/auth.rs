//! Registry credentials in Docker's `config.json` format: the node's file
//! (`--registry-config`, else `$HOME/.docker/config.json`) and an app's
//! `pullConfig` secret hold the same document. Only `auths` is read: per
//! registry an `auth` (base64 of `user:password`) or `username` and
//! `password`. Credential helpers (`credsStore`, `credHelpers`) run programs
//! and are not supported: an entry with neither form (a helper's) is
//! skipped, so that registry is pulled from without credentials.

use crate::{Credentials, ImageError};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The `auths` of a Docker `config.json`, by registry host (`host[:port]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    auths: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The names Docker gives its own registry, all meaning `docker.io`.
const DOCKER_HUB: [&str; 3] = ["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// `https://host:port/v1/` or `host:port` → `host:port`; Docker Hub's
/// aliases → `docker.io`.
fn registry_key(key: &str) -> String {
    let k = key.trim();
    let k = k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")).unwrap_or(k);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    if DOCKER_HUB.contains(&host.as_str()) {
        "docker.io".to_string()
    } else {
        host
    }
}

impl RegistryConfig {
    /// Reads a `config.json` document; `origin` names it in errors (a file
    /// path, or the secret it came from).
    pub fn parse(doc: &str, origin: &str) -> Result<RegistryConfig, ImageError> {
        let bad = |message: String| ImageError::Credentials { origin: origin.to_string(), message };
        let parsed: Document =
            serde_json::from_str(doc).map_err(|e| bad(format!("not a Docker config.json document: {e}")))?;
        let mut auths = BTreeMap::new();
        for (registry, entry) in parsed.auths {
            let creds = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        // Not the decoder's words: they quote the secret's bytes.
                        .map_err(|_| bad(format!("auths.{registry}.auth is not base64")))?;
                    let text = String::from_utf8(raw)
                        .map_err(|_| bad(format!("auths.{registry}.auth is not UTF-8 user:password")))?;
                    let (user, pass) = text
                        .split_once(':')
                        .ok_or_else(|| bad(format!("auths.{registry}.auth is not base64 of user:password")))?;
                    Credentials { username: user.to_string(), password: pass.to_string() }
                }
                (_, Some(username), Some(password)) => Credentials { username, password },
                _ => continue,
            };
            auths.insert(registry_key(&registry), creds);
        }
        Ok(RegistryConfig { auths })
    }

    /// Reads the file at `path`.
    pub fn load(path: &Path) -> Result<RegistryConfig, ImageError> {
        let origin = path.display().to_string();
        let doc = std::fs::read_to_string(path)
            .map_err(|e| ImageError::Credentials { origin: origin.clone(), message: e.to_string() })?;
        RegistryConfig::parse(&doc, &origin)
    }

    /// The credentials for a registry (`host[:port]`, as in a reference).
    pub fn credentials_for(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&registry_key(registry))
    }

    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }
}

/// The node's registry file: the flag's path, else
/// `$HOME/.docker/config.json` when it exists.
pub fn default_registry_config(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = PathBuf::from(home).join(".docker").join("config.json");
        p.is_file().then_some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_entries() {
        let doc = r#"{"auths": {
            "127.0.0.1:5000": {"auth": "YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"}
        }, "credsStore": "desktop"}"#;
        let c = RegistryConfig::parse(doc, "test").expect("parse");
        let a = c.credentials_for("127.0.0.1:5000").expect("alice");
        assert_eq!((a.username.as_str(), a.password.as_str()), ("alice", "s3cr3t:with:colons"));
        assert_eq!(c.credentials_for("docker.io").map(|c| c.username.as_str()), Some("bob"));
        assert_eq!(c.credentials_for("127.0.0.1:5001"), None);
    }

    #[test]
    fn broken_documents_say_where() {
        let e = RegistryConfig::parse("{", "/etc/x.json").expect_err("not json").to_string();
        assert!(e.contains("/etc/x.json") && e.contains("config.json"), "{e}");
        let e = RegistryConfig::parse(r#"{"auths": {"r:1": {"auth": "!!"}}}"#, "s").expect_err("b64").to_string();
        assert!(e.contains("auths.r:1.auth is not base64"), "{e}");
        // A credential helper's entry holds nothing to read.
        let c = RegistryConfig::parse(r#"{"auths": {"r:1": {}}, "credsStore": "pass"}"#, "s").expect("helper");
        assert!(c.is_empty());
    }
}
