//! `vaultdisk verify` / `digest`: restore verification, read-only throughout.
use super::{DigestArgs, KeyArgs, VerifyArgs, output, passphrase};
use crate::device::{self, HeaderAt, Place, VolumeHeader};
use crate::disk::Window;
use crate::error::{Error, Result, exit};
use crate::geometry::Segment;
use crate::keychain::CandidateKey;
use crate::secret::VolumeKey;
use crate::unlock::{self, UnlockedBy, vault};
use crate::verify::disks::{self, DisksOptions, Progress};
use crate::verify::{self, DataCheck, HeaderCheck, KeyCheck, VerifyReport};
use crate::volume::Volume;
use serde_json::json;
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A header read for verification, with where the data is and who unlocks it.
struct Opened {
    header_file: Window<Arc<File>>,
    header_path: PathBuf,
    header: VolumeHeader,
    /// The data segment relative to the backing file (a partition's start included).
    segment: Segment,
}

fn open_read_only(backing: &Path, place: Place, header: Option<&Path>) -> Result<Opened> {
    let at = HeaderAt::from_option(header);
    let located = device::locate_with(backing, place, &at, false, false)?;
    let parsed = located.read_header()?;
    let segment = located.segment(&parsed)?;
    Ok(Opened {
        header_file: located.header_window().clone(),
        header_path: located.header_path().to_path_buf(),
        header: parsed,
        segment,
    })
}

/// Tries one key source; Ok((keyslot, key)) or the error that says why not. With
/// `with_vault`, vault tokens come first as for `open` (digest); verify's key files are
/// checked alone so each report line is about that key. The library's `unlock_header` gives
/// the same exit codes as `open` (a LUKS1 `--key-slot` not in use is exit 1 everywhere).
fn try_key(
    opened: &Opened,
    key: &KeyArgs,
    key_slot: Option<u32>,
    with_vault: bool,
    volume_key_file: Option<&Path>,
) -> Result<(UnlockedBy, VolumeKey)> {
    let vault = with_vault.then(|| key.vault.config());
    let key = if with_vault || volume_key_file.is_some() {
        passphrase::unlock_key_or_volume_key(key, volume_key_file)
    } else {
        passphrase::key(key)
    };
    let o = unlock::unlock_header(
        &opened.header,
        &opened.header_file,
        &key,
        vault.as_ref(),
        key_slot,
        &opened.header_path,
        &passphrase::Terminal,
    )?;
    Ok((o.by, o.volume_key))
}

/// How the digest reports progress: a bar on a terminal, JSON lines with --progress-json.
#[derive(Clone, Copy)]
struct DigestMode {
    dm_crypt_view: bool,
    progress_json: bool,
}

/// One `--progress-json` line on stderr, at most once a second and at the end.
fn progress_line(done: u64, total: u64) {
    eprintln!(
        "{}",
        json!({"event": "progress", "step": "digest", "done_bytes": done, "total_bytes": total})
    );
}

fn digest_of(
    backing: &Path,
    segment: Segment,
    key: &VolumeKey,
    mode: DigestMode,
) -> Result<String> {
    let data = device::open_backing(backing, false)?;
    let size = segment.data_size_bytes;
    let mut last_line: Option<std::time::Instant> = None;
    let bar = (!mode.progress_json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let progress = |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
        if mode.progress_json
            && (done == size || last_line.is_none_or(|t| t.elapsed().as_secs() >= 1))
        {
            progress_line(done, size);
            last_line = Some(std::time::Instant::now());
        }
    };
    let res = if mode.dm_crypt_view {
        verify::dm_crypt_view_digest(&data, &segment, key, progress)
    } else {
        verify::plaintext_digest(&Volume::new(data, segment, key, true)?, progress)
    };
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    res
}

