//! `apply` for jobs: job and schedule writes, run starts and stops, and a
//! run's transitions from its task's status reports. Pure like the rest of
//! `apply`: run ids, fire times and instants come in the command.

use crate::command::{Applied, DropReason, Rejection};
use model::{
    ClusterState, ConcurrencyPolicy, Job, JobHistory, JobId, JobRun, JobRunId, RestartPolicy, RunStatus, RunTask,
    RunTrigger, Schedule, ScheduleSpec, Task, TaskGoal, TaskState, UnixMillis,
};
use std::collections::BTreeMap;

pub(super) fn put_job(
    state: &mut ClusterState,
    spec: &model::JobSpec,
    schedules: Option<&[ScheduleSpec]>,
    at: UnixMillis,
    create_only: bool,
) -> Applied {
    let exists = state.jobs.contains_key(&spec.id);
    if create_only && exists {
        return Applied::Rejected(Rejection::JobExists(spec.id.clone()));
    }
    if !create_only && !exists {
        return Applied::Rejected(Rejection::NoSuchJob(spec.id.clone()));
    }
    if let Err(r) = check_dependencies(state, spec) {
        return Applied::Rejected(r);
    }
    let job = match state.jobs.get(&spec.id) {
        Some(old) => {
            let mut job = old.clone();
            job.spec = spec.clone();
            if let Some(list) = schedules {
                job.schedules = merge_schedules(&job.schedules, list, at);
            }
            job
        }
        None => Job {
            spec: spec.clone(),
            schedules: merge_schedules(&[], schedules.unwrap_or_default(), at),
            runs: BTreeMap::new(),
            history: JobHistory::default(),
            created_at: at,
        },
    };
    state.jobs.insert(spec.id.clone(), job.clone());
    Applied::Job(Box::new(job))
}

/// Schedules as given, keeping the clock of those whose spec is unchanged.
fn merge_schedules(old: &[Schedule], new: &[ScheduleSpec], at: UnixMillis) -> Vec<Schedule> {
    new.iter()
        .map(|spec| match old.iter().find(|o| o.spec == *spec) {
            Some(o) => o.clone(),
            None => Schedule { spec: spec.clone(), since: at, last_fire: None },
        })
        .collect()
}

/// Parents exist and no cycle forms (a parent's own ancestry never reaches `spec`).
fn check_dependencies(state: &ClusterState, spec: &model::JobSpec) -> Result<(), Rejection> {
    for p in &spec.dependencies {
        if p == &spec.id {
            return Err(Rejection::DependencyCycle(spec.id.clone()));
        }
        if !state.jobs.contains_key(p) {
            return Err(Rejection::NoSuchJob(p.clone()));
        }
    }
    let mut stack: Vec<JobId> = spec.dependencies.clone();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(j) = stack.pop() {
        if j == spec.id {
            return Err(Rejection::DependencyCycle(spec.id.clone()));
        }
        if seen.insert(j.clone()) {
            if let Some(job) = state.jobs.get(&j) {
                stack.extend(job.spec.dependencies.iter().cloned());
            }
        }
    }
    Ok(())
}

pub(super) fn remove_job(state: &mut ClusterState, id: &JobId, stop_runs: bool, at: UnixMillis) -> Applied {
    let Some(job) = state.jobs.get(id) else {
        return Applied::Rejected(Rejection::NoSuchJob(id.clone()));
    };
    let dependents: Vec<JobId> =
        state.jobs.values().filter(|j| j.spec.dependencies.contains(id)).map(|j| j.spec.id.clone()).collect();
    if !dependents.is_empty() {
        return Applied::Rejected(Rejection::JobHasDependents(id.clone(), dependents));
    }
    if !job.runs.is_empty() && !stop_runs {
        return Applied::Rejected(Rejection::JobBusy(id.clone()));
    }
    let runs: Vec<JobRunId> = job.runs.keys().cloned().collect();
    for r in &runs {
        stop_run(state, id, r, at, "the job was deleted");
    }
    match state.jobs.remove(id) {
        Some(job) => Applied::Job(Box::new(job)),
        None => Applied::Done,
    }
}

