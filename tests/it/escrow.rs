//! Volume-key escrow (README "Volume key escrow"): `dump --dump-volume-key` in cryptsetup's
//! layout, and `--volume-key-file` on open, mount, digest, verify, add-key and format, both
//! ways with cryptsetup (its luksDump --volume-key-file opens ours; ours feeds its luksFormat
//! and luksAddKey). Bad key files are exit 2 (format: 1), one line, nothing written.
use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A cryptsetup LUKS2 (or LUKS1) volume with the passphrase PASS in `dir/pass`.
fn cryptsetup_volume(dir: &Path, kind: &str) -> (PathBuf, PathBuf) {
    let backing = dir.join(format!("{kind}.img"));
    let key = write_key(dir, "pass", PASS);
    fs::File::create(&backing)
        .unwrap()
        .set_len(20 * MIB)
        .unwrap();
    let mut args = vec!["luksFormat", "-q", "--type", kind, "--key-file", s(&key)];
    if kind == "luks2" {
        args.extend_from_slice(&["--pbkdf", "pbkdf2"]);
    }
    args.extend_from_slice(&["--pbkdf-force-iterations", "1000", s(&backing)]);
    sys("cryptsetup", &args).ok();
    (backing, key)
}

/// `cryptsetup luksDump --dump-volume-key --volume-key-file F`: the raw key in a new file.
fn cryptsetup_key_file(backing: &Path, key: &Path, out: &Path) {
    sys(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "-q",
            "--key-file",
            s(key),
            "--volume-key-file",
            s(out),
            s(backing),
        ],
    )
    .ok();
}

fn digest_with(backing: &Path, flag: &str, file: &Path) -> String {
    let out = vd(&["digest", s(backing), flag, s(file)]).ok();
    out.stdout.split_whitespace().next().unwrap().to_string()
}

#[test]
fn dump_volume_key_prints_what_cryptsetup_prints() {
    if !require(
        "dump_volume_key_prints_what_cryptsetup_prints",
        &["cryptsetup"],
    ) {
        return;
    }
    let dir = temp();
    for kind in ["luks2", "luks1"] {
        let (backing, key) = cryptsetup_volume(dir.path(), kind);
        let theirs = sys(
            "cryptsetup",
            &[
                "luksDump",
                "--dump-volume-key",
                "-q",
                "--key-file",
                s(&key),
                s(&backing),
            ],
        )
        .ok();
        let ours = vd(&[
            "dump",
            s(&backing),
            "--dump-volume-key",
            "--batch",
            "--key-file",
            s(&key),
        ])
        .ok();
        assert_eq!(ours.stdout, theirs.stdout, "{kind}");
        assert!(parse_mk_dump(&ours.stdout).is_some_and(|h| h.len() == 128));
        assert_eq!(ours.stderr, "", "{kind}: the key is never logged");
        // Not even at debug level, nor in the daemon's log of an open with the key file.
        let hexkey = parse_mk_dump(&ours.stdout).unwrap();
        let debug = run(
            "env",
            &[
                "RUST_LOG=debug",
                BIN,
                "dump",
                s(&backing),
                "--dump-volume-key",
                "--batch",
                "--key-file",
                s(&key),
            ],
            None,
        )
        .ok();
        let spaced: String = ours
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("MK dump:\t"))
            .unwrap()
            .to_string();
        assert!(
            !debug.stderr.contains(&hexkey) && !debug.stderr.contains(spaced.trim()),
            "{kind}: key in the debug log"
        );
        // cryptsetup's raw key file opens the same volume here (LUKS1 checks mkDigest).
        let f = dir.path().join(format!("{kind}.vk"));
        cryptsetup_key_file(&backing, &key, &f);
        assert_eq!(
            digest_with(&backing, "--volume-key-file", &f),
            digest_with(&backing, "--key-file", &key),
            "{kind}"
        );
    }
}

