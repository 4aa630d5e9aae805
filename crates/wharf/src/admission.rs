//! How a node gets and keeps its place in the cluster's trust: the first
//! node makes the CA and records it in the replicated state; a new node
//! trades its join token's secret for a certificate (`/cluster/certificate`,
//! after checking the server's CA against the token's fingerprint); every
//! node renews its certificate at two thirds of its lifetime over mutual TLS
//! (`/cluster/renew`); the revocation list (removed nodes) and the join
//! token file follow the state.

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use model::{ClusterTrust, NodeId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use store::{Command, Store};
use trust::{Ca, Identity, Issued, JoinToken, NodeKey, PeerCert, Revocations};

/// Where a joining node trades its token's secret for a certificate: the
/// only path of the RPC port a client without a certificate reaches.
pub const JOIN_PATH: &str = "/cluster/certificate";
const RENEW_PATH: &str = "/cluster/renew";
/// The join token, readable by the operator, in the data dir.
pub const TOKEN_FILE: &str = "join-token";
/// The CA made by the first node, until the replicated state holds it.
const PENDING_TRUST: &str = "pending-trust.json";
/// Bounds on a requested certificate lifetime.
const LIFETIME_MIN: Duration = Duration::from_secs(6);
const LIFETIME_MAX: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

#[derive(Debug, Serialize, Deserialize)]
struct CertRequest {
    node: NodeId,
    /// The uncompressed P-256 point of the key the node made.
    public_key: Vec<u8>,
    /// The join token's secret (absent on a renewal: the peer's certificate
    /// says who asks).
    #[serde(default)]
    secret: Option<String>,
    lifetime_secs: u64,
}

/// What a node is handed when it is admitted. Later additions (such as the
/// cluster's data key for the secret store) are new optional fields, so old
/// and new nodes still understand each other.
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinAnswer {
    pub ca_pem: String,
    pub issued: Issued,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "message": message.into() }))).into_response()
}

/// `/cluster/certificate` and `/cluster/renew`, served on the RPC port.
pub fn router(store: Arc<Store>) -> Router {
    Router::new().route(JOIN_PATH, post(certificate)).route(RENEW_PATH, post(renew)).with_state(store)
}

fn issue(store: &Store, req: &CertRequest) -> Response {
    let Some(trust) = store.read(|s| s.trust.clone()) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "this node does not know the cluster's CA yet; try again");
    };
    if store.read(|s| s.removed_nodes.contains(&req.node)) {
        return refuse(StatusCode::FORBIDDEN, format!("node {} was removed from the cluster for good", req.node));
    }
    let lifetime = Duration::from_secs(req.lifetime_secs).clamp(LIFETIME_MIN, LIFETIME_MAX);
    let issued = Ca::from_trust(&trust).and_then(|ca| ca.issue(req.node, &req.public_key, lifetime, SystemTime::now()));
    match issued {
        Ok(issued) => Json(JoinAnswer { ca_pem: trust.ca_cert_pem, issued }).into_response(),
        Err(trust::TrustError::PublicKey) => {
            refuse(StatusCode::BAD_REQUEST, "public_key: not an uncompressed P-256 point")
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn certificate(State(store): State<Arc<Store>>, Json(req): Json<CertRequest>) -> Response {
    let Some(trust) = store.read(|s| s.trust.clone()) else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "this node does not know the cluster's CA yet; try again");
    };
    let valid = JoinToken::of(&trust).is_ok_and(|t| req.secret.as_deref().is_some_and(|s| t.secret_is(s)));
    if !valid {
        tracing::warn!(node = %req.node, "refused a join: wrong or rotated join token");
        return refuse(
            StatusCode::FORBIDDEN,
            "the join token is not valid (wrong, or rotated since): get the current one with `wharf token show`",
        );
    }
    tracing::info!(node = %req.node, "issued a certificate to a joining node");
    issue(&store, &req)
}

async fn renew(
    State(store): State<Arc<Store>>,
    peer: Option<Extension<PeerCert>>,
    Json(req): Json<CertRequest>,
) -> Response {
    // The RPC server lets no certificate-less client this far; a node may
    // only renew its own certificate.
    if !peer.is_some_and(|Extension(p)| p.names_node(req.node)) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!("a certificate for node {} is renewed only by that node", req.node),
        );
    }
    issue(&store, &req)
}

