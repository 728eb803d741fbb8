//! The keyslot lifecycle on a backing file opened for update: add a keyslot, remove one,
//! change a key (add before remove), add a recovery key. Each step is a typed edit
//! (`luks2::edit`) written by the crash-safe header write (`luks2::write`); keyslot material is
//! written and synced before a header points to it, and wiped only after the header no longer
//! does (docs/format.md §2 "Writing", §5 "Adding/Removing").
//!
//! Nothing here prompts or reads arguments: the caller has unlocked the volume key (and knows
//! which keyslot opened it) and hands in the new passphrase and its KDF.
use crate::crypto::CryptoError;
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::{self, CalibrationRequest, Kdf};
use crate::device::{self, Backing};
use crate::error::{Error, Result};
use crate::keyslot;
use crate::luks2::Header;
use crate::luks2::edit::{self, EditError};
use crate::luks2::layout::Layout;
use crate::luks2::write::{self, WriteAt};
use crate::secret::{Passphrase, VolumeKey};
use serde_json::Value;

/// PBKDF2 iterations of a keyslot whose passphrase is a full-entropy secret (a vault secret,
/// a recovery key): a slow KDF adds nothing to 256 bits; cryptsetup's minimum keeps unlock
/// instant.
pub const FULL_ENTROPY_PBKDF2_ITERATIONS: u32 = 1000;

/// The KDF of keyslots whose passphrase is a full-entropy secret (vault, recovery key).
pub fn full_entropy_kdf() -> Kdf {
    Kdf::Pbkdf2 {
        hash: HashAlg::Sha256,
        iterations: FULL_ENTROPY_PBKDF2_ITERATIONS,
    }
}

/// Benchmarks the KDF for `request`; a cost this machine cannot afford is exit 3, any other
/// refusal exit 1.
pub fn calibrate(request: &CalibrationRequest) -> Result<Kdf> {
    kdf::calibrate(request).map_err(|e| match e {
        CryptoError::KdfMemory(kib) => Error::NoMemory(format!(
            "the KDF needs {kib} KiB, more than this machine can spare"
        )),
        other => Error::Usage(format!("KDF: {other}")),
    })
}

/// A keyslot to add: what it holds the volume key under, and where.
pub struct NewKey<'a> {
    /// The new passphrase (the bytes the KDF sees).
    pub passphrase: &'a [u8],
    /// Its KDF, already calibrated.
    pub kdf: Kdf,
    /// The keyslot id asked for (`--key-slot`), or None for the lowest free one.
    pub keyslot: Option<u32>,
    /// A token object to link to the new keyslot in the same header update (its `keyslots`
    /// are set here), e.g. `{"type": "vaultdisk-recovery"}`.
    pub token: Option<Value>,
}

/// The keyslot id a new keyslot of `header` gets: `want` if free and in range, else the lowest
/// free one. `--key-slot` out of range is exit 1, a taken or no free keyslot exit 5.
pub fn free_keyslot(header: &Header, want: Option<u32>, name: &str) -> Result<u32> {
    edit::free_keyslot(&header.metadata, want).map_err(|e| match e {
        EditError::OutOfRange(n) => Error::Usage(format!(
            "--key-slot {n} is out of range 0..{}",
            crate::luks2::metadata::MAX_OBJECTS - 1
        )),
        EditError::KeyslotInUse(n) => Error::Busy(format!("keyslot {n} of {name} is in use")),
        _ => Error::Busy(format!("all keyslots of {name} are used")),
    })
}

/// The digest keyslot `keyslot` belongs to (a new keyslot for the same volume key joins it).
pub fn digest_of(header: &Header, keyslot: u32, name: &str) -> Result<u32> {
    header
        .metadata
        .digest_id_of_keyslot(keyslot)
        .ok_or_else(|| Error::Device(format!("{name}: keyslot {keyslot} has no digest")))
}

/// Stores `volume_key` under `new.passphrase` in a new keyslot linked into digest
/// `digest_id` (and `new.token` linked to it). The material is written and synced before the
/// header points to it. Returns the new keyslot id and the header as written.
pub fn add_keyslot(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    digest_id: u32,
    new: NewKey<'_>,
) -> Result<(u32, Header)> {
    let name = dev.name();
    let meta = &header.metadata;
    let id = free_keyslot(header, new.keyslot, &name)?;
    let area_size = Layout::keyslot_area_size(volume_key.expose_secret().len() as u32);
    let area_offset = edit::free_area(meta, area_size).map_err(|_| {
        Error::Busy(format!(
            "all keyslots of {name} are used (no {area_size}-byte gap left in the keyslots area)"
        ))
    })?;
    let slot = keyslot::store(volume_key, new.passphrase, new.kdf, area_offset, area_size)
        .map_err(|e| Error::Device(format!("cannot create keyslot {id} of {name}: {e}")))?;
    // Refused before touching the disk if the header would not be valid or not fit.
    let (after, _) =
        edit::add_keyslot(meta, id, &slot.json, digest_id, new.token).map_err(|e| match e {
            EditError::NoSuchDigest(_) => Error::Device(format!("{name}: {e}")),
            EditError::Encode(_) => Error::Device(e.to_string()),
            EditError::NoFreeToken => Error::Busy(format!("all token ids of {name} are used")),
            EditError::NoRoom { .. } => Error::Busy(format!(
                "all keyslots of {name} are used (the JSON area has no room for another keyslot)"
            )),
            other => Error::Device(format!("cannot add a keyslot to {name}: {other}")),
        })?;
    // Material first, synced: the header must never point to an area not yet written.
    dev.write_all_at(&slot.material, area_offset)
        .and_then(|()| dev.sync_data())
        .map_err(|e| Error::io(format!("cannot write keyslot {id} of {name}"), e))?;
    let written = write::write_header(dev, header, after.wire, device::random_salts()?)
        .map_err(|e| dev.write_error(e))?;
    Ok((id, written))
}

