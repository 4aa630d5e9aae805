//! The TCP proxy: one listener per service port on every node, opened and
//! closed as apps come and go (never restarted for a backend change), and a
//! connection spliced to a backend chosen by power of two choices. A backend
//! that refuses or does not answer in time is marked down and the next one
//! tried, before the client sees anything.

use crate::table::{Backend, Lb};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many backends one connection tries.
const TRIES: usize = 3;

/// Opens a listener for every wanted service port and closes the ones no
/// longer wanted; runs until `ports` closes.
pub async fn serve_ports(lb: Arc<Lb>, mut ports: watch::Receiver<Vec<u16>>) {
    let mut open: HashMap<u16, JoinHandle<()>> = HashMap::new();
    loop {
        let wanted = ports.borrow_and_update().clone();
        open.retain(|port, task| {
            let keep = wanted.contains(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in wanted {
            if open.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(lb.cfg.bind, port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    open.insert(port, tokio::spawn(accept_loop(lb.clone(), l, port)));
                }
                // Tried again on the next change; the port stays unserved meanwhile.
                Err(e) => tracing::warn!(%addr, error = %e, "LB: cannot listen on a service port"),
            }
        }
        if ports.changed().await.is_err() {
            break;
        }
    }
    for (_, t) in open {
        t.abort();
    }
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
    let mut tried = Vec::new();
    for _ in 0..TRIES {
        let service = lb.routes().ports.get(&port).cloned()?;
        let b = service.pick(&tried)?;
        tried.push(b.addr);
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
    let _ = client.set_nodelay(true);
    let Some((backend, upstream)) = connect(&lb, port).await else {
        // No backend: the client sees the connection close.
        return;
    };
    let _ = upstream.set_nodelay(true);
    backend.requests.fetch_add(1, Ordering::Relaxed);
    backend.active.fetch_add(1, Ordering::Relaxed);
    let bytes = splice(client, upstream, lb.cfg.idle_timeout).await;
    backend.bytes.fetch_add(bytes, Ordering::Relaxed);
    backend.active.fetch_sub(1, Ordering::Relaxed);
}

/// Copies both ways until both sides are done, passing a half-close on (one
/// side's EOF shuts the other's write side) and giving up after `idle` with
/// no bytes in either direction. Returns the bytes copied.
pub async fn splice(a: TcpStream, b: TcpStream, idle: Duration) -> u64 {
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let up = pump(ar, bw, last.clone(), start);
    let down = pump(br, aw, last.clone(), start);
    let both = async { tokio::join!(up, down) };
    tokio::pin!(both);
    loop {
        tokio::select! {
            (x, y) = &mut both => return x + y,
            _ = tokio::time::sleep(idle) => {
                let since = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if since >= idle {
                    return 0;
                }
            }
        }
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    last: Arc<std::sync::atomic::AtomicU64>,
    start: Instant,
) -> u64 {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
    total
}
