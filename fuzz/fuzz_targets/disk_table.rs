//! `cargo fuzz run disk_table`: see fuzz/README.md; the body is shared with the corpus replay test.
#![no_main]

#[path = "../disk_harness.rs"]
mod disk_harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    disk_harness::disk_table(data);
});
