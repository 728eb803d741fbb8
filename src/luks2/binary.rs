//! The 4096-byte LUKS2 binary header of one copy: parse, encode, sha256 checksum (docs/format.md §2).
use super::FormatError;
use sha2::{Digest, Sha256};

/// Size of the binary part of one header copy.
pub const BINARY_SIZE: usize = 4096;
/// Magic of the primary copy, bytes 0..6 (docs/format.md §2).
pub const PRIMARY_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";
/// Magic of the secondary copy, bytes 0..6 (docs/format.md §2).
pub const SECONDARY_MAGIC: [u8; 6] = *b"SKUL\xba\xbe";
/// The only sizes one header copy (binary + JSON area) may have: 16 KiB .. 4 MiB.
pub const ALLOWED_HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

const CSUM_OFFSET: usize = 448;
const CSUM_FIELD_LEN: usize = 64;
const SHA256_LEN: usize = 32;

/// Which of the two header copies a binary header claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// The first copy, at byte 0, magic [`PRIMARY_MAGIC`].
    Primary,
    /// The second copy, normally at `hdr_size` (docs/format.md §2), magic [`SECONDARY_MAGIC`].
    Secondary,
}

impl CopyKind {
    /// "primary" or "secondary", for messages.
    pub fn name(self) -> &'static str {
        match self {
            CopyKind::Primary => "primary",
            CopyKind::Secondary => "secondary",
        }
    }
}

/// The decoded fields of one binary header (checksum not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryHeader {
    /// Which copy the magic says this is.
    pub kind: CopyKind,
    /// Size of one copy: binary header plus JSON area, in bytes.
    pub hdr_size: u64,
    /// Update counter; of two valid copies the higher wins (docs/format.md §2).
    pub seqid: u64,
    /// Label, at most 47 bytes, not necessarily UTF-8 (docs/format.md §2).
    pub label: HeaderText,
    /// Checksum salt of this copy (not secret; differs between the copies).
    pub salt: [u8; 64],
    /// UUID as text, at most 39 bytes.
    pub uuid: String,
    /// Subsystem, a second label, at most 47 bytes, not necessarily UTF-8.
    pub subsystem: HeaderText,
    /// Absolute byte offset of this copy in the device.
    pub hdr_offset: u64,
    /// The stored checksum (first 32 bytes: sha256).
    pub csum: [u8; SHA256_LEN],
}

/// Longest label or subsystem: cryptsetup reads the 48-byte field and forces byte 47 to NUL.
pub const LABEL_MAX: usize = 47;

/// A label or subsystem as cryptsetup keeps it: the bytes before the first NUL, at most
/// [`LABEL_MAX`], whatever they are (`cryptsetup config --label` stores non-UTF-8 bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderText(Vec<u8>);

