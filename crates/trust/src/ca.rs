//! The cluster CA: made once by the first node, kept in the replicated state
//! (`model::ClusterTrust`) so any voter can issue node certificates, and
//! identified by the SHA-256 fingerprint of its certificate.

use crate::{hex, TrustError};
use model::{ClusterTrust, NodeId};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use std::time::{Duration, SystemTime};

/// The name every node certificate is valid for; a client checks a node's
/// certificate against it (it dials addresses, not names).
pub const NODE_NAME: &str = "wharf-node";

/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Issued certificates start this much in the past (clocks differ a little).
const BACKDATE: Duration = Duration::from_secs(300);

/// The name only node `id`'s certificates are valid for.
pub fn node_name(id: NodeId) -> String {
    format!("n{}.node.wharf", id.0)
}

/// Lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

pub struct Ca {
    /// Rebuilt from the stored name and key: signing needs only its subject
    /// and key identifier, which are the same as the stored certificate's.
    cert: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
}

/// A certificate just issued, with its validity (kept beside it: nothing
/// here parses certificates back).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Issued {
    pub cert_pem: String,
    /// Unix seconds: when it was issued (the certificate itself is valid
    /// from `BACKDATE` earlier, for clocks a little behind) and when it
    /// expires.
    pub not_before: u64,
    pub not_after: u64,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "wharf");
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Ca {
    /// A new CA, as the first node makes it; `suffix` tells clusters apart in
    /// its name (the fingerprint is what identifies it).
    pub fn generate(now: SystemTime) -> Result<(Ca, ClusterTrust), TrustError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let name = format!("wharf cluster CA {}", &crate::new_secret()?[..8]);
        let mut params = ca_params(&name);
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let trust = ClusterTrust {
            ca_name: name,
            ca_cert_pem: cert_pem.clone(),
            ca_key_pem: key.serialize_pem(),
            join_secret: crate::new_secret()?,
        };
        Ok((Ca { cert, key, cert_pem }, trust))
    }

    /// The CA recorded in the replicated state.
    pub fn from_trust(t: &ClusterTrust) -> Result<Ca, TrustError> {
        let key = KeyPair::from_pem(&t.ca_key_pem)?;
        let cert = ca_params(&t.ca_name).self_signed(&key)?;
        Ok(Ca { cert, key, cert_pem: t.ca_cert_pem.clone() })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for node `node`'s key (`public_key`: the uncompressed
    /// P-256 point the node sent), valid for `lifetime` from `now`, for both
    /// ends of a connection.
    pub fn issue(
        &self,
        node: NodeId,
        public_key: &[u8],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Issued, TrustError> {
        if public_key.len() != 65 || public_key.first() != Some(&4) {
            return Err(TrustError::PublicKey);
        }
        let mut p = CertificateParams::new(vec![NODE_NAME.to_string(), node_name(node)])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "wharf");
        dn.push(DnType::CommonName, format!("node {}", node.0));
        p.distinguished_name = dn;
        p.subject_alt_names.retain(|s| matches!(s, SanType::DnsName(_)));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let not_before = now - BACKDATE;
        let not_after = now + lifetime;
        p.not_before = not_before.into();
        p.not_after = not_after.into();
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
            .map_err(|e| TrustError::Random(e.to_string()))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(serial.to_vec().into());
        let cert = p.signed_by(&RawP256(public_key), &self.cert, &self.key)?;
        Ok(Issued { cert_pem: cert.pem(), not_before: unix(now), not_after: unix(not_after) })
    }
}

/// A P-256 public key as sent by a joining node.
struct RawP256<'a>(&'a [u8]);

impl PublicKeyData for RawP256<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}
