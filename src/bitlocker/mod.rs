//! BitLocker volumes, read-only: recognise, parse the FVE metadata (three copies, a valid one
//! chosen, damaged ones reported), open a protector with a credential, and serve the
//! plaintext as Windows sees it (docs/format.md §12).
//!
//! The interface other modules use:
//!
//! ```text
//! let (volume, by) = Bitlocker::open(reader, &credential)?;   // reader: Arc<dyn ReadAt+Send+Sync>
//! volume.size(); volume.read_at(offset, &mut buf)?;           // the plaintext, read-only
//! by.guid                                                     // the protector that opened
//! ```
//!
//! `reader` may be a whole file or a [`crate::disk::Window`] of a partition. Refused with
//! exit 4 (one line naming why): Vista (version 1) metadata, "used disk space only"
//! (encrypt-on-write) volumes, volumes whose conversion is not finished, unknown methods.
pub mod cipher;
mod digest;
pub mod format;
pub mod keys;

use crate::error::{Error, Result};
use crate::luks2::ReadAt;
use crate::secret::{Passphrase, SecretBytes};
use cipher::{Cipher, Method};
use format::{FormatError, Metadata, Protection, VolumeHeader, guid_string};
use std::io;
use std::sync::Arc;

/// What a BitLocker volume is read through.
pub type Reader = Arc<dyn ReadAt + Send + Sync>;

/// Whether the first sector `sector0` is a BitLocker volume header (`-FVE-FS-`, or To Go's
/// FAT header with the BitLocker identifier); never true for plain NTFS or FAT.
pub fn is_bitlocker(sector0: &[u8]) -> bool {
    format::detect(sector0).is_some()
}

/// Reads the first sector of `dev` and says whether it is BitLocker ([`is_bitlocker`]).
pub fn probe(dev: &(impl ReadAt + ?Sized)) -> io::Result<bool> {
    if dev.len_bytes()? < 512 {
        return Ok(false);
    }
    let mut s = [0u8; 512];
    dev.read_exact_at(&mut s, 0)?;
    Ok(is_bitlocker(&s))
}

/// One FVE metadata copy: where it is and, when it cannot be used, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStatus {
    /// Byte offset of the block.
    pub offset: u64,
    /// Why this copy is not valid; None when it is.
    pub error: Option<String>,
}

/// A parsed BitLocker volume: header, the metadata of the chosen copy, and all three copies'
/// state. No key material beyond what is on the disk.
#[derive(Debug, Clone)]
pub struct Info {
    /// The volume header fields.
    pub header: VolumeHeader,
    /// The metadata of the copy in use.
    pub metadata: Metadata,
    /// The three copies, in header order.
    pub copies: Vec<CopyStatus>,
    /// Index of the copy in use.
    pub used_copy: usize,
    /// Bytes of the volume (the reader's length).
    pub size: u64,
    /// The copy in use's authentication: its SHA-256 wrapped under the VMK, and the SHA-256
    /// of its bytes as read (checked once a VMK is open).
    pub authentication: Option<(format::CcmBlob, [u8; 32])>,
}

/// Exit 2: no protector opened (the kind a wrong LUKS passphrase has; the message as it is).
fn no_protector(message: String) -> Error {
    Error::new(crate::error::ErrorKind::NoKey, message)
}

fn device_error(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("{name}: {e}"))
}

