//! Byte compatibility with the real tools, fixtures made at test time: cryptsetup reads our
//! volumes (and an independent Python XTS decrypts our data), we read and write cryptsetup's
//! LUKS2 and LUKS1 volumes and qemu-img's LUKS1 images.

use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const UUID: &str = "c0ffee00-1111-4222-8333-444455556666";

/// The `UUID:` line of `cryptsetup luksDump`.
fn cryptsetup_uuid(img: &Path) -> String {
    let out = sys("cryptsetup", &["luksDump", s(img)]).ok();
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("UUID:"))
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|| panic!("no UUID in luksDump:\n{}", out.stdout))
}

fn as_u64(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().expect("string-u64"),
        v => v.as_u64().expect("u64"),
    }
}

/// Unaligned writes that exercise read-modify-write: (offset, length, seed).
fn unaligned_writes(size: usize) -> Vec<(usize, usize, u64)> {
    vec![
        (1, 10, 101),
        (511, 2, 102),
        (4095, 4098, 103),
        (100_000, 70_000, 104),
        (size / 2, 8192, 105),
        (size - 7, 7, 106),
    ]
}

/// Applies `unaligned_writes` through PLAIN and to `expected`.
fn write_through(plain: &Path, expected: &mut [u8]) {
    for (off, len, seed) in unaligned_writes(expected.len()) {
        let chunk = pattern(len, seed);
        write_plain(plain, off as u64, &chunk);
        expected[off..off + len].copy_from_slice(&chunk);
    }
}

/// No form of the volume key may appear in `text`.
fn assert_no_key(text: &str, vk_hex: &str) {
    let spaced: String = vk_hex
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    let half = &vk_hex[..vk_hex.len() / 2];
    for needle in [vk_hex, half, &spaced[..16]] {
        assert!(
            !text.to_lowercase().contains(needle),
            "volume key material in output:\n{text}"
        );
    }
}

