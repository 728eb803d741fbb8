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
    .fails_with(1);
    one_error_line(&out.stderr).unwrap();
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
