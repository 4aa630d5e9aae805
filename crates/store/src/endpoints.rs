//! The endpoint stream: which tasks of which apps can take traffic, derived
//! from the change feed in one place. DNS, the load balancer and the UI
//! consume it instead of diffing the cluster state.
//!
//! It keeps the current endpoint of every up task (`model::endpoint_of`,
//! the one "is this task up?" rule) and, for each change, recomputes only the
//! tasks the change's effects touched: a task changed, an app put or removed
//! (its tasks), a node changed (its tasks). A lagging feed turns into
//! `EndpointUpdate::Reset` with every endpoint, so nothing is missed.

use crate::effect::Effect;
use crate::watch::{Subscription, Update};
use model::{endpoint_of, AppId, ClusterState, Endpoint, NodeId, TaskId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// What a consumer of the endpoint stream sees next.
#[derive(Debug, Clone)]
pub enum EndpointUpdate {
    /// Start over: these are all the endpoints at log index `index`.
    Reset { index: u64, endpoints: Vec<Endpoint>, state: Arc<ClusterState> },
    /// After the command at `index`: endpoints that went away, then new ones
    /// (a task whose endpoint changed is in both). `nodes_changed` says a
    /// node joined, left or changed (its address, reachability, draining);
    /// `apps_changed` that an app was put or removed (its service ports or
    /// labels may have changed even when its endpoints did not).
    Delta {
        index: u64,
        removed: Vec<Endpoint>,
        added: Vec<Endpoint>,
        nodes_changed: bool,
        apps_changed: bool,
        /// The apps whose routing (service ports, labels, a delete) changed:
        /// with `removed` and `added`, every app whose routes may differ.
        changed_apps: Vec<AppId>,
        state: Arc<ClusterState>,
    },
}

impl EndpointUpdate {
    pub fn state(&self) -> &Arc<ClusterState> {
        match self {
            EndpointUpdate::Reset { state, .. } | EndpointUpdate::Delta { state, .. } => state,
        }
    }
}

/// Endpoints from a change feed. Call [`EndpointStream::next`] in a loop.
pub struct EndpointStream {
    feed: Subscription,
    /// The first update is always a `Reset` from this state.
    initial: Option<Arc<ClusterState>>,
    tracker: Tracker,
}

impl EndpointStream {
    /// `feed` must be subscribed before `state` was read (subscribe, then read).
    pub fn new(feed: Subscription, state: Arc<ClusterState>) -> EndpointStream {
        EndpointStream { feed, initial: Some(state), tracker: Tracker::default() }
    }

    /// The next update if one is ready now, without waiting (`None` also
    /// when nothing is): for folding every queued update in at once.
    pub async fn next_ready(&mut self) -> Option<EndpointUpdate> {
        tokio::select! {
            biased;
            u = self.next() => u,
            () = std::future::ready(()) => None,
        }
    }

    /// The next update with something in it; `None` once the store is gone.
    pub async fn next(&mut self) -> Option<EndpointUpdate> {
        if let Some(state) = self.initial.take() {
            return Some(self.tracker.reset(state));
        }
        loop {
            match self.feed.next().await? {
                Update::Reset { state, .. } => return Some(self.tracker.reset(state)),
                Update::Change(c) => {
                    let d = self.tracker.apply(&c.state, &c.effects);
                    if d.removed.is_empty() && d.added.is_empty() && !d.nodes_changed && !d.apps_changed {
                        continue;
                    }
                    return Some(EndpointUpdate::Delta {
                        index: c.index,
                        removed: d.removed,
                        added: d.added,
                        nodes_changed: d.nodes_changed,
                        apps_changed: d.apps_changed,
                        changed_apps: d.changed_apps,
                        state: c.state,
                    });
                }
            }
        }
    }
}

/// What of an app its routes depend on, or `None` when it has none of it
/// (no service ports, no labels, no delete under way).
fn routed(a: Option<&model::App>) -> Option<(&[model::PortSpec], &std::collections::BTreeMap<String, String>, bool)> {
    a.map(|a| (a.spec.ports.as_slice(), &a.spec.labels, a.deleting))
        .filter(|(ports, labels, deleting)| !ports.is_empty() || !labels.is_empty() || *deleting)
}

#[derive(Debug, Default, PartialEq)]
pub(crate) struct Delta {
    pub removed: Vec<Endpoint>,
    pub added: Vec<Endpoint>,
    pub nodes_changed: bool,
    pub apps_changed: bool,
    pub changed_apps: Vec<AppId>,
}

/// The current endpoints, with indexes to find those an effect touches.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    current: HashMap<TaskId, Endpoint>,
    by_app: BTreeMap<AppId, BTreeSet<TaskId>>,
    by_node: BTreeMap<NodeId, BTreeSet<TaskId>>,
}

