//! The state machine's transition function: `apply(state, command)`.
//!
//! Pure and deterministic: no clock, no randomness, no I/O. Every replica
//! applying the same log reaches the same `ClusterState`. Rejections are
//! decided here (not only in the API) so that racing writers are judged
//! against the committed order.

use crate::command::{AppPut, Applied, Command, DropReason, Dropped, Precondition, Rejection};
use model::{
    App, AppId, AppSpec, AppVersion, ClusterState, Deployment, DeploymentAction, DeploymentId, GroupMeta,
    LaunchBackoff, NodeId, NodeUsage, Plan, ServicePortRange, Step, TaskGoal, TaskId, TaskState, TaskStatus,
    UnixMillis,
};
use std::collections::{BTreeMap, BTreeSet};

pub fn apply(state: &mut ClusterState, cmd: &Command) -> Applied {
    match cmd {
        Command::RegisterNode(node) => {
            if state.removed_nodes.contains(&node.id) {
                return Applied::Rejected(Rejection::NodeRemoved(node.id));
            }
            let mut node = node.clone();
            if let Some(old) = state.nodes.get(&node.id) {
                node.registered_at = old.registered_at;
                node.draining = old.draining;
                // Its agent reports them anew after it starts.
                node.images = old.images.clone();
            }
            state.nodes.insert(node.id, node);
            Applied::Done
        }
        Command::PutApp { app, at, deployment, force, create_only, expect, finish_if_idle } => {
            if *create_only && state.apps.contains_key(&app.id) {
                return Applied::Rejected(Rejection::AlreadyExists(app.id.clone()));
            }
            if let Err(r) = check_precondition(state, &app.id, *expect) {
                return Applied::Rejected(r);
            }
            let res = put_app(state, app, *at, deployment, *force);
            if *finish_if_idle && matches!(res, Applied::App(_)) {
                finish_at_once(state, deployment);
            }
            res
        }
        Command::PutApps { apps, at, deployment, force } => put_apps(state, apps, *at, deployment, *force),
        Command::RollbackDeployment { id, new_id, at } => rollback_deployment(state, id, new_id, *at),
        Command::ResetDelay { id } => match state.apps.get_mut(id) {
            Some(mut app) => {
                app.backoff = LaunchBackoff::default();
                Applied::Done
            }
            None => Applied::Rejected(Rejection::NoSuchApp(id.clone())),
        },
        Command::PutApiToken(token) => {
            if state.api_tokens.contains_key(&token.id) {
                return Applied::Rejected(Rejection::TokenExists(token.id.clone()));
            }
            state.api_tokens.insert(token.id.clone(), token.clone());
            Applied::Done
        }
        Command::RemoveApiToken { id } => match state.api_tokens.remove(id) {
            Some(_) => Applied::Done,
            None => Applied::Rejected(Rejection::NoSuchToken(id.clone())),
        },
        Command::InitTrust(trust) => {
            if state.trust.is_none() {
                state.trust = Some(trust.clone());
            }
            Applied::Done
        }
        Command::RotateJoinSecret { secret } => match &mut state.trust {
            Some(t) => {
                t.join_secret = secret.clone();
                Applied::Done
            }
            None => Applied::Rejected(Rejection::NoClusterCa),
        },
        Command::PutSecret(secret) => {
            let mut secret = secret.clone();
            if let Some(old) = state.secrets.get(&secret.path) {
                secret.created_at = old.created_at;
            }
            state.secrets.insert(secret.path.clone(), secret);
            Applied::Done
        }
        Command::RemoveSecret { path } => match state.secrets.remove(path) {
            Some(_) => Applied::Done,
            None => Applied::Rejected(Rejection::NoSuchSecret(path.clone())),
        },
        Command::DeleteApp { id, at, deployment, force } => delete_app(state, id, *at, deployment, *force),
        Command::RestartApp { id, at, deployment, force } => restart_app(state, id, *at, deployment, *force),
        Command::KillTasks { ids, scale, at, deployment } => kill_tasks(state, ids, *scale, *at, deployment.as_ref()),
        Command::ApplyPlan(plan) => apply_plan(state, plan),
        Command::TaskStatuses(statuses) => {
            for s in statuses {
                task_status(state, s);
            }
            Applied::Done
        }
        Command::CancelDeployment { id } => match state.deployments.remove(id) {
            Some(_) => Applied::Done,
            None => Applied::Rejected(Rejection::NoSuchDeployment(id.clone())),
        },
        Command::NodeLiveness { node, reachable, at } => node_liveness(state, *node, *reachable, *at),
        Command::NodeImages { node, images } => match state.nodes.get_mut(node) {
            Some(n) => {
                n.images = images.clone();
                Applied::Done
            }
            None => Applied::Rejected(Rejection::NoSuchNode(*node)),
        },
        Command::DrainNode { node, draining } => match state.nodes.get_mut(node) {
            Some(n) => {
                n.draining = *draining;
                Applied::Done
            }
            None => Applied::Rejected(Rejection::NoSuchNode(*node)),
        },
        Command::RemoveNode { node, at } => remove_node(state, *node, *at),
        Command::TaskHealth(reports) => {
            for r in reports {
                task_health(state, r);
            }
            Applied::Done
        }
        Command::KillUnhealthy { id, reason, at } => kill_unhealthy(state, id, reason, *at),
        Command::TaskReadiness(reports) => {
            for r in reports {
                task_readiness(state, r);
            }
            Applied::Done
        }
        Command::PutGroup { apps, remove_apps, groups, remove_groups, at, deployment, force } => put_group(
            state,
            &GroupChange { apps, remove_apps, groups, remove_groups, at: *at, deployment, force: *force },
        ),
        Command::PutJob { job, schedules, at, create_only } => {
            jobs::put_job(state, job, schedules.as_deref(), *at, *create_only)
        }
        Command::RemoveJob { id, stop_runs, at } => jobs::remove_job(state, id, *stop_runs, *at),
        Command::PutSchedule { job, schedule, at, create_only } => {
            jobs::put_schedule(state, job, schedule, *at, *create_only)
        }
        Command::RemoveSchedule { job, id } => jobs::remove_schedule(state, job, id),
        Command::StartJobRun { job, run, at, trigger } => jobs::start_run(state, job, run, *at, trigger),
        Command::StopJobRun { job, run, at, reason } => jobs::stop_run(state, job, run, *at, reason),
        Command::SetJobHistoryCount { count } => jobs::set_history_count(state, *count),
        Command::SetServicePorts { range } => {
            state.settings.service_ports = Some(*range);
            Applied::Done
        }
        Command::StartJobRuns { at, starts } => {
            Applied::Each(starts.iter().map(|s| jobs::start_run(state, &s.job, &s.run, *at, &s.trigger)).collect())
        }
        Command::Batch(parts) => Applied::Each(parts.iter().map(|c| apply(state, c)).collect()),
    }
}

