//! The BitLocker on-disk format, bytes in, checked values out: the volume header (boot
//! sector), the three FVE metadata blocks and their entries (docs/format.md §12, after libbde's
//! "BitLocker Drive Encryption (BDE) format" and cryptsetup's lib/bitlk). Opens no file, runs
//! no KDF. Every size a hostile header names is checked against the block it lives in.
use crate::luks2::ReadAt;

/// Bytes of one FVE metadata area (what the zeroed virtual sectors cover).
pub const METADATA_AREA_BYTES: u64 = 64 * 1024;
/// The BitLocker identifier in the volume header of a normal (fully encrypted) volume.
pub const GUID_NORMAL: [u8; 16] = [
    0x3b, 0xd6, 0x67, 0x49, 0x29, 0x2e, 0xd8, 0x4a, 0x83, 0x99, 0xf6, 0xa3, 0x39, 0xe3, 0xd0, 0x01,
];
/// The identifier of "used disk space only" (encrypt-on-write) volumes.
pub const GUID_EOW: [u8; 16] = [
    0x3b, 0x4d, 0xa8, 0x92, 0x80, 0xdd, 0x0e, 0x4d, 0x9e, 0x4e, 0xb1, 0xe3, 0x28, 0x4e, 0xae, 0xd8,
];
/// Block header (64) + metadata header (48): where the entries start in a block.
const HEADERS_BYTES: usize = 112;
/// An entry's own header: size, type, value type, version.
const ENTRY_HEADER_BYTES: usize = 8;
/// The metadata state of a volume that is neither converting nor paused (block header +12/+14).
pub const STATE_NORMAL: u16 = 4;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}
fn arr<const N: usize>(b: &[u8], o: usize) -> Option<[u8; N]> {
    b.get(o..o + N)?.try_into().ok()
}

/// A GUID as Windows prints it (the first three fields little-endian), lower case.
pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// Which BitLocker volume header a boot sector holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// `-FVE-FS-` with the Windows 7+ boot code (EB 58 90): metadata offsets at byte 176.
    Windows7,
    /// `-FVE-FS-` with the Vista boot code (EB 52 90): version 1 metadata.
    Vista,
    /// BitLocker To Go: a FAT32 boot sector (`MSWIN4.1`) whose BitLocker identifier at
    /// byte 424 is one of the known GUIDs; metadata offsets at byte 440.
    ToGo,
}

/// What the boot sector `sector0` (at least 512 bytes) is, if BitLocker. A plain NTFS
/// (`NTFS    `) or FAT boot sector is never taken for one: `MSWIN4.1` alone is the OEM name
/// of ordinary FAT volumes too, so To Go also needs its identifier at byte 424.
pub fn detect(sector0: &[u8]) -> Option<Flavour> {
    let sig = sector0.get(3..11)?;
    if sig == b"-FVE-FS-" {
        return Some(if sector0.get(0..3) == Some(&[0xeb, 0x52, 0x90]) {
            Flavour::Vista
        } else {
            Flavour::Windows7
        });
    }
    if sig == b"MSWIN4.1" {
        let id: [u8; 16] = arr(sector0, 424)?;
        if id == GUID_NORMAL || id == GUID_EOW {
            return Some(Flavour::ToGo);
        }
    }
    None
}

/// What can be wrong with a BitLocker volume's metadata; one line each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a BitLocker volume header at all.
    #[error("no BitLocker volume header")]
    NotBitlocker,
    /// BitLocker from Windows Vista (metadata version 1).
    #[error("BitLocker from Windows Vista (metadata version 1) is not supported")]
    Vista,
    /// Bytes per sector other than 512 or 4096.
    #[error("unsupported sector size {0} (BitLocker here: 512 or 4096)")]
    SectorSize(u16),
    /// A metadata copy that cannot be used, and why.
    #[error("{0}")]
    Copy(String),
    /// Metadata that is present and checksummed but not understood or out of bounds.
    #[error("{0}")]
    Metadata(String),
}

