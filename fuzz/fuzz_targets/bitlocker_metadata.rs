//! `cargo fuzz run bitlocker_metadata`: see fuzz/README.md; the body is shared with the corpus replay test.
#![no_main]

#[path = "../bitlocker_harness.rs"]
mod bitlocker_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bitlocker_harness::bitlocker_metadata(data);
});
