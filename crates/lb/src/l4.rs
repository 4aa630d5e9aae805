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
//! node's shared runtime cost more than the copying.

use crate::table::{Backend, Lb};
use model::Transport;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
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

/// Runs `threads()` proxy threads, each with its own listeners following
/// `ports`; returns when they all ended (`ports` closed).
pub async fn serve_ports(lb: Arc<Lb>, ports: watch::Receiver<Wanted>) {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let n = threads();
    for i in 0..n {
        let (lb, ports, done) = (lb.clone(), ports.clone(), done_tx.clone());
        let spawned = std::thread::Builder::new().name(format!("lb-{i}")).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                // UDP sessions keep their backend per client: one thread has them.
                Ok(rt) => rt.block_on(serve_ports_here(lb, ports, i == 0)),
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

/// One thread's listeners: opens one for every wanted port and closes the
/// ones no longer wanted.
async fn serve_ports_here(lb: Arc<Lb>, mut ports: watch::Receiver<Wanted>, udp: bool) {
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
                    Ok(l) => tokio::spawn(accept_loop(lb.clone(), l, key.0)),
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

/// A listener that shares its port with the other proxy threads'.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    // Accepted connections inherit it (Linux): no system call per connection.
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(lb: Arc<Lb>, listener: TcpListener, port: u16) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let lb = lb.clone();
                tokio::spawn(async move { proxy(lb, client, port).await });
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
        match tokio::time::timeout(lb.cfg.connect_timeout, TcpStream::connect(b.addr)).await {
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

async fn proxy(lb: Arc<Lb>, client: TcpStream, port: u16) {
    // TCP_NODELAY comes from the listener (`listen`).
    let Some((backend, upstream)) = connect(&lb, port).await else {
        // No backend: the client sees the connection close.
        return;
    };
    let _ = upstream.set_nodelay(true);
    backend.requests.fetch_add(1, Ordering::Relaxed);
    backend.connections.fetch_add(1, Ordering::Relaxed);
    backend.active.fetch_add(1, Ordering::Relaxed);
    let bytes = splice(client, upstream, lb.cfg.idle_timeout).await;
    backend.bytes.fetch_add(bytes, Ordering::Relaxed);
    backend.active.fetch_sub(1, Ordering::Relaxed);
}

/// Copies both ways until both sides are done, passing a half-close on (one
/// side's EOF shuts the other's write side) and giving up after `idle` with
/// no bytes in either direction. Returns the bytes copied.
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> u64
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let moved = AtomicU64::new(0);
    let mut a = Counted { inner: a, moved: &moved };
    let mut b = b;
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUF, BUF);
    tokio::pin!(copy);
    let mut seen = 0;
    loop {
        tokio::select! {
            r = &mut copy => return r.map(|(up, down)| up + down).unwrap_or_else(|_| moved.load(Ordering::Relaxed)),
            _ = tokio::time::sleep(idle) => {
                let now = moved.load(Ordering::Relaxed);
                if now == seen {
                    return now;
                }
                seen = now;
            }
        }
    }
}

/// A stream that counts the bytes read from and written to it (for the
/// idle timeout: no count change in a whole period means idle).
struct Counted<'a, T> {
    inner: T,
    moved: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.moved.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
