//! The flock policy on backing files: a serving daemon holds an exclusive (read-write) or
//! shared (read-only) lock for its lifetime; header updates take the exclusive lock and wait
//! only for other short-lived verbs, never for a daemon.
use super::registry::open_volumes;
use crate::error::{Error, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a header update waits for another one to finish.
const UPDATE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Refuses early (Error::Busy) if `backing` is already open read-write by another daemon
/// (or read-only, when `read_only` is false). Uses the same flock the daemon holds: an
/// exclusive lock for read-write, a shared one for read-only.
pub fn ensure_backing_free(backing: &Path, read_only: bool) -> Result<()> {
    let probe = File::open(backing)
        .map_err(|e| Error::io(format!("cannot open {}", backing.display()), e))?;
    lock_backing(&probe, backing, read_only)?;
    // Closing the probe releases the lock anyway; unlock explicitly for clarity.
    let _ = probe.unlock();
    drop(lock_loop_backing(backing, read_only)?);
    Ok(())
}

/// The file a loop device serves (`/sys/block/loopN/loop/backing_file`), when `backing` is
/// a loop device over a file that still exists; None for anything else.
pub fn loop_backing_file(backing: &Path) -> Option<PathBuf> {
    if !crate::device::path_is_block_device(backing) {
        return None;
    }
    let canon = backing.canonicalize().ok()?;
    let name = canon.file_name()?.to_str()?;
    if !name.starts_with("loop") {
        return None;
    }
    let text = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    let file = PathBuf::from(text.trim_end_matches('\n'));
    file.is_file().then_some(file)
}

/// For a loop device as BACKING: the flock on the file under it, taken as [`lock_backing`]
/// takes it on BACKING, and held while the returned file lives. The image and a loop device
/// over it are different inodes, so without this a daemon on `/dev/loop0` and another on the
/// image itself would both write the same bytes. None when BACKING is no loop device.
pub(super) fn lock_loop_backing(backing: &Path, read_only: bool) -> Result<Option<File>> {
    let Some(file_path) = loop_backing_file(backing) else {
        return Ok(None);
    };
    let file = File::open(&file_path)
        .map_err(|e| Error::io(format!("cannot open {}", file_path.display()), e))?;
    lock_backing(&file, &file_path, read_only).map_err(|e| loop_busy(e, backing, &file_path))?;
    Ok(Some(file))
}

/// A Busy refusal of loop device `backing` because of the lock on `file_path` under it.
fn loop_busy(e: Error, backing: &Path, file_path: &Path) -> Error {
    if e.kind() != crate::error::ErrorKind::Busy {
        return e;
    }
    Error::Busy(format!(
        "{} is a loop device over {}: {}",
        backing.display(),
        file_path.display(),
        e.message()
    ))
}

/// [`ensure_backing_free`] for a volume at `place` in `backing`: a refusal of a volume in a
/// partition or byte window says why (the lock covers the whole file, [`busy_in_window`]).
pub fn ensure_backing_free_in(
    backing: &Path,
    place: crate::device::Place,
    read_only: bool,
) -> Result<()> {
    ensure_backing_free(backing, read_only).map_err(|e| match place {
        crate::device::Place::Whole => e,
        _ => busy_in_window(e, backing),
    })
}

/// A Busy refusal (any other error unchanged) of a volume in a partition or byte window of
/// `backing`, saying why: the lock (flock) covers all of the file, so while one volume of a
/// disk image is open read-write or being updated, no other partition of it is opened or
/// updated; two volumes of one image never write under each other.
pub fn busy_in_window(e: Error, backing: &Path) -> Error {
    if e.kind() != crate::error::ErrorKind::Busy {
        return e;
    }
    Error::Busy(format!(
        "{} (the lock covers all of {}: one volume of a disk image is open read-write or updated at a time, whichever partition or window it is in)",
        e.message(),
        backing.display()
    ))
}

/// Takes the flock a daemon holds on its backing file: exclusive for read-write, shared for
/// read-only. Busy (exit 5, naming the holder) when another process has a conflicting one.
pub(super) fn lock_backing(file: &File, backing: &Path, read_only: bool) -> Result<()> {
    let res = if read_only {
        file.try_lock_shared()
    } else {
        file.try_lock()
    };
    match res {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(busy_error(backing)),
        Err(fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("cannot lock {}", backing.display()), e))
        }
    }
}

/// Takes the exclusive flock for a header update, held until `file` is closed, so two updates
/// never interleave their read-modify-write and no daemon opens the volume meanwhile. A lock
/// held by a serving daemon fails at once (exit 5); one held by another short-lived verb is
/// waited for, up to `UPDATE_LOCK_WAIT`.
pub fn lock_for_update(file: &File, backing: &Path) -> Result<()> {
    lock_file_for_update(file, backing)?;
    // A loop device as BACKING: its file must be free as well (no daemon on the image); the
    // probe is dropped at once, the device's own lock (and O_EXCL) covers the update.
    if let Some(file_path) = loop_backing_file(backing) {
        let under = File::open(&file_path)
            .map_err(|e| Error::io(format!("cannot open {}", file_path.display()), e))?;
        lock_file_for_update(&under, &file_path).map_err(|e| loop_busy(e, backing, &file_path))?;
    }
    Ok(())
}

/// [`lock_for_update`] of one file.
fn lock_file_for_update(file: &File, backing: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) => {
                let canon = backing
                    .canonicalize()
                    .unwrap_or_else(|_| backing.to_path_buf());
                let served = open_volumes().into_iter().any(|e| e.backing == canon);
                if served || start.elapsed() > UPDATE_LOCK_WAIT {
                    return Err(busy_error(backing));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", backing.display()), e));
            }
        }
    }
}

/// The Busy error for a backing file whose lock is held: names the daemon (and its PLAIN)
/// when one serves it, else says another process holds the flock.
pub fn busy_error(backing: &Path) -> Error {
    let canon = backing
        .canonicalize()
        .unwrap_or_else(|_| backing.to_path_buf());
    let holder = open_volumes().into_iter().find(|e| e.backing == canon);
    let shown = backing.display();
    Error::Busy(match holder {
        Some(e) => format!(
            "{shown} is already open {} (pid {}) as {}: `vaultdisk close {}` first",
            if e.read_only {
                "read-only"
            } else {
                "read-write"
            },
            e.pid,
            e.plain.display(),
            e.plain.display()
        ),
        None => format!("{shown} is locked by another process (flock)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_lock_conflicts_are_busy() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        ensure_backing_free(tmp.path(), false).unwrap();
        let holder = File::open(tmp.path()).unwrap();
        holder.try_lock_shared().unwrap();
        // A read-only holder blocks read-write opens but not other read-only ones.
        let e = ensure_backing_free(tmp.path(), false).unwrap_err();
        assert_eq!(e.exit_code(), 5, "{e}");
        ensure_backing_free(tmp.path(), true).unwrap();
        holder.unlock().unwrap();
        holder.try_lock().unwrap();
        assert_eq!(
            ensure_backing_free(tmp.path(), true)
                .unwrap_err()
                .exit_code(),
            5
        );
    }
}
