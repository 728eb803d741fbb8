//! The only unit math: plain offset <-> sector <-> backing offset <-> IV.
//!
//! Three address spaces meet here (docs/format.md §7):
//! - `plain_offset`: bytes into the plaintext the user sees (0 .. `data_size_bytes`);
//! - `SectorNo`: index of an encryption sector of `sector_size` bytes in the plaintext;
//! - `backing_offset`: bytes into the backing file (`data_offset_bytes` + plain offset);
//! - `iv_sector`: the plain64 IV, counted in 512-byte units whatever the sector size.
use serde::{Deserialize, Serialize};

/// IVs count 512-byte units even with 4096-byte sectors (docs/format.md §7).
pub const IV_UNIT_BYTES: u64 = 512;

/// Where the encrypted data lives in the backing file and how it is cut into sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Byte offset of the first data sector in the backing file.
    pub data_offset_bytes: u64,
    /// Plaintext size in bytes (a multiple of `sector_size`).
    pub data_size_bytes: u64,
    /// Encryption sector size: 512..=4096, a power of two.
    pub sector_size: u32,
    /// Added to every IV, in 512-byte units (LUKS2 iv_tweak; 0 for LUKS1).
    pub iv_tweak: u64,
}

/// Index of an encryption sector within the plaintext (sector 0 starts at plain offset 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SectorNo(pub u64);

/// The whole sectors covering a byte range of the plaintext, and where the range sits in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectorSpan {
    /// First sector touched.
    pub first: SectorNo,
    /// Number of sectors touched (at least 1).
    pub count_sectors: u64,
    /// Bytes of the first sector before the range starts.
    pub head_skip_bytes: usize,
    /// Length of the range in bytes, after clamping at the end of the plaintext.
    pub len_bytes: usize,
}

impl SectorSpan {
    /// One past the last sector touched.
    pub fn end(&self) -> SectorNo {
        SectorNo(self.first.0 + self.count_sectors)
    }

    /// Whether the range starts inside the first sector rather than at its start.
    pub fn partial_head(&self) -> bool {
        self.head_skip_bytes != 0
    }

    /// Whether the range ends inside the last sector rather than at its end.
    pub fn partial_tail(&self, sector_size: usize) -> bool {
        !(self.head_skip_bytes + self.len_bytes).is_multiple_of(sector_size)
    }

    /// Whether the range is exactly a run of whole sectors.
    pub fn aligned(&self, sector_size: usize) -> bool {
        !self.partial_head() && !self.partial_tail(sector_size)
    }
}

impl Segment {
    /// Checks the invariants the rest of the data path relies on; the message names the
    /// offending field.
    pub fn validate(&self) -> Result<(), String> {
        let ss = u64::from(self.sector_size);
        if !(512..=4096).contains(&self.sector_size) || !self.sector_size.is_power_of_two() {
            return Err(format!(
                "unsupported sector size {} (need 512, 1024, 2048 or 4096)",
                self.sector_size
            ));
        }
        if !self.data_size_bytes.is_multiple_of(ss) {
            return Err(format!(
                "data size {} is not a multiple of the sector size {ss}",
                self.data_size_bytes
            ));
        }
        if !self.data_offset_bytes.is_multiple_of(IV_UNIT_BYTES) {
            return Err(format!(
                "data offset {} is not a multiple of 512",
                self.data_offset_bytes
            ));
        }
        // Backing offsets must not overflow, nor exceed what pread/pwrite take (i64).
        match self.data_offset_bytes.checked_add(self.data_size_bytes) {
            Some(end) if end <= i64::MAX as u64 => Ok(()),
            _ => Err(format!(
                "data segment at {} of {} bytes runs past the largest file offset",
                self.data_offset_bytes, self.data_size_bytes
            )),
        }
    }

    /// Sector size in bytes, as a `usize` for buffer arithmetic.
    pub fn sector_size_bytes(&self) -> usize {
        self.sector_size as usize
    }