impl HeaderText {
    /// Reads a 48-byte field: up to the first NUL, cut at [`LABEL_MAX`] bytes.
    fn from_field(field: &[u8]) -> Self {
        let end = field
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(field.len())
            .min(LABEL_MAX);
        HeaderText(field[..end].to_vec())
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when the field is empty (no label).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

/// UTF-8 text as it is; a byte that is not part of valid UTF-8 as `\xNN`.
impl std::fmt::Display for HeaderText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl From<&str> for HeaderText {
    fn from(s: &str) -> Self {
        HeaderText(s.as_bytes().to_vec())
    }
}

impl From<String> for HeaderText {
    fn from(s: String) -> Self {
        HeaderText(s.into_bytes())
    }
}

impl PartialEq<&str> for HeaderText {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// A NUL-terminated text field; `None` if it has no NUL or is not UTF-8.
fn c_string(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&c| c == 0)?;
    String::from_utf8(field[..end].to_vec()).ok()
}

fn put_c_string(dst: &mut [u8], s: &str) {
    put_bytes(dst, s.as_bytes());
}

fn put_bytes(dst: &mut [u8], s: &[u8]) {
    // Callers validated the length; the field keeps at least one NUL.
    let n = s.len().min(dst.len() - 1);
    dst[..n].copy_from_slice(&s[..n]);
}

impl BinaryHeader {
    /// Parses one binary header as read from `read_offset`. Checks magic, version, size,
    /// hdr_offset and checksum algorithm; the checksum itself needs the JSON area (`verify`).
    pub fn parse(b: &[u8; BINARY_SIZE], read_offset: u64) -> Result<Self, FormatError> {
        let kind = if b[..6] == PRIMARY_MAGIC {
            CopyKind::Primary
        } else if b[..6] == SECONDARY_MAGIC {
            CopyKind::Secondary
        } else {
            return Err(FormatError::BadMagic);
        };
        let version = u16::from_be_bytes([b[6], b[7]]);
        if version != 2 {
            return Err(FormatError::Version(version));
        }
        let hdr_size = be_u64(b, 8);
        if !ALLOWED_HDR_SIZES.contains(&hdr_size) {
            return Err(FormatError::HdrSize(hdr_size));
        }
        let hdr_offset = be_u64(b, 256);
        if hdr_offset != read_offset {
            return Err(FormatError::HdrOffset {
                stored: hdr_offset,
                read_at: read_offset,
            });
        }
        let checksum_alg = c_string(&b[72..104]).ok_or(FormatError::Field("checksum_alg"))?;
        if checksum_alg != "sha256" {
            return Err(FormatError::ChecksumAlg(checksum_alg));
        }
        if b[CSUM_OFFSET + SHA256_LEN..CSUM_OFFSET + CSUM_FIELD_LEN]
            .iter()
            .any(|&c| c != 0)
        {
            return Err(FormatError::Field("csum padding"));
        }
        let mut salt = [0u8; 64];
        salt.copy_from_slice(&b[104..168]);
        let mut csum = [0u8; SHA256_LEN];
        csum.copy_from_slice(&b[CSUM_OFFSET..CSUM_OFFSET + SHA256_LEN]);
        Ok(BinaryHeader {
            kind,
            hdr_size,
            seqid: be_u64(b, 16),
            label: HeaderText::from_field(&b[24..72]),
            salt,
            uuid: c_string(&b[168..208]).ok_or(FormatError::Field("uuid"))?,
            subsystem: HeaderText::from_field(&b[208..256]),
            hdr_offset,
            csum,
        })
    }

    /// Size of the JSON area that follows this binary header.
    pub fn json_area_len(&self) -> usize {
        // hdr_size is one of ALLOWED_HDR_SIZES (<= 4 MiB), so this cannot truncate.
        self.hdr_size as usize - BINARY_SIZE
    }

    /// Encodes this header with its checksum computed over `json_area`.
    pub fn encode(&self, json_area: &[u8]) -> [u8; BINARY_SIZE] {
        let mut b = [0u8; BINARY_SIZE];
        b[..6].copy_from_slice(match self.kind {
            CopyKind::Primary => &PRIMARY_MAGIC,
            CopyKind::Secondary => &SECONDARY_MAGIC,
        });
        b[6..8].copy_from_slice(&2u16.to_be_bytes());
        b[8..16].copy_from_slice(&self.hdr_size.to_be_bytes());
        b[16..24].copy_from_slice(&self.seqid.to_be_bytes());
        put_bytes(&mut b[24..72], self.label.as_bytes());
        put_c_string(&mut b[72..104], "sha256");
        b[104..168].copy_from_slice(&self.salt);
        put_c_string(&mut b[168..208], &self.uuid);
        put_bytes(&mut b[208..256], self.subsystem.as_bytes());
        b[256..264].copy_from_slice(&self.hdr_offset.to_be_bytes());
        let csum = checksum(&b, json_area);
        b[CSUM_OFFSET..CSUM_OFFSET + SHA256_LEN].copy_from_slice(&csum);
        b
    }
}

/// sha256 over the binary header with the csum field zeroed, then the whole JSON area.
pub fn checksum(binary: &[u8; BINARY_SIZE], json_area: &[u8]) -> [u8; SHA256_LEN] {
    let mut zeroed = *binary;
    zeroed[CSUM_OFFSET..CSUM_OFFSET + CSUM_FIELD_LEN].fill(0);
    let mut h = Sha256::new();
    h.update(zeroed);
    h.update(json_area);
    h.finalize().into()
}

/// Checks the stored checksum of `binary` against `json_area`.
pub fn verify_checksum(binary: &[u8; BINARY_SIZE], json_area: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    let computed = checksum(binary, json_area);
    bool::from(computed.ct_eq(&binary[CSUM_OFFSET..CSUM_OFFSET + SHA256_LEN]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BinaryHeader {
        BinaryHeader {
            kind: CopyKind::Primary,
            hdr_size: 0x4000,
            seqid: 7,
            label: "data".into(),
            salt: [5u8; 64],
            uuid: "11111111-2222-3333-4444-555555555555".into(),
            subsystem: HeaderText::default(),
            hdr_offset: 0,
            csum: [0; 32],
        }
    }

    #[test]
    fn encode_parse_round_trip_with_checksum() {
        let json = vec![0u8; 0x4000 - BINARY_SIZE];
        let h = sample();
        let b = h.encode(&json);
        let parsed = BinaryHeader::parse(&b, 0).expect("parse");
        assert_eq!(parsed.seqid, 7);
        assert_eq!(parsed.label, "data");
        assert_eq!(parsed.uuid, h.uuid);
        assert!(verify_checksum(&b, &json));
        let mut other = json.clone();
        other[100] = 1;
        assert!(!verify_checksum(&b, &other));
    }

    #[test]
    fn rejects_wrong_offset_size_magic_version() {
        let json = vec![0u8; 0x4000 - BINARY_SIZE];
        let b = sample().encode(&json);
        assert!(matches!(
            BinaryHeader::parse(&b, 0x4000),
            Err(FormatError::HdrOffset { .. })
        ));
        let mut bad = b;
        bad[0] = b'X';
        assert!(matches!(
            BinaryHeader::parse(&bad, 0),
            Err(FormatError::BadMagic)
        ));
        let mut bad = b;
        bad[7] = 3;
        assert!(matches!(
            BinaryHeader::parse(&bad, 0),
            Err(FormatError::Version(3))
        ));
        let mut bad = b;
        bad[8..16].copy_from_slice(&0x5000u64.to_be_bytes());
        assert!(matches!(
            BinaryHeader::parse(&bad, 0),
            Err(FormatError::HdrSize(0x5000))
        ));
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    /// cryptsetup copies label and subsystem as bytes and cuts them at 47 (its
    /// `config --label` stores non-UTF-8 bytes as given).
    #[test]
    fn label_bytes_as_cryptsetup_keeps_them() {
        let json = vec![0u8; 0x4000 - BINARY_SIZE];
        let h = BinaryHeader {
            kind: CopyKind::Primary,
            hdr_size: 0x4000,
            seqid: 1,
            label: "x".into(),
            salt: [5u8; 64],
            uuid: "u".into(),
            subsystem: HeaderText::default(),
            hdr_offset: 0,
            csum: [0; 32],
        };
        let mut b = h.encode(&json);
        b[24..72].fill(b'L');
        b[208..212].copy_from_slice(b"sub\xff");
        b[24..28].copy_from_slice(b"caf\xe9");
        let csum = checksum(&b, &json);
        b[CSUM_OFFSET..CSUM_OFFSET + SHA256_LEN].copy_from_slice(&csum);
        let parsed = BinaryHeader::parse(&b, 0).expect("cryptsetup reads it");
        assert_eq!(parsed.label.as_bytes().len(), 47);
        assert_eq!(&parsed.label.as_bytes()[..4], b"caf\xe9");
        assert_eq!(parsed.subsystem.as_bytes(), b"sub\xff");
        // Re-encoding keeps the bytes (and the 47-byte cut with its NUL).
        let again = BinaryHeader::parse(&parsed.encode(&json), 0).expect("reparse");
        assert_eq!(again.label, parsed.label);
        assert_eq!(again.subsystem, parsed.subsystem);
    }
}
