//! The leader's loop: whenever a change takes effect (or a backoff expires),
//! run the pure scheduler over an immutable snapshot of the local replica
//! (on a blocking thread, so a plan over many tasks never holds up the async
//! workers or `apply`) and commit its plan as one `ApplyPlan` command. Only
//! the leader runs it; it stops when leadership moves elsewhere.
//!
//! A plan looks at the apps the changes since the last plan touched (and
//! those still waiting for room), not at every app: at 100,000 tasks a plan
//! over everything after every commit was the leader's top cost. Changes
//! to nodes, groups or jobs, a lagging feed and due timers plan everything.
//!
//! Plan/apply split (Nomad's): the store re-checks every launch against the
//! newest state and returns the dropped ones with the index to refresh from;
//! the loop plans again at once from that index instead of sleeping.

use model::AppId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use store::{Applied, Command, Store, Update};

use crate::clock::now;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The scheduler's series for `/metrics`, moved by the leader's loop only.
#[derive(Clone, Debug)]
pub struct SchedulerMetrics {
    plan_seconds: Histogram,
    placements: Counter,
    dropped: Family<ReasonLabel, Counter>,
    unplaced: Family<ReasonLabel, Gauge>,
}

impl Default for SchedulerMetrics {
    fn default() -> SchedulerMetrics {
        SchedulerMetrics {
            // 0.1 ms .. ~3 s: a plan over 100,000 tasks takes tens of ms.
            plan_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            placements: Counter::default(),
            dropped: Family::default(),
            unplaced: Family::default(),
        }
    }
}

impl SchedulerMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register_with_unit(
            "scheduler_plan",
            "Time the scheduler took to make one plan (on the leader)",
            Unit::Seconds,
            self.plan_seconds.clone(),
        );
        r.register("scheduler_placements", "Task launches committed by the leader's plans", self.placements.clone());
        r.register(
            "scheduler_dropped_launches",
            "Planned launches the plan applier refused, by reason",
            self.dropped.clone(),
        );
        r.register(
            "scheduler_unplaced_instances",
            "Instances the last plan could not place, by the reason most nodes gave (Backoff: held by the restart delay)",
            self.unplaced.clone(),
        );
    }

    fn planned<'u>(&self, seconds: f64, unplaced: impl IntoIterator<Item = &'u scheduler::Unplaced>) {
        self.plan_seconds.observe(seconds);
        self.unplaced.clear();
        for u in unplaced {
            let reason = match &u.why {
                scheduler::Waiting::Backoff { .. } => "Backoff",
                scheduler::Waiting::Declined { offers, .. } => model::DeclineReason::FUNNEL
                    .iter()
                    .copied()
                    .filter(|r| offers.declined(*r) > 0)
                    // The reason most nodes gave; the earliest in the funnel on a tie.
                    .rev()
                    .max_by_key(|r| offers.declined(*r))
                    .map(|r| r.marathon_name())
                    .unwrap_or("NoOffers"),
            };
            self.unplaced.get_or_create(&ReasonLabel { reason }).inc_by(i64::from(u.count));
        }
    }
}

fn drop_reason(r: &store::DropReason) -> &'static str {
    match r {
        store::DropReason::AppGone => "app_gone",
        store::DropReason::NodeUnavailable => "node_unavailable",
        store::DropReason::DuplicateTask => "duplicate_task",
        store::DropReason::InsufficientResources => "insufficient_resources",
        store::DropReason::PortTaken(_) => "port_taken",
    }
}

/// What the next plan must look at: the apps that changes touched since
/// the last plan, or everything.
#[derive(Debug, Default)]
struct Pending {
    all: bool,
    apps: BTreeSet<AppId>,
}

impl Pending {
    fn everything() -> Pending {
        Pending { all: true, apps: BTreeSet::new() }
    }

    fn any(&self) -> bool {
        self.all || !self.apps.is_empty()
    }

    fn merge(&mut self, other: Pending) {
        self.all |= other.all;
        self.apps.extend(other.apps);
    }