pub(super) fn put_schedule(
    state: &mut ClusterState,
    job: &JobId,
    spec: &ScheduleSpec,
    at: UnixMillis,
    create_only: bool,
) -> Applied {
    let Some(j) = state.jobs.get_mut(job) else {
        return Applied::Rejected(Rejection::NoSuchJob(job.clone()));
    };
    match j.schedules.iter_mut().find(|s| s.spec.id == spec.id) {
        Some(_) if create_only => Applied::Rejected(Rejection::ScheduleExists(job.clone(), spec.id.clone())),
        Some(s) => {
            if s.spec != *spec {
                *s = Schedule { spec: spec.clone(), since: at, last_fire: s.last_fire };
            }
            Applied::Done
        }
        None if !create_only => Applied::Rejected(Rejection::NoSuchSchedule(job.clone(), spec.id.clone())),
        None => {
            j.schedules.push(Schedule { spec: spec.clone(), since: at, last_fire: None });
            Applied::Done
        }
    }
}

pub(super) fn remove_schedule(state: &mut ClusterState, job: &JobId, id: &str) -> Applied {
    let Some(j) = state.jobs.get_mut(job) else {
        return Applied::Rejected(Rejection::NoSuchJob(job.clone()));
    };
    let before = j.schedules.len();
    j.schedules.retain(|s| s.spec.id != id);
    if j.schedules.len() == before {
        return Applied::Rejected(Rejection::NoSuchSchedule(job.clone(), id.to_string()));
    }
    Applied::Done
}

/// Starts a run. A scheduled fire time at or before the schedule's last one
/// is refused, so a fire time proposed twice (a leader failover) starts one
/// run; under FORBID an active run makes it a skip that still counts as fired.
pub(super) fn start_run(
    state: &mut ClusterState,
    job: &JobId,
    run: &JobRunId,
    at: UnixMillis,
    trigger: &RunTrigger,
) -> Applied {
    let Some(j) = state.jobs.get(job) else {
        return Applied::Rejected(Rejection::NoSuchJob(job.clone()));
    };
    if j.has_run(run) {
        return Applied::Rejected(Rejection::JobRunExists(job.clone(), run.clone()));
    }
    let mut starting_deadline = None;
    let mut replace = false;
    if let RunTrigger::Schedule { id, fire_at } = trigger {
        let Some(s) = j.schedule(id) else {
            return Applied::Rejected(Rejection::NoSuchSchedule(job.clone(), id.clone()));
        };
        if *fire_at <= s.fired_up_to() {
            return Applied::Rejected(Rejection::JobRunExists(job.clone(), run.clone()));
        }
        starting_deadline = Some(fire_at.plus_secs_f64(s.spec.starting_deadline_seconds as f64));
        let policy = s.spec.concurrency_policy;
        let fire_at = *fire_at;
        let busy = !j.runs.is_empty();
        if let Some(j) = state.jobs.get_mut(job) {
            if let Some(s) = j.schedules.iter_mut().find(|s| &s.spec.id == id) {
                s.last_fire = Some(fire_at);
            }
        }
        match policy {
            ConcurrencyPolicy::Forbid if busy => return Applied::RunSkipped,
            ConcurrencyPolicy::Replace if busy => replace = true,
            _ => {}
        }
    }
    if replace {
        let active: Vec<JobRunId> = state.jobs.get(job).map(|j| j.runs.keys().cloned().collect()).unwrap_or_default();
        for r in &active {
            stop_run(state, job, r, at, "replaced by a newer run (concurrencyPolicy REPLACE)");
        }
    }
    let new = JobRun {
        id: run.clone(),
        job: job.clone(),
        status: RunStatus::Starting,
        trigger: trigger.clone(),
        created_at: at,
        completed_at: None,
        tasks: Vec::new(),
        failures: 0,
        not_before: at,
        starting_deadline,
        message: None,
    };
    if let Some(j) = state.jobs.get_mut(job) {
        j.runs.insert(run.clone(), new.clone());
    }
    Applied::JobRun(Box::new(new))
}

