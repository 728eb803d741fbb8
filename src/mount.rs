//! A filesystem on an open volume: loop device + kernel mount (root), or fuse2fs (non-root).
//!
//! `mount` opens the volume into a private plaintext file in the runtime directory, then
//! attaches and mounts it; every failing step unwinds the earlier ones. A sidecar file
//! `mount-<id>.json` next to the daemon registry records the mount point, loop device and
//! method so that `umount` and `status` can find them.
use crate::daemon::{self, ServeSpec};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::safepath;
use crate::secret::VolumeKey;
use crate::sys::procfs::{self, is_mount_point};
use log::warn;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How the filesystem was mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// `losetup` + `mount -t <fs>` (root).
    Loop,
    /// `fuse2fs` on the plaintext file (non-root).
    Fuse2fs,
}

/// The sidecar record of one vaultdisk mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    /// Canonical mount point.
    pub mountpoint: PathBuf,
    /// Canonical plaintext file in the runtime directory.
    pub plain: PathBuf,
    /// The loop device (`Method::Loop` only).
    pub loop_device: Option<String>,
    /// How the filesystem was mounted.
    pub method: Method,
}

/// What to mount where.
pub struct MountSpec {
    /// The LUKS backing file.
    pub backing: PathBuf,
    /// The directory to mount the filesystem on (checked by `check_mountpoint`).
    pub mountpoint: PathBuf,
    /// Where the data segment lies in `backing`.
    pub segment: Segment,
    /// Serve and mount read-only.
    pub read_only: bool,
    /// The filesystem type given to mount(8), e.g. "ext4".
    pub fs_type: String,
    /// Make this filesystem first if the volume holds none.
    pub mkfs: Option<String>,
    /// What unlocked the volume, for `status`.
    pub unlocked_by: String,
    /// Let the filesystem's discards (`fstrim`, `mount -o discard`) through the loop device
    /// punch holes in the backing (`ServeSpec::allow_discards`).
    pub allow_discards: bool,
    /// A BitLocker volume (read-only): `segment` is its window, the key its FVEK
    /// (`ServeSpec::bitlocker`).
    pub bitlocker: bool,
}

/// Checks MOUNTPOINT (an existing directory, not yet a mount point, not a symlink, in a
/// directory only the caller or root can change: crate::safepath); returns it canonical.
pub fn check_mountpoint(mountpoint: &Path) -> Result<PathBuf> {
    let shown = mountpoint.display();
    let resolved = safepath::resolve_parent(mountpoint)
        .map_err(|e| Error::Usage(format!("mount point {shown}: {e}")))?;
    let canon = resolved.path;
    let meta = fs::symlink_metadata(&canon)
        .map_err(|e| Error::Usage(format!("mount point {shown}: {e}")))?;
    if meta.file_type().is_symlink() {
        return Err(safepath::symlink_error("mount point", mountpoint));
    }
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "mount point {shown} is not a directory"
        )));
    }
    if canon != resolved.dir {
        let dir_meta = safepath::check_trusted_dir(&resolved.dir, mountpoint)?;
        safepath::check_owner_in_shared_dir(&meta, &dir_meta, mountpoint)?;
    }
    if is_mount_point(&canon) {
        return Err(Error::Busy(format!("{shown} is already a mount point")));
    }
    Ok(canon)
}

