//! The HTTP front: one listener per node that routes each request by its
//! `Host` (and path prefix) to the app labelled with that virtual host
//! (`HAPROXY_0_VHOST` / `wharf.vhost`, `HAPROXY_0_PATH` / `wharf.path`),
//! over pooled keep-alive connections to the app's up tasks. 404 for an
//! unknown host, 503 naming the app when it has no up task, 502 when every
//! backend tried failed.
//!
//! Each client connection is one loop that reads a request head (`h1`),
//! writes it with the proxy's fields to a pooled backend connection, and
//! passes the response back as it came: no task, channel or timer per
//! request (see `h1` for why this is not hyper). One timer per connection
//! cuts off a client that does not finish a head in `HEAD_TIMEOUT` or
//! idles for the idle timeout.

use crate::h1::{self, BodyLen, Chunks, MAX_HEAD, MAX_HEADERS};
use crate::pool::{self, Pool};
use crate::table::{Backend, Lb, Service};
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Request bodies are buffered (so a request can go to another backend
/// when one refuses); larger ones get 413.
const MAX_BODY: u64 = 16 << 20;
const TRIES: usize = 3;
/// A client must send a whole request head within this time of its first byte.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the HTTP front on `listener` until it fails: a few threads, each
/// a single-threaded runtime with its own pool of backend connections (see
/// `l4` for why). Connections are accepted here and dealt to the threads
/// in turn: threads accepting from one shared listener left nearly every
/// connection to whichever woke first, and so one core doing all the work.
pub async fn serve(lb: Arc<Lb>, listener: TcpListener) -> std::io::Result<()> {
    let port = listener.local_addr()?.port();
    let listener = socket2::Socket::from(listener.into_std()?);
    listener.set_nonblocking(true)?;
    // Accepted connections inherit it (Linux): no system call per connection.
    listener.set_tcp_nodelay(true)?;
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
    // Non-blocking, as tokio needs it, without an `ioctl` per connection.
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let mut next = 0;
    loop {
        tokio::select! {
            ended = done_rx.recv() => return ended.unwrap_or(Ok(())),
            accepted = listener.readable() => {
                let mut ready = accepted?;
                // Every connection waiting, before waiting again.
                loop {
                    match ready.try_io(|l| l.get_ref().accept4(flags)) {
                        Ok(Ok((stream, peer))) => {
                            let Some(peer) = peer.as_socket() else { continue };
                            let stream = std::net::TcpStream::from(stream);
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
        // Non-blocking and with `TCP_NODELAY` from the accept (`serve`).
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP LB: cannot serve an accepted connection");
                continue;
            }
        };
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
    port: String,
}

impl Front {
    /// A front for `lb` with a pool of its own, answering as if it listened
    /// on `port` (for tests and the fuzz target `fuzz/fuzz_targets/lb_http.rs`;
    /// `serve` makes one per thread).
    pub fn new(lb: Arc<Lb>, port: u16) -> Front {
        let pool = Arc::new(Pool::new(lb.cfg.connect_timeout));
        Front { lb, pool, port: port.to_string() }
    }

    /// Idle backend connections held in this front's pool.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle()
    }

    /// Serves HTTP/1.x on one client connection from `peer` until it ends.
    pub async fn serve_connection<S>(self, io: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let idle = self.lb.cfg.idle_timeout;
        let mut client = Client {
            io,
            buf: BytesMut::with_capacity(8 * 1024),
            timer: Box::pin(tokio::time::sleep(HEAD_TIMEOUT.min(idle))),
            mark: Instant::now(),
            idle,
        };
        let peer = peer.ip().to_string();
        let mut out = Vec::with_capacity(4 * 1024);
        while let Ok(Next::KeepAlive) = self.exchange(&mut client, &peer, &mut out).await {}
        let _ = client.io.shutdown().await;
    }

    /// One request and its response.
    async fn exchange<S>(&self, client: &mut Client<S>, peer: &str, out: &mut Vec<u8>) -> io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        out.clear();
        let Some(req) = self.read_request(client, peer, out).await? else { return Ok(Next::Close) };
        let Request { head, body_len, version, keep_alive, head_method, idempotent, has_host, upgrade, route } = req;
        // The body, whole, before anything goes to a backend (and before an
        // answer of the front's own, so that the next request starts where
        // this one ends).
        let body = match body_len {
            BodyLen::Length(n) if n > MAX_BODY => {
                return refuse(client, out, version, 413, "request body too large").await
            }
            BodyLen::Length(n) => {
                let n = n as usize;
                while client.buf.len() < n {
                    if client.read_more(client.idle).await? == 0 {
                        return Ok(Next::Close);
                    }
                }
                client.buf.split_to(n).freeze()
            }
            BodyLen::Chunked => {
                let mut chunks = Chunks::default();
                let mut end = 0;
                loop {
                    match chunks.scan(&client.buf[end..]) {
                        Ok(n) => end += n,
                        Err(_) => return refuse(client, out, version, 400, "bad chunked request body").await,
                    }
                    if chunks.done() {
                        break;
                    }
                    if end as u64 > MAX_BODY {
                        return refuse(client, out, version, 413, "request body too large").await;
                    }
                    if client.read_more(client.idle).await? == 0 {
                        return Ok(Next::Close);
                    }
                }
                client.buf.split_to(end).freeze()
            }
            BodyLen::None | BodyLen::UntilClose => Bytes::new(),
        };
        let service = match route {
            Route::Answer(status, msg) => {
                return answer(client, out, version, keep_alive, status, &msg).await;
            }
            Route::To(s) => s,
        };
        let ask = Ask { head: &head, has_host, body: &body, version, head_method, keep_alive, upgrade };
        if upgrade {
            return self.upgrade(client, &service, &ask, out).await;
        }
        let mut tried = [NOWHERE; TRIES];
        let tries = TRIES.min(service.backends.len());
        for attempt in 0..tries {
            let Some(b) = service.pick(&tried[..attempt]) else { break };
            tried[attempt] = b.addr;
            b.active.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let sent = send(&self.pool, &b, &ask, out).await;
            let next = match sent {
                Ok((conn, answer)) => {
                    b.requests.fetch_add(1, Ordering::Relaxed);
                    b.latency_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if answer.status >= 500 {
                        b.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let r = self.pass_body(client, &b, conn, &answer, out).await;
                    b.active.fetch_sub(1, Ordering::Relaxed);
                    return r;
                }
                // Never reached the backend: another one may take it.
                Err(SendError::Unsent(e)) => {
                    tracing::debug!(backend = %b.addr, error = %e, "HTTP LB: backend refused");
                    b.mark_down(self.lb.cfg.down_for);
                    None
                }
                // The backend closed the connection under the request (a task
                // on its way out): a request that is safe to repeat goes to
                // another backend, as HAProxy's `retry-on` does.
                Err(SendError::Failed(e)) if idempotent => {
                    tracing::debug!(backend = %b.addr, error = %e, "HTTP LB: retrying an idempotent request elsewhere");
                    b.mark_down(self.lb.cfg.down_for);
                    None
                }
                Err(SendError::Failed(e)) => {
                    b.errors.fetch_add(1, Ordering::Relaxed);
                    Some(format!("{}: the task did not answer: {e}", service.app))
                }
            };
            b.active.fetch_sub(1, Ordering::Relaxed);
            if let Some(msg) = next {
                return answer(client, out, version, keep_alive, 502, &msg).await;
            }
        }
        answer(client, out, version, keep_alive, 502, &format!("{}: no task took the request", service.app)).await
    }

    /// Reads a request head and routes it; `None` when the client closed
    /// or timed out between requests or the head was refused (the answer
    /// is then written already).
    async fn read_request<S>(
        &self,
        client: &mut Client<S>,
        peer: &str,
        out: &mut Vec<u8>,
    ) -> io::Result<Option<Request>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        client.mark = Instant::now();
        let mut started = !client.buf.is_empty();
        loop {
            if started {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&client.buf) {
                    Ok(httparse::Status::Complete(n)) => {
                        let r = self.route(&req, peer);
                        client.buf.advance(n);
                        return match r {
                            Ok(r) => {
                                if r.expect_continue && client.buf.is_empty() && r.req.body_len != BodyLen::None {
                                    client.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                                }
                                client.mark = Instant::now();
                                Ok(Some(r.req))
                            }
                            Err((status, msg)) => {
                                let _ = refuse(client, out, 1, status, &msg).await;
                                Ok(None)
                            }
                        };
                    }
                    Ok(httparse::Status::Partial) if client.buf.len() < MAX_HEAD => {}
                    Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                        let _ = refuse(client, out, 1, 431, "request header fields too large").await;
                        return Ok(None);
                    }
                    Err(e) => {
                        let _ = refuse(client, out, 1, 400, &format!("malformed request: {e}")).await;
                        return Ok(None);
                    }
                }
            }
            let limit = if started { HEAD_TIMEOUT } else { client.idle };
            match client.read_more(limit).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                // Timed out: cut off without an answer, as HAProxy does.
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(None),
                Err(e) => return Err(e),
            }
            if !started {
                started = true;
                client.mark = Instant::now();
            }
        }
    }

    /// Routes a parsed head and writes the head to send a backend.
    fn route(&self, req: &httparse::Request<'_, '_>, peer: &str) -> Result<Routed, (u16, String)> {
        let version = req.version.unwrap_or(1);
        let method = req.method.unwrap_or("GET");
        let target = req.path.unwrap_or("/");
        let facts = h1::facts(req.headers).map_err(|e| (400, format!("bad request: {e}")))?;
        // Backends get origin-form (`/path?query`), whatever form the client used.
        let (authority, origin) = match target.split_once("://") {
            _ if target.starts_with('/') || target == "*" => (None, target),
            Some((_, rest)) => {
                let at = rest.find(['/', '?']).unwrap_or(rest.len());
                (Some(&rest[..at]), if rest[at..].starts_with('/') { &rest[at..] } else { "/" })
            }
            None => return Err((400, "request target must be a path or an absolute URL".into())),
        };
        let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value);
        let has_host = host.is_some();
        let host = host.and_then(|h| std::str::from_utf8(h).ok()).or(authority).unwrap_or_default().trim();
        let name =
            host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let path = origin.split_once('?').map_or(origin, |(p, _)| p);
        let keep_alive = !facts.close && (version == 1 || facts.keep_alive);
        let body_len =
            if facts.chunked { BodyLen::Chunked } else { facts.content_length.map_or(BodyLen::None, BodyLen::Length) };
        let route = {
            let routes = self.lb.routes();
            match routes.vhost(name, path) {
                None => Route::Answer(404, format!("no app serves host '{name}'")),
                Some(r) if r.service.backends.is_empty() => {
                    Route::Answer(503, format!("{} has no healthy task", r.service.app))
                }
                Some(r) => Route::To(r.service.clone()),
            }
        };
        let upgrade = facts.has_upgrade && facts.upgrade_token;
        let mut head = Vec::with_capacity(512);
        if let Route::To(_) = route {
            head.extend_from_slice(method.as_bytes());
            head.push(b' ');
            head.extend_from_slice(origin.as_bytes());
            // An HTTP/1.0 client's request goes as 1.0, so that the answer
            // comes in a framing it understands (never chunked).
            head.extend_from_slice(if version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
            h1::copy_fields(&mut head, req.headers, &["x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"]);
            let prior = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
            head.extend_from_slice(b"x-forwarded-for: ");
            if let Some(p) = prior {
                head.extend_from_slice(p.value);
                head.extend_from_slice(b", ");
            }
            head.extend_from_slice(peer.as_bytes());
            head.extend_from_slice(b"\r\nx-forwarded-proto: http\r\nx-forwarded-port: ");
            head.extend_from_slice(self.port.as_bytes());
            head.extend_from_slice(b"\r\n");
            if upgrade {
                if let Some(u) = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("upgrade")) {
                    h1::field(&mut head, "upgrade", u.value);
                }
                head.extend_from_slice(b"connection: upgrade\r\n");
            } else if version == 0 {
                head.extend_from_slice(b"connection: keep-alive\r\n");
            }
            match body_len {
                BodyLen::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
                BodyLen::Length(n) => h1::content_length(&mut head, n),
                BodyLen::None | BodyLen::UntilClose => {}
            }
        }
        let req = Request {
            head,
            body_len,
            version,
            keep_alive,
            head_method: method == "HEAD",
            idempotent: ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"].contains(&method),
            has_host,
            upgrade,
            route,
        };
        Ok(Routed { req, expect_continue: facts.expect_continue })
    }

    /// Passes a response's body (its head is in `out`) to the client, and
    /// the backend connection back to the pool when it can take another.
    async fn pass_body<S>(
        &self,
        client: &mut Client<S>,
        b: &Backend,
        mut conn: pool::Conn,
        answer: &Answer,
        out: &mut Vec<u8>,
    ) -> io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut chunks = Chunks::default();
        let mut left = match answer.body {
            BodyLen::Length(n) => n,
            _ => u64::MAX,
        };
        let mut first = true;
        let ended = loop {
            let take = match answer.body {
                BodyLen::None => 0,
                BodyLen::Length(_) => conn.buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
                BodyLen::Chunked => {
                    chunks.scan(&conn.buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
                }
                BodyLen::UntilClose => conn.buf.len(),
            };
            b.bytes.fetch_add(take as u64, Ordering::Relaxed);
            if first {
                out.extend_from_slice(&conn.buf[..take]);
                client.io.write_all(out).await?;
                first = false;
            } else if take > 0 {
                client.io.write_all(&conn.buf[..take]).await?;
            }
            conn.buf.advance(take);
            left = left.saturating_sub(take as u64);
            let done = match answer.body {
                BodyLen::None => true,
                BodyLen::Length(_) => left == 0,
                BodyLen::Chunked => chunks.done(),
                BodyLen::UntilClose => false,
            };
            if done {
                break true;
            }
            conn.buf.reserve(16 * 1024);
            if conn.stream.read_buf(&mut conn.buf).await? == 0 {
                // Only a response without framing may end so.
                break answer.body == BodyLen::UntilClose;
            }
        };
        if !ended {
            return Ok(Next::Close);
        }
        if answer.backend_keep_alive && answer.body != BodyLen::UntilClose {
            self.pool.put(b.addr, conn);
        }
        client.io.flush().await?;
        Ok(if answer.client_keep_alive { Next::KeepAlive } else { Next::Close })
    }

    /// Passes an `Upgrade` handshake to a backend over a connection of its
    /// own; when the backend switches protocols (101), the client's and the
    /// backend's connections are copied both ways until either ends, like
    /// an L4 service port.
    async fn upgrade<S>(
        &self,
        client: &mut Client<S>,
        service: &Service,
        ask: &Ask<'_>,
        out: &mut Vec<u8>,
    ) -> io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut tried = Vec::with_capacity(TRIES);
        let connected = loop {
            let Some(b) = service.pick(&tried) else { break None };
            tried.push(b.addr);
            match self.pool.connect(b.addr).await {
                Ok(c) => break Some((b, c)),
                Err(_) => {
                    b.mark_down(self.lb.cfg.down_for);
                    if tried.len() >= TRIES {
                        break None;
                    }
                }
            }
        };
        let Some((b, mut conn)) = connected else {
            let msg = format!("{}: no task took the request", service.app);
            return answer(client, out, ask.version, ask.keep_alive, 502, &msg).await;
        };
        b.requests.fetch_add(1, Ordering::Relaxed);
        let answered = match write_request(&mut conn, &b, ask).await {
            Ok(()) => read_answer(&mut conn, ask, out).await,
            Err(e) => Err(Stage::NoAnswer(e)),
        };
        let a = match answered {
            Ok(a) => a,
            Err(Stage::NoAnswer(e) | Stage::Bad(e)) => {
                b.errors.fetch_add(1, Ordering::Relaxed);
                let msg = format!("{}: the task did not answer: {e}", service.app);
                return answer(client, out, ask.version, ask.keep_alive, 502, &msg).await;
            }
        };
        if a.status != 101 {
            let a = Answer { backend_keep_alive: false, ..a };
            return self.pass_body(client, &b, conn, &a, out).await;
        }
        out.extend_from_slice(&conn.buf);
        conn.buf.clear();
        client.io.write_all(out).await?;
        if !client.buf.is_empty() {
            conn.stream.write_all(&client.buf).await?;
            client.buf.clear();
        }
        b.connections.fetch_add(1, Ordering::Relaxed);
        b.active.fetch_add(1, Ordering::Relaxed);
        let bytes = crate::l4::splice(&mut client.io, conn.stream, self.lb.cfg.idle_timeout).await;
        b.bytes.fetch_add(bytes, Ordering::Relaxed);
        b.active.fetch_sub(1, Ordering::Relaxed);
        Ok(Next::Close)
    }
}

