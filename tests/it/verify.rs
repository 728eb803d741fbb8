//! `vaultdisk verify` / `digest`: read-only restore verification. Every test checks that the
//! backing file is byte-identical (sha256 and mtime) after each verify.

use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

/// A volume with some data written through PLAIN; returns it and the plaintext SHA-256
/// (taken from the plain file of a read-only open, independently of `verify`).
fn volume_with_data(size: &str) -> (Vol, String) {
    let v = Vol::new(size, &[]);
    let m = v.open();
    write_plain(&v.plain, 0, &pattern(200_000, 1));
    write_plain(&v.plain, 3 * MIB + 123, &pattern(70_000, 2));
    m.close();
    let m = v.open_ro();
    let digest = sha256_file(&v.plain);
    m.close();
    (v, digest)
}

/// Runs `vaultdisk verify ARGS --json`; checks the backing file did not change.
fn verify_json(backing: &Path, args: &[&str]) -> (Out, Value) {
    let before = fingerprint(backing);
    let mut all = vec!["verify", s(backing), "--json"];
    all.extend_from_slice(args);
    let out = vd(&all);
    let after = fingerprint(backing);
    assert_eq!(
        before.sha256,
        after.sha256,
        "verify changed {}",
        backing.display()
    );
    assert_eq!(
        before.mtime,
        after.mtime,
        "verify touched {}",
        backing.display()
    );
    let v = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out, v)
}

#[test]
fn verify_intact_copy() {
    if !require_fuse("verify_intact_copy") {
        return;
    }
    let (v, digest) = volume_with_data("8M");
    let bad = write_key(v.dir.path(), "bad", b"wrong");
    let (out, r) = verify_json(
        &v.backing,
        &["--key-file", s(&bad), "--key-file", s(&v.key), "--digest"],
    );
    let out = out.ok();
    assert_eq!(r["ok"], true, "{}", out.stdout);
    assert_eq!(r["data"]["digest"], digest.as_str());
    assert_eq!(r["header"]["damaged"], false);
    assert_eq!(r["header"]["copies"][0]["valid"], true);
    assert_eq!(r["header"]["copies"][1]["valid"], true);
    assert_eq!(r["keyslots"][0]["keyslot"], Value::Null);
    assert!(
        r["keyslots"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no keyslot")
    );
    assert_eq!(r["keyslots"][1]["keyslot"], 0);

    let (out, r) = verify_json(
        &v.backing,
        &["--key-file", s(&v.key), "--expect-digest", &digest],
    );
    out.ok();
    assert_eq!(r["data"]["match"], true);

    // text form and the digest verb
    let out = vd(&["verify", s(&v.backing), "--key-file", s(&v.key), "--digest"]).ok();
    assert!(
        out.stdout.contains(&digest) && out.stdout.contains("result:   ok"),
        "{}",
        out.stdout
    );
    let before = fingerprint(&v.backing);
    let out = vd(&["digest", s(&v.backing), "--key-file", s(&v.key)]).ok();
    assert_eq!(out.stdout, format!("{digest}  {}\n", s(&v.backing)));
    assert_eq!(before.mtime, fingerprint(&v.backing).mtime);

    // the key from stdin when no --key-file is given
    // (stdin is /dev/null here: an empty passphrase opens nothing, exit 2 as for open)
    let (out, _) = verify_json(&v.backing, &["--digest"]);
    out.fails_with(2);
    let before = fingerprint(&v.backing);
    let out = vd_in(&["verify", s(&v.backing), "--json", "--digest"], PASS).ok();
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["data"]["digest"], digest.as_str());
    assert_eq!(before.mtime, fingerprint(&v.backing).mtime);
}

