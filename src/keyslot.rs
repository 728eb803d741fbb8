//! Unlock / store one LUKS2 keyslot: kdf -> area -> AF -> digest (docs/format.md §5).
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::Kdf;
use crate::crypto::kdf::budget::{self, OverBudget};
use crate::crypto::xts::SectorCipher;
use crate::crypto::{CryptoError, af, digest};
use crate::error::Error;
use crate::luks2::ReadAt;
use crate::luks2::json;
use crate::luks2::metadata::{self, AF_STRIPES, Keyslot, Luks2Keyslot, Metadata};
use crate::secret::{SecretBytes, VolumeKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::{Path, PathBuf};

/// Why no keyslot produced the volume key.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    /// Keyslots were tried and none matched the key.
    #[error("no keyslot opened with this key (tried {})", list(.tried))]
    WrongKey {
        /// The keyslots tried, in order.
        tried: Vec<u32>,
    },
    /// There was nothing we could try.
    #[error("{0}")]
    NoUsableKeyslot(String),
    /// The keyslot asked for by id is not in use.
    #[error("keyslot {0} is not in use")]
    NotInUse(u32),
    /// The keyslot asked for by id holds a key whose digest is not bound to the data segment
    /// (cryptsetup `luksAddKey --unbound`): its key is not the volume key, so it must never
    /// open the data.
    #[error(
        "keyslot {0} is unbound (its key is not the volume key of the data segment): it cannot open the data"
    )]
    Unbound(u32),
    /// The KDF or cipher failed (out of memory for Argon2, a bad parameter).
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    /// The keyslot material could not be read.
    #[error("reading keyslot material: {0}")]
    Io(String),
    /// Every candidate keyslot's KDF would run longer than the limit (a KDF bomb, or a limit
    /// set too low); none was tried.
    #[error("no keyslot was tried: {}", over_budget(.0))]
    OverBudget(Vec<(u32, OverBudget)>),
}

