//! Header backup and restore: the whole header area (both copies and the keyslots area,
//! 2·hdr_size + keyslots_size bytes), interchangeable with cryptsetup luksHeaderBackup /
//! luksHeaderRestore. A backup never clobbers a file; a restore writes in a crash-safe order.
//! Also `repair`: one damaged or stale copy rewritten from the other.
use crate::device::{self, Backing, Place};
use crate::error::plain_io;
use crate::error::{Error, Result};
use crate::luks2::binary::CopyKind;
use crate::luks2::write::{self, WriteAt};
use crate::luks2::{self, Header, ReadAt};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const CHUNK: u64 = 1 << 20;

/// Bytes from offset 0 that make up the header: both copies plus the keyslots area.
pub fn header_area_len(h: &Header, name: &str) -> Result<u64> {
    h.binary
        .hdr_size
        .checked_mul(2)
        .and_then(|n| n.checked_add(h.metadata.wire.config.keyslots_size))
        .ok_or_else(|| Error::Device(format!("{name}: header size overflows")))
}

fn write_err(path: &Path, e: std::io::Error) -> Error {
    let what = format!("cannot write {}: {}", path.display(), plain_io(&e));
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            Error::Busy(format!("{} exists: choose a new file", path.display()))
        }
        std::io::ErrorKind::PermissionDenied => Error::Permission(what),
        _ => Error::Device(what),
    }
}

/// Saves the header area of the LUKS2 volume at `backing` to the new file `file` (mode 0600,
/// written beside it and hard-linked into place, so an existing file is never replaced: exit
/// 5). Returns the number of bytes saved.
pub fn backup(backing: &Path, file: &Path) -> Result<u64> {
    backup_in(backing, Place::Whole, file)
}

/// [`backup`] of the volume at `place` in `backing` (a partition or byte window): the header
/// area is read from the window's start.
pub fn backup_in(backing: &Path, place: Place, file: &Path) -> Result<u64> {
    let dev = Backing::open_in(backing, place, false)?;
    let name = dev.name();
    let header = dev.luks2_header()?;
    let len = header_area_len(&header, &name)?;
    let file_len = dev
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    if file_len < len {
        return Err(Error::Device(format!(
            "{name} is truncated: the header area needs {len} bytes, the file has {file_len}"
        )));
    }
    if std::fs::symlink_metadata(file).is_ok() {
        return Err(Error::Busy(format!(
            "{} exists: choose a new file",
            file.display()
        )));
    }
    let tmp = crate::fsutil::temp_beside(file, "header");
    let result = (|| -> Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| write_err(file, e))?;
        let mut done = 0u64;
        let mut buf = vec![0u8; CHUNK as usize];
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            dev.read_exact_at(&mut buf[..n], done)
                .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
            out.write_all(&buf[..n]).map_err(|e| write_err(file, e))?;
            done += n as u64;
        }
        out.sync_all().map_err(|e| write_err(file, e))?;
        // hard_link refuses an existing target: no clobbering even if FILE appeared meanwhile.
        std::fs::hard_link(&tmp, file).map_err(|e| write_err(file, e))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    crate::fsutil::sync_parent(file);
    Ok(len)
}

/// Which keyslot-area byte ranges a restore must write, before and after the header copies.
struct RestorePlan {
    before: Vec<(u64, u64)>,
    after: Vec<(u64, u64)>,
}

