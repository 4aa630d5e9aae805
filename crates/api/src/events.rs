//! `GET /v2/events`: Marathon's event stream as server-sent events.
//!
//! One `EventBus` per node, started by the first subscriber, turns this
//! node's replica into Marathon events: it follows the store's change feed
//! (subscribe, then read) and compares each applied change with what it saw
//! before (tasks' states and health, deployments, apps) and at the command
//! itself (an agent's `KillUnhealthy`), so every node serves events
//! from its own replica. Events go out on a bounded broadcast channel: a
//! client that falls more than `CLIENT_BUFFER` events behind is disconnected
//! instead of slowing anyone down.
//!
//! Limits: changes that land between two reads of the replica are folded
//! together (a task that passes through a state within one fold is reported
//! in its latest state only); a feed `Reset` re-reads the state silently.

use crate::context::ApiContext;
use crate::query::Params;
use axum::extract::{Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream::{self, Stream, StreamExt};
use marathon::events::{self as ev, MarathonEvent};
use marathon::Embed;
use model::{AppId, ClusterState, Deployment, DeploymentId, TaskId, TaskState, UnixMillis};
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use store::{Command, Store, Update};
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
        let mut seen = store.read(Seen::of);
        tokio::spawn(async move {
            while let Some(update) = sub.next().await {
                match update {
                    Update::Reset { .. } => seen = store.read(Seen::of),
                    Update::Change(c) => {
                        let events = store.read(|s| seen.advance(s, &c.command, now()));
                        for e in events {
                            let data = e.body.to_string();
                            // No subscribers is fine.
                            let _ = sender.send(Arc::new(Published { event_type: e.event_type, data }));
                        }
                    }
                }
            }
        });
        EventBus { tx }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }
}

use crate::context::now;

/// What the bus last reported: enough to tell what a change did.
struct Seen {
    tasks: BTreeMap<TaskId, TaskState>,
    /// Tasks' health verdicts (`Task::healthy`).
    health: BTreeMap<TaskId, bool>,
    deployments: BTreeMap<DeploymentId, Deployment>,
    apps: BTreeSet<AppId>,
}

impl Seen {
    fn of(s: &ClusterState) -> Seen {
        Seen {
            tasks: s.tasks.iter().map(|(id, t)| (id.clone(), t.state)).collect(),
            health: health_of(s),
            deployments: s.deployments.clone(),
            apps: s.apps.keys().cloned().collect(),
        }
    }

    /// The events of `cmd`, judged against the state after it, in the order
    /// Marathon sends them: the API write, the deployment start, task
    /// updates, then deployment ends and app removals.
    fn advance(&mut self, s: &ClusterState, cmd: &Command, now: UnixMillis) -> Vec<MarathonEvent> {
        let mut out = Vec::new();
        let written: Vec<(&AppId, UnixMillis)> = match cmd {
            Command::PutApp { app, at, .. } => vec![(&app.id, *at)],
            Command::PutGroup { apps, at, .. } => apps.iter().map(|a| (&a.id, *at)).collect(),
            _ => Vec::new(),
        };
        for (id, at) in written {
            if let Some(app) = s.apps.get(id).filter(|a| a.version >= at) {
                out.push(ev::api_post("", marathon::render_app(app, s, &Embed::default()), now));
            }
        }
        for d in s.deployments.values().filter(|d| !self.deployments.contains_key(&d.id)) {
            out.push(ev::deployment_info(d, s, now));
        }
        let touches_tasks =
            !matches!(cmd, Command::PutApp { .. } | Command::RegisterNode(_) | Command::CancelDeployment { .. });
        if touches_tasks {
            for t in s.tasks.values() {
                if self.tasks.get(&t.id) != Some(&t.state) {
                    out.push(ev::status_update(t, s, now));
                }
            }
            self.tasks = s.tasks.iter().map(|(id, t)| (id.clone(), t.state)).collect();
        }
        if let Command::TaskHealth(_) = cmd {
            for t in s.tasks.values() {
                let Some(alive) = t.healthy else { continue };
                if self.health.get(&t.id) == Some(&alive) {
                    continue;
                }
                if !alive {
                    out.push(ev::failed_health_check(t, s, now));
                }
                out.push(ev::health_status_changed(t, alive, now));
            }
            self.health = health_of(s);
        }
        if let Command::KillUnhealthy { id, reason, .. } = cmd {
            if let Some(t) = s.tasks.get(id) {
                out.push(ev::unhealthy_instance_kill(t, reason, now));
            }
        }
        let finished: BTreeSet<&DeploymentId> = match cmd {
            Command::ApplyPlan(plan) => plan.finished_deployments.iter().collect(),
            _ => BTreeSet::new(),
        };
        for (id, d) in self.deployments.iter().filter(|(id, _)| !s.deployments.contains_key(*id)) {
            if finished.contains(id) {
                out.push(ev::deployment_step_success(d, s, now));
                out.push(ev::deployment_success(d, s, now));
                out.push(ev::group_change_success(&AppId::root(), d.version, now));
            } else {
                out.push(ev::deployment_step_failure(d, s, now));
                out.push(ev::deployment_failed(d, s, now));
            }
        }
        self.deployments = s.deployments.clone();
        for id in self.apps.iter().filter(|id| !s.apps.contains_key(*id)) {
            out.push(ev::app_terminated(id, now));
        }
        self.apps = s.apps.keys().cloned().collect();
        out
    }
}

fn health_of(s: &ClusterState) -> BTreeMap<TaskId, bool> {
    s.tasks.iter().filter_map(|(id, t)| t.healthy.map(|h| (id.clone(), h))).collect()
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