/// Our format, every sector/key/KDF flavour -> cryptsetup parses it and accepts the passphrase,
/// writes through PLAIN decrypt with the independent oracle, the header is untouched by data
/// writes, dump shows no key material, and a keyslot cryptsetup adds opens with vaultdisk.
fn ours_read_by_cryptsetup(test: &str, sector: u32, key_bits: u32, kdf: &[&str]) {
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let (ss, kb) = (sector.to_string(), key_bits.to_string());
    let v = Vol::with_kdf(
        "4M",
        kdf,
        &["--sector-size", &ss, "--key-size", &kb, "--uuid", UUID],
    );
    // luksDump rewrites a copy it finds bad (docs/format.md §11.4): unchanged = both copies valid
    let fp = fingerprint(&v.backing);
    let dump = sys("cryptsetup", &["luksDump", s(&v.backing)]).ok();
    assert!(dump.stdout.contains(UUID), "{}", dump.stdout);
    assert_eq!(
        fingerprint(&v.backing),
        fp,
        "cryptsetup repaired our header"
    );
    let j = cryptsetup_json(&v.backing);
    assert_eq!(j["segments"]["0"]["sector_size"], sector);
    assert_eq!(j["segments"]["0"]["offset"], "16777216");
    assert_eq!(j["segments"]["0"]["encryption"], "aes-xts-plain64");
    assert_eq!(j["keyslots"]["0"]["key_size"], key_bits / 8);
    assert_eq!(j["keyslots"]["0"]["kdf"]["type"], kdf[1]);
    assert_eq!(j["config"]["json_size"], "12288");
    assert!(cryptsetup_accepts(&v.backing, &v.key));
    assert_eq!(fingerprint(&v.backing), fp);

    let header = read_range(&v.backing, 0, DATA_OFFSET);
    let size = 4 * MIB as usize;
    let mut expected = pattern(size, 9);
    let m = v.open();
    write_plain(&v.plain, 0, &expected);
    write_through(&v.plain, &mut expected);
    assert!(read_plain(&v.plain) == expected, "PLAIN does not read back");
    m.close();
    assert!(
        read_range(&v.backing, 0, DATA_OFFSET) == header,
        "data writes changed the header area"
    );
    assert!(cryptsetup_accepts(&v.backing, &v.key));

    let vk = cryptsetup_volume_key(&v.backing, &v.key);
    assert_eq!(vk.len() as u32, key_bits / 4);
    let dec = oracle_decrypt(&vk, &v.backing, DATA_OFFSET, size as u64, sector, 0);
    assert!(
        dec == expected,
        "the oracle's decryption differs from what was written"
    );

    for args in [
        vec!["dump", s(&v.backing)],
        vec!["dump", "--json", s(&v.backing)],
    ] {
        let out = vd(&args).ok();
        assert_no_key(&out.stdout, &vk);
        assert_no_key(&out.stderr, &vk);
    }

    // cryptsetup writes our header (new keyslot 1); vaultdisk opens it with the new passphrase
    let key2 = write_key(v.dir.path(), "pass2", b"second passphrase");
    let mut args = vec!["luksAddKey", "-q", "--key-file", s(&v.key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.extend([s(&v.backing), s(&key2)]);
    sys("cryptsetup", &args).ok();
    let out = vd(&[
        "-v",
        "open",
        s(&v.backing),
        s(&v.plain),
        "--key-file",
        s(&key2),
    ]);
    let m = Mount::new(&v.plain);
    let out = out.ok();
    assert!(out.stderr.contains("keyslot 1"), "{}", out.describe());
    assert!(read_plain(&v.plain) == expected);
    m.close();
}

#[test]
fn ours_4096_xts512_argon2id_read_by_cryptsetup() {
    ours_read_by_cryptsetup(
        "ours_4096_xts512_argon2id_read_by_cryptsetup",
        4096,
        512,
        CHEAP_ARGON2ID,
    );
}

#[test]
fn ours_512_xts256_pbkdf2_read_by_cryptsetup() {
    ours_read_by_cryptsetup(
        "ours_512_xts256_pbkdf2_read_by_cryptsetup",
        512,
        256,
        CHEAP_PBKDF2,
    );
}

#[test]
fn ours_4096_xts256_pbkdf2_read_by_cryptsetup() {
    ours_read_by_cryptsetup(
        "ours_4096_xts256_pbkdf2_read_by_cryptsetup",
        4096,
        256,
        CHEAP_PBKDF2,
    );
}

#[test]
fn ours_512_xts512_argon2id_read_by_cryptsetup() {
    ours_read_by_cryptsetup(
        "ours_512_xts512_argon2id_read_by_cryptsetup",
        512,
        512,
        CHEAP_ARGON2ID,
    );
}

/// A foreign volume with known plaintext, and how to check the ciphertext after our writes.
struct Foreign {
    img: PathBuf,
    key: PathBuf,
    data_offset: u64,
    plain: Vec<u8>,
    /// How to check the volume holds some plaintext, independently of vaultdisk.
    verify: Verify,
}

/// Independent readers of a volume's plaintext.
enum Verify {
    /// Volume key from `cryptsetup luksDump --dump-volume-key`, data through tests/oracle/xts.py.
    Oracle {
        key: PathBuf,
        offset: u64,
        sector: u32,
    },
    /// `qemu-img convert` of the image to raw.
    Qemu { secret: String, scratch: PathBuf },
}

impl Foreign {
    /// Panics unless the independent reader sees exactly `expected`.
    fn verify(&self, expected: &[u8]) {
        let img = &self.img;
        match &self.verify {
            Verify::Oracle {
                key,
                offset,
                sector,
            } => {
                let vk = cryptsetup_volume_key(img, key);
                let dec = oracle_decrypt(&vk, img, *offset, expected.len() as u64, *sector, 0);
                assert!(dec == expected, "the oracle sees different plaintext");
            }
            Verify::Qemu { secret, scratch } => {
                let opts = format!("driver=luks,key-secret=s0,file.filename={}", s(img));
                sys(
                    "qemu-img",
                    &[
                        "convert",
                        "--object",
                        secret,
                        "--image-opts",
                        &opts,
                        "-O",
                        "raw",
                        s(scratch),
                    ],
                )
                .ok();
                assert!(
                    read_plain(scratch) == expected,
                    "qemu-img sees different plaintext"
                );
            }
        }
    }
}

/// vaultdisk reads `f` exactly read-only (file untouched) and read-write, writes through PLAIN,
/// leaves the header area alone, and the foreign tool/oracle sees the writes.
fn read_and_write_foreign(f: &Foreign, luks2: bool) {
    let plain_path = f.img.with_file_name("plain");
    let fp = fingerprint(&f.img);
    let header = read_range(&f.img, 0, f.data_offset);

    let m = open_volume(&f.img, &plain_path, &f.key, &["--read-only"]);
    let got = read_plain(&plain_path);
    assert_eq!(got.len(), f.plain.len(), "PLAIN size");
    assert!(
        sha256(&got) == sha256(&f.plain),
        "read-only PLAIN differs from the plaintext"
    );
    m.close();
    assert_eq!(fingerprint(&f.img), fp, "a read-only open changed the file");

    let mut expected = f.plain.clone();
    let m = open_volume(&f.img, &plain_path, &f.key, &[]);
    assert!(
        read_plain(&plain_path) == f.plain,
        "read-write PLAIN differs"
    );
    write_through(&plain_path, &mut expected);
    m.close();
    assert!(
        read_range(&f.img, 0, f.data_offset) == header,
        "writing data changed the header area"
    );
    assert!(cryptsetup_accepts(&f.img, &f.key));
    f.verify(&expected);

    let (j, _) = dump_json(&f.img);
    assert_eq!(j["version"], if luks2 { 2 } else { 1 });
    assert_eq!(j["uuid"], cryptsetup_uuid(&f.img));
}

/// cryptsetup encrypts known plaintext in place (`reencrypt --encrypt`, docs/format.md §10),
/// then the tail beyond the plaintext is cut so the dynamic segment is exactly the plaintext.
fn reencrypted(dir: &Path, reduce_mib: u64, vk_len: usize, flags: &[&str]) -> Foreign {
    let key = write_key(dir, "pass", PASS);
    let vk = data_file(dir, "vk.bin", &pattern(vk_len, 55));
    let plain = pattern(4 * MIB as usize, 56);
    let img = data_file(dir, "cs.img", &plain);
    set_len(&img, plain.len() as u64 + reduce_mib * MIB);
    let reduce = format!("{reduce_mib}M");
    let mut args = vec![
        "reencrypt",
        "--encrypt",
        "--type",
        "luks2",
        "--reduce-device-size",
        &reduce,
        "--force-offline-reencrypt",
        "-q",
        "--key-file",
        s(&key),
        "--volume-key-file",
        s(&vk),
    ];
    args.extend_from_slice(flags);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    let j = cryptsetup_json(&img);
    let data_offset = as_u64(&j["segments"]["0"]["offset"]);
    let sector = j["segments"]["0"]["sector_size"].as_u64().unwrap() as u32;
    assert_eq!(j["segments"]["0"]["size"], "dynamic");
    set_len(&img, data_offset + plain.len() as u64);
    Foreign {
        verify: Verify::Oracle {
            key: key.clone(),
            offset: data_offset,
            sector,
        },
        img,
        key,
        data_offset,
        plain,
    }
}

fn reencrypted_test(test: &str, reduce_mib: u64, vk_len: usize, flags: &[&str]) {
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let t = temp();
    let f = reencrypted(t.path(), reduce_mib, vk_len, flags);
    read_and_write_foreign(&f, true);
}

#[test]
fn cryptsetup_pbkdf2_4096_xts512() {
    reencrypted_test(
        "cryptsetup_pbkdf2_4096_xts512",
        32,
        64,
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
        ],
    );
}

#[test]
fn cryptsetup_pbkdf2_512_xts512() {
    reencrypted_test(
        "cryptsetup_pbkdf2_512_xts512",
        32,
        64,
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "512",
        ],
    );
}

