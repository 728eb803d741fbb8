//! A new LUKS2 volume in a sparse backing file, laid out as cryptsetup 2.6 does: the plan is
//! validated, the first keyslots and the volume-key digest made, the metadata built by
//! `luks2::edit`, both header copies encoded, and everything written to a temporary file
//! beside the target that is renamed into place (docs/format.md §1, §4.6).
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::{self, CalibrationRequest};
use crate::crypto::{digest, random};
use crate::device::Place;

use crate::error::plain_io;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::keyslot;
use crate::luks2::binary::{BinaryHeader, CopyKind};
use crate::luks2::edit::{self, NewDigest};
use crate::luks2::layout::Layout;
use crate::luks2::{self, Metadata};
use crate::secret::{Passphrase, SecretBytes, VolumeKey};
use serde_json::Value;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// cryptsetup benchmarks the volume-key digest for 125 ms.
const DIGEST_TIME_MS: u32 = 125;

/// What a new volume should be, as given (`--size` keeps its text for messages).
#[derive(Debug, Clone)]
pub struct Options {
    /// Plaintext size in bytes.
    pub size_bytes: u64,
    /// `--size` as typed, for messages.
    pub size_text: String,
    /// 512 or 4096.
    pub sector_size: u32,
    /// Volume key bits: 256 or 512 (aes-xts-plain64).
    pub key_size_bits: u32,
    /// The header label (at most 47 bytes, no NUL).
    pub label: String,
    /// A UUID to use instead of a random one.
    pub uuid: Option<String>,
}

/// Validated format parameters.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Plaintext size in bytes, a multiple of the sector size.
    pub size_bytes: u64,
    /// Data sector size.
    pub sector_size: u32,
    /// Volume key length in bytes.
    pub key_bytes: usize,
    /// How the first passphrase keyslot's KDF is calibrated.
    pub kdf_request: CalibrationRequest,
    /// Header label.
    pub label: String,
    /// The volume UUID, lower case.
    pub uuid: String,
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

/// Checks `opts` (exit 1 for each bad value, in the order of the checks); `kdf_request` turns
/// the key length into the passphrase keyslot's KDF request (the `--pbkdf*` options).
pub fn plan(
    opts: &Options,
    kdf_request: impl FnOnce(usize) -> Result<CalibrationRequest>,
) -> Result<Plan> {
    if opts.sector_size != 512 && opts.sector_size != 4096 {
        return Err(usage(format!(
            "--sector-size {} is not supported: use 512 or 4096",
            opts.sector_size
        )));
    }
    if opts.size_bytes == 0 || !opts.size_bytes.is_multiple_of(u64::from(opts.sector_size)) {
        return Err(usage(format!(
            "--size {} must be a positive multiple of the {}-byte sector size",
            opts.size_text, opts.sector_size
        )));
    }
    let key_bytes = match opts.key_size_bits {
        256 => 32,
        512 => 64,
        n => {
            return Err(usage(format!(
                "--key-size {n} is not supported for aes-xts-plain64: use 256 or 512"
            )));
        }
    };
    let kdf_request = kdf_request(key_bytes)?;
    if opts.label.len() > 47 || opts.label.contains('\0') {
        return Err(usage("--label must be at most 47 bytes without NUL"));
    }
    let uuid = match &opts.uuid {
        Some(u) => check_uuid(u)?,
        None => random_uuid()?,
    };
    Ok(Plan {
        size_bytes: opts.size_bytes,
        sector_size: opts.sector_size,
        key_bytes,
        kdf_request,
        label: opts.label.clone(),
        uuid,
    })
}

fn check_uuid(text: &str) -> Result<String> {
    let lower = text.to_ascii_lowercase();
    let ok = lower.len() == 36
        && lower.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if ok {
        Ok(lower)
    } else {
        Err(usage(format!(
            "--uuid {text:?} is not a UUID like 12345678-1234-1234-1234-123456789abc"
        )))
    }
}

