//! `vaultdisk open`: unlock a keyslot (`crate::unlock`) and serve the plaintext through FUSE.
use super::{OpenArgs, passphrase};
use crate::daemon::{self, ServeSpec};
use crate::device::HeaderAt;
use crate::error::Result;
use crate::safepath;
use crate::unlock;

pub fn run(args: &OpenArgs) -> Result<()> {
    if super::bitlocker::detected(&args.backing, args.place.place(), args.header.as_deref()) {
        return super::bitlocker::open(args);
    }
    let unlocked = unlock::unlock(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
        &passphrase::unlock_key_or_volume_key(&args.key, args.volume_key_file.as_deref()),
        &args.key.vault.config(),
        args.key_slot,
        args.read_only,
        &passphrase::Terminal,
        &mut || {
            safepath::check_plain_target(&args.plain)?;
            daemon::ensure_backing_free(&args.backing, args.read_only)
        },
    )?;
    let allow_discards = args.discard.allowed(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    daemon::start(
        ServeSpec {
            backing: args.backing.clone(),
            plain: args.plain.clone(),
            segment: unlocked.segment,
            read_only: args.read_only,
            foreground: args.foreground,
            allow_other: args.allow_other,
            unlocked_by: unlocked.unlocked_by.to_string(),
            grow_with_file: unlocked.grows_with_file,
            allow_discards,
            bitlocker: false,
        },
        unlocked.volume_key,
    )
}
