//! `vaultdisk format`: arguments (and, for a vault-only volume, the vault enrolment) ->
//! `crate::format` -> the recovery key printed once.
use super::{FormatArgs, output, passphrase, size};
use crate::device::Place;
use crate::error::{Error, Result};
use crate::format::{self, DetachedData, FirstKeys, Options};
use crate::luks2::layout::Layout;
use crate::unlock::{self, vault};
use std::path::Path;

pub fn run(args: &FormatArgs) -> Result<()> {
    let place = args.place.place();
    let (size_bytes, size_text, detached) = match (&args.size, &args.header) {
        (Some(text), None) => (size::parse(text)?, text.clone(), None),
        (Some(text), Some(_)) => (size::parse(text)?, text.clone(), Some(DetachedData::Fixed)),
        // clap: without --size and --header a partition or window is given; the volume fills it.
        (None, None) => {
            let len = format::check_window(&args.backing, place, args.force)?;
            let header = Layout::default().data_offset;
            let sector = u64::from(args.sector_size);
            let space = len.saturating_sub(header) / sector * sector;
            if space == 0 {
                return Err(Error::Device(format!(
                    "the window of {} ({len} bytes) is too small for a volume: the header alone takes {header} bytes",
                    args.backing.display()
                )));
            }
            (space, format!("(all {space} bytes after the header)"), None)
        }
        (None, Some(_)) => {
            let len = data_len(&args.backing, place)?;
            let sector = u64::from(args.sector_size);
            (
                len / sector * sector,
                format!("(all {len} bytes of {})", args.backing.display()),
                Some(DetachedData::WholeDevice),
            )
        }
    };
    let opts = Options {
        size_bytes,
        size_text,
        sector_size: args.sector_size,
        key_size_bits: args.key_size,
        label: args.label.clone(),
        uuid: args.uuid.clone(),
    };
    let plan = format::plan(&opts, |key_len| args.pbkdf.request(key_len))?;
    // With --header the header file is what is written; BACKING only holds the data.
    let target = args.header.as_deref().unwrap_or(&args.backing);
    if detached.is_some() {
        format::check_header_target(target, args.force)?;
        if place != Place::Whole {
            // The data's window must exist (it is never written).
            data_len(&args.backing, place)?;
        }
    } else if place != Place::Whole {
        format::check_window(target, place, args.force)?;
    } else {
        format::check_target(target, args.force)?;
    }
    if crate::device::path_is_block_device(target) && !args.batch {
        confirm_device(target)?;
    }
    // Read (and length-checked) before any prompt: a bad key file writes nothing.
    let volume_key = match &args.volume_key_file {
        Some(f) => {
            let k = unlock::read_volume_key_file(f)?;
            if k.expose_secret().len() != plan.key_bytes {
                return Err(Error::Usage(format!(
                    "volume key file {} holds {} bytes; --key-size {} needs {}",
                    f.display(),
                    k.expose_secret().len(),
                    args.key_size,
                    plan.key_bytes
                )));
            }
            Some(k)
        }
        None => None,
    };
    let vault_only = args.kek.transit_key.is_some() || args.kek.kv_path.is_some();
    if args.no_recovery_key && !vault_only {
        return Err(Error::Usage(
            "--no-recovery-key needs --transit-key or --kv-path".into(),
        ));
    }
    let keys = if vault_only {
        // Keyslot 0 is a vault secret, keyslot 1 a recovery key unless --no-recovery-key.
        if args.key.key_file.is_some() || args.key.recovery_key {
            return Err(Error::Usage(
                "--transit-key/--kv-path make a vault-only volume: drop --key-file/--recovery-key (add a passphrase later with add-key)".into(),
            ));
        }
        let enrolment = vault::enrol(&args.key.vault.config(), &args.kek.new_kek()?, 0)?;
        FirstKeys::Vault {
            secret: vault::keyslot_passphrase(&enrolment.secret),
            token: enrolment.token.encode(),
            recovery_key: !args.no_recovery_key,
        }
    } else {
        FirstKeys::Passphrase(passphrase::read(
            &args.key,
            &args.backing.display().to_string(),
            true,
        )?)
    };
    let created = match detached {
        None => format::create_in(&args.backing, place, &plan, keys, volume_key)?,
        Some(size) => {
            format::create_detached_in(target, &args.backing, place, &plan, keys, size, volume_key)?
        }
    };
    if let Some(key) = created.recovery_key {
        output::print_recovery_key(&key)?;
        eprintln!(
            "keyslot 1 of {} holds the recovery key above: keep it safe, it is not shown again (open --recovery-key)",
            target.display()
        );
    }
    Ok(())
}

/// The length of the data file BACKING of `format --header` without `--size`.
fn data_len(backing: &Path, place: Place) -> Result<u64> {
    if place != Place::Whole {
        return Ok(crate::device::locate(backing, place, false, false)?.len());
    }
    let file = crate::device::open_backing(backing, false).map_err(|e| match e.kind() {
        crate::error::ErrorKind::Device => Error::Usage(format!(
            "{}: format --header without --size uses all of BACKING, which must exist ({})",
            backing.display(),
            e.message()
        )),
        _ => e,
    })?;
    crate::device::len(&file)
        .map_err(|e| Error::io(format!("cannot size {}", backing.display()), e))
}

/// Asks for "YES" on the terminal before formatting a block device, as cryptsetup does;
/// refuses (exit 1) without a terminal.
fn confirm_device(path: &Path) -> Result<()> {
    let name = path.display();
    passphrase::confirm_yes(
        &format!(
            "\nWARNING!\n========\nThis will overwrite data on {name} irrevocably.\n\nAre you sure? (Type 'yes' in capital letters): "
        ),
        format!(
            "format of the device {name} needs confirmation on a terminal: --batch to format without asking"
        ),
        format!("format of {name} not confirmed"),
    )
}
