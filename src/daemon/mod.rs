//! Mount lifecycle: `start` (foreground, or a re-executed daemon), `close`, and the pieces
//! they share. The wire format, the registry rules, the end-of-life steps and the PLAIN
//! safety rules are in docs/daemon-protocol.md; `protocol` (request and report lines),
//! `serve` (the FUSE session and its one serve sequence), `registry` (runtime directory and
//! `OpenVolume` entries) and `lock` (the backing file's flock policy) hold the parts.
use crate::error::{Error, Result, exit};
use crate::secret::VolumeKey;
use crate::sys::procfs::{self, loop_device_of, process_alive};
use log::{error, warn};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod lock;
pub mod notify;
mod protocol;
mod registry;
mod serve;

pub use lock::{busy_error, ensure_backing_free, lock_for_update};
pub use lock::{busy_in_window, ensure_backing_free_in};
pub use protocol::ServeSpec;
use protocol::{Readiness, Report, read_report, send_request};
pub use registry::is_vaultdisk_mount;
use registry::read_registry;
pub use registry::{
    OpenVolume, ensure_runtime_dir, existing_runtime_dir, open_volumes, runtime_dir, serving,
    unidentified_mounts,
};
pub use serve::{MountHandle, serve_in_thread};

/// The hidden argument that makes the executable run `child_main`.
pub const DAEMON_ARG: &str = "__daemon";

