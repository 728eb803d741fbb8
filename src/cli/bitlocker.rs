//! BitLocker behind the verbs (a helper module, not a verb): dump, test-key, digest, verify
//! and open dispatch here when BACKING (or its `--partition`) holds a BitLocker volume.
//! Everything is read-only.
use super::{
    DigestArgs, DumpArgs, KeyArgs, MountArgs, OpenArgs, TestKeyArgs, VerifyArgs, output, passphrase,
};
use crate::bitlocker::format::{Flavour, Protection, guid_string};
use crate::bitlocker::{self, Bitlocker, BitlockerVolume, Credential, Info, OpenedBy, Reader};
use crate::device::{self, Place};
use crate::error::{Error, Result, exit};
use crate::secret::SecretBytes;
use crate::unlock::{self, Key, KeySource, Prompt};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// Whether BACKING at `place` is a BitLocker volume (never with a detached LUKS header).
/// Any error here is left for the LUKS path to report as it always has.
pub fn detected(backing: &Path, place: Place, header: Option<&Path>) -> bool {
    if header.is_some() {
        return false;
    }
    device::locate(backing, place, false, false)
        .ok()
        .and_then(|l| bitlocker::probe(l.window()).ok())
        .unwrap_or(false)
}

fn locate(backing: &Path, place: Place) -> Result<Reader> {
    let located = device::locate(backing, place, false, false)?;
    Ok(Arc::new(located.window().clone()))
}

fn read_info(reader: &Reader, name: &str) -> Result<Info> {
    let info = Info::read(&**reader, name)?;
    for w in info.warnings(name) {
        log::warn!("{w}");
    }
    Ok(info)
}

/// Reads the file at `path` (a startup key) into locked memory, at most 64 KiB.
fn read_file(path: &Path) -> Result<SecretBytes> {
    let pass = unlock::read_key(
        &Key::new(KeySource::KeyFile {
            path: path.to_path_buf(),
            offset: 0,
            size: None,
        }),
        &passphrase::Terminal,
        &path.display().to_string(),
        false,
    )?;
    Ok(SecretBytes::from_slice(pass.expose_secret()))
}

/// The credential the flags give: `--startup-key FILE`; `--recovery-key` (terminal, stdin
/// or `--key-file`); a `--key-file` that is a `.BEK` file is a startup key, else its bytes
/// are the password; without any of these, the clear key when the volume has one, else a
/// password from the terminal or stdin as for LUKS.
fn credential(
    key: &KeyArgs,
    startup_key: Option<&Path>,
    volume_key_file: Option<&Path>,
    info: &Info,
    name: &str,
) -> Result<Credential> {
    if let Some(p) = volume_key_file {
        return volume_key_credential(p);
    }
    if let Some(p) = startup_key {
        return Ok(Credential::StartupKey(read_file(p)?));
    }
    let explicit = key.key_file.is_some() || key.recovery_key;
    if !explicit && info.has_clear_key() {
        log::warn!("{name}: BitLocker protection is suspended (clear key); no credential needed");
        return Ok(Credential::ClearKey);
    }
    let k = Key {
        source: passphrase::source(key),
        recovery_key: false,
    };
    let what = format!("BitLocker volume {name}");
    let pass = if key.recovery_key && matches!(k.source, KeySource::Terminal) {
        passphrase::Terminal.recovery_key(&what)?
    } else {
        unlock::read_key(&k, &passphrase::Terminal, &what, false)?
    };
    if key.recovery_key {
        return Ok(Credential::RecoveryPassword(pass));
    }
    if key.key_file.is_some() && bitlocker::keys::parse_bek(pass.expose_secret()).is_some() {
        return Ok(Credential::StartupKey(SecretBytes::from_slice(
            pass.expose_secret(),
        )));
    }
    Ok(Credential::Password(pass))
}

/// The raw volume key of `--volume-key-file` (cryptsetup's bitlkDump layout).
fn volume_key_credential(path: &Path) -> Result<Credential> {
    let vk = crate::unlock::volume_key::read_volume_key_file(path)?;
    Ok(Credential::VolumeKey(SecretBytes::from_slice(
        vk.expose_secret(),
    )))
}

/// A key file of `verify`: a `.BEK` file, a recovery password, or a password.
fn credential_of_file(path: &Path) -> Result<Credential> {
    let bytes = read_file(path)?;
    Ok(Credential::from_key_bytes(bytes.expose_secret()))
}

