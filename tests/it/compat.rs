//! Compatibility with the real tools, fixtures made at test time: cryptsetup reads our volumes
//! and we read cryptsetup's (LUKS2 and LUKS1) and qemu-img's (LUKS1), data included.
use crate::support::*;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

fn cryptsetup(args: &[&str]) -> Run {
    tool("cryptsetup", args)
}

/// Writes `data` at `offset` through PLAIN and fsyncs.
fn write_plain(plain: &Path, offset: u64, data: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(plain).unwrap();
    f.write_all_at(data, offset).unwrap();
    f.sync_all().unwrap();
}

fn read_plain(plain: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fs::File::open(plain)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Known plaintext written through PLAIN decrypts, with cryptsetup's view of the key and an
/// independent XTS, to the same bytes; cryptsetup accepts header and passphrase throughout.
fn our_volume_reads_back_under_cryptsetup(test: &str, flags: &[&str], sector_size: u32) {
    if !require_fuse(test) || !require_tools(test, &["cryptsetup", "python3"]) {
        return;
    }
    let v = Vol::new();
    let uuid = "0badc0de-1111-4222-8333-444455556666";
    let mut all = vec!["--uuid", uuid];
    all.extend(flags);
    v.format("8M", &all);
    let dump = cryptsetup(&["luksDump", Vol::s(&v.backing)]).ok("cryptsetup luksDump");
    assert!(dump.stdout.contains(uuid), "{}", dump.stdout);
    cryptsetup(&[
        "open",
        "--test-passphrase",
        "--key-file",
        Vol::s(&v.pass),
        Vol::s(&v.backing),
    ])
    .ok("cryptsetup --test-passphrase");

    let g = v.open(&[]);
    // Unaligned, crossing sectors, and the very last bytes of the volume.
    let writes = [
        (0u64, pattern(4096, 1)),
        (5000, pattern(70_001, 2)),
        (8 * MIB - 3000, pattern(3000, 3)),
    ];
    for (off, data) in &writes {
        write_plain(&v.plain, *off, data);
    }
    g.close();

    let key = cryptsetup_volume_key(&v.backing, &v.pass);
    let plain = oracle_decrypt(&key, &v.backing, 16 * MIB, 8 * MIB, sector_size, 0);
    for (off, data) in &writes {
        let off = *off as usize;
        assert_eq!(
            &plain[off..off + data.len()],
            &data[..],
            "oracle disagrees at {off}"
        );
    }
    cryptsetup(&[
        "open",
        "--test-passphrase",
        "--key-file",
        Vol::s(&v.pass),
        Vol::s(&v.backing),
    ])
    .ok("cryptsetup --test-passphrase after writes");
}

#[test]
fn ours_argon2id_4096_512bit_under_cryptsetup() {
    our_volume_reads_back_under_cryptsetup(
        "ours_argon2id_4096_512bit_under_cryptsetup",
        &CHEAP_ARGON2ID,
        4096,
    );
}

#[test]
fn ours_pbkdf2_512_256bit_under_cryptsetup() {
    let mut flags = CHEAP_PBKDF2.to_vec();
    flags.extend(["--sector-size", "512", "--key-size", "256"]);
    our_volume_reads_back_under_cryptsetup("ours_pbkdf2_512_256bit_under_cryptsetup", &flags, 512);
}

#[test]
fn ours_argon2i_4096_256bit_under_cryptsetup() {
    let flags = [
        "--pbkdf",
        "argon2i",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "64",
        "--pbkdf-parallel",
        "2",
        "--key-size",
        "256",
    ];
    our_volume_reads_back_under_cryptsetup(
        "ours_argon2i_4096_256bit_under_cryptsetup",
        &flags,
        4096,
    );
}

/// `cryptsetup luksFormat` with `flags` on a 20 MiB file; we open it, write through PLAIN,
/// and cryptsetup's key plus the oracle read our bytes back.
fn cryptsetup_luks2_opens(test: &str, flags: &[&str], sector_size: u32) {
    if !require_fuse(test) || !require_tools(test, &["cryptsetup", "python3"]) {
        return;
    }
    let v = Vol::new();
    fs::File::create(&v.backing)
        .unwrap()
        .set_len(20 * MIB)
        .unwrap();
    let mut args = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--key-file",
        Vol::s(&v.pass),
    ];
    args.extend(flags);
    args.push(Vol::s(&v.backing));
    cryptsetup(&args).ok("cryptsetup luksFormat");
    let dump = vaultdisk(&["dump", "--json", Vol::s(&v.backing)], None).ok("dump");
    let j: serde_json::Value = serde_json::from_str(&dump.stdout).unwrap();
    let data_offset = j["segments"][0]["offset"].as_u64().unwrap();
    assert_eq!(j["segments"][0]["sector_size"], sector_size);
    let size = 20 * MIB - data_offset;

    let g = v.open(&[]);
    assert_eq!(fs::metadata(&v.plain).unwrap().len(), size);
    let data = pattern(65_536 + 512, 9);
    write_plain(&v.plain, 512, &data);
    g.close();
    let key = cryptsetup_volume_key(&v.backing, &v.pass);
    let plain = oracle_decrypt(&key, &v.backing, data_offset, 128 * 1024, sector_size, 0);
    assert_eq!(&plain[512..512 + data.len()], &data[..]);
    // And our read path agrees after a reopen.
    let g = v.open(&["--read-only"]);
    assert_eq!(read_plain(&v.plain, 512, data.len()), data);
    g.close();
}

