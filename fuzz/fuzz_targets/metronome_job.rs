//! Metronome job and schedule JSON as `/v1/jobs` reads it (`parse_job`,
//! `parse_schedule`). Every body is a job or a clear 4xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metronome::WireError;

fn clear(e: &WireError) {
    assert!((400..500).contains(&e.status), "status {} for {e:?}", e.status);
    assert!(e.body.get("message").and_then(|m| m.as_str()).is_some_and(|m| !m.is_empty()), "no message: {e:?}");
}

fuzz_target!(|body: &[u8]| {
    for r in [
        metronome::parse_job(body, None, "/v1/jobs"),
        metronome::parse_job(body, Some("prod.web"), "/v1/jobs/prod.web"),
    ] {
        if let Err(e) = r {
            clear(&e);
        }
    }
    for sid in [None, Some("nightly")] {
        if let Err(e) = metronome::parse_schedule(body, sid, "/v1/jobs/prod.web/schedules") {
            clear(&e);
        }
    }
});
