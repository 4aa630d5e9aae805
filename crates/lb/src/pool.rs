//! Keep-alive connections from the HTTP front to backends, one pool per
//! proxy thread. Smaller than hyper-util's pool on purpose, which cost a
//! task spawned per request (waiting for the connection to turn idle) and
//! a hashed scheme-and-authority key: here a connection is taken for one
//! request and handed back by the response body when it has ended, and
//! closed after `IDLE` unused (`Pool::sweep`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One backend connection's sending half (hyper drives the connection in
/// a task of its own).
pub type Sender = SendRequest<Full<Bytes>>;

/// An idle connection unused for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per backend (more are closed when handed back).
const MAX_IDLE: usize = 256;

pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Sender, Instant)>>>,
    connect_timeout: Duration,
}

/// Why a request got no answer from a backend.
#[derive(Debug)]
pub enum SendError {
    /// It never reached the backend (refused, no answer in time, or the
    /// connection failed before the request was written): another backend
    /// may take it.
    Unsent(io::Error),
    /// The backend took the request and failed or closed before answering.
    Failed(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Unsent(e) => write!(f, "not sent: {e}"),
            SendError::Failed(e) => e.fmt(f),
        }
    }
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Pool {
        Pool { idle: Mutex::new(HashMap::new()), connect_timeout }
    }

    /// Sends `req` to `addr` over an idle connection or a new one; returns
    /// the response head and the connection, for the response body to hand
    /// back (`put`) once it has ended.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Sender), SendError> {
        // A pooled connection the backend closed while it idled gives the
        // request back unsent: try the next one, then a new one.
        while let Some(mut s) = self.take(addr) {
            if s.ready().await.is_err() {
                continue;
            }
            match s.try_send_request(req).await {
                Ok(resp) => return Ok((resp, s)),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        let mut s = self.connect(addr).await.map_err(SendError::Unsent)?;
        match s.try_send_request(req).await {
            Ok(resp) => Ok((resp, s)),
            Err(mut e) => match e.take_message() {
                Some(_) => Err(SendError::Unsent(io::Error::other(e.into_error()))),
                None => Err(SendError::Failed(e.into_error())),
            },
        }
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Sender> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(io::Error::other)?;
        tokio::spawn(async move {
            // Ends when the backend closes or the pool drops the sender.
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        while let Some((s, _)) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Hands back a connection whose response has ended.
    pub fn put(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            if list.len() < MAX_IDLE {
                list.push((sender, Instant::now()));
            }
        }
    }

    /// Closes the connections idle for `IDLE` and forgets closed ones.
    pub fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|_, list| {
                list.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < IDLE);
                !list.is_empty()
            });
        }
    }

    /// Idle connections held (for tests).
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|m| m.values().map(Vec::len).sum()).unwrap_or(0)
    }
}
