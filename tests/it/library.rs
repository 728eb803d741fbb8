//! The read-write library facade (issue 18): `api::OpenOptions` opens partition 2 of a GPT
//! image (sgdisk) that cryptsetup formatted through `losetup -o/--sizelimit`, writes through
//! `Volume::write_at` + `flush`, and the Python XTS oracle with cryptsetup's volume key reads
//! the bytes back; nothing outside the partition changes; the lock keeps `vaultdisk open` out
//! while the Volume lives; a detached header from `cryptsetup luksFormat --header` works too.
use crate::support::*;
use std::fs;
use std::path::Path;
use vaultdisk::api::{ErrorKind, KeySource, OpenOptions, Volume};

fn key_source(path: &Path) -> KeySource {
    KeySource::KeyFile {
        path: path.to_path_buf(),
        offset: 0,
        size: None,
    }
}

fn cheap_luks_format(target: &Path, key: &Path, extra: &[&str]) {
    let mut args = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--sector-size",
        "4096",
        "--key-file",
        s(key),
    ];
    args.extend_from_slice(extra);
    args.push(s(target));
    sys("cryptsetup", &args).ok();
}

#[test]
fn read_write_in_a_partition_reaches_the_disk_and_nothing_else() {
    if !require(
        "library::read_write_in_a_partition_reaches_the_disk_and_nothing_else",
        &[
            "root",
            "loop",
            "sgdisk",
            "cryptsetup",
            "python3-cryptography",
        ],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "key", PASS);
    let img = t.path().join("disk.img");
    fs::File::create(&img).unwrap().set_len(56 * MIB).unwrap();
    sys("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+40M", s(&img)]).ok();
    let (off, size) = (2048 * 512 + 8 * MIB, 40 * MIB);
    write_at(&img, 2048 * 512, &pattern(MIB as usize, 5)).unwrap();
    let lo = sys(
        "losetup",
        &[
            "-f",
            "--show",
            "-o",
            &off.to_string(),
            "--sizelimit",
            &size.to_string(),
            s(&img),
        ],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    cheap_luks_format(Path::new(&lo), &key, &[]);
    sys("losetup", &["-d", &lo]).ok();
    let before_part = sha256_range(&img, 0, off);
    let after_part = sha256_range(&img, off + size, 56 * MIB - off - size);

    let data = pattern(300 * KIB as usize, 9);
    {
        let volume = OpenOptions::new()
            .read_write(true)
            .partition(2)
            .open(&img, key_source(&key))
            .unwrap();
        assert_eq!(volume.size_bytes(), size - DATA_OFFSET);
        assert_eq!(volume.write_at(4096 * 3 + 100, &data).unwrap(), data.len());
        volume.flush().unwrap();
        // While it lives, the CLI cannot open the same image read-write.
        vd(&[
            "open",
            s(&img),
            s(&t.path().join("plain")),
            "--partition",
            "2",
            "--key-file",
            s(&key),
        ])
        .fails_with(5);
        // Reading back through the library gives what was written.
        let mut back = vec![0u8; data.len()];
        volume.read_at(4096 * 3 + 100, &mut back).unwrap();
        assert_eq!(back, data);
    }
    // The oracle reads the partition's ciphertext with cryptsetup's volume key.
    let part = t.path().join("p2.img");
    write_file(&part, &read_range(&img, off, size));
    let vk = cryptsetup_volume_key(&part, &key);
    let plain = oracle_decrypt(&vk, &part, DATA_OFFSET + 4096 * 3, 4096 * 80, 4096, 3 * 8);
    assert!(
        plain[100..100 + data.len()] == data[..],
        "the oracle reads other bytes than the library wrote"
    );
    assert_eq!(sha256_range(&img, 0, off), before_part);
    assert_eq!(
        sha256_range(&img, off + size, 56 * MIB - off - size),
        after_part
    );
    assert!(cryptsetup_accepts(&part, &key));
}

#[test]
fn read_only_refuses_writes_and_a_detached_header_opens() {
    if !require(
        "library::read_only_refuses_writes_and_a_detached_header_opens",
        &["cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "key", PASS);
    let data_dev = t.path().join("data.img");
    let header = t.path().join("header.img");
    fs::File::create(&data_dev)
        .unwrap()
        .set_len(8 * MIB)
        .unwrap();
    cheap_luks_format(&data_dev, &key, &["--header", s(&header)]);
    let untouched = sha256_file(&header);

    let volume = OpenOptions::new()
        .read_write(true)
        .header(&header)
        .open(&data_dev, key_source(&key))
        .unwrap();
    // Data at offset 0 of the device: the whole device is plaintext.
    assert_eq!(volume.size_bytes(), 8 * MIB);
    volume.write_at(0, b"detached").unwrap();
    volume.flush().unwrap();
    drop(volume);
    assert_eq!(sha256_file(&header), untouched, "the header was written");

    let ro = OpenOptions::new()
        .header(&header)
        .open(&data_dev, key_source(&key))
        .unwrap();
    let mut b = [0u8; 8];
    ro.read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"detached");
    let e = ro.write_at(0, b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc_erofs()), "{e}");

    // A wrong key is NoKey; the same for the old read-only entry point.
    let wrong = write_key(t.path(), "wrong", b"nope");
    let e = OpenOptions::new()
        .header(&header)
        .open(&data_dev, key_source(&wrong))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoKey, "{e}");
    let e = Volume::open_read_only(&data_dev, key_source(&key)).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Device,
        "no header in the data device: {e}"
    );
}

fn libc_erofs() -> i32 {
    30 // EROFS on Linux
}
