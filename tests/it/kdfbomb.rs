//! KDF bombs (issue 11 item 5): a header asking for a KDF that would run for minutes or hours
//! is refused at once, naming the keyslot and the estimate; `--kdf-time-limit` moves the line.

use crate::corrupt::edit_json_both;
use crate::support::*;
use std::time::Duration;

/// Applies `edit` to a fresh cheap volume and checks test-key refuses it quickly, in one line.
fn refused_quickly(what: &str, edit: impl Fn(&mut serde_json::Value)) {
    let vol = Vol::new("4M", &[]);
    edit_json_both(&vol.backing, edit);
    let before = sha256_file(&vol.backing);
    let out = vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).fails_with(4);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "{what}: took {:?}:\n{}",
        out.elapsed,
        out.describe()
    );
    for needle in ["keyslot 0", "would take about", "--kdf-time-limit"] {
        assert!(
            out.stderr.contains(needle),
            "{what}: {needle:?}:\n{}",
            out.describe()
        );
    }
    assert_eq!(
        sha256_file(&vol.backing),
        before,
        "{what}: the volume changed"
    );
}

#[test]
fn pbkdf2_keyslot_with_2_31_iterations_is_skipped() {
    refused_quickly("keyslot iterations", |j| {
        j["keyslots"]["0"]["kdf"]["iterations"] = (1u64 << 31).into();
    });
}

#[test]
fn digest_with_u32_max_iterations_is_skipped() {
    refused_quickly("digest iterations", |j| {
        j["digests"]["0"]["iterations"] = u64::from(u32::MAX).into();
    });
}

#[test]
fn argon2_keyslot_with_hours_of_passes_is_skipped() {
    refused_quickly("argon2 passes", |j| {
        j["keyslots"]["0"]["kdf"] = serde_json::json!({
            "type": "argon2id", "time": 2048, "memory": 1 << 20, "cpus": 1,
            "salt": j["keyslots"]["0"]["kdf"]["salt"].clone(),
        });
    });
}

/// A genuine keyslot of a few seconds opens under the default limit and is skipped under
/// `--kdf-time-limit 1`: the limit, not the header alone, decides.
#[test]
fn the_limit_is_an_option() {
    let vol = Vol::with_kdf(
        "4M",
        &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1500000"],
        &[],
    );
    let args = ["test-key", s(&vol.backing), "--key-file", s(&vol.key)];
    let strict = [&["--kdf-time-limit", "1"][..], &args[..]].concat();
    let out = vd(&strict).fails_with(4);
    assert!(out.stderr.contains("limit of 1 s"), "{}", out.describe());
    vd(&args).ok();
}
