//! Real FUSE: PLAIN served from a header-less segment on a temp file, driven through std::fs,
//! compared with an in-memory model and with an independent decryption of the backing file.
//!
//! Needs /dev/fuse (and fusermount3 when not root); otherwise each test prints
//! `SKIP <test>: <reason>`, or fails when VAULTDISK_REQUIRE_ALL=1.
use crate::support::wait_until;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use vaultdisk::crypto::xts::SectorCipher;
use vaultdisk::daemon::{self, MountHandle, ServeSpec};
use vaultdisk::geometry::{SectorNo, Segment};
use vaultdisk::secret::{SecretBytes, VolumeKey};

const MIB: u64 = 1 << 20;

/// Whether a requirement holds; prints SKIP (or panics under VAULTDISK_REQUIRE_ALL=1) if not.
fn require(test: &str, ok: bool, reason: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {reason} (VAULTDISK_REQUIRE_ALL=1)");
    }
    crate::support::note_skip(test, reason);
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

fn is_root() -> bool {
    vaultdisk::sys::geteuid() == 0
}

fn require_fuse(test: &str) -> bool {
    require(test, Path::new("/dev/fuse").exists(), "/dev/fuse missing")
        && require(
            test,
            is_root() || on_path("fusermount3"),
            "fusermount3 missing (needed when not root)",
        )
}

fn random_key() -> (VolumeKey, Vec<u8>) {
    let key = SecretBytes::random(64).unwrap();
    let copy = key.expose_secret().to_vec();
    (VolumeKey(key), copy)
}

/// A temp dir with an empty backing file and a spec serving it as PLAIN (not yet created).
struct Fixture {
    dir: tempfile::TempDir,
    spec: ServeSpec,
}

fn fixture(size: u64, sector_size: u32, data_offset: u64, read_only: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk.img");
    File::create(&backing).unwrap();
    let spec = ServeSpec {
        backing,
        plain: dir.path().join("plain.img"),
        segment: Segment {
            data_offset_bytes: data_offset,
            data_size_bytes: size,
            sector_size,
            iv_tweak: 0,
        },
        read_only,
        foreground: true,
        allow_other: false,
        unlocked_by: "test key".into(),
        grow_with_file: false,
        allow_discards: false,
        bitlocker: false,
    };
    Fixture { dir, spec }
}

