//! `vaultdisk add-key | remove-key | change-key | test-key | repair | add-recovery-key`:
//! arguments, the unlock, one call into `crate::keys` (the keyslot lifecycle), the result line.
use super::{
    AddKeyArgs, AddRecoveryKeyArgs, ChangeKeyArgs, KeyArgs, PbkdfArgs, RemoveKeyArgs, RepairArgs,
    TestKeyArgs, passphrase,
};
use crate::crypto::kdf::Kdf;
use crate::device::{self, VolumeHeader};
use crate::error::{Error, Result};
use crate::header_backup;
use crate::keys::{self, NewKey};
use crate::keyslot;
use crate::luks2::Header;
use crate::luks2::metadata::MAX_OBJECTS;
use crate::secret::VolumeKey;
use std::io::IsTerminal;
use std::path::Path;

pub(super) use crate::device::Backing;

/// The library's `device::random_salts` (cli/vault.rs calls it here until the merge).
pub(super) fn random_salts() -> Result<[[u8; 64]; 2]> {
    device::random_salts()
}

/// The library's `device::open_for_update` (cli/vault.rs calls it here until the merge).
pub(super) fn open_for_update(path: &Path) -> Result<(Backing, Header)> {
    device::open_for_update(path)
}

/// True when this key would be read from stdin (explicit "-" or no file and no tty).
fn from_stdin(key: &KeyArgs) -> bool {
    match key.key_file.as_deref() {
        Some(p) => p == Path::new("-"),
        None => !std::io::stdin().is_terminal(),
    }
}

/// Unlocks with the existing key (with `with_vault`, vault tokens first when credentials are
/// present, then the passphrase): (keyslot id, volume key, what opened it). Exit 2 when
/// nothing opens.
pub(super) fn unlock_existing(
    dev: &Backing,
    header: &Header,
    key: &KeyArgs,
    only: Option<u32>,
    with_vault: bool,
) -> Result<(u32, VolumeKey, String)> {
    if let Some(id) = only
        && !header.metadata.keyslots.contains_key(&id)
    {
        return Err(Error::Usage(format!(
            "keyslot {id} of {} is not in use",
            dev.name()
        )));
    }
    keyslot::candidates(&header.metadata, only)
        .map_err(|e| super::open::unlock_error(e, dev.path()))?;
    if !with_vault {
        let (id, vk) =
            super::open::unlock_luks2_passphrase(&header.metadata, dev, key, only, dev.path())?;
        return Ok((id, vk, format!("keyslot {id}")));
    }
    let opened = super::open::unlock_luks2(&header.metadata, dev, key, only, dev.path())?;
    Ok((opened.keyslot, opened.volume_key, opened.unlocked_by))
}

fn unlock(
    dev: &Backing,
    header: &Header,
    key: &KeyArgs,
    only: Option<u32>,
) -> Result<(u32, VolumeKey)> {
    unlock_existing(dev, header, key, only, true).map(|(id, vk, _)| (id, vk))
}

/// The keyslot KDF the pbkdf options ask for (same rules as `format`).
fn keyslot_kdf(args: &PbkdfArgs, key_len: usize) -> Result<Kdf> {
    keys::calibrate(&args.request(key_len)?)
}

/// The library's `keys::free_keyslot` (cli/vault.rs calls it here until the merge).
pub(super) fn free_keyslot(header: &Header, want: Option<u32>, name: &str) -> Result<u32> {
    keys::free_keyslot(header, want, name)
}

/// The library's `keys::add_keyslot` with its former arguments (cli/vault.rs calls it here
/// until the merge).
#[allow(clippy::too_many_arguments)]
pub(super) fn add_keyslot(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    digest_id: u32,
    pass: &[u8],
    kdf: Kdf,
    want: Option<u32>,
    token: Option<serde_json::Value>,
) -> Result<(u32, Header)> {
    let new = NewKey {
        passphrase: pass,
        kdf,
        keyslot: want,
        token,
    };
    keys::add_keyslot(dev, header, volume_key, digest_id, new)
}

/// The library's `keys::remove_keyslot` (cli/vault.rs calls it here until the merge).
pub(super) fn remove_keyslot(dev: &Backing, header: &Header, id: u32) -> Result<Header> {
    keys::remove_keyslot(dev, header, id)
}