/// The first node of a new cluster: makes the CA and its own certificate,
/// and keeps the CA in `tls/` until the replicated state holds it.
pub fn bootstrap_identity(tls: &Path, node: NodeId, lifetime: Duration) -> anyhow::Result<Arc<Identity>> {
    let now = SystemTime::now();
    let (ca, trust) = Ca::generate(now).context("making the cluster CA")?;
    let key = NodeKey::generate()?;
    let issued = ca.issue(node, key.public_raw(), lifetime, now)?;
    std::fs::create_dir_all(tls).with_context(|| format!("creating {}", tls.display()))?;
    write_private(&tls.join(PENDING_TRUST), &serde_json::to_vec(&trust)?)?;
    let id = Identity::install(tls, node, &trust.ca_cert_pem, &key, &issued)?;
    tracing::info!(fingerprint = %id.ca_fingerprint(), "made the cluster CA");
    Ok(id)
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Once this node can commit: records the CA it made (if any is pending),
/// prints the join token the first time, and forgets the local copy.
pub async fn record_pending_trust(store: &Store, tls: &Path, rpc: &str) -> anyhow::Result<()> {
    let path = tls.join(PENDING_TRUST);
    let Ok(bytes) = std::fs::read(&path) else { return Ok(()) };
    let trust: ClusterTrust = serde_json::from_slice(&bytes).context("reading the pending cluster CA")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store.propose(Command::InitTrust(trust.clone())).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "recording the cluster CA; waiting for a leader");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("recording the cluster CA"),
        }
    }
    if let Some(t) = store.read(|s| s.trust.clone()).and_then(|t| JoinToken::of(&t).ok()) {
        // Swarm's `init` prints the join command; the token is also in the
        // data dir and behind `wharf token show`.
        println!("To add a node to this cluster: wharf agent --join {rpc} --join-token {t}");
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// A new node's certificate: reaches a member through `seeds`, checks its
/// CA against the token's fingerprint before sending anything, then trades
/// the token's secret for a certificate on a key it made itself.
pub async fn join_identity(
    seeds: &[String],
    token: &JoinToken,
    node: NodeId,
    local: Option<std::net::IpAddr>,
    lifetime: Duration,
    tls: &Path,
) -> anyhow::Result<Arc<Identity>> {
    let (client, pin) = trust::pinned_client(local, &token.fingerprint)?;
    let key = NodeKey::generate()?;
    let req = CertRequest {
        node,
        public_key: key.public_raw().to_vec(),
        secret: Some(token.secret.clone()),
        lifetime_secs: lifetime.as_secs(),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no address given");
    for seed in seeds.iter().cycle() {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let sent = client.http().post(client.url(seed, JOIN_PATH)).timeout(Duration::from_secs(10)).json(&req).send();
        let resp = match sent.await {
            Ok(r) => r,
            Err(_) if pin.mismatched() => anyhow::bail!(
                "--join-token: {seed} belongs to another cluster: its CA does not match the token's fingerprint \
                 (nothing was sent to it)"
            ),
            Err(e) => {
                last = format!("{seed}: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let status = resp.status();
        if status.is_success() {
            let answer: JoinAnswer = resp.json().await.with_context(|| format!("{seed}: reading its answer"))?;
            use rustls::pki_types::pem::PemObject;
            let der = rustls::pki_types::CertificateDer::from_pem_slice(answer.ca_pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("{seed}: the CA it sent is not a PEM certificate: {e}"))?;
            if trust::fingerprint(&der) != token.fingerprint {
                anyhow::bail!("--join-token: {seed} sent a CA that does not match the token's fingerprint");
            }
            return Ok(Identity::install(tls, node, &answer.ca_pem, &key, &answer.issued)?);
        }
        let message = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| status.to_string());
        if status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST {
            anyhow::bail!("--join-token: {seed} refused this node: {message}");
        }
        last = format!("{seed}: {message}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("--join: no member gave this node a certificate within 30 s (last: {last})")
}

/// Keeps the revocation list in step with the removed nodes and the join
/// token file with the current token.
pub async fn follow(store: Arc<Store>, revoked: Arc<Revocations>, data_dir: PathBuf) {
    let mut feed = store.subscribe();
    let mut written: Option<String> = None;
    loop {
        let (removed, trust) = store.read(|s| (s.removed_nodes.clone(), s.trust.clone()));
        revoked.set(&removed);
        if let Some(token) = trust.and_then(|t| JoinToken::of(&t).ok()).map(|t| t.to_string()) {
            if written.as_deref() != Some(token.as_str()) {
                match write_private(&data_dir.join(TOKEN_FILE), format!("{token}\n").as_bytes()) {
                    Ok(()) => written = Some(token),
                    Err(e) => tracing::warn!(error = %e, "cannot write the join token file"),
                }
            }
        }
        if feed.next().await.is_none() {
            return;
        }
    }
}

/// Renews this node's certificate at two thirds of its lifetime, from a
/// member over mutual TLS (from its own replica when it leads or when the
/// certificate has run out), without a restart: the next handshakes use it.
pub async fn renew_loop(store: Arc<Store>, identity: Arc<Identity>, lifetime: Duration) {
    loop {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let due = identity.renew_at();
        if now < due {
            tokio::time::sleep(Duration::from_secs(due - now).min(Duration::from_secs(3600))).await;
            continue;
        }
        match renew_once(&store, &identity, lifetime, now).await {
            Ok(via) => tracing::info!(via, not_after = identity.not_after(), "renewed this node's certificate"),
            Err(e) => {
                tracing::warn!(error = %e, "could not renew this node's certificate; trying again");
                tokio::time::sleep((lifetime / 30).clamp(Duration::from_millis(500), Duration::from_secs(60))).await;
            }
        }
    }
}

async fn renew_once(store: &Store, identity: &Identity, lifetime: Duration, now: u64) -> anyhow::Result<&'static str> {
    let key = NodeKey::generate()?;
    let req = CertRequest {
        node: identity.node(),
        public_key: key.public_raw().to_vec(),
        secret: None,
        lifetime_secs: lifetime.as_secs(),
    };
    let leader = store.leadership().borrow().clone();
    let expired = now >= identity.not_after();
    let issued = match leader.leader_rpc {
        Some(addr) if !leader.is_self && !expired => {
            let client = store.rpc_client();
            let resp = client
                .http()
                .post(client.url(&addr, RENEW_PATH))
                .timeout(Duration::from_secs(10))
                .json(&req)
                .send()
                .await?;
            if !resp.status().is_success() {
                anyhow::bail!("the leader answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
            }
            let answer: JoinAnswer = resp.json().await?;
            identity.renew(&key, &answer.issued)?;
            return Ok("leader");
        }
        _ => {
            let trust = store.read(|s| s.trust.clone()).context("the cluster's CA is not in this node's state yet")?;
            Ca::from_trust(&trust)?.issue(identity.node(), key.public_raw(), lifetime, SystemTime::now())?
        }
    };
    identity.renew(&key, &issued)?;
    Ok("own replica")
}
