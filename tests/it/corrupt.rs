//! Damaged and hostile headers through the CLI: fall back to the valid copy with a warning,
//! refuse what cannot be trusted (exit 4), never write to the file while doing so.
use crate::support::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

const HDR: u64 = 16384;

/// Flips one byte of the file at `offset`.
fn flip(path: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
}

/// Rewrites the JSON of both copies with `edit` and recomputes each checksum by the rule of
/// luks-format.md §2 (sha256 over the binary header with csum zeroed, then the JSON area).
fn rewrite_json(path: &Path, edit: impl Fn(&mut Value)) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    for copy in [0, HDR] {
        let mut bin = vec![0u8; 4096];
        f.read_exact_at(&mut bin, copy).unwrap();
        let mut area = vec![0u8; (HDR - 4096) as usize];
        f.read_exact_at(&mut area, copy + 4096).unwrap();
        let end = area.iter().position(|&c| c == 0).unwrap();
        let mut v: Value = serde_json::from_slice(&area[..end]).unwrap();
        edit(&mut v);
        let text = serde_json::to_vec(&v).unwrap();
        area.fill(0);
        area[..text.len()].copy_from_slice(&text);
        bin[448..512].fill(0);
        let mut h = Sha256::new();
        h.update(&bin);
        h.update(&area);
        bin[448..480].copy_from_slice(&h.finalize());
        f.write_all_at(&bin, copy).unwrap();
        f.write_all_at(&area, copy + 4096).unwrap();
    }
}

fn formatted() -> Vol {
    let v = Vol::new();
    v.format("4M", &[]);
    v
}

/// `dump --json` works on a volume whose primary copy was damaged by `damage`, reports the
/// secondary as current, warns, and `open` still unlocks — all without writing the file.
fn falls_back_to_secondary(test: &str, damage: impl Fn(&Path)) {
    let v = formatted();
    damage(&v.backing);
    let before = fingerprint(&v.backing);
    let r = vaultdisk(&["dump", "--json", Vol::s(&v.backing)], None).ok("dump");
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["header"]["current"], "secondary", "{test}");
    assert_eq!(j["header"]["copies"][0]["valid"], false, "{test}");
    assert!(
        r.stderr.contains("secondary"),
        "{test}: no warning: {}",
        r.stderr
    );
    if require_fuse(test) {
        let g = v.open(&[]);
        g.close();
    }
    assert_eq!(before, fingerprint(&v.backing), "{test}: file was written");
}

#[test]
fn damaged_primary_magic_uses_secondary() {
    falls_back_to_secondary("damaged_primary_magic_uses_secondary", |p| flip(p, 1));
}

#[test]
fn damaged_primary_checksum_uses_secondary() {
    falls_back_to_secondary("damaged_primary_checksum_uses_secondary", |p| flip(p, 450));
}

#[test]
fn damaged_primary_json_uses_secondary() {
    falls_back_to_secondary("damaged_primary_json_uses_secondary", |p| {
        flip(p, 4096 + 20)
    });
}

#[test]
fn both_copies_damaged_is_exit_4_and_says_restore_a_backup() {
    let v = formatted();
    flip(&v.backing, 450);
    flip(&v.backing, HDR + 450);
    let before = fingerprint(&v.backing);
    for args in [
        vec!["dump", Vol::s(&v.backing)],
        vec![
            "open",
            Vol::s(&v.backing),
            Vol::s(&v.plain),
            "--key-file",
            Vol::s(&v.pass),
        ],
    ] {
        let r = vaultdisk(&args, None).expect(4, "both damaged");
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(r.stderr.contains("header backup"), "{}", r.stderr);
    }
    assert_eq!(before, fingerprint(&v.backing));
    assert!(!v.plain.exists());
}

/// Edits the JSON (validly checksummed), then expects `open` to fail with exit 4 quickly
/// and a message containing `needle`, without touching the file.
fn refused(edit: impl Fn(&mut Value), needle: &str) {
    let v = formatted();
    rewrite_json(&v.backing, edit);
    let before = fingerprint(&v.backing);
    let start = Instant::now();
    let r = vaultdisk(
        &[
            "open",
            Vol::s(&v.backing),
            Vol::s(&v.plain),
            "--key-file",
            Vol::s(&v.pass),
        ],
        None,
    )
    .expect(4, needle);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{needle}: took {:?}",
        start.elapsed()
    );
    assert!(
        r.stderr.contains(needle),
        "wanted {needle:?} in {}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert_eq!(before, fingerprint(&v.backing));
    assert!(!v.plain.exists());
}

#[test]
fn hostile_argon2_memory_is_refused_before_any_work() {
    refused(
        |v| {
            let salt = v["keyslots"]["0"]["kdf"]["salt"].clone();
            v["keyslots"]["0"]["kdf"] = serde_json::json!({
                "type": "argon2id", "time": 4, "memory": 8_388_608, "cpus": 4, "salt": salt
            });
        },
        "memory",
    );
}

#[test]
fn hostile_argon2_cpus_is_refused() {
    refused(
        |v| {
            let salt = v["keyslots"]["0"]["kdf"]["salt"].clone();
            v["keyslots"]["0"]["kdf"] = serde_json::json!({"type": "argon2id", "time": 4, "memory": 1024, "cpus": 64, "salt": salt});
        },
        "cpus",
    );
}

#[test]
fn unsupported_cipher_is_named() {
    refused(
        |v| v["segments"]["0"]["encryption"] = "serpent-xts-plain64".into(),
        "serpent",
    );
}

#[test]
fn mandatory_requirements_are_named() {
    refused(
        |v| v["config"]["requirements"] = serde_json::json!({"mandatory": ["vaultdisk-test-req"]}),
        "vaultdisk-test-req",
    );
}

#[test]
fn integrity_segments_are_refused() {
    refused(
        |v| {
            v["segments"]["0"]["integrity"] = serde_json::json!({
                "type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"
            })
        },
        "integrity",
    );
}

#[test]
fn cryptsetup_accepts_our_rewrite_rule() {
    // Guards the test helper itself: a no-op rewrite must leave a header cryptsetup reads.
    let test = "cryptsetup_accepts_our_rewrite_rule";
    if !require_tools(test, &["cryptsetup"]) {
        return;
    }
    let v = formatted();
    rewrite_json(&v.backing, |_| {});
    tool("cryptsetup", &["luksDump", Vol::s(&v.backing)]).ok("luksDump after rewrite");
}
