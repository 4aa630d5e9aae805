//! The fixed-rate (open-loop) load generator of `wharf bench lb`: HTTP/1.1
//! `GET`s over keep-alive connections from one thread (like `wrk -t1`),
//! sent on a fixed schedule (request `i` is due at `start + i / rate`)
//! whatever the answers do. Each latency is counted from when the request
//! was due, not from when it went out, so a stall weighs in the
//! percentiles as it would for users arriving at that rate: the
//! "coordinated omission" wrk2 corrects (wrk's closed loop waits through a
//! stall and so sends, and counts, less). wrk2 is not in Debian.
//!
//! Due requests go to a queue any idle connection takes from; when every
//! connection is busy they wait there, their clock running. Responses need
//! a `Content-Length` (nginx's and the proxies' do).

use anyhow::Context;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long answers to requests due in the window are waited for after it:
/// what is still unanswered then counts as an error.
const GRACE: Duration = Duration::from_secs(2);
/// The longest the pacer blocks its thread between due times: tokio's
/// timers tick in milliseconds, which at these rates would send requests
/// up to a millisecond late (and count that against the proxy).
const NAP: Duration = Duration::from_micros(100);

/// One fixed-rate run.
pub struct Spec {
    pub addr: SocketAddr,
    /// The `Host` field sent.
    pub host: String,
    /// Requests per second offered.
    pub rate: f64,
    pub connections: usize,
    pub duration: Duration,
}

/// What a run measured.
pub struct Outcome {
    /// Requests due in the window.
    pub due: u64,
    /// Requests answered 2xx (in time).
    pub ok: u64,
    /// 2xx answers per second, over the window or until the last answer.
    pub achieved: f64,
    /// Latencies of the 2xx answers, microseconds, sorted.
    latencies: Vec<u64>,
}

impl Outcome {
    /// Requests due and not answered 2xx in time: error answers, broken
    /// connections and those still waiting at the end.
    pub fn errors(&self) -> u64 {
        self.due.saturating_sub(self.ok)
    }

    /// The `p`th percentile latency (0-100), milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).map_or(f64::NAN, |us| us as f64 / 1000.0)
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with
/// at least `p` percent of them at or below it.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // Less a hair, so that 99.9 percent of 1000 is the 999th, not the 1000th.
    let rank = (p / 100.0 * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// When each request of a run is due, from the run's start.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: f64,
    count: u64,
}

impl Schedule {
    fn new(rate: f64, duration: Duration) -> Schedule {
        Schedule { rate, count: (rate * duration.as_secs_f64()).floor() as u64 }
    }

    /// When request `i` is due.
    fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many requests are due by `elapsed` (at most `count`).
    fn due_by(&self, elapsed: Duration) -> u64 {
        ((elapsed.as_secs_f64() * self.rate).floor() as u64 + 1).min(self.count)
    }
}

/// Runs `spec` on a thread of its own (a single-threaded runtime) and
/// waits for it.
pub fn run(spec: Spec) -> anyhow::Result<Outcome> {
    let handle = std::thread::Builder::new().name("bench-load".into()).spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, drive(spec))
    })?;
    handle.join().map_err(|_| anyhow::anyhow!("the load generator's thread panicked"))?
}

/// What the pacer and the connections share (one thread: no locks).
struct Shared {
    /// Due times of requests not yet taken by a connection.
    queue: RefCell<VecDeque<Instant>>,
    /// Wakes an idle connection when a request is queued.
    queued: Notify,
    /// The pacer is done: connections end once the queue is empty.
    done: Cell<bool>,
    latencies: RefCell<Vec<u64>>,
    last_answer: Cell<Option<Instant>>,
}