/// Whether a client connection takes another request.
enum Next {
    KeepAlive,
    Close,
}

/// A client connection with what has been read from it, and its one timer.
struct Client<S> {
    io: S,
    buf: BytesMut,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// When the current wait (for a head, or idle) began.
    mark: Instant,
    idle: Duration,
}

impl<S: AsyncRead + Unpin> Client<S> {
    /// Reads more into `buf` (0 at the end); fails with `TimedOut` once
    /// `limit` has passed since `mark`. The timer is only re-armed when it
    /// fires, not for every read.
    async fn read_more(&mut self, limit: Duration) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8 * 1024);
        }
        loop {
            tokio::select! {
                biased;
                r = self.io.read_buf(&mut self.buf) => return r,
                () = &mut self.timer => {
                    let due = self.mark + limit;
                    if Instant::now() >= due {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.timer.as_mut().reset(due.into());
                }
            }
        }
    }
}

/// A routed request, ready for a backend.
struct Request {
    /// The head to send, without `Host` when the client sent none and
    /// without the final CRLF.
    head: Vec<u8>,
    body_len: BodyLen,
    /// The client's minor version (HTTP/1.0 or 1.1).
    version: u8,
    keep_alive: bool,
    head_method: bool,
    idempotent: bool,
    has_host: bool,
    upgrade: bool,
    route: Route,
}

