//! Key and volume lifecycle beyond add/remove: recovery keys, --keyfile-size/--keyfile-offset,
//! erase and offline resize — cryptsetup as second opinion, bad inputs leave the file unchanged.

use crate::support::*;
use std::fs;
use std::path::Path;

/// The recovery key add-recovery-key printed (one line on stdout).
fn add_recovery(backing: &Path, key: &Path) -> String {
    let out = vd(&["add-recovery-key", s(backing), "--key-file", s(key)]).ok();
    let line = out.stdout.trim().to_string();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.describe());
    line
}

fn plain_len(plain: &Path) -> u64 {
    fs::metadata(plain).expect("plain").len()
}

#[test]
fn recovery_key_round_trip() {
    let vol = Vol::new("4M", &[]);
    let rk = add_recovery(&vol.backing, &vol.key);
    // 8 groups of 8 ModHex letters.
    let groups: Vec<&str> = rk.split('-').collect();
    assert_eq!(groups.len(), 8, "{rk}");
    assert!(
        groups
            .iter()
            .all(|g| g.len() == 8 && g.bytes().all(|c| b"cbdefghijklnrtuv".contains(&c))),
        "{rk}"
    );
    // dump shows the token linked to the new keyslot.
    let (dump, _) = dump_json(&vol.backing);
    let tokens = dump["tokens"].as_array().expect("tokens");
    assert_eq!(tokens.len(), 1, "{dump}");
    assert_eq!(tokens[0]["type"], "vaultdisk-recovery");
    assert_eq!(tokens[0]["keyslots"], serde_json::json!([1]));
    // Typed sloppily (spaces, upper case) on stdin: test-key and open accept it.
    let sloppy = format!("{}\n", rk.to_uppercase().replace('-', " "));
    let out = vd_in(
        &["test-key", s(&vol.backing), "--recovery-key"],
        sloppy.as_bytes(),
    )
    .ok();
    assert!(
        out.stdout.starts_with("keyslot 1 opens"),
        "{}",
        out.describe()
    );
    // Not a recovery key: exit 1; a wrong one: exit 2.
    vd_in(&["test-key", s(&vol.backing), "--recovery-key"], b"hello\n").fails_with(1);
    let wrong = rk.replace('c', "b").replace('d', "c");
    if wrong != rk {
        vd_in(
            &["test-key", s(&vol.backing), "--recovery-key"],
            wrong.as_bytes(),
        )
        .fails_with(2);
    }
    if require_fuse("recovery_key_round_trip") {
        let out = vd_in(
            &["open", s(&vol.backing), s(&vol.plain), "--recovery-key"],
            sloppy.as_bytes(),
        );
        let guard = Mount::new(&vol.plain);
        let out = out.ok();
        assert_eq!(plain_len(&vol.plain), 4 << 20, "{}", out.describe());
        guard.close();
    }
    // The KDF sees the canonical string (lower case, dashes, no newline): cryptsetup agrees.
    if require("recovery_key_round_trip", &["cryptsetup"]) {
        let exact = write_key(vol.dir.path(), "rk", rk.as_bytes());
        assert!(cryptsetup_accepts(&vol.backing, &exact));
        let _ = cryptsetup_json(&vol.backing);
    }
    // Removing the recovery keyslot drops its token.
    vd(&["remove-key", s(&vol.backing), "--key-slot", "1"]).ok();
    let (dump, _) = dump_json(&vol.backing);
    assert_eq!(dump["tokens"], serde_json::json!([]), "{dump}");
}

