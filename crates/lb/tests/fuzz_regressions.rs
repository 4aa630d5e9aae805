//! Replays the committed inputs of the `lb_http` fuzz target (crashes
//! found by `cargo fuzz` in `fuzz/regressions/lb_http/`, and the seeds in
//! `fuzz/corpus/lb_http/`) through the same entry point and checks as the
//! target, on stable, so CI replays them on every run.

mod fuzz_input;

use std::path::Path;

#[test]
fn committed_lb_http_inputs_get_an_answer_and_no_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut seen = 0;
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join("lb_http")) else { continue };
        for e in entries {
            let path = e.expect("dir entry").path();
            let input = std::fs::read(&path).expect("read input");
            eprintln!("replaying {}", path.display());
            fuzz_input::run(&input);
            seen += 1;
        }
    }
    assert!(seen > 0, "no committed inputs for lb_http");
}
