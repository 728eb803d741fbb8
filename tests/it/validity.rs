//! Issue 11 item 4: a header copy that breaks one of cryptsetup's own rules is invalid (the
//! other copy is used with a warning; both bad is exit 4), and what cryptsetup accepts is read.
//! Every case is judged by cryptsetup itself first, so the two tools agree on the verdict.

use crate::corrupt::{edit_json_both, rechecksum};
use crate::support::*;
use serde_json::{Value, json};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// hdr_size of cryptsetup's default layout (docs/format.md §1).
const HDR: usize = 16384;
const BIN_HDR: usize = 4096;

/// A cryptsetup-made LUKS2 volume (cheap PBKDF2) of 20 MiB and its key file.
fn cryptsetup_volume(dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let key = write_key(dir, "pass", PASS);
    let img = dir.join(name);
    set_len(&img, 20 * MIB);
    let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.extend_from_slice(extra);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    (img, key)
}

/// Rewrites the JSON area of the copy at `off` with `edit` applied to its bytes, NUL-padded,
/// and re-checksums it (bytes, so the text need not be UTF-8).
fn edit_area_bytes(path: &Path, off: usize, edit: impl Fn(&[u8]) -> Vec<u8>) {
    let mut buf = read_range(path, 0, 2 * HDR as u64);
    let area = &mut buf[off + BIN_HDR..off + HDR];
    let end = area.iter().position(|&b| b == 0).expect("NUL");
    let text = edit(&area[..end]);
    assert!(text.len() < area.len());
    area.fill(0);
    area[..text.len()].copy_from_slice(&text);
    rechecksum(&mut buf, off);
    poke(path, 0, &buf);
}

/// Applies `edit` to the JSON of the primary copy only.
fn edit_json_primary(path: &Path, edit: &dyn Fn(&mut Value)) {
    edit_area_bytes(path, 0, |text| {
        let mut j: Value = serde_json::from_slice(text).expect("JSON");
        edit(&mut j);
        serde_json::to_vec(&j).expect("encode")
    });
}

type Edit = fn(&mut Value);

/// Mutations cryptsetup 2.6.1 refuses (luks2_json_metadata.c hdr_validate_*, keyslot validate).
const BROKEN_RULES: &[(&str, Edit)] = &[
    ("segment ids 0 -> 2 (a gap)", |j| {
        let seg = j["segments"]["0"].take();
        j["segments"] = json!({ "2": seg });
        j["digests"]["0"]["segments"] = json!(["2"]);
    }),
    ("segment encryption \"\"", |j| {
        j["segments"]["0"]["encryption"] = json!("")
    }),
    ("no segment at all", |j| {
        j["segments"] = json!({});
        j["digests"]["0"]["segments"] = json!([]);
    }),
    ("integrity without journal members", |j| {
        j["segments"]["0"]["integrity"] = json!({"type": "hmac(sha256)"})
    }),
    ("keyslot type \"\"", |j| {
        j["keyslots"]["0"]["type"] = json!("")
    }),
    ("af type luks2", |j| {
        j["keyslots"]["0"]["af"]["type"] = json!("luks2")
    }),
    ("area encryption \"\"", |j| {
        j["keyslots"]["0"]["area"]["encryption"] = json!("")
    }),
    ("unknown keyslot type without area", |j| {
        j["keyslots"]["1"] = json!({"type": "future", "key_size": 64})
    }),
    ("digest type \"\"", |j| {
        j["digests"]["0"]["type"] = json!("")
    }),
];

