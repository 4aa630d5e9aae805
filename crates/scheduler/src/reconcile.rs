//! `plan`: compares what each app wants with the tasks it has and produces
//! the launches, kills, expunges, backoffs and finished deployments.

use crate::backoff;
use crate::placement::{active, Placer};
use model::{
    App, AppId, ClusterState, DeploymentAction, KillSelection, LaunchBackoff, OfferSummary, Plan, Task, TaskFailure,
    TaskGoal, TaskId, TaskState, UnixMillis,
};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Instances an app wants but could not get, and why (for `/v2/queue`).
#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    pub app: AppId,
    pub count: u32,
    pub why: Waiting,
}

/// Why an app's missing instances are not being launched.
#[derive(Debug, Clone, PartialEq)]
pub enum Waiting {
    /// Its restart backoff holds launches back until then.
    Backoff { until: UnixMillis },
    /// Every node declined the next task: the tally in Marathon's reasons,
    /// and how many nodes gave each detail (e.g. which constraint).
    Declined { offers: OfferSummary, details: BTreeMap<String, u32> },
}

impl Unplaced {
    /// The nodes' answers (nothing was offered while backing off).
    pub fn offers(&self) -> OfferSummary {
        match &self.why {
            Waiting::Backoff { .. } => OfferSummary::default(),
            Waiting::Declined { offers, .. } => *offers,
        }
    }

