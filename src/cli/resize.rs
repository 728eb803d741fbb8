//! `vaultdisk resize`, offline: sets the plaintext size by growing (sparse) or, with --force,
//! shrinking the backing file; a fixed-size data segment gets its new size through the
//! crash-safe header write.
use super::ResizeArgs;
use super::keys;
use crate::error::{Error, Result};
use crate::luks2::ReadAt;

pub fn run(args: &ResizeArgs) -> Result<()> {
    let size_bytes = super::size::parse(&args.size)?;
    let (dev, header) = keys::open_for_update(&args.backing)?;
    let name = dev.name();
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
        crate::luks2::write::write_header(&dev, &header, new, keys::random_salts()?)
            .map_err(|e| dev.write_error(e))?;
    }
    if new_len < file_len {
        set_len(new_len)?;
    }
    println!("resized {name}: plaintext {old_size} -> {size_bytes} bytes");
    Ok(())
}
