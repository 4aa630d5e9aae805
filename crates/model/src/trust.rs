//! The cluster's trust anchor as replicated data: its certificate authority
//! and the secret of its join token. Kept in the Raft state (as Swarm does)
//! so that any voter can admit and renew nodes after the first node is lost.

use serde::{Deserialize, Serialize};

/// The cluster CA and the join secret. The CA key and the secret sit in the
/// log and snapshots as they are.
// TODO(issue 13, secrets): encrypt `ca_key_pem` and `join_secret` at rest
// with the cluster data key once the secret store has it; this struct is the
// one place that holds them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterTrust {
    /// The CA's common name (its certificate is rebuilt from it to sign).
    pub ca_name: String,
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    /// What a joining node presents with the CA fingerprint (`WHARF-1-…`).
    pub join_secret: String,
}

impl std::fmt::Debug for ClusterTrust {
    // The key and the secret never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTrust").field("ca_name", &self.ca_name).finish_non_exhaustive()
    }
}