/// Refuses a write computed from an app that has changed since.
fn check_precondition(state: &ClusterState, id: &AppId, expect: Option<Precondition>) -> Result<(), Rejection> {
    let current = state.apps.get(id).map(|a| a.version);
    match (expect, current) {
        (None, _) | (Some(Precondition::Absent), None) => Ok(()),
        (Some(Precondition::Version(v)), Some(c)) if v == c => Ok(()),
        _ => Err(Rejection::Conflict(id.clone())),
    }
}

/// The deployments holding `id`: refused unless `force` (reads only, so
/// later checks can still refuse with nothing changed).
fn lock_holders(state: &ClusterState, id: &AppId, force: bool) -> Result<Vec<DeploymentId>, Rejection> {
    let holding: Vec<DeploymentId> = state.deployments_of(id).map(|d| d.id.clone()).collect();
    if holding.is_empty() || force {
        Ok(holding)
    } else {
        Err(Rejection::Locked(holding))
    }
}

/// Refuses when deployments hold `id`, or cancels them under `force`.
fn take_lock(state: &mut ClusterState, id: &AppId, force: bool) -> Result<(), Rejection> {
    for d in lock_holders(state, id, force)? {
        state.deployments.remove(&d);
    }
    Ok(())
}

/// Service ports are assigned here and nowhere else: the one an app asks
/// for (`portDefinitions[].port` / `portMappings[].servicePort` when not 0)
/// if it lies in the cluster's range (`Settings::service_ports`, from the
/// leader's `--service-ports`; 422 naming port and range) and no other app
/// holds it (422 naming the port and its holder; Marathon's `requirePorts`
/// concerns host ports and is the scheduler's), otherwise the port this app
/// already had at that index, otherwise the lowest free one of the range.
/// Ports an app already holds stay valid when the range changes later, so
/// its clients keep working. Taken ports come from the app table's port
/// index (`AppTable::port_holders`), so a write costs no scan of every app.
fn assign_service_ports(state: &ClusterState, spec: &mut AppSpec, old: Option<&AppSpec>) -> Result<(), Rejection> {
    let range = state.settings.service_port_range();
    let holder = |port: u16| state.apps.port_holders(port).iter().find(|h| **h != spec.id).cloned();
    let held = |port: u16| state.apps.port_holders(port).contains(&spec.id);
    let mut mine: BTreeSet<u16> = BTreeSet::new();
    for p in spec.ports.iter().filter(|p| p.port != 0) {
        if let Some(h) = holder(p.port) {
            return Err(Rejection::ServicePortTaken(p.port, h));
        }
        if !range.contains(p.port) && !held(p.port) {
            return Err(Rejection::ServicePortOutOfRange(p.port, range));
        }
        mine.insert(p.port);
    }
    for i in 0..spec.ports.len() {
        if spec.ports[i].port != 0 {
            continue;
        }
        // Keep the port the app already had at this index: load balancers and
        // clients keep working across updates.
        let previous = old
            .and_then(|o| o.ports.get(i))
            .map(|o| o.port)
            .filter(|p| *p != 0 && !mine.contains(p) && holder(*p).is_none());
        let port = match previous {
            Some(port) => port,
            None => lowest_free(state, range, &spec.id, &mine).ok_or(Rejection::NoServicePort(range.lo, range.hi))?,
        };
        mine.insert(port);
        spec.ports[i].port = port;
    }
    Ok(())
}

