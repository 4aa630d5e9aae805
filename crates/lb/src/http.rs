//! The HTTP front: one listener per node that routes each request by its
//! `Host` (and path prefix) to the app labelled with that virtual host
//! (`HAPROXY_0_VHOST` / `wharf.vhost`, `HAPROXY_0_PATH` / `wharf.path`),
//! over pooled keep-alive connections to the app's up tasks. 404 for an
//! unknown host, 503 naming the app when it has no up task, 502 when every
//! backend tried failed.

use crate::table::Lb;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, hyper::Error>;
type Upstream = Client<HttpConnector, Full<Bytes>>;

/// Request bodies are buffered (so a request can go to another backend
/// when one refuses); larger ones get 413.
const MAX_BODY: usize = 16 << 20;
const TRIES: usize = 3;

/// Serves the HTTP front on `listener` until it fails.
pub async fn serve(lb: Arc<Lb>, listener: TcpListener) -> std::io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(lb.cfg.connect_timeout));
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector);
    let port = listener.local_addr()?.port();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP LB: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (lb, client) = (lb.clone(), client.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(lb.clone(), client.clone(), peer, port, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                // A client that never finishes its headers is cut off.
                .header_read_timeout(Duration::from_secs(10))
                // Larger headers get 431 from hyper.
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = conn.await;
        });
    }
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg + "\n")).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Hop-by-hop headers are the connection's, not the request's (RFC 9110 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn idempotent(m: &hyper::Method) -> bool {
    use hyper::Method;
    [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE].contains(m)
}

async fn handle(
    lb: Arc<Lb>,
    client: Upstream,
    peer: SocketAddr,
    port: u16,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let name =
        host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host.as_str(), |(h, _)| h);
    let routes = lb.routes();
    let Some(route) = routes.vhost(name, req.uri().path()) else {
        return Ok(text(StatusCode::NOT_FOUND, format!("no app serves host '{name}'")));
    };
    let service = route.service.clone();
    if service.backends.is_empty() {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, format!("{} has no healthy task", service.app)));
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or broken".into())),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let mut tried = Vec::new();
    for _ in 0..TRIES {
        let Some(b) = service.pick(&tried) else { break };
        tried.push(b.addr);
        let mut out = Request::builder().method(parts.method.clone()).uri(format!("http://{}{path}", b.addr));
        for (k, v) in parts.headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
            out = out.header(k, v);
        }
        let xff = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        out = out
            .header("x-forwarded-for", xff)
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-port", port.to_string());
        let Ok(out) = out.body(Full::new(body.clone())) else {
            return Ok(text(StatusCode::BAD_REQUEST, "request cannot be forwarded".into()));
        };
        b.active.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = client.request(out).await;
        b.active.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(resp) => {
                b.requests.fetch_add(1, Ordering::Relaxed);
                b.latency_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                let (mut rp, rb) = resp.into_parts();
                // The client's connection is ours, not the backend's.
                rp.version = parts.version;
                let hop: Vec<HeaderName> = rp.headers.keys().filter(|k| hop_by_hop(k)).cloned().collect();
                for k in hop {
                    rp.headers.remove(k);
                }
                return Ok(Response::from_parts(rp, rb.boxed()));
            }
            // Never reached the backend: another one may take it.
            Err(e) if e.is_connect() => b.mark_down(lb.cfg.down_for),
            // The backend closed the connection under the request (a task
            // on its way out): a request that is safe to repeat goes to
            // another backend, as HAProxy's `retry-on` does.
            Err(e) if idempotent(&parts.method) => {
                tracing::debug!(backend = %b.addr, error = %e, "HTTP LB: retrying an idempotent request elsewhere");
                b.mark_down(lb.cfg.down_for);
            }
            Err(e) => {
                b.errors.fetch_add(1, Ordering::Relaxed);
                return Ok(text(StatusCode::BAD_GATEWAY, format!("{}: the task did not answer: {e}", service.app)));
            }
        }
    }
    Ok(text(StatusCode::BAD_GATEWAY, format!("{}: no task took the request", service.app)))
}
