//! The few libc calls std does not wrap (memory locking, process dumpability, the effective
//! uid) and, in `procfs`, the readers of /proc and /sys. The only module allowed `unsafe`;
//! every use has a SAFETY comment.
#![allow(unsafe_code)]

pub mod procfs;

/// Locks `len` bytes at `ptr` into RAM so a secret is never swapped out. Best effort:
/// returns false when RLIMIT_MEMLOCK forbids it.
pub fn mlock(ptr: *const u8, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    // SAFETY: mlock only reads the address range; the caller owns the allocation for its lifetime.
    unsafe { libc::mlock(ptr.cast(), len) == 0 }
}

/// Undoes `mlock` before the memory is freed.
pub fn munlock(ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: as for mlock; unlocking a range that was never locked is harmless.
    unsafe {
        libc::munlock(ptr.cast(), len);
    }
}

/// Makes the process non-dumpable: no core dumps, no ptrace attach by the same user,
/// `/proc/<pid>/mem` unreadable to others. Returns false if the kernel refused.
pub fn set_not_dumpable() -> bool {
    // SAFETY: PR_SET_DUMPABLE takes plain integer arguments and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 }
}

/// Whether the process is currently dumpable (for tests and `status`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and takes no arguments.
    unsafe { libc::geteuid() }
}

/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)` in the generic ioctl encoding (libc has no
/// constant for it); mips, powerpc and sparc encode directions differently.
#[cfg(not(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc64"
)))]
const BLKGETSIZE64: libc::Ioctl = (2 << 30) | (8 << 16) | (0x12 << 8) | 114;
#[cfg(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "sparc64"
))]
const BLKGETSIZE64: libc::Ioctl = (2 << 29) | (8 << 16) | (0x12 << 8) | 114;
/// `BLKROGET` = `_IO(0x12, 94)`: whether the device is read-only (an int).
const BLKROGET: libc::Ioctl = (0x12 << 8) | 94;

/// Size in bytes of the block device open as `file` (the BLKGETSIZE64 ioctl).
pub fn block_device_size(file: &std::fs::File) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`, a
    // local that outlives the call; the fd is open for the call's duration.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// Whether the block device open as `file` is read-only (the BLKROGET ioctl).
pub fn block_device_read_only(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let mut ro: libc::c_int = 0;
    // SAFETY: BLKROGET writes one int through the pointer, which points at `ro`, a local
    // that outlives the call.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKROGET, &mut ro as *mut libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ro != 0)
}

/// Logical block size in bytes of the block device open as `file` (the BLKSSZGET ioctl):
/// the alignment O_DIRECT needs for offsets, lengths and buffers on it.
pub fn block_device_logical_block_size(file: &std::fs::File) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points at `size`, a
    // local that outlives the call.
    if unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            libc::BLKSSZGET,
            &mut size as *mut libc::c_int,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    u32::try_from(size).map_err(|_| std::io::Error::other("negative logical block size"))
}

/// `BLKDISCARD` = `_IO(0x12, 119)`: discard a byte range (u64 start, u64 length).
const BLKDISCARD: libc::Ioctl = (0x12 << 8) | 119;
/// `BLKZEROOUT` = `_IO(0x12, 127)`: write zeros over a byte range (u64 start, u64 length).
const BLKZEROOUT: libc::Ioctl = (0x12 << 8) | 127;

/// Discards `len` bytes at `offset` of the block device open (for writing) as `file`
/// (the BLKDISCARD ioctl). What a read of the range returns afterwards is the device's
/// business (zeros on loop devices and most SSDs); both must be logical-block aligned.
pub fn block_device_discard(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    block_range_ioctl(file, BLKDISCARD, offset, len)
}

/// Zeros `len` bytes at `offset` of the block device open (for writing) as `file` (the
/// BLKZEROOUT ioctl); reads of the range return zeros afterwards.
pub fn block_device_zero_out(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    block_range_ioctl(file, BLKZEROOUT, offset, len)
}

