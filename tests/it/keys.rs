//! Key and header lifecycle: add-key, remove-key, change-key, test-key, header backup/restore,
//! repair — with cryptsetup as second opinion after every verb, and crash injection
//! (VAULTDISK_CRASH_AFTER_WRITES, as a process exit and as a power loss that undoes what was not
//! synced) proving a crash at any write leaves the old or new key working.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const CRASH_EXIT: i32 = vaultdisk::error::exit::CRASH;

struct Keys {
    vol: Vol,
    k: Vec<PathBuf>,
}

/// A 4 MiB volume with PASS in keyslot 0 and key files k[0..4] ("pass" first).
fn volume() -> Keys {
    let vol = Vol::new("4M", &[]);
    let mut k = vec![vol.key.clone()];
    for i in 1..4 {
        k.push(write_key(
            vol.dir.path(),
            &format!("k{i}"),
            format!("key number {i}").as_bytes(),
        ));
    }
    Keys { vol, k }
}

fn add_key(backing: &Path, old: &Path, new: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "add-key",
        s(backing),
        "--key-file",
        s(old),
        "--new-key-file",
        s(new),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.extend_from_slice(extra);
    vd(&args)
}

/// The keyslot vaultdisk says `key` opens, or None (exit 2).
fn vd_slot(backing: &Path, key: &Path) -> Option<u32> {
    let out = vd(&["test-key", s(backing), "--key-file", s(key)]);
    if out.code == 2 {
        return None;
    }
    let out = out.ok();
    let n = out
        .stdout
        .trim()
        .strip_prefix("keyslot ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    assert!(
        n.is_some(),
        "unexpected test-key output:\n{}",
        out.describe()
    );
    n
}

/// cryptsetup's opinion: does `key` open keyslot `slot` (or any, when None)?
fn cs_opens(backing: &Path, key: &Path, slot: Option<u32>) -> bool {
    let slot_text = slot.map(|n| n.to_string());
    let mut args = vec!["open", "--test-passphrase", "--key-file", s(key)];
    if let Some(t) = &slot_text {
        args.extend_from_slice(&["--key-slot", t]);
    }
    args.push(s(backing));
    sys("cryptsetup", &args).code == 0
}

/// Both tools agree: each (key, expected slot) opens exactly there or nowhere.
fn agree(backing: &Path, expect: &[(&Path, Option<u32>)]) {
    for (key, slot) in expect {
        assert_eq!(
            vd_slot(backing, key),
            *slot,
            "vaultdisk on {}",
            key.display()
        );
        assert_eq!(
            cs_opens(backing, key, *slot),
            slot.is_some(),
            "cryptsetup on {} slot {slot:?}",
            key.display()
        );
    }
    sys("cryptsetup", &["luksDump", s(backing)]).ok();
    vd(&["dump", s(backing)]).ok();
}

