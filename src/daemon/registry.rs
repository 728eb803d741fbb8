//! The registry of open volumes: one `<pid>.json` entry per serving process in the runtime
//! directory, which has one checked policy (a directory owned by this user, mode 0700, not a
//! symlink). See docs/daemon-protocol.md "Registry".
use super::ServeSpec;
use crate::error::{Error, Result};
use crate::sys::procfs::{self, MountEntry, process_alive, process_stat};
use log::warn;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One registry entry: a volume served by a live (or crashed) vaultdisk process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenVolume {
    /// The serving process.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a reused
    /// pid is not mistaken for it.
    pub start_time: u64,
    /// Canonical absolute path of the backing file.
    pub backing: PathBuf,
    /// Canonical absolute path of PLAIN.
    pub plain: PathBuf,
    /// Served read-only.
    pub read_only: bool,
    /// What unlocked the volume, from `ServeSpec::unlocked_by`.
    pub unlocked_by: String,
    /// PLAIN did not exist before the open and is removed at close.
    pub created_plain: bool,
}

/// The registry directory: `$VAULTDISK_RUNTIME_DIR` if set, else `/run/vaultdisk` for root,
/// else `$XDG_RUNTIME_DIR/vaultdisk`, else `/tmp/vaultdisk-<uid>`; not created here.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VAULTDISK_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    let euid = crate::sys::geteuid();
    if euid == 0 {
        return PathBuf::from("/run/vaultdisk");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(x) if !x.is_empty() => PathBuf::from(x).join("vaultdisk"),
        _ => PathBuf::from(format!("/tmp/vaultdisk-{euid}")),
    }
}

/// The live entries of the registry (for `status`); crashed daemons' entries are skipped.
/// A vaultdisk mount that no entry names (the runtime directory was deleted under it) is
/// found through its daemon, which keeps its entry open (`discover`).
pub fn open_volumes() -> Vec<OpenVolume> {
    let mut live = live_registry();
    live.extend(discover(&live));
    live
}

/// The registry's entries whose process is alive.
fn live_registry() -> Vec<OpenVolume> {
    read_registry()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| process_alive(e.pid, e.start_time))
        .collect()
}

/// Whether a mount table line is a vaultdisk FUSE mount (fsname and subtype "vaultdisk").
pub fn is_vaultdisk_mount(m: &MountEntry) -> bool {
    m.fs_type.as_encoded_bytes().starts_with(b"fuse")
        && (m.source == "vaultdisk" || m.fs_type == "fuse.vaultdisk")
}

/// The vaultdisk FUSE mounts of this user (super option `user_id=<euid>`) that no entry in
/// `known` serves: what the registry lost. Live or dead (ENOTCONN) alike.
pub(super) fn orphan_mounts(known: &[OpenVolume]) -> Vec<PathBuf> {
    let uid = format!("user_id={}", crate::sys::geteuid());
    procfs::mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(is_vaultdisk_mount)
        .filter(|m| {
            m.super_options
                .as_encoded_bytes()
                .split(|&b| b == b',')
                .any(|o| o == uid.as_bytes())
        })
        .map(|m| m.mount_point)
        .filter(|p| !known.iter().any(|e| &e.plain == p))
        .collect()
}

/// This user's live vaultdisk mounts that no entry names and whose daemon cannot be read
/// (a non-root user's, once the runtime directory is gone): `status` shows them with what
/// is unknown left out. Mounts served from another runtime directory (found by root) and
/// dead mounts (ENOTCONN) are not listed. Root reads every daemon's fds, so for root this
/// is always empty: a mount not found then is one whose daemon is still starting (mounted,
/// not yet registered) or serves another runtime directory.
pub fn unidentified_mounts() -> Vec<MountEntry> {
    if crate::sys::geteuid() == 0 {
        return Vec::new();
    }
    let live: Vec<OpenVolume> = live_registry();
    let orphans = orphan_mounts(&live);
    if orphans.is_empty() {
        return Vec::new();
    }
    let found = scan_daemons(&orphans);
    procfs::mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| is_vaultdisk_mount(m) && orphans.contains(&m.mount_point))
        .filter(|m| !found.iter().any(|(_, e)| e.plain == m.mount_point))
        .filter(|m| {
            !fs::symlink_metadata(&m.mount_point)
                .is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
        })
        .collect()
}