/// Ends an active run as FAILED (stop, deadline, replaced) and kills its task.
pub(super) fn stop_run(state: &mut ClusterState, job: &JobId, run: &JobRunId, at: UnixMillis, why: &str) -> Applied {
    let Some(r) = state.jobs.get(job).and_then(|j| j.runs.get(run)) else {
        return Applied::Rejected(Rejection::NoSuchJobRun(job.clone(), run.clone()));
    };
    let live: Vec<model::TaskId> = r.tasks.iter().filter(|t| !t.state.is_terminal()).map(|t| t.id.clone()).collect();
    for id in &live {
        state.tasks.update(id, |t| t.goal = TaskGoal::Killed);
    }
    let kept = state.settings.job_history_kept();
    let Some(j) = state.jobs.get_mut(job) else { return Applied::Done };
    let Some(r) = j.runs.get_mut(run) else { return Applied::Done };
    r.status = RunStatus::Failed;
    r.completed_at = Some(at);
    r.message = Some(why.to_string());
    let done = r.clone();
    j.finish_run(run, kept);
    Applied::JobRun(Box::new(done))
}

/// Whether a plan's launch of a run's task may commit: the run is active
/// and wants another task (one at a time unless `parallelism` says more,
/// never beyond the completions still missing), so a leader change never
/// runs it twice.
pub(super) fn launch_refusal(state: &ClusterState, task: &Task) -> Option<DropReason> {
    let r = task.job_run.as_ref()?;
    let job = state.jobs.get(&r.job)?;
    match job.runs.get(&r.run) {
        Some(run) if run.wanted(&job.spec.run) > 0 => None,
        Some(_) => Some(DropReason::DuplicateTask),
        None => Some(DropReason::AppGone),
    }
}

/// A run's task was committed: the run is ACTIVE.
pub(super) fn task_launched(state: &mut ClusterState, task: &Task) {
    let Some(r) = &task.job_run else { return };
    let Some(run) = state.jobs.get_mut(&r.job).and_then(|j| j.runs.get_mut(&r.run)) else { return };
    run.status = RunStatus::Active;
    run.tasks.push(RunTask {
        id: task.id.clone(),
        node: task.node,
        state: task.state,
        started_at: None,
        completed_at: None,
        message: None,
    });
}

/// Backoff before a run's next attempt: 1 s doubling, at most `maxLaunchDelay`.
fn restart_delay(failures: u32, max_seconds: f64) -> f64 {
    let d = 2f64.powi(failures.saturating_sub(1).min(20) as i32);
    d.min(max_seconds.max(0.0))
}

