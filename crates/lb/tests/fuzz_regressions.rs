//! Replays the committed inputs of the `lb_http` fuzz target (crashes
//! found by `cargo fuzz` in `fuzz/regressions/lb_http/`, and the seeds in
//! `fuzz/corpus/lb_http/`) through the same entry point and checks as the
//! target, on stable, so CI replays them on every run.

#[path = "../../../fuzz/committed_inputs.rs"]
mod committed_inputs;
mod fuzz_input;

#[test]
fn committed_lb_http_inputs_get_an_answer_and_no_panic() {
    for (path, input) in committed_inputs::committed_inputs("lb_http") {
        eprintln!("replaying {}", path.display());
        fuzz_input::run(&input);
    }
}
