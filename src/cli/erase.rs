//! `vaultdisk erase`: wipes every keyslot area and both header copies (LUKS2; LUKS1: the header
//! and its keyslots), after confirmation.
//! Afterwards the volume key cannot be recovered by anyone: the data is gone for good.
use super::EraseArgs;
use crate::device::Backing;
use crate::device::{self, VolumeHeader};
use crate::error::{Error, Result};
use crate::keyslot;
use crate::luks2::ReadAt;
use std::io::{BufRead, IsTerminal, Write};

pub fn run(args: &EraseArgs) -> Result<()> {
    let dev = Backing::open(&args.backing, true)?;
    let name = dev.name();
    let file_len = dev
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {name}"), e))?;
    // LUKS2: both copies and the keyslots area. LUKS1: everything before the payload (the
    // phdr and the eight keyslots' material); a detached LUKS1 header file is all header.
    let len = match device::read_header(dev.file(), &args.backing)? {
        VolumeHeader::Luks2(h) => crate::header_backup::header_area_len(&h, &name)?,
        VolumeHeader::Luks1(h) if h.payload_offset_sectors > 0 => {
            u64::from(h.payload_offset_sectors) * 512
        }
        VolumeHeader::Luks1(_) => file_len,
    };
    let len = len.min(file_len);
    dev.lock_for_update()?;
    if !args.batch {
        confirm(&name)?;
    }
    // Pass 1, random: the keyslot areas (AF material) and both copies become noise, synced
    // before anything else, so no crash can leave material behind a header that was zeroed.
    // Pass 2, zeros: the area reads as blank, so blkid/cryptsetup see no LUKS signature.
    keyslot::wipe_area(&dev, 0, len).map_err(|e| Error::io(format!("cannot wipe {name}"), e))?;
    keyslot::zero_area(&dev, 0, len).map_err(|e| Error::io(format!("cannot wipe {name}"), e))?;
    println!("erased {name}: {len} bytes of header and keyslots wiped; the data is gone for good");
    Ok(())
}

/// Asks for "YES" on the terminal; refuses (exit 1) without a terminal.
fn confirm(name: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(format!(
            "erase {name} needs confirmation on a terminal: --batch to erase without asking"
        )));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "This wipes every key of {name}: its data will be unreadable for good.\nType YES to erase: "
    );
    let _ = err.flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("cannot read the confirmation", e))?;
    if line.trim_end_matches(['\n', '\r']) != "YES" {
        return Err(Error::Usage(format!("erase of {name} not confirmed")));
    }
    Ok(())
}
