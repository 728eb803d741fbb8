//! `vaultdisk header backup | restore`: arguments -> `crate::header_backup` -> the result line.
use super::{HeaderBackupArgs, HeaderRestoreArgs};
use crate::device::{self, HeaderAt, Place};
use crate::error::Result;
use crate::header_backup;

pub fn backup(args: &HeaderBackupArgs) -> Result<()> {
    // With --header the backup is of the detached header file.
    let at = HeaderAt::from_option(args.header.as_deref());
    let source = at.path(&args.backing);
    let place = args.place.place();
    let len = if at.is_detached() {
        // --partition/--device-offset apply to BACKING: checked, the header file used whole.
        device::locate(&args.backing, place, false, false)?;
        header_backup::backup(source, &args.file)?
    } else {
        header_backup::backup_in(source, place, &args.file)?
    };
    println!(
        "header of {} ({len} bytes) saved to {}",
        source.display(),
        args.file.display()
    );
    Ok(())
}

pub fn restore(args: &HeaderRestoreArgs) -> Result<()> {
    let at = HeaderAt::from_option(args.header.as_deref());
    // A detached header is restored into its file; BACKING (the data) is held locked.
    let place = args.place.place();
    let _data = device::lock_data_for_update_in(&args.backing, place, &at)?;
    let target = at.path(&args.backing);
    let target_place = if at.is_detached() {
        Place::Whole
    } else {
        place
    };
    header_backup::restore_in(target, target_place, &args.file, args.force)?;
    println!(
        "header of {} restored from {}",
        target.display(),
        args.file.display()
    );
    Ok(())
}
