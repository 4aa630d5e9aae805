//! Fuzz target `dns_query`: the input format, fixture and checks are in
//! `crates/dns/tests/fuzz_input/mod.rs`, shared with the stable replay of
//! the committed inputs (`crates/dns/tests/fuzz_regressions.rs`).
#![no_main]

#[path = "../../crates/dns/tests/fuzz_input/mod.rs"]
mod fuzz_input;

libfuzzer_sys::fuzz_target!(|input: &[u8]| fuzz_input::run(input));