impl Info {
    /// Reads and checks the header and the metadata copies of `dev` (named `name` in
    /// messages). Exit 4 when it is not BitLocker or no copy is valid (each copy's reason in
    /// the line).
    pub fn read(dev: &(impl ReadAt + ?Sized), name: &str) -> Result<Info> {
        let size = dev
            .len_bytes()
            .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
        if size < 512 {
            return Err(device_error(name, FormatError::NotBitlocker));
        }
        let mut s0 = [0u8; 512];
        dev.read_exact_at(&mut s0, 0)
            .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
        let header = format::parse_volume_header(&s0).map_err(|e| device_error(name, e))?;
        let mut copies = Vec::new();
        let mut chosen = None;
        for (i, &offset) in header.metadata_offsets.iter().enumerate() {
            match format::read_copy(dev, i, offset, size) {
                Ok(block) => {
                    copies.push(CopyStatus {
                        offset,
                        error: None,
                    });
                    if chosen.is_none() {
                        chosen = Some((i, block));
                    }
                }
                Err(why) => copies.push(CopyStatus {
                    offset,
                    error: Some(why),
                }),
            }
        }
        let Some((used_copy, block)) = chosen else {
            let why: Vec<String> = copies
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    format!(
                        "copy {} at {}: {}",
                        i + 1,
                        c.offset,
                        c.error.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            return Err(Error::Device(format!(
                "all three BitLocker metadata copies of {name} are damaged ({})",
                why.join("; ")
            )));
        };
        let metadata = format::parse_metadata(&block).map_err(|e| device_error(name, e))?;
        let authentication =
            format::read_authentication(dev, header.metadata_offsets[used_copy], block.len()).map(
                |blob| {
                    use sha2::Digest;
                    (blob, sha2::Sha256::digest(&block).into())
                },
            );
        Ok(Info {
            header,
            metadata,
            copies,
            used_copy,
            size,
            authentication,
        })
    }

    /// One line per damaged copy, as the LUKS code warns about a damaged header copy.
    pub fn warnings(&self, name: &str) -> Vec<String> {
        self.copies
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.error.as_ref().map(|e| {
                    format!(
                        "BitLocker metadata copy {} of {name} (at byte {}) is damaged ({e}); using copy {}",
                        i + 1,
                        c.offset,
                        self.used_copy + 1
                    )
                })
            })
            .collect()
    }

    /// The encryption method, if supported.
    pub fn method(&self) -> Option<Method> {
        Method::from_u16(self.metadata.method)
    }

    /// The volume GUID as Windows prints it.
    pub fn guid(&self) -> String {
        guid_string(&self.metadata.guid)
    }

    /// Why this volume cannot be opened here (exit 4), or None.
    pub fn refusal(&self) -> Option<String> {
        if self.header.identifier == format::GUID_EOW && self.has_clear_key() {
            // What Windows leaves while it is still encrypting (cryptsetup's "partially
            // encrypted" image): the encrypt-on-write identifier and a clear key.
            return Some(
                "it is partially encrypted (conversion in progress: encrypt-on-write identifier and a clear key still present); let Windows finish encrypting it first".into(),
            );
        }
        if self.header.identifier == format::GUID_EOW {
            return Some(
                "it is a \"used disk space only\" (encrypt-on-write) volume, whose block map vaultdisk does not read; Windows can fully encrypt it (manage-bde -on), or decrypt it".into(),
            );
        }
        let (cur, next) = self.metadata.state;
        if cur != format::STATE_NORMAL || next != format::STATE_NORMAL {
            return Some(format!(
                "it is partially encrypted or decrypted (conversion state {cur} -> {next}); let Windows finish the conversion first"
            ));
        }
        if self.header.identifier != format::GUID_NORMAL {
            return Some(format!(
                "its BitLocker identifier {} is unknown",
                guid_string(&self.header.identifier)
            ));
        }
        if self.method().is_none() {
            return Some(format!(
                "its encryption method 0x{:04x} is unknown",
                self.metadata.method
            ));
        }
        None
    }

    /// Protectors vaultdisk cannot use (TPM, smart card, unknown), each with a line saying
    /// so and which credential of this volume would open it instead.
    pub fn skipped(&self) -> Vec<String> {
        let can: Vec<&str> = self
            .metadata
            .vmks
            .iter()
            .filter(|v| usable(v.protection))
            .map(|v| v.protection.name())
            .collect();
        let instead = if can.is_empty() {
            "this volume has no protector vaultdisk can use".to_string()
        } else {
            format!("open it with its {}", can.join(" or "))
        };
        self.metadata
            .vmks
            .iter()
            .filter(|v| !usable(v.protection))
            .map(|v| {
                format!(
                    "protector {} ({}) is skipped: vaultdisk cannot use a {}; {instead}",
                    guid_string(&v.guid),
                    v.protection.name(),
                    match v.protection {
                        Protection::SmartCard => "smart card",
                        Protection::Tpm | Protection::TpmPin => "TPM",
                        _ => "protector of this type",
                    }
                )
            })
            .collect()
    }

    /// Whether a clear key protector is present (protection suspended).
    pub fn has_clear_key(&self) -> bool {
        self.metadata
            .vmks
            .iter()
            .any(|v| v.protection == Protection::ClearKey)
    }
}

