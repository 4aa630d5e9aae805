//! The HTTP front: one listener per node that routes each request by its
//! `Host` (and path prefix) to the app labelled with that virtual host
//! (`HAPROXY_0_VHOST` / `wharf.vhost`, `HAPROXY_0_PATH` / `wharf.path`),
//! over pooled keep-alive connections to the app's up tasks. 404 for an
//! unknown host, 503 naming the app when it has no up task, 502 when every
//! backend tried failed.

use crate::pool::{Pool, SendError, Sender};
use crate::table::{Backend, Lb};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Request bodies are buffered (so a request can go to another backend
/// when one refuses); larger ones get 413.
const MAX_BODY: usize = 16 << 20;
const TRIES: usize = 3;

/// Serves the HTTP front on `listener` until it fails: a few threads, each
/// a single-threaded runtime with its own pool of backend connections (see
/// `l4` for why). Connections are accepted here and dealt to the threads
/// in turn: threads accepting from one shared listener left nearly every
/// connection to whichever woke first, and so one core doing all the work.
pub async fn serve(lb: Arc<Lb>, listener: TcpListener) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let listener = listener.into_std()?;
    listener.set_nonblocking(true)?;
    // SAFETY: the `AsyncFd` owns the listener, whose descriptor stays open
    // and the same until the `AsyncFd` drops it.
    let listener =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE)? };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<()>>();
    let mut threads = Vec::new();
    for i in 0..crate::l4::threads() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
        threads.push(tx);
        let (lb, done) = (lb.clone(), done_tx.clone());
        std::thread::Builder::new().name(format!("http-lb-{i}")).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(serve_here(lb, port, rx)));
            let _ = done.send(result);
        })?;
    }
    drop(done_tx);
    let mut next = 0;
    loop {
        tokio::select! {
            ended = done_rx.recv() => return ended.unwrap_or(Ok(())),
            accepted = listener.readable() => {
                let mut ready = accepted?;
                // Every connection waiting, before waiting again.
                loop {
                    match ready.try_io(|l| l.get_ref().accept()) {
                        Ok(Ok((stream, peer))) => {
                            if threads[next % threads.len()].send((stream, peer)).is_err() {
                                // That thread ended; `done_rx` says why.
                                break;
                            }
                            next = next.wrapping_add(1);
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "HTTP LB: accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            break;
                        }
                        // Would block: readiness cleared.
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

/// One thread's share: serves the connections `serve` deals it.
async fn serve_here(
    lb: Arc<Lb>,
    port: u16,
    mut accepted: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
) {
    let front = Front::new(lb, port);
    let pool = front.pool.clone();
    let sweeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::pool::IDLE / 3).await;
            pool.sweep();
        }
    });
    while let Some((stream, peer)) = accepted.recv().await {
        let stream = match stream.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(stream)) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP LB: cannot serve an accepted connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(front.clone().serve_connection(stream, peer));
    }
    sweeper.abort();
}

/// What one listener thread serves a client connection with.
#[derive(Clone)]
pub struct Front {
    lb: Arc<Lb>,
    pool: Arc<Pool>,
    /// The listener's port, for `X-Forwarded-Port`.
    port: HeaderValue,
}

/// One client connection's context, shared by its requests.
struct Conn {
    lb: Arc<Lb>,
    pool: Arc<Pool>,
    /// The client's address as `X-Forwarded-For` wants it.
    peer: HeaderValue,
    port: HeaderValue,
}

impl Front {
    /// A front for `lb` with a pool of its own, answering as if it listened
    /// on `port` (for tests and the fuzz target `fuzz/fuzz_targets/lb_http.rs`;
    /// `serve` makes one per thread).
    pub fn new(lb: Arc<Lb>, port: u16) -> Front {
        let pool = Arc::new(Pool::new(lb.cfg.connect_timeout));
        Front { lb, pool, port: HeaderValue::from(port) }
    }