/// Decrypts the backing file with an independent SectorCipher (holes and short files read
/// as zeros, like the volume).
fn decrypt_backing(spec: &ServeSpec, key: &[u8]) -> Vec<u8> {
    let raw = fs::read(&spec.backing).unwrap();
    let seg = spec.segment;
    let ss = seg.sector_size as usize;
    let cipher = SectorCipher::new(key).unwrap();
    let mut out = vec![0u8; seg.data_size_bytes as usize];
    for (i, chunk) in out.chunks_exact_mut(ss).enumerate() {
        let off = seg.data_offset_bytes as usize + i * ss;
        if off >= raw.len() {
            break;
        }
        let end = (off + ss).min(raw.len());
        chunk[..end - off].copy_from_slice(&raw[off..end]);
        if chunk.iter().any(|&b| b != 0) {
            cipher.decrypt_sectors(chunk, ss, seg.iv_sector(SectorNo(i as u64)), seg.iv_step());
        }
    }
    out
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mount(f: &Fixture, key: &VolumeKey) -> MountHandle {
    daemon::serve_in_thread(&f.spec, key).unwrap()
}

#[test]
fn fuse_random_io_matches_model() {
    let test = "fuse_random_io_matches_model";
    if !require_fuse(test) {
        return;
    }
    for (sector_size, data_offset) in [(4096u32, 0u64), (512, MIB)] {
        let f = fixture(8 * MIB, sector_size, data_offset, false);
        let (key, key_bytes) = random_key();
        let handle = mount(&f, &key);
        let plain = handle.plain().to_path_buf();
        let meta = fs::metadata(&plain).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.len(), 8 * MIB, "stat size is exact");
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), vaultdisk::sys::geteuid());

        let size = 8 * MIB as usize;
        let mut model = vec![0u8; size];
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&plain)
            .unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(sector_size));
        for round in 0..400 {
            let off = rng.below(size as u64) as usize;
            let len = match rng.below(4) {
                0 => 1 + rng.below(64) as usize,
                1 => 1 + rng.below(3 * 4096) as usize,
                2 => 4096 * (1 + rng.below(64) as usize),
                _ => 1 + rng.below(2 * MIB) as usize,
            };
            if rng.below(2) == 0 {
                // Inside the volume: a write past the end is cached and fails only at fsync
                // (writeback cache), checked below.
                let len = len.min(size - off);
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let n = file.write_at(&data, off as u64).unwrap();
                assert_eq!(n, len, "round {round}: write at {off} len {len}");
                model[off..off + n].copy_from_slice(&data[..n]);
            } else {
                let mut buf = vec![0u8; len];
                let n = file.read_at(&mut buf, off as u64).unwrap();
                assert_eq!(n, len.min(size - off));
                assert_eq!(
                    &buf[..n],
                    &model[off..off + n],
                    "round {round}: read at {off}"
                );
            }
        }
        file.sync_all().unwrap();
        // At and past the end: reads give 0 bytes; a write is refused with ENOSPC, at once or
        // (cached) at fsync, and the size stays the volume's.
        let mut b = [0u8; 16];
        assert_eq!(file.read_at(&mut b, size as u64).unwrap(), 0);
        let e = match file.write_at(b"x", size as u64) {
            Ok(_) => file.sync_all().unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        assert!(
            wait_until(Duration::from_secs(10), || fs::metadata(&plain)
                .is_ok_and(|m| m.len() == size as u64)),
            "size after a write past the end: {:?}",
            fs::metadata(&plain).map(|m| m.len())
        );
        file.sync_all().unwrap();
        drop(file);
        assert_eq!(fs::read(&plain).unwrap(), model, "whole-file read");
        handle.unmount().unwrap();
        assert!(!plain.exists(), "PLAIN we created is removed after unmount");
        assert_eq!(
            decrypt_backing(&f.spec, &key_bytes),
            model,
            "backing holds ciphertext"
        );
        let raw = fs::read(&f.spec.backing).unwrap();
        assert_ne!(
            &raw[data_offset as usize..],
            &model[..raw.len() - data_offset as usize]
        );
    }
}

#[test]
fn fuse_concurrent_writers_through_plain() {
    let test = "fuse_concurrent_writers_through_plain";
    if !require_fuse(test) {
        return;
    }
    let f = fixture(4 * MIB, 4096, 0, false);
    let (key, key_bytes) = random_key();
    let handle = mount(&f, &key);
    let plain = Arc::new(handle.plain().to_path_buf());
    // Each thread owns disjoint, unaligned ranges that share sectors with its neighbours.
    let threads = 6usize;
    let width = 1500usize;
    let rounds = 150usize;
    let joins: Vec<_> = (0..threads)
        .map(|t| {
            let plain = Arc::clone(&plain);
            std::thread::spawn(move || {
                let file = OpenOptions::new().write(true).open(&*plain).unwrap();
                let mut last = Vec::new();
                for r in 0..rounds {
                    let v = vec![((t * rounds + r) % 251) as u8 + 1; width];
                    for rep in 0..3 {
                        let off = 100 + (rep * threads + t) * width;
                        file.write_all_at(&v, off as u64).unwrap();
                    }
                    last = v;
                }
                last
            })
        })
        .collect();
    let lasts: Vec<Vec<u8>> = joins.into_iter().map(|j| j.join().unwrap()).collect();
    let mut model = vec![0u8; 4 * MIB as usize];
    for (t, v) in lasts.iter().enumerate() {
        for rep in 0..3 {
            let off = 100 + (rep * threads + t) * width;
            model[off..off + width].copy_from_slice(v);
        }
    }
    assert_eq!(fs::read(&*plain).unwrap(), model);
    handle.unmount().unwrap();
    assert_eq!(decrypt_backing(&f.spec, &key_bytes), model);
}