fn usable(p: Protection) -> bool {
    matches!(
        p,
        Protection::Password
            | Protection::RecoveryPassword
            | Protection::StartupKey
            | Protection::ClearKey
    )
}

/// What the user gives to open a BitLocker volume.
pub enum Credential {
    /// A password, as UTF-8 bytes (a key file's bytes, the terminal's line).
    Password(Passphrase),
    /// A 48-digit recovery password, as typed.
    RecoveryPassword(Passphrase),
    /// A startup key: the bytes of a `.BEK` file, or base64 text of one.
    StartupKey(SecretBytes),
    /// No credential: the clear key protector (protection suspended).
    ClearKey,
    /// The volume key itself in cryptsetup's layout (`bitlkDump --dump-volume-key
    /// --volume-key-file`), from `--volume-key-file`: no protector is opened.
    VolumeKey(SecretBytes),
}

impl Credential {
    /// A key of unknown kind (a key chain's candidate, a verify key file): a startup key when
    /// the bytes are a `.BEK` file or base64 of one, a recovery password when they have its
    /// form, else a password.
    pub fn from_key_bytes(bytes: &[u8]) -> Credential {
        if keys::parse_bek(bytes).is_some() {
            Credential::StartupKey(SecretBytes::from_slice(bytes))
        } else if keys::recovery_password_key(bytes).is_ok() {
            Credential::RecoveryPassword(Passphrase::from_slice(bytes))
        } else {
            Credential::Password(Passphrase::from_slice(bytes))
        }
    }

    /// What it is, for messages: `password`, `recovery password`, `startup key`, `clear key`.
    pub fn name(&self) -> &'static str {
        match self {
            Credential::Password(_) => "password",
            Credential::RecoveryPassword(_) => "recovery password",
            Credential::StartupKey(_) => "startup key",
            Credential::ClearKey => "clear key",
            Credential::VolumeKey(_) => "volume key",
        }
    }
}

/// Which protector opened the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedBy {
    /// The protector's (VMK's) GUID.
    pub guid: String,
    /// Its type.
    pub protection: Protection,
}

impl std::fmt::Display for OpenedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.protection == Protection::VolumeKey {
            return write!(f, "the volume key file");
        }
        write!(f, "{} protector {}", self.protection.name(), self.guid)
    }
}

/// The namespace of the BitLocker entry points.
pub struct Bitlocker;

impl Bitlocker {
    /// Opens the BitLocker volume in `reader` with `credential`: metadata read and checked,
    /// the protector the credential fits opened, the FVEK unwrapped. Exit 4 for a volume
    /// that is not BitLocker, damaged or refused ([`Info::refusal`]); exit 2 when no
    /// protector opens.
    pub fn open(reader: Reader, credential: &Credential) -> Result<(BitlockerVolume, OpenedBy)> {
        Self::open_named(reader, credential, "the BitLocker volume")
    }

    /// [`Bitlocker::open`] with `name` (the file) in messages; damaged copies and skipped
    /// protectors are logged as warnings.
    pub fn open_named(
        reader: Reader,
        credential: &Credential,
        name: &str,
    ) -> Result<(BitlockerVolume, OpenedBy)> {
        let info = Info::read(&*reader, name)?;
        for w in info.warnings(name) {
            log::warn!("{w}");
        }
        let (fvek, by) = Self::unlock(&info, credential, name)?;
        let volume = BitlockerVolume::new(reader, &info, &fvek, name)?;
        Ok((volume, by))
    }

