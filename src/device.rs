//! Where a volume lives: opening a backing file and reading its header (LUKS2 or LUKS1).
use crate::error::plain_io;
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::luks1;
use crate::luks2::binary::CopyKind;
use crate::luks2::{self, FormatError, ReadAt};
use crate::signature::{self, Signature};
use std::fs::File;
use std::path::Path;

/// A header of either LUKS version.
pub enum VolumeHeader {
    Luks2(Box<luks2::Header>),
    Luks1(Box<luks1::Luks1Header>),
}

/// Opens `path` for reading (or read-write), mapping errors to one-line messages.
pub fn open_backing(path: &Path, write: bool) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| {
            let what = format!("cannot open {}: {}", path.display(), plain_io(&e));
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => Error::Permission(what),
                _ => Error::Device(what),
            }
        })?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    if meta.is_dir() {
        return Err(Error::Device(format!("{} is a directory", path.display())));
    }
    Ok(file)
}

/// Reads the header of `file` (named `path` in messages). Never writes.
///
/// Refuses (exit 4, one line) a LUKS2 header that could only be read from the secondary copy
/// while the primary area holds another known signature (LVM2, a filesystem, a partition
/// table, ...): the device was reused and the secondary copy is a stale leftover that must
/// not be written through ("ambiguous signatures", as cryptsetup says).
pub fn read_header(file: &File, path: &Path) -> Result<VolumeHeader> {
    match read_header_with_signature(file, path)? {
        (_, Some(found)) => Err(ambiguous(path, &found)),
        (header, None) => Ok(header),
    }
}

/// The one-line refusal of a device with ambiguous signatures.
pub fn ambiguous(path: &Path, found: &Signature) -> Error {
    Error::Device(format!(
        "{} has ambiguous signatures: the primary LUKS2 header copy is invalid and its area holds {found}; refusing to use the stale secondary copy (`vaultdisk repair --force` rewrites the primary over it)",
        path.display()
    ))
}

/// The other signature in the primary area when `header` was read from the secondary copy
/// because the primary is invalid; None otherwise (a valid primary, or a wiped one).
pub fn foreign_signature(
    file: &(impl ReadAt + ?Sized),
    header: &luks2::Header,
    path: &Path,
) -> Result<Option<Signature>> {
    if header.current != CopyKind::Secondary || header.primary.error.is_none() {
        return Ok(None);
    }
    signature::probe_device(file)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
}

/// `read_header` that returns, instead of refusing, the foreign signature found in the primary
/// area of a LUKS2 device read from its secondary copy (for `repair --force` and `dump`).
pub fn read_header_with_signature(
    file: &File,
    path: &Path,
) -> Result<(VolumeHeader, Option<Signature>)> {
    let header = read_any_header(file, path)?;
    let found = match &header {
        VolumeHeader::Luks2(h) => foreign_signature(file, h, path)?,
        VolumeHeader::Luks1(_) => None,
    };
    Ok((header, found))
}

fn read_any_header(file: &File, path: &Path) -> Result<VolumeHeader> {
    let name = path.display();
    let len = file
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    if len < 4096 {
        return Err(Error::Device(format!(
            "{name} is not a LUKS volume (only {len} bytes)"
        )));
    }
    let mut first = [0u8; 1024];
    file.read_exact_at(&mut first, 0)
        .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
    // The version field at offset 6 tells LUKS1 from LUKS2 (luks-format.md §2).
    if first[..6] == luks2::binary::PRIMARY_MAGIC && first[6..8] == [0, 1] {
        let header = luks1::parse(&first).map_err(|e| Error::Device(format!("{name}: {e}")))?;
        header
            .validate_against_device(len)
            .map_err(|e| Error::Device(format!("{name}: {e}")))?;
        return Ok(VolumeHeader::Luks1(Box::new(header)));
    }
    match luks2::read(file) {
        Ok(h) => Ok(VolumeHeader::Luks2(Box::new(h))),
        Err((FormatError::BadMagic, FormatError::BadMagic)) => Err(Error::Device(format!(
            "{name} is not a LUKS volume (no LUKS header found; if it was one, restore a header backup)"
        ))),
        Err((primary @ FormatError::Truncated(_), _)) => Err(Error::Device(format!(
            "{name} is truncated ({len} bytes, {primary}): restore the file or a header backup"
        ))),
        Err((primary, secondary)) => Err(Error::Device(format!(
            "both header copies of {name} are damaged (primary: {primary}; secondary: {secondary}): restore a header backup"
        ))),
    }
}

/// Warns (one line each) about a damaged or stale header copy; the valid copy is in use.
pub fn warn_damaged_copy(header: &luks2::Header, path: &Path) {
    if let Some(bad) = header.damaged_copy() {
        log::warn!(
            "{} header copy of {} is damaged ({}); using the {} copy (repair the header or restore a header backup soon)",
            bad.kind.name(),
            path.display(),
            bad.error
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            header.current.name()
        );
    }
}

/// The data segment of a LUKS2 header as served geometry, checked against the file length.
pub fn luks2_segment(header: &luks2::Header, file_len: u64, path: &Path) -> Result<Segment> {
    luks2_segment_in(header, file_len, path, false)
}

/// `luks2_segment` for data in `path` whose header may be kept apart (`detached`): then a
/// data offset of 0 is expected, as `cryptsetup luksFormat --header` writes it.
pub fn luks2_segment_in(
    header: &luks2::Header,
    file_len: u64,
    path: &Path,
    detached: bool,
) -> Result<Segment> {
    let name = path.display();
    let seg = header.metadata.data_segment().map_err(|why| {
        Error::Device(format!(
            "{name} uses what vaultdisk does not support: {why}"
        ))
    })?;
    if seg.offset_bytes == 0 && !detached {
        return Err(Error::Device(format!(
            "{name} has a detached header (data offset 0), which open does not support yet"
        )));
    }
    let available = file_len.checked_sub(seg.offset_bytes).ok_or_else(|| {
        Error::Device(format!(
            "{name} is truncated: data starts at byte {} but the file has {file_len} bytes",
            seg.offset_bytes
        ))
    })?;
    let sector = u64::from(seg.sector_size);
    let size = match seg.size_bytes {
        None => available / sector * sector,
        Some(s) if s <= available => s,
        Some(s) => {
            return Err(Error::Device(format!(
                "{name} is truncated: the data segment needs {s} bytes but only {available} follow the header"
            )));
        }
    };
    if size == 0 {
        return Err(Error::Device(format!(
            "{name} has no data sectors (truncated?)"
        )));
    }
    Ok(Segment {
        data_offset_bytes: seg.offset_bytes,
        data_size_bytes: size,
        sector_size: seg.sector_size,
        iv_tweak: seg.iv_tweak,
    })
}
