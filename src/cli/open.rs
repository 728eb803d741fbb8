//! `vaultdisk open`: unlock a keyslot and serve the plaintext through FUSE.
use super::device::{self, VolumeHeader};
use super::{KeyArgs, OpenArgs, passphrase};
use crate::crypto::CryptoError;
use crate::daemon::{self, ServeSpec};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::keyslot::{self, UnlockError};
use crate::luks1::{Luks1Error, Luks1Header, SlotState};
use crate::luks2::ReadAt;
use crate::secret::VolumeKey;
use std::fs::File;
use std::path::Path;

pub fn run(args: &OpenArgs) -> Result<()> {
    let unlocked = unlock(
        &args.backing,
        &args.key,
        args.key_slot,
        args.read_only,
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
            unlocked_by: format!("keyslot {}", unlocked.keyslot),
        },
        unlocked.volume_key,
    )
}

/// An opened keyslot: where the data lies, which keyslot opened, and the volume key.
pub struct Unlocked {
    pub segment: Segment,
    pub keyslot: u32,
    pub volume_key: VolumeKey,
}

/// The unlock path shared by open, mount and verify: reads the header of `backing` (LUKS2 or
/// LUKS1), checks `key_slot`, runs `before_key` (the caller's own checks, before any
/// passphrase prompt), reads the key and opens a keyslot.
pub fn unlock(
    backing: &Path,
    key: &KeyArgs,
    key_slot: Option<u32>,
    read_only: bool,
    before_key: &mut dyn FnMut() -> Result<()>,
) -> Result<Unlocked> {
    let name = backing.display().to_string();
    // Read-write needs write access: find out before asking for a passphrase.
    let file = device::open_backing(backing, !read_only)?;
    let file_len = file
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    let header = match device::read_header(&file, backing)? {
        VolumeHeader::Luks2(h) => h,
        VolumeHeader::Luks1(h) => {
            return unlock_luks1(backing, key, key_slot, &h, file, file_len, before_key);
        }
    };
    device::warn_damaged_copy(&header, backing);
    let segment = device::luks2_segment(&header, file_len, backing)?;
    if let Some(id) = key_slot
        && !header.metadata.keyslots.contains_key(&id)
    {
        return Err(Error::Usage(format!(
            "keyslot {id} of {name} is not in use"
        )));
    }
    keyslot::candidates(&header.metadata, key_slot).map_err(|e| unlock_error(e, backing))?;
    before_key()?;

    let pass = passphrase::read(key, &name, false)?;
    let (id, volume_key) = keyslot::unlock(&header.metadata, &file, pass.expose_secret(), key_slot)
        .map_err(|e| unlock_error(e, backing))?;
    drop(pass);
    log::info!("keyslot {id} of {name} opened");
    drop(file);
    Ok(Unlocked {
        segment,
        keyslot: id,
        volume_key,
    })
}

/// LUKS1 (cryptsetup --type luks1, qemu-img -f luks): same steps, its own header and keyslots.
fn unlock_luks1(
    backing: &Path,
    key: &KeyArgs,
    key_slot: Option<u32>,
    header: &Luks1Header,
    file: File,
    file_len: u64,
    before_key: &mut dyn FnMut() -> Result<()>,
) -> Result<Unlocked> {
    let name = backing.display().to_string();
    let luks1_err = |e: Luks1Error| match e {
        Luks1Error::Kdf {
            source: CryptoError::KdfMemory(kib),
            ..
        } => Error::NoMemory(format!("keyslot KDF of {name} needs {kib} KiB")),
        Luks1Error::NoSuchKeyslot(_) | Luks1Error::KeyslotDisabled(_) => {
            Error::Usage(format!("{name}: {e}"))
        }
        other => Error::Device(format!("{name}: {other}")),
    };
    let segment = header.segment(file_len).map_err(luks1_err)?;
    let only = match key_slot {
        Some(n) if n < 8 => Some(n as u8),
        Some(n) => {
            return Err(Error::Usage(format!(
                "keyslot {n} of {name} is not in use (LUKS1 has 0..7)"
            )));
        }
        None => None,
    };
    let enabled: Vec<u32> = (0u32..8)
        .filter(|&i| header.keyslots[i as usize].state == SlotState::Enabled)
        .filter(|&i| only.is_none_or(|o| u32::from(o) == i))
        .collect();
    if enabled.is_empty() {
        return Err(match only {
            Some(o) => Error::Usage(format!("keyslot {o} of {name} is not in use")),
            None => Error::Device(format!("{name}: no keyslot in use")),
        });
    }
    before_key()?;
    let pass = passphrase::read(key, &name, false)?;
    let unlocked = header
        .unlock(&file, pass.expose_secret(), only)
        .map_err(luks1_err)?;
    drop(pass);
    let Some((id, volume_key)) = unlocked else {
        return Err(unlock_error(
            UnlockError::WrongKey { tried: enabled },
            backing,
        ));
    };
    log::info!("LUKS1 keyslot {id} of {name} opened");
    drop(file);
    Ok(Unlocked {
        segment,
        keyslot: u32::from(id),
        volume_key,
    })
}

/// Maps an unlock failure to the user-facing error and exit code.
pub fn unlock_error(e: UnlockError, path: &Path) -> Error {
    let name = path.display();
    match e {
        UnlockError::WrongKey { tried } => Error::NoKey {
            path: path.to_path_buf(),
            what: "passphrase",
            tried: tried
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        },
        UnlockError::NoUsableKeyslot(why) => Error::Device(format!("{name}: {why}")),
        UnlockError::Crypto(CryptoError::KdfMemory(kib)) => Error::NoMemory(format!(
            "keyslot KDF of {name} needs {kib} KiB, more than this machine can spare"
        )),
        UnlockError::Crypto(other) => Error::Device(format!("{name}: {other}")),
        UnlockError::Io(msg) => Error::Device(format!("{name}: {msg}")),
    }
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