#[test]
fn cryptsetup_argon2i_512_xts256() {
    reencrypted_test(
        "cryptsetup_argon2i_512_xts256",
        32,
        32,
        &[
            "--pbkdf",
            "argon2i",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
            "--pbkdf-parallel",
            "1",
            "--sector-size",
            "512",
            "--key-size",
            "256",
        ],
    );
}

#[test]
fn cryptsetup_argon2id_4096_xts256() {
    reencrypted_test(
        "cryptsetup_argon2id_4096_xts256",
        32,
        32,
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
            "--pbkdf-parallel",
            "1",
            "--sector-size",
            "4096",
            "--key-size",
            "256",
        ],
    );
}

/// 64 KiB metadata copies and a 1 MiB keyslots area: data at 2 MiB (reduce 4M).
#[test]
fn cryptsetup_small_metadata_64k_keyslots_1m() {
    let test = "cryptsetup_small_metadata_64k_keyslots_1m";
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let t = temp();
    let f = reencrypted(
        t.path(),
        4,
        64,
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
            "--luks2-metadata-size",
            "64k",
            "--luks2-keyslots-size",
            "1m",
        ],
    );
    let j = cryptsetup_json(&f.img);
    assert_eq!(j["config"]["json_size"], "61440");
    assert_eq!(f.data_offset, 2 * MIB);
    read_and_write_foreign(&f, true);
    let (d, _) = dump_json(&f.img);
    assert_eq!(d["header"]["hdr_size"], 65536);
    assert_eq!(d["keyslots"][0]["area"]["offset"], 131072);
}