/// The library's `keys::digest_of` (cli/vault.rs calls it here until the merge).
pub(super) fn digest_id_of(header: &Header, keyslot: u32, name: &str) -> Result<u32> {
    keys::digest_of(header, keyslot, name)
}

pub fn add_key(args: &AddKeyArgs) -> Result<()> {
    let new_key = KeyArgs {
        key_file: args.new_key_file.clone(),
        ..KeyArgs::default()
    };
    if from_stdin(&args.key) && from_stdin(&new_key) {
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
    let (dev, header) = device::open_for_update(&args.backing)?;
    let name = dev.name();
    // Before any prompt: the keyslot asked for must be free.
    if args.key_slot.is_some() {
        keys::free_keyslot(&header, args.key_slot, &name)?;
    }
    let (opened, vk) = unlock(&dev, &header, &args.key, None)?;
    let pass = passphrase::read(&new_key, &format!("the new key of {name}"), true)?;
    let kdf = keyslot_kdf(&args.pbkdf, vk.expose_secret().len())?;
    let new = NewKey {
        passphrase: pass.expose_secret(),
        kdf,
        keyslot: args.key_slot,
        token: None,
    };
    let (id, _) = keys::add_key(&dev, &header, &vk, opened, new)?;
    println!("added keyslot {id} to {name}");
    Ok(())
}

pub fn add_recovery_key(args: &AddRecoveryKeyArgs) -> Result<()> {
    let (dev, header) = device::open_for_update(&args.backing)?;
    let name = dev.name();
    let (opened, vk) = unlock(&dev, &header, &args.key, None)?;
    let (id, recovery) = keys::add_recovery_key(&dev, &header, &vk, opened)?;
    print_recovery_key(&recovery)?;
    eprintln!(
        "added recovery keyslot {id} to {name}: keep the key above safe, it is not shown again (open --recovery-key)"
    );
    Ok(())
}

/// Prints a new recovery key once, on stdout alone, so `> file` or a pipe captures exactly it.
pub(super) fn print_recovery_key(key: &crate::secret::Passphrase) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(key.expose_secret())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot print the recovery key", e))
}

pub fn remove_key(args: &RemoveKeyArgs) -> Result<()> {
    let (dev, header) = device::open_for_update(&args.backing)?;
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
    let (dev, header) = device::open_for_update(&args.backing)?;
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
    let file = device::open_backing(&args.backing, false)?;
    let name = args.backing.display().to_string();
    match device::read_header(&file, &args.backing)? {
        VolumeHeader::Luks2(h) => {
            device::warn_damaged_copy(&h, &args.backing);
            let dev = Backing::from_file(file, &args.backing);
            // An explicit key is tested alone; without one, vault tokens are tried as by open.
            let explicit = args.key.key_file.is_some() || args.key.recovery_key;
            if explicit && args.key.vault.token_only {
                return Err(Error::Usage(
                    "--token-only tests the vault tokens: drop --key-file/--recovery-key".into(),
                ));
            }
            let (id, _, _) = unlock_existing(&dev, &h, &args.key, args.key_slot, !explicit)?;
            println!("keyslot {id} opens {name}");
        }
        VolumeHeader::Luks1(h) => {
            let only = match args.key_slot {
                Some(n) if n < 8 => Some(n as u8),
                Some(n) => {
                    return Err(Error::Usage(format!(
                        "keyslot {n} of {name} is not in use (LUKS1 has 0..7)"
                    )));
                }
                None => None,
            };
            let pass = passphrase::read(&args.key, &name, false)?;
            let opened = h
                .unlock(&file, pass.expose_secret(), only)
                .map_err(|e| Error::Device(format!("{name}: {e}")))?;
            match opened {
                Some((id, _)) => println!("keyslot {id} opens {name}"),
                None => {
                    return Err(Error::NoKey {
                        path: args.backing.clone(),
                        what: "passphrase",
                        tried: "all enabled LUKS1 keyslots".into(),
                    });
                }
            }
        }
    }
    Ok(())
}

pub fn repair(args: &RepairArgs) -> Result<()> {
    let name = args.backing.display();
    match header_backup::repair(&args.backing, args.force)? {
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
