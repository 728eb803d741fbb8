//! `vaultdisk add-key | remove-key | change-key | test-key | repair | add-recovery-key`:
//! arguments, the unlock, one call into `crate::keys` (the keyslot lifecycle), the result line.
use super::{
    AddKeyArgs, AddRecoveryKeyArgs, ChangeKeyArgs, KeyArgs, PbkdfArgs, RemoveKeyArgs, RepairArgs,
    TestKeyArgs, output, passphrase,
};
use crate::crypto::kdf::Kdf;
use crate::device::{self, Backing, HeaderAt, Place, VolumeHeader};
use crate::error::{Error, Result};
use crate::header_backup;
use crate::keys::{self, NewKey};
use crate::luks2::Header;
use crate::luks2::metadata::MAX_OBJECTS;
use crate::secret::VolumeKey;
use crate::unlock;
use std::io::IsTerminal;
use std::path::Path;

/// True when this key would be read from stdin (explicit "-" or no file and no tty).
fn from_stdin(key: &KeyArgs) -> bool {
    match key.key_file.as_deref() {
        Some(p) => p == Path::new("-"),
        None => !std::io::stdin().is_terminal(),
    }
}

/// Unlocks with the existing key in the vault-first order (as `open`): (keyslot, volume key).
fn unlock(
    dev: &Backing,
    header: &Header,
    key: &KeyArgs,
    only: Option<u32>,
) -> Result<(u32, VolumeKey)> {
    let (by, vk) = unlock_by(dev, header, key, only, None)?;
    let id = by
        .keyslot()
        .ok_or_else(|| Error::Usage(format!("{}: no keyslot opened", dev.path().display())))?;
    Ok((id, vk))
}

/// [`unlock`], or the raw volume key in `volume_key_file` (`--volume-key-file`): how it opened.
fn unlock_by(
    dev: &Backing,
    header: &Header,
    key: &KeyArgs,
    only: Option<u32>,
    volume_key_file: Option<&Path>,
) -> Result<(unlock::UnlockedBy, VolumeKey)> {
    let opened = unlock::unlock_luks2(
        &header.metadata,
        dev,
        &passphrase::unlock_key_or_volume_key(key, volume_key_file),
        &key.vault.config(),
        only,
        dev.path(),
        &passphrase::Terminal,
    )?;
    Ok((opened.by, opened.volume_key))
}

/// The keyslot KDF the pbkdf options ask for (same rules as `format`).
fn keyslot_kdf(args: &PbkdfArgs, key_len: usize) -> Result<Kdf> {
    keys::calibrate(&args.request(key_len)?)
}

pub fn add_key(args: &AddKeyArgs) -> Result<()> {
    let new_key = KeyArgs {
        key_file: args.new_key_file.clone(),
        ..KeyArgs::default()
    };
    if args.volume_key_file.is_none() && from_stdin(&args.key) && from_stdin(&new_key) {
        return Err(Error::Usage(
            "both the existing and the new key would come from stdin: give --key-file or --new-key-file".into(),
        ));
    }
    if let Some(n) = args.key_slot
        && n >= MAX_OBJECTS
    {
        return Err(Error::Usage(format!(
            "--key-slot {n} is out of range 0..{}",
            MAX_OBJECTS - 1
        )));
    }
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let name = dev.name();
    // Before any prompt: the keyslot asked for must be free.
    if args.key_slot.is_some() {
        keys::free_keyslot(&header, args.key_slot, &name)?;
    }
    let (opened, vk) = unlock_by(
        &dev,
        &header,
        &args.key,
        None,
        args.volume_key_file.as_deref(),
    )?;
    let pass = passphrase::read(&new_key, &format!("the new key of {name}"), true)?;
    let kdf = keyslot_kdf(&args.pbkdf, vk.expose_secret().len())?;
    let new = NewKey {
        passphrase: pass.expose_secret(),
        kdf,
        keyslot: args.key_slot,
        token: None,
    };
    let (id, _) = keys::add_key_opened(&dev, &header, &vk, opened, new)?;
    println!("added keyslot {id} to {name}");
    Ok(())
}

pub fn add_recovery_key(args: &AddRecoveryKeyArgs) -> Result<()> {
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let name = dev.name();
    let (opened, vk) = unlock(&dev, &header, &args.key, None)?;
    let (id, recovery) = keys::add_recovery_key(&dev, &header, &vk, opened)?;
    output::print_recovery_key(&recovery)?;
    eprintln!(
        "added recovery keyslot {id} to {name}: keep the key above safe, it is not shown again (open --recovery-key)"
    );
    Ok(())
}

pub fn remove_key(args: &RemoveKeyArgs) -> Result<()> {
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let name = dev.name();
    let id = match args.key_slot {
        Some(n) => {
            if !header.metadata.wire.keyslots.contains_key(&n.to_string()) {
                return Err(Error::Usage(format!("keyslot {n} of {name} is not in use")));
            }
            n
        }
        None => unlock(&dev, &header, &args.key, None)?.0,
    };
    keys::remove_key(&dev, &header, id, args.force)?;
    println!("removed keyslot {id} from {name}");
    Ok(())
}