/// Splits [start, end) at every area edge and at CHUNK, skips ranges whose bytes are already
/// equal, and puts ranges used only by the current header's keyslots after the header write.
fn restore_plan(
    dev: &Backing,
    bytes: &[u8],
    start: u64,
    end: u64,
    current: &[(u64, u64)],
    backup: &[(u64, u64)],
) -> std::io::Result<RestorePlan> {
    let mut edges: Vec<u64> = vec![start, end];
    for &(o, l) in current.iter().chain(backup) {
        edges.extend(
            [o, o.saturating_add(l)]
                .into_iter()
                .filter(|&e| e > start && e < end),
        );
    }
    edges.sort_unstable();
    edges.dedup();
    let inside = |areas: &[(u64, u64)], at: u64| {
        areas
            .iter()
            .any(|&(o, l)| at >= o && at < o.saturating_add(l))
    };
    let mut plan = RestorePlan {
        before: Vec::new(),
        after: Vec::new(),
    };
    let mut disk = vec![0u8; CHUNK as usize];
    for pair in edges.windows(2) {
        let (mut at, to) = (pair[0], pair[1]);
        // Each piece between edges is wholly inside or outside every area.
        let old_only = inside(current, at) && !inside(backup, at);
        while at < to {
            let n = (to - at).min(CHUNK);
            let want = &bytes[at as usize..(at + n) as usize];
            let have = &mut disk[..n as usize];
            let same = dev.read_exact_at(have, at).is_ok() && *have == *want;
            if !same {
                if old_only {
                    plan.after.push((at, at + n));
                } else {
                    plan.before.push((at, at + n));
                }
            }
            at += n;
        }
    }
    Ok(plan)
}

/// True if the primary magic is at 0 (LUKS2, not LUKS1) or the secondary magic at `hdr_size`.
fn has_luks_magic(dev: &Backing, hdr_size: u64) -> bool {
    let mut m = [0u8; 8];
    let at = |off: u64, m: &mut [u8; 8]| dev.read_exact_at(m, off).is_ok();
    (at(0, &mut m) && m[..6] == luks2::binary::PRIMARY_MAGIC && m[6..8] == [0, 2])
        || (at(hdr_size, &mut m) && m[..6] == luks2::binary::SECONDARY_MAGIC)
}

/// Writes the header backup `file` to the volume at `backing`. Refuses (unless `force`) a
/// backup of another volume (UUID) or layout, a device with no LUKS2 header, and a device
/// whose primary area holds another signature (device::read_header_with_signature).
///
/// The order is crash-safe: first the keyslot bytes the current header does not use, then the
/// secondary copy, then the primary, then the bytes only the old header used.
pub fn restore(backing: &Path, file: &Path, force: bool) -> Result<()> {
    restore_in(backing, Place::Whole, file, force)
}

