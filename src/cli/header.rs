//! `vaultdisk header backup | restore`: the whole header area (both copies and the keyslots
//! area, 2·hdr_size + keyslots_size bytes), interchangeable with cryptsetup luksHeaderBackup.
use super::keys::Backing;
use super::{HeaderBackupArgs, HeaderRestoreArgs};
use crate::error::plain_io;
use crate::error::{Error, Result};
use crate::luks2::write::WriteAt;
use crate::luks2::{self, Header, ReadAt};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const CHUNK: u64 = 1 << 20;

/// Bytes from offset 0 that make up the header: both copies plus the keyslots area.
pub(super) fn header_area_len(h: &Header, name: &str) -> Result<u64> {
    h.binary
        .hdr_size
        .checked_mul(2)
        .and_then(|n| n.checked_add(h.metadata.wire.config.keyslots_size))
        .ok_or_else(|| Error::Device(format!("{name}: header size overflows")))
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "header".into());
    path.with_file_name(format!(".{name}.vaultdisk-{}.tmp", std::process::id()))
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

pub fn backup(args: &HeaderBackupArgs) -> Result<()> {
    let dev = Backing::open(&args.backing, false)?;
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
    if std::fs::symlink_metadata(&args.file).is_ok() {
        return Err(Error::Busy(format!(
            "{} exists: choose a new file",
            args.file.display()
        )));
    }
    let tmp = temp_beside(&args.file);
    let result = (|| -> Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| write_err(&args.file, e))?;
        let mut done = 0u64;
        let mut buf = vec![0u8; CHUNK as usize];
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            dev.read_exact_at(&mut buf[..n], done)
                .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
            out.write_all(&buf[..n])
                .map_err(|e| write_err(&args.file, e))?;
            done += n as u64;
        }
        out.sync_all().map_err(|e| write_err(&args.file, e))?;
        // hard_link refuses an existing target: no clobbering even if FILE appeared meanwhile.
        std::fs::hard_link(&tmp, &args.file).map_err(|e| write_err(&args.file, e))?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result?;
    if let Some(dir) = args.file.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    println!(
        "header of {name} ({len} bytes) saved to {}",
        args.file.display()
    );
    Ok(())
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

pub fn restore(args: &HeaderRestoreArgs) -> Result<()> {
    let src = args.file.display().to_string();
    let mut f = std::fs::File::open(&args.file).map_err(|e| {
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
    let dev = Backing::open(&args.backing, true)?;
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
        Ok((_, Some(found))) if !args.force => {
            return Err(crate::device::ambiguous(&args.backing, &found));
        }
        Ok((current, _)) => {
            current_areas = super::keys::used_areas(&current.metadata.wire);
            if current.binary.uuid != backup.binary.uuid && !args.force {
                return Err(Error::Device(format!(
                    "{src} is the header of volume {}, but {name} is volume {}: --force to restore it anyway",
                    backup.binary.uuid, current.binary.uuid
                )));
            }
            let current_len = header_area_len(&current, &name)?;
            if current_len != len && !args.force {
                return Err(Error::Device(format!(
                    "{src} has a {len}-byte header area but {name} has {current_len}: --force to restore it anyway"
                )));
            }
        }
        // Both copies damaged: exactly what a restore is for, as long as it looks like LUKS.
        Err(_) if args.force || has_luks_magic(&dev, backup.binary.hdr_size) => {}
        Err(_) => {
            return Err(Error::Device(format!(
                "{name} holds no LUKS2 header (LUKS1 or not LUKS at all): --force to write {src} over it"
            )));
        }
    }
    let hdr = backup.binary.hdr_size;
    let backup_areas = super::keys::used_areas(&backup.metadata.wire);
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
    println!("header of {name} restored from {src}");
    Ok(())
}
