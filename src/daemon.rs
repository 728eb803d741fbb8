//! Mount lifecycle: background daemon, readiness pipe, signals, unmount, registry.
//!
//! `start` either serves in the calling process (foreground) or runs the current executable
//! with the single argument `__daemon`. The child reads its request from stdin: the
//! `ServeSpec` as one JSON line, then the volume key as a little-endian u32 length and the
//! raw bytes (never argv or environment). It answers on stdout with one line, `ok` or
//! `err <exit code> <message>`, then points stdin/stdout at /dev/null; its stderr is the log
//! file `daemon.log` in the runtime directory, so it holds none of the parent's pipes.
//!
//! Every open volume has a registry entry `<runtime dir>/<pid>.json` (`OpenVolume`): the
//! runtime directory is `$VAULTDISK_RUNTIME_DIR` if set, else `/run/vaultdisk` for root,
//! else `$XDG_RUNTIME_DIR/vaultdisk`, else `/tmp/vaultdisk-<uid>`; mode 0700.
//!
//! A serving process ends when PLAIN is unmounted (by `close`, `umount`, `fusermount3 -u`)
//! or on SIGTERM/SIGINT/SIGHUP, which unmount unless PLAIN is still in use. It then
//! fdatasyncs and closes the backing file, removes its registry entry and removes PLAIN if
//! it created it.
use crate::error::{Error, Result, exit};
use crate::fusefs::{self, PlainFs};
use crate::geometry::Segment;
use crate::safepath;
use crate::secret::{SecretBytes, VolumeKey};
use crate::volume::Volume;
use log::{error, info, warn};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The hidden argument that makes the executable run `child_main`.
pub const DAEMON_ARG: &str = "__daemon";

/// How long `start` waits for the daemon's readiness report before killing it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `close` retries while PLAIN is busy, for users that are just letting go.
const BUSY_GRACE: Duration = Duration::from_secs(2);
/// How long `close` waits for the daemon to exit after the unmount.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bounds on the request, so a confused writer cannot make the daemon allocate freely.
const MAX_SPEC_BYTES: usize = 64 << 10;
const MAX_KEY_BYTES: usize = 512;

/// Everything the daemon needs besides the key; no secrets in here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeSpec {
    /// The LUKS backing file (or any file holding the encrypted segment).
    pub backing: PathBuf,
    /// The plaintext file to mount over; created (mode 0600) if missing, removed at close.
    pub plain: PathBuf,
    /// Where the data segment lies in `backing`.
    pub segment: Segment,
    /// Open the backing file read-only and refuse writes with EROFS.
    pub read_only: bool,
    /// Serve in the calling process until unmounted instead of detaching a daemon.
    pub foreground: bool,
    /// Let other users (and root, for a user's mount) reach PLAIN, subject to its mode.
    pub allow_other: bool,
    /// What unlocked the volume, e.g. "keyslot 0", for status output.
    pub unlocked_by: String,
    /// The segment runs to the end of the backing file (LUKS2 "dynamic", LUKS1): SIGUSR1
    /// makes the daemon grow PLAIN to the file's new length (online `resize`).
    #[serde(default)]
    pub grow_with_file: bool,
}

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

/// Refuses early (Error::Busy) if `backing` is already open read-write by another daemon
/// (or read-only, when `read_only` is false). Uses the same flock the daemon holds: an
/// exclusive lock for read-write, a shared one for read-only.
pub fn ensure_backing_free(backing: &Path, read_only: bool) -> Result<()> {
    let probe = File::open(backing)
        .map_err(|e| Error::io(format!("cannot open {}", backing.display()), e))?;
    lock_backing(&probe, backing, read_only)?;
    // Closing the probe releases the lock anyway; unlock explicitly for clarity.
    let _ = probe.unlock();
    Ok(())
}

