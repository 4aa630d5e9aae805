//! AppendEntries on one long-lived connection per follower. The leader's
//! replication to a peer upgrades one HTTP/1.1 request on the RPC port
//! (`GET /raft/stream`, `Upgrade: wharf-raft/1`), so the connection is made,
//! authenticated and encrypted exactly as every other RPC (`RpcClient`'s
//! mutual TLS, the RPC server's check of the peer's certificate), and then
//! carries length-prefixed frames, one request and its answer at a time.
//! Against a POST per call this saves the HTTP client's hand-off to its
//! connection task and back, HTTP framing and routing, and a follower answers
//! from the task that read the request.
//!
//! A frame is a `u32` big-endian length of what follows, one kind byte, then
//! the body: JSON, the same documents the POST routes carry. A request's kind
//! says what it is (`APPEND`); an answer's says whether the body is the
//! handler's result (`OK`) or why the request was not handled (`REFUSED`,
//! UTF-8 text). A peer that does not serve the route (an older node during a
//! rolling upgrade) answers the upgrade 404, and the caller POSTs as before.

use crate::network::MAX_RPC_BODY;
use crate::raft_types::{Raft, TypeConfig};
use crate::StoreMetrics;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use openraft::raft::AppendEntriesRequest;
use std::time::Duration;
use sync_wrapper::SyncWrapper;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trust::RpcClient;

/// The route a leader upgrades, and the protocol it upgrades to.
pub const STREAM_PATH: &str = "/raft/stream";
pub const PROTOCOL: &str = "wharf-raft/1";

/// Request kinds.
pub(crate) const APPEND: u8 = 1;
/// Answer kinds.
const OK: u8 = 0;
const REFUSED: u8 = 1;

