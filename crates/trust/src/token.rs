//! Join tokens in Swarm's shape: `WHARF-1-<CA fingerprint>-<secret>`. The
//! fingerprint lets a new node check the cluster it reaches before it sends
//! anything; the secret is what it trades for a certificate.

use crate::{hex, unhex, TrustError};
use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "WHARF-1-";

#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA certificate.
    pub fingerprint: String,
    pub secret: String,
}

impl JoinToken {
    /// Whether `secret` is this token's (compared by digest, so the time taken
    /// says nothing about how much of it matched).
    pub fn secret_is(&self, secret: &str) -> bool {
        let d = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        d(&self.secret).as_ref() == d(secret).as_ref()
    }
}

impl JoinToken {
    /// The token of the cluster whose trust the replicated state holds.
    pub fn of(trust: &model::ClusterTrust) -> Result<JoinToken, TrustError> {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(trust.ca_cert_pem.as_bytes())
            .map_err(|e| TrustError::Pem { what: "the CA certificate", reason: e.to_string() })?;
        Ok(JoinToken { fingerprint: crate::fingerprint(&der), secret: trust.join_secret.clone() })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.fingerprint, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-…", self.fingerprint)
    }
}

impl FromStr for JoinToken {
    type Err = TrustError;

    fn from_str(s: &str) -> Result<JoinToken, TrustError> {
        let rest = s.trim().strip_prefix(PREFIX).ok_or(TrustError::Token("it does not start with WHARF-1-"))?;
        let (fp, secret) = rest.split_once('-').ok_or(TrustError::Token("no secret after the fingerprint"))?;
        if fp.len() != 64 || unhex(fp).is_none() || fp.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(TrustError::Token("the CA fingerprint is not 64 lowercase hex digits"));
        }
        if secret.len() < 16 || !secret.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(TrustError::Token("the secret is too short or has characters other than letters and digits"));
        }
        Ok(JoinToken { fingerprint: fp.to_string(), secret: secret.to_string() })
    }
}

/// A new random secret (128 bits, hex) from the system's secure source.
pub fn new_secret() -> Result<String, TrustError> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|e| TrustError::Random(e.to_string()))?;
    Ok(hex(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_written_and_bad_ones_say_why() {
        let t = JoinToken { fingerprint: "ab".repeat(32), secret: new_secret().expect("secret") };
        let back: JoinToken = t.to_string().parse().expect("parse");
        assert_eq!(back, t);
        assert!(back.secret_is(&t.secret));
        assert!(!back.secret_is("0123456789abcdef0123456789abcdef"));
        for (bad, why) in [
            ("SWMTKN-1-x-y", "does not start"),
            ("WHARF-1-abc", "no secret"),
            (&format!("WHARF-1-{}-0123456789abcdef", "AB".repeat(32)), "64 lowercase hex"),
            (&format!("WHARF-1-{}-short", "ab".repeat(32)), "too short"),
        ] {
            let e = bad.parse::<JoinToken>().expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(!format!("{t:?}").contains(&t.secret));
    }
}