    /// Number of whole sectors in the plaintext.
    pub fn sector_count(&self) -> u64 {
        self.data_size_bytes / u64::from(self.sector_size)
    }

    /// IV increment from one sector to the next, in 512-byte units (8 for 4096-byte sectors).
    pub fn iv_step(&self) -> u64 {
        u64::from(self.sector_size) / IV_UNIT_BYTES
    }

    /// The sector holding byte `plain_offset`.
    pub fn sector_of(&self, plain_offset: u64) -> SectorNo {
        SectorNo(plain_offset / u64::from(self.sector_size))
    }

    /// Plain offset of the first byte of `sector`.
    pub fn plain_offset(&self, sector: SectorNo) -> u64 {
        sector.0 * u64::from(self.sector_size)
    }

    /// Offset of `sector` in the backing file. Within a validated segment this cannot
    /// overflow for sectors up to `sector_count()`.
    pub fn backing_offset(&self, sector: SectorNo) -> u64 {
        self.data_offset_bytes + self.plain_offset(sector)
    }

    /// plain64 IV of `sector`: iv_tweak + (bytes after the segment start) / 512, wrapping at
    /// 2^64 as dm-crypt's u64 counter does (docs/format.md §7).
    pub fn iv_sector(&self, sector: SectorNo) -> u64 {
        self.iv_tweak
            .wrapping_add(sector.0.wrapping_mul(self.iv_step()))
    }

