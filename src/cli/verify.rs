//! `vaultdisk verify` / `digest`: restore verification, read-only throughout.
use super::{DigestArgs, KeyArgs, VerifyArgs, passphrase};
use crate::daemon::{self, ServeSpec};
use crate::device::{self, VolumeHeader};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::luks2::{CopyState, ReadAt};
use crate::secret::VolumeKey;
use crate::verify::{self, FsckVerdict};
use crate::volume::Volume;
use serde_json::{Value, json};
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Exit code of `verify` when it found damage.
pub const EXIT_DAMAGE: i32 = 6;

/// A header read for verification, with where the data is and who unlocks it.
struct Opened {
    header_file: File,
    header_path: PathBuf,
    header: VolumeHeader,
    segment: Segment,
}

fn open_read_only(backing: &Path, header: Option<&Path>) -> Result<Opened> {
    let data = device::open_backing(backing, false)?;
    let data_len = data
        .len_bytes()
        .map_err(|e| Error::io(format!("cannot stat {}", backing.display()), e))?;
    let header_path = header.unwrap_or(backing).to_path_buf();
    let header_file = match header {
        Some(h) => device::open_backing(h, false)?,
        None => data,
    };
    let parsed = device::read_header(&header_file, &header_path)?;
    let segment = match &parsed {
        VolumeHeader::Luks2(h) => device::luks2_segment_in(h, data_len, backing, header.is_some())?,
        VolumeHeader::Luks1(h) => h
            .segment(data_len)
            .map_err(|e| Error::Device(format!("{}: {e}", header_path.display())))?,
    };
    Ok(Opened {
        header_file,
        header_path,
        header: parsed,
        segment,
    })
}