/// The BitLocker fields of the volume header (boot sector).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeHeader {
    /// Which header layout.
    pub flavour: Flavour,
    /// Bytes per sector (512 or 4096): the unit of encryption.
    pub sector_size: u32,
    /// The BitLocker identifier (normal or encrypt-on-write).
    pub identifier: [u8; 16],
    /// Byte offsets of the three FVE metadata blocks, from the start of the volume.
    pub metadata_offsets: [u64; 3],
}

/// Parses the volume header from the boot sector.
pub fn parse_volume_header(sector0: &[u8]) -> Result<VolumeHeader, FormatError> {
    let flavour = detect(sector0).ok_or(FormatError::NotBitlocker)?;
    if flavour == Flavour::Vista {
        return Err(FormatError::Vista);
    }
    let bps = u16_at(sector0, 11).ok_or(FormatError::NotBitlocker)?;
    let sector_size = match bps {
        0 | 512 => 512,
        4096 => 4096,
        n => return Err(FormatError::SectorSize(n)),
    };
    let at = if flavour == Flavour::ToGo { 424 } else { 160 };
    let identifier = arr(sector0, at).ok_or(FormatError::NotBitlocker)?;
    let mut metadata_offsets = [0u64; 3];
    for (i, o) in metadata_offsets.iter_mut().enumerate() {
        *o = u64_at(sector0, at + 16 + 8 * i).ok_or(FormatError::NotBitlocker)?;
    }
    Ok(VolumeHeader {
        flavour,
        sector_size,
        identifier,
        metadata_offsets,
    })
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's crc32) of `data`: the FVE validation checksum.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Reads FVE metadata copy `index` at `offset` of `dev` (`len` bytes long) and checks it:
/// signature, version 2, its size within the 64 KiB area, the CRC-32 of its validation
/// structure, and that it records itself at the offset it was read from. The block's bytes
/// (the checksummed part) on success, else why not.
pub fn read_copy(
    dev: &(impl ReadAt + ?Sized),
    index: usize,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, String> {
    if offset
        .checked_add(METADATA_AREA_BYTES)
        .is_none_or(|end| end > len)
    {
        return Err(format!(
            "offset {offset} lies outside the volume ({len} bytes)"
        ));
    }
    let mut head = [0u8; 64];
    dev.read_exact_at(&mut head, offset)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if &head[0..8] != b"-FVE-FS-" {
        return Err("no -FVE-FS- signature".into());
    }
    let version = u16_at(&head, 10).unwrap_or(0);
    if version != 2 {
        return Err(format!("metadata block version {version}, not 2"));
    }
    let size = usize::from(u16_at(&head, 8).unwrap_or(0)) * 16;
    if !(HEADERS_BYTES..=METADATA_AREA_BYTES as usize - 8).contains(&size) {
        return Err(format!("block size {size} bytes out of range"));
    }
    let mut block = vec![0u8; size + 8];
    dev.read_exact_at(&mut block, offset)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let validation = block.split_off(size);
    let vsize = u16_at(&validation, 0).unwrap_or(0);
    let vversion = u16_at(&validation, 2).unwrap_or(0);
    if vsize < 8 || vversion > 2 {
        return Err("no validation structure after the block".into());
    }
    let want = u32_at(&validation, 4).unwrap_or(0);
    let got = crc32(&block);
    if want != got {
        return Err(format!(
            "checksum mismatch (stored {want:08x}, computed {got:08x})"
        ));
    }
    let recorded = u64_at(&block, 32 + 8 * index).unwrap_or(0);
    let _ = validation;
    if recorded != offset {
        return Err(format!(
            "it records itself at offset {recorded}, not {offset}"
        ));
    }
    Ok(block)
}

/// The validation structure's authentication of copy `index` at `offset` (block of `size`
/// bytes): the AES-CCM blob (under the VMK) holding the SHA-256 of the block, when the
/// structure has one (version 2, a nested entry of value type 5). None otherwise.
pub fn read_authentication(
    dev: &(impl ReadAt + ?Sized),
    offset: u64,
    size: usize,
) -> Option<CcmBlob> {
    let at = offset.checked_add(size as u64)?;
    // size u16 (to the end of the area), version u16, CRC-32, then one nested entry
    // (size, role, value type 5 = AES-CCM, flags) of at most 1 KiB.
    let mut head = [0u8; 16];
    dev.read_exact_at(&mut head, at).ok()?;
    let vsize = usize::from(u16_at(&head, 0)?);
    let nested = usize::from(u16_at(&head, 8)?);
    if u16_at(&head, 2)? != 2
        || u16_at(&head, 12)? != 0x0005
        || !(8 + 28..=1024).contains(&nested)
        || 8 + nested > vsize
    {
        return None;
    }
    let mut v = vec![0u8; nested - 8];
    dev.read_exact_at(&mut v, at + 16).ok()?;
    ccm_blob(&v)
}

/// An AES-CCM wrapped key as stored: nonce (FILETIME + counter), MAC, ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcmBlob {
    /// The 12-byte nonce.
    pub nonce: [u8; 12],
    /// The 16-byte CCM tag.
    pub tag: [u8; 16],
    /// The ciphertext (a key container once decrypted).
    pub data: Vec<u8>,
}

fn ccm_blob(data: &[u8]) -> Option<CcmBlob> {
    if data.len() <= 28 || data.len() > 4096 {
        return None;
    }
    Some(CcmBlob {
        nonce: arr(data, 0)?,
        tag: arr(data, 12)?,
        data: data[28..].to_vec(),
    })
}

/// Protection types of a VMK (what credential opens it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Clear key: protection suspended, the key is stored beside it.
    ClearKey,
    /// TPM only.
    Tpm,
    /// Startup key (a `.BEK` file; Azure Disk Encryption's protector).
    StartupKey,
    /// TPM and PIN.
    TpmPin,
    /// 48-digit recovery password.
    RecoveryPassword,
    /// Smart card (public key).
    SmartCard,
    /// Password.
    Password,
    /// Anything else, with its number.
    Other(u16),
    /// No protector: the volume key (FVEK) itself, from a `--volume-key-file`.
    VolumeKey,
}

