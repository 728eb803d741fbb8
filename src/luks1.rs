//! LUKS1 header: parse and validate only; unlock feeds the same data path as LUKS2.
//!
//! Layout and rules: docs/format.md §8 (phdr, keyslots, unlock) and §9 (LUKS1 checks, after
//! cryptsetup's `LUKS_check_keyslots`). Only aes-xts-plain64 data can be unlocked; headers
//! with other ciphers parse (for `dump`) but `segment` and `unlock` refuse them.
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::Kdf;
use crate::crypto::kdf::budget::{self, OverBudget};
use crate::crypto::xts::SectorCipher;
use crate::crypto::{CryptoError, af, digest};
use crate::geometry::Segment;
use crate::luks2::ReadAt;
use crate::secret::{SecretBytes, VolumeKey};

/// Bytes of the phdr that carry data (cryptsetup reads and writes 1024, zero padded).
pub const PHDR_LEN: usize = 592;
/// "LUKS\xba\xbe", shared with the LUKS2 primary header.
pub const MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Number of keyslots in a LUKS1 header.
pub const NUM_KEYSLOTS: usize = 8;
/// Keyslot `active` value of an enabled slot.
pub const KEYSLOT_ENABLED: u32 = 0x00AC_71F3;
/// Keyslot `active` value of a disabled slot.
pub const KEYSLOT_DISABLED: u32 = 0x0000_DEAD;
/// LUKS1 sector, the unit of payloadOffset and keyMaterialOffset.
pub const SECTOR_BYTES: u64 = 512;
/// Key material may not start before this byte (cryptsetup's padded phdr, docs/format.md §9).
pub const MIN_KEY_MATERIAL_BYTES: u64 = 1024;
/// Largest keyBytes we accept: far above any real cipher (aes-xts uses 64) while keeping the
/// key material of a hostile header to a few MiB.
pub const MAX_KEY_BYTES: u32 = 512;
/// Length of mkDigest: LUKS1 always stores 20 bytes.
pub const DIGEST_LEN: usize = 20;

/// The one cipher spec we can decrypt.
const SUPPORTED_CIPHER: &str = "aes";
const SUPPORTED_MODE: &str = "xts-plain64";

