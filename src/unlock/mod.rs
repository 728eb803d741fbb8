//! How a key opens a volume, and in which order: the one place every verb that takes a key
//! goes through (open, mount, digest, verify, test-key, the key and vault verbs).
//!
//! The order (README "Unlocking"): vault tokens first when vault credentials are present,
//! then the passphrase from its [`KeySource`] unless it is [`KeySource::VaultOnly`]
//! (`--token-only`). A vault failure before a fallback is one warning line; with no passphrase
//! to fall back to (an empty pipe, `--token-only`) it is the error (exit 2). Only keyslots
//! bound to the data segment open the data (`keyslot::candidates`). Terminal input goes
//! through the caller's [`Prompt`]; nothing here takes clap types or reads a terminal.
pub mod key;
pub mod vault;
pub mod volume_key;

pub use key::{Key, KeySource, MAX_KEY_FILE_BYTES, Prompt, read_key};
pub use vault::VaultConfig;
pub use volume_key::{read_volume_key_file, unlock_with_volume_key};

use crate::crypto::CryptoError;
use crate::device::{self, HeaderAt, Place, VolumeHeader};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::keyslot::{self, UnlockError};
use crate::luks1::{Luks1Error, Luks1Header, SlotState};
use crate::luks2::ReadAt;
use crate::luks2::metadata::Metadata;
use crate::secret::{Passphrase, VolumeKey};
use std::path::Path;
use vault::VaultUnlock;

/// Which keyslot opened a volume, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockedBy {
    /// A LUKS2 keyslot opened with a passphrase, key file or recovery key.
    Keyslot(u32),
    /// A `vaultdisk-vault` token's unwrapped secret opened `keyslot`.
    VaultToken {
        /// The token id.
        token: u32,
        /// The keyslot it opened.
        keyslot: u32,
    },
    /// A LUKS1 keyslot (0..7).
    Luks1Keyslot(u8),
    /// The raw volume key (`--volume-key-file`), checked against the header's digest; no
    /// keyslot was opened.
    VolumeKey,
}

impl UnlockedBy {
    /// The keyslot that opened (None: the volume key was given, no keyslot opened).
    pub fn keyslot(&self) -> Option<u32> {
        match *self {
            UnlockedBy::Keyslot(k) | UnlockedBy::VaultToken { keyslot: k, .. } => Some(k),
            UnlockedBy::Luks1Keyslot(k) => Some(u32::from(k)),
            UnlockedBy::VolumeKey => None,
        }
    }
}

impl std::fmt::Display for UnlockedBy {
    /// What `status` shows: `keyslot N`, `vault token T (keyslot N)`, `LUKS1 keyslot N`,
    /// `volume key file`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnlockedBy::Keyslot(k) => write!(f, "keyslot {k}"),
            UnlockedBy::VaultToken { token, keyslot } => {
                write!(f, "vault token {token} (keyslot {keyslot})")
            }
            UnlockedBy::Luks1Keyslot(k) => write!(f, "LUKS1 keyslot {k}"),
            UnlockedBy::VolumeKey => write!(f, "volume key file"),
        }
    }
}

/// A keyslot that opened: the volume key and how it was found.
#[derive(Debug)]
pub struct Opened {
    /// The volume key.
    pub volume_key: VolumeKey,
    /// Which keyslot opened, and how.
    pub by: UnlockedBy,
}

/// An unlocked volume: where the data lies, the volume key, and how it was opened.
#[derive(Debug)]
pub struct Unlocked {
    /// The data window of the backing file.
    pub segment: Segment,
    /// The volume key.
    pub volume_key: VolumeKey,
    /// Which keyslot opened, and how (for status).
    pub unlocked_by: UnlockedBy,
    /// The data runs to the end of the backing file (LUKS2 "dynamic" size, LUKS1).
    pub grows_with_file: bool,
}

