//! The CLI contract: a table of bad inputs (exit code, one stderr line, files untouched) and
//! the happy paths of format / open / close / dump.
use crate::support::*;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

/// One bad input: arguments (with `{vol}`, `{dir}`, `{pass}` placeholders), stdin, exit code.
struct Row {
    name: &'static str,
    args: &'static str,
    stdin: Option<&'static [u8]>,
    code: i32,
}

const fn row(name: &'static str, args: &'static str, code: i32) -> Row {
    Row {
        name,
        args,
        stdin: None,
        code,
    }
}

const TABLE: &[Row] = &[
    row("no command", "", 1),
    row("unknown command", "frobnicate {vol}", 1),
    row("unknown flag", "dump {vol} --bogus", 1),
    row(
        "format without --size",
        "format {dir}/new.img --key-file {pass}",
        1,
    ),
    row(
        "size zero",
        "format {dir}/new.img --size 0 --key-file {pass}",
        1,
    ),
    row(
        "size with bad suffix",
        "format {dir}/new.img --size 12Q --key-file {pass}",
        1,
    ),
    row(
        "size negative",
        "format {dir}/new.img --size=-1 --key-file {pass}",
        1,
    ),
    row(
        "size fraction",
        "format {dir}/new.img --size 1.5G --key-file {pass}",
        1,
    ),
    row(
        "size not a sector multiple",
        "format {dir}/new.img --size 1000 --key-file {pass}",
        1,
    ),
    row(
        "size overflows",
        "format {dir}/new.img --size 99999999999P --key-file {pass}",
        1,
    ),
    row(
        "sector size 1000",
        "format {dir}/new.img --size 4M --sector-size 1000 --key-file {pass}",
        1,
    ),
    row(
        "sector size 8192",
        "format {dir}/new.img --size 4M --sector-size 8192 --key-file {pass}",
        1,
    ),
    row(
        "key size 128",
        "format {dir}/new.img --size 4M --key-size 128 --key-file {pass}",
        1,
    ),
    row(
        "pbkdf scrypt",
        "format {dir}/new.img --size 4M --pbkdf scrypt --key-file {pass}",
        1,
    ),
    row(
        "pbkdf2 iterations below 1000",
        "format {dir}/new.img --size 4M --pbkdf pbkdf2 --pbkdf-force-iterations 10 --key-file {pass}",
        1,
    ),
    row(
        "argon2 time below 4",
        "format {dir}/new.img --size 4M --pbkdf argon2id --pbkdf-force-iterations 1 --key-file {pass}",
        1,
    ),
    row(
        "argon2 memory too small",
        "format {dir}/new.img --size 4M --pbkdf-memory 1 --key-file {pass}",
        1,
    ),
    row(
        "argon2 memory too large",
        "format {dir}/new.img --size 4M --pbkdf-memory 9999999 --key-file {pass}",
        1,
    ),
    row(
        "argon2 parallel 9",
        "format {dir}/new.img --size 4M --pbkdf-parallel 9 --key-file {pass}",
        1,
    ),
    row(
        "iter-time 0",
        "format {dir}/new.img --size 4M --iter-time 0 --key-file {pass}",
        1,
    ),
    row(
        "iter-time not a number",
        "format {dir}/new.img --size 4M --iter-time soon --key-file {pass}",
        1,
    ),
    row(
        "bad uuid",
        "format {dir}/new.img --size 4M --uuid not-a-uuid --key-file {pass}",
        1,
    ),
    row(
        "label too long",
        "format {dir}/new.img --size 4M --label aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa --key-file {pass}",
        1,
    ),
    row(
        "format key file missing",
        "format {dir}/new.img --size 4M --key-file {dir}/nokey",
        1,
    ),
    row(
        "format key file is a directory",
        "format {dir}/new.img --size 4M --key-file {dir}",
        1,
    ),
    Row {
        name: "format empty passphrase on stdin",
        args: "format {dir}/new.img --size 4M --pbkdf pbkdf2 --pbkdf-force-iterations 1000",
        stdin: Some(b"\n"),
        code: 1,
    },
    row(
        "format onto a directory",
        "format {dir} --size 4M --key-file {pass}",
        1,
    ),
    row(
        "format onto an existing volume",
        "format {vol} --size 4M --key-file {pass}",
        5,
    ),
    row(
        "format in a missing directory",
        "format {dir}/no/such/new.img --size 4M --key-file {pass} --pbkdf pbkdf2 --pbkdf-force-iterations 1000",
        4,
    ),
    row(
        "open wrong passphrase",
        "open {vol} {dir}/plain.img --key-file {dir}/wrong",
        2,
    ),
    Row {
        name: "open wrong passphrase on stdin",
        args: "open {vol} {dir}/plain.img",
        stdin: Some(b"nope\n"),
        code: 2,
    },
    Row {
        name: "open empty key on stdin",
        args: "open {vol} {dir}/plain.img --key-file -",
        stdin: Some(b""),
        code: 2,
    },
    Row {
        name: "open passphrase plus newline via --key-file -",
        args: "open {vol} {dir}/plain.img --key-file -",
        stdin: Some(b"testpass\n"),
        code: 2,
    },
    row(
        "open missing backing",
        "open {dir}/missing.img {dir}/plain.img --key-file {pass}",
        4,
    ),
    row(
        "open random bytes",
        "open {dir}/random.img {dir}/plain.img --key-file {pass}",
        4,
    ),
    row(
        "open empty file",
        "open {dir}/empty.img {dir}/plain.img --key-file {pass}",
        4,
    ),
    row(
        "open truncated header",
        "open {dir}/trunc.img {dir}/plain.img --key-file {pass}",
        4,
    ),
    row(
        "open truncated data",
        "open {dir}/short.img {dir}/plain.img --key-file {pass}",
        4,
    ),
    row(
        "open a directory",
        "open {dir} {dir}/plain.img --key-file {pass}",
        4,
    ),
    row(
        "open key file missing",
        "open {vol} {dir}/plain.img --key-file {dir}/nokey",
        1,
    ),
    row(
        "open empty keyslot",
        "open {vol} {dir}/plain.img --key-slot 31 --key-file {pass}",
        1,
    ),
    row(
        "open keyslot beyond 31",
        "open {vol} {dir}/plain.img --key-slot 99 --key-file {pass}",
        1,
    ),
    row(
        "open keyslot not a number",
        "open {vol} {dir}/plain.img --key-slot one --key-file {pass}",
        1,
    ),
    row(
        "open plain in a missing directory",
        "open {vol} {dir}/no/such/plain.img --key-file {pass}",
        1,
    ),
    row(
        "open plain is a directory",
        "open {vol} {dir} --key-file {pass}",
        1,
    ),
    row("open without plain", "open {vol}", 1),
    row("close not open", "close {dir}/plain.img", 1),
    row("close without path", "close", 1),
    row("dump missing", "dump {dir}/missing.img", 4),
    row("dump random bytes", "dump {dir}/random.img", 4),
    row("dump empty file", "dump {dir}/empty.img", 4),
    row("dump truncated header", "dump {dir}/trunc.img", 4),
];

