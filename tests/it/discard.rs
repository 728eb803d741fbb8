//! Discard: `--allow-discards` / `--persistent` on open and mount, FUSE fallocate
//! (PUNCH_HOLE, ZERO_RANGE) punching the backing file, `fstrim` on ext4 through the loop
//! device giving space back, and the header's persistent "allow-discards" flag (ours and
//! cryptsetup's). The 1 GiB figure of issue 13 is `scripts/discard-bench.sh`.

use crate::support::*;
use nix::fcntl::{FallocateFlags, fallocate};
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Allocated bytes of `path` (st_blocks, what du shows).
fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

fn punch(file: &fs::File, off: u64, len: u64) -> nix::Result<()> {
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
}

fn zero_range(file: &fs::File, off: u64, len: u64) -> nix::Result<()> {
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
}

fn rw(path: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

fn read_plain(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}

#[test]
fn fallocate_punches_only_with_allow_discards() {
    if !require_fuse("fallocate_punches_only_with_allow_discards") {
        return;
    }
    let v = Vol::new("8M", &[]);
    let size = 8 * MIB;
    let data = pattern(size as usize, 31);

    // Without the flag: refused with EOPNOTSUPP, nothing punched.
    let m = v.open();
    write_plain(&v.plain, 0, &data);
    let f = rw(&v.plain);
    f.sync_all().unwrap();
    let full = allocated(&v.backing);
    assert_eq!(punch(&f, 0, size), Err(nix::errno::Errno::EOPNOTSUPP));
    assert_eq!(
        zero_range(&f, 4096, 8192),
        Err(nix::errno::Errno::EOPNOTSUPP)
    );
    drop(f);
    assert!(read_plain(&v.plain) == data, "a refused punch changed data");
    m.close();
    assert!(
        allocated(&v.backing) >= full,
        "punched without --allow-discards"
    );

    // With it: whole sectors become holes, partial sectors are zeroed, the rest stays.
    let m = open_volume(&v.backing, &v.plain, &v.key, &["--allow-discards"]);
    let f = rw(&v.plain);
    let mut model = data.clone();
    let ranges: [(u64, u64, bool); 5] = [
        (MIB, 2 * MIB, false),                   // whole sectors
        (4 * MIB + 100, 64 * KIB + 1000, false), // partial head and tail
        (5 * MIB + 10, 20, true),                // inside one sector (ZERO_RANGE)
        (6 * MIB - 7, 14, false),                // across one sector boundary
        (7 * MIB + 4096, 512 * KIB, true),       // ZERO_RANGE of whole sectors
    ];
    for (off, len, zero) in ranges {
        if zero {
            zero_range(&f, off, len).unwrap();
        } else {
            punch(&f, off, len).unwrap();
        }
        model[off as usize..(off + len) as usize].fill(0);
    }
    f.sync_all().unwrap();
    drop(f);
    assert!(read_plain(&v.plain) == model, "plaintext after punches");
    m.close();
    let freed = full.saturating_sub(allocated(&v.backing));
    assert!(
        freed >= 2 * MIB + 512 * KIB,
        "only {freed} bytes freed in the backing"
    );
    // The holes read as zeros after a fresh open too, without the flag: no stale
    // ciphertext was left behind.
    let m = v.open();
    assert!(read_plain(&v.plain) == model, "plaintext after reopen");
    m.close();
}

#[test]
fn persistent_flag_is_stored_and_honoured() {
    if !require(
        "persistent_flag_is_stored_and_honoured",
        &["fuse", "cryptsetup"],
    ) {
        return;
    }
    let v = Vol::new("4M", &[]);
    // --persistent needs --allow-discards.
    let out = vd(&[
        "open",
        s(&v.backing),
        s(&v.plain),
        "--key-file",
        s(&v.key),
        "--persistent",
    ]);
    assert_ne!(out.code, 0, "{}", out.describe());
    assert!(!is_mounted(&v.plain));
    let m = open_volume(
        &v.backing,
        &v.plain,
        &v.key,
        &["--allow-discards", "--persistent"],
    );
    m.close();
    // cryptsetup reads the flag we stored, and so do we on the next open without it.
    let json = cryptsetup_json(&v.backing);
    assert_eq!(
        json["config"]["flags"],
        serde_json::json!(["allow-discards"])
    );
    let dump = sys("cryptsetup", &["luksDump", s(&v.backing)]).ok().stdout;
    assert!(
        dump.lines()
            .any(|l| l.trim_start().starts_with("Flags:") && l.contains("allow-discards")),
        "{dump}"
    );
    assert!(cryptsetup_accepts(&v.backing, &v.key));
    let m = v.open();
    write_plain(&v.plain, 0, &pattern(MIB as usize, 3));
    let f = rw(&v.plain);
    punch(&f, 0, MIB).expect("the stored flag allows discards");
    drop(f);
    assert!(read_plain(&v.plain)[..MIB as usize].iter().all(|&b| b == 0));
    m.close();
}

#[test]
fn cryptsetup_stored_flag_is_honoured() {
    if !require(
        "cryptsetup_stored_flag_is_honoured",
        &["fuse", "cryptsetup"],
    ) {
        return;
    }
    // cryptsetup stores the flag only with a device-mapper activation (open/refresh
    // --persistent); set config.flags as it writes it, both copies re-checksummed.
    let dir = temp();
    let backing = dir.path().join("cs.img");
    let key = write_key(dir.path(), "pass", PASS);
    fs::File::create(&backing)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let mut args = vec![
        "luksFormat",
        "--type",
        "luks2",
        "--batch-mode",
        "--key-file",
        s(&key),
    ];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push(s(&backing));
    sys("cryptsetup", &args).ok();
    crate::corrupt::edit_json_both(&backing, |j| {
        j["config"]["flags"] = serde_json::json!(["allow-discards"]);
    });
    let dump = sys("cryptsetup", &["luksDump", s(&backing)]).ok().stdout;
    assert!(dump.contains("allow-discards"), "{dump}");
    let plain = dir.path().join("plain");
    let m = open_volume(&backing, &plain, &key, &[]);
    write_plain(&plain, 4096, &pattern(64 * KIB as usize, 5));
    let f = rw(&plain);
    punch(&f, 4096, 64 * KIB).expect("cryptsetup's flag allows discards");
    let mut b = vec![1u8; 64 * KIB as usize];
    f.read_exact_at(&mut b, 4096).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    drop(f);
    m.close();
}

/// A volume mounted through `vaultdisk mount` (its own runtime directory), unmounted on drop.
struct Mounted {
    rt: PathBuf,
    mnt: PathBuf,
}

impl Mounted {
    fn new(v: &Vol, name: &str, extra: &[&str]) -> Mounted {
        let rt = v.dir.path().join(format!("rt-{name}"));
        let mnt = v.dir.path().join(format!("mnt-{name}"));
        fs::create_dir(&mnt).unwrap();
        let t = Mounted { rt, mnt };
        let mut args = vec!["mount", s(&v.backing), s(&t.mnt), "--key-file", s(&v.key)];
        args.extend_from_slice(extra);
        t.vd(&args).ok();
        t
    }

    fn vd(&self, args: &[&str]) -> Out {
        let rt = format!("VAULTDISK_RUNTIME_DIR={}", s(&self.rt));
        let mut all = vec![rt.as_str(), BIN];
        all.extend_from_slice(args);
        run("env", &all, None)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let rt = format!("VAULTDISK_RUNTIME_DIR={}", s(&self.rt));
            let _ = try_run(
                "env",
                &[rt.as_str(), BIN, "umount", s(&self.mnt)],
                None,
                Duration::from_secs(30),
            );
        }
        if is_mounted(&self.mnt) {
            force_unmount(&self.mnt);
        }
    }
}