    /// One sentence for people, e.g. "2 of 2 nodes declined: constraint
    /// hostname:Unique not satisfied (2 nodes)".
    pub fn explain(&self, now: UnixMillis) -> String {
        match &self.why {
            Waiting::Backoff { until } => {
                format!("delayed by the restart backoff for {:.1}s", now.secs_until(*until).max(0.0))
            }
            Waiting::Declined { offers, .. } if offers.processed == 0 => "no reachable nodes".into(),
            Waiting::Declined { offers, details } => {
                let parts: Vec<String> =
                    details.iter().map(|(d, n)| format!("{d} ({n} node{})", if *n == 1 { "" } else { "s" })).collect();
                format!("{} of {} nodes declined: {}", offers.unused(), offers.processed, parts.join("; "))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub plan: Plan,
    pub unplaced: Vec<Unplaced>,
    /// Job runs waiting for their task, and why.
    pub waiting_runs: Vec<crate::WaitingRun>,
    /// When to run again even if nothing changes (a backoff expires).
    pub wake_at: Option<UnixMillis>,
    /// Apps with launches left over because the plan reached
    /// `MAX_LAUNCHES_PER_PLAN`: the next plan must look at them again.
    pub deferred: Vec<AppId>,
}

/// Launches in one plan at most (about 600 bytes each in the Raft log).
pub const MAX_LAUNCHES_PER_PLAN: usize = 2000;

/// How long a task must run before an app's backoff is forgiven.
const BACKOFF_RESET_AFTER_SECS: f64 = 30.0;

/// Which apps a plan looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'s> {
    /// Every app, every deployment, and tasks of apps that no longer exist.
    All,
    /// Only these apps and the deployments that hold any of them. The
    /// leader plans the apps a change touched: an app nothing touched since
    /// the last plan has nothing new to do, and looking at every app on
    /// every change made a plan cost O(tasks in the cluster) per commit.
    Apps(&'s BTreeSet<AppId>),
}

impl Scope<'_> {
    fn has(&self, app: &AppId) -> bool {
        match self {
            Scope::All => true,
            Scope::Apps(apps) => apps.contains(app),
        }
    }

    /// Whether the deployment holds an app in scope.
    fn touches(&self, d: &model::Deployment) -> bool {
        match self {
            Scope::All => true,
            Scope::Apps(_) => {
                d.affected_apps.iter().any(|a| self.has(a))
                    || d.steps.iter().flat_map(|s| s.actions.iter()).any(|(_, a)| self.has(a))
            }
        }
    }
}

/// The plan over every app (see [`plan_scoped`]).
pub fn plan(state: &ClusterState, now: UnixMillis, rng: &mut impl Rng) -> Outcome {
    plan_scoped(state, Scope::All, now, rng)
}

/// The plan for the apps in `scope` (job runs are always planned: they are
/// few and cheap to look at). For an app in scope it is the same as the
/// plan over every app, as long as the apps out of scope have nothing to do.
pub fn plan_scoped(state: &ClusterState, scope: Scope<'_>, now: UnixMillis, rng: &mut impl Rng) -> Outcome {
    let mut out = Outcome::default();
    let mut placer = Placer::new(state);
    let mut expunged: BTreeSet<TaskId> = BTreeSet::new();

    let held = held_apps(state, scope);
    let apps: Box<dyn Iterator<Item = &App>> = match scope {
        Scope::All => Box::new(state.apps.values()),
        // In id order, as the whole table is walked.
        Scope::Apps(ids) => Box::new(ids.iter().filter_map(|id| state.apps.get(id))),
    };
    for app in apps {
        let id = &app.spec.id;
        let backoff = expunge_terminal(state, app, now, &mut out, &mut expunged);
        if app.deleting {
            let left: Vec<&Task> = state.tasks_of(id).filter(|t| !expunged.contains(&t.id)).collect();
            if left.is_empty() {
                out.plan.removed_apps.push(id.clone());
            } else if !held.contains(id) {
                // Its stop step has come: kill what is left.
                out.plan.kills.extend(left.iter().filter(|t| t.goal == TaskGoal::Running).map(|t| t.id.clone()));
            }
            continue;
        }
        if held.contains(id) {
            // A later step of a deployment (dependencies first): wait.
            continue;
        }
        reconcile_app(state, app, backoff, now, rng, &mut placer, &mut out);
    }

    // Job runs after the apps: they take only what services left free.
    crate::jobs::plan_runs(state, now, rng, &mut placer, &mut out);

    // Tasks of apps that no longer exist (should not happen; be safe). From
    // the index: one lookup per app with tasks, not one per task.
    let orphans: Box<dyn Iterator<Item = &Task>> = match scope {
        Scope::All => {
            Box::new(state.tasks.by_app().filter(|(app, _)| !state.apps.contains_key(app)).flat_map(|(_, ts)| ts))
        }
        Scope::Apps(ids) => {
            Box::new(ids.iter().filter(|a| !state.apps.contains_key(a)).flat_map(|a| state.tasks_of(a)))
        }
    };
    for t in orphans.filter(|t| t.job_run.is_none()) {
        if t.state.is_terminal() {
            out.plan.expunges.push(t.id.clone());
        } else if t.goal != TaskGoal::Killed {
            out.plan.kills.push(t.id.clone());
        }
    }

    finish_deployments(state, scope, &mut out.plan);
    out
}

/// Returns the app's backoff after the failures seen in this round.
fn expunge_terminal(
    state: &ClusterState,
    app: &App,
    now: UnixMillis,
    out: &mut Outcome,
    gone: &mut BTreeSet<TaskId>,
) -> LaunchBackoff {
    let mut backoff = app.backoff;
    let mut failed = false;
    for t in state.tasks_of(&app.spec.id).filter(|t| t.state.is_terminal()) {
        out.plan.expunges.push(t.id.clone());
        gone.insert(t.id.clone());
        // A task that ended although nobody asked it to is a failure: it is
        // recorded and the next launch of the app backs off.
        if t.goal == TaskGoal::Running && !app.deleting {
            if t.state != TaskState::Finished {
                out.plan.failures.push((
                    app.spec.id.clone(),
                    TaskFailure {
                        task_id: t.id.clone(),
                        state: t.state,
                        message: t.message.clone().unwrap_or_default(),
                        host: t.host.clone(),
                        timestamp: t.updated_at,
                        version: t.app_version,
                    },
                ));
            }
            backoff = backoff::after_failure(&app.spec.backoff, &backoff, now);
            failed = true;
        }
    }
    if failed {
        out.plan.backoffs.push((app.spec.id.clone(), backoff));
    }
    backoff
}

fn reconcile_app(
    state: &ClusterState,
    app: &App,
    backoff: LaunchBackoff,
    now: UnixMillis,
    rng: &mut impl Rng,
    placer: &mut Placer<'_>,
    out: &mut Outcome,
) {
    let id = &app.spec.id;
    let spec = &app.spec;
    let instances = spec.instances as usize;
    let mut tasks = active(state, id);
    handle_unreachable(state, app, now, out, &mut tasks);
    // Tasks on a draining node move: killed here, replaced elsewhere.
    tasks.retain(|t| {
        let draining = state.nodes.get(&t.node).is_none_or(|n| n.draining);
        if draining {
            out.plan.kills.push(t.id.clone());
        }
        !draining
    });
    let is_current = |t: &&Task| t.app_version >= app.last_config_change_at;
    let (current, old): (Vec<&Task>, Vec<&Task>) = tasks.into_iter().partition(is_current);
    // With health checks, only healthy tasks count as up, and with readiness
    // checks only ready ones (Marathon's rule for deployments and
    // minimumHealthCapacity).
    let current_running = current.iter().filter(|t| t.is_up(&app.spec)).count();

    // Scale down: kill the surplus of current tasks, not-yet-running first.
    let mut kills: Vec<TaskId> = Vec::new();
    if current.len() > instances {
        kills.extend(select_kills(&current, current.len() - instances, spec.kill_selection));
    }

    // Replace old versions: keep enough old tasks alive to honour
    // minimumHealthCapacity until new ones run.
    let min_healthy = (instances as f64 * spec.upgrade.minimum_health_capacity).ceil() as usize;
    let keep_old = min_healthy.saturating_sub(current_running.min(instances)).min(old.len());
    let mut old_kills = old.len() - keep_old;

    // Launches, bounded by maximumOverCapacity while old tasks remain.
    let missing = instances.saturating_sub(current.len());
    let cap = instances + (instances as f64 * spec.upgrade.maximum_over_capacity).floor() as usize;
    let alive_after_kills = current.len().min(instances) + keep_old;
    let mut launch = missing.min(cap.saturating_sub(alive_after_kills));
    if launch == 0 && missing > 0 && old_kills == 0 && keep_old > 0 && current.len() == current_running {
        // minimumHealthCapacity 1 with maximumOverCapacity 0 cannot move
        // otherwise: replace one task at a time, once no new task is still
        // on its way to healthy.
        old_kills = 1;
    }
    kills.extend(select_kills(&old, old_kills, spec.kill_selection));
    out.plan.kills.extend(kills);

    if launch > 0 && now < backoff.not_before {
        out.wake_at = Some(out.wake_at.map_or(backoff.not_before, |w| w.min(backoff.not_before)));
        out.unplaced.push(Unplaced {
            app: id.clone(),
            count: launch as u32,
            why: Waiting::Backoff { until: backoff.not_before },
        });
        launch = 0;
    }

    // Bounded per plan, so one Raft entry stays small; the rest is placed by
    // the next plan, which follows this one's commit at once.
    let room = MAX_LAUNCHES_PER_PLAN.saturating_sub(out.plan.launches.len());
    // Resident instances (persistent volumes) without a live task start
    // again first, each on its own node; only then do new instances come.
    let mut idle_residents = idle_resident_instances(state, app);
    // New resident instances only up to the instance count: one whose task
    // is still ending is waited for, not replaced by a new volume elsewhere.
    let mut new_allowed =
        if spec.container.has_persistent_volumes() { instances.saturating_sub(app.resident.len()) } else { usize::MAX };
    if launch > room {
        out.deferred.push(id.clone());
    }
    for placed in 0..launch.min(room) {
        let resident = idle_residents.pop();
        if resident.is_none() {
            if new_allowed == 0 {
                break;
            }
            new_allowed -= 1;
        }
        let placement = match &resident {
            Some((_, r)) => placer.place_on(spec, r.node, rng),
            None => placer.place(spec, rng),
        };
        match placement {
            Ok((node, ports)) => {
                let task_id = match resident {
                    Some((uuid, r)) => TaskId::new(id, uuid, r.attempt + 1),
                    None => TaskId::new(id, uuid::Builder::from_random_bytes(rng.gen()).into_uuid(), 1),
                };
                out.plan.launches.push(Task {
                    id: task_id,
                    app_id: id.clone(),
                    node: node.id,
                    host: node.advertise.clone(),
                    app_version: app.last_config_change_at,
                    ports,
                    resources: spec.resources,
                    state: TaskState::Staging,
                    goal: TaskGoal::Running,
                    staged_at: now,
                    started_at: None,
                    updated_at: now,
                    message: None,
                    healthy: None,
                    health: None,
                    ready: None,
                    readiness: Vec::new(),
                    job_run: None,
                    container_ip: None,
                });
            }
            Err(d) => {
                let why = Waiting::Declined { offers: d.offers, details: d.details };
                out.unplaced.push(Unplaced { app: id.clone(), count: (launch - placed) as u32, why });
                break;
            }
        }
    }

    // Forgive the backoff once a task has run for a while.
    if backoff.delay_seconds > 0.0 {
        let reset_at = current
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .filter_map(|t| t.started_at)
            .map(|s| s.plus_secs_f64(BACKOFF_RESET_AFTER_SECS))
            .min();
        match reset_at {
            Some(at) if at <= now => out.plan.backoffs.push((id.clone(), LaunchBackoff::default())),
            Some(at) => out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at))),
            None => {}
        }
    }
}