    /// Opens a protector of `info` with `credential` and unwraps the FVEK: its key bytes and
    /// who opened it. Refused volumes are refused first (exit 4).
    pub fn unlock(
        info: &Info,
        credential: &Credential,
        name: &str,
    ) -> Result<(SecretBytes, OpenedBy)> {
        if let Some(why) = info.refusal() {
            return Err(Error::Device(format!(
                "cannot open BitLocker volume {name}: {why}"
            )));
        }
        if let Credential::VolumeKey(vk) = credential {
            return Self::fvek_of_volume_key(info, vk, name);
        }
        let vmks = &info.metadata.vmks;
        let mut tried = Vec::new();
        let mut opened = None;
        match credential {
            Credential::Password(p) => {
                let initial = keys::password_initial(p.expose_secret())
                    .map_err(|e| Error::Usage(format!("{e}: BitLocker passwords are text")))?;
                for v in vmks.iter().filter(|v| v.protection == Protection::Password) {
                    tried.push(guid_string(&v.guid));
                    if let (Some(salt), Some(w)) = (&v.salt, &v.wrapped)
                        && let Some(vmk) =
                            keys::unwrap(keys::stretch(&initial, salt).expose_secret(), w)
                    {
                        opened = Some((v, vmk));
                        break;
                    }
                }
            }
            Credential::RecoveryPassword(text) => {
                let key = keys::recovery_password_key(text.expose_secret())
                    .map_err(|e| Error::Usage(format!("{e} (BitLocker recovery password)")))?;
                let initial = keys::recovery_initial(&key);
                for v in vmks
                    .iter()
                    .filter(|v| v.protection == Protection::RecoveryPassword)
                {
                    tried.push(guid_string(&v.guid));
                    if let (Some(salt), Some(w)) = (&v.salt, &v.wrapped)
                        && let Some(vmk) =
                            keys::unwrap(keys::stretch(&initial, salt).expose_secret(), w)
                    {
                        opened = Some((v, vmk));
                        break;
                    }
                }
            }
            Credential::StartupKey(bytes) => {
                let sk = keys::parse_bek(bytes.expose_secret()).ok_or_else(|| {
                    Error::Usage(
                        "the startup key is not a .BEK file (nor base64 text of one)".into(),
                    )
                })?;
                for v in vmks
                    .iter()
                    .filter(|v| v.protection == Protection::StartupKey && v.guid == sk.id)
                {
                    tried.push(guid_string(&v.guid));
                    if let Some(w) = &v.wrapped
                        && let Some(vmk) = keys::unwrap(sk.key.expose_secret(), w)
                    {
                        opened = Some((v, vmk));
                        break;
                    }
                }
                if tried.is_empty() {
                    return Err(no_protector(format!(
                        "the startup key {} matches no startup key protector of {name}",
                        guid_string(&sk.id)
                    )));
                }
            }
            Credential::VolumeKey(_) => {}
            Credential::ClearKey => {
                for v in vmks.iter().filter(|v| v.protection == Protection::ClearKey) {
                    tried.push(guid_string(&v.guid));
                    if let (Some(k), Some(w)) = (&v.clear_key, &v.wrapped)
                        && let Some(vmk) = keys::unwrap(k, w)
                    {
                        opened = Some((v, vmk));
                        break;
                    }
                }
            }
        }
        let Some((v, vmk)) = opened else {
            let mut what = if tried.is_empty() {
                format!("{name} has no {} protector", credential.name())
            } else {
                format!(
                    "no protector of {name} opened with this {} (tried {})",
                    credential.name(),
                    tried.join(", ")
                )
            };
            for s in info.skipped() {
                what.push_str("; ");
                what.push_str(&s);
            }
            return Err(no_protector(what));
        };
        // cryptsetup >= 2.8.2 checks this too: the copy's SHA-256, wrapped under the VMK.
        if let Some((blob, hash)) = &info.authentication {
            match keys::unwrap(vmk.expose_secret(), blob) {
                Some(h) if h.expose_secret() == hash => {}
                _ => {
                    return Err(Error::Device(format!(
                        "{name}: BitLocker metadata copy {} fails its authentication under the VMK (damaged or altered)",
                        info.used_copy + 1
                    )));
                }
            }
        } else {
            log::debug!("{name}: the metadata copy in use has no authentication to check");
        }
        let fvek_blob = info.metadata.fvek.as_ref().ok_or_else(|| {
            Error::Device(format!("{name}: the BitLocker metadata has no FVEK entry"))
        })?;
        let fvek = keys::unwrap(vmk.expose_secret(), fvek_blob).ok_or_else(|| {
            Error::Device(format!(
                "{name}: the FVEK does not unwrap with the VMK of protector {} (damaged metadata)",
                guid_string(&v.guid)
            ))
        })?;
        Ok((
            fvek,
            OpenedBy {
                guid: guid_string(&v.guid),
                protection: v.protection,
            },
        ))
    }
}

