//! The few libc calls std does not wrap: memory locking and process dumpability.
#![allow(unsafe_code)]

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
/// /proc/<pid>/mem unreadable to others. Returns false if the kernel refused.
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
