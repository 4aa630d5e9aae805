//! Replays the committed inputs of the `dns_query` fuzz target (crashes
//! found by `cargo fuzz` in `fuzz/regressions/dns_query/`, and the seeds in
//! `fuzz/corpus/dns_query/`) through the same entry point and checks as the
//! target, on stable, so CI replays them on every run.

#[path = "../../../fuzz/committed_inputs.rs"]
mod committed_inputs;
mod fuzz_input;

#[test]
fn committed_dns_query_inputs_get_an_answer_and_no_panic() {
    for (path, input) in committed_inputs::committed_inputs("dns_query") {
        eprintln!("replaying {}", path.display());
        fuzz_input::run(&input);
    }
}
