//! The cluster's trust: its certificate authority (`ca`), node certificates
//! that name node ids (`identity`), join tokens (`token`), the checks a TLS
//! handshake between nodes makes (`verify`), and the one HTTP client every
//! node-to-node call goes through (`client`).
//!
//! Invariants: a node's certificate is valid for `wharf-node` (every node)
//! and `n<id>.node.wharf` (this node only); a peer is accepted when its
//! certificate chains to the cluster CA and names no revoked node. Keys are
//! ECDSA P-256, made by `ring` through `rcgen`; TLS is rustls with the ring
//! provider. Nothing here reads the replicated state: callers hand in the CA
//! and the revocation list.

mod ca;
mod client;
mod identity;
mod token;
mod verify;

pub use ca::{fingerprint, Ca, Issued, NODE_NAME};
pub use client::{pinned_client, RpcClient};
pub use identity::{Identity, NodeKey, TLS_DIR};
pub use token::{new_secret, JoinToken};
pub use verify::{PeerCert, PinnedCa, Revocations};

/// What can go wrong with certificates, keys and tokens.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot make or sign a certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot read {what}: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("the join token is malformed: {0} (expected WHARF-1-<CA fingerprint>-<secret>, as `wharf token show` prints it)")]
    Token(&'static str),
    #[error("the node's public key is not an uncompressed P-256 point")]
    PublicKey,
    #[error("cannot build the HTTP client for node-to-node calls: {0}")]
    Client(#[from] reqwest::Error),
    #[error("no secure random source: {0}")]
    Random(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// The crypto provider every TLS setting here uses (ring: no C build).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::NodeId;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_ca_rebuilt_from_the_state_issues_certificates_that_name_their_node_and_can_be_revoked() {
        let now = SystemTime::now();
        let (_, trust) = Ca::generate(now).expect("ca");
        let ca = Ca::from_trust(&trust).expect("from state");
        let key = NodeKey::generate().expect("key");
        let issued = ca.issue(NodeId(7), key.public_raw(), Duration::from_secs(60), now).expect("issue");
        assert!(issued.not_after > issued.not_before);
        let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_secs();
        let dir = tempfile::tempdir().expect("dir");
        let id = Identity::install(dir.path(), NodeId(7), &trust.ca_cert_pem, &key, &issued).expect("install");
        // Renewed two thirds into its lifetime from now, not from the
        // backdated start of its validity.
        assert!(id.renew_at() >= now_secs + 39 && id.renew_at() <= now_secs + 41, "{}", id.renew_at() - now_secs);
        let cert = id.cert_der();
        assert!(PeerCert(cert.clone()).names_node(NodeId(7)));
        assert!(!PeerCert(cert.clone()).names_node(NodeId(8)));
        let revoked = Revocations::default();
        assert_eq!(revoked.revoked(&cert), None);
        revoked.set(&[NodeId(8)].into());
        assert_eq!(revoked.revoked(&cert), None);
        revoked.set(&[NodeId(8), NodeId(7)].into());
        assert_eq!(revoked.revoked(&cert), Some(NodeId(7)));
        // A restarted node reads back what it stored.
        let again = Identity::load(dir.path(), NodeId(7)).expect("load").expect("present");
        assert_eq!(again.cert_der(), cert);
        assert_eq!(again.ca_fingerprint(), id.ca_fingerprint());
        assert!(ca.issue(NodeId(7), &[1, 2, 3], Duration::from_secs(60), now).is_err());
    }
}