/// [`restore`] into the volume at `place` in `backing` (a partition or byte window): the
/// header area is written at the window's start and nothing outside the window is touched.
pub fn restore_in(backing: &Path, place: Place, file: &Path, force: bool) -> Result<()> {
    let src = file.display().to_string();
    let mut f = std::fs::File::open(file).map_err(|e| {
        let what = format!("cannot open {src}: {}", plain_io(&e));
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(what),
            _ => Error::Usage(what),
        }
    })?;
    // Largest possible header area: two 4 MiB copies plus a 128 MiB keyslots area.
    let cap = 2 * 0x40_0000 + luks2::metadata::MAX_KEYSLOTS_SIZE;
    let mut bytes = Vec::new();
    (&mut f)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("cannot read {src}"), e))?;
    let backup = luks2::read(bytes.as_slice()).map_err(|(p, s)| {
        Error::Device(format!(
            "{src} is not a LUKS2 header backup (primary: {p}; secondary: {s})"
        ))
    })?;
    let len = header_area_len(&backup, &src)?;
    if (bytes.len() as u64) < len {
        return Err(Error::Device(format!(
            "{src} is truncated: the header area needs {len} bytes, the file has {}",
            bytes.len()
        )));
    }
    let dev = Backing::open_in(backing, place, true)?;
    dev.lock_for_update()?;
    let name = dev.name();
    let file_len = dev
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    let data_offset = backup
        .metadata
        .segments
        .values()
        .map(|s| s.offset_bytes)
        .min()
        .unwrap_or(len);
    if file_len < len.max(data_offset) {
        return Err(Error::Device(format!(
            "{name} ({file_len} bytes) is too small for the header in {src}"
        )));
    }
    // Keyslot areas the header on disk uses now (none when it is unreadable).
    let mut current_areas = Vec::new();
    match dev.luks2_header_with_signature() {
        // Another signature where the primary copy was: the device was reused.
        Ok((_, Some(found))) if !force => {
            return Err(device::ambiguous(backing, &found));
        }
        Ok((current, _)) => {
            current_areas = current.metadata.keyslot_areas();
            if current.binary.uuid != backup.binary.uuid && !force {
                return Err(Error::Device(format!(
                    "{src} is the header of volume {}, but {name} is volume {}: --force to restore it anyway",
                    backup.binary.uuid, current.binary.uuid
                )));
            }
            let current_len = header_area_len(&current, &name)?;
            if current_len != len && !force {
                return Err(Error::Device(format!(
                    "{src} has a {len}-byte header area but {name} has {current_len}: --force to restore it anyway"
                )));
            }
        }
        // Both copies damaged: exactly what a restore is for, as long as it looks like LUKS.
        Err(_) if force || has_luks_magic(&dev, backup.binary.hdr_size) => {}
        Err(_) => {
            return Err(Error::Device(format!(
                "{name} holds no LUKS2 header (LUKS1 or not LUKS at all): --force to write {src} over it"
            )));
        }
    }
    let hdr = backup.binary.hdr_size;
    let backup_areas = backup.metadata.keyslot_areas();
    let plan = restore_plan(&dev, &bytes, 2 * hdr, len, &current_areas, &backup_areas)
        .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
    let wr = |ranges: &[(u64, u64)]| -> Result<()> {
        for &(from, to) in ranges {
            dev.write_all_at(&bytes[from as usize..to as usize], from)
                .map_err(|e| Error::io(format!("cannot write {name}"), e))?;
        }
        dev.sync_data()
            .map_err(|e| Error::io(format!("cannot sync {name}"), e))
    };
    // Order (crash safety): first the keyslot bytes the current header does not use, then the
    // secondary copy, then the primary, then the bytes only the old header used. Until the
    // primary lands the old header still finds its material intact, except where old and new
    // keyslot areas overlap with different contents (unavoidable in place; rare in practice,
    // since equal bytes are skipped).
    if !plan.before.is_empty() {
        wr(&plan.before)?;
    }
    wr(&[(hdr, 2 * hdr)])?;
    wr(&[(0, hdr)])?;
    if !plan.after.is_empty() {
        wr(&plan.after)?;
    }
    Ok(())
}

/// What [`repair`] rewrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// The copy rewritten.
    pub rewrote: CopyKind,
    /// The copy it was rewritten from.
    pub from: CopyKind,
    /// The seqid both copies now carry.
    pub seqid: u64,
}

/// The header `repair` works from: an ambiguous device (another signature where the primary
/// was) only with `force`.
fn repair_header(dev: &Backing, force: bool) -> Result<Header> {
    let (header, found) = dev.luks2_header_with_signature()?;
    match found {
        Some(found) if !force => Err(Error::Device(format!(
            "{}: the primary header area holds {found}, not a damaged LUKS2 header: --force to rewrite the primary copy from the stale secondary over it (destroying what is there)",
            dev.name()
        ))),
        Some(found) => {
            log::warn!(
                "{}: overwriting {found} with the primary header copy (--force)",
                dev.name()
            );
            Ok(header)
        }
        None => Ok(header),
    }
}

/// Rewrites the damaged or stale header copy of the LUKS2 volume at `path` from the valid one
/// (under the update lock, re-read under it). None when both copies are valid. A primary area
/// holding another signature (LVM2, a filesystem, ...) is refused (exit 4) unless `force`.
pub fn repair(path: &Path, force: bool) -> Result<Option<Repaired>> {
    repair_in(path, Place::Whole, force)
}

