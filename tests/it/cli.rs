//! The CLI contract: a table of bad inputs (exit code, one stderr line, files untouched) and
//! happy-path round trips of format / open / close / dump.

use crate::support::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const UUID: &str = "0badc0de-1234-4cde-8f00-123456789abc";

/// One bad input: `args` with `@name` placeholders for fixture paths, optional stdin, the
/// accepted exit codes (one, except where the contract leaves a choice; see README) and an
/// optional substring the error line must contain.
pub(crate) struct Row {
    name: &'static str,
    args: &'static [&'static str],
    stdin: Option<&'static [u8]>,
    codes: &'static [i32],
    says: Option<&'static str>,
}

pub(crate) const fn row(
    name: &'static str,
    args: &'static [&'static str],
    code: &'static [i32],
) -> Row {
    Row {
        name,
        args,
        stdin: None,
        codes: code,
        says: None,
    }
}

pub(crate) const fn row_says(
    name: &'static str,
    args: &'static [&'static str],
    code: &'static [i32],
    says: &'static str,
) -> Row {
    Row {
        name,
        args,
        stdin: None,
        codes: code,
        says: Some(says),
    }
}

pub(crate) const fn row_stdin(
    name: &'static str,
    args: &'static [&'static str],
    stdin: &'static [u8],
    code: &'static [i32],
) -> Row {
    Row {
        name,
        args,
        stdin: Some(stdin),
        codes: code,
        says: None,
    }
}