/// `--key-slot N` of a LUKS2 volume: not in use is exit 1 (README), and so is a keyslot that
/// cannot open the data (unbound, unusable: `keyslot::candidates`). Checked before any key is
/// read.
pub fn check_key_slot(meta: &Metadata, key_slot: Option<u32>, backing: &Path) -> Result<()> {
    if let Some(id) = key_slot
        && !meta.keyslots.contains_key(&id)
    {
        return Err(Error::Usage(format!(
            "keyslot {id} of {} is not in use",
            backing.display()
        )));
    }
    keyslot::candidates(meta, key_slot).map_err(|e| e.at(backing))?;
    Ok(())
}

/// Opens a LUKS2 keyslot in the vault-first order (module doc): the vault tokens of `vault`
/// when credentials are present, then `key` read through `prompt`.
pub fn unlock_luks2(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    key: &Key,
    vault: &VaultConfig,
    key_slot: Option<u32>,
    backing: &Path,
    prompt: &dyn Prompt,
) -> Result<Opened> {
    if let KeySource::VolumeKeyFile(file) = &key.source {
        return volume_key::unlock_luks2_with_volume_key(meta, file, backing);
    }
    check_key_slot(meta, key_slot, backing)?;
    let name = backing.display().to_string();
    // Why the vault did not open it: (reason, whether tokens were actually tried, whether the
    // volume has vault tokens for this keyslot at all).
    let (why, tried, has_vault_tokens) = match vault::try_unlock(meta, dev, vault, key_slot)? {
        VaultUnlock::Opened {
            keyslot,
            token,
            volume_key,
        } => {
            return Ok(Opened {
                volume_key,
                by: UnlockedBy::VaultToken { token, keyslot },
            });
        }
        VaultUnlock::Failed(why) => (why, true, true),
        VaultUnlock::NoCredentials(why) => (why, false, true),
        VaultUnlock::NoTokens => ("the volume has no vault token".to_string(), false, false),
    };
    if key.source == KeySource::VaultOnly {
        return Err(Error::Vault(format!(
            "no vault token of {name} opened a keyslot (--token-only): {why}"
        )));
    }
    let implicit_stdin = key.source == KeySource::StdinLine;
    let warn = || {
        if tried {
            log::warn!("{name}: vault unlock failed, trying a passphrase: {why}");
        } else if has_vault_tokens {
            log::info!("{name}: vault tokens not tried: {why}");
        }
    };
    // Before a prompt or key file, say why a passphrase is needed; a pipe is read first, so
    // that an empty one leaves the vault's failure as the only line.
    if !implicit_stdin {
        warn();
    }
    let pass = read_key(key, prompt, &name, false)?;
    if implicit_stdin {
        if pass.expose_secret().is_empty() && has_vault_tokens {
            return Err(Error::Vault(format!(
                "no keyslot of {name} opened: {why}, and no passphrase on stdin"
            )));
        }
        warn();
    }
    let (id, volume_key) = try_passphrase(meta, dev, &pass, key_slot, backing)?;
    Ok(Opened {
        volume_key,
        by: UnlockedBy::Keyslot(id),
    })
}

/// Opens a LUKS2 keyslot with `key` alone (no vault): test-key's explicit key, verify's key
/// files, change-key's old key.
pub fn unlock_luks2_passphrase(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    key: &Key,
    key_slot: Option<u32>,
    backing: &Path,
    prompt: &dyn Prompt,
) -> Result<Opened> {
    if let KeySource::VolumeKeyFile(file) = &key.source {
        return volume_key::unlock_luks2_with_volume_key(meta, file, backing);
    }
    check_key_slot(meta, key_slot, backing)?;
    let pass = read_key(key, prompt, &backing.display().to_string(), false)?;
    let (id, volume_key) = try_passphrase(meta, dev, &pass, key_slot, backing)?;
    Ok(Opened {
        volume_key,
        by: UnlockedBy::Keyslot(id),
    })
}

