//! This node's identity: its key and CA-issued certificate, kept in
//! `<data-dir>/tls/` (a restarted node reuses them) and held in memory
//! behind an `ArcSwap`, so a renewed certificate is used by the next
//! handshake while connections already open carry on.

use crate::ca::{fingerprint, Issued};
use crate::verify::{NodeClientVerifier, NodeServerVerifier, Revocations};
use crate::TrustError;
use arc_swap::ArcSwap;
use model::NodeId;
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The directory under the data dir that holds the node's TLS files.
pub const TLS_DIR: &str = "tls";
const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "node.pem";
const KEY_FILE: &str = "node-key.pem";
const VALIDITY_FILE: &str = "node.json";

/// A fresh node key: the node makes it, sends only its public half, and
/// keeps the private half on its disk.
pub struct NodeKey(KeyPair);

impl NodeKey {
    pub fn generate() -> Result<NodeKey, TrustError> {
        Ok(NodeKey(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?))
    }
    /// The uncompressed P-256 point, for the CA to sign.
    pub fn public_raw(&self) -> &[u8] {
        self.0.public_key_raw()
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Validity {
    not_before: u64,
    not_after: u64,
}

pub struct Identity {
    node: NodeId,
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    current: ArcSwap<CertifiedKey>,
    validity: ArcSwap<Validity>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("node", &self.node).finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io { path: path.to_path_buf(), source }
}

fn pem_err(what: &'static str) -> impl FnOnce(rustls::pki_types::pem::Error) -> TrustError {
    move |e| TrustError::Pem { what, reason: e.to_string() }
}

/// Written whole or not at all: a crash mid-write leaves the old file.
fn write_atomic(path: &Path, data: &[u8], private: bool) -> Result<(), TrustError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn certified(ca_der: &CertificateDer<'static>, cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, TrustError> {
    let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(pem_err("the node certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem_err("the node key"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
    Ok(CertifiedKey::new(vec![leaf, ca_der.clone()], signer))
}

impl Identity {
    /// The identity stored in `dir` for `node`, if there is one.
    pub fn load(dir: &Path, node: NodeId) -> Result<Option<Arc<Identity>>, TrustError> {
        let cert_path = dir.join(CERT_FILE);
        if !cert_path.exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|source| TrustError::Io { path: p, source })
        };
        let (ca_pem, cert_pem, key_pem) = (read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?);
        let validity: Validity = serde_json::from_str(&read(VALIDITY_FILE)?)
            .map_err(|e| TrustError::Pem { what: "node.json", reason: e.to_string() })?;
        Identity::build(dir, node, ca_pem, &cert_pem, &key_pem, validity).map(Some)
    }

    /// Stores a newly issued certificate (and its CA) in `dir` and returns
    /// the identity.
    pub fn install(
        dir: &Path,
        node: NodeId,
        ca_pem: &str,
        key: &NodeKey,
        issued: &Issued,
    ) -> Result<Arc<Identity>, TrustError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_atomic(&dir.join(CA_FILE), ca_pem.as_bytes(), false)?;
        let validity = Validity { not_before: issued.not_before, not_after: issued.not_after };
        let id = Identity::build(dir, node, ca_pem.to_string(), &issued.cert_pem, &key.0.serialize_pem(), validity)?;
        id.save(key, issued)?;
        Ok(id)
    }

    fn build(
        dir: &Path,
        node: NodeId,
        ca_pem: String,
        cert_pem: &str,
        key_pem: &str,
        validity: Validity,
    ) -> Result<Arc<Identity>, TrustError> {
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(pem_err("the CA certificate"))?;
        let current = certified(&ca_der, cert_pem, key_pem)?;
        Ok(Arc::new(Identity {
            node,
            dir: dir.to_path_buf(),
            ca_der,
            ca_pem,
            current: ArcSwap::from_pointee(current),
            validity: ArcSwap::from_pointee(validity),
        }))
    }

    fn save(&self, key: &NodeKey, issued: &Issued) -> Result<(), TrustError> {
        let validity = Validity { not_before: issued.not_before, not_after: issued.not_after };
        // Key first: a crash between the writes leaves a key without its
        // certificate, which the next renewal replaces; never the reverse.
        write_atomic(&self.dir.join(KEY_FILE), key.0.serialize_pem().as_bytes(), true)?;
        write_atomic(&self.dir.join(CERT_FILE), issued.cert_pem.as_bytes(), false)?;
        let json =
            serde_json::to_vec(&validity).map_err(|e| TrustError::Pem { what: "node.json", reason: e.to_string() })?;
        write_atomic(&self.dir.join(VALIDITY_FILE), &json, false)
    }

    /// Switches to a renewed certificate: stored, then used by every new
    /// handshake (open connections keep theirs).
    pub fn renew(&self, key: &NodeKey, issued: &Issued) -> Result<(), TrustError> {
        let next = certified(&self.ca_der, &issued.cert_pem, &key.0.serialize_pem())?;
        self.save(key, issued)?;
        self.current.store(Arc::new(next));
        self.validity.store(Arc::new(Validity { not_before: issued.not_before, not_after: issued.not_after }));
        Ok(())
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_der)
    }

    /// The current certificate's DER (what peers see).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.current.load().cert.first().cloned().unwrap_or_else(|| self.ca_der.clone())
    }

    /// Unix seconds at which the current certificate should be renewed: two
    /// thirds into its lifetime.
    pub fn renew_at(&self) -> u64 {
        let v = self.validity.load();
        v.not_before + (v.not_after.saturating_sub(v.not_before)) * 2 / 3
    }

    pub fn not_after(&self) -> u64 {
        self.validity.load().not_after
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TrustError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        Ok(Arc::new(roots))
    }

    /// The RPC server's TLS: this node's certificate; a client certificate
    /// is asked for and, when given, must chain to the CA and not be
    /// revoked. A client without one only reaches the join exchange (the
    /// server refuses everything else, see `PeerCert`).
    pub fn server_config(self: &Arc<Self>, revoked: Arc<Revocations>) -> Result<Arc<rustls::ServerConfig>, TrustError> {
        let verifier = NodeClientVerifier::new(self.roots()?, revoked)?;
        let cfg = rustls::ServerConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        Ok(Arc::new(cfg))
    }

    /// The client side: presents this node's certificate and accepts only a
    /// server whose certificate chains to the CA and is not revoked.
    pub fn client_config(self: &Arc<Self>, revoked: Arc<Revocations>) -> Result<rustls::ClientConfig, TrustError> {
        let verifier = NodeServerVerifier::new(self.roots()?, revoked)?;
        Ok(rustls::ClientConfig::builder_with_provider(crate::provider())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(Resolver(self.clone()))))
    }
}

/// Hands rustls whatever certificate is current at each handshake.
#[derive(Debug)]
struct Resolver(Arc<Identity>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
    fn has_certs(&self) -> bool {
        true
    }
}