#[test]
fn verify_flipped_data_byte_is_damage() {
    if !require_fuse("verify_flipped_data_byte_is_damage") {
        return;
    }
    let (v, digest) = volume_with_data("8M");
    let copy = v.dir.path().join("copy.img");
    fs::copy(&v.backing, &copy).unwrap();
    let at = DATA_OFFSET + 4096 * 10 + 5;
    let byte = read_range(&copy, at, 1)[0];
    poke(&copy, at, &[byte ^ 0x01]);
    let (out, r) = verify_json(
        &copy,
        &["--key-file", s(&v.key), "--expect-digest", &digest],
    );
    let out = out.fails_with(6);
    assert!(
        out.stderr.contains("digest does not match"),
        "{}",
        out.describe()
    );
    assert_eq!(r["ok"], false);
    assert_eq!(r["data"]["match"], false);
    assert_ne!(r["data"]["digest"], digest.as_str());
    assert_eq!(r["header"]["damaged"], false);
}

#[test]
fn verify_damaged_primary_header_is_reported_and_data_still_checked() {
    if !require_fuse("verify_damaged_primary_header_is_reported_and_data_still_checked") {
        return;
    }
    let (v, digest) = volume_with_data("8M");
    // inside the primary binary header's checksummed area (the label field)
    poke(&v.backing, 24, b"damaged!");
    let (out, r) = verify_json(
        &v.backing,
        &["--key-file", s(&v.key), "--expect-digest", &digest],
    );
    let out = out.fails_with(6);
    assert!(
        out.stderr.contains("header copy is damaged"),
        "{}",
        out.describe()
    );
    assert_eq!(r["header"]["damaged"], true);
    assert_eq!(r["header"]["copies"][0]["valid"], false);
    assert_eq!(r["header"]["copies"][1]["valid"], true);
    assert_eq!(r["header"]["current"], "secondary");
    assert_eq!(r["data"]["match"], true, "data must still verify");
}

#[test]
fn verify_wrong_key_and_bad_usage() {
    let v = Vol::new("4M", &[]);
    let bad = write_key(v.dir.path(), "bad", b"wrong");
    let (out, r) = verify_json(&v.backing, &["--key-file", s(&bad), "--digest"]);
    out.fails_with(2);
    assert_eq!(r["ok"], false);
    assert_eq!(r["keyslots"][0]["keyslot"], Value::Null);
    let (out, _) = verify_json(
        &v.backing,
        &["--key-file", s(&v.key), "--expect-digest", "abc"],
    );
    out.fails_with(1);
    // not a LUKS volume: exit 4
    let junk = data_file(v.dir.path(), "junk", &vec![0u8; 8192]);
    let (out, _) = verify_json(&junk, &["--key-file", s(&v.key)]);
    out.fails_with(4);
}

#[test]
fn verify_detached_header() {
    if !require("verify_detached_header", &["cryptsetup"])
        || !require_fuse("verify_detached_header")
    {
        return;
    }
    // a header backup (as ADE keeps in /boot/luks) checks the original backing file
    let (v, digest) = volume_with_data("8M");
    let hdr = v.dir.path().join("hdr.img");
    sys(
        "cryptsetup",
        &[
            "luksHeaderBackup",
            s(&v.backing),
            "--header-backup-file",
            s(&hdr),
        ],
    )
    .ok();
    let hdr_before = fingerprint(&hdr);
    let (out, r) = verify_json(
        &v.backing,
        &[
            "--header",
            s(&hdr),
            "--key-file",
            s(&v.key),
            "--expect-digest",
            &digest,
        ],
    );
    out.ok();
    assert_eq!(r["header"]["file"], s(&hdr));
    assert_eq!(r["data"]["match"], true);
    assert_eq!(hdr_before.sha256, fingerprint(&hdr).sha256);

    // a truly detached header (data offset 0): a data-only file of never-written sectors
    let data = v.dir.path().join("data.img");
    set_len(&data, 4 * MIB);
    let dhdr = v.dir.path().join("detached.hdr");
    let mut args = vec![
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--header",
        s(&dhdr),
        "--key-file",
        s(&v.key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&data));
    sys("cryptsetup", &args).ok();
    let (out, r) = verify_json(
        &data,
        &["--header", s(&dhdr), "--key-file", s(&v.key), "--digest"],
    );
    let out = out.ok();
    assert_eq!(
        r["data"]["digest"],
        sha256(&vec![0u8; 4 * MIB as usize]).as_str(),
        "{}",
        out.stdout
    );
    // without --header the data file is not a LUKS volume
    let (out, _) = verify_json(&data, &["--key-file", s(&v.key)]);
    out.fails_with(4);
}