/// The lowest port of `range` that no other app holds and is not in
/// `mine`, walking the index's taken ports in order (a gap between two is a
/// free port).
fn lowest_free(state: &ClusterState, range: ServicePortRange, me: &AppId, mine: &BTreeSet<u16>) -> Option<u16> {
    let ServicePortRange { lo, hi } = range;
    let others = state.apps.ports_taken(lo..=hi).filter(|(_, holders)| holders.iter().any(|h| h != me)).map(|(p, _)| p);
    let mut candidate = lo;
    // Merge the two ordered sources until the first gap.
    let mut theirs = others.peekable();
    let mut ours = mine.range(lo..=hi).copied().peekable();
    loop {
        let next = match (theirs.peek(), ours.peek()) {
            (Some(a), Some(b)) => {
                if a <= b {
                    theirs.next()
                } else {
                    ours.next()
                }
            }
            (Some(_), None) => theirs.next(),
            (None, Some(_)) => ours.next(),
            (None, None) => None,
        };
        let Some(p) = next else { break };
        if p > candidate {
            break;
        }
        if p == candidate {
            candidate = candidate.checked_add(1)?;
        }
    }
    (candidate <= hi).then_some(candidate)
}

fn put_app(state: &mut ClusterState, spec: &AppSpec, at: UnixMillis, deployment: &Deployment, force: bool) -> Applied {
    let mut spec = spec.clone();
    let old = state.apps.get(&spec.id).cloned();
    if old.as_ref().is_some_and(|o| o.deleting) && !force {
        return Applied::Rejected(Rejection::BeingDeleted(spec.id.clone()));
    }
    let holders = match lock_holders(state, &spec.id, force) {
        Ok(h) => h,
        Err(r) => return Applied::Rejected(r),
    };
    if let Err(r) = assign_service_ports(state, &mut spec, old.as_ref().map(|o| &o.spec)) {
        return Applied::Rejected(r);
    }
    // Locks are only taken once nothing else can refuse.
    for d in holders {
        state.deployments.remove(&d);
    }
    let app = match old {
        Some(mut existing) if !existing.deleting => {
            if existing.spec.config_differs(&spec) {
                existing.last_config_change_at = at;
                existing.backoff = LaunchBackoff::default();
            } else {
                existing.last_scaling_at = at;
            }
            existing.spec = spec;
            existing.version = at;
            existing
        }
        _ => App::new(spec, at),
    };
    state.apps.insert(app.spec.id.clone(), app.clone());
    record_version(state, &app);
    state.deployments.insert(deployment.id.clone(), deployment.clone());
    Applied::App(Box::new(app))
}

