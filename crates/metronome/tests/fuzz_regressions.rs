//! Replays the committed inputs of the `metronome_job` fuzz target
//! (`fuzz/regressions/metronome_job/` and the seeds in
//! `fuzz/corpus/metronome_job/`) through `parse_job` and `parse_schedule`,
//! on stable: a job or a clear 4xx with a message, never a panic.

#[path = "../../../fuzz/committed_inputs.rs"]
mod committed_inputs;

use committed_inputs::committed_inputs as inputs;

#[test]
fn committed_job_inputs_parse_or_get_a_clear_4xx() {
    for (path, body) in inputs("metronome_job") {
        let jobs = [
            metronome::parse_job(&body, None, "/v1/jobs").err(),
            metronome::parse_job(&body, Some("prod.web"), "/v1/jobs/prod.web").err(),
        ];
        let schedules = [None, Some("nightly")]
            .map(|sid| metronome::parse_schedule(&body, sid, "/v1/jobs/prod.web/schedules").err());
        for e in jobs.into_iter().chain(schedules).flatten() {
            assert!((400..500).contains(&e.status), "{}: status {} for {e:?}", path.display(), e.status);
            let message = e.body.get("message").and_then(|m| m.as_str()).unwrap_or_default();
            assert!(!message.is_empty(), "{}: no message: {e:?}", path.display());
        }
    }
}
