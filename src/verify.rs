//! Restore verification: read-only checks of a volume's data. Never writes the backing file.
use crate::crypto::xts::SectorCipher;
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::secret::VolumeKey;
use crate::volume::Volume;
use sha2::{Digest, Sha256};

/// Bytes read per step of the digest.
const CHUNK_BYTES: usize = 4 << 20;

/// SHA-256 of the whole plaintext of `volume` (hex), calling `progress(done_bytes)` after
/// every chunk. Reads through the volume's sector decryption; no FUSE, no writes.
pub fn plaintext_digest(volume: &Volume, mut progress: impl FnMut(u64)) -> Result<String> {
    let size = volume.size_bytes();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from((size - offset).min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES);
        let chunk = &mut buf[..want];
        let mut filled = 0;
        while filled < want {
            let n = volume
                .read_at(offset + filled as u64, &mut chunk[filled..])
                .map_err(|e| {
                    Error::Device(format!(
                        "cannot read plaintext at byte {}: {e}",
                        offset + filled as u64
                    ))
                })?;
            if n == 0 {
                return Err(Error::Device(format!(
                    "plaintext ends early at byte {} of {size}",
                    offset + filled as u64
                )));
            }
            filled += n;
        }
        hasher.update(&chunk[..]);
        offset += want as u64;
        progress(offset);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of the plaintext exactly as dm-crypt shows it: every sector read from `backing`
/// and decrypted, also never-written ones (all-zero ciphertext), which `Volume` serves as
/// zeros. This equals `sha256sum /dev/mapper/NAME` of the same volume opened by cryptsetup.
pub fn dm_crypt_view_digest(
    backing: &std::fs::File,
    segment: &Segment,
    key: &VolumeKey,
    mut progress: impl FnMut(u64),
) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let cipher = SectorCipher::new(key.expose_secret())
        .map_err(|e| Error::Device(format!("volume key: {e}")))?;
    let sector = segment.sector_size_bytes();
    let chunk_bytes = CHUNK_BYTES / sector * sector;
    let size = segment.data_size_bytes;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; chunk_bytes];
    let mut plain_offset = 0u64;
    while plain_offset < size {
        let want =
            usize::try_from((size - plain_offset).min(chunk_bytes as u64)).unwrap_or(chunk_bytes);
        let chunk = &mut buf[..want];
        let backing_offset = segment.data_offset_bytes + plain_offset;
        backing.read_exact_at(chunk, backing_offset).map_err(|e| {
            Error::Device(format!(
                "cannot read ciphertext at byte {backing_offset}: {e}"
            ))
        })?;
        let first_iv = segment.iv_sector(segment.sector_of(plain_offset));
        cipher.decrypt_sectors(chunk, sector, first_iv, segment.iv_step());
        hasher.update(&chunk[..]);
        plain_offset += want as u64;
        progress(plain_offset);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises a user-supplied SHA-256 (64 hex digits, any case) or explains what is wrong.
pub fn parse_digest(s: &str) -> Result<String> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(Error::Usage(format!(
            "--expect-digest needs 64 hex digits (a SHA-256), got {:?}",
            s
        )))
    }
}

/// What `e2fsck -fn` said, by its exit code (e2fsck(8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsckVerdict {
    Clean,
    /// Errors found (and, with -n, left uncorrected).
    Errors,
    /// e2fsck could not check (usage or operational error, no filesystem).
    Failed,
}

impl FsckVerdict {
    pub fn from_exit(code: Option<i32>) -> FsckVerdict {
        match code {
            Some(0) => FsckVerdict::Clean,
            Some(c) if c & 8 != 0 || c & 16 != 0 || c & 32 != 0 => FsckVerdict::Failed,
            Some(_) => FsckVerdict::Errors,
            None => FsckVerdict::Failed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FsckVerdict::Clean => "clean",
            FsckVerdict::Errors => "errors",
            FsckVerdict::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_codes() {
        assert_eq!(FsckVerdict::from_exit(Some(0)), FsckVerdict::Clean);
        assert_eq!(FsckVerdict::from_exit(Some(4)), FsckVerdict::Errors);
        assert_eq!(FsckVerdict::from_exit(Some(1)), FsckVerdict::Errors);
        assert_eq!(FsckVerdict::from_exit(Some(8)), FsckVerdict::Failed);
        assert_eq!(FsckVerdict::from_exit(None), FsckVerdict::Failed);
    }

    #[test]
    fn digest_parse() {
        assert!(parse_digest(&"A".repeat(64)).is_ok());
        assert!(parse_digest("abc").is_err());
    }
}