/// Plain `luksFormat` layouts (no reencryption), data put in by the oracle with the known key.
fn luksformat_fixture(
    dir: &Path,
    luks_type: &str,
    file_mib: u64,
    vk_len: usize,
    flags: &[&str],
) -> Foreign {
    let key = write_key(dir, "pass", PASS);
    let vk = pattern(vk_len, 57);
    let vk_file = data_file(dir, "vk.bin", &vk);
    let img = dir.join("cs.img");
    set_len(&img, file_mib * MIB);
    let bits = (vk_len * 8).to_string();
    let mut args = vec![
        "luksFormat",
        "-q",
        "--type",
        luks_type,
        "--key-file",
        s(&key),
        "--volume-key-file",
        s(&vk_file),
        "--key-size",
        &bits,
    ];
    args.extend_from_slice(flags);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    let (data_offset, sector) = if luks_type == "luks2" {
        let j = cryptsetup_json(&img);
        (
            as_u64(&j["segments"]["0"]["offset"]),
            j["segments"]["0"]["sector_size"].as_u64().unwrap() as u32,
        )
    } else {
        let out = sys("cryptsetup", &["luksDump", s(&img)]).ok();
        let sectors: u64 = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Payload offset:"))
            .expect("payload offset")
            .trim()
            .parse()
            .unwrap();
        (sectors * 512, 512)
    };
    assert_eq!(cryptsetup_volume_key(&img, &key), hex(&vk));
    let plain = pattern((file_mib * MIB - data_offset) as usize, 58);
    let plain_file = data_file(dir, "plain.bin", &plain);
    oracle_encrypt_into(&hex(&vk), &plain_file, &img, data_offset, sector);
    Foreign {
        verify: Verify::Oracle {
            key: key.clone(),
            offset: data_offset,
            sector,
        },
        img,
        key,
        data_offset,
        plain,
    }
}

fn luksformat_with_oracle_data(
    test: &str,
    luks_type: &str,
    file_mib: u64,
    vk_len: usize,
    flags: &[&str],
) {
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let t = temp();
    let f = luksformat_fixture(t.path(), luks_type, file_mib, vk_len, flags);
    read_and_write_foreign(&f, luks_type == "luks2");
}

const SMALL_METADATA_FLAGS: &[&str] = &[
    "--pbkdf",
    "pbkdf2",
    "--pbkdf-force-iterations",
    "1000",
    "--sector-size",
    "4096",
    "--luks2-metadata-size",
    "64k",
    "--luks2-keyslots-size",
    "1m",
];
const LUKS1_FLAGS: &[&str] = &["--pbkdf-force-iterations", "1000", "--hash", "sha256"];
const LUKS1_SHA1_FLAGS: &[&str] = &["--pbkdf-force-iterations", "1000", "--hash", "sha1"];

#[test]
fn cryptsetup_luksformat_64k_metadata_layout() {
    luksformat_with_oracle_data(
        "cryptsetup_luksformat_64k_metadata_layout",
        "luks2",
        6,
        64,
        SMALL_METADATA_FLAGS,
    );
}

#[test]
fn luks1_cryptsetup_xts512() {
    luksformat_with_oracle_data("luks1_cryptsetup_xts512", "luks1", 8, 64, LUKS1_FLAGS);
}

#[test]
fn luks1_cryptsetup_xts256_sha1() {
    luksformat_with_oracle_data(
        "luks1_cryptsetup_xts256_sha1",
        "luks1",
        8,
        32,
        LUKS1_SHA1_FLAGS,
    );
}

