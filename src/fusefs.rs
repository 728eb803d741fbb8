//! fuser Filesystem exposing one regular file: a thin match onto `Volume`.
//!
//! The mount point is itself a regular file (PLAIN), so the FUSE root (inode 1) is that file:
//! no directory, no lookups. Its size is the volume's plaintext size and never changes.
//!
//! Writable volumes use the kernel's writeback cache (FUSE_WRITEBACK_CACHE): write(2) lands in
//! the page cache and reaches the daemon as large background writes, so one writer is no
//! longer held to one FUSE round trip per call. The kernel then owns the file's size: the
//! root inode is created with size 0 before INIT, and getattr replies no longer change it. So
//! the daemon tells the kernel the size itself ([`announce_size`] at mount, [`sync_kernel_size`]
//! after growth or a write past the end), and a write-back past the end fails with ENOSPC,
//! which fsync(2) and close(2) report.
use crate::volume::{Plaintext, aligned_slice};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, KernelConfig,
    LockOwner, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};
use log::{debug, warn};
use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest read or write the kernel is asked to send in one request, in bytes. The kernel
/// caps requests at `fs.fuse.max_pages_limit` pages (256 = 1 MiB by default) anyway.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;

/// FUSE worker threads; each may run a request's cipher work in parallel internally. More
/// than the cores: a worker mostly waits on its O_DIRECT read or write of the backing, so
/// more of them keep more backing I/O in flight. Measured here (2 cores, 1 GiB fio through
/// PLAIN, 3 interleaved rounds), 4 -> 8 workers: reads with a loop device as BACKING
/// 853-1158 -> 1387-1600 MB/s, writes onto a disk file 700-744 -> 783-817, tmpfs unchanged;
/// each worker keeps up to 1 MiB of reply and 1 MiB of scratch buffer.
pub const WORKER_THREADS: usize = 8;

/// How long the kernel may cache attributes: nothing but the times ever changes.
const ATTR_TTL: Duration = Duration::from_secs(1);

/// Reply buffers above this size are freed after use instead of kept per thread.
const REPLY_KEEP_BYTES: usize = 4 << 20;

/// The filesystem: one regular file backed by a `Volume`.
pub struct PlainFs {
    volume: Arc<dyn Plaintext>,
    perm: AtomicU32,
    uid: AtomicU32,
    gid: AtomicU32,
    /// Modification and change times as nanoseconds since the epoch.
    mtime_ns: AtomicU64,
    ctime_ns: AtomicU64,
    atime_ns: AtomicU64,
    /// Whether the kernel caches writes (writable volumes): see the module comment.
    writeback: bool,
    /// PLAIN's canonical path, to set the kernel's size through the mount after a write-back
    /// past the end (None: the size is left as the kernel has it).
    plain: Option<PathBuf>,
    /// A size fix-up is already on its way.
    size_sync_pending: Arc<AtomicBool>,
}