    /// Folds in one update from the feed.
    fn note(&mut self, u: &Update) {
        let c = match u {
            Update::Change(c) => c,
            Update::Reset { .. } => {
                self.all = true;
                return;
            }
        };
        if !needs_plan(c) {
            return;
        }
        use store::Effect;
        for e in c.effects.iter() {
            match e {
                Effect::TaskChanged { .. } => {
                    if let Some(t) = e.task() {
                        self.apps.insert(t.app_id.clone());
                    }
                }
                Effect::AppPut { after, .. } => {
                    self.apps.insert(after.spec.id.clone());
                }
                Effect::AppRemoved { before } => {
                    self.apps.insert(before.spec.id.clone());
                }
                Effect::DeploymentStarted(d)
                | Effect::DeploymentChanged { after: d, .. }
                | Effect::DeploymentFinished { deployment: d, .. } => {
                    self.apps.extend(d.affected_apps.iter().cloned());
                }
                // A node that joins, leaves, drains or comes back changes
                // where any app may go (and what waits for room): plan all.
                Effect::NodeChanged { .. } | Effect::GroupChanged { .. } | Effect::JobChanged { .. } => {
                    self.all = true;
                }
            }
        }
    }
}

pub async fn run(store: Arc<Store>, metrics: SchedulerMetrics) {
    let mut leadership = store.leadership();
    // Seeded once from the OS here at the edge; the scheduler itself only
    // sees the RNG it is handed.
    let mut rng = StdRng::from_entropy();
    loop {
        while !leadership.borrow_and_update().is_self {
            if leadership.changed().await.is_err() {
                return;
            }
        }
        tracing::info!("leading: scheduling");
        let mut sub = store.subscribe();
        let deployments = AbortOnDrop(tokio::spawn(log_deployments(store.subscribe())));
        // The first plan of a term looks at everything; later ones at what
        // changed, plus the apps still waiting for room (a kill elsewhere
        // may have freed it). Timers (backoffs, unreachable tasks) are
        // per app too, so when the earliest is due everything is planned.
        let mut pending = Pending::everything();
        let mut unplaced: BTreeMap<AppId, scheduler::Unplaced> = BTreeMap::new();
        let mut wake_at: Option<model::UnixMillis> = None;
        loop {
            if !store.is_leader() {
                break;
            }
            let mut scope = std::mem::take(&mut pending);
            let full = scope.all;
            scope.apps.extend(
                unplaced
                    .iter()
                    .filter(|(_, u)| matches!(u.why, scheduler::Waiting::Declined { .. }))
                    .map(|(a, _)| a.clone()),
            );
            let snap = store.snapshot();
            let made_at = snap.applied_index;
            let t = now();
            let planned = tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let out = if scope.all {
                    scheduler::plan(&snap, t, &mut rng)
                } else {
                    scheduler::plan_scoped(&snap, scheduler::Scope::Apps(&scope.apps), t, &mut rng)
                };
                let timers = scheduler::timers(&snap, t);
                (out, timers, rng, started.elapsed().as_secs_f64(), scope)
            })
            .await;
            let (mut out, timers, scope) = match planned {
                Ok((out, timers, r, seconds, scope)) => {
                    rng = r;
                    if full {
                        unplaced.clear();
                    } else {
                        unplaced.retain(|a, _| !scope.apps.contains(a));
                    }
                    unplaced.extend(out.unplaced.iter().map(|u| (u.app.clone(), u.clone())));
                    metrics.planned(seconds, unplaced.values());
                    (out, timers, scope)
                }
                Err(e) => {
                    // A panic in the scheduler: report it and let the
                    // supervisor decide (this loop cannot go on without a plan).
                    tracing::error!(error = %e, "the scheduler failed");
                    return;
                }
            };
            if !timers.starts.is_empty() || !timers.stops.is_empty() {
                // Their commits wake this loop, which then places the runs;
                // what this plan was for is planned then too.
                pending.merge(scope);
                if !crate::job_clock::propose(&store, timers).await {
                    // All refused (not leading any more, or a bug): do not spin.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                continue;
            }
            let earliest = |a: Option<model::UnixMillis>, b: Option<model::UnixMillis>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            out.wake_at = earliest(out.wake_at, timers.wake_at);
            // A plan over some apps knows only their timers: keep the others'.
            wake_at = if full { out.wake_at } else { earliest(wake_at, out.wake_at) };
            // What did not fit in this plan's launches goes in the next one.
            pending.apps.extend(out.deferred.drain(..));
            let mut pause = None;
            if !out.plan.is_empty() {
                let result = store.propose(Command::ApplyPlan(out.plan)).await;
                if let Ok(Applied::Planned { launched, dropped, .. }) = &result {
                    metrics.placements.inc_by(*launched as u64);
                    for d in dropped {
                        metrics.dropped.get_or_create(&ReasonLabel { reason: drop_reason(&d.reason) }).inc();
                    }
                }
                match result {
                    Ok(Applied::Planned { launched, dropped, index }) if !dropped.is_empty() => {
                        tracing::debug!(
                            launched,
                            dropped = dropped.len(),
                            index,
                            "plan partly dropped; planning again"
                        );
                        // Rare (the state moved under the plan): replan everything.
                        pending.all = true;
                        if launched == 0 && index == made_at + 1 {
                            // Nothing else committed in between, yet every launch was
                            // refused: the scheduler and the applier disagree. Log it
                            // rather than spin.
                            tracing::warn!(?dropped, "the plan applier refused a plan made on its own state");
                            pause = Some(Duration::from_millis(500));
                        } else {
                            // The replica is at `index` already (propose returns after the
                            // local apply): plan again at once from the newer state.
                            continue;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "plan not committed");
                        pending.all = true;
                        pause = Some(Duration::from_millis(500));
                    }
                }
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
                continue;
            }
            let wake = wake_at
                .map(|w| Duration::from_millis((w.0 - now().0).max(1) as u64))
                .unwrap_or(Duration::from_secs(3600));
            let sleep = tokio::time::sleep(wake);
            tokio::pin!(sleep);
            // Wait for a change that did something (a refused write changes
            // nothing and needs no new plan), then fold in all queued ones.
            loop {
                tokio::select! {
                    u = sub.next() => match u {
                        None => return,
                        Some(u) => {
                            pending.note(&u);
                            if !pending.any() {
                                continue;
                            }
                            while let Some(u) = sub.try_next() {
                                pending.note(&u);
                            }
                            break;
                        }
                    },
                    _ = &mut sleep => {
                        pending.all = true;
                        break;
                    }
                    r = leadership.changed() => {
                        if r.is_err() {
                            return;
                        }
                        pending.all = true;
                        break;
                    }
                }
            }
        }
        drop(deployments);
        tracing::info!("no longer leading");
    }
}

