//! The small facade for programs that use vaultdisk as a library (issue 18): open a LUKS2 or
//! LUKS1 volume from a path with a key, then read its plaintext with [`Volume::read_at`] and
//! [`Volume::size_bytes`] (and write it with [`Volume::write_at`] + [`Volume::flush`] when
//! opened read-write through [`OpenOptions`]). No FUSE, no daemon, no root (a block device
//! needs read access).
//!
//! The items named here are the ones this crate means to keep stable across 0.x releases
//! (CHANGELOG.md, "semver"); the rest of the public modules serve the `vaultdisk` binary and
//! may change in any release.
//!
//! ```no_run
//! use vaultdisk::api::{KeySource, Volume};
//!
//! let key = KeySource::KeyFile { path: "disk.key".into(), offset: 0, size: None };
//! let volume = Volume::open_read_only("disk.img", key)?;
//! let mut first = vec![0u8; 4096];
//! let n = volume.read_at(0, &mut first)?;
//! assert!(n <= first.len() && volume.size_bytes() > 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Read-write, in partition 2 of a disk image, with a detached header:
//!
//! ```no_run
//! use vaultdisk::api::{KeySource, OpenOptions};
//!
//! let key = KeySource::KeyFile { path: "disk.key".into(), offset: 0, size: None };
//! let volume = OpenOptions::new()
//!     .read_write(true)
//!     .partition(2)
//!     .header("boot/luks/header.img")
//!     .open("disk.img", key)?;
//! volume.write_at(0, b"hello")?;
//! volume.flush()?; // fdatasync of the backing: the bytes are on disk
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
use crate::device::{self, HeaderAt, VolumeHeader};
use crate::secret::Passphrase;
use crate::unlock::{self, Prompt};
use std::io::Read;
use std::path::Path;

pub use crate::device::Place;
pub use crate::error::{Error, ErrorKind, Result};
pub use crate::unlock::{Key, KeySource};
pub use crate::volume::Volume;
use std::path::PathBuf;

impl From<KeySource> for Key {
    /// The key read from `source`, taken as it is (not a recovery key).
    fn from(source: KeySource) -> Key {
        Key::new(source)
    }
}

/// The [`Prompt`] of library use: there is no terminal to ask, so [`KeySource::Terminal`] is a
/// usage error; stdin is the process's own.
struct NoTerminal;

impl Prompt for NoTerminal {
    fn passphrase(&self, what: &str, _confirm: bool) -> Result<Passphrase> {
        Err(no_terminal(what))
    }

    fn recovery_key(&self, what: &str) -> Result<Passphrase> {
        Err(no_terminal(what))
    }

    fn stdin(&self) -> Box<dyn Read + '_> {
        Box::new(std::io::stdin())
    }
}

fn no_terminal(what: &str) -> Error {
    Error::Usage(format!(
        "{what}: the library asks no terminal; give a key file or stdin as the KeySource"
    ))
}

impl Volume {
    /// Opens the LUKS2 or LUKS1 volume that fills `path` (a backing file, an image or a block
    /// device) read-only with `key` (a [`KeySource`], or a [`Key`] for a recovery key), as
    /// `vaultdisk digest` does: the header is read and checked, the keyslots are tried in
    /// priority order, and the plaintext is then served by [`Volume::read_at`] (never-written
    /// sectors read as zeros). Vault tokens are not tried; [`KeySource::Terminal`] is a usage
    /// error. Nothing is written to `path`.
    ///
    /// Errors carry an [`ErrorKind`] as the CLI's exit codes do: no key opens a keyslot
    /// (`NoKey`), not a supported volume or unreadable (`Device`), a KDF too costly here.
    pub fn open_read_only(path: impl AsRef<Path>, key: impl Into<Key>) -> Result<Volume> {
        let path = path.as_ref();
        let key = key.into();
        let located = device::locate(path, Place::Whole, false, false)?;
        let header = device::read_header(located.window(), path)?;
        let segment = match &header {
            VolumeHeader::Luks2(h) => {
                device::warn_damaged_copy(h, path);
                device::luks2_segment(h, located.len(), path)?
            }
            VolumeHeader::Luks1(h) => h
                .segment(located.len())
                .map_err(|e| unlock::luks1_error(e, path))?,
        };
        let segment = located.absolute(segment)?;
        let opened = unlock::unlock_header(
            &header,
            located.window(),
            &key,
            None,
            None,
            path,
            &NoTerminal,
        )?;
        drop(located);
        Volume::new(
            device::open_backing(path, false)?,
            segment,
            &opened.volume_key,
            true,
        )
    }
}

/// How to open a volume, as [`std::fs::OpenOptions`] is for files: read-only by default;
/// where in the file it lives ([`Place`]); a detached header; one keyslot only.
///
/// A read-write open takes the lock `vaultdisk open` takes (and a block device's exclusive
/// claim), held as long as the [`Volume`] lives: it fails with `ErrorKind::Busy` while a
/// vaultdisk daemon or another read-write user has the volume, and `vaultdisk open` fails
/// the same way while this Volume exists. A read-only open takes the shared lock. Vault
/// tokens are not tried; [`KeySource::Terminal`] is a usage error.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    read_write: bool,
    place: Place,
    header: Option<PathBuf>,
    key_slot: Option<u32>,
}

impl OpenOptions {
    /// Read-only, the whole file, header in it, every keyslot tried.
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }

    /// Open for writing too (`write_at`, `flush`, `discard`).
    pub fn read_write(mut self, yes: bool) -> OpenOptions {
        self.read_write = yes;
        self
    }

    /// The volume is partition `n` of a whole-disk image or disk (GPT, or MBR with logical
    /// partitions from 5); nothing outside it is read or written.
    pub fn partition(mut self, n: u32) -> OpenOptions {
        self.place = Place::Partition(n);
        self
    }

    /// The volume is `size` bytes (None: to the end) from byte `offset` of the file.
    pub fn window(mut self, offset: u64, size: Option<u64>) -> OpenOptions {
        self.place = Place::Range { offset, size };
        self
    }

    /// Read header and keyslots from this detached header file (as `cryptsetup --header`).
    pub fn header(mut self, path: impl Into<PathBuf>) -> OpenOptions {
        self.header = Some(path.into());
        self
    }

    /// Try only this keyslot.
    pub fn key_slot(mut self, slot: u32) -> OpenOptions {
        self.key_slot = Some(slot);
        self
    }

    /// Opens the volume in `path` (a backing file, image or block device) with `key`.
    pub fn open(&self, path: impl AsRef<Path>, key: impl Into<Key>) -> Result<Volume> {
        let path = path.as_ref();
        let key = key.into();
        let at = HeaderAt::from_option(self.header.as_deref());
        let located = device::locate_with(path, self.place, &at, self.read_write, false)?;
        let header = located.read_header()?;
        let segment = located.segment(&header)?;
        let opened = unlock::unlock_header(
            &header,
            located.header_window(),
            &key,
            None,
            self.key_slot,
            located.header_path(),
            &NoTerminal,
        )?;
        drop(located);
        let file = if self.read_write {
            device::open_exclusive(path, true)?
        } else {
            device::open_backing(path, false)?
        };
        let locked = if self.read_write {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(crate::daemon::busy_error(path));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e));
            }
        }
        Volume::new(file, segment, &opened.volume_key, !self.read_write)
    }
}
