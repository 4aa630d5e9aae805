//! Replays the committed inputs of the `metronome_job` fuzz target
//! (`fuzz/regressions/metronome_job/` and the seeds in
//! `fuzz/corpus/metronome_job/`) through `parse_job` and `parse_schedule`,
//! on stable: a job or a clear 4xx with a message, never a panic.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(target)) else { continue };
        for e in entries {
            let path = e.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("read input");
            out.push((path, bytes));
        }
    }
    assert!(!out.is_empty(), "no committed inputs for {target}");
    out
}

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
