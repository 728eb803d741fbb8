//! Serving one volume: the FUSE session over PLAIN, PLAIN's creation and safety checks, the
//! signal thread, and the run until PLAIN is unmounted (docs/daemon-protocol.md).
use super::protocol::{Readiness, ServeSpec};
use super::registry::{Registration, register};
use crate::error::{Error, Result};
use crate::fusefs::{self, PlainFs};
use crate::safepath;
use crate::secret::VolumeKey;
use crate::sys::procfs;
use crate::volume::{Plaintext, Volume};
use log::{debug, info, warn};
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Serves `spec` on a thread of the calling process, without registry entry or signal
/// handling (for tests and embedding). The mount is ready when this returns.
pub fn serve_in_thread(spec: &ServeSpec, key: &VolumeKey) -> Result<MountHandle> {
    let serving = mount_session(spec, key)?;
    let plain = serving.plain.clone();
    let thread = std::thread::Builder::new()
        .name("vaultdisk-fuse".into())
        .spawn(move || run(serving, None, None))
        .map_err(|e| Error::io("cannot start the FUSE thread", e))?;
    Ok(MountHandle {
        plain,
        thread: Some(thread),
    })
}

/// A mount served by `serve_in_thread`. Dropping it unmounts (lazily if still in use).
#[derive(Debug)]
pub struct MountHandle {
    plain: PathBuf,
    thread: Option<JoinHandle<Result<()>>>,
}

impl MountHandle {
    /// Canonical path of PLAIN.
    pub fn plain(&self) -> &Path {
        &self.plain
    }

    /// Unmounts and waits for the session to flush and clean up. Busy while PLAIN is in use.
    pub fn unmount(mut self) -> Result<()> {
        super::unmount(&self.plain).map_err(|e| super::unmount_error(&self.plain, e))?;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| Error::Device("the FUSE thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        match super::unmount(&self.plain) {
            Ok(()) => {
                if let Ok(Err(e)) = thread.join() {
                    warn!("serving {} ended with: {e}", self.plain.display());
                }
            }
            Err(e) => {
                // Still in use (e.g. a test panicked with the file open): detach it so the
                // session ends when the last user lets go, and do not wait for that.
                warn!(
                    "unmount of {} failed ({e}); detaching lazily",
                    self.plain.display()
                );
                let _ = super::lazy_unmount(&self.plain);
            }
        }
    }
}

/// The one serve sequence of `vaultdisk open`, foreground or daemon (review S14): mount,
/// drop the transport copy of the key, lock the key pages, register, leave the caller's
/// working directory, handle signals, report ready (daemon: on `ready`, then detach stdio)
/// and run until PLAIN is unmounted.
pub(super) fn serve_until_unmounted(
    spec: ServeSpec,
    key: VolumeKey,
    ready: Option<&mut Readiness>,
) -> Result<()> {
    let serving = mount_session(&spec, &key)?;
    drop(key);
    if let Some(warning) = lock_key_pages() {
        // In the log (daemon.log, or stderr in the foreground), and shown by the starter.
        warn!("{warning}");
        if let Some(r) = ready.as_deref() {
            r.note(&warning);
        }
    }
    let registration = register(&spec, &serving.plain, serving.created.is_some())?;
    // Paths are canonical from here on; do not pin the caller's working directory.
    let _ = std::env::set_current_dir("/");
    let signals = spawn_signal_thread(
        &serving.plain,
        serving.grow.clone().filter(|_| spec.grow_with_file),
    )?;
    if let Some(r) = ready {
        if !r.send("ok") {
            // The parent is gone and never learnt of the mount: undo it rather than linger.
            // Dropping `serving` unmounts, then removes a PLAIN we created.
            signals.stop();
            drop(registration);
            drop(serving);
            return Err(Error::Device(
                "the starting process went away before the mount was reported".into(),
            ));
        }
        detach_stdio();
    }
    run(serving, Some(registration), Some(signals))
}

/// A mounted session, not yet running.
struct Serving {
    // Field order is drop order: unmount (session) before removing the file under it.
    session: fuser::Session<PlainFs>,
    volume: Arc<dyn Plaintext>,
    /// The LUKS volume again, for SIGUSR1 growth (None for BitLocker).
    grow: Option<Arc<Volume>>,
    plain: PathBuf,
    created: CreatedPlain,
    /// The flock on the file under a loop device as BACKING, held while serving.
    loop_lock: Option<std::fs::File>,
}

/// Removes PLAIN on drop if we created it (the canonical path, so a later chdir cannot
/// misdirect the removal).
struct CreatedPlain(Option<PathBuf>);

impl CreatedPlain {
    fn is_some(&self) -> bool {
        self.0.is_some()
    }
}

