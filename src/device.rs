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
    path: PathBuf,
    /// A detached header (`--header FILE`): the file, opened, and its path.
    header: Option<(Window<Arc<File>>, PathBuf)>,
}

/// Where the header and keyslots of a volume are: at the start of its place in BACKING, or in
/// a file of their own (`--header FILE`, cryptsetup's detached header), the data staying in
/// BACKING from the segment's offset (0 for `cryptsetup luksFormat --header`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HeaderAt {
    /// The header is in BACKING.
    #[default]
    InBacking,
    /// The header is in this file (or block device).
    File(PathBuf),
}

impl HeaderAt {
    /// `--header FILE` when given, else [`HeaderAt::InBacking`].
    pub fn from_option(header: Option<&Path>) -> HeaderAt {
        header.map_or(HeaderAt::InBacking, |h| HeaderAt::File(h.to_path_buf()))
    }

    /// Whether the header is kept apart from the data.
    pub fn is_detached(&self) -> bool {
        matches!(self, HeaderAt::File(_))
    }

    /// The file holding the header: the detached header, else `backing`.
    pub fn path<'a>(&'a self, backing: &'a Path) -> &'a Path {
        match self {
            HeaderAt::InBacking => backing,
            HeaderAt::File(h) => h,
        }
    }
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

    /// The backing path the data lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the header is detached (`--header FILE`).
    pub fn is_detached(&self) -> bool {
        self.header.is_some()
    }

    /// Where the header and keyslots are read from: the detached header file, else the
    /// volume's window of the backing.
    pub fn header_window(&self) -> &Window<Arc<File>> {
        self.header.as_ref().map_or(&self.window, |(w, _)| w)
    }

    /// The path of the file holding the header (the detached header, else the backing), as
    /// messages about the header and keyslots name it.
    pub fn header_path(&self) -> &Path {
        self.header.as_ref().map_or(&self.path, |(_, p)| p)
    }

    /// Reads the header ([`read_header`]) from where it is.
    pub fn read_header(&self) -> Result<VolumeHeader> {
        read_header(self.header_window(), self.header_path())
    }

