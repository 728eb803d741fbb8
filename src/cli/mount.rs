//! `vaultdisk mount` / `umount`: a volume's filesystem on a directory (see `crate::mount`).
use super::{MountArgs, UmountArgs, passphrase};
use crate::daemon;
use crate::device::HeaderAt;
use crate::error::{Error, Result};
use crate::mount::{self, MountSpec};
use crate::unlock;

pub fn run(args: &MountArgs) -> Result<()> {
    if super::bitlocker::detected(&args.backing, args.place.place(), args.header.as_deref()) {
        return super::bitlocker::mount(args);
    }
    if args.read_only && args.mkfs.is_some() {
        return Err(Error::Usage(
            "--mkfs cannot be combined with --read-only".into(),
        ));
    }
    if let Some(fs) = &args.mkfs
        && fs != &args.fs_type
    {
        return Err(Error::Usage(format!(
            "--mkfs {fs} does not match --fs-type {}",
            args.fs_type
        )));
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
            mount::check_mountpoint(&args.mountpoint)?;
            daemon::ensure_backing_free_in(&args.backing, args.place.place(), args.read_only)
        },
    )?;
    let allow_discards = args.discard.allowed(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let record = mount::mount(
        &MountSpec {
            backing: args.backing.clone(),
            mountpoint: args.mountpoint.clone(),
            segment: unlocked.segment,
            read_only: args.read_only,
            fs_type: args.fs_type.clone(),
            mkfs: args.mkfs.clone(),
            unlocked_by: unlocked.unlocked_by.to_string(),
            allow_discards,
            bitlocker: false,
        },
        unlocked.volume_key,
    )?;
    log::info!(
        "{} mounted on {}{}",
        args.backing.display(),
        record.mountpoint.display(),
        record
            .loop_device
            .as_deref()
            .map(|d| format!(" via {d}"))
            .unwrap_or_default()
    );
    crate::daemon::notify::ready_for_plain(&record.plain);
    Ok(())
}

pub fn run_umount(args: &UmountArgs) -> Result<()> {
    mount::umount(&args.mountpoint)
}