/// qemu-img's LUKS1 (payload at 4040 sectors) with data written by `qemu-img convert`; the
/// check reads the volume back out through `qemu-img convert`.
fn qemu_fixture(dir: &Path) -> Foreign {
    let dir = dir.to_path_buf();
    let key = write_key(&dir, "pass", PASS);
    let secret = format!("secret,id=s0,data={}", std::str::from_utf8(PASS).unwrap());
    let img = dir.join("q.luks");
    sys(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            &secret,
            "-o",
            "key-secret=s0,iter-time=10",
            s(&img),
            "4M",
        ],
    )
    .ok();
    let plain = pattern(4 * MIB as usize, 59);
    let plain_file = data_file(&dir, "p.raw", &plain);
    let target = format!("driver=luks,key-secret=s0,file.filename={}", s(&img));
    sys(
        "qemu-img",
        &[
            "convert",
            "--object",
            &secret,
            "-n",
            "-f",
            "raw",
            s(&plain_file),
            "--target-image-opts",
            &target,
        ],
    )
    .ok();
    let out = sys("cryptsetup", &["luksDump", s(&img)]).ok();
    assert!(
        out.stdout.contains("Payload offset:\t4040"),
        "{}",
        out.stdout
    );
    Foreign {
        verify: Verify::Qemu {
            secret,
            scratch: dir.join("back.raw"),
        },
        img,
        key,
        data_offset: 4040 * 512,
        plain,
    }
}