/// A random (version 4) UUID.
fn random_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    random::fill(&mut b).map_err(|e| Error::io("cannot read the OS random generator", e))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Refuses to clobber an existing non-empty file unless `force` (exit 5); a directory or a
/// non-regular file is exit 1; a block device is checked by [`check_device`].
pub fn check_target(path: &Path, force: bool) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(usage(format!("{} is a directory", path.display()))),
        Ok(m) if std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) => {
            check_device(path, force)
        }
        Ok(m) if !m.is_file() => Err(usage(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        ))),
        Ok(m) if m.len() > 0 && !force => Err(Error::Busy(format!(
            "{} exists and is not empty: use --force to overwrite it",
            path.display()
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("cannot stat {}", path.display()), e)),
    }
}

/// The first keyslots of a new volume.
pub enum FirstKeys {
    /// Keyslot 0 holds this passphrase under the plan's calibrated KDF.
    Passphrase(Passphrase),
    /// A vault-only volume: keyslot 0 holds `secret` (the passphrase form of a vault secret)
    /// under the full-entropy KDF, marked by `token`; keyslot 1 a new recovery key (marked by
    /// a `vaultdisk-recovery` token) when `recovery_key`.
    Vault {
        /// The keyslot 0 passphrase.
        secret: Passphrase,
        /// The vault token object of keyslot 0.
        token: Value,
        /// Whether keyslot 1 gets a recovery key.
        recovery_key: bool,
    },
}

/// What [`create`] made.
pub struct Created {
    /// The recovery key of keyslot 1 (vault-only volumes), to show once.
    pub recovery_key: Option<Passphrase>,
    /// The metadata written.
    pub metadata: Metadata,
}

/// One keyslot of the new volume, with the token that marks it (if any).
struct FirstKeyslot {
    id: u32,
    slot: keyslot::NewKeyslot,
    offset: u64,
    token: Option<Value>,
}

/// Creates the volume `plan` describes at `path` (checked with [`check_target`] beforehand),
/// with `keys` as its first keyslots: a fresh random volume key, the digest, both header copies.
pub fn create(path: &Path, plan: &Plan, keys: FirstKeys) -> Result<Created> {
    create_with_key(path, plan, keys, None)
}

/// [`create`] with the given `volume_key` instead of a random one (`format
/// --volume-key-file`, as cryptsetup luksFormat --volume-key-file); its length must be the
/// plan's (--key-size), else exit 1 before anything is written.
pub fn create_with_key(
    path: &Path,
    plan: &Plan,
    keys: FirstKeys,
    volume_key: Option<VolumeKey>,
) -> Result<Created> {
    let layout = Layout::default();
    let (mut metadata, slots, recovery) = build(plan, keys, &layout, volume_key)?;
    let total = layout
        .data_offset
        .checked_add(plan.size_bytes)
        .ok_or_else(|| usage("--size is too large"))?;
    let device = crate::device::path_is_block_device(path);
    if device {
        metadata = fit_device(path, &metadata, layout.data_offset, plan.size_bytes)?;
    }
    let copies = encode_both(plan, &layout, &metadata.wire)?;
    let areas: Vec<(u64, &[u8])> = slots
        .iter()
        .map(|k| (k.offset, k.slot.material.as_slice()))
        .collect();
    if device {
        write_device(path, layout.data_offset, &areas, &copies)?;
    } else {
        write_volume(path, total, &areas, &copies)?;
    }
    log::info!(
        "formatted {}: {} bytes of plaintext, uuid {}",
        path.display(),
        plan.size_bytes,
        plan.uuid
    );
    Ok(Created {
        recovery_key: recovery,
        metadata,
    })
}

