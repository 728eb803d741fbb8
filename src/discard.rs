//! Whether a volume's discards reach its backing: `--allow-discards` on open/mount, and the
//! LUKS2 header's persistent "allow-discards" config flag (cryptsetup's `--persistent`).
//! The data path itself is `Volume::discard`; this module only decides and stores the policy.
use crate::device::{self, HeaderAt, Place, VolumeHeader};
use crate::error::{Error, Result};
use crate::luks2::{edit, write};
use std::path::Path;

/// The LUKS2 config flag cryptsetup stores for `--allow-discards --persistent`
/// (docs/format.md: config "flags", persistent activation flags).
pub const ALLOW_DISCARDS_FLAG: &str = "allow-discards";

/// Whether the header of the volume at `place` in `backing` (or its detached `header`) holds
/// the persistent "allow-discards" flag. LUKS1 has no such flag: false.
pub fn header_allows(backing: &Path, place: Place, header: &HeaderAt) -> Result<bool> {
    let located = device::locate_with(backing, place, header, false, false)?;
    match located.read_header()? {
        VolumeHeader::Luks2(h) => Ok(edit::has_config_flag(&h.metadata, ALLOW_DISCARDS_FLAG)),
        VolumeHeader::Luks1(_) => Ok(false),
    }
}

/// Stores the "allow-discards" flag in the LUKS2 header of `backing` through the crash-safe
/// header write (under the update lock). Returns false when the header held it already
/// (nothing written). LUKS1 headers cannot hold it (exit 4). A volume inside a partition or
/// window gets the flag in its header there (device::open_for_update_in).
pub fn persist_allow_discards(backing: &Path, place: Place, header: &HeaderAt) -> Result<bool> {
    let (dev, header) = device::open_for_update_in(backing, place, header)?;
    let name = dev.name();
    let Some(after) = edit::set_config_flag(&header.metadata, ALLOW_DISCARDS_FLAG, true)
        .map_err(|e| Error::Device(format!("{name}: new metadata is invalid: {e}")))?
    else {
        return Ok(false);
    };
    write::write_header(&dev, &header, after.wire, device::random_salts()?)
        .map_err(|e| dev.write_error(e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_sets_the_flag_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.img");
        crate::format::test_volume(&path, b"pw");
        assert!(!header_allows(&path, Place::Whole, &HeaderAt::InBacking).unwrap());
        assert!(persist_allow_discards(&path, Place::Whole, &HeaderAt::InBacking).unwrap());
        assert!(header_allows(&path, Place::Whole, &HeaderAt::InBacking).unwrap());
        assert!(!persist_allow_discards(&path, Place::Whole, &HeaderAt::InBacking).unwrap());
        // A file without a partition table has no partition 1: exit 4, nothing written.
        let e =
            persist_allow_discards(&path, Place::Partition(1), &HeaderAt::InBacking).unwrap_err();
        assert_eq!(e.exit_code(), 4);
    }
}