impl Protection {
    fn from_u16(v: u16) -> Protection {
        match v {
            0x0000 => Protection::ClearKey,
            0x0100 => Protection::Tpm,
            0x0200 => Protection::StartupKey,
            0x0500 => Protection::TpmPin,
            0x0800 => Protection::RecoveryPassword,
            0x1000 => Protection::SmartCard,
            0x2000 => Protection::Password,
            n => Protection::Other(n),
        }
    }

    /// A stable name for dump and messages: `password`, `recovery-password`, `startup-key`,
    /// `clear-key`, `tpm`, `tpm+pin`, `smart-card`, `unknown`, `volume-key`.
    pub fn name(self) -> &'static str {
        match self {
            Protection::ClearKey => "clear-key",
            Protection::Tpm => "tpm",
            Protection::StartupKey => "startup-key",
            Protection::TpmPin => "tpm+pin",
            Protection::RecoveryPassword => "recovery-password",
            Protection::SmartCard => "smart-card",
            Protection::Password => "password",
            Protection::Other(_) => "unknown",
            Protection::VolumeKey => "volume-key",
        }
    }
}

/// One volume master key protector.
#[derive(Clone, PartialEq, Eq)]
pub struct Vmk {
    /// Its identifier (a `.BEK` file of a startup key is named after it).
    pub guid: [u8; 16],
    /// What opens it.
    pub protection: Protection,
    /// Its name string, if any ("DiskPassword", "ExternalKey").
    pub name: Option<String>,
    /// The stretch-KDF salt (password and recovery password protectors).
    pub salt: Option<[u8; 16]>,
    /// The wrapped VMK.
    pub wrapped: Option<CcmBlob>,
    /// A clear key protector's stored key (not secret in any useful sense: it is on disk).
    pub clear_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Vmk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmk")
            .field("guid", &guid_string(&self.guid))
            .field("protection", &self.protection)
            .finish_non_exhaustive()
    }
}