/// Creates the volume `plan` describes inside the partition or byte window `place` of the
/// existing `path` (checked with [`check_window`] beforehand), as on a block device: in
/// place, no temporary file, the file's length unchanged, nothing outside the window read
/// (but the partition table) or written. The data segment is "dynamic" (to the window's end,
/// so it grows with the partition) when `plan.size_bytes` fills the window's whole sectors,
/// else fixed; more than the window holds is exit 1. Holds the update lock while writing.
pub fn create_in(
    path: &Path,
    place: Place,
    plan: &Plan,
    keys: FirstKeys,
    volume_key: Option<VolumeKey>,
) -> Result<Created> {
    if place == Place::Whole {
        return create_with_key(path, plan, keys, volume_key);
    }
    let dev = crate::device::Backing::open_in(path, place, true)?;
    let name = window_name(path, place);
    let len = crate::luks2::ReadAt::len_bytes(&dev)
        .map_err(|e| Error::io(format!("cannot size {name}"), e))?;
    let layout = Layout::default();
    let space = len.saturating_sub(layout.data_offset);
    let sector = u64::from(plan.sector_size);
    let whole_sectors = space / sector * sector;
    if plan.size_bytes > whole_sectors {
        return Err(usage(format!(
            "--size {} does not fit {name}: {whole_sectors} bytes of whole sectors follow the {}-byte header",
            plan.size_bytes, layout.data_offset
        )));
    }
    dev.lock_for_update()?;
    let (mut metadata, slots, recovery) = build(plan, keys, &layout, volume_key)?;
    if plan.size_bytes != whole_sectors {
        metadata = edit::set_segment_size(&metadata, Some(plan.size_bytes))
            .map_err(|e| Error::Device(format!("internal error: new header is invalid: {e}")))?;
    }
    let copies = encode_both(plan, &layout, &metadata.wire)?;
    let areas: Vec<(u64, &[u8])> = slots
        .iter()
        .map(|k| (k.offset, k.slot.material.as_slice()))
        .collect();
    write_on(&dev, path, layout.data_offset, &areas, &copies)?;
    log::info!(
        "formatted {name}: {} bytes of plaintext, uuid {}",
        plan.size_bytes,
        plan.uuid
    );
    Ok(Created {
        recovery_key: recovery,
        metadata,
    })
}

/// Where the data of a volume with a detached header ([`create_detached`]) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachedData {
    /// The data runs from byte 0 to the end of the data device ("dynamic", as `cryptsetup
    /// luksFormat --header` makes it).
    WholeDevice,
    /// The data is the first `plan.size_bytes` bytes of the data device.
    Fixed,
}

/// Creates a volume with a detached header: the header and keyslots in `header` (the default
/// 16 MiB layout; a header file already larger keeps its length, as cryptsetup does; written
/// through a temporary file renamed into place, or in place on a block device), the data from
/// byte 0 of `data`, which must exist, is never written, and must hold the data segment
/// (exit 4). `header` is checked with [`check_header_target`] beforehand.
pub fn create_detached(
    header: &Path,
    data: &Path,
    plan: &Plan,
    keys: FirstKeys,
    size: DetachedData,
    volume_key: Option<VolumeKey>,
) -> Result<Created> {
    create_detached_in(header, data, Place::Whole, plan, keys, size, volume_key)
}

/// [`create_detached`] with the data in the partition or byte window `place` of `data` (the
/// header's data offset 0 is the window's first byte; the window is never written).
pub fn create_detached_in(
    header: &Path,
    data: &Path,
    place: Place,
    plan: &Plan,
    keys: FirstKeys,
    size: DetachedData,
    volume_key: Option<VolumeKey>,
) -> Result<Created> {
    let data_len = {
        let located = crate::device::locate(data, place, false, false)?;
        located.len()
    };
    let needed = match size {
        DetachedData::Fixed => plan.size_bytes,
        DetachedData::WholeDevice => u64::from(plan.sector_size),
    };
    if data_len < needed {
        return Err(Error::Device(format!(
            "{} is too small for the data of the detached header: {needed} bytes needed, it has {data_len}",
            data.display()
        )));
    }
    let layout = Layout {
        data_offset: 0,
        ..Layout::default()
    };
    let (mut metadata, slots, recovery) = build(plan, keys, &layout, volume_key)?;
    if size == DetachedData::Fixed {
        metadata = edit::set_segment_size(&metadata, Some(plan.size_bytes))
            .map_err(|e| Error::Device(format!("internal error: new header is invalid: {e}")))?;
    }
    let header_bytes = layout.keyslots_start() + layout.keyslots_size;
    let copies = encode_both(plan, &layout, &metadata.wire)?;
    let areas: Vec<(u64, &[u8])> = slots
        .iter()
        .map(|k| (k.offset, k.slot.material.as_slice()))
        .collect();
    if crate::device::path_is_block_device(header) {
        let file = crate::device::open_backing(header, false)?;
        let len = crate::device::len(&file)
            .map_err(|e| Error::io(format!("cannot size {}", header.display()), e))?;
        if len < header_bytes {
            return Err(Error::Device(format!(
                "{} is too small for a detached header: {header_bytes} bytes needed, it has {len}",
                header.display()
            )));
        }
        drop(file);
        write_device(header, header_bytes, &areas, &copies)?;
    } else {
        let existing = std::fs::metadata(header).map_or(0, |m| m.len());
        write_volume(header, existing.max(header_bytes), &areas, &copies)?;
    }
    log::info!(
        "formatted the detached header {} for the data in {}, uuid {}",
        header.display(),
        data.display(),
        plan.uuid
    );
    Ok(Created {
        recovery_key: recovery,
        metadata,
    })
}

