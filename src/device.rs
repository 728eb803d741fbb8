//! Where a volume lives: opening a backing file and reading its header (LUKS2 or LUKS1), and
//! the backing file opened for a header update ([`Backing`], with the update lock).
use crate::crypto::random;
use crate::disk::{Disk, DiskError, Window};
use crate::error::plain_io;
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::luks1;
use crate::luks2::binary::CopyKind;
use crate::luks2::write::{WriteAt, WriteError};
use crate::luks2::{self, FormatError, Header, ReadAt};
use crate::signature::{self, Signature};
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A header of either LUKS version.
pub enum VolumeHeader {
    /// A LUKS2 header (both copies).
    Luks2(Box<luks2::Header>),
    /// A LUKS1 header.
    Luks1(Box<luks1::Luks1Header>),
}

/// Bytes in `file`: the size the kernel reports for a block device (BLKGETSIZE64; its
/// `metadata().len()` is 0), else the file's length. Every length of a backing comes from here.
pub fn len(file: &File) -> std::io::Result<u64> {
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        crate::sys::block_device_size(file)
    } else {
        Ok(meta.len())
    }
}

/// Whether `file` is a block device (a disk, partition, loop device, LV).
pub fn is_block_device(file: &File) -> bool {
    file.metadata()
        .is_ok_and(|m| m.file_type().is_block_device())
}

/// Whether `path` names a block device (following symlinks such as /dev/disk/by-id/...).
pub fn path_is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Opens `path` for reading (or read-write), mapping errors to one-line messages. A block
/// device opened read-write is opened exclusively (O_EXCL): one the kernel has mounted or
/// another program holds is refused (exit 5) instead of written under it; a read-only block
/// device opened read-write is refused with the way out (`--read-only`).
pub fn open_backing(path: &Path, write: bool) -> Result<File> {
    open_file(path, write, write)
}

/// [`open_backing`] that opens a block device exclusively even for reading: what serving a
/// volume (open, mount) needs, as dm-crypt claims its device.
pub fn open_exclusive(path: &Path, write: bool) -> Result<File> {
    open_file(path, write, true)
}

fn open_with(path: &Path, write: bool, exclusive: bool) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(write);
    if exclusive {
        // O_EXCL without O_CREAT on a block device: fail with EBUSY if it is mounted or
        // claimed by another exclusive opener (kernel block/bdev.c).
        o.custom_flags(libc::O_EXCL);
    }
    o.open(path)
}

/// Whether a vaultdisk daemon serves `path` (it then holds the device exclusively itself, and
/// the flock decides what else may happen: daemon::lock).
fn served_by_vaultdisk(path: &Path) -> bool {
    let canon = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    crate::daemon::open_volumes()
        .into_iter()
        .any(|e| e.backing == canon)
}

fn open_file(path: &Path, write: bool, exclusive: bool) -> Result<File> {
    let block = path_is_block_device(path);
    let excl = block && exclusive;
    let opened = match open_with(path, write, excl) {
        Err(e) if excl && e.raw_os_error() == Some(libc::EBUSY) => {
            if !served_by_vaultdisk(path) {
                return Err(Error::Busy(format!(
                    "{} is in use (mounted, or held by another program such as dm-crypt or LVM): unmount or release it first",
                    path.display()
                )));
            }
            open_with(path, write, false)
        }
        other => other,
    };
    let file = opened.map_err(|e| {
        if block && write && matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES)) {
            return read_only_device(path);
        }
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
    if block && write && crate::sys::block_device_read_only(&file).unwrap_or(false) {
        return Err(read_only_device(path));
    }
    Ok(file)
}

fn read_only_device(path: &Path) -> Error {
    Error::Permission(format!(
        "{} is a read-only block device: it can only be opened with --read-only (blockdev --setrw makes it writable)",
        path.display()
    ))
}

/// Where in BACKING a volume lives: the whole file or device, partition N of a whole-disk
/// image or disk (`--partition`), or a raw byte range (`--device-offset`/`--device-size`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Place {
    /// The whole file or device.
    #[default]
    Whole,
    /// Partition N (Linux numbering: GPT entries from 1, MBR primaries 1-4, logicals from 5).
    Partition(u32),
    /// `size` bytes from byte `offset` (losetup's `--offset`/`--sizelimit`).
    Range {
        /// First byte of the window.
        offset: u64,
        /// Bytes in the window; None: to the end of the backing.
        size: Option<u64>,
    },
}

/// A backing file or device, opened, and the window of it where the volume lives. Header
/// reads and unlocking go through [`Located::window`]; nothing outside it is read or
/// written. A segment read from the header is relative to the window: [`Located::absolute`]
/// makes it relative to the file, which is what the data path (Volume, the daemon) serves.
#[derive(Debug)]
pub struct Located {
    window: Window<Arc<File>>,
    whole: bool,
}

impl Located {
    /// The window of the backing the volume lives in.
    pub fn window(&self) -> &Window<Arc<File>> {
        &self.window
    }

    /// The open backing file or device.
    pub fn file(&self) -> &File {
        self.window.inner()
    }

