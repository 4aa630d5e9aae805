//! The change feed. Consumers take the current state, then receive every
//! change after it: the command, its log index, its effects (what it
//! changed) and the immutable state right after it. A consumer that falls
//! behind the buffer gets `Reset` with a fresh snapshot and resumes from its
//! index: it never silently misses a change, and never sees one twice.

use crate::command::Command;
use crate::effect::Effect;
use arc_swap::ArcSwap;
use model::ClusterState;
use std::sync::Arc;
use tokio::sync::broadcast;

const BUFFER: usize = 4096;

#[derive(Debug, Clone)]
pub struct Change {
    /// Raft log index of the applied command.
    pub index: u64,
    pub command: Arc<Command>,
    /// What the command changed, in the order a consumer should act on it.
    pub effects: Arc<[Effect]>,
    /// The state right after this command.
    pub state: Arc<ClusterState>,
}

#[derive(Debug, Clone)]
enum Event {
    Change(Change),
    /// The whole state was replaced (snapshot installed).
    Reset(Arc<ClusterState>),
}

/// What a subscriber sees next.
#[derive(Debug, Clone)]
pub enum Update {
    /// Start over from `state` (at log index `index`): changes up to it are
    /// folded into it; the next `Change` follows it.
    Reset {
        index: u64,
        state: Arc<ClusterState>,
    },
    Change(Change),
}

#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Event>,
    current: Arc<ArcSwap<ClusterState>>,
}

impl Feed {
    pub(crate) fn new(current: Arc<ArcSwap<ClusterState>>) -> Feed {
        Feed { tx: broadcast::channel(BUFFER).0, current }
    }

    pub(crate) fn publish(&self, change: Change) {
        // No receivers is fine: nobody is watching yet.
        let _ = self.tx.send(Event::Change(change));
    }

    pub(crate) fn reset(&self, state: Arc<ClusterState>) {
        let _ = self.tx.send(Event::Reset(state));
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.tx.subscribe(), current: self.current.clone(), seen: 0 }
    }
}

pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    current: Arc<ArcSwap<ClusterState>>,
    /// Changes at or below this index are already folded into the last
    /// `Reset` this subscriber got.
    seen: u64,
}

impl Subscription {
    /// The next update; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            match self.rx.recv().await {
                Ok(Event::Change(c)) if c.index <= self.seen => {}
                Ok(Event::Change(c)) => return Some(Update::Change(c)),
                Ok(Event::Reset(state)) => {
                    self.seen = state.applied_index;
                    return Some(Update::Reset { index: state.applied_index, state });
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(self.lagged()),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Resubscribes, then reads the state: a change published in between is
    /// both in the state and in the new queue, and is skipped by its index.
    fn lagged(&mut self) -> Update {
        self.rx = self.rx.resubscribe();
        let state = self.current.load_full();
        self.seen = state.applied_index;
        Update::Reset { index: state.applied_index, state }
    }

    /// The next update if one is already queued, without waiting.
    pub fn try_next(&mut self) -> Option<Update> {
        loop {
            match self.rx.try_recv() {
                Ok(Event::Change(c)) if c.index <= self.seen => {}
                Ok(Event::Change(c)) => return Some(Update::Change(c)),
                Ok(Event::Reset(state)) => {
                    self.seen = state.applied_index;
                    return Some(Update::Reset { index: state.applied_index, state });
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => return Some(self.lagged()),
                Err(_) => return None,
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes the change at `index`, as the state machine does: the new
    /// state first, then the change.
    fn publish(feed: &Feed, index: u64) {
        let state = Arc::new(ClusterState { applied_index: index, ..ClusterState::default() });
        feed.current.store(state.clone());
        let command = Arc::new(Command::TaskStatuses(Vec::new()));
        feed.publish(Change { index, command, effects: Arc::from(Vec::new()), state });
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_a_reset_and_then_every_later_change() {
        let feed = Feed::new(Arc::new(ArcSwap::from_pointee(ClusterState::default())));
        let mut sub = feed.subscribe();
        publish(&feed, 1);
        assert!(matches!(sub.next().await, Some(Update::Change(c)) if c.index == 1));
        // More changes than the buffer holds while the subscriber reads none.
        let last = 1 + BUFFER as u64 + 10;
        for index in 2..=last {
            publish(&feed, index);
        }
        match sub.next().await {
            Some(Update::Reset { index, state }) => assert_eq!((index, state.applied_index), (last, last)),
            other => panic!("a lagging subscriber must start over, got {other:?}"),
        }
        publish(&feed, last + 1);
        assert!(matches!(sub.next().await, Some(Update::Change(c)) if c.index == last + 1));
    }
}