/// Tries `pass` on the candidate keyslots (only `key_slot` when given).
pub fn try_passphrase(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    pass: &Passphrase,
    key_slot: Option<u32>,
    backing: &Path,
) -> Result<(u32, VolumeKey)> {
    Ok(keyslot::unlock(meta, dev, pass.expose_secret(), key_slot).map_err(|e| e.at(backing))?)
}

/// `--key-slot N` of a LUKS1 volume: 0..7 and enabled, else exit 1 (as for LUKS2). Returns
/// the slot to try (None: all) and the enabled slots that will be tried.
pub fn luks1_key_slot(
    header: &Luks1Header,
    key_slot: Option<u32>,
    backing: &Path,
) -> Result<(Option<u8>, Vec<u32>)> {
    let name = backing.display();
    let only = match key_slot.map(u8::try_from) {
        Some(Ok(n)) if n < 8 => Some(n),
        Some(_) => {
            return Err(Error::Usage(format!(
                "keyslot {} of {name} is not in use (LUKS1 has 0..7)",
                key_slot.unwrap_or_default()
            )));
        }
        None => None,
    };
    let enabled: Vec<u32> = (0u8..8)
        .filter(|&i| header.keyslots[usize::from(i)].state == SlotState::Enabled)
        .filter(|&i| only.is_none_or(|o| o == i))
        .map(u32::from)
        .collect();
    if enabled.is_empty() {
        return Err(match only {
            Some(o) => Error::Usage(format!("keyslot {o} of {name} is not in use")),
            None => Error::Device(format!("{name}: no keyslot in use")),
        });
    }
    Ok((only, enabled))
}

/// A LUKS1 failure as the user sees it: an Argon2-free KDF out of memory is exit 3, a
/// `--key-slot` not in use exit 1, the rest exit 4.
pub fn luks1_error(e: Luks1Error, backing: &Path) -> Error {
    let name = backing.display();
    match e {
        Luks1Error::Kdf {
            source: CryptoError::KdfMemory(kib),
            ..
        } => Error::NoMemory(format!("keyslot KDF of {name} needs {kib} KiB")),
        Luks1Error::NoSuchKeyslot(_) | Luks1Error::KeyslotDisabled(_) => {
            Error::Usage(format!("{name}: {e}"))
        }
        other => Error::Device(format!("{name}: {other}")),
    }
}

/// Opens a LUKS1 keyslot (cryptsetup --type luks1, qemu-img -f luks) with `key`. LUKS1 has
/// no tokens: [`KeySource::VaultOnly`] is a vault error (exit 2). `before_key` runs after the
/// `key_slot` checks and before the key is read.
pub fn unlock_luks1(
    header: &Luks1Header,
    dev: &(impl ReadAt + ?Sized),
    key: &Key,
    key_slot: Option<u32>,
    backing: &Path,
    prompt: &dyn Prompt,
    before_key: &mut dyn FnMut() -> Result<()>,
) -> Result<Opened> {
    let name = backing.display().to_string();
    let (only, enabled) = luks1_key_slot(header, key_slot, backing)?;
    before_key()?;
    if let KeySource::VolumeKeyFile(file) = &key.source {
        let vk = read_volume_key_file(file)?;
        volume_key::check_luks1(header, &vk, file, backing)?;
        log::info!("{name}: opened with a volume key file");
        return Ok(Opened {
            volume_key: vk,
            by: UnlockedBy::VolumeKey,
        });
    }
    if key.source == KeySource::VaultOnly {
        return Err(Error::Vault(format!(
            "{name} is LUKS1, which has no tokens: --token-only cannot open it"
        )));
    }
    let pass = read_key(key, prompt, &name, false)?;
    let unlocked = header
        .unlock(dev, pass.expose_secret(), only)
        .map_err(|e| luks1_error(e, backing))?;
    drop(pass);
    let Some((id, volume_key)) = unlocked else {
        return Err(UnlockError::WrongKey { tried: enabled }.at(backing).into());
    };
    log::info!("LUKS1 keyslot {id} of {name} opened");
    Ok(Opened {
        volume_key,
        by: UnlockedBy::Luks1Keyslot(id),
    })
}