/// Everything that can be wrong with a LUKS1 header or its use; each message names the field.
#[derive(Debug, thiserror::Error)]
pub enum Luks1Error {
    /// Fewer than [`PHDR_LEN`] bytes were given to `parse`; holds the length in bytes.
    #[error("LUKS1 header: {0} bytes, need at least {PHDR_LEN}")]
    TooShort(usize),
    /// The first six bytes are not `LUKS\xba\xbe` (docs/format.md §8).
    #[error("LUKS1 header: bad magic, not a LUKS device")]
    BadMagic,
    /// The version field is not 1; holds the version found.
    #[error("LUKS1 header: version {0}, expected 1")]
    Version(u16),
    /// A text field (named by the payload) has no NUL or holds non-printable bytes.
    #[error("LUKS1 header: {0} is not a NUL-terminated printable ASCII string")]
    BadString(&'static str),
    /// hashSpec names a hash outside the allow-list; holds the name found.
    #[error("LUKS1 header: hashSpec {0:?} not supported (sha1, sha256, sha512, ripemd160)")]
    UnknownHash(String),
    /// keyBytes is 0 or above [`MAX_KEY_BYTES`]; holds the value found, in bytes.
    #[error("LUKS1 header: keyBytes {0}, expected 1..={MAX_KEY_BYTES}")]
    KeyBytes(u32),
    /// mkDigestIterations is 0.
    #[error("LUKS1 header: mkDigestIterations 0")]
    DigestIterations,
    /// A keyslot's stripes is not 4000 (docs/format.md §9).
    #[error("LUKS1 header: keyslot {slot} stripes {stripes}, expected 4000")]
    Stripes {
        /// Keyslot id (0..=7).
        slot: u8,
        /// The stripes value found.
        stripes: u32,
    },
    /// A keyslot's key material starts before byte [`MIN_KEY_MATERIAL_BYTES`].
    #[error(
        "LUKS1 header: keyslot {slot} key material at sector {offset_sectors} lies inside the header"
    )]
    SlotInHeader {
        /// Keyslot id (0..=7).
        slot: u8,
        /// The keyMaterialOffset found, in 512-byte sectors.
        offset_sectors: u32,
    },
    /// A keyslot's key material runs past the payload offset (attached headers only).
    #[error(
        "LUKS1 header: keyslot {slot} key material ends at sector {end_sectors}, beyond payload offset {payload_offset_sectors}"
    )]
    SlotBeyondPayload {
        /// Keyslot id (0..=7).
        slot: u8,
        /// End of the key material, in 512-byte sectors from the device start.
        end_sectors: u64,
        /// The payloadOffset, in 512-byte sectors.
        payload_offset_sectors: u32,
    },
    /// The key material of two keyslots overlaps.
    #[error("LUKS1 header: key material of keyslots {first} and {second} overlaps")]
    SlotOverlap {
        /// The lower keyslot id.
        first: u8,
        /// The higher keyslot id.
        second: u8,
    },
    /// An enabled keyslot has 0 PBKDF2 iterations.
    #[error("LUKS1 header: keyslot {slot} is enabled with 0 iterations")]
    SlotIterations {
        /// Keyslot id (0..=7).
        slot: u8,
    },
    /// The device ends before a keyslot's key material or the payload offset.
    #[error("LUKS1 device: {len} bytes, too small for {what} ending at byte {end}")]
    DeviceTooSmall {
        /// What does not fit, e.g. "keyslot 3 key material".
        what: String,
        /// Where it ends, in bytes from the device start.
        end: u64,
        /// The device length, in bytes.
        len: u64,
    },
    /// The cipher is not aes-xts-plain64 with a 32- or 64-byte key; holds the spec found.
    #[error("LUKS1: cipher {0} is not supported (only aes-xts-plain64 with a 32- or 64-byte key)")]
    Unsupported(String),
    /// The payload offset is 0 (detached header), which cannot be opened.
    #[error("LUKS1: detached header (payload offset 0) is not supported")]
    Detached,
    /// The keyslot asked for is not 0..=7; holds the id asked for.
    #[error("LUKS1: no keyslot {0} (valid: 0..=7)")]
    NoSuchKeyslot(u8),
    /// The keyslot asked for is not enabled; holds its id.
    #[error("LUKS1: keyslot {0} is not enabled")]
    KeyslotDisabled(u8),
    /// Every candidate keyslot's KDF would run longer than the limit; none was tried.
    #[error("LUKS1: no keyslot was tried: {}", over_budget(.0))]
    OverBudget(Vec<(u8, OverBudget)>),
    /// A keyslot's KDF, or the cipher keyed by its result, failed.
    #[error("LUKS1: keyslot {slot}: {source}")]
    Kdf {
        /// Keyslot id (0..=7).
        slot: u8,
        /// The crypto failure.
        #[source]
        source: CryptoError,
    },
    /// Reading a keyslot's key material from the device failed.
    #[error("LUKS1: reading keyslot {slot} key material: {source}")]
    Read {
        /// Keyslot id (0..=7).
        slot: u8,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// Asking the device for its length failed.
    #[error("LUKS1: reading the device size: {0}")]
    DeviceSize(#[source] std::io::Error),
}

/// A keyslot's `active` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// 0x00AC71F3: holds a key.
    Enabled,
    /// 0x0000DEAD: free.
    Disabled,
    /// Anything else: neither; never tried (cryptsetup treats it as invalid).
    Invalid(u32),
}

/// One of the eight LUKS1 keyslots (docs/format.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks1Keyslot {
    /// The `active` word.
    pub state: SlotState,
    /// PBKDF2 iterations (0 in disabled slots).
    pub iterations: u32,
    /// PBKDF2 salt (not secret).
    pub salt: [u8; 32],
    /// Start of the AF-split key material, in 512-byte sectors from the device start.
    pub key_material_offset_sectors: u32,
    /// AF stripes; always 4000 after `parse`.
    pub stripes: u32,
}

/// A parsed and checked LUKS1 header (docs/format.md §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks1Header {
    /// cipherName, e.g. "aes".
    pub cipher_name: String,
    /// cipherMode, e.g. "xts-plain64".
    pub cipher_mode: String,
    /// hashSpec: PBKDF2 PRF of the keyslots and the digest, and the AF hash.
    pub hash: HashAlg,
    /// Start of the encrypted data in 512-byte sectors (0: detached header).
    pub payload_offset_sectors: u32,
    /// Volume key length in bytes.
    pub key_bytes: u32,
    /// Text UUID.
    pub uuid: String,
    /// PBKDF2-hashSpec(volume key, mk_digest_salt, mk_digest_iterations, 20).
    pub mk_digest: [u8; 20],
    /// Salt of `mk_digest`.
    pub mk_digest_salt: [u8; 32],
    /// Iterations of `mk_digest` (at least 1).
    pub mk_digest_iterations: u32,
    /// The eight keyslots, in id order.
    pub keyslots: [Luks1Keyslot; 8],
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[off..off + N]);
    a
}

/// A NUL-terminated printable-ASCII field (cryptsetup forces the last byte to NUL, so a field
/// that fills its whole width was never written by it).
fn text(b: &[u8], off: usize, len: usize, name: &'static str) -> Result<String, Luks1Error> {
    let field = &b[off..off + len];
    let end = field
        .iter()
        .position(|&c| c == 0)
        .ok_or(Luks1Error::BadString(name))?;
    let s = &field[..end];
    if !s.iter().all(|c| c.is_ascii_graphic()) {
        return Err(Luks1Error::BadString(name));
    }
    Ok(String::from_utf8_lossy(s).into_owned())
}

