//! Keep-alive connections from the HTTP front to backends, one pool per
//! proxy thread: a connection is taken for one request and handed back
//! once its response has been read to the end, and closed after `IDLE`
//! unused (`Pool::sweep`). The connections are plain sockets the front
//! writes requests to and reads responses from itself (`http`), with no
//! task of their own.

use bytes::BytesMut;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// An idle connection unused for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per backend (more are closed when handed back).
const MAX_IDLE: usize = 256;

/// One connection to a backend and what has been read from it but not yet
/// passed on.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// Taken from the pool (rather than just opened): a failure before any
    /// answer may be the backend having closed it while it idled.
    pub reused: bool,
}

pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<(Conn, Instant)>>>,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Pool {
        Pool { idle: Mutex::new(HashMap::new()), connect_timeout }
    }

    /// An idle connection to `addr` that is still open, or a new one.
    pub async fn get(&self, addr: SocketAddr) -> io::Result<Conn> {
        if let Some(c) = self.take(addr) {
            return Ok(c);
        }
        self.connect(addr).await
    }

    /// A new connection to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<Conn> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        stream.set_nodelay(true)?;
        Ok(Conn { stream, buf: BytesMut::with_capacity(8 * 1024), reused: false })
    }

    fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(&addr)?;
        // Not checked for having been closed by the backend (that would cost
        // a system call per request): a reused connection that fails before
        // any answer gives the request to the next one (`http::send`).
        let (mut c, _) = list.pop()?;
        c.reused = true;
        Some(c)
    }

    /// Hands back a connection whose response has been read to its end.
    pub fn put(&self, addr: SocketAddr, conn: Conn) {
        if !conn.buf.is_empty() {
            // Bytes after the response: the backend is out of step.
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(addr).or_default();
            if list.len() < MAX_IDLE {
                list.push((conn, Instant::now()));
            }
        }
    }

    /// Closes the connections idle for `IDLE`.
    pub fn sweep(&self) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) < IDLE);
                !list.is_empty()
            });
        }
    }

    /// Idle connections held (for tests).
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|m| m.values().map(Vec::len).sum()).unwrap_or(0)
    }
}
