//! LUKS2 on-disk format: bytes <-> checked types. Opens no file, runs no KDF.

/// A positional reader handed in by the caller (a File, or bytes in tests).
pub trait ReadAt {
    /// Fills `buf` from `offset`, failing with UnexpectedEof past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    /// Total length in bytes.
    fn len_bytes(&self) -> std::io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        // A block device's metadata says 0 bytes: ask the kernel (device::len).
        crate::device::len(self)
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
}

pub mod binary;
pub mod edit;
pub mod json;
pub mod layout;
pub mod metadata;
pub mod write;

use binary::{ALLOWED_HDR_SIZES, BINARY_SIZE, BinaryHeader, CopyKind};
pub use metadata::Metadata;

/// Why a header copy (or the whole device) is not valid LUKS2. Flat and precise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// No LUKS magic where a copy should start.
    #[error("not a LUKS header (bad magic)")]
    BadMagic,
    /// A version field other than 2.
    #[error("unsupported LUKS version {0}")]
    Version(u16),
    /// hdr_size is not one of the sizes LUKS2 allows.
    #[error("header size {0} is not one of the LUKS2 sizes")]
    HdrSize(u64),
    #[error("header offset field {stored} does not match its position {read_at}")]
    /// The copy's hdr_offset field names another position than where it was read.
    HdrOffset {
        /// The hdr_offset field.
        stored: u64,
        /// Where the copy was read.
        read_at: u64,
    },
    /// A checksum algorithm other than sha256.
    #[error("checksum algorithm {0:?} is not supported")]
    ChecksumAlg(String),
    /// A binary header field (named) that does not parse.
    #[error("binary header field {0} is malformed")]
    Field(&'static str),
    /// The stored checksum does not match the copy.
    #[error("checksum mismatch")]
    Checksum,
    /// The device ends inside the copy.
    #[error("file too short for the header ({0})")]
    Truncated(String),
    /// The JSON area breaks its framing rules (leading '{', NUL termination, zero padding).
    #[error("JSON area: {0}")]
    JsonArea(String),
    /// The JSON text does not parse into the wire structs.
    #[error("JSON: {0}")]
    Json(String),
    /// The metadata breaks a validation rule (Metadata::check).
    #[error("metadata: {0}")]
    Invalid(String),
    /// Reading the device failed.
    #[error("read error: {0}")]
    Io(String),
}

impl From<FormatError> for crate::error::Error {
    /// A header (copy) that is not valid LUKS2 is a device error (exit 4).
    fn from(e: FormatError) -> Self {
        crate::error::Error::Device(e.to_string())
    }
}

/// The state of one header copy as found on the device.
#[derive(Debug, Clone)]
pub struct CopyState {
    /// Primary or secondary.
    pub kind: CopyKind,
    /// Where it was found (or looked for).
    pub offset: u64,
    /// The seqid when the binary header parsed.
    pub seqid: Option<u64>,
    /// None when valid.
    pub error: Option<FormatError>,
    /// Valid but behind the other copy (lower seqid): an interrupted update left it.
    pub stale: bool,
}

/// Both header copies read from a device, with the current one chosen (docs/format.md §2).
#[derive(Debug, Clone)]
pub struct Header {
    /// Binary header of the current copy.
    pub binary: BinaryHeader,
    /// Checked metadata of the current copy.
    pub metadata: Metadata,
    /// Which copy is current.
    pub current: CopyKind,
    /// What was found at offset 0.
    pub primary: CopyState,
    /// What was found at the secondary offset.
    pub secondary: CopyState,
}

impl Header {
    /// The copy that is damaged or stale, if any (for warnings and repair).
    pub fn damaged_copy(&self) -> Option<&CopyState> {
        [&self.primary, &self.secondary]
            .into_iter()
            .find(|c| c.error.is_some() || c.stale)
    }
}

/// A fully checked copy: binary header and metadata.
struct ValidCopy {
    binary: BinaryHeader,
    metadata: Metadata,
}

pub(crate) fn read_binary(
    dev: &(impl ReadAt + ?Sized),
    offset: u64,
) -> Result<[u8; BINARY_SIZE], FormatError> {
    let mut b = [0u8; BINARY_SIZE];
    dev.read_exact_at(&mut b, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FormatError::Truncated(format!("no header at offset {offset}"))
        } else {
            FormatError::Io(e.to_string())
        }
    })?;
    Ok(b)
}

/// Parses the binary header at `offset` and checks its checksum over the JSON area it covers.
/// Returns the parsed header and the JSON area.
fn read_checked_binary(
    dev: &(impl ReadAt + ?Sized),
    offset: u64,
) -> Result<(BinaryHeader, Vec<u8>), (Option<u64>, FormatError)> {
    let raw = read_binary(dev, offset).map_err(|e| (None, e))?;
    let bin = BinaryHeader::parse(&raw, offset).map_err(|e| (None, e))?;
    let mut area = vec![0u8; bin.json_area_len()];
    dev.read_exact_at(&mut area, offset + BINARY_SIZE as u64)
        .map_err(|e| {
            let err = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FormatError::Truncated(format!("JSON area at offset {offset} is cut short"))
            } else {
                FormatError::Io(e.to_string())
            };
            (Some(bin.seqid), err)
        })?;
    if !binary::verify_checksum(&raw, &area) {
        return Err((Some(bin.seqid), FormatError::Checksum));
    }
    Ok((bin, area))
}