    /// Idle backend connections held in this front's pool.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle()
    }

    /// Serves HTTP/1.1 on one client connection from `peer` until it ends:
    /// hyper reads each request head, `handle` routes it.
    pub async fn serve_connection<S>(self, io: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let Front { lb, pool, port } = self;
        // Made once per connection rather than once per request.
        let Ok(peer) = HeaderValue::try_from(peer.ip().to_string()) else { return };
        let conn = Arc::new(Conn { lb, pool, peer, port });
        let svc = hyper::service::service_fn(move |req| handle(conn.clone(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            // A client that never finishes its headers is cut off.
            .header_read_timeout(Duration::from_secs(10))
            // Larger headers get 431 from hyper.
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(io), svc)
            .with_upgrades();
        let _ = conn.await;
    }
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(Body::Local(Full::new(Bytes::from(msg + "\n"))));
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

async fn handle(c: Arc<Conn>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let host =
        req.headers().get(HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()));
    let host = host.unwrap_or_default();
    let name = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let routes = c.lb.routes();
    let Some(route) = routes.vhost(name, req.uri().path()) else {
        return Ok(text(StatusCode::NOT_FOUND, format!("no app serves host '{name}'")));
    };
    let service = route.service.clone();
    drop(routes);
    if service.backends.is_empty() {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, format!("{} has no healthy task", service.app)));
    }
    if wants_upgrade(req.headers()) {
        return Ok(upgrade(&c.lb, &service, &c.peer, c.port.clone(), req).await);
    }
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large or broken".into())),
    };
    forwarded_headers(&mut parts.headers, &c.peer, c.port.clone(), false);
    // Backends get origin-form (`/path?query`), whatever form the client used.
    let uri = if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
        std::mem::take(&mut parts.uri)
    } else {
        let path = parts.uri.path_and_query().cloned();
        let mut uri = hyper::http::uri::Parts::default();
        uri.path_and_query = path.or_else(|| Some(hyper::http::uri::PathAndQuery::from_static("/")));
        match hyper::Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(_) => return Ok(text(StatusCode::BAD_REQUEST, "request cannot be forwarded".into())),
        }
    };
    // An HTTP/1.0 client may send no `Host`; the backend gets its own address.
    let has_host = parts.headers.contains_key(HOST);
    let mut tried = [NOWHERE; TRIES];
    // No more tries than backends: the last one takes the headers, earlier
    // ones copy them (one backend: no copy at all).
    let tries = TRIES.min(service.backends.len());
    for attempt in 0..tries {
        let Some(b) = service.pick(&tried[..attempt]) else { break };
        tried[attempt] = b.addr;
        let mut out = Request::new(Full::new(body.clone()));
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri.clone();
        *out.headers_mut() =
            if attempt + 1 == tries { std::mem::take(&mut parts.headers) } else { parts.headers.clone() };
        if !has_host {
            if let Ok(h) = HeaderValue::try_from(b.addr.to_string()) {
                out.headers_mut().insert(HOST, h);
            }
        }
        b.active.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = c.pool.send(b.addr, out).await;
        b.active.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok((resp, sender)) => {
                b.requests.fetch_add(1, Ordering::Relaxed);
                b.latency_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                let (mut rp, rb) = resp.into_parts();
                // The client's connection is ours, not the backend's.
                rp.version = parts.version;
                strip_hop_by_hop(&mut rp.headers);
                if rp.status.is_server_error() {
                    b.errors.fetch_add(1, Ordering::Relaxed);
                }
                let counted = Counted { inner: rb, backend: b, conn: Some((sender, c.pool.clone())) };
                return Ok(Response::from_parts(rp, Body::Backend(counted)));
            }
            // Never reached the backend: another one may take it.
            Err(SendError::Unsent(_)) => b.mark_down(c.lb.cfg.down_for),
            // The backend closed the connection under the request (a task
            // on its way out): a request that is safe to repeat goes to
            // another backend, as HAProxy's `retry-on` does.
            Err(e) if idempotent(&parts.method) => {
                tracing::debug!(backend = %b.addr, error = %e, "HTTP LB: retrying an idempotent request elsewhere");
                b.mark_down(c.lb.cfg.down_for);
            }
            Err(e) => {
                b.errors.fetch_add(1, Ordering::Relaxed);
                return Ok(text(StatusCode::BAD_GATEWAY, format!("{}: the task did not answer: {e}", service.app)));
            }
        }
    }
    Ok(text(StatusCode::BAD_GATEWAY, format!("{}: no task took the request", service.app)))
}