/// The run follows its task's report (the task already has the new state).
pub(super) fn task_reported(state: &mut ClusterState, task: &Task) {
    let Some(r) = task.job_run.clone() else { return };
    let mut succeeded = None;
    let kept = state.settings.job_history_kept();
    {
        let Some(j) = state.jobs.get_mut(&r.job) else { return };
        let spec = j.spec.run.clone();
        let Some(run) = j.runs.get_mut(&r.run) else { return };
        if let Some(rt) = run.tasks.iter_mut().find(|t| t.id == task.id) {
            rt.state = task.state;
            rt.started_at = task.started_at;
            rt.message = task.message.clone();
            if task.state.is_terminal() {
                rt.completed_at = Some(task.updated_at);
            }
        }
        let at = task.updated_at;
        let mut kill_rest = false;
        match task.state {
            TaskState::Finished if run.succeeded() < spec.completions.max(1) => {
                if run.live_tasks().next().is_none() {
                    run.status = RunStatus::Starting;
                }
            }
            TaskState::Finished => {
                run.status = RunStatus::Success;
                run.completed_at = Some(at);
                succeeded = Some(run.clone());
            }
            s if s.is_terminal() => {
                run.failures += 1;
                let deadline = spec
                    .active_deadline_seconds
                    .map(|d| run.created_at.plus_secs_f64(d as f64))
                    .unwrap_or(UnixMillis(i64::MAX));
                let asked = task.goal == TaskGoal::Killed;
                if spec.restart == RestartPolicy::OnFailure && !asked && at < deadline {
                    if run.live_tasks().next().is_none() {
                        run.status = RunStatus::Starting;
                    }
                    run.not_before = at.plus_secs_f64(restart_delay(run.failures, spec.max_launch_delay_seconds));
                } else {
                    run.status = RunStatus::Failed;
                    run.completed_at = Some(at);
                    run.message = task.message.clone();
                    kill_rest = true;
                }
            }
            _ => run.status = RunStatus::Active,
        }
        // A failed run's other tasks (parallelism) go with it.
        let live: Vec<model::TaskId> =
            if kill_rest { run.live_tasks().map(|t| t.id.clone()).collect() } else { Vec::new() };
        if run.status.is_finished() {
            j.finish_run(&r.run, kept);
        }
        for id in &live {
            state.tasks.update(id, |t| t.goal = TaskGoal::Killed);
        }
    }
    if let Some(done) = succeeded {
        start_dependents(state, &done);
    }
}

/// After a run of `parent.job` succeeded: each job depending on it whose
/// parents all succeeded since its last dependency run starts one, with the
/// parent run's id (deterministic, so replaying the log starts the same runs).
fn start_dependents(state: &mut ClusterState, parent: &JobRun) {
    let children: Vec<JobId> =
        state.jobs.values().filter(|j| j.spec.dependencies.contains(&parent.job)).map(|j| j.spec.id.clone()).collect();
    let at = parent.completed_at.unwrap_or(parent.created_at);
    for child in children {
        let Some(c) = state.jobs.get(&child) else { continue };
        let last_started = c
            .runs
            .values()
            .chain(c.history.finished.iter())
            .filter(|r| matches!(r.trigger, RunTrigger::Dependency { .. }))
            .map(|r| r.created_at)
            .max();
        let ready = c.spec.dependencies.iter().all(|p| {
            let ok = state.jobs.get(p).and_then(|pj| pj.history.last_success_at);
            ok.is_some_and(|s| last_started.is_none_or(|l| s > l))
        });
        if ready {
            let trigger = RunTrigger::Dependency { parent: parent.job.clone(), run: parent.id.clone() };
            start_run(state, &child, &parent.id, at, &trigger);
        }
    }
}

