//! `vaultdisk add-key | remove-key | change-key | test-key | repair`: keyslot lifecycle with
//! crash-safe header writes (luks-format.md §2 "Writing", §5 "Adding/Removing").
use super::{
    AddKeyArgs, AddRecoveryKeyArgs, ChangeKeyArgs, KeyArgs, PbkdfArgs, RemoveKeyArgs, RepairArgs,
    TestKeyArgs, passphrase,
};
use crate::crypto::kdf::Kdf;
use crate::crypto::random;
use crate::daemon;
use crate::device::{self, VolumeHeader};
use crate::error::{Error, Result};
use crate::keyslot;
use crate::luks2::layout::Layout;
use crate::luks2::metadata::MAX_OBJECTS;
use crate::luks2::write::{self, WriteAt, WriteError};
use crate::luks2::{self, Header, ReadAt};
use crate::secret::VolumeKey;
use crate::signature::Signature;
use std::cell::Cell;
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Exit code of a simulated crash (fault-injection hook, see `Backing`).
pub const CRASH_EXIT: i32 = 86;
/// Environment variable of the fault-injection hook: crash right after the k-th write or sync.
pub const CRASH_ENV: &str = "VAULTDISK_CRASH_AFTER_WRITES";

/// The backing file opened for a metadata update. Counts every write and sync so tests can
/// simulate a crash right after the k-th one (`VAULTDISK_CRASH_AFTER_WRITES=k`; the process
/// exits with `CRASH_EXIT`, leaving exactly what had been written).
pub(super) struct Backing {
    file: File,
    pub path: PathBuf,
    crash_after: Option<u64>,
    ops: Cell<u64>,
}

impl Backing {
    /// Opens `path` (read-write when `write`).
    pub fn open(path: &Path, write: bool) -> Result<Backing> {
        Ok(Backing {
            file: device::open_backing(path, write)?,
            path: path.to_path_buf(),
            crash_after: std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok()),
            ops: Cell::new(0),
        })
    }

    /// Holds the exclusive update lock until this `Backing` is dropped (daemon::lock_for_update).
    pub fn lock_for_update(&self) -> Result<()> {
        daemon::lock_for_update(&self.file, &self.path)
    }

    /// The open backing file (for length changes; header writes go through `WriteAt`).
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// The LUKS2 header, or a one-line refusal for LUKS1 (and for ambiguous signatures).
    pub fn luks2_header(&self) -> Result<Header> {
        match self.luks2_header_with_signature()? {
            (_, Some(found)) => Err(device::ambiguous(&self.path, &found)),
            (h, None) => Ok(h),
        }
    }

    /// The LUKS2 header and, instead of a refusal, the other signature found where the
    /// primary copy belongs (device::read_header_with_signature).
    pub fn luks2_header_with_signature(&self) -> Result<(Header, Option<Signature>)> {
        match device::read_header_with_signature(&self.file, &self.path)? {
            (VolumeHeader::Luks2(h), found) => Ok((*h, found)),
            (VolumeHeader::Luks1(_), _) => Err(Error::Device(format!(
                "{} is LUKS1: this verb needs LUKS2 (cryptsetup convert --type luks2)",
                self.name()
            ))),
        }
    }

    fn tick(&self) {
        let n = self.ops.get() + 1;
        self.ops.set(n);
        if self.crash_after == Some(n) {
            eprintln!("vaultdisk: {CRASH_ENV}={n}: simulated crash");
            std::process::exit(CRASH_EXIT);
        }
    }

    /// Maps a failed header write to the crate's error.
    pub fn write_error(&self, e: WriteError) -> Error {
        let name = self.name();
        match e {
            WriteError::Concurrent { .. } => Error::Busy(format!("{name}: {e}")),
            WriteError::Io(io) => Error::io(format!("cannot write the header of {name}"), io),
            other => Error::Device(format!("{name}: {other}")),
        }
    }
}

impl ReadAt for Backing {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        self.file.len_bytes()
    }
}

impl WriteAt for Backing {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)?;
        self.tick();
        Ok(())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.tick();
        Ok(())
    }
}

pub(super) fn random_salts() -> Result<[[u8; 64]; 2]> {
    let mut s = [[0u8; 64]; 2];
    for salt in &mut s {
        random::fill(salt).map_err(|e| Error::io("cannot read the OS random generator", e))?;
    }
    Ok(s)
}