/// [`add_keyslot`] for a volume key opened by keyslot `unlocked`: the new keyslot joins the
/// same digest.
pub fn add_key(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    unlocked: u32,
    new: NewKey<'_>,
) -> Result<(u32, Header)> {
    let digest = digest_of(header, unlocked, &dev.name())?;
    add_keyslot(dev, header, volume_key, digest, new)
}

/// [`add_keyslot`] for a volume key opened as `by` says: by a keyslot (the new keyslot joins
/// its digest) or given as the raw volume key, already checked against the data segment's
/// digest (`--volume-key-file`; the new keyslot joins that digest).
pub fn add_key_opened(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    by: crate::unlock::UnlockedBy,
    new: NewKey<'_>,
) -> Result<(u32, Header)> {
    match by.keyslot() {
        Some(k) => add_key(dev, header, volume_key, k, new),
        None => {
            let digest =
                crate::unlock::volume_key::data_digest_id(&header.metadata).ok_or_else(|| {
                    Error::Device(format!("{}: no digest covers the data segment", dev.name()))
                })?;
            add_keyslot(dev, header, volume_key, digest, new)
        }
    }
}

/// Removes keyslot `id` (and tokens left naming no keyslot): header first, then the wipe.
///
/// Why this order: with the header written first, the header on disk at every instant points
/// only to intact material, so a crash leaves a volume whose header tells the truth: either
/// the keyslot is still listed and its material still opens, or it is gone. Wiping first
/// (cryptsetup's order) would, on a crash before the header write, leave a header listing a
/// keyslot whose area is noise, which `dump`/`open` can only report as damage. The price: a
/// crash between the two steps leaves the removed key's material unreferenced but not yet
/// wiped, until the area is reused by a later add-key (the only leak is to someone who holds
/// the removed key and reads the raw area); the window is one header write.
pub fn remove_keyslot(dev: &Backing, header: &Header, id: u32) -> Result<Header> {
    let name = dev.name();
    let (after, removed) = edit::remove_keyslot(&header.metadata, id).map_err(|e| match e {
        EditError::NoSuchKeyslot(_) => {
            Error::Usage(format!("keyslot {id} of {name} is not in use"))
        }
        other => Error::Device(format!("{name}: new metadata is invalid: {other}")),
    })?;
    let written = write::write_header(dev, header, after.wire, device::random_salts()?)
        .map_err(|e| dev.write_error(e))?;
    if let Some((offset, size)) = removed.area {
        keyslot::wipe_area(dev, offset, size).map_err(|e| {
            Error::io(
                format!("keyslot {id} of {name} was removed but its area was not wiped"),
                e,
            )
        })?;
    }
    Ok(written)
}

/// [`remove_keyslot`] as `remove-key` runs it: refuses (exit 5) to remove the only keyslot
/// unless `allow_last`.
pub fn remove_key(dev: &Backing, header: &Header, id: u32, allow_last: bool) -> Result<Header> {
    if header.metadata.wire.keyslots.len() == 1 && !allow_last {
        return Err(Error::Busy(format!(
            "keyslot {id} of {} is the only keyslot: --force to remove it and lose access",
            dev.name()
        )));
    }
    remove_keyslot(dev, header, id)
}

/// Replaces the key of keyslot `old` (which opened `volume_key`) by `new`, in cryptsetup
/// luksChangeKey's order: the new keyslot is committed before the old one goes, so a crash at
/// any point leaves the old key or the new one working. Returns the new keyslot id.
pub fn change_key(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    old: u32,
    new: NewKey<'_>,
) -> Result<(u32, Header)> {
    let (new_id, after) = add_key(dev, header, volume_key, old, new)?;
    let written = remove_keyslot(dev, &after, old)?;
    Ok((new_id, written))
}

/// Adds a new random recovery key (crate::recovery_key) in a new keyslot marked by a
/// `vaultdisk-recovery` token, with the full-entropy KDF. Returns the keyslot id and the key,
/// which the caller shows once.
pub fn add_recovery_key(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    unlocked: u32,
) -> Result<(u32, Passphrase)> {
    let recovery = crate::recovery_key::generate()?;
    // 256 bits of entropy: the full-entropy KDF (PBKDF2, 1000 iterations) is enough.
    let (id, _) = add_key(
        dev,
        header,
        volume_key,
        unlocked,
        NewKey {
            passphrase: recovery.expose_secret(),
            kdf: full_entropy_kdf(),
            keyslot: None,
            token: Some(crate::token::recovery_token()),
        },
    )?;
    Ok((id, recovery))
}

mod vault;
pub use vault::{Rewrap, enroll_vault, remove_vault_token, rewrap_vault_tokens};

#[cfg(test)]
mod tests;

/// Rewrap that can also re-point the tokens to other vault addresses (`vault rewrap --set-addr`).
pub use vault::rewrap_vault_tokens_to;