#[test]
fn keyfile_size_and_offset_match_cryptsetup() {
    let vol = Vol::new("4M", &[]);
    let mut bytes = b"XYZ".to_vec();
    bytes.extend_from_slice(PASS);
    bytes.extend_from_slice(b"trailing junk\n");
    let f = write_key(vol.dir.path(), "long", &bytes);
    let off = "3".to_string();
    let size = PASS.len().to_string();
    let cases: Vec<(Vec<&str>, bool, i32)> = vec![
        (
            vec!["--keyfile-offset", &off, "--keyfile-size", &size],
            true,
            0,
        ),
        (vec!["--keyfile-offset", &off], false, 2),
        (vec!["--keyfile-size", &size], false, 2),
        (
            vec!["--keyfile-offset", "20", "--keyfile-size", "100"],
            false,
            1,
        ),
    ];
    for (extra, opens, code) in cases {
        let mut args = vec!["test-key", s(&vol.backing), "--key-file", s(&f)];
        args.extend_from_slice(&extra);
        let out = vd(&args);
        if opens {
            out.ok();
        } else {
            out.fails_with(code);
        }
        if require("keyfile_size_and_offset_match_cryptsetup", &["cryptsetup"]) {
            let mut cs = vec!["open", "--test-passphrase", "--key-file", s(&f)];
            cs.extend_from_slice(&extra);
            cs.push(s(&vol.backing));
            assert_eq!(sys("cryptsetup", &cs).code == 0, opens, "{extra:?}");
        }
    }
    // add-key's existing key honours them too.
    let new = write_key(vol.dir.path(), "new", b"new key");
    let mut args = vec![
        "add-key",
        s(&vol.backing),
        "--key-file",
        s(&f),
        "--keyfile-offset",
        &off,
        "--keyfile-size",
        &size,
        "--new-key-file",
        s(&new),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    vd(&["test-key", s(&vol.backing), "--key-file", s(&new)]).ok();
    // Without --key-file: usage error.
    vd(&["test-key", s(&vol.backing), "--keyfile-size", "3"]).fails_with(1);
}

#[test]
fn erase_refusals_and_result() {
    let vol = Vol::new("4M", &[]);
    let before = sha256_file(&vol.backing);
    // Non-tty without --batch: exit 1, nothing written.
    vd_in(&["erase", s(&vol.backing)], b"YES\n").fails_with(1);
    assert_eq!(sha256_file(&vol.backing), before);
    // Not a LUKS file: exit 4, unchanged.
    let other = data_file(vol.dir.path(), "other", &[7u8; 65536]);
    vd(&["erase", s(&other), "--batch"]).fails_with(4);
    assert_eq!(fs::read(&other).expect("other"), vec![7u8; 65536]);
    // While open: exit 5, unchanged.
    if require_fuse("erase_refusals_and_result") {
        let m = vol.open();
        vd(&["erase", s(&vol.backing), "--batch"]).fails_with(5);
        m.close();
        assert_eq!(sha256_file(&vol.backing), before);
    }
    let len = fs::metadata(&vol.backing).expect("backing").len();
    vd(&["erase", s(&vol.backing), "--batch"]).ok();
    assert_eq!(fs::metadata(&vol.backing).expect("backing").len(), len);
    // Header copies and keyslot area are zeros now.
    assert!(
        read_range(&vol.backing, 0, DATA_OFFSET)
            .iter()
            .all(|&b| b == 0)
    );
    vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).fails_with(4);
    vd(&[
        "open",
        s(&vol.backing),
        s(&vol.plain),
        "--key-file",
        s(&vol.key),
    ])
    .fails_with(4);
    if require("erase_refusals_and_result", &["cryptsetup"]) {
        assert_ne!(sys("cryptsetup", &["luksDump", s(&vol.backing)]).code, 0);
    }
}

/// Makes the data segment of `backing` fixed-size (as cryptsetup resize --size would).
fn make_fixed(backing: &Path, size: u64) {
    use vaultdisk::luks2::write::write_header;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(backing)
        .expect("open");
    let h = vaultdisk::luks2::read(&f).expect("header");
    let mut new = h.metadata.wire.clone();
    new.segments
        .get_mut("0")
        .expect("segment 0")
        .as_object_mut()
        .expect("object")
        .insert("size".into(), serde_json::Value::String(size.to_string()));
    write_header(&f, &h, new, [[1u8; 64]; 2]).expect("write");
}