#[test]
fn cryptsetup_luks2_pbkdf2_4096() {
    cryptsetup_luks2_opens(
        "cryptsetup_luks2_pbkdf2_4096",
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
        ],
        4096,
    );
}

#[test]
fn cryptsetup_luks2_argon2i_512_256bit() {
    cryptsetup_luks2_opens(
        "cryptsetup_luks2_argon2i_512_256bit",
        &[
            "--pbkdf",
            "argon2i",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
            "--sector-size",
            "512",
            "--key-size",
            "256",
        ],
        512,
    );
}

#[test]
fn cryptsetup_luks2_argon2id_other_metadata_sizes() {
    cryptsetup_luks2_opens(
        "cryptsetup_luks2_argon2id_other_metadata_sizes",
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-memory",
            "32",
            "--luks2-metadata-size",
            "64k",
            "--luks2-keyslots-size",
            "1m",
        ],
        4096,
    );
}

/// The plaintext used for data that cryptsetup itself encrypts (luks-format.md §10).
fn plain8m() -> Vec<u8> {
    use sha2::{Digest, Sha256};
    (0..262_144u32)
        .flat_map(|i| Sha256::digest(format!("plain{i}").as_bytes()).to_vec())
        .collect()
}

/// `cryptsetup reencrypt --encrypt` turns a file of known plaintext into a LUKS2 volume
/// without device-mapper; we must read exactly that plaintext back.
fn cryptsetup_encrypted_data_reads_back(test: &str, flags: &[&str]) {
    if !require_fuse(test) || !require_tools(test, &["cryptsetup"]) {
        return;
    }
    let v = Vol::new();
    let expected = plain8m();
    let mut img = expected.clone();
    img.resize(40 * MIB as usize, 0);
    fs::write(&v.backing, &img).unwrap();
    let mut args = vec![
        "reencrypt",
        "--encrypt",
        "--type",
        "luks2",
        "--reduce-device-size",
        "32M",
        "--force-offline-reencrypt",
        "-q",
        "--key-file",
        Vol::s(&v.pass),
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
    ];
    args.extend(flags);
    args.push(Vol::s(&v.backing));
    cryptsetup(&args).ok("cryptsetup reencrypt --encrypt");
    let g = v.open(&["--read-only"]);
    assert_eq!(
        read_plain(&v.plain, 0, expected.len()),
        expected,
        "read-only open"
    );
    g.close();
    let g = v.open(&[]);
    assert_eq!(
        read_plain(&v.plain, 0, expected.len()),
        expected,
        "read-write open"
    );
    g.close();
}

