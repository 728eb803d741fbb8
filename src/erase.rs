//! Erasing a volume for good: every keyslot area and both header copies (LUKS2; LUKS1: the
//! header and its keyslots) overwritten, so the volume key cannot be recovered by anyone.
use crate::device::{self, Backing, Place, VolumeHeader};
use crate::error::{Error, Result};
use crate::keyslot;
use crate::luks2::ReadAt;
use std::path::Path;

/// A volume opened, measured and locked for erasing (see [`prepare`], then [`erase`]).
pub struct Erasing {
    /// The backing file, holding the update lock.
    pub dev: Backing,
    /// Bytes from offset 0 that will be overwritten.
    pub len: u64,
}

/// Opens the volume at `path` read-write, finds how much of it is header (LUKS2: both copies
/// and the keyslots area; LUKS1: everything before the payload, or all of a detached header
/// file) and takes the update lock. Nothing is written yet (the caller may still ask).
pub fn prepare(path: &Path) -> Result<Erasing> {
    prepare_in(path, Place::Whole)
}

/// [`prepare`] for the volume at `place` in `path` (a partition or byte window): only the
/// header area at the window's start is wiped, nothing outside the window.
pub fn prepare_in(path: &Path, place: Place) -> Result<Erasing> {
    let dev = Backing::open_in(path, place, true)?;
    let name = dev.name();
    let file_len = dev
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    let len = match device::read_header(&dev, path)? {
        VolumeHeader::Luks2(h) => crate::header_backup::header_area_len(&h, &name)?,
        VolumeHeader::Luks1(h) if h.payload_offset_sectors > 0 => {
            u64::from(h.payload_offset_sectors) * 512
        }
        // A detached LUKS1 header file is all header; a device with payload offset 0 is not:
        // wiping all of it would destroy the data it holds.
        VolumeHeader::Luks1(_) if device::is_block_device(dev.file()) || dev.window().is_some() => {
            return Err(Error::Device(format!(
                "{name} holds a LUKS1 header with payload offset 0 (a detached header's data?): refusing to wipe the whole device"
            )));
        }
        VolumeHeader::Luks1(_) => file_len,
    };
    let len = len.min(file_len);
    dev.lock_for_update()?;
    Ok(Erasing { dev, len })
}

/// Overwrites the header area in two synced passes. Pass 1, random: the keyslot areas (AF
/// material) and both copies become noise before anything else, so no crash can leave material
/// behind a header that was zeroed. Pass 2, zeros: the area reads as blank, so blkid and
/// cryptsetup see no LUKS signature. Returns the bytes wiped.
pub fn erase(e: &Erasing) -> Result<u64> {
    let wiped = |r: std::io::Result<()>| {
        r.map_err(|err| Error::io(format!("cannot wipe {}", e.dev.name()), err))
    };
    wiped(keyslot::wipe_area(&e.dev, 0, e.len))?;
    wiped(keyslot::zero_area(&e.dev, 0, e.len))?;
    Ok(e.len)
}