/// The parsed content of a valid FVE metadata block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Current and next conversion state (4 and 4 when fully encrypted, not converting).
    pub state: (u16, u16),
    /// Bytes of the volume that are encrypted.
    pub encrypted_size: u64,
    /// Volume header sectors recorded in the block header.
    pub volume_header_sectors: u32,
    /// The three metadata offsets this block records.
    pub metadata_offsets: [u64; 3],
    /// Where the encrypted copy of the original boot sectors is, per the block header.
    pub volume_header_offset: u64,
    /// The volume GUID.
    pub guid: [u8; 16],
    /// Encryption method (0x8000..0x8005).
    pub method: u16,
    /// Creation time as a Windows FILETIME.
    pub created: u64,
    /// The description entry (computer name, drive, date).
    pub description: Option<String>,
    /// The VMK protectors in metadata order.
    pub vmks: Vec<Vmk>,
    /// The FVEK, wrapped by the VMK.
    pub fvek: Option<CcmBlob>,
    /// The volume header block entry (offset, size), when present.
    pub volume_header: Option<(u64, u64)>,
}

fn utf16_string(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Walks the entries in `b`: (entry type, value type, data) for each, or why not.
/// One metadata entry: (entry type, value type, data).
type Entry<'a> = (u16, u16, &'a [u8]);

fn entries(b: &[u8]) -> Result<Vec<Entry<'_>>, String> {
    let mut out = Vec::new();
    let mut p = 0usize;
    while p + ENTRY_HEADER_BYTES <= b.len() {
        let size = usize::from(u16_at(b, p).unwrap_or(0));
        if size == 0 {
            break;
        }
        if size < ENTRY_HEADER_BYTES || p + size > b.len() {
            return Err(format!("entry at byte {p} has a bad size {size}"));
        }
        let kind = u16_at(b, p + 2).unwrap_or(0);
        let value = u16_at(b, p + 4).unwrap_or(0);
        out.push((kind, value, &b[p + ENTRY_HEADER_BYTES..p + size]));
        p += size;
        if out.len() > 1024 {
            return Err("more than 1024 entries".into());
        }
    }
    Ok(out)
}

fn parse_vmk(data: &[u8]) -> Result<Vmk, String> {
    let guid = arr(data, 0).ok_or("VMK entry too short")?;
    let protection = Protection::from_u16(u16_at(data, 26).ok_or("VMK entry too short")?);
    let mut vmk = Vmk {
        guid,
        protection,
        name: None,
        salt: None,
        wrapped: None,
        clear_key: None,
    };
    for (_, value, d) in entries(&data[28..])? {
        match value {
            // Stretch key: method (4), salt (16), then a nested wrapped key we do not need.
            0x0003 => vmk.salt = arr(d, 4),
            0x0005 if vmk.wrapped.is_none() => vmk.wrapped = ccm_blob(d),
            0x0001 if d.len() > 4 && d.len() <= 4 + 64 => vmk.clear_key = Some(d[4..].to_vec()),
            0x0002 if vmk.name.is_none() => vmk.name = Some(utf16_string(d)),
            _ => {}
        }
    }
    Ok(vmk)
}

