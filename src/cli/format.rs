//! `vaultdisk format`: a new LUKS2 volume in a sparse backing file, as cryptsetup 2.6 lays it out.
use super::{FormatArgs, passphrase, size};
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::{self, CalibrationRequest};
use crate::crypto::{digest, random};
use crate::error::plain_io;
use crate::error::{Error, Result};
use crate::keyslot;
use crate::luks2::binary::{BinaryHeader, CopyKind};
use crate::luks2::layout::Layout;
use crate::luks2::{self, json};
use crate::secret::{Passphrase, SecretBytes, VolumeKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// cryptsetup benchmarks the volume-key digest for 125 ms.
const DIGEST_TIME_MS: u32 = 125;

/// Validated format parameters.
struct Plan {
    size_bytes: u64,
    sector_size: u32,
    key_bytes: usize,
    kdf_request: CalibrationRequest,
    label: String,
    uuid: String,
}

fn usage(msg: impl Into<String>) -> Error {
    Error::Usage(msg.into())
}

fn plan(args: &FormatArgs) -> Result<Plan> {
    let size_bytes = size::parse(&args.size)?;
    if args.sector_size != 512 && args.sector_size != 4096 {
        return Err(usage(format!(
            "--sector-size {} is not supported: use 512 or 4096",
            args.sector_size
        )));
    }
    if size_bytes == 0 || size_bytes % u64::from(args.sector_size) != 0 {
        return Err(usage(format!(
            "--size {} must be a positive multiple of the {}-byte sector size",
            args.size, args.sector_size
        )));
    }
    let key_bytes = match args.key_size {
        256 => 32,
        512 => 64,
        n => {
            return Err(usage(format!(
                "--key-size {n} is not supported for aes-xts-plain64: use 256 or 512"
            )));
        }
    };
    let kdf_request = args.pbkdf.request(key_bytes)?;
    if args.label.len() > 47 || args.label.contains('\0') {
        return Err(usage("--label must be at most 47 bytes without NUL"));
    }
    let uuid = match &args.uuid {
        Some(u) => check_uuid(u)?,
        None => random_uuid()?,
    };
    Ok(Plan {
        size_bytes,
        sector_size: args.sector_size,
        key_bytes,
        kdf_request,
        label: args.label.clone(),
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

/// Refuses to clobber an existing non-empty file unless forced.
fn check_target(path: &Path, force: bool) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(usage(format!("{} is a directory", path.display()))),
        Ok(m) if !m.is_file() => Err(usage(format!(
            "{} is not a regular file (block devices are not supported)",
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

/// One keyslot of the new volume, with the token that marks it (if any).
struct FirstKeyslot {
    id: u32,
    slot: keyslot::NewKeyslot,
    offset: u64,
    token: Option<serde_json::Value>,
}

/// Vault-only volumes: keyslot 0 is a vault secret, keyslot 1 a recovery key (printed after
/// the volume is in place) unless --no-recovery-key.
fn vault_keyslots(
    args: &FormatArgs,
    volume_key: &VolumeKey,
    layout: &Layout,
    area_size: u64,
) -> Result<(Vec<FirstKeyslot>, Option<Passphrase>)> {
    if args.key.key_file.is_some() || args.key.recovery_key {
        return Err(usage(
            "--transit-key/--kv-path make a vault-only volume: drop --key-file/--recovery-key (add a passphrase later with add-key)",
        ));
    }
    let enrolment = super::vault::enrol(&args.key.vault, &args.kek, 0)?;
    let pass = super::vault::keyslot_passphrase(&enrolment.secret);
    let store = |pass: &[u8], offset: u64, id: u32| {
        keyslot::store(
            volume_key,
            pass,
            super::vault::full_entropy_kdf(),
            offset,
            area_size,
        )
        .map_err(|e| Error::Device(format!("cannot create keyslot {id}: {e}")))
    };
    let mut slots = vec![FirstKeyslot {
        id: 0,
        slot: store(pass.expose_secret(), layout.keyslots_start(), 0)?,
        offset: layout.keyslots_start(),
        token: Some(enrolment.token.encode()),
    }];
    let recovery = if args.no_recovery_key {
        None
    } else {
        let key = passphrase::generate_recovery_key()?;
        let offset = layout.keyslots_start() + area_size;
        slots.push(FirstKeyslot {
            id: 1,
            slot: store(key.expose_secret(), offset, 1)?,
            offset,
            token: Some(serde_json::json!({ "type": crate::token::RECOVERY, "keyslots": ["1"] })),
        });
        Some(key)
    };
    Ok((slots, recovery))
}

pub fn run(args: &FormatArgs) -> Result<()> {
    let plan = plan(args)?;
    check_target(&args.backing, args.force)?;
    let vault_only = args.kek.transit_key.is_some() || args.kek.kv_path.is_some();
    if args.no_recovery_key && !vault_only {
        return Err(usage("--no-recovery-key needs --transit-key or --kv-path"));
    }
    let passphrase = if vault_only {
        None
    } else {
        Some(passphrase::read(
            &args.key,
            &args.backing.display().to_string(),
            true,
        )?)
    };

    let volume_key = VolumeKey(
        SecretBytes::random(plan.key_bytes)
            .map_err(|e| Error::io("cannot read the OS random generator", e))?,
    );
    let layout = Layout::default();
    let area_size = Layout::keyslot_area_size(plan.key_bytes as u32);
    let (slots, recovery) = match &passphrase {
        None => vault_keyslots(args, &volume_key, &layout, area_size)?,
        Some(pass) => {
            let keyslot_kdf = super::pbkdf::calibrate(&plan.kdf_request)?;
            log::info!("keyslot 0 uses {keyslot_kdf:?}");
            let offset = layout.keyslots_start();
            let slot = keyslot::store(
                &volume_key,
                pass.expose_secret(),
                keyslot_kdf,
                offset,
                area_size,
            )
            .map_err(|e| Error::Device(format!("cannot create keyslot 0: {e}")))?;
            (
                vec![FirstKeyslot {
                    id: 0,
                    slot,
                    offset,
                    token: None,
                }],
                None,
            )
        }
    };
    drop(passphrase);
    let digest_iterations = if plan.kdf_request.forced_iterations.is_some() || vault_only {
        kdf::MIN_PBKDF2_ITERATIONS
    } else {
        kdf::calibrate_digest_iterations(HashAlg::Sha256, DIGEST_TIME_MS)
    };
    log::info!("digest iterations {digest_iterations}");

    let mut digest_salt = [0u8; 32];
    random::fill(&mut digest_salt)
        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let mut digest_value = [0u8; 32];
    digest::compute(
        volume_key.expose_secret(),
        HashAlg::Sha256,
        digest_iterations,
        &digest_salt,
        &mut digest_value,
    );

    let wire = new_metadata(
        &plan,
        &layout,
        &slots,
        digest_iterations,
        &digest_salt,
        &digest_value,
    )?;
    // Self-check: what we write must pass our own reader's validation.
    luks2::Metadata::check(wire.clone(), layout.hdr_size)
        .map_err(|e| Error::Device(format!("internal error: new header is invalid: {e}")))?;
    let total = layout
        .data_offset
        .checked_add(plan.size_bytes)
        .ok_or_else(|| usage("--size is too large"))?;
    let copies = encode_both(&plan, &layout, &wire)?;
    let areas: Vec<(u64, &Vec<u8>)> = slots.iter().map(|k| (k.offset, &k.slot.material)).collect();
    write_volume(&args.backing, total, &areas, &copies)?;
    log::info!(
        "formatted {}: {} bytes of plaintext, uuid {}",
        args.backing.display(),
        plan.size_bytes,
        plan.uuid
    );
    if let Some(key) = recovery {
        super::keys::print_recovery_key(&key)?;
        eprintln!(
            "keyslot 1 of {} holds the recovery key above: keep it safe, it is not shown again (open --recovery-key)",
            args.backing.display()
        );
    }
    Ok(())
}

fn new_metadata(
    plan: &Plan,
    layout: &Layout,
    slots: &[FirstKeyslot],
    digest_iterations: u32,
    digest_salt: &[u8],
    digest_value: &[u8],
) -> Result<json::Metadata> {
    let to_value = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| Error::Device(format!("internal error encoding metadata: {e}")))
    };
    let segment = json::Segment {
        kind: "crypt".into(),
        offset: layout.data_offset,
        size: "dynamic".into(),
        iv_tweak: 0,
        encryption: "aes-xts-plain64".into(),
        sector_size: plan.sector_size,
        flags: None,
        integrity: None,
        extra: Default::default(),
    };
    let digest = json::Digest {
        kind: "pbkdf2".into(),
        keyslots: slots.iter().map(|k| k.id.to_string()).collect(),
        segments: vec!["0".into()],
        hash: "sha256".into(),
        iterations: digest_iterations,
        salt: B64.encode(digest_salt),
        digest: B64.encode(digest_value),
        extra: Default::default(),
    };
    Ok(json::Metadata {
        keyslots: slots
            .iter()
            .map(|k| {
                Ok((
                    k.id.to_string(),
                    to_value(serde_json::to_value(&k.slot.json))?,
                ))
            })
            .collect::<Result<_>>()?,
        tokens: slots
            .iter()
            .filter_map(|k| k.token.clone())
            .enumerate()
            .map(|(i, t)| (i.to_string(), t))
            .collect(),
        segments: BTreeMap::from([("0".into(), to_value(serde_json::to_value(segment))?)]),
        digests: BTreeMap::from([("0".into(), to_value(serde_json::to_value(digest))?)]),
        config: json::Config {
            json_size: layout.json_size(),
            keyslots_size: layout.keyslots_size,
            flags: None,
            requirements: None,
            extra: Default::default(),
        },
    })
}

/// Primary and secondary copies, each with its own random salt and checksum.
fn encode_both(plan: &Plan, layout: &Layout, wire: &json::Metadata) -> Result<[(u64, Vec<u8>); 2]> {
    let copy = |kind: CopyKind, offset: u64| -> Result<(u64, Vec<u8>)> {
        let mut salt = [0u8; 64];
        random::fill(&mut salt).map_err(|e| Error::io("cannot read the OS random generator", e))?;
        let bin = BinaryHeader {
            kind,
            hdr_size: layout.hdr_size,
            seqid: 1,
            label: plan.label.clone(),
            salt,
            uuid: plan.uuid.clone(),
            subsystem: String::new(),
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

/// Writes the new volume to a temporary file beside `path` and renames it into place, so a
/// failure (full disk, signal) never leaves a half-written volume under the real name.
fn write_volume(
    path: &Path,
    total_bytes: u64,
    areas: &[(u64, &Vec<u8>)],
    copies: &[(u64, Vec<u8>); 2],
) -> Result<()> {
    let tmp = temp_path(path);
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
        sync_parent(path);
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

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "volume".into());
    path.with_file_name(format!(".{name}.vaultdisk-{}.tmp", std::process::id()))
}

/// Makes the rename durable; best effort.
fn sync_parent(path: &Path) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Ok(dir) = File::open(parent) {
        let _ = dir.sync_all();
    }
    let _ = std::io::stdout().flush();
}