struct Routed {
    req: Request,
    expect_continue: bool,
}

enum Route {
    /// The front answers itself: status and message.
    Answer(u16, String),
    To(Arc<Service>),
}

/// A request as sent to each backend tried.
struct Ask<'a> {
    head: &'a [u8],
    has_host: bool,
    body: &'a Bytes,
    version: u8,
    head_method: bool,
    keep_alive: bool,
    upgrade: bool,
}

/// A backend's response head (written to `out` for the client).
struct Answer {
    status: u16,
    body: BodyLen,
    backend_keep_alive: bool,
    client_keep_alive: bool,
}

/// Why a request got no answer from a backend.
enum SendError {
    /// It never reached the backend (refused, no answer in time, or the
    /// connection failed before the request was written): another backend
    /// may take it.
    Unsent(io::Error),
    /// The backend took the request and failed or closed before answering.
    Failed(io::Error),
}

/// Where an exchange with a backend failed.
enum Stage {
    /// Before any byte of an answer (a reused connection: maybe closed while idle).
    NoAnswer(io::Error),
    /// A broken answer.
    Bad(io::Error),
}

/// Sends `ask` to `b` over a pooled connection or a new one and reads the
/// response head into `out`.
async fn send(pool: &Pool, b: &Backend, ask: &Ask<'_>, out: &mut Vec<u8>) -> Result<(pool::Conn, Answer), SendError> {
    loop {
        let mut conn = pool.get(b.addr).await.map_err(SendError::Unsent)?;
        let reused = conn.reused;
        if let Err(e) = write_request(&mut conn, b, ask).await {
            if reused {
                continue;
            }
            return Err(SendError::Unsent(e));
        }
        match read_answer(&mut conn, ask, out).await {
            Ok(a) => return Ok((conn, a)),
            // A pooled connection the backend closed while it idled: the
            // request never reached it; the next one or a new one takes it.
            Err(Stage::NoAnswer(_)) if reused => continue,
            Err(Stage::NoAnswer(e) | Stage::Bad(e)) => return Err(SendError::Failed(e)),
        }
    }
}

