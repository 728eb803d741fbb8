//! Resizing a volume's plaintext: offline, by growing (sparse) or shrinking the backing file, a
//! fixed-size data segment getting its new size through the crash-safe header write; online
//! (the volume is being served), by growing the file under a dynamic segment and telling the
//! daemon to serve the new sectors.
use crate::daemon;
use crate::device::{self, Backing, HeaderAt, Place};
use crate::error::{Error, Result};
use crate::luks2::edit::{self, EditError};
use crate::luks2::metadata::CryptSegment;
use crate::luks2::{Header, ReadAt, write};
use std::path::{Path, PathBuf};

/// How long the online path waits for PLAIN to show the new size (FUSE attributes are
/// cached for one second).
const ONLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The new plaintext size asked for: bytes, and the text as typed (for messages).
#[derive(Debug, Clone, Copy)]
pub struct NewSize<'a> {
    /// Bytes; a positive multiple of the data segment's sector size.
    pub bytes: u64,
    /// `--size` as typed.
    pub text: &'a str,
}

/// What a resize did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    /// Plaintext bytes before.
    pub old_size: u64,
    /// Plaintext bytes now.
    pub new_size: u64,
    /// PLAIN of the daemon serving the volume when it was grown online.
    pub online: Option<PathBuf>,
}

/// Resizes the volume at `path`: online when a daemon serves it (grow only, dynamic segment),
/// offline otherwise (shrinking needs `force`).
pub fn resize(path: &Path, size: NewSize<'_>, force: bool) -> Result<Resized> {
    resize_at(path, &HeaderAt::InBacking, size, force)
}

/// [`resize`] with the header where `header` says. With a detached header (`--header FILE`)
/// the data file `path` is grown or shrunk and a fixed-size segment gets its new size in FILE
/// (offline only: a served volume is exit 5).
pub fn resize_at(
    path: &Path,
    header: &HeaderAt,
    size: NewSize<'_>,
    force: bool,
) -> Result<Resized> {
    resize_in(path, Place::Whole, header, size, force)
}

/// [`resize_at`] of the volume at `place` in `path`. In a partition or byte window the
/// volume is resized offline only, as on a block device: the window's length is fixed (the
/// backing file is never grown or truncated), a dynamic segment already runs to the window's
/// end (so growing the partition grows the volume), a smaller SIZE makes the segment fixed,
/// and a SIZE past the window is exit 1 with nothing written.
pub fn resize_in(
    path: &Path,
    place: Place,
    header: &HeaderAt,
    size: NewSize<'_>,
    force: bool,
) -> Result<Resized> {
    if place != Place::Whole {
        if let Some(entry) = daemon::serving(path) {
            return Err(Error::Busy(format!(
                "{} is open as {} (pid {}): a volume in a partition or byte window is resized offline; `vaultdisk close {}` first",
                path.display(),
                entry.plain.display(),
                entry.pid,
                entry.plain.display()
            )));
        }
        let (dev, parsed) = device::open_for_update_in(path, place, header)?;
        return match header {
            HeaderAt::InBacking => resize_offline(&dev, &dev, &parsed, size, force),
            HeaderAt::File(_) => {
                let data = Backing::open_in(path, place, true)?;
                resize_offline(&dev, &data, &parsed, size, force)
            }
        };
    }
    match (daemon::serving(path), header) {
        (Some(entry), HeaderAt::InBacking) => grow_online(path, size, &entry),
        (None, HeaderAt::InBacking) => offline(path, size, force),
        (Some(entry), HeaderAt::File(_)) => Err(Error::Busy(format!(
            "{} is open as {} (pid {}): a volume with a detached header is resized offline; `vaultdisk close {}` first",
            path.display(),
            entry.plain.display(),
            entry.pid,
            entry.plain.display()
        ))),
        (None, HeaderAt::File(_)) => {
            // The header file is updated under its lock with the data file locked too
            // (device::open_for_update_at); the data file's length changes go through a
            // Backing of their own.
            let (dev, parsed) = device::open_for_update_at(path, header)?;
            let data = Backing::open(path, true)?;
            resize_offline(&dev, &data, &parsed, size, force)
        }
    }
}