/// Serves `spec` until unmounted. Returns only once the mount works (background) or
/// the filesystem is unmounted (foreground); every failure comes back as an Error.
pub fn start(spec: ServeSpec, key: VolumeKey) -> Result<()> {
    if spec.foreground {
        crate::sys::set_not_dumpable();
        let serving = mount(&spec, &key)?;
        drop(key);
        if let Some(warning) = lock_key_pages() {
            warn!("{warning}");
        }
        let registration = register(&spec, &serving)?;
        let signals = spawn_signal_thread(
            &serving.plain,
            spec.grow_with_file.then(|| serving.volume.clone()),
        )?;
        return run(serving, Some(registration), Some(signals));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot find the vaultdisk executable", e))?;
    start_with_exe(&spec, &key, &exe)
}

/// `start` in the background with an explicit executable, which must run `child_main` when
/// given the single argument `DAEMON_ARG` (tests use their own binary). Returns Ok once the
/// daemon reports the mount ready; on failure the daemon is gone (reaped or killed).
pub fn start_with_exe(spec: &ServeSpec, key: &VolumeKey, exe: &Path) -> Result<()> {
    let rt = ensure_runtime_dir()?;
    let log_path = rt.join("daemon.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .map_err(|e| Error::io(format!("cannot open {}", log_path.display()), e))?;
    let child = Command::new(exe)
        .arg(DAEMON_ARG)
        // The daemon needs no vault: keep the token out of its /proc/<pid>/environ.
        .env_remove("VAULT_TOKEN")
        .env_remove("BAO_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| Error::io(format!("cannot start {}", exe.display()), e))?;
    let mut child = ChildGuard(Some(child));
    let (stdin, stdout) = match child.0.as_mut() {
        Some(c) => (c.stdin.take(), c.stdout.take()),
        None => (None, None),
    };
    let (Some(mut stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(Error::Device("daemon started without its pipes".into()));
    };
    // A write error (EPIPE) means the child died early; its report, or its absence, says why.
    if let Err(e) = send_request(&mut stdin, spec, key) {
        warn!("sending the request to the daemon failed: {e}");
    }
    drop(stdin);

    // Read the report on a helper thread so a hung child cannot hang us past the timeout.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_report(stdout));
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(Report::Ready) => {
            // Leave it running: it is the daemon now.
            child.0 = None;
            Ok(())
        }
        Ok(Report::Failed(code, msg)) => {
            child.reap();
            Err(error_from_report(code, msg))
        }
        Ok(Report::Vanished) => {
            let status = child.reap();
            Err(Error::Device(format!(
                "the vaultdisk daemon exited before the mount was ready ({}); see {}",
                status.map_or("unknown status".into(), |s| s.to_string()),
                log_path.display()
            )))
        }
        Err(_) => {
            drop(child); // kills and reaps
            Err(Error::Device(format!(
                "the vaultdisk daemon did not report ready within {} s; see {}",
                READY_TIMEOUT.as_secs(),
                log_path.display()
            )))
        }
    }
}

/// Entry point of the hidden `__daemon` subcommand: spec and key arrive on stdin.
/// Returns the process exit code.
pub fn child_main() -> i32 {
    // A session of our own: no controlling terminal, so the parent's terminal signals and
    // hangups never reach the daemon. Fails only if we already lead a group; harmless.
    let _ = nix::unistd::setsid();
    crate::sys::set_not_dumpable();
    let mut ready = Readiness { reported: false };
    match child_serve(&mut ready) {
        Ok(()) => exit::OK,
        Err(e) => {
            if ready.reported {
                error!("{e}");
            } else {
                ready.send(&format!(
                    "err {} {}",
                    e.exit_code(),
                    one_line(&e.to_string())
                ));
            }
            e.exit_code()
        }
    }
}

/// Unmounts `plain`, waits for its daemon to flush and exit. Busy (exit 5) while in use.
///
/// `plain` not in the registry gives `Error::Usage` (exit 1): the caller named a file that
/// vaultdisk is not serving (or serves for another user). A registry entry whose daemon
/// died is cleaned up (unmount of the dead mount, PLAIN removed if we created it) and Ok.
pub fn close(plain: &Path) -> Result<()> {
    let canon = canonical_plain(plain)?;
    let Some((entry_path, entry)) = read_registry().into_iter().find(|(_, e)| e.plain == canon)
    else {
        return Err(Error::Usage(format!(
            "{} is not open by vaultdisk",
            plain.display()
        )));
    };
    if !process_alive(entry.pid, entry.start_time) {
        warn!(
            "the daemon of {} (pid {}) is gone; cleaning up after it",
            plain.display(),
            entry.pid
        );
        let _ = unmount(&canon);
        if entry.created_plain {
            remove_if_empty_file(&canon);
        }
        let _ = fs::remove_file(&entry_path);
        return Ok(());
    }
    // Right after `umount /mnt` an autoclear loop device and other last users may still be
    // letting go of PLAIN: allow them a short grace period before calling it busy.
    let grace = Instant::now() + BUSY_GRACE;
    loop {
        let res = match loop_device_of(&canon) {
            Some(dev) => Err(Error::Busy(format!(
                "{} is in use by {dev}: unmount its filesystem and detach it (losetup -d {dev}) first",
                plain.display()
            ))),
            None => unmount(&canon).map_err(|e| unmount_error(plain, e)),
        };
        match res {
            Ok(()) => break,
            Err(Error::Busy(_)) if Instant::now() < grace => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    wait_for_exit(entry.pid, entry.start_time, CLOSE_TIMEOUT).map_err(|()| {
        Error::Busy(format!(
            "{} is unmounted but its daemon (pid {}) did not exit within {} s",
            plain.display(),
            entry.pid,
            CLOSE_TIMEOUT.as_secs()
        ))
    })
}

/// Serves `spec` on a thread of the calling process, without registry entry or signal
/// handling (for tests and embedding). The mount is ready when this returns.
pub fn serve_in_thread(spec: &ServeSpec, key: &VolumeKey) -> Result<MountHandle> {
    let serving = mount(spec, key)?;
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
        unmount(&self.plain).map_err(|e| unmount_error(&self.plain, e))?;
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
        match unmount(&self.plain) {
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
                let _ = lazy_unmount(&self.plain);
            }
        }
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

/// Asks the daemon of `entry` to grow PLAIN to its backing file's new length (SIGUSR1).
pub fn signal_grow(entry: &OpenVolume) -> Result<()> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(entry.pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| {
        Error::io(
            format!(
                "cannot signal the daemon (pid {}) of {}",
                entry.pid,
                entry.plain.display()
            ),
            io::Error::from(e),
        )
    })
}

/// The registry directory (see the module doc); not created here.
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

// ---- serving ----

/// A mounted session, not yet running.
struct Serving {
    // Field order is drop order: unmount (session) before removing the file under it.
    session: fuser::Session<PlainFs>,
    volume: Arc<Volume>,
    plain: PathBuf,
    created: CreatedPlain,
}

/// Removes PLAIN on drop if we created it, unless disarmed.
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
fn mount(spec: &ServeSpec, key: &VolumeKey) -> Result<Serving> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!spec.read_only)
        .open(&spec.backing)
        .map_err(|e| Error::io(format!("cannot open {}", spec.backing.display()), e))?;
    lock_backing(&backing, &spec.backing, spec.read_only)?;
    let backing_canon = spec
        .backing
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", spec.backing.display()), e))?;
    let (plain, created) = prepare_plain(&spec.plain, &backing_canon)?;
    let volume = Arc::new(Volume::new(backing, spec.segment, key, spec.read_only)?);
    let fs = PlainFs::new(
        Arc::clone(&volume),
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let config = fusefs::mount_config(spec.read_only, spec.allow_other);
    let session = fuser::Session::new(fs, &plain, &config).map_err(|e| {
        // fuser opens /dev/fuse itself before trying fusermount3, so a /dev/fuse that this
        // user may not open fails here rather than falling back.
        let hint = if e.kind() == io::ErrorKind::PermissionDenied && crate::sys::geteuid() != 0 {
            " (is /dev/fuse readable and writable by this user?)"
        } else {
            ""
        };
        Error::Device(format!(
            "cannot mount FUSE on {}: {e}{hint}",
            spec.plain.display()
        ))
    })?;
    fusefs::raise_readahead(&plain);
    info!("serving {} as {}", backing_canon.display(), plain.display());
    Ok(Serving {
        session,
        volume,
        plain,
        created,
    })
}

/// Checks PLAIN (or creates it, 0600) and returns its canonical path. PLAIN must be a
/// regular file that is not a symlink, in a directory only the caller or root can change
/// (crate::safepath): it is opened with O_NOFOLLOW (created with O_EXCL as well), and the
/// opened file must still be the one at the path, so a link planted in its place is never
/// followed to mount the plaintext over another file.
fn prepare_plain(plain: &Path, backing_canon: &Path) -> Result<(PathBuf, CreatedPlain)> {
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
            return Err(safepath::symlink_error("PLAIN", plain));
        }
        Ok(m) if !m.is_file() => return Err(not_regular()),
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
            // Point the guard at the canonical path, so a later chdir cannot misdirect it.
            (file, CreatedPlain(Some(canon.clone())))
        }
        Err(e) => return Err(Error::io(format!("cannot stat {shown}"), e)),
    };
    let opened = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
    if opened.file_type().is_symlink() {
        return Err(safepath::symlink_error("PLAIN", plain));
    }
    if !opened.is_file() {
        return Err(not_regular());
    }
    // The path must still name the file we checked and opened.
    let again =
        fs::symlink_metadata(&canon).map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
    if again.dev() != opened.dev() || again.ino() != opened.ino() {
        return Err(Error::Busy(format!(
            "{shown} was replaced while vaultdisk opened it: refusing to mount there"
        )));
    }
    if canon == backing_canon {
        return Err(Error::Usage(format!(
            "{shown} is the backing file itself: name a different plaintext file"
        )));
    }
    if is_mount_point(&canon) {
        return Err(Error::Busy(format!(
            "{shown} is already a mount point (open by vaultdisk? see `vaultdisk close`)"
        )));
    }
    Ok((canon, created))
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
        plain,
        created,
    } = serving;
    let res = session.run();
    if let Some(s) = signals {
        s.stop();
    }
    // fuser has dropped its Arc of the volume by now, so after this drop the backing
    // file (and its flock) is closed.
    let flushed = volume.flush();
    drop(volume);
    drop(registration);
    drop(created);
    info!("stopped serving {}", plain.display());
    res.map_err(|e| Error::Device(format!("serving {} failed: {e}", plain.display())))?;
    flushed.map_err(|e| {
        Error::io(
            format!("flushing the backing file of {}", plain.display()),
            e,
        )
    })
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
                            info!("SIGUSR1: {} grew from {old} to {new} bytes", plain.display())
                        }
                        Some(Err(e)) => warn!("SIGUSR1: cannot stat the backing file: {e}"),
                        None => warn!("SIGUSR1: the data segment has a fixed size; not grown"),
                    }
                    continue;
                }
                match unmount(&plain) {
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

// ---- parent/child protocol ----

fn send_request(stdin: &mut impl Write, spec: &ServeSpec, key: &VolumeKey) -> io::Result<()> {
    let mut line = serde_json::to_vec(spec).map_err(io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line)?;
    let secret = key.expose_secret();
    let len = u32::try_from(secret.len()).map_err(io::Error::other)?;
    stdin.write_all(&len.to_le_bytes())?;
    // Straight from locked memory into the pipe: no intermediate copy of the key.
    stdin.write_all(secret)?;
    stdin.flush()
}

/// Reads the request from fd 0 without std's stdin buffer, so no key byte lands in memory
/// that is neither locked nor wiped.
fn read_request() -> Result<(ServeSpec, VolumeKey)> {
    let bad = |what: &str| Error::Usage(format!("daemon: malformed request ({what})"));
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("daemon: stdin", e))?;
    let mut input = File::from(fd);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        input
            .read_exact(&mut byte)
            .map_err(|e| Error::io("daemon: reading the request", e))?;
        if byte[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_SPEC_BYTES {
            return Err(bad("spec too long"));
        }
        line.push(byte[0]);
    }
    let spec: ServeSpec = serde_json::from_slice(&line).map_err(|_| bad("spec"))?;
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|e| Error::io("daemon: reading the key", e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_KEY_BYTES {
        return Err(bad("key length"));
    }
    let mut key = SecretBytes::zeroed(len);
    input
        .read_exact(key.expose_secret_mut())
        .map_err(|e| Error::io("daemon: reading the key", e))?;
    Ok((spec, VolumeKey(key)))
}

fn child_serve(ready: &mut Readiness) -> Result<()> {
    let (spec, key) = read_request()?;
    let serving = mount(&spec, &key)?;
    drop(key);
    if let Some(warning) = lock_key_pages() {
        // In daemon.log, and shown by the starting process.
        warn!("{warning}");
        ready.note(&warning);
    }
    let registration = register(&spec, &serving)?;
    // Paths are canonical from here on; do not pin the caller's working directory.
    let _ = std::env::set_current_dir("/");
    let signals = spawn_signal_thread(
        &serving.plain,
        spec.grow_with_file.then(|| serving.volume.clone()),
    )?;
    if !ready.send("ok") {
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
    run(serving, Some(registration), Some(signals))
}

/// Locks the pages holding the cipher's round keys, which `Volume::new` built on this
/// thread's heap (and, with CAP_IPC_LOCK or no RLIMIT_MEMLOCK, every later mapping: the
/// per-thread cipher contexts the workers copy). Called after the transport copy of the key
/// is dropped: its munlock would unlock any page it shares with them. Best effort: the warning to show if RLIMIT_MEMLOCK
/// forbids it.
fn lock_key_pages() -> Option<String> {
    match crate::sys::lock_memory() {
        Ok(how) => {
            log::debug!("key pages locked in memory ({how:?})");
            None
        }
        Err(e) => Some(format!(
            "cannot lock the volume's keys in memory ({}): they may be swapped out; raise RLIMIT_MEMLOCK (ulimit -l)",
            e.to_string().split(" (os error").next().unwrap_or_default()
        )),
    }
}

/// The daemon's side of the readiness pipe (its stdout).
struct Readiness {
    reported: bool,
}

impl Readiness {
    /// Passes a warning to the parent, which logs it; the final report is still to come.
    fn note(&mut self, warning: &str) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "warn {}", one_line(warning)).and_then(|()| out.flush());
    }

    /// Writes one report line; false if the parent is no longer reading.
    fn send(&mut self, line: &str) -> bool {
        self.reported = true;
        let mut out = io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
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

enum Report {
    Ready,
    Failed(i32, String),
    Vanished,
}

/// Reads the daemon's one-line report, skipping any other line (a test harness may print).
fn read_report(stdout: impl Read) -> Report {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Report::Vanished,
            Ok(_) => {}
        }
        let text = line.trim_end();
        if let Some(warning) = text.strip_prefix("warn ") {
            warn!("{warning}");
            continue;
        }
        if text == "ok" {
            return Report::Ready;
        }
        if let Some(rest) = text.strip_prefix("err ") {
            let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            return Report::Failed(code.parse().unwrap_or(exit::DEVICE), msg.to_string());
        }
    }
}