#[test]
fn bad_inputs_table() {
    let v = Vol::new();
    v.format("4M", &[]);
    let dir = v.dir.path();
    fs::write(dir.join("wrong"), b"wrong").unwrap();
    fs::write(dir.join("random.img"), pattern(MIB as usize, 7)).unwrap();
    fs::write(dir.join("empty.img"), b"").unwrap();
    let full = fs::read(&v.backing).unwrap();
    fs::write(dir.join("trunc.img"), &full[..8192]).unwrap();
    // Header intact, data area cut short of one sector.
    fs::write(dir.join("short.img"), &full[..(16 * MIB + 1000) as usize]).unwrap();

    let watched = [
        "disk.img",
        "random.img",
        "empty.img",
        "trunc.img",
        "short.img",
        "pass",
    ];
    let mut failures = Vec::new();
    for r in TABLE {
        let before: Vec<_> = watched.iter().map(|f| fingerprint(&dir.join(f))).collect();
        let args_text = r
            .args
            .replace("{vol}", Vol::s(&v.backing))
            .replace("{dir}", Vol::s(dir))
            .replace("{pass}", Vol::s(&v.pass));
        let args: Vec<&str> = args_text.split_whitespace().collect();
        let run = vaultdisk(&args, r.stdin);
        let lines: Vec<&str> = run.stderr.lines().collect();
        let after: Vec<_> = watched.iter().map(|f| fingerprint(&dir.join(f))).collect();
        let mut why = Vec::new();
        if run.code != r.code {
            why.push(format!("exit {} (wanted {})", run.code, r.code));
        }
        if lines.len() != 1 || !lines[0].starts_with("vaultdisk: ") {
            why.push(format!(
                "stderr is not one 'vaultdisk:' line: {:?}",
                run.stderr
            ));
        }
        if lines.iter().any(|l| l.contains("testpass")) {
            why.push("stderr shows the passphrase".into());
        }
        if before != after {
            why.push("a file changed".into());
        }
        if dir.join("new.img").exists() || dir.join("plain.img").exists() {
            why.push("left a file behind".into());
            let _ = fs::remove_file(dir.join("new.img"));
            let _ = vaultdisk(&["close", Vol::s(&dir.join("plain.img"))], None);
        }
        if !why.is_empty() {
            failures.push(format!("{}: {}", r.name, why.join("; ")));
        }
        println!(
            "{:<45} exit {} {}",
            r.name,
            run.code,
            lines.first().unwrap_or(&"")
        );
    }
    assert!(
        failures.is_empty(),
        "bad-input table:\n{}",
        failures.join("\n")
    );
    assert!(TABLE.len() >= 40);
}