impl Bitlocker {
    /// [`Bitlocker::unlock`], and for a volume key (which no protector vouches for) a check
    /// that it decrypts the volume's boot sector: a wrong key is exit 2, as a wrong LUKS
    /// volume key is.
    pub fn unlock_checked(
        reader: &Reader,
        info: &Info,
        credential: &Credential,
        name: &str,
    ) -> Result<(SecretBytes, OpenedBy)> {
        let (fvek, by) = Self::unlock(info, credential, name)?;
        if let Credential::VolumeKey(_) = credential {
            let vol = BitlockerVolume::new(reader.clone(), info, &fvek, name)?;
            let mut boot = [0u8; 512];
            let n = vol
                .read_at(0, &mut boot)
                .map_err(|e| device_error(name, format!("cannot read the boot sector: {e}")))?;
            if n < 512 || boot[510..] != [0x55, 0xAA] || !matches!(boot[0], 0xEB | 0xE9) {
                return Err(no_protector(format!(
                    "the key in the volume key file is not the volume key of {name} (the boot sector does not decrypt)"
                )));
            }
        }
        Ok((fvek, by))
    }

    /// The volume key in cryptsetup's layout, as `bitlkDump --dump-volume-key` shows it,
    /// from the FVEK [`Bitlocker::unlock`] gave.
    pub fn volume_key(info: &Info, fvek: &SecretBytes, name: &str) -> Result<SecretBytes> {
        let method = info
            .method()
            .ok_or_else(|| device_error(name, "unknown encryption method"))?;
        method
            .volume_key_of_fvek(fvek.expose_secret())
            .ok_or_else(|| device_error(name, "the FVEK entry is too short for its method"))
    }

    fn fvek_of_volume_key(
        info: &Info,
        vk: &SecretBytes,
        name: &str,
    ) -> Result<(SecretBytes, OpenedBy)> {
        let method = info
            .method()
            .ok_or_else(|| device_error(name, "unknown encryption method"))?;
        let fvek = method
            .fvek_of_volume_key(vk.expose_secret())
            .ok_or_else(|| {
                no_protector(format!(
                    "the volume key file holds {} bytes; the volume key of {name} ({}) is {} bytes",
                    vk.len(),
                    method.name(),
                    method.volume_key_len()
                ))
            })?;
        Ok((
            fvek,
            OpenedBy {
                guid: "volume-key".into(),
                protection: Protection::VolumeKey,
            },
        ))
    }
}

/// One run of the plaintext: zeros, or ciphertext from `src` (whose offsets also give the IVs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    start: u64,
    end: u64,
    src: Option<u64>,
}