fn open_with(
    reader: Reader,
    info: &Info,
    cred: &Credential,
    name: &str,
) -> Result<(BitlockerVolume, OpenedBy)> {
    let (fvek, by) = Bitlocker::unlock_checked(&reader, info, cred, name)?;
    let vol = BitlockerVolume::new(reader, info, &fvek, name)?;
    Ok((vol, by))
}

fn flavour_name(f: Flavour) -> &'static str {
    match f {
        Flavour::Windows7 => "windows7",
        Flavour::Vista => "vista",
        Flavour::ToGo => "to-go",
    }
}

/// FILETIME (100 ns since 1601) as seconds since the Unix epoch.
fn unix_time(filetime: u64) -> i64 {
    (filetime / 10_000_000) as i64 - 11_644_473_600
}

fn dump_json(info: &Info, name: &str) -> serde_json::Value {
    let md = &info.metadata;
    let copies: Vec<_> = info
        .copies
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"copy": i + 1, "offset": c.offset, "size": bitlocker::format::METADATA_AREA_BYTES,
                   "valid": c.error.is_none(), "in_use": i == info.used_copy, "error": c.error})
        })
        .collect();
    let protectors: Vec<_> = md
        .vmks
        .iter()
        .map(|v| {
            let kdf = v.salt.map(|s| {
                json!({"type": "stretch-sha256", "rounds": bitlocker::keys::STRETCH_ROUNDS,
                       "salt": crate::hex::encode(&s)})
            });
            json!({"guid": guid_string(&v.guid), "type": v.protection.name(), "name": v.name,
                   "kdf": kdf, "usable": !matches!(v.protection,
                        Protection::Tpm | Protection::TpmPin | Protection::SmartCard | Protection::Other(_))})
        })
        .collect();
    let (vh_offset, vh_size) = md.volume_header.unwrap_or((
        md.volume_header_offset,
        u64::from(md.volume_header_sectors) * u64::from(info.header.sector_size),
    ));
    json!({
        "device": name,
        "format": "bitlocker",
        "version": 2,
        "flavour": flavour_name(info.header.flavour),
        "guid": info.guid(),
        "identifier": guid_string(&info.header.identifier),
        "sector_size": info.header.sector_size,
        "size": info.size,
        "encrypted_size": md.encrypted_size,
        "encryption": info.method().map(|m| m.name()).unwrap_or_else(|| "unknown".into()),
        "method": format!("0x{:04x}", md.method),
        "state": [md.state.0, md.state.1],
        "created": unix_time(md.created),
        "description": md.description,
        "metadata": copies,
        "volume_header": {"offset": vh_offset, "size": vh_size},
        "protectors": protectors,
        "refused": info.refusal(),
    })
}

