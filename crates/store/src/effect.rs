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
    /// A job, its schedules or its runs changed (or it was deleted).
    JobChanged {
        id: model::JobId,
        before: Option<Arc<model::Job>>,
        after: Option<Arc<model::Job>>,
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
    let touched = after.take_touched();
    deltas(before, after, touched)
}

fn deltas<K: Ord + Clone, V: Clone + PartialEq>(
    before: &Table<K, V>,
    after: &Table<K, V>,
    touched: std::collections::BTreeSet<K>,
) -> Vec<Delta<K, V>> {
    touched
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
    let touched_apps = after.apps.take_touched();
    for (_, b, a) in deltas(&before.apps, &after.apps, touched_apps) {
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
    for id in after.deployments.take_touched() {
        match (before.deployments.get_arc(&id), after.deployments.get_arc(&id)) {
            (None, Some(d)) => out.push(Effect::DeploymentStarted(d)),
            (Some(before), Some(after)) if !Arc::ptr_eq(&before, &after) && before != after => {
                out.push(Effect::DeploymentChanged { before, after })
            }
            (Some(_), Some(_)) => {}
            (Some(d), None) => {
                ended.push(Effect::DeploymentFinished { deployment: d, succeeded: finished.contains(&&id) })
            }
            // Written and gone within the command: a deployment `apply`
            // started and finished at once (nothing to place or kill).
            (None, None) => {
                if let Some(d) = finished_in_apply(cmd, &id) {
                    out.push(Effect::DeploymentStarted(d.clone()));
                    ended.push(Effect::DeploymentFinished { deployment: d, succeeded: true });
                }
            }
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
    for (id, b, a) in changed(&before.jobs, &mut after.jobs) {
        out.push(Effect::JobChanged { id, before: b, after: a });
    }
    // Version history has no effect of its own (it follows AppPut); clear it.
    after.app_versions.take_touched();
    out
}

/// The deployment `cmd` carried, if it is `id`: one that `apply` started
/// and finished in the same command (see `apply::finish_at_once`).
fn finished_in_apply(cmd: &Command, id: &DeploymentId) -> Option<Arc<Deployment>> {
    match cmd {
        Command::PutApp { deployment, .. } if deployment.id == *id => {
            let mut d = deployment.clone();
            d.current_step = d.steps.len().max(1);
            Some(Arc::new(d))
        }
        _ => None,
    }
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
            Effect::JobChanged { id, after, .. } => match after {
                Some(j) => state.jobs.insert(id.clone(), (**j).clone()),
                None => {
                    state.jobs.remove(id);
                }
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::apply::apply;
    use model::{
        AppSpec, DeploymentAction, HealthReport, NodeInfo, Plan, Resources, Step, TaskState, TaskStatus, UnixMillis,
    };
    use proptest::prelude::*;

    /// A 4-cpu node with ports 31000-31100, as the store's unit tests register it.
    pub(crate) fn node(id: u64) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            hostname: format!("n{id}"),
            advertise: "127.0.0.1".into(),
            http_addr: String::new(),
            rpc_addr: String::new(),
            resources: Resources { cpus: 4.0, mem: 4096.0, disk: 1000.0, gpus: 0 },
            port_range: (31000, 31100),
            attributes: Default::default(),
            registered_at: UnixMillis(0),
            draining: false,
            unreachable_since: None,
            drivers: vec![model::DriverKind::Exec],
            images: Vec::new(),
        }
    }

    fn app_id(n: u8) -> AppId {
        AppId::parse(&format!("/g/app{}", n % 3)).expect("id")
    }

    fn deployment(n: u64, app: &AppId) -> Deployment {
        Deployment {
            id: DeploymentId(format!("d{n}")),
            version: UnixMillis(n as i64),
            affected_apps: vec![app.clone()],
            steps: vec![Step { actions: vec![(DeploymentAction::ScaleApplication, app.clone())] }],
            current_step: 1,
            started_at: UnixMillis(n as i64),
        }
    }

    /// Turns a generated op into a command that makes sense in `state`.
    fn command(state: &ClusterState, op: (u8, u8, u8), seq: u64) -> Command {
        let (kind, a, b) = op;
        let id = app_id(a);
        let any_task = || state.tasks.keys().nth(b as usize % state.tasks.len().max(1)).cloned();
        let at = UnixMillis(seq as i64);
        match kind % 10 {
            0 => Command::RegisterNode(node(1 + (a % 2) as u64)),
            1 => {
                let mut spec = AppSpec::new(id.clone());
                spec.instances = (b % 3) as u32;
                if b % 4 < 2 {
                    spec.health_checks.push(model::HealthCheck {
                        protocol: model::HealthProtocol::Tcp,
                        path: None,
                        port_index: Some(0),
                        port: None,
                        command: None,
                        grace_period_seconds: 1.0,
                        interval_seconds: 1.0,
                        timeout_seconds: 1.0,
                        max_consecutive_failures: 3,
                        delay_seconds: 0.0,
                        ignore_http1xx: false,
                        mesos_side: false,
                    });
                }
                Command::PutApp {
                    app: spec,
                    at,
                    deployment: deployment(seq, &id),
                    force: b % 2 == 0,
                    create_only: false,
                    expect: None,
                    finish_if_idle: b % 3 == 0,
                }
            }
            2 => Command::DeleteApp { id: id.clone(), at, deployment: deployment(seq, &id), force: true },
            3 => {
                let node = NodeId(1 + (b % 2) as u64);
                let id_ = model::TaskId::new(&id, uuid::Uuid::from_u128(seq as u128), 1);
                let ports = vec![31000 + (seq % 100) as u16];
                let resources = Resources { cpus: 0.5, mem: 64.0, disk: 0.0, gpus: 0 };
                let mut task = model::Task::staged(id_, id.clone(), node, ports, resources, at);
                task.host = "h".into();
                let done: Vec<_> = state.deployments.keys().take(1).cloned().collect();
                let gone = state.apps.values().filter(|a| a.deleting).map(|a| a.spec.id.clone()).collect();
                Command::ApplyPlan(Plan {
                    launches: vec![task],
                    finished_deployments: done,
                    removed_apps: gone,
                    ..Default::default()
                })
            }
            4 => {
                let states = [TaskState::Running, TaskState::Failed, TaskState::Killed, TaskState::Finished];
                match any_task() {
                    Some(t) => Command::TaskStatuses(vec![TaskStatus {
                        task_id: t,
                        state: states[b as usize % 4],
                        at,
                        message: None,
                        container_ip: None,
                    }]),
                    None => Command::RegisterNode(node(1)),
                }
            }
            5 => match any_task() {
                Some(t) => Command::TaskHealth(vec![HealthReport {
                    task_id: t,
                    alive: b % 2 == 0,
                    consecutive_failures: 0,
                    at,
                    cause: None,
                }]),
                None => Command::RegisterNode(node(2)),
            },
            6 => Command::KillTasks {
                ids: any_task().into_iter().collect(),
                scale: b % 2 == 0,
                at,
                deployment: Some(deployment(seq, &id)),
            },
            7 => {
                let expunges = state.tasks.values().filter(|t| t.state.is_terminal()).map(|t| t.id.clone()).collect();
                Command::ApplyPlan(Plan { expunges, ..Default::default() })
            }
            8 => match state.deployments.keys().next() {
                Some(d) if b % 2 == 0 => {
                    Command::RollbackDeployment { id: d.clone(), new_id: DeploymentId(format!("r{seq}")), at }
                }
                Some(d) => Command::CancelDeployment { id: d.clone() },
                None => Command::ResetDelay { id },
            },
            _ => match b % 3 {
                0 => Command::NodeLiveness { node: NodeId(1 + (a % 2) as u64), reachable: a % 4 < 2, at },
                1 => Command::DrainNode { node: NodeId(1 + (a % 2) as u64), draining: b % 2 == 0 },
                _ => Command::RemoveNode { node: NodeId(2), at },
            },
        }
    }

    /// What effects describe: everything but the version history and the
    /// list of removed nodes.
    fn described(s: &ClusterState) -> (String, String, String, String, String) {
        let j = |v: serde_json::Result<String>| v.unwrap_or_default();
        (
            j(serde_json::to_string(&s.nodes)),
            j(serde_json::to_string(&s.apps)),
            j(serde_json::to_string(&s.tasks)),
            j(serde_json::to_string(&s.deployments)),
            j(serde_json::to_string(&s.groups)),
        )
    }

    proptest! {
        /// Effects are complete: a consumer that starts from the initial state
        /// and folds in only the effects reaches the final state.
        #[test]
        fn effects_replayed_over_the_initial_state_give_the_final_state(
            ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..80)
        ) {
            let mut state = ClusterState::default();
            apply(&mut state, &Command::RegisterNode(node(1)));
            state.nodes.take_touched();
            let initial = state.clone();
            let mut replayed = initial.clone();
            for (seq, op) in ops.into_iter().enumerate() {
                let cmd = command(&state, op, seq as u64 + 10);
                let before = state.clone();
                apply(&mut state, &cmd);
                let effects = collect(&before, &mut state, &cmd);
                // No effect without a change, and each one names a real change.
                for e in &effects {
                    if let Effect::TaskChanged { before, after, .. } = e {
                        prop_assert_ne!(before, after);
                    }
                }
                replay(&mut replayed, &effects);
                prop_assert_eq!(described(&replayed), described(&state));
            }
        }
    }

    proptest! {
        /// The endpoint stream, fed only the effects, always holds exactly the
        /// endpoints computed from scratch over the state after each command.
        #[test]
        fn the_endpoint_stream_matches_the_state_after_every_command(
            ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..80)
        ) {
            let mut state = ClusterState::default();
            apply(&mut state, &Command::RegisterNode(node(1)));
            state.nodes.take_touched();
            let mut tracker = crate::endpoints::Tracker::default();
            tracker.reset(std::sync::Arc::new(state.clone()));
            for (seq, op) in ops.into_iter().enumerate() {
                let cmd = command(&state, op, seq as u64 + 10);
                let before = state.clone();
                apply(&mut state, &cmd);
                let effects = collect(&before, &mut state, &cmd);
                let had = tracker.endpoints();
                let delta = tracker.apply(&state, &effects);
                let mut fresh = crate::endpoints::Tracker::default();
                fresh.reset(std::sync::Arc::new(state.clone()));
                prop_assert_eq!(tracker.endpoints(), fresh.endpoints());
                // The delta is what changed: removed ones were there, added ones are new.
                for e in &delta.removed {
                    prop_assert!(had.contains(e));
                }
                for e in &delta.added {
                    prop_assert!(tracker.endpoints().contains(e));
                }
            }
        }
    }

    #[test]
    fn a_refused_write_has_no_effects() {
        let mut state = ClusterState::default();
        let id = app_id(0);
        let cmd =
            Command::DeleteApp { id: id.clone(), at: UnixMillis(1), deployment: deployment(1, &id), force: false };
        let before = state.clone();
        apply(&mut state, &cmd);
        assert!(collect(&before, &mut state, &cmd).is_empty());
    }

    #[test]
    fn a_finished_deployment_says_whether_it_succeeded() {
        let mut state = ClusterState::default();
        let id = app_id(0);
        let put = Command::PutApp {
            app: AppSpec::new(id.clone()),
            at: UnixMillis(1),
            deployment: deployment(1, &id),
            force: false,
            create_only: false,
            expect: None,
            finish_if_idle: false,
        };
        let before = state.clone();
        apply(&mut state, &put);
        let effects = collect(&before, &mut state, &put);
        assert!(effects.iter().any(|e| matches!(e, Effect::DeploymentStarted(d) if d.id.0 == "d1")));
        assert!(effects.iter().any(|e| matches!(e, Effect::AppPut { before: None, .. })));
        let done =
            Command::ApplyPlan(Plan { finished_deployments: vec![DeploymentId("d1".into())], ..Default::default() });
        let before = state.clone();
        apply(&mut state, &done);
        let effects = collect(&before, &mut state, &done);
        assert!(matches!(effects.as_slice(), [Effect::DeploymentFinished { succeeded: true, .. }]), "{effects:?}");
    }

    fn idle_put(spec: AppSpec, n: u64) -> Command {
        let id = spec.id.clone();
        Command::PutApp {
            app: spec,
            at: UnixMillis(n as i64),
            deployment: deployment(n, &id),
            force: false,
            create_only: false,
            expect: None,
            finish_if_idle: true,
        }
    }

    #[test]
    fn a_put_with_nothing_to_do_starts_and_finishes_its_deployment_in_one_command() {
        let mut state = ClusterState::default();
        let id = app_id(0);
        let mut spec = AppSpec::new(id.clone());
        spec.instances = 0;
        let put = idle_put(spec, 1);
        let before = state.clone();
        assert!(matches!(apply(&mut state, &put), crate::Applied::App(_)));
        let effects = collect(&before, &mut state, &put);
        assert!(state.deployments.is_empty(), "nothing left for the scheduler to finish");
        let kinds: Vec<&str> = effects
            .iter()
            .map(|e| match e {
                Effect::AppPut { .. } => "put",
                Effect::DeploymentStarted(d) if d.id.0 == "d1" => "started",
                Effect::DeploymentFinished { deployment, succeeded: true } if deployment.id.0 == "d1" => "succeeded",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["put", "started", "succeeded"]);
        let mut replayed = before.clone();
        replay(&mut replayed, &effects);
        assert!(replayed.deployments.is_empty());
    }

    #[test]
    fn a_put_with_instances_to_launch_leaves_its_deployment_to_the_scheduler() {
        let mut state = ClusterState::default();
        let put = idle_put(AppSpec::new(app_id(0)), 1);
        let before = state.clone();
        apply(&mut state, &put);
        let effects = collect(&before, &mut state, &put);
        assert!(state.deployments.contains_key(&DeploymentId("d1".into())));
        assert!(!effects.iter().any(|e| matches!(e, Effect::DeploymentFinished { .. })), "{effects:?}");
    }
}
