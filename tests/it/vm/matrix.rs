//! Issue 14's fixture matrix: what Azure Disk Encryption fleets hold, one small disk per row,
//! made by tests/vm/make-matrix.sh with cryptsetup (headers, keyslots, tokens, reencryption)
//! and the Python XTS oracle (the data), never by vaultdisk. Every row is verified by
//! `vaultdisk verify DISK` against the SHA-256 of its plaintext taken before encryption
//! (matrix.json), asserting the kind, the keyslot, the digest and the verdict, and that no
//! input changed.
use super::{json, u, verify};
use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TOOLS: &[&str] = &[
    "fuse",
    "python3-cryptography",
    "cryptsetup",
    "sgdisk",
    "sfdisk",
    "mkfs.ext2",
    "mkfs.ext4",
    "e2fsck",
];

/// The matrix, built once per test run (a few seconds) in the target's temp directory.
fn matrix(test: &str) -> Option<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if !require(test, TOOLS) {
        return None;
    }
    Some(DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-matrix");
        let _ = fs::remove_dir_all(&dir);
        let script = repo_file("tests/vm/make-matrix.sh");
        run("bash", &[s(&script), s(&dir)], None).ok();
        dir
    }))
}

fn oracle(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("matrix.json")).unwrap()).unwrap()
}

/// One row: the disk (`NAME.img`), what verify must call partition 1, its LUKS version, data
/// sector size, the KDF of the keyslot that opens (LUKS2) or the PBKDF2 hash (LUKS1), and the
/// keyslot the BEK opens.
struct Row {
    name: &'static str,
    kind: &'static str,
    version: u64,
    sector_size: u64,
    kdf: &'static str,
    keyslot: u64,
    /// Zero extents left by ADE's sparse copy (the OS row) or none (formatted through dm-crypt).
    sparse: bool,
}

const ROWS: &[Row] = &[
    Row {
        name: "luks1-sha1",
        kind: "luks1",
        version: 1,
        sector_size: 512,
        kdf: "sha1",
        keyslot: 0,
        sparse: false,
    },
    Row {
        name: "luks1-sha256",
        kind: "luks1",
        version: 1,
        sector_size: 512,
        kdf: "sha256",
        keyslot: 0,
        sparse: false,
    },
    Row {
        name: "luks2-argon2i",
        kind: "detached-luks",
        version: 2,
        sector_size: 512,
        kdf: "argon2i",
        keyslot: 0,
        sparse: true,
    },
    Row {
        name: "luks2-argon2id",
        kind: "luks2",
        version: 2,
        sector_size: 4096,
        kdf: "argon2id",
        keyslot: 0,
        sparse: false,
    },
    Row {
        name: "rotated",
        kind: "luks2",
        version: 2,
        sector_size: 512,
        kdf: "pbkdf2",
        keyslot: 1,
        sparse: false,
    },
    Row {
        name: "cleartext",
        kind: "luks2",
        version: 2,
        sector_size: 512,
        kdf: "pbkdf2",
        keyslot: 0,
        sparse: false,
    },
    Row {
        name: "cvm-token",
        kind: "luks2",
        version: 2,
        sector_size: 512,
        kdf: "pbkdf2",
        keyslot: 0,
        sparse: false,
    },
];

