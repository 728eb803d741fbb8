//! `vaultdisk header backup | restore`: arguments -> `crate::header_backup` -> the result line.
use super::{HeaderBackupArgs, HeaderRestoreArgs};
use crate::error::Result;
use crate::header_backup;

pub fn backup(args: &HeaderBackupArgs) -> Result<()> {
    let len = header_backup::backup(&args.backing, &args.file)?;
    println!(
        "header of {} ({len} bytes) saved to {}",
        args.backing.display(),
        args.file.display()
    );
    Ok(())
}

pub fn restore(args: &HeaderRestoreArgs) -> Result<()> {
    header_backup::restore(&args.backing, &args.file, args.force)?;
    println!(
        "header of {} restored from {}",
        args.backing.display(),
        args.file.display()
    );
    Ok(())
}
