//! Sizes and offsets for a new LUKS2 header: JSON area, keyslot areas, data offset.
use super::metadata::AF_STRIPES;

/// cryptsetup 2.6's default metadata copy size (binary + JSON).
pub const DEFAULT_HDR_SIZE: u64 = 0x4000;
/// cryptsetup 2.6's default data offset: 16 MiB.
pub const DEFAULT_DATA_OFFSET: u64 = 16 * 1024 * 1024;

/// Where everything of a new volume goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// One header copy, bytes.
    pub hdr_size: u64,
    /// The keyslots area after both copies, bytes.
    pub keyslots_size: u64,
    /// Start of the data segment, bytes.
    pub data_offset: u64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            hdr_size: DEFAULT_HDR_SIZE,
            keyslots_size: DEFAULT_DATA_OFFSET - 2 * DEFAULT_HDR_SIZE,
            data_offset: DEFAULT_DATA_OFFSET,
        }
    }
}

impl Layout {
    /// Bytes of the JSON area of one copy (the copy minus its 4096-byte binary header).
    pub fn json_size(&self) -> u64 {
        self.hdr_size - 4096
    }

    /// First byte of the keyslots area.
    pub fn keyslots_start(&self) -> u64 {
        2 * self.hdr_size
    }

    /// Area size cryptsetup gives a keyslot holding a `key_size`-byte key (4 KiB aligned).
    pub fn keyslot_area_size(key_size: u32) -> u64 {
        (u64::from(key_size) * u64::from(AF_STRIPES)).div_ceil(4096) * 4096
    }

    /// The first gap of `size` bytes in the keyslots area that overlaps none of `used`
    /// (offset, size) areas, as cryptsetup's LUKS2_find_area_gap.
    pub fn find_area_gap(&self, used: &[(u64, u64)], size: u64) -> Option<u64> {
        let end_limit = self.keyslots_start() + self.keyslots_size;
        let mut sorted = used.to_vec();
        sorted.sort();
        let mut candidate = self.keyslots_start();
        for (offset, len) in sorted {
            if candidate + size <= offset {
                break;
            }
            candidate = candidate.max(offset + len);
        }
        (candidate + size <= end_limit).then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_cryptsetup() {
        let l = Layout::default();
        assert_eq!(l.json_size(), 12288);
        assert_eq!(l.keyslots_size, 16744448);
        assert_eq!(Layout::keyslot_area_size(64), 258048);
        assert_eq!(Layout::keyslot_area_size(32), 131072);
        assert_eq!(l.find_area_gap(&[], 258048), Some(32768));
        // docs/format.md §4.7: slot 1 lands at 290816.
        assert_eq!(l.find_area_gap(&[(32768, 258048)], 258048), Some(290816));
    }

    #[test]
    fn gap_search_fills_holes_and_respects_end() {
        let l = Layout::default();
        let used = [(32768 + 258048, 258048)];
        assert_eq!(l.find_area_gap(&used, 258048), Some(32768));
        let full = [(32768, l.keyslots_size)];
        assert_eq!(l.find_area_gap(&full, 4096), None);
    }
}