/// `dump --dump-volume-key [--volume-key-file F]` of a BitLocker volume: confirmation, an
/// unlock, then the volume key in cryptsetup's `bitlkDump --dump-volume-key` layout on
/// stdout, or its raw bytes in F (what `--volume-key-file` takes, here and in cryptsetup).
fn dump_volume_key(args: &DumpArgs, reader: &Reader, info: &Info, name: &str) -> Result<()> {
    use std::io::Write;
    if let Some(f) = &args.volume_key_file {
        unlock::volume_key::refuse_existing_file(f)?;
    }
    let method = info.method().ok_or_else(|| {
        Error::Device(format!(
            "{name}: unknown encryption method 0x{:04x}",
            info.metadata.method
        ))
    })?;
    if !args.batch {
        passphrase::confirm_volume_key_dump()?;
    }
    let cred = credential(&args.key, None, None, info, name)?;
    let (fvek, by) = Bitlocker::unlock_checked(reader, info, &cred, name)?;
    log::info!("{name}: opened by {by}");
    let vk = Bitlocker::volume_key(info, &fvek, name)?;
    let key = crate::secret::VolumeKey::from_secret(vk);
    if let Some(f) = &args.volume_key_file {
        crate::unlock::volume_key::write_volume_key_file(f, &key)?;
    }
    let mode = method.cryptsetup_mode();
    let mut text = zeroize::Zeroizing::new(format!(
        "BITLK header information for {name}\nCipher name:   \taes\nCipher mode:   \t{mode}\nUUID:          \t{}\nMK bits:       \t{}\n",
        info.guid(),
        key.expose_secret().len() * 8
    ));
    match &args.volume_key_file {
        Some(f) => text.push_str(&format!("Key stored to file {}.\n", f.display())),
        None => text.push_str(&crate::report::VolumeKeyDump::mk_dump(key.expose_secret())),
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot write the volume key dump to stdout", e))
}

/// `dump` of a BitLocker volume: version, GUID, method, metadata copies, protectors.
pub fn dump(args: &DumpArgs) -> Result<()> {
    let name = args.backing.display().to_string();
    let reader = locate(&args.backing, args.place.place())?;
    let info = read_info(&reader, &name)?;
    if args.dump_volume_key {
        return dump_volume_key(args, &reader, &info, &name);
    }
    let j = dump_json(&info, &name);
    if args.json {
        return output::emit(&j.to_string());
    }
    let mut t = String::new();
    let s = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    t.push_str(&format!("BitLocker volume {name}\n"));
    for k in [
        "flavour",
        "version",
        "guid",
        "encryption",
        "method",
        "sector_size",
        "size",
        "encrypted_size",
        "description",
    ] {
        t.push_str(&format!("{:<16}{}\n", format!("{k}:"), s(&j[k])));
    }
    if let Some(why) = info.refusal() {
        t.push_str(&format!("{:<16}{why}\n", "refused:"));
    }
    t.push_str("Metadata copies:\n");
    for c in j["metadata"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "  {}: offset {} ({} bytes) {}{}\n",
            c["copy"],
            c["offset"],
            c["size"],
            if c["valid"] == true {
                "valid"
            } else {
                "DAMAGED: "
            },
            if c["valid"] == true {
                if c["in_use"] == true {
                    " (in use)".to_string()
                } else {
                    String::new()
                }
            } else {
                s(&c["error"])
            }
        ));
    }
    t.push_str(&format!(
        "Volume header copy: offset {} ({} bytes)\nProtectors:\n",
        j["volume_header"]["offset"], j["volume_header"]["size"]
    ));
    for p in j["protectors"].as_array().into_iter().flatten() {
        let kdf = if p["kdf"].is_null() {
            "no KDF".to_string()
        } else {
            format!(
                "stretch-sha256 x{} salt {}",
                p["kdf"]["rounds"],
                s(&p["kdf"]["salt"])
            )
        };
        t.push_str(&format!("  {} {} ({kdf})\n", s(&p["guid"]), s(&p["type"])));
    }
    output::emit(t.trim_end())
}

/// `test-key` of a BitLocker volume: names the protector the credential opens.
pub fn test_key(args: &TestKeyArgs) -> Result<()> {
    let name = args.backing.display().to_string();
    let reader = locate(&args.backing, args.place.place())?;
    let info = read_info(&reader, &name)?;
    let cred = credential(&args.key, args.startup_key.as_deref(), None, &info, &name)?;
    let (_, by) = Bitlocker::unlock(&info, &cred, &name)?;
    output::emit(&format!("{by} opens {name}"))
}

/// `digest` of a BitLocker volume: `<sha256>  <backing>` of the plaintext Windows sees.
pub fn digest(args: &DigestArgs) -> Result<()> {
    let name = args.backing.display().to_string();
    let reader = locate(&args.backing, args.place.place())?;
    let info = read_info(&reader, &name)?;
    let cred = credential(
        &args.key,
        args.startup_key.as_deref(),
        args.volume_key_file.as_deref(),
        &info,
        &name,
    )?;
    let (vol, by) = open_with(reader, &info, &cred, &name)?;
    log::info!("{name}: opened by {by}");
    let d = vol.sha256(|_| {})?;
    output::emit(&format!("{d}  {name}"))
}