/// Refuses to overwrite a detached header target unless `force` (exit 5) when any of its
/// first 16 MiB is not zero (a header, a filesystem, data); an empty or all-zero pre-sized
/// file (`truncate -s`) is used as it is. A directory or other non-regular file is exit 1; a
/// block device is checked by [`check_device`].
pub fn check_header_target(path: &Path, force: bool) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot stat {}", path.display()), e)),
    };
    if meta.is_dir() || std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return check_target(path, force);
    }
    if !meta.is_file() {
        return check_target(path, force);
    }
    if force || meta.len() == 0 {
        return Ok(());
    }
    let file = crate::device::open_backing(path, false)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    let end = meta.len().min(Layout::default().data_offset);
    while offset < end {
        let n = usize::try_from((end - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        file.read_exact_at(&mut buf[..n], offset)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(Error::Busy(format!(
                "{} exists and is not empty: use --force to overwrite it",
                path.display()
            )));
        }
        offset += n as u64;
    }
    Ok(())
}

/// The first keyslots and the checked metadata of a new volume laid out as `layout` (its
/// segment at `layout.data_offset`, "dynamic"), around `volume_key` or a random one.
fn build(
    plan: &Plan,
    keys: FirstKeys,
    layout: &Layout,
    volume_key: Option<VolumeKey>,
) -> Result<(Metadata, Vec<FirstKeyslot>, Option<Passphrase>)> {
    let volume_key = match volume_key {
        Some(k) if k.expose_secret().len() != plan.key_bytes => {
            return Err(usage(format!(
                "the volume key file holds {} bytes; --key-size {} needs {}",
                k.expose_secret().len(),
                plan.key_bytes * 8,
                plan.key_bytes
            )));
        }
        Some(k) => k,
        None => VolumeKey(
            SecretBytes::random(plan.key_bytes)
                .map_err(|e| Error::io("cannot read the OS random generator", e))?,
        ),
    };
    let area_size = Layout::keyslot_area_size(plan.key_bytes as u32);
    let store = |pass: &[u8], kdf, offset: u64, id: u32| {
        keyslot::store(&volume_key, pass, kdf, offset, area_size)
            .map_err(|e| Error::Device(format!("cannot create keyslot {id}: {e}")))
    };
    let vault_only = matches!(keys, FirstKeys::Vault { .. });
    let mut recovery = None;
    let slots = match keys {
        FirstKeys::Passphrase(pass) => {
            let keyslot_kdf = crate::keys::calibrate(&plan.kdf_request)?;
            log::info!("keyslot 0 uses {keyslot_kdf:?}");
            let offset = layout.keyslots_start();
            let slot = store(pass.expose_secret(), keyslot_kdf, offset, 0)?;
            vec![FirstKeyslot {
                id: 0,
                slot,
                offset,
                token: None,
            }]
        }
        FirstKeys::Vault {
            secret,
            token,
            recovery_key,
        } => {
            let kdf = crate::keys::full_entropy_kdf();
            let offset = layout.keyslots_start();
            let mut slots = vec![FirstKeyslot {
                id: 0,
                slot: store(secret.expose_secret(), kdf, offset, 0)?,
                offset,
                token: Some(token),
            }];
            if recovery_key {
                let key = crate::recovery_key::generate()?;
                let offset = layout.keyslots_start() + area_size;
                slots.push(FirstKeyslot {
                    id: 1,
                    slot: store(key.expose_secret(), kdf, offset, 1)?,
                    offset,
                    token: Some(crate::token::recovery_token()),
                });
                recovery = Some(key);
            }
            slots
        }
    };
    let digest_iterations = if plan.kdf_request.forced_iterations.is_some() || vault_only {
        kdf::MIN_PBKDF2_ITERATIONS
    } else {
        kdf::calibrate_digest_iterations(HashAlg::Sha256, DIGEST_TIME_MS)
    };
    log::info!("digest iterations {digest_iterations}");
    let mut salt = [0u8; 32];
    random::fill(&mut salt).map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let mut value = [0u8; 32];
    digest::compute(
        volume_key.expose_secret(),
        HashAlg::Sha256,
        digest_iterations,
        &salt,
        &mut value,
    );
    let digest = NewDigest {
        hash: "sha256".into(),
        iterations: digest_iterations,
        salt: salt.to_vec(),
        digest: value.to_vec(),
    };
    // Self-check on every step: what we write must pass our own reader's validation.
    let internal =
        |e: edit::EditError| Error::Device(format!("internal error: new header is invalid: {e}"));
    let mut metadata = edit::new_volume(layout, plan.sector_size, &digest).map_err(internal)?;
    for k in &slots {
        metadata = edit::add_keyslot(&metadata, k.id, &k.slot.json, 0, k.token.clone())
            .map_err(internal)?
            .0;
    }
    Ok((metadata, slots, recovery))
}