/// `verify DISK --key-file os.bek --expect-digest 1=SHA --json` of `row` must pass with the
/// oracle's digest, the row's kind, keyslot, sector size and data offset; the header's KDF
/// (LUKS2) or PBKDF2 hash and 256-bit key (LUKS1) are what cryptsetup was told, per `dump`.
#[test]
fn vm_matrix_rows_verify_against_the_oracle() {
    let Some(dir) = matrix("vm_matrix_rows_verify_against_the_oracle") else {
        return;
    };
    let o = oracle(dir);
    let bek = dir.join("os.bek");
    let mut failures = Vec::new();
    for r in ROWS {
        let disk = dir.join(format!("{}.img", r.name));
        let want = &o[r.name];
        let expect = format!("1={}", want["sha256"].as_str().unwrap());
        let out = verify(
            &[&disk],
            &["--key-file", s(&bek), "--expect-digest", &expect, "--json"],
        );
        if out.code != 0 {
            failures.push(format!("[{}] {}", r.name, out.describe()));
            continue;
        }
        let rep = json(&out);
        let p = &rep["disks"][0]["partitions"][0];
        let h = &p["header"];
        let got = (
            p["kind"].as_str(),
            p["keyslot"].as_u64(),
            p["digest"].as_str(),
            p["digest_match"].as_bool(),
            p["verdict"].as_str(),
            h["version"].as_u64(),
            h["sector_size"].as_u64(),
            h["data_offset"].as_u64(),
            p["fsck"]["verdict"].as_str(),
            p["fs"].as_str(),
            rep["verdict"].as_str(),
        );
        let wanted = (
            Some(r.kind),
            Some(r.keyslot),
            want["sha256"].as_str(),
            Some(true),
            Some("ok"),
            Some(r.version),
            Some(r.sector_size),
            Some(u(&want["data_offset"])),
            Some("clean"),
            Some("ext4"),
            Some("ok"),
        );
        if got != wanted {
            failures.push(format!("[{}] got {got:?}, want {wanted:?}", r.name));
        }
        if p["zero_extents"] != want["encrypted"]["zero_extents"]
            || (u(&p["zero_extents"]["count"]) > 0) != r.sparse
        {
            failures.push(format!(
                "[{}] zero extents {} (oracle {})",
                r.name, p["zero_extents"], want["encrypted"]["zero_extents"]
            ));
        }
        // What the header says, as cryptsetup made it.
        let (d, out) = if r.kind == "detached-luks" {
            dump_json(&dir.join(format!("osluksheader-{}", r.name)))
        } else {
            let out = vd(&["dump", s(&disk), "--partition", "1", "--json"]).ok();
            (serde_json::from_str(&out.stdout).unwrap(), out)
        };
        let kdf_ok = if r.version == 1 {
            d["hash"] == r.kdf && d["key_bytes"] == 32 && d["cipher_mode"] == "xts-plain64"
        } else {
            let ks = d["keyslots"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == r.keyslot)
                .cloned()
                .unwrap_or_default();
            ks["kdf"]["type"] == r.kdf && ks["key_size"] == 64
        };
        if !kdf_ok {
            failures.push(format!("[{}] dump: {}", r.name, out.stdout));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ADE's `disable` adds a cleartext key (128 raw bytes from /dev/urandom, used verbatim; this
/// one ends in a newline and holds a NUL) beside the BEK: alone it opens keyslot 1; with the
/// BEK both are tried and reported, the first that opens names the partition's key.
#[test]
fn vm_matrix_cleartext_key_slot() {
    let Some(dir) = matrix("vm_matrix_cleartext_key_slot") else {
        return;
    };
    let o = oracle(dir);
    let disk = dir.join("cleartext.img");
    let (bek, clear) = (dir.join("os.bek"), dir.join("cleartext.key"));
    let out = verify(&[&disk], &["--key-file", s(&clear), "--json"]).ok();
    let p = &json(&out)["disks"][0]["partitions"][0];
    assert_eq!(p["keyslot"], 1, "{p}");
    assert_eq!(p["key"], format!("key-file {}", s(&clear)));
    assert_eq!(p["digest"], o["cleartext"]["sha256"]);
    assert_eq!(p["verdict"], "ok");
    let out = verify(
        &[&disk],
        &["--key-file", s(&clear), "--key-file", s(&bek), "--json"],
    )
    .ok();
    let p = &json(&out)["disks"][0]["partitions"][0];
    assert_eq!(p["keyslot"], 1, "{p}");
    let keys: Vec<(String, Option<u64>)> = p["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_string(),
                k["keyslot"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (format!("key-file {}", s(&clear)), Some(1)),
            (format!("key-file {}", s(&bek)), Some(0)),
        ]
    );
    // The same key with its last byte (the newline) cut opens nothing: it is used verbatim.
    let t = temp();
    let cut = t.path().join("cut.key");
    let bytes = fs::read(&clear).unwrap();
    write_key(t.path(), "cut.key", &bytes[..bytes.len() - 1]);
    let out = verify(&[&disk], &["--key-file", s(&cut), "--json"]).fails_with(2);
    assert_eq!(json(&out)["disks"][0]["partitions"][0]["verdict"], "no-key");
}

/// A data disk left by `cryptsetup reencrypt --encrypt --init-only` (ADE's online shape,
/// 8 MiB offset, never resumed): the key is found, nothing is digested, and the verdict says
/// what it is, `reencryption-in-progress` (not damage), exit 6, one stderr line.
#[test]
fn vm_matrix_reencryption_in_progress() {
    let Some(dir) = matrix("vm_matrix_reencryption_in_progress") else {
        return;
    };
    let disk = dir.join("reencrypt.img");
    let bek = dir.join("os.bek");
    let out = verify(&[&disk], &["--key-file", s(&bek), "--json"]).fails_with(6);
    one_error_line(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    assert!(
        out.stderr
            .starts_with("vaultdisk: not verified, reencryption in progress: "),
        "{}",
        out.stderr
    );
    let r = json(&out);
    assert_eq!(r["verdict"], "reencryption-in-progress");
    assert_eq!(r["ok"], false);
    let p = &r["disks"][0]["partitions"][0];
    assert_eq!(p["kind"], "luks2");
    assert_eq!(p["keyslot"], 0);
    assert_eq!(p["verdict"], "reencryption-in-progress");
    let f = p["findings"][0].as_str().unwrap();
    assert!(f.starts_with("LUKS2 reencryption in progress"), "{f}");
    assert!(f.contains("--resume-only"), "{f}");
    assert_eq!(p["digest"], Value::Null);
    assert_eq!(p["fsck"], Value::Null);
    let out = verify(&[&disk], &["--key-file", s(&bek)]).fails_with(6);
    assert!(
        out.stdout
            .contains("    result:   reencryption-in-progress\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with(
            "result: NOT VERIFIED: a LUKS2 reencryption was in progress when the copy was taken\n"
        ),
        "{}",
        out.stdout
    );
    // Without a key the header still says what it is; a partition no key opens beside it
    // does not turn the run into exit 2 (reencryption-in-progress ranks above no-key).
    let other = dir.join("luks1-sha1.img");
    let wrong = temp();
    let k = write_key(wrong.path(), "wrong.key", b"not the key");
    let out = verify(&[&disk, &other], &["--key-file", s(&k), "--json"]).fails_with(6);
    let r = json(&out);
    assert_eq!(r["verdict"], "reencryption-in-progress");
    let p = &r["disks"][0]["partitions"][0];
    assert_eq!(p["verdict"], "reencryption-in-progress");
    assert_eq!(p["findings"][0], "no supplied key opened a keyslot");
    assert_eq!(r["disks"][1]["partitions"][0]["verdict"], "no-key");
}

/// The confidential-VM token (`cryptsetup token import`, id 5, type Azure_Disk_Encryption,
/// no keyslots) is shown by `dump`, text and JSON, with where its key lives and never the
/// wrapped passphrase; verify (above), test-key and open ignore it and use the BEK.
#[test]
fn vm_matrix_cvm_token_is_shown_and_ignored() {
    let test = "vm_matrix_cvm_token_is_shown_and_ignored";
    let Some(dir) = matrix(test) else {
        return;
    };
    let o = oracle(dir);
    let disk = dir.join("cvm-token.img");
    let bek = dir.join("os.bek");
    let token: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("cvm-token.json")).unwrap()).unwrap();
    let secret = token["Passphrase"].as_str().unwrap();
    let before = fingerprint(&disk);

    let out = vd(&["dump", s(&disk), "--partition", "1", "--json"]).ok();
    assert!(!out.stdout.contains(secret), "{}", out.stdout);
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    let t = &d["tokens"][0];
    assert_eq!(t["id"], 5);
    assert_eq!(t["type"], "Azure_Disk_Encryption");
    assert_eq!(t["keyslots"], serde_json::json!([]));
    let a = &t["azure_disk_encryption"];
    for f in [
        "version",
        "KeyVaultURL",
        "KeyVaultResourceId",
        "KeyEncryptionKeyURL",
        "KekVaultResourceId",
        "AttestationURL",
        "PassphraseName",
    ] {
        assert_eq!(a[f], token[f], "{f}: {a}");
    }
    assert_eq!(a["has_passphrase"], true);
    assert_eq!(a.get("Passphrase"), None);

    let out = vd(&["dump", s(&disk), "--partition", "1"]).ok();
    assert!(!out.stdout.contains(secret), "{}", out.stdout);
    let want = format!(
        "Tokens:\n  5: Azure_Disk_Encryption\n\tKeyslots:   \n\tversion: 1.0\n\tKeyVaultURL: {}\n",
        token["KeyVaultURL"].as_str().unwrap()
    );
    assert!(out.stdout.contains(&want), "{}", out.stdout);
    for line in [
        format!(
            "\tKeyEncryptionKeyURL: {}\n",
            token["KeyEncryptionKeyURL"].as_str().unwrap()
        ),
        "\tPassphraseName: LUKSPasswordProtector\n".to_string(),
        "\tPassphrase: (wrapped, not shown)\n".to_string(),
    ] {
        assert!(out.stdout.contains(&line), "{line:?}: {}", out.stdout);
    }
    let out = vd(&[
        "test-key",
        s(&disk),
        "--partition",
        "1",
        "--key-file",
        s(&bek),
    ])
    .ok();
    assert!(out.stdout.contains("keyslot 0"), "{}", out.describe());
    assert_eq!(fingerprint(&disk), before);

    if !require_fuse(test) {
        return;
    }
    let t = temp();
    let plain = t.path().join("plain");
    let m = open_volume(&disk, &plain, &bek, &["--read-only", "--partition", "1"]);
    assert_eq!(
        sha256_file(&plain),
        o["cvm-token"]["sha256"].as_str().unwrap()
    );
    m.close();
    let after = fingerprint(&disk);
    assert_eq!((after.sha256, after.mtime), (before.sha256, before.mtime));
}

/// RHEL/CentOS keep /boot on xfs (ade-facts.md §2.3), which vaultdisk does not read: the
/// finding names the xfs partition and the way out (copy the header, give --header); with the
/// header given the root verifies against the oracle.
#[test]
fn vm_matrix_xfs_boot_is_named() {
    let test = "vm_matrix_xfs_boot_is_named";
    if !require(test, &["mkfs.xfs"]) {
        return;
    }
    let Some(dir) = matrix(test) else {
        return;
    };
    let o = oracle(dir);
    let disk = dir.join("xfs-boot.img");
    let bek = dir.join("os.bek");
    let out = verify(&[&disk], &["--key-file", s(&bek), "--json"]).fails_with(6);
    one_error_line(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    let r = json(&out);
    let p = &r["disks"][0]["partitions"][0];
    assert_eq!(p["kind"], "none");
    assert_eq!(p["verdict"], "damage");
    let f = p["findings"][0].as_str().unwrap();
    assert!(
        f.contains("xfs-boot.img partition 2 (xfs) may hold luks/osluksheader, but vaultdisk does not read files from xfs: copy it out")
            && f.contains("--header FILE"),
        "{f}"
    );
    assert_eq!(r["disks"][0]["partitions"][1]["content"], "xfs");
    let hdr = dir.join("osluksheader-xfs-boot");
    let out = verify(
        &[&disk],
        &["--key-file", s(&bek), "--header", s(&hdr), "--json"],
    )
    .ok();
    let p = &json(&out)["disks"][0]["partitions"][0];
    assert_eq!(p["kind"], "detached-luks");
    assert_eq!(p["digest"], o["xfs-boot"]["sha256"]);
    assert_eq!(p["verdict"], "ok");
}

/// The matrix's bad inputs in docs/bad-inputs.md: one line, the exit code, no file changed.
#[test]
fn vm_matrix_bad_inputs() {
    use crate::cli::{row_says, run_table};
    let test = "vm_matrix_bad_inputs";
    if !require(test, &["mkfs.xfs"]) {
        return;
    }
    let Some(m) = matrix(test) else {
        return;
    };
    let t = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = t.path();
    for f in ["reencrypt.img", "xfs-boot.img", "os.bek"] {
        fs::hard_link(m.join(f), d.join(f)).unwrap();
    }
    let rows = [
        row_says(
            "LUKS2 header mid-reencryption",
            &["verify", "@reencrypt.img", "--key-file", "@os.bek"],
            &[6],
            "not verified, reencryption in progress",
        ),
        row_says(
            "OS disk whose /boot is xfs",
            &["verify", "@xfs-boot.img", "--key-file", "@os.bek"],
            &[6],
            "does not read files from xfs",
        ),
    ];
    run_table(d, &rows);
}