fn over_budget(skipped: &[(u32, OverBudget)]) -> String {
    skipped
        .iter()
        .map(|(id, why)| format!("keyslot {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl UnlockError {
    /// This failure on the volume at `path`, ready to become the crate's [`Error`].
    pub fn at(self, path: &Path) -> UnlockFailure {
        UnlockFailure {
            path: path.to_path_buf(),
            error: self,
        }
    }
}

/// An [`UnlockError`] on a named volume: what the user-facing [`Error`] is made from.
#[derive(Debug)]
pub struct UnlockFailure {
    /// The volume (backing file or detached header).
    pub path: PathBuf,
    /// What went wrong.
    pub error: UnlockError,
}

impl From<UnlockFailure> for Error {
    /// The user-facing error and exit code: a wrong key is exit 2, a `--key-slot` that is not
    /// in use or cannot open the data exit 1, an Argon2 keyslot out of memory exit 3, the
    /// rest exit 4.
    fn from(f: UnlockFailure) -> Error {
        let name = f.path.display();
        match f.error {
            UnlockError::WrongKey { tried } => Error::NoKey {
                what: "passphrase",
                tried: list(&tried),
                path: f.path,
            },
            UnlockError::NotInUse(id) => {
                Error::Usage(format!("keyslot {id} of {name} is not in use"))
            }
            UnlockError::NoUsableKeyslot(why) => Error::Device(format!("{name}: {why}")),
            UnlockError::Unbound(id) => Error::Usage(format!(
                "keyslot {id} of {name} is unbound (its key is not the volume key of the data segment): it cannot open the data"
            )),
            UnlockError::Crypto(CryptoError::KdfMemory(kib)) => Error::NoMemory(format!(
                "keyslot KDF of {name} needs {kib} KiB, more than this machine can spare"
            )),
            UnlockError::Crypto(other) => Error::Device(format!("{name}: {other}")),
            UnlockError::Io(msg) => Error::Device(format!("{name}: {msg}")),
            UnlockError::OverBudget(skipped) => Error::Device(format!(
                "no keyslot of {name} was tried: {}",
                over_budget(&skipped)
            )),
        }
    }
}

fn list(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// True when keyslot `id`'s digest lists the data segment, i.e. its key is the volume key
/// (docs/format.md §4.3). A keyslot added with `cryptsetup luksAddKey --unbound` has a digest
/// with no segments: it stores some other key and must not decrypt the data. Without a crypt
/// segment (an unsupported layout) a digest listing any segment counts as bound.
pub fn is_bound(meta: &Metadata, id: u32) -> bool {
    let Some(dg) = meta.digest_of_keyslot(id) else {
        return false;
    };
    match meta.segments.keys().next() {
        Some(data) => dg.segments.contains(data),
        None => !dg.segments.is_empty(),
    }
}

/// Keyslot ids to try for the data, preferred ones first; priority 0 only when asked for by
/// id. Keyslots not bound to the data segment ([`is_bound`]) are never candidates: asked for
/// by id they are [`UnlockError::Unbound`].
pub fn candidates(meta: &Metadata, only: Option<u32>) -> Result<Vec<u32>, UnlockError> {
    if let Some(id) = only {
        return match meta.keyslots.get(&id) {
            Some(Keyslot::Luks2(_)) if is_bound(meta, id) => Ok(vec![id]),
            Some(Keyslot::Luks2(_)) => Err(UnlockError::Unbound(id)),
            Some(Keyslot::Unusable { reason, .. }) => {
                Err(UnlockError::NoUsableKeyslot(reason.clone()))
            }
            None => Err(UnlockError::NotInUse(id)),
        };
    }
    let mut ids: Vec<(u32, u32)> = meta
        .keyslots
        .iter()
        .filter_map(|(id, k)| match k {
            Keyslot::Luks2(k) if k.priority > 0 && is_bound(meta, *id) => Some((*id, k.priority)),
            _ => None,
        })
        .collect();
    if ids.is_empty() {
        let reasons: Vec<String> = meta
            .keyslots
            .iter()
            .filter_map(|(id, k)| match k {
                Keyslot::Unusable { reason, .. } => Some(reason.clone()),
                Keyslot::Luks2(_) if !is_bound(meta, *id) => {
                    Some(format!("keyslot {id} is unbound"))
                }
                Keyslot::Luks2(_) => None,
            })
            .collect();
        return Err(UnlockError::NoUsableKeyslot(if reasons.is_empty() {
            "no keyslot in use".into()
        } else {
            format!("no usable keyslot: {}", reasons.join("; "))
        }));
    }
    ids.sort_by_key(|&(id, prio)| (std::cmp::Reverse(prio), id));
    Ok(ids.into_iter().map(|(id, _)| id).collect())
}

/// Tries `passphrase` on the candidate keyslots; returns the first that opens and its key.
pub fn unlock(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    passphrase: &[u8],
    only: Option<u32>,
) -> Result<(u32, VolumeKey), UnlockError> {
    let ids = candidates(meta, only)?;
    let mut tried = Vec::with_capacity(ids.len());
    let mut skipped = Vec::new();
    for &id in &ids {
        let Some(Keyslot::Luks2(ks)) = meta.keyslots.get(&id) else {
            continue;
        };
        // A KDF bomb is skipped before any work (docs/format.md §9: resource caps).
        match budget::check(cost(meta, id, ks)) {
            Err(over) => {
                skipped.push((id, over));
                continue;
            }
            Ok(est) if est > budget::PROGRESS_AFTER => log::info!(
                target: budget::PROGRESS_TARGET,
                "trying keyslot {id} (its KDF takes about {} here)",
                budget::human(est)
            ),
            Ok(_) => {}
        }
        tried.push(id);
        if let Some(vk) = unlock_one(meta, id, ks, dev, passphrase)? {
            return Ok((id, vk));
        }
    }
    if tried.is_empty() && !skipped.is_empty() {
        return Err(UnlockError::OverBudget(skipped));
    }
    for (id, over) in &skipped {
        log::warn!("keyslot {id} skipped: {over}");
    }
    Err(UnlockError::WrongKey { tried })
}

/// What trying keyslot `id` costs here: its KDF plus the digest check that follows it.
fn cost(meta: &Metadata, id: u32, ks: &Luks2Keyslot) -> std::time::Duration {
    let kdf = budget::estimate(&ks.kdf, ks.area_key_size as usize);
    let digest = meta
        .digest_of_keyslot(id)
        .map_or(std::time::Duration::ZERO, |dg| {
            budget::estimate_pbkdf2(dg.hash, dg.iterations, dg.digest.len())
        });
    kdf.saturating_add(digest)
}

/// Derives, decrypts and merges keyslot `id`; Some(key) when its digest matches.
fn unlock_one(
    meta: &Metadata,
    id: u32,
    ks: &Luks2Keyslot,
    dev: &(impl ReadAt + ?Sized),
    passphrase: &[u8],
) -> Result<Option<VolumeKey>, UnlockError> {
    let Some(dg) = meta.digest_of_keyslot(id) else {
        return Ok(None);
    };
    let mut derived = SecretBytes::zeroed(ks.area_key_size as usize);
    ks.kdf
        .derive(passphrase, &ks.kdf_salt, derived.expose_secret_mut())?;
    let len = metadata::af_material_len(ks.key_size) as usize;
    let mut material = SecretBytes::zeroed(len);
    dev.read_exact_at(material.expose_secret_mut(), ks.area_offset_bytes)
        .map_err(|e| UnlockError::Io(format!("keyslot {id}: {e}")))?;
    // Keyslot areas use 512-byte units with IVs counted from the area start.
    SectorCipher::new(derived.expose_secret())?.decrypt_sectors_sequential(
        material.expose_secret_mut(),
        512,
        0,
        1,
    );
    let mut key = SecretBytes::zeroed(ks.key_size as usize);
    af::merge(
        material.expose_secret(),
        AF_STRIPES as usize,
        ks.af_hash,
        key.expose_secret_mut(),
    );
    let ok = digest::verify(
        key.expose_secret(),
        dg.hash,
        dg.iterations,
        &dg.salt,
        &dg.digest,
    );
    Ok(ok.then_some(VolumeKey::from_secret(key)))
}

/// A new keyslot: its JSON and the encrypted AF material to write at `area.offset`.
pub struct NewKeyslot {
    /// The keyslot object for the metadata (luks2::edit::add_keyslot).
    pub json: json::Keyslot,
    /// The encrypted AF material to write at the area offset before the header points to it.
    pub material: Vec<u8>,
}

/// Builds a keyslot that stores `volume_key` under `passphrase` in the area at `area_offset`.
pub fn store(
    volume_key: &VolumeKey,
    passphrase: &[u8],
    kdf: Kdf,
    area_offset: u64,
    area_size: u64,
) -> Result<NewKeyslot, UnlockError> {
    let key_size = volume_key.expose_secret().len();
    let mut salt = [0u8; metadata::SALT_LEN];
    crate::crypto::random::fill(&mut salt).map_err(|e| UnlockError::Io(e.to_string()))?;
    let mut derived = SecretBytes::zeroed(key_size);
    kdf.derive(passphrase, &salt, derived.expose_secret_mut())?;
    let len = metadata::af_material_len(key_size as u32) as usize;
    let mut split = SecretBytes::zeroed(len);
    af::split(
        volume_key.expose_secret(),
        AF_STRIPES as usize,
        HashAlg::Sha256,
        &mut split.expose_secret_mut()[..key_size * AF_STRIPES as usize],
    )
    .map_err(|e| UnlockError::Io(e.to_string()))?;
    SectorCipher::new(derived.expose_secret())?.encrypt_sectors_sequential(
        split.expose_secret_mut(),
        512,
        0,
        1,
    );
    let material = split.expose_secret().to_vec();
    let mut kdf_json = json::Kdf {
        kind: kdf.type_name().into(),
        hash: None,
        iterations: None,
        time: None,
        memory: None,
        cpus: None,
        salt: B64.encode(salt),
        extra: Default::default(),
    };
    match kdf {
        Kdf::Pbkdf2 { hash, iterations } => {
            kdf_json.hash = Some(hash.name().into());
            kdf_json.iterations = Some(iterations);
        }
        Kdf::Argon2i {
            time,
            memory_kib,
            cpus,
        }
        | Kdf::Argon2id {
            time,
            memory_kib,
            cpus,
        } => {
            kdf_json.time = Some(time);
            kdf_json.memory = Some(memory_kib);
            kdf_json.cpus = Some(cpus);
        }
    }
    Ok(NewKeyslot {
        json: json::Keyslot {
            kind: "luks2".into(),
            key_size: key_size as u32,
            priority: None,
            af: json::Af {
                kind: "luks1".into(),
                stripes: AF_STRIPES,
                hash: "sha256".into(),
                extra: Default::default(),
            },
            area: json::Area {
                kind: "raw".into(),
                offset: area_offset,
                size: area_size,
                encryption: "aes-xts-plain64".into(),
                key_size: key_size as u32,
                extra: Default::default(),
            },
            kdf: kdf_json,
            extra: Default::default(),
        },
        material,
    })
}

/// Overwrites a keyslot area (`size` bytes at `offset`) with random bytes and syncs it, so the
/// AF material can no longer be merged (cryptsetup wipes with random data too).
pub fn wipe_area(
    dev: &(impl crate::luks2::write::WriteAt + ?Sized),
    offset: u64,
    size: u64,
) -> std::io::Result<()> {
    overwrite(dev, offset, size, true)
}

/// Overwrites `size` bytes at `offset` with zeros and syncs them (after a [`wipe_area`], so
/// the area reads as blank and no tool sees a signature there).
pub fn zero_area(
    dev: &(impl crate::luks2::write::WriteAt + ?Sized),
    offset: u64,
    size: u64,
) -> std::io::Result<()> {
    overwrite(dev, offset, size, false)
}

/// Writes `size` bytes at `offset` in 1 MiB chunks, random or zero, then one sync.
fn overwrite(
    dev: &(impl crate::luks2::write::WriteAt + ?Sized),
    offset: u64,
    size: u64,
    random: bool,
) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(CHUNK) as usize;
        let mut buf = vec![0u8; n];
        if random {
            crate::crypto::random::fill(&mut buf)?;
        }
        dev.write_all_at(&buf, offset + done)?;
        done += n as u64;
    }
    dev.sync_data()
}