/// Opens BACKING for a metadata update: read-write, LUKS2, supported, not served read-write.
pub(super) fn open_for_update(path: &Path) -> Result<(Backing, Header)> {
    let dev = Backing::open(path, true)?;
    // Lock before reading: the header read here is the one the update is based on.
    dev.lock_for_update()?;
    let header = dev.luks2_header()?;
    device::warn_damaged_copy(&header, path);
    if !header.metadata.unsupported.is_empty() {
        return Err(Error::Device(format!(
            "{} uses what vaultdisk does not rewrite: {}",
            dev.name(),
            header.metadata.unsupported.join("; ")
        )));
    }
    Ok((dev, header))
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
        .map_err(|e| super::open::unlock_error(e, &dev.path))?;
    if !with_vault {
        let (id, vk) =
            super::open::unlock_luks2_passphrase(&header.metadata, dev, key, only, &dev.path)?;
        return Ok((id, vk, format!("keyslot {id}")));
    }
    let opened = super::open::unlock_luks2(&header.metadata, dev, key, only, &dev.path)?;
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
    super::pbkdf::calibrate(&args.request(key_len)?)
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Device(format!("internal error encoding metadata: {e}"))
}

/// (offset, size) of every keyslot area in the wire metadata.
pub(super) fn used_areas(wire: &luks2::json::Metadata) -> Vec<(u64, u64)> {
    let num = |v: &serde_json::Value| v.as_str().and_then(luks2::json::u64_string::parse);
    wire.keyslots
        .values()
        .filter_map(|k| Some((num(&k["area"]["offset"])?, num(&k["area"]["size"])?)))
        .collect()
}

/// Stores `volume_key` under `pass` in a new keyslot (id `want` or the lowest free one), linked
/// into digest `digest_id`, with a token of `token_type` linked to it when given. The material
/// is written and synced before the header points to it.
/// The keyslot id a new keyslot gets: `want` if free and in range, else the lowest free one.
pub(super) fn free_keyslot(header: &Header, want: Option<u32>, name: &str) -> Result<u32> {
    let wire = &header.metadata.wire;
    let in_use = |id: u32| wire.keyslots.contains_key(&id.to_string());
    Ok(match want {
        Some(n) if n >= MAX_OBJECTS => {
            return Err(Error::Usage(format!(
                "--key-slot {n} is out of range 0..{}",
                MAX_OBJECTS - 1
            )));
        }
        Some(n) if in_use(n) => {
            return Err(Error::Busy(format!("keyslot {n} of {name} is in use")));
        }
        Some(n) => n,
        None => (0..MAX_OBJECTS)
            .find(|&n| !in_use(n))
            .ok_or_else(|| Error::Busy(format!("all keyslots of {name} are used")))?,
    })
}

/// Stores `volume_key` under `pass` in a new keyslot (id `want` or the lowest free one), linked
/// into digest `digest_id`, with `token` (a token object; its keyslots are set here) linked to
/// it when given. The material is written and synced before the header points to it.
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
    let name = dev.name();
    let wire = &header.metadata.wire;
    let id = free_keyslot(header, want, &name)?;
    let layout = Layout {
        hdr_size: header.binary.hdr_size,
        keyslots_size: wire.config.keyslots_size,
        data_offset: 0,
    };
    let area_size = Layout::keyslot_area_size(volume_key.expose_secret().len() as u32);
    let area_offset = layout
        .find_area_gap(&used_areas(wire), area_size)
        .ok_or_else(|| {
            Error::Busy(format!(
                "all keyslots of {name} are used (no {area_size}-byte gap left in the keyslots area)"
            ))
        })?;
    let slot = keyslot::store(volume_key, pass, kdf, area_offset, area_size)
        .map_err(|e| Error::Device(format!("cannot create keyslot {id} of {name}: {e}")))?;
    let mut new = wire.clone();
    new.keyslots.insert(
        id.to_string(),
        serde_json::to_value(&slot.json).map_err(internal)?,
    );
    let digest = new
        .digests
        .get_mut(&digest_id.to_string())
        .and_then(|d| d.get_mut("keyslots"))
        .and_then(serde_json::Value::as_array_mut)
        .ok_or_else(|| Error::Device(format!("{name}: digest {digest_id} has no keyslots")))?;
    digest.push(serde_json::Value::String(id.to_string()));
    digest.sort_by_key(|v| v.as_str().and_then(|s| s.parse::<u32>().ok()));
    if let Some(mut token) = token {
        // A token linked to the keyslot, written in the same header update as the keyslot.
        let token_id = (0..MAX_OBJECTS)
            .find(|n| !new.tokens.contains_key(&n.to_string()))
            .ok_or_else(|| Error::Busy(format!("all token ids of {name} are used")))?;
        token["keyslots"] = serde_json::json!([id.to_string()]);
        new.tokens.insert(token_id.to_string(), token);
    }
    // Refuse before touching the disk if the header would not be valid or not fit.
    luks2::Metadata::check(new.clone(), header.binary.hdr_size)
        .map_err(|e| Error::Device(format!("cannot add a keyslot to {name}: {e}")))?;
    let json_len = luks2::json::encode(&new).map_err(internal)?.len() as u64;
    if json_len >= header.binary.hdr_size - luks2::binary::BINARY_SIZE as u64 {
        return Err(Error::Busy(format!(
            "all keyslots of {name} are used (the JSON area has no room for another keyslot)"
        )));
    }
    // Material first, synced: the header must never point to an area not yet written.
    dev.write_all_at(&slot.material, area_offset)
        .and_then(|()| dev.sync_data())
        .map_err(|e| Error::io(format!("cannot write keyslot {id} of {name}"), e))?;
    let after =
        write::write_header(dev, header, new, random_salts()?).map_err(|e| dev.write_error(e))?;
    Ok((id, after))
}

