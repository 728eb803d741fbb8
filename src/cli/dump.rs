//! `vaultdisk dump`: what luksDump shows, as text or stable JSON. Never key material.
use super::DumpArgs;
use super::output;
use crate::device::{self, VolumeHeader};
use crate::error::Result;
use crate::report::DumpReport;

/// Runs `vaultdisk dump`: prints the header of BACKING as text or JSON.
pub fn run(args: &DumpArgs) -> Result<()> {
    let located = device::locate(&args.backing, args.place.place(), false, false)?;
    let header = device::read_header(located.window(), &args.backing)?;
    if let VolumeHeader::Luks2(h) = &header {
        device::warn_damaged_copy(h, &args.backing);
    }
    output::print(&DumpReport::new(&header), args.json)
}