#[test]
fn resize_grow_shrink_force() {
    let vol = Vol::new("4M", &[]);
    let before = sha256_file(&vol.backing);
    // Bad sizes and shrinking without --force: exit 1, byte-identical.
    for (size, force) in [
        ("0", false),
        ("1000", false),
        ("4097", false),
        ("2M", false),
    ] {
        let mut args = vec!["resize", s(&vol.backing), "--size", size];
        if force {
            args.push("--force");
        }
        vd(&args).fails_with(1);
        assert_eq!(sha256_file(&vol.backing), before, "{size}");
    }
    // Grow (dynamic segment: only the file grows, sparse).
    vd(&["resize", s(&vol.backing), "--size", "64M"]).ok();
    let meta = fs::metadata(&vol.backing).expect("backing");
    assert_eq!(meta.len(), DATA_OFFSET + (64 << 20));
    vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).ok();
    if require_fuse("resize_grow_shrink_force") {
        let m = vol.open();
        assert_eq!(plain_len(&vol.plain), 64 << 20);
        // Online grow: the open file grows and its new sectors are served.
        let out = vd(&["resize", s(&vol.backing), "--size", "128M"]).ok();
        assert!(out.stdout.contains("grown online"), "{}", out.describe());
        assert_eq!(plain_len(&vol.plain), 128 << 20);
        write_plain(&vol.plain, (127 << 20) + 100, b"past the old end");
        // Shrinking an open volume is refused, nothing changes.
        let len = fs::metadata(&vol.backing).expect("backing").len();
        vd(&["resize", s(&vol.backing), "--size", "8M", "--force"]).fails_with(5);
        assert_eq!(fs::metadata(&vol.backing).expect("backing").len(), len);
        m.close();
        let m = vol.open_ro();
        assert_eq!(plain_len(&vol.plain), 128 << 20);
        let back = read_range(&vol.plain, (127 << 20) + 100, 16);
        assert_eq!(&back, b"past the old end");
        m.close();
    }
    // Shrink needs --force.
    vd(&["resize", s(&vol.backing), "--size", "8M"]).fails_with(1);
    vd(&["resize", s(&vol.backing), "--size", "8M", "--force"]).ok();
    assert_eq!(
        fs::metadata(&vol.backing).expect("backing").len(),
        DATA_OFFSET + (8 << 20)
    );
    // Fixed-size segment: the header records the new size, cryptsetup agrees.
    make_fixed(&vol.backing, 8 << 20);
    vd(&["resize", s(&vol.backing), "--size", "12M"]).ok();
    let (dump, _) = dump_json(&vol.backing);
    let text = dump.to_string();
    assert!(text.contains(&(12u64 << 20).to_string()), "{text}");
    if require("resize_grow_shrink_force", &["cryptsetup"]) {
        let cs = cryptsetup_json(&vol.backing);
        assert_eq!(cs["segments"]["0"]["size"], (12u64 << 20).to_string());
        assert!(cryptsetup_accepts(&vol.backing, &vol.key));
    }
    if require_fuse("resize_grow_shrink_force") {
        let m = vol.open();
        assert_eq!(plain_len(&vol.plain), 12 << 20);
        // A fixed-size segment changes only offline.
        vd(&["resize", s(&vol.backing), "--size", "16M"]).fails_with(5);
        m.close();
    }
    vd(&["resize", s(&vol.backing), "--size", "4M", "--force"]).ok();
    let cs_len = fs::metadata(&vol.backing).expect("backing").len();
    assert_eq!(cs_len, DATA_OFFSET + (4 << 20));
    vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).ok();
}

/// Runs `vaultdisk ARGS` on a pseudo-terminal (util-linux `script`), feeding `input`.
fn on_tty(args: &[&str], input: &[u8]) -> i32 {
    let cmd = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    run("script", &["-qec", &cmd, "/dev/null"], Some(input)).code
}

#[test]
fn erase_asks_yes_on_a_terminal() {
    if !require("erase_asks_yes_on_a_terminal", &["script"]) {
        return;
    }
    let vol = Vol::new("4M", &[]);
    let before = sha256_file(&vol.backing);
    for answer in [&b"no\n"[..], b"yes\n", b"\n"] {
        assert_eq!(on_tty(&["erase", s(&vol.backing)], answer), 1);
        assert_eq!(sha256_file(&vol.backing), before);
    }
    assert_eq!(on_tty(&["erase", s(&vol.backing)], b"YES\n"), 0);
    vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).fails_with(4);
}

/// Runs `args` with VAULTDISK_CRASH_AFTER_WRITES=k in `mode` on a fresh copy of `base` for
/// k = 1.. until it completes; after each crash `check(work, completed)` must hold. Returns the
/// crash points.
fn crash_points(
    mode: CrashMode,
    base: &Path,
    work: &Path,
    args: &[&str],
    check: &dyn Fn(&Path, bool),
) -> u32 {
    let len = fs::metadata(base).expect("stat").len();
    let mut undid = 0;
    for k in 1..200u32 {
        let _ = fs::remove_file(work);
        fs::copy(base, work).expect("copy");
        let out = std::process::Command::new(BIN)
            .args(args)
            .envs(mode.env(k))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            code == 0 || code == 86,
            "{args:?} k={k} ({} mode): exit {code}: {stderr}",
            mode.name()
        );
        if code == 86 && check_crash_mode(mode, k, &stderr, base, work, len) {
            undid += 1;
        }
        check(work, code == 0);
        if code == 0 {
            assert!(
                mode == CrashMode::Exit || undid > 0,
                "{args:?}: no power crash point undid a write"
            );
            return k - 1;
        }
    }
    panic!("{args:?} never completed");
}

