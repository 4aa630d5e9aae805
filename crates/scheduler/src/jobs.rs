//! Jobs in the plan and on the leader's clock.
//!
//! `plan_runs` places the task of each run that waits for one (after the
//! apps, with the same `Placer`, so a run only takes what services left
//! free), expunges the ended tasks of runs and kills tasks whose run is
//! gone. `timers` says which schedules' fire times are due (each as a
//! `StartJobRun` the leader proposes) and which runs missed a deadline.
//! Both are pure: `now` is an argument.

use crate::placement::Placer;
use crate::reconcile::{Outcome, Waiting};
use model::{
    cron::CronClock, AppId, ClusterState, JobId, JobRunId, JobRunRef, RunStatus, RunTrigger, Task, TaskGoal, TaskId,
    UnixMillis,
};
use rand::Rng;

/// A run waiting for its task, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingRun {
    pub run: JobRunRef,
    pub why: Waiting,
}

fn wake(out: &mut Option<UnixMillis>, at: UnixMillis) {
    *out = Some(out.map_or(at, |w| w.min(at)));
}

pub(crate) fn plan_runs(
    state: &ClusterState,
    now: UnixMillis,
    rng: &mut impl Rng,
    placer: &mut Placer<'_>,
    out: &mut Outcome,
) {
    // Job tasks are filed under the root id, which no app has.
    for t in state.tasks_of(&AppId::root()) {
        let Some(r) = &t.job_run else { continue };
        let current = state
            .jobs
            .get(&r.job)
            .and_then(|j| j.runs.get(&r.run))
            .is_some_and(|run| run.live_tasks().any(|lt| lt.id == t.id));
        if t.state.is_terminal() {
            out.plan.expunges.push(t.id.clone());
        } else if !current && t.goal == TaskGoal::Running {
            out.plan.kills.push(t.id.clone());
        }
    }
    for job in state.jobs.values() {
        let mut template = None;
        for run in job.runs.values() {
            let wanted = run.wanted(&job.spec.run);
            if run.status.is_finished() || wanted == 0 {
                continue;
            }
            if now < run.not_before {
                wake(&mut out.wake_at, run.not_before);
                let why = Waiting::Backoff { until: run.not_before };
                out.waiting_runs.push(WaitingRun { run: run.reference(), why });
                continue;
            }
            let spec = template.get_or_insert_with(|| job.spec.template());
            for n in 0..wanted {
                match placer.place(spec, rng) {
                    Ok((node, ports)) => {
                        let uuid = uuid::Builder::from_random_bytes(rng.gen()).into_uuid();
                        let attempt = run.tasks.len() as u32 + n + 1;
                        let id = TaskId::for_run(&run.reference(), uuid, attempt);
                        let mut task = Task::staged(id, AppId::root(), node.id, ports, spec.resources, now);
                        task.host = node.advertise.clone();
                        task.job_run = Some(run.reference());
                        out.plan.launches.push(task);
                    }
                    Err(d) => {
                        let why = Waiting::Declined { offers: d.offers, details: d.details };
                        out.waiting_runs.push(WaitingRun { run: run.reference(), why });
                        break;
                    }
                }
            }
        }
    }
}

/// What the leader's clock should do now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Timers {
    /// Runs to start: (job, run id, trigger).
    pub starts: Vec<(JobId, JobRunId, RunTrigger)>,
    /// Runs to end as FAILED, with the reason.
    pub stops: Vec<(JobId, JobRunId, String)>,
    /// The next instant something is due.
    pub wake_at: Option<UnixMillis>,
}