/// Parses the first [`PHDR_LEN`] (or more) bytes of a device and checks everything in
/// docs/format.md §9 that needs no device size: magic, version, strings, hash, keyBytes,
/// digest iterations, stripes, key material placement and overlap (all eight slots, as
/// cryptsetup checks disabled ones too).
pub fn parse(phdr: &[u8]) -> Result<Luks1Header, Luks1Error> {
    if phdr.len() < PHDR_LEN {
        return Err(Luks1Error::TooShort(phdr.len()));
    }
    if phdr[0..6] != MAGIC {
        return Err(Luks1Error::BadMagic);
    }
    let version = be16(phdr, 6);
    if version != 1 {
        return Err(Luks1Error::Version(version));
    }
    let cipher_name = text(phdr, 8, 32, "cipherName")?;
    let cipher_mode = text(phdr, 40, 32, "cipherMode")?;
    let hash_name = text(phdr, 72, 32, "hashSpec")?;
    // LUKS1 needs at least 20 bytes of hash output (md5 is LUKS2-only, as in cryptsetup).
    let hash = HashAlg::from_name(&hash_name)
        .filter(|h| h.output_len() >= 20)
        .ok_or(Luks1Error::UnknownHash(hash_name))?;
    let payload_offset_sectors = be32(phdr, 104);
    let key_bytes = be32(phdr, 108);
    if key_bytes == 0 || key_bytes > MAX_KEY_BYTES {
        return Err(Luks1Error::KeyBytes(key_bytes));
    }
    let mk_digest = array::<20>(phdr, 112);
    let mk_digest_salt = array::<32>(phdr, 132);
    let mk_digest_iterations = be32(phdr, 164);
    if mk_digest_iterations == 0 {
        return Err(Luks1Error::DigestIterations);
    }
    let uuid = text(phdr, 168, 40, "uuid")?;

    let keyslots: [Luks1Keyslot; NUM_KEYSLOTS] = std::array::from_fn(|i| {
        let base = 208 + 48 * i;
        let state = match be32(phdr, base) {
            KEYSLOT_ENABLED => SlotState::Enabled,
            KEYSLOT_DISABLED => SlotState::Disabled,
            other => SlotState::Invalid(other),
        };
        Luks1Keyslot {
            state,
            iterations: be32(phdr, base + 4),
            salt: array::<32>(phdr, base + 8),
            key_material_offset_sectors: be32(phdr, base + 40),
            stripes: be32(phdr, base + 44),
        }
    });

    let header = Luks1Header {
        cipher_name,
        cipher_mode,
        hash,
        payload_offset_sectors,
        key_bytes,
        uuid,
        mk_digest,
        mk_digest_salt,
        mk_digest_iterations,
        keyslots,
    };
    header.check_keyslots()?;
    Ok(header)
}

impl Luks1Header {
    /// Bytes of AF material per keyslot: keyBytes·4000 rounded up to whole sectors.
    pub fn key_material_bytes(&self) -> u64 {
        (u64::from(self.key_bytes) * af::STRIPES as u64).div_ceil(SECTOR_BYTES) * SECTOR_BYTES
    }

    fn material_sectors(&self) -> u64 {
        self.key_material_bytes() / SECTOR_BYTES
    }