/// `verify` of a BitLocker volume: metadata copies, which credential opens which protector,
/// the plaintext digest (and `--expect-digest`), a filesystem check of the plaintext. Exit 6
/// when damage is found, 2 when nothing opened.
pub fn verify(args: &VerifyArgs) -> Result<i32> {
    let name = args.backing.display().to_string();
    let expected = args
        .expect_digest
        .first()
        .map(|d| crate::verify::parse_digest(d))
        .transpose()?;
    let want_digest = args.digest || expected.is_some();
    let reader = locate(&args.backing, args.place.place())?;
    let info = read_info(&reader, &name)?;
    let mut damage: Vec<String> = info
        .copies
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.error
                .as_ref()
                .map(|e| format!("metadata copy {} damaged ({e})", i + 1))
        })
        .collect();
    if let Some(why) = info.refusal() {
        return Err(Error::Device(format!(
            "cannot open BitLocker volume {name}: {why}"
        )));
    }
    let mut sources: Vec<(String, Credential)> = Vec::new();
    if let Some(p) = &args.volume_key_file {
        sources.push((p.display().to_string(), volume_key_credential(p)?));
    }
    for p in &args.key_file {
        sources.push((p.display().to_string(), credential_of_file(p)?));
    }
    if let Some(p) = &args.startup_key {
        sources.push((
            p.display().to_string(),
            Credential::StartupKey(read_file(p)?),
        ));
    }
    // Key-chain candidates (a Windows `.BEK` from a Key Vault secret, wrapped or not, a BEK
    // VOLUME's *.BEK files): each tried as a startup key, recovery password or password.
    if args.key_chain.has_sources() {
        let chain = args
            .key_chain
            .key_chain(&[])
            .with_vault(args.vault_args.config());
        for c in crate::keychain::resolve(&chain)? {
            sources.push((
                c.label.clone(),
                Credential::from_key_bytes(c.bytes.expose_secret()),
            ));
        }
    }
    if sources.is_empty() {
        if info.has_clear_key() {
            sources.push(("clear key".into(), Credential::ClearKey));
        } else if want_digest || args.fsck {
            let c = credential(&KeyArgs::default(), None, None, &info, &name)?;
            sources.push(("password".into(), c));
        }
    }
    let mut checks = Vec::new();
    let mut opened: Option<(bitlocker::format::Protection, SecretBytes)> = None;
    let mut last_error = None;
    for (label, cred) in &sources {
        match Bitlocker::unlock_checked(&reader, &info, cred, &name) {
            Ok((fvek, by)) => {
                checks.push(json!({"key": label, "opens": by.guid, "type": by.protection.name()}));
                if opened.is_none() {
                    opened = Some((by.protection, fvek));
                }
            }
            Err(e) if e.exit_code() == exit::NO_KEY => {
                checks.push(json!({"key": label, "opens": null, "error": e.to_string()}));
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let skipped = info.skipped();
    let mut digest = None;
    let mut fsck = None;
    if let Some((protection, fvek)) = &opened {
        let vol = BitlockerVolume::new(reader.clone(), &info, fvek, &name)?;
        if want_digest {
            let d = vol.sha256(|_| {})?;
            if let Some(exp) = &expected
                && *exp != d
            {
                damage.push(format!(
                    "plaintext digest {d} differs from the expected {exp}"
                ));
            }
            digest = Some(d);
        }
        if args.fsck {
            let served = Served {
                backing: &args.backing,
                place: args.place.place(),
                info: &info,
                fvek,
                by: protection.name().to_string(),
            };
            let (verdict, text) = filesystem_check(&vol, &name, &served)?;
            if verdict == "errors" {
                damage.push(format!("filesystem check found errors: {text}"));
            }
            fsck = Some(json!({"result": verdict, "summary": text}));
        }
    }
    let ok = damage.is_empty() && opened.is_some();
    let report = json!({
        "device": name,
        "format": "bitlocker",
        "guid": info.guid(),
        "encryption": info.method().map(|m| m.name()),
        "metadata": info.copies.iter().enumerate().map(|(i, c)| json!({"copy": i + 1, "offset": c.offset, "valid": c.error.is_none(), "error": c.error})).collect::<Vec<_>>(),
        "keys": checks,
        "skipped_protectors": skipped,
        "digest": digest,
        "expected_digest": expected,
        "fsck": fsck,
        "damage": damage,
        "ok": ok,
    });
    if args.json {
        output::emit(&report.to_string())?;
    } else {
        let mut t = format!(
            "BitLocker volume {name} ({}, {})\n",
            info.guid(),
            report["encryption"].as_str().unwrap_or("?")
        );
        for c in report["metadata"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "metadata copy {} at {}: {}\n",
                c["copy"],
                c["offset"],
                c["error"]
                    .as_str()
                    .map(|e| format!("DAMAGED ({e})"))
                    .unwrap_or_else(|| "ok".into())
            ));
        }
        for k in report["keys"].as_array().into_iter().flatten() {
            let key = k["key"].as_str().unwrap_or("?");
            match k["opens"].as_str() {
                Some("volume-key") => {
                    t.push_str(&format!("{key}: is the volume key (no protector)\n"))
                }
                Some(g) => t.push_str(&format!(
                    "{key}: opens {} protector {g}\n",
                    k["type"].as_str().unwrap_or("?")
                )),
                None => t.push_str(&format!(
                    "{key}: opens nothing ({})\n",
                    k["error"].as_str().unwrap_or("?")
                )),
            }
        }
        for s in &skipped {
            t.push_str(&format!("{s}\n"));
        }
        if let Some(d) = report["digest"].as_str() {
            t.push_str(&format!("plaintext sha256: {d}\n"));
        }
        if let Some(f) = report["fsck"].as_object() {
            t.push_str(&format!(
                "filesystem check: {} ({})\n",
                f["result"].as_str().unwrap_or("?"),
                f["summary"].as_str().unwrap_or("")
            ));
        }
        output::emit(t.trim_end())?;
    }
    if opened.is_none() {
        return Err(last_error.unwrap_or_else(|| {
            Error::Usage(format!(
                "{name}: give a --key-file or --startup-key to check"
            ))
        }));
    }
    if ok {
        return Ok(exit::OK);
    }
    eprintln!("vaultdisk: damage found in {name}: {}", damage.join("; "));
    Ok(exit::DAMAGE)
}