/// The entries of the live daemons serving the vaultdisk mounts that `known` lacks, read
/// from the entry each daemon keeps open (/proc/<pid>/fd), which outlives the runtime
/// directory. Only processes whose fds we may read are found: all for root, none of a
/// non-root user's (daemons are not dumpable); an entry must name its own process, belong
/// to this user, have been written in this runtime directory and serve one of those mounts.
pub(super) fn discover(known: &[OpenVolume]) -> Vec<OpenVolume> {
    let orphans = orphan_mounts(known);
    if orphans.is_empty() {
        return Vec::new();
    }
    let dir = runtime_dir();
    let canon = dir.canonicalize().ok();
    scan_daemons(&orphans)
        .into_iter()
        .filter(|(d, _)| *d == dir || canon.as_ref() == Some(d))
        .map(|(_, e)| e)
        .collect()
}

/// The registry directory each found entry was written in, with the entry, for every
/// readable daemon serving one of `orphans` (any runtime directory).
fn scan_daemons(orphans: &[PathBuf]) -> Vec<(PathBuf, OpenVolume)> {
    let mut found: Vec<(PathBuf, OpenVolume)> = Vec::new();
    for pid in procfs::pids() {
        let entry_name = format!("{pid}.json");
        for (fd, target) in procfs::fd_targets(pid) {
            let bytes = target.as_os_str().as_encoded_bytes();
            let bytes = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
            let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
            if path.file_name().is_none_or(|n| n != entry_name.as_str()) {
                continue;
            }
            let Some(dir) = path.parent() else {
                continue;
            };
            if let Some(e) = read_kept_entry(pid, fd)
                && orphans.contains(&e.plain)
                && !found.iter().any(|(_, f)| f.pid == e.pid)
            {
                found.push((dir.to_path_buf(), e));
            }
        }
    }
    found
}

/// The entry behind fd `fd` of `pid`, if it is this user's, names `pid` and `pid` is alive.
fn read_kept_entry(pid: u32, fd: u32) -> Option<OpenVolume> {
    // The magic link is followed to the open file itself (even once unlinked); O_NONBLOCK
    // so that a FIFO with that name cannot hang us.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/{pid}/fd/{fd}"))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != crate::sys::geteuid() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_ENTRY_BYTES).read_to_end(&mut bytes).ok()?;
    let e: OpenVolume = serde_json::from_slice(&bytes).ok()?;
    (e.pid == pid && process_alive(pid, e.start_time)).then_some(e)
}

/// An entry is a few hundred bytes; anything larger is not one.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// The live registry entry serving `backing`, if any.
pub fn serving(backing: &Path) -> Option<OpenVolume> {
    let canon = backing.canonicalize().ok()?;
    open_volumes().into_iter().find(|e| e.backing == canon)
}

/// Our registry entry; removed on drop. The entry stays open for the process's lifetime, so
/// `discover` can read it through /proc/<pid>/fd even after the runtime directory is gone.
pub(super) struct Registration {
    path: PathBuf,
    pid: u32,
    start_time: u64,
    _kept: Option<File>,
}

impl Registration {
    /// Leaves `message` for `close` (which waits for this process to exit): the serve or its
    /// final flush failed. Written before the entry itself is removed.
    pub(super) fn record_failure(&self, message: &str) {
        // Made again if it was deleted meanwhile: `close` looks there.
        let dir = match ensure_runtime_dir() {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot record the failure ({message}): {e}");
                return;
            }
        };
        let path = failure_path(&dir, self.pid, self.start_time);
        if let Err(e) = crate::fsutil::write_private_atomically(&path, message.as_bytes()) {
            warn!("cannot write {}: {e}", path.display());
        }
    }
}

