//! The TCP and UDP proxy: every service port listens on every node, opened
//! and closed as apps come and go (never restarted for a backend change).
//! A TCP connection is copied to a backend chosen by power of two choices;
//! a backend that refuses or does not answer in time is marked down and the
//! next one tried, before the client sees anything. UDP datagrams go to a
//! backend chosen per client (`udp`).
//!
//! A few threads each run a single-threaded runtime with their own listener
//! on every port (`SO_REUSEPORT`, the kernel spreads connections over
//! them), as HAProxy's threads do: a connection's two sockets are then
//! served by one thread, with no wake-ups crossing threads, which on the
//! node's shared runtime cost more than the copying. The kernel spreads
//! connections over those listeners by a hash of their addresses, blind to
//! load: a thread holding more connections than the least loaded one hands
//! new ones over (`Threads`), as HAProxy's threads share out their accepts.

use crate::table::{Backend, Lb};
use model::Transport;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How many backends one connection tries.
const TRIES: usize = 3;
/// Copy buffer per direction, as HAProxy's default `tune.bufsize`: each
/// connection allocates two, so larger ones cost short connections more
/// (zeroing) than they save bulk transfers (system calls).
const BUF: usize = 16 * 1024;

/// The service ports to listen on, by transport.
pub type Wanted = Vec<(u16, Transport)>;

/// Threads proxying service ports: one per core, at most four.
pub fn threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4)
}

/// A thread hands a new connection to the least loaded one when it holds
/// this many more than that one: a few dozen long-lived connections end up
/// within a couple of each other per thread, while short ones, whose counts
/// swing by a few all the time, are seldom moved (a move costs a wake-up
/// of the other thread and two `epoll_ctl`s).
const SLACK: usize = 2;

/// The proxy threads' open TCP connections, and the way to hand each a
/// connection to serve.
struct Threads {
    load: Vec<AtomicUsize>,
    hand: Vec<mpsc::UnboundedSender<Handed>>,
}

impl Threads {
    /// The thread that serves a connection thread `me` accepted, counted
    /// as holding it until the returned guard drops.
    fn take(self: &Arc<Self>, me: usize) -> Held {
        let load = |i: usize| self.load[i].load(Ordering::Relaxed);
        let mut to = me;
        for i in 0..self.load.len() {
            if load(i) < load(to) {
                to = i;
            }
        }
        if load(me) < load(to) + SLACK {
            to = me;
        }
        self.load[to].fetch_add(1, Ordering::Relaxed);
        Held { threads: self.clone(), thread: to }
    }
}

/// A connection one thread hands another: the client, its service port,
/// and its place in the receiving thread's load.
type Handed = (std::net::TcpStream, u16, Held);

/// One connection counted in its thread's load.
struct Held {
    threads: Arc<Threads>,
    thread: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.threads.load[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `threads()` proxy threads, each with its own listeners following
/// `ports`; returns when they all ended (`ports` closed).
pub async fn serve_ports(lb: Arc<Lb>, ports: watch::Receiver<Wanted>) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let n = threads();
    let (hand, handed): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
    let shared = Arc::new(Threads { load: (0..n).map(|_| AtomicUsize::new(0)).collect(), hand });
    for (i, handed) in handed.into_iter().enumerate() {
        let (lb, ports, done, shared) = (lb.clone(), ports.clone(), done_tx.clone(), shared.clone());
        let spawned = std::thread::Builder::new().name(format!("lb-{i}")).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(async move {
                    let here = Here { lb, threads: shared, me: i };
                    let taken = tokio::spawn(here.clone().take_handed(handed));
                    serve_ports_here(here, ports).await;
                    taken.abort();
                }),
                Err(e) => tracing::error!(error = %e, "LB: cannot start a proxy thread"),
            }
            let _ = done.send(());
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "LB: cannot start a proxy thread");
            let _ = done_tx.send(());
        }
    }
    drop(done_tx);
    for _ in 0..n {
        if done_rx.recv().await.is_none() {
            break;
        }
    }
}

/// What a proxy thread serves with.
#[derive(Clone)]
struct Here {
    lb: Arc<Lb>,
    threads: Arc<Threads>,
    /// This thread's index in `threads`.
    me: usize,
}

impl Here {
    /// Serves the connections other threads hand this one.
    async fn take_handed(self, mut handed: mpsc::UnboundedReceiver<Handed>) {
        while let Some((client, port, held)) = handed.recv().await {
            self.serve(client, port, held);
        }
    }