/// Runs every row in `dir`, replacing `@x` args by `dir/x`, and checks that no file in
/// `dir` was created, removed or modified (content, length, mtime, mode) by any row.
/// Collects all failures so one broken row does not hide the others.
pub(crate) fn run_table(dir: &Path, rows: &[Row]) {
    let mut failures = Vec::new();
    let mut records = Vec::new();
    for r in rows {
        let args: Vec<String> = r
            .args
            .iter()
            .map(|a| match a.strip_prefix('@') {
                Some(name) => dir.join(name).to_string_lossy().into_owned(),
                None => a.to_string(),
            })
            .collect();
        let before = dir_snapshot(dir);
        let out = match r.stdin {
            Some(input) => vd_in(&args, input),
            None => vd(&args),
        };
        let after = dir_snapshot(dir);
        if out.elapsed > std::time::Duration::from_secs(5) {
            eprintln!("[{}] took {:?}", r.name, out.elapsed);
        }
        records.push(crate::badinputs::Record {
            name: r.name.to_string(),
            args: args.clone(),
            stdin: r.stdin.map(<[u8]>::to_vec),
            code: out.code,
            stderr: out.stderr.clone(),
        });
        if let Err(e) = out.check_error(r.codes) {
            failures.push(format!("[{}] {e}", r.name));
        }
        if let Some(want) = r.says
            && !out.stderr.to_lowercase().contains(&want.to_lowercase())
        {
            failures.push(format!(
                "[{}] stderr should mention {want:?}:\n{}",
                r.name,
                out.describe()
            ));
        }
        let diff = snapshot_diff(&before, &after);
        if !diff.is_empty() {
            failures.push(format!("[{}] files changed: {diff:?}", r.name));
        }
        if dir.join("plain").exists() {
            failures.push(format!("[{}] PLAIN was left behind", r.name));
            force_unmount(&dir.join("plain"));
            let _ = fs::remove_file(dir.join("plain"));
        }
    }
    let table = std::thread::current().name().unwrap_or("table").to_string();
    crate::badinputs::record(&table, dir, &records);
    assert!(
        failures.is_empty(),
        "{} failure(s) in a table of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

/// Fixture files that need no working `format`: random bytes, an empty file, a key file, a
/// non-empty non-LUKS file, a directory.
fn plain_fixtures(dir: &Path) {
    write_file(&dir.join("random.img"), &pattern(MIB as usize, 1));
    write_file(&dir.join("empty.img"), b"");
    write_file(&dir.join("existing.img"), &pattern(64 * KIB as usize, 2));
    write_key(dir, "key", PASS);
    fs::create_dir(dir.join("adir")).unwrap();
}

/// Bad inputs that do not need a LUKS volume. Nothing may be created (`@new`, `@plain`).
#[test]
fn bad_usage_table() {
    let t = temp();
    plain_fixtures(t.path());
    let rows = [
        row("no arguments", &[], &[1]),
        row("unknown subcommand", &["frobnicate"], &[1]),
        row("unknown global flag", &["--bogus"], &[1]),
        row("only -v", &["-v"], &[1]),
        row("format without args", &["format"], &[1]),
        row(
            "format without --size",
            &["format", "@new", "--key-file", "@key"],
            &[1],
        ),
        row(
            "format unknown flag",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--key-file",
                "@key",
                "--bogus",
            ],
            &[1],
        ),
        row(
            "size 0",
            &["format", "@new", "--size", "0", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size 12Q",
            &["format", "@new", "--size", "12Q", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size -1",
            &["format", "@new", "--size=-1", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size empty",
            &["format", "@new", "--size", "", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size suffix only",
            &["format", "@new", "--size", "M", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size double suffix",
            &["format", "@new", "--size", "4MM", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size overflows u64",
            &[
                "format",
                "@new",
                "--size",
                "99999999999T",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "size 1000 not a multiple of 4096",
            &["format", "@new", "--size", "1000", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size 1M+512 not a multiple of 4096",
            &["format", "@new", "--size", "1049088", "--key-file", "@key"],
            &[1],
        ),
        row(
            "size 1000 not a multiple of 512",
            &[
                "format",
                "@new",
                "--size",
                "1000",
                "--sector-size",
                "512",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "sector size 1000",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--sector-size",
                "1000",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "sector size 0",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--sector-size",
                "0",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "key size 128",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--key-size",
                "128",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "key size 384",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--key-size",
                "384",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "pbkdf scrypt",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--pbkdf",
                "scrypt",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "pbkdf iterations not a number",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "many",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "iter-time negative",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--iter-time=-5",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "argon2 memory above 4 GiB",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--pbkdf",
                "argon2id",
                "--pbkdf-force-iterations",
                "4",
                "--pbkdf-memory",
                "8388608",
                "--pbkdf-parallel",
                "1",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "uuid malformed",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--uuid",
                "not-a-uuid",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "label longer than 47 bytes",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--label",
                "this-label-is-far-too-long-for-the-48-byte-luks2-label-field",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row(
            "format key file missing",
            &[
                "format",
                "@new",
                "--size",
                "4M",
                "--key-file",
                "@missing.key",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
            ],
            &[1],
        ),
        row_says(
            "format onto existing non-empty file",
            &[
                "format",
                "@existing.img",
                "--size",
                "4M",
                "--key-file",
                "@key",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
            ],
            &[5],
            "existing.img",
        ),
        row("open without args", &["open"], &[1]),
        row(
            "open without PLAIN",
            &["open", "@random.img", "--key-file", "@key"],
            &[1],
        ),
        row(
            "open non-LUKS random bytes",
            &["open", "@random.img", "@plain", "--key-file", "@key"],
            &[4],
        ),
        row(
            "open empty file",
            &["open", "@empty.img", "@plain", "--key-file", "@key"],
            &[4],
        ),
        // contract: missing file is a bad parameter (1) or a wrong device (4, cryptsetup's code)
        row(
            "open missing file",
            &["open", "@missing.img", "@plain", "--key-file", "@key"],
            &[1, 4],
        ),
        row(
            "open a directory",
            &["open", "@adir", "@plain", "--key-file", "@key"],
            &[1, 4],
        ),
        row(
            "open read-only non-LUKS",
            &[
                "open",
                "@random.img",
                "@plain",
                "--key-file",
                "@key",
                "--read-only",
            ],
            &[4],
        ),
        row("dump without args", &["dump"], &[1]),
        row("dump non-LUKS", &["dump", "@random.img"], &[4]),
        row(
            "dump --json non-LUKS",
            &["dump", "--json", "@random.img"],
            &[4],
        ),
        row("dump empty file", &["dump", "@empty.img"], &[4]),
        row("dump missing file", &["dump", "@missing.img"], &[1, 4]),
        row(
            "dump unknown flag",
            &["dump", "@random.img", "--bogus"],
            &[1],
        ),
        row("close without args", &["close"], &[1]),
        row(
            "close a path that is not open",
            &["close", "@random.img"],
            &[1, 4],
        ),
        row("close a missing path", &["close", "@plain"], &[1, 4]),
        row(
            "close extra argument",
            &["close", "@random.img", "@empty.img"],
            &[1],
        ),
    ];
    run_table(t.path(), &rows);
}

/// Bad inputs against a real (closed) volume; the volume must stay byte-identical.
#[test]
fn bad_volume_table() {
    let v = Vol::new("4M", &[]);
    let d = v.dir.path();
    assert_eq!(v.backing, d.join("disk.img"));
    write_key(d, "key", PASS);
    write_key(d, "wrong", b"wrong passphrase");
    write_key(d, "pass-nl", &[PASS, b"\n"].concat());
    copy_prefix(&v.backing, &d.join("trunc.img"), 8 * KIB);
    copy_prefix(&v.backing, &d.join("hdr-only.img"), DATA_OFFSET - 4096);
    // Issue 11 item 3: the primary copy wiped and an LVM2 label written where it was.
    let lvm = d.join("lvm.img");
    copy_prefix(&v.backing, &lvm, 2 * MIB);
    set_len(&lvm, std::fs::metadata(&v.backing).expect("stat").len());
    poke(&lvm, 0, &[0u8; 16384]);
    poke(&lvm, 512, b"LABELONE");
    // Issue 11 item 4: cryptsetup's own header rules broken in both copies.
    let gap = d.join("seg-gap.img");
    copy_prefix(&v.backing, &gap, 2 * MIB);
    crate::corrupt::edit_json_both(&gap, |j| {
        let seg = j["segments"]["0"].take();
        j["segments"] = serde_json::json!({ "2": seg });
        j["digests"]["0"]["segments"] = serde_json::json!(["2"]);
    });
    let no_enc = d.join("no-encryption.img");
    copy_prefix(&v.backing, &no_enc, 2 * MIB);
    crate::corrupt::edit_json_both(&no_enc, |j| {
        j["segments"]["0"]["encryption"] = "".into();
    });
    // Issue 11 item 5: a KDF bomb (2^31 PBKDF2 iterations in keyslot 0, both copies).
    let bomb = d.join("kdf-bomb.img");
    copy_prefix(&v.backing, &bomb, 2 * MIB);
    crate::corrupt::edit_json_both(&bomb, |j| {
        j["keyslots"]["0"]["kdf"]["iterations"] = (1u64 << 31).into();
    });
    // Issue 11 item 1: PLAIN that is a symlink, and PLAIN in a directory anyone may write.
    std::fs::write(d.join("victim"), b"keep").expect("victim");
    std::os::unix::fs::symlink(d.join("victim"), d.join("link-plain")).expect("symlink");
    let shared = d.join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let rows = [
        row_says(
            "KDF bomb: keyslot estimated far above the limit",
            &["test-key", "@kdf-bomb.img", "--key-file", "@key"],
            &[4],
            "would take about",
        ),
        row_says(
            "PLAIN is a symlink",
            &["open", "@disk.img", "@link-plain", "--key-file", "@key"],
            &[1],
            "symbolic link",
        ),
        row(
            "PLAIN in a directory others may write (not sticky)",
            &["open", "@disk.img", "@shared/plain", "--key-file", "@key"],
            &[2],
        ),
        row_says(
            "wrong passphrase",
            &["open", "@disk.img", "@plain", "--key-file", "@wrong"],
            &[2],
            "no keyslot",
        ),
        row_says(
            "vault rewrap --set-addr with no address",
            &["vault", "rewrap", "@disk.img", "--set-addr", ","],
            &[1],
            "--set-addr needs",
        ),
        row_says(
            "vault enroll at a non-http vault address",
            &[
                "vault",
                "enroll",
                "@disk.img",
                "--key-file",
                "@key",
                "--transit-key",
                "k",
                "--vault-addr",
                "ftp://127.0.0.1:1",
            ],
            &[1],
            "must start with http://",
        ),
        row_says(
            "wrong passphrase names tried slots",
            &["open", "@disk.img", "@plain", "--key-file", "@wrong"],
            &[2],
            "tried 0",
        ),
        row(
            "wrong passphrase read-only",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@wrong",
                "--read-only",
            ],
            &[2],
        ),
        row(
            "key file with extra newline",
            &["open", "@disk.img", "@plain", "--key-file", "@pass-nl"],
            &[2],
        ),
        row_stdin(
            "wrong stdin line",
            &["open", "@disk.img", "@plain"],
            b"nope\n",
            &[2],
        ),
        row_stdin(
            "key-file - keeps the newline",
            &["open", "@disk.img", "@plain", "--key-file", "-"],
            b"correct horse battery\n",
            &[2],
        ),
        row_stdin(
            "empty stdin",
            &["open", "@disk.img", "@plain"],
            b"",
            &[1, 2],
        ),
        // contract leaves the code of an inactive requested slot open: 2 (no keyslot opened)
        // or 1 (cryptsetup 2.6: "No usable keyslot is available", exit 1)
        row(
            "key slot 31 empty",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@key",
                "--key-slot",
                "31",
            ],
            &[1, 2],
        ),
        row(
            "key slot 1 empty",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@key",
                "--key-slot",
                "1",
            ],
            &[1, 2],
        ),
        row(
            "key slot 32 out of range",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@key",
                "--key-slot",
                "32",
            ],
            &[1],
        ),
        row(
            "key slot -1",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@key",
                "--key-slot=-1",
            ],
            &[1],
        ),
        row(
            "key slot not a number",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@key",
                "--key-slot",
                "zero",
            ],
            &[1],
        ),
        row(
            "open key file missing",
            &["open", "@disk.img", "@plain", "--key-file", "@missing.key"],
            &[1],
        ),
        row(
            "open unknown flag",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--key-file",
                "@key",
                "--key-size",
                "256",
            ],
            &[1],
        ),
        row(
            "open truncated volume (8 KiB)",
            &["open", "@trunc.img", "@plain", "--key-file", "@key"],
            &[4],
        ),
        row("dump truncated volume", &["dump", "@trunc.img"], &[4]),
        row_says(
            "dump: segment ids 0 -> 2 (a gap, invalid to cryptsetup)",
            &["dump", "@seg-gap.img"],
            &[4],
            "without a gap",
        ),
        row_says(
            "test-key: segment encryption \"\" (invalid to cryptsetup)",
            &["test-key", "@no-encryption.img", "--key-file", "@key"],
            &[4],
            "encryption",
        ),
        row_says(
            "open: primary wiped, LVM2 label there (ambiguous signatures)",
            &["open", "@lvm.img", "@plain", "--key-file", "@key"],
            &[4],
            "ambiguous signatures",
        ),
        row_says(
            "add-key: primary wiped, LVM2 label there",
            &[
                "add-key",
                "@lvm.img",
                "--key-file",
                "@key",
                "--new-key-file",
                "@wrong",
            ],
            &[4],
            "LABELONE at byte 512",
        ),
        row_says(
            "dump: primary wiped, LVM2 label there",
            &["dump", "@lvm.img"],
            &[4],
            "ambiguous signatures",
        ),
        row_says(
            "repair without --force: primary wiped, LVM2 label there",
            &["repair", "@lvm.img"],
            &[4],
            "--force",
        ),
        row(
            "open header without data area",
            &["open", "@hdr-only.img", "@plain", "--key-file", "@key"],
            &[4],
        ),
        row_says(
            "format existing volume without --force",
            &[
                "format",
                "@disk.img",
                "--size",
                "4M",
                "--key-file",
                "@key",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
            ],
            &[5],
            "disk.img",
        ),
        row(
            "format --force with a bad size writes nothing",
            &[
                "format",
                "@disk.img",
                "--size",
                "12Q",
                "--key-file",
                "@key",
                "--force",
            ],
            &[1],
        ),
        row(
            "format --force with a bad pbkdf writes nothing",
            &[
                "format",
                "@disk.img",
                "--size",
                "4M",
                "--pbkdf",
                "scrypt",
                "--key-file",
                "@key",
                "--force",
            ],
            &[1],
        ),
        row(
            "format --force with a missing key file writes nothing",
            &[
                "format",
                "@disk.img",
                "--size",
                "4M",
                "--key-file",
                "@missing.key",
                "--force",
            ],
            &[1],
        ),
        row("close the backing file", &["close", "@disk.img"], &[1, 4]),
        row("dump unknown flag", &["dump", "@disk.img", "--bogus"], &[1]),
    ];
    run_table(d, &rows);
}

/// Bad inputs while the volume is open: a second read-write open is busy (5), the first mount
/// keeps working, and the failed attempt changes nothing.
#[test]
fn second_open_is_busy() {
    if !require_fuse("second_open_is_busy") {
        return;
    }
    let v = Vol::new("4M", &[]);
    let m = v.open();
    let before = fingerprint(&v.backing);
    let other = v.dir.path().join("plain2");
    let out = vd(&["open", s(&v.backing), s(&other), "--key-file", s(&v.key)]);
    let _guard = Mount::new(&other);
    out.fails_with(5);
    assert!(!other.exists(), "failed open left {}", other.display());
    assert_eq!(fingerprint(&v.backing), before);
    // same PLAIN again: also refused
    vd(&["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)]).fails_with(5);
    assert_eq!(read_plain(&v.plain).len() as u64, 4 * MIB);
    m.close();
}

/// close refuses (5) while PLAIN is attached to a loop device, and works after detaching.
#[test]
fn close_busy_while_loop_attached() {
    if !require("close_busy_while_loop_attached", &["fuse", "loop"]) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let m = v.open();
    let lo = LoopDev::attach(&v.plain);
    vd(&["close", s(&v.plain)]).fails_with(5);
    assert!(is_mounted(&v.plain), "a refused close must leave the mount");
    lo.detach();
    m.close();
    assert!(
        !v.plain.exists(),
        "PLAIN created by open must be removed by close"
    );
}

fn field<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

fn check(v: &Value, path: &str, want: Value) {
    assert_eq!(field(v, path), &want, "dump --json field {path} in {v:#}");
}

/// Format with pbkdf2, label and uuid; dump --json carries the documented shape and values.
#[test]
fn format_dump_json_fields() {
    let v = Vol::new("4M", &["--label", "test-label", "--uuid", UUID]);
    assert_eq!(
        fs::metadata(&v.backing).unwrap().len(),
        DATA_OFFSET + 4 * MIB
    );
    let (j, out) = dump_json(&v.backing);
    assert_eq!(out.stderr, "", "a clean dump prints no warning");
    check(&j, "version", 2.into());
    check(&j, "uuid", UUID.into());
    check(&j, "label", "test-label".into());
    check(&j, "header.hdr_size", 16384.into());
    check(&j, "header.current", "primary".into());
    check(&j, "header.copies.0.name", "primary".into());
    check(&j, "header.copies.0.offset", 0.into());
    check(&j, "header.copies.0.valid", true.into());
    check(&j, "header.copies.0.error", Value::Null);
    check(&j, "header.copies.1.name", "secondary".into());
    check(&j, "header.copies.1.offset", 16384.into());
    check(&j, "header.copies.1.valid", true.into());
    let seq0 = field(&j, "header.copies.0.seqid").as_u64().expect("seqid");
    check(&j, "header.copies.1.seqid", seq0.into());
    check(&j, "config.json_size", 12288.into());
    check(&j, "config.keyslots_size", 16744448.into());
    check(&j, "segments.0.id", 0.into());
    check(&j, "segments.0.type", "crypt".into());
    check(&j, "segments.0.offset", 16777216.into());
    check(&j, "segments.0.iv_tweak", 0.into());
    check(&j, "segments.0.encryption", "aes-xts-plain64".into());
    check(&j, "segments.0.sector_size", 4096.into());
    let size = field(&j, "segments.0.size");
    assert!(size == "dynamic" || size == 4 * MIB, "segment size {size}");
    assert_eq!(j["keyslots"].as_array().map(Vec::len), Some(1));
    check(&j, "keyslots.0.id", 0.into());
    check(&j, "keyslots.0.type", "luks2".into());
    check(&j, "keyslots.0.key_size", 64.into());
    check(&j, "keyslots.0.kdf.type", "pbkdf2".into());
    check(&j, "keyslots.0.kdf.hash", "sha256".into());
    check(&j, "keyslots.0.kdf.iterations", 1000.into());
    check(&j, "keyslots.0.area.offset", 32768.into());
    check(&j, "keyslots.0.area.size", 258048.into());
    check(&j, "keyslots.0.area.encryption", "aes-xts-plain64".into());
    check(&j, "keyslots.0.area.key_size", 64.into());
    check(&j, "keyslots.0.af.type", "luks1".into());
    check(&j, "keyslots.0.af.stripes", 4000.into());
    check(&j, "keyslots.0.af.hash", "sha256".into());
    assert_eq!(j["tokens"], serde_json::json!([]));
    check(&j, "digests.0.type", "pbkdf2".into());
    check(&j, "digests.0.hash", "sha256".into());
    check(&j, "digests.0.keyslots", serde_json::json!([0]));
    check(&j, "digests.0.segments", serde_json::json!([0]));
    assert!(field(&j, "digests.0.iterations").as_u64() >= Some(1000));
    // the backing file is never written by dump
    let before = fingerprint(&v.backing);
    let text = vd(&["dump", s(&v.backing)]).ok();
    assert!(text.stdout.contains(UUID), "text dump: {}", text.stdout);
    assert!(text.stdout.contains("aes-xts-plain64"), "{}", text.stdout);
    assert!(text.stdout.contains("test-label"), "{}", text.stdout);
    assert_eq!(fingerprint(&v.backing), before);
}

/// Argon2id, 256-bit key, 512-byte sectors show up in the dump as given.
#[test]
fn format_argon2id_small_key_512_sectors() {
    let v = Vol::with_kdf(
        "4M",
        CHEAP_ARGON2ID,
        &["--key-size", "256", "--sector-size", "512"],
    );
    let (j, _) = dump_json(&v.backing);
    check(&j, "keyslots.0.kdf.type", "argon2id".into());
    check(&j, "keyslots.0.kdf.time", 4.into());
    check(&j, "keyslots.0.kdf.memory", 32.into());
    check(&j, "keyslots.0.kdf.cpus", 1.into());
    check(&j, "keyslots.0.key_size", 32.into());
    check(&j, "keyslots.0.area.key_size", 32.into());
    check(&j, "keyslots.0.area.size", 131072.into());
    check(&j, "segments.0.sector_size", 512.into());
    check(&j, "label", "".into());
}

/// argon2i is accepted as well.
#[test]
fn format_argon2i() {
    let v = Vol::with_kdf(
        "1M",
        &[
            "--pbkdf",
            "argon2i",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
            "--pbkdf-parallel",
            "1",
        ],
        &[],
    );
    let (j, _) = dump_json(&v.backing);
    check(&j, "keyslots.0.kdf.type", "argon2i".into());
}

/// SIZE in bytes and with binary suffixes sets the backing length to 16 MiB + SIZE.
#[test]
fn format_size_suffixes() {
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    for (i, (size, bytes)) in [
        ("4M", 4 * MIB),
        ("4096K", 4 * MIB),
        ("4194304", 4 * MIB),
        ("8K", 8 * KIB),
        ("1G", 1 << 30),
    ]
    .into_iter()
    .enumerate()
    {
        let b = t.path().join(format!("v{i}.img"));
        format_with(&b, &key, size, &[], &[]).ok();
        assert_eq!(
            fs::metadata(&b).unwrap().len(),
            DATA_OFFSET + bytes,
            "--size {size}"
        );
    }
    // 512-byte multiples are fine with --sector-size 512
    let b = t.path().join("odd.img");
    format_with(&b, &key, "1049088", &[], &["--sector-size", "512"]).ok();
    assert_eq!(fs::metadata(&b).unwrap().len(), DATA_OFFSET + 1049088);
}

/// A 1 TiB volume is sparse: a few MiB on disk.
#[test]
fn format_1t_is_sparse() {
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let b = t.path().join("big.img");
    format_with(&b, &key, "1T", &[], &[]).ok();
    let m = fs::metadata(&b).unwrap();
    assert_eq!(m.len(), DATA_OFFSET + (1 << 40));
    let on_disk = m.blocks() * 512;
    assert!(on_disk < 20 * MIB, "1T volume uses {on_disk} bytes on disk");
    let (j, _) = dump_json(&b);
    let size = field(&j, "segments.0.size");
    assert!(
        size == "dynamic" || size == 1u64 << 40,
        "segment size {size}"
    );
}

/// An existing empty file may be formatted without --force; --force overwrites a volume.
#[test]
fn format_empty_file_and_force() {
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let b = t.path().join("v.img");
    write_file(&b, b"");
    format_with(&b, &key, "1M", &[], &["--uuid", UUID]).ok();
    let (j, _) = dump_json(&b);
    check(&j, "uuid", UUID.into());
    let other = "11111111-2222-4333-8444-555555555555";
    format_with(&b, &key, "2M", &[], &["--uuid", other, "--force"]).ok();
    let (j, _) = dump_json(&b);
    check(&j, "uuid", other.into());
    assert_eq!(fs::metadata(&b).unwrap().len(), DATA_OFFSET + 2 * MIB);
}

/// Key-file bytes are exact; a stdin line loses its newline; `--key-file -` reads stdin exactly.
#[test]
fn key_file_exact_stdin_line_stripped() {
    if !require_fuse("key_file_exact_stdin_line_stripped") {
        return;
    }
    let t = temp();
    let key_nl = write_key(t.path(), "pw-nl", b"pw\n");
    let key = write_key(t.path(), "pw", b"pw");
    let b = t.path().join("v.img");
    let plain = t.path().join("plain");
    format_with(&b, &key_nl, "1M", &[], &[]).ok();
    let before = fingerprint(&b);
    // a stdin line "pw\n" means passphrase "pw", not "pw\n"
    open_fails(&["open", s(&b), s(&plain)], Some(b"pw\n"), &plain, 2);
    // a key file "pw" is not "pw\n"; the exact bytes "pw\n" open
    open_fails(
        &["open", s(&b), s(&plain), "--key-file", s(&key)],
        None,
        &plain,
        2,
    );
    open_volume(&b, &plain, &key_nl, &[]).close();
    let m = Mount::new(&plain);
    let out = vd_in(&["open", s(&b), s(&plain), "--key-file", "-"], b"pw\n").ok();
    assert!(is_mounted(&plain), "{}", out.describe());
    m.close();
    assert_eq!(fingerprint(&b).sha256, before.sha256);

    // formatted from a stdin line: the passphrase is "pw" without newline
    let b2 = t.path().join("v2.img");
    let mut args = vec!["format", s(&b2), "--size", "1M"];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd_in(&args, b"pw\n").ok();
    open_fails(
        &["open", s(&b2), s(&plain), "--key-file", s(&key_nl)],
        None,
        &plain,
        2,
    );
    open_volume(&b2, &plain, &key, &[]).close();
    let m = Mount::new(&plain);
    vd_in(&["open", s(&b2), s(&plain), "--key-file", "-"], b"pw").ok();
    m.close();
}

/// open creates PLAIN (0600, exactly SIZE, zeros), writes persist across close/reopen,
/// close removes a PLAIN that open created and keeps one that existed.
#[test]
fn open_close_round_trip() {
    if !require_fuse("open_close_round_trip") {
        return;
    }
    let v = Vol::new("4M", &[]);
    assert!(!v.plain.exists());
    let out = vd(&[
        "-v",
        "open",
        s(&v.backing),
        s(&v.plain),
        "--key-file",
        s(&v.key),
    ]);
    let m = Mount::new(&v.plain);
    let out = out.ok();
    assert!(
        out.stderr.contains("keyslot 0"),
        "-v should log the keyslot:\n{}",
        out.describe()
    );
    let meta = fs::metadata(&v.plain).unwrap();
    assert!(meta.is_file(), "PLAIN must be a regular file");
    assert_eq!(meta.len(), 4 * MIB);
    assert_eq!(mode_of(&v.plain), 0o600);
    let data = read_plain(&v.plain);
    assert!(
        data.iter().all(|&b| b == 0),
        "never-written sectors read as zeros"
    );
    let chunk = pattern(10_000, 7);
    write_plain(&v.plain, 12_345, &chunk);
    write_plain(&v.plain, 4 * MIB - 100, &chunk[..100]);
    m.close();
    assert!(
        !v.plain.exists(),
        "close must remove a PLAIN created by open"
    );
    assert_eq!(
        holders(&v.backing),
        Vec::<u32>::new(),
        "close returned while a process still holds the backing file"
    );

    // PLAIN exists beforehand: it stays after close
    write_file(&v.plain, b"");
    let m = v.open();
    let data = read_plain(&v.plain);
    assert_eq!(data.len() as u64, 4 * MIB);
    assert_eq!(&data[12_345..22_345], &chunk[..]);
    assert_eq!(&data[4 * MIB as usize - 100..], &chunk[..100]);
    assert!(data[..12_345].iter().all(|&b| b == 0));
    assert!(data[22_345..4 * MIB as usize - 100].iter().all(|&b| b == 0));
    m.close();
    assert!(
        v.plain.exists(),
        "a PLAIN that existed before open must stay"
    );
    assert_eq!(fs::metadata(&v.plain).unwrap().len(), 0);
}

/// --read-only: reads work, writes fail with EROFS, the backing file is untouched.
#[test]
fn read_only_refuses_writes() {
    if !require_fuse("read_only_refuses_writes") {
        return;
    }
    let v = Vol::new("1M", &[]);
    let m = v.open();
    write_plain(&v.plain, 0, b"hello");
    m.close();
    let before = fingerprint(&v.backing);
    let m = v.open_ro();
    assert_eq!(&read_plain(&v.plain)[..5], b"hello");
    let err = write_at(&v.plain, 0, b"HELLO").expect_err("write to a read-only open");
    assert_eq!(err.raw_os_error(), Some(30), "want EROFS, got {err}");
    m.close();
    assert_eq!(fingerprint(&v.backing), before);
}

/// --key-slot 0 opens the only slot.
#[test]
fn key_slot_zero_opens() {
    if !require_fuse("key_slot_zero_opens") {
        return;
    }
    let v = Vol::new("1M", &[]);
    open_volume(&v.backing, &v.plain, &v.key, &["--key-slot", "0"]).close();
}

/// `-q` keeps a successful run quiet; errors still print their one line.
#[test]
fn quiet_flag() {
    let t = temp();
    let key = write_key(t.path(), "pass", PASS);
    let b = t.path().join("v.img");
    let mut args = vec!["-q", "format", s(&b), "--size", "1M", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    let out = vd(&args).ok();
    assert_eq!(out.stderr, "", "-q format: {}", out.describe());
    vd(&["-q", "dump", s(&t.path().join("nope.img"))])
        .check_error(&[1, 4])
        .unwrap();
}

/// --help works and names the four verbs.
#[test]
fn help_lists_verbs() {
    let out = vd(&["--help"]).ok();
    for verb in ["format", "open", "close", "dump"] {
        assert!(
            out.stdout.contains(verb),
            "--help lacks {verb}:\n{}",
            out.stdout
        );
    }
}

/// Bad inputs for `--partition` / `--device-offset` on the verbs that write headers (issue
/// 13): a GPT image from sgdisk whose partition 1 holds a LUKS2 volume cryptsetup made and
/// partition 2 an ext4 from mkfs.ext4 (both copied in), and a file without a table.
#[test]
fn bad_window_table() {
    if !require(
        "cli::bad_window_table",
        &["sgdisk", "cryptsetup", "mkfs.ext4"],
    ) {
        return;
    }
    let t = temp();
    let d = t.path();
    write_key(d, "key", PASS);
    write_key(d, "new", b"a new key");
    let img = d.join("gpt.img");
    set_len(&img, 48 * MIB);
    sys("sgdisk", &["-n", "1:2048:+20M", "-n", "2:0:+8M", s(&img)]).ok();
    let luks = d.join("p1");
    set_len(&luks, 20 * MIB);
    let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file"];
    let key = d.join("key");
    args.push(s(&key));
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&luks));
    sys("cryptsetup", &args).ok();
    write_at(&img, 2048 * 512, &fs::read(&luks).unwrap()).unwrap();
    let ext4 = d.join("p2");
    set_len(&ext4, 8 * MIB);
    sys("mkfs.ext4", &["-q", "-F", s(&ext4)]).ok();
    write_at(&img, 2048 * 512 + 20 * MIB, &fs::read(&ext4).unwrap()).unwrap();
    fs::remove_file(&luks).unwrap();
    fs::remove_file(&ext4).unwrap();
    write_file(&d.join("zero.img"), &vec![0u8; 32 * MIB as usize]);
    let rows = [
        row_says(
            "add-key --partition out of range",
            &[
                "add-key",
                "@gpt.img",
                "--partition",
                "9",
                "--key-file",
                "@key",
                "--new-key-file",
                "@new",
            ],
            &[1],
            "partition 9 does not exist",
        ),
        row_says(
            "format --partition on a file with no table",
            &[
                "format",
                "@zero.img",
                "--partition",
                "1",
                "--key-file",
                "@key",
            ],
            &[4],
            "no partition table",
        ),
        row_says(
            "format --device-offset window past the end",
            &[
                "format",
                "@zero.img",
                "--device-offset",
                "16777216",
                "--device-size",
                "33554432",
                "--key-file",
                "@key",
            ],
            &[4],
            "does not fit the disk",
        ),
        row_says(
            "format into a partition holding ext4 without --force",
            &[
                "format",
                "@gpt.img",
                "--partition",
                "2",
                "--key-file",
                "@key",
            ],
            &[5],
            "ext2/3/4 filesystem",
        ),
        row_says(
            "format into a partition holding LUKS without --force",
            &[
                "format",
                "@gpt.img",
                "--partition",
                "1",
                "--key-file",
                "@key",
            ],
            &[5],
            "LUKS",
        ),
        row(
            "remove-key --partition of a partition holding ext4",
            &[
                "remove-key",
                "@gpt.img",
                "--partition",
                "2",
                "--key-slot",
                "0",
            ],
            &[4],
        ),
        row_says(
            "resize --partition past the partition's end",
            &["resize", "@gpt.img", "--partition", "1", "--size", "20M"],
            &[1],
            "grow the partition first",
        ),
        row(
            "erase --partition out of range",
            &["erase", "@gpt.img", "--partition", "3", "--batch"],
            &[1],
        ),
        row(
            "header backup --partition on a file with no table",
            &[
                "header",
                "backup",
                "@zero.img",
                "@backup",
                "--partition",
                "1",
            ],
            &[4],
        ),
    ];
    run_table(d, &rows);
}
