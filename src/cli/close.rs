//! `vaultdisk close`: unmount PLAIN and wait for its daemon to exit.
use super::CloseArgs;
use crate::error::Result;

pub fn run(args: &CloseArgs) -> Result<()> {
    crate::daemon::close(&args.plain)
}