async fn drive(spec: Spec) -> anyhow::Result<Outcome> {
    let request: Rc<[u8]> = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", spec.host).into_bytes().into();
    let schedule = Schedule::new(spec.rate, spec.duration);
    let shared = Rc::new(Shared {
        queue: RefCell::new(VecDeque::with_capacity(1024)),
        queued: Notify::new(),
        done: Cell::new(false),
        latencies: RefCell::new(Vec::with_capacity(schedule.count as usize)),
        last_answer: Cell::new(None),
    });
    // Every connection open before the clock starts.
    let mut tasks = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections.max(1) {
        let stream = connect(spec.addr).await.with_context(|| format!("connecting to {}", spec.addr))?;
        tasks.push(tokio::task::spawn_local(connection(shared.clone(), stream, spec.addr, request.clone())));
    }
    let start = Instant::now();
    let mut next = 0;
    while next < schedule.count {
        let elapsed = start.elapsed();
        let now_due = schedule.due_by(elapsed);
        if now_due > next {
            for i in next..now_due {
                shared.queue.borrow_mut().push_back(start + schedule.due(i));
                shared.queued.notify_one();
            }
            next = now_due;
            // Let the connections send them (and the runtime poll sockets).
            tokio::task::yield_now().await;
            continue;
        }
        let wait = schedule.due(next).saturating_sub(elapsed);
        if wait > Duration::from_millis(2) {
            tokio::time::sleep(wait - Duration::from_millis(1)).await;
        } else {
            std::thread::sleep(wait.min(NAP));
            tokio::task::yield_now().await;
        }
    }
    shared.done.set(true);
    shared.queued.notify_waiters();
    let end = start + spec.duration + GRACE;
    for t in &mut tasks {
        if tokio::time::timeout_at(end.into(), &mut *t).await.is_err() {
            break;
        }
    }
    for t in &tasks {
        t.abort();
    }
    let mut latencies = shared.latencies.take();
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    let window = shared.last_answer.get().map_or(spec.duration, |t| (t - start).max(spec.duration));
    Ok(Outcome { due: schedule.count, ok, achieved: ok as f64 / window.as_secs_f64(), latencies })
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One keep-alive connection: takes due requests one at a time until the
/// pacer is done and the queue empty; reconnects after a failure.
async fn connection(shared: Rc<Shared>, mut stream: TcpStream, addr: SocketAddr, request: Rc<[u8]>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let due = loop {
            if let Some(due) = shared.queue.borrow_mut().pop_front() {
                break due;
            }
            if shared.done.get() {
                return;
            }
            shared.queued.notified().await;
        };
        // A failed exchange counts as its request never answered 2xx.
        if let Ok(answer) = exchange(&mut stream, &mut buf, &request).await {
            let now = Instant::now();
            if (200..300).contains(&answer.status) {
                shared.latencies.borrow_mut().push((now - due).as_micros() as u64);
                shared.last_answer.set(Some(now));
            }
            if !answer.close {
                continue;
            }
        }
        buf.clear();
        stream = loop {
            match connect(addr).await {
                Ok(s) => break s,
                Err(_) if shared.done.get() => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
    }
}

struct Answer {
    status: u16,
    close: bool,
}

/// Writes `request` and reads one response with a `Content-Length` body.
async fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> std::io::Result<Answer> {
    let bad = |msg: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string());
    stream.write_all(request).await?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(buf).map_err(|e| bad(&e.to_string()))? {
            let field = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            let length: usize = field("content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
                .ok_or_else(|| bad("a response without Content-Length"))?;
            let close = field("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
            let status = resp.code.unwrap_or(0);
            while buf.len() < head + length {
                read_more(stream, buf).await?;
            }
            buf.drain(..head + length);
            return Ok(Answer { status, close });
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    if buf.len() > 64 * 1024 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "response head too large"));
    }
    buf.reserve(4096);
    if stream.read_buf(buf).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_evenly_over_the_window() {
        let s = Schedule::new(1000.0, Duration::from_secs(2));
        assert_eq!(s.count, 2000);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(500), Duration::from_millis(500));
        // The first is due at once; one more each millisecond.
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_micros(999)), 1);
        assert_eq!(s.due_by(Duration::from_millis(1)), 2);
        assert_eq!(s.due_by(Duration::from_millis(10)), 11);
        // Never more than the window holds.
        assert_eq!(s.due_by(Duration::from_secs(5)), 2000);
        assert_eq!(Schedule::new(2.5, Duration::from_secs(1)).count, 2);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), Some(500));
        assert_eq!(percentile(&v, 99.0), Some(990));
        assert_eq!(percentile(&v, 99.9), Some(999));
        assert_eq!(percentile(&v, 100.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn errors_are_what_was_due_and_not_answered() {
        let o = Outcome { due: 10, ok: 7, achieved: 7.0, latencies: vec![1000; 7] };
        assert_eq!(o.errors(), 3);
        assert_eq!(o.percentile_ms(99.0), 1.0);
    }

    /// A stall at the server weighs in from each request's due time: a
    /// server that answers only after 300 ms, at 20 requests/s over one
    /// connection, leaves later requests waiting for the connection.
    #[test]
    fn latency_counts_from_the_due_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let Ok((mut s, _)) = listener.accept() else { return };
            let mut buf = [0u8; 4096];
            let mut first = true;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if first {
                    std::thread::sleep(Duration::from_millis(300));
                    first = false;
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
            }
        });
        let spec = Spec { addr, host: "t".into(), rate: 20.0, connections: 1, duration: Duration::from_millis(500) };
        let o = run(spec).expect("run");
        assert_eq!((o.due, o.ok, o.errors()), (10, 10, 0));
        // The first waited 300 ms; the ones due while it waited queued.
        assert!(o.percentile_ms(100.0) >= 300.0, "max {}", o.percentile_ms(100.0));
        assert!(o.percentile_ms(50.0) >= 50.0, "p50 {}", o.percentile_ms(50.0));
    }
}
