//! Block devices and windows as BACKING (issue 13): loop devices from losetup over volumes
//! cryptsetup made, read-only devices (`blockdev --setro`), a mounted ext4 device (exit 5),
//! `format --batch` onto a device (checked by cryptsetup), and `--partition` /
//! `--device-offset`+`--device-size` on a GPT image from sgdisk whose partition 2 cryptsetup
//! formatted through `losetup -o/--sizelimit`; plaintext checked with the Python XTS oracle
//! and the bytes outside the partition by SHA-256 before and after a read-write open.
use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A loop device, optionally over a window of its file; set read-write again and detached on
/// drop (a loop device keeps its read-only flag for the next user otherwise).
struct Loop {
    dev: String,
}

impl Loop {
    fn attach(file: &Path, window: Option<(u64, u64)>) -> Loop {
        let mut args = vec!["-f".to_string(), "--show".to_string()];
        if let Some((offset, size)) = window {
            args.extend([
                "-o".into(),
                offset.to_string(),
                "--sizelimit".into(),
                size.to_string(),
            ]);
        }
        args.push(s(file).into());
        let out = sys("losetup", &args).ok();
        Loop {
            dev: out.stdout.trim().to_string(),
        }
    }

    fn path(&self) -> &Path {
        Path::new(&self.dev)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let t = std::time::Duration::from_secs(30);
        let _ = try_run(tool("blockdev"), &["--setrw", &self.dev], None, t);
        let _ = try_run(tool("losetup"), &["-d", &self.dev], None, t);
    }
}

/// A file system mounted from a device; unmounted on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = try_run(
            tool("umount"),
            &[s(&self.0)],
            None,
            std::time::Duration::from_secs(30),
        );
    }
}

/// `cryptsetup luksFormat` of `target` (a file or device) with cheap PBKDF2, 4096-byte sectors.
fn luks_format(target: &Path, key: &Path) {
    let mut args = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--sector-size",
        "4096",
        "--key-file",
        s(key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(target));
    sys("cryptsetup", &args).ok();
}

fn digest(backing: &Path, key: &Path, extra: &[&str]) -> String {
    let mut args = vec!["digest", s(backing), "--key-file", s(key)];
    args.extend_from_slice(extra);
    let out = vd(&args).ok();
    out.stdout.split_whitespace().next().unwrap().to_string()
}

#[test]
fn loop_device_over_a_cryptsetup_volume() {
    if !require(
        "devices::loop_device_over_a_cryptsetup_volume",
        &["loop", "fuse", "cryptsetup", "python3-cryptography"],
    ) {
        return;
    }
    let t = temp();
    let img = t.path().join("v.img");
    let key = write_key(t.path(), "k", PASS);
    set_len(&img, 32 * MIB);
    luks_format(&img, &key);
    let vk = cryptsetup_volume_key(&img, &key);
    let data = pattern(256 * KIB as usize, 7);
    let plain_src = data_file(t.path(), "src", &data);
    oracle_encrypt_into(&vk, &plain_src, &img, DATA_OFFSET, 4096);
    let want = digest(&img, &key, &[]);
    let lo = Loop::attach(&img, None);
    let dev = lo.path();
    // Before: "not a LUKS volume (only 0 bytes)", exit 4 (metadata of a device says 0).
    let (v, _) = dump_json(dev);
    assert_eq!(v["version"], 2, "{v}");
    vd(&["test-key", s(dev), "--key-file", s(&key)]).ok();
    assert_eq!(digest(dev, &key, &[]), want);
    let plain = t.path().join("plain");
    {
        let _m = open_volume(dev, &plain, &key, &[]);
        assert_eq!(fs::metadata(&plain).unwrap().len(), 16 * MIB);
        assert_eq!(read_range(&plain, 0, data.len() as u64), data);
        write_plain(&plain, MIB, b"written through a loop device");
    }
    let back = oracle_decrypt(&vk, &img, DATA_OFFSET + MIB, 4096, 4096, MIB / 512);
    assert_eq!(&back[..29], b"written through a loop device");
}

#[test]
fn read_only_device_opens_read_only_only() {
    if !require(
        "devices::read_only_device_opens_read_only_only",
        &["loop", "fuse", "cryptsetup", "blockdev"],
    ) {
        return;
    }
    let t = temp();
    let img = t.path().join("v.img");
    let key = write_key(t.path(), "k", PASS);
    set_len(&img, 24 * MIB);
    luks_format(&img, &key);
    let lo = Loop::attach(&img, None);
    sys("blockdev", &["--setro", &lo.dev]).ok();
    let plain = t.path().join("plain");
    let before = sha256_file(&img);
    let out = open_fails(
        &["open", &lo.dev, s(&plain), "--key-file", s(&key)],
        None,
        &plain,
        2,
    );
    assert!(
        out.stderr.contains("read-only block device"),
        "{}",
        out.describe()
    );
    one_error_line(&out.stderr).unwrap();
    let out = vd(&[
        "add-key",
        &lo.dev,
        "--key-file",
        s(&key),
        "--new-key-file",
        s(&key),
    ])
    .fails_with(2);
    assert!(
        out.stderr.contains("read-only block device"),
        "{}",
        out.describe()
    );
    {
        let _m = open_volume(lo.path(), &plain, &key, &["--read-only"]);
        assert_eq!(fs::metadata(&plain).unwrap().len(), 8 * MIB);
    }
    assert_eq!(sha256_file(&img), before);
}

