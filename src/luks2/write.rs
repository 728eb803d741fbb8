//! Crash-safe LUKS2 header updates (docs/format.md §2 "Writing"): both copies get seqid + 1,
//! secondary first, each copy written and synced before the next. Opens no file: the caller
//! hands in a positional reader/writer.
use super::binary::{BINARY_SIZE, BinaryHeader, CopyKind};
use super::{FormatError, Header, Metadata, ReadAt, encode_copy, json, read_binary};

/// A positional writer with a data sync, handed in by the caller (a File, or a wrapper).
pub trait WriteAt: ReadAt {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()>;
    /// Makes the written data durable (fdatasync).
    fn sync_data(&self) -> std::io::Result<()>;
}

impl WriteAt for std::fs::File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// Why a header update was refused or failed. Nothing was written unless the variant is `Io`.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The new metadata is not valid LUKS2 or does not fit the JSON area.
    #[error("new metadata is invalid: {0}")]
    Invalid(FormatError),
    /// The header carries requirements (or objects) vaultdisk must not rewrite.
    #[error("refusing to rewrite a header with unsupported features: {0}")]
    Unsupported(String),
    /// The primary's seqid changed since the header was read: another writer was at work.
    #[error(
        "the header changed since it was read (seqid {read} -> {now}): another program is updating it"
    )]
    Concurrent {
        /// The seqid when the header was read.
        read: String,
        /// The seqid on disk now.
        now: String,
    },
    /// Writing or syncing failed (something may have been written).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<WriteError> for crate::error::Error {
    /// A concurrent writer is busy (exit 5), an I/O error keeps its errno's kind, a refused
    /// header is a device error (exit 4). `device::write_error` adds the volume's name.
    fn from(e: WriteError) -> Self {
        use crate::error::Error;
        match e {
            WriteError::Concurrent { .. } => Error::Busy(e.to_string()),
            WriteError::Io(io) => Error::io("cannot write the header", io),
            other => Error::Device(other.to_string()),
        }
    }
}

/// Refuses headers whose requirements vaultdisk does not understand (docs/format.md §4.5).
fn check_requirements(wire: &json::Metadata) -> Result<(), WriteError> {
    match &wire.config.requirements {
        Some(r) if !r.mandatory.is_empty() => Err(WriteError::Unsupported(format!(
            "requirements {}",
            r.mandatory.join(", ")
        ))),
        _ => Ok(()),
    }
}

fn seqid_text(s: Option<u64>) -> String {
    s.map_or_else(|| "unreadable".into(), |s| s.to_string())
}

/// The salt a copy carries on disk now, if its binary header parses.
fn salt_on_disk(dev: &(impl WriteAt + ?Sized), offset: u64) -> Option<[u8; 64]> {
    let raw = read_binary(dev, offset).ok()?;
    BinaryHeader::parse(&raw, offset).ok().map(|b| b.salt)
}