/// How long `start` waits for the daemon's readiness report before killing it.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `close` retries while PLAIN is busy, for users that are just letting go.
const BUSY_GRACE: Duration = Duration::from_secs(2);
/// How long `close` waits for the daemon to exit after the unmount.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `spec` until unmounted. Returns only once the mount works (background) or
/// the filesystem is unmounted (foreground); every failure comes back as an Error.
pub fn start(spec: ServeSpec, key: VolumeKey) -> Result<()> {
    if spec.foreground {
        crate::sys::set_not_dumpable();
        return serve::serve_until_unmounted(spec, key, None);
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
        Ok(Report::Failed(e)) => {
            child.reap();
            Err(e)
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
    let served = read_request_from_stdin()
        .and_then(|(spec, key)| serve::serve_until_unmounted(spec, key, Some(&mut ready)));
    match served {
        Ok(()) => exit::OK,
        Err(e) => {
            if ready.reported {
                error!("{e}");
            } else {
                ready.send(&protocol::error_line(&e));
            }
            e.exit_code()
        }
    }
}

/// Reads the request from fd 0 without std's stdin buffer, so no key byte lands in memory
/// that is neither locked nor wiped.
fn read_request_from_stdin() -> Result<(ServeSpec, VolumeKey)> {
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("daemon: stdin", e))?;
    protocol::read_request(&mut File::from(fd))
}

/// Unmounts `plain`, waits for its daemon to flush and exit. Busy (exit 5) while in use;
/// a device error (exit 4) when the daemon's final flush of the backing file failed.
///
/// `plain` not in the registry gives `Error::Usage` (exit 1): the caller named a file that
/// vaultdisk is not serving (or serves for another user), unless a dead vaultdisk mount is
/// there, which is cleared. A registry entry whose daemon died is cleaned up (its dead mount
/// unmounted, PLAIN removed if it created it) and Ok, except while a loop device still uses
/// PLAIN: then Busy naming it, and the entry stays for the next `close`.
pub fn close(plain: &Path) -> Result<()> {
    let canon = canonical_plain(plain)?;
    // A live daemon's entry first (from the registry, or from the daemon itself when the
    // runtime directory lost it): a stale entry of a killed one may name the same PLAIN.
    let chosen = open_volumes()
        .into_iter()
        .find(|e| e.plain == canon)
        .or_else(|| {
            read_registry()
                .into_iter()
                .map(|(_, e)| e)
                .find(|e| e.plain == canon)
        });
    let Some(entry) = chosen else {
        if clear_dead_mount(plain, &canon)? {
            warn!("{} was a dead vaultdisk mount; cleared", plain.display());
            return Ok(());
        }
        if unidentified_mounts().iter().any(|m| m.mount_point == canon) {
            // Our live vaultdisk mount whose daemon cannot be told (no entry, and its fds
            // are not readable without root): unmount; its daemon then flushes and exits.
            unmount_with_grace(plain, &canon, None)?;
            warn!(
                "{} unmounted; its daemon is unknown (the runtime directory lost its entry), \
                 so its final flush could not be checked",
                plain.display()
            );
            return Ok(());
        }
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
        clear_dead_mount(plain, &canon)?;
        if entry.created_plain {
            serve::remove_if_empty_file(&canon);
        }
        registry::remove_dead_entries(&canon);
        return Ok(());
    }
    unmount_with_grace(plain, &canon, None)?;
    if !wait_for_exit(entry.pid, entry.start_time, CLOSE_TIMEOUT) {
        return Err(Error::Busy(format!(
            "{} is unmounted but its daemon (pid {}) did not exit within {} s",
            plain.display(),
            entry.pid,
            CLOSE_TIMEOUT.as_secs()
        )));
    }
    match registry::take_failure(entry.pid, entry.start_time) {
        Some(message) => Err(Error::Device(message)),
        None => Ok(()),
    }
}

/// Unmounts PLAIN (canonical `canon`), refusing while a loop device uses it. Right after
/// `umount /mnt` an autoclear loop device and other last users may still be letting go of
/// PLAIN: they get `BUSY_GRACE` before it is called busy. `dead` names the gone daemon
/// ("its daemon (pid N)") for the message.
fn unmount_with_grace(plain: &Path, canon: &Path, dead: Option<&str>) -> Result<()> {
    let grace = Instant::now() + BUSY_GRACE;
    loop {
        let res = match (loop_device_of(canon), dead) {
            (Some(dev), None) => Err(Error::Busy(format!(
                "{} is in use by {dev}: unmount its filesystem and detach it (losetup -d {dev}) first",
                plain.display()
            ))),
            (Some(dev), Some(daemon)) => Err(Error::Busy(format!(
                "{} is still in use by {dev} although {daemon} is gone: unmount \
                 its filesystem and detach it (losetup -d {dev}), then close again",
                plain.display()
            ))),
            (None, _) => unmount(canon).map_err(|e| unmount_error(plain, e)),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(Error::Busy(_)) if Instant::now() < grace => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Clears a dead vaultdisk mount at `canon` (a `fuse` mount with source `vaultdisk` whose
/// daemon is gone, so that a stat gives ENOTCONN): Ok(true) once unmounted, Ok(false) when
/// there is no such mount, Busy naming the loop device while one still uses PLAIN.
pub(super) fn clear_dead_mount(plain: &Path, canon: &Path) -> Result<bool> {
    let Some(mount) = procfs::mount_at(canon) else {
        return Ok(false);
    };
    let ours = registry::is_vaultdisk_mount(&mount);
    let dead = fs::symlink_metadata(canon).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    if !ours || !dead {
        return Ok(false);
    }
    let daemon = read_registry()
        .into_iter()
        .find(|(_, e)| e.plain == canon)
        .map_or("its daemon".to_string(), |(_, e)| {
            format!("its daemon (pid {})", e.pid)
        });
    unmount_with_grace(plain, canon, Some(&daemon))?;
    Ok(true)
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

// ---- mounts and processes ----

/// Unmounts PLAIN without detaching lazily: EBUSY while anything has it open.
pub(super) fn unmount(plain: &Path) -> io::Result<()> {
    if crate::sys::geteuid() == 0 {
        return nix::mount::umount2(plain, nix::mount::MntFlags::empty()).map_err(io::Error::from);
    }
    fusermount_unmount(plain, false)
}

pub(super) fn lazy_unmount(plain: &Path) -> io::Result<()> {
    if crate::sys::geteuid() == 0 {
        return nix::mount::umount2(plain, nix::mount::MntFlags::MNT_DETACH)
            .map_err(io::Error::from);
    }
    fusermount_unmount(plain, true)
}

fn fusermount_unmount(plain: &Path, lazy: bool) -> io::Result<()> {
    // fusermount3 exits 1 for every failure, so "busy" in its message is the only way to
    // tell EBUSY (retry after the user lets go) from the rest.
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

pub(super) fn unmount_error(plain: &Path, e: io::Error) -> Error {
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

/// Waits up to `timeout` for `pid` (started at `start_time`) to exit; false if it did not.
fn wait_for_exit(pid: u32, start_time: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid, start_time) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}