/// Applies the JSON area rules (docs/format.md §3) and parses the metadata.
pub fn parse_json_area(area: &[u8], hdr_size: u64) -> Result<Metadata, FormatError> {
    if area.first() != Some(&b'{') {
        return Err(FormatError::JsonArea("does not start with '{'".into()));
    }
    let end = area
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| FormatError::JsonArea("JSON text is not NUL-terminated".into()))?;
    if area[end..].iter().any(|&c| c != 0) {
        return Err(FormatError::JsonArea(
            "bytes after the JSON text are not zero".into(),
        ));
    }
    let wire = json::decode(&area[..end]).map_err(FormatError::Json)?;
    Metadata::check(wire, hdr_size)
}

fn check_copy(
    dev: &(impl ReadAt + ?Sized),
    offset: u64,
    kind: CopyKind,
) -> (CopyState, Option<ValidCopy>) {
    let mut state = CopyState {
        kind,
        offset,
        seqid: None,
        error: None,
        stale: false,
    };
    match read_checked_binary(dev, offset) {
        Err((seqid, e)) => {
            state.seqid = seqid;
            state.error = Some(e);
            (state, None)
        }
        Ok((bin, area)) => {
            state.seqid = Some(bin.seqid);
            if bin.kind != kind {
                state.error = Some(FormatError::BadMagic);
                return (state, None);
            }
            match parse_json_area(&area, bin.hdr_size) {
                Ok(metadata) => (
                    state,
                    Some(ValidCopy {
                        binary: bin,
                        metadata,
                    }),
                ),
                Err(e) => {
                    state.error = Some(e);
                    (state, None)
                }
            }
        }
    }
}

/// Reads and checks both LUKS2 header copies of `dev`; never writes. Fails only when neither
/// copy is valid (the error describes the primary's problem, then the secondary's).
pub fn read(dev: &(impl ReadAt + ?Sized)) -> Result<Header, (FormatError, FormatError)> {
    let (primary, primary_valid) = check_copy(dev, 0, CopyKind::Primary);
    // The secondary sits at primary.hdr_size when the primary's binary part is trustworthy;
    // otherwise probe every allowed size in ascending order (docs/format.md §2 step 2).
    let primary_bin_ok = matches!(
        primary.error,
        None | Some(FormatError::JsonArea(_))
            | Some(FormatError::Json(_))
            | Some(FormatError::Invalid(_))
    );
    let candidates: Vec<u64> = match (&primary_valid, primary_bin_ok) {
        (Some(v), _) => vec![v.binary.hdr_size],
        (None, true) => read_binary(dev, 0)
            .ok()
            .and_then(|raw| BinaryHeader::parse(&raw, 0).ok())
            .map(|b| vec![b.hdr_size])
            .unwrap_or_else(|| ALLOWED_HDR_SIZES.to_vec()),
        (None, false) => ALLOWED_HDR_SIZES.to_vec(),
    };
    let mut secondary = None;
    for &offset in &candidates {
        let (state, valid) = check_copy(dev, offset, CopyKind::Secondary);
        let found = valid.is_some();
        // Keep the first state that at least parsed, to report something useful.
        if found || secondary.is_none() {
            secondary = Some((state, valid));
        }
        if found {
            break;
        }
    }
    let (secondary, secondary_valid) = secondary.unwrap_or((
        CopyState {
            kind: CopyKind::Secondary,
            offset: candidates.first().copied().unwrap_or(0x4000),
            seqid: None,
            error: Some(FormatError::BadMagic),
            stale: false,
        },
        None,
    ));
    let (current, chosen) = match (primary_valid, secondary_valid) {
        (Some(p), Some(s)) => {
            if s.binary.seqid > p.binary.seqid {
                (CopyKind::Secondary, s)
            } else {
                (CopyKind::Primary, p)
            }
        }
        (Some(p), None) => (CopyKind::Primary, p),
        (None, Some(s)) => (CopyKind::Secondary, s),
        (None, None) => {
            return Err((
                primary.error.clone().unwrap_or(FormatError::BadMagic),
                secondary.error.clone().unwrap_or(FormatError::BadMagic),
            ));
        }
    };
    let mut header = Header {
        binary: chosen.binary,
        metadata: chosen.metadata,
        current,
        primary,
        secondary,
    };
    // A valid copy with a lower seqid is stale: report it so the user can repair.
    if let (Some(p), Some(s)) = (header.primary.seqid, header.secondary.seqid)
        && header.primary.error.is_none()
        && header.secondary.error.is_none()
        && p != s
    {
        if p < s {
            header.primary.stale = true;
        } else {
            header.secondary.stale = true;
        }
    }
    Ok(header)
}

/// Encodes one header copy (binary + JSON area) for writing at `binary.hdr_offset`.
pub fn encode_copy(
    binary: &BinaryHeader,
    metadata: &json::Metadata,
) -> Result<Vec<u8>, FormatError> {
    let text = json::encode(metadata).map_err(|e| FormatError::Json(e.to_string()))?;
    let area_len = binary.json_area_len();
    // docs/format.md §3: the text must leave at least one NUL in the area.
    if text.len() >= area_len {
        return Err(FormatError::JsonArea(format!(
            "metadata needs {} bytes but the JSON area holds {}",
            text.len() + 1,
            area_len
        )));
    }
    let mut area = vec![0u8; area_len];
    area[..text.len()].copy_from_slice(&text);
    let mut out = binary.encode(&area).to_vec();
    out.extend_from_slice(&area);
    Ok(out)
}

#[cfg(test)]
mod tests;
