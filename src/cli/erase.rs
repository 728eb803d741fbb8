//! `vaultdisk erase`: arguments -> `crate::erase` (after confirmation on a terminal unless
//! --batch) -> the result line. Afterwards the data is gone for good.
use super::{EraseArgs, passphrase};
use crate::device::{self, HeaderAt, Place};
use crate::erase;
use crate::error::Result;

pub fn run(args: &EraseArgs) -> Result<()> {
    let at = HeaderAt::from_option(args.header.as_deref());
    // A detached header is erased in its file; BACKING (the data) is held locked, not written.
    let place = args.place.place();
    let _data = device::lock_data_for_update_in(&args.backing, place, &at)?;
    // --partition/--device-offset apply to BACKING: a detached header file is erased whole.
    let target_place = if at.is_detached() {
        Place::Whole
    } else {
        place
    };
    let target = erase::prepare_in(at.path(&args.backing), target_place)?;
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