/// Ends `deployment` in the command that started it when it has nothing
/// to do: every app it touches wants no instances and has no task at all
/// (the scheduler would find it converged at once). Its effects still say
/// it started and succeeded, so event followers see the whole deployment;
/// no second Raft entry is needed to finish it.
fn finish_at_once(state: &mut ClusterState, deployment: &Deployment) {
    let idle = deployment.affected_apps.iter().all(|id| {
        state.apps.get(id).is_some_and(|a| !a.deleting && a.spec.instances == 0) && state.tasks_of(id).next().is_none()
    });
    if idle {
        state.deployments.remove(&deployment.id);
    }
}

fn delete_app(state: &mut ClusterState, id: &AppId, at: UnixMillis, deployment: &Deployment, force: bool) -> Applied {
    if !state.apps.contains_key(id) {
        return Applied::Rejected(Rejection::NoSuchApp(id.clone()));
    }
    if let Err(r) = take_lock(state, id, force) {
        return Applied::Rejected(r);
    }
    if let Some(mut app) = state.apps.get_mut(id) {
        app.deleting = true;
        app.version = at;
    }
    // The scheduler kills the tasks when the deployment's step for this app
    // comes (a group stops dependents before what they depend on).
    state.deployments.insert(deployment.id.clone(), deployment.clone());
    Applied::Done
}

fn restart_app(state: &mut ClusterState, id: &AppId, at: UnixMillis, deployment: &Deployment, force: bool) -> Applied {
    match state.apps.get(id) {
        None => return Applied::Rejected(Rejection::NoSuchApp(id.clone())),
        Some(a) if a.deleting => return Applied::Rejected(Rejection::BeingDeleted(id.clone())),
        Some(_) => {}
    }
    if let Err(r) = take_lock(state, id, force) {
        return Applied::Rejected(r);
    }
    let restarted = state.apps.get_mut(id).map(|mut app| {
        app.version = at;
        app.last_config_change_at = at;
        app.backoff = LaunchBackoff::default();
        App::clone(&app)
    });
    let Some(app) = restarted else {
        return Applied::Rejected(Rejection::NoSuchApp(id.clone()));
    };
    record_version(state, &app);
    state.deployments.insert(deployment.id.clone(), deployment.clone());
    Applied::App(Box::new(app))
}

fn kill_tasks(
    state: &mut ClusterState,
    ids: &[TaskId],
    scale: bool,
    at: UnixMillis,
    deployment: Option<&Deployment>,
) -> Applied {
    let mut killed = Vec::new();
    let mut per_app: BTreeMap<AppId, u32> = BTreeMap::new();
    for id in ids {
        let app = state.tasks.update(id, |t| {
            if t.state.is_terminal() || t.goal == TaskGoal::Killed {
                return None;
            }
            t.goal = TaskGoal::Killed;
            Some(t.app_id.clone())
        });
        if let Some(Some(app)) = app {
            killed.push(id.clone());
            *per_app.entry(app).or_default() += 1;
        }
    }
    if scale {
        if let Some(d) = deployment.filter(|_| !per_app.is_empty()) {
            state.deployments.insert(d.id.clone(), d.clone());
        }
        for (app_id, n) in per_app {
            let scaled = state.apps.get_mut(&app_id).map(|mut app| {
                app.spec.instances = app.spec.instances.saturating_sub(n);
                app.last_scaling_at = at;
                app.version = at;
                App::clone(&app)
            });
            if let Some(app) = scaled {
                record_version(state, &app);
            }
        }
    }
    Applied::Killed(killed)
}

/// Why `task` cannot be committed now, or `None` if it can (and then its
/// resources are taken from `usage`).
fn launch_refusal(
    state: &ClusterState,
    usage: &mut BTreeMap<NodeId, NodeUsage>,
    task: &model::Task,
) -> Option<DropReason> {
    if task.job_run.is_some() {
        if let Some(r) = jobs::launch_refusal(state, task) {
            return Some(r);
        }
    } else if state.apps.get(&task.app_id).is_none_or(|a| a.deleting) {
        return Some(DropReason::AppGone);
    }
    // A node that went unreachable after the plan was made takes nothing:
    // its tasks would never start, nor be moved by its unreachableStrategy.
    if state.nodes.get(&task.node).is_none_or(|n| n.draining || !n.is_reachable()) {
        return Some(DropReason::NodeUnavailable);
    }
    if state.tasks.contains_key(&task.id) {
        return Some(DropReason::DuplicateTask);
    }
    let u = usage.entry(task.node).or_insert_with(|| state.usage(task.node));
    if let Some(p) = task.ports.iter().find(|p| u.ports_used.contains(p)) {
        return Some(DropReason::PortTaken(*p));
    }
    if !task.resources.fits_in(&u.free) {
        return Some(DropReason::InsufficientResources);
    }
    u.free.sub(&task.resources);
    u.used.add(&task.resources);
    u.ports_used.extend(task.ports.iter().copied());
    None
}