    /// The sectors covering `len` bytes from `plain_offset`, clamped at the end of the
    /// plaintext. `None` when nothing of the range lies inside (offset at or past the end,
    /// or `len` is 0).
    pub fn span(&self, plain_offset: u64, len: usize) -> Option<SectorSpan> {
        if len == 0 || plain_offset >= self.data_size_bytes {
            return None;
        }
        let avail = self.data_size_bytes - plain_offset;
        // Clamp in u64 first: `len` may exceed what is left, and usize may be narrower.
        let len_bytes = (len as u64).min(avail) as usize;
        let ss = u64::from(self.sector_size);
        let first = self.sector_of(plain_offset);
        let end_offset = plain_offset + len_bytes as u64;
        let end_sector = end_offset.div_ceil(ss);
        Some(SectorSpan {
            first,
            count_sectors: end_sector - first.0,
            head_skip_bytes: (plain_offset % ss) as usize,
            len_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(sector_size: u32, size: u64, tweak: u64) -> Segment {
        Segment {
            data_offset_bytes: 16 << 20,
            data_size_bytes: size,
            sector_size,
            iv_tweak: tweak,
        }
    }

    #[test]
    fn validate_rejects_bad_geometry() {
        assert!(seg(4096, 8192, 0).validate().is_ok());
        assert!(seg(512, 512, 0).validate().is_ok());
        assert!(seg(1024, 4096, 0).validate().is_ok());
        assert!(seg(8192, 8192, 0).validate().is_err());
        assert!(seg(256, 512, 0).validate().is_err());
        assert!(seg(1536, 1536 * 2, 0).validate().is_err());
        assert!(seg(4096, 4096 + 512, 0).validate().is_err());
        let mut s = seg(512, 512, 0);
        s.data_offset_bytes = 100;
        assert!(s.validate().is_err());
        s.data_offset_bytes = u64::MAX - 511;
        assert!(s.validate().is_err());
    }

    #[test]
    fn iv_counts_512_byte_units() {
        let s = seg(4096, 1 << 20, 0);
        assert_eq!(s.iv_step(), 8);
        assert_eq!(s.iv_sector(SectorNo(0)), 0);
        assert_eq!(s.iv_sector(SectorNo(1)), 8);
        assert_eq!(s.iv_sector(SectorNo(255)), 2040);
        let s = seg(512, 1 << 20, 0);
        assert_eq!(s.iv_step(), 1);
        assert_eq!(s.iv_sector(SectorNo(7)), 7);
    }

    #[test]
    fn iv_tweak_is_added_in_512_byte_units() {
        // A reencryption segment starting x bytes in has iv_tweak = x / 512 (§7).
        let s = seg(4096, 1 << 20, 2048);
        assert_eq!(s.iv_sector(SectorNo(0)), 2048);
        assert_eq!(s.iv_sector(SectorNo(3)), 2048 + 24);
        let s = seg(512, 1 << 20, u64::MAX);
        assert_eq!(
            s.iv_sector(SectorNo(1)),
            0,
            "plain64 wraps like dm-crypt's u64"
        );
    }

    #[test]
    fn backing_offset_adds_data_offset() {
        let s = seg(4096, 1 << 20, 0);
        assert_eq!(s.backing_offset(SectorNo(0)), 16 << 20);
        assert_eq!(s.backing_offset(SectorNo(2)), (16 << 20) + 8192);
        assert_eq!(s.sector_of(4095), SectorNo(0));
        assert_eq!(s.sector_of(4096), SectorNo(1));
        assert_eq!(s.plain_offset(SectorNo(3)), 12288);
        assert_eq!(s.sector_count(), 256);
    }

    #[test]
    fn span_of_aligned_and_unaligned_ranges() {
        let s = seg(4096, 4 * 4096, 0);
        let sp = s.span(0, 4096).unwrap();
        assert_eq!(
            (sp.first, sp.count_sectors, sp.head_skip_bytes),
            (SectorNo(0), 1, 0)
        );
        assert!(sp.aligned(4096));

        // One byte at the very end of sector 0.
        let sp = s.span(4095, 1).unwrap();
        assert_eq!(
            (sp.first, sp.count_sectors, sp.head_skip_bytes),
            (SectorNo(0), 1, 4095)
        );
        assert!(sp.partial_head() && !sp.partial_tail(4096));

        // Two bytes straddling sectors 0 and 1.
        let sp = s.span(4095, 2).unwrap();
        assert_eq!((sp.first, sp.count_sectors), (SectorNo(0), 2));
        assert!(sp.partial_head() && sp.partial_tail(4096));

        // Whole middle sectors, partial tail only.
        let sp = s.span(4096, 4096 + 10).unwrap();
        assert_eq!(
            (sp.first, sp.count_sectors, sp.len_bytes),
            (SectorNo(1), 2, 4106)
        );
        assert!(!sp.partial_head() && sp.partial_tail(4096));
        assert_eq!(sp.end(), SectorNo(3));
    }

    #[test]
    fn span_clamps_at_the_end() {
        let s = seg(512, 4 * 512, 0);
        // Last sector exactly.
        let sp = s.span(3 * 512, 512).unwrap();
        assert_eq!(
            (sp.first, sp.count_sectors, sp.len_bytes),
            (SectorNo(3), 1, 512)
        );
        // Runs past the end: clamped to what is left.
        let sp = s.span(2047, 100).unwrap();
        assert_eq!(
            (sp.first, sp.count_sectors, sp.len_bytes),
            (SectorNo(3), 1, 1)
        );
        let sp = s.span(0, usize::MAX).unwrap();
        assert_eq!((sp.count_sectors, sp.len_bytes), (4, 2048));
        // Nothing inside.
        assert_eq!(s.span(2048, 1), None);
        assert_eq!(s.span(u64::MAX, 1), None);
        assert_eq!(s.span(0, 0), None);
    }

    #[test]
    fn span_in_last_sector_of_a_large_volume() {
        let size = 1u64 << 40;
        let s = seg(4096, size, 0);
        let sp = s.span(size - 1, 1).unwrap();
        assert_eq!(sp.first, SectorNo(size / 4096 - 1));
        assert_eq!(s.iv_sector(sp.first), (size - 4096) / 512);
        assert_eq!(s.backing_offset(sp.first), (16 << 20) + size - 4096);
    }
}
