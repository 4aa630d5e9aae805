//! Effects: what one applied command changed, derived from the keys its
//! writes touched (every `Table` write records its key), with the values
//! before and after. The feed carries them beside the command, so consumers
//! act on what changed instead of diffing the whole state.

use crate::command::Command;
use model::{App, AppId, ClusterState, Deployment, DeploymentId, GroupMeta, NodeId, NodeInfo, Table, Task, TaskId};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A task was placed, changed or forgotten.
    TaskChanged {
        id: TaskId,
        before: Option<Arc<Task>>,
        after: Option<Arc<Task>>,
    },
    /// An app was created or changed (definition, version, backoff, failure, deleting).
    AppPut {
        before: Option<Arc<App>>,
        after: Arc<App>,
    },
    /// An app is gone for good (its delete finished).
    AppRemoved {
        before: Arc<App>,
    },
    DeploymentStarted(Arc<Deployment>),
    /// A deployment moved on to a later step.
    DeploymentChanged {
        before: Arc<Deployment>,
        after: Arc<Deployment>,
    },
    /// A deployment ended: `succeeded` when the scheduler finished it,
    /// otherwise it was cancelled, rolled back or replaced.
    DeploymentFinished {
        deployment: Arc<Deployment>,
        succeeded: bool,
    },
    NodeChanged {
        id: NodeId,
        before: Option<Arc<NodeInfo>>,
        after: Option<Arc<NodeInfo>>,
    },
    GroupChanged {
        id: AppId,
        after: Option<Arc<GroupMeta>>,
    },
}

impl Effect {
    /// The task this effect is about, as it is now (or was, if forgotten).
    pub fn task(&self) -> Option<&Task> {
        match self {
            Effect::TaskChanged { after: Some(t), .. } | Effect::TaskChanged { before: Some(t), .. } => Some(t),
            _ => None,
        }
    }
}

fn same<V: PartialEq>(a: &Option<Arc<V>>, b: &Option<Arc<V>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y) || x == y,
        _ => false,
    }
}

/// A key with its value before and after a command.
type Delta<K, V> = (K, Option<Arc<V>>, Option<Arc<V>>);

/// Pairs of (before, after) for every key `after` touched, where they differ.
fn changed<K: Ord + Clone, V: Clone + PartialEq>(before: &Table<K, V>, after: &mut Table<K, V>) -> Vec<Delta<K, V>> {
    after
        .take_touched()
        .into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get_arc(&k), after.get_arc(&k));
            (!same(&b, &a)).then_some((k, b, a))
        })
        .collect()
}

/// The effects of `cmd`, which turned `before` into `after`. Clears the
/// touched keys of `after`, so it must be called once per command.
pub(crate) fn collect(before: &ClusterState, after: &mut ClusterState, cmd: &Command) -> Vec<Effect> {
    let mut out = Vec::new();
    for (id, b, a) in changed(&before.nodes, &mut after.nodes) {
        out.push(Effect::NodeChanged { id, before: b, after: a });
    }
    for (_, b, a) in changed(&before.apps, &mut after.apps) {
        match (b, a) {
            (before, Some(after)) => out.push(Effect::AppPut { before, after }),
            (Some(before), None) => out.push(Effect::AppRemoved { before }),
            (None, None) => {}
        }
    }
    let finished: Vec<&DeploymentId> = match cmd {
        Command::ApplyPlan(plan) => plan.finished_deployments.iter().collect(),
        _ => Vec::new(),
    };
    // Deployments that end come after those that start: a replaced one
    // (force) is reported failed after its successor started, as Marathon does.
    let mut ended = Vec::new();
    for (id, b, a) in changed(&before.deployments, &mut after.deployments) {
        match (b, a) {
            (None, Some(d)) => out.push(Effect::DeploymentStarted(d)),
            (Some(before), Some(after)) => out.push(Effect::DeploymentChanged { before, after }),
            (Some(d), None) => {
                ended.push(Effect::DeploymentFinished { deployment: d, succeeded: finished.contains(&&id) })
            }
            (None, None) => {}
        }
    }
    let touched_tasks = after.tasks.take_touched();
    for id in touched_tasks {
        let (b, a) = (before.tasks.get_arc(&id), after.tasks.get_arc(&id));
        if !same(&b, &a) {
            out.push(Effect::TaskChanged { id, before: b, after: a });
        }
    }
    out.extend(ended);
    for (id, _, a) in changed(&before.groups, &mut after.groups) {
        out.push(Effect::GroupChanged { id, after: a });
    }
    // Version history has no effect of its own (it follows AppPut); clear it.
    after.app_versions.take_touched();
    out
}

/// Folds `effects` into `state`: the state a consumer that saw only the
/// effects reaches (everything but the version history).
pub fn replay(state: &mut ClusterState, effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::TaskChanged { id, after, .. } => match after {
                Some(t) => state.tasks.insert((**t).clone()),
                None => {
                    state.tasks.remove(id);
                }
            },
            Effect::AppPut { after, .. } => state.apps.insert(after.spec.id.clone(), (**after).clone()),
            Effect::AppRemoved { before } => {
                state.apps.remove(&before.spec.id);
            }
            Effect::DeploymentStarted(d) | Effect::DeploymentChanged { after: d, .. } => {
                state.deployments.insert(d.id.clone(), (**d).clone())
            }
            Effect::DeploymentFinished { deployment, .. } => {
                state.deployments.remove(&deployment.id);
            }
            Effect::NodeChanged { id, after, .. } => match after {
                Some(n) => state.nodes.insert(*id, (**n).clone()),
                None => {
                    state.nodes.remove(id);
                }
            },
            Effect::GroupChanged { id, after } => match after {
                Some(g) => state.groups.insert(id.clone(), (**g).clone()),
                None => {
                    state.groups.remove(id);
                }
            },
        }
    }
}