#[test]
fn fuse_read_only_mount_refuses_writes() {
    let test = "fuse_read_only_mount_refuses_writes";
    if !require_fuse(test) {
        return;
    }
    // Write something read-write first, then serve read-only and read it back.
    let mut f = fixture(MIB, 512, 4096, false);
    let (key, _) = random_key();
    let handle = mount(&f, &key);
    OpenOptions::new()
        .write(true)
        .open(handle.plain())
        .unwrap()
        .write_all_at(b"persisted", 1000)
        .unwrap();
    handle.unmount().unwrap();
    let before = fs::read(&f.spec.backing).unwrap();

    f.spec.read_only = true;
    let handle = mount(&f, &key);
    let e = OpenOptions::new()
        .write(true)
        .open(handle.plain())
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let mut b = [0u8; 9];
    File::open(handle.plain())
        .unwrap()
        .read_exact_at(&mut b, 1000)
        .unwrap();
    assert_eq!(&b, b"persisted");
    handle.unmount().unwrap();
    assert_eq!(
        fs::read(&f.spec.backing).unwrap(),
        before,
        "backing untouched"
    );
}

#[test]
fn fuse_refuses_size_changes_and_second_open() {
    let test = "fuse_refuses_size_changes_and_second_open";
    if !require_fuse(test) {
        return;
    }
    let f = fixture(MIB, 4096, 0, false);
    let (key, _) = random_key();
    let handle = mount(&f, &key);
    let file = OpenOptions::new().write(true).open(handle.plain()).unwrap();
    file.set_len(MIB).unwrap(); // same size: fine
    let e = file.set_len(MIB / 2).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    drop(file);
    assert_eq!(fs::metadata(handle.plain()).unwrap().len(), MIB);

    // The backing file is locked: a second serve of it is Busy (exit 5).
    let mut other = f.spec.clone();
    other.plain = f.dir.path().join("plain2.img");
    let e = daemon::serve_in_thread(&other, &key).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(
        !other.plain.exists(),
        "PLAIN created for a failed open is removed"
    );
    let e = daemon::ensure_backing_free(&f.spec.backing, true).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");

    let plain = handle.plain().to_path_buf();
    handle.unmount().unwrap();
    assert!(!plain.exists());
    daemon::ensure_backing_free(&f.spec.backing, false).unwrap();
}

#[test]
fn plain_must_be_a_regular_file() {
    // No FUSE needed: refused before mounting.
    let mut f = fixture(MIB, 4096, 0, false);
    let (key, _) = random_key();
    fs::create_dir(&f.spec.plain).unwrap();
    let e = daemon::serve_in_thread(&f.spec, &key).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(f.spec.plain.is_dir());
    f.spec.plain = f.spec.backing.clone();
    let e = daemon::serve_in_thread(&f.spec, &key).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
}

/// Not a test of its own: when this binary is run as `<it> __daemon` by `start_with_exe`,
/// libtest's name filter selects this function, which becomes the daemon. In a normal run
/// it returns at once.
#[test]
#[allow(non_snake_case)]
fn daemon_child__daemon() {
    if std::env::args().nth(1).as_deref() == Some(daemon::DAEMON_ARG) {
        std::process::exit(daemon::child_main());
    }
}

#[test]
fn daemon_start_registry_and_close() {
    let test = "daemon_start_registry_and_close";
    if !require_fuse(test) {
        return;
    }
    let mut f = fixture(2 * MIB, 4096, 0, false);
    f.spec.foreground = false;
    let (key, key_bytes) = random_key();
    let exe = std::env::current_exe().unwrap();
    daemon::start_with_exe(&f.spec, &key, &exe).unwrap();
    let plain = f.spec.plain.canonicalize().unwrap();
    let guard = CloseOnDrop(plain.clone());

    let entry = daemon::open_volumes()
        .into_iter()
        .find(|e| e.plain == plain)
        .expect("registry entry");
    assert_ne!(entry.pid, std::process::id(), "served by another process");
    assert!(entry.created_plain && !entry.read_only);
    assert_eq!(entry.unlocked_by, "test key");
    assert_eq!(entry.backing, f.spec.backing.canonicalize().unwrap());

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&plain)
        .unwrap();
    file.write_all_at(&data, 777).unwrap();

    // The backing is held: a second open fails with the daemon's own message, exit 5.
    let e = daemon::ensure_backing_free(&f.spec.backing, false).unwrap_err();
    assert!(e.to_string().contains(&entry.pid.to_string()), "{e}");
    let mut second = f.spec.clone();
    second.plain = f.dir.path().join("second.img");
    let e = daemon::start_with_exe(&second, &key, &exe).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("already open read-write"), "{e}");
    assert!(!second.plain.exists());

    // In use: close refuses with Busy and leaves the mount alone.
    let e = daemon::close(&plain).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    let mut back = vec![0u8; data.len()];
    file.read_exact_at(&mut back, 777).unwrap();
    assert_eq!(back, data);
    drop(file);

    daemon::close(&plain).unwrap();
    std::mem::forget(guard);
    assert!(!plain.exists(), "PLAIN removed by close");
    assert!(!daemon::open_volumes().iter().any(|e| e.plain == plain));
    let e = daemon::close(&plain).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
    let mut model = vec![0u8; 2 * MIB as usize];
    model[777..777 + data.len()].copy_from_slice(&data);
    assert_eq!(decrypt_backing(&f.spec, &key_bytes), model);
    daemon::ensure_backing_free(&f.spec.backing, false).unwrap();
}

