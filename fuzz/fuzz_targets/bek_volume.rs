//! `cargo fuzz run bek_volume`: see fuzz/README.md; the body is shared with the corpus replay test.
#![no_main]

#[path = "../keychain_harness.rs"]
mod keychain_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keychain_harness::bek_volume(data);
});