/// The data segment, with SIZE checked against its sector size (exit 1 when not a positive
/// multiple).
fn checked_segment<'h>(
    header: &'h Header,
    size: NewSize<'_>,
    name: &str,
) -> Result<&'h CryptSegment> {
    let seg = header.metadata.data_segment().map_err(|why| {
        Error::Device(format!(
            "{name} uses what vaultdisk does not support: {why}"
        ))
    })?;
    let sector = u64::from(seg.sector_size);
    if size.bytes == 0 || !size.bytes.is_multiple_of(sector) {
        return Err(Error::Usage(format!(
            "--size {} must be a positive multiple of the {sector}-byte sector size of {name}",
            size.text
        )));
    }
    Ok(seg)
}

/// Plaintext bytes of a dynamic segment at `seg` in a file of `file_len` bytes: the whole
/// sectors after the data offset.
fn dynamic_size(seg: &CryptSegment, file_len: u64) -> u64 {
    let sector = u64::from(seg.sector_size);
    file_len.saturating_sub(seg.offset_bytes) / sector * sector
}

fn new_file_len(seg: &CryptSegment, size: NewSize<'_>) -> Result<u64> {
    seg.offset_bytes
        .checked_add(size.bytes)
        .ok_or_else(|| Error::Usage(format!("--size {} is too large", size.text)))
}

/// Offline resize under the update lock. Grow: the file first, then the header that claims the
/// space. Shrink (`force`): the header first, then the file. Either way a crash leaves a header
/// that fits the file.
pub fn offline(path: &Path, size: NewSize<'_>, force: bool) -> Result<Resized> {
    let (dev, header) = device::open_for_update(path)?;
    resize_offline(&dev, &dev, &header, size, force)
}

/// The offline resize of [`offline`] with the header in `dev` and the data in `data` (the
/// same file unless the header is detached).
fn resize_offline(
    dev: &Backing,
    data: &Backing,
    header: &Header,
    size: NewSize<'_>,
    force: bool,
) -> Result<Resized> {
    let name = dev.name();
    let seg = checked_segment(header, size, &name)?;
    if seg.offset_bytes == 0 && !dev.is_detached() {
        return Err(Error::Device(format!(
            "{name} has a detached header (data offset 0): resize does not support it"
        )));
    }
    let file_len = data
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {}", data.name()), e))?;
    let old_size = seg
        .size_bytes
        .unwrap_or_else(|| dynamic_size(seg, file_len));
    let new_len = new_file_len(seg, size)?;
    if size.bytes < old_size && !force {
        return Err(Error::Usage(format!(
            "--size {} is smaller than the {old_size} bytes of {name}: --force to shrink and lose the data past it",
            size.text
        )));
    }
    let set_len = |len: u64| set_file_len(data, len);
    if new_len > file_len {
        set_len(new_len)?;
    }
    // A device keeps its size: a dynamic segment smaller than it becomes a fixed one. So does
    // the data file of a detached header (grown when the data needs it, never shrunk), as
    // cryptsetup resize never changes the data device.
    let on_device =
        device::is_block_device(data.file()) || dev.is_detached() || data.window().is_some();
    let fix_on_device = on_device && seg.size_bytes.is_none() && new_len < file_len;
    if fix_on_device || (seg.size_bytes.is_some() && seg.size_bytes != Some(size.bytes)) {
        let after =
            edit::set_segment_size(&header.metadata, Some(size.bytes)).map_err(|e| match e {
                EditError::NoCryptSegment => Error::Device(format!("{name}: no crypt segment")),
                other => Error::Device(format!("{name}: new metadata is invalid: {other}")),
            })?;
        write::write_header(dev, header, after.wire, device::random_salts()?)
            .map_err(|e| dev.write_error(e))?;
    }
    if new_len < file_len && !on_device {
        set_len(new_len)?;
    }
    Ok(Resized {
        old_size,
        new_size: size.bytes,
        online: None,
    })
}

/// Sets the backing file's length; a block device is never resized here: a length it
/// already has is fine, a longer one is exit 1 (grow the LV or partition first).
fn set_file_len(dev: &Backing, len: u64) -> Result<()> {
    if let Some((offset, have)) = dev.window() {
        if len > have {
            return Err(Error::Usage(format!(
                "the window of {} at byte {offset} (the partition) has {have} bytes, the new size needs {len}: grow the partition first",
                dev.name()
            )));
        }
        return Ok(());
    }
    if device::is_block_device(dev.file()) {
        let have = device::len(dev.file())
            .map_err(|e| Error::io(format!("cannot size {}", dev.name()), e))?;
        if len > have {
            return Err(Error::Usage(format!(
                "{} has {have} bytes, the new size needs {len}: grow the device (LV, partition) first",
                dev.name()
            )));
        }
        return Ok(());
    }
    dev.set_len(len)
        .map_err(|e| Error::io(format!("cannot resize {}", dev.name()), e))
}

