//! `cargo fuzz run luks1_header`: see fuzz/README.md; the body is shared with the corpus replay test.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::luks1_header(data);
});