/// What a filesystem check needs to serve the plaintext read-only for the checker: where the
/// volume is, its geometry and the FVEK.
struct Served<'a> {
    backing: &'a Path,
    place: Place,
    info: &'a Info,
    fvek: &'a SecretBytes,
    by: String,
}

/// A filesystem check of the plaintext, without writing: served read-only through FUSE for
/// `ntfsfix --no-action` (NTFS) or `fsck.vfat -n` (FAT) (`verify::fsck::fsck_bitlocker`);
/// nothing is copied. ("clean" | "errors" | "skipped", summary).
fn filesystem_check(
    vol: &BitlockerVolume,
    name: &str,
    served: &Served<'_>,
) -> Result<(&'static str, String)> {
    use crate::verify::fsck::{FsTool, FsckVerdict};
    let mut boot = [0u8; 4096];
    let n = vol
        .read_at(0, &mut boot)
        .map_err(|e| Error::Device(format!("{name}: cannot read the plaintext: {e}")))?;
    let kind = crate::signature::identify(&boot[..n]).kind;
    let Some(tool) =
        FsTool::for_kind(kind).filter(|t| matches!(t, FsTool::Ntfsfix | FsTool::FsckVfat))
    else {
        return Ok((
            "skipped",
            "no NTFS or FAT filesystem in the plaintext".into(),
        ));
    };
    let located = device::locate(served.backing, served.place, false, false)?;
    let window = located.window().clone();
    drop(located);
    let check = crate::verify::fsck::fsck_bitlocker(
        tool,
        served.backing,
        crate::geometry::Segment {
            data_offset_bytes: window.offset(),
            data_size_bytes: window.len(),
            sector_size: served.info.header.sector_size,
            iv_tweak: 0,
        },
        crate::secret::VolumeKey::from_secret(SecretBytes::from_slice(served.fvek.expose_secret())),
        &served.by,
    )?;
    Ok(match check.verdict {
        FsckVerdict::Clean => ("clean", format!("{}: {}", tool.name(), check.summary)),
        _ => (
            "errors",
            format!(
                "{} {}: {}",
                tool.name(),
                check.verdict.name(),
                check.summary
            ),
        ),
    })
}

/// The window of BACKING a volume to serve lives in, a reader over it and its metadata;
/// a volume BitLocker support refuses (encrypt-on-write, conversion unfinished) is exit 4.
fn servable(
    backing: &Path,
    place: Place,
    name: &str,
) -> Result<(crate::disk::Window<Arc<std::fs::File>>, Reader, Info)> {
    let window = device::locate(backing, place, false, false)?
        .window()
        .clone();
    let reader: Reader = Arc::new(window.clone());
    let info = read_info(&reader, name)?;
    if let Some(why) = info.refusal() {
        return Err(Error::Device(format!(
            "cannot open BitLocker volume {name}: {why}"
        )));
    }
    Ok((window, reader, info))
}

