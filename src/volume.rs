//! Header-free data path: backing file + volume key -> plaintext reads and writes by sector.
//!
//! The plaintext is `segment.data_size_bytes` long and may be read or written at any offset
//! and length. Partial sectors are read-modify-written under a range lock so that two
//! writers touching one sector cannot lose each other's bytes. Sectors never written (a hole,
//! past the backing file's end, or all-zero ciphertext) read as zeros, the way a freshly
//! allocated, never-encrypted LUKS data area would be treated by a sparse-file user; what we
//! write is always real aes-xts-plain64 ciphertext, so cryptsetup reads our data.
use crate::crypto::xts::SectorCipher;
use crate::error::{Error, Result};
use crate::geometry::{SectorNo, SectorSpan, Segment};
use crate::secret::VolumeKey;
use log::warn;
use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Scratch buffers above this size are freed after use instead of kept per thread.
const SCRATCH_KEEP_BYTES: usize = 4 << 20;
/// Boundary O_DIRECT needs for buffers, offsets and lengths (`pub`: fusefs aligns its reply
/// buffers to it so whole-sector reads can take the direct path).
pub const DIRECT_ALIGN_BYTES: usize = 4096;
/// Reads of at least this many bytes go to the backing file with O_DIRECT. Measured on the
/// root disk here (1 GiB sequential through PLAIN): with 1 MiB FUSE reads (kernel readahead
/// raised, see daemon::serve::raise_readahead) direct reads ran at 1.1-1.55 GB/s and 0.4-0.55
/// daemon CPU s/GiB, buffered ones at 0.72-1.35 GB/s and up to 1.2 s/GiB; at the default
/// 128 KiB requests direct reads lost (0.68-0.93 GB/s against 0.46-1.55 buffered), hence the
/// size.
const DIRECT_MIN_BYTES: usize = 512 << 10;

/// An unlocked data segment over an open backing file.
pub struct Volume {
    backing: File,
    /// A second open of the backing file with O_DIRECT (read-write unless the volume is
    /// read-only), for large aligned reads and writes (see `read_backing`, `write_backing`).
    /// None on geometries other than 4096-byte sectors at a 4096-aligned data offset, or
    /// where the file system refuses O_DIRECT.
    direct: Option<File>,
    /// Cleared after the first EINVAL from a direct read: from then on reads are buffered.
    direct_read_ok: AtomicBool,
    /// Cleared after the first EINVAL from a direct write: from then on writes are buffered.
    direct_write_ok: AtomicBool,
    segment: Segment,
    /// Current plaintext size: `segment.data_size_bytes` until an online grow.
    size_bytes: AtomicU64,
    cipher: SectorCipher,
    read_only: bool,
    /// Whether `discard` may punch (open/mount `--allow-discards`); off by default.
    allow_discards: bool,
    locks: RangeLocks,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("segment", &self.segment)
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

impl Volume {
    /// Joins a backing file (opened read-write unless `read_only`) with its segment and key.
    /// Fails with `Error::Device` for a segment this data path cannot serve or a key that is
    /// not 32 or 64 bytes.
    pub fn new(
        backing: File,
        segment: Segment,
        key: &VolumeKey,
        read_only: bool,
    ) -> Result<Volume> {
        segment
            .validate()
            .map_err(|e| Error::Device(format!("data segment: {e}")))?;
        let cipher = SectorCipher::new(key.expose_secret())
            .map_err(|e| Error::Device(format!("volume key: {e}")))?;
        let direct = if segment.sector_size_bytes() == DIRECT_ALIGN_BYTES
            && segment
                .data_offset_bytes
                .is_multiple_of(DIRECT_ALIGN_BYTES as u64)
            && direct_alignment_fits(&backing)
        {
            reopen_direct(&backing, !read_only)
        } else {
            None
        };
        Ok(Volume {
            backing,
            size_bytes: AtomicU64::new(segment.data_size_bytes),
            direct_read_ok: AtomicBool::new(direct.is_some()),
            direct_write_ok: AtomicBool::new(direct.is_some() && !read_only),
            direct,
            segment,
            cipher,
            read_only,
            allow_discards: false,
            locks: RangeLocks::default(),
        })
    }

    /// The same volume with discards allowed (`true`) or refused: `discard` fails with
    /// EOPNOTSUPP unless allowed, because punched sectors show which blocks are unused.
    pub fn with_discards(mut self, allow: bool) -> Volume {
        self.allow_discards = allow;
        self
    }

    /// Whether `discard` punches (see [`Volume::with_discards`]).
    pub fn allows_discards(&self) -> bool {
        self.allow_discards
    }