/// [`repair`] of the volume at `place` in `path` (a partition or byte window).
pub fn repair_in(path: &Path, place: Place, force: bool) -> Result<Option<Repaired>> {
    let dev = Backing::open_in(path, place, true)?;
    let header = repair_header(&dev, force)?;
    if header.damaged_copy().is_none() {
        return Ok(None);
    }
    dev.lock_for_update()?;
    // Re-read under the lock: another update may have finished meanwhile.
    let header = repair_header(&dev, force)?;
    let [salt, _] = device::random_salts()?;
    let rewrote = write::repair(&dev, &header, salt).map_err(|e| dev.write_error(e))?;
    Ok(rewrote.map(|kind| Repaired {
        rewrote: kind,
        from: header.current,
        seqid: header.binary.seqid,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, NewKey};
    use crate::keyslot;
    use std::path::PathBuf;

    fn volume(dir: &Path) -> PathBuf {
        let path = dir.join("v.img");
        crate::format::test_volume(&path, b"pw");
        path
    }

    fn opens(path: &Path, p: &[u8]) -> bool {
        let dev = Backing::open(path, false).expect("open");
        let h = dev.luks2_header().expect("header");
        keyslot::unlock(&h.metadata, &dev, p, None).is_ok()
    }

    fn poke(path: &Path, offset: u64, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, bytes, offset).expect("write");
    }

    #[test]
    fn backup_then_restore_brings_the_old_keys_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = volume(dir.path());
        let saved = dir.path().join("hdr.bak");
        let len = backup(&path, &saved).expect("backup");
        assert_eq!(len, 2 * 0x4000 + (16 << 20) - 2 * 0x4000);
        assert_eq!(std::fs::metadata(&saved).expect("stat").len(), len);
        assert_eq!(backup(&path, &saved).map_err(|e| e.exit_code()), Err(5));
        // A key added after the backup is gone once it is restored.
        let (dev, header) = device::open_for_update(&path).expect("open");
        let (id, vk) = keyslot::unlock(&header.metadata, &dev, b"pw", None).expect("unlock");
        let new = NewKey {
            passphrase: b"later",
            kdf: keys::full_entropy_kdf(),
            keyslot: None,
            token: None,
        };
        keys::add_key(&dev, &header, &vk, id, new).expect("add");
        drop(dev);
        assert!(opens(&path, b"later"));
        restore(&path, &saved, false).expect("restore");
        assert!(!opens(&path, b"later") && opens(&path, b"pw"));
        // A missing backup file: exit 1; a backup of another volume: refused without force.
        assert_eq!(
            restore(&path, &path.with_extension("none"), false).map_err(|e| e.exit_code()),
            Err(1)
        );
        let sub = dir.path().join("o");
        std::fs::create_dir(&sub).expect("mkdir");
        let other = volume(&sub);
        let e = restore(&other, &saved, false).expect_err("other volume");
        assert!(e.to_string().contains("--force"), "{e}");
        restore(&other, &saved, true).expect("forced");
        assert!(opens(&other, b"pw"));
    }

    #[test]
    fn repair_rewrites_a_damaged_copy_and_needs_force_over_a_signature() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = volume(dir.path());
        assert_eq!(repair(&path, false).expect("noop"), None);
        poke(&path, 0x4000 + 5000, b"x");
        let r = repair(&path, false).expect("repair").expect("rewrote");
        assert_eq!(
            (r.rewrote, r.from, r.seqid),
            (CopyKind::Secondary, CopyKind::Primary, 1)
        );
        assert_eq!(repair(&path, false).expect("noop"), None);
        // The primary wiped and an ext4 superblock magic written there.
        poke(&path, 0, &[0u8; 0x4000]);
        poke(&path, 1080, &[0x53, 0xEF]);
        let e = repair(&path, false).expect_err("ambiguous");
        assert_eq!(e.exit_code(), 4);
        assert!(
            e.to_string().contains("ext2/3/4") && e.to_string().contains("--force"),
            "{e}"
        );
        let r = repair(&path, true).expect("forced").expect("rewrote");
        assert_eq!(
            (r.rewrote, r.from),
            (CopyKind::Primary, CopyKind::Secondary)
        );
        assert!(opens(&path, b"pw"));
        assert_eq!(repair(&path, false).expect("noop"), None);
    }
}