impl Tracker {
    pub(crate) fn reset(&mut self, state: Arc<ClusterState>) -> EndpointUpdate {
        *self = Tracker::default();
        for t in state.tasks.values() {
            if let Some(app) = state.apps.get(&t.app_id) {
                if let Some(e) = endpoint_of(app, t, state.nodes.get(&t.node)) {
                    self.insert(e);
                }
            }
        }
        let mut endpoints: Vec<Endpoint> = self.current.values().cloned().collect();
        endpoints.sort();
        EndpointUpdate::Reset { index: state.applied_index, endpoints, state }
    }

    /// Recomputes the tasks `effects` touched, against `state` (the state
    /// right after them).
    pub(crate) fn apply(&mut self, state: &ClusterState, effects: &[Effect]) -> Delta {
        let mut touched: BTreeSet<TaskId> = BTreeSet::new();
        let mut nodes_changed = false;
        let mut apps_changed = false;
        let mut changed_apps = Vec::new();
        for e in effects {
            match e {
                Effect::TaskChanged { id, .. } => {
                    touched.insert(id.clone());
                }
                Effect::AppPut { before, after } => {
                    // Only what the consumers route by (service ports, labels,
                    // a delete under way): an app with none of these (one
                    // without ports) changes no route, and the load balancer
                    // rebuilds its routes on every delta it is handed.
                    if routed(before.as_deref()) != routed(Some(after)) {
                        apps_changed = true;
                        changed_apps.push(after.spec.id.clone());
                    }
                    touched.extend(state.tasks_of(&after.spec.id).map(|t| t.id.clone()));
                    touched.extend(self.by_app.get(&after.spec.id).into_iter().flatten().cloned());
                }
                Effect::AppRemoved { before } => {
                    if routed(Some(before)).is_some() {
                        apps_changed = true;
                        changed_apps.push(before.spec.id.clone());
                    }
                    touched.extend(self.by_app.get(&before.spec.id).into_iter().flatten().cloned());
                }
                Effect::NodeChanged { id, .. } => {
                    nodes_changed = true;
                    touched.extend(state.tasks_on(*id).map(|t| t.id.clone()));
                    touched.extend(self.by_node.get(id).into_iter().flatten().cloned());
                }
                Effect::DeploymentStarted(_)
                | Effect::DeploymentChanged { .. }
                | Effect::DeploymentFinished { .. }
                | Effect::GroupChanged { .. }
                | Effect::JobChanged { .. } => {}
            }
        }
        let mut delta = Delta { nodes_changed, apps_changed, changed_apps, ..Delta::default() };
        for id in touched {
            let now = state.tasks.get(&id).and_then(|t| {
                let app = state.apps.get(&t.app_id)?;
                endpoint_of(app, t, state.nodes.get(&t.node))
            });
            let before = self.current.get(&id);
            if before == now.as_ref() {
                continue;
            }
            if let Some(old) = self.remove(&id) {
                delta.removed.push(old);
            }
            if let Some(e) = now {
                self.insert(e.clone());
                delta.added.push(e);
            }
        }
        delta
    }

    fn insert(&mut self, e: Endpoint) {
        self.by_app.entry(e.app.clone()).or_default().insert(e.task.clone());
        self.by_node.entry(e.node).or_default().insert(e.task.clone());
        self.current.insert(e.task.clone(), e);
    }

    fn remove(&mut self, id: &TaskId) -> Option<Endpoint> {
        let e = self.current.remove(id)?;
        if let Some(s) = self.by_app.get_mut(&e.app) {
            s.remove(id);
            if s.is_empty() {
                self.by_app.remove(&e.app);
            }
        }
        if let Some(s) = self.by_node.get_mut(&e.node) {
            s.remove(id);
            if s.is_empty() {
                self.by_node.remove(&e.node);
            }
        }
        Some(e)
    }

    #[cfg(test)]
    pub(crate) fn endpoints(&self) -> BTreeSet<Endpoint> {
        self.current.values().cloned().collect()
    }
}