/// Writes `new` as the next version of `header`: seqid + 1 in both copies, each copy keeps its
/// salt (`fresh_salts` replace salts that cannot be read), secondary first, each copy synced
/// before the next. A crash leaves at most one copy invalid or stale, and the reader picks the
/// other. Keyslot material the new metadata points to must already be written and synced.
///
/// Before writing anything: re-validates `new`, checks it fits the JSON area, refuses
/// unsupported requirements and a primary whose seqid changed since `header` was read.
/// Returns the header as read back after the write.
pub fn write_header(
    dev: &(impl WriteAt + ?Sized),
    header: &Header,
    new: json::Metadata,
    fresh_salts: [[u8; 64]; 2],
) -> Result<Header, WriteError> {
    check_requirements(&header.metadata.wire)?;
    check_requirements(&new)?;
    let hdr_size = header.binary.hdr_size;
    Metadata::check(new.clone(), hdr_size).map_err(WriteError::Invalid)?;
    let seqid = header
        .binary
        .seqid
        .checked_add(1)
        .ok_or(WriteError::Invalid(FormatError::Field("seqid overflow")))?;
    let copies = [
        (CopyKind::Secondary, hdr_size, fresh_salts[1]),
        (CopyKind::Primary, 0, fresh_salts[0]),
    ];
    let mut encoded = Vec::with_capacity(2);
    for (kind, offset, fresh) in copies {
        let bin = BinaryHeader {
            kind,
            seqid,
            hdr_offset: offset,
            salt: salt_on_disk(dev, offset)
                .filter(|_| copy_state(header, kind).error.is_none())
                .unwrap_or(fresh),
            ..header.binary.clone()
        };
        let bytes = encode_copy(&bin, &new).map_err(WriteError::Invalid)?;
        encoded.push((offset, bytes));
    }
    // Concurrent writer: the primary on disk must still be what we read.
    let now = read_binary(dev, 0)
        .ok()
        .and_then(|raw| BinaryHeader::parse(&raw, 0).ok())
        .map(|b| b.seqid);
    if now != header.primary.seqid {
        return Err(WriteError::Concurrent {
            read: seqid_text(header.primary.seqid),
            now: seqid_text(now),
        });
    }
    for (offset, bytes) in &encoded {
        dev.write_all_at(bytes, *offset)?;
        dev.sync_data()?;
    }
    super::read(dev).map_err(|(p, s)| {
        WriteError::Io(std::io::Error::other(format!(
            "header unreadable after writing it (primary: {p}; secondary: {s})"
        )))
    })
}

fn copy_state(header: &Header, kind: CopyKind) -> &super::CopyState {
    match kind {
        CopyKind::Primary => &header.primary,
        CopyKind::Secondary => &header.secondary,
    }
}