impl Drop for CreatedPlain {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_if_empty_file(&p);
        }
    }
}

/// Opens and locks the backing file, prepares PLAIN, builds the volume and mounts it.
fn mount_session(spec: &ServeSpec, key: &VolumeKey) -> Result<Serving> {
    let user = crate::sys::geteuid() != 0;
    if spec.allow_other && user && !fuse_conf_allows_other(FUSE_CONF) {
        return Err(allow_other_error());
    }
    // A block device is opened exclusively (O_EXCL): a mounted one is refused, exit 5.
    let backing = crate::device::open_exclusive(&spec.backing, !spec.read_only)?;
    super::lock::lock_backing(&backing, &spec.backing, spec.read_only)?;
    let loop_lock = super::lock::lock_loop_backing(&spec.backing, spec.read_only)?;
    let backing_canon = spec
        .backing
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", spec.backing.display()), e))?;
    let (plain, created) = prepare_plain(&spec.plain, &backing_canon)?;
    let (volume, grow): (Arc<dyn Plaintext>, Option<Arc<Volume>>) = if spec.bitlocker {
        (
            Arc::new(crate::bitlocker::serve(
                backing,
                spec.segment,
                key,
                spec.read_only,
                &spec.backing,
            )?),
            None,
        )
    } else {
        let v = Arc::new(
            Volume::new(backing, spec.segment, key, spec.read_only)?
                .with_discards(spec.allow_discards),
        );
        (v.clone(), Some(v))
    };
    let fs = PlainFs::new(
        Arc::clone(&volume),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
    .with_path(&plain);
    let writeback = fs.uses_writeback_cache();
    let config = fusefs::mount_config(spec.read_only, spec.allow_other);
    let session = fuser::Session::new(fs, &plain, &config).map_err(|e| {
        // fuser opens /dev/fuse itself before trying fusermount3, so a /dev/fuse that this
        // user may not open fails here rather than falling back.
        if user && e.to_string().contains("user_allow_other") {
            return allow_other_error();
        }
        let hint = if e.kind() == io::ErrorKind::PermissionDenied && user {
            " (is /dev/fuse readable and writable by this user?)"
        } else {
            ""
        };
        Error::Device(format!(
            "cannot mount FUSE on {}: {e}{hint}",
            spec.plain.display()
        ))
    })?;
    if writeback {
        // Before anyone opens PLAIN: the kernel must know its size (see fusefs).
        fusefs::announce_size(&session.notifier(), volume.as_ref()).map_err(|e| {
            Error::Device(format!(
                "cannot tell the kernel the size of {}: {e}",
                plain.display()
            ))
        })?;
    }
    raise_readahead(&plain);
    info!("serving {} as {}", backing_canon.display(), plain.display());
    Ok(Serving {
        session,
        volume,
        grow,
        plain,
        created,
        loop_lock,
    })
}

/// fusermount3's configuration: `user_allow_other` there lets users mount with allow_other.
const FUSE_CONF: &str = "/etc/fuse.conf";

/// Whether fuse.conf at `path` has a `user_allow_other` line (fusermount3 reads it so: the
/// option alone on a line, blanks around it ignored; `#` starts a comment).
fn fuse_conf_allows_other(path: &str) -> bool {
    fs::read(path).is_ok_and(|text| {
        text.split(|&b| b == b'\n').any(|line| {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            line.trim_ascii() == b"user_allow_other"
        })
    })
}

fn allow_other_error() -> Error {
    Error::Usage(format!(
        "--allow-other needs user_allow_other in {FUSE_CONF} (a line by itself, added by root)"
    ))
}

/// Checks PLAIN (or creates it, 0600) and returns its canonical path. PLAIN must be a
/// regular file that is not a symlink, in a directory only the caller or root can change
/// (crate::safepath): it is opened with O_NOFOLLOW (created with O_EXCL as well), and the
/// opened file must still be the one at the path, so a link planted in its place is never
/// followed to mount the plaintext over another file.
fn prepare_plain(plain: &Path, backing_canon: &Path) -> Result<(PathBuf, CreatedPlain)> {
    match check_plain(plain, backing_canon) {
        // A dead vaultdisk mount (its daemon killed): clear it, then look again.
        Err(PlainError::DeadMount(canon)) => {
            if !super::clear_dead_mount(plain, &canon)? {
                return Err(Error::Busy(format!(
                    "{} is not reachable (transport endpoint is not connected) and is not a \
                     vaultdisk mount: unmount it first",
                    plain.display()
                )));
            }
            super::registry::remove_dead_entries(&canon);
            check_plain(plain, backing_canon).map_err(PlainError::into_error)
        }
        other => other.map_err(PlainError::into_error),
    }
}

/// Why PLAIN cannot be used as it is.
enum PlainError {
    /// PLAIN (canonical) is a mount point whose FUSE daemon is gone (ENOTCONN).
    DeadMount(PathBuf),
    /// Anything else, as it is shown.
    Other(Error),
}

impl PlainError {
    fn into_error(self) -> Error {
        match self {
            PlainError::DeadMount(canon) => Error::Busy(format!(
                "{}: transport endpoint is not connected (a dead mount)",
                canon.display()
            )),
            PlainError::Other(e) => e,
        }
    }
}

impl From<Error> for PlainError {
    fn from(e: Error) -> Self {
        PlainError::Other(e)
    }
}

/// The checks of `prepare_plain`, once.
fn check_plain(
    plain: &Path,
    backing_canon: &Path,
) -> std::result::Result<(PathBuf, CreatedPlain), PlainError> {
    let shown = plain.display();
    let resolved = safepath::resolve_parent(plain)
        .map_err(|e| Error::io(format!("cannot create {shown}"), e))?;
    let canon = resolved.path;
    let dir_meta = safepath::check_trusted_dir(&resolved.dir, plain)?;
    let not_regular = || {
        Error::Usage(format!(
            "{shown} is not a regular file: the plaintext is served as one file"
        ))
    };
    let (file, created) = match fs::symlink_metadata(&canon) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(safepath::symlink_error("PLAIN", plain).into());
        }
        Ok(m) if !m.is_file() => return Err(not_regular().into()),
        Ok(m) => {
            safepath::check_owner_in_shared_dir(&m, &dir_meta, plain)?;
            // O_PATH: no open of the file's contents (a FIFO swapped in cannot block us).
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
                .open(&canon)
                .map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
            (file, CreatedPlain(None))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&canon)
                .map_err(|e| Error::io(format!("cannot create {shown}"), e))?;
            (file, CreatedPlain(Some(canon.clone())))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(PlainError::DeadMount(canon));
        }
        Err(e) => return Err(Error::io(format!("cannot stat {shown}"), e).into()),
    };
    let opened = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
    if opened.file_type().is_symlink() {
        return Err(safepath::symlink_error("PLAIN", plain).into());
    }
    if !opened.is_file() {
        return Err(not_regular().into());
    }
    // The path must still name the file we checked and opened.
    let again =
        fs::symlink_metadata(&canon).map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
    if again.dev() != opened.dev() || again.ino() != opened.ino() {
        return Err(Error::Busy(format!(
            "{shown} was replaced while vaultdisk opened it: refusing to mount there"
        ))
        .into());
    }
    if canon == backing_canon {
        return Err(Error::Usage(format!(
            "{shown} is the backing file itself: name a different plaintext file"
        ))
        .into());
    }
    if procfs::is_mount_point(&canon) {
        return Err(Error::Busy(format!(
            "{shown} is already a mount point (open by vaultdisk? see `vaultdisk close`)"
        ))
        .into());
    }
    Ok((canon, created))
}