async fn write_request(conn: &mut pool::Conn, b: &Backend, ask: &Ask<'_>) -> io::Result<()> {
    let mut req = Vec::with_capacity(ask.head.len() + 64 + ask.body.len().min(64 * 1024));
    req.extend_from_slice(ask.head);
    if !ask.has_host {
        // An HTTP/1.0 client may send no `Host`; the backend gets its own address.
        h1::field(&mut req, "host", b.host.as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    if ask.body.len() <= 64 * 1024 {
        req.extend_from_slice(ask.body);
        conn.stream.write_all(&req).await
    } else {
        conn.stream.write_all(&req).await?;
        conn.stream.write_all(ask.body).await
    }
}

/// Reads a response head from `conn` (skipping interim 1xx answers but a
/// 101) and writes the client's version of it to `out`.
async fn read_answer(conn: &mut pool::Conn, ask: &Ask<'_>, out: &mut Vec<u8>) -> Result<Answer, Stage> {
    let bad = |msg: String| Stage::Bad(io::Error::new(io::ErrorKind::InvalidData, msg));
    let mut any = false;
    loop {
        if !conn.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&conn.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(502);
                    if (100..200).contains(&status) && status != 101 {
                        conn.buf.advance(n);
                        continue;
                    }
                    let facts = h1::facts(resp.headers).map_err(|e| bad(format!("bad response: {e}")))?;
                    let body = h1::response_body(status, ask.head_method, &facts);
                    let backend_keep_alive = !facts.close && (resp.version == Some(1) || facts.keep_alive);
                    let client_keep_alive = ask.keep_alive && body != BodyLen::UntilClose;
                    out.clear();
                    out.extend_from_slice(if ask.version == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
                    out.extend_from_slice(status.to_string().as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
                    out.extend_from_slice(b"\r\n");
                    if status == 101 {
                        for h in resp.headers.iter() {
                            h1::field(out, h.name, h.value);
                        }
                    } else {
                        h1::copy_fields(out, resp.headers, &[]);
                        if facts.chunked {
                            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                        }
                        if let Some(n) = facts.content_length {
                            h1::content_length(out, n);
                        }
                        if !client_keep_alive {
                            out.extend_from_slice(b"connection: close\r\n");
                        } else if ask.version == 0 {
                            out.extend_from_slice(b"connection: keep-alive\r\n");
                        }
                    }
                    out.extend_from_slice(b"\r\n");
                    conn.buf.advance(n);
                    let _ = ask.upgrade;
                    return Ok(Answer { status, body, backend_keep_alive, client_keep_alive });
                }
                Ok(httparse::Status::Partial) if conn.buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => return Err(bad("response head too large".into())),
                Err(e) => return Err(bad(format!("malformed response: {e}"))),
            }
        }
        conn.buf.reserve(8 * 1024);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if !any => return Err(Stage::NoAnswer(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) => return Err(bad("the response ended early".into())),
            Ok(_) => any = true,
            Err(e) if !any => return Err(Stage::NoAnswer(e)),
            Err(e) => return Err(Stage::Bad(e)),
        }
    }
}

/// Writes the front's own answer, and says whether the connection goes on.
async fn answer<S: AsyncWrite + Unpin>(
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    version: u8,
    keep_alive: bool,
    status: u16,
    msg: &str,
) -> io::Result<Next> {
    text(out, version, status, msg, !keep_alive);
    client.io.write_all(out).await?;
    Ok(if keep_alive { Next::KeepAlive } else { Next::Close })
}

/// Answers a request the front will not take, and closes.
async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut Client<S>,
    out: &mut Vec<u8>,
    version: u8,
    status: u16,
    msg: &str,
) -> io::Result<Next> {
    answer(client, out, version, false, status, msg).await
}

/// A short plain-text answer of the front's own.
fn text(out: &mut Vec<u8>, version: u8, status: u16, msg: &str, close: bool) {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    };
    out.clear();
    out.extend_from_slice(if version == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(format!("{status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n").as_bytes());
    h1::content_length(out, msg.len() as u64 + 1);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(msg.as_bytes());
    out.push(b'\n');
}

/// A placeholder in the list of backends tried (never a backend's address).
const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