/// Grows an open volume whose data runs to the end of the file: no header change, so no
/// update lock is needed (the daemon holds it); the daemon never writes past its old size.
pub fn grow_online(path: &Path, size: NewSize<'_>, entry: &daemon::OpenVolume) -> Result<Resized> {
    let dev = Backing::open(path, true)?;
    let name = dev.name();
    let header = dev.luks2_header()?;
    let seg = checked_segment(&header, size, &name)?;
    let busy = |why: &str| {
        Error::Busy(format!(
            "{name} is open as {} (pid {}): {why}; `vaultdisk close {}` first",
            entry.plain.display(),
            entry.pid,
            entry.plain.display()
        ))
    };
    if seg.size_bytes.is_some() || seg.offset_bytes == 0 {
        return Err(busy(
            "its data segment has a fixed size, which only changes offline",
        ));
    }
    let file_len = dev
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    let mut old_size = dynamic_size(seg, file_len);
    if device::is_block_device(dev.file()) {
        // The device has grown already; the daemon still serves its old size.
        old_size = std::fs::metadata(&entry.plain).map_or(old_size, |m| m.len());
        if size.bytes != dynamic_size(seg, file_len) {
            return Err(busy(&format!(
                "on a device the data runs to its end: --size must be {} bytes",
                dynamic_size(seg, file_len)
            )));
        }
    }
    if size.bytes < old_size {
        return Err(busy("shrinking needs the volume closed"));
    }
    let new_len = new_file_len(seg, size)?;
    if size.bytes > old_size {
        set_file_len(&dev, new_len)?;
    }
    daemon::signal_grow(entry)?;
    let start = std::time::Instant::now();
    loop {
        let seen = std::fs::metadata(&entry.plain)
            .map(|m| m.len())
            .unwrap_or(0);
        if seen == size.bytes {
            break;
        }
        if start.elapsed() > ONLINE_WAIT {
            return Err(Error::Device(format!(
                "{name} grew to {} bytes but {} still shows {seen}: close and reopen it",
                size.bytes,
                entry.plain.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(Resized {
        old_size,
        new_size: size.bytes,
        online: Some(entry.plain.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(dir: &Path) -> PathBuf {
        let path = dir.join("v.img");
        crate::format::test_volume(&path, b"pw");
        path
    }

    fn size(bytes: u64) -> NewSize<'static> {
        NewSize { bytes, text: "N" }
    }

    #[test]
    fn offline_grow_shrink_and_fixed_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = volume(dir.path());
        let len = |p: &Path| std::fs::metadata(p).expect("stat").len();
        let r = offline(&path, size(2 << 20), false).expect("grow");
        assert_eq!((r.old_size, r.new_size), (1 << 20, 2 << 20));
        assert_eq!(len(&path), (16 << 20) + (2 << 20));
        let e = offline(&path, size(1 << 20), false).expect_err("refused");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            offline(&path, size(1000), true)
                .err()
                .map(|e| e.exit_code()),
            Some(1)
        );
        offline(&path, size(1 << 20), true).expect("shrink");
        assert_eq!(len(&path), (16 << 20) + (1 << 20));
        // A fixed-size segment gets its new size in the header.
        let (dev, header) = device::open_for_update(&path).expect("open");
        let fixed = edit::set_segment_size(&header.metadata, Some(1 << 20)).expect("edit");
        write::write_header(
            &dev,
            &header,
            fixed.wire,
            device::random_salts().expect("salts"),
        )
        .expect("write");
        drop(dev);
        offline(&path, size(3 << 20), false).expect("grow fixed");
        let dev = Backing::open(&path, false).expect("open");
        let h = dev.luks2_header().expect("header");
        assert_eq!(h.metadata.segments[&0].size_bytes, Some(3 << 20));
        assert_eq!(len(&path), (16 << 20) + (3 << 20));
    }
}