/// Primary and secondary copies, each with its own random salt and checksum (secondary
/// first, the order they are written in).
fn encode_both(
    plan: &Plan,
    layout: &Layout,
    wire: &luks2::json::Metadata,
) -> Result<[(u64, Vec<u8>); 2]> {
    let copy = |kind: CopyKind, offset: u64| -> Result<(u64, Vec<u8>)> {
        let mut salt = [0u8; 64];
        random::fill(&mut salt).map_err(|e| Error::io("cannot read the OS random generator", e))?;
        let bin = BinaryHeader {
            kind,
            hdr_size: layout.hdr_size,
            seqid: 1,
            label: plan.label.clone().into(),
            salt,
            uuid: plan.uuid.clone(),
            subsystem: Default::default(),
            hdr_offset: offset,
            csum: [0; 32],
        };
        let bytes = luks2::encode_copy(&bin, wire)
            .map_err(|e| Error::Device(format!("internal error encoding the header: {e}")))?;
        Ok((offset, bytes))
    };
    Ok([
        copy(CopyKind::Secondary, layout.hdr_size)?,
        copy(CopyKind::Primary, 0)?,
    ])
}

/// Refuses to format the block device `path` unless `force` when it holds a LUKS header or
/// another signature (a filesystem, LVM2, a partition table, swap, BitLocker: exit 5).
pub fn check_device(path: &Path, force: bool) -> Result<()> {
    let dev = crate::device::Backing::open(path, false)?;
    check_signatures(&dev, &dev.name(), force)
}

/// Refuses to format the partition or byte window `place` of the existing `path` unless
/// `force` when it holds a LUKS header or another signature (exit 5); the window must exist
/// (a file without a partition table or a window past its end is exit 4, a partition it
/// does not have exit 1). Returns the window's length in bytes. Reads the partition table and the window
/// only; writes nothing.
pub fn check_window(path: &Path, place: Place, force: bool) -> Result<u64> {
    let dev = crate::device::Backing::open_in(path, place, false)?;
    let name = window_name(path, place);
    check_signatures(&dev, &name, force)?;
    crate::luks2::ReadAt::len_bytes(&dev).map_err(|e| Error::io(format!("cannot size {name}"), e))
}

/// How messages name the window `place` of `path`.
fn window_name(path: &Path, place: Place) -> String {
    match place {
        Place::Whole => path.display().to_string(),
        Place::Partition(n) => format!("partition {n} of {}", path.display()),
        Place::Range { offset, .. } => format!("the window at byte {offset} of {}", path.display()),
    }
}

/// The refusal of [`check_device`] for anything readable: a LUKS magic at byte 0 or another
/// known signature in `dev` (named `name`) is exit 5 unless `force`.
fn check_signatures(
    dev: &(impl crate::luks2::ReadAt + ?Sized),
    name: &str,
    force: bool,
) -> Result<()> {
    let stat = |e| Error::io(format!("cannot read {name}"), e);
    let mut magic = [0u8; 6];
    crate::luks2::ReadAt::read_exact_at(dev, &mut magic, 0).map_err(stat)?;
    let found = if magic == luks2::binary::PRIMARY_MAGIC {
        Some("a LUKS header".to_string())
    } else {
        crate::signature::probe_device(dev)
            .map_err(stat)?
            .map(|s| s.to_string())
    };
    match found {
        Some(what) if !force => Err(Error::Busy(format!(
            "{name} holds {what}: use --force to overwrite it"
        ))),
        _ => Ok(()),
    }
}

