//! The HTTP front's own HTTP/1.1 handling (`lb::http`, `lb::h1`) with raw
//! client bytes and a real backend on loopback: pipelined requests are
//! answered in order, a chunked request body reaches the backend whole, a
//! chunked response passes back as it came, `X-Forwarded-For` extends the
//! client's, a request the front answers itself (404) leaves its body behind
//! it, and an HTTP/1.0 client gets an HTTP/1.0 answer and a close.

mod common;

use common::*;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A body that does not say its length, so hyper sends it chunked.
struct Unsized(Full<Bytes>);

impl hyper::body::Body for Unsized {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }
}

/// A backend that answers each request with what it saw of it; `/chunked`
/// answers with a chunked body.
async fn backend() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let header =
                        |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    let said = format!(
                        "{} {} xff={} proto={} body={}\n",
                        parts.method,
                        parts.uri,
                        header("x-forwarded-for"),
                        header("x-forwarded-proto"),
                        String::from_utf8_lossy(&body)
                    );
                    let body = Full::new(Bytes::from(said));
                    let resp = if parts.uri.path() == "/chunked" {
                        Response::new(http_body_util::Either::Left(Unsized(body)))
                    } else {
                        Response::new(http_body_util::Either::Right(body))
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "current_thread")]
async fn pipelined_chunked_and_http10_requests_are_answered_in_order() {
    let front = front(backend().await);
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(front.serve_connection(server, "192.0.2.1:40000".parse().expect("addr")));
    // All in one write: the front must answer them one after another.
    client
        .write_all(
            b"GET /a?x=1 HTTP/1.1\r\nHost: web.example\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n\
              POST /b HTTP/1.1\r\nHost: web.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n\
              GET /chunked HTTP/1.1\r\nHost: web.example\r\n\r\n\
              POST /nope HTTP/1.1\r\nHost: elsewhere.example\r\nContent-Length: 5\r\n\r\nhello\
              GET /c HTTP/1.0\r\nHost: web.example\r\n\r\n",
        )
        .await
        .expect("write");
    let mut out = Vec::new();
    // The HTTP/1.0 request ends the connection.
    client.read_to_end(&mut out).await.expect("read");
    let out = String::from_utf8_lossy(&out);
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in:\n{out}"));
    let order = [
        at("GET /a?x=1 xff=10.0.0.1, 192.0.2.1 proto=http body=\n"),
        at("POST /b xff=192.0.2.1 proto=http body=abcde\n"),
        at("transfer-encoding: chunked\r\n"),
        at("GET /chunked xff=192.0.2.1"),
        at("HTTP/1.1 404 Not Found"),
        at("HTTP/1.0 200 OK"),
        at("GET /c xff=192.0.2.1"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "answers out of order:\n{out}");
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    assert!(out.ends_with("GET /c xff=192.0.2.1 proto=http body=\n"), "{out}");
}

#[tokio::test(flavor = "current_thread")]
async fn ambiguous_framing_and_oversized_heads_are_refused() {
    let front = front(backend().await);
    for (input, status) in [
        (
            &b"POST / HTTP/1.1\r\nHost: web.example\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"[..],
            "400",
        ),
        (b"POST / HTTP/1.1\r\nHost: web.example\r\nContent-Length: x\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: web.example\r\nX-Big: ", "431"),
    ] {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        tokio::spawn(front.clone().serve_connection(server, "192.0.2.1:40000".parse().expect("addr")));
        let mut bytes = input.to_vec();
        if status == "431" {
            bytes.extend(std::iter::repeat_n(b'a', 70 * 1024));
        }
        client.write_all(&bytes).await.expect("write");
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.expect("read");
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
    }
}