    /// The data segment of `header` relative to the backing file, checked against the
    /// window's size: a segment that does not fit (past the end of the data device, or a
    /// header whose data offset lies beyond it) is exit 4.
    pub fn segment(&self, header: &VolumeHeader) -> Result<Segment> {
        let len = self.len();
        let segment = match header {
            VolumeHeader::Luks2(h) => luks2_segment_in(h, len, &self.path, self.is_detached())?,
            VolumeHeader::Luks1(h) => {
                let seg = if self.is_detached() {
                    h.detached_segment(len)
                } else {
                    h.segment(len)
                };
                seg.map_err(|e| Error::Device(format!("{}: {e}", self.path.display())))?
            }
        };
        self.absolute(segment)
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
/// partition number out of range exit 1, a window that does not fit the file exit 4.
pub fn locate(path: &Path, place: Place, write: bool, exclusive: bool) -> Result<Located> {
    locate_with(path, place, &HeaderAt::InBacking, write, exclusive)
}

/// [`locate`] with the header where `header` says: a detached header file is opened read-only
/// (as a whole; `--partition` and the window apply to BACKING only) and the header is then
/// read from it ([`Located::header_window`]).
pub fn locate_with(
    path: &Path,
    place: Place,
    header: &HeaderAt,
    write: bool,
    exclusive: bool,
) -> Result<Located> {
    let header = match header {
        HeaderAt::InBacking => None,
        HeaderAt::File(h) => {
            let file = open_file(h, false, false)?;
            let total =
                len(&file).map_err(|e| Error::io(format!("cannot stat {}", h.display()), e))?;
            let w = Window::new(Arc::new(file), 0, total)
                .map_err(|e| Error::io(format!("cannot read {}", h.display()), e))?;
            Some((w, h.clone()))
        }
    };
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
        path: path.to_path_buf(),
        header,
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
    if detached {
        let end = seg.size_bytes.map_or(
            seg.offset_bytes.checked_add(u64::from(seg.sector_size)),
            |s| seg.offset_bytes.checked_add(s),
        );
        if end.is_none_or(|end| end > file_len) {
            let what = match seg.size_bytes {
                Some(s) => format!("{s} bytes from byte {}", seg.offset_bytes),
                None => format!(
                    "at least one {}-byte sector from byte {}",
                    seg.sector_size, seg.offset_bytes
                ),
            };
            return Err(Error::Device(format!(
                "{name} is too small for its detached header: the data segment needs {what} but {name} has {file_len} bytes"
            )));
        }
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

/// Environment variable choosing what the crash of [`CRASH_ENV`] leaves: `exit` (the default)
/// exits, so everything written stays (a killed process: the page cache reaches the disk);
/// `power` first undoes every write and length change since the last sync, in reverse order
/// (a power cut with a drive that loses its volatile cache).
#[cfg(feature = "fault-injection")]
pub const CRASH_MODE_ENV: &str = "VAULTDISK_CRASH_MODE";

/// What a simulated crash leaves on disk.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CrashMode {
    /// Every write made so far (process exit).
    Exit,
    /// Only what the last sync made durable (power loss).
    Power,
}

#[cfg(feature = "fault-injection")]
impl CrashMode {
    fn parse(value: Option<&str>) -> std::result::Result<CrashMode, String> {
        match value {
            None | Some("") | Some("exit") => Ok(CrashMode::Exit),
            Some("power") => Ok(CrashMode::Power),
            Some(other) => Err(other.to_string()),
        }
    }
}

/// What one unsynced change overwrote: `old` was at `offset`, and the file had `old_len` bytes.
#[cfg(feature = "fault-injection")]
struct Overwritten {
    offset: u64,
    old: Vec<u8>,
    old_len: u64,
}

/// The bytes a truncation to a shorter length keeps for the undo; past this, the restored tail
/// reads as zeros (only resize --force shrinks, and only data past the new size is there).
#[cfg(feature = "fault-injection")]
const MAX_KEPT_TAIL: u64 = 64 << 20;

/// The fault-injection hook: counts writes, syncs and length changes, and right after the k-th
/// one prints one line and exits with `error::exit::CRASH`. In the `power` mode it keeps what
/// each change overwrote until the next sync and, at the crash point, puts it back (last change
/// first), so the file holds only what had been synced.
#[cfg(feature = "fault-injection")]
struct CrashHook {
    after: Option<u64>,
    mode: std::result::Result<CrashMode, String>,
    ops: std::cell::Cell<u64>,
    unsynced: std::cell::RefCell<Vec<Overwritten>>,
}

#[cfg(feature = "fault-injection")]
impl CrashHook {
    fn from_env() -> CrashHook {
        let mode = std::env::var(CRASH_MODE_ENV).ok();
        CrashHook {
            after: std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok()),
            mode: CrashMode::parse(mode.as_deref()),
            ops: std::cell::Cell::new(0),
            unsynced: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// True when changes must be remembered for an undo (armed, power mode).
    fn journaling(&self) -> bool {
        self.after.is_some() && self.mode == Ok(CrashMode::Power)
    }

    /// Before writing `len` bytes at `offset` of `file`: keep what is there.
    fn before_write(&self, file: &File, offset: u64, len: usize) -> std::io::Result<()> {
        if !self.journaling() {
            return Ok(());
        }
        let old_len = file.metadata()?.len();
        let end = offset.saturating_add(len as u64).min(old_len);
        let old = read_range(file, offset, end.saturating_sub(offset))?;
        self.unsynced.borrow_mut().push(Overwritten {
            offset,
            old,
            old_len,
        });
        Ok(())
    }

    /// Before setting the length of `file` to `new_len`: keep the old length (and the tail a
    /// shrink drops, up to MAX_KEPT_TAIL bytes).
    fn before_set_len(&self, file: &File, new_len: u64) -> std::io::Result<()> {
        if !self.journaling() {
            return Ok(());
        }
        let old_len = file.metadata()?.len();
        let tail = old_len.saturating_sub(new_len).min(MAX_KEPT_TAIL);
        let old = read_range(file, new_len, tail)?;
        self.unsynced.borrow_mut().push(Overwritten {
            offset: new_len.min(old_len),
            old,
            old_len,
        });
        Ok(())
    }

    /// After a successful sync: everything so far is durable.
    fn synced(&self) {
        self.unsynced.borrow_mut().clear();
    }

    fn tick(&self, file: &File) {
        let n = self.ops.get() + 1;
        self.ops.set(n);
        // A mistyped mode must not silently test the other one.
        let misnamed = self.after.is_some() && self.mode.is_err();
        if self.after != Some(n) && !misnamed {
            return;
        }
        match self.mode {
            Ok(CrashMode::Exit) => {
                eprintln!("vaultdisk: {CRASH_ENV}={n}: simulated crash");
                std::process::exit(crate::error::exit::CRASH);
            }
            Ok(CrashMode::Power) => {
                let undone = self.unsynced.borrow().len();
                match self.undo(file) {
                    Ok(()) => {
                        eprintln!(
                            "vaultdisk: {CRASH_ENV}={n}: simulated power loss ({undone} unsynced writes undone)"
                        );
                        std::process::exit(crate::error::exit::CRASH);
                    }
                    Err(e) => {
                        eprintln!(
                            "vaultdisk: {CRASH_ENV}={n}: simulated power loss failed: cannot undo the unsynced writes: {e}"
                        );
                        std::process::exit(crate::error::exit::DEVICE);
                    }
                }
            }
            Err(ref bad) => {
                let bad = crate::escape::escape_control(bad);
                eprintln!("vaultdisk: {CRASH_MODE_ENV}={bad} is not `exit` or `power`");
                std::process::exit(crate::error::exit::USAGE);
            }
        }
    }

    /// Puts back what every unsynced change overwrote, last change first, and syncs.
    fn undo(&self, file: &File) -> std::io::Result<()> {
        let journal = std::mem::take(&mut *self.unsynced.borrow_mut());
        for change in journal.iter().rev() {
            std::os::unix::fs::FileExt::write_all_at(file, &change.old, change.offset)?;
            if file.metadata()?.len() != change.old_len {
                file.set_len(change.old_len)?;
            }
        }
        file.sync_all()
    }
}

/// `len` bytes of `file` at `offset`, fewer if the file ends first.
#[cfg(feature = "fault-injection")]
fn read_range(file: &File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    let mut done = 0;
    while done < buf.len() {
        let got =
            std::os::unix::fs::FileExt::read_at(file, &mut buf[done..], offset + done as u64)?;
        if got == 0 {
            break;
        }
        done += got;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The backing file opened for reading its header or for a metadata update. Header writes go
/// through [`WriteAt`], length changes through [`Backing::set_len`]; builds with the
/// `fault-injection` feature count every write, sync and length change so tests can simulate a
/// crash right after the k-th one (`VAULTDISK_CRASH_AFTER_WRITES=k`), optionally as a power
/// loss that undoes what was not synced (`VAULTDISK_CRASH_MODE=power`).
pub struct Backing {
    file: Arc<File>,
    path: PathBuf,
    /// The window of `file` the volume lives in (`--partition`, `--device-offset`): its first
    /// byte and length. Reads and writes are shifted into it and confined to it; None: all of
    /// the file.
    window: Option<(u64, u64)>,
    /// The data file of a detached header, held open (and flocked) for the update.
    data_lock: Option<Arc<File>>,
    #[cfg(feature = "fault-injection")]
    crash: CrashHook,
}

impl Backing {
    /// Opens `path` (read-write when `write`).
    pub fn open(path: &Path, write: bool) -> Result<Backing> {
        Ok(Backing::from_file(open_backing(path, write)?, path))
    }

    /// Opens the volume at `place` in `path` (read-write when `write`): a partition or byte
    /// window found by [`locate`] (a file without a partition table or a window past its end
    /// is exit 4, a partition it does not have exit 1), or the whole file as [`Backing::open`].
    pub fn open_in(path: &Path, place: Place, write: bool) -> Result<Backing> {
        if place == Place::Whole {
            return Backing::open(path, write);
        }
        Ok(Backing::from_located(locate(path, place, write, false)?))
    }

    /// The backing of `located` (its detached header, if any, is not part of it): header
    /// reads and writes go to its window, offsets counted from the window's start.
    pub fn from_located(located: Located) -> Backing {
        let window = (!located.whole).then(|| (located.offset(), located.len()));
        Backing {
            file: Arc::clone(located.window.inner()),
            path: located.path,
            window,
            data_lock: None,
            #[cfg(feature = "fault-injection")]
            crash: CrashHook::from_env(),
        }
    }

    /// Wraps an already opened backing file named `path`.
    pub fn from_file(file: File, path: &Path) -> Backing {
        Backing {
            file: Arc::new(file),
            path: path.to_path_buf(),
            window: None,
            data_lock: None,
            #[cfg(feature = "fault-injection")]
            crash: CrashHook::from_env(),
        }
    }

    /// The window of the file the volume lives in, as (first byte, length); None when it is
    /// the whole file or device (only then may its length change).
    pub fn window(&self) -> Option<(u64, u64)> {
        self.window
    }

    /// The absolute offset of `[offset, offset + count)`, or an error when any of it lies
    /// past the window's end (nothing outside the window is ever read or written).
    fn absolute(
        &self,
        offset: u64,
        count: usize,
        kind: std::io::ErrorKind,
    ) -> std::io::Result<u64> {
        let Some((start, len)) = self.window else {
            return Ok(offset);
        };
        let end = u64::try_from(count)
            .ok()
            .and_then(|c| offset.checked_add(c));
        match end {
            Some(end) if end <= len => Ok(start + offset),
            _ => Err(std::io::Error::new(
                kind,
                format!(
                    "{count} bytes at byte {offset} reach past the end of the {len}-byte window"
                ),
            )),
        }
    }

    /// Holds the exclusive update lock until this `Backing` is dropped (daemon::lock_for_update).
    pub fn lock_for_update(&self) -> Result<()> {
        crate::daemon::lock_for_update(&self.file, &self.path).map_err(|e| match self.window {
            Some(_) => crate::daemon::busy_in_window(e, &self.path),
            None => e,
        })
    }

    /// Whether this is a detached header opened by [`open_for_update_at`] (its data file is
    /// held locked while it lives).
    pub fn is_detached(&self) -> bool {
        self.data_lock.is_some()
    }

    /// The open backing file (to read; header writes go through `WriteAt`, length changes
    /// through [`Backing::set_len`], so the fault-injection hook sees them).
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
        match read_header_with_signature(self, &self.path)? {
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

    /// Sets the file's length to `len` bytes (File::set_len), then makes it durable
    /// (File::sync_all); the fault-injection hook counts each step.
    pub fn set_len(&self, len: u64) -> std::io::Result<()> {
        if self.window.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the volume lies in a partition or byte window, whose length is fixed",
            ));
        }
        #[cfg(feature = "fault-injection")]
        self.crash.before_set_len(&self.file, len)?;
        self.file.set_len(len)?;
        self.tick();
        self.file.sync_all()?;
        self.synced();
        self.tick();
        Ok(())
    }

    fn tick(&self) {
        #[cfg(feature = "fault-injection")]
        self.crash.tick(&self.file);
    }

    fn synced(&self) {
        #[cfg(feature = "fault-injection")]
        self.crash.synced();
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
        let at = self.absolute(offset, buf.len(), std::io::ErrorKind::UnexpectedEof)?;
        self.file.read_exact_at(buf, at)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        match self.window {
            Some((_, len)) => Ok(len),
            None => self.file.len_bytes(),
        }
    }
}

impl WriteAt for Backing {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let offset = self.absolute(offset, buf.len(), std::io::ErrorKind::InvalidInput)?;
        #[cfg(feature = "fault-injection")]
        self.crash.before_write(&self.file, offset, buf.len())?;
        self.file.write_all_at(buf, offset)?;
        self.tick();
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.synced();
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
    open_for_update_in(path, Place::Whole, &HeaderAt::InBacking)
}

/// [`open_for_update`] of the header where `header` says. A detached header file is the
/// [`Backing`] written (so the update lock and the fault-injection hook apply to it); the data
/// file BACKING is opened read-only and flocked for the update as well, because that is the
/// file a serving daemon locks (daemon::lock): a served volume refuses header updates (exit
/// 5) with a detached header as with an attached one. The header's data segment must fit
/// BACKING (exit 4), so a header is never updated against the wrong device.
pub fn open_for_update_at(backing: &Path, header: &HeaderAt) -> Result<(Backing, Header)> {
    open_for_update_in(backing, Place::Whole, header)
}

/// The one entry for a header update of the volume at `place` in `backing` (`--partition N`,
/// `--device-offset`/`--device-size`, or the whole file) with its header where `header` says
/// (`--header FILE`). With the header in BACKING the [`Backing`] is the volume's window:
/// header writes, the fault-injection hook and the update lock (a flock of the whole file:
/// one volume of an image is updated or served at a time) work as for a whole file, and
/// nothing outside the window is read or written. With a detached header the header file is
/// the [`Backing`] and the data (the window of BACKING) is locked as for
/// [`open_for_update_at`]; the data segment must fit the window (exit 4).
pub fn open_for_update_in(
    backing: &Path,
    place: Place,
    header: &HeaderAt,
) -> Result<(Backing, Header)> {
    match header {
        HeaderAt::InBacking => {
            let dev = Backing::open_in(backing, place, true)?;
            checked_for_update(dev)
        }
        HeaderAt::File(header_path) => {
            let (data, data_len) = lock_data(backing, place)?;
            let (mut dev, parsed) = checked_for_update(Backing::open(header_path, true)?)?;
            luks2_segment_in(&parsed, data_len, backing, true)?;
            dev.data_lock = Some(data);
            Ok((dev, parsed))
        }
    }
}

/// Takes the update lock of `dev`, then reads and checks its header under it.
fn checked_for_update(dev: Backing) -> Result<(Backing, Header)> {
    dev.lock_for_update()?;
    let header = dev.luks2_header()?;
    warn_damaged_copy(&header, dev.path());
    if !header.metadata.unsupported.is_empty() {
        return Err(Error::Device(format!(
            "{} uses what vaultdisk does not rewrite: {}",
            dev.name(),
            header.metadata.unsupported.join("; ")
        )));
    }
    Ok((dev, header))
}

/// For an update of a detached header (`header` is a file): BACKING, the data, opened
/// read-only and flocked as for an update (daemon::lock_for_update: exit 5 when a daemon
/// serves it), to hold while the header file is written; None when the header is in BACKING
/// (its own [`Backing`] takes the lock). The data is always locked before the header.
pub fn lock_data_for_update(backing: &Path, header: &HeaderAt) -> Result<Option<File>> {
    if !header.is_detached() {
        return Ok(None);
    }
    let data = open_backing(backing, false)?;
    crate::daemon::lock_for_update(&data, backing)?;
    Ok(Some(data))
}

/// [`lock_data_for_update`] for data at `place` in BACKING: the place is found first (a
/// partition or window it does not have is refused before anything is locked or written).
pub fn lock_data_for_update_in(
    backing: &Path,
    place: Place,
    header: &HeaderAt,
) -> Result<Option<Arc<File>>> {
    if !header.is_detached() {
        return Ok(None);
    }
    Ok(Some(lock_data(backing, place)?.0))
}

/// The data of a detached header at `place` in `backing`, opened read-only and flocked for
/// an update, and the window's length.
fn lock_data(backing: &Path, place: Place) -> Result<(Arc<File>, u64)> {
    let located = locate(backing, place, false, false)?;
    let file = Arc::clone(located.window.inner());
    crate::daemon::lock_for_update(&file, backing).map_err(|e| match place {
        Place::Whole => e,
        _ => crate::daemon::busy_in_window(e, backing),
    })?;
    Ok((file, located.len()))
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

    /// A Backing whose hook journals (power mode) but never reaches its crash point.
    #[cfg(feature = "fault-injection")]
    fn journaling(path: &Path) -> Backing {
        let file = open_backing(path, true).expect("open");
        Backing {
            file: Arc::new(file),
            path: path.to_path_buf(),
            window: None,
            data_lock: None,
            crash: CrashHook {
                after: Some(u64::MAX),
                mode: Ok(CrashMode::Power),
                ops: std::cell::Cell::new(0),
                unsynced: std::cell::RefCell::new(Vec::new()),
            },
        }
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn power_loss_undoes_exactly_what_was_not_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").expect("write");
        let dev = journaling(&path);
        dev.write_all_at(b"ab", 0).expect("write");
        dev.sync_data().expect("sync");
        let synced = std::fs::read(&path).expect("read");
        assert_eq!(synced, b"ab23456789");
        // Unsynced: an overwrite, a write past the end, a grow, overlapping rewrites, a shrink.
        dev.write_all_at(b"XY", 4).expect("write");
        dev.write_all_at(b"tail", 9).expect("write");
        dev.crash.before_set_len(&dev.file, 20).expect("journal");
        dev.file.set_len(20).expect("grow");
        dev.write_all_at(b"QQQQQQ", 2).expect("write");
        dev.crash.before_set_len(&dev.file, 3).expect("journal");
        dev.file.set_len(3).expect("shrink");
        assert_eq!(dev.crash.unsynced.borrow().len(), 5);
        dev.crash.undo(&dev.file).expect("undo");
        assert_eq!(std::fs::read(&path).expect("read"), synced);
        assert!(dev.crash.unsynced.borrow().is_empty());
        // Backing::set_len syncs: nothing to undo afterwards.
        dev.set_len(4).expect("set_len");
        dev.crash.undo(&dev.file).expect("undo");
        assert_eq!(std::fs::read(&path).expect("read"), b"ab23");
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn crash_mode_is_exit_unless_power_and_refuses_others() {
        assert_eq!(CrashMode::parse(None), Ok(CrashMode::Exit));
        assert_eq!(CrashMode::parse(Some("exit")), Ok(CrashMode::Exit));
        assert_eq!(CrashMode::parse(Some("power")), Ok(CrashMode::Power));
        assert_eq!(CrashMode::parse(Some("Power")), Err("Power".to_string()));
    }

    #[test]
    fn a_backing_in_a_window_is_shifted_and_confined() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0xAAu8; 65536]).expect("write");
        let place = Place::Range {
            offset: 4096,
            size: Some(8192),
        };
        let dev = Backing::open_in(&path, place, true).expect("open");
        assert_eq!(dev.window(), Some((4096, 8192)));
        assert_eq!(dev.len_bytes().expect("len"), 8192);
        dev.write_all_at(b"in", 8190).expect("write at the end");
        assert!(dev.write_all_at(b"out", 8190).is_err());
        assert!(dev.write_all_at(b"x", u64::MAX).is_err());
        let mut b = [0u8; 3];
        assert!(dev.read_exact_at(&mut b, 8190).is_err());
        assert!(dev.set_len(100).is_err());
        let bytes = std::fs::read(&path).expect("read");
        let mut want = vec![0xAAu8; 65536];
        want[4096 + 8190..4096 + 8192].copy_from_slice(b"in");
        assert_eq!(bytes, want);
        // A window past the end of the file is exit 4 (a layout that does not fit the disk),
        // as is a partition of a file without a partition table.
        let past = Place::Range {
            offset: 65536 - 4096,
            size: Some(8192),
        };
        let code = |p| {
            Backing::open_in(&path, p, false)
                .err()
                .map(|e| e.exit_code())
        };
        assert_eq!(code(past), Some(4));
        assert_eq!(code(Place::Partition(1)), Some(4));
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