/// Opens the volume into a runtime file and mounts its filesystem on `spec.mountpoint`.
pub fn mount(spec: &MountSpec, key: VolumeKey) -> Result<MountRecord> {
    let mountpoint = check_mountpoint(&spec.mountpoint)?;
    let backing = spec
        .backing
        .canonicalize()
        .map_err(|e| Error::io(format!("cannot resolve {}", spec.backing.display()), e))?;
    let rt = runtime_dir()?;
    let id = mount_id(&backing, &mountpoint);
    let plain = rt.join(format!("plain-{id}.img"));
    let sidecar = rt.join(format!("mount-{id}.json"));
    let root = crate::sys::geteuid() == 0;
    let method = if root { Method::Loop } else { Method::Fuse2fs };
    if method == Method::Fuse2fs && which("fuse2fs").is_none() {
        return Err(Error::Usage(
            "mounting without root needs fuse2fs (Debian: apt-get install fuse2fs)".into(),
        ));
    }

    daemon::start(
        ServeSpec {
            backing: backing.clone(),
            plain: plain.clone(),
            segment: spec.segment,
            read_only: spec.read_only,
            foreground: false,
            allow_other: false,
            unlocked_by: spec.unlocked_by.clone(),
            // A filesystem on a loop device would not see a grown PLAIN anyway.
            grow_with_file: false,
            // The loop device enables discard on a FUSE file (the kernel's loop driver
            // sees that it has fallocate); ext4 is mounted without `-o discard`: `fstrim`
            // (or fstrim.timer) gives space back in batches, which costs far less through
            // FUSE than a discard per deleted extent.
            allow_discards: spec.allow_discards,
            bitlocker: spec.bitlocker,
        },
        key,
    )
    .map_err(|e| step_error("open", e))?;
    let mut undo = Undo {
        plain: Some(plain.clone()),
        loop_device: None,
        mountpoint: None,
    };

    let loop_device = if method == Method::Loop {
        let dev = losetup(&plain, spec.read_only).map_err(|e| step_error("losetup", e))?;
        undo.loop_device = Some(dev.clone());
        Some(dev)
    } else {
        None
    };
    let device = loop_device
        .clone()
        .map_or_else(|| plain.clone(), PathBuf::from);

    if let Some(fs_type) = &spec.mkfs {
        if has_filesystem(&device).map_err(|e| step_error("mkfs", e))? {
            log::info!(
                "{} already holds a filesystem: not formatting",
                device.display()
            );
        } else {
            let mkfs = format!("mkfs.{fs_type}");
            let mut args: Vec<&OsStr> = vec![OsStr::new("-q")];
            // The root directory belongs to whoever formats (not root:root), so that a
            // rootless fuse2fs mount is writable by its user.
            if matches!(fs_type.as_str(), "ext2" | "ext3" | "ext4") {
                args.extend([OsStr::new("-E"), OsStr::new("root_owner")]);
            }
            args.push(device.as_os_str());
            run_tool(&mkfs, &args).map_err(|e| step_error(&mkfs, e))?;
        }
    }

    match method {
        Method::Loop => {
            let mut args: Vec<&OsStr> = vec!["-t".as_ref(), spec.fs_type.as_ref()];
            if spec.read_only {
                args.extend([OsStr::new("-o"), OsStr::new("ro")]);
            }
            args.extend([device.as_os_str(), mountpoint.as_os_str()]);
            run_tool("mount", &args).map_err(|e| step_error("mount", e))?;
        }
        Method::Fuse2fs => {
            let mut args: Vec<&OsStr> = vec![device.as_os_str(), mountpoint.as_os_str()];
            if spec.read_only {
                args.extend([OsStr::new("-o"), OsStr::new("ro")]);
            }
            run_tool("fuse2fs", &args).map_err(|e| step_error("fuse2fs", e))?;
        }
    }
    undo.mountpoint = Some(mountpoint.clone());

    let record = MountRecord {
        mountpoint,
        plain: plain.canonicalize().unwrap_or(plain),
        loop_device,
        method,
    };
    write_record(&sidecar, &record).map_err(|e| step_error("record", e))?;
    undo.disarm();
    Ok(record)
}

/// Unmounts the filesystem on `mountpoint`, detaches its loop device and closes the volume.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let shown = mountpoint.display();
    let canon = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let Some((sidecar, record)) = records().into_iter().find(|(_, r)| r.mountpoint == canon) else {
        return Err(Error::Usage(format!("{shown} is not a vaultdisk mount")));
    };
    if is_mount_point(&canon) {
        unmount_fs(&canon, record.method).map_err(|e| match e {
            Error::Busy(_) => Error::Busy(format!(
                "{shown} is busy: close the files and leave the directories under it first"
            )),
            other => step_error("umount", other),
        })?;
    }
    if let Some(dev) = &record.loop_device {
        detach_loop(dev).map_err(|e| step_error("losetup -d", e))?;
    }
    match daemon::close(&record.plain) {
        Ok(()) => {}
        // Already closed (e.g. a crashed daemon cleaned up): nothing left to do.
        Err(Error::Usage(_)) => {}
        Err(e) => return Err(step_error("close", e)),
    }
    if let Some(sidecar) = sidecar {
        let _ = fs::remove_file(&sidecar);
    }
    Ok(())
}

