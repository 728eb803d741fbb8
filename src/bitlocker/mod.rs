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
        Ok(Info {
            header,
            metadata,
            copies,
            used_copy,
            size,
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
}

impl Credential {
    /// What it is, for messages: `password`, `recovery password`, `startup key`, `clear key`.
    pub fn name(&self) -> &'static str {
        match self {
            Credential::Password(_) => "password",
            Credential::RecoveryPassword(_) => "recovery password",
            Credential::StartupKey(_) => "startup key",
            Credential::ClearKey => "clear key",
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
}
