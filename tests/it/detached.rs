//! Detached headers (issue 13, `--header FILE`): headers made by `cryptsetup luksFormat
//! --header` (LUKS2 and LUKS1) over data the Python XTS oracle encrypted, read by dump,
//! test-key, digest, `open --read-only --header` and `mount --header`; add-key on such a header checked by
//! cryptsetup; `format --header` checked by cryptsetup (luksDump, --test-passphrase,
//! luksAddKey) and its data, written through `vaultdisk open --header`, decrypted by the oracle
//! from byte 0 of BACKING; bad inputs (a segment that does not fit the data, a served volume,
//! a non-empty header target) one line, the right exit code, nothing written.
use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;
const PASS: &[u8] = b"detached pass";
const CHEAP: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// `cryptsetup luksFormat --type TYPE --header HEADER DATA` with a cheap KDF.
fn cryptsetup_format(kind: &str, header: &Path, data: &Path, key: &Path) {
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            kind,
            "--header",
            s(header),
            "--key-file",
            s(key),
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            s(data),
        ],
    )
    .ok();
}

/// `cryptsetup open --test-passphrase --header HEADER DATA --key-file KEY` succeeds.
fn cryptsetup_accepts_detached(header: &Path, data: &Path, key: &Path) -> bool {
    sys(
        "cryptsetup",
        &[
            "open",
            "--test-passphrase",
            "--header",
            s(header),
            "--key-file",
            s(key),
            s(data),
        ],
    )
    .code
        == 0
}

/// The SHA-256 `vaultdisk digest --header` prints.
fn digest(header: &Path, data: &Path, key: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "digest",
        s(data),
        "--header",
        s(header),
        "--key-file",
        s(key),
    ];
    args.extend_from_slice(extra);
    let out = vd(&args).ok();
    out.stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A zero-filled data file of `len` bytes.
fn zeros(dir: &Path, name: &str, len: u64) -> PathBuf {
    let p = dir.join(name);
    set_len(&p, len);
    p
}