    /// Registers `client` with this thread's runtime and proxies it.
    fn serve(&self, client: std::net::TcpStream, port: u16, held: Held) {
        match TcpStream::from_std(client) {
            Ok(client) => {
                let lb = self.lb.clone();
                tokio::spawn(async move {
                    proxy(lb, client, port).await;
                    drop(held);
                });
            }
            Err(e) => tracing::debug!(error = %e, "LB: cannot serve a connection"),
        }
    }
}

/// One thread's listeners: opens one for every wanted port and closes the
/// ones no longer wanted.
async fn serve_ports_here(here: Here, mut ports: watch::Receiver<Wanted>) {
    let lb = here.lb.clone();
    // UDP sessions keep their backend per client: one thread has them.
    let udp = here.me == 0;
    let mut open: HashMap<(u16, Transport), JoinHandle<()>> = HashMap::new();
    loop {
        let wanted: Wanted =
            ports.borrow_and_update().iter().filter(|(_, t)| udp || *t == Transport::Tcp).cloned().collect();
        open.retain(|key, task| {
            let keep = wanted.contains(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted {
            if open.contains_key(&key) {
                continue;
            }
            let addr = SocketAddr::new(lb.cfg.bind, key.0);
            let task = match key.1 {
                Transport::Tcp => match listen(addr) {
                    Ok(l) => tokio::spawn(accept_loop(here.clone(), l, key.0)),
                    // Tried again on the next change; the port stays unserved meanwhile.
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "LB: cannot listen on a TCP service port");
                        continue;
                    }
                },
                Transport::Udp => match tokio::net::UdpSocket::bind(addr).await {
                    Ok(s) => tokio::spawn(crate::udp::serve(lb.clone(), s, key.0)),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "LB: cannot listen on a UDP service port");
                        continue;
                    }
                },
            };
            open.insert(key, task);
        }
        if ports.changed().await.is_err() {
            break;
        }
    }
    for (_, t) in open {
        t.abort();
    }
}

/// A listener that shares its port with the other proxy threads'. It is
/// polled through `AsyncFd` rather than tokio's `TcpListener`, whose
/// `accept` registers each connection with the accepting thread's runtime:
/// a connection handed to another thread would cost an `epoll_ctl` to
/// leave this one's and another to join that one's.
fn listen(addr: SocketAddr) -> io::Result<AsyncFd<socket2::Socket>> {
    let ty = socket2::Type::STREAM.nonblocking();
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted connections inherit it (Linux): no system call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the `AsyncFd` owns the socket, whose descriptor stays open
    // and the same until the `AsyncFd` drops it.
    Ok(unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE)? })
}