/// `--job-history-count`: from now on each job keeps the newest `count`
/// finished runs; longer histories are cut in this same apply, so every
/// replica drops the same runs.
pub(super) fn set_history_count(state: &mut ClusterState, count: u32) -> Applied {
    state.settings.job_history_count = Some(count);
    let long: Vec<JobId> = state
        .jobs
        .iter()
        .filter(|(_, j)| j.history.finished.len() > count as usize)
        .map(|(id, _)| id.clone())
        .collect();
    for id in long {
        if let Some(j) = state.jobs.get_mut(&id) {
            j.history.finished.truncate(count as usize);
        }
    }
    Applied::Done
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::apply::apply;
    use crate::command::Command;
    use model::{
        CommandSpec, ContainerSpec, JobRunRef, JobRunSpec, JobSpec, NodeId, Plan, Resources, TaskId, TaskStatus,
    };

    pub(crate) fn spec(id: &str, deps: &[&str]) -> JobSpec {
        JobSpec {
            id: JobId::parse(id).expect("id"),
            description: None,
            labels: Default::default(),
            run: JobRunSpec {
                command: Some(CommandSpec::Shell("true".into())),
                resources: Resources { cpus: 0.1, mem: 32.0, disk: 0.0, gpus: 0 },
                env: Default::default(),
                container: ContainerSpec::None,
                constraints: vec![],
                restart: RestartPolicy::Never,
                active_deadline_seconds: None,
                max_launch_delay_seconds: 3600.0,
                kill_grace_seconds: 3.0,
                user: None,
                secrets: Default::default(),
                secret_env: Default::default(),
                artifacts: Vec::new(),
                passthrough: Default::default(),
                parallelism: 1,
                completions: 1,
            },
            dependencies: deps.iter().map(|d| JobId::parse(d).expect("id")).collect(),
        }
    }

    pub(crate) fn schedule(id: &str, policy: ConcurrencyPolicy) -> ScheduleSpec {
        ScheduleSpec {
            id: id.into(),
            cron: "* * * * *".into(),
            timezone: "UTC".into(),
            starting_deadline_seconds: 900,
            concurrency_policy: policy,
            enabled: true,
        }
    }

    fn jid(s: &str) -> JobId {
        JobId::parse(s).expect("id")
    }

    fn rid(s: &str) -> JobRunId {
        JobRunId(s.into())
    }

    /// One of each job command, for the golden log (a job with a schedule,
    /// a manual and a scheduled run, a stop, a dependent removed).
    pub(crate) fn golden_commands() -> Vec<Command> {
        vec![
            Command::PutJob {
                job: spec("golden.job", &[]),
                schedules: Some(vec![schedule("every", ConcurrencyPolicy::Forbid)]),
                at: UnixMillis(100),
                create_only: true,
            },
            Command::PutJob {
                job: spec("golden.child", &["golden.job"]),
                schedules: None,
                at: UnixMillis(101),
                create_only: true,
            },
            Command::PutSchedule {
                job: jid("golden.job"),
                schedule: schedule("other", ConcurrencyPolicy::Allow),
                at: UnixMillis(102),
                create_only: true,
            },
            Command::RemoveSchedule { job: jid("golden.job"), id: "other".into() },
            Command::StartJobRun {
                job: jid("golden.job"),
                run: rid("19700101000000abcde"),
                at: UnixMillis(103),
                trigger: RunTrigger::Manual,
            },
            Command::StartJobRun {
                job: jid("golden.job"),
                run: rid("19700101000100fghij"),
                at: UnixMillis(60_001),
                trigger: RunTrigger::Schedule { id: "every".into(), fire_at: UnixMillis(60_000) },
            },
            Command::StopJobRun {
                job: jid("golden.job"),
                run: rid("19700101000000abcde"),
                at: UnixMillis(104),
                reason: "stopped".into(),
            },
            Command::RemoveJob { id: jid("golden.child"), stop_runs: false, at: UnixMillis(105) },
            Command::StartJobRuns {
                at: UnixMillis(120_001),
                starts: vec![
                    crate::command::RunStart {
                        job: jid("golden.job"),
                        run: rid("19700101000200klmno"),
                        trigger: RunTrigger::Schedule { id: "every".into(), fire_at: UnixMillis(120_000) },
                    },
                    crate::command::RunStart {
                        job: jid("golden.job"),
                        run: rid("19700101000200pqrst"),
                        trigger: RunTrigger::Manual,
                    },
                ],
            },
            Command::SetJobHistoryCount { count: 1 },
        ]
    }

    fn put(s: &mut ClusterState, spec: JobSpec, schedules: Vec<ScheduleSpec>) -> Applied {
        apply(s, &Command::PutJob { job: spec, schedules: Some(schedules), at: UnixMillis(1), create_only: true })
    }

    fn launch(s: &mut ClusterState, job: &str, run: &str, n: u32) -> TaskId {
        let r = JobRunRef { job: jid(job), run: rid(run) };
        let id = TaskId::for_run(&r, uuid::Uuid::from_u128(n as u128), 1);
        let mut t =
            Task::staged(id.clone(), model::AppId::root(), NodeId(1), vec![], Resources::default(), UnixMillis(5));
        t.job_run = Some(r);
        let got = apply(s, &Command::ApplyPlan(Plan { launches: vec![t], ..Default::default() }));
        assert!(matches!(got, Applied::Planned { launched: 1, .. }), "{got:?}");
        id
    }

    fn report(s: &mut ClusterState, id: &TaskId, state: TaskState, at: i64) {
        let st = TaskStatus {
            task_id: id.clone(),
            state,
            at: UnixMillis(at),
            message: Some(format!("{state:?}")),
            container_ip: None,
        };
        apply(s, &Command::TaskStatuses(vec![st]));
    }

    fn start(s: &mut ClusterState, job: &str, run: &str, at: i64, trigger: RunTrigger) -> Applied {
        apply(s, &Command::StartJobRun { job: jid(job), run: rid(run), at: UnixMillis(at), trigger })
    }

    #[test]
    fn a_run_goes_from_starting_to_success_and_into_the_history() {
        let mut s = ClusterState::default();
        apply(&mut s, &Command::RegisterNode(crate::effect::tests::node(1)));
        put(&mut s, spec("a", &[]), vec![]);
        assert!(matches!(start(&mut s, "a", "r1", 2, RunTrigger::Manual), Applied::JobRun(_)));
        assert_eq!(s.jobs.get(&jid("a")).map(|j| j.runs[&rid("r1")].status), Some(RunStatus::Starting));
        let t = launch(&mut s, "a", "r1", 1);
        assert_eq!(s.jobs.get(&jid("a")).map(|j| j.runs[&rid("r1")].status), Some(RunStatus::Active));
        // A second task for the same run is refused (one task per run).
        let r = JobRunRef { job: jid("a"), run: rid("r1") };
        let mut dup = Task::staged(
            TaskId::for_run(&r, uuid::Uuid::from_u128(9), 1),
            model::AppId::root(),
            NodeId(1),
            vec![],
            Resources::default(),
            UnixMillis(5),
        );
        dup.job_run = Some(r);
        let got = apply(&mut s, &Command::ApplyPlan(Plan { launches: vec![dup], ..Default::default() }));
        assert!(matches!(got, Applied::Planned { launched: 0, .. }));
        report(&mut s, &t, TaskState::Running, 6);
        report(&mut s, &t, TaskState::Finished, 9);
        let j = s.jobs.get(&jid("a")).expect("job");
        assert!(j.runs.is_empty());
        assert_eq!((j.history.success_count, j.history.last_success_at), (1, Some(UnixMillis(9))));
        assert_eq!(j.history.finished[0].tasks[0].state, TaskState::Finished);
        assert_eq!(j.history.finished[0].tasks[0].started_at, Some(UnixMillis(6)));
        // The run id cannot start again.
        assert!(matches!(
            start(&mut s, "a", "r1", 10, RunTrigger::Manual),
            Applied::Rejected(Rejection::JobRunExists(..))
        ));
    }

    #[test]
    fn runs_started_together_are_each_judged_and_the_history_keeps_the_set_number() {
        let mut s = ClusterState::default();
        apply(&mut s, &Command::RegisterNode(crate::effect::tests::node(1)));
        put(&mut s, spec("a", &[]), vec![schedule("s", ConcurrencyPolicy::Allow)]);
        put(&mut s, spec("b", &[]), vec![]);
        let fire = RunTrigger::Schedule { id: "s".into(), fire_at: UnixMillis(60_000) };
        let rs = |job: &str, run: &str, trigger: RunTrigger| crate::command::RunStart {
            job: jid(job),
            run: rid(run),
            trigger,
        };
        let starts = vec![
            rs("a", "f1", fire.clone()),
            rs("a", "f2", fire),
            rs("b", "m1", RunTrigger::Manual),
            rs("nope", "m2", RunTrigger::Manual),
        ];
        let Applied::Each(answers) = apply(&mut s, &Command::StartJobRuns { at: UnixMillis(60_001), starts }) else {
            panic!("one answer per start")
        };
        assert!(matches!(answers[0], Applied::JobRun(_)));
        assert!(matches!(answers[1], Applied::Rejected(Rejection::JobRunExists(..))), "a fire time starts once");
        assert!(matches!(answers[2], Applied::JobRun(_)));
        assert!(matches!(answers[3], Applied::Rejected(Rejection::NoSuchJob(_))));
        // Three more runs of b finish; with two kept, the oldest go.
        apply(&mut s, &Command::SetJobHistoryCount { count: 2 });
        for (n, run) in ["m1", "m3", "m4"].into_iter().enumerate() {
            if run != "m1" {
                start(&mut s, "b", run, 61_000, RunTrigger::Manual);
            }
            let t = launch(&mut s, "b", run, 10 + n as u32);
            report(&mut s, &t, TaskState::Finished, 62_000 + n as i64);
        }
        let h = &s.jobs.get(&jid("b")).expect("job").history;
        assert_eq!(h.success_count, 3);
        assert_eq!(h.finished.iter().map(|r| r.id.0.as_str()).collect::<Vec<_>>(), ["m4", "m3"]);
        // A smaller number cuts the histories at once.
        apply(&mut s, &Command::SetJobHistoryCount { count: 1 });
        let h = &s.jobs.get(&jid("b")).expect("job").history;
        assert_eq!(h.finished.iter().map(|r| r.id.0.as_str()).collect::<Vec<_>>(), ["m4"]);
    }

    #[test]
    fn on_failure_restarts_until_the_deadline() {
        let mut s = ClusterState::default();
        apply(&mut s, &Command::RegisterNode(crate::effect::tests::node(1)));
        let mut sp = spec("a", &[]);
        sp.run.restart = RestartPolicy::OnFailure;
        sp.run.active_deadline_seconds = Some(10);
        put(&mut s, sp, vec![]);
        start(&mut s, "a", "r1", 0, RunTrigger::Manual);
        let t1 = launch(&mut s, "a", "r1", 1);
        report(&mut s, &t1, TaskState::Failed, 2000);
        let run = s.jobs.get(&jid("a")).map(|j| j.runs[&rid("r1")].clone()).expect("run");
        assert_eq!((run.status, run.failures, run.not_before), (RunStatus::Starting, 1, UnixMillis(3000)));
        let t2 = launch(&mut s, "a", "r1", 2);
        report(&mut s, &t2, TaskState::Failed, 11_000);
        let j = s.jobs.get(&jid("a")).expect("job");
        assert!(j.runs.is_empty());
        assert_eq!(j.history.failure_count, 1);
        assert_eq!(j.history.finished[0].tasks.len(), 2);
    }

    #[test]
    fn a_fire_time_starts_once_and_forbid_skips() {
        let mut s = ClusterState::default();
        put(&mut s, spec("a", &[]), vec![schedule("s", ConcurrencyPolicy::Forbid)]);
        let fire = |at| RunTrigger::Schedule { id: "s".into(), fire_at: UnixMillis(at) };
        assert!(matches!(start(&mut s, "a", "x1", 60_001, fire(60_000)), Applied::JobRun(_)));
        // The same fire time again (another leader, another id): refused.
        assert!(matches!(
            start(&mut s, "a", "x2", 60_002, fire(60_000)),
            Applied::Rejected(Rejection::JobRunExists(..))
        ));
        // The next one while x1 is active: skipped, but counted as fired.
        assert_eq!(start(&mut s, "a", "x3", 120_001, fire(120_000)), Applied::RunSkipped);
        let j = s.jobs.get(&jid("a")).expect("job");
        assert_eq!(j.runs.len(), 1);
        assert_eq!(j.schedules[0].last_fire, Some(UnixMillis(120_000)));
    }

    #[test]
    fn dependencies_must_exist_and_not_cycle_and_children_follow_parents() {
        let mut s = ClusterState::default();
        apply(&mut s, &Command::RegisterNode(crate::effect::tests::node(1)));
        assert!(matches!(put(&mut s, spec("b", &["a"]), vec![]), Applied::Rejected(Rejection::NoSuchJob(_))));
        assert!(matches!(put(&mut s, spec("a", &["a"]), vec![]), Applied::Rejected(Rejection::DependencyCycle(_))));
        put(&mut s, spec("a", &[]), vec![]);
        put(&mut s, spec("b", &["a"]), vec![]);
        let cyc = Command::PutJob { job: spec("a", &["b"]), schedules: None, at: UnixMillis(2), create_only: false };
        assert!(matches!(apply(&mut s, &cyc), Applied::Rejected(Rejection::DependencyCycle(_))));
        assert!(matches!(
            apply(&mut s, &Command::RemoveJob { id: jid("a"), stop_runs: true, at: UnixMillis(3) }),
            Applied::Rejected(Rejection::JobHasDependents(..))
        ));
        start(&mut s, "a", "r1", 4, RunTrigger::Manual);
        let t = launch(&mut s, "a", "r1", 1);
        assert!(s.jobs.get(&jid("b")).is_some_and(|j| j.runs.is_empty()), "not before the parent succeeds");
        report(&mut s, &t, TaskState::Finished, 8);
        let b = s.jobs.get(&jid("b")).expect("child");
        assert_eq!(b.runs.keys().cloned().collect::<Vec<_>>(), vec![rid("r1")]);
    }

    #[test]
    fn parallelism_and_completions_fan_out_and_succeed_together() {
        let mut s = ClusterState::default();
        apply(&mut s, &Command::RegisterNode(crate::effect::tests::node(1)));
        let mut sp = spec("fan", &[]);
        sp.run.parallelism = 2;
        sp.run.completions = 3;
        put(&mut s, sp, vec![]);
        start(&mut s, "fan", "r1", 1, RunTrigger::Manual);
        let a = launch(&mut s, "fan", "r1", 1);
        let b = launch(&mut s, "fan", "r1", 2);
        let r = JobRunRef { job: jid("fan"), run: rid("r1") };
        let mut third = Task::staged(
            TaskId::for_run(&r, uuid::Uuid::from_u128(3), 3),
            model::AppId::root(),
            NodeId(1),
            vec![],
            Resources::default(),
            UnixMillis(5),
        );
        third.job_run = Some(r);
        let got = apply(&mut s, &Command::ApplyPlan(Plan { launches: vec![third], ..Default::default() }));
        assert!(matches!(got, Applied::Planned { launched: 0, .. }), "at most 2 at a time");
        report(&mut s, &a, TaskState::Finished, 6);
        assert_eq!(s.jobs.get(&jid("fan")).map(|j| j.runs[&rid("r1")].status), Some(RunStatus::Active));
        let c = launch(&mut s, "fan", "r1", 4);
        report(&mut s, &b, TaskState::Finished, 7);
        assert_eq!(
            s.jobs.get(&jid("fan")).map(|j| j.runs[&rid("r1")].wanted(&j.spec.run)),
            Some(0),
            "one missing, one live"
        );
        report(&mut s, &c, TaskState::Finished, 8);
        let j = s.jobs.get(&jid("fan")).expect("job");
        assert!(j.runs.is_empty());
        assert_eq!(j.history.finished[0].status, RunStatus::Success);
        assert_eq!(j.history.finished[0].succeeded(), 3);
    }
}