/// Rewrites the damaged or stale copy of `header` from the current one: same seqid and JSON,
/// `salt` as its new salt (cryptsetup draws a new one). Returns which copy was rewritten, or
/// None when both copies are valid and current.
pub fn repair(
    dev: &(impl WriteAt + ?Sized),
    header: &Header,
    salt: [u8; 64],
) -> Result<Option<CopyKind>, WriteError> {
    let Some(bad) = header.damaged_copy() else {
        return Ok(None);
    };
    let kind = bad.kind;
    let hdr_size = header.binary.hdr_size;
    let offset = match kind {
        CopyKind::Primary => 0,
        CopyKind::Secondary => hdr_size,
    };
    let bin = BinaryHeader {
        kind,
        hdr_offset: offset,
        salt,
        ..header.binary.clone()
    };
    let bytes = encode_copy(&bin, &header.metadata.wire).map_err(WriteError::Invalid)?;
    debug_assert!(bytes.len() >= BINARY_SIZE);
    dev.write_all_at(&bytes, offset)?;
    dev.sync_data()?;
    Ok(Some(kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory device that records every write and sync.
    struct Mem {
        bytes: RefCell<Vec<u8>>,
        log: RefCell<Vec<String>>,
    }

    impl ReadAt for Mem {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.bytes.borrow().as_slice().read_exact_at(buf, offset)
        }
        fn len_bytes(&self) -> std::io::Result<u64> {
            Ok(self.bytes.borrow().len() as u64)
        }
    }

    impl WriteAt for Mem {
        fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            let o = offset as usize;
            self.bytes.borrow_mut()[o..o + buf.len()].copy_from_slice(buf);
            self.log.borrow_mut().push(format!("write {offset}"));
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.log.borrow_mut().push("sync".into());
            Ok(())
        }
    }

    fn volume() -> Mem {
        let wire: json::Metadata = serde_json::from_str(
            r#"{"keyslots":{},"tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":[],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"FqoXWtG9a9u4mU/aO72JIqcSYsS/lwvLO1p/HAaK7Os=","digest":"qzVkONTAJtn2obx13IcGGOpjqjzacSkeNnKHD7qGe5Y="}},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#,
        )
        .expect("json");
        let mut bytes = vec![0u8; 0x8000];
        for (kind, off, salt) in [
            (CopyKind::Primary, 0u64, 1u8),
            (CopyKind::Secondary, 0x4000, 2),
        ] {
            let bin = BinaryHeader {
                kind,
                hdr_size: 0x4000,
                seqid: 5,
                label: Default::default(),
                salt: [salt; 64],
                uuid: "11111111-2222-3333-4444-555555555555".into(),
                subsystem: Default::default(),
                hdr_offset: off,
                csum: [0; 32],
            };
            let c = encode_copy(&bin, &wire).expect("encode");
            bytes[off as usize..off as usize + c.len()].copy_from_slice(&c);
        }
        Mem {
            bytes: RefCell::new(bytes),
            log: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn writes_secondary_then_primary_with_seqid_plus_one_and_kept_salts() {
        let dev = volume();
        let h = super::super::read(&dev).expect("read");
        let mut new = h.metadata.wire.clone();
        new.config.flags = Some(vec!["allow-discards".into()]);
        let after = write_header(&dev, &h, new, [[9; 64], [9; 64]]).expect("write");
        assert_eq!(after.binary.seqid, 6);
        assert_eq!(after.primary.seqid, Some(6));
        assert_eq!(after.secondary.seqid, Some(6));
        assert!(after.damaged_copy().is_none());
        assert_eq!(after.binary.salt, [1; 64]);
        assert_eq!(
            *dev.log.borrow(),
            vec!["write 16384", "sync", "write 0", "sync"]
        );
    }

    #[test]
    fn refuses_concurrent_change_invalid_json_and_requirements() {
        let dev = volume();
        let h = super::super::read(&dev).expect("read");
        // Someone else bumped the primary.
        let mut other = h.clone();
        other.primary.seqid = Some(4);
        assert!(matches!(
            write_header(&dev, &other, h.metadata.wire.clone(), [[0; 64]; 2]),
            Err(WriteError::Concurrent { .. })
        ));
        let mut bad = h.metadata.wire.clone();
        bad.config.json_size = 4096;
        assert!(matches!(
            write_header(&dev, &h, bad, [[0; 64]; 2]),
            Err(WriteError::Invalid(_))
        ));
        let mut req = h.metadata.wire.clone();
        req.config.requirements = Some(json::Requirements {
            mandatory: vec!["opal".into()],
            extra: Default::default(),
        });
        assert!(matches!(
            write_header(&dev, &h, req, [[0; 64]; 2]),
            Err(WriteError::Unsupported(_))
        ));
        let mut huge = h.metadata.wire.clone();
        huge.config
            .extra
            .insert("pad".into(), serde_json::Value::String("x".repeat(13000)));
        assert!(matches!(
            write_header(&dev, &h, huge, [[0; 64]; 2]),
            Err(WriteError::Invalid(_))
        ));
        assert!(dev.log.borrow().is_empty(), "nothing written");
    }

    #[test]
    fn write_errors_map_to_exit_codes() {
        use crate::error::Error;
        let busy = WriteError::Concurrent {
            read: "1".into(),
            now: "2".into(),
        };
        assert_eq!(Error::from(busy).exit_code(), 5);
        let denied = WriteError::Io(std::io::ErrorKind::PermissionDenied.into());
        assert_eq!(Error::from(denied).exit_code(), 2);
        let bad = WriteError::Unsupported("requirements opal".into());
        let e = Error::from(bad);
        assert_eq!(e.exit_code(), 4);
        assert!(e.to_string().contains("opal"), "{e}");
        assert_eq!(Error::from(FormatError::Checksum).exit_code(), 4);
    }

    #[test]
    fn repair_rewrites_the_damaged_copy() {
        let dev = volume();
        dev.bytes.borrow_mut()[0x4000 + 5000] = b'x';
        let h = super::super::read(&dev).expect("read");
        assert!(h.secondary.error.is_some());
        assert_eq!(
            repair(&dev, &h, [7; 64]).expect("repair"),
            Some(CopyKind::Secondary)
        );
        let after = super::super::read(&dev).expect("read");
        assert!(after.damaged_copy().is_none());
        assert_eq!(after.secondary.seqid, Some(5));
        assert_eq!(repair(&dev, &after, [7; 64]).expect("noop"), None);
    }
}