/// Writes `total` bytes of files under `dir`, syncs, deletes them and syncs again.
fn write_and_delete(dir: &Path, total: u64) {
    let chunk = pattern(4 * MIB as usize, 77);
    let files = total / (4 * MIB);
    for i in 0..files {
        fs::write(dir.join(format!("f{i}")), &chunk).unwrap();
    }
    sys("sync", &[] as &[&str]).ok();
    for i in 0..files {
        fs::remove_file(dir.join(format!("f{i}"))).unwrap();
    }
    sys("sync", &[] as &[&str]).ok();
}

#[test]
fn fstrim_through_mount_gives_space_back() {
    if !require(
        "fstrim_through_mount_gives_space_back",
        &["root", "fuse", "loop", "mkfs.ext4", "mount", "fstrim"],
    ) {
        return;
    }
    let total = 64 * MIB;
    let v = Vol::new("160M", &[]);
    // Without the flag: fstrim gets nowhere (it may fail) and nothing is punched.
    {
        let t = Mounted::new(&v, "off", &["--mkfs", "ext4"]);
        write_and_delete(&t.mnt, total);
        let before = allocated(&v.backing);
        let _ = try_run(tool("fstrim"), &[s(&t.mnt)], None, TIMEOUT);
        sys("sync", &[] as &[&str]).ok();
        let after = allocated(&v.backing);
        eprintln!("fstrim without --allow-discards: backing allocated {before} -> {after} bytes");
        assert!(
            after >= before,
            "punched without --allow-discards: {before} -> {after}"
        );
        t.vd(&["umount", s(&t.mnt)]).ok();
    }
    let t = Mounted::new(&v, "on", &["--allow-discards"]);
    write_and_delete(&t.mnt, total);
    let before = allocated(&v.backing);
    let out = sys("fstrim", &["-v", s(&t.mnt)]).ok();
    sys("sync", &[] as &[&str]).ok();
    let after = allocated(&v.backing);
    let freed = before.saturating_sub(after);
    eprintln!(
        "fstrim: backing allocated {before} -> {after} bytes, {freed} freed of {total} deleted"
    );
    assert!(
        freed * 10 >= total * 9,
        "fstrim freed {freed} of {total} bytes ({before} -> {after}): {}",
        out.stdout
    );
    // The filesystem is still sound after the trim.
    fs::write(t.mnt.join("after"), b"still here\n").unwrap();
    t.vd(&["umount", s(&t.mnt)]).ok();
    let t = Mounted::new(&v, "again", &[]);
    assert_eq!(fs::read(t.mnt.join("after")).unwrap(), b"still here\n");
    t.vd(&["umount", s(&t.mnt)]).ok();
}