#[test]
fn cryptsetup_volume_key_file_opens_ours() {
    if !require(
        "cryptsetup_volume_key_file_opens_ours",
        &["cryptsetup", "fuse"],
    ) {
        return;
    }
    let dir = temp();
    let (backing, key) = cryptsetup_volume(dir.path(), "luks2");
    let f = dir.path().join("vk.bin");
    cryptsetup_key_file(&backing, &key, &f);
    assert_eq!(fs::read(&f).unwrap().len(), 64);
    assert_eq!(
        digest_with(&backing, "--volume-key-file", &f),
        digest_with(&backing, "--key-file", &key)
    );
    // open: no keyslot needed; status says how it was unlocked.
    let plain = dir.path().join("plain");
    let out = vd(&["open", s(&backing), s(&plain), "--volume-key-file", s(&f)]);
    let guard = Mount::new(&plain);
    out.ok();
    write_plain(&plain, 4096, b"escrowed");
    let status = vd(&["status", "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|v| {
            v["plain"].as_str().is_some_and(|p| p.ends_with("/plain"))
                && v["backing"]
                    .as_str()
                    .is_some_and(|b| b.ends_with("luks2.img"))
        })
        .unwrap_or_else(|| panic!("not in status: {}", status.stdout));
    assert_eq!(mine["unlocked_by"], "volume key file");
    guard.close();
    // What was written through the volume key decrypts with cryptsetup's passphrase.
    let digest_after = digest_with(&backing, "--key-file", &key);
    assert_eq!(digest_after, digest_with(&backing, "--volume-key-file", &f));
    assert!(cryptsetup_accepts(&backing, &key));
}

#[test]
fn our_volume_key_file_feeds_cryptsetup() {
    if !require("our_volume_key_file_feeds_cryptsetup", &["cryptsetup"]) {
        return;
    }
    let v = Vol::new("8M", &[]);
    let g = v.dir.path().join("vk.bin");
    let out = vd(&[
        "dump",
        s(&v.backing),
        "--dump-volume-key",
        "--batch",
        "--key-file",
        s(&v.key),
        "--volume-key-file",
        s(&g),
    ])
    .ok();
    assert!(out.stdout.contains("Key stored to file "), "{}", out.stdout);
    assert!(
        parse_mk_dump(&out.stdout).is_none(),
        "the key went to the file only"
    );
    assert_eq!(mode_of(&g) & 0o777, 0o400);
    let raw = fs::read(&g).unwrap();
    assert_eq!(raw.len(), 64);
    assert_eq!(hex(&raw), cryptsetup_volume_key(&v.backing, &v.key));
    // Never over an existing file (O_EXCL): exit 5, the file unchanged, nothing printed.
    let before = fingerprint(&g);
    let again = vd(&[
        "dump",
        s(&v.backing),
        "--dump-volume-key",
        "--batch",
        "--key-file",
        s(&v.key),
        "--volume-key-file",
        s(&g),
    ])
    .fails_with(5);
    assert_eq!(again.stdout, "");
    assert_eq!(fingerprint(&g), before);

    // cryptsetup luksAddKey --volume-key-file (offline) on our volume.
    let np = write_key(v.dir.path(), "np", b"new pass");
    sys(
        "cryptsetup",
        &[
            "luksAddKey",
            "-q",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--volume-key-file",
            s(&g),
            s(&v.backing),
            s(&np),
        ],
    )
    .ok();
    assert!(cryptsetup_accepts(&v.backing, &np));
    vd(&["test-key", s(&v.backing), "--key-file", s(&np)]).ok();

    // cryptsetup luksFormat --volume-key-file: a new volume with our key; we open it with it.
    let c = v.dir.path().join("c.img");
    fs::File::create(&c).unwrap().set_len(20 * MIB).unwrap();
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--volume-key-file",
            s(&g),
            "--key-file",
            s(&v.key),
            s(&c),
        ],
    )
    .ok();
    assert_eq!(
        digest_with(&c, "--volume-key-file", &g),
        digest_with(&c, "--key-file", &v.key)
    );
}