/// Every vaultdisk mount with its sidecar path: the records in the runtime directory, then
/// (sidecar None) the mounts the mount table shows on a vaultdisk PLAIN that no record
/// names, e.g. once the runtime directory was deleted: a loop device whose backing file is
/// a vaultdisk FUSE mount (`Method::Loop`), or a fuse2fs mount of one.
pub fn records() -> Vec<(Option<PathBuf>, MountRecord)> {
    let mut all: Vec<(Option<PathBuf>, MountRecord)> = sidecar_records()
        .into_iter()
        .map(|(p, r)| (Some(p), r))
        .collect();
    let table = procfs::mounts().unwrap_or_default();
    let is_plain = |p: &Path| {
        table
            .iter()
            .rfind(|m| m.mount_point == p)
            .is_some_and(daemon::is_vaultdisk_mount)
    };
    // The PLAINs served for this runtime directory, computed once a candidate shows up.
    let mut ours: Option<Vec<PathBuf>> = None;
    let mut served = |p: &Path| {
        ours.get_or_insert_with(|| {
            daemon::open_volumes()
                .into_iter()
                .map(|e| e.plain)
                .chain(
                    daemon::unidentified_mounts()
                        .into_iter()
                        .map(|m| m.mount_point),
                )
                .collect()
        })
        .iter()
        .any(|o| o == p)
    };
    for m in &table {
        if all.iter().any(|(_, r)| r.mountpoint == m.mount_point) {
            continue;
        }
        let source = Path::new(&m.source);
        let found = if let Some(plain) = procfs::loop_backing_file(source) {
            is_plain(&plain).then(|| (plain, Some(m.source.to_string_lossy().into_owned())))
        } else if m.fs_type == "fuse.fuse2fs" || m.fs_type == "fuseblk" {
            is_plain(source).then(|| (source.to_path_buf(), None))
        } else {
            None
        };
        if let Some((plain, loop_device)) = found.filter(|(p, _)| served(p)) {
            let method = if loop_device.is_some() {
                Method::Loop
            } else {
                Method::Fuse2fs
            };
            all.push((
                None,
                MountRecord {
                    mountpoint: m.mount_point.clone(),
                    plain,
                    loop_device,
                    method,
                },
            ));
        }
    }
    all
}

/// The mount records in the runtime directory, with their sidecar paths.
fn sidecar_records() -> Vec<(PathBuf, MountRecord)> {
    let Some(rt) = daemon::existing_runtime_dir() else {
        return Vec::new();
    };
    let Ok(dir) = fs::read_dir(rt) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mount-") && n.ends_with(".json"))
        })
        .filter_map(|p| {
            let rec = serde_json::from_slice(&fs::read(&p).ok()?).ok()?;
            Some((p, rec))
        })
        .collect()
}

/// Undoes the steps done so far on drop, latest first, unless disarmed.
struct Undo {
    plain: Option<PathBuf>,
    loop_device: Option<String>,
    mountpoint: Option<PathBuf>,
}

impl Undo {
    fn disarm(&mut self) {
        self.plain = None;
        self.loop_device = None;
        self.mountpoint = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(m) = self.mountpoint.take() {
            let method = if self.loop_device.is_some() {
                Method::Loop
            } else {
                Method::Fuse2fs
            };
            if let Err(e) = unmount_fs(&m, method) {
                warn!("cannot unmount {}: {e}", m.display());
            }
        }
        if let Some(dev) = self.loop_device.take()
            && let Err(e) = detach_loop(&dev)
        {
            warn!("cannot detach {dev}: {e}");
        }
        if let Some(p) = self.plain.take()
            && let Err(e) = daemon::close(&p)
        {
            warn!("cannot close {}: {e}", p.display());
        }
    }
}

fn step_error(step: &str, e: Error) -> Error {
    let msg = format!("{step} failed: {e}");
    match e {
        Error::Usage(_) => Error::Usage(msg),
        Error::NoKey { .. } | Error::Permission(_) => Error::Permission(msg),
        Error::Vault(_) => Error::Vault(msg),
        Error::NoMemory(_) => Error::NoMemory(msg),
        Error::Busy(_) => Error::Busy(msg),
        Error::Device(_) => Error::Device(msg),
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(msg),
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::ResourceBusy => {
                Error::Busy(msg)
            }
            _ => Error::Device(msg),
        },
    }
}