#[test]
fn format_writes_the_requested_header_and_dump_reports_it() {
    let v = Vol::new();
    let uuid = "12345678-9abc-4def-8123-456789abcdef";
    v.format(
        "8M",
        &[
            "--uuid",
            uuid,
            "--label",
            "backup-disk",
            "--sector-size",
            "512",
            "--key-size",
            "256",
        ],
    );
    let len = fs::metadata(&v.backing).unwrap().len();
    assert_eq!(len, 16 * MIB + 8 * MIB);
    let r = vaultdisk(&["dump", Vol::s(&v.backing), "--json"], None).ok("dump --json");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(j["version"], 2);
    assert_eq!(j["uuid"], uuid);
    assert_eq!(j["label"], "backup-disk");
    assert_eq!(j["header"]["hdr_size"], 16384);
    assert_eq!(j["header"]["current"], "primary");
    for c in j["header"]["copies"].as_array().unwrap() {
        assert_eq!(c["valid"], true, "{c}");
    }
    assert_eq!(j["config"]["json_size"], 12288);
    assert_eq!(j["config"]["keyslots_size"], 16744448);
    let seg = &j["segments"][0];
    assert_eq!(seg["offset"], 16777216);
    assert_eq!(seg["size"], "dynamic");
    assert_eq!(seg["sector_size"], 512);
    assert_eq!(seg["encryption"], "aes-xts-plain64");
    let ks = &j["keyslots"][0];
    assert_eq!(ks["id"], 0);
    assert_eq!(ks["key_size"], 32);
    assert_eq!(ks["kdf"]["type"], "pbkdf2");
    assert_eq!(ks["kdf"]["iterations"], 1000);
    assert_eq!(ks["area"]["offset"], 32768);
    assert_eq!(ks["area"]["size"], 131072);
    assert_eq!(j["digests"][0]["keyslots"][0], 0);
    // No key material anywhere in the dump: not the passphrase, no "key" values beyond sizes.
    assert!(!r.stdout.contains("testpass"));
    let text = vaultdisk(&["dump", Vol::s(&v.backing)], None).ok("dump");
    assert!(text.stdout.contains(uuid) && text.stdout.contains("pbkdf2"));
}

#[test]
fn default_format_is_argon2id_4096_and_512_bit() {
    let v = Vol::new();
    v.format("4M", &CHEAP_ARGON2ID);
    let r = vaultdisk(&["dump", Vol::s(&v.backing), "--json"], None).ok("dump");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["segments"][0]["sector_size"], 4096);
    assert_eq!(j["keyslots"][0]["key_size"], 64);
    assert_eq!(j["keyslots"][0]["kdf"]["type"], "argon2id");
    assert_eq!(j["keyslots"][0]["kdf"]["memory"], 32);
    assert_eq!(j["keyslots"][0]["kdf"]["cpus"], 1);
    assert_eq!(j["keyslots"][0]["kdf"]["time"], 4);
}

#[test]
fn one_terabyte_format_is_sparse() {
    let v = Vol::new();
    v.format("1T", &[]);
    let m = fs::metadata(&v.backing).unwrap();
    assert_eq!(m.len(), (1 << 40) + 16 * MIB);
    let on_disk = m.blocks() * 512;
    assert!(on_disk < 20 * MIB, "1T volume uses {on_disk} bytes on disk");
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
}