/// Opens whichever header `header` is: LUKS2 in the vault-first order (with `vault`; without
/// it the key alone), LUKS1 with the key. For verbs that already read the header (digest,
/// verify, test-key), so that they agree with open on every exit code.
pub fn unlock_header(
    header: &VolumeHeader,
    dev: &(impl ReadAt + ?Sized),
    key: &Key,
    vault: Option<&VaultConfig>,
    key_slot: Option<u32>,
    backing: &Path,
    prompt: &dyn Prompt,
) -> Result<Opened> {
    match header {
        VolumeHeader::Luks2(h) => match vault {
            Some(v) => unlock_luks2(&h.metadata, dev, key, v, key_slot, backing, prompt),
            None => unlock_luks2_passphrase(&h.metadata, dev, key, key_slot, backing, prompt),
        },
        VolumeHeader::Luks1(h) => {
            unlock_luks1(h, dev, key, key_slot, backing, prompt, &mut || Ok(()))
        }
    }
}

/// The unlock path of open and mount: reads the header of the volume at `place` in
/// `backing` (a whole file or device, a partition, a raw window), or from a detached
/// `header` file (`--header FILE`: header and keyslots read from FILE, never written; the
/// data segment checked against the place in `backing`, one that does not fit is exit 4);
/// checks `key_slot`; runs `before_key` (the caller's own checks, before any passphrase
/// prompt); then opens a keyslot in the vault-first order. The returned segment is in
/// `backing` (a window's start added), as the daemon serves it. A block device is opened
/// exclusively (a mounted one is exit 5), read-only ones only with `read_only`.
#[allow(clippy::too_many_arguments)]
pub fn unlock(
    backing: &Path,
    place: Place,
    header: &HeaderAt,
    key: &Key,
    vault: &VaultConfig,
    key_slot: Option<u32>,
    read_only: bool,
    prompt: &dyn Prompt,
    before_key: &mut dyn FnMut() -> Result<()>,
) -> Result<Unlocked> {
    // Read-write needs write access: find out before asking for a passphrase.
    let located = device::locate_with(backing, place, header, !read_only, true)?;
    let dev = located.header_window();
    let header_path = located.header_path().to_path_buf();
    let name = header_path.display().to_string();
    let parsed = located.read_header()?;
    let segment = located.segment(&parsed)?;
    let header = match parsed {
        VolumeHeader::Luks2(h) => h,
        VolumeHeader::Luks1(h) => {
            let opened = unlock_luks1(&h, dev, key, key_slot, &header_path, prompt, before_key)?;
            let grows_with_file = located.is_whole();
            drop(located);
            return Ok(Unlocked {
                segment,
                volume_key: opened.volume_key,
                unlocked_by: opened.by,
                grows_with_file,
            });
        }
    };
    device::warn_damaged_copy(&header, &header_path);
    check_key_slot(&header.metadata, key_slot, &header_path)?;
    before_key()?;

    let opened = unlock_luks2(
        &header.metadata,
        dev,
        key,
        vault,
        key_slot,
        &header_path,
        prompt,
    )?;
    if let Some(k) = opened.by.keyslot() {
        log::info!("keyslot {k} of {name} opened");
    }
    // A partition or window cannot grow with the file; a whole file or device can (resize).
    let grows_with_file = located.is_whole()
        && header
            .metadata
            .data_segment()
            .is_ok_and(|s| s.size_bytes.is_none());
    drop(located);
    Ok(Unlocked {
        segment,
        volume_key: opened.volume_key,
        unlocked_by: opened.by,
        grows_with_file,
    })
}

#[cfg(test)]
mod tests;