/// Closes a daemon-served PLAIN if a test panics before doing so itself.
struct CloseOnDrop(PathBuf);
impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if daemon::close(&self.0).is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Unmounts a loop-mounted filesystem if a test panics before doing so itself.
struct UmountOnDrop(PathBuf);
impl Drop for UmountOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

#[test]
fn ext4_on_plain_through_a_loop_device() {
    let test = "ext4_on_plain_through_a_loop_device";
    if !require_fuse(test)
        || !require(test, is_root(), "needs root for mount -o loop")
        || !require(test, on_path("mkfs.ext4"), "mkfs.ext4 missing")
        || !require(test, on_path("losetup"), "losetup missing")
    {
        return;
    }
    // The user's flow: open (daemon), mkfs, mount -o loop, use, umount, close at once.
    let mut f = fixture(64 * MIB, 4096, 2 * MIB, false);
    let (key, _) = random_key();
    let entry = start_daemon(&mut f, &key);
    let close_guard = CloseOnDrop(entry.plain.clone());
    let plain = entry.plain.clone();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&plain)).unwrap();
    let mnt = f.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for pass in 0..2 {
        run(Command::new("mount")
            .arg("-o")
            .arg("loop")
            .arg(&plain)
            .arg(&mnt))
        .unwrap();
        let guard = UmountOnDrop(mnt.clone());
        if pass == 0 {
            fs::write(mnt.join("hello.bin"), &content).unwrap();
        } else {
            assert_eq!(fs::read(mnt.join("hello.bin")).unwrap(), content);
        }
        drop(guard);
    }
    wait_until_loop_released(&plain);
    run(Command::new("e2fsck").args(["-n", "-f"]).arg(&plain)).unwrap();
    // Again, and close right after umount while the loop device may still be going away.
    run(Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&plain)
        .arg(&mnt))
    .unwrap();
    drop(UmountOnDrop(mnt.clone()));
    daemon::close(&plain).unwrap();
    std::mem::forget(close_guard);
    assert!(!plain.exists());
}