    /// Bytes in the window (what the header's segment is checked against).
    pub fn len(&self) -> u64 {
        self.window.len()
    }

    /// Whether the window has no bytes.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Byte offset of the window in the backing.
    pub fn offset(&self) -> u64 {
        self.window.offset()
    }

    /// Whether the volume is the whole backing (no `--partition` or raw window): only then
    /// can its data grow with the file.
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// `segment` (relative to the window) relative to the backing file.
    pub fn absolute(&self, segment: Segment) -> Result<Segment> {
        let data_offset_bytes = segment
            .data_offset_bytes
            .checked_add(self.offset())
            .ok_or_else(|| Error::Device("data offset overflows the window".into()))?;
        Ok(Segment {
            data_offset_bytes,
            ..segment
        })
    }
}

/// Opens `path` ([`open_backing`], or [`open_exclusive`] when `exclusive`) and finds `place`
/// in it: a partition through [`crate::disk`] (its warnings logged), a raw window checked
/// against the size. A file without a partition table given a partition is exit 4, a
/// partition number or window out of range exit 1.
pub fn locate(path: &Path, place: Place, write: bool, exclusive: bool) -> Result<Located> {
    let file = open_file(path, write, exclusive || write)?;
    let name = path.display().to_string();
    let total = len(&file).map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    let window = match place {
        Place::Whole => Window::new(Arc::new(file), 0, total)
            .map_err(|e| Error::io(format!("cannot read {name}"), e))?,
        Place::Partition(n) => {
            let sector = is_block_device(&file)
                .then(|| crate::sys::block_device_logical_block_size(&file).ok())
                .flatten();
            let disk = Disk::from_device(file, total, sector).map_err(|e| e.for_path(&name))?;
            for w in disk.warnings() {
                log::warn!("{name}: {w}");
            }
            disk.partition(n).map_err(|e| e.for_path(&name))?
        }
        Place::Range { offset, size } => {
            let size = size.unwrap_or_else(|| total.saturating_sub(offset));
            let fits = offset.checked_add(size).is_some_and(|end| end <= total);
            if !fits || size == 0 {
                return Err(DiskError::OutOfRange {
                    offset,
                    size,
                    disk: total,
                }
                .for_path(&name));
            }
            Window::new(Arc::new(file), offset, size)
                .map_err(|e| Error::io(format!("cannot read {name}"), e))?
        }
    };
    Ok(Located {
        window,
        whole: place == Place::Whole,
    })
}

/// Reads the header of `file` (named `path` in messages). Never writes.
///
/// Refuses (exit 4, one line) a LUKS2 header that could only be read from the secondary copy
/// while the primary area holds another known signature (LVM2, a filesystem, a partition
/// table, ...): the device was reused and the secondary copy is a stale leftover that must
/// not be written through ("ambiguous signatures", as cryptsetup says).
pub fn read_header(file: &(impl ReadAt + ?Sized), path: &Path) -> Result<VolumeHeader> {
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
    file: &(impl ReadAt + ?Sized),
    path: &Path,
) -> Result<(VolumeHeader, Option<Signature>)> {
    let header = read_any_header(file, path)?;
    let found = match &header {
        VolumeHeader::Luks2(h) => foreign_signature(file, h, path)?,
        VolumeHeader::Luks1(_) => None,
    };
    Ok((header, found))
}

fn read_any_header(file: &(impl ReadAt + ?Sized), path: &Path) -> Result<VolumeHeader> {
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
    // The version field at offset 6 tells LUKS1 from LUKS2 (docs/format.md §2).
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

/// Environment variable of the fault-injection hook: crash right after the k-th write or sync
/// of a [`Backing`] (builds with the `fault-injection` cargo feature only).
#[cfg(feature = "fault-injection")]
pub const CRASH_ENV: &str = "VAULTDISK_CRASH_AFTER_WRITES";

/// The fault-injection hook: counts writes and syncs, exits with `error::exit::CRASH` right
/// after the k-th one, leaving exactly what had been written.
#[cfg(feature = "fault-injection")]
struct CrashHook {
    after: Option<u64>,
    ops: std::cell::Cell<u64>,
}

#[cfg(feature = "fault-injection")]
impl CrashHook {
    fn from_env() -> CrashHook {
        CrashHook {
            after: std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok()),
            ops: std::cell::Cell::new(0),
        }
    }

    fn tick(&self) {
        let n = self.ops.get() + 1;
        self.ops.set(n);
        if self.after == Some(n) {
            eprintln!("vaultdisk: {CRASH_ENV}={n}: simulated crash");
            std::process::exit(crate::error::exit::CRASH);
        }
    }
}

/// The backing file opened for reading its header or for a metadata update. Header writes go
/// through [`WriteAt`]; builds with the `fault-injection` feature count every write and sync so
/// tests can simulate a crash right after the k-th one (`VAULTDISK_CRASH_AFTER_WRITES=k`).
pub struct Backing {
    file: File,
    path: PathBuf,
    #[cfg(feature = "fault-injection")]
    crash: CrashHook,
}

