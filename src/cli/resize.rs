//! `vaultdisk resize`: sets the plaintext size by growing (sparse) or, with --force,
//! shrinking the backing file; a fixed-size data segment gets its new size through the
//! crash-safe header write. While the volume is open, a dynamic segment can grow: the file is
//! extended and the daemon told to serve the new sectors (PLAIN grows).
use super::ResizeArgs;
use crate::daemon;
use crate::error::{Error, Result};
use crate::luks2::ReadAt;

/// How long the online path waits for PLAIN to show the new size (FUSE attributes are
/// cached for one second).
const ONLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The data segment, with SIZE checked against its sector size (exit 1 when not a positive
/// multiple).
fn checked_segment<'h>(
    header: &'h crate::luks2::Header,
    args: &ResizeArgs,
    size_bytes: u64,
    name: &str,
) -> Result<&'h crate::luks2::metadata::CryptSegment> {
    let seg = header.metadata.data_segment().map_err(|why| {
        Error::Device(format!(
            "{name} uses what vaultdisk does not support: {why}"
        ))
    })?;
    let sector = u64::from(seg.sector_size);
    if size_bytes == 0 || !size_bytes.is_multiple_of(sector) {
        return Err(Error::Usage(format!(
            "--size {} must be a positive multiple of the {sector}-byte sector size of {name}",
            args.size
        )));
    }
    Ok(seg)
}

pub fn run(args: &ResizeArgs) -> Result<()> {
    let size_bytes = super::size::parse(&args.size)?;
    if let Some(entry) = daemon::serving(&args.backing) {
        return grow_online(args, size_bytes, &entry);
    }
    let (dev, header) = crate::device::open_for_update(&args.backing)?;
    let name = dev.name();
    let seg = checked_segment(&header, args, size_bytes, &name)?;
    let sector = u64::from(seg.sector_size);
    if seg.offset_bytes == 0 {
        return Err(Error::Device(format!(
            "{name} has a detached header (data offset 0): resize does not support it"
        )));
    }
    let file_len = dev
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    let old_size = match seg.size_bytes {
        Some(s) => s,
        None => file_len.saturating_sub(seg.offset_bytes) / sector * sector,
    };
    let new_len = seg
        .offset_bytes
        .checked_add(size_bytes)
        .ok_or_else(|| Error::Usage(format!("--size {} is too large", args.size)))?;
    if size_bytes < old_size && !args.force {
        return Err(Error::Usage(format!(
            "--size {} is smaller than the {old_size} bytes of {name}: --force to shrink and lose the data past it",
            args.size
        )));
    }
    let fixed = seg.size_bytes.is_some();
    let set_len = |len: u64| {
        dev.file()
            .set_len(len)
            .and_then(|()| dev.file().sync_all())
            .map_err(|e| Error::io(format!("cannot resize {name}"), e))
    };
    // Grow: the file first, then the header that claims the space. Shrink: the header first,
    // then the file. Either way a crash leaves a header that fits the file.
    if new_len > file_len {
        set_len(new_len)?;
    }
    if fixed && seg.size_bytes != Some(size_bytes) {
        let mut new = header.metadata.wire.clone();
        let seg_json = new
            .segments
            .values_mut()
            .find(|v| v.get("type").and_then(|t| t.as_str()) == Some("crypt"))
            .ok_or_else(|| Error::Device(format!("{name}: no crypt segment")))?;
        seg_json["size"] = serde_json::Value::String(size_bytes.to_string());
        crate::luks2::write::write_header(&dev, &header, new, crate::device::random_salts()?)
            .map_err(|e| dev.write_error(e))?;
    }
    if new_len < file_len {
        set_len(new_len)?;
    }
    println!("resized {name}: plaintext {old_size} -> {size_bytes} bytes");
    Ok(())
}

/// Grows an open volume whose data runs to the end of the file: no header change, so no
/// update lock is needed (the daemon holds it); the daemon never writes past its old size.
fn grow_online(args: &ResizeArgs, size_bytes: u64, entry: &daemon::OpenVolume) -> Result<()> {
    let dev = crate::device::Backing::open(&args.backing, true)?;
    let name = dev.name();
    let header = dev.luks2_header()?;
    let seg = checked_segment(&header, args, size_bytes, &name)?;
    let sector = u64::from(seg.sector_size);
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
    let old_size = file_len.saturating_sub(seg.offset_bytes) / sector * sector;
    if size_bytes < old_size {
        return Err(busy("shrinking needs the volume closed"));
    }
    let new_len = seg
        .offset_bytes
        .checked_add(size_bytes)
        .ok_or_else(|| Error::Usage(format!("--size {} is too large", args.size)))?;
    if size_bytes > old_size {
        dev.file()
            .set_len(new_len)
            .and_then(|()| dev.file().sync_all())
            .map_err(|e| Error::io(format!("cannot resize {name}"), e))?;
    }
    daemon::signal_grow(entry)?;
    let start = std::time::Instant::now();
    loop {
        let seen = std::fs::metadata(&entry.plain)
            .map(|m| m.len())
            .unwrap_or(0);
        if seen == size_bytes {
            break;
        }
        if start.elapsed() > ONLINE_WAIT {
            return Err(Error::Device(format!(
                "{name} grew to {size_bytes} bytes but {} still shows {seen}: close and reopen it",
                entry.plain.display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!(
        "resized {name}: plaintext {old_size} -> {size_bytes} bytes (open as {}, grown online)",
        entry.plain.display()
    );
    Ok(())
}
