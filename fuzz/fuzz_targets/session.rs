//! Fuzz target: the `makler-server` sessions (`oracle` in `bins/makler-server/session.rs`, see
//! its documentation for what it checks). The example servers are a binary, not part of the
//! library, so the target includes their session module, which depends on nothing but `std`
//! and `httparse`.
#![no_main]

#[path = "../../bins/makler-server/session.rs"]
#[allow(dead_code)]
mod session;

libfuzzer_sys::fuzz_target!(|data: &[u8]| session::oracle(data));
