//! UDP service ports: datagrams from a client go to one backend of the app
//! for as long as the client keeps talking (per-client affinity, so a
//! protocol with state across datagrams keeps working), and the backend's
//! replies go back to the client from the service port. A client's session
//! ends after `SESSION_IDLE` without datagrams, or as soon as its backend
//! leaves the table; its next datagram picks a backend afresh.

use crate::table::{Backend, Lb};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// A client's session ends after this long without a datagram either way.
pub const SESSION_IDLE: Duration = Duration::from_secs(60);
/// Sessions per port before new clients are refused (their datagrams
/// dropped): a flood of source addresses cannot take every socket.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    backend: Arc<Backend>,
    upstream: Arc<UdpSocket>,
    alive: Arc<AtomicBool>,
}

/// Serves one UDP service port until aborted.
pub async fn serve(lb: Arc<Lb>, front: UdpSocket, port: u16) {
    let front = Arc::new(front);
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = match front.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(port, error = %e, "LB: reading a UDP datagram");
                continue;
            }
        };
        let Some(service) = lb.routes().udp.get(&port).cloned() else { continue };
        // A session whose backend left the table (or whose reader ended)
        // is dropped: the client moves to a backend that is up.
        let stale = sessions.get(&client).is_some_and(|s| {
            !s.alive.load(Ordering::Relaxed) || !service.backends.iter().any(|b| Arc::ptr_eq(b, &s.backend))
        });
        if stale {
            if let Some(s) = sessions.remove(&client) {
                s.alive.store(false, Ordering::Relaxed);
            }
        }
        if !sessions.contains_key(&client) {
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, s| s.alive.load(Ordering::Relaxed));
                if sessions.len() >= MAX_SESSIONS {
                    continue;
                }
            }
            let Some(backend) = service.pick(&[]) else { continue };
            match open(&backend).await {
                Ok(upstream) => {
                    let alive = Arc::new(AtomicBool::new(true));
                    let upstream = Arc::new(upstream);
                    tokio::spawn(replies(front.clone(), upstream.clone(), client, backend.clone(), alive.clone()));
                    backend.connections.fetch_add(1, Ordering::Relaxed);
                    sessions.insert(client, Session { backend, upstream, alive });
                }
                Err(e) => {
                    tracing::debug!(backend = %backend.addr, error = %e, "LB: cannot open a UDP socket to a backend");
                    backend.mark_down(lb.cfg.down_for);
                    continue;
                }
            }
        }
        let Some(s) = sessions.get(&client) else { continue };
        match s.upstream.send_to(&buf[..n], s.backend.addr).await {
            Ok(sent) => {
                s.backend.requests.fetch_add(1, Ordering::Relaxed);
                s.backend.bytes.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(_) => {
                s.backend.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A socket of the session's own, so replies on it are the client's. Not
/// connected: a server bound to a wildcard address answers from whichever
/// of the host's addresses routing picks, which may not be the one it was
/// sent to (so replies are matched on the backend's port only).
async fn open(backend: &Backend) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if backend.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    UdpSocket::bind(local).await
}

/// Sends the backend's replies to the client until the session is idle or
/// dropped.
async fn replies(
    front: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    backend: Arc<Backend>,
    alive: Arc<AtomicBool>,
) {
    backend.active.fetch_add(1, Ordering::Relaxed);
    let mut buf = vec![0u8; 65_536];
    let mut last = tokio::time::Instant::now();
    while alive.load(Ordering::Relaxed) {
        // Woken at least every few seconds to see whether the session was dropped.
        match tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await {
            Ok(Ok((_, from))) if from.port() != backend.addr.port() => {}
            Ok(Ok((n, _))) => {
                last = tokio::time::Instant::now();
                if front.send_to(&buf[..n], client).await.is_ok() {
                    backend.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            // ICMP port unreachable from the backend, and the like.
            Ok(Err(_)) => {
                backend.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => {}
        }
        // Idle means no reply for a while: a client that only sends then
        // picks a backend afresh with its next datagram.
        if last.elapsed() >= SESSION_IDLE {
            break;
        }
    }
    alive.store(false, Ordering::Relaxed);
    backend.active.fetch_sub(1, Ordering::Relaxed);
}