#[test]
fn mounted_device_is_refused() {
    if !require(
        "devices::mounted_device_is_refused",
        &["loop", "root", "mkfs.ext4"],
    ) {
        return;
    }
    let t = temp();
    let img = t.path().join("fs.img");
    let key = write_key(t.path(), "k", PASS);
    set_len(&img, 32 * MIB);
    let lo = Loop::attach(&img, None);
    sys("mkfs.ext4", &["-q", &lo.dev]).ok();
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    sys("mount", &[&lo.dev, s(&mnt)]).ok();
    let _mounted = Mounted(mnt.clone());
    let plain = t.path().join("plain");
    let out = open_fails(
        &["open", &lo.dev, s(&plain), "--key-file", s(&key)],
        None,
        &plain,
        5,
    );
    assert!(out.stderr.contains("is in use"), "{}", out.describe());
    one_error_line(&out.stderr).unwrap();
    // Even with --force: the kernel holds it.
    let mut args = vec![
        "format",
        &lo.dev,
        "--size",
        "8M",
        "--key-file",
        s(&key),
        "--batch",
        "--force",
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    let out = vd(&args).fails_with(5);
    one_error_line(&out.stderr).unwrap();
    vd(&["erase", &lo.dev, "--batch"]).fails_with(5);
    drop(_mounted);
    // Unmounted, it still holds ext4: format without --force is refused, nothing written.
    let before = sha256_file(&img);
    let mut args = vec![
        "format",
        &lo.dev,
        "--size",
        "8M",
        "--key-file",
        s(&key),
        "--batch",
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    let out = vd(&args).fails_with(5);
    assert!(out.stderr.contains("ext2/3/4"), "{}", out.describe());
    one_error_line(&out.stderr).unwrap();
    assert_eq!(sha256_file(&img), before);
}

#[test]
fn format_onto_a_blank_device() {
    if !require(
        "devices::format_onto_a_blank_device",
        &["loop", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let img = t.path().join("blank.img");
    let key = write_key(t.path(), "k", PASS);
    set_len(&img, 40 * MIB);
    let lo = Loop::attach(&img, None);
    let mut args = vec!["format", &lo.dev, "--size", "24M", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    // Not a terminal and no --batch: refused, nothing written.
    let out = vd_in(&args, b"YES\n").fails_with(1);
    assert!(out.stderr.contains("--batch"), "{}", out.describe());
    assert_eq!(read_range(&img, 0, 4096), vec![0u8; 4096]);
    args.push("--batch");
    vd(&args).ok();
    assert!(cryptsetup_accepts(lo.path(), &key));
    let cj = cryptsetup_json(lo.path());
    assert_eq!(cj["segments"]["0"]["size"], "dynamic", "{cj}");
    // Written in place: the device (and its file) keep their size.
    assert_eq!(fs::metadata(&img).unwrap().len(), 40 * MIB);
    vd(&["test-key", &lo.dev, "--key-file", s(&key)]).ok();
    // A second format over the LUKS header needs --force; a smaller --size is a fixed segment.
    args.retain(|a| *a != "24M");
    args.insert(3, "8M");
    vd(&args).fails_with(5);
    args.push("--force");
    vd(&args).ok();
    let cj = cryptsetup_json(lo.path());
    assert_eq!(cj["segments"]["0"]["size"], (8 * MIB).to_string(), "{cj}");
    // resize grows to what the device holds, never past it.
    vd(&["resize", &lo.dev, "--size", "24M"]).ok();
    assert!(cryptsetup_accepts(lo.path(), &key));
    vd(&["resize", &lo.dev, "--size", "32M"]).fails_with(1);
}

/// A GPT image (sgdisk) with partition 1 (8 MiB, left alone) and partition 2 (40 MiB) that
/// cryptsetup formatted through a loop device over the partition's window. Returns (image,
/// partition 2's offset and size).
fn gpt_with_luks_partition(dir: &Path, key: &Path) -> (PathBuf, u64, u64) {
    let img = dir.join("disk.img");
    set_len(&img, 56 * MIB);
    sys("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+40M", s(&img)]).ok();
    let (off, size) = (2048 * 512 + 8 * MIB, 40 * MIB);
    // Partition 1 holds something that must not change.
    write_at(&img, 2048 * 512, &pattern(MIB as usize, 3)).unwrap();
    let lo = Loop::attach(&img, Some((off, size)));
    luks_format(lo.path(), key);
    drop(lo);
    (img, off, size)
}

#[test]
fn partition_of_a_gpt_image() {
    if !require(
        "devices::partition_of_a_gpt_image",
        &[
            "loop",
            "fuse",
            "sgdisk",
            "cryptsetup",
            "python3-cryptography",
        ],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let (img, off, size) = gpt_with_luks_partition(t.path(), &key);
    let part_img = t.path().join("p2.img");
    write_file(&part_img, &read_range(&img, off, size));
    let vk = cryptsetup_volume_key(&part_img, &key);
    // Oracle-encrypted data in the partition; vaultdisk must read it back.
    let data = pattern(300 * KIB as usize, 11);
    let src = data_file(t.path(), "src", &data);
    oracle_encrypt_into(&vk, &src, &img, off + DATA_OFFSET, 4096);

    // Without --partition the image has no LUKS header at 0.
    vd(&["dump", s(&img)]).fails_with(4);
    let p2 = ["--partition", "2"];
    let out = vd(&["dump", "--json", s(&img), "--partition", "2"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["version"], 2, "{v}");
    vd(&[
        "test-key",
        s(&img),
        "--partition",
        "2",
        "--key-file",
        s(&key),
    ])
    .ok();
    let mut want = data.clone();
    want.resize((size - DATA_OFFSET) as usize, 0);
    assert_eq!(digest(&img, &key, &p2), sha256(&want));
    let range = [
        "--device-offset".to_string(),
        off.to_string(),
        "--device-size".to_string(),
        size.to_string(),
    ];
    let range: Vec<&str> = range.iter().map(String::as_str).collect();
    assert_eq!(digest(&img, &key, &range), sha256(&want));
    let out = vd(&[
        "verify",
        s(&img),
        "--partition",
        "2",
        "--key-file",
        s(&key),
        "--digest",
    ])
    .ok();
    assert!(out.stdout.contains(&sha256(&want)), "{}", out.describe());

    let plain = t.path().join("plain");
    {
        let _m = open_volume(&img, &plain, &key, &["--read-only", "--partition", "2"]);
        assert_eq!(fs::metadata(&plain).unwrap().len(), size - DATA_OFFSET);
        assert_eq!(read_range(&plain, 0, data.len() as u64), data);
    }

    // Read-write: write at both ends of the plaintext; outside the partition nothing changes.
    let len = fs::metadata(&img).unwrap().len();
    let before = (
        sha256_range(&img, 0, off),
        sha256_range(&img, off + size, len - off - size),
    );
    let tail_at = size - DATA_OFFSET - 4096;
    {
        let _m = open_volume(&img, &plain, &key, &["--partition", "2"]);
        write_plain(&plain, 0, b"first sector of partition 2");
        write_plain(&plain, tail_at, &[0xA5; 4096]);
    }
    let after = (
        sha256_range(&img, 0, off),
        sha256_range(&img, off + size, len - off - size),
    );
    assert_eq!(before, after, "bytes outside partition 2 changed");
    let head = oracle_decrypt(&vk, &img, off + DATA_OFFSET, 4096, 4096, 0);
    assert_eq!(&head[..27], b"first sector of partition 2");
    let tail = oracle_decrypt(
        &vk,
        &img,
        off + DATA_OFFSET + tail_at,
        4096,
        4096,
        tail_at / 512,
    );
    assert_eq!(tail, vec![0xA5; 4096]);
    // cryptsetup still accepts the partition.
    let lo = Loop::attach(&img, Some((off, size)));
    assert!(cryptsetup_accepts(lo.path(), &key));
    drop(lo);

    // Bad inputs: one line each, nothing written.
    let whole = sha256_file(&img);
    let out = vd(&["dump", s(&img), "--partition", "3"]).fails_with(1);
    one_error_line(&out.stderr).unwrap();
    assert!(
        out.stderr.contains("partition 3 does not exist"),
        "{}",
        out.describe()
    );
    let out = vd(&[
        "test-key",
        s(&part_img),
        "--partition",
        "1",
        "--key-file",
        s(&key),
    ])
    .fails_with(4);
    one_error_line(&out.stderr).unwrap();
    assert!(
        out.stderr.contains("no partition table"),
        "{}",
        out.describe()
    );
    let out = vd(&[
        "dump",
        s(&img),
        "--device-offset",
        &off.to_string(),
        "--device-size",
        &len.to_string(),
    ])
    .fails_with(4);
    one_error_line(&out.stderr).unwrap();
    assert!(
        out.stderr.contains("does not fit the disk"),
        "{}",
        out.describe()
    );
    let out = open_fails(
        &[
            "open",
            s(&img),
            s(&plain),
            "--partition",
            "1",
            "--key-file",
            s(&key),
        ],
        None,
        &plain,
        4,
    );
    one_error_line(&out.stderr).unwrap();
    assert_eq!(sha256_file(&img), whole);
}

/// A partition of a block device: the loop device over the whole image, `--partition 2`.
#[test]
fn partition_of_a_loop_device() {
    if !require(
        "devices::partition_of_a_loop_device",
        &["loop", "sgdisk", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let (img, _, _) = gpt_with_luks_partition(t.path(), &key);
    let lo = Loop::attach(&img, None);
    vd(&[
        "test-key",
        &lo.dev,
        "--partition",
        "2",
        "--key-file",
        s(&key),
    ])
    .ok();
    vd(&["dump", &lo.dev, "--partition", "2"]).ok();
}

/// `mount --partition 2 --mkfs ext4` on a GPT image: the filesystem lives in the partition,
/// survives a remount, and nothing outside the partition changes.
#[test]
fn mount_a_partition_of_a_gpt_image() {
    if !require(
        "devices::mount_a_partition_of_a_gpt_image",
        &["loop", "fuse", "sgdisk", "cryptsetup", "mkfs.ext4"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let (img, off, size) = gpt_with_luks_partition(t.path(), &key);
    let before = sha256_range(&img, 0, off);
    let len = fs::metadata(&img).unwrap().len();
    let after_part = sha256_range(&img, off + size, len - off - size);
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "mount",
            s(&img),
            s(&mnt),
            "--partition",
            "2",
            "--key-file",
            s(&key),
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    vd(&args(&["--mkfs", "ext4"])).ok();
    fs::write(mnt.join("hello.txt"), b"in partition 2").unwrap();
    vd(&["umount", s(&mnt)]).ok();
    vd(&args(&["--read-only"])).ok();
    assert_eq!(fs::read(mnt.join("hello.txt")).unwrap(), b"in partition 2");
    vd(&["umount", s(&mnt)]).ok();
    assert_eq!(
        sha256_range(&img, 0, off),
        before,
        "bytes before partition 2 changed"
    );
    assert_eq!(
        sha256_range(&img, off + size, len - off - size),
        after_part,
        "bytes after partition 2 changed"
    );
    assert!(cryptsetup_accepts_at(&img, off, size, &key));
}

/// cryptsetup's view of the LUKS volume in a byte window of `img` (a loop device over it).
fn cryptsetup_accepts_at(img: &Path, off: u64, size: u64, key: &Path) -> bool {
    let lo = Loop::attach(img, Some((off, size)));
    cryptsetup_accepts(lo.path(), key)
}

/// The SHA-256 of the bytes before and after the window `[off, off + size)` of `img`, and
/// its length: what a verb confined to the window must leave as it was.
fn outside(img: &Path, off: u64, size: u64) -> (String, String, u64) {
    let len = fs::metadata(img).unwrap().len();
    (
        sha256_range(img, 0, off),
        sha256_range(img, off + size, len - off - size),
        len,
    )
}

/// `cryptsetup luksDump --dump-json-metadata` of the LUKS volume in a byte window of `img`.
fn cryptsetup_json_at(img: &Path, off: u64, size: u64) -> serde_json::Value {
    let lo = Loop::attach(img, Some((off, size)));
    cryptsetup_json(lo.path())
}

/// `vaultdisk format --partition N` / `--device-offset --device-size` (issue 13): the volume
/// is made inside the window of a GPT image (sgdisk), an MBR image (sfdisk) and a raw window
/// of a file, every byte outside the window unchanged (SHA-256), the file's length too, and
/// cryptsetup accepts the result through `losetup -o/--sizelimit`; a partition filled is a
/// "dynamic" segment, a smaller --size a fixed one; a second format needs --force.
#[test]
fn format_into_a_partition_or_a_window() {
    if !require(
        "devices::format_into_a_partition_or_a_window",
        &["loop", "sgdisk", "sfdisk", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    // GPT: partition 1 holds a pattern, partition 2 (40 MiB) is filled with noise.
    let img = t.path().join("gpt.img");
    set_len(&img, 56 * MIB);
    sys("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+40M", s(&img)]).ok();
    let (off, size) = (2048 * 512 + 8 * MIB, 40 * MIB);
    write_at(&img, 2048 * 512, &pattern(8 * MIB as usize, 3)).unwrap();
    write_at(&img, off, &pattern(size as usize, 4)).unwrap();
    let before = outside(&img, off, size);
    let mut args = vec!["format", s(&img), "--partition", "2", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    assert_eq!(
        outside(&img, off, size),
        before,
        "bytes outside partition 2 changed"
    );
    assert!(cryptsetup_accepts_at(&img, off, size, &key));
    let cj = cryptsetup_json_at(&img, off, size);
    assert_eq!(cj["segments"]["0"]["size"], "dynamic", "{cj}");
    assert_eq!(
        cj["segments"]["0"]["offset"],
        (16 * MIB).to_string(),
        "{cj}"
    );
    vd(&[
        "test-key",
        s(&img),
        "--partition",
        "2",
        "--key-file",
        s(&key),
    ])
    .ok();
    // The LUKS header now there: a second format is refused (5) and writes nothing.
    let whole = sha256_file(&img);
    let out = vd(&args).fails_with(5);
    one_error_line(&out.stderr).unwrap();
    assert_eq!(sha256_file(&img), whole);
    // A smaller --size (and --force) is a fixed segment.
    args.extend_from_slice(&["--size", "8M", "--force"]);
    vd(&args).ok();
    assert_eq!(outside(&img, off, size), before);
    let cj = cryptsetup_json_at(&img, off, size);
    assert_eq!(cj["segments"]["0"]["size"], (8 * MIB).to_string(), "{cj}");

    // MBR (sfdisk): primary partition 1 from sector 2048, 40 MiB.
    let mbr = t.path().join("mbr.img");
    set_len(&mbr, 48 * MIB);
    write_at(&mbr, 0, &pattern(48 * MIB as usize, 5)).unwrap();
    run(
        tool("sfdisk"),
        &["-q", s(&mbr)],
        Some(b"label: dos\nstart=2048, size=81920, type=83\n"),
    )
    .ok();
    let (moff, msize) = (2048 * 512, 40 * MIB);
    let before = outside(&mbr, moff, msize);
    let mut args = vec!["format", s(&mbr), "--partition", "1", "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    // Noise is no known signature: no --force needed.
    vd(&args).ok();
    assert_eq!(
        outside(&mbr, moff, msize),
        before,
        "bytes outside the MBR partition changed"
    );
    assert!(cryptsetup_accepts_at(&mbr, moff, msize, &key));

    // A raw window of a file without a table.
    let raw = t.path().join("raw.img");
    write_file(&raw, &pattern(64 * MIB as usize, 6));
    let (roff, rsize) = (4 * MIB, 32 * MIB);
    let before = outside(&raw, roff, rsize);
    let (o, z) = (roff.to_string(), rsize.to_string());
    let mut args = vec![
        "format",
        s(&raw),
        "--device-offset",
        &o,
        "--device-size",
        &z,
        "--size",
        "12M",
        "--key-file",
        s(&key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    assert_eq!(
        outside(&raw, roff, rsize),
        before,
        "bytes outside the window changed"
    );
    assert!(cryptsetup_accepts_at(&raw, roff, rsize, &key));
    let cj = cryptsetup_json_at(&raw, roff, rsize);
    assert_eq!(cj["segments"]["0"]["size"], (12 * MIB).to_string(), "{cj}");
    // More than the window holds: exit 1, nothing written.
    let whole = sha256_file(&raw);
    let mut big = args.clone();
    big[7] = "17M";
    big.push("--force");
    vd(&big).fails_with(1);
    assert_eq!(sha256_file(&raw), whole);
    // A detached header for the data in the window: nothing of the file is written, and
    // cryptsetup opens it with --header over the window's loop device.
    let hdr = t.path().join("hdr");
    let mut args = vec![
        "format",
        s(&raw),
        "--header",
        s(&hdr),
        "--device-offset",
        &o,
        "--device-size",
        &z,
        "--key-file",
        s(&key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    assert_eq!(
        sha256_file(&raw),
        whole,
        "format --header wrote to the data"
    );
    let lo = Loop::attach(&raw, Some((roff, rsize)));
    let out = sys(
        "cryptsetup",
        &[
            "open",
            "--test-passphrase",
            "--header",
            s(&hdr),
            "--key-file",
            s(&key),
            s(lo.path()),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.describe());
    drop(lo);
    vd(&[
        "test-key",
        s(&raw),
        "--header",
        s(&hdr),
        "--device-offset",
        &o,
        "--key-file",
        s(&key),
    ])
    .ok();
}

/// The header-writing verbs on partition 2 of a GPT image whose volume cryptsetup made:
/// add-key, change-key, add-recovery-key, remove-key, header backup and restore, repair and
/// erase, each with `--partition 2`; after each, cryptsetup (through `losetup -o/--sizelimit`)
/// sees the expected keys, and no byte outside the partition changed.
#[test]
fn header_verbs_on_a_partition() {
    if !require(
        "devices::header_verbs_on_a_partition",
        &["loop", "sgdisk", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let k2 = write_key(t.path(), "k2", b"second key");
    let k3 = write_key(t.path(), "k3", b"third key");
    let (img, off, size) = gpt_with_luks_partition(t.path(), &key);
    let before = outside(&img, off, size);
    let unchanged = |what: &str| assert_eq!(outside(&img, off, size), before, "{what}");
    let accepts = |k: &Path| cryptsetup_accepts_at(&img, off, size, k);
    let p2 = |verb: &[&str]| {
        let mut a: Vec<String> = verb.iter().map(|x| x.to_string()).collect();
        a.extend(["--partition".to_string(), "2".to_string()]);
        a
    };
    let mut add = p2(&[
        "add-key",
        s(&img),
        "--key-file",
        s(&key),
        "--new-key-file",
        s(&k2),
    ]);
    add.extend(CHEAP_PBKDF2.iter().map(|x| x.to_string()));
    vd(&add).ok();
    unchanged("add-key");
    assert!(accepts(&k2) && accepts(&key));
    // Backup (cryptsetup's own backup of the partition holds the same header area).
    let ours = t.path().join("hdr.bak");
    vd(&p2(&["header", "backup", s(&img), s(&ours)])).ok();
    let theirs = t.path().join("cs.bak");
    {
        let lo = Loop::attach(&img, Some((off, size)));
        sys(
            "cryptsetup",
            &[
                "luksHeaderBackup",
                s(lo.path()),
                "--header-backup-file",
                s(&theirs),
            ],
        )
        .ok();
    }
    assert_eq!(sha256_file(&ours), sha256_file(&theirs));
    let mut change = p2(&[
        "change-key",
        s(&img),
        "--key-file",
        s(&k2),
        "--new-key-file",
        s(&k3),
    ]);
    change.extend(CHEAP_PBKDF2.iter().map(|x| x.to_string()));
    vd(&change).ok();
    unchanged("change-key");
    assert!(accepts(&k3) && !accepts(&k2));
    let out = vd(&p2(&["add-recovery-key", s(&img), "--key-file", s(&key)])).ok();
    unchanged("add-recovery-key");
    let recovery = write_key(t.path(), "rk", out.stdout.trim().as_bytes());
    vd(&p2(&[
        "test-key",
        s(&img),
        "--recovery-key",
        "--key-file",
        s(&recovery),
    ]))
    .ok();
    vd(&p2(&["remove-key", s(&img), "--key-file", s(&k3)])).ok();
    unchanged("remove-key");
    assert!(!accepts(&k3) && accepts(&key));
    // Restore the backup: k2 opens again, k3 never did in it.
    vd(&p2(&["header", "restore", s(&img), s(&ours)])).ok();
    unchanged("header restore");
    assert!(accepts(&k2) && accepts(&key));
    // Repair: the secondary copy's magic zeroed, then rewritten from the primary.
    poke(&img, off + 16 * KIB, &[0u8; 8]);
    let out = vd(&p2(&["repair", s(&img)])).ok();
    assert!(
        out.stdout.contains("rewrote the secondary"),
        "{}",
        out.describe()
    );
    unchanged("repair");
    // The repaired secondary alone (primary wiped) still opens in cryptsetup.
    let saved = read_range(&img, off, 4096);
    poke(&img, off, &[0u8; 4096]);
    assert!(accepts(&key), "the repaired secondary copy does not open");
    poke(&img, off, &saved);
    // A crash mid-update (fault injection) leaves the partition opening with the old key.
    // Every crash point of add-key --partition 2, in both modes: the hook sees the writes
    // through the window (absolute offsets inside the partition only).
    if require_fault_injection("devices::header_verbs_on_a_partition") {
        let mut args = add.clone();
        args[5] = s(&k3).to_string();
        for mode in CrashMode::BOTH {
            for k in 1..30 {
                let out = std::process::Command::new(BIN)
                    .args(&args)
                    .envs(mode.env(k))
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("run vaultdisk");
                let code = out.status.code().unwrap_or(-1);
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(
                    code == 0 || code == 86,
                    "k={k} {}: exit {code}: {stderr}",
                    mode.name()
                );
                if mode == CrashMode::Power && code == 86 {
                    assert!(undone_writes(&stderr).is_some_and(|n| n <= 1), "{stderr}");
                }
                unchanged("crashed add-key");
                assert!(
                    accepts(&key),
                    "k={k} {}: the old key no longer opens",
                    mode.name()
                );
                if code == 0 {
                    assert!(k > 1, "{}: add-key never crashed", mode.name());
                    break;
                }
            }
        }
    }
    // Erase: the partition's header area is wiped, nothing else.
    vd(&p2(&["erase", s(&img), "--batch"])).ok();
    unchanged("erase");
    let lo = Loop::attach(&img, Some((off, size)));
    assert_ne!(sys("cryptsetup", &["isLuks", s(lo.path())]).code, 0);
}

/// `resize --partition 2`: a fixed segment grows within the partition (the file's length and
/// the bytes outside never change), never past it (exit 1, nothing written), and after sgdisk
/// grows the partition the volume grows to the partition's new size.
#[test]
fn resize_in_a_partition() {
    if !require(
        "devices::resize_in_a_partition",
        &["loop", "sgdisk", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let img = t.path().join("disk.img");
    set_len(&img, 96 * MIB);
    sys("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+40M", s(&img)]).ok();
    let (off, size) = (2048 * 512 + 8 * MIB, 40 * MIB);
    write_at(&img, 2048 * 512, &pattern(8 * MIB as usize, 3)).unwrap();
    let mut args = vec![
        "format",
        s(&img),
        "--partition",
        "2",
        "--size",
        "8M",
        "--key-file",
        s(&key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    vd(&args).ok();
    let before = outside(&img, off, size);
    vd(&["resize", s(&img), "--partition", "2", "--size", "20M"]).ok();
    assert_eq!(outside(&img, off, size), before);
    let cj = cryptsetup_json_at(&img, off, size);
    assert_eq!(cj["segments"]["0"]["size"], (20 * MIB).to_string(), "{cj}");
    let whole = sha256_file(&img);
    let out = vd(&["resize", s(&img), "--partition", "2", "--size", "25M"]).fails_with(1);
    one_error_line(&out.stderr).unwrap();
    assert!(
        out.stderr.contains("grow the partition first"),
        "{}",
        out.describe()
    );
    assert_eq!(sha256_file(&img), whole);
    // The partition grown to 72 MiB (same start): the volume grows to fill it.
    sys(
        "sgdisk",
        &["-d", "2", "-n", &format!("2:{}:+72M", off / 512), s(&img)],
    )
    .ok();
    let full = 72 * MIB - 16 * MIB;
    vd(&[
        "resize",
        s(&img),
        "--partition",
        "2",
        "--size",
        &full.to_string(),
    ])
    .ok();
    let cj = cryptsetup_json_at(&img, off, 72 * MIB);
    assert_eq!(cj["segments"]["0"]["size"], full.to_string(), "{cj}");
    assert!(cryptsetup_accepts_at(&img, off, 72 * MIB, &key));
    assert_eq!(fs::metadata(&img).unwrap().len(), 96 * MIB);
    // sgdisk rewrote the tables; partition 1 is as it was.
    assert_eq!(
        sha256_range(&img, 2048 * 512, 8 * MIB),
        sha256(&pattern(8 * MIB as usize, 3))
    );
}

/// `open --partition 2 --allow-discards --persistent` stores the flag in the partition's
/// header (cryptsetup shows it), nothing outside the partition written.
#[test]
fn persistent_discards_in_a_partition() {
    if !require(
        "devices::persistent_discards_in_a_partition",
        &["loop", "fuse", "sgdisk", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let (img, off, size) = gpt_with_luks_partition(t.path(), &key);
    let before = outside(&img, off, size);
    let plain = t.path().join("plain");
    let m = open_volume(
        &img,
        &plain,
        &key,
        &["--partition", "2", "--allow-discards", "--persistent"],
    );
    m.close();
    assert_eq!(outside(&img, off, size), before);
    let cj = cryptsetup_json_at(&img, off, size);
    assert_eq!(
        cj["config"]["flags"],
        serde_json::json!(["allow-discards"]),
        "{cj}"
    );
}

/// Two volumes of one image: while partition 2 is open read-write, opening it again, opening
/// partition 1 and updating partition 1's header are all refused (exit 5, one line saying
/// the lock covers the whole image) and change nothing; after close both work.
#[test]
fn partitions_of_one_image_are_open_one_at_a_time() {
    if !require(
        "devices::partitions_of_one_image_are_open_one_at_a_time",
        &["loop", "fuse", "sgdisk", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let k2 = write_key(t.path(), "k2", b"second key");
    let (img, _, _) = gpt_with_luks_partition(t.path(), &key);
    // Partition 1 gets a volume of its own (cryptsetup, through a loop device).
    let p1 = Loop::attach(&img, Some((2048 * 512, 8 * MIB)));
    let mut args = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--luks2-keyslots-size",
        "1M",
    ];
    args.extend_from_slice(&["--luks2-metadata-size", "16k", "--key-file", s(&key)]);
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(p1.path()));
    sys("cryptsetup", &args).ok();
    drop(p1);
    vd(&[
        "test-key",
        s(&img),
        "--partition",
        "1",
        "--key-file",
        s(&key),
    ])
    .ok();
    let plain = t.path().join("plain");
    let plain1 = t.path().join("plain1");
    let m = open_volume(&img, &plain, &key, &["--partition", "2"]);
    let whole = sha256_file(&img);
    let refused = |args: &[&str], plain: Option<&Path>| {
        let out = match plain {
            Some(p) => open_fails(args, None, p, 5),
            None => vd(args).fails_with(5),
        };
        one_error_line(&out.stderr).unwrap();
        assert!(
            out.stderr.contains("the lock covers all of"),
            "{}",
            out.describe()
        );
    };
    let open1 = [
        "open",
        s(&img),
        s(&plain1),
        "--partition",
        "1",
        "--key-file",
        s(&key),
    ];
    refused(&open1, Some(&plain1));
    let open2 = [
        "open",
        s(&img),
        s(&plain1),
        "--partition",
        "2",
        "--key-file",
        s(&key),
    ];
    refused(&open2, Some(&plain1));
    let mut add1 = vec![
        "add-key",
        s(&img),
        "--partition",
        "1",
        "--key-file",
        s(&key),
    ];
    add1.extend_from_slice(&["--new-key-file", s(&k2)]);
    add1.extend_from_slice(CHEAP_PBKDF2);
    refused(&add1, None);
    m.close();
    assert_eq!(
        sha256_file(&img),
        whole,
        "a refused verb wrote to the image"
    );
    vd(&add1).ok();
    // Read-only opens of the two partitions share the lock.
    let m1 = open_volume(&img, &plain1, &k2, &["--partition", "1", "--read-only"]);
    let m2 = open_volume(&img, &plain, &key, &["--partition", "2", "--read-only"]);
    m2.close();
    m1.close();
}

/// vault enroll / list / rewrap / remove with `--partition 2` of a GPT image: the header
/// inside the partition changes (cryptsetup sees the token through a loop device over the
/// window), nothing outside the partition does, and the vault keyslot opens the volume.
#[test]
fn vault_verbs_on_a_partition() {
    if !require(
        "devices::vault_verbs_on_a_partition",
        &["loop", "sgdisk", "cryptsetup"],
    ) {
        return;
    }
    let Some(bao) = BaoDev::start("devices::vault_verbs_on_a_partition") else {
        return;
    };
    let t = temp();
    let key = write_key(t.path(), "k", PASS);
    let (img, off, size) = gpt_with_luks_partition(t.path(), &key);
    let len = fs::metadata(&img).unwrap().len();
    let before = sha256_range(&img, 0, off);
    let after = sha256_range(&img, off + size, len - off - size);
    let i = s(&img);
    let p2 = ["--partition", "2"];
    let with = |verb: &[&str]| -> Vec<String> {
        verb.iter()
            .chain(p2.iter())
            .map(|a| a.to_string())
            .collect()
    };
    let args = with(&[
        "vault",
        "enroll",
        i,
        "--key-file",
        s(&key),
        "--transit-key",
        "disk",
        "--create",
    ]);
    bao.vd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let args = with(&["vault", "list", i, "--json"]);
    let listed = bao
        .vd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    let args = with(&["test-key", i, "--token-only"]);
    let out = bao
        .vd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    {
        let lo = Loop::attach(&img, Some((off, size)));
        let j = cryptsetup_json(lo.path());
        assert_eq!(j["tokens"]["0"]["type"], "vaultdisk-vault", "{j}");
    }
    bao.cli(&["write", "-f", "transit/keys/disk/rotate"]).ok();
    let args = with(&["vault", "rewrap", i]);
    bao.vd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let args = with(&["vault", "remove", i, "--token", "0"]);
    bao.vd(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    {
        let lo = Loop::attach(&img, Some((off, size)));
        let j = cryptsetup_json(lo.path());
        assert!(j["tokens"].as_object().unwrap().is_empty(), "{j}");
        assert!(cryptsetup_accepts(lo.path(), &key));
    }
    assert_eq!(
        sha256_range(&img, 0, off),
        before,
        "bytes before the partition changed"
    );
    assert_eq!(
        sha256_range(&img, off + size, len - off - size),
        after,
        "bytes after the partition changed"
    );
}

/// An image and a loop device over it are different inodes: a daemon on either holds the
/// other off (exit 5, naming the loop device's file), and a header update through the loop
/// device waits for no daemon on the image; nothing is written by a refused verb.
#[test]
fn an_image_and_a_loop_device_over_it_are_one_volume() {
    if !require(
        "devices::an_image_and_a_loop_device_over_it_are_one_volume",
        &["loop", "fuse", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let img = t.path().join("v.img");
    let key = write_key(t.path(), "k", PASS);
    let k2 = write_key(t.path(), "k2", b"second key");
    set_len(&img, 32 * MIB);
    luks_format(&img, &key);
    let lo = Loop::attach(&img, None);
    let dev = lo.path();
    let plain = t.path().join("plain");
    let plain2 = t.path().join("plain2");
    let mut add = vec!["add-key", s(dev), "--key-file", s(&key)];
    add.extend_from_slice(&["--new-key-file", s(&k2)]);
    add.extend_from_slice(CHEAP_PBKDF2);
    // A daemon on the image: the loop device over it is refused, for open and for an update.
    let m = open_volume(&img, &plain, &key, &[]);
    let before = sha256_file(&img);
    let out = open_fails(
        &["open", s(dev), s(&plain2), "--key-file", s(&key)],
        None,
        &plain2,
        5,
    );
    one_error_line(&out.stderr).unwrap();
    assert!(
        out.stderr.contains("is a loop device over"),
        "{}",
        out.describe()
    );
    let out = vd(&add).fails_with(5);
    one_error_line(&out.stderr).unwrap();
    m.close();
    assert_eq!(
        sha256_file(&img),
        before,
        "a refused verb wrote to the image"
    );
    // A daemon on the loop device: the image itself is refused.
    let m = open_volume(dev, &plain, &key, &[]);
    let out = open_fails(
        &["open", s(&img), s(&plain2), "--key-file", s(&key)],
        None,
        &plain2,
        5,
    );
    one_error_line(&out.stderr).unwrap();
    m.close();
    // Nothing open: the update through the loop device goes ahead.
    vd(&add).ok();
    vd(&["test-key", s(&img), "--key-file", s(&k2)]).ok();
}