    /// Discards `len` plaintext bytes at `plain_offset` (FUSE fallocate PUNCH_HOLE or
    /// ZERO_RANGE): afterwards the range reads as zeros. Whole sectors become a hole in a
    /// backing file (fallocate PUNCH_HOLE), or BLKDISCARD on a block device (BLKZEROOUT
    /// when `zero` asks for zeros the device must guarantee); sectors the range covers only
    /// in part get zeros written through the cipher, so bytes outside the range stay. The
    /// range is clamped at the end of the volume.
    ///
    /// Errors: EOPNOTSUPP unless discards are allowed (nothing is changed), EROFS on a
    /// read-only volume, the backing file's own error otherwise.
    pub fn discard(&self, plain_offset: u64, len: u64, zero: bool) -> io::Result<()> {
        if !self.allow_discards {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let size = self.size_bytes();
        let end = plain_offset.saturating_add(len).min(size);
        if plain_offset >= end {
            return Ok(());
        }
        let ss = self.segment.sector_size_bytes() as u64;
        let whole_start = plain_offset.div_ceil(ss) * ss;
        let whole_end = end / ss * ss;
        if whole_start >= whole_end {
            return self.write_zeros(plain_offset, end);
        }
        self.write_zeros(plain_offset, whole_start)?;
        self.write_zeros(whole_end, end)?;
        let too_long = || io::Error::from_raw_os_error(libc::EINVAL);
        let span_len = usize::try_from(whole_end - whole_start).map_err(|_| too_long())?;
        let span = self.span(whole_start, span_len).ok_or_else(too_long)?;
        // Exclusive: a read-modify-write of a neighbour must not write back stale sectors
        // over the hole, nor a reader see half of it.
        let _guard = self.locks.lock(&span, true);
        let backing_offset = self.segment.backing_offset(span.first);
        let backing_len = whole_end - whole_start;
        let res = if crate::device::is_block_device(&self.backing) {
            if zero {
                crate::sys::block_device_zero_out(&self.backing, backing_offset, backing_len)
            } else {
                crate::sys::block_device_discard(&self.backing, backing_offset, backing_len)
            }
        } else {
            punch_hole(&self.backing, backing_offset, backing_len)
        };
        res.inspect_err(|e| {
            warn!(
                "discard of sectors {}..{} failed: {e}",
                span.first.0,
                span.end().0
            )
        })
    }

    /// Writes zeros over plaintext `start..end` (less than two sectors: the partial ends of
    /// a discard), through the cipher like any write.
    fn write_zeros(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let len =
            usize::try_from(end - start).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let zeros = vec![0u8; len];
        self.write_at(start, &zeros).map(|_| ())
    }

    /// Plaintext size in bytes; changes only by `grow_to_backing`.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    /// Grows the plaintext to the whole sectors the backing file now holds past the data
    /// offset (online resize of a dynamic segment). Never shrinks. Returns (old, new) size.
    pub fn grow_to_backing(&self) -> io::Result<(u64, u64)> {
        let file_len = crate::device::len(&self.backing)?;
        let ss = self.segment.sector_size_bytes() as u64;
        let fits = file_len.saturating_sub(self.segment.data_offset_bytes) / ss * ss;
        let old = self.size_bytes.fetch_max(fits, Ordering::AcqRel);
        Ok((old, old.max(fits)))
    }

    /// The sectors of a plaintext range, clamped at the current size.
    fn span(&self, plain_offset: u64, len: usize) -> Option<SectorSpan> {
        Segment {
            data_size_bytes: self.size_bytes(),
            ..self.segment
        }
        .span(plain_offset, len)
    }

    /// The segment this volume serves.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Whether writes are refused with EROFS.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Reads plaintext at `plain_offset` into `buf`. Returns the bytes read: `buf.len()`
    /// unless the range runs past the end (then short, and 0 at or past the end).
    pub fn read_at(&self, plain_offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(span) = self.span(plain_offset, buf.len()) else {
            return Ok(0);
        };
        let ss = self.segment.sector_size_bytes();
        let out = &mut buf[..span.len_bytes];
        // Shared: readers may overlap each other but never a half-written sector.
        let _guard = self.locks.lock(&span, false);
        let res = if span.aligned(ss) {
            // Whole sectors decrypt straight into the caller's buffer (the page-cache case).
            self.read_sectors(span.first, out)
        } else {
            with_scratch(sectors_len(&span, ss), |scratch| {
                self.read_sectors(span.first, scratch)?;
                out.copy_from_slice(
                    &scratch[span.head_skip_bytes..span.head_skip_bytes + span.len_bytes],
                );
                Ok(())
            })
        };
        match res {
            Ok(()) => Ok(span.len_bytes),
            Err(e) => {
                warn!(
                    "read of sectors {}..{} failed: {e}",
                    span.first.0,
                    span.end().0
                );
                Err(e)
            }
        }
    }

    /// Writes `data` as plaintext at `plain_offset`. Returns the bytes written: all of
    /// `data`, or fewer when it runs past the end of the volume (like a block device).
    ///
    /// Errors: EROFS on a read-only volume; ENOSPC when `plain_offset` is at or past the end
    /// (a disk has no room beyond its last sector; EFBIG would suggest a file size limit);
    /// the backing file's own error otherwise (ENOSPC from a full disk passes through).
    pub fn write_at(&self, plain_offset: u64, data: &[u8]) -> io::Result<usize> {
        if self.read_only {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let Some(span) = self.span(plain_offset, data.len()) else {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        };
        let ss = self.segment.sector_size_bytes();
        let data = &data[..span.len_bytes];
        // Exclusive even for aligned runs: a concurrent read-modify-write of a neighbour
        // that covers the same sector must not write back stale bytes over ours.
        let _guard = self.locks.lock(&span, true);
        let res = with_scratch(sectors_len(&span, ss), |buf| {
            if span.aligned(ss) {
                // Whole sectors (the page-cache and loop-device case): encrypt straight from
                // the request into the scratch buffer, one pass fewer than copy-then-encrypt.
                self.cipher.encrypt_sectors_into(
                    data,
                    buf,
                    ss,
                    self.segment.iv_sector(span.first),
                    self.segment.iv_step(),
                );
                return self.write_backing(buf, self.segment.backing_offset(span.first));
            }
            let last_start = buf.len() - ss;
            if span.partial_head() {
                self.read_sectors(span.first, &mut buf[..ss])?;
            }
            if span.partial_tail(ss) && (span.count_sectors > 1 || !span.partial_head()) {
                let last = SectorNo(span.first.0 + span.count_sectors - 1);
                self.read_sectors(last, &mut buf[last_start..])?;
            }
            buf[span.head_skip_bytes..span.head_skip_bytes + span.len_bytes].copy_from_slice(data);
            self.cipher.encrypt_sectors(
                buf,
                ss,
                self.segment.iv_sector(span.first),
                self.segment.iv_step(),
            );
            self.backing
                .write_all_at(buf, self.segment.backing_offset(span.first))
        });
        match res {
            Ok(()) => Ok(span.len_bytes),
            Err(e) => {
                warn!(
                    "write of sectors {}..{} failed: {e}",
                    span.first.0,
                    span.end().0
                );
                Err(e)
            }
        }
    }

    /// Reads ciphertext at `backing_offset` until `buf` is full or the file ends. Large
    /// aligned reads use the O_DIRECT handle: the disk then fills `buf` itself, where a
    /// buffered pread first fills the page cache and then copies (that copy was two thirds of
    /// the daemon's CPU on slow sequential reads from the root disk here), and the ciphertext
    /// is not cached beside the plaintext the kernel caches for PLAIN. O_DIRECT reads see
    /// completed buffered writes: the kernel writes dirty cached pages of the range first.
    fn read_backing(&self, buf: &mut [u8], backing_offset: u64) -> io::Result<usize> {
        if let Some(direct) = self.direct_for(&self.direct_read_ok, buf, backing_offset) {
            match read_direct_until_eof(direct, buf, backing_offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    warn!(
                        "O_DIRECT read refused ({e}); reading through the page cache from now on"
                    );
                    self.direct_read_ok.store(false, Ordering::Relaxed);
                }
                res => return res,
            }
        }
        read_until_eof(&self.backing, buf, backing_offset)
    }

    /// Writes ciphertext at `backing_offset`. Large aligned runs (the kernel's 1 MiB
    /// write-backs) use the O_DIRECT handle: the disk takes the bytes from `buf`, where a
    /// buffered pwrite first copies them into the backing's page cache (and, on a block
    /// device over a file such as a loop device, into a second cache below it). Durability
    /// is unchanged: `flush` still fdatasyncs, which also flushes the disk's write cache.
    fn write_backing(&self, buf: &[u8], backing_offset: u64) -> io::Result<()> {
        if let Some(direct) = self.direct_for(&self.direct_write_ok, buf, backing_offset) {
            match direct.write_all_at(buf, backing_offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    warn!(
                        "O_DIRECT write refused ({e}); writing through the page cache from now on"
                    );
                    self.direct_write_ok.store(false, Ordering::Relaxed);
                }
                res => return res,
            }
        }
        self.backing.write_all_at(buf, backing_offset)
    }