/// The virtual-sector map of a volume of `size` bytes (cryptsetup builds the same table of
/// dm-zero and dm-crypt targets): the metadata areas and the relocated boot sectors' copy read
/// as zeros, plaintext `[0, header_len)` is decrypted from `header_at`, everything else in
/// place. All boundaries are multiples of `sector`.
fn build_map(
    size: u64,
    metadata: &[u64; 3],
    header_at: u64,
    header_len: u64,
    sector: u64,
) -> std::result::Result<Vec<Extent>, String> {
    let mut zero: Vec<(u64, u64)> = metadata
        .iter()
        .map(|&m| (m, m.saturating_add(format::METADATA_AREA_BYTES)))
        .collect();
    if header_len > 0 {
        zero.push((header_at, header_at.saturating_add(header_len)));
    }
    for &(a, b) in &zero {
        if b > size || !a.is_multiple_of(sector) || !b.is_multiple_of(sector) {
            return Err(format!(
                "a metadata area [{a}, {b}) lies outside the volume or off its {sector}-byte sectors"
            ));
        }
    }
    if header_len > size / 2 || !header_len.is_multiple_of(sector) {
        return Err(format!(
            "volume header copy of {header_len} bytes is not usable"
        ));
    }
    let mut cuts = vec![0, size, header_len];
    for &(a, b) in &zero {
        cuts.push(a);
        cuts.push(b);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut map: Vec<Extent> = Vec::new();
    for w in cuts.windows(2) {
        let (start, end) = (w[0], w[1]);
        if start >= size {
            break;
        }
        let src = if start < header_len {
            Some(header_at + start)
        } else if zero.iter().any(|&(a, b)| start >= a && start < b) {
            None
        } else {
            Some(start)
        };
        match map.last_mut() {
            Some(last)
                if last.end == start
                    && match (last.src, src) {
                        (None, None) => true,
                        (Some(ls), Some(s)) => ls + (last.end - last.start) == s,
                        _ => false,
                    } =>
            {
                last.end = end;
            }
            _ => map.push(Extent { start, end, src }),
        }
    }
    Ok(map)
}

/// A BitLocker volume's plaintext, read-only.
pub struct BitlockerVolume {
    reader: Reader,
    cipher: Cipher,
    sector: u64,
    size: u64,
    map: Vec<Extent>,
    method: Method,
}

impl BitlockerVolume {
    /// The plaintext of the volume `info` describes in `reader`, with the FVEK key bytes
    /// `fvek` ([`Bitlocker::unlock`]).
    pub fn new(reader: Reader, info: &Info, fvek: &SecretBytes, name: &str) -> Result<Self> {
        let method = info
            .method()
            .ok_or_else(|| device_error(name, "unknown encryption method"))?;
        let sector = u64::from(info.header.sector_size);
        let cipher = Cipher::new(method, fvek, sector as usize).ok_or_else(|| {
            device_error(
                name,
                format!(
                    "the FVEK ({} bytes) does not fit {}",
                    fvek.len(),
                    method.name()
                ),
            )
        })?;
        let size = info.size - info.size % sector;
        let md = &info.metadata;
        let (header_at, header_len) = md.volume_header.unwrap_or((
            md.volume_header_offset,
            u64::from(md.volume_header_sectors) * sector,
        ));
        let map = build_map(size, &md.metadata_offsets, header_at, header_len, sector)
            .map_err(|e| device_error(name, e))?;
        Ok(BitlockerVolume {
            reader,
            cipher,
            sector,
            size,
            map,
            method,
        })
    }

    /// Plaintext size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The encryption sector size (512 or 4096).
    pub fn sector_size(&self) -> u64 {
        self.sector
    }

    /// The encryption method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// Fills `buf` from plaintext `offset` (short at the end of the volume, 0 past it).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size - offset) as usize;
        let buf = &mut buf[..len];
        let end = offset + len as u64;
        let first = self.map.partition_point(|e| e.end <= offset);
        for e in &self.map[first..] {
            if e.start >= end {
                break;
            }
            let a = e.start.max(offset);
            let b = e.end.min(end);
            let out = &mut buf[(a - offset) as usize..(b - offset) as usize];
            match e.src {
                None => out.fill(0),
                Some(src) => self.read_crypt(out, src + (a - e.start))?,
            }
        }
        Ok(len)
    }

    /// Decrypts `out.len()` bytes whose ciphertext begins at byte `src` (within one extent).
    fn read_crypt(&self, out: &mut [u8], src: u64) -> io::Result<()> {
        let ss = self.sector;
        let head = src % ss;
        let end = src + out.len() as u64;
        if head == 0 && end.is_multiple_of(ss) {
            self.reader.read_exact_at(out, src)?;
            self.cipher.decrypt(out, src);
            return Ok(());
        }
        let al_start = src - head;
        let al_end = end.div_ceil(ss) * ss;
        let mut tmp = vec![0u8; (al_end - al_start) as usize];
        self.reader.read_exact_at(&mut tmp, al_start)?;
        self.cipher.decrypt(&mut tmp, al_start);
        out.copy_from_slice(&tmp[head as usize..head as usize + out.len()]);
        Ok(())
    }
}