impl Backing {
    /// Opens `path` (read-write when `write`).
    pub fn open(path: &Path, write: bool) -> Result<Backing> {
        Ok(Backing::from_file(open_backing(path, write)?, path))
    }

    /// Wraps an already opened backing file named `path`.
    pub fn from_file(file: File, path: &Path) -> Backing {
        Backing {
            file,
            path: path.to_path_buf(),
            #[cfg(feature = "fault-injection")]
            crash: CrashHook::from_env(),
        }
    }

    /// Holds the exclusive update lock until this `Backing` is dropped (daemon::lock_for_update).
    pub fn lock_for_update(&self) -> Result<()> {
        crate::daemon::lock_for_update(&self.file, &self.path)
    }

    /// The open backing file (for length changes; header writes go through `WriteAt`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path the backing file was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as messages show it.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The LUKS2 header, or a one-line refusal for LUKS1 (and for ambiguous signatures).
    pub fn luks2_header(&self) -> Result<Header> {
        match self.luks2_header_with_signature()? {
            (_, Some(found)) => Err(ambiguous(&self.path, &found)),
            (h, None) => Ok(h),
        }
    }

    /// The LUKS2 header and, instead of a refusal, the other signature found where the
    /// primary copy belongs ([`read_header_with_signature`]).
    pub fn luks2_header_with_signature(&self) -> Result<(Header, Option<Signature>)> {
        match read_header_with_signature(&self.file, &self.path)? {
            (VolumeHeader::Luks2(h), found) => Ok((*h, found)),
            (VolumeHeader::Luks1(_), _) => Err(Error::Device(format!(
                "{} is LUKS1: this verb needs LUKS2 (cryptsetup convert --type luks2)",
                self.name()
            ))),
        }
    }

    /// Maps a failed header write to the crate's error.
    pub fn write_error(&self, e: WriteError) -> Error {
        write_error(&self.name(), e)
    }

    fn tick(&self) {
        #[cfg(feature = "fault-injection")]
        self.crash.tick();
    }
}

/// Maps a failed header write of the volume `name` to the crate's error: a concurrent writer is
/// busy (exit 5), an I/O error keeps its kind, the rest is a device error.
pub fn write_error(name: &str, e: WriteError) -> Error {
    match e {
        WriteError::Concurrent { .. } => Error::Busy(format!("{name}: {e}")),
        WriteError::Io(io) => Error::io(format!("cannot write the header of {name}"), io),
        other => Error::Device(format!("{name}: {other}")),
    }
}

impl ReadAt for Backing {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        self.file.len_bytes()
    }
}

impl WriteAt for Backing {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        self.tick();
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.tick();
        Ok(())
    }
}

/// Two fresh random 64-byte salts for the binary headers of a header write (primary, secondary).
pub fn random_salts() -> Result<[[u8; 64]; 2]> {
    let mut s = [[0u8; 64]; 2];
    for salt in &mut s {
        random::fill(salt).map_err(|e| Error::io("cannot read the OS random generator", e))?;
    }
    Ok(s)
}

/// Opens BACKING for a metadata update: read-write, locked for update, LUKS2 (not ambiguous),
/// supported. The header is read under the lock, so it is the one the update is based on.
pub fn open_for_update(path: &Path) -> Result<(Backing, Header)> {
    let dev = Backing::open(path, true)?;
    dev.lock_for_update()?;
    let header = dev.luks2_header()?;
    warn_damaged_copy(&header, path);
    if !header.metadata.unsupported.is_empty() {
        return Err(Error::Device(format!(
            "{} uses what vaultdisk does not rewrite: {}",
            dev.name(),
            header.metadata.unsupported.join("; ")
        )));
    }
    Ok((dev, header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(dir: &Path) -> PathBuf {
        let path = dir.join("v.img");
        crate::format::test_volume(&path, b"pw");
        path
    }

    fn poke(path: &Path, offset: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, bytes, offset).expect("write");
    }

    #[test]
    fn a_foreign_signature_where_the_primary_was_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = volume(dir.path());
        let read = |p: &Path| read_header(&open_backing(p, false).expect("open"), p);
        assert!(read(&path).is_ok());
        // Wiped primary: the secondary copy is used (with a warning), as before.
        poke(&path, 0, &[0u8; 0x4000]);
        assert!(read(&path).is_ok());
        // Then an LVM2 label: refused, exit 4, naming it.
        poke(&path, 512, b"LABELONE");
        let e = read(&path).err().map(|e| (e.exit_code(), e.to_string()));
        let (code, text) = e.expect("refused");
        assert_eq!(code, 4);
        assert!(
            text.contains("ambiguous signatures") && text.contains("LABELONE at byte 512"),
            "{text}"
        );
        let dev = Backing::open(&path, false).expect("open");
        assert!(dev.luks2_header().is_err());
        let (h, found) = dev.luks2_header_with_signature().expect("read");
        assert_eq!(h.current, CopyKind::Secondary);
        assert_eq!(found.map(|s| s.magic), Some("LABELONE"));
        assert_eq!(open_for_update(&path).err().map(|e| e.exit_code()), Some(4));
    }
}