    /// The O_DIRECT handle, if `buf` at `backing_offset` may take it: large, aligned in
    /// memory, length and offset, and `ok` (reads' or writes' flag) not cleared by an EINVAL.
    fn direct_for(&self, ok: &AtomicBool, buf: &[u8], backing_offset: u64) -> Option<&File> {
        self.direct.as_ref().filter(|_| {
            buf.len() >= DIRECT_MIN_BYTES
                && ok.load(Ordering::Relaxed)
                && (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN_BYTES)
                && buf.len().is_multiple_of(DIRECT_ALIGN_BYTES)
                && backing_offset.is_multiple_of(DIRECT_ALIGN_BYTES as u64)
        })
    }

    /// Makes every completed write durable (fdatasync on the backing file).
    pub fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.backing.sync_data()
    }

    /// Reads and decrypts whole sectors starting at `first` into `buf` (a multiple of the
    /// sector size). Bytes past the backing file's end are zeros; all-zero ciphertext
    /// sectors are left as zeros rather than decrypted.
    fn read_sectors(&self, first: SectorNo, buf: &mut [u8]) -> io::Result<()> {
        let ss = self.segment.sector_size_bytes();
        let got = self.read_backing(buf, self.segment.backing_offset(first))?;
        buf[got..].fill(0);
        // Decrypt maximal runs of non-zero sectors, so the cipher sees long runs.
        let n = buf.len() / ss;
        let mut i = 0;
        while i < n {
            if is_zero(&buf[i * ss..(i + 1) * ss]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && !is_zero(&buf[i * ss..(i + 1) * ss]) {
                i += 1;
            }
            let run_first = SectorNo(first.0 + start as u64);
            self.cipher.decrypt_sectors(
                &mut buf[start * ss..i * ss],
                ss,
                self.segment.iv_sector(run_first),
                self.segment.iv_step(),
            );
        }
        Ok(())
    }
}

/// Deallocates `len` bytes at `offset` of a regular backing file, keeping its size: the
/// range then reads as zeros, which `read_sectors` serves as zero plaintext.
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let off = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Bytes of the whole sectors a span touches.
fn sectors_len(span: &SectorSpan, sector_size: usize) -> usize {
    // A span is clamped to a usize length plus at most two partial sectors, so this fits.
    span.count_sectors as usize * sector_size
}

/// Whether a sector is all zero bytes; OR-folds 64-byte chunks so the compiler vectorizes.
fn is_zero(sector: &[u8]) -> bool {
    sector
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// pread until `buf` is full or the file ends; returns the bytes read.
fn read_until_eof(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Like `read_until_eof` on an O_DIRECT handle: a short read that ends off the alignment
/// boundary can only be the end of the file (a next read there would be refused).
fn read_direct_until_eof(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                if !done.is_multiple_of(DIRECT_ALIGN_BYTES) {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

thread_local! {
    /// One scratch buffer per FUSE worker thread, reused across requests so the hot path does
    /// not allocate (and fault in) a fresh megabyte per request.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a zeroed-or-stale scratch slice of exactly `len` bytes that starts on a
/// `DIRECT_ALIGN_BYTES` boundary. Callers overwrite or fill every byte they later read.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) if len <= SCRATCH_KEEP_BYTES => f(aligned_slice(&mut v, len)),
        // Re-entered, or too large to keep around: a one-off buffer.
        _ => f(aligned_slice(&mut Vec::new(), len)),
    })
}

/// What FUSE serves as PLAIN: a LUKS [`Volume`], or a read-only BitLocker volume
/// (`crate::bitlocker::BitlockerVolume`). One virtual call per request; the data is read and
/// decrypted straight into the reply buffer as before.
pub trait Plaintext: Send + Sync {
    /// Plaintext size in bytes.
    fn size_bytes(&self) -> u64;
    /// Whether writes are refused (EROFS).
    fn read_only(&self) -> bool;
    /// Reads plaintext at `plain_offset` into `buf`; the bytes read (short at the end).
    fn read_at(&self, plain_offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes plaintext at `plain_offset`; the bytes written.
    fn write_at(&self, plain_offset: u64, data: &[u8]) -> io::Result<usize>;
    /// Makes written data durable.
    fn flush(&self) -> io::Result<()>;
    /// Discards (or zeroes) a plaintext range.
    fn discard(&self, plain_offset: u64, len: u64, zero: bool) -> io::Result<()>;
}

impl Plaintext for Volume {
    fn size_bytes(&self) -> u64 {
        Volume::size_bytes(self)
    }
    fn read_only(&self) -> bool {
        Volume::read_only(self)
    }
    fn read_at(&self, plain_offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        Volume::read_at(self, plain_offset, buf)
    }
    fn write_at(&self, plain_offset: u64, data: &[u8]) -> io::Result<usize> {
        Volume::write_at(self, plain_offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        Volume::flush(self)
    }
    fn discard(&self, plain_offset: u64, len: u64, zero: bool) -> io::Result<()> {
        Volume::discard(self, plain_offset, len, zero)
    }
}

/// `len` bytes of `v` from its first `DIRECT_ALIGN_BYTES` boundary, growing `v` as needed.
pub fn aligned_slice(v: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if v.len() < len + DIRECT_ALIGN_BYTES {
        v.resize(len + DIRECT_ALIGN_BYTES, 0);
    }
    let start = v
        .as_ptr()
        .align_offset(DIRECT_ALIGN_BYTES)
        .min(DIRECT_ALIGN_BYTES);
    &mut v[start..start + len]
}

/// Whether `DIRECT_ALIGN_BYTES` is a multiple of the backing's O_DIRECT alignment: always
/// for a file here; for a block device its logical block size (BLKSSZGET, 512 or 4096) must
/// divide it, else (or when the kernel does not say) reads stay buffered.
fn direct_alignment_fits(backing: &File) -> bool {
    if !crate::device::is_block_device(backing) {
        return true;
    }
    crate::sys::block_device_logical_block_size(backing)
        .is_ok_and(|lbs| lbs > 0 && (DIRECT_ALIGN_BYTES as u32).is_multiple_of(lbs))
}

/// Opens the backing file a second time with O_DIRECT (read-only, or read-write if
/// `writable`), through /proc/self/fd (the same file even if its path has changed since).
/// None where that or O_DIRECT is refused.
fn reopen_direct(backing: &File, writable: bool) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{}", backing.as_raw_fd());
    match std::fs::OpenOptions::new()
        .read(true)
        .write(writable)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => Some(f),
        Err(e) => {
            log::debug!("no O_DIRECT handle on the backing file ({e}): buffered I/O only");
            None
        }
    }
}

/// Sector-range locks: shared for reads, exclusive for writes. A request takes its whole
/// range at once under one mutex, so there is no lock ordering and no deadlock; with a
/// handful of FUSE threads the list of held ranges stays tiny.
#[derive(Default)]
struct RangeLocks {
    held: Mutex<Vec<Held>>,
    freed: Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Held {
    start: u64,
    end: u64,
    exclusive: bool,
    token: u64,
}

impl Held {
    fn conflicts(&self, other: &Held) -> bool {
        self.start < other.end && other.start < self.end && (self.exclusive || other.exclusive)
    }
}

struct RangeGuard<'a> {
    locks: &'a RangeLocks,
    token: u64,
}

static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl RangeLocks {
    fn held(&self) -> MutexGuard<'_, Vec<Held>> {
        // The list is consistent after every operation, so a panic elsewhere cannot have
        // left it half-updated: recover from poisoning.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self, span: &SectorSpan, exclusive: bool) -> RangeGuard<'_> {
        let want = Held {
            start: span.first.0,
            end: span.end().0,
            exclusive,
            token: NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let mut held = self.held();
        while held.iter().any(|h| h.conflicts(&want)) {
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.push(want);
        RangeGuard {
            locks: self,
            token: want.token,
        }
    }
}

impl Drop for RangeGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held();
        held.retain(|h| h.token != self.token);
        drop(held);
        self.locks.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;
    use std::sync::Arc;

    /// Deterministic xorshift so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    fn key(len: usize, seed: u8) -> VolumeKey {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        VolumeKey(SecretBytes::from_vec(bytes))
    }

    fn segment(sector_size: u32, size: u64, offset: u64, tweak: u64) -> Segment {
        Segment {
            data_offset_bytes: offset,
            data_size_bytes: size,
            sector_size,
            iv_tweak: tweak,
        }
    }

    fn volume(seg: Segment, k: &VolumeKey) -> (Volume, tempfile::NamedTempFile) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let file = tmp.reopen().unwrap();
        (Volume::new(file, seg, k, false).unwrap(), tmp)
    }

    /// Decrypts the backing file with an independent SectorCipher, treating a short file or
    /// all-zero sectors as zeros, the same rule the volume follows.
    fn reference_plaintext(path: &std::path::Path, seg: &Segment, k: &VolumeKey) -> Vec<u8> {
        let raw = std::fs::read(path).unwrap();
        let ss = seg.sector_size as usize;
        let mut out = vec![0u8; seg.data_size_bytes as usize];
        let cipher = SectorCipher::new(k.expose_secret()).unwrap();
        for (i, chunk) in out.chunks_exact_mut(ss).enumerate() {
            let off = seg.data_offset_bytes as usize + i * ss;
            if off >= raw.len() {
                break;
            }
            let end = (off + ss).min(raw.len());
            chunk[..end - off].copy_from_slice(&raw[off..end]);
            if chunk.iter().any(|&b| b != 0) {
                cipher.decrypt_sectors(chunk, ss, seg.iv_sector(SectorNo(i as u64)), seg.iv_step());
            }
        }
        out
    }

    fn random_ops(seg: Segment, k: &VolumeKey, seed: u64, rounds: usize) {
        let (vol, tmp) = volume(seg, k);
        let size = seg.data_size_bytes as usize;
        let mut model = vec![0u8; size];
        let mut rng = Rng(seed);
        let ss = seg.sector_size as u64;
        for _ in 0..rounds {
            // Bias offsets and lengths towards sector boundaries.
            let off = match rng.below(3) {
                0 => rng.below(size as u64),
                1 => rng.below(seg.sector_count()) * ss,
                _ => (rng.below(seg.sector_count()) * ss + ss - 1 - rng.below(3))
                    .min(size as u64 - 1),
            } as usize;
            let len = match rng.below(3) {
                0 => 1 + rng.below(3 * ss) as usize,
                1 => ss as usize * (1 + rng.below(4) as usize),
                _ => 1 + rng.below(17) as usize,
            };
            if rng.below(2) == 0 {
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                let n = vol.write_at(off as u64, &data).unwrap();
                let expect = len.min(size - off);
                assert_eq!(n, expect, "write at {off} len {len}");
                model[off..off + n].copy_from_slice(&data[..n]);
            } else {
                let mut buf = vec![0xAAu8; len];
                let n = vol.read_at(off as u64, &mut buf).unwrap();
                let expect = len.min(size - off);
                assert_eq!(n, expect);
                assert_eq!(&buf[..n], &model[off..off + n], "read at {off} len {len}");
            }
        }
        let mut all = vec![0u8; size];
        assert_eq!(vol.read_at(0, &mut all).unwrap(), size);
        assert_eq!(all, model);
        vol.flush().unwrap();
        assert_eq!(reference_plaintext(tmp.path(), &seg, k), model);
    }

    #[test]
    fn random_ops_match_model_4096() {
        random_ops(
            segment(4096, 64 * 4096, 8192, 0),
            &key(64, 1),
            0x1234_5678,
            600,
        );
    }

    #[test]
    fn random_ops_match_model_512_with_tweak() {
        random_ops(
            segment(512, 300 * 512, 1024, 77),
            &key(32, 2),
            0xdead_beef,
            600,
        );
    }

    #[test]
    fn random_ops_match_model_2048_tweak() {
        random_ops(segment(2048, 40 * 2048, 4096, 4096), &key(64, 3), 42, 400);
    }

    /// One write of 1..=9000 random bytes at a random offset, applied to `model` too.
    fn small_random_write(vol: &Volume, model: &mut [u8], rng: &mut Rng) {
        let off = rng.below(model.len() as u64 - 9000) as usize;
        let mut data = vec![0u8; 1 + rng.below(9000) as usize];
        rng.fill(&mut data);
        vol.write_at(off as u64, &data).unwrap();
        model[off..off + data.len()].copy_from_slice(&data);
    }

    /// Reads the aligned MiB at `first` into an aligned buffer (the O_DIRECT path) and
    /// checks it against `model`.
    fn check_aligned_mib(
        vol: &Volume,
        model: &[u8],
        buf: &mut Vec<u8>,
        first: usize,
        round: usize,
    ) {
        let out = aligned_slice(buf, 1 << 20);
        assert_eq!(vol.read_at(first as u64, out).unwrap(), 1 << 20);
        assert!(out[..] == model[first..first + (1 << 20)], "round {round}");
    }

    #[test]
    fn large_aligned_reads_see_buffered_writes() {
        // Small writes stay dirty in the backing file's page cache; 1 MiB aligned reads into
        // an aligned buffer take the O_DIRECT handle and must still return them.
        let seg = segment(4096, 8 << 20, 1 << 20, 0);
        let k = key(64, 12);
        let (vol, tmp) = volume(seg, &k);
        let size = seg.data_size_bytes as usize;
        let mut model = vec![0u8; size];
        let mut rng = Rng(0xd1ec7);
        let mut buf = Vec::new();
        for round in 0..60 {
            for _ in 0..8 {
                small_random_write(&vol, &mut model, &mut rng);
            }
            let first = rng.below((size / 4096 - 256) as u64) as usize * 4096;
            check_aligned_mib(&vol, &model, &mut buf, first, round);
        }
        assert!(vol.direct.is_none() || vol.direct_read_ok.load(Ordering::Relaxed));
        vol.flush().unwrap();
        assert!(reference_plaintext(tmp.path(), &seg, &k) == model);
    }

    #[test]
    fn large_aligned_writes_bypass_the_cache_and_stay_coherent() {
        // 1 MiB aligned writes take the O_DIRECT handle (their ciphertext is not left in the
        // backing file's page cache), small writes read-modify-write through the cache, and
        // every read, large or small, sees the latest bytes.
        let seg = segment(4096, 8 << 20, 1 << 20, 0);
        let k = key(64, 13);
        let (vol, tmp) = volume(seg, &k);
        let size = seg.data_size_bytes as usize;
        let mut model = vec![0u8; size];
        let mut rng = Rng(0xd1ec8);
        let (mut big, mut out_buf) = (Vec::new(), Vec::new());
        for round in 0..40 {
            let first = rng.below((size / 4096 - 256) as u64) as usize * 4096;
            let data = aligned_slice(&mut big, 1 << 20);
            rng.fill(data);
            vol.write_at(first as u64, data).unwrap();
            model[first..first + data.len()].copy_from_slice(data);
            if round == 0 && vol.direct.is_some() {
                let at = seg.data_offset_bytes + first as u64;
                assert_eq!(
                    crate::sys::cached_pages(&File::open(tmp.path()).unwrap(), at, 1 << 20),
                    0,
                    "direct write cached"
                );
            }
            for _ in 0..4 {
                small_random_write(&vol, &mut model, &mut rng);
                let mut back = vec![0u8; 1 + rng.below(9000) as usize];
                let at = rng.below((size - back.len()) as u64) as usize;
                vol.read_at(at as u64, &mut back).unwrap();
                assert!(back[..] == model[at..at + back.len()], "round {round}");
            }
            check_aligned_mib(&vol, &model, &mut out_buf, first, round);
        }
        assert!(vol.direct.is_none() || vol.direct_write_ok.load(Ordering::Relaxed));
        vol.flush().unwrap();
        assert!(reference_plaintext(tmp.path(), &seg, &k) == model);
    }

    #[test]
    fn holes_read_as_zeros() {
        let seg = segment(4096, 1 << 20, 1 << 20, 0);
        let k = key(64, 4);
        let (vol, tmp) = volume(seg, &k);
        let mut buf = vec![0xFFu8; 10_000];
        assert_eq!(vol.read_at(123, &mut buf).unwrap(), 10_000);
        assert!(buf.iter().all(|&b| b == 0));
        // Write one sector in the middle; its neighbours stay zero (the file is sparse
        // below and short above).
        vol.write_at(5 * 4096 + 10, b"hello").unwrap();
        let mut buf = vec![0xFFu8; 3 * 4096];
        vol.read_at(4 * 4096, &mut buf).unwrap();
        assert_eq!(&buf[4096 + 10..4096 + 15], b"hello");
        buf[4096 + 10..4096 + 15].fill(0);
        assert!(buf.iter().all(|&b| b == 0));
        // The file ends right after the written sector: reads past it are zeros too.
        let len = std::fs::metadata(tmp.path()).unwrap().len();
        assert_eq!(len, (1 << 20) + 6 * 4096);
        let mut tail = vec![0xFFu8; 4096];
        assert_eq!(vol.read_at((1 << 20) - 4096, &mut tail).unwrap(), 4096);
        assert!(tail.iter().all(|&b| b == 0));
    }

    /// Allocated bytes of the file at `path` (st_blocks).
    fn allocated(path: &std::path::Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn discard_is_refused_unless_allowed() {
        let seg = segment(4096, 64 * 4096, 4096, 0);
        let k = key(64, 13);
        let (vol, tmp) = volume(seg, &k);
        vol.write_at(0, &vec![0x77u8; 64 * 4096]).unwrap();
        vol.flush().unwrap();
        let before = std::fs::read(tmp.path()).unwrap();
        for zero in [false, true] {
            let e = vol.discard(0, 64 * 4096, zero).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP));
        }
        assert_eq!(
            std::fs::read(tmp.path()).unwrap(),
            before,
            "nothing punched"
        );
        let ro = Volume::new(File::open(tmp.path()).unwrap(), seg, &k, true)
            .unwrap()
            .with_discards(true);
        let e = ro.discard(0, 4096, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    }

    #[test]
    fn discarded_ranges_read_as_zeros_and_the_rest_stays() {
        for (ss, offset) in [(4096u32, 1u64 << 20), (512, 1024)] {
            let sectors = 256u64;
            let seg = segment(ss, sectors * ss as u64, offset, 5);
            let k = key(64, 14);
            let (vol, tmp) = volume(seg, &k);
            let vol = vol.with_discards(true);
            assert!(vol.allows_discards());
            let size = seg.data_size_bytes as usize;
            let mut model = vec![0u8; size];
            Rng(99 + ss as u64).fill(&mut model);
            vol.write_at(0, &model).unwrap();
            vol.flush().unwrap();
            let full = allocated(tmp.path());
            let s = ss as u64;
            // Whole sectors, a range with partial sectors at both ends, one inside a single
            // sector, one across a single boundary, one running past the end.
            let ranges = [
                (8 * s, 64 * s, false),
                (100 * s + 7, 40 * s + 9, true),
                (200 * s + 3, 10, false),
                (210 * s - 5, 11, true),
                (250 * s + 1, 100 * s, false),
            ];
            for &(off, len, zero) in &ranges {
                vol.discard(off, len, zero).unwrap();
                let end = (off + len).min(size as u64) as usize;
                model[off as usize..end].fill(0);
            }
            let mut all = vec![0xEEu8; size];
            assert_eq!(vol.read_at(0, &mut all).unwrap(), size);
            assert!(all == model, "sector size {ss}: plaintext after discards");
            vol.flush().unwrap();
            assert!(reference_plaintext(tmp.path(), &seg, &k) == model);
            // The 64 whole sectors of the first range (at least) are a hole now.
            let freed = full - allocated(tmp.path());
            assert!(
                freed >= 64 * s,
                "sector size {ss}: freed only {freed} bytes"
            );
            // Before the segment nothing changed (the file's first bytes were never written).
            let raw = std::fs::read(tmp.path()).unwrap();
            assert!(raw[..offset as usize].iter().all(|&b| b == 0));
            // Writes after a discard land and read back.
            vol.write_at(10 * s + 1, b"again").unwrap();
            let mut b = [0u8; 5];
            vol.read_at(10 * s + 1, &mut b).unwrap();
            assert_eq!(&b, b"again");
            // Past the end and empty ranges do nothing.
            vol.discard(size as u64, 4096, false).unwrap();
            vol.discard(0, 0, false).unwrap();
        }
    }

    #[test]
    fn ciphertext_on_disk_is_real_xts() {
        let seg = segment(512, 8 * 512, 512, 3);
        let k = key(32, 5);
        let (vol, tmp) = volume(seg, &k);
        // Zeros are plaintext too: they must be encrypted, not stored as zeros.
        let mut plain = vec![0u8; 8 * 512];
        plain[512..1024].fill(0x5A);
        vol.write_at(0, &plain).unwrap();
        let raw = std::fs::read(tmp.path()).unwrap();
        assert_eq!(raw.len(), 512 + 8 * 512);
        assert!(
            raw[..512].iter().all(|&b| b == 0),
            "before the segment untouched"
        );
        let mut ct = raw[512..].to_vec();
        assert_ne!(ct, plain);
        assert!(ct.chunks(512).all(|c| c.iter().any(|&b| b != 0)));
        let cipher = SectorCipher::new(k.expose_secret()).unwrap();
        cipher.decrypt_sectors(&mut ct, 512, 3, 1);
        assert_eq!(ct, plain);
    }

    #[test]
    fn edge_offsets_and_lengths() {
        let seg = segment(4096, 4 * 4096, 0, 0);
        let k = key(64, 6);
        let (vol, _tmp) = volume(seg, &k);
        let size = 4 * 4096u64;
        // Last byte, exact end, past end.
        assert_eq!(vol.write_at(size - 1, b"z").unwrap(), 1);
        assert_eq!(
            vol.write_at(size - 2, b"xyz").unwrap(),
            2,
            "short write at the end"
        );
        let e = vol.write_at(size, b"a").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        let e = vol.write_at(u64::MAX, b"a").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(vol.write_at(size, b"").unwrap(), 0);
        let mut b = [0u8; 4];
        assert_eq!(vol.read_at(size - 2, &mut b).unwrap(), 2);
        assert_eq!(&b[..2], b"xy");
        assert_eq!(vol.read_at(size, &mut b).unwrap(), 0);
        assert_eq!(vol.read_at(u64::MAX, &mut b).unwrap(), 0);
        assert_eq!(vol.read_at(0, &mut []).unwrap(), 0);
        // A write straddling a sector boundary keeps both neighbours' other bytes.
        vol.write_at(4096 - 3, b"ABCDEF").unwrap();
        let mut b = [0u8; 10];
        vol.read_at(4096 - 5, &mut b).unwrap();
        assert_eq!(&b, b"\0\0ABCDEF\0\0");
    }

    #[test]
    fn read_only_refuses_writes() {
        let seg = segment(512, 4096, 0, 0);
        let k = key(32, 7);
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let vol = Volume::new(File::open(tmp.path()).unwrap(), seg, &k, true).unwrap();
        let e = vol.write_at(0, b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let mut b = [1u8; 512];
        assert_eq!(vol.read_at(0, &mut b).unwrap(), 512);
        assert_eq!(b, [0u8; 512]);
        vol.flush().unwrap();
    }

    #[test]
    fn bad_segment_or_key_is_a_device_error() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let bad = segment(4096, 4096 + 512, 0, 0);
        let e = Volume::new(tmp.reopen().unwrap(), bad, &key(64, 0), false).unwrap_err();
        assert!(matches!(e, Error::Device(_)), "{e}");
        let e = Volume::new(
            tmp.reopen().unwrap(),
            segment(512, 512, 0, 0),
            &key(48, 0),
            false,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Device(_)), "{e}");
    }