/// Whether a change can give the scheduler anything to do. A refused write
/// changes nothing; an app put that wants no instances, has no task and no
/// deployment left (its deployment started and finished in the same
/// command) changes no plan either, so a burst of such writes costs no plan
/// over every app each.
fn needs_plan(c: &store::Change) -> bool {
    use store::Effect;
    let s = &c.state;
    let idle_app = |id: &model::AppId| {
        s.apps.get(id).is_some_and(|a| !a.deleting && a.spec.instances == 0)
            && s.tasks_of(id).next().is_none()
            && s.deployments_of(id).next().is_none()
    };
    c.effects.iter().any(|e| match e {
        Effect::AppPut { after, .. } => !idle_app(&after.spec.id),
        Effect::DeploymentStarted(d) | Effect::DeploymentFinished { deployment: d, .. } => {
            s.deployments.contains_key(&d.id) || !d.affected_apps.iter().all(idle_app)
        }
        _ => true,
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The leader's log of each deployment's life (started, each step,
/// finished), every line in a `deployment` span carrying its id and apps, so
/// one deployment's lines can be picked out of the node's log.
async fn log_deployments(mut sub: store::Subscription) {
    use store::Effect;
    while let Some(update) = sub.next().await {
        let Update::Change(c) = update else { continue };
        for e in c.effects.iter() {
            let (d, what) = match e {
                Effect::DeploymentStarted(d) => (d, "started"),
                Effect::DeploymentChanged { after, .. } => (after, "step"),
                Effect::DeploymentFinished { deployment, succeeded: true } => (deployment, "succeeded"),
                Effect::DeploymentFinished { deployment, .. } => (deployment, "ended without success"),
                _ => continue,
            };
            let apps: Vec<&str> = d.affected_apps.iter().map(|a| a.as_str()).collect();
            let span = tracing::info_span!("deployment", id = %d.id.0, apps = ?apps);
            let _in = span.enter();
            tracing::info!(step = d.current_step, steps = d.steps.len(), index = c.index, "deployment {what}");
        }
    }
}