pub fn run(args: &VerifyArgs) -> Result<i32> {
    if whole_disks(args)? {
        return run_disks(args);
    }
    let header = match args.header.as_slice() {
        [] => None,
        [one] => Some(one.as_path()),
        _ => {
            return Err(Error::Usage(
                "--header may repeat only for whole disks (a partition table or a VHD); this is one volume"
                    .into(),
            ));
        }
    };
    if super::bitlocker::detected(&args.backing, args.place.place(), header) {
        return super::bitlocker::verify(args);
    }
    let expected = match args.expect_digest.as_slice() {
        [] => None,
        [one] => Some(verify::parse_digest(one)?),
        _ => {
            return Err(Error::Usage(
                "--expect-digest may repeat only for whole disks (a partition table or a VHD); this is one volume"
                    .into(),
            ));
        }
    };
    let want_digest = args.digest || expected.is_some();
    let opened = open_read_only(&args.backing, args.place.place(), header)?;

    let header = HeaderCheck::new(&opened.header, &opened.header_path);

    // Key-chain sources (--bek-volume, --keyvault-secret, ...): each resolved candidate is
    // checked like a key file, with its label; --key-file then joins the chain.
    let candidates = if args.key_chain.has_sources() {
        let chain = args.key_chain.key_chain(&args.key_file);
        crate::keychain::resolve(&chain.with_vault(args.vault_args.config()))?
    } else {
        Vec::new()
    };
    // Key sources: every --key-file, or one passphrase from stdin/tty when data is checked.
    let mut sources: Vec<(String, KeyArgs, Option<PathBuf>)> = if !candidates.is_empty() {
        Vec::new()
    } else if args.key_file.is_empty() {
        if (want_digest || args.fsck) && !args.vault && args.volume_key_file.is_none() {
            vec![("passphrase".into(), KeyArgs::default(), None)]
        } else {
            Vec::new()
        }
    } else {
        args.key_file
            .iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    KeyArgs {
                        key_file: Some(p.clone()),
                        ..KeyArgs::default()
                    },
                    None,
                )
            })
            .collect()
    };
    if let Some(p) = &args.volume_key_file {
        sources.push((p.display().to_string(), KeyArgs::default(), Some(p.clone())));
    }
    let mut keyslots = Vec::new();
    let mut volume_key: Option<(UnlockedBy, VolumeKey)> = None;
    let mut last_error = None;
    if args.vault {
        let VolumeHeader::Luks2(h) = &opened.header else {
            return Err(Error::Usage(format!(
                "{} is LUKS1, which has no vault tokens: drop --vault",
                opened.header_path.display()
            )));
        };
        let checked = vault::check_each(
            &h.metadata,
            &opened.header_file,
            &args.vault_args.config(),
            args.key_slot,
        )?;
        if checked.is_empty() {
            keyslots.push(KeyCheck::failed("vault", "the volume has no vault token"));
            last_error = Some(Error::Vault(format!(
                "{} has no vault token",
                opened.header_path.display()
            )));
        }
        for vault::TokenCheck { label, result } in checked {
            match result {
                Ok((id, vk)) => {
                    keyslots.push(KeyCheck::opened(&label, id));
                    if volume_key.is_none() {
                        volume_key = Some((UnlockedBy::Keyslot(id), vk));
                    }
                }
                Err(why) => {
                    keyslots.push(KeyCheck::failed(&label, &why));
                    last_error = Some(Error::Vault(format!("{label}: {why}")));
                }
            }
        }
    }
    for (label, key, vk_file) in &sources {
        match try_key(&opened, key, args.key_slot, false, vk_file.as_deref()) {
            Ok((by, vk)) => {
                keyslots.push(match by.keyslot() {
                    Some(id) => KeyCheck::opened(label, id),
                    None => KeyCheck::volume_key(label),
                });
                if volume_key.is_none() {
                    volume_key = Some((by, vk));
                }
            }
            Err(e @ (Error::NoKey { .. } | Error::Device(_) | Error::NoMemory(_))) => {
                keyslots.push(KeyCheck::failed(label, e.to_string()));
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    for c in &candidates {
        let prompt = crate::keychain::CandidatePrompt::new(c);
        let key = crate::keychain::CandidatePrompt::key();
        let (h, file, path) = (&opened.header, &opened.header_file, &opened.header_path);
        match unlock::unlock_header(h, file, &key, None, args.key_slot, path, &prompt) {
            Ok(o) => {
                keyslots.push(match o.by.keyslot() {
                    Some(id) => KeyCheck::opened(&c.label, id),
                    None => KeyCheck::volume_key(&c.label),
                });
                if volume_key.is_none() {
                    volume_key = Some((o.by, o.volume_key));
                }
            }
            Err(e @ (Error::NoKey { .. } | Error::Device(_) | Error::NoMemory(_))) => {
                keyslots.push(KeyCheck::failed(&c.label, e.to_string()));
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }

    let mut data = DataCheck {
        expected,
        ..DataCheck::default()
    };
    if let Some((by, vk)) = volume_key.take() {
        if want_digest {
            let mode = DigestMode {
                dm_crypt_view: args.dm_crypt_view,
                progress_json: args.progress_json,
            };
            let digest = digest_of(&args.backing, opened.segment, &vk, mode)?;
            data.matches = data.expected.as_ref().map(|exp| *exp == digest);
            data.digest = Some(digest);
        }
        if args.fsck {
            data.fsck = Some(verify::fsck(&args.backing, opened.segment, vk, by)?);
        }
    }
    let report = VerifyReport::new(&args.backing, header, keyslots, data);
    output::print(&report, args.json)?;
    if report.no_key() {
        return Err(last_error.unwrap_or_else(|| Error::NoKey {
            path: args.backing.clone(),
            what: "passphrase",
            tried: "all".into(),
        }));
    }
    if report.ok {
        return Ok(exit::OK);
    }
    eprintln!(
        "vaultdisk: damage found in {}: {}",
        args.backing.display(),
        report.damage().join("; ")
    );
    Ok(exit::DAMAGE)
}

pub fn run_digest(args: &DigestArgs) -> Result<()> {
    if super::bitlocker::detected(&args.backing, args.place.place(), args.header.as_deref()) {
        return super::bitlocker::digest(args);
    }
    let opened = open_read_only(&args.backing, args.place.place(), args.header.as_deref())?;
    let (_, vk) = try_key(
        &opened,
        &args.key,
        args.key_slot,
        true,
        args.volume_key_file.as_deref(),
    )?;
    let mode = DigestMode {
        dm_crypt_view: args.dm_crypt_view,
        progress_json: args.progress_json,
    };
    let digest = digest_of(&args.backing, opened.segment, &vk, mode)?;
    output::emit(&format!("{digest}  {}", args.backing.display()))
}

/// Whether this run is the whole-disk report: several inputs, or one with a partition table
/// or a fixed VHD footer. One LUKS volume (whole-file, or picked by --partition or a raw
/// window) keeps the single-volume report users already depend on.
fn whole_disks(args: &VerifyArgs) -> Result<bool> {
    if !args.more_disks.is_empty() {
        return Ok(true);
    }
    if args.place.place() != Place::Whole {
        return Ok(false);
    }
    let Ok(file) = File::open(&args.backing) else {
        return Ok(false);
    };
    let mut magic = [0u8; 6];
    if std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).is_ok()
        && &magic == b"LUKS\xba\xbe"
    {
        return Ok(false);
    }
    drop(file);
    // An image that cannot be read as a disk (a table reaching past its end, another
    // container format) is reported by the disk walk, which says why.
    Ok(match crate::disk::Disk::open(&args.backing) {
        Ok(d) => d.table().is_some() || d.vhd().is_some(),
        Err(_) => true,
    })
}

/// The keys the walk tries: the key chain (--bek-volume, --keyvault-secret, ... with the
/// --key-file files, as `keychain::resolve` gives them), else every --key-file (label
/// "key-file PATH"), else one passphrase from stdin or the terminal.
fn candidates(args: &VerifyArgs) -> Result<Vec<CandidateKey>> {
    if args.key_chain.has_sources() {
        let chain = args.key_chain.key_chain(&args.key_file);
        return crate::keychain::resolve(&chain.with_vault(args.vault_args.config()));
    }
    let keys: Vec<(String, KeyArgs)> = if args.key_file.is_empty() {
        vec![("passphrase".into(), KeyArgs::default())]
    } else {
        args.key_file
            .iter()
            .map(|p| {
                (
                    format!("key-file {}", p.display()),
                    KeyArgs {
                        key_file: Some(p.clone()),
                        ..KeyArgs::default()
                    },
                )
            })
            .collect()
    };
    keys.into_iter()
        .map(|(label, k)| {
            let pass =
                unlock::read_key(&passphrase::key(&k), &passphrase::Terminal, &label, false)?;
            Ok(CandidateKey {
                label,
                bytes: pass.0,
            })
        })
        .collect()
}

fn run_disks(args: &VerifyArgs) -> Result<i32> {
    if args.vault || args.volume_key_file.is_some() {
        return Err(Error::Usage(
            "--vault and --volume-key-file check one volume: give the volume (or --partition N) instead of whole disks"
                .into(),
        ));
    }
    let mut paths = vec![args.backing.clone()];
    paths.extend(args.more_disks.iter().cloned());
    let expected = args
        .expect_digest
        .iter()
        .map(|e| disks::parse_expect(e))
        .collect::<Result<Vec<_>>>()?;
    let keys = candidates(args)?;
    let opts = DisksOptions {
        headers: args.header.clone(),
        key_slot: args.key_slot,
        dm_crypt_view: args.dm_crypt_view,
        fsck: true,
        expected,
    };
    let progress_json = args.progress_json;
    // On a terminal: one bar per digest ("disk partition N: digest"), a line per step.
    let bar = (!progress_json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let mut progress = |p: &Progress| {
        if progress_json {
            eprintln!(
                "{}",
                json!({"event": "progress", "step": p.step, "disk": p.disk,
                       "partition": p.partition, "done_bytes": p.done_bytes,
                       "total_bytes": p.total_bytes})
            );
        } else if let Some(b) = &bar {
            let place = p
                .partition
                .map_or("whole disk".into(), |n| format!("partition {n}"));
            b.set_message(format!("{} {place}: {}", p.disk, p.step));
            b.set_length(p.total_bytes);
            b.set_position(p.done_bytes);
        }
    };
    let report = disks::verify_disks(&paths, &keys, &opts, &mut progress);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let report = report?;
    output::print(&report, args.json)?;
    let problems = report.problems().join("; ");
    Ok(match report.verdict {
        verify::report::Verdict::Damage => {
            eprintln!("vaultdisk: damage found: {problems}");
            exit::DAMAGE
        }
        verify::report::Verdict::NoKey => {
            eprintln!("vaultdisk: no supplied key opened: {problems}");
            exit::NO_KEY
        }
        verify::report::Verdict::ReencryptionInProgress => {
            eprintln!("vaultdisk: not verified, reencryption in progress: {problems}");
            exit::DAMAGE
        }
        _ => exit::OK,
    })
}
