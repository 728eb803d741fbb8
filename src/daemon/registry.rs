//! The registry of open volumes: one `<pid>.json` entry per serving process in the runtime
//! directory, which has one checked policy (a directory owned by this user, mode 0700, not a
//! symlink). See docs/daemon-protocol.md "Registry".
use super::ServeSpec;
use crate::error::{Error, Result};
use crate::sys::procfs::{process_alive, process_stat};
use log::warn;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One registry entry: a volume served by a live (or crashed) vaultdisk process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenVolume {
    /// The serving process.
    pub pid: u32,
    /// Its start time in clock ticks since boot (/proc/<pid>/stat field 22), so a reused
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
pub fn open_volumes() -> Vec<OpenVolume> {
    read_registry()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| process_alive(e.pid, e.start_time))
        .collect()
}

/// The live registry entry serving `backing`, if any.
pub fn serving(backing: &Path) -> Option<OpenVolume> {
    let canon = backing.canonicalize().ok()?;
    open_volumes().into_iter().find(|e| e.backing == canon)
}

/// Our registry entry; removed on drop.
pub(super) struct Registration {
    path: PathBuf,
    pid: u32,
    start_time: u64,
}

impl Registration {
    /// Leaves `message` for `close` (which waits for this process to exit): the serve or its
    /// final flush failed. Written before the entry itself is removed.
    pub(super) fn record_failure(&self, message: &str) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        let path = failure_path(dir, self.pid, self.start_time);
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
        if let Err(e) = fs::remove_file(&self.path) {
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
    Ok(Registration {
        path,
        pid,
        start_time,
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