#[test]
fn force_overwrites_and_a_failed_format_leaves_nothing() {
    let v = Vol::new();
    v.format("4M", &[]);
    let first = sha256_file(&v.backing);
    v.format("4M", &["--force"]);
    assert_ne!(
        first,
        sha256_file(&v.backing),
        "--force did not write a new volume"
    );
    let leftovers: Vec<_> = fs::read_dir(v.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn key_input_follows_cryptsetup_rules() {
    let test = "key_input_follows_cryptsetup_rules";
    if !require_fuse(test) {
        return;
    }
    let v = Vol::new();
    // The key file holds "pw\n": the newline is part of the passphrase.
    fs::write(&v.pass, b"pw\n").unwrap();
    v.format("4M", &[]);
    let b = Vol::s(&v.backing);
    let p = Vol::s(&v.plain);
    // A line on stdin loses its newline: "pw" does not open it.
    vaultdisk(&["open", b, p], Some(b"pw\n")).expect(2, "stdin line");
    // --key-file - takes stdin exactly.
    vaultdisk(&["open", b, p, "--key-file", "-"], Some(b"pw\n")).ok("--key-file -");
    vaultdisk(&["close", p], None).ok("close");
    // And a volume formatted from a stdin line opens with the same line.
    let w = Vol::new();
    let wb = Vol::s(&w.backing);
    let mut args = vec!["format", wb, "--size", "4M"];
    args.extend(CHEAP_PBKDF2);
    vaultdisk(&args, Some(b"line-pass\n")).ok("format from stdin");
    vaultdisk(&["open", wb, Vol::s(&w.plain)], Some(b"line-pass\n")).ok("open from stdin");
    vaultdisk(&["close", Vol::s(&w.plain)], None).ok("close");
}

#[test]
fn open_close_lifecycle() {
    let test = "open_close_lifecycle";
    if !require_fuse(test) {
        return;
    }
    let v = Vol::new();
    v.format("8M", &[]);
    let g = v.open(&[]);
    let m = fs::metadata(&v.plain).unwrap();
    assert!(m.is_file());
    assert_eq!(m.len(), 8 * MIB);
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    assert_eq!(m.uid(), vaultdisk::sys::geteuid());
    // A fresh volume reads as zeros everywhere.
    let all = fs::read(&v.plain).unwrap();
    assert!(all.iter().all(|&b| b == 0), "fresh volume is not zero");
    // A second read-write open of the same backing file is refused (exit 5).
    let other = v.path("other.img");
    let r = vaultdisk(
        &[
            "open",
            Vol::s(&v.backing),
            Vol::s(&other),
            "--key-file",
            Vol::s(&v.pass),
        ],
        None,
    )
    .expect(5, "second open");
    assert!(r.stderr.contains("already open"), "{}", r.stderr);
    assert!(!other.exists());
    // Unaligned write, read back after close and reopen.
    let data = pattern(10_000, 3);
    let f = fs::OpenOptions::new().write(true).open(&v.plain).unwrap();
    f.write_all_at(&data, 4095).unwrap();
    f.sync_all().unwrap();
    drop(f);
    g.close();
    assert!(
        !v.plain.exists(),
        "open created PLAIN, close must remove it"
    );
    // A PLAIN that existed before open is kept at close.
    fs::write(&v.plain, b"").unwrap();
    let g = v.open(&["--read-only"]);
    let mut back = vec![0u8; data.len()];
    fs::File::open(&v.plain)
        .unwrap()
        .read_exact_at(&mut back, 4095)
        .unwrap();
    assert_eq!(back, data);
    let e = fs::OpenOptions::new()
        .write(true)
        .open(&v.plain)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    g.close();
    assert!(v.plain.exists(), "PLAIN existed before open and must stay");
}

#[test]
fn close_refuses_while_a_loop_device_holds_plain() {
    let test = "close_refuses_while_a_loop_device_holds_plain";
    if !require_fuse(test) || !require_root(test) || !require_tools(test, &["losetup"]) {
        return;
    }
    let v = Vol::new();
    v.format("8M", &[]);
    let g = v.open(&[]);
    let r = tool("losetup", &["-f", "--show", Vol::s(&v.plain)]).ok("losetup");
    let lo = LoopGuard(r.stdout.trim().to_owned());
    let busy = vaultdisk(&["close", Vol::s(&v.plain)], None).expect(5, "close while busy");
    assert_eq!(busy.stderr.lines().count(), 1, "{}", busy.stderr);
    assert!(v.plain.exists());
    drop(lo);
    g.close();
}

#[test]
fn ext4_on_a_loop_device_survives_close_and_reopen() {
    let test = "ext4_on_a_loop_device_survives_close_and_reopen";
    if !require_fuse(test)
        || !require_root(test)
        || !require_tools(test, &["mkfs.ext4", "mount", "umount", "e2fsck"])
    {
        return;
    }
    let v = Vol::new();
    v.format("64M", &CHEAP_ARGON2ID);
    let mnt = v.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let g = v.open(&[]);
    tool("mkfs.ext4", &["-q", "-F", Vol::s(&v.plain)]).ok("mkfs.ext4");
    tool("mount", &["-o", "loop", Vol::s(&v.plain), Vol::s(&mnt)]).ok("mount");
    let m = MountGuard(mnt.clone());
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("f{i}.bin"),
                pattern(1_000_000 + i * 77_777, i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        fs::write(mnt.join(name), data).unwrap();
    }
    // Mounted: close must refuse and leave everything working.
    vaultdisk(&["close", Vol::s(&v.plain)], None).expect(5, "close while mounted");
    drop(m);
    g.close();
    let g = v.open(&[]);
    tool("e2fsck", &["-fn", Vol::s(&v.plain)]).ok("e2fsck -fn");
    tool("mount", &["-o", "loop", Vol::s(&v.plain), Vol::s(&mnt)]).ok("remount");
    let m = MountGuard(mnt.clone());
    for (name, data) in &files {
        assert_eq!(
            &fs::read(mnt.join(name)).unwrap(),
            data,
            "{name} differs after reopen"
        );
    }
    drop(m);
    g.close();
}