/// A short id for a (backing, mount point) pair: names the runtime file and the sidecar.
fn mount_id(backing: &Path, mountpoint: &Path) -> String {
    let mut h = Sha256::new();
    h.update(backing.as_os_str().as_encoded_bytes());
    h.update([0u8]);
    h.update(mountpoint.as_os_str().as_encoded_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn runtime_dir() -> Result<PathBuf> {
    daemon::ensure_runtime_dir()
}

fn write_record(path: &Path, record: &MountRecord) -> Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Device(e.to_string()))?;
    crate::fsutil::write_private_atomically(path, &json)
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// Runs a system tool; a failure becomes one line naming the tool and its first stderr line.
fn run_tool(name: &str, args: &[&OsStr]) -> Result<String> {
    let prog = which(name).unwrap_or_else(|| PathBuf::from(name));
    let out = Command::new(&prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("cannot run {name}"), e))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_string();
    let msg = format!(
        "{name} exited with {}: {line}",
        out.status.code().unwrap_or(-1)
    );
    if err.contains("busy") {
        Err(Error::Busy(msg))
    } else {
        Err(Error::Device(msg))
    }
}

/// Finds a tool on PATH or in the sbin directories a non-login PATH may lack.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `losetup --find --show [--read-only] --direct-io=on`, falling back to buffered I/O.
fn losetup(plain: &Path, read_only: bool) -> Result<String> {
    let mut base: Vec<&OsStr> = vec!["--find".as_ref(), "--show".as_ref()];
    if read_only {
        base.push("--read-only".as_ref());
    }
    let mut direct = base.clone();
    direct.extend([OsStr::new("--direct-io=on"), plain.as_os_str()]);
    match run_tool("losetup", &direct) {
        Ok(dev) if !dev.is_empty() => Ok(dev),
        _ => {
            base.push(plain.as_os_str());
            let dev = run_tool("losetup", &base)?;
            if dev.is_empty() {
                return Err(Error::Device("losetup printed no device".into()));
            }
            Ok(dev)
        }
    }
}

fn detach_loop(dev: &str) -> Result<()> {
    run_tool("losetup", &["-d".as_ref(), dev.as_ref()]).map(|_| ())
}

fn unmount_fs(mountpoint: &Path, method: Method) -> Result<()> {
    match method {
        Method::Fuse2fs if crate::sys::geteuid() != 0 => {
            let tool = if which("fusermount3").is_some() {
                "fusermount3"
            } else {
                "fusermount"
            };
            run_tool(tool, &["-u".as_ref(), mountpoint.as_os_str()])?;
        }
        _ => {
            run_tool("umount", &[mountpoint.as_os_str()])?;
        }
    }
    // fuse2fs exits after the unmount; wait until it has let go of the plain file.
    for _ in 0..100 {
        if !is_mount_point(mountpoint) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// True if `dev` holds a filesystem `blkid` knows, or an ext2/3/4 superblock magic.
fn has_filesystem(dev: &Path) -> Result<bool> {
    if which("blkid").is_some() {
        let out = Command::new(which("blkid").unwrap_or_else(|| PathBuf::from("blkid")))
            .args(["-p".as_ref(), dev.as_os_str()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io("cannot run blkid", e))?;
        // blkid: 0 found something, 2 found nothing, anything else is an error.
        match out.status.code() {
            Some(0) => return Ok(true),
            Some(2) => return Ok(false),
            _ => {}
        }
    }
    let f =
        fs::File::open(dev).map_err(|e| Error::io(format!("cannot open {}", dev.display()), e))?;
    let mut magic = [0u8; 2];
    // ext2/3/4: superblock at 1024, s_magic 0xEF53 (little endian) at offset 56 of it.
    match f.read_exact_at(&mut magic, 1024 + 56) {
        Ok(()) => Ok(magic == [0x53, 0xEF]),
        Err(e) => Err(Error::io(format!("cannot read {}", dev.display()), e)),
    }
}