pub fn change_key(args: &ChangeKeyArgs) -> Result<()> {
    let new_key = KeyArgs {
        key_file: args.new_key_file.clone(),
        ..KeyArgs::default()
    };
    if from_stdin(&args.key) && from_stdin(&new_key) {
        return Err(Error::Usage(
            "both the old and the new key would come from stdin: give --key-file or --new-key-file"
                .into(),
        ));
    }
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let name = dev.name();
    let (old, vk) = unlock(&dev, &header, &args.key, args.key_slot)?;
    let pass = passphrase::read(&new_key, &format!("the new key of {name}"), true)?;
    let kdf = keyslot_kdf(&args.pbkdf, vk.expose_secret().len())?;
    let new = NewKey {
        passphrase: pass.expose_secret(),
        kdf,
        keyslot: None,
        token: None,
    };
    let (new_id, _) = keys::change_key(&dev, &header, &vk, old, new)?;
    println!("changed the key of {name}: keyslot {old} replaced by keyslot {new_id}");
    Ok(())
}

pub fn test_key(args: &TestKeyArgs) -> Result<()> {
    if super::bitlocker::detected(&args.backing, args.place.place(), args.header.as_deref()) {
        return super::bitlocker::test_key(args);
    }
    let located = device::locate_with(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
        false,
        false,
    )?;
    let file = located.header_window();
    let header = located.read_header()?;
    if located.is_detached() {
        // The data segment must fit BACKING (exit 4), as for open.
        located.segment(&header)?;
    }
    let shown = located.header_path();
    if args.key_chain.has_sources() {
        return test_key_chain(args, &header, file, shown);
    }
    // An explicit key is tested alone; without one, vault tokens are tried as by open.
    let explicit = args.key.key_file.is_some() || args.key.recovery_key;
    if let VolumeHeader::Luks2(h) = &header {
        device::warn_damaged_copy(h, shown);
        if explicit && args.key.vault.token_only {
            return Err(Error::Usage(
                "--token-only tests the vault tokens: drop --key-file/--recovery-key".into(),
            ));
        }
    }
    let (key, vault) = if explicit {
        (passphrase::key(&args.key), None)
    } else {
        (
            passphrase::unlock_key(&args.key),
            Some(args.key.vault.config()),
        )
    };
    let opened = unlock::unlock_header(
        &header,
        file,
        &key,
        vault.as_ref(),
        args.key_slot,
        shown,
        &passphrase::Terminal,
    )?;
    println!(
        "keyslot {} opens {}",
        opened.by.keyslot().unwrap_or_default(),
        shown.display()
    );
    Ok(())
}

/// test-key with key-chain sources (--bek-volume, --keyvault-secret, ...): each candidate
/// alone, as verify checks them; the first that opens a keyslot is named with its label.
fn test_key_chain(
    args: &TestKeyArgs,
    header: &VolumeHeader,
    file: &(impl crate::luks2::ReadAt + ?Sized),
    shown: &std::path::Path,
) -> Result<()> {
    use crate::keychain::CandidatePrompt;
    let key_files: Vec<std::path::PathBuf> = args.key.key_file.iter().cloned().collect();
    let chain = args
        .key_chain
        .key_chain(&key_files)
        .with_vault(args.key.vault.config());
    let mut last = None;
    for c in crate::keychain::resolve(&chain)? {
        match unlock::unlock_header(
            header,
            file,
            &CandidatePrompt::key(),
            None,
            args.key_slot,
            shown,
            &CandidatePrompt::new(&c),
        ) {
            Ok(opened) => {
                println!(
                    "keyslot {} opens {} ({})",
                    opened.by.keyslot().unwrap_or_default(),
                    shown.display(),
                    crate::escape::escape_line(&c.label)
                );
                return Ok(());
            }
            Err(e @ Error::NoKey { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Usage("the key chain gave no key to try".into())))
}

pub fn repair(args: &RepairArgs) -> Result<()> {
    let at = HeaderAt::from_option(args.header.as_deref());
    // A detached header is repaired in its file; BACKING (the data) is held locked.
    let place = args.place.place();
    let _data = device::lock_data_for_update_in(&args.backing, place, &at)?;
    let target = at.path(&args.backing);
    let name = target.display();
    // --partition/--device-offset apply to BACKING: a detached header file is used whole.
    let target_place = if at.is_detached() {
        Place::Whole
    } else {
        place
    };
    match header_backup::repair_in(target, target_place, args.force)? {
        Some(r) => println!(
            "rewrote the {} header copy of {name} from the {} copy (seqid {})",
            r.rewrote.name(),
            r.from.name(),
            r.seqid
        ),
        None => println!("both header copies of {name} are valid"),
    }
    Ok(())
}