/// Applies the app's `unreachableStrategy`: unreachable tasks stop counting
/// after `inactive_after_seconds` (so replacements start) and are expunged
/// after `expunge_after_seconds`.
/// The app's resident instances that have no live task, the first last
/// (taken with `pop`).
fn idle_resident_instances(state: &ClusterState, app: &App) -> Vec<(uuid::Uuid, model::ResidentInstance)> {
    if !app.spec.container.has_persistent_volumes() {
        return Vec::new();
    }
    let live: BTreeSet<uuid::Uuid> = state
        .tasks_of(&app.spec.id)
        .filter(|t| !t.state.is_terminal())
        .filter_map(|t| t.id.instance_attempt().map(|(u, _)| u))
        .collect();
    let mut idle: Vec<_> = app.resident.iter().filter(|(u, _)| !live.contains(u)).map(|(u, r)| (*u, *r)).collect();
    idle.reverse();
    idle
}

fn handle_unreachable(state: &ClusterState, app: &App, now: UnixMillis, out: &mut Outcome, tasks: &mut Vec<&Task>) {
    let model::UnreachableStrategy::Enabled { inactive_after_seconds, expunge_after_seconds } = app.spec.unreachable
    else {
        return;
    };
    let mut wake = |at: UnixMillis| out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
    for t in state.tasks_of(&app.spec.id).filter(|t| t.state == TaskState::Unreachable) {
        let expunge_at = t.updated_at.plus_secs_f64(expunge_after_seconds.max(inactive_after_seconds));
        if now >= expunge_at {
            out.plan.expunges.push(t.id.clone());
        } else {
            wake(expunge_at);
        }
    }
    tasks.retain(|t| {
        if t.state != TaskState::Unreachable {
            return true;
        }
        let inactive_at = t.updated_at.plus_secs_f64(inactive_after_seconds);
        if now >= inactive_at {
            false
        } else {
            wake(inactive_at);
            true
        }
    });
}

