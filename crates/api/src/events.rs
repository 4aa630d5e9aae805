//! `GET /v2/events`: Marathon's event stream as server-sent events.
//!
//! One `EventBus` per node, started by the first subscriber, turns this
//! node's change feed into Marathon events: each applied command's effects
//! (task before/after, deployments started and finished, apps put and
//! removed) become events, rendered against the state right after that
//! command, so every node serves the same events from its own replica and
//! no change is folded into a later one. Events go out on a bounded
//! broadcast channel: a client that falls more than `CLIENT_BUFFER` events
//! behind is disconnected instead of slowing anyone down.
//!
//! A feed `Reset` (this node fell behind, or installed a snapshot) skips
//! the changes folded into it: clients see no events for them.

use crate::context::ApiContext;
use crate::query::Params;
use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream::{self, Stream, StreamExt};
use marathon::events::{self as ev, MarathonEvent};
use marathon::Embed;
use model::{AppId, UnixMillis};
use std::convert::Infallible;
use std::sync::Arc;
use store::{Change, Command, Effect, Store, Update};
use tokio::sync::broadcast;

/// How many events a client may fall behind before it is disconnected.
const CLIENT_BUFFER: usize = 1024;

/// One event, serialised once for every client.
#[derive(Debug)]
pub struct Published {
    pub event_type: &'static str,
    pub data: String,
}

pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
}

impl EventBus {
    /// Starts following `store`; runs until the store's feed closes.
    pub fn start(store: Arc<Store>) -> EventBus {
        let (tx, _) = broadcast::channel(CLIENT_BUFFER);
        let sender = tx.clone();
        let mut sub = store.subscribe();
        tokio::spawn(async move {
            while let Some(update) = sub.next().await {
                let Update::Change(c) = update else { continue };
                for e in events_of(&c, now()) {
                    let data = e.body.to_string();
                    // No subscribers is fine.
                    let _ = sender.send(Arc::new(Published { event_type: e.event_type, data }));
                }
            }
        });
        EventBus { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Clients following the stream now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

use crate::context::now;

/// The events of one applied command, in the order Marathon sends them: the
/// API write, the deployment start, task updates, then deployment ends and
/// app removals.
fn events_of(c: &Change, now: UnixMillis) -> Vec<MarathonEvent> {
    let s = &c.state;
    let mut out = Vec::new();
    let user_write = matches!(
        *c.command,
        Command::PutApp { .. }
            | Command::PutApps { .. }
            | Command::PutGroup { .. }
            | Command::RollbackDeployment { .. }
    );
    for e in c.effects.iter() {
        match e {
            Effect::AppPut { after, .. } if user_write && !after.deleting => {
                out.push(ev::api_post("", marathon::render_app(after, s, &Embed::default()), now));
            }
            _ => {}
        }
    }
    for e in c.effects.iter() {
        if let Effect::DeploymentStarted(d) = e {
            out.push(ev::deployment_info(d, s, now));
        }
    }
    for e in c.effects.iter() {
        // Expunged: the UI (and any client) learns that the task is gone
        // from the books and, with it, what the leader recorded about it
        // (`lastTaskFailure`, backoff) in the same command.
        if let Effect::TaskChanged { before: Some(b), after: None, .. } = e {
            out.push(ev::instance_gone(b, s, now));
        }
        let Effect::TaskChanged { before, after: Some(t), .. } = e else { continue };
        if t.job_run.is_some() {
            // A job run's task: Metronome has no events stream; not Marathon's to report.
            continue;
        }
        if before.as_ref().map(|b| b.state) != Some(t.state) {
            out.push(ev::status_update(t, s, now));
        }
        if let Some(alive) = t.healthy.filter(|h| before.as_ref().and_then(|b| b.healthy) != Some(*h)) {
            if !alive {
                out.push(ev::failed_health_check(t, s, now));
            }
            out.push(ev::health_status_changed(t, alive, now));
        }
    }
    if let Command::KillUnhealthy { id, reason, .. } = &*c.command {
        let killed = c.effects.iter().any(|e| matches!(e, Effect::TaskChanged { id: k, .. } if k == id));
        if let Some(t) = s.tasks.get(id).filter(|_| killed) {
            out.push(ev::unhealthy_instance_kill(t, reason, now));
        }
    }
    for e in c.effects.iter() {
        match e {
            Effect::DeploymentFinished { deployment: d, succeeded: true } => {
                out.push(ev::deployment_step_success(d, s, now));
                out.push(ev::deployment_success(d, s, now));
                out.push(ev::group_change_success(&AppId::root(), d.version, now));
            }
            Effect::DeploymentFinished { deployment: d, succeeded: false } => {
                out.push(ev::deployment_step_failure(d, s, now));
                out.push(ev::deployment_failed(d, s, now));
            }
            _ => {}
        }
    }
    for e in c.effects.iter() {
        if let Effect::AppRemoved { before } = e {
            out.push(ev::app_terminated(&before.spec.id, now));
        }
    }
    out
}

/// `GET /v2/events?event_type=...` (repeatable).
pub async fn stream_events(State(ctx): State<Arc<ApiContext>>, req: Request) -> impl IntoResponse {
    let p = Params::parse(req.uri().query());
    let wanted: Vec<String> = p.all("event_type").iter().flat_map(|v| v.split(',')).map(str::to_string).collect();
    let keep = move |t: &str| wanted.is_empty() || wanted.iter().any(|w| w == t);
    let remote = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let rx = ctx.events.get_or_init(|| EventBus::start(ctx.store.clone())).subscribe();
    let attached = ev::stream_attached(&remote, now());
    let first: Vec<Result<Event, Infallible>> = if keep(attached.event_type) {
        vec![Ok(Event::default().event(attached.event_type).data(attached.body.to_string()))]
    } else {
        Vec::new()
    };
    Sse::new(stream::iter(first).chain(follow(rx, keep))).keep_alive(KeepAlive::default())
}

/// The bus's events that `keep` accepts; ends when the client lags behind.
fn follow(
    rx: broadcast::Receiver<Arc<Published>>,
    keep: impl Fn(&str) -> bool + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    stream::unfold((rx, keep), |(mut rx, keep)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if keep(e.event_type) => {
                    let event = Event::default().event(e.event_type).data(e.data.as_str());
                    return Some((Ok(event), (rx, keep)));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::info!(missed = n, "event stream client too slow; disconnecting it");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_falls_behind_is_disconnected() {
        let (tx, rx) = broadcast::channel(2);
        for i in 0..5 {
            let _ = tx.send(Arc::new(Published { event_type: "status_update_event", data: i.to_string() }));
        }
        // The channel kept only the last two; the client missed three: its stream ends.
        let got: Vec<_> = follow(rx, |_| true).collect().await;
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn filters_by_event_type() {
        let (tx, rx) = broadcast::channel(8);
        for t in ["api_post_event", "status_update_event", "deployment_info"] {
            let _ = tx.send(Arc::new(Published { event_type: t, data: "{}".into() }));
        }
        drop(tx);
        let got: Vec<_> = follow(rx, |t| t == "status_update_event").collect().await;
        assert_eq!(got.len(), 1);
    }
}