impl crate::volume::Plaintext for BitlockerVolume {
    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&self, plain_offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        BitlockerVolume::read_at(self, plain_offset, buf)
    }
    fn write_at(&self, _: u64, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64, _: bool) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::EROFS))
    }
}

/// The daemon's side of `open` for BitLocker: the volume in `segment`'s window of `backing`
/// (`data_offset_bytes`, `data_size_bytes`), its metadata read again and `key` the FVEK the
/// parent unwrapped. Read-only only (exit 4 otherwise).
pub fn serve(
    backing: std::fs::File,
    segment: crate::geometry::Segment,
    key: &crate::secret::VolumeKey,
    read_only: bool,
    path: &std::path::Path,
) -> Result<BitlockerVolume> {
    let name = path.display().to_string();
    if !read_only {
        return Err(Error::Device(format!(
            "{name}: BitLocker is read-only here"
        )));
    }
    let window = crate::disk::Window::new(
        Arc::new(backing),
        segment.data_offset_bytes,
        segment.data_size_bytes,
    )
    .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
    let reader: Reader = Arc::new(window);
    let info = Info::read(&*reader, &name)?;
    let fvek = SecretBytes::from_slice(key.expose_secret());
    BitlockerVolume::new(reader, &info, &fvek, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_zeros_metadata_and_relocates_the_header() {
        let m = build_map(1 << 20, &[131072, 327680, 655360], 196608, 8192, 512).unwrap();
        assert_eq!(
            m[0],
            Extent {
                start: 0,
                end: 8192,
                src: Some(196608)
            }
        );
        assert_eq!(
            m[1],
            Extent {
                start: 8192,
                end: 131072,
                src: Some(8192)
            }
        );
        // Metadata area 1 and the header copy touch: one zero run.
        assert_eq!(
            m[2],
            Extent {
                start: 131072,
                end: 204800,
                src: None
            }
        );
        assert_eq!(m[3].src, Some(204800));
        assert_eq!(m.last().unwrap().end, 1 << 20);
        // Out of the volume, or off the sector grid.
        assert!(build_map(1 << 20, &[1 << 20, 0, 0], 0, 0, 512).is_err());
        assert!(build_map(1 << 20, &[4096, 65536 * 4, 65536 * 6], 0, 8192, 4096).is_ok());
        assert!(build_map(1 << 20, &[100, 65536 * 4, 65536 * 6], 0, 0, 512).is_err());
    }

    fn blob(hex: &str) -> format::CcmBlob {
        let b = crate::hex::decode(hex).unwrap();
        format::CcmBlob {
            nonce: b[..12].try_into().unwrap(),
            tag: b[12..28].try_into().unwrap(),
            data: b[28..].to_vec(),
        }
    }

    /// Windows-made values (bitlk-aes-cbc-elephant-128.img of tests/data/bitlk): the password
    /// "anaconda" through the stretch KDF unwraps the password VMK (AES-CCM tag checks), the
    /// VMK unwraps the 64-byte Elephant FVEK, and CBC + Elephant decryption of the relocated
    /// boot sector (ciphertext at byte 44224512) gives an NTFS boot sector.
    #[test]
    fn kdf_ccm_and_elephant_against_a_windows_volume() {
        let salt: [u8; 16] = crate::hex::decode("273cdf169a58c8b0d0960dd12b56e743")
            .unwrap()
            .try_into()
            .unwrap();
        let initial = keys::password_initial(b"anaconda").unwrap();
        let key = keys::stretch(&initial, &salt);
        let vmk = keys::unwrap(
            key.expose_secret(),
            &blob("107fa538dd51d5010900000071ddb7834a1bbdec2f57205903c5235c964726bb98b9f809cc11a087fa986e7e954902135355f5e2000c155f56fa91054a58cdfd163e868dc528e4c2"),
        )
        .expect("the password VMK unwraps");
        assert_eq!(vmk.len(), 32);
        let wrong = keys::stretch(&keys::password_initial(b"anaconda2").unwrap(), &salt);
        assert!(keys::unwrap(wrong.expose_secret(), &blob("107fa538dd51d5010900000071ddb7834a1bbdec2f57205903c5235c964726bb98b9f809cc11a087fa986e7e954902135355f5e2000c155f56fa91054a58cdfd163e868dc528e4c2")).is_none());
        let fvek = keys::unwrap(
            vmk.expose_secret(),
            &blob("70182b09d951d50106000000a60f6d2bd79b5433c4615cc13e0c0e0e3c55bc8ac05fe7b49a7b3cfb1d7e8bbc1d09544167e6cfb86d6f035b0952ce2210a6551be0b76fd2522e2c0c8954641ba63fcd97ca6f83967e09675ce2289e9f61c4795c05fd96024552369d"),
        )
        .expect("the FVEK unwraps");
        assert_eq!(fvek.len(), 64);
        let mut sector = crate::hex::decode("2175c8446934efd6c9602aeb990295e92143dfe7918377df463951b7e0d32116a2999ee8962ce8e07006e94d6c68fd4ecb7276654ca2768f6126db515c4dd868d49c07174237b9ff703d97580467ec7624f75fa4be17838e8ab51aedc49c9a6a80b188cfd52aa1616b0c147cab782503d7f437e276827d385c948601f8045dc362be605e9e6b2e4657842f43e75d0ea3efbe4b1b43936cc8256d4d7da06bc628ef1055309ebe575345464120c0d93ca0c7c09f1dc839a54a92ae074be5688149fd4b77b622b7b2042d6f07dd4d7a88e939feac607d871063165ad8e1e592b26d21e819f758d5a7191676bbb4e34be7ae57d04ef5008bc102f62080caca7e33de485bf6c03a949758ae4d763bd228042b5ef2983d48ab57ab8108026385144d7905027460b38b4ffdc55657975fd4a9f72205952e3690a500a589feb7f5e97fb2760b6822842b77161f434700f2dbae29e45f873cfc7657495c0bbc84bb687fa2c2467f2df8da9b3eacff1afb4a4bc3bbe2bc7115bd10f9772825b6643f25d47a447391b3c43adeb868fca7670a9e59194b1ca8be45bee55c5cb7b6a4cb68fe02386795eb8623f9f9c78e6ee964ed2d7dc14c3be6cd3fe6d92a5a26800751ac8c3019df834b5c2bcfd323b5149c8be75c01415482e84fd2216cd9781c18a1671fbbb1693bdca4391c58f8cdd67fe3e54cd414f7b67633cf927b31b4acb33dafbe").unwrap();
        let c = Cipher::new(Method::CbcElephant(cipher::KeyBits::B128), &fvek, 512).unwrap();
        c.decrypt(&mut sector, 44224512);
        assert_eq!(&sector[3..11], b"NTFS    ");
        assert_eq!(&sector[510..], &[0x55, 0xaa]);
    }
}
