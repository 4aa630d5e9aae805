//! `lb::l4::serve_ports` on real loopback sockets: connections opened all
//! at once land on the proxy threads' `SO_REUSEPORT` listeners by the
//! kernel's hash, so on a machine with more than one core some are handed
//! from the thread that accepted them to a less loaded one; every one of
//! them must reach the backend and carry bytes both ways.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections held open at once: enough that the kernel's hash leaves one
/// thread a few ahead of another.
const CONNECTIONS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_at_once_are_all_proxied() {
    // An echo backend.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend_port = backend.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    // Its own loopback address: nothing else listens on service port 10000 there.
    let bind: std::net::IpAddr = "127.77.0.1".parse().expect("ip");
    let lb = lb_on(lb::LbConfig { bind, ..Default::default() }, &[backend_port]);
    let (_ports, wanted) = tokio::sync::watch::channel(vec![(10000, model::Transport::Tcp)]);
    tokio::spawn(lb::l4::serve_ports(lb.clone(), wanted));
    let addr = std::net::SocketAddr::new(bind, 10000);

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let client = loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(c) => break c,
                // The proxy threads open their listeners as they start.
                Err(_) if i == 0 && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("connection {i}: {e}"),
            }
        };
        clients.push(client);
    }
    // Every connection still open: each must carry its own bytes there and back.
    for (i, c) in clients.iter_mut().enumerate() {
        let line = format!("{i:08}\n");
        c.write_all(line.as_bytes()).await.expect("write");
        let mut back = vec![0u8; line.len()];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("connection {i}: no echo in time"))
            .expect("read");
        assert_eq!(back, line.as_bytes(), "connection {i}");
    }
    let b = &lb.routes().ports[&10000].backends[0];
    assert_eq!(b.active.load(std::sync::atomic::Ordering::Relaxed), CONNECTIONS);
    // Closing them all ends every proxied connection.
    drop(clients);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while b.active.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        assert!(tokio::time::Instant::now() < deadline, "connections still proxied after their clients closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