/// The metadata of a volume on a block device: the data segment runs to the device's end
/// ("dynamic") when `size_bytes` fills it, else it gets that fixed size; more than the
/// device holds is exit 1.
fn fit_device(
    path: &Path,
    metadata: &Metadata,
    data_offset: u64,
    size_bytes: u64,
) -> Result<Metadata> {
    let file = crate::device::open_backing(path, false)?;
    let len = crate::device::len(&file)
        .map_err(|e| Error::io(format!("cannot size {}", path.display()), e))?;
    let space = len.saturating_sub(data_offset);
    if size_bytes > space {
        return Err(usage(format!(
            "--size {size_bytes} does not fit {}: {space} bytes follow the {data_offset}-byte header",
            path.display()
        )));
    }
    if size_bytes == space {
        return Ok(metadata.clone());
    }
    edit::set_segment_size(metadata, Some(size_bytes))
        .map_err(|e| Error::Device(format!("internal error: new header is invalid: {e}")))
}

/// Writes a new volume onto the block device `path` in place (no temp file, no length
/// change, nothing past the header area): the header area zeroed first (old signatures and
/// keyslot material gone), then the keyslot areas and the secondary copy, synced, then the
/// primary copy, synced — so a crash leaves either no valid header or a complete one.
fn write_device(
    path: &Path,
    data_offset: u64,
    areas: &[(u64, &[u8])],
    copies: &[(u64, Vec<u8>); 2],
) -> Result<()> {
    let dev = crate::device::Backing::open(path, true)?;
    write_on(&dev, path, data_offset, areas, copies)
}

/// [`write_device`] onto `dev` (a device, or a partition or window of a file; `path` names
/// it in messages).
fn write_on(
    dev: &crate::device::Backing,
    path: &Path,
    data_offset: u64,
    areas: &[(u64, &[u8])],
    copies: &[(u64, Vec<u8>); 2],
) -> Result<()> {
    use crate::luks2::write::WriteAt;
    let failed = |e| write_error(path, e);
    keyslot::zero_area(dev, 0, data_offset).map_err(failed)?;
    dev.sync_data().map_err(failed)?;
    for (offset, bytes) in areas {
        dev.write_all_at(bytes, *offset).map_err(failed)?;
    }
    let [secondary, primary] = copies;
    dev.write_all_at(&secondary.1, secondary.0)
        .map_err(failed)?;
    dev.sync_data().map_err(failed)?;
    dev.write_all_at(&primary.1, primary.0).map_err(failed)?;
    dev.sync_data().map_err(failed)
}