#[test]
fn verify_fsck_clean_and_damaged() {
    if !require(
        "verify_fsck_clean_and_damaged",
        &["root", "fuse", "loop", "mkfs.ext4", "e2fsck"],
    ) {
        return;
    }
    let v = Vol::new("32M", &[]);
    let m = v.open();
    sys("mkfs.ext4", &["-q", "-F", s(&v.plain)]).ok();
    m.close();
    let (out, r) = verify_json(&v.backing, &["--key-file", s(&v.key), "--fsck"]);
    let out = out.ok();
    assert_eq!(r["data"]["fsck"]["verdict"], "clean", "{}", out.stdout);
    assert!(
        v.dir.path().read_dir().unwrap().count() == 2,
        "verify left files beside the volume"
    );

    // wreck the inode table of group 0 through the plaintext: e2fsck -n reports errors
    let m = v.open();
    let zeros = vec![0xa5u8; 64 * 1024];
    write_plain(&v.plain, 4096 * 40, &zeros);
    write_plain(&v.plain, 1024 + 0x5c, &[0xff, 0xff, 0xff, 0x7f]);
    m.close();
    let (out, r) = verify_json(&v.backing, &["--key-file", s(&v.key), "--fsck"]);
    let out = out.fails_with(6);
    assert_ne!(r["data"]["fsck"]["verdict"], "clean", "{}", out.describe());
}

/// A cryptsetup volume never written since luksFormat: dm-crypt decrypts its zero ciphertext
/// to noise, vaultdisk serves it as zeros. `--dm-crypt-view` digests what dm-crypt shows
/// (checked with the independent Python XTS), the default what PLAIN shows.
#[test]
fn dm_crypt_view_digest_matches_the_oracle_on_never_written_sectors() {
    let test = "dm_crypt_view_digest";
    if !require(test, &["cryptsetup", "python3-cryptography"]) {
        return;
    }
    let dir = temp();
    let disk = dir.path().join("cs.img");
    let key = write_key(dir.path(), "pass", PASS);
    set_len(&disk, 24 * MIB);
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--key-file",
            s(&key),
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
            s(&disk),
        ],
    )
    .ok();
    // The first sectors written as dm-crypt would (the oracle encrypts them in place).
    let vk = cryptsetup_volume_key(&disk, &key);
    let plain = data_file(dir.path(), "plain.bin", &pattern(3 * 4096, 5));
    oracle_encrypt_into(&vk, &plain, &disk, DATA_OFFSET, 4096);
    let expected_dm = sha256(&oracle_decrypt(&vk, &disk, DATA_OFFSET, 8 * MIB, 4096, 0));
    let mut ours = vec![0u8; (8 * MIB) as usize];
    ours[..3 * 4096].copy_from_slice(&pattern(3 * 4096, 5));
    let expected_plain = sha256(&ours);
    assert_ne!(expected_dm, expected_plain);

    let digest = |extra: &[&str]| {
        let mut a = vec!["digest", s(&disk), "--key-file", s(&key)];
        a.extend_from_slice(extra);
        let before = fingerprint(&disk);
        let out = vd(&a).ok();
        assert_eq!(fingerprint(&disk).sha256, before.sha256);
        out.stdout
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(digest(&[]), expected_plain);
    // --progress-json: JSON lines on stderr, the last one at the end.
    let out = vd(&["digest", s(&disk), "--key-file", s(&key), "--progress-json"]).ok();
    let last: Value =
        serde_json::from_str(out.stderr.lines().last().unwrap_or("")).expect("json line");
    assert_eq!(last["event"], "progress", "{}", out.stderr);
    assert_eq!(last["done_bytes"], 8 * MIB);
    assert_eq!(last["total_bytes"], 8 * MIB);
    assert_eq!(digest(&["--dm-crypt-view"]), expected_dm);
    let (out, r) = verify_json(
        &disk,
        &[
            "--key-file",
            s(&key),
            "--dm-crypt-view",
            "--expect-digest",
            &expected_dm,
        ],
    );
    out.ok();
    assert_eq!(r["data"]["match"], true, "{r}");
}
