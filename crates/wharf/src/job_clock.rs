//! The leader's job clock: proposes the runs `scheduler::timers` found due
//! and the stops of runs past a deadline. Reading the clock and proposing
//! are the only I/O; what is due is decided by the pure `timers`.

use model::{JobId, JobRunId, UnixMillis};
use store::{Applied, Command, RunStart, Store};

use crate::clock::now;

/// Proposes the starts (all in one command: a thousand jobs firing
/// together are one commit, and one plan places all their tasks) and then
/// the stops; a refusal (the fire time started already, the run ended
/// meanwhile) is expected after a failover and only logged. Returns whether
/// any of them changed the state.
pub async fn propose(store: &Store, timers: scheduler::Timers) -> bool {
    let mut changed = false;
    let at: UnixMillis = now();
    let starts: Vec<RunStart> =
        timers.starts.into_iter().map(|(job, run, trigger)| RunStart { job, run, trigger }).collect();
    if !starts.is_empty() {
        let names: Vec<(JobId, JobRunId)> = starts.iter().map(|s| (s.job.clone(), s.run.clone())).collect();
        match store.propose(Command::StartJobRuns { at, starts }).await {
            Ok(Applied::Each(answers)) => {
                for ((job, run), answer) in names.iter().zip(answers) {
                    match answer {
                        Applied::JobRun(_) => {
                            changed = true;
                            tracing::info!(%job, %run, "scheduled run started");
                        }
                        Applied::RunSkipped => {
                            changed = true;
                            tracing::info!(%job, %run, "scheduled run skipped: a run is active (FORBID)");
                        }
                        other => tracing::debug!(%job, %run, ?other, "scheduled run not started"),
                    }
                }
            }
            Ok(other) => tracing::warn!(?other, "scheduled runs: unexpected answer"),
            Err(e) => tracing::warn!(runs = names.len(), error = %e, "scheduled runs not proposed"),
        }
    }
    for (job, run, reason) in timers.stops {
        let cmd = Command::StopJobRun { job: job.clone(), run: run.clone(), at: now(), reason };
        match store.propose(cmd).await {
            Ok(Applied::JobRun(_)) => changed = true,
            Ok(_) => {}
            Err(e) => tracing::warn!(%job, %run, error = %e, "run deadline not proposed"),
        }
    }
    changed
}