/// A task of an app with persistent volumes pins its instance to its node
/// (Marathon's resident tasks): replacements go there, to its volumes.
fn record_resident(state: &mut ClusterState, task: &model::Task) {
    if task.job_run.is_some() {
        return;
    }
    let Some((uuid, attempt)) = task.id.instance_attempt() else { return };
    if let Some(mut app) = state.apps.get_mut(&task.app_id) {
        if app.spec.container.has_persistent_volumes() {
            app.resident.insert(uuid, model::ResidentInstance { node: task.node, attempt });
        }
    }
}

/// Nomad's plan applier: every launch is checked again against the newest
/// state; the ones that still fit are committed, the others are returned
/// with their reason and the index the scheduler should plan from again.
fn apply_plan(state: &mut ClusterState, plan: &Plan) -> Applied {
    // Node by node, as launches name them: a node's usage comes from the
    // task table's node index, without a pass over every task.
    let mut usage: BTreeMap<NodeId, NodeUsage> = BTreeMap::new();
    let mut launched = 0;
    let mut dropped = Vec::new();
    for task in &plan.launches {
        match launch_refusal(state, &mut usage, task) {
            None => {
                state.tasks.insert(task.clone());
                jobs::task_launched(state, task);
                record_resident(state, task);
                launched += 1;
            }
            Some(reason) => dropped.push(Dropped { task: task.id.clone(), node: task.node, reason }),
        }
    }
    for id in &plan.kills {
        state.tasks.update(id, |t| t.goal = TaskGoal::Killed);
    }
    for id in &plan.expunges {
        // Unreachable tasks may be expunged too (their app's unreachableStrategy).
        if state.tasks.get(id).is_some_and(|t| t.state.is_terminal() || t.state == TaskState::Unreachable) {
            state.tasks.remove(id);
        }
    }
    for (app_id, failure) in &plan.failures {
        if let Some(mut app) = state.apps.get_mut(app_id) {
            app.last_task_failure = Some(failure.clone());
        }
    }
    for (app_id, backoff) in &plan.backoffs {
        if let Some(mut app) = state.apps.get_mut(app_id) {
            if app.backoff != *backoff {
                app.backoff = *backoff;
            }
        }
    }
    for (d, step) in &plan.deployment_steps {
        if let Some(dep) = state.deployments.get_mut(d) {
            dep.current_step = (*step).clamp(1, dep.steps.len().max(1));
        }
    }
    for d in &plan.finished_deployments {
        state.deployments.remove(d);
    }
    for app_id in &plan.removed_apps {
        let empty = state.tasks_of(app_id).next().is_none();
        if empty && state.apps.get(app_id).is_some_and(|a| a.deleting) {
            state.apps.remove(app_id);
            state.app_versions.remove(app_id);
        }
    }
    Applied::Planned { launched, dropped, index: state.applied_index }
}

fn node_liveness(state: &mut ClusterState, node: NodeId, reachable: bool, at: UnixMillis) -> Applied {
    let Some(n) = state.nodes.get_mut(&node) else {
        return Applied::Rejected(Rejection::NoSuchNode(node));
    };
    n.unreachable_since = if reachable { None } else { n.unreachable_since.or(Some(at)) };
    for id in state.tasks.ids_on(node) {
        let flip = state
            .tasks
            .get(&id)
            .is_some_and(|t| !t.state.is_terminal() && ((t.state == TaskState::Unreachable) == reachable));
        if flip {
            state.tasks.update(&id, |t| {
                // Back from unreachable, its agent re-reports anything that
                // changed while it was cut off.
                t.state = if reachable { TaskState::Running } else { TaskState::Unreachable };
                t.updated_at = at;
            });
        }
    }
    Applied::Done
}

