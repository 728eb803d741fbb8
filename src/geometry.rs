//! The only unit math: plain offset <-> sector <-> backing offset <-> IV.
use serde::{Deserialize, Serialize};

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