#[test]
fn add_key_format_and_verify_take_the_volume_key() {
    if !require(
        "add_key_format_and_verify_take_the_volume_key",
        &["cryptsetup"],
    ) {
        return;
    }
    let dir = temp();
    let (backing, key) = cryptsetup_volume(dir.path(), "luks2");
    let f = dir.path().join("vk.bin");
    cryptsetup_key_file(&backing, &key, &f);
    let np = write_key(dir.path(), "np", b"added with the volume key");
    let mut args = vec![
        "add-key",
        s(&backing),
        "--volume-key-file",
        s(&f),
        "--new-key-file",
        s(&np),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    assert!(cryptsetup_accepts(&backing, &np));

    // verify: the key file is reported as the volume key and opens the data.
    let out = vd(&[
        "verify",
        s(&backing),
        "--volume-key-file",
        s(&f),
        "--digest",
        "--json",
    ])
    .ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["ok"], true, "{}", out.stdout);
    assert_eq!(
        j["data"]["digest"].as_str().unwrap(),
        digest_with(&backing, "--key-file", &key)
    );

    // format: the new volume uses the given key; cryptsetup sees it.
    let ours = dir.path().join("ours.img");
    format_with(&ours, &key, "8M", &[], &["--volume-key-file", s(&f)]).ok();
    assert_eq!(
        cryptsetup_volume_key(&ours, &key),
        hex(&fs::read(&f).unwrap())
    );
    // 256-bit volume: a 64-byte key does not fit --key-size 256 (exit 1, nothing made).
    let other = dir.path().join("other.img");
    format_with(
        &other,
        &key,
        "8M",
        &[],
        &["--volume-key-file", s(&f), "--key-size", "256"],
    )
    .fails_with(1);
    assert!(!other.exists());
}

#[test]
fn wrong_volume_key_files_are_refused() {
    let v = Vol::new("8M", &[]);
    let d = v.dir.path();
    let short = write_key(d, "short", &[7u8; 32]);
    let wrong = write_key(d, "wrong", &[7u8; 64]);
    let np = write_key(d, "np", b"never added");
    for bad in [&short, &wrong] {
        let before = dir_snapshot(d);
        let plain = d.join("plain");
        let cases: Vec<Vec<&str>> = vec![
            vec![
                "open",
                s(&v.backing),
                s(&plain),
                "--volume-key-file",
                s(bad),
            ],
            vec!["digest", s(&v.backing), "--volume-key-file", s(bad)],
            vec![
                "verify",
                s(&v.backing),
                "--volume-key-file",
                s(bad),
                "--digest",
            ],
            vec![
                "add-key",
                s(&v.backing),
                "--volume-key-file",
                s(bad),
                "--new-key-file",
                s(&np),
            ],
        ];
        for args in cases {
            let out = vd(&args).fails_with(2);
            assert_eq!(out.stdout, "", "{args:?}");
            let line = out.stderr.trim();
            assert!(line.contains("volume key"), "{args:?}: {line}");
            assert!(!line.contains("0707"), "{args:?}: key bytes in {line}");
        }
        assert!(
            snapshot_diff(&before, &dir_snapshot(d)).is_empty(),
            "something was written"
        );
        assert!(!plain.exists());
    }
    // A 32-byte key where the volume's is 64 says so.
    let out = vd(&["digest", s(&v.backing), "--volume-key-file", s(&short)]).fails_with(2);
    assert!(out.stderr.contains("32 bytes"), "{}", out.stderr);
}

#[test]
fn dump_volume_key_without_terminal_or_batch_prints_nothing() {
    let v = Vol::new("8M", &[]);
    let g = v.dir.path().join("vk.bin");
    let out = vd(&[
        "dump",
        s(&v.backing),
        "--dump-volume-key",
        "--key-file",
        s(&v.key),
        "--volume-key-file",
        s(&g),
    ])
    .fails_with(1);
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("--batch"), "{}", out.stderr);
    assert!(!g.exists());
    // A wrong passphrase: exit 2, nothing printed, no file.
    let bad = write_key(v.dir.path(), "bad", b"not it");
    let out = vd(&[
        "dump",
        s(&v.backing),
        "--dump-volume-key",
        "--batch",
        "--key-file",
        s(&bad),
        "--volume-key-file",
        s(&g),
    ])
    .fails_with(2);
    assert_eq!(out.stdout, "");
    assert!(!g.exists());
}

/// vaultdisk with its own runtime directory (parallel tests do not see each other's entries).
fn vd_rt(rt: &Path, args: &[&str]) -> Out {
    let env = format!("VAULTDISK_RUNTIME_DIR={}", s(rt));
    let mut all = vec![env.as_str(), BIN];
    all.extend_from_slice(args);
    run("env", &all, None)
}

/// Unmounts `mnt` on drop (also when the test panics).
struct Unmount<'a>(&'a Path, &'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        if is_mounted(self.1) {
            let _ = vd_rt(self.0, &["umount", s(self.1)]);
        }
        if is_mounted(self.1) {
            force_unmount(self.1);
        }
    }
}