/// Tries one key source; Ok((keyslot, key)) or the error that says why not. With
/// `with_vault`, vault tokens come first as for `open` (digest); verify's key files are
/// checked alone so each report line is about that key.
fn try_key(
    opened: &Opened,
    key: &KeyArgs,
    key_slot: Option<u32>,
    with_vault: bool,
) -> Result<(u32, VolumeKey)> {
    let name = opened.header_path.display().to_string();
    match &opened.header {
        VolumeHeader::Luks2(h) if with_vault => super::open::unlock_luks2(
            &h.metadata,
            &opened.header_file,
            key,
            key_slot,
            &opened.header_path,
        )
        .map(|o| (o.keyslot, o.volume_key)),
        VolumeHeader::Luks2(h) => super::open::unlock_luks2_passphrase(
            &h.metadata,
            &opened.header_file,
            key,
            key_slot,
            &opened.header_path,
        ),
        VolumeHeader::Luks1(h) => {
            let pass = passphrase::read(key, &name, false)?;
            let only = key_slot.and_then(|n| u8::try_from(n).ok());
            match h.unlock(&opened.header_file, pass.expose_secret(), only) {
                Ok(Some((id, vk))) => Ok((u32::from(id), vk)),
                Ok(None) => Err(Error::NoKey {
                    path: opened.header_path.clone(),
                    what: "passphrase",
                    tried: "all enabled".into(),
                }),
                Err(e) => Err(Error::Device(format!("{name}: {e}"))),
            }
        }
    }
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

/// `e2fsck -fn` on the plaintext, served read-only by a daemon in the runtime directory.
fn fsck(
    backing: &Path,
    segment: Segment,
    key: VolumeKey,
    keyslot: u32,
) -> Result<(FsckVerdict, String)> {
    daemon::ensure_backing_free(backing, true)?;
    let plain = daemon::runtime_dir().join(format!("verify-{}.img", std::process::id()));
    daemon::start(
        ServeSpec {
            backing: backing.to_path_buf(),
            plain: plain.clone(),
            segment,
            read_only: true,
            foreground: false,
            allow_other: false,
            unlocked_by: format!("keyslot {keyslot}"),
            grow_with_file: false,
        },
        key,
    )?;
    let e2fsck = ["/usr/sbin/e2fsck", "/sbin/e2fsck"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("e2fsck"));
    let out = Command::new(e2fsck)
        .args(["-f", "-n"])
        .arg(&plain)
        .stdin(Stdio::null())
        .output();
    let closed = daemon::close(&plain);
    let out = out.map_err(|e| Error::io("cannot run e2fsck", e))?;
    closed?;
    let verdict = FsckVerdict::from_exit(out.status.code());
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    Ok((verdict, last))
}

fn copy_report(c: &CopyState) -> Value {
    json!({
        "name": c.kind.name(),
        "offset": c.offset,
        "seqid": c.seqid,
        "valid": c.error.is_none(),
        "stale": c.stale,
        "error": c.error.as_ref().map(ToString::to_string),
    })
}

pub fn run(args: &VerifyArgs) -> Result<i32> {
    let expected = args
        .expect_digest
        .as_deref()
        .map(verify::parse_digest)
        .transpose()?;
    let want_digest = args.digest || expected.is_some();
    let opened = open_read_only(&args.backing, args.header.as_deref())?;

    let (header_report, header_damaged) = match &opened.header {
        VolumeHeader::Luks2(h) => {
            let damaged = h.primary.error.is_some() || h.secondary.error.is_some();
            (
                json!({
                    "version": 2,
                    "file": opened.header_path,
                    "current": h.current.name(),
                    "copies": [copy_report(&h.primary), copy_report(&h.secondary)],
                    "damaged": damaged,
                }),
                damaged,
            )
        }
        VolumeHeader::Luks1(_) => (
            json!({"version": 1, "file": opened.header_path, "damaged": false}),
            false,
        ),
    };

    // Key sources: every --key-file, or one passphrase from stdin/tty when data is checked.
    let sources: Vec<(String, KeyArgs)> = if args.key_file.is_empty() {
        if (want_digest || args.fsck) && !args.vault {
            vec![("passphrase".into(), KeyArgs::default())]
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
                )
            })
            .collect()
    };
    let mut keyslots = Vec::new();
    let mut volume_key: Option<(u32, VolumeKey)> = None;
    let mut last_error = None;
    if args.vault {
        let VolumeHeader::Luks2(h) = &opened.header else {
            return Err(Error::Usage(format!(
                "{} is LUKS1, which has no vault tokens: drop --vault",
                opened.header_path.display()
            )));
        };
        let checked = super::vault::check_each(
            &h.metadata,
            &opened.header_file,
            &args.vault_args,
            args.key_slot,
        )?;
        if checked.is_empty() {
            keyslots.push(
                json!({"key": "vault", "keyslot": null, "error": "the volume has no vault token"}),
            );
            last_error = Some(Error::Vault(format!(
                "{} has no vault token",
                opened.header_path.display()
            )));
        }
        for super::vault::TokenCheck { label, result } in checked {
            match result {
                Ok((id, vk)) => {
                    keyslots.push(json!({"key": label, "keyslot": id, "error": null}));
                    if volume_key.is_none() {
                        volume_key = Some((id, vk));
                    }
                }
                Err(why) => {
                    keyslots.push(json!({"key": label, "keyslot": null, "error": why}));
                    last_error = Some(Error::Vault(format!("{label}: {why}")));
                }
            }
        }
    }
    for (label, key) in &sources {
        match try_key(&opened, key, args.key_slot, false) {
            Ok((id, vk)) => {
                keyslots.push(json!({"key": label, "keyslot": id, "error": null}));
                if volume_key.is_none() {
                    volume_key = Some((id, vk));
                }
            }
            Err(e @ (Error::NoKey { .. } | Error::Device(_) | Error::NoMemory(_))) => {
                keyslots.push(json!({"key": label, "keyslot": null, "error": e.to_string()}));
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }

    let mut data = json!({"digest": null, "expected": expected, "match": null, "fsck": null});
    let mut data_ok = true;
    if let Some((id, vk)) = volume_key.take() {
        if want_digest {
            let mode = DigestMode {
                dm_crypt_view: args.dm_crypt_view,
                progress_json: args.progress_json,
            };
            let digest = digest_of(&args.backing, opened.segment, &vk, mode)?;
            if let Some(exp) = &expected {
                let m = *exp == digest;
                data_ok &= m;
                data["match"] = json!(m);
            }
            data["digest"] = json!(digest);
        }
        if args.fsck {
            let (verdict, summary) = fsck(&args.backing, opened.segment, vk, id)?;
            data_ok &= verdict == FsckVerdict::Clean;
            data["fsck"] = json!({"verdict": verdict.name(), "summary": summary});
        }
    }
    let no_key = !keyslots.is_empty() && keyslots.iter().all(|k| k["keyslot"].is_null());
    let ok = !header_damaged && data_ok && !no_key;
    let report = json!({
        "backing": args.backing,
        "header": header_report,
        "keyslots": keyslots,
        "data": data,
        "ok": ok,
    });
    emit(&if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        render_text(&report)
    })?;
    if no_key {
        return Err(last_error.unwrap_or_else(|| Error::NoKey {
            path: args.backing.clone(),
            what: "passphrase",
            tried: "all".into(),
        }));
    }
    if ok {
        return Ok(0);
    }
    let mut why = Vec::new();
    if header_damaged {
        why.push("a header copy is damaged".to_string());
    }
    if report["data"]["match"] == json!(false) {
        why.push("the plaintext digest does not match".to_string());
    }
    if let Some(v) = report["data"]["fsck"]["verdict"].as_str()
        && v != "clean"
    {
        why.push(format!("e2fsck: {v}"));
    }
    eprintln!(
        "vaultdisk: damage found in {}: {}",
        args.backing.display(),
        why.join("; ")
    );
    Ok(EXIT_DAMAGE)
}

