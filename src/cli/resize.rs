//! `vaultdisk resize`: arguments -> `crate::resize` (offline, or online growth of an open
//! volume) -> the result line.
use super::ResizeArgs;
use crate::error::{Error, Result};
use crate::resize::{self, NewSize};

pub fn run(args: &ResizeArgs) -> Result<()> {
    if let Some(h) = &args.header {
        return Err(Error::Usage(format!(
            "resize --header {} is not supported yet: a detached header's data segment is resized by cryptsetup resize, or grows with BACKING when its size is dynamic",
            h.display()
        )));
    }
    let size = NewSize {
        bytes: super::size::parse(&args.size)?,
        text: &args.size,
    };
    let r = resize::resize(&args.backing, size, args.force)?;
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