/// Removes keyslot `id`: header first, then the wipe.
///
/// Why this order: with the header written first, the header on disk at every instant points
/// only to intact material, so a crash leaves a volume whose header tells the truth: either
/// the keyslot is still listed and its material still opens, or it is gone. Wiping first
/// (cryptsetup's order) would, on a crash before the header write, leave a header listing a
/// keyslot whose area is noise, which `dump`/`open` can only report as damage. The price: a
/// crash between the two steps leaves the removed key's material unreferenced but not yet
/// wiped, until the area is reused by a later add-key (the only leak is to someone who holds
/// the removed key and reads the raw area); the window is one header write.
pub(super) fn remove_keyslot(dev: &Backing, header: &Header, id: u32) -> Result<Header> {
    let name = dev.name();
    let key = id.to_string();
    let mut new = header.metadata.wire.clone();
    let removed = new
        .keyslots
        .remove(&key)
        .ok_or_else(|| Error::Usage(format!("keyslot {id} of {name} is not in use")))?;
    let area = used_areas(&luks2::json::Metadata {
        keyslots: [(key.clone(), removed)].into_iter().collect(),
        ..new.clone()
    })
    .into_iter()
    .next();
    let drop_id = |list: &mut serde_json::Value| {
        if let Some(a) = list.as_array_mut() {
            a.retain(|v| v.as_str() != Some(key.as_str()));
        }
    };
    for d in new.digests.values_mut() {
        if let Some(list) = d.get_mut("keyslots") {
            drop_id(list);
        }
    }
    new.tokens.retain(|_, t| match t.get_mut("keyslots") {
        Some(list) => {
            drop_id(list);
            list.as_array().is_some_and(|a| !a.is_empty())
        }
        None => true,
    });
    let after =
        write::write_header(dev, header, new, random_salts()?).map_err(|e| dev.write_error(e))?;
    if let Some((offset, size)) = area {
        keyslot::wipe_area(dev, offset, size).map_err(|e| {
            Error::io(
                format!("keyslot {id} of {name} was removed but its area was not wiped"),
                e,
            )
        })?;
    }
    Ok(after)
}

pub(super) fn digest_id_of(header: &Header, keyslot: u32, name: &str) -> Result<u32> {
    header
        .metadata
        .digests
        .iter()
        .find(|(_, d)| d.keyslots.contains(&keyslot))
        .map(|(id, _)| *id)
        .ok_or_else(|| Error::Device(format!("{name}: keyslot {keyslot} has no digest")))
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
    let (dev, header) = open_for_update(&args.backing)?;
    let name = dev.name();
    if let Some(n) = args.key_slot
        && header.metadata.wire.keyslots.contains_key(&n.to_string())
    {
        return Err(Error::Busy(format!("keyslot {n} of {name} is in use")));
    }
    let (opened, vk) = unlock(&dev, &header, &args.key, None)?;
    let pass = passphrase::read(&new_key, &format!("the new key of {name}"), true)?;
    let kdf = keyslot_kdf(&args.pbkdf, vk.expose_secret().len())?;
    let digest = digest_id_of(&header, opened, &name)?;
    let (id, _) = add_keyslot(
        &dev,
        &header,
        &vk,
        digest,
        pass.expose_secret(),
        kdf,
        args.key_slot,
        None,
    )?;
    println!("added keyslot {id} to {name}");
    Ok(())
}

