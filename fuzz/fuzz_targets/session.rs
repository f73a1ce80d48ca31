//! Fuzz target: the `makler-server` sessions (`oracle` in `bins/makler-server/session.rs`, see
//! its documentation for what it checks). The example servers are a binary, not part of the
//! library, so the target includes their session module, which depends on nothing but `std`
//! and `httparse`.
#![no_main]

#[path = "../../bins/makler-server/session.rs"]
#[allow(dead_code)]
mod session;

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| session::oracle(data));

// The oracle is behind `cfg(fuzzing)`, which cargo-fuzz sets: without it (`cargo check
// --manifest-path fuzz/Cargo.toml`), the target still builds, and says how to run it.
#[cfg(not(fuzzing))]
libfuzzer_sys::fuzz_target!(|_data: &[u8]| panic!("build with `cargo +nightly fuzz`, which sets --cfg fuzzing"));