/// Rebuilds an Error with the exit code the daemon chose and its message as shown.
fn error_from_report(code: i32, msg: String) -> Error {
    match code {
        exit::USAGE => Error::Usage(msg),
        exit::NO_KEY => Error::Permission(
            msg.strip_prefix("permission denied: ")
                .map(str::to_string)
                .unwrap_or(msg),
        ),
        exit::NO_MEMORY => Error::NoMemory(
            msg.strip_prefix("out of memory: ")
                .map(str::to_string)
                .unwrap_or(msg),
        ),
        exit::BUSY => Error::Busy(msg),
        _ => Error::Device(msg),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Kills and reaps the child on drop unless taken out.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn reap(&mut self) -> Option<std::process::ExitStatus> {
        self.0.take().and_then(|mut c| c.wait().ok())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- locking, mounts, processes ----

fn lock_backing(file: &File, backing: &Path, read_only: bool) -> Result<()> {
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
    let start = std::time::Instant::now();
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

/// How long a header update waits for another one to finish.
const UPDATE_LOCK_WAIT: Duration = Duration::from_secs(10);

fn busy_error(backing: &Path) -> Error {
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

/// Unmounts PLAIN without detaching lazily: EBUSY while anything has it open.
fn unmount(plain: &Path) -> io::Result<()> {
    if crate::sys::geteuid() == 0 {
        return nix::mount::umount2(plain, nix::mount::MntFlags::empty()).map_err(io::Error::from);
    }
    fusermount_unmount(plain, false)
}

fn lazy_unmount(plain: &Path) -> io::Result<()> {
    if crate::sys::geteuid() == 0 {
        return nix::mount::umount2(plain, nix::mount::MntFlags::MNT_DETACH)
            .map_err(io::Error::from);
    }
    fusermount_unmount(plain, true)
}

fn fusermount_unmount(plain: &Path, lazy: bool) -> io::Result<()> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(plain).stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if msg.contains("busy") {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(io::Error::other(msg))
}

fn unmount_error(plain: &Path, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EBUSY) {
        Error::Busy(format!(
            "{} is in use (an open file, a mount or a loop device): release it first",
            plain.display()
        ))
    } else {
        Error::io(format!("cannot unmount {}", plain.display()), e)
    }
}

/// Canonical path of PLAIN for registry lookups; falls back to the canonical parent plus
/// the file name when PLAIN itself cannot be resolved (e.g. its daemon died: ENOTCONN).
fn canonical_plain(plain: &Path) -> Result<PathBuf> {
    if let Ok(c) = plain.canonicalize() {
        return Ok(c);
    }
    let abs = std::path::absolute(plain)
        .map_err(|e| Error::io(format!("cannot resolve {}", plain.display()), e))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .map_err(|e| Error::io(format!("cannot resolve {}", plain.display()), e)),
        _ => Err(Error::Usage(format!("{} is not a file", plain.display()))),
    }
}

/// Whether `path` is a mount point in our mount namespace (/proc/self/mountinfo field 5).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(info) = fs::read("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    info.split(|&b| b == b'\n').any(|line| {
        line.split(|&b| b == b' ')
            .nth(4)
            .is_some_and(|mp| unescape_mountinfo(mp) == want)
    })
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = oct.iter().fold(0u32, |a, d| a * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The loop device (e.g. "/dev/loop3") whose backing file is `plain`, if any.
fn loop_device_of(plain: &Path) -> Option<String> {
    let entries = fs::read_dir("/sys/block").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let backing = backing.strip_suffix(" (deleted)").unwrap_or(backing);
        if Path::new(backing) == plain {
            return Some(format!("/dev/{name}"));
        }
    }
    None
}

/// (state, start time) of a process from /proc/<pid>/stat.
fn process_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall; field 3 (state) is index 0 here.
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// Whether `pid` is still the running process that registered. A zombie counts as gone
/// only once its other threads have exited too: a killed multi-threaded daemon shows its
/// leader as Z while workers are still tearing down and still hold the backing file's lock.
fn process_alive(pid: u32, start_time: u64) -> bool {
    match process_stat(pid) {
        Some((_, started)) if started != start_time => false,
        Some(('Z' | 'X', _)) => threads_left(pid) > 1,
        Some(_) => true,
        None => false,
    }
}

/// Threads still listed for `pid` (its leader included); 0 when it is gone.
fn threads_left(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn wait_for_exit(pid: u32, start_time: u64, timeout: Duration) -> std::result::Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while process_alive(pid, start_time) {
        if Instant::now() >= deadline {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Removes a file we created, but only if it is still an empty regular file: never a
/// mount point that is still live, never data someone put there.
fn remove_if_empty_file(path: &Path) {
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

// ---- registry ----

/// Our registry entry; removed on drop.
struct Registration {
    path: PathBuf,
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

fn register(spec: &ServeSpec, serving: &Serving) -> Result<Registration> {
    let dir = ensure_runtime_dir()?;
    let pid = std::process::id();
    let start_time = process_stat(pid)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::Device("cannot read /proc/self/stat".into()))?;
    let backing = spec
        .backing
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", spec.backing.display()), e))?;
    let entry = OpenVolume {
        pid,
        start_time,
        backing,
        plain: serving.plain.clone(),
        read_only: spec.read_only,
        unlocked_by: spec.unlocked_by.clone(),
        created_plain: serving.created.is_some(),
    };
    let json = serde_json::to_vec_pretty(&entry).map_err(|e| Error::Device(e.to_string()))?;
    let path = dir.join(format!("{pid}.json"));
    crate::fsutil::write_private_atomically(&path, &json)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    Ok(Registration { path })
}

/// Every parseable entry with its file path, live or not.
fn read_registry() -> Vec<(PathBuf, OpenVolume)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_parse() {
        assert!(matches!(read_report(&b"noise\nok\n"[..]), Report::Ready));
        assert!(matches!(
            read_report(&b"warn keys not locked\nok\n"[..]),
            Report::Ready
        ));
        match read_report(&b"running 1 test\nerr 5 disk.img is busy\n"[..]) {
            Report::Failed(5, m) => assert_eq!(m, "disk.img is busy"),
            _ => panic!("expected Failed"),
        }
        assert!(matches!(read_report(&b""[..]), Report::Vanished));
        assert!(matches!(read_report(&b"partial"[..]), Report::Vanished));
    }

    #[test]
    fn reported_errors_keep_code_and_message() {
        let e = error_from_report(5, "x is busy".into());
        assert_eq!((e.exit_code(), e.to_string()), (5, "x is busy".to_string()));
        let e = error_from_report(2, "permission denied: cannot open x".into());
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "permission denied: cannot open x");
        assert_eq!(error_from_report(1, "u".into()).exit_code(), 1);
        assert_eq!(error_from_report(4, "d".into()).exit_code(), 4);
        assert_eq!(error_from_report(77, "d".into()).exit_code(), 4);
    }

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape_mountinfo(br"/x\04"), br"/x\04");
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/definitely/not/mounted")));
    }

    #[test]
    fn own_process_is_alive_and_start_time_matters() {
        let pid = std::process::id();
        let (state, start) = process_stat(pid).unwrap();
        assert_ne!(state, 'Z');
        assert!(process_alive(pid, start));
        assert!(!process_alive(pid, start + 1));
        assert!(!process_alive(u32::MAX, start));
    }

    #[test]
    fn request_round_trips_through_a_pipe_format() {
        let spec = ServeSpec {
            backing: "/b".into(),
            plain: "/p".into(),
            segment: Segment {
                data_offset_bytes: 0,
                data_size_bytes: 4096,
                sector_size: 512,
                iv_tweak: 0,
            },
            read_only: true,
            foreground: false,
            allow_other: false,
            unlocked_by: "test".into(),
            grow_with_file: false,
        };
        let key = VolumeKey(SecretBytes::from_slice(&[7u8; 64]));
        let mut wire = Vec::new();
        send_request(&mut wire, &spec, &key).unwrap();
        let nl = wire.iter().position(|&b| b == b'\n').unwrap();
        let back: ServeSpec = serde_json::from_slice(&wire[..nl]).unwrap();
        assert_eq!(back.segment, spec.segment);
        assert_eq!(&wire[nl + 1..nl + 5], &64u32.to_le_bytes());
        assert_eq!(&wire[nl + 5..], &[7u8; 64]);
    }

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
