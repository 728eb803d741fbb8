//! `vaultdisk header backup | restore`: arguments -> `crate::header_backup` -> the result line.
use super::{HeaderBackupArgs, HeaderRestoreArgs};
use crate::device::{self, HeaderAt};
use crate::error::Result;
use crate::header_backup;

pub fn backup(args: &HeaderBackupArgs) -> Result<()> {
    // With --header the backup is of the detached header file.
    let at = HeaderAt::from_option(args.header.as_deref());
    let source = at.path(&args.backing);
    let len = header_backup::backup(source, &args.file)?;
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
    let _data = device::lock_data_for_update(&args.backing, &at)?;
    let target = at.path(&args.backing);
    header_backup::restore(target, &args.file, args.force)?;
    println!(
        "header of {} restored from {}",
        target.display(),
        args.file.display()
    );
    Ok(())
}
