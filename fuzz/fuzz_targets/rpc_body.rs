//! Fuzz target `rpc_body`: the input format, fixture and checks are in
//! `crates/store/tests/fuzz_input/mod.rs`, shared with the stable replay of
//! the committed inputs (`crates/store/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../../crates/store/tests/fuzz_input/mod.rs"]
mod fuzz_input;

libfuzzer_sys::fuzz_target!(|input: &[u8]| fuzz_input::run(input));