pub fn add_recovery_key(args: &AddRecoveryKeyArgs) -> Result<()> {
    let (dev, header) = open_for_update(&args.backing)?;
    let name = dev.name();
    let (opened, vk) = unlock(&dev, &header, &args.key, None)?;
    let digest = digest_id_of(&header, opened, &name)?;
    let recovery = passphrase::generate_recovery_key()?;
    // 256 bits of entropy: the full-entropy KDF (PBKDF2, 1000 iterations) is enough.
    let (id, _) = add_keyslot(
        &dev,
        &header,
        &vk,
        digest,
        recovery.expose_secret(),
        super::vault::full_entropy_kdf(),
        None,
        Some(serde_json::json!({ "type": crate::token::RECOVERY })),
    )?;
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
    let (dev, header) = open_for_update(&args.backing)?;
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
    if header.metadata.wire.keyslots.len() == 1 && !args.force {
        return Err(Error::Busy(format!(
            "keyslot {id} of {name} is the only keyslot: --force to remove it and lose access"
        )));
    }
    remove_keyslot(&dev, &header, id)?;
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
    let (dev, header) = open_for_update(&args.backing)?;
    let name = dev.name();
    let (old, vk) = unlock(&dev, &header, &args.key, args.key_slot)?;
    let pass = passphrase::read(&new_key, &format!("the new key of {name}"), true)?;
    let kdf = keyslot_kdf(&args.pbkdf, vk.expose_secret().len())?;
    let digest = digest_id_of(&header, old, &name)?;
    // cryptsetup luksChangeKey's order: the new keyslot is committed before the old one goes,
    // so a crash at any point leaves the old key or the new one working.
    let (new_id, after) = add_keyslot(
        &dev,
        &header,
        &vk,
        digest,
        pass.expose_secret(),
        kdf,
        None,
        None,
    )?;
    remove_keyslot(&dev, &after, old)?;
    println!("changed the key of {name}: keyslot {old} replaced by keyslot {new_id}");
    Ok(())
}

pub fn test_key(args: &TestKeyArgs) -> Result<()> {
    let file = device::open_backing(&args.backing, false)?;
    let name = args.backing.display().to_string();
    match device::read_header(&file, &args.backing)? {
        VolumeHeader::Luks2(h) => {
            device::warn_damaged_copy(&h, &args.backing);
            let dev = Backing {
                file,
                path: args.backing.clone(),
                crash_after: None,
                ops: Cell::new(0),
            };
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

/// The header `repair` works from: an ambiguous device (another signature where the primary
/// was) only with `force`.
fn repair_header(dev: &Backing, force: bool) -> Result<Header> {
    let (header, found) = dev.luks2_header_with_signature()?;
    match found {
        Some(found) if !force => Err(Error::Device(format!(
            "{}: the primary header area holds {found}, not a damaged LUKS2 header: --force to rewrite the primary copy from the stale secondary over it (destroying what is there)",
            dev.name()
        ))),
        Some(found) => {
            log::warn!(
                "{}: overwriting {found} with the primary header copy (--force)",
                dev.name()
            );
            Ok(header)
        }
        None => Ok(header),
    }
}

pub fn repair(args: &RepairArgs) -> Result<()> {
    let dev = Backing::open(&args.backing, true)?;
    let name = dev.name();
    let header = repair_header(&dev, args.force)?;
    if header.damaged_copy().is_none() {
        println!("both header copies of {name} are valid");
        return Ok(());
    }
    dev.lock_for_update()?;
    // Re-read under the lock: another update may have finished meanwhile.
    let header = repair_header(&dev, args.force)?;
    let [salt, _] = random_salts()?;
    match write::repair(&dev, &header, salt).map_err(|e| dev.write_error(e))? {
        Some(kind) => println!(
            "rewrote the {} header copy of {name} from the {} copy (seqid {})",
            kind.name(),
            header.current.name(),
            header.binary.seqid
        ),
        None => println!("both header copies of {name} are valid"),
    }
    Ok(())
}