#[test]
fn cryptsetup_detached_headers_read() {
    if !require(
        "detached::cryptsetup_detached_headers_read",
        &["cryptsetup", "fuse", "python3-cryptography"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    for (kind, sector) in [("luks2", 4096u32), ("luks1", 512)] {
        let header = t.path().join(format!("{kind}.hdr"));
        let data = zeros(t.path(), &format!("{kind}.data"), 8 * MIB);
        cryptsetup_format(kind, &header, &data, &key);
        let vk = cryptsetup_volume_key(&header, &key);
        let plain = pattern(512 * 1024, 3);
        let src = data_file(t.path(), &format!("{kind}.src"), &plain);
        oracle_encrypt_into(&vk, &src, &data, 0, sector);
        let before = fingerprint(&data);

        let dump = vd(&["dump", s(&data), "--header", s(&header), "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&dump.stdout).expect("dump JSON");
        assert_eq!(v["version"], if kind == "luks2" { 2 } else { 1 }, "{v}");
        let line = vd(&[
            "test-key",
            s(&data),
            "--header",
            s(&header),
            "--key-file",
            s(&key),
        ])
        .ok();
        assert!(
            line.stdout.contains("keyslot 0 opens"),
            "{}",
            line.describe()
        );
        // Without --header the data is not a LUKS volume.
        vd(&["test-key", s(&data), "--key-file", s(&key)]).fails_with(4);

        // Never-written (all-zero) sectors are served as zeros; dm-crypt's view decrypts them.
        let mut served = plain.clone();
        served.resize(8 * MIB as usize, 0);
        assert_eq!(digest(&header, &data, &key, &[]), sha256(&served), "{kind}");
        let whole = oracle_decrypt(&vk, &data, 0, 8 * MIB, sector, 0);
        assert_eq!(&whole[..plain.len()], &plain[..], "{kind}");
        let view = digest(&header, &data, &key, &["--dm-crypt-view"]);
        assert_eq!(view, sha256(&whole), "{kind}");

        let p = t.path().join(format!("{kind}.plain"));
        let m = open_volume(&data, &p, &key, &["--read-only", "--header", s(&header)]);
        assert_eq!(fs::metadata(&p).expect("plain").len(), 8 * MIB);
        assert_eq!(read_range(&p, 0, plain.len() as u64), plain, "{kind}");
        m.close();
        assert_eq!(fingerprint(&data), before, "{kind}: data written");
    }
}

#[test]
fn add_key_on_a_cryptsetup_header() {
    if !require("detached::add_key_on_a_cryptsetup_header", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let new = write_key(t.path(), "k2", b"second key");
    let header = t.path().join("h");
    let data = zeros(t.path(), "data", 8 * MIB);
    cryptsetup_format("luks2", &header, &data, &key);
    let before = fingerprint(&data);
    let mut args = vec![
        "add-key",
        s(&data),
        "--header",
        s(&header),
        "--key-file",
        s(&key),
        "--new-key-file",
        s(&new),
    ];
    args.extend(CHEAP);
    let out = vd(&args).ok();
    assert!(out.stdout.contains("added keyslot 1"), "{}", out.describe());
    assert!(cryptsetup_accepts_detached(&header, &data, &new));
    assert!(cryptsetup_accepts_detached(&header, &data, &key));
    assert_eq!(fingerprint(&data), before, "data written by add-key");
    // remove-key through --header too; cryptsetup then refuses the removed key.
    vd(&[
        "remove-key",
        s(&data),
        "--header",
        s(&header),
        "--key-slot",
        "1",
    ])
    .ok();
    assert!(!cryptsetup_accepts_detached(&header, &data, &new));
}

#[test]
fn format_header_interoperates_with_cryptsetup() {
    if !require(
        "detached::format_header_interoperates_with_cryptsetup",
        &["cryptsetup", "fuse", "python3-cryptography"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let new = write_key(t.path(), "k2", b"added by cryptsetup");
    let data = zeros(t.path(), "data", 8 * MIB);
    let before = fingerprint(&data);
    // A pre-sized header file smaller than the header grows to 16 MiB; a larger one keeps its
    // size (as cryptsetup luksFormat --header does).
    for (size, want) in [(4 * MIB, 16 * MIB), (32 * MIB, 32 * MIB)] {
        let h = zeros(t.path(), &format!("h{size}"), size);
        let mut args = vec!["format", s(&data), "--header", s(&h), "--key-file", s(&key)];
        args.extend(CHEAP);
        vd(&args).ok();
        assert_eq!(fs::metadata(&h).expect("header").len(), want);
    }
    assert_eq!(fingerprint(&data), before, "format --header wrote the data");
    let header = t.path().join(format!("h{}", 4 * MIB));
    let dump = sys("cryptsetup", &["luksDump", s(&header)]).ok();
    assert!(dump.stdout.contains("offset: 0 [bytes]"), "{}", dump.stdout);
    assert!(dump.stdout.contains("(whole device)"), "{}", dump.stdout);
    assert!(cryptsetup_accepts_detached(&header, &data, &key));
    sys(
        "cryptsetup",
        &[
            "luksAddKey",
            "-q",
            "--header",
            s(&header),
            "--key-file",
            s(&key),
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            s(&data),
            s(&new),
        ],
    )
    .ok();
    vd(&[
        "test-key",
        s(&data),
        "--header",
        s(&header),
        "--key-file",
        s(&new),
    ])
    .ok();

    let p = t.path().join("plain");
    let m = open_volume(&data, &p, &key, &["--header", s(&header)]);
    assert_eq!(fs::metadata(&p).expect("plain").len(), 8 * MIB);
    let a = pattern(64 * 1024, 11);
    write_plain(&p, 0, &a);
    write_plain(&p, 3 * MIB, b"through vaultdisk open --header");
    m.close();
    let vk = cryptsetup_volume_key(&header, &key);
    let back = oracle_decrypt(&vk, &data, 0, 8 * MIB, 4096, 0);
    assert_eq!(&back[..a.len()], &a[..]);
    assert_eq!(
        &back[3 * MIB as usize..3 * MIB as usize + 31],
        b"through vaultdisk open --header"
    );

    // --size: a fixed data segment of that size from byte 0.
    let fixed = t.path().join("fixed.hdr");
    let mut args = vec![
        "format",
        s(&data),
        "--header",
        s(&fixed),
        "--key-file",
        s(&key),
        "--size",
        "4M",
    ];
    args.extend(CHEAP);
    vd(&args).ok();
    let dump = sys("cryptsetup", &["luksDump", s(&fixed)]).ok();
    assert!(
        dump.stdout.contains("length: 4194304 [bytes]"),
        "{}",
        dump.stdout
    );
    assert!(cryptsetup_accepts_detached(&fixed, &data, &key));
}

#[test]
fn segment_that_does_not_fit_is_exit_4_and_nothing_written() {
    if !require(
        "detached::segment_that_does_not_fit_is_exit_4_and_nothing_written",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let new = write_key(t.path(), "k2", b"never added");
    // A header with a fixed 8 MiB segment, used with 4 MiB of data; an attached volume's header
    // (data from 16 MiB) used as --header with 8 MiB of data.
    let big = zeros(t.path(), "big.data", 8 * MIB);
    let fixed = t.path().join("fixed.hdr");
    let mut args = vec![
        "format",
        s(&big),
        "--header",
        s(&fixed),
        "--key-file",
        s(&key),
        "--size",
        "8M",
    ];
    args.extend(CHEAP);
    vd(&args).ok();
    let small = zeros(t.path(), "small.data", 4 * MIB);
    let attached = t.path().join("attached.img");
    format_with(&attached, &key, "4M", &CHEAP, &[]).ok();
    let before = dir_snapshot(t.path());
    for (header, data) in [(&fixed, &small), (&attached, &big)] {
        let p = t.path().join("plain");
        let cases: Vec<Vec<&str>> = vec![
            vec![
                "test-key",
                s(data),
                "--header",
                s(header),
                "--key-file",
                s(&key),
            ],
            vec![
                "digest",
                s(data),
                "--header",
                s(header),
                "--key-file",
                s(&key),
            ],
            vec![
                "open",
                s(data),
                s(&p),
                "--header",
                s(header),
                "--key-file",
                s(&key),
            ],
            vec![
                "add-key",
                s(data),
                "--header",
                s(header),
                "--key-file",
                s(&key),
                "--new-key-file",
                s(&new),
            ],
        ];
        for args in cases {
            let out = vd(&args).fails_with(4);
            assert!(
                out.stderr.contains("too small for its detached header"),
                "{}",
                out.describe()
            );
        }
    }
    // format --header whose --size does not fit BACKING; a non-empty header target.
    let h = t.path().join("new.hdr");
    let mut args = vec![
        "format",
        s(&small),
        "--header",
        s(&h),
        "--key-file",
        s(&key),
        "--size",
        "8M",
    ];
    args.extend(CHEAP);
    vd(&args).fails_with(4);
    let mut args = vec![
        "format",
        s(&small),
        "--header",
        s(&fixed),
        "--key-file",
        s(&key),
    ];
    args.extend(CHEAP);
    vd(&args).fails_with(5);
    assert_eq!(
        snapshot_diff(&before, &dir_snapshot(t.path())),
        Vec::<String>::new()
    );
}

#[test]
fn served_volume_refuses_header_updates() {
    if !require("detached::served_volume_refuses_header_updates", &["fuse"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let new = write_key(t.path(), "k2", b"not while served");
    let data = zeros(t.path(), "data", 8 * MIB);
    let header = t.path().join("h");
    let mut args = vec![
        "format",
        s(&data),
        "--header",
        s(&header),
        "--key-file",
        s(&key),
    ];
    args.extend(CHEAP);
    vd(&args).ok();
    let p = t.path().join("plain");
    let m = open_volume(&data, &p, &key, &["--header", s(&header)]);
    let before = fingerprint(&header);
    let mut args = vec![
        "add-key",
        s(&data),
        "--header",
        s(&header),
        "--key-file",
        s(&key),
        "--new-key-file",
        s(&new),
    ];
    args.extend(CHEAP);
    vd(&args).fails_with(5);
    vd(&[
        "remove-key",
        s(&data),
        "--header",
        s(&header),
        "--key-slot",
        "0",
        "--force",
    ])
    .fails_with(5);
    assert_eq!(fingerprint(&header), before, "header written while served");
    m.close();
    vd(&args).ok();
}

#[test]
fn other_header_verbs_on_a_cryptsetup_header() {
    if !require(
        "detached::other_header_verbs_on_a_cryptsetup_header",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let new = write_key(t.path(), "k2", b"changed key");
    let header = t.path().join("h");
    let data = zeros(t.path(), "data", 8 * MIB);
    cryptsetup_format("luks2", &header, &data, &key);
    let before = fingerprint(&data);
    let h = s(&header);
    let d = s(&data);
    let mut change = vec![
        "change-key",
        d,
        "--header",
        h,
        "--key-file",
        s(&key),
        "--new-key-file",
        s(&new),
    ];
    change.extend(CHEAP);
    vd(&change).ok();
    assert!(cryptsetup_accepts_detached(&header, &data, &new));
    assert!(!cryptsetup_accepts_detached(&header, &data, &key));
    let rk = vd(&["add-recovery-key", d, "--header", h, "--key-file", s(&new)]).ok();
    assert!(
        rk.stderr.contains("added recovery keyslot"),
        "{}",
        rk.describe()
    );
    let list = vd(&["vault", "list", d, "--header", h]).ok();
    assert!(
        list.stdout.contains("no vault tokens"),
        "{}",
        list.describe()
    );
    // Backup, a wiped primary copy repaired, the backup restored; cryptsetup agrees each time.
    let backup = t.path().join("h.bak");
    vd(&["header", "backup", d, s(&backup), "--header", h]).ok();
    assert_eq!(sha256_file(&backup), sha256_range(&header, 0, 16 * MIB));
    poke(&header, 0, &[0u8; 4096]);
    vd(&["repair", d, "--header", h]).ok();
    assert!(cryptsetup_accepts_detached(&header, &data, &new));
    vd(&["header", "restore", d, s(&backup), "--header", h]).ok();
    assert!(cryptsetup_accepts_detached(&header, &data, &new));
    // erase wipes the header file, never the data.
    vd(&["erase", d, "--header", h, "--batch"]).ok();
    assert!(!cryptsetup_accepts_detached(&header, &data, &new));
    assert_eq!(fingerprint(&data), before, "data written");
}

#[test]
fn resize_with_a_detached_header() {
    if !require("detached::resize_with_a_detached_header", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    // cryptsetup's dynamic segment: growing grows the data file, no header change.
    let header = t.path().join("h");
    let data = zeros(t.path(), "data", 8 * MIB);
    cryptsetup_format("luks2", &header, &data, &key);
    let hdr_before = fingerprint(&header);
    vd(&["resize", s(&data), "--header", s(&header), "--size", "16M"]).ok();
    assert_eq!(fs::metadata(&data).expect("data").len(), 16 * MIB);
    assert_eq!(fingerprint(&header), hdr_before);
    // Shrinking a dynamic segment needs --force and makes it fixed; the data file keeps its
    // length (as cryptsetup resize leaves the device alone).
    let args = ["resize", s(&data), "--header", s(&header), "--size", "4M"];
    vd(&args).fails_with(1);
    let mut forced = args.to_vec();
    forced.push("--force");
    vd(&forced).ok();
    assert_eq!(fs::metadata(&data).expect("data").len(), 16 * MIB);
    let dump = sys("cryptsetup", &["luksDump", s(&header)]).ok();
    assert!(
        dump.stdout.contains("length: 4194304 [bytes]"),
        "{}",
        dump.stdout
    );
    assert!(cryptsetup_accepts_detached(&header, &data, &key));
    // A fixed segment grown past the data file's end grows the file first.
    vd(&["resize", s(&data), "--header", s(&header), "--size", "24M"]).ok();
    assert_eq!(fs::metadata(&data).expect("data").len(), 24 * MIB);
    let dump = sys("cryptsetup", &["luksDump", s(&header)]).ok();
    assert!(
        dump.stdout.contains("length: 25165824 [bytes]"),
        "{}",
        dump.stdout
    );
    let line = vd(&[
        "test-key",
        s(&data),
        "--header",
        s(&header),
        "--key-file",
        s(&key),
    ]);
    line.ok();
}

#[test]
fn crash_during_add_key_on_a_detached_header() {
    if !require_fault_injection("detached::crash_during_add_key_on_a_detached_header") {
        return;
    }
    if !require(
        "detached::crash_during_add_key_on_a_detached_header",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let new = write_key(t.path(), "k2", b"maybe added");
    let base = t.path().join("base.hdr");
    let data = zeros(t.path(), "data", 8 * MIB);
    cryptsetup_format("luks2", &base, &data, &key);
    let before = fingerprint(&data);
    let work = t.path().join("work.hdr");
    let mut crashed = 0;
    for mode in CrashMode::BOTH {
        for k in 1..100u32 {
            fs::copy(&base, &work).expect("copy");
            let mut args = vec![
                "add-key",
                s(&data),
                "--header",
                s(&work),
                "--key-file",
                s(&key),
                "--new-key-file",
                s(&new),
            ];
            args.extend(CHEAP);
            let out = std::process::Command::new(BIN)
                .args(&args)
                .envs(mode.env(k))
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run vaultdisk");
            let code = out.status.code().unwrap_or(-1);
            assert!(
                code == 0 || code == vaultdisk::error::exit::CRASH,
                "k={k} {}: exit {code}",
                mode.name()
            );
            // The hook counts the header file's writes; the old key always opens it.
            assert!(cryptsetup_accepts_detached(&work, &data, &key), "k={k}");
            assert_eq!(fingerprint(&data), before, "k={k}: data written");
            if code == 0 {
                assert!(cryptsetup_accepts_detached(&work, &data, &new));
                break;
            }
            crashed += 1;
        }
    }
    assert!(crashed > 0, "no crash point reached");
}

/// `vaultdisk umount DIR` on drop (then a lazy unmount), so a failed test leaves no mount.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = vd(&["umount", s(&self.0)]);
        }
        force_unmount(&self.0);
    }
}

#[test]
fn mount_with_a_detached_header() {
    if !require(
        "detached::mount_with_a_detached_header",
        &["root", "fuse", "loop", "mkfs.ext4", "mount", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let data = zeros(t.path(), "data", 64 * MIB);
    let header = t.path().join("h");
    cryptsetup_format("luks2", &header, &data, &key);
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let (h, d, m) = (s(&header), s(&data), s(&mnt));
    let guard = Mounted(mnt.clone());
    vd(&[
        "mount",
        d,
        m,
        "--header",
        h,
        "--key-file",
        s(&key),
        "--mkfs",
        "ext4",
    ])
    .ok();
    fs::write(mnt.join("f"), b"on a detached header").expect("write");
    let status = vd(&["status", "--json"]).ok();
    assert!(status.stdout.contains(d), "{}", status.describe());
    vd(&["umount", m]).ok();
    vd(&[
        "mount",
        d,
        m,
        "--header",
        h,
        "--key-file",
        s(&key),
        "--read-only",
    ])
    .ok();
    assert_eq!(
        fs::read(mnt.join("f")).expect("read"),
        b"on a detached header"
    );
    vd(&["umount", m]).ok();
    drop(guard);
    // The filesystem is in BACKING from byte 0 (the ext4 magic at 1080 of the plaintext is
    // not visible in the ciphertext), and cryptsetup still accepts the header.
    assert!(cryptsetup_accepts_detached(&header, &data, &key));
}

/// `cryptsetup luksDump --dump-json-metadata --header HEADER`.
fn cryptsetup_json_detached(header: &Path) -> serde_json::Value {
    let out = sys(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-json-metadata",
            "--header",
            s(header),
            "/dev/null",
        ],
    )
    .ok();
    serde_json::from_str(&out.stdout).expect("luksDump json")
}

/// The sorted ids of a JSON object's members (keyslots, tokens).
fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// `vault enroll`, `vault rewrap` and `vault remove` with `--header FILE` (a header made by
/// cryptsetup luksFormat --header) against a real OpenBao dev server: after each step
/// cryptsetup's luksDump --header shows the expected keyslots and tokens, the data file is
/// unchanged byte for byte, and (while enrolled) the volume opens through the vault alone
/// (test-key and digest with --token-only, digest equal to the passphrase's).
#[test]
fn vault_verbs_on_a_detached_header() {
    if !require(
        "detached::vault_verbs_on_a_detached_header",
        &["cryptsetup"],
    ) {
        return;
    }
    let Some(bao) = BaoDev::start("detached::vault_verbs_on_a_detached_header") else {
        return;
    };
    let t = temp();
    let key = t.path().join("key");
    fs::write(&key, PASS).unwrap();
    let header = t.path().join("hdr");
    let data = t.path().join("data");
    write_file(&data, &pattern(4 * MIB as usize, 21));
    cryptsetup_format("luks2", &header, &data, &key);
    let data_sha = sha256_file(&data);
    let (h, d) = (s(&header), s(&data));
    let want = vd(&["digest", d, "--header", h, "--key-file", s(&key)])
        .ok()
        .stdout;

    bao.vd(&[
        "vault",
        "enroll",
        d,
        "--header",
        h,
        "--key-file",
        s(&key),
        "--transit-key",
        "disk",
        "--create",
    ])
    .ok();
    let j = cryptsetup_json_detached(&header);
    assert_eq!(ids(&j["keyslots"]), ["0", "1"], "{j}");
    assert_eq!(ids(&j["tokens"]), ["0"], "{j}");
    assert_eq!(j["tokens"]["0"]["type"], "vaultdisk-vault", "{j}");
    assert_eq!(
        j["tokens"]["0"]["keyslots"],
        serde_json::json!(["1"]),
        "{j}"
    );
    assert_eq!(j["tokens"]["0"]["key_version"], 1, "{j}");
    assert_eq!(
        sha256_file(&data),
        data_sha,
        "enroll wrote to the data file"
    );
    let out = bao.vd(&["test-key", d, "--header", h, "--token-only"]).ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    let got = bao
        .vd(&["digest", d, "--header", h, "--token-only"])
        .ok()
        .stdout;
    assert_eq!(got, want, "the vault keyslot opens another volume key");
    // cryptsetup keeps the passphrase keyslot working next to the vault one.
    assert!(cryptsetup_accepts_detached(&header, &data, &key));

    bao.cli(&["write", "-f", "transit/keys/disk/rotate"]).ok();
    bao.vd(&["vault", "rewrap", d, "--header", h]).ok();
    let j2 = cryptsetup_json_detached(&header);
    assert_eq!(ids(&j2["keyslots"]), ["0", "1"], "{j2}");
    assert_eq!(j2["tokens"]["0"]["key_version"], 2, "{j2}");
    assert_ne!(
        j2["tokens"]["0"], j["tokens"]["0"],
        "rewrap changed nothing"
    );
    assert_eq!(j2["keyslots"], j["keyslots"], "rewrap touched a keyslot");
    assert_eq!(
        sha256_file(&data),
        data_sha,
        "rewrap wrote to the data file"
    );
    let got = bao
        .vd(&["digest", d, "--header", h, "--token-only"])
        .ok()
        .stdout;
    assert_eq!(got, want);

    bao.vd(&["vault", "remove", d, "--header", h, "--token", "0"])
        .ok();
    let j3 = cryptsetup_json_detached(&header);
    assert_eq!(ids(&j3["keyslots"]), ["0"], "{j3}");
    assert!(ids(&j3["tokens"]).is_empty(), "{j3}");
    assert_eq!(
        sha256_file(&data),
        data_sha,
        "remove wrote to the data file"
    );
    bao.vd(&["test-key", d, "--header", h, "--token-only"])
        .fails_with(2);
    assert!(cryptsetup_accepts_detached(&header, &data, &key));
}