#[test]
fn a_copy_breaking_a_cryptsetup_rule_is_invalid() {
    if !require(
        "a_copy_breaking_a_cryptsetup_rule_is_invalid",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let (base, key) = cryptsetup_volume(t.path(), "base.img", &[]);
    for &(name, edit) in BROKEN_RULES {
        // Both copies: cryptsetup says "not a valid LUKS device"; vaultdisk exit 4, one line.
        let both = t.path().join("both.img");
        std::fs::copy(&base, &both).unwrap();
        edit_json_both(&both, edit);
        let out = sys("cryptsetup", &["luksDump", s(&both)]);
        assert_ne!(
            out.code,
            0,
            "{name}: cryptsetup read it:\n{}",
            out.describe()
        );
        let before = fingerprint(&both);
        for args in [
            vec!["dump", s(&both)],
            vec!["dump", "--json", s(&both)],
            vec!["test-key", s(&both), "--key-file", s(&key)],
        ] {
            let out = vd(&args).fails_with(4);
            one_error_line(&out.stderr).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(out.stderr.contains("damaged"), "{name}: {}", out.describe());
        }
        assert_eq!(fingerprint(&both), before, "{name}: nothing written");

        // Primary only: the secondary is used, with a warning, and the key still opens.
        let one = t.path().join("one.img");
        std::fs::copy(&base, &one).unwrap();
        edit_json_primary(&one, &edit);
        let (j, out) = dump_json(&one);
        assert!(
            out.stderr.contains("secondary"),
            "{name}: {}",
            out.describe()
        );
        assert_eq!(j["header"]["current"], "secondary", "{name}: {j:#}");
        assert_eq!(j["header"]["copies"][0]["valid"], false, "{name}");
        vd(&["test-key", s(&one), "--key-file", s(&key)]).ok();
    }
}

/// The label field as bytes (binary header offset 24, 48 bytes) in both copies.
fn put_label(path: &Path, label: &[u8; 48]) {
    let mut buf = read_range(path, 0, 2 * HDR as u64);
    for off in [0, HDR] {
        buf[off + 24..off + 72].copy_from_slice(label);
        rechecksum(&mut buf, off);
    }
    poke(path, 0, &buf);
}

#[test]
fn what_cryptsetup_accepts_is_read() {
    if !require("what_cryptsetup_accepts_is_read", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let (base, key) = cryptsetup_volume(t.path(), "base.img", &[]);

    // A label and subsystem that are not UTF-8 (cryptsetup config stores the bytes).
    let img = t.path().join("label.img");
    std::fs::copy(&base, &img).unwrap();
    let label = OsStr::from_bytes(b"caf\xe9");
    let sub = OsStr::from_bytes(b"sub\xff\x1b[2J");
    run(
        "cryptsetup",
        &[
            OsStr::new("config"),
            img.as_os_str(),
            "--label".as_ref(),
            label,
            "--subsystem".as_ref(),
            sub,
        ],
        None,
    )
    .ok();
    let (j, _) = dump_json(&img);
    assert_eq!(j["label"], "caf\\xe9", "{j:#}");
    assert_eq!(j["label_hex"], "636166e9", "{j:#}");
    assert_eq!(j["subsystem_hex"], "737562ff1b5b324a", "{j:#}");
    let text = vd(&["dump", s(&img)]).ok();
    assert!(
        text.stdout.contains("Label:         \tcaf\\xe9\n"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("Subsystem:     \tsub\\xff\\x1b[2J\n"),
        "control characters escaped in text: {}",
        text.stdout
    );
    vd(&["test-key", s(&img), "--key-file", s(&key)]).ok();

    // A 48-byte label without NUL: cryptsetup shows its first 47 bytes.
    let img = t.path().join("label48.img");
    std::fs::copy(&base, &img).unwrap();
    put_label(&img, &[b'L'; 48]);
    let before = fingerprint(&img);
    let out = sys("cryptsetup", &["luksDump", s(&img)]).ok();
    assert!(
        out.stdout.contains(&format!("\t{}\n", "L".repeat(47))),
        "{}",
        out.stdout
    );
    assert_eq!(
        fingerprint(&img),
        before,
        "cryptsetup found both copies valid"
    );
    let (j, _) = dump_json(&img);
    assert_eq!(j["label"], "L".repeat(47));
    assert_eq!(j.get("label_hex"), None);

    // A token string holding bytes that are not UTF-8 (json-c does not check them).
    let img = t.path().join("token.img");
    std::fs::copy(&base, &img).unwrap();
    edit_json_both(&img, |j| {
        j["tokens"]["0"] = json!({"type": "vendor-x", "keyslots": ["0"], "note": "@@"})
    });
    for off in [0, HDR] {
        edit_area_bytes(&img, off, |text| {
            let at = text.windows(2).position(|w| w == b"@@").expect("marker");
            [&text[..at], b"caf\xe9\xff", &text[at + 2..]].concat()
        });
    }
    let before = fingerprint(&img);
    let out = sys("cryptsetup", &["luksDump", s(&img)]).ok();
    assert!(out.stdout.contains("vendor-x"), "{}", out.stdout);
    assert_eq!(
        fingerprint(&img),
        before,
        "cryptsetup found both copies valid"
    );
    let (j, _) = dump_json(&img);
    assert_eq!(j["tokens"][0]["type"], "vendor-x", "{j:#}");
    vd(&["test-key", s(&img), "--key-file", s(&key)]).ok();

    // md5 as kdf, af and digest hash: `luksFormat --hash md5` makes it on LUKS2.
    let (img, key) = cryptsetup_volume(t.path(), "md5.img", &["--hash", "md5"]);
    let cs = cryptsetup_json(&img);
    assert_eq!(cs["digests"]["0"]["hash"], "md5");
    let (j, _) = dump_json(&img);
    assert_eq!(j["digests"][0]["hash"], "md5", "{j:#}");
    vd(&["test-key", s(&img), "--key-file", s(&key)]).ok();
    let out = vd(&[
        "test-key",
        s(&img),
        "--key-file",
        s(&write_key(t.path(), "w", b"x")),
    ]);
    out.check_error(&[2]).unwrap_or_else(|e| panic!("{e}"));
}

/// A LUKS1 header backup ends with the key material, before the payload: dump and test-key
/// read it as cryptsetup does; open needs the data and says so in one line.
#[test]
fn luks1_header_backup_is_dumped_and_tested() {
    if !require("luks1_header_backup_is_dumped_and_tested", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let img = t.path().join("l1.img");
    set_len(&img, 20 * MIB);
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            "luks1",
            "--key-file",
            s(&key),
            "--pbkdf-force-iterations",
            "1000",
            s(&img),
        ],
    )
    .ok();
    let hdr = t.path().join("l1.hdr");
    sys(
        "cryptsetup",
        &["luksHeaderBackup", s(&img), "--header-backup-file", s(&hdr)],
    )
    .ok();
    let len = std::fs::metadata(&hdr).unwrap().len();
    assert!(
        len < 4096 * 512,
        "backup of {len} bytes reaches the payload"
    );
    assert!(cryptsetup_accepts(&hdr, &key));
    let out = vd(&["dump", s(&hdr)]).ok();
    assert!(out.stdout.contains("xts-plain64"), "{}", out.stdout);
    vd(&["test-key", s(&hdr), "--key-file", s(&key)]).ok();
    let plain = t.path().join("plain");
    let out = vd(&[
        "open",
        s(&hdr),
        s(&plain),
        "--key-file",
        s(&key),
        "--read-only",
    ]);
    let _m = Mount::new(&plain);
    let out = out.fails_with(4);
    one_error_line(&out.stderr).unwrap();
    assert!(out.stderr.contains("payload"), "{}", out.describe());
}

/// Issue 11 item 10: "Metadata area" is one copy's size, as luksDump prints it.
#[test]
fn metadata_area_is_what_luksdump_prints() {
    if !require("metadata_area_is_what_luksdump_prints", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let (img, _) = cryptsetup_volume(
        t.path(),
        "m.img",
        &[
            "--luks2-metadata-size",
            "64k",
            "--luks2-keyslots-size",
            "1m",
        ],
    );
    let line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Metadata area:"))
            .map(str::to_owned)
    };
    let cs = sys("cryptsetup", &["luksDump", s(&img)]).ok();
    let ours = vd(&["dump", s(&img)]).ok();
    assert_eq!(line(&ours.stdout), line(&cs.stdout));
    assert_eq!(
        line(&cs.stdout).as_deref(),
        Some("Metadata area: \t65536 [bytes]")
    );
}