/// A follower closes a stream that carried nothing for this long: a leader
/// sends a heartbeat every 100 ms, so the leader is gone or deposed (its
/// side is dropped then, which closes it sooner when the network is up).
const IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("upgrading to the Raft stream: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the peer answered the stream upgrade with {0}")]
    Status(StatusCode),
    #[error("the Raft stream: {0}")]
    Io(#[from] std::io::Error),
    #[error("a Raft stream frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("the peer refused the request: {0}")]
    Refused(String),
    #[error("the peer answered with a frame of unknown kind {0}")]
    UnknownKind(u8),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The leader's end of a stream to one peer.
pub(crate) struct StreamConn {
    /// Only ever used through `&mut self`, so wrapping it makes the
    /// connection `Sync` without a lock.
    io: SyncWrapper<Box<dyn Io>>,
    /// A request was sent and its answer not wholly read: the call was
    /// abandoned (a timeout dropped it), so the frames are out of step.
    in_flight: bool,
    buf: Vec<u8>,
}

/// What an upgrade attempt found.
pub(crate) enum Opened {
    Stream(StreamConn),
    /// The peer does not serve the stream: it is older than this node.
    Unsupported,
}

/// Upgrades a request to `addr`'s RPC port into a stream.
pub(crate) async fn open(client: &RpcClient, addr: &str) -> Result<Opened, StreamError> {
    let resp = client
        .http()
        .get(client.url(addr, STREAM_PATH))
        .version(reqwest::Version::HTTP_11)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .send()
        .await?;
    match resp.status() {
        StatusCode::SWITCHING_PROTOCOLS => {}
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => return Ok(Opened::Unsupported),
        s => return Err(StreamError::Status(s)),
    }
    let io = resp.upgrade().await?;
    Ok(Opened::Stream(StreamConn { io: SyncWrapper::new(Box::new(io)), in_flight: false, buf: Vec::new() }))
}

impl StreamConn {
    /// Whether an earlier call was abandoned halfway (the stream is unusable).
    pub(crate) fn broken(&self) -> bool {
        self.in_flight
    }

    /// Sends one request and reads its answer's body.
    pub(crate) async fn call(&mut self, kind: u8, body: &[u8]) -> Result<&[u8], StreamError> {
        self.in_flight = true;
        let io = self.io.get_mut();
        write_frame(io, kind, body).await?;
        let kind = read_frame(io, &mut self.buf).await?;
        self.in_flight = false;
        match kind {
            OK => Ok(&self.buf),
            REFUSED => Err(StreamError::Refused(String::from_utf8_lossy(&self.buf).into_owned())),
            k => Err(StreamError::UnknownKind(k)),
        }
    }
}

/// One frame in one write (a TLS record or a few, and one flush): a header
/// written apart would go out as a packet of its own.
async fn write_frame(io: &mut (impl AsyncWrite + Unpin), kind: u8, body: &[u8]) -> Result<(), StreamError> {
    let len = u32::try_from(body.len() + 1).map_err(|_| StreamError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.push(kind);
    frame.extend_from_slice(body);
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads one frame's body into `buf`; returns its kind.
async fn read_frame(io: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> Result<u8, StreamError> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len > MAX_RPC_BODY + 1 {
        return Err(StreamError::TooLarge(len));
    }
    buf.resize(len - 1, 0);
    io.read_exact(buf).await?;
    Ok(head[4])
}

/// `GET /raft/stream` with `Upgrade: wharf-raft/1`: switches the connection
/// to frames and serves them until the leader closes it.
pub(crate) async fn upgrade(
    State(raft): State<Raft>,
    Extension(metrics): Extension<StoreMetrics>,
    mut req: Request,
) -> Response {
    let wanted =
        req.headers().get(header::UPGRADE).is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(PROTOCOL.as_bytes()));
    if !wanted {
        return (StatusCode::BAD_REQUEST, format!("this route upgrades to {PROTOCOL} only")).into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => serve(hyper_util::rt::TokioIo::new(io), raft, metrics).await,
            Err(e) => tracing::debug!(error = %e, "Raft stream: the upgrade did not complete"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}

/// The follower's end: one request at a time, answered from this task.
async fn serve(mut io: impl AsyncRead + AsyncWrite + Unpin, raft: Raft, metrics: StoreMetrics) {
    let mut buf = Vec::new();
    loop {
        let kind = match tokio::time::timeout(IDLE, read_frame(&mut io, &mut buf)).await {
            Ok(Ok(kind)) => kind,
            Ok(Err(StreamError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
            Ok(Err(e)) => return tracing::debug!(error = %e, "Raft stream: closed"),
            Err(_) => return tracing::debug!("Raft stream: idle, closed"),
        };
        let (kind, body) = match kind {
            APPEND => answer_append(&raft, &metrics, &buf).await,
            k => (REFUSED, format!("unknown request kind {k}").into_bytes()),
        };
        if let Err(e) = write_frame(&mut io, kind, &body).await {
            return tracing::debug!(error = %e, "Raft stream: cannot answer, closed");
        }
    }
}

async fn answer_append(raft: &Raft, metrics: &StoreMetrics, body: &[u8]) -> (u8, Vec<u8>) {
    let req: AppendEntriesRequest<TypeConfig> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return (REFUSED, format!("not an AppendEntries request: {e}").into_bytes()),
    };
    let (started, entries) = (std::time::Instant::now(), req.entries.len());
    let res = raft.append_entries(req).await;
    if entries > 0 {
        metrics.append_served_seconds.observe(started.elapsed().as_secs_f64());
    }
    match serde_json::to_vec(&res) {
        Ok(v) => (OK, v),
        Err(e) => (REFUSED, format!("cannot encode the answer: {e}").into_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, APPEND, b"{\"x\":1}").await.expect("write");
        write_frame(&mut a, OK, b"").await.expect("write empty");
        let mut buf = Vec::new();
        assert_eq!(read_frame(&mut b, &mut buf).await.expect("read"), APPEND);
        assert_eq!(buf, b"{\"x\":1}");
        assert_eq!(read_frame(&mut b, &mut buf).await.expect("read empty"), OK);
        assert!(buf.is_empty());
        // A length past the limit is refused before anything is allocated.
        a.write_all(&(u32::MAX).to_be_bytes()).await.expect("write");
        a.write_all(&[APPEND]).await.expect("write");
        assert!(matches!(read_frame(&mut b, &mut buf).await, Err(StreamError::TooLarge(_))));
    }
}
