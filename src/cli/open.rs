//! `vaultdisk open`: unlock a keyslot (`crate::unlock`) and serve the plaintext through FUSE.
use super::{KeyArgs, OpenArgs, passphrase};
use crate::daemon::{self, ServeSpec};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::secret::VolumeKey;
use crate::unlock;
use std::path::Path;

pub fn run(args: &OpenArgs) -> Result<()> {
    let unlocked = unlock::unlock(
        &args.backing,
        &passphrase::unlock_key(&args.key),
        &args.key.vault.config(),
        args.key_slot,
        args.read_only,
        &passphrase::Terminal,
        &mut || {
            check_plain_target(&args.plain)?;
            daemon::ensure_backing_free(&args.backing, args.read_only)
        },
    )?;
    daemon::start(
        ServeSpec {
            backing: args.backing.clone(),
            plain: args.plain.clone(),
            segment: unlocked.segment,
            read_only: args.read_only,
            foreground: args.foreground,
            allow_other: args.allow_other,
            unlocked_by: unlocked.unlocked_by.to_string(),
            grow_with_file: unlocked.grows_with_file,
        },
        unlocked.volume_key,
    )
}

// The wrapper below keeps the old signature for mount until it calls `crate::unlock` itself.

/// An opened keyslot: where the data lies, which keyslot opened, and the volume key.
pub struct Unlocked {
    pub segment: Segment,
    pub volume_key: VolumeKey,
    /// For status: `keyslot N` or `vault token T (keyslot N)`.
    pub unlocked_by: String,
}

/// Wrapper of `unlock::unlock` for mount.
pub fn unlock(
    backing: &Path,
    key: &KeyArgs,
    key_slot: Option<u32>,
    read_only: bool,
    before_key: &mut dyn FnMut() -> Result<()>,
) -> Result<Unlocked> {
    let u = unlock::unlock(
        backing,
        &passphrase::unlock_key(key),
        &key.vault.config(),
        key_slot,
        read_only,
        &passphrase::Terminal,
        before_key,
    )?;
    Ok(Unlocked {
        segment: u.segment,
        volume_key: u.volume_key,
        unlocked_by: u.unlocked_by.to_string(),
    })
}

/// PLAIN must be a regular file or not exist yet, in an existing directory.
pub fn check_plain_target(plain: &Path) -> Result<()> {
    match std::fs::metadata(plain) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "{} exists and is not a regular file",
            plain.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match plain.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if parent.is_dir() {
                Ok(())
            } else {
                Err(Error::Usage(format!(
                    "directory {} does not exist",
                    parent.display()
                )))
            }
        }
        Err(e) => Err(Error::io(format!("cannot stat {}", plain.display()), e)),
    }
}
