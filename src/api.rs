//! The small facade for programs that use vaultdisk as a library (issue 18): open a LUKS2 or
//! LUKS1 volume from a path with a key, then read its plaintext with [`Volume::read_at`] and
//! [`Volume::size_bytes`]. No FUSE, no daemon, no root (a block device needs read access).
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
use crate::device::{self, Place, VolumeHeader};
use crate::secret::Passphrase;
use crate::unlock::{self, Prompt};
use std::io::Read;
use std::path::Path;

pub use crate::error::{Error, ErrorKind, Result};
pub use crate::unlock::{Key, KeySource};
pub use crate::volume::Volume;

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
