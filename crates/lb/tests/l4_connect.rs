//! `lb::l4::connect` against real loopback sockets: a backend that refuses
//! is skipped for one that listens before the caller sees anything, and a
//! service whose every backend refuses gets no connection.

mod common;

use common::*;

#[tokio::test]
async fn a_refusing_backend_is_skipped_for_a_listening_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let live = listener.local_addr().expect("addr");
    // Port 1 on loopback: nothing listens, the connection is refused.
    let lb = lb_with(&[1, live.port()]);
    for _ in 0..10 {
        let (backend, stream) = lb::l4::connect(&lb, 10000).await.expect("a connection to the live backend");
        assert_eq!(backend.addr, live);
        assert_eq!(stream.peer_addr().expect("connected"), live);
        listener.accept().await.expect("the live backend sees it");
    }
}

#[tokio::test]
async fn no_connection_when_every_backend_refuses() {
    let lb = lb_with(&[1]);
    assert!(lb::l4::connect(&lb, 10000).await.is_none());
}