/// A placeholder in the list of backends tried (never a backend's address).
const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Drops hop-by-hop headers (and those `Connection` names), then adds
/// `X-Forwarded-For/-Proto/-Port`; `keep_upgrade` keeps `Connection` and
/// `Upgrade` for a websocket handshake.
fn forwarded_headers(headers: &mut HeaderMap, peer: &HeaderValue, port: HeaderValue, keep_upgrade: bool) {
    let upgrade = headers.get(UPGRADE).cloned();
    strip_hop_by_hop(headers);
    if keep_upgrade {
        if let Some(u) = upgrade {
            headers.insert(UPGRADE, u);
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => HeaderValue::try_from(format!("{prior}, {}", peer.to_str().unwrap_or_default())).ok(),
        None => Some(peer.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), xff);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_PORT.clone(), port);
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    if headers.keys().any(hop_by_hop) {
        let hop: Vec<HeaderName> = headers.keys().filter(|k| hop_by_hop(k)).cloned().collect();
        for k in hop {
            headers.remove(k);
        }
    }
}

/// A websocket (or any HTTP/1.1 `Upgrade`) handshake.
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Passes an `Upgrade` handshake to a backend over a connection of its own;
/// when the backend switches protocols (101), the client's and the
/// backend's connections are copied both ways until either ends, like an L4
/// service port.
async fn upgrade(
    lb: &Lb,
    service: &crate::table::Service,
    peer: &HeaderValue,
    port: HeaderValue,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let client_side = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    forwarded_headers(&mut parts.headers, peer, port, true);
    let path = parts.uri.path_and_query().cloned().unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/"));
    let mut tried = Vec::with_capacity(TRIES);
    let (b, stream) = loop {
        let Some(b) = service.pick(&tried) else {
            return text(StatusCode::BAD_GATEWAY, format!("{}: no task took the request", service.app));
        };
        tried.push(b.addr);
        match tokio::time::timeout(lb.cfg.connect_timeout, tokio::net::TcpStream::connect(b.addr)).await {
            Ok(Ok(s)) => break (b, s),
            _ if tried.len() < TRIES => b.mark_down(lb.cfg.down_for),
            _ => {
                b.mark_down(lb.cfg.down_for);
                return text(StatusCode::BAD_GATEWAY, format!("{}: no task took the request", service.app));
            }
        }
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        b.errors.fetch_add(1, Ordering::Relaxed);
        return text(StatusCode::BAD_GATEWAY, format!("{}: the task did not answer", service.app));
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut out = Request::new(Full::new(Bytes::new()));
    *out.method_mut() = parts.method;
    *out.headers_mut() = parts.headers;
    if let Ok(uri) = hyper::Uri::from_parts({
        let mut u = hyper::http::uri::Parts::default();
        u.path_and_query = Some(path);
        u
    }) {
        *out.uri_mut() = uri;
    }
    b.requests.fetch_add(1, Ordering::Relaxed);
    let mut resp = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => {
            b.errors.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::BAD_GATEWAY, format!("{}: the task did not answer: {e}", service.app));
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut rp, rb) = resp.into_parts();
        strip_hop_by_hop(&mut rp.headers);
        return Response::from_parts(rp, Body::Backend(Counted { inner: rb, backend: b, conn: None }));
    }
    let backend_side = hyper::upgrade::on(&mut resp);
    let idle = lb.cfg.idle_timeout;
    tokio::spawn(async move {
        let (Ok(c), Ok(s)) = tokio::join!(client_side, backend_side) else { return };
        b.connections.fetch_add(1, Ordering::Relaxed);
        b.active.fetch_add(1, Ordering::Relaxed);
        let bytes = crate::l4::splice(TokioIo::new(c), TokioIo::new(s), idle).await;
        b.bytes.fetch_add(bytes, Ordering::Relaxed);
        b.active.fetch_sub(1, Ordering::Relaxed);
    });
    let (rp, _) = resp.into_parts();
    Response::from_parts(rp, Body::Local(Full::new(Bytes::new())))
}

/// A response body: the front's own answer or a backend's.
pub enum Body {
    Local(Full<Bytes>),
    Backend(Counted),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Local(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Body::Backend(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Local(b) => b.is_end_stream(),
            Body::Backend(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Local(b) => b.size_hint(),
            Body::Backend(b) => b.inner.size_hint(),
        }
    }
}

/// A backend's response body: adds its bytes to the backend's count as
/// they pass, and hands its connection back to the pool once it has ended
/// (a body dropped before its end closes the connection instead).
pub struct Counted {
    inner: Incoming,
    backend: Arc<Backend>,
    conn: Option<(Sender, Arc<Pool>)>,
}

impl Counted {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.conn.take() {
            pool.put(self.backend.addr, sender);
        }
    }
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.backend.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.release();
                }
            }
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // hyper does not poll a body that says it has ended (a 204, a HEAD).
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}