fn keyslot_ids(backing: &Path) -> Vec<String> {
    let j = cryptsetup_json(backing);
    j["keyslots"]
        .as_object()
        .expect("keyslots")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn add_key_lowest_free_and_chosen_slot_open_with_both_tools() {
    if !require(
        "add_key_lowest_free_and_chosen_slot_open_with_both_tools",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    add_key(b, &t.k[0], &t.k[1], &[]).ok();
    add_key(b, &t.k[1], &t.k[2], &["--key-slot", "7"]).ok();
    agree(
        b,
        &[
            (&t.k[0], Some(0)),
            (&t.k[1], Some(1)),
            (&t.k[2], Some(7)),
            (&t.k[3], None),
        ],
    );
    let j = cryptsetup_json(b);
    assert_eq!(
        j["digests"]["0"]["keyslots"],
        serde_json::json!(["0", "1", "7"])
    );
    // cryptsetup's own slot opens with vaultdisk.
    sys(
        "cryptsetup",
        &[
            "luksAddKey",
            "-q",
            "--key-file",
            s(&t.k[0]),
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-slot",
            "3",
            s(b),
            s(&t.k[3]),
        ],
    )
    .ok();
    agree(b, &[(&t.k[3], Some(3))]);
    // Argon2id keyslots work too.
    let k4 = write_key(t.vol.dir.path(), "k4", b"argon key");
    let mut args = vec![
        "add-key",
        s(b),
        "--key-file",
        s(&t.k[0]),
        "--new-key-file",
        s(&k4),
    ];
    args.extend_from_slice(CHEAP_ARGON2ID);
    vd(&args).ok();
    agree(b, &[(&k4, Some(2))]);
}

#[test]
fn add_key_refusals_leave_the_file_unchanged() {
    if !require("add_key_refusals_leave_the_file_unchanged", &["cryptsetup"]) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    let before = sha256_file(b);
    // Wrong existing key: exit 2, nothing written.
    add_key(b, &t.k[2], &t.k[1], &[]).fails_with(2);
    // Keyslot in use / out of range.
    add_key(b, &t.k[0], &t.k[1], &["--key-slot", "0"]).fails_with(5);
    add_key(b, &t.k[0], &t.k[1], &["--key-slot", "32"]).fails_with(1);
    // Both keys from stdin.
    vd_in(&["add-key", s(b)], b"a\nb\n").fails_with(1);
    let mut args = vec!["add-key", s(b), "--key-file", "-", "--new-key-file", "-"];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd_in(&args, b"x").fails_with(1);
    assert_eq!(sha256_file(b), before, "refusals must not write");
    agree(b, &[(&t.k[0], Some(0)), (&t.k[1], None)]);
}

#[test]
fn add_key_exhausts_a_small_keyslots_area() {
    if !require("add_key_exhausts_a_small_keyslots_area", &["cryptsetup"]) {
        return;
    }
    let t = volume();
    let b = t.vol.dir.path().join("small.img");
    set_len(&b, 4 * MIB);
    // 512 KiB holds two 258048-byte areas.
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--key-file",
            s(&t.k[0]),
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--luks2-keyslots-size",
            "512k",
            s(&b),
        ],
    )
    .ok();
    add_key(&b, &t.k[0], &t.k[1], &[]).ok();
    let before = sha256_file(&b);
    let out = add_key(&b, &t.k[0], &t.k[2], &[]).fails_with(5);
    assert!(out.stderr.contains("all keyslots"), "{}", out.describe());
    assert_eq!(sha256_file(&b), before);
    agree(
        &b,
        &[(&t.k[0], Some(0)), (&t.k[1], Some(1)), (&t.k[2], None)],
    );
}

