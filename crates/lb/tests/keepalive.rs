//! The HTTP front's backend connections (`lb::pool`) through real sockets:
//! requests one after another share one kept-alive connection to the
//! backend, a response without a body hands its connection back too, and a
//! backend that closes its connection after a response costs the next
//! request nothing but a new connection.

mod common;

use common::*;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lb::http::Front;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A backend on loopback that counts the connections it accepted; `/204`
/// answers 204, `/close` answers and closes, anything else "ok".
async fn backend() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    match req.uri().path() {
                        "/204" => {
                            *resp.body_mut() = Full::new(Bytes::new());
                            *resp.status_mut() = StatusCode::NO_CONTENT;
                        }
                        "/close" => {
                            resp.headers_mut().insert("connection", "close".parse().expect("value"));
                        }
                        _ => {}
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (port, accepted)
}

/// A client connection to `front`; returns the status and body of each
/// `(method, path)` asked in turn over it.
async fn ask(front: &Front, requests: &[(&str, &str)]) -> Vec<(StatusCode, String)> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(front.clone().serve_connection(server, "192.0.2.1:40000".parse().expect("addr")));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client)).await.expect("handshake");
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for (method, path) in requests {
        let req = Request::builder()
            .method(*method)
            .uri(*path)
            .header("host", "web.example")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("answer");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        answers.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    answers
}

#[tokio::test(flavor = "current_thread")]
async fn requests_in_turn_share_one_backend_connection() {
    let (port, accepted) = backend().await;
    let front = front(port);
    let answers = ask(&front, &[("GET", "/"), ("GET", "/204"), ("HEAD", "/"), ("GET", "/a?b=c")]).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::NO_CONTENT, StatusCode::OK, StatusCode::OK]);
    assert_eq!(answers[0].1, "ok");
    assert_eq!(answers[3].1, "ok");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the backend saw more than one connection");
    assert_eq!(front.idle_connections(), 1);
    // Another client connection of the same thread reuses it too.
    let answers = ask(&front, &[("GET", "/")]).await;
    assert_eq!(answers[0], (StatusCode::OK, "ok".to_string()));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_backend_closing_after_a_response_costs_only_a_new_connection() {
    let (port, accepted) = backend().await;
    let front = front(port);
    let answers = ask(&front, &[("GET", "/close"), ("GET", "/"), ("POST", "/close"), ("POST", "/")]).await;
    assert!(answers.iter().all(|a| *a == (StatusCode::OK, "ok".to_string())), "{answers:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}