fn block_range_ioctl(
    file: &std::fs::File,
    request: libc::Ioctl,
    offset: u64,
    len: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD and BLKZEROOUT read two u64 (start, length) through the pointer,
    // which points at `range`, a local that outlives the call; nothing is written through it.
    if unsafe { libc::ioctl(file.as_raw_fd(), request, range.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What `lock_memory` managed to lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    /// Every mapping, now and later (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`):
    /// chosen when locked memory is unbounded (CAP_IPC_LOCK or RLIMIT_MEMLOCK infinity), so
    /// key copies made later (per-thread cipher contexts) are locked too.
    AllMappingsAndFuture,
    /// Every mapping of the process as it is now (`mlockall(MCL_CURRENT | MCL_ONFAULT)`).
    AllMappings,
    /// Only the `[heap]` mapping, because RLIMIT_MEMLOCK is smaller than the whole process.
    Heap,
}

/// Locks memory so that secrets in it (a cipher's round keys) are never swapped out. Pages
/// are locked as they are faulted in (ONFAULT): nothing is populated. Where locked memory is
/// unbounded, later mappings are locked too; under a finite RLIMIT_MEMLOCK that could make
/// later allocations fail, so only what is mapped now is locked, or the `[heap]` mapping
/// alone when the whole process exceeds the limit. Err when neither is allowed.
pub fn lock_memory() -> std::io::Result<Locked> {
    let current = libc::MCL_CURRENT | libc::MCL_ONFAULT;
    // SAFETY: mlockall takes flags only and changes no memory contents.
    if memlock_unbounded() && unsafe { libc::mlockall(current | libc::MCL_FUTURE) } == 0 {
        return Ok(Locked::AllMappingsAndFuture);
    }
    // SAFETY: as above.
    if unsafe { libc::mlockall(current) } == 0 {
        return Ok(Locked::AllMappings);
    }
    let all_err = std::io::Error::last_os_error();
    let Some((start, end)) = heap_range() else {
        return Err(all_err);
    };
    // SAFETY: [start, end) is the process's own heap mapping, read from /proc/self/maps;
    // mlock2 only changes its locking state.
    if unsafe {
        libc::mlock2(
            start as *const libc::c_void,
            end - start,
            libc::MLOCK_ONFAULT,
        )
    } == 0
    {
        return Ok(Locked::Heap);
    }
    Err(std::io::Error::last_os_error())
}

/// Whether this process may lock any amount of memory: CAP_IPC_LOCK in its effective set,
/// or an infinite RLIMIT_MEMLOCK.
fn memlock_unbounded() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0
        && lim.rlim_cur == libc::RLIM_INFINITY
    {
        return true;
    }
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The address range of the `[heap]` mapping (glibc's main arena) from /proc/self/maps.
fn heap_range() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[heap]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end > start).then_some((start, end))
}

/// How many pages of `file` in `[offset, offset + len)` sit in the page cache (mincore on
/// a shared mapping). `offset` and `len` must be multiples of the page size. Tests use it
/// to tell a direct write (nothing cached) from a buffered one.
#[cfg(test)]
pub fn cached_pages(file: &std::fs::File, offset: u64, len: usize) -> usize {
    use std::os::fd::AsRawFd;
    let page = 4096;
    // SAFETY: a read-only shared mapping of an open file, never dereferenced and unmapped
    // below; mincore writes one byte per page into `vec`, which has that many.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset as libc::off_t,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap for mincore");
        let mut vec = vec![0u8; len.div_ceil(page)];
        let rc = libc::mincore(p, len, vec.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(rc, 0, "mincore");
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }
}

#[cfg(test)]
mod tests {
    /// The `[heap]` mapping is the brk area: the program break is its end. (A small
    /// allocation would not do: the test harness runs this on a thread, whose allocations
    /// come from a thread arena outside `[heap]`.)
    #[test]
    fn heap_range_is_found_and_ends_at_the_program_break() {
        let (start, end) = super::heap_range().expect("a [heap] mapping");
        // SAFETY: sbrk(0) only reads the current break.
        let brk = unsafe { libc::sbrk(0) } as usize;
        assert!(
            start < brk && brk <= end,
            "break {brk:#x} not in {start:#x}-{end:#x}"
        );
    }
}

/// Test-only global allocator that reports whether one watched allocation was all zeros at
/// the moment it was freed: how the zeroize-on-drop tests of `secret` see freed memory
/// without reading it after the free.
#[cfg(test)]
pub mod dealloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    static WATCH: AtomicUsize = AtomicUsize::new(0);
    static LEN: AtomicUsize = AtomicUsize::new(0);
    /// 0: not freed yet; 1: freed, all zero; 2: freed holding a non-zero byte.
    static VERDICT: AtomicUsize = AtomicUsize::new(0);

    struct Probe;

    // SAFETY: every call is passed on to the System allocator unchanged; dealloc only reads
    // the block it was handed, before freeing it.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let watched = WATCH.load(SeqCst);
            if watched != 0 && ptr as usize == watched {
                let len = LEN.load(SeqCst).min(layout.size());
                // SAFETY: ptr is a live block of layout.size() >= len bytes until freed below.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
                VERDICT.store(if bytes.iter().all(|&b| b == 0) { 1 } else { 2 }, SeqCst);
                WATCH.store(0, SeqCst);
            }
            // SAFETY: forwarded with the caller's pointer and layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Probe = Probe;

    /// Watches the heap block at `ptr` (its first `len` bytes) until it is freed.
    pub fn watch(ptr: *const u8, len: usize) {
        VERDICT.store(0, SeqCst);
        LEN.store(len, SeqCst);
        WATCH.store(ptr as usize, SeqCst);
    }

    /// None while the watched block is alive; Some(all zero) once it was freed.
    pub fn freed_zeroed() -> Option<bool> {
        match VERDICT.load(SeqCst) {
            0 => None,
            v => Some(v == 1),
        }
    }
}
