//! The change feed. Consumers take the current state, then receive every
//! change after it. A consumer that falls behind the buffer gets `Reset` and
//! re-reads the state: it never silently misses a change.

use crate::command::Command;
use std::sync::Arc;
use tokio::sync::broadcast;

const BUFFER: usize = 4096;

#[derive(Debug, Clone)]
pub struct Change {
    /// Raft log index of the applied command.
    pub index: u64,
    pub command: Arc<Command>,
}

#[derive(Debug, Clone)]
enum Event {
    Change(Change),
    /// The whole state was replaced (snapshot installed).
    Reset(u64),
}

/// What a subscriber sees next.
#[derive(Debug, Clone)]
pub enum Update {
    /// Re-read the whole state; changes before `index` are folded into it.
    Reset {
        index: u64,
    },
    Change(Change),
}

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Event>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed { tx: broadcast::channel(BUFFER).0 }
    }
}

impl Feed {
    pub(crate) fn publish(&self, index: u64, command: Arc<Command>) {
        // No receivers is fine: nobody is watching yet.
        let _ = self.tx.send(Event::Change(Change { index, command }));
    }

    pub(crate) fn reset(&self, index: u64) {
        let _ = self.tx.send(Event::Reset(index));
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.tx.subscribe() }
    }
}

pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next update; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Update> {
        match self.rx.recv().await {
            Ok(Event::Change(c)) => Some(Update::Change(c)),
            Ok(Event::Reset(index)) => Some(Update::Reset { index }),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                self.rx = self.rx.resubscribe();
                Some(Update::Reset { index: 0 })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Drains everything already queued without waiting; true if anything was.
    pub fn drain(&mut self) -> bool {
        let mut any = false;
        loop {
            match self.rx.try_recv() {
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => any = true,
                Err(_) => return any,
            }
        }
    }
}
