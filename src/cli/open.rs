//! `vaultdisk open`: unlock a keyslot and serve the plaintext through FUSE.
use super::vault::VaultUnlock;
use super::{KeyArgs, OpenArgs, passphrase};
use crate::crypto::CryptoError;
use crate::daemon::{self, ServeSpec};
use crate::device::{self, VolumeHeader};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::keyslot::{self, UnlockError};
use crate::luks1::{Luks1Error, Luks1Header, SlotState};
use crate::luks2::ReadAt;
use crate::secret::VolumeKey;
use std::fs::File;
use std::io::IsTerminal;
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
            unlocked_by: unlocked.unlocked_by,
            grow_with_file: unlocked.grows_with_file,
        },
        unlocked.volume_key,
    )
}

/// An opened keyslot: where the data lies, which keyslot opened, and the volume key.
pub struct Unlocked {
    pub segment: Segment,
    pub volume_key: VolumeKey,
    /// For status: `keyslot N` or `vault token T (keyslot N)`.
    pub unlocked_by: String,
    /// The data runs to the end of the backing file (LUKS2 "dynamic" size, LUKS1).
    pub grows_with_file: bool,
}

/// A LUKS2 keyslot opened by `unlock_luks2`.
pub struct OpenedKeyslot {
    pub keyslot: u32,
    pub volume_key: VolumeKey,
    pub unlocked_by: String,
}

/// Opens a LUKS2 keyslot: vault tokens first when vault credentials are present, then the
/// passphrase (tty, key file, stdin) unless --token-only. A vault failure before a fallback
/// is one warning line; with no passphrase to fall back to, it is the error (exit 2).
pub fn unlock_luks2(
    meta: &crate::luks2::Metadata,
    dev: &(impl ReadAt + ?Sized),
    key: &KeyArgs,
    key_slot: Option<u32>,
    backing: &Path,
) -> Result<OpenedKeyslot> {
    let name = backing.display().to_string();
    // Why the vault did not open it: (reason, whether tokens were actually tried, whether the
    // volume has vault tokens for this keyslot at all).
    let (why, tried, has_vault_tokens) =
        match super::vault::try_unlock(meta, dev, &key.vault, key_slot)? {
            VaultUnlock::Opened {
                keyslot,
                token,
                volume_key,
            } => {
                return Ok(OpenedKeyslot {
                    keyslot,
                    volume_key,
                    unlocked_by: format!("vault token {token} (keyslot {keyslot})"),
                });
            }
            VaultUnlock::Failed(why) => (why, true, true),
            VaultUnlock::NoCredentials(why) => (why, false, true),
            VaultUnlock::NoTokens => ("the volume has no vault token".to_string(), false, false),
        };
    if key.vault.token_only {
        return Err(Error::Vault(format!(
            "no vault token of {name} opened a keyslot (--token-only): {why}"
        )));
    }
    let implicit_stdin = key.key_file.is_none() && !std::io::stdin().is_terminal();
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
    let pass = passphrase::read(key, &name, false)?;
    if implicit_stdin {
        if pass.expose_secret().is_empty() && has_vault_tokens {
            return Err(Error::Vault(format!(
                "no keyslot of {name} opened: {why}, and no passphrase on stdin"
            )));
        }
        warn();
    }
    let (id, volume_key) = try_passphrase(meta, dev, &pass, key_slot, backing)?;
    Ok(OpenedKeyslot {
        keyslot: id,
        volume_key,
        unlocked_by: format!("keyslot {id}"),
    })
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

    let opened = unlock_luks2(&header.metadata, &file, key, key_slot, backing)?;
    log::info!("keyslot {} of {name} opened", opened.keyslot);
    drop(file);
    let grows_with_file = header
        .metadata
        .data_segment()
        .is_ok_and(|s| s.size_bytes.is_none());
    Ok(Unlocked {
        segment,
        volume_key: opened.volume_key,
        unlocked_by: opened.unlocked_by,
        grows_with_file,
    })
}

/// Opens a LUKS2 keyslot with the passphrase alone (no vault): reads the key, tries it.
pub fn unlock_luks2_passphrase(
    meta: &crate::luks2::Metadata,
    dev: &(impl ReadAt + ?Sized),
    key: &KeyArgs,
    key_slot: Option<u32>,
    backing: &Path,
) -> Result<(u32, VolumeKey)> {
    let pass = passphrase::read(key, &backing.display().to_string(), false)?;
    try_passphrase(meta, dev, &pass, key_slot, backing)
}

fn try_passphrase(
    meta: &crate::luks2::Metadata,
    dev: &(impl ReadAt + ?Sized),
    pass: &crate::secret::Passphrase,
    key_slot: Option<u32>,
    backing: &Path,
) -> Result<(u32, VolumeKey)> {
    keyslot::unlock(meta, dev, pass.expose_secret(), key_slot).map_err(|e| unlock_error(e, backing))
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
    if key.vault.token_only {
        return Err(Error::Vault(format!(
            "{name} is LUKS1, which has no tokens: --token-only cannot open it"
        )));
    }
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
        volume_key,
        unlocked_by: format!("LUKS1 keyslot {id}"),
        grows_with_file: true,
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
        UnlockError::Unbound(id) => Error::Usage(format!(
            "keyslot {id} of {name} is unbound (its key is not the volume key of the data segment): it cannot open the data"
        )),
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