fn wait_until_loop_released(plain: &Path) {
    for _ in 0..200 {
        let out = Command::new("losetup")
            .arg("-j")
            .arg(plain)
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("loop device still attached to {}", plain.display());
}

/// Starts a daemon for `f` and returns its registry entry.
fn start_daemon(f: &mut Fixture, key: &VolumeKey) -> daemon::OpenVolume {
    f.spec.foreground = false;
    let exe = std::env::current_exe().unwrap();
    daemon::start_with_exe(&f.spec, key, &exe).unwrap();
    let plain = f.spec.plain.canonicalize().unwrap();
    daemon::open_volumes()
        .into_iter()
        .find(|e| e.plain == plain)
        .expect("registry entry")
}

/// Waits until the daemon's registry entry is gone (it removes it just before exiting).
fn wait_until_closed(plain: &Path) {
    for _ in 0..400 {
        if !daemon::open_volumes().iter().any(|e| e.plain == plain) && !plain.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("daemon of {} did not clean up", plain.display());
}

#[test]
fn daemon_stops_on_sigterm_and_external_unmount() {
    let test = "daemon_stops_on_sigterm_and_external_unmount";
    if !require_fuse(test) || !require(test, on_path("kill"), "kill missing") {
        return;
    }
    let (key, key_bytes) = random_key();

    // SIGTERM while in use is refused; once released it unmounts and cleans up.
    let mut f = fixture(MIB, 4096, 0, false);
    let entry = start_daemon(&mut f, &key);
    let guard = CloseOnDrop(entry.plain.clone());
    let file = OpenOptions::new().write(true).open(&entry.plain).unwrap();
    file.write_all_at(b"sigterm", 4090).unwrap();
    run(Command::new("kill").arg("-TERM").arg(entry.pid.to_string())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        daemon::open_volumes().iter().any(|e| e.pid == entry.pid),
        "busy: still serving"
    );
    drop(file);
    // The first signal's short busy grace may already have unmounted: the daemon may be gone.
    let _ = run(Command::new("kill").arg("-TERM").arg(entry.pid.to_string()));
    wait_until_closed(&entry.plain);
    std::mem::forget(guard);
    let plain = decrypt_backing(&f.spec, &key_bytes);
    assert_eq!(&plain[4090..4097], b"sigterm");
    daemon::ensure_backing_free(&f.spec.backing, false).unwrap();

    // An external unmount ends the daemon the same way, and an existing PLAIN is kept.
    let mut f = fixture(MIB, 512, 0, false);
    File::create(&f.spec.plain).unwrap();
    let entry = start_daemon(&mut f, &key);
    assert!(!entry.created_plain);
    let guard = CloseOnDrop(entry.plain.clone());
    let umount = if is_root() { "umount" } else { "fusermount3" };
    let mut cmd = Command::new(umount);
    if !is_root() {
        cmd.arg("-u");
    }
    run(cmd.arg(&entry.plain)).unwrap();
    for _ in 0..400 {
        if !daemon::open_volumes().iter().any(|e| e.pid == entry.pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    std::mem::forget(guard);
    assert!(!daemon::open_volumes().iter().any(|e| e.pid == entry.pid));
    assert!(entry.plain.is_file(), "PLAIN that existed before stays");
    assert_eq!(fs::metadata(&entry.plain).unwrap().len(), 0);
}

#[test]
fn close_refuses_while_a_loop_device_holds_plain() {
    let test = "close_refuses_while_a_loop_device_holds_plain";
    if !require_fuse(test)
        || !require(test, is_root(), "needs root for losetup")
        || !require(test, on_path("losetup"), "losetup missing")
    {
        return;
    }
    let (key, _) = random_key();
    let mut f = fixture(8 * MIB, 4096, 0, false);
    let entry = start_daemon(&mut f, &key);
    let guard = CloseOnDrop(entry.plain.clone());
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&entry.plain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let e = daemon::close(&entry.plain).unwrap_err();
    let detach = run(Command::new("losetup").arg("-d").arg(&dev));
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains(&dev), "{e}");
    detach.unwrap();
    // No waiting for the loop device to go: close allows a short grace period.
    daemon::close(&entry.plain).unwrap();
    std::mem::forget(guard);
    assert!(!entry.plain.exists());
}

/// Sequential throughput through PLAIN with dd (1 MiB blocks, direct I/O on PLAIN so the
/// page cache does not hide the data path). Run by hand:
/// `cargo test --release --test it -- --ignored --nocapture fuse_throughput`.
#[test]
#[ignore]
fn fuse_throughput() {
    let test = "fuse_throughput";
    if !require_fuse(test) || !require(test, on_path("dd"), "dd missing") {
        return;
    }
    let size_mib: u64 = std::env::var("VAULTDISK_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let f = fixture(size_mib * MIB, 4096, 0, false);
    let (key, _) = random_key();
    let handle = mount(&f, &key);
    let plain = handle.plain().to_path_buf();
    let count = size_mib.to_string();
    let dd = |args: &[&str]| {
        let t = std::time::Instant::now();
        run(Command::new("dd").args(args)).unwrap();
        size_mib as f64 / t.elapsed().as_secs_f64()
    };
    let of = format!("of={}", plain.display());
    let iff = format!("if={}", plain.display());
    let count = format!("count={count}");
    let write = dd(&[
        "if=/dev/zero",
        &of,
        "bs=1M",
        &count,
        "oflag=direct",
        "conv=notrunc,fsync",
    ]);
    let read = dd(&[&iff, "of=/dev/null", "bs=1M", "iflag=direct"]);
    let read_cached = dd(&[&iff, "of=/dev/null", "bs=1M"]);
    println!(
        "{test}: {size_mib} MiB, write {write:.0} MB/s, read {read:.0} MB/s (direct), \
         {read_cached:.0} MB/s (buffered, first pass)"
    );
    handle.unmount().unwrap();
}

/// Child side of `foreground_serving_ends_on_close_and_sigint`: serves in the foreground the
/// spec given in VAULTDISK_IT_SPEC with a random key, like `vaultdisk open --foreground`.
#[test]
#[allow(non_snake_case)]
fn foreground_child__foreground() {
    if std::env::args().nth(1).as_deref() != Some("__foreground") {
        return;
    }
    let spec: ServeSpec =
        serde_json::from_str(&std::env::var("VAULTDISK_IT_SPEC").unwrap()).unwrap();
    let (key, _) = random_key();
    std::process::exit(match daemon::start(spec, key) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    });
}

#[test]
fn foreground_serving_ends_on_close_and_sigint() {
    let test = "foreground_serving_ends_on_close_and_sigint";
    if !require_fuse(test) || !require(test, on_path("kill"), "kill missing") {
        return;
    }
    for how in ["close", "sigint"] {
        let f = fixture(MIB, 4096, 0, false);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("__foreground")
            .env("VAULTDISK_IT_SPEC", serde_json::to_string(&f.spec).unwrap())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut entry = None;
        for _ in 0..400 {
            entry = daemon::open_volumes().into_iter().find(|e| e.pid == pid);
            if entry.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let Some(entry) = entry else {
            let _ = child.kill();
            panic!(
                "{how}: foreground serve never registered: {:?}",
                child.wait()
            );
        };
        let guard = CloseOnDrop(entry.plain.clone());
        // O_TRUNC is ignored as on a block device: the write lands, the size stays.
        fs::write(&entry.plain, vec![9u8; MIB as usize]).unwrap();
        assert_eq!(fs::metadata(&entry.plain).unwrap().len(), MIB);
        OpenOptions::new()
            .write(true)
            .open(&entry.plain)
            .unwrap()
            .write_all_at(b"fg", 0)
            .unwrap();
        match how {
            "close" => daemon::close(&entry.plain).unwrap(),
            _ => run(Command::new("kill").arg("-INT").arg(pid.to_string())).unwrap(),
        }
        let status = child.wait().unwrap();
        std::mem::forget(guard);
        assert!(status.success(), "{how}: {status}");
        assert!(!entry.plain.exists(), "{how}: PLAIN removed");
        assert!(!daemon::open_volumes().iter().any(|e| e.pid == pid));
        daemon::ensure_backing_free(&f.spec.backing, false).unwrap();
    }
}

#[test]
fn close_cleans_up_after_a_killed_daemon() {
    let test = "close_cleans_up_after_a_killed_daemon";
    if !require_fuse(test) || !require(test, on_path("kill"), "kill missing") {
        return;
    }
    let (key, _) = random_key();
    let mut f = fixture(MIB, 4096, 0, false);
    let entry = start_daemon(&mut f, &key);
    let guard = CloseOnDrop(entry.plain.clone());
    run(Command::new("kill").arg("-KILL").arg(entry.pid.to_string())).unwrap();
    for _ in 0..400 {
        if !daemon::open_volumes().iter().any(|e| e.pid == entry.pid) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    // The dead mount is still there (ENOTCONN); close unmounts it and removes PLAIN.
    daemon::close(&f.spec.plain).unwrap();
    std::mem::forget(guard);
    assert!(!entry.plain.exists());
    daemon::ensure_backing_free(&f.spec.backing, false).unwrap();
    let e = daemon::close(&f.spec.plain).unwrap_err();
    assert_eq!(e.exit_code(), 1, "{e}");
}

/// Kills the daemon of `entry` with SIGKILL and waits until it is gone.
fn kill_9(entry: &daemon::OpenVolume) {
    run(Command::new("kill").arg("-KILL").arg(entry.pid.to_string())).unwrap();
    for _ in 0..400 {
        if !Path::new(&format!("/proc/{}", entry.pid)).exists()
            || !daemon::open_volumes().iter().any(|e| e.pid == entry.pid)
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("daemon {} did not die", entry.pid);
}

/// Issue 11 item 6: after kill -9 of the daemon with ext4 on a loop device over PLAIN,
/// `close` is busy (exit 5) naming the loop device and keeps its registry entry; once the
/// loop device is released, `close` clears the dead mount. A dead mount whose registry entry
/// is gone is cleared by `close` and by `open` themselves (instead of "not open" and
/// "Transport endpoint is not connected").
#[test]
fn dead_daemon_under_a_loop_device_is_busy_then_cleared() {
    let test = "dead_daemon_under_a_loop_device_is_busy_then_cleared";
    if !require_fuse(test)
        || !require(test, is_root(), "needs root for losetup and mount")
        || !require(test, on_path("mkfs.ext4"), "mkfs.ext4 missing")
        || !require(test, on_path("losetup"), "losetup missing")
        || !require(test, on_path("kill"), "kill missing")
    {
        return;
    }
    let mut f = fixture(32 * MIB, 4096, 0, false);
    let (key, _) = random_key();
    let entry = start_daemon(&mut f, &key);
    let close_guard = CloseOnDrop(entry.plain.clone());
    let plain = entry.plain.clone();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&plain)).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&plain)
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success() && !dev.is_empty(), "{out:?}");
    let mnt = f.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run(Command::new("mount").arg(&dev).arg(&mnt)).unwrap();
    let umount_guard = UmountOnDrop(mnt.clone());
    kill_9(&entry);

    // Still in use by the loop device: busy, naming it, and nothing forgotten.
    let e = daemon::close(&plain).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains(&dev), "{e}");
    let e = daemon::close(&plain).unwrap_err();
    assert_eq!(
        e.exit_code(),
        5,
        "asked again: still busy, not 'not open': {e}"
    );

    // Released: close clears the dead mount and the PLAIN it created.
    let _ = Command::new("umount").arg(&mnt).status();
    drop(umount_guard);
    let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    wait_until_loop_released(&plain);
    daemon::close(&plain).unwrap();
    std::mem::forget(close_guard);
    assert!(!crate::support::is_mounted(&plain));
    assert!(!plain.exists(), "PLAIN created by open is removed");
    daemon::ensure_backing_free(&f.spec.backing, false).unwrap();

    // A dead mount without a registry entry (say the runtime directory was cleaned):
    // open clears it and serves again; close clears one too.
    for how in ["open", "close"] {
        let entry = start_daemon(&mut f, &key);
        let guard = CloseOnDrop(entry.plain.clone());
        kill_9(&entry);
        let rt = daemon::runtime_dir();
        fs::remove_file(rt.join(format!("{}.json", entry.pid))).unwrap();
        assert!(crate::support::is_mounted(&plain), "{how}: dead mount left");
        match how {
            "open" => {
                let again = start_daemon(&mut f, &key);
                assert_ne!(again.pid, entry.pid);
                daemon::close(&plain).unwrap();
            }
            _ => daemon::close(&plain).unwrap(),
        }
        std::mem::forget(guard);
        assert!(!crate::support::is_mounted(&plain), "{how}: still mounted");
    }
}

/// Issue 11 item 6: `close` fails (exit 4) when the daemon's final flush of the backing file
/// fails, instead of exiting 0 with the EIO only in daemon.log. The backing file here is the
/// PLAIN of a second daemon, killed before the close, so the final fdatasync gets ENOTCONN.
#[test]
fn close_fails_when_the_final_flush_fails() {
    let test = "close_fails_when_the_final_flush_fails";
    if !require_fuse(test) || !require(test, on_path("kill"), "kill missing") {
        return;
    }
    let (key, _) = random_key();
    let mut inner = fixture(4 * MIB, 4096, 0, false);
    let inner_entry = start_daemon(&mut inner, &key);
    let inner_guard = CloseOnDrop(inner_entry.plain.clone());
    let mut outer = fixture(2 * MIB, 4096, 0, false);
    outer.spec.backing = inner_entry.plain.clone();
    let outer_entry = start_daemon(&mut outer, &key);
    let outer_guard = CloseOnDrop(outer_entry.plain.clone());
    let file = OpenOptions::new()
        .write(true)
        .open(&outer_entry.plain)
        .unwrap();
    file.write_all_at(&[5u8; 8192], 0).unwrap();
    drop(file);

    kill_9(&inner_entry);
    let e = daemon::close(&outer_entry.plain).unwrap_err();
    std::mem::forget(outer_guard);
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(e.to_string().contains("flushing the backing file"), "{e}");
    assert!(!crate::support::is_mounted(&outer_entry.plain));
    // The inner daemon's dead mount is cleared by close.
    daemon::close(&inner_entry.plain).unwrap();
    std::mem::forget(inner_guard);
    assert!(!crate::support::is_mounted(&inner_entry.plain));
}
