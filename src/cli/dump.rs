//! `vaultdisk dump`: what luksDump shows, as text or stable JSON. Never key material.
use super::DumpArgs;
use super::output;
use crate::device::{self, HeaderAt, VolumeHeader};
use crate::error::Result;
use crate::report::DumpReport;

/// Runs `vaultdisk dump`: prints the header of BACKING as text or JSON.
pub fn run(args: &DumpArgs) -> Result<()> {
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
    output::print(&DumpReport::new(&header), args.json)
}
