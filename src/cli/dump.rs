//! `vaultdisk dump`: what luksDump shows, as text or stable JSON. Never key material, except
//! with `--dump-volume-key` (cryptsetup's escrow path: after an unlock and a YES).
use super::DumpArgs;
use super::{output, passphrase};
use crate::device::{self, HeaderAt, VolumeHeader};
use crate::error::{Error, Result};
use crate::report::{DumpReport, VolumeKeyDump};
use crate::unlock;
use std::io::Write;

/// Runs `vaultdisk dump`: prints the header of BACKING as text or JSON.
pub fn run(args: &DumpArgs) -> Result<()> {
    if super::bitlocker::detected(&args.backing, args.place.place(), args.header.as_deref()) {
        return super::bitlocker::dump(args);
    }
    let located = device::locate_with(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
        false,
        false,
    )?;
    let header = located.read_header()?;
    if let VolumeHeader::Luks2(h) = &header {
        device::warn_damaged_copy(h, located.header_path());
    }
    if args.dump_volume_key {
        return dump_volume_key(
            args,
            &header,
            located.header_window(),
            located.header_path(),
        );
    }
    output::print(&DumpReport::new(&header), args.json)
}

/// `dump --dump-volume-key [--volume-key-file F]`: confirmation, unlock with the usual key
/// sources, then the key in cryptsetup's layout on stdout or its raw bytes in F.
fn dump_volume_key(
    args: &DumpArgs,
    header: &VolumeHeader,
    dev: &(impl crate::luks2::ReadAt + ?Sized),
    header_path: &std::path::Path,
) -> Result<()> {
    if let Some(f) = &args.volume_key_file {
        unlock::volume_key::refuse_existing_file(f)?;
    }
    if !args.batch {
        passphrase::confirm_volume_key_dump()?;
    }
    let vault = args.key.vault.config();
    let opened = unlock::unlock_header(
        header,
        dev,
        &passphrase::unlock_key(&args.key),
        Some(&vault),
        args.key_slot,
        header_path,
        &passphrase::Terminal,
    )?;
    if let Some(f) = &args.volume_key_file {
        unlock::volume_key::write_volume_key_file(f, &opened.volume_key)?;
    }
    let dump = VolumeKeyDump {
        device: args.backing.display().to_string(),
        header,
        volume_key: &opened.volume_key,
    };
    let text = dump.text(args.volume_key_file.as_deref());
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write the volume key dump to stdout", e))
}