async fn accept_loop(here: Here, listener: AsyncFd<socket2::Socket>, port: u16) {
    // Non-blocking, as tokio needs it, without an `fcntl`.
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    loop {
        let accepted = match listener.readable().await {
            Ok(mut ready) => match ready.try_io(|l| l.get_ref().accept4(flags)) {
                Ok(accepted) => accepted,
                // Drained: wait for the next readiness.
                Err(_would_block) => continue,
            },
            Err(e) => Err(e),
        };
        match accepted {
            Ok((client, _)) => {
                let client = std::net::TcpStream::from(client);
                let held = here.threads.take(here.me);
                if held.thread == here.me {
                    here.serve(client, port, held);
                } else {
                    // Should the other thread be gone, the connection closes uncounted.
                    let _ = here.threads.hand[held.thread].send((client, port, held));
                }
            }
            Err(e) => {
                tracing::debug!(port, error = %e, "LB: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Connects to a backend of `port`'s service, trying others when one fails.
pub async fn connect(lb: &Lb, port: u16) -> Option<(Arc<Backend>, TcpStream)> {
    let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); TRIES];
    for attempt in 0..TRIES {
        let b = lb.routes().ports.get(&port)?.pick(&tried[..attempt])?;
        tried[attempt] = b.addr;
        let started = Instant::now();
        match tokio::time::timeout(lb.cfg.connect_timeout, connect_to(b.addr)).await {
            Ok(Ok(s)) => {
                b.latency_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                return Some((b, s));
            }
            Ok(Err(e)) => tracing::debug!(backend = %b.addr, error = %e, "LB: backend refused"),
            Err(_) => tracing::debug!(backend = %b.addr, "LB: backend did not answer in time"),
        }
        b.mark_down(lb.cfg.down_for);
    }
    None
}

/// A connection to `addr` with `TCP_NODELAY`. Unlike `TcpStream::connect`
/// it reads the outcome from the readiness event itself: a refused
/// connection shows as an error or hang-up, so a connection that worked
/// costs no `getsockopt(SO_ERROR)`.
async fn connect_to(addr: SocketAddr) -> io::Result<TcpStream> {
    // Non-blocking from the start (socket2 adds close-on-exec): no `fcntl`.
    let ty = socket2::Type::STREAM.nonblocking();
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), ty, Some(socket2::Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream.take_error()?.unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

async fn proxy(lb: Arc<Lb>, client: TcpStream, port: u16) {
    // TCP_NODELAY comes from the listener (`listen`).
    let Some((backend, upstream)) = connect(&lb, port).await else {
        // No backend: the client sees the connection close.
        return;
    };
    backend.requests.fetch_add(1, Ordering::Relaxed);
    backend.connections.fetch_add(1, Ordering::Relaxed);
    backend.active.fetch_add(1, Ordering::Relaxed);
    let bytes = splice(client, upstream, lb.cfg.idle_timeout).await;
    backend.bytes.fetch_add(bytes, Ordering::Relaxed);
    backend.active.fetch_sub(1, Ordering::Relaxed);
}

/// Copies both ways until both sides are done, passing a half-close on (one
/// side's EOF shuts the other's write side) and giving up after `idle` with
/// no bytes in either direction. Returns the bytes copied. The caller drops
/// (closes) both streams afterwards, so the second EOF is not passed on: the
/// close sends that FIN, one `shutdown` fewer per connection.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> u64
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (a, b);
    let (mut up, mut down) = (Copy::default(), Copy::default());
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let mut seen = 0;
    std::future::poll_fn(|cx| {
        // Either side's error ends both directions: the caller closes them.
        if !up.done {
            let other_done = down.done;
            if up.poll(cx, &mut a, &mut b, other_done).is_ready_err() {
                return Poll::Ready(());
            }
        }
        if !down.done {
            let other_done = up.done;
            if down.poll(cx, &mut b, &mut a, other_done).is_ready_err() {
                return Poll::Ready(());
            }
        }
        if up.done && down.done {
            return Poll::Ready(());
        }
        while sleep.as_mut().poll(cx).is_ready() {
            let now = up.moved + down.moved;
            if now == seen {
                return Poll::Ready(());
            }
            seen = now;
            sleep.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        Poll::Pending
    })
    .await;
    up.moved + down.moved
}

trait ReadyErr {
    fn is_ready_err(&self) -> bool;
}

impl ReadyErr for Poll<io::Result<()>> {
    fn is_ready_err(&self) -> bool {
        matches!(self, Poll::Ready(Err(_)))
    }
}

/// One direction of a `splice`: what was read and not yet written.
#[derive(Default)]
struct Copy {
    buf: Option<SpareBuf>,
    start: usize,
    end: usize,
    eof: bool,
    unflushed: bool,
    done: bool,
    moved: u64,
}

impl Copy {
    /// Moves bytes from `r` to `w` until one of them is not ready; on `r`'s
    /// EOF shuts `w`'s write side unless the other direction is done
    /// already (then both are about to be closed).
    fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W, other_done: bool) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.start < self.end {
                let Some(buf) = &self.buf else { return Poll::Ready(Err(io::Error::other("copy buffer lost"))) };
                match Pin::new(&mut *w).poll_write(cx, &buf.0[self.start..self.end]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        self.start += n;
                        self.moved += n as u64;
                        self.unflushed = true;
                        if self.start == self.end {
                            // Idle connections hold no buffer.
                            self.buf = None;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            } else if !self.eof {
                let buf = self.buf.get_or_insert_with(SpareBuf::take);
                let mut rb = ReadBuf::new(&mut buf.0);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        (self.start, self.end) = (0, n);
                        if n == 0 {
                            self.eof = true;
                            self.buf = None;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        self.buf = None;
                        if self.unflushed {
                            // A no-op on a socket; buffered streams need it.
                            if let Poll::Ready(Err(e)) = Pin::new(&mut *w).poll_flush(cx) {
                                return Poll::Ready(Err(e));
                            }
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            } else {
                if !other_done {
                    match Pin::new(&mut *w).poll_shutdown(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                } else if self.unflushed {
                    match Pin::new(&mut *w).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// A copy buffer from this thread's spares, given back when dropped:
/// allocating and zeroing two per connection cost short connections more
/// than their copying (tokio's `copy_bidirectional` does that).
struct SpareBuf(Box<[u8]>);

/// Spare buffers a thread keeps at most (4 MiB).
const SPARES: usize = 256;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl SpareBuf {
    fn take() -> SpareBuf {
        let spare = SPARE.with(|s| s.borrow_mut().pop());
        SpareBuf(spare.unwrap_or_else(|| vec![0; BUF].into_boxed_slice()))
    }
}

impl Drop for SpareBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < SPARES {
                s.push(buf);
            }
        });
    }
}