fn remove_node(state: &mut ClusterState, node: NodeId, at: UnixMillis) -> Applied {
    if state.nodes.remove(&node).is_none() {
        return Applied::Rejected(Rejection::NoSuchNode(node));
    }
    state.removed_nodes.insert(node);
    for id in state.tasks.ids_on(node) {
        state.tasks.update(&id, |t| {
            if !t.state.is_terminal() {
                t.state = TaskState::Lost;
                t.goal = TaskGoal::Killed;
                t.updated_at = at;
                t.message = Some("node removed from the cluster".into());
            }
        });
    }
    Applied::Done
}

/// Keeps `app`'s current definition in its version history (bounded,
/// oldest dropped first).
fn record_version(state: &mut ClusterState, app: &App) {
    state.app_versions.get_or_insert_with(app.spec.id.clone(), model::VersionHistory::default).record(AppVersion {
        version: app.version,
        spec: app.spec.clone(),
        last_scaling_at: app.last_scaling_at,
        last_config_change_at: app.last_config_change_at,
    });
}

/// `PutGroup`: every part is applied to a copy, so a refusal of any part
/// leaves the state untouched; locks are judged against the state before.
fn put_group(state: &mut ClusterState, g: &GroupChange<'_>) -> Applied {
    if !g.force {
        let mut holding: Vec<DeploymentId> = g
            .apps
            .iter()
            .map(|a| &a.id)
            .chain(g.remove_apps)
            .flat_map(|id| state.deployments_of(id).map(|d| d.id.clone()))
            .collect();
        holding.sort();
        holding.dedup();
        if !holding.is_empty() {
            return Applied::Rejected(Rejection::Locked(holding));
        }
    }
    let mut next = state.clone();
    for spec in g.apps {
        if let Applied::Rejected(r) = put_app(&mut next, spec, g.at, g.deployment, true) {
            return Applied::Rejected(r);
        }
    }
    for id in g.remove_apps {
        if let Applied::Rejected(r) = delete_app(&mut next, id, g.at, g.deployment, true) {
            return Applied::Rejected(r);
        }
    }
    for (id, meta) in g.groups {
        next.groups.insert(id.clone(), meta.clone());
    }
    for id in g.remove_groups {
        next.groups.remove(id);
    }
    next.deployments.insert(g.deployment.id.clone(), g.deployment.clone());
    *state = next;
    Applied::Done
}

/// `PutApps`: every app is put onto a copy, so one refusal refuses all.
/// Locks and deletes in progress are judged against the state before (the
/// change's own deployment holds all its apps).
fn put_apps(
    state: &mut ClusterState,
    apps: &[AppPut],
    at: UnixMillis,
    deployment: &Deployment,
    force: bool,
) -> Applied {
    for p in apps {
        if let Err(r) = check_precondition(state, &p.app.id, p.expect) {
            return Applied::Rejected(r);
        }
        if !force {
            if state.apps.get(&p.app.id).is_some_and(|a| a.deleting) {
                return Applied::Rejected(Rejection::BeingDeleted(p.app.id.clone()));
            }
            if let Err(r) = lock_holders(state, &p.app.id, false) {
                return Applied::Rejected(r);
            }
        }
    }
    let mut next = state.clone();
    let mut stored = Vec::with_capacity(apps.len());
    for p in apps {
        match put_app(&mut next, &p.app, at, deployment, true) {
            Applied::App(app) => stored.push(*app),
            Applied::Rejected(r) => return Applied::Rejected(r),
            _ => {}
        }
    }
    *state = next;
    Applied::Apps(stored)
}

/// `RollbackDeployment`: one new deployment returns every app the old one
/// affected to its newest version older than the old one; an app the old
/// one created is deleted. All or nothing.
fn rollback_deployment(state: &mut ClusterState, id: &DeploymentId, new_id: &DeploymentId, at: UnixMillis) -> Applied {
    let Some(old) = state.deployments.get(id).cloned() else {
        return Applied::Rejected(Rejection::NoSuchDeployment(id.clone()));
    };
    let mut next = state.clone();
    next.deployments.remove(id);
    // For each app still there: the definition to return to, or None to delete it.
    let reverts: Vec<(AppId, Option<AppSpec>)> = old
        .affected_apps
        .iter()
        .filter(|app| next.apps.contains_key(app))
        .map(|app| {
            let previous = next.versions_of(app).rev().find(|v| v.version < old.version).map(|v| v.spec.clone());
            (app.clone(), previous)
        })
        .collect();
    if reverts.is_empty() {
        *state = next;
        return Applied::RolledBack(None);
    }
    let actions = reverts
        .iter()
        .map(|(app, to)| {
            let action =
                if to.is_some() { DeploymentAction::RestartApplication } else { DeploymentAction::StopApplication };
            (action, app.clone())
        })
        .collect();
    let deployment = Deployment {
        id: new_id.clone(),
        version: at,
        affected_apps: reverts.iter().map(|(a, _)| a.clone()).collect(),
        steps: vec![Step { actions }],
        current_step: 1,
        started_at: at,
    };
    for (app, to) in &reverts {
        let res = match to {
            Some(spec) => put_app(&mut next, spec, at, &deployment, true),
            None => delete_app(&mut next, app, at, &deployment, true),
        };
        if let Applied::Rejected(r) = res {
            return Applied::Rejected(r);
        }
    }
    *state = next;
    Applied::RolledBack(Some(Box::new(deployment)))
}

