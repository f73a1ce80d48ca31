//! Fuzz target: `makler::oracles::mdns` (see its documentation for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| makler::oracles::mdns(data));