#[test]
fn crash_during_recovery_key_and_resize_leaves_a_working_volume() {
    if !require(
        "crash_during_recovery_key_and_resize_leaves_a_working_volume",
        &["cryptsetup"],
    ) {
        return;
    }
    if !require_fault_injection("crash_during_recovery_key_and_resize_leaves_a_working_volume") {
        return;
    }
    for mode in CrashMode::BOTH {
        crash_recovery_key_and_resize(mode);
    }
}

/// add-recovery-key, resize grow and resize shrink crashed at every write or sync in `mode`.
fn crash_recovery_key_and_resize(mode: CrashMode) {
    let vol = Vol::new("4M", &[]);
    let work = vol.dir.path().join("work.img");
    let key = vol.key.clone();
    let valid = |w: &Path| {
        vd(&["test-key", s(w), "--key-file", s(&key)]).ok();
        assert!(cryptsetup_accepts(w, &key));
        cryptsetup_json(w)
    };
    let args = ["add-recovery-key", s(&work), "--key-file", s(&key)];
    let rk = crash_points(mode, &vol.backing, &work, &args, &|w, done| {
        let cs = valid(w);
        let tokens = cs["tokens"].as_object().map_or(0, |t| t.len());
        let slots = cs["keyslots"].as_object().map_or(0, |t| t.len());
        // Keyslot and token arrive together, in one header write.
        assert_eq!(tokens + 1, slots, "{cs}");
        if done {
            assert_eq!(tokens, 1, "{cs}");
        }
    });
    // resize of a fixed-size segment: old or new size, always openable.
    make_fixed(&vol.backing, 4 << 20);
    let args = ["resize", s(&work), "--size", "6M"];
    let rs = crash_points(mode, &vol.backing, &work, &args, &|w, done| {
        let cs = valid(w);
        let size = cs["segments"]["0"]["size"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let want_new = (6u64 << 20).to_string();
        assert!(
            size == (4u64 << 20).to_string() || size == want_new,
            "{size}"
        );
        if done {
            assert_eq!(size, want_new);
        }
    });
    let args = ["resize", s(&work), "--size", "2M", "--force"];
    let rs2 = crash_points(mode, &vol.backing, &work, &args, &|w, _| {
        valid(w);
    });
    println!(
        "crash points ({} mode): add-recovery-key {rk}, resize grow {rs}, resize shrink {rs2}",
        mode.name()
    );
    assert!(rk >= 3 && rs >= 2 && rs2 >= 2, "{rk} {rs} {rs2}");
}

#[test]
fn erase_luks1_made_by_cryptsetup() {
    if !require("erase_luks1_made_by_cryptsetup", &["cryptsetup"]) {
        return;
    }
    let dir = temp();
    let b = dir.path().join("l1.img");
    set_len(&b, 8 << 20);
    let key = write_key(dir.path(), "k", PASS);
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "--type",
            "luks1",
            "--batch-mode",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            s(&key),
            s(&b),
        ],
    )
    .ok();
    vd(&["test-key", s(&b), "--key-file", s(&key)]).ok();
    let payload = cryptsetup_payload_bytes(&b);
    vd(&["erase", s(&b), "--batch"]).ok();
    assert!(read_range(&b, 0, payload).iter().all(|&c| c == 0));
    vd(&["test-key", s(&b), "--key-file", s(&key)]).fails_with(4);
    assert_ne!(sys("cryptsetup", &["luksDump", s(&b)]).code, 0);
}

/// LUKS1 payload offset in bytes, from `cryptsetup luksDump`.
fn cryptsetup_payload_bytes(b: &Path) -> u64 {
    let out = sys("cryptsetup", &["luksDump", s(b)]).ok();
    let sectors: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Payload offset:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("payload offset");
    sectors * 512
}