#[test]
fn mount_takes_a_volume_key_file() {
    if !require(
        "mount_takes_a_volume_key_file",
        &[
            "root",
            "fuse",
            "loop",
            "mkfs.ext4",
            "mount",
            "blkid",
            "cryptsetup",
        ],
    ) {
        return;
    }
    let dir = temp();
    let (backing, key) = cryptsetup_volume(dir.path(), "luks2");
    let f = dir.path().join("vk.bin");
    cryptsetup_key_file(&backing, &key, &f);
    let rt = dir.path().join("rt");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(&rt, &mnt);
    vd_rt(
        &rt,
        &[
            "mount",
            s(&backing),
            s(&mnt),
            "--volume-key-file",
            s(&f),
            "--mkfs",
            "ext4",
        ],
    )
    .ok();
    fs::write(mnt.join("a.txt"), b"escrow\n").unwrap();
    let st: serde_json::Value =
        serde_json::from_str(&vd_rt(&rt, &["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(st[0]["unlocked_by"], "volume key file", "{st}");
    vd_rt(&rt, &["umount", s(&mnt)]).ok();
    // The same filesystem through the passphrase.
    vd_rt(
        &rt,
        &[
            "mount",
            s(&backing),
            s(&mnt),
            "--key-file",
            s(&key),
            "--read-only",
        ],
    )
    .ok();
    assert_eq!(fs::read(mnt.join("a.txt")).unwrap(), b"escrow\n");
    vd_rt(&rt, &["umount", s(&mnt)]).ok();
}

/// The escrow bad inputs (docs/bad-inputs.md): exit code, one line, nothing written.
#[test]
fn escrow_bad_input_table() {
    use crate::cli::{row, row_says, run_table};
    let v = Vol::new("4M", &[]);
    let d = v.dir.path();
    write_key(d, "key", PASS);
    write_key(d, "short.vk", &[7u8; 32]);
    write_key(d, "wrong.vk", &[7u8; 64]);
    write_key(d, "new", b"never added");
    write_key(d, "exists.vk", b"already here");
    let rows = [
        row_says(
            "open: volume key file of the wrong length",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--volume-key-file",
                "@short.vk",
            ],
            &[2],
            "holds 32 bytes",
        ),
        row_says(
            "open: volume key file with the wrong key",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--volume-key-file",
                "@wrong.vk",
            ],
            &[2],
            "digest mismatch",
        ),
        row_says(
            "digest: wrong volume key",
            &["digest", "@disk.img", "--volume-key-file", "@wrong.vk"],
            &[2],
            "digest mismatch",
        ),
        row_says(
            "verify: wrong volume key",
            &["verify", "@disk.img", "--volume-key-file", "@wrong.vk"],
            &[2],
            "digest mismatch",
        ),
        row_says(
            "add-key: wrong volume key",
            &[
                "add-key",
                "@disk.img",
                "--volume-key-file",
                "@wrong.vk",
                "--new-key-file",
                "@new",
            ],
            &[2],
            "digest mismatch",
        ),
        row_says(
            "open: missing volume key file",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--volume-key-file",
                "@nope.vk",
            ],
            &[1],
            "cannot open volume key file",
        ),
        row(
            "open: --volume-key-file with --key-file",
            &[
                "open",
                "@disk.img",
                "@plain",
                "--volume-key-file",
                "@wrong.vk",
                "--key-file",
                "@key",
            ],
            &[1],
        ),
        row_says(
            "format: volume key shorter than --key-size",
            &[
                "format",
                "@new.img",
                "--size",
                "4M",
                "--key-file",
                "@key",
                "--volume-key-file",
                "@short.vk",
            ],
            &[1],
            "--key-size 512 needs 64",
        ),
        row_says(
            "dump --dump-volume-key without a terminal or --batch",
            &[
                "dump",
                "@disk.img",
                "--dump-volume-key",
                "--key-file",
                "@key",
            ],
            &[1],
            "--batch",
        ),
        row_says(
            "dump --dump-volume-key onto an existing file",
            &[
                "dump",
                "@disk.img",
                "--dump-volume-key",
                "--batch",
                "--key-file",
                "@key",
                "--volume-key-file",
                "@exists.vk",
            ],
            &[5],
            "exists",
        ),
        row(
            "dump --volume-key-file without --dump-volume-key",
            &["dump", "@disk.img", "--volume-key-file", "@out.vk"],
            &[1],
        ),
    ];
    run_table(d, &rows);
}