/// The parts of `Command::PutGroup`, borrowed.
struct GroupChange<'a> {
    apps: &'a [AppSpec],
    remove_apps: &'a [AppId],
    groups: &'a [(AppId, GroupMeta)],
    remove_groups: &'a [AppId],
    at: UnixMillis,
    deployment: &'a Deployment,
    force: bool,
}

fn task_health(state: &mut ClusterState, r: &model::HealthReport) {
    if state.tasks.get(&r.task_id).is_none_or(|t| t.state.is_terminal()) {
        return;
    }
    state.tasks.update(&r.task_id, |t| health_into(t, r));
}

fn health_into(t: &mut model::Task, r: &model::HealthReport) {
    let mut h = t.health.clone().unwrap_or_default();
    h.alive = r.alive;
    h.consecutive_failures = r.consecutive_failures;
    if r.alive {
        h.first_success = h.first_success.or(Some(r.at));
        h.last_success = Some(r.at);
    } else {
        h.last_failure = Some(r.at);
        h.last_failure_cause = r.cause.clone();
    }
    t.healthy = Some(r.alive);
    t.health = Some(h);
}

fn kill_unhealthy(state: &mut ClusterState, id: &TaskId, reason: &str, at: UnixMillis) -> Applied {
    if !state.tasks.get(id).is_some_and(|t| !t.state.is_terminal() && t.goal != TaskGoal::Killed) {
        return Applied::Killed(Vec::new());
    }
    state.tasks.update(id, |t| {
        t.goal = TaskGoal::Killed;
        t.message = Some(reason.to_string());
        t.updated_at = t.updated_at.max(at);
    });
    Applied::Killed(vec![id.clone()])
}

/// Records readiness results; once a task is ready it stays ready.
fn task_readiness(state: &mut ClusterState, r: &model::ReadinessReport) {
    if !state.tasks.get(&r.task_id).is_some_and(|t| !t.state.is_terminal() && t.ready != Some(true)) {
        return;
    }
    state.tasks.update(&r.task_id, |t| {
        t.ready = Some(r.ready);
        t.readiness = r.results.clone();
    });
}

fn task_status(state: &mut ClusterState, s: &TaskStatus) {
    // A terminal task never comes back: late or duplicate reports are ignored.
    if state.tasks.get(&s.task_id).is_none_or(|t| t.state.is_terminal()) {
        return;
    }
    // A report sent before its node was found lost, committed after, must
    // not make the task look alive on a node that is gone: it would never
    // be replaced. Unreachable holds until the node's liveness comes back
    // (which re-marks its tasks running); only an end is taken at once.
    let lost = state.tasks.get(&s.task_id).is_some_and(|t| {
        t.state == TaskState::Unreachable && state.nodes.get(&t.node).is_none_or(|n| !n.is_reachable())
    });
    if lost && !s.state.is_terminal() {
        return;
    }
    state.tasks.update(&s.task_id, |t| status_into(t, s));
    if let Some(t) = state.tasks.get(&s.task_id).filter(|t| t.job_run.is_some()).cloned() {
        jobs::task_reported(state, &t);
    }
}

fn status_into(t: &mut model::Task, s: &TaskStatus) {
    t.state = s.state;
    t.updated_at = s.at;
    if s.state == TaskState::Running && t.started_at.is_none() {
        t.started_at = Some(s.at);
    }
    if s.message.is_some() {
        t.message = s.message.clone();
    }
    if s.container_ip.is_some() {
        t.container_ip = s.container_ip;
    }
}

mod jobs;

#[cfg(test)]
mod tests;