/// Raises the kernel readahead of the FUSE mount at `plain` (canonical) to
/// `fusefs::READAHEAD_KIB`. Root only; best effort, as the data is right either way.
fn raise_readahead(plain: &Path) {
    match procfs::set_read_ahead_kib(plain, fusefs::READAHEAD_KIB) {
        Ok(()) => debug!(
            "readahead of {} set to {} KiB",
            plain.display(),
            fusefs::READAHEAD_KIB
        ),
        Err(e) => debug!("cannot raise readahead ({e}): left at the kernel default"),
    }
}

/// How long a signal's unmount retries EBUSY: a process forked elsewhere may hold a copy of
/// a just-closed fd of PLAIN until it execs, which must not make the signal a no-op.
const SIGNAL_BUSY_GRACE: Duration = Duration::from_millis(200);

/// Unmounts PLAIN, retrying a busy mount for `SIGNAL_BUSY_GRACE` before giving up.
fn unmount_with_grace(plain: &Path) -> io::Result<()> {
    let deadline = Instant::now() + SIGNAL_BUSY_GRACE;
    loop {
        match super::unmount(plain) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            res => return res,
        }
    }
}

/// Runs the session until unmounted, then flushes and cleans up.
fn run(
    serving: Serving,
    registration: Option<Registration>,
    signals: Option<SignalThread>,
) -> Result<()> {
    let Serving {
        session,
        volume,
        grow,
        plain,
        created,
        loop_lock,
    } = serving;
    let res = session.run();
    if let Some(s) = signals {
        s.stop();
    }
    // fuser has dropped its Arc of the volume by now, so after this drop the backing
    // file (and its flock) is closed.
    let flushed = volume.flush();
    drop(volume);
    drop(grow);
    drop(loop_lock);
    let result = res
        .map_err(|e| Error::Device(format!("serving {} failed: {e}", plain.display())))
        .and(flushed.map_err(|e| {
            Error::io(
                format!("flushing the backing file of {}", plain.display()),
                e,
            )
        }));
    if let (Err(e), Some(r)) = (&result, &registration) {
        // `close` is waiting for this process: tell it, so it does not exit 0.
        r.record_failure(&e.to_string());
    }
    drop(registration);
    drop(created);
    info!("stopped serving {}", plain.display());
    result
}

struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: JoinHandle<()>,
}

impl SignalThread {
    fn stop(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

/// SIGTERM, SIGINT and SIGHUP unmount PLAIN, which ends the session; while PLAIN is in use
/// the signal is refused with a warning rather than pulling the disk from under its user.
fn spawn_signal_thread(plain: &Path, grow: Option<Arc<Volume>>) -> Result<SignalThread> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| Error::io("cannot install signal handlers", e))?;
    let handle = signals.handle();
    let plain = plain.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("vaultdisk-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    // `vaultdisk resize` grew the backing file: serve the new sectors.
                    match grow.as_ref().map(|v| v.grow_to_backing()) {
                        Some(Ok((old, new))) => {
                            info!("SIGUSR1: {} grew from {old} to {new} bytes", plain.display());
                            // The kernel keeps its own size under the writeback cache.
                            if let Err(e) = fusefs::sync_kernel_size(&plain, new) {
                                warn!("SIGUSR1: cannot grow {} to {new} bytes: {e}", plain.display());
                            }
                        }
                        Some(Err(e)) => warn!("SIGUSR1: cannot stat the backing file: {e}"),
                        None => warn!("SIGUSR1: the data segment has a fixed size; not grown"),
                    }
                    continue;
                }
                match unmount_with_grace(&plain) {
                    Ok(()) => info!("signal {sig}: unmounted {}", plain.display()),
                    Err(e) => warn!(
                        "signal {sig}: cannot unmount {} ({e}); close what uses it and signal again",
                        plain.display()
                    ),
                }
            }
        })
        .map_err(|e| Error::io("cannot start the signal thread", e))?;
    Ok(SignalThread { handle, thread })
}

/// Locks the pages holding the cipher's round keys, which `Volume::new` built on this
/// thread's heap (and, with CAP_IPC_LOCK or no RLIMIT_MEMLOCK, every later mapping: the
/// per-thread cipher contexts the workers copy). Called after the transport copy of the key
/// is dropped: its munlock would unlock any page it shares with them. Best effort: returns
/// the warning to show if RLIMIT_MEMLOCK forbids it.
fn lock_key_pages() -> Option<String> {
    match crate::sys::lock_memory() {
        Ok(how) => {
            log::debug!("key pages locked in memory ({how:?})");
            None
        }
        Err(e) => Some(format!(
            "cannot lock the volume's keys in memory ({}): they may be swapped out; raise RLIMIT_MEMLOCK (ulimit -l)",
            crate::error::plain_io(&e)
        )),
    }
}

/// Points stdin and stdout at /dev/null so the parent's pipes close and its read sees EOF.
fn detach_stdio() {
    match OpenOptions::new().read(true).write(true).open("/dev/null") {
        Ok(null) => {
            let _ = nix::unistd::dup2_stdin(&null);
            let _ = nix::unistd::dup2_stdout(&null);
        }
        Err(e) => warn!("cannot open /dev/null: {e}"),
    }
}

/// Removes a file we created, but only if it is still an empty regular file: never a
/// mount point that is still live, never data someone put there.
pub(super) fn remove_if_empty_file(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == 0 => {
            if let Err(e) = fs::remove_file(path) {
                warn!("cannot remove {}: {e}", path.display());
            }
        }
        Ok(_) => warn!(
            "not removing {}: it is no longer the empty file vaultdisk created",
            path.display()
        ),
        Err(e) => warn!("cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_conf_user_allow_other_lines() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("fuse.conf");
        let conf_str = conf.to_str().unwrap();
        for (text, allowed) in [
            ("#user_allow_other\nmount_max = 1000\n", false),
            ("# user_allow_other\n", false),
            ("user_allow_other\n", true),
            ("mount_max = 10\n  user_allow_other  # for sharing\n", true),
            ("user_allow_other_not\n", false),
        ] {
            fs::write(&conf, text).unwrap();
            assert_eq!(fuse_conf_allows_other(conf_str), allowed, "{text:?}");
        }
        assert!(!fuse_conf_allows_other("/nonexistent/fuse.conf"));
        assert_eq!(allow_other_error().exit_code(), 1);
    }
}