/// Parses a block returned by [`read_copy`].
pub fn parse_metadata(block: &[u8]) -> Result<Metadata, FormatError> {
    let bad = |m: &str| FormatError::Metadata(m.to_string());
    let field = |v: Option<u64>| v.ok_or_else(|| bad("metadata block too short"));
    let size = field(u32_at(block, 64).map(u64::from))? as usize;
    let version = field(u32_at(block, 68).map(u64::from))?;
    if version != 1 {
        return Err(bad(&format!("metadata header version {version}, not 1")));
    }
    if size < 48 || 64 + size > block.len() {
        return Err(bad(&format!(
            "metadata size {size} does not fit its {} byte block",
            block.len()
        )));
    }
    let mut md = Metadata {
        state: (
            field(u16_at(block, 12).map(u64::from))? as u16,
            field(u16_at(block, 14).map(u64::from))? as u16,
        ),
        encrypted_size: field(u64_at(block, 16))?,
        volume_header_sectors: field(u32_at(block, 28).map(u64::from))? as u32,
        metadata_offsets: [
            field(u64_at(block, 32))?,
            field(u64_at(block, 40))?,
            field(u64_at(block, 48))?,
        ],
        volume_header_offset: field(u64_at(block, 56))?,
        guid: arr(block, 80).ok_or_else(|| bad("metadata block too short"))?,
        method: field(u16_at(block, 100).map(u64::from))? as u16,
        created: field(u64_at(block, 104))?,
        description: None,
        vmks: Vec::new(),
        fvek: None,
        volume_header: None,
    };
    let list = entries(&block[HEADERS_BYTES..64 + size]).map_err(|e| bad(&e))?;
    for (kind, value, d) in list {
        match (kind, value) {
            (0x0002, 0x0008) => md.vmks.push(parse_vmk(d).map_err(|e| bad(&e))?),
            (0x0003, 0x0005) if md.fvek.is_none() => md.fvek = ccm_blob(d),
            (0x000f, 0x000f) => {
                md.volume_header = Some((field(u64_at(d, 0))?, field(u64_at(d, 8))?));
            }
            (0x0007, 0x0002) if md.description.is_none() => {
                md.description = Some(utf16_string(d));
            }
            _ => {}
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guid_prints_as_windows_does() {
        assert_eq!(
            guid_string(&GUID_NORMAL),
            "4967d63b-2e29-4ad8-8399-f6a339e3d001"
        );
        assert_eq!(
            guid_string(&GUID_EOW),
            "92a84d3b-dd80-4d0e-9e4e-b1e3284eaed8"
        );
    }

    fn boot(sig: &[u8; 8]) -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[0..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
        s[3..11].copy_from_slice(sig);
        s[11..13].copy_from_slice(&512u16.to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xaa;
        s
    }

    #[test]
    fn plain_ntfs_and_fat_are_not_bitlocker() {
        assert_eq!(detect(&boot(b"NTFS    ")), None);
        let mut fat = boot(b"MSWIN4.1");
        fat[82..90].copy_from_slice(b"FAT32   ");
        assert_eq!(detect(&fat), None);
        fat[424..440].copy_from_slice(&GUID_NORMAL);
        assert_eq!(detect(&fat), Some(Flavour::ToGo));
        assert_eq!(detect(&boot(b"-FVE-FS-")), Some(Flavour::Windows7));
        let mut vista = boot(b"-FVE-FS-");
        vista[1] = 0x52;
        assert_eq!(parse_volume_header(&vista), Err(FormatError::Vista));
        assert_eq!(detect(&[0u8; 8]), None);
    }

    #[test]
    fn bad_sector_sizes_are_refused() {
        let mut s = boot(b"-FVE-FS-");
        s[11..13].copy_from_slice(&1024u16.to_le_bytes());
        assert_eq!(parse_volume_header(&s), Err(FormatError::SectorSize(1024)));
    }

    #[test]
    fn entries_reject_sizes_past_the_end() {
        let mut b = vec![0u8; 16];
        b[0..2].copy_from_slice(&40u16.to_le_bytes());
        assert!(entries(&b).is_err());
        b[0..2].copy_from_slice(&4u16.to_le_bytes());
        assert!(entries(&b).is_err());
        b[0..2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(entries(&b).map(|e| e.len()), Ok(0));
    }
}
