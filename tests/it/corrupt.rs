//! Damaged and hostile headers: one bad copy falls back to the other with a warning, two bad
//! copies are refused (exit 4, "restore a header backup"), hostile or unsupported metadata is
//! refused quickly, and open/dump never write to the backing file.

use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Instant;

/// hdr_size of a default volume (luks-format.md §1).
const HDR: usize = 16384;
/// Offsets inside one binary header copy (luks-format.md §2).
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const OFF_CSUM: usize = 448;
const BIN_HDR: usize = 4096;

/// The two header copies of a default-layout file.
fn read_hdrs(path: &Path) -> Vec<u8> {
    read_range(path, 0, 2 * HDR as u64)
}

fn hdr_size_at(buf: &[u8], off: usize) -> usize {
    u64::from_be_bytes(buf[off + 8..off + 16].try_into().unwrap()) as usize
}

/// luks-format.md §2: SHA-256 over the copy with csum bytes 448..511 zeroed, JSON area included.
pub fn header_checksum(buf: &[u8], off: usize) -> [u8; 32] {
    let size = hdr_size_at(buf, off);
    let mut copy = buf[off..off + size].to_vec();
    copy[OFF_CSUM..OFF_CSUM + 64].fill(0);
    Sha256::digest(&copy).into()
}

/// Recomputes the checksum of the copy at `off` in place.
pub fn rechecksum(buf: &mut [u8], off: usize) {
    let c = header_checksum(buf, off);
    buf[off + OFF_CSUM..off + OFF_CSUM + 32].copy_from_slice(&c);
    buf[off + OFF_CSUM + 32..off + OFF_CSUM + 64].fill(0);
}

/// The JSON text of the copy at `off`, parsed.
fn json_at(buf: &[u8], off: usize) -> Value {
    let area = &buf[off + BIN_HDR..off + hdr_size_at(buf, off)];
    let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    serde_json::from_slice(&area[..end]).expect("header JSON")
}

/// Replaces the JSON area of the copy at `off` (compact JSON, NUL padding) and re-checksums it.
fn set_json_at(buf: &mut [u8], off: usize, v: &Value) {
    let size = hdr_size_at(buf, off);
    let text = serde_json::to_vec(v).unwrap();
    let area = &mut buf[off + BIN_HDR..off + size];
    assert!(text.len() < area.len(), "JSON does not fit the area");
    area.fill(0);
    area[..text.len()].copy_from_slice(&text);
    rechecksum(buf, off);
}

/// Applies `edit` to the JSON of both copies, keeping them valid (the hostile-header recipe).
pub fn edit_json_both(path: &Path, edit: impl Fn(&mut Value)) {
    let primary_size = hdr_size_at(&read_range(path, 0, BIN_HDR as u64), 0);
    let mut buf = read_range(path, 0, 2 * primary_size as u64);
    for off in [0, primary_size] {
        let mut j = json_at(&buf, off);
        edit(&mut j);
        set_json_at(&mut buf, off, &j);
    }
    poke(path, 0, &buf[..2 * primary_size]);
}

/// Flips all bits of one byte of the file.
fn flip(path: &Path, offset: u64) {
    let b = read_range(path, offset, 1)[0];
    poke(path, offset, &[!b]);
}

/// Data written before the damage, checked after it (None without FUSE).
struct Fixture {
    vol: Vol,
    expected: Option<Vec<u8>>,
}

fn fixture(test: &str, kdf: &[&str]) -> Fixture {
    let vol = Vol::with_kdf("4M", kdf, &["--label", "corrupt-test"]);
    let expected = if missing_fuse_quiet(test) {
        None
    } else {
        let m = vol.open();
        let chunk = pattern(256 * KIB as usize, 42);
        write_plain(&vol.plain, 3 * 4096 + 100, &chunk);
        m.close();
        let mut exp = vec![0u8; 4 * MIB as usize];
        exp[3 * 4096 + 100..3 * 4096 + 100 + chunk.len()].copy_from_slice(&chunk);
        Some(exp)
    };
    Fixture { vol, expected }
}

