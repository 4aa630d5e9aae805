//! Replays the committed inputs of the `rpc_body` fuzz target (crashes
//! found by `cargo fuzz` in `fuzz/regressions/rpc_body/`, and the seeds in
//! `fuzz/corpus/rpc_body/`) through the same entry point and checks as the
//! target, on stable, so CI replays them on every run.

#[path = "../../../fuzz/committed_inputs.rs"]
mod committed_inputs;
mod fuzz_input;

#[test]
fn committed_rpc_body_inputs_get_an_answer_and_no_panic() {
    for (path, input) in committed_inputs::committed_inputs("rpc_body") {
        eprintln!("replaying {}", path.display());
        fuzz_input::run(&input);
    }
}