/// Due fire times and missed deadlines at `now`.
///
/// A schedule's next fire time is the first after the one it last fired
/// (or after it was written). One that is due starts now if it lies within
/// `startingDeadlineSeconds`; older ones are skipped to the first within it,
/// so fire times missed while no leader was up are caught up as long as they
/// are within their deadline (Metronome skips them). The run id is a function
/// of (job, schedule, fire time), and `apply` refuses a fire time at or
/// before the last, so proposing one twice starts one run.
pub fn timers(state: &ClusterState, now: UnixMillis) -> Timers {
    let mut out = Timers::default();
    for job in state.jobs.values() {
        for s in job.schedules.iter().filter(|s| s.spec.enabled) {
            let Ok(clock) = CronClock::parse(&s.spec.cron, &s.spec.timezone) else { continue };
            let deadline_ms = s.spec.starting_deadline_seconds as i64 * 1000;
            let Some(mut fire) = clock.next_after(s.fired_up_to()) else { continue };
            if fire.0 < now.0 - deadline_ms {
                match clock.next_after(UnixMillis(now.0 - deadline_ms - 1)) {
                    Some(f) => fire = f,
                    None => continue,
                }
            }
            if fire <= now {
                let trigger = RunTrigger::Schedule { id: s.spec.id.clone(), fire_at: fire };
                let run = JobRunId::scheduled(&job.spec.id, &s.spec.id, fire);
                out.starts.push((job.spec.id.clone(), run, trigger));
                // The next one is looked at after this start commits.
            } else {
                wake(&mut out.wake_at, fire);
            }
        }
        for run in job.runs.values().filter(|r| r.status == RunStatus::Starting && r.live_tasks().next().is_none()) {
            let active = job.spec.run.active_deadline_seconds.map(|d| run.created_at.plus_secs_f64(d as f64));
            let missed = [
                (run.starting_deadline.filter(|_| run.tasks.is_empty()), "not started within startingDeadlineSeconds"),
                (active, "activeDeadlineSeconds exceeded"),
            ];
            for (at, why) in missed {
                let Some(at) = at else { continue };
                if at <= now {
                    out.stops.push((job.spec.id.clone(), run.id.clone(), why.to_string()));
                    break;
                }
                wake(&mut out.wake_at, at);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{ConcurrencyPolicy, Job, JobHistory, Schedule, ScheduleSpec};

    fn state_with(cron: &str, since: i64, last: Option<i64>, deadline: u64) -> ClusterState {
        let mut s = ClusterState::default();
        let spec: model::JobSpec = serde_json::from_value(serde_json::json!({
            "id": "j", "description": null, "labels": {},
            "run": {"command": {"Shell": "true"}, "resources": {"cpus": 0.1, "mem": 32.0, "disk": 0.0, "gpus": 0},
                    "env": {}, "container": "None", "constraints": [], "restart": "Never",
                    "active_deadline_seconds": null, "max_launch_delay_seconds": 3600.0, "kill_grace_seconds": 3.0,
                    "user": null}
        }))
        .expect("spec");
        let sched = Schedule {
            spec: ScheduleSpec {
                id: "s".into(),
                cron: cron.into(),
                timezone: "UTC".into(),
                starting_deadline_seconds: deadline,
                concurrency_policy: ConcurrencyPolicy::Allow,
                enabled: true,
            },
            since: UnixMillis(since),
            last_fire: last.map(UnixMillis),
        };
        let job = Job {
            spec: spec.clone(),
            schedules: vec![sched],
            runs: Default::default(),
            history: JobHistory::default(),
            created_at: UnixMillis(0),
        };
        s.jobs.insert(spec.id.clone(), job);
        s
    }

    #[test]
    fn a_due_fire_time_starts_with_a_stable_id_and_the_next_is_a_wake() {
        let s = state_with("* * * * *", 0, None, 60);
        let t = timers(&s, UnixMillis(59_000));
        assert!(t.starts.is_empty());
        assert_eq!(t.wake_at, Some(UnixMillis(60_000)));
        let t = timers(&s, UnixMillis(60_010));
        assert_eq!(t.starts.len(), 1);
        assert_eq!(t.starts[0].2, RunTrigger::Schedule { id: "s".into(), fire_at: UnixMillis(60_000) });
        assert_eq!(timers(&s, UnixMillis(60_500)).starts, t.starts, "another leader names the same run");
        assert!(t.starts[0].1 .0.starts_with("19700101000100"));
    }

    #[test]
    fn missed_fire_times_are_caught_up_within_the_deadline_only() {
        // Last fired at minute 1; the leader comes back at 10:30 with a 5 minute deadline.
        let s = state_with("* * * * *", 0, Some(60_000), 300);
        let t = timers(&s, UnixMillis(630_000));
        assert_eq!(t.starts[0].2, RunTrigger::Schedule { id: "s".into(), fire_at: UnixMillis(360_000) });
        // With a short deadline, the fire times before it are skipped.
        let s = state_with("* * * * *", 0, Some(60_000), 10);
        let t = timers(&s, UnixMillis(630_000));
        assert!(t.starts.is_empty());
        assert_eq!(t.wake_at, Some(UnixMillis(660_000)));
    }
}
