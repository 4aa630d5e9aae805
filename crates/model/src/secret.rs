//! Secrets: a path in the cluster's secret store (`SecretPath`), what an app
//! or job asks for (Marathon's `secrets`, env references and file secrets, in
//! `AppSpec`), and a secret as the cluster stores it (`StoredSecret`).
//!
//! A stored secret is sealed: its value is encrypted with the cluster's data
//! key before it is proposed, so the Raft log, snapshots and redb files hold
//! only ciphertext. Nothing here can open it (no keys, no crypto): the store's
//! keyring does, on the node that runs the task.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Largest secret value accepted (it travels in one Raft entry).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretPathError {
    #[error("a secret path must not be empty")]
    Empty,
    #[error("a secret path must be at most 256 characters")]
    TooLong,
    #[error("'{0}' is not a valid path segment: use letters, digits, '.', '_' and '-' (not '.' or '..' alone)")]
    BadSegment(String),
}

/// Where a secret lives in the store, e.g. `prod/db-password`. A leading
/// `/` is accepted and dropped (Marathon's examples write `/db/password`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretPath(String);

impl SecretPath {
    pub fn parse(s: &str) -> Result<SecretPath, SecretPathError> {
        let trimmed = s.trim_start_matches('/');
        if trimmed.is_empty() {
            return Err(SecretPathError::Empty);
        }
        if trimmed.len() > 256 {
            return Err(SecretPathError::TooLong);
        }
        for seg in trimmed.split('/') {
            let ok = !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(SecretPathError::BadSegment(seg.to_string()));
            }
        }
        Ok(SecretPath(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SecretPath {
    type Error = SecretPathError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SecretPath::parse(&s)
    }
}

impl From<SecretPath> for String {
    fn from(p: SecretPath) -> String {
        p.0
    }
}

/// One entry of Marathon's `secrets`: the secret named in the app comes from
/// `source` in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSource {
    /// As the app gave it (rendered back unchanged); a valid `SecretPath`
    /// (the parser checks).
    pub source: String,
}

impl SecretSource {
    /// The store path this source names.
    pub fn path(&self) -> Result<SecretPath, SecretPathError> {
        SecretPath::parse(&self.source)
    }
}

/// A value encrypted with the cluster's data key (AEAD; the secret's path is
/// the associated data, so a ciphertext cannot be moved to another path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Which data key sealed it (a fingerprint, not the key).
    pub key_id: String,
    /// Base64 of the per-value nonce.
    pub nonce: String,
    /// Base64 of the ciphertext with its tag.
    pub ciphertext: String,
}

/// A secret as the cluster keeps it: never the value in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSecret {
    pub path: SecretPath,
    pub sealed: Sealed,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_and_normalised() {
        assert_eq!(SecretPath::parse("/db/password").map(|p| p.to_string()), Ok("db/password".into()));
        assert_eq!(SecretPath::parse("prod/db-pass_1.v2").map(|p| p.to_string()), Ok("prod/db-pass_1.v2".into()));
        assert_eq!(SecretPath::parse("/"), Err(SecretPathError::Empty));
        assert!(matches!(SecretPath::parse("a//b"), Err(SecretPathError::BadSegment(_))));
        assert!(matches!(SecretPath::parse("a/../b"), Err(SecretPathError::BadSegment(_))));
        assert!(matches!(SecretPath::parse("a b"), Err(SecretPathError::BadSegment(_))));
        assert!(matches!(SecretPath::parse("a/"), Err(SecretPathError::BadSegment(_))));
        assert_eq!(SecretPath::parse(&"a".repeat(257)), Err(SecretPathError::TooLong));
    }
}
