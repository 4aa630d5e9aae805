//! The node's supervisor: owns the node's long-running subsystems (servers,
//! the leader's loops, the agent) and decides what happens when one ends.
//!
//! A subsystem is a name, a policy and a factory that makes its future. One
//! that ends or panics is logged with its cause. A [`Policy::Restart`] one is
//! started again after a backoff (it must be safe to start twice: it reads
//! what it needs from the store); one that keeps failing is given up on and
//! ends the run like a [`Policy::Fatal`] one (a server whose listener is
//! gone). Either way the node stops with the subsystem's name and cause
//! instead of answering `/ping` while it no longer schedules or runs tasks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;

/// What to do when a subsystem ends (while the node is not shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Start it again after a backoff.
    Restart,
    /// End the run: the node cannot work without it.
    Fatal,
}

/// How restarts are paced and when they stop.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first restart; doubled for each further one.
    pub initial: Duration,
    pub max: Duration,
    /// A subsystem that ran this long counts as healthy again: its next
    /// failure starts over at `initial`.
    pub reset_after: Duration,
    /// This many failures in a row (without a healthy run between) and the
    /// subsystem is treated as fatal.
    pub give_up_after: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(30),
            give_up_after: 10,
        }
    }
}

/// A subsystem ended the run: its name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub name: &'static str,
    pub cause: String,
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subsystem '{}' stopped: {}", self.name, self.cause)
    }
}

impl std::error::Error for Fatal {}

/// What a subsystem's future may end with: `()` or a `Result` whose error
/// says why.
pub trait Ending {
    fn into_cause(self) -> Option<String>;
}

impl Ending for () {
    fn into_cause(self) -> Option<String> {
        None
    }
}