/// `open` of a BitLocker volume: read-only only.
pub fn open(args: &OpenArgs) -> Result<()> {
    if !args.read_only {
        return Err(Error::Device(format!(
            "{}: BitLocker is read-only here: add --read-only",
            args.backing.display()
        )));
    }
    let name = args.backing.display().to_string();
    let (window, reader, info) = servable(&args.backing, args.place.place(), &name)?;
    crate::safepath::check_plain_target(&args.plain)?;
    crate::daemon::ensure_backing_free(&args.backing, true)?;
    let cred = credential(
        &args.key,
        args.startup_key.as_deref(),
        args.volume_key_file.as_deref(),
        &info,
        &name,
    )?;
    let (fvek, by) = Bitlocker::unlock_checked(&reader, &info, &cred, &name)?;
    // Built once here so a bad map fails before the daemon starts.
    BitlockerVolume::new(reader, &info, &fvek, &name)?;
    crate::daemon::start(
        crate::daemon::ServeSpec {
            backing: args.backing.clone(),
            plain: args.plain.clone(),
            segment: crate::geometry::Segment {
                data_offset_bytes: window.offset(),
                data_size_bytes: window.len(),
                sector_size: info.header.sector_size,
                iv_tweak: 0,
            },
            read_only: true,
            foreground: args.foreground,
            allow_other: args.allow_other,
            unlocked_by: by.to_string(),
            grow_with_file: false,
            allow_discards: false,
            bitlocker: true,
        },
        crate::secret::VolumeKey::from_secret(fvek),
    )
}

/// `mount --read-only` of a BitLocker volume: served read-only, then mounted through a
/// read-only loop device (root) with the filesystem found in the plaintext: NTFS through
/// ntfs-3g (else the kernel's ntfs3), FAT through vfat, unless `--fs-type` names another.
pub fn mount(args: &MountArgs) -> Result<()> {
    let name = args.backing.display().to_string();
    if !args.read_only {
        return Err(Error::Device(format!(
            "{name}: BitLocker is read-only here: add --read-only"
        )));
    }
    if args.mkfs.is_some() {
        return Err(Error::Usage(
            "--mkfs cannot be combined with --read-only".into(),
        ));
    }
    if crate::sys::geteuid() != 0 {
        return Err(Error::Permission(format!(
            "mounting BitLocker volume {name} needs root (a loop device); without root: `vaultdisk open --read-only` then `ntfs-3g -o ro PLAIN DIR`"
        )));
    }
    let (window, reader, info) = servable(&args.backing, args.place.place(), &name)?;
    crate::mount::check_mountpoint(&args.mountpoint)?;
    crate::daemon::ensure_backing_free(&args.backing, true)?;
    let cred = credential(
        &args.key,
        args.startup_key.as_deref(),
        args.volume_key_file.as_deref(),
        &info,
        &name,
    )?;
    let (fvek, by) = Bitlocker::unlock_checked(&reader, &info, &cred, &name)?;
    let vol = BitlockerVolume::new(reader, &info, &fvek, &name)?;
    let mut head = [0u8; 4096];
    let n = vol
        .read_at(0, &mut head)
        .map_err(|e| Error::Device(format!("{name}: cannot read the plaintext: {e}")))?;
    // --fs-type's default is ext4 (LUKS volumes); for BitLocker it means "what is there".
    let fs_type = if args.fs_type != "ext4" {
        args.fs_type.clone()
    } else {
        match crate::signature::identify(&head[..n]).kind {
            "ntfs"
                if Path::new("/sbin/mount.ntfs-3g").exists()
                    || Path::new("/usr/sbin/mount.ntfs-3g").exists()
                    || Path::new("/bin/ntfs-3g").exists() =>
            {
                "ntfs-3g".to_string()
            }
            "ntfs" => "ntfs3".to_string(),
            "vfat" => "vfat".to_string(),
            other => {
                return Err(Error::Usage(format!(
                    "{name}: the plaintext holds {other}, not NTFS or FAT: give --fs-type"
                )));
            }
        }
    };
    let record = crate::mount::mount(
        &crate::mount::MountSpec {
            backing: args.backing.clone(),
            mountpoint: args.mountpoint.clone(),
            segment: crate::geometry::Segment {
                data_offset_bytes: window.offset(),
                data_size_bytes: window.len(),
                sector_size: info.header.sector_size,
                iv_tweak: 0,
            },
            read_only: true,
            fs_type,
            mkfs: None,
            unlocked_by: by.to_string(),
            allow_discards: false,
            bitlocker: true,
        },
        crate::secret::VolumeKey::from_secret(fvek),
    )?;
    crate::daemon::notify::ready_for_plain(&record.plain);
    Ok(())
}
