//! The one HTTP client for node-to-node calls (Raft, forwarded proposals,
//! joins, heartbeats, log and file proxying). It carries this node's
//! identity (mTLS) unless the node runs with `--insecure-rpc`, and leaves
//! from the node's advertised address so peers and firewalls see who talks.

use crate::identity::Identity;
use crate::verify::{PinnedCa, Revocations};
use crate::TrustError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    scheme: &'static str,
}

fn builder(local: Option<IpAddr>) -> reqwest::ClientBuilder {
    reqwest::Client::builder().connect_timeout(Duration::from_millis(500)).tcp_nodelay(true).local_address(local)
}

impl RpcClient {
    /// Plain HTTP: only for `--insecure-rpc` (benchmarks) and store tests.
    pub fn plain(local: Option<IpAddr>) -> Result<RpcClient, TrustError> {
        Ok(RpcClient { http: builder(local).build()?, scheme: "http" })
    }

    /// Mutually authenticated TLS with this node's identity.
    pub fn mutual(
        local: Option<IpAddr>,
        identity: &Arc<Identity>,
        revoked: Arc<Revocations>,
    ) -> Result<RpcClient, TrustError> {
        let tls = identity.client_config(revoked)?;
        Ok(RpcClient { http: builder(local).use_preconfigured_tls(tls).build()?, scheme: "https" })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `scheme://addr/path` (`path` starts with `/`).
    pub fn url(&self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.scheme)
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == "https"
    }
}

/// A joining node's client: no identity yet, and it talks only to a node
/// whose CA has `fingerprint` (see `PinnedCa`).
pub fn pinned_client(local: Option<IpAddr>, fingerprint: &str) -> Result<(RpcClient, Arc<PinnedCa>), TrustError> {
    let pin = Arc::new(PinnedCa::new(fingerprint));
    let tls = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(pin.clone())
        .with_no_client_auth();
    let http = builder(local).use_preconfigured_tls(tls).build()?;
    Ok((RpcClient { http, scheme: "https" }, pin))
}