impl PlainFs {
    /// Serves `volume` as a file of mode 0600 owned by `uid`:`gid`.
    pub fn new(volume: Arc<dyn Plaintext>, uid: u32, gid: u32) -> PlainFs {
        let now = nanos(SystemTime::now());
        PlainFs {
            perm: AtomicU32::new(0o600),
            uid: AtomicU32::new(uid),
            gid: AtomicU32::new(gid),
            mtime_ns: AtomicU64::new(now),
            ctime_ns: AtomicU64::new(now),
            atime_ns: AtomicU64::new(now),
            writeback: !volume.read_only(),
            volume,
            plain: None,
            size_sync_pending: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Names PLAIN's canonical path, so a write-back past the end can be truncated away.
    pub fn with_path(mut self, plain: &Path) -> PlainFs {
        self.plain = Some(plain.to_path_buf());
        self
    }

    /// Whether the kernel's writeback cache is asked for at INIT.
    pub fn uses_writeback_cache(&self) -> bool {
        self.writeback
    }

    /// After a write-back past the end: the kernel grew its idea of the size with the page
    /// cache, so set it back to the volume's, from another thread (a truncate waits for the
    /// write-back in progress, which this worker is still serving). One at a time.
    fn restore_kernel_size(&self) {
        let Some(plain) = self.plain.clone() else {
            return;
        };
        if self.size_sync_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let pending = Arc::clone(&self.size_sync_pending);
        let size = self.volume.size_bytes();
        let spawned = std::thread::Builder::new()
            .name("vaultdisk-size".into())
            .spawn(move || {
                pending.store(false, Ordering::Release);
                if let Err(e) = sync_kernel_size(&plain, size) {
                    warn!(
                        "cannot set the size of {} back to {size}: {e}",
                        plain.display()
                    );
                }
            });
        if let Err(e) = spawned {
            self.size_sync_pending.store(false, Ordering::Release);
            warn!("cannot start the size fix-up thread: {e}");
        }
    }

    fn attr(&self) -> FileAttr {
        let size = self.volume.size_bytes();
        FileAttr {
            ino: INodeNo::ROOT,
            size,
            blocks: size.div_ceil(512),
            atime: time(self.atime_ns.load(Ordering::Relaxed)),
            mtime: time(self.mtime_ns.load(Ordering::Relaxed)),
            ctime: time(self.ctime_ns.load(Ordering::Relaxed)),
            crtime: time(self.ctime_ns.load(Ordering::Relaxed)),
            kind: FileType::RegularFile,
            perm: self.perm.load(Ordering::Relaxed) as u16,
            nlink: 1,
            uid: self.uid.load(Ordering::Relaxed),
            gid: self.gid.load(Ordering::Relaxed),
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn touch_mtime(&self) {
        let now = nanos(SystemTime::now());
        self.mtime_ns.store(now, Ordering::Relaxed);
        self.ctime_ns.store(now, Ordering::Relaxed);
    }
}

/// FUSE session options for serving one volume: `read_only` mounts ro (writes fail with
/// EROFS in the kernel already); `allow_other` lets other users (and root, when a user
/// mounts) reach the file, still subject to its mode under default_permissions.
pub fn mount_config(read_only: bool, allow_other: bool) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("vaultdisk".into()),
        MountOption::Subtype("vaultdisk".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(WORKER_THREADS);
    // One /dev/fuse fd per worker, so workers do not contend on one queue (Linux >= 4.5).
    config.clone_fd = true;
    config
}

/// Tells the kernel PLAIN's size right after the handshake, before anyone can open it: with
/// the writeback cache the root inode keeps the size 0 it was created with. A
/// FUSE_NOTIFY_STORE of the last byte grows the inode's size; its page stays not up to date,
/// so reads still come to the daemon.
pub fn announce_size(notifier: &fuser::Notifier, volume: &dyn Plaintext) -> io::Result<()> {
    // The kernel grows the size only for a store of at least one byte: the last one.
    let size = volume.size_bytes();
    let Some(last) = size.checked_sub(1) else {
        return Ok(());
    };
    let mut byte = [0u8; 1];
    volume.read_at(last, &mut byte)?;
    notifier.store(INodeNo::ROOT, last, &byte)
}

/// Sets the size the kernel holds for PLAIN to `size` (the volume's) by truncating PLAIN
/// through the mount: the kernel sends SETATTR, which [`PlainFs`] accepts for exactly this
/// size, and takes the reply's size. Drops cached pages past the end. Must not run on a
/// FUSE worker (it waits for write-backs in progress).
pub fn sync_kernel_size(plain: &Path, size: u64) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(plain)?
        .set_len(size)
}

/// Kernel readahead for PLAIN, KiB. FUSE caps a mount's readahead at the bdi default
/// (128 KiB), so sequential reads arrive as 128 KiB requests; 8 MiB lets the kernel send
/// 1 MiB reads, several in flight, which the volume reads from the backing file with
/// O_DIRECT. Measured here (1 GiB fio sequential reads through PLAIN, backing on disk):
/// 2 MiB gave 873-1137 MB/s with a loop device as BACKING and 1510-1549 with the file,
/// 8 MiB 1324-1339 and 1405-1793. The daemon sets it (root only) through
/// `sys::procfs::set_read_ahead_kib`.
pub const READAHEAD_KIB: u32 = 8192;

/// The errno a FUSE caller sees for a failed volume operation: ENOSPC (full backing disk
/// or past the end) and EROFS pass through, everything else is EIO. Volume already logged
/// which sectors failed.
fn errno(e: &io::Error) -> Errno {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Errno::ENOSPC,
        Some(libc::EROFS) => Errno::EROFS,
        _ => Errno::EIO,
    }
}

/// The fallocate modes served: PUNCH_HOLE|KEEP_SIZE (a loop device's REQ_OP_DISCARD) gives
/// `Some(false)`, ZERO_RANGE (with or without KEEP_SIZE: the size never changes) `Some(true)`;
/// anything else (preallocation, collapse, insert) None.
fn discard_mode(mode: i32) -> Option<bool> {
    const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    match mode {
        PUNCH => Some(false),
        m if m & !libc::FALLOC_FL_KEEP_SIZE == libc::FALLOC_FL_ZERO_RANGE => Some(true),
        _ => None,
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

fn time_or_now(t: TimeOrNow) -> u64 {
    match t {
        TimeOrNow::SpecificTime(t) => nanos(t),
        TimeOrNow::Now => nanos(SystemTime::now()),
    }
}

thread_local! {
    /// Per-worker reply buffer for reads, reused so a 1 MiB read does not allocate.
    static REPLY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Filesystem for PlainFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Ask for big requests; each setter returns the nearest allowed value on refusal.
        let max_write = config
            .set_max_write(MAX_REQUEST_BYTES)
            .err()
            .map(|nearest| config.set_max_write(nearest));
        let readahead = config
            .set_max_readahead(MAX_REQUEST_BYTES)
            .err()
            .map(|nearest| config.set_max_readahead(nearest));
        // Room for several readahead/writeback requests to keep all workers busy.
        let _ = config.set_max_background(64);
        if self.writeback {
            // Buffered writes are cached and sent as 1 MiB background writes: 3x the 4 KiB
            // random-write IOPS of ext4 on a loop device, 2-4x sequential write throughput.
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_WRITEBACK_CACHE);
        }
        // Not FUSE_ATOMIC_O_TRUNC: with it the kernel sets the size to 0 and drops the page
        // cache, dirty pages too, on every O_TRUNC open. Without it O_TRUNC arrives as a
        // truncate to 0, which setattr ignores as a block device ignores O_TRUNC.
        // O_DIRECT requests (a loop device with --direct-io=on, fio --direct=1) are sent
        // concurrently instead of one at a time: 4 KiB random IOPS at iodepth 16 through ext4
        // on a loop device rose from ~20k to ~140k here. The range locks keep overlapping
        // requests apart.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ASYNC_DIO);
        debug!(
            "FUSE init: abi {:?}, max_write fallback {max_write:?}, readahead fallback {readahead:?}",
            config.kernel_abi()
        );
        Ok(())
    }

    // No flush in destroy(): the serve loop (daemon::serve) flushes the backing file right
    // after the session ends and reports a failure to `close`; a flush here would consume
    // the write-back error (fsync reports it once) and let that final flush succeed.

    fn lookup(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEntry) {
        // The root is a regular file: there is nothing to look up in it.
        reply.error(Errno::ENOTDIR);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        reply.attr(&ATTR_TTL, &self.attr());
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        // The plaintext has the volume's size, like a disk: truncate to any other size is
        // refused rather than silently ignored. O_TRUNC arrives as a truncate to 0 without a
        // file handle (see init; the kernel drops it for ATTR_OPEN): ignored, as a block device
        // ignores O_TRUNC, so `dd of=PLAIN` and `cp img PLAIN` work. ftruncate(2) (and so
        // `truncate -s 0`) carries the handle and is refused.
        if let Some(s) = size {
            let o_trunc = s == 0 && fh.is_none();
            if s != self.volume.size_bytes() && !o_trunc {
                debug!("truncate to {s} bytes refused (fh {fh:?})");
                return reply.error(Errno::EPERM);
            }
        }
        // chmod/chown only change what the kernel checks under default_permissions (which
        // has already checked that the caller may make them); setuid/setgid bits are dropped.
        if let Some(mode) = mode {
            self.perm.store(mode & 0o777, Ordering::Relaxed);
        }
        if let Some(uid) = uid {
            self.uid.store(uid, Ordering::Relaxed);
        }
        if let Some(gid) = gid {
            self.gid.store(gid, Ordering::Relaxed);
        }
        if let Some(t) = atime {
            self.atime_ns.store(time_or_now(t), Ordering::Relaxed);
        }
        if let Some(t) = mtime {
            self.mtime_ns.store(time_or_now(t), Ordering::Relaxed);
        }
        self.ctime_ns
            .store(nanos(SystemTime::now()), Ordering::Relaxed);
        reply.attr(&ATTR_TTL, &self.attr());
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        if self.volume.read_only() && flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // Only this daemon changes the plaintext, so cached pages stay valid across opens.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let len = size as usize;
        let reply_with = |buf: &mut [u8]| match self.volume.read_at(offset, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        };
        // Aligned, so whole-sector reads can go to the backing file with O_DIRECT.
        REPLY.with(|cell| match cell.try_borrow_mut() {
            Ok(mut v) if len <= REPLY_KEEP_BYTES => reply_with(aligned_slice(&mut v, len)),
            _ => reply_with(aligned_slice(&mut Vec::new(), len)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let cached = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let end = offset.saturating_add(data.len() as u64);
        if cached && end > self.volume.size_bytes() {
            // A write-back of pages past the end (write(2) grew the kernel's size): keep the
            // part inside the volume, fail the rest with ENOSPC so fsync and close report it,
            // and put the kernel's size back.
            let errno = match self.volume.write_at(offset, data) {
                Ok(n) => {
                    if n > 0 {
                        self.touch_mtime();
                    }
                    Errno::ENOSPC
                }
                Err(e) => errno(&e),
            };
            warn!("write-back past the end of the volume (to byte {end}) refused");
            self.restore_kernel_size();
            return reply.error(errno);
        }
        match self.volume.write_at(offset, data) {
            Ok(n) => {
                self.touch_mtime();
                // n <= data.len(), which the kernel bounded by max_write (a u32).
                reply.written(u32::try_from(n).unwrap_or(u32::MAX));
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) reports write-back failures; make them visible here, as a disk would on
        // fsync, by syncing the backing file.
        match self.volume.flush() {
            Ok(()) => reply.ok(),
            Err(e) => {
                warn!("flush of the backing file failed: {e}");
                reply.error(errno(&e))
            }
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.volume.flush() {
            Ok(()) => reply.ok(),
            Err(e) => {
                warn!("fsync of the backing file failed: {e}");
                reply.error(errno(&e))
            }
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        // EOPNOTSUPP, never ENOSYS, for what is not done: ENOSYS makes the kernel stop
        // sending fallocate for the whole mount (fc->no_fallocate).
        let Some(zero) = discard_mode(mode) else {
            return reply.error(Errno::EOPNOTSUPP);
        };
        match self.volume.discard(offset, length, zero) {
            Ok(()) => {
                self.touch_mtime();
                reply.ok()
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                debug!("fallocate mode {mode:#x} refused: discards are not allowed");
                reply.error(Errno::EOPNOTSUPP)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.volume.size_bytes() / 4096;
        reply.statfs(blocks, 0, 0, 1, 0, 4096, 255, 4096);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_passes_through_space_and_read_only_only() {
        let e = |n| errno(&io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::ENOSPC), Errno::ENOSPC);
        assert_eq!(e(libc::EDQUOT), Errno::ENOSPC);
        assert_eq!(e(libc::EROFS), Errno::EROFS);
        assert_eq!(e(libc::EBADF), Errno::EIO);
        assert_eq!(errno(&io::Error::other("x")), Errno::EIO);
    }

    #[test]
    fn discard_modes() {
        use libc::{
            FALLOC_FL_KEEP_SIZE as K, FALLOC_FL_PUNCH_HOLE as P, FALLOC_FL_ZERO_RANGE as Z,
        };
        assert_eq!(discard_mode(P | K), Some(false));
        assert_eq!(discard_mode(Z), Some(true));
        assert_eq!(discard_mode(Z | K), Some(true));
        assert_eq!(discard_mode(0), None);
        assert_eq!(discard_mode(K), None);
        assert_eq!(discard_mode(P), None);
        assert_eq!(discard_mode(libc::FALLOC_FL_COLLAPSE_RANGE), None);
    }

    #[test]
    fn config_has_workers_and_ro_flag() {
        let c = mount_config(true, false);
        assert!(c.mount_options.contains(&MountOption::RO));
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert_eq!(c.acl, SessionACL::Owner);
        assert!(c.n_threads.unwrap_or(1) >= 2);
        assert_eq!(mount_config(false, true).acl, SessionACL::All);
    }
}