/// Where a daemon that failed at the end leaves its message: `<pid>-<start time>.failed`.
fn failure_path(dir: &Path, pid: u32, start_time: u64) -> PathBuf {
    dir.join(format!("{pid}-{start_time}.failed"))
}

/// The failure message the daemon (`pid`, `start_time`) left when it exited, removed once
/// read; None when it ended cleanly.
pub(super) fn take_failure(pid: u32, start_time: u64) -> Option<String> {
    let path = failure_path(&existing_runtime_dir()?, pid, start_time);
    let bytes = fs::read(&path).ok()?;
    let _ = fs::remove_file(&path);
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Removes the entries for `plain` whose daemon is gone (after its dead mount was cleared).
pub(super) fn remove_dead_entries(plain: &Path) {
    for (path, e) in read_registry() {
        if e.plain == plain && !process_alive(e.pid, e.start_time) {
            let _ = fs::remove_file(&path);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// Creates the runtime directory if needed and checks the one policy for it: a directory
/// (not a symlink) owned by this user, mode 0700 (a looser mode of our own directory is
/// tightened). In /tmp someone else could have made it first; that is refused (exit 2).
pub fn ensure_runtime_dir() -> Result<PathBuf> {
    let dir = runtime_dir();
    let shown = dir.display();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("cannot create {shown}"), e))?;
    let meta =
        fs::symlink_metadata(&dir).map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
    if !runtime_dir_is_ours(&meta) {
        return Err(Error::Permission(format!(
            "{shown} is not a directory owned by this user"
        )));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("cannot chmod {shown}"), e))?;
    }
    Ok(dir)
}

/// The runtime directory if it exists and passes the policy of `ensure_runtime_dir`
/// (entries in a directory another user made are never trusted); not created here.
pub fn existing_runtime_dir() -> Option<PathBuf> {
    let dir = runtime_dir();
    let meta = fs::symlink_metadata(&dir).ok()?;
    if runtime_dir_is_ours(&meta) {
        Some(dir)
    } else {
        warn!(
            "ignoring {}: not a directory owned by this user",
            dir.display()
        );
        None
    }
}

fn runtime_dir_is_ours(meta: &fs::Metadata) -> bool {
    meta.is_dir() && meta.uid() == crate::sys::geteuid()
}

/// Writes this process's registry entry for `plain` (canonical) served from `spec`; the
/// entry is removed when the returned guard drops.
pub(super) fn register(
    spec: &ServeSpec,
    plain: &Path,
    created_plain: bool,
) -> Result<Registration> {
    let dir = ensure_runtime_dir()?;
    let pid = std::process::id();
    let start_time = process_stat(pid)
        .map(|s| s.start_time)
        .ok_or_else(|| Error::Device("cannot read /proc/self/stat".into()))?;
    let backing = spec
        .backing
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", spec.backing.display()), e))?;
    let entry = OpenVolume {
        pid,
        start_time,
        backing,
        plain: plain.to_path_buf(),
        read_only: spec.read_only,
        unlocked_by: spec.unlocked_by.clone(),
        created_plain,
    };
    let json = serde_json::to_vec_pretty(&entry).map_err(|e| Error::Device(e.to_string()))?;
    let path = dir.join(format!("{pid}.json"));
    crate::fsutil::write_private_atomically(&path, &json)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    let kept = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| warn!("cannot keep {} open: {e}", path.display()))
        .ok();
    Ok(Registration {
        path,
        pid,
        start_time,
        _kept: kept,
    })
}

/// Every parseable entry with its file path, live or not.
pub(super) fn read_registry() -> Vec<(PathBuf, OpenVolume)> {
    let Some(rt) = existing_runtime_dir() else {
        return Vec::new();
    };
    let Ok(dir) = fs::read_dir(rt) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let bytes = fs::read(&p).ok()?;
            let entry = serde_json::from_slice(&bytes).ok()?;
            Some((p, entry))
        })
        .collect()
}