pub fn run_digest(args: &DigestArgs) -> Result<()> {
    let opened = open_read_only(&args.backing, args.header.as_deref())?;
    let (_, vk) = try_key(&opened, &args.key, args.key_slot, true)?;
    let mode = DigestMode {
        dm_crypt_view: args.dm_crypt_view,
        progress_json: args.progress_json,
    };
    let digest = digest_of(&args.backing, opened.segment, &vk, mode)?;
    emit(&format!("{digest}  {}", args.backing.display()))
}

fn render_text(r: &Value) -> String {
    let mut out = String::new();
    let h = &r["header"];
    out.push_str(&format!(
        "header:   LUKS{} in {}",
        h["version"],
        h["file"].as_str().unwrap_or("")
    ));
    if let Some(cur) = h["current"].as_str() {
        out.push_str(&format!(", current copy {cur}"));
    }
    out.push('\n');
    for c in h["copies"].as_array().into_iter().flatten() {
        let state = match (c["valid"].as_bool(), c["stale"].as_bool()) {
            (Some(false), _) => format!("DAMAGED ({})", c["error"].as_str().unwrap_or("")),
            (_, Some(true)) => "valid, stale".into(),
            _ => "valid".into(),
        };
        out.push_str(&format!(
            "  {:<9} at {:>6}: {state}, seqid {}\n",
            c["name"].as_str().unwrap_or(""),
            c["offset"],
            c["seqid"]
        ));
    }
    let ks = r["keyslots"].as_array().cloned().unwrap_or_default();
    let ks_empty = ks.is_empty();
    if !ks.is_empty() {
        out.push_str("keyslots:\n");
        for k in ks {
            let what = match k["keyslot"].as_u64() {
                Some(id) => format!("opens keyslot {id}"),
                None => format!("opens none: {}", k["error"].as_str().unwrap_or("")),
            };
            out.push_str(&format!("  {}: {what}\n", k["key"].as_str().unwrap_or("")));
        }
    }
    let d = &r["data"];
    if let Some(digest) = d["digest"].as_str() {
        out.push_str(&format!("digest:   {digest}\n"));
    }
    if let Some(exp) = d["expected"].as_str() {
        let verdict = if d["match"] == json!(true) {
            "match"
        } else {
            "MISMATCH"
        };
        out.push_str(&format!("expected: {exp} ({verdict})\n"));
    }
    if d["fsck"].is_object() {
        out.push_str(&format!(
            "fsck:     {} ({})\n",
            d["fsck"]["verdict"].as_str().unwrap_or(""),
            d["fsck"]["summary"].as_str().unwrap_or("")
        ));
    }
    let no_key = !ks_empty
        && r["keyslots"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|k| k["keyslot"].is_null());
    out.push_str(if r["ok"] == json!(true) {
        "result:   ok"
    } else if no_key {
        "result:   no supplied key opened a keyslot"
    } else {
        "result:   DAMAGE FOUND"
    });
    out
}

/// Writes to stdout; a closed pipe is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}