    /// docs/format.md §9, LUKS1 part, after cryptsetup's LUKS_check_keyslots.
    fn check_keyslots(&self) -> Result<(), Luks1Error> {
        let sectors = self.material_sectors();
        for (i, ks) in self.keyslots.iter().enumerate() {
            let slot = slot_id(i);
            if ks.stripes != af::STRIPES as u32 {
                return Err(Luks1Error::Stripes {
                    slot,
                    stripes: ks.stripes,
                });
            }
            if u64::from(ks.key_material_offset_sectors) * SECTOR_BYTES < MIN_KEY_MATERIAL_BYTES {
                return Err(Luks1Error::SlotInHeader {
                    slot,
                    offset_sectors: ks.key_material_offset_sectors,
                });
            }
            let end_sectors = u64::from(ks.key_material_offset_sectors) + sectors;
            // A detached header (payload 0) puts data elsewhere; only slot overlap matters.
            if self.payload_offset_sectors != 0
                && end_sectors > u64::from(self.payload_offset_sectors)
            {
                return Err(Luks1Error::SlotBeyondPayload {
                    slot,
                    end_sectors,
                    payload_offset_sectors: self.payload_offset_sectors,
                });
            }
            if ks.state == SlotState::Enabled && ks.iterations == 0 {
                return Err(Luks1Error::SlotIterations { slot });
            }
        }
        let mut order: Vec<usize> = (0..NUM_KEYSLOTS).collect();
        order.sort_by_key(|&i| (self.keyslots[i].key_material_offset_sectors, i));
        for pair in order.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let a_end = u64::from(self.keyslots[a].key_material_offset_sectors) + sectors;
            if u64::from(self.keyslots[b].key_material_offset_sectors) < a_end {
                return Err(Luks1Error::SlotOverlap {
                    first: slot_id(a.min(b)),
                    second: slot_id(a.max(b)),
                });
            }
        }
        Ok(())
    }

    /// Checks that a device of `device_len` bytes holds all key material: what reading the
    /// header and unlocking a keyslot need. A header backup (`cryptsetup luksHeaderBackup`)
    /// ends there, before the payload; only the data path ([`Luks1Header::segment`]) needs the
    /// payload start too.
    pub fn validate_against_device(&self, device_len: u64) -> Result<(), Luks1Error> {
        let material = self.key_material_bytes();
        for (i, ks) in self.keyslots.iter().enumerate() {
            // Offsets are u32 sectors and material is at most a few MiB: no overflow in u64.
            let end = u64::from(ks.key_material_offset_sectors) * SECTOR_BYTES + material;
            if end > device_len {
                return Err(Luks1Error::DeviceTooSmall {
                    what: format!("keyslot {i} key material"),
                    end,
                    len: device_len,
                });
            }
        }
        Ok(())
    }

    /// Refuses anything but aes-xts-plain64 with a 32- or 64-byte key.
    fn check_supported(&self) -> Result<(), Luks1Error> {
        if self.cipher_name != SUPPORTED_CIPHER
            || self.cipher_mode != SUPPORTED_MODE
            || !matches!(self.key_bytes, 32 | 64)
        {
            return Err(Luks1Error::Unsupported(format!(
                "{}-{} with a {}-byte key",
                self.cipher_name, self.cipher_mode, self.key_bytes
            )));
        }
        Ok(())
    }

    /// The data segment on a device of `device_len` bytes: from payloadOffset·512, 512-byte
    /// sectors, IV = sector index from the payload start (iv_tweak 0), size rounded down to
    /// whole sectors.
    pub fn segment(&self, device_len: u64) -> Result<Segment, Luks1Error> {
        self.check_supported()?;
        if self.payload_offset_sectors == 0 {
            return Err(Luks1Error::Detached);
        }
        self.validate_against_device(device_len)?;
        let data_offset_bytes = u64::from(self.payload_offset_sectors) * SECTOR_BYTES;
        if data_offset_bytes > device_len {
            return Err(Luks1Error::DeviceTooSmall {
                what: "the payload offset".into(),
                end: data_offset_bytes,
                len: device_len,
            });
        }
        let data_size_bytes = (device_len - data_offset_bytes) / SECTOR_BYTES * SECTOR_BYTES;
        Ok(Segment {
            data_offset_bytes,
            data_size_bytes,
            sector_size: SECTOR_BYTES as u32,
            iv_tweak: 0,
        })
    }

    /// The data segment of a detached header (`--header`): the payload starts at
    /// `payload_offset_sectors` (0 for `cryptsetup luksFormat --header`) of the data device of
    /// `data_len` bytes and runs to its end. The key material was checked against the header
    /// file when it was read.
    pub fn detached_segment(&self, data_len: u64) -> Result<Segment, Luks1Error> {
        self.check_supported()?;
        let data_offset_bytes = u64::from(self.payload_offset_sectors) * SECTOR_BYTES;
        if data_offset_bytes >= data_len {
            return Err(Luks1Error::DeviceTooSmall {
                what: "the payload offset".into(),
                end: data_offset_bytes,
                len: data_len,
            });
        }
        let data_size_bytes = (data_len - data_offset_bytes) / SECTOR_BYTES * SECTOR_BYTES;
        Ok(Segment {
            data_offset_bytes,
            data_size_bytes,
            sector_size: SECTOR_BYTES as u32,
            iv_tweak: 0,
        })
    }

    /// Tries the enabled keyslots in id order (or only `only_slot`) with `passphrase` and
    /// returns the first slot that yields a volume key matching mkDigest. `Ok(None)`: the
    /// passphrase opens none of them.
    ///
    /// Per slot: K = PBKDF2-hashSpec(passphrase, salt, iterations, keyBytes); the material is
    /// decrypted with aes-xts-plain64 in 512-byte units, IV 0 at its start; the AF merge with
    /// hashSpec gives the candidate key, checked against the 20-byte digest in constant time.
    /// Runs on the calling thread only (no rayon pool is started before a daemon forks).
    pub fn unlock(
        &self,
        dev: &(impl ReadAt + ?Sized),
        passphrase: &[u8],
        only_slot: Option<u8>,
    ) -> Result<Option<(u8, VolumeKey)>, Luks1Error> {
        self.check_supported()?;
        let device_len = dev.len_bytes().map_err(Luks1Error::DeviceSize)?;
        self.validate_against_device(device_len)?;
        let candidates: Vec<usize> = match only_slot {
            Some(s) => {
                let ks = self
                    .keyslots
                    .get(usize::from(s))
                    .ok_or(Luks1Error::NoSuchKeyslot(s))?;
                if ks.state != SlotState::Enabled {
                    return Err(Luks1Error::KeyslotDisabled(s));
                }
                vec![usize::from(s)]
            }
            None => (0..NUM_KEYSLOTS)
                .filter(|&i| self.keyslots[i].state == SlotState::Enabled)
                .collect(),
        };
        let mut tried = 0;
        let mut skipped = Vec::new();
        for i in candidates {
            // A KDF bomb is skipped before any work (docs/format.md §9: resource caps).
            let cost = budget::estimate_pbkdf2(
                self.hash,
                self.keyslots[i].iterations,
                self.key_bytes as usize,
            )
            .saturating_add(budget::estimate_pbkdf2(
                self.hash,
                self.mk_digest_iterations,
                self.mk_digest.len(),
            ));
            match budget::check(cost) {
                Err(over) => {
                    skipped.push((slot_id(i), over));
                    continue;
                }
                Ok(est) if est > budget::PROGRESS_AFTER => log::info!(
                    target: budget::PROGRESS_TARGET,
                    "trying LUKS1 keyslot {i} (its KDF takes about {} here)",
                    budget::human(est)
                ),
                Ok(_) => {}
            }
            tried += 1;
            if let Some(vk) = self.try_slot(dev, i, passphrase)? {
                return Ok(Some((slot_id(i), vk)));
            }
        }
        if tried == 0 && !skipped.is_empty() {
            return Err(Luks1Error::OverBudget(skipped));
        }
        for (id, over) in &skipped {
            log::warn!("LUKS1 keyslot {id} skipped: {over}");
        }
        Ok(None)
    }

    fn try_slot(
        &self,
        dev: &(impl ReadAt + ?Sized),
        i: usize,
        passphrase: &[u8],
    ) -> Result<Option<VolumeKey>, Luks1Error> {
        let slot = slot_id(i);
        let ks = &self.keyslots[i];
        let key_len = self.key_bytes as usize;
        let kdf = Kdf::Pbkdf2 {
            hash: self.hash,
            iterations: ks.iterations,
        };
        let mut slot_key = SecretBytes::zeroed(key_len);
        kdf.derive(passphrase, &ks.salt, slot_key.expose_secret_mut())
            .map_err(|source| Luks1Error::Kdf { slot, source })?;

        // Material length is at most MAX_KEY_BYTES·4000 rounded up: fits usize.
        let material_len = usize::try_from(self.key_material_bytes()).unwrap_or(usize::MAX);
        let mut material = SecretBytes::zeroed(material_len);
        let offset = u64::from(ks.key_material_offset_sectors) * SECTOR_BYTES;
        dev.read_exact_at(material.expose_secret_mut(), offset)
            .map_err(|source| Luks1Error::Read { slot, source })?;
        let cipher = SectorCipher::new(slot_key.expose_secret())
            .map_err(|source| Luks1Error::Kdf { slot, source })?;
        // Sequential on purpose: keyslot unlock happens before the daemon forks.
        cipher.decrypt_sectors_sequential(
            material.expose_secret_mut(),
            SECTOR_BYTES as usize,
            0,
            1,
        );
        drop(cipher);

        let mut candidate = SecretBytes::zeroed(key_len);
        af::merge(
            material.expose_secret(),
            af::STRIPES,
            self.hash,
            candidate.expose_secret_mut(),
        );
        let ok = digest::verify(
            candidate.expose_secret(),
            self.hash,
            self.mk_digest_iterations,
            &self.mk_digest_salt,
            &self.mk_digest,
        );
        Ok(ok.then(|| VolumeKey(candidate)))
    }
}