fn missing_fuse_quiet(test: &str) -> bool {
    !require_fuse(test)
}

/// One copy damaged: dump and open work from the other one (warning naming "secondary" when the
/// primary is the bad one), the data reads back, and the file is not modified (no repair).
fn expect_fallback(f: &Fixture, bad: &str) {
    let good = if bad == "primary" {
        "secondary"
    } else {
        "primary"
    };
    let (bad_i, good_i) = if bad == "primary" { (0, 1) } else { (1, 0) };
    let v = &f.vol;
    let before = fingerprint(&v.backing);

    let (j, out) = dump_json(&v.backing);
    if bad == "primary" {
        assert!(
            out.stderr.contains("secondary"),
            "dump should warn about using the secondary copy:\n{}",
            out.describe()
        );
    }
    assert_eq!(j["header"]["current"], good, "{j:#}");
    assert_eq!(j["header"]["copies"][bad_i]["name"], bad);
    assert_eq!(j["header"]["copies"][bad_i]["valid"], false, "{j:#}");
    let err = &j["header"]["copies"][bad_i]["error"];
    assert!(
        err.as_str().is_some_and(|e| !e.is_empty()),
        "a damaged copy needs an error text: {j:#}"
    );
    assert_eq!(j["header"]["copies"][good_i]["valid"], true, "{j:#}");
    assert_eq!(j["header"]["copies"][good_i]["error"], Value::Null);
    assert_eq!(j["label"], "corrupt-test");
    assert!(j["keyslots"][0]["kdf"]["type"].is_string(), "{j:#}");

    let text = vd(&["dump", s(&v.backing)]).ok();
    if bad == "primary" {
        assert!(text.stderr.contains("secondary"), "{}", text.describe());
    }

    if let Some(expected) = &f.expected {
        let out = vd(&["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)]);
        let m = Mount::new(&v.plain);
        let out = out.ok();
        if bad == "primary" {
            assert!(
                out.stderr.contains("secondary"),
                "open should warn about using the secondary copy:\n{}",
                out.describe()
            );
        }
        assert!(
            read_plain(&v.plain) == *expected,
            "PLAIN differs after fallback"
        );
        m.close();
    }
    assert_eq!(
        fingerprint(&v.backing),
        before,
        "open/dump must not write (no silent repair)"
    );
}

/// Both copies damaged: exit 4 everywhere, the message points to a header backup, nothing written.
fn expect_refused_both(v: &Vol) {
    let before = fingerprint(&v.backing);
    for args in [
        vec!["dump", s(&v.backing)],
        vec!["dump", "--json", s(&v.backing)],
        vec!["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)],
        vec![
            "open",
            s(&v.backing),
            s(&v.plain),
            "--key-file",
            s(&v.key),
            "--read-only",
        ],
    ] {
        let out = vd(&args);
        let _m = Mount::new(&v.plain);
        let out = out.fails_with(4);
        assert!(
            out.stderr.to_lowercase().contains("backup"),
            "message should mention restoring a header backup:\n{}",
            out.describe()
        );
        assert!(!v.plain.exists(), "failed open left PLAIN");
    }
    assert_eq!(fingerprint(&v.backing), before);
}

fn damage_primary_magic(p: &Path) {
    poke(p, 0, b"XUKS");
}

fn damage_primary_checksum(p: &Path) {
    flip(p, OFF_CSUM as u64 + 5);
}

/// A byte inside the JSON text (`{"keyslots"…`): the checksum no longer matches.
fn damage_primary_json_byte(p: &Path) {
    flip(p, BIN_HDR as u64 + 3);
}

/// The last NUL of the JSON area is covered by the checksum too.
fn damage_primary_json_padding(p: &Path) {
    poke(p, HDR as u64 - 1, b"\x01");
}

/// Structurally invalid JSON (no keyslots/segments/…) with a checksum made valid again.
fn damage_primary_json_structure(p: &Path) {
    let mut buf = read_hdrs(p);
    set_json_at(&mut buf, 0, &json!({"config": {}}));
    poke(p, 0, &buf);
}

fn damage_primary_seqid_field(p: &Path) {
    flip(p, OFF_SEQID as u64 + 7);
}

fn damage_secondary_magic(p: &Path) {
    poke(p, HDR as u64, b"XKUL");
}

fn damage_both_magics(p: &Path) {
    damage_primary_magic(p);
    damage_secondary_magic(p);
}

fn damage_both_checksums(p: &Path) {
    flip(p, OFF_CSUM as u64);
    flip(p, (HDR + OFF_CSUM) as u64);
}

fn damage_both_json_areas(p: &Path) {
    flip(p, BIN_HDR as u64 + 10);
    flip(p, (HDR + BIN_HDR) as u64 + 10);
}

/// A named way to damage a header in place.
struct Damage {
    name: &'static str,
    apply: fn(&Path),
}

const fn damage(name: &'static str, apply: fn(&Path)) -> Damage {
    Damage { name, apply }
}

/// Mutations after which exactly one copy is bad (cryptsetup still reads the other).
const ONE_COPY_BAD: &[Damage] = &[
    damage("primary magic", damage_primary_magic),
    damage("primary checksum", damage_primary_checksum),
    damage("primary JSON byte", damage_primary_json_byte),
    damage("primary JSON padding", damage_primary_json_padding),
    damage("primary JSON structure", damage_primary_json_structure),
    damage("primary seqid field", damage_primary_seqid_field),
    damage("secondary magic", damage_secondary_magic),
];

/// Mutations after which no copy is usable.
const BOTH_BAD: &[Damage] = &[
    damage("both magics", damage_both_magics),
    damage("both checksums", damage_both_checksums),
    damage("both JSON areas", damage_both_json_areas),
];

fn fallback_test(test: &str, damage: fn(&Path), bad: &str) {
    let f = fixture(test, &[]);
    damage(&f.vol.backing);
    expect_fallback(&f, bad);
}

#[test]
fn primary_magic_damaged_uses_secondary() {
    fallback_test(
        "primary_magic_damaged_uses_secondary",
        damage_primary_magic,
        "primary",
    );
}

#[test]
fn primary_checksum_damaged_uses_secondary() {
    fallback_test(
        "primary_checksum_damaged_uses_secondary",
        damage_primary_checksum,
        "primary",
    );
}

#[test]
fn primary_json_byte_damaged_uses_secondary() {
    fallback_test(
        "primary_json_byte_damaged_uses_secondary",
        damage_primary_json_byte,
        "primary",
    );
}

#[test]
fn primary_json_padding_damaged_uses_secondary() {
    fallback_test(
        "primary_json_padding_damaged_uses_secondary",
        damage_primary_json_padding,
        "primary",
    );
}

#[test]
fn primary_valid_checksum_bad_json_uses_secondary() {
    fallback_test(
        "primary_valid_checksum_bad_json_uses_secondary",
        damage_primary_json_structure,
        "primary",
    );
}

#[test]
fn primary_seqid_field_damaged_uses_secondary() {
    fallback_test(
        "primary_seqid_field_damaged_uses_secondary",
        damage_primary_seqid_field,
        "primary",
    );
}

#[test]
fn secondary_damaged_uses_primary() {
    fallback_test(
        "secondary_damaged_uses_primary",
        damage_secondary_magic,
        "secondary",
    );
}

/// Both copies valid, the secondary with a higher seqid: it wins (luks-format.md §2 rule 3).
#[test]
fn higher_seqid_copy_wins() {
    let f = fixture("higher_seqid_copy_wins", &[]);
    let v = &f.vol;
    let mut buf = read_hdrs(&v.backing);
    let seq = u64::from_be_bytes(buf[OFF_SEQID..OFF_SEQID + 8].try_into().unwrap());
    buf[HDR + OFF_SEQID..HDR + OFF_SEQID + 8].copy_from_slice(&(seq + 1).to_be_bytes());
    buf[HDR + OFF_LABEL..HDR + OFF_LABEL + 48].fill(0);
    buf[HDR + OFF_LABEL..HDR + OFF_LABEL + 5].copy_from_slice(b"newer");
    rechecksum(&mut buf, HDR);
    poke(&v.backing, 0, &buf);
    let before = fingerprint(&v.backing);
    let (j, _) = dump_json(&v.backing);
    assert_eq!(j["label"], "newer", "{j:#}");
    assert_eq!(j["header"]["current"], "secondary");
    assert_eq!(j["header"]["copies"][0]["valid"], true);
    assert_eq!(j["header"]["copies"][1]["valid"], true);
    assert_eq!(j["header"]["copies"][0]["seqid"], seq);
    assert_eq!(j["header"]["copies"][1]["seqid"], seq + 1);
    if let Some(expected) = &f.expected {
        let m = v.open_ro();
        assert!(read_plain(&v.plain) == *expected);
        m.close();
    }
    assert_eq!(fingerprint(&v.backing), before);
}

#[test]
fn both_copies_damaged_refused() {
    for d in BOTH_BAD {
        let v = Vol::new("1M", &[]);
        (d.apply)(&v.backing);
        eprintln!("case: {}", d.name);
        expect_refused_both(&v);
    }
}

/// A valid (re-checksummed) header that open must refuse with exit 4, fast, naming `says` if
/// given, writing nothing and leaving no PLAIN.
fn expect_refused_open(v: &Vol, says: Option<&str>) {
    let before = fingerprint(&v.backing);
    for extra in [&[][..], &["--read-only"][..]] {
        let mut args = vec!["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)];
        args.extend_from_slice(extra);
        let start = Instant::now();
        let out = vd(&args);
        let _m = Mount::new(&v.plain);
        let took = start.elapsed();
        let out = out.fails_with(4);
        assert!(
            took < QUICK,
            "refusal must come before any KDF work, took {took:?}"
        );
        if let Some(says) = says {
            assert!(
                out.stderr.to_lowercase().contains(&says.to_lowercase()),
                "message should name {says:?}:\n{}",
                out.describe()
            );
        }
        assert!(!v.plain.exists(), "refused open left PLAIN");
    }
    assert_eq!(fingerprint(&v.backing), before);
}

/// Argon2 memory of 8 GiB: above cryptsetup's 4 GiB cap (luks-format.md §9).
fn hostile_memory(p: &Path) {
    edit_json_both(p, |j| j["keyslots"]["0"]["kdf"]["memory"] = json!(8388608));
}

/// 64 Argon2 lanes: above cryptsetup's cap of 4.
fn hostile_cpus(p: &Path) {
    edit_json_both(p, |j| j["keyslots"]["0"]["kdf"]["cpus"] = json!(64));
}

#[test]
fn hostile_argon2_memory_refused_quickly() {
    let v = Vol::with_kdf("1M", CHEAP_ARGON2ID, &[]);
    hostile_memory(&v.backing);
    expect_refused_open(&v, None);
}

#[test]
fn hostile_argon2_cpus_refused_quickly() {
    let v = Vol::with_kdf("1M", CHEAP_ARGON2ID, &[]);
    hostile_cpus(&v.backing);
    expect_refused_open(&v, None);
}

#[test]
fn unsupported_cipher_refused() {
    let v = Vol::new("1M", &[]);
    edit_json_both(&v.backing, |j| {
        j["segments"]["0"]["encryption"] = json!("aes-cbc-essiv:sha256");
    });
    expect_refused_open(&v, Some("aes-cbc-essiv:sha256"));
}

#[test]
fn unknown_mandatory_requirement_refused() {
    let v = Vol::new("1M", &[]);
    edit_json_both(&v.backing, |j| {
        j["config"]["requirements"] = json!({"mandatory": ["vaultdisk-test-req"]});
    });
    expect_refused_open(&v, Some("vaultdisk-test-req"));
}

#[test]
fn integrity_segment_refused() {
    let v = Vol::new("1M", &[]);
    edit_json_both(&v.backing, |j| {
        j["segments"]["0"]["integrity"] = json!({
            "type": "hmac(sha256)",
            "journal_encryption": "none",
            "journal_integrity": "none"
        });
    });
    expect_refused_open(&v, Some("integrity"));
}

/// Validates the header helpers above against cryptsetup itself: our checksum equals the one
/// cryptsetup stored, and a JSON edit made by `edit_json_both` is accepted by cryptsetup.
#[test]
fn header_helpers_agree_with_cryptsetup() {
    if !require("header_helpers_agree_with_cryptsetup", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let img = t.path().join("cs.img");
    set_len(&img, 20 * MIB);
    let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    let buf = read_hdrs(&img);
    for off in [0, HDR] {
        assert_eq!(
            header_checksum(&buf, off)[..],
            buf[off + OFF_CSUM..off + OFF_CSUM + 32],
            "checksum rule differs from cryptsetup's at copy {off}"
        );
    }
    edit_json_both(&img, |j| {
        j["tokens"]["0"] = json!({"type": "vaultdisk-probe", "keyslots": ["0"]});
    });
    let before = fingerprint(&img);
    let out = sys("cryptsetup", &["luksDump", s(&img)]).ok();
    assert!(out.stdout.contains("vaultdisk-probe"), "{}", out.stdout);
    // cryptsetup rewrites a copy it finds bad (luks-format.md §11.4): unchanged means both were valid
    assert_eq!(fingerprint(&img).sha256, before.sha256);
    assert!(cryptsetup_accepts(&img, &key));
}

/// Validates the mutations themselves on a cryptsetup volume of the same layout: after a
/// one-copy mutation cryptsetup still reads the header, after a both-copies one it cannot,
/// and a hostile edit leaves a header cryptsetup parses (so our refusal is about the values).
#[test]
fn mutations_judged_by_cryptsetup() {
    if !require("mutations_judged_by_cryptsetup", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let base = t.path().join("base.img");
    set_len(&base, 20 * MIB);
    let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_ARGON2ID);
    args.push(s(&base));
    sys("cryptsetup", &args).ok();
    let fresh = |name: &str| {
        let p = t.path().join(name);
        std::fs::copy(&base, &p).unwrap();
        p
    };
    for d in ONE_COPY_BAD {
        let (name, p) = (d.name, fresh("one.img"));
        (d.apply)(&p);
        let out = sys("cryptsetup", &["luksDump", "--dump-json-metadata", s(&p)]);
        assert_eq!(
            out.code,
            0,
            "{name}: cryptsetup should use the other copy:\n{}",
            out.describe()
        );
    }
    for d in BOTH_BAD {
        let (name, p) = (d.name, fresh("both.img"));
        (d.apply)(&p);
        let out = sys("cryptsetup", &["luksDump", s(&p)]);
        assert_ne!(
            out.code,
            0,
            "{name}: cryptsetup still read it:\n{}",
            out.describe()
        );
    }
    for (name, edit, want) in [
        ("memory", hostile_memory as fn(&Path), "8388608"),
        ("cpus", hostile_cpus, "64"),
    ] {
        let p = fresh("hostile.img");
        edit(&p);
        let before = fingerprint(&p);
        let out = sys("cryptsetup", &["luksDump", "--dump-json-metadata", s(&p)]).ok();
        let j: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(j["keyslots"]["0"]["kdf"][name].to_string(), want);
        assert_eq!(
            fingerprint(&p).sha256,
            before.sha256,
            "{name}: both copies must be valid"
        );
    }
}

/// A cryptsetup LUKS2 volume whose primary copy was wiped (dd of zeros over 0..HDR), then given
/// `foreign` bytes at `at`: the stale secondary copy must not be used (issue 11 item 3).
fn wiped_primary(
    t: &Path,
    name: &str,
    key: &Path,
    foreign: Option<(u64, &[u8])>,
) -> std::path::PathBuf {
    let img = t.join(name);
    set_len(&img, 20 * MIB);
    let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", s(key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    poke(&img, 0, &[0u8; HDR]);
    if let Some((at, bytes)) = foreign {
        poke(&img, at, bytes);
    }
    img
}

/// Every verb refuses a device whose primary area holds another signature (exit 4, one line
/// naming it); nothing is written; `repair` needs --force and then rewrites the primary.
#[test]
fn ambiguous_signatures_refused() {
    if !require("ambiguous_signatures_refused", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let new = write_key(t.path(), "new", b"another passphrase");
    // A plainly wiped primary still falls back to the secondary, with a warning.
    let wiped = wiped_primary(t.path(), "wiped.img", &key, None);
    let out = vd(&["test-key", s(&wiped), "--key-file", s(&key)]).ok();
    assert!(out.stderr.contains("damaged"), "{}", out.describe());

    let backup = t.path().join("hdr.bak");
    vd(&["header", "backup", s(&wiped), s(&backup)]).ok();
    let lvm = wiped_primary(t.path(), "lvm.img", &key, Some((512, b"LABELONE")));
    let before = fingerprint(&lvm);
    let plain = t.path().join("plain");
    let runs: Vec<Vec<&str>> = vec![
        vec!["test-key", s(&lvm), "--key-file", s(&key)],
        vec!["open", s(&lvm), s(&plain), "--key-file", s(&key)],
        vec![
            "add-key",
            s(&lvm),
            "--key-file",
            s(&key),
            "--new-key-file",
            s(&new),
        ],
        vec!["remove-key", s(&lvm), "--key-slot", "0", "--force"],
        vec!["resize", s(&lvm), "--size", "8M"],
        vec!["header", "restore", s(&lvm), s(&backup)],
        vec!["erase", s(&lvm), "--batch"],
        vec!["dump", s(&lvm)],
        vec!["repair", s(&lvm)],
    ];
    for args in &runs {
        let out = vd(args).fails_with(4);
        assert!(
            out.stderr.contains("LVM2") && out.stderr.contains("LABELONE"),
            "{args:?}: {}",
            out.describe()
        );
        assert_eq!(fingerprint(&lvm).sha256, before.sha256, "{args:?} wrote");
    }
    let out = vd(&["repair", s(&lvm)]).fails_with(4);
    assert!(out.stderr.contains("--force"), "{}", out.describe());
    vd(&["repair", s(&lvm), "--force"]).ok();
    vd(&["test-key", s(&lvm), "--key-file", s(&key)]).ok();
    assert!(cryptsetup_accepts(&lvm, &key));

    // A real ext4 superblock (mkfs.ext4 on a small file, its first 4 KiB copied over).
    if find_tool("mkfs.ext4").is_some() {
        let fs = t.path().join("fs.img");
        set_len(&fs, MIB);
        sys("mkfs.ext4", &["-q", "-F", s(&fs)]).ok();
        let sb = read_range(&fs, 0, 4096);
        let ext = wiped_primary(t.path(), "ext.img", &key, Some((0, &sb)));
        let out = vd(&["test-key", s(&ext), "--key-file", s(&key)]).fails_with(4);
        assert!(out.stderr.contains("ext2/3/4"), "{}", out.describe());
    }
    if find_tool("mkswap").is_some() {
        let sw = t.path().join("swap.img");
        set_len(&sw, MIB);
        sys("mkswap", &[s(&sw)]).ok();
        let page = read_range(&sw, 0, 4096);
        let swap = wiped_primary(t.path(), "swap.img2", &key, Some((0, &page)));
        let out = vd(&[
            "add-key",
            s(&swap),
            "--key-file",
            s(&key),
            "--new-key-file",
            s(&new),
        ])
        .fails_with(4);
        assert!(out.stderr.contains("swap"), "{}", out.describe());
    }
}
