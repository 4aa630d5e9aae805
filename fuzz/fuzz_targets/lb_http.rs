//! Fuzz target `lb_http`: the input format, fixture and checks are in
//! `crates/lb/tests/fuzz_input/mod.rs`, shared with the stable replay of
//! the committed inputs (`crates/lb/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../../crates/lb/tests/fuzz_input/mod.rs"]
mod fuzz_input;

libfuzzer_sys::fuzz_target!(|input: &[u8]| fuzz_input::run(input));