#[test]
fn remove_key_by_key_by_slot_last_slot_and_tokens() {
    if !require(
        "remove_key_by_key_by_slot_last_slot_and_tokens",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    add_key(b, &t.k[0], &t.k[1], &[]).ok();
    add_key(b, &t.k[0], &t.k[2], &[]).ok();
    // A token serving keyslot 1 only, and one serving 1 and 2.
    let tok = t.vol.dir.path().join("tok.json");
    write_file(&tok, br#"{"type":"x-test","keyslots":["1"]}"#);
    sys(
        "cryptsetup",
        &["token", "import", "--json-file", s(&tok), s(b)],
    )
    .ok();
    write_file(
        &tok,
        br#"{"type":"x-test","keyslots":["1","2"],"keep":true}"#,
    );
    sys(
        "cryptsetup",
        &["token", "import", "--json-file", s(&tok), s(b)],
    )
    .ok();
    let area1 = cryptsetup_json(b)["keyslots"]["1"]["area"]["offset"]
        .as_str()
        .expect("area")
        .parse::<u64>()
        .expect("offset");
    let material = read_range(b, area1, 4096);
    // Wrong key: exit 2, unchanged.
    let before = sha256_file(b);
    vd(&["remove-key", s(b), "--key-file", s(&t.k[3])]).fails_with(2);
    assert_eq!(sha256_file(b), before);
    vd(&["remove-key", s(b), "--key-file", s(&t.k[1])]).ok();
    agree(
        b,
        &[(&t.k[0], Some(0)), (&t.k[1], None), (&t.k[2], Some(2))],
    );
    assert_ne!(read_range(b, area1, 4096), material, "area wiped");
    let j = cryptsetup_json(b);
    let tokens = j["tokens"].as_object().expect("tokens");
    assert_eq!(tokens.len(), 1, "token left without keyslots dropped: {j}");
    let (_, t2) = tokens.iter().next().expect("token");
    assert_eq!(t2["keyslots"], serde_json::json!(["2"]));
    assert_eq!(t2["keep"], serde_json::json!(true));
    // By id, no key needed; missing id is a usage error.
    vd(&["remove-key", s(b), "--key-slot", "9"]).fails_with(1);
    vd(&["remove-key", s(b), "--key-slot", "2"]).ok();
    assert_eq!(keyslot_ids(b), vec!["0".to_string()]);
    // The last keyslot needs --force.
    let before = sha256_file(b);
    let out = vd(&["remove-key", s(b), "--key-file", s(&t.k[0])]).fails_with(5);
    assert!(out.stderr.contains("only keyslot"), "{}", out.describe());
    assert_eq!(sha256_file(b), before);
    vd(&["remove-key", s(b), "--key-slot", "0", "--force"]).ok();
    assert!(keyslot_ids(b).is_empty());
    assert!(!cs_opens(b, &t.k[0], None));
}

#[test]
fn change_key_replaces_the_old_key() {
    if !require("change_key_replaces_the_old_key", &["cryptsetup"]) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    let vk = cryptsetup_volume_key(b, &t.k[0]);
    let mut args = vec![
        "change-key",
        s(b),
        "--key-file",
        s(&t.k[0]),
        "--new-key-file",
        s(&t.k[1]),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    agree(b, &[(&t.k[0], None), (&t.k[1], Some(1))]);
    assert_eq!(cryptsetup_volume_key(b, &t.k[1]), vk, "same volume key");
    let before = sha256_file(b);
    vd(&args).fails_with(2);
    assert_eq!(sha256_file(b), before);
}

#[test]
fn header_backup_and_restore_interchange_with_cryptsetup() {
    if !require(
        "header_backup_and_restore_interchange_with_cryptsetup",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    let dir = t.vol.dir.path();
    let ours = dir.join("ours.hdr");
    let theirs = dir.join("theirs.hdr");
    vd(&["header", "backup", s(b), s(&ours)]).ok();
    assert_eq!(mode_of(&ours) & 0o777, 0o600);
    sys(
        "cryptsetup",
        &["luksHeaderBackup", s(b), "--header-backup-file", s(&theirs)],
    )
    .ok();
    assert_eq!(
        sha256_file(&ours),
        sha256_file(&theirs),
        "same bytes as cryptsetup"
    );
    // Existing target: exit 5, untouched.
    let again = vd(&["header", "backup", s(b), s(&ours)]).fails_with(5);
    assert!(again.stderr.contains("exists"));
    // Change the keys, then restore ours: the old key set is back.
    add_key(b, &t.k[0], &t.k[1], &[]).ok();
    vd(&["remove-key", s(b), "--key-slot", "0"]).ok();
    agree(b, &[(&t.k[0], None), (&t.k[1], Some(1))]);
    vd(&["header", "restore", s(b), s(&ours)]).ok();
    agree(b, &[(&t.k[0], Some(0)), (&t.k[1], None)]);
    // cryptsetup restores our backup, we restore cryptsetup's.
    add_key(b, &t.k[0], &t.k[2], &[]).ok();
    sys(
        "cryptsetup",
        &[
            "luksHeaderRestore",
            "-q",
            s(b),
            "--header-backup-file",
            s(&ours),
        ],
    )
    .ok();
    agree(b, &[(&t.k[0], Some(0)), (&t.k[2], None)]);
    add_key(b, &t.k[0], &t.k[2], &[]).ok();
    vd(&["header", "restore", s(b), s(&theirs)]).ok();
    agree(b, &[(&t.k[0], Some(0)), (&t.k[2], None)]);

    // Another volume's header: refused (exit 4) unless --force, file unchanged.
    let other = volume();
    let other_hdr = dir.join("other.hdr");
    vd(&["header", "backup", s(&other.vol.backing), s(&other_hdr)]).ok();
    let before = sha256_file(b);
    let out = vd(&["header", "restore", s(b), s(&other_hdr)]).fails_with(4);
    assert!(out.stderr.contains("--force"), "{}", out.describe());
    assert_eq!(sha256_file(b), before);
    // Not a header at all.
    let junk = data_file(dir, "junk.hdr", &pattern(64 * 1024, 3));
    vd(&["header", "restore", s(b), s(&junk)]).fails_with(4);
    vd(&["header", "restore", s(b), s(&dir.join("missing.hdr"))]).fails_with(1);
    assert_eq!(sha256_file(b), before);
    vd(&["header", "restore", s(b), s(&other_hdr), "--force"]).ok();
    agree(b, &[(&t.k[0], Some(0))]);
    // Both copies damaged: restore brings the volume back without --force.
    vd(&["header", "restore", s(b), s(&ours), "--force"]).ok();
    poke(b, 100, b"xx");
    poke(b, 16384 + 100, b"xx");
    vd(&["test-key", s(b), "--key-file", s(&t.k[0])]).fails_with(4);
    vd(&["header", "restore", s(b), s(&ours)]).ok();
    agree(b, &[(&t.k[0], Some(0))]);
    // A file with no LUKS header at all needs --force.
    let blank = dir.join("blank.img");
    set_len(&blank, 20 * MIB);
    let out = vd(&["header", "restore", s(&blank), s(&ours)]).fails_with(4);
    assert!(out.stderr.contains("no LUKS2 header"), "{}", out.describe());
    vd(&["header", "restore", s(&blank), s(&ours), "--force"]).ok();
    vd(&["header", "restore", s(b), s(&other_hdr), "--force"]).ok();
    let uuid = |p: &Path| cryptsetup_json(p)["config"].clone();
    assert_eq!(uuid(b), uuid(&other.vol.backing));
}

#[test]
fn repair_rewrites_a_damaged_or_stale_copy() {
    if !require("repair_rewrites_a_damaged_or_stale_copy", &["cryptsetup"]) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    let out = vd(&["repair", s(b)]).ok();
    assert!(
        out.stdout.contains("both header copies"),
        "{}",
        out.describe()
    );
    // Damage the secondary's JSON area.
    poke(b, 16384 + 6000, b"garbage");
    let out = vd(&["repair", s(b)]).ok();
    assert!(
        out.stdout.contains("rewrote the secondary"),
        "{}",
        out.describe()
    );
    vd(&["repair", s(b)]).ok();
    // Stale primary: save it, update, put the old primary back.
    let old_primary = read_range(b, 0, 16384);
    add_key(b, &t.k[0], &t.k[1], &[]).ok();
    write_at(b, 0, &old_primary).expect("write");
    let out = vd(&["repair", s(b)]).ok();
    assert!(
        out.stdout.contains("rewrote the primary"),
        "{}",
        out.describe()
    );
    let p = read_range(b, 0, 4096);
    let s2 = read_range(b, 16384, 4096);
    assert_eq!(p[16..24], s2[16..24], "same seqid");
    assert_ne!(p[104..168], s2[104..168], "own salts");
    agree(b, &[(&t.k[0], Some(0)), (&t.k[1], Some(1))]);
}

#[test]
fn immutable_backing_is_refused_without_writing() {
    let t = volume();
    let b = &t.vol.backing;
    if find_tool("chattr").is_none() || run(tool("chattr"), &["+i", s(b)], None).code != 0 {
        println!("SKIP immutable_backing_is_refused_without_writing: chattr +i not available here");
        eprintln!(
            "SKIP immutable_backing_is_refused_without_writing: chattr +i not available here"
        );
        return;
    }
    let before = sha256_file(b);
    let out = add_key(b, &t.k[0], &t.k[1], &[]);
    let _ = run(tool("chattr"), &["-i", s(b)], None);
    out.fails_with(2);
    assert_eq!(sha256_file(b), before);
}

/// Runs vaultdisk with VAULTDISK_CRASH_AFTER_WRITES=k in `mode`; returns the exit code and
/// stderr.
fn crash_run(args: &[&str], k: u32, mode: CrashMode) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(mode.env(k))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vaultdisk");
    let code = out.status.code().unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        code == 0 || code == CRASH_EXIT,
        "{args:?} with crash point {k} ({}): exit {code}: {stderr}",
        mode.name()
    );
    (code, stderr)
}

/// Bytes of a crash test's work file that hold anything (see crash_verb).
const WORK_PREFIX: u64 = 2 * MIB;

/// For each crash point of a verb, in `mode`: the key sets it may leave are `before`, `after`
/// and `mid` (change-key: new keyslot committed, old one not yet removed).
#[allow(clippy::too_many_arguments)]
fn crash_verb(
    name: &str,
    mode: CrashMode,
    base: &Path,
    work: &Path,
    args: &[&str],
    keys: &[&Path],
    before: &[Option<u32>],
    after: &[Option<u32>],
    mid: Option<&[Option<u32>]>,
) -> u32 {
    let name = format!("{name} ({} mode)", mode.name());
    let mut points = 0;
    let mut undid = 0;
    for k in 1.. {
        // Only the first 2 MiB hold anything (header copies and the few keyslots these tests
        // use); the rest stays sparse, which keeps the I/O of ~60 runs small.
        let _ = std::fs::remove_file(work);
        copy_prefix(base, work, WORK_PREFIX);
        set_len(work, std::fs::metadata(base).expect("stat").len());
        let (code, stderr) = crash_run(args, k, mode);
        if code != 0 && check_crash_mode(mode, k, &stderr, base, work, WORK_PREFIX) {
            undid += 1;
        }
        let got: Vec<Option<u32>> = keys.iter().map(|key| vd_slot(work, key)).collect();
        // Every key that works must work for cryptsetup in the same slot; the state is the
        // old or the new one, never a mix that loses a key both sides keep.
        for (key, slot) in keys.iter().zip(&got) {
            if let Some(n) = slot {
                assert!(
                    cs_opens(work, key, Some(*n)),
                    "{name} k={k}: cryptsetup disagrees"
                );
            }
        }
        sys("cryptsetup", &["luksDump", s(work)]).ok();
        assert!(
            got == before || got == after || mid.is_some_and(|m| got == m),
            "{name} crash point {k}: keys open {got:?}, expected {before:?} or {after:?} (or {mid:?})"
        );
        assert!(
            got.iter().any(Option::is_some),
            "{name} crash point {k}: no key opens"
        );
        if code == 0 {
            assert_eq!(got, after, "{name} completed");
            break;
        }
        points += 1;
    }
    if mode == CrashMode::Power {
        assert!(undid > 0, "{name}: no crash point undid a write");
    }
    println!("{name}: {points} crash points exercised ({undid} undid unsynced writes)");
    points
}

#[test]
fn crash_at_every_write_leaves_old_or_new_keys_working() {
    if !require_fault_injection("crash_at_every_write_leaves_old_or_new_keys_working") {
        return;
    }
    if !require(
        "crash_at_every_write_leaves_old_or_new_keys_working",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = volume();
    let base = &t.vol.backing;
    let work = t.vol.dir.path().join("work.img");
    let (k0, k1, k2) = (t.k[0].as_path(), t.k[1].as_path(), t.k[2].as_path());
    // Every point of the keyslot verbs in both modes.
    for mode in CrashMode::BOTH {
        crash_keyslot_verbs(mode, base, &work, [k0, k1, k2]);
    }
}

/// add-key, remove-key and change-key crashed at every write or sync in `mode`.
fn crash_keyslot_verbs(mode: CrashMode, base: &Path, work: &Path, keys: [&Path; 3]) {
    let [k0, k1, k2] = keys;
    // A fresh base for this mode: one key (the earlier mode's loop added another).
    let dir = tempfile::tempdir().expect("tempdir");
    let base_copy = dir.path().join("base.img");
    std::fs::copy(base, &base_copy).expect("copy");
    let base = &base_copy;
    let mut total = 0;
    // add-key: 0 -> 0 + 1.
    let mut add = vec![
        "add-key",
        s(work),
        "--key-file",
        s(k0),
        "--new-key-file",
        s(k1),
    ];
    add.extend_from_slice(CHEAP_PBKDF2);
    total += crash_verb(
        "add-key",
        mode,
        base,
        work,
        &add,
        &keys,
        &[Some(0), None, None],
        &[Some(0), Some(1), None],
        None,
    );
    // Base with two keys for remove-key and change-key.
    add_key(base, k0, k1, &[]).ok();
    let rm = ["remove-key", s(work), "--key-file", s(k1)];
    total += crash_verb(
        "remove-key",
        mode,
        base,
        work,
        &rm,
        &keys,
        &[Some(0), Some(1), None],
        &[Some(0), None, None],
        None,
    );
    let mut chg = vec![
        "change-key",
        s(work),
        "--key-file",
        s(k0),
        "--new-key-file",
        s(k2),
    ];
    chg.extend_from_slice(CHEAP_PBKDF2);
    total += crash_verb(
        "change-key",
        mode,
        base,
        work,
        &chg,
        &keys,
        &[Some(0), Some(1), None],
        &[None, Some(1), Some(2)],
        Some(&[Some(0), Some(1), Some(2)]),
    );
    println!(
        "crash points exercised in total ({} mode): {total}",
        mode.name()
    );
    assert!(
        total >= 12,
        "expected at least 12 crash points, got {total}"
    );
}

#[test]
fn all_32_keyslots_used() {
    if !require("all_32_keyslots_used", &["cryptsetup"]) {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    for _ in 1..32 {
        add_key(b, &t.k[0], &t.k[1], &[]).ok();
    }
    assert_eq!(keyslot_ids(b).len(), 32);
    let before = sha256_file(b);
    let out = add_key(b, &t.k[0], &t.k[2], &[]).fails_with(5);
    assert!(out.stderr.contains("all keyslots"), "{}", out.describe());
    assert_eq!(sha256_file(b), before);
    assert!(cs_opens(b, &t.k[1], Some(31)));
    assert_eq!(
        vd(&[
            "test-key",
            s(b),
            "--key-file",
            s(&t.k[1]),
            "--key-slot",
            "31"
        ])
        .ok()
        .stdout
        .trim(),
        format!("keyslot 31 opens {}", s(b))
    );
    // Free one in the middle: the next add-key takes it.
    vd(&["remove-key", s(b), "--key-slot", "17"]).ok();
    add_key(b, &t.k[0], &t.k[2], &[]).ok();
    agree(b, &[(&t.k[2], Some(17))]);
}

#[test]
fn key_verbs_refuse_a_volume_open_read_write() {
    if !require_fuse("key_verbs_refuse_a_volume_open_read_write") {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    let m = t.vol.open();
    let before = sha256_range(b, 0, DATA_OFFSET);
    add_key(b, &t.k[0], &t.k[1], &[]).fails_with(5);
    vd(&["remove-key", s(b), "--key-slot", "0", "--force"]).fails_with(5);
    // test-key and header backup only read.
    vd(&["test-key", s(b), "--key-file", s(&t.k[0])]).ok();
    vd(&["header", "backup", s(b), s(&t.vol.dir.path().join("h"))]).ok();
    assert_eq!(sha256_range(b, 0, DATA_OFFSET), before);
    m.close();
}

/// A mistyped VAULTDISK_CRASH_MODE is refused at the first write (exit 1, one line), not taken
/// for the other mode.
#[test]
fn an_unknown_crash_mode_is_refused() {
    if !require_fault_injection("an_unknown_crash_mode_is_refused") {
        return;
    }
    let t = volume();
    let b = &t.vol.backing;
    let mut args = vec![
        "add-key",
        s(b),
        "--key-file",
        s(&t.k[0]),
        "--new-key-file",
        s(&t.k[1]),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    let out = Command::new(BIN)
        .args(&args)
        .env("VAULTDISK_CRASH_AFTER_WRITES", "4")
        .env("VAULTDISK_CRASH_MODE", "Power")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run vaultdisk");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("VAULTDISK_CRASH_MODE=Power is not"),
        "{stderr}"
    );
    // The volume still opens with its key (at most the new keyslot's material was written).
    vd(&["test-key", s(b), "--key-file", s(&t.k[0])]).ok();
}

#[test]
fn crash_during_repair_leaves_a_valid_header() {
    if !require_fault_injection("crash_during_repair_leaves_a_valid_header") {
        return;
    }
    if !require("crash_during_repair_leaves_a_valid_header", &["cryptsetup"]) {
        return;
    }
    let t = volume();
    let base = &t.vol.backing;
    poke(base, 16384 + 6000, b"garbage");
    let work = t.vol.dir.path().join("work.img");
    let keys = [t.k[0].as_path(), t.k[1].as_path()];
    for mode in CrashMode::BOTH {
        let points = crash_verb(
            "repair",
            mode,
            base,
            &work,
            &["repair", s(&work)],
            &keys,
            &[Some(0), None],
            &[Some(0), None],
            None,
        );
        assert_eq!(points, 2, "one write and one sync");
    }
}

#[test]
fn crash_during_header_restore_leaves_old_or_restored_keys_working() {
    if !require_fault_injection("crash_during_header_restore_leaves_old_or_restored_keys_working") {
        return;
    }
    if !require(
        "crash_during_header_restore_leaves_old_or_restored_keys_working",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = volume();
    let base = &t.vol.backing;
    let hdr = t.vol.dir.path().join("old.hdr");
    vd(&["header", "backup", s(base), s(&hdr)]).ok();
    let mut chg = vec![
        "change-key",
        s(base),
        "--key-file",
        s(&t.k[0]),
        "--new-key-file",
        s(&t.k[1]),
    ];
    chg.extend_from_slice(CHEAP_PBKDF2);
    vd(&chg).ok();
    let work = t.vol.dir.path().join("work.img");
    let keys = [t.k[0].as_path(), t.k[1].as_path()];
    for mode in CrashMode::BOTH {
        let points = crash_verb(
            "header restore",
            mode,
            base,
            &work,
            &["header", "restore", s(&work), s(&hdr)],
            &keys,
            &[None, Some(1)],
            &[Some(0), None],
            None,
        );
        assert!(points >= 6, "{points}");
    }
}

/// Concurrent header updates serialise on the update lock: no lost keyslot, no torn header.
#[test]
fn concurrent_add_keys_both_land() {
    if !require("concurrent_add_keys_both_land", &["cryptsetup"]) {
        return;
    }
    for round in 0..4 {
        let t = volume();
        let b = t.vol.backing.clone();
        let spawn = |new: &Path| {
            let mut args: Vec<String> = [
                "add-key",
                s(&b),
                "--key-file",
                s(&t.k[0]),
                "--new-key-file",
                s(new),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            args.extend(CHEAP_PBKDF2.iter().map(|a| a.to_string()));
            Command::new(BIN)
                .args(&args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn add-key")
        };
        let children = [spawn(&t.k[1]), spawn(&t.k[2]), spawn(&t.k[3])];
        for c in children {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut slots: Vec<Option<u32>> = t.k.iter().map(|k| vd_slot(&b, k)).collect();
        assert!(
            slots.iter().all(Option::is_some),
            "round {round}: {slots:?}"
        );
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), 4, "round {round}: two keys in one keyslot?");
        for k in &t.k {
            assert!(cs_opens(&b, k, None), "round {round}: cryptsetup disagrees");
        }
    }
}

/// A full disk while the new keyslot's material is written (a hole in the sparse backing
/// file needs blocks): one line, the header untouched, the old key still opens.
#[test]
fn add_key_on_a_full_disk_leaves_the_old_header_valid() {
    let test = "add_key_on_a_full_disk";
    if !require(test, &["root", "cryptsetup"]) {
        return;
    }
    let dir = temp();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    sys("mount", &["-t", "tmpfs", "-o", "size=4m", "tmpfs", s(&mnt)]).ok();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new(tool("umount")).arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let b = mnt.join("disk.img");
    let key = write_key(dir.path(), "pass", PASS);
    let new = write_key(dir.path(), "new", b"a new key");
    format_with(&b, &key, "1M", &[], &[]).ok();
    // Fill the rest of the tmpfs.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0x5au8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let before = sha256_range(&b, 0, DATA_OFFSET);
    let out = add_key(&b, &key, &new, &[]);
    if let Err(e) = out.check_error(&[4]) {
        panic!("{e}");
    }
    assert!(
        out.stderr.to_lowercase().contains("space"),
        "{}",
        out.describe()
    );
    assert_eq!(
        sha256_range(&b, 0, DATA_OFFSET),
        before,
        "header area changed"
    );
    assert_eq!(vd_slot(&b, &key), Some(0));
    assert!(cs_opens(&b, &key, Some(0)));
    assert_eq!(vd_slot(&b, &new), None);
    // With room again the same verb works.
    std::fs::remove_file(&filler).expect("rm filler");
    add_key(&b, &key, &new, &[]).ok();
    assert_eq!(vd_slot(&b, &new), Some(1));
}
