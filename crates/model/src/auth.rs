//! Who may use the HTTP API: the roles and the stored form of an API token.
//!
//! Only a token's hash is ever stored (and replicated); the token itself is
//! shown once, to whoever created it.

use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// What a caller of the HTTP API may do; each role can do everything the
/// one before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything and follow events; change nothing.
    Viewer,
    /// Also create, change and delete apps, groups, tasks and deployments.
    Deployer,
    /// Also manage nodes, leadership and API tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "deployer" => Some(Role::Deployer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bearer token as the cluster keeps it: its public id, its role and the
/// SHA-256 of its secret part (hex), never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// The public part of the token (`<id>.<secret>`), used to find it.
    pub id: String,
    pub role: Role,
    /// A label its creator chose (may be empty).
    #[serde(default)]
    pub name: String,
    /// Lowercase hex of SHA-256(secret).
    pub secret_sha256: String,
    pub created_at: UnixMillis,
}
