//! Group commit of proposals. openraft 0.9's core appends one client write
//! at a time, so writers proposing together would each cost an entry (an
//! append, a place in an AppendEntries, an apply). The proposer keeps at most
//! `IN_FLIGHT` entries of its own in Raft; commands that arrive meanwhile
//! wait and go together, as one `Command::Batch` entry (one append, one
//! fsync, one place in an AppendEntries), when a slot frees. A lone writer
//! goes at once, as its own entry.
//!
//! A writer that finds the proposer idle (nothing queued, no entry of its
//! own in Raft) proposes from its own task, sparing the two hand-offs (to
//! the loop, then to a task per entry) that cost a lone writer on every
//! write. Only when idle: a writer that took a free slot while a batch was
//! in flight would put a one-command entry in the slot the next batch
//! needed, which cut batching at 64 clients when it was tried.
//!
//! Each part of a batch is applied in order as if proposed alone and gets
//! its own answer; the feed carries each part as its own change.

use crate::command::{Applied, Command};
use crate::raft_types::Raft;
use openraft::error::{ClientWriteError, RaftError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Entries of this proposer in Raft at once. The leader's log acknowledges
/// its own entries before their fsync (see `log_store`), so openraft's core
/// no longer waits on each append and entries in flight go out together in
/// the next AppendEntries. 4 was tried (fuller AppendEntries at 64 clients)
/// but the machine was too noisy to show a gain, so 2 stays.
const IN_FLIGHT: usize = 2;

/// Commands in one batch. With `max_payload_entries` it bounds one
/// AppendEntries to a follower that fell behind.
pub(crate) const MAX_BATCH: usize = 64;

/// A write that has waited this long for its commit is logged.
const SLOW: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a proposal was not applied.
#[derive(Debug, Clone)]
pub(crate) enum ProposeError {
    /// This node does not lead; the leader's RPC address if known.
    NotLeader(Option<String>),
    Failed(String),
}

struct Waiting {
    cmd: Command,
    reply: oneshot::Sender<Result<(Applied, u64), ProposeError>>,
}

/// The handle proposals go through (cheap to clone).
#[derive(Clone)]
pub(crate) struct Proposer {
    tx: mpsc::UnboundedSender<Waiting>,
    raft: Raft,
    slots: Arc<Semaphore>,
    /// Commands handed to the loop and not yet answered, plus a lone
    /// writer's entry in flight: zero only when the proposer is idle.
    busy: Arc<AtomicUsize>,
}

/// One unit of `Proposer::busy`, given back when dropped (also when the
/// writer's future is dropped before its answer).
struct Busy(Arc<AtomicUsize>, usize);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

impl Proposer {
    pub(crate) fn start(raft: Raft) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let busy = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(raft.clone(), rx, slots.clone(), busy.clone()));
        Proposer { tx, raft, slots, busy }
    }

    /// Commits `cmd` through the local Raft node: its answer and log index.
    pub(crate) async fn write(&self, cmd: Command) -> Result<(Applied, u64), ProposeError> {
        if self.busy.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let busy = Busy(self.busy.clone(), 1);
            // Idle: every slot is free (the loop gives its slot back before
            // its count), so this cannot fail unless the store is stopping.
            if let Ok(_slot) = self.slots.clone().try_acquire_owned() {
                return write_one(&self.raft, cmd).await;
            }
            drop(busy);
        }
        let (reply, rx) = oneshot::channel();
        let stopped = || ProposeError::Failed("the store is shutting down".into());
        self.busy.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Waiting { cmd, reply }).is_err() {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return Err(stopped());
        }
        rx.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Waiting>, slots: Arc<Semaphore>, busy: Arc<AtomicUsize>) {
    while let Some(first) = rx.recv().await {
        // Waiting for a slot is what lets later commands gather.
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let done = Busy(busy.clone(), batch.len());
        tokio::spawn(async move {
            submit(&raft, batch).await;
            // The slot first: once the count reads idle, every slot is free.
            drop(permit);
            drop(done);
        });
    }
}

/// Commits one command as its own entry: its answer and log index.
async fn write_one(raft: &Raft, cmd: Command) -> Result<(Applied, u64), ProposeError> {
    watched(raft, raft.client_write(cmd)).await.map(|r| (r.data, r.log_id.index)).map_err(refused)
}

/// Awaits `write`, logging once when it has waited `SLOW`: a write that
/// never commits while this node leads would otherwise hold up its callers
/// (the API, the leader's plans, the agent's reports) without a trace.
async fn watched<F: std::future::Future>(raft: &Raft, write: F) -> F::Output {
    tokio::pin!(write);
    tokio::select! {
        out = &mut write => return out,
        _ = tokio::time::sleep(SLOW) => {}
    }
    let m = raft.metrics().borrow().clone();
    tracing::warn!(
        state = ?m.state,
        leader = ?m.current_leader,
        last_log = ?m.last_log_index,
        applied = ?m.last_applied.map(|l| l.index),
        "a write has waited {} s for its commit",
        SLOW.as_secs()
    );
    write.await
}

fn refused(e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> ProposeError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ProposeError::NotLeader(f.leader_node.map(|n| n.addr))
        }
        e => ProposeError::Failed(e.to_string()),
    }
}

async fn submit(raft: &Raft, mut batch: Vec<Waiting>) {
    if batch.len() == 1 {
        if let Some(w) = batch.pop() {
            let _ = w.reply.send(write_one(raft, w.cmd).await);
        }
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|w| (w.cmd, w.reply)).unzip();
    match watched(raft, raft.client_write(Command::Batch(cmds))).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            match resp.data {
                Applied::Each(answers) if answers.len() == replies.len() => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(Ok((answer, index)));
                    }
                }
                other => {
                    tracing::error!(?other, "a batch of commands was answered with the wrong kind of answer");
                    for reply in replies {
                        let _ = reply.send(Err(ProposeError::Failed("the batch's answer has the wrong shape".into())));
                    }
                }
            }
        }
        Err(e) => {
            let e = refused(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