/// Writes the new volume to a temporary file beside `path` and renames it into place, so a
/// failure (full disk, signal) never leaves a half-written volume under the real name.
fn write_volume(
    path: &Path,
    total_bytes: u64,
    areas: &[(u64, &[u8])],
    copies: &[(u64, Vec<u8>); 2],
) -> Result<()> {
    let tmp = fsutil::temp_beside(path, "volume");
    let result = (|| -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| write_error(path, e))?;
        // Sparse: only the header and keyslot material are written.
        file.set_len(total_bytes)
            .map_err(|e| write_error(path, e))?;
        for (offset, bytes) in areas {
            file.write_all_at(bytes, *offset)
                .map_err(|e| write_error(path, e))?;
        }
        // Secondary first, then primary, as cryptsetup writes.
        for (offset, bytes) in copies {
            file.write_all_at(bytes, *offset)
                .map_err(|e| write_error(path, e))?;
        }
        file.sync_all().map_err(|e| write_error(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| write_error(path, e))?;
        fsutil::sync_parent(path);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_error(path: &Path, e: std::io::Error) -> Error {
    let what = format!("cannot write {}: {}", path.display(), plain_io(&e));
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::Device(format!("{what} (disk full?)")),
        Some(libc::EFBIG) => Error::Usage(format!("{what}: --size too large for this filesystem")),
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => Error::Permission(what),
        _ => Error::Device(what),
    }
}

/// A small cheap volume for unit tests at `path`: 1 MiB of data, 4096-byte sectors, a 256-bit
/// key, one PBKDF2 keyslot (1000 iterations) opening with `passphrase`.
#[cfg(test)]
pub(crate) fn test_volume(path: &Path, passphrase: &[u8]) {
    let opts = Options {
        size_bytes: 1 << 20,
        size_text: "1M".into(),
        sector_size: 4096,
        key_size_bits: 256,
        label: String::new(),
        uuid: None,
    };
    let plan = plan(&opts, |key_len| {
        Ok(CalibrationRequest {
            kind: kdf::KdfKind::Pbkdf2,
            time_ms: 1,
            max_memory_kib: kdf::MIN_ARGON2_MEMORY_KIB,
            parallel: 1,
            forced_iterations: Some(1000),
            hash: HashAlg::Sha256,
            key_len,
        })
    })
    .expect("plan");
    let pass = Passphrase(SecretBytes::from_slice(passphrase));
    create(path, &plan, FirstKeys::Passphrase(pass)).expect("format");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kdf::KdfKind;

    /// A cheap KDF request (PBKDF2 forced to 1000 iterations) for tests.
    pub(crate) fn cheap(key_len: usize) -> Result<CalibrationRequest> {
        Ok(CalibrationRequest {
            kind: KdfKind::Pbkdf2,
            time_ms: 1,
            max_memory_kib: kdf::MIN_ARGON2_MEMORY_KIB,
            parallel: 1,
            forced_iterations: Some(1000),
            hash: HashAlg::Sha256,
            key_len,
        })
    }

    fn opts() -> Options {
        Options {
            size_bytes: 1 << 20,
            size_text: "1M".into(),
            sector_size: 4096,
            key_size_bits: 512,
            label: "test".into(),
            uuid: Some("12345678-1234-1234-1234-123456789ABC".into()),
        }
    }

    #[test]
    fn plan_checks_each_option() {
        let p = plan(&opts(), cheap).expect("valid");
        assert_eq!(
            (p.key_bytes, p.uuid.as_str()),
            (64, "12345678-1234-1234-1234-123456789abc")
        );
        type Case = (fn(&mut Options), &'static str);
        let bad: [Case; 6] = [
            (
                |o| o.sector_size = 1024,
                "--sector-size 1024 is not supported",
            ),
            (
                |o| o.size_bytes = 1000,
                "--size 1M must be a positive multiple",
            ),
            (|o| o.size_bytes = 0, "--size 1M must be"),
            (|o| o.key_size_bits = 128, "--key-size 128 is not supported"),
            (
                |o| o.label = "x".repeat(48),
                "--label must be at most 47 bytes",
            ),
            (
                |o| o.uuid = Some("nope".into()),
                "--uuid \"nope\" is not a UUID",
            ),
        ];
        for (edit, want) in bad {
            let mut o = opts();
            edit(&mut o);
            let e = plan(&o, cheap).expect_err("refused");
            assert_eq!(e.exit_code(), 1);
            assert!(e.to_string().starts_with(want), "{e}");
        }
        let random = plan(
            &Options {
                uuid: None,
                ..opts()
            },
            cheap,
        )
        .expect("valid");
        assert_eq!(random.uuid.len(), 36);
        assert_eq!(&random.uuid[14..15], "4");
    }

    #[test]
    fn creates_a_detached_header_opened_through_header_at() {
        use crate::device::{self, HeaderAt, Place, VolumeHeader};
        let dir = tempfile::tempdir().expect("tempdir");
        let header = dir.path().join("h");
        let data = dir.path().join("data");
        std::fs::write(&data, vec![0u8; 1 << 20]).expect("data");
        // A pre-sized all-zero header file is accepted without --force and grows to 16 MiB.
        std::fs::write(&header, vec![0u8; 4096]).expect("header");
        check_header_target(&header, false).expect("all zero");
        let p = plan(&opts(), cheap).expect("plan");
        let pass = || FirstKeys::Passphrase(Passphrase(SecretBytes::from_slice(b"pw")));
        create_detached(&header, &data, &p, pass(), DetachedData::WholeDevice, None)
            .expect("create");
        assert_eq!(std::fs::metadata(&header).expect("stat").len(), 16 << 20);
        assert_eq!(std::fs::read(&data).expect("data"), vec![0u8; 1 << 20]);
        assert_eq!(
            check_header_target(&header, false)
                .err()
                .map(|e| e.exit_code()),
            Some(5)
        );
        let at = HeaderAt::File(header.clone());
        let located = device::locate_with(&data, Place::Whole, &at, false, false).expect("locate");
        assert_eq!(located.header_path(), header.as_path());
        let parsed = located.read_header().expect("header");
        let seg = located.segment(&parsed).expect("segment");
        assert_eq!((seg.data_offset_bytes, seg.data_size_bytes), (0, 1 << 20));
        let VolumeHeader::Luks2(h) = &parsed else {
            panic!("LUKS2 expected");
        };
        assert!(keyslot::unlock(&h.metadata, located.header_window(), b"pw", None).is_ok());
        // The data alone is no volume; a header whose segment does not fit is exit 4.
        let plain = device::locate(&data, Place::Whole, false, false).expect("locate");
        assert_eq!(plain.read_header().err().map(|e| e.exit_code()), Some(4));
        let fixed = dir.path().join("fixed");
        create_detached(&fixed, &data, &p, pass(), DetachedData::Fixed, None).expect("fixed");
        std::fs::write(&data, vec![0u8; 4096]).expect("shrink");
        let at = HeaderAt::File(fixed.clone());
        let located = device::locate_with(&data, Place::Whole, &at, false, false).expect("locate");
        let parsed = located.read_header().expect("header");
        assert_eq!(
            located.segment(&parsed).err().map(|e| e.exit_code()),
            Some(4)
        );
        let e = device::open_for_update_at(&data, &at)
            .err()
            .map(|e| e.exit_code());
        assert_eq!(e, Some(4));
        // More than the data holds: exit 4 before anything is written.
        let none = dir.path().join("none");
        let e = create_detached(&none, &data, &p, pass(), DetachedData::Fixed, None);
        assert_eq!(e.err().map(|e| e.exit_code()), Some(4));
        assert!(!none.exists());
    }

    #[test]
    fn creates_a_volume_our_reader_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.img");
        check_target(&path, false).expect("free");
        let p = plan(&opts(), cheap).expect("plan");
        let made = create(
            &path,
            &p,
            FirstKeys::Passphrase(Passphrase(SecretBytes::from_slice(b"pw"))),
        )
        .expect("create");
        assert!(made.recovery_key.is_none());
        let len = std::fs::metadata(&path).expect("stat").len();
        assert_eq!(len, (16 << 20) + (1 << 20));
        let file = std::fs::File::open(&path).expect("open");
        let h = luks2::read(&file).expect("valid header");
        assert!(h.damaged_copy().is_none());
        assert_eq!(h.binary.uuid, "12345678-1234-1234-1234-123456789abc");
        assert_eq!(h.binary.label, "test");
        assert_eq!(h.metadata.wire, made.metadata.wire);
        assert!(keyslot::unlock(&h.metadata, &file, b"pw", None).is_ok());
        assert!(keyslot::unlock(&h.metadata, &file, b"wrong", None).is_err());
        // Existing non-empty file: exit 5 without --force.
        assert_eq!(
            check_target(&path, false).err().map(|e| e.exit_code()),
            Some(5)
        );
        check_target(&path, true).expect("forced");
        assert_eq!(
            check_target(dir.path(), true).err().map(|e| e.exit_code()),
            Some(1)
        );
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }

    #[test]
    fn vault_volume_gets_token_and_recovery_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.img");
        let p = plan(&opts(), cheap).expect("plan");
        let made = create(
            &path,
            &p,
            FirstKeys::Vault {
                secret: Passphrase(SecretBytes::from_slice(b"secret")),
                token: serde_json::json!({"type": "vaultdisk-vault", "keyslots": ["0"]}),
                recovery_key: true,
            },
        )
        .expect("create");
        let key = made.recovery_key.expect("recovery key");
        let m = &made.metadata;
        assert_eq!(m.tokens[&0], ("vaultdisk-vault".to_owned(), vec![0]));
        assert_eq!(m.tokens[&1], (crate::token::RECOVERY.to_owned(), vec![1]));
        let file = std::fs::File::open(&path).expect("open");
        let h = luks2::read(&file).expect("valid header");
        assert!(keyslot::unlock(&h.metadata, &file, key.expose_secret(), Some(1)).is_ok());
        assert!(keyslot::unlock(&h.metadata, &file, b"secret", Some(0)).is_ok());
    }
}