fn select_kills(tasks: &[&Task], n: usize, selection: KillSelection) -> Vec<TaskId> {
    let mut sorted: Vec<&&Task> = tasks.iter().collect();
    sorted.sort_by(|a, b| {
        let running = |t: &Task| t.state == TaskState::Running;
        let age = match selection {
            KillSelection::YoungestFirst => b.staged_at.cmp(&a.staged_at),
            KillSelection::OldestFirst => a.staged_at.cmp(&b.staged_at),
        };
        let healthy = |t: &Task| t.healthy != Some(false);
        running(a).cmp(&running(b)).then(healthy(a).cmp(&healthy(b))).then(age).then(a.id.cmp(&b.id))
    });
    sorted.into_iter().take(n).map(|t| t.id.clone()).collect()
}

/// A deployment is done when every app it touches has converged: exactly
/// `instances` running (healthy, ready) tasks of the current version and
/// nothing else alive
/// (or, for a delete, the app is gone).
/// Apps whose turn in a deployment has not come: Marathon creates a group's
/// new apps in a first `StartApplication` step (no instances yet) and then
/// scales them step by step in dependency order. An app is launched from
/// the first step that scales or restarts it.
fn held_apps(state: &ClusterState, scope: Scope<'_>) -> BTreeSet<AppId> {
    let none_removed = BTreeSet::new();
    let no_kills = BTreeSet::new();
    let mut held = BTreeSet::new();
    for d in state.deployments.values().filter(|d| scope.touches(d)) {
        // Steps already done count as passed even before the store records it.
        let mut current = d.current_step.max(1);
        while current <= d.steps.len() && step_done(state, &d.steps[current - 1], &no_kills, &none_removed) {
            current += 1;
        }
        let mut first_launch: BTreeMap<&AppId, usize> = BTreeMap::new();
        let mut first_seen: BTreeMap<&AppId, usize> = BTreeMap::new();
        for (i, step) in d.steps.iter().enumerate() {
            for (action, app) in &step.actions {
                first_seen.entry(app).or_insert(i + 1);
                if !matches!(action, DeploymentAction::StartApplication | DeploymentAction::StopApplication) {
                    first_launch.entry(app).or_insert(i + 1);
                }
            }
        }
        for (app, seen) in first_seen {
            let turn = first_launch.get(app).copied().unwrap_or(seen);
            if turn > current {
                held.insert(app.clone());
            }
        }
    }
    held
}

