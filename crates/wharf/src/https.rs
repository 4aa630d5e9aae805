//! HTTPS for the HTTP API (`--https-cert`, `--https-key`): rustls with the
//! ring provider in front of the same router, so everything the node serves
//! on its HTTP port (API, UI, metrics, DNS's and the LB's routes) is behind
//! TLS and behind the same authentication layer. The same accept loop serves
//! the RPC port with mutual TLS (`Peers::NodesOnly`).

use anyhow::Context;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The server's TLS settings from a PEM certificate chain and its PEM key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .with_context(|| format!("--https-cert: cannot read a PEM certificate chain from {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("--https-cert: {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--https-key: cannot read a PEM private key from {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("--https-cert/--https-key: the key does not fit the certificate, or is of an unsupported kind")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Who may send requests once the handshake is done.
#[derive(Clone, Copy)]
pub enum Peers {
    /// Anyone (the HTTP API: its own layer authenticates callers).
    Anyone,
    /// Only peers that presented a certificate the server's verifier
    /// accepted (cluster members), except on these paths (the join exchange).
    NodesOnly { open: &'static [&'static str] },
}

/// Serves `app` over TLS on `listener` until `shutdown` completes. A peer's
/// verified certificate reaches handlers as a `trust::PeerCert` extension.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Arc<rustls::ServerConfig>,
    peers: Peers,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "HTTPS: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // As `axum::serve` does: without it, small answers split into TLS
        // records wait on Nagle and the peer's delayed ACK (40 ms each).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TLS: cannot set TCP_NODELAY");
        }
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that never finishes its handshake holds nothing long.
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "HTTPS: handshake failed"),
                Err(_) => return tracing::debug!(%peer, "HTTPS: handshake timed out"),
            };
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
            let peer_cert = cert.map(trust::PeerCert);
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let refused = match (peers, &peer_cert) {
                    (Peers::NodesOnly { open }, None) => !open.contains(&req.uri().path()),
                    _ => false,
                };
                if let Some(c) = &peer_cert {
                    req.extensions_mut().insert(c.clone());
                }
                async move {
                    if refused {
                        let body = r#"{"message":"this port serves cluster members only: present a certificate issued by the cluster CA"}"#;
                        let mut r = axum::response::IntoResponse::into_response((
                            axum::http::StatusCode::FORBIDDEN,
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        ));
                        r.headers_mut()
                            .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                        return Ok(r);
                    }
                    tower::ServiceExt::oneshot(app, req).await
                }
            });
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection_with_upgrades(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "HTTPS: connection ended");
            }
        });
    }
}
