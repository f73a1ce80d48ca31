//! Fuzz target: `makler::oracles::bridge_session` (see its documentation for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| makler::oracles::bridge_session(data));
