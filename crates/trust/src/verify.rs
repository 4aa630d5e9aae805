//! What a handshake between nodes checks beyond rustls' defaults: the
//! peer's certificate chains to the cluster CA, is valid for `wharf-node`
//! (clients dial addresses, so the usual name check cannot apply), and
//! names no node on the revocation list (nodes removed by `wharf node rm`).
//! Also the joining node's check: the server's CA has the fingerprint its
//! token carries.

use crate::ca::{fingerprint, node_name, NODE_NAME};
use arc_swap::ArcSwap;
use model::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Removed nodes, whose certificates are refused for good; the node keeps
/// it in step with the replicated state.
#[derive(Debug, Default)]
pub struct Revocations(ArcSwap<BTreeSet<NodeId>>);

impl Revocations {
    pub fn set(&self, nodes: &BTreeSet<NodeId>) {
        if **self.0.load() != *nodes {
            self.0.store(Arc::new(nodes.clone()));
        }
    }

    /// The revoked node a certificate names, if any.
    pub fn revoked(&self, cert: &CertificateDer<'_>) -> Option<NodeId> {
        self.0.load().iter().copied().find(|id| names_node(cert, *id))
    }
}

/// Whether `cert` is valid for node `id`'s own name.
fn names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(name) = ServerName::try_from(node_name(id)) else { return false };
    webpki::EndEntityCert::try_from(cert).is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The verified certificate a peer presented on the RPC port; the server
/// puts it in each request's extensions (absent: the peer presented none).
#[derive(Debug, Clone)]
pub struct PeerCert(pub CertificateDer<'static>);

impl PeerCert {
    /// Whether the certificate is node `id`'s (renewals are only for
    /// oneself).
    pub fn names_node(&self, id: NodeId) -> bool {
        names_node(&self.0, id)
    }
}

fn node_name_ref() -> Result<ServerName<'static>, Error> {
    ServerName::try_from(NODE_NAME).map_err(|e| Error::General(e.to_string()))
}

fn revoked_error() -> Error {
    Error::InvalidCertificate(CertificateError::Revoked)
}

#[derive(Debug)]
pub(crate) struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    revoked: Arc<Revocations>,
}

impl NodeServerVerifier {
    pub(crate) fn new(roots: Arc<RootCertStore>, revoked: Arc<Revocations>) -> Result<Self, crate::TrustError> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, crate::provider())
            .build()
            .map_err(|e| crate::TrustError::Tls(Error::General(e.to_string())))?;
        Ok(NodeServerVerifier { inner, revoked })
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &node_name_ref()?, ocsp, now)?;
        match self.revoked.revoked(end_entity) {
            Some(_) => Err(revoked_error()),
            None => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
pub(crate) struct NodeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<Revocations>,
}

impl NodeClientVerifier {
    pub(crate) fn new(roots: Arc<RootCertStore>, revoked: Arc<Revocations>) -> Result<Self, crate::TrustError> {
        // Unauthenticated clients get through the handshake only to reach
        // the join exchange; the server refuses them everything else.
        let inner = WebPkiClientVerifier::builder_with_provider(roots, crate::provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| crate::TrustError::Tls(Error::General(e.to_string())))?;
        Ok(NodeClientVerifier { inner, revoked })
    }
}

impl ClientCertVerifier for NodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match self.revoked.revoked(end_entity) {
            Some(_) => Err(revoked_error()),
            None => Ok(ClientCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A joining node's check of the node it reaches: the server must send the
/// CA whose fingerprint the token carries, and its certificate must chain to
/// it. Nothing is sent before this passes.
#[derive(Debug)]
pub struct PinnedCa {
    fingerprint: String,
    ca: Mutex<Option<CertificateDer<'static>>>,
    mismatch: std::sync::atomic::AtomicBool,
}

impl PinnedCa {
    pub fn new(fingerprint: &str) -> PinnedCa {
        PinnedCa { fingerprint: fingerprint.to_string(), ca: Mutex::new(None), mismatch: Default::default() }
    }

    /// Whether a server showed a CA other than the pinned one.
    pub fn mismatched(&self) -> bool {
        self.mismatch.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c) == self.fingerprint) else {
            self.mismatch.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(Error::General("the cluster's CA does not match the join token's fingerprint".into()));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .map_err(|e| Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], &node_name_ref()?, ocsp, now)?;
        if let Ok(mut slot) = self.ca.lock() {
            *slot = Some(ca.clone().into_owned());
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = crate::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(m, c, d, &algs)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algs = crate::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(m, c, d, &algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::provider().signature_verification_algorithms.supported_schemes()
    }
}
