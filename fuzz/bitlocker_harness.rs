//! Body of the `bitlocker_metadata` fuzz target, shared with the corpus replay test
//! `bitlocker::fuzz_corpus_replay` (tests/it/bitlocker.rs). The input is a boot sector (first
//! 512 bytes) followed by one FVE metadata block; the harness lays them out as a 1 MiB volume
//! with the block copied to all three metadata offsets (their self-offsets and CRC-32 made
//! right, so mutations reach the entry parser), then reads it as `vaultdisk dump` and `open`
//! would. Returns whether the metadata was accepted; a reject must be an `Err`, never a panic,
//! a hang or a large allocation.
#![allow(dead_code)]
use std::sync::Arc;
use vaultdisk::bitlocker::{Bitlocker, BitlockerVolume, Credential, Info, format};
use vaultdisk::disk::Window;
use vaultdisk::secret::SecretBytes;

const VOLUME: usize = 1 << 20;
const COPIES: [usize; 3] = [0x10000, 0x30000, 0x50000];

/// Lays `data` out as a volume (see the module comment).
pub fn volume(data: &[u8]) -> Vec<u8> {
    let mut dev = vec![0u8; VOLUME];
    let boot = data.len().min(512);
    dev[..boot].copy_from_slice(&data[..boot]);
    let block = &data[boot..];
    let block = &block[..block.len().min(0x10000)];
    let at = if &dev[3..11] == b"MSWIN4.1" { 424 } else { 160 };
    for (i, &c) in COPIES.iter().enumerate() {
        dev[at + 16 + 8 * i..at + 24 + 8 * i].copy_from_slice(&(c as u64).to_le_bytes());
        dev[c..c + block.len()].copy_from_slice(block);
        if block.len() >= 64 {
            dev[c + 32 + 8 * i..c + 40 + 8 * i].copy_from_slice(&(c as u64).to_le_bytes());
            let size = usize::from(u16::from_le_bytes([dev[c + 8], dev[c + 9]])) * 16;
            if size >= 112 && size + 8 <= 0x10000 {
                let crc = format::crc32(&dev[c..c + size]);
                dev[c + size + 4..c + size + 8].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
    dev
}

/// Parses, reports, tries the clear key and reads through the virtual-sector map.
pub fn bitlocker_metadata(data: &[u8]) -> bool {
    let dev = volume(data);
    let Ok(info) = Info::read(&dev[..], "fuzz") else {
        return false;
    };
    let _ = info.warnings("fuzz");
    let _ = info.refusal();
    let _ = info.skipped();
    let _ = info.guid();
    let Ok(window) = Window::new(dev.clone(), 0, VOLUME as u64) else {
        return true;
    };
    let reader: Arc<dyn vaultdisk::luks2::ReadAt + Send + Sync> = Arc::new(window);
    if let Ok((fvek, _)) = Bitlocker::unlock(&info, &Credential::ClearKey, "fuzz")
        && let Ok(v) = BitlockerVolume::new(reader.clone(), &info, &fvek, "fuzz")
    {
        let mut buf = vec![0u8; 8192];
        let _ = v.read_at(0, &mut buf);
    }
    // Any 64-byte FVEK through the map, as after an unlock.
    if let Ok(v) = BitlockerVolume::new(reader, &info, &SecretBytes::from_slice(&[7u8; 64]), "fuzz")
    {
        let mut buf = vec![0u8; 4096];
        for off in [0u64, 0x10000 - 512, 0x30000, (VOLUME - 4096) as u64] {
            let _ = v.read_at(off, &mut buf);
        }
    }
    true
}
