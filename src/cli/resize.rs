//! `vaultdisk resize`: arguments -> `crate::resize` (offline, or online growth of an open
//! volume) -> the result line.
use super::ResizeArgs;
use crate::device::HeaderAt;
use crate::error::Result;
use crate::resize::{self, NewSize};

pub fn run(args: &ResizeArgs) -> Result<()> {
    let size = NewSize {
        bytes: super::size::parse(&args.size)?,
        text: &args.size,
    };
    let at = HeaderAt::from_option(args.header.as_deref());
    let r = resize::resize_in(&args.backing, args.place.place(), &at, size, args.force)?;
    let name = args.backing.display();
    match r.online {
        None => println!(
            "resized {name}: plaintext {} -> {} bytes",
            r.old_size, r.new_size
        ),
        Some(plain) => println!(
            "resized {name}: plaintext {} -> {} bytes (open as {}, grown online)",
            r.old_size,
            r.new_size,
            plain.display()
        ),
    }
    Ok(())
}
