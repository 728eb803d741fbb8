//! `vaultdisk erase`: arguments -> `crate::erase` (after confirmation on a terminal unless
//! --batch) -> the result line. Afterwards the data is gone for good.
use super::{EraseArgs, passphrase};
use crate::device::{self, HeaderAt};
use crate::erase;
use crate::error::Result;

pub fn run(args: &EraseArgs) -> Result<()> {
    let at = HeaderAt::from_option(args.header.as_deref());
    // A detached header is erased in its file; BACKING (the data) is held locked, not written.
    let _data = device::lock_data_for_update(&args.backing, &at)?;
    let target = erase::prepare(at.path(&args.backing))?;
    let name = target.dev.name();
    if !args.batch {
        confirm(&name)?;
    }
    let len = erase::erase(&target)?;
    println!("erased {name}: {len} bytes of header and keyslots wiped; the data is gone for good");
    Ok(())
}

/// Asks for "YES" on the terminal; refuses (exit 1) without a terminal.
fn confirm(name: &str) -> Result<()> {
    passphrase::confirm_yes(
        &format!(
            "This wipes every key of {name}: its data will be unreadable for good.\nType YES to erase: "
        ),
        format!("erase {name} needs confirmation on a terminal: --batch to erase without asking"),
        format!("erase of {name} not confirmed"),
    )
}
