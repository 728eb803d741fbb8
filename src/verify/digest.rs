//! Plaintext digests of an unlocked volume: ours (never-written, all-zero ciphertext reads
//! as zeros) and the dm-crypt view (every sector decrypted).
use super::hex;
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

/// All-zero ciphertext in a data segment: maximal runs of all-zero encryption sectors. ADE's
/// used-space copy (`dd conv=sparse`) leaves every all-zero plaintext block unwritten, so
/// these runs read as zeros in our view and as noise through dm-crypt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ZeroExtents {
    /// Number of maximal runs.
    pub count: u64,
    /// Bytes in them.
    pub bytes: u64,
}

/// What one read of a data segment gives: our digest, the dm-crypt view's (when asked), and
/// the all-zero ciphertext extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestPass {
    /// SHA-256 of the plaintext as vaultdisk serves it (all-zero ciphertext reads as zeros).
    pub digest: String,
    /// SHA-256 of every sector decrypted, as `sha256sum /dev/mapper/NAME` shows it.
    pub dm_crypt_view: Option<String>,
    /// The all-zero ciphertext extents.
    pub zero_extents: ZeroExtents,
}

/// A chunk read and decrypted: the bytes and its all-zero sector runs `[first, end)`, in
/// sectors from the chunk's start.
struct Chunk {
    buf: Vec<u8>,
    len: usize,
    zero_runs: Vec<(usize, usize)>,
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// One read of `segment` of `file` (offsets from the start of the file): our digest, with
/// `dm_crypt_view` also the dm-crypt view's, and the all-zero ciphertext extents, calling
/// `progress(done_bytes)` after every chunk. Reading and decrypting run on a thread of their
/// own while this one hashes, so the digest runs at about the speed of SHA-256 alone.
pub fn digest_pass(
    file: &std::fs::File,
    segment: &Segment,
    key: &VolumeKey,
    dm_crypt_view: bool,
    mut progress: impl FnMut(u64),
) -> Result<DigestPass> {
    use std::os::unix::fs::FileExt;
    use std::sync::mpsc::sync_channel;
    let cipher = SectorCipher::new(key.expose_secret())
        .map_err(|e| Error::Device(format!("volume key: {e}")))?;
    let sector = segment.sector_size_bytes();
    let chunk_bytes = CHUNK_BYTES / sector * sector;
    let size = segment.data_size_bytes;
    let (full_tx, full_rx) = sync_channel::<Result<Chunk>>(2);
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(4);
    for _ in 0..3 {
        free_tx
            .send(vec![0u8; chunk_bytes])
            .map_err(|_| Error::Device("digest pipeline closed".into()))?;
    }
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut plain_offset = 0u64;
            let mut extents = ZeroExtents::default();
            let mut in_run = false;
            while plain_offset < size {
                let Ok(mut buf) = free_rx.recv() else {
                    break;
                };
                let want = usize::try_from((size - plain_offset).min(chunk_bytes as u64))
                    .unwrap_or(chunk_bytes);
                let backing_offset = segment.data_offset_bytes + plain_offset;
                if let Err(e) = file.read_exact_at(&mut buf[..want], backing_offset) {
                    let _ = full_tx.send(Err(Error::Device(format!(
                        "cannot read ciphertext at byte {backing_offset}: {e}"
                    ))));
                    break;
                }
                let n = want / sector;
                let mut zero_runs = Vec::new();
                let mut i = 0;
                while i < n {
                    let zero = is_zero(&buf[i * sector..(i + 1) * sector]);
                    let start = i;
                    while i < n && is_zero(&buf[i * sector..(i + 1) * sector]) == zero {
                        i += 1;
                    }
                    if zero {
                        zero_runs.push((start, i));
                        if !(in_run && start == 0) {
                            extents.count += 1;
                        }
                        extents.bytes += ((i - start) * sector) as u64;
                    }
                    in_run = zero && i == n;
                    // Our view leaves all-zero ciphertext as zeros; dm-crypt decrypts it too.
                    if !zero || dm_crypt_view {
                        let first = segment.sector_of(plain_offset).0 + start as u64;
                        cipher.decrypt_sectors(
                            &mut buf[start * sector..i * sector],
                            sector,
                            segment.iv_sector(crate::geometry::SectorNo(first)),
                            segment.iv_step(),
                        );
                    }
                }
                if n == 0 {
                    in_run = false;
                }
                plain_offset += want as u64;
                if full_tx
                    .send(Ok(Chunk {
                        buf,
                        len: want,
                        zero_runs,
                    }))
                    .is_err()
                {
                    break;
                }
            }
            extents
        });
        let mut ours = Sha256::new();
        let mut dm = dm_crypt_view.then(Sha256::new);
        let zeros = vec![0u8; chunk_bytes];
        let mut done = 0u64;
        let mut failed = None;
        while done < size {
            let chunk = match full_rx.recv() {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => break,
            };
            let bytes = &chunk.buf[..chunk.len];
            match &mut dm {
                None => ours.update(bytes),
                Some(dm) => {
                    dm.update(bytes);
                    let mut at = 0;
                    for &(a, b) in &chunk.zero_runs {
                        ours.update(&bytes[at..a * sector]);
                        ours.update(&zeros[..(b - a) * sector]);
                        at = b * sector;
                    }
                    ours.update(&bytes[at..]);
                }
            }
            done += chunk.len as u64;
            progress(done);
            let _ = free_tx.send(chunk.buf);
        }
        drop(full_rx);
        drop(free_tx);
        let extents = reader
            .join()
            .map_err(|_| Error::Device("the digest reader failed".into()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        if done < size {
            return Err(Error::Device(format!(
                "plaintext ends early at byte {done} of {size}"
            )));
        }
        Ok(DigestPass {
            digest: hex(&ours.finalize()),
            dm_crypt_view: dm.map(|d| hex(&d.finalize())),
            zero_extents: extents,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    #[test]
    fn one_pass_counts_zero_extents_across_chunks_and_gives_both_views() {
        let len = CHUNK_BYTES * 2 + 8192;
        let mut plain: Vec<u8> = (0..len).map(|i| (i * 7 + i / 512) as u8).collect();
        let key = VolumeKey::from_secret(SecretBytes::from_slice(&[0x5c; 64][..]));
        let cipher = SectorCipher::new(key.expose_secret()).unwrap();
        let mut ct = plain.clone();
        cipher.encrypt_sectors(&mut ct, 512, 0, 1);
        // Zero ciphertext: 2 sectors at the start, 2 across the first chunk boundary, the last.
        let runs = [
            (0, 1024),
            (CHUNK_BYTES - 512, CHUNK_BYTES + 512),
            (len - 512, len),
        ];
        for (a, b) in runs {
            ct[a..b].fill(0);
            plain[a..b].fill(0);
        }
        let mut dm = ct.clone();
        cipher.decrypt_sectors(&mut dm, 512, 0, 1);
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &[0xee; 4096]).unwrap();
        std::io::Write::write_all(&mut file, &ct).unwrap();
        let segment = Segment {
            data_offset_bytes: 4096,
            data_size_bytes: len as u64,
            sector_size: 512,
            iv_tweak: 0,
        };
        let mut last = 0;
        let pass = digest_pass(&file, &segment, &key, true, |d| last = d).unwrap();
        assert_eq!(last, len as u64);
        assert_eq!(pass.digest, hex(&Sha256::digest(&plain)));
        assert_eq!(pass.dm_crypt_view, Some(hex(&Sha256::digest(&dm))));
        assert_eq!(
            pass.zero_extents,
            ZeroExtents {
                count: 3,
                bytes: 2560
            }
        );
        let pass = digest_pass(&file, &segment, &key, false, |_| {}).unwrap();
        assert_eq!(pass.digest, hex(&Sha256::digest(&plain)));
        assert_eq!(pass.dm_crypt_view, None);
        // A segment past the end of the file is an error, not a short digest.
        let long = Segment {
            data_size_bytes: len as u64 + 4096,
            ..segment
        };
        assert!(digest_pass(&file, &long, &key, false, |_| {}).is_err());
    }
}