#[test]
fn block_device_backing_is_discarded() {
    if !require(
        "block_device_backing_is_discarded",
        &["root", "fuse", "loop"],
    ) {
        return;
    }
    // A loop device as BACKING: BLKDISCARD / BLKZEROOUT on it punch the file under it.
    let v = Vol::new("16M", &[]);
    let dev = LoopDev::attach(&v.backing);
    let devpath = PathBuf::from(&dev.dev);
    let m = open_volume(&devpath, &v.plain, &v.key, &["--allow-discards"]);
    let data = pattern(16 * MIB as usize, 8);
    write_plain(&v.plain, 0, &data);
    let f = rw(&v.plain);
    f.sync_all().unwrap();
    let full = allocated(&v.backing);
    let mut model = data;
    punch(&f, 2 * MIB, 8 * MIB + 100).unwrap();
    model[2 * MIB as usize..(10 * MIB + 100) as usize].fill(0);
    zero_range(&f, 12 * MIB - 50, 2 * MIB).unwrap();
    model[(12 * MIB - 50) as usize..(14 * MIB - 50) as usize].fill(0);
    f.sync_all().unwrap();
    drop(f);
    assert!(
        read_plain(&v.plain) == model,
        "plaintext after device discards"
    );
    m.close();
    let freed = full.saturating_sub(allocated(&v.backing));
    // 8 MiB of whole sectors discarded, less the partial tail sector written again
    // (BLKZEROOUT keeps its blocks allocated: the kernel issues it with NOUNMAP).
    assert!(
        freed >= 8 * MIB - 8 * KIB,
        "BLKDISCARD freed only {freed} bytes"
    );
    dev.detach();
}