/// vaultdisk reads and writes qemu-img's LUKS1; qemu-img sees our writes.
#[test]
fn luks1_qemu_img_read_write() {
    if !require(
        "luks1_qemu_img_read_write",
        &["fuse", "qemu-img", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let f = qemu_fixture(t.path());
    read_and_write_foreign(&f, false);
}

/// Every foreign fixture's own check accepts its original plaintext, so the recipes and
/// oracles are right before vaultdisk is involved.
#[test]
fn foreign_fixtures_self_check() {
    if !require(
        "foreign_fixtures_self_check",
        &["cryptsetup", "qemu-img", "python3-cryptography"],
    ) {
        return;
    }
    let t = temp();
    let mk = |name: &str| {
        let d = t.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let fixtures = [
        luksformat_fixture(&mk("l2"), "luks2", 6, 64, SMALL_METADATA_FLAGS),
        luksformat_fixture(&mk("l1"), "luks1", 8, 64, LUKS1_FLAGS),
        luksformat_fixture(&mk("l1s"), "luks1", 8, 32, LUKS1_SHA1_FLAGS),
        qemu_fixture(&mk("q")),
    ];
    for f in &fixtures {
        f.verify(&f.plain);
        assert!(cryptsetup_accepts(&f.img, &f.key), "{}", f.img.display());
    }
    assert_eq!(fixtures[0].data_offset, 2 * MIB);
    assert_eq!(fixtures[1].data_offset, 2 * MIB);
    assert_eq!(fixtures[3].data_offset, 4040 * 512);
}

/// Two keyslots made by cryptsetup: vaultdisk tries both, honours --key-slot, and a wrong
/// passphrase names every slot tried.
#[test]
fn cryptsetup_second_keyslot() {
    if !require("cryptsetup_second_keyslot", &["fuse", "cryptsetup"]) {
        return;
    }
    let t = temp();
    let dir = t.path();
    let key = write_key(dir, "pass", PASS);
    let key2 = write_key(dir, "pass2", b"another one");
    let wrong = write_key(dir, "wrong", b"wrong");
    let img = dir.join("cs.img");
    let plain = dir.join("plain");
    set_len(&img, 20 * MIB);
    let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    let mut args = vec!["luksAddKey", "-q", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_ARGON2ID);
    args.extend([s(&img), s(&key2)]);
    sys("cryptsetup", &args).ok();
    let fp = fingerprint(&img);

    let out = vd(&["-v", "open", s(&img), s(&plain), "--key-file", s(&key2)]);
    let m = Mount::new(&plain);
    let out = out.ok();
    assert!(out.stderr.contains("keyslot 1"), "{}", out.describe());
    assert_eq!(read_plain(&plain).len() as u64, 4 * MIB);
    m.close();
    open_volume(&img, &plain, &key2, &["--key-slot", "1"]).close();
    let out = open_fails(
        &[
            "open",
            s(&img),
            s(&plain),
            "--key-file",
            s(&key2),
            "--key-slot",
            "0",
        ],
        None,
        &plain,
        2,
    );
    assert!(out.stderr.contains("tried 0)"), "{}", out.describe());
    let out = open_fails(
        &["open", s(&img), s(&plain), "--key-file", s(&wrong)],
        None,
        &plain,
        2,
    );
    assert!(out.stderr.contains("tried 0, 1"), "{}", out.describe());
    assert!(!plain.exists());
    assert_eq!(
        fingerprint(&img).sha256,
        fp.sha256,
        "opening must not write the header"
    );
    let (j, _) = dump_json(&img);
    assert_eq!(j["keyslots"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["keyslots"][1]["kdf"]["type"], "argon2id");
}

/// A volume in the middle of `reencrypt --encrypt --init-only` is refused (exit 4, message
/// naming the reencryption), read-write and read-only, without writing anything.
#[test]
fn cryptsetup_reencryption_in_progress_refused() {
    if !require(
        "cryptsetup_reencryption_in_progress_refused",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let dir = t.path();
    let key = write_key(dir, "pass", PASS);
    let img = data_file(dir, "r.img", &pattern(4 * MIB as usize, 60));
    let plain = dir.join("plain");
    set_len(&img, 36 * MIB);
    let mut args = vec![
        "reencrypt",
        "--encrypt",
        "--init-only",
        "--type",
        "luks2",
        "--reduce-device-size",
        "32M",
        "--force-offline-reencrypt",
        "-q",
        "--key-file",
        s(&key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    let j = cryptsetup_json(&img);
    assert!(
        j["config"]["requirements"]["mandatory"]
            .to_string()
            .contains("online-reencrypt"),
        "{j:#}"
    );
    let fp = fingerprint(&img);
    for extra in [&[][..], &["--read-only"][..]] {
        let mut args = vec!["open", s(&img), s(&plain), "--key-file", s(&key)];
        args.extend_from_slice(extra);
        let out = vd(&args);
        let _m = Mount::new(&plain);
        let out = out.fails_with(4);
        assert!(
            out.stderr.to_lowercase().contains("reencrypt"),
            "message should name the reencryption:\n{}",
            out.describe()
        );
        assert!(!plain.exists());
    }
    assert_eq!(fingerprint(&img), fp);
}

/// The oracle itself: IEEE 1619 vectors.
#[test]
fn oracle_xts_selftest() {
    if !require("oracle_xts_selftest", &["python3-cryptography"]) {
        return;
    }
    let oracle = repo_file("tests/oracle/xts.py");
    let out = run("python3", &[s(&oracle), "selftest"], None).ok();
    assert!(out.stdout.contains("selftest ok"));
}

/// The oracle decrypts ciphertext cryptsetup made (both sector sizes, both key sizes), so a
/// mismatch in the vaultdisk tests above points at vaultdisk, not at the oracle.
#[test]
fn oracle_decrypts_cryptsetup_ciphertext() {
    if !require(
        "oracle_decrypts_cryptsetup_ciphertext",
        &["cryptsetup", "python3-cryptography"],
    ) {
        return;
    }
    for (sector, vk_len) in [("4096", 64), ("512", 32)] {
        let t = temp();
        let bits = (vk_len * 8).to_string();
        let f = reencrypted(
            t.path(),
            32,
            vk_len,
            &[
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--sector-size",
                sector,
                "--key-size",
                &bits,
            ],
        );
        f.verify(&f.plain);
        assert_eq!(
            cryptsetup_volume_key(&f.img, &f.key),
            hex(&pattern(vk_len, 55))
        );
    }
}

/// The library's LUKS1 reader (parse, unlock, segment) against images cryptsetup made, one per
/// hashSpec, checked against the volume key cryptsetup dumps. Moved from luks1.rs's unit
/// tests, which ran the tools themselves.
#[test]
fn luks1_library_unlocks_cryptsetup_luks1() {
    use vaultdisk::crypto::hash::HashAlg;
    use vaultdisk::luks1;
    if !require("luks1_library_unlocks_cryptsetup_luks1", &["cryptsetup"]) {
        return;
    }
    let t = temp();
    let pass = write_key(t.path(), "pass.txt", b"testpass");
    // Default (sha256, 512-bit key), then the other hashSpecs and a 256-bit key.
    let variants: [(&[&str], HashAlg, usize); 4] = [
        (&[], HashAlg::Sha256, 64),
        (&["--hash", "sha1", "--key-size", "256"], HashAlg::Sha1, 32),
        (&["--hash", "sha512"], HashAlg::Sha512, 64),
        (&["--hash", "ripemd160"], HashAlg::Ripemd160, 64),
    ];
    for (n, (extra, hash, key_bytes)) in variants.into_iter().enumerate() {
        let img = t.path().join(format!("v1-{n}.img"));
        set_len(&img, 20 * MIB);
        let mut args = vec!["luksFormat", "-q", "--type", "luks1"];
        args.extend(["--pbkdf-force-iterations", "1000"]);
        args.extend(extra);
        args.extend(["--key-file", s(&pass), s(&img)]);
        sys("cryptsetup", &args).ok();
        let expected = cryptsetup_volume_key(&img, &pass);
        assert_eq!(expected.len(), key_bytes * 2);
        let file = std::fs::File::open(&img).unwrap();
        let h = luks1::parse(&read_range(&img, 0, 1024)).unwrap();
        assert_eq!(h.payload_offset_sectors, 4096);
        assert_eq!(h.hash, hash);
        let (slot, vk) = h.unlock(&file, b"testpass", None).unwrap().unwrap();
        assert_eq!(slot, 0);
        assert_eq!(hex(vk.expose_secret()), expected, "{hash}");
        assert!(h.unlock(&file, b"nope", None).unwrap().is_none());
        let seg = h.segment(20 * MIB).unwrap();
        assert_eq!(seg.data_offset_bytes, 2 * MIB);
        assert_eq!(seg.data_size_bytes, 18 * MIB);
    }
}

/// The library's LUKS1 reader against a qemu-img LUKS image: the payload right after slot 7,
/// the key (checked against cryptsetup's dump where it is installed) and the data qemu-img
/// wrote, decrypted by the library's sector cipher. Moved from luks1.rs's unit tests.
#[test]
fn luks1_library_unlocks_qemu_img_luks_and_decrypts_its_data() {
    use vaultdisk::crypto::xts::SectorCipher;
    use vaultdisk::luks1;
    use vaultdisk::luks2::ReadAt;
    let name = "luks1_library_unlocks_qemu_img_luks_and_decrypts_its_data";
    if !require(name, &["qemu-img"]) {
        return;
    }
    let t = temp();
    let q = t.path().join("q.luks");
    let raw = t.path().join("p.raw");
    let secret = ["--object", "secret,id=s0,data=testpass"];
    let mut args = vec!["create", "-f", "luks"];
    args.extend(secret);
    args.extend(["-o", "key-secret=s0,iter-time=10", s(&q), "16M"]);
    sys("qemu-img", &args).ok();
    // Known plaintext in the first 64 KiB of the virtual disk.
    let plain: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(7) >> 3) as u8)
        .collect();
    let mut raw_bytes = plain.clone();
    raw_bytes.resize(16 << 20, 0);
    write_file(&raw, &raw_bytes);
    let target = format!("driver=luks,key-secret=s0,file.filename={}", q.display());
    let mut args = vec!["convert"];
    args.extend(secret);
    args.extend(["-n", "-f", "raw", s(&raw), "--target-image-opts", &target]);
    sys("qemu-img", &args).ok();

    let file = std::fs::File::open(&q).unwrap();
    let h = luks1::parse(&read_range(&q, 0, luks1::PHDR_LEN as u64)).unwrap();
    // qemu-img puts the payload right after slot 7 (docs/format.md §8).
    assert_eq!(h.payload_offset_sectors, 4040);
    let (slot, vk) = h.unlock(&file, b"testpass", None).unwrap().unwrap();
    assert_eq!(slot, 0);
    if require(name, &["cryptsetup"]) {
        let pass = write_key(t.path(), "pass.txt", b"testpass");
        assert_eq!(hex(vk.expose_secret()), cryptsetup_volume_key(&q, &pass));
    }
    let seg = h.segment(file.len_bytes().unwrap()).unwrap();
    let mut data = read_range(&q, seg.data_offset_bytes, plain.len() as u64);
    SectorCipher::new(vk.expose_secret())
        .unwrap()
        .decrypt_sectors(&mut data, 512, seg.iv_tweak, 1);
    assert!(data == plain, "qemu-img data did not decrypt");
}