impl<E: fmt::Display> Ending for Result<(), E> {
    fn into_cause(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

impl Ending for Option<String> {
    fn into_cause(self) -> Option<String> {
        self
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;
type Factory = Box<dyn FnMut() -> BoxFuture + Send>;

struct Subsystem {
    name: &'static str,
    policy: Policy,
    make: Factory,
    /// Failures since the last healthy run.
    failures: u32,
    started: Instant,
}

#[derive(Default)]
pub struct Supervisor {
    subsystems: Vec<Subsystem>,
    running: JoinSet<Option<String>>,
    /// Which subsystem each running task is.
    tasks: std::collections::HashMap<Id, usize>,
    backoff: Backoff,
}

impl Supervisor {
    pub fn new(backoff: Backoff) -> Supervisor {
        Supervisor { backoff, ..Default::default() }
    }

    /// Starts `make()` now, and again on every restart.
    pub fn start<F, Fut>(&mut self, name: &'static str, policy: Policy, mut make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Ending,
    {
        let make: Factory = Box::new(move || {
            let fut = make();
            Box::pin(async move { fut.await.into_cause() })
        });
        self.subsystems.push(Subsystem { name, policy, make, failures: 0, started: Instant::now() });
        self.spawn(self.subsystems.len() - 1, Duration::ZERO);
    }

    /// Starts a subsystem that can run only once (it owns a listener):
    /// always [`Policy::Fatal`].
    pub fn start_once<Fut>(&mut self, name: &'static str, fut: Fut)
    where
        Fut: Future + Send + 'static,
        Fut::Output: Ending,
    {
        let mut once = Some(fut);
        self.start(name, Policy::Fatal, move || {
            let fut = once.take();
            async move {
                match fut {
                    Some(fut) => fut.await.into_cause(),
                    None => Some("cannot be started twice".to_string()),
                }
            }
        });
    }

    fn spawn(&mut self, index: usize, delay: Duration) {
        let Some(sub) = self.subsystems.get_mut(index) else { return };
        let fut = (sub.make)();
        sub.started = Instant::now() + delay;
        let handle = self.running.spawn(async move {
            tokio::time::sleep(delay).await;
            fut.await
        });
        self.tasks.insert(handle.id(), index);
    }

    /// Runs until `shutdown` completes (`Ok`) or a subsystem ends the run.
    pub async fn run_until(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), Fatal> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                Some(ended) = self.running.join_next_with_id() => self.ended(ended)?,
            }
        }
    }

    /// Handles one subsystem's end: restarts it or says the run is over.
    fn ended(&mut self, ended: Result<(Id, Option<String>), JoinError>) -> Result<(), Fatal> {
        let (id, cause) = match ended {
            Ok((id, None)) => (id, "ended unexpectedly".to_string()),
            Ok((id, Some(e))) => (id, format!("failed: {e}")),
            Err(e) => (e.id(), describe(e)),
        };
        let Some(index) = self.tasks.remove(&id) else { return Ok(()) };
        let backoff = self.backoff;
        let Some(sub) = self.subsystems.get_mut(index) else { return Ok(()) };
        let name = sub.name;
        if sub.policy == Policy::Fatal {
            tracing::error!(subsystem = name, %cause, "a vital subsystem stopped; stopping the node");
            return Err(Fatal { name, cause });
        }
        if sub.started.elapsed() >= backoff.reset_after {
            sub.failures = 0;
        }
        sub.failures += 1;
        if sub.failures >= backoff.give_up_after {
            tracing::error!(subsystem = name, %cause, failures = sub.failures, "a subsystem keeps failing; stopping the node");
            return Err(Fatal { name, cause: format!("{cause} ({} times in a row)", sub.failures) });
        }
        let exp = sub.failures.saturating_sub(1).min(16);
        let delay = backoff.initial.saturating_mul(1 << exp).min(backoff.max);
        tracing::error!(subsystem = name, %cause, restart_in = ?delay, "a subsystem stopped; restarting it");
        self.spawn(index, delay);
        Ok(())
    }

    /// During shutdown: waits up to `timeout` for the subsystem `name` to
    /// end by itself (a server draining its connections). Nothing is
    /// restarted any more.
    pub async fn wait_for(&mut self, name: &'static str, timeout: Duration) {
        let wanted: Vec<Id> = self
            .tasks
            .iter()
            .filter(|(_, i)| self.subsystems.get(**i).is_some_and(|s| s.name == name))
            .map(|(id, _)| *id)
            .collect();
        let deadline = Instant::now() + timeout;
        while wanted.iter().any(|id| self.tasks.contains_key(id)) {
            match tokio::time::timeout_at(deadline, self.running.join_next_with_id()).await {
                Ok(Some(Ok((id, _)))) => {
                    self.tasks.remove(&id);
                }
                Ok(Some(Err(e))) => {
                    self.tasks.remove(&e.id());
                }
                Ok(None) | Err(_) => return,
            }
        }
    }
}

/// A task that did not return: its panic message, or that it was cancelled.
fn describe(e: JoinError) -> String {
    if !e.is_panic() {
        return "cancelled".to_string();
    }
    let payload = e.into_panic();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    format!("panicked: {msg}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn quick() -> Backoff {
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            reset_after: Duration::from_secs(60),
            give_up_after: 4,
        }
    }

    /// Runs `sup` until it ends or `within` passes.
    async fn run_for(sup: &mut Supervisor, within: Duration) -> Result<(), Fatal> {
        sup.run_until(tokio::time::sleep(within)).await
    }

    #[tokio::test]
    async fn a_panicking_subsystem_is_restarted_and_keeps_its_work_going() {
        let mut sup = Supervisor::new(quick());
        let starts = Arc::new(AtomicU32::new(0));
        let up = Arc::new(tokio::sync::Notify::new());
        let (s, u) = (starts.clone(), up.clone());
        sup.start("flaky", Policy::Restart, move || {
            let (n, up) = (s.fetch_add(1, Ordering::SeqCst), u.clone());
            async move {
                if n < 2 {
                    panic!("boom {n}");
                }
                // The third start stays up, as a healthy loop does.
                up.notify_one();
                std::future::pending::<()>().await;
            }
        });
        // Until the third start is up (panic output can be slow), then a
        // while longer to see that nothing restarts it again.
        let settled = async {
            up.notified().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let r = tokio::time::timeout(Duration::from_secs(20), sup.run_until(settled)).await;
        assert_eq!(r.ok(), Some(Ok(())), "the run goes on");
        assert_eq!(starts.load(Ordering::SeqCst), 3, "two panics, two restarts, then it stays up");
    }

    #[tokio::test]
    async fn a_fatal_subsystem_ends_the_run_with_its_name_and_cause() {
        let mut sup = Supervisor::new(quick());
        sup.start("steady", Policy::Restart, std::future::pending::<()>);
        sup.start("http", Policy::Fatal, || async { Err::<(), _>("listener closed") });
        let r = run_for(&mut sup, Duration::from_secs(5)).await;
        assert_eq!(r, Err(Fatal { name: "http", cause: "failed: listener closed".into() }));
    }

    #[tokio::test]
    async fn a_fatal_subsystem_that_panics_or_returns_also_ends_the_run() {
        let mut sup = Supervisor::new(quick());
        async fn explode() {
            panic!("socket gone")
        }
        sup.start("rpc", Policy::Fatal, explode);
        let r = run_for(&mut sup, Duration::from_secs(5)).await;
        assert_eq!(r, Err(Fatal { name: "rpc", cause: "panicked: socket gone".into() }));

        let mut sup = Supervisor::new(quick());
        sup.start("rpc", Policy::Fatal, || async {});
        let r = run_for(&mut sup, Duration::from_secs(5)).await;
        assert_eq!(r, Err(Fatal { name: "rpc", cause: "ended unexpectedly".into() }));
    }

    #[tokio::test]
    async fn a_subsystem_that_keeps_failing_is_given_up_on() {
        let mut sup = Supervisor::new(quick());
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        sup.start("orchestrator", Policy::Restart, move || {
            s.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let t = Instant::now();
        let r = run_for(&mut sup, Duration::from_secs(5)).await;
        assert_eq!(r, Err(Fatal { name: "orchestrator", cause: "ended unexpectedly (4 times in a row)".into() }));
        assert_eq!(starts.load(Ordering::SeqCst), 4);
        // Backoff between the starts: 10 + 20 + 40 ms at least.
        assert!(t.elapsed() >= Duration::from_millis(70), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_draining_subsystem_then_stops() {
        let mut sup = Supervisor::new(quick());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let drained = Arc::new(AtomicU32::new(0));
        let d = drained.clone();
        sup.start("http", Policy::Fatal, move || {
            let (mut rx, d) = (stop_rx.clone(), d.clone());
            async move {
                let _ = rx.changed().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                d.store(1, Ordering::SeqCst);
            }
        });
        sup.start("loop", Policy::Restart, std::future::pending::<()>);
        assert_eq!(run_for(&mut sup, Duration::from_millis(50)).await, Ok(()));
        let _ = stop_tx.send(true);
        sup.wait_for("http", Duration::from_secs(5)).await;
        assert_eq!(drained.load(Ordering::SeqCst), 1, "the server finished draining");
    }
}