fn over_budget(skipped: &[(u8, OverBudget)]) -> String {
    skipped
        .iter()
        .map(|(id, why)| format!("keyslot {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn slot_id(i: usize) -> u8 {
    // i < NUM_KEYSLOTS everywhere this is called.
    u8::try_from(i).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::hash::HashAlg;

    const PASS: &[u8] = b"testpass";

    /// What a test header is made of; `build` turns it into a device image.
    struct Spec {
        vk: Vec<u8>,
        hash: HashAlg,
        cipher: (&'static str, &'static str),
        /// (slot, passphrase) pairs to enable.
        slots: Vec<(usize, &'static [u8])>,
        payload_offset_sectors: u32,
        data_bytes: usize,
    }

    impl Spec {
        fn new(key_bytes: usize, hash: HashAlg) -> Self {
            Spec {
                vk: (0..key_bytes).map(|i| i as u8).collect(),
                hash,
                cipher: ("aes", "xts-plain64"),
                slots: vec![(0, PASS)],
                payload_offset_sectors: 4096,
                data_bytes: 64 * 1024,
            }
        }
    }

    fn put32(b: &mut [u8], off: usize, v: u32) {
        b[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    fn put_str(b: &mut [u8], off: usize, s: &str) {
        b[off..off + s.len()].copy_from_slice(s.as_bytes());
    }

    /// Slot i's standard offset (docs/format.md §8): 8 + i·round_up(material sectors, 8).
    fn standard_offset(key_bytes: usize, i: usize) -> u32 {
        let sectors = (key_bytes * 4000).div_ceil(512);
        (8 + i * sectors.div_ceil(8) * 8) as u32
    }

    /// A whole device image: phdr, key material for the enabled slots, then data.
    fn build(spec: &Spec) -> Vec<u8> {
        let kb = spec.vk.len();
        let payload = spec.payload_offset_sectors as usize * 512;
        let mut img = vec![0u8; payload + spec.data_bytes];
        let h = &mut img[..1024];
        h[0..6].copy_from_slice(&MAGIC);
        h[6..8].copy_from_slice(&1u16.to_be_bytes());
        put_str(h, 8, spec.cipher.0);
        put_str(h, 40, spec.cipher.1);
        put_str(h, 72, spec.hash.name());
        put32(h, 104, spec.payload_offset_sectors);
        put32(h, 108, kb as u32);
        let digest_salt = [0x5au8; 32];
        let mut d = [0u8; 20];
        digest::compute(&spec.vk, spec.hash, 1000, &digest_salt, &mut d);
        h[112..132].copy_from_slice(&d);
        h[132..164].copy_from_slice(&digest_salt);
        put32(h, 164, 1000);
        put_str(h, 168, "11111111-2222-3333-4444-555555555555");
        for i in 0..8 {
            let base = 208 + 48 * i;
            put32(h, base, KEYSLOT_DISABLED);
            put32(h, base + 40, standard_offset(kb, i));
            put32(h, base + 44, 4000);
        }
        let material_len = (kb * 4000).div_ceil(512) * 512;
        for &(i, pass) in &spec.slots {
            let base = 208 + 48 * i;
            let salt = [i as u8 + 1; 32];
            img[base..base + 4].copy_from_slice(&KEYSLOT_ENABLED.to_be_bytes());
            img[base + 4..base + 8].copy_from_slice(&1000u32.to_be_bytes());
            img[base + 8..base + 40].copy_from_slice(&salt);
            let mut k = vec![0u8; kb];
            spec.hash.pbkdf2(pass, &salt, 1000, &mut k);
            let mut material = vec![0u8; material_len];
            af::split(&spec.vk, 4000, spec.hash, &mut material).unwrap();
            if let Ok(c) = SectorCipher::new(&k) {
                c.encrypt_sectors(&mut material, 512, 0, 1);
            }
            let off = standard_offset(kb, i) as usize * 512;
            img[off..off + material_len].copy_from_slice(&material);
        }
        img
    }

    fn unlock(img: &[u8], pass: &[u8], only: Option<u8>) -> Option<(u8, Vec<u8>)> {
        let h = parse(img).unwrap();
        h.unlock(img, pass, only)
            .unwrap()
            .map(|(s, vk)| (s, vk.expose_secret().to_vec()))
    }

    #[test]
    fn unlocks_own_header_sha256_64() {
        let mut spec = Spec::new(64, HashAlg::Sha256);
        spec.slots = vec![(0, PASS), (3, b"other")];
        let img = build(&spec);
        let h = parse(&img).unwrap();
        assert_eq!(h.cipher_name, "aes");
        assert_eq!(h.cipher_mode, "xts-plain64");
        assert_eq!(h.hash, HashAlg::Sha256);
        assert_eq!(h.key_bytes, 64);
        assert_eq!(h.uuid, "11111111-2222-3333-4444-555555555555");
        assert_eq!(h.keyslots[3].state, SlotState::Enabled);
        assert_eq!(h.keyslots[1].state, SlotState::Disabled);
        assert_eq!(
            h.keyslots.map(|k| k.key_material_offset_sectors),
            [8, 512, 1016, 1520, 2024, 2528, 3032, 3536]
        );
        assert_eq!(unlock(&img, PASS, None), Some((0, spec.vk.clone())));
        assert_eq!(unlock(&img, b"other", None), Some((3, spec.vk.clone())));
        assert_eq!(unlock(&img, b"other", Some(3)), Some((3, spec.vk.clone())));
        assert_eq!(unlock(&img, PASS, Some(3)), None);
        assert_eq!(unlock(&img, b"wrong", None), None);
        assert_eq!(unlock(&img, b"testpass\n", None), None);
    }

    #[test]
    fn unlocks_own_header_sha1_32_and_sha512() {
        let spec = Spec::new(32, HashAlg::Sha1);
        let img = build(&spec);
        assert_eq!(
            parse(&img)
                .unwrap()
                .keyslots
                .map(|k| k.key_material_offset_sectors)[..3],
            [8, 264, 520]
        );
        assert_eq!(unlock(&img, PASS, None), Some((0, spec.vk.clone())));
        let spec = Spec::new(64, HashAlg::Sha512);
        assert_eq!(unlock(&build(&spec), PASS, None), Some((0, spec.vk)));
    }

    #[test]
    fn slot_selection_errors() {
        let img = build(&Spec::new(64, HashAlg::Sha256));
        let h = parse(&img).unwrap();
        assert!(matches!(
            h.unlock(img.as_slice(), PASS, Some(8)),
            Err(Luks1Error::NoSuchKeyslot(8))
        ));
        assert!(matches!(
            h.unlock(img.as_slice(), PASS, Some(1)),
            Err(Luks1Error::KeyslotDisabled(1))
        ));
    }

    /// A header backup (`cryptsetup luksHeaderBackup`) ends with the key material, before the
    /// payload: its header and keyslots are usable (dump, test-key), its data is not.
    #[test]
    fn header_backup_shorter_than_payload_unlocks_but_has_no_data() {
        let spec = Spec::new(64, HashAlg::Sha256);
        let img = build(&spec);
        let h = parse(&img).unwrap();
        let backup = &img[..4036 * 512];
        h.validate_against_device(backup.len() as u64)
            .expect("key material is all there");
        assert!(matches!(h.unlock(backup, PASS, None), Ok(Some((0, _)))));
        assert!(matches!(
            h.segment(backup.len() as u64),
            Err(Luks1Error::DeviceTooSmall { .. })
        ));
    }

    #[test]
    fn segment_and_device_size() {
        let spec = Spec::new(64, HashAlg::Sha256);
        let img = build(&spec);
        let h = parse(&img).unwrap();
        let len = img.len() as u64;
        assert_eq!(
            h.segment(len + 100).unwrap(),
            Segment {
                data_offset_bytes: 4096 * 512,
                data_size_bytes: len - 4096 * 512,
                sector_size: 512,
                iv_tweak: 0,
            }
        );
        assert_eq!(h.segment(4096 * 512).unwrap().data_size_bytes, 0);
        assert!(matches!(
            h.segment(4096 * 512 - 1),
            Err(Luks1Error::DeviceTooSmall { .. })
        ));
        // Slot 7 material ends at sector 3536 + 500.
        let e = h.validate_against_device(4036 * 512 - 1).unwrap_err();
        assert!(e.to_string().contains("keyslot 7"), "{e}");
        let short = &img[..4036 * 512 - 1];
        assert!(matches!(
            h.unlock(short, PASS, None),
            Err(Luks1Error::DeviceTooSmall { .. })
        ));
    }

    #[test]
    fn unsupported_cipher_parses_but_is_refused() {
        let mut spec = Spec::new(32, HashAlg::Sha256);
        spec.cipher = ("aes", "cbc-essiv:sha256");
        let img = build(&spec);
        let h = parse(&img).unwrap();
        assert_eq!(h.cipher_mode, "cbc-essiv:sha256");
        let e = h.segment(img.len() as u64).unwrap_err();
        assert!(matches!(e, Luks1Error::Unsupported(_)));
        assert!(e.to_string().contains("aes-cbc-essiv:sha256"), "{e}");
        assert!(matches!(
            h.unlock(img.as_slice(), PASS, None),
            Err(Luks1Error::Unsupported(_))
        ));
        let mut spec = Spec::new(64, HashAlg::Sha256);
        spec.cipher = ("serpent", "xts-plain64");
        let img = build(&spec);
        assert!(matches!(
            parse(&img).unwrap().segment(img.len() as u64),
            Err(Luks1Error::Unsupported(_))
        ));
    }

    #[test]
    fn detached_header_is_refused_for_data() {
        let mut img = build(&Spec::new(64, HashAlg::Sha256));
        put32(&mut img, 104, 0);
        let h = parse(&img).unwrap();
        assert!(matches!(
            h.segment(img.len() as u64),
            Err(Luks1Error::Detached)
        ));
    }

    /// Mutates a fresh header and expects `parse` to refuse it with a message naming `needle`.
    fn corrupt(mutate: impl Fn(&mut Vec<u8>), needle: &str) {
        let mut img = build(&Spec::new(64, HashAlg::Sha256));
        mutate(&mut img);
        let e = parse(&img).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} (expected {needle:?})");
    }

    #[test]
    fn corruption_table() {
        corrupt(|b| b[0] = b'l', "bad magic");
        corrupt(|b| b[4] = 0xbb, "bad magic");
        corrupt(|b| b[7] = 2, "version 2, expected 1");
        corrupt(|b| b[7] = 0, "version 0");
        corrupt(|b| put32(b, 108, 0), "keyBytes 0");
        corrupt(|b| put32(b, 108, 100_000), "keyBytes 100000");
        corrupt(|b| put32(b, 164, 0), "mkDigestIterations 0");
        corrupt(|b| put_str(b, 72, "md5\0\0\0"), "hashSpec \"md5\"");
        corrupt(|b| put_str(b, 72, "whirlpool"), "hashSpec \"whirlpool\"");
        corrupt(|b| b[8..40].fill(b'a'), "cipherName");
        corrupt(|b| b[41] = 0x07, "cipherMode");
        corrupt(|b| b[168..208].fill(b'1'), "uuid");
        corrupt(
            |b| put32(b, 208 + 48 * 3 + 44, 2000),
            "keyslot 3 stripes 2000, expected 4000",
        );
        corrupt(|b| put32(b, 208 + 48 * 6 + 44, 0), "keyslot 6 stripes 0");
        corrupt(
            |b| put32(b, 208 + 40, 1),
            "keyslot 0 key material at sector 1",
        );
        corrupt(|b| put32(b, 208 + 48 * 2 + 40, 520), "keyslots 1 and 2");
        corrupt(|b| put32(b, 208 + 48 * 7 + 40, 8), "keyslots 0 and 7");
        corrupt(
            |b| put32(b, 104, 4035),
            "keyslot 7 key material ends at sector 4036",
        );
        corrupt(
            |b| put32(b, 208 + 4, 0),
            "keyslot 0 is enabled with 0 iterations",
        );
        corrupt(|b| b.truncate(591), "591 bytes");
    }

    #[test]
    fn invalid_slot_state_is_never_tried() {
        let mut img = build(&Spec::new(64, HashAlg::Sha256));
        put32(&mut img, 208, 0x1234_5678);
        let h = parse(&img).unwrap();
        assert_eq!(h.keyslots[0].state, SlotState::Invalid(0x1234_5678));
        assert!(h.unlock(img.as_slice(), PASS, None).unwrap().is_none());
        let j = serde_json::to_value(crate::report::Luks1Dump::new(&h)).unwrap();
        assert_eq!(j["keyslots"][0]["state"], "invalid (0x12345678)");
    }

    #[test]
    fn dump_report_has_no_key_material() {
        let spec = Spec::new(64, HashAlg::Sha256);
        let img = build(&spec);
        let h = parse(&img).unwrap();
        let j = serde_json::to_value(crate::report::Luks1Dump::new(&h)).unwrap();
        assert_eq!(j["type"], "luks1");
        assert_eq!(j["hash"], "sha256");
        assert_eq!(j["payload_offset_sectors"], 4096);
        assert_eq!(j["key_bytes"], 64);
        assert_eq!(j["mk_digest_iterations"], 1000);
        assert_eq!(j["mk_digest_salt"], "5a".repeat(32));
        assert_eq!(j["keyslots"][0]["state"], "enabled");
        assert_eq!(j["keyslots"][0]["salt"], "01".repeat(32));
        assert_eq!(j["keyslots"][1]["state"], "disabled");
        assert!(j["keyslots"][1].get("salt").is_none());
        let text = j.to_string();
        assert!(!text.contains(&crate::verify::hex(&spec.vk)), "{text}");
    }

    #[test]
    fn data_round_trip_through_segment() {
        // Data written with the volume key at IV = sector index from the payload start.
        let spec = Spec::new(64, HashAlg::Sha256);
        let mut img = build(&spec);
        let h = parse(&img).unwrap();
        let seg = h.segment(img.len() as u64).unwrap();
        let off = seg.data_offset_bytes as usize;
        let plain: Vec<u8> = (0..seg.data_size_bytes as usize)
            .map(|i| (i / 512) as u8)
            .collect();
        let c = SectorCipher::new(&spec.vk).unwrap();
        img[off..].copy_from_slice(&plain);
        c.encrypt_sectors(&mut img[off..], 512, seg.iv_tweak, 1);
        let (_, vk) = h.unlock(img.as_slice(), PASS, None).unwrap().unwrap();
        let mut back = img[off..].to_vec();
        SectorCipher::new(vk.expose_secret())
            .unwrap()
            .decrypt_sectors(&mut back, 512, 0, 1);
        assert_eq!(back, plain);
    }
}