#[test]
fn cryptsetup_encrypted_data_4096() {
    cryptsetup_encrypted_data_reads_back(
        "cryptsetup_encrypted_data_4096",
        &["--sector-size", "4096"],
    );
}

#[test]
fn cryptsetup_encrypted_data_512_256bit() {
    cryptsetup_encrypted_data_reads_back(
        "cryptsetup_encrypted_data_512_256bit",
        &["--sector-size", "512", "--key-size", "256"],
    );
}

#[test]
fn cryptsetup_luks1_opens_read_write() {
    let test = "cryptsetup_luks1_opens_read_write";
    if !require_fuse(test) || !require_tools(test, &["cryptsetup", "python3"]) {
        return;
    }
    let v = Vol::new();
    fs::File::create(&v.backing)
        .unwrap()
        .set_len(20 * MIB)
        .unwrap();
    cryptsetup(&[
        "luksFormat",
        "-q",
        "--type",
        "luks1",
        "--key-file",
        Vol::s(&v.pass),
        "--pbkdf-force-iterations",
        "1000",
        Vol::s(&v.backing),
    ])
    .ok("luksFormat luks1");
    let dump = vaultdisk(&["dump", "--json", Vol::s(&v.backing)], None).ok("dump");
    let j: serde_json::Value = serde_json::from_str(&dump.stdout).unwrap();
    assert_eq!(j["version"], 1);
    let payload = j["payload_offset_sectors"].as_u64().unwrap() * 512;
    let g = v.open(&[]);
    assert_eq!(fs::metadata(&v.plain).unwrap().len(), 20 * MIB - payload);
    let data = pattern(100_000, 5);
    write_plain(&v.plain, 1234, &data);
    g.close();
    let key = cryptsetup_volume_key(&v.backing, &v.pass);
    let plain = oracle_decrypt(&key, &v.backing, payload, 128 * 1024, 512, 0);
    assert_eq!(&plain[1234..1234 + data.len()], &data[..]);
}

#[test]
fn qemu_img_luks1_data_round_trip() {
    let test = "qemu_img_luks1_data_round_trip";
    if !require_fuse(test) || !require_tools(test, &["qemu-img"]) {
        return;
    }
    let v = Vol::new();
    let secret = format!("secret,id=s0,file={}", Vol::s(&v.pass));
    let q = v.backing.clone();
    tool(
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
            Vol::s(&q),
            "16M",
        ],
    )
    .ok("qemu-img create");
    let raw = v.path("p.raw");
    let mut img = plain8m();
    img.resize(16 * MIB as usize, 0);
    fs::write(&raw, &img).unwrap();
    let target = format!("driver=luks,key-secret=s0,file.filename={}", Vol::s(&q));
    tool(
        "qemu-img",
        &[
            "convert",
            "--object",
            &secret,
            "-n",
            "-f",
            "raw",
            Vol::s(&raw),
            "--target-image-opts",
            &target,
        ],
    )
    .ok("qemu-img convert in");

    let g = v.open(&[]);
    assert_eq!(
        fs::read(&v.plain).unwrap(),
        img,
        "qemu-img's data through PLAIN"
    );
    let ours = pattern(50_000, 11);
    write_plain(&v.plain, 777, &ours);
    g.close();

    let back = v.path("back.raw");
    tool(
        "qemu-img",
        &[
            "convert",
            "--object",
            &secret,
            "--image-opts",
            &target,
            "-O",
            "raw",
            Vol::s(&back),
        ],
    )
    .ok("qemu-img convert out");
    let got = fs::read(&back).unwrap();
    assert_eq!(
        &got[777..777 + ours.len()],
        &ours[..],
        "qemu-img reads our write"
    );
    assert_eq!(&got[..777], &img[..777]);
}
