//! The kernel's writeback cache on PLAIN (issue 17): buffered writes are acknowledged before
//! they reach the daemon, so these tests pin down what that may and may not change. A write
//! past the end fails at fsync and the size stays the volume's; O_TRUNC is ignored as on a
//! block device; a crash before the write-back loses only pages that were never fsynced, and
//! such a write is never reported durable. The backing file is read back with the Python
//! oracle (tests/oracle/xts.py) and a key from `cryptsetup luksDump --dump-volume-key`.
use crate::reliability::vd_rt;
use crate::support::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const PAGE: usize = 4096;

/// What the backing file holds at plaintext `offset..offset+len`, decrypted by the oracle.
fn on_disk(v: &Vol, offset: u64, len: u64) -> Vec<u8> {
    let vk = cryptsetup_volume_key(&v.backing, &v.key);
    let whole = oracle_decrypt(&vk, &v.backing, DATA_OFFSET, offset + len, 4096, 0);
    whole[offset as usize..].to_vec()
}

fn plain_len(plain: &Path) -> u64 {
    fs::metadata(plain).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_write_past_the_end_fails_at_fsync_and_keeps_the_size() {
    let test = "a_write_past_the_end_fails_at_fsync_and_keeps_the_size";
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let size = 8 * MIB;
    let v = Vol::new("8M", &[]);
    let m = v.open();
    assert_eq!(plain_len(&v.plain), size, "size right after open");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&v.plain)
        .unwrap();
    // 16 KiB straddling the end: 8 KiB inside, 8 KiB past it.
    let data = pattern(4 * PAGE, 3);
    let off = size - 2 * PAGE as u64;
    let err = match f.write_at(&data, off) {
        Ok(_) => f.sync_all().expect_err("fsync after a write past the end"),
        Err(e) => e,
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || plain_len(&v.plain) == size),
        "size after a write past the end: {}",
        plain_len(&v.plain)
    );
    // The part inside the volume was kept; nothing is readable past the end.
    let mut back = vec![0u8; 4 * PAGE];
    let n = f.read_at(&mut back, off).unwrap();
    assert_eq!(n, 2 * PAGE, "read past the end");
    assert!(back[..n] == data[..n], "the part inside the volume");
    f.sync_all().expect("fsync once the error was reported");
    drop(f);

    // O_TRUNC is ignored (as on a block device): size and data stay.
    let head = pattern(64 * 1024, 4);
    write_plain(&v.plain, 0, &head);
    let g = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&v.plain)
        .expect("open with O_TRUNC");
    assert_eq!(plain_len(&v.plain), size, "size after O_TRUNC");
    // ftruncate to another size (`truncate -s 0 PLAIN`) is refused.
    let e = g.set_len(0).expect_err("ftruncate to 0");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(g);
    assert!(
        read_range(&v.plain, 0, head.len() as u64) == head,
        "data after O_TRUNC"
    );
    // dd without conv=notrunc (O_TRUNC) of more than fits: ENOSPC, the size stays.
    let src = data_file(v.dir.path(), "big", &pattern(9 * MIB as usize, 5));
    let out = run(
        "dd",
        &[
            &format!("if={}", s(&src)),
            &format!("of={}", s(&v.plain)),
            "bs=1M",
            "conv=fsync",
        ],
        None,
    );
    assert_ne!(out.code, 0, "dd of 9 MiB onto 8 MiB:\n{}", out.describe());
    assert!(out.stderr.contains("No space left"), "{}", out.stderr);
    assert!(wait_until(Duration::from_secs(10), || plain_len(&v.plain) == size));
    m.close();
    let expect = pattern(9 * MIB as usize, 5);
    assert!(
        on_disk(&v, 0, size) == expect[..size as usize],
        "the first 8 MiB of dd's input are on disk"
    );
}

/// kill -9 right after buffered writes: fsynced data is all there, each page of the unsynced
/// write is either the new data or the old (never anything else), and fsync on the open file
/// fails afterwards, so the unsynced write is never reported durable.
#[test]
fn a_crash_before_writeback_loses_only_unsynced_pages() {
    let test = "a_crash_before_writeback_loses_only_unsynced_pages";
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let v = Vol::new("16M", &[]);
    let rt = v.dir.path().join("rt");
    let open = |extra: &[&str]| {
        let mut args = vec!["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)];
        args.extend_from_slice(extra);
        vd_rt(&rt, &args).ok();
        Mount::new(&v.plain)
    };
    let m = open(&[]);
    let f = OpenOptions::new().write(true).open(&v.plain).unwrap();
    let synced = pattern(4 * MIB as usize, 11);
    let old = pattern(8 * MIB as usize, 12);
    f.write_all_at(&synced, 0).unwrap();
    f.write_all_at(&old, 4 * MIB).unwrap();
    f.sync_data().unwrap();
    let pid = {
        let out = vd_rt(&rt, &["status", "--json"]).ok();
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        j[0]["pid"].as_u64().unwrap() as i32
    };
    let new = pattern(8 * MIB as usize, 13);
    f.write_all_at(&new, 4 * MIB).unwrap();
    // At once, so that (usually) some pages are still only in the page cache.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(30), || !Path::new(
        &format!("/proc/{pid}")
    )
    .exists()));
    let e = f.sync_data().expect_err("fsync after the daemon died");
    eprintln!("{test}: fsync after kill -9: {e}");
    drop(f);
    vd_rt(&rt, &["close", s(&v.plain)]).ok();
    std::mem::forget(m);

    let disk = on_disk(&v, 0, 12 * MIB);
    assert!(disk[..synced.len()] == synced[..], "fsynced data lost");
    let (mut kept, mut lost) = (0, 0);
    for (i, page) in disk[4 * MIB as usize..].chunks(PAGE).enumerate() {
        let range = i * PAGE..(i + 1) * PAGE;
        if page == &new[range.clone()] {
            kept += 1;
        } else if page == &old[range] {
            lost += 1;
        } else {
            panic!("page {i} of the unsynced write is neither the old nor the new data");
        }
    }
    eprintln!("{test}: of 2048 unsynced pages {kept} reached the disk, {lost} were lost");
    // And the volume opens and serves what is on disk.
    let m = open(&["--read-only"]);
    assert!(
        read_range(&v.plain, 0, 12 * MIB) == disk,
        "PLAIN after reopening"
    );
    vd_rt(&rt, &["close", s(&v.plain)]).ok();
    std::mem::forget(m);
}