    #[test]
    fn concurrent_unaligned_writers_lose_no_update() {
        // Eight threads own disjoint, unaligned byte ranges that share sectors 1 and 2 (some
        // straddle the boundary). A racy read-modify-write would write back a neighbour's
        // stale bytes; at the end each range must hold its owner's last write.
        let seg = segment(512, 8 * 512, 0, 9);
        let k = key(64, 8);
        let (vol, tmp) = volume(seg, &k);
        let vol = Arc::new(vol);
        let threads = 8usize;
        let width = 100usize;
        let base = 512 + 100;
        let rounds = 400;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let vol = Arc::clone(&vol);
                std::thread::spawn(move || {
                    let off = (base + t * width) as u64;
                    let mut last = vec![];
                    for r in 0..rounds {
                        let v = vec![(t * rounds + r) as u8 | 1; width];
                        assert_eq!(vol.write_at(off, &v).unwrap(), width);
                        last = v;
                    }
                    last
                })
            })
            .collect();
        let lasts: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let mut model = vec![0u8; 8 * 512];
        for (t, v) in lasts.iter().enumerate() {
            model[base + t * width..base + (t + 1) * width].copy_from_slice(v);
        }
        let mut all = vec![0u8; 8 * 512];
        vol.read_at(0, &mut all).unwrap();
        assert_eq!(all, model);
        assert_eq!(reference_plaintext(tmp.path(), &seg, &k), model);
    }

    #[test]
    fn range_locks_exclude_overlaps_only() {
        let locks = RangeLocks::default();
        let span = |first, count| SectorSpan {
            first: SectorNo(first),
            count_sectors: count,
            head_skip_bytes: 0,
            len_bytes: 1,
        };
        let a = locks.lock(&span(0, 2), true);
        let b = locks.lock(&span(2, 2), true); // adjacent: no conflict
        let r1 = locks.lock(&span(10, 1), false);
        let r2 = locks.lock(&span(10, 1), false); // readers share
        assert_eq!(locks.held().len(), 4);
        drop((a, b, r1, r2));
        assert!(locks.held().is_empty());
    }
}