/// Whether every action of a step is done.
fn step_done(
    state: &ClusterState,
    step: &model::Step,
    killing: &BTreeSet<&TaskId>,
    removed: &BTreeSet<&AppId>,
) -> bool {
    step.actions.iter().all(|(action, app_id)| match state.apps.get(app_id) {
        // Starting means creating the app; its instances come with a scale step.
        Some(app) if *action == DeploymentAction::StartApplication && !app.deleting => true,
        None => true,
        Some(_) if removed.contains(app_id) => true,
        Some(app) if app.deleting || *action == DeploymentAction::StopApplication => false,
        Some(app) => converged(state, app, killing),
    })
}

/// Moves deployments through their steps; finished when the last is done.
/// Only deployments that hold an app in scope: another's apps did not
/// change, so neither did whether its steps are done.
fn finish_deployments(state: &ClusterState, scope: Scope<'_>, plan: &mut Plan) {
    let removed: BTreeSet<&AppId> = plan.removed_apps.iter().collect();
    // Built once per plan, not once per app checked.
    let killing: BTreeSet<&TaskId> = plan.kills.iter().collect();
    let (mut finished, mut steps) = (Vec::new(), Vec::new());
    for d in state.deployments.values().filter(|d| scope.touches(d)) {
        let mut step = d.current_step.max(1);
        while step <= d.steps.len() && step_done(state, &d.steps[step - 1], &killing, &removed) {
            step += 1;
        }
        if step > d.steps.len() {
            finished.push(d.id.clone());
        } else if step != d.current_step {
            steps.push((d.id.clone(), step));
        }
    }
    plan.finished_deployments.extend(finished);
    plan.deployment_steps.extend(steps);
}

fn converged(state: &ClusterState, app: &App, killing: &BTreeSet<&TaskId>) -> bool {
    let mut running = 0usize;
    let mut other_alive = 0usize;
    for t in state.tasks_of(&app.spec.id).filter(|t| !t.state.is_terminal()) {
        let current = t.app_version >= app.last_config_change_at;
        if current && t.goal == TaskGoal::Running && t.is_up(&app.spec) && !killing.contains(&t.id) {
            running += 1;
        } else {
            other_alive += 1;
        }
    }
    running == app.spec.instances as usize && other_alive == 0
}

#[cfg(test)]
mod tests;
