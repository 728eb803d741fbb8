//! `vaultdisk crypttab open|close|list`: each crypttab line becomes the `vaultdisk open` (or
//! `mount`) command line it stands for, run through the same dispatcher, so a volume opened
//! from the table behaves exactly as one opened by hand.
use super::{Cli, CrypttabArgs, CrypttabCommand, CrypttabListArgs, CrypttabNamesArgs, output};
use crate::crypttab::{self, Entry, Resolved, Table};
use crate::error::{Error, ErrorKind, Result};
use clap::Parser;
use serde_json::{Value, json};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub fn run(args: &CrypttabArgs, kdf_time_limit: u64) -> Result<i32> {
    match &args.action {
        CrypttabCommand::Open(a) => open(a, kdf_time_limit),
        CrypttabCommand::Close(a) => close(a),
        CrypttabCommand::List(a) => list(a),
    }
}

fn read_table(file: &Path) -> Result<Table> {
    let shown = file.display().to_string();
    let meta = std::fs::metadata(file).map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
    if meta.len() > 1 << 20 {
        return Err(Error::Usage(format!(
            "{shown} is {} bytes; a crypttab is a few lines",
            meta.len()
        )));
    }
    let text =
        std::fs::read_to_string(file).map_err(|e| Error::io(format!("cannot read {shown}"), e))?;
    let table = crypttab::parse(&text, &shown);
    for w in &table.warnings {
        log::warn!("{w}");
    }
    Ok(table)
}

/// The entries `names` select (all, or without noauto for `open`), in table order; a name
/// the table lacks is an error before anything is done.
fn select<'t>(
    table: &'t Table,
    names: &[String],
    file: &Path,
    opening: bool,
) -> Result<Vec<&'t Entry>> {
    if names.is_empty() {
        return Ok(table
            .entries
            .iter()
            .filter(|e| !(opening && e.options.noauto))
            .collect());
    }
    names
        .iter()
        .map(|n| {
            table.get(n).ok_or_else(|| {
                Error::Usage(format!(
                    "{} has no usable entry named {}",
                    file.display(),
                    crate::escape::escape_line(n)
                ))
            })
        })
        .collect()
}

/// RUNTIME_DIR/mapper/NAME, where an entry's plaintext is served (cryptsetup's /dev/mapper).
fn plain_path(name: &str) -> PathBuf {
    crate::daemon::runtime_dir().join("mapper").join(name)
}

/// The command line `entry` stands for, the device already resolved.
fn command_line(entry: &Entry, at: &Resolved, kdf_time_limit: u64) -> Vec<OsString> {
    let o = &entry.options;
    let mut argv: Vec<OsString> = vec![
        "vaultdisk".into(),
        "--kdf-time-limit".into(),
        kdf_time_limit.to_string().into(),
    ];
    match &o.mount {
        Some(dir) => {
            argv.push("mount".into());
            argv.push(at.path.clone().into());
            argv.push(dir.clone().into());
            argv.push("--fs-type".into());
            argv.push(o.fs_type.as_deref().unwrap_or("ext4").into());
        }
        None => {
            argv.push("open".into());
            argv.push(at.path.clone().into());
            argv.push(plain_path(&entry.name).into());
        }
    }
    let mut flag = |name: &str, value: Option<OsString>| {
        argv.push(name.into());
        if let Some(v) = value {
            argv.push(v);
        }
    };
    if let Some(n) = at.partition {
        flag("--partition", Some(n.to_string().into()));
    }
    if let Some(k) = &entry.key_file {
        flag("--key-file", Some(k.clone().into()));
    }
    if let Some(n) = o.keyfile_offset {
        flag("--keyfile-offset", Some(n.to_string().into()));
    }
    if let Some(n) = o.keyfile_size {
        flag("--keyfile-size", Some(n.to_string().into()));
    }
    if let Some(n) = o.key_slot {
        flag("--key-slot", Some(n.to_string().into()));
    }
    if let Some(h) = &o.header {
        flag("--header", Some(h.clone().into()));
    }
    if o.read_only {
        flag("--read-only", None);
    }
    if o.discard {
        flag("--allow-discards", None);
    }
    argv
}

fn shell_words(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let s = a.to_string_lossy();
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a vaultdisk command line in this process, through the same parser and dispatcher.
fn run_command(argv: Vec<OsString>) -> Result<i32> {
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        let line = text
            .lines()
            .next()
            .unwrap_or("bad arguments")
            .trim()
            .to_string();
        Error::Usage(format!("the crypttab entry gives bad arguments: {line}"))
    })?;
    super::run(cli)
}

/// Whether the entry's volume is open now: its PLAIN is served, or its mount point is a
/// vaultdisk mount.
fn is_open(entry: &Entry) -> bool {
    serving_plain(entry).is_some()
}

/// The PLAIN that serves the entry's volume now, if it is open.
fn serving_plain(entry: &Entry) -> Option<PathBuf> {
    match &entry.options.mount {
        Some(dir) => {
            let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            crate::mount::records()
                .into_iter()
                .find(|(_, r)| r.mountpoint == dir)
                .map(|(_, r)| r.plain)
        }
        None => {
            let plain = plain_path(&entry.name);
            crate::daemon::open_volumes()
                .iter()
                .any(|v| v.plain == plain)
                .then_some(plain)
        }
    }
}

/// The daemon serving the entry's volume.
fn daemon_pid(entry: &Entry) -> Option<u32> {
    let plain = serving_plain(entry)?;
    crate::daemon::open_volumes()
        .into_iter()
        .find(|v| v.plain == plain)
        .map(|v| v.pid)
}

fn open(args: &CrypttabNamesArgs, kdf_time_limit: u64) -> Result<i32> {
    let table = read_table(&args.file)?;
    let entries = select(&table, &args.names, &args.file, true)?;
    // One READY=1 for systemd when every entry is done, not one per open.
    crate::daemon::notify::hold();
    let mut first_failure: Option<Error> = None;
    let mut opened = Vec::new();
    for entry in entries {
        match open_one(entry, args.dry_run, kdf_time_limit) {
            Ok(()) => opened.push(entry),
            Err(e) if entry.options.nofail => {
                eprintln!(
                    "vaultdisk: warning: {} (nofail: going on)",
                    crate::escape::escape_line(&format!("{}: {e}", entry.name))
                );
            }
            Err(e) => {
                eprintln!(
                    "vaultdisk: {}",
                    crate::escape::escape_line(&format!("{}: {e}", entry.name))
                );
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        // Each failure was printed with its entry's name; the exit code is the first one's.
        Some(e) => Ok(e.kind().exit_code()),
        None => {
            if !args.dry_run {
                // A unit per volume (vaultdisk@NAME) hands systemd that volume's daemon as
                // its main process; with several, none is (RemainAfterExit keeps the unit).
                let main = match opened.as_slice() {
                    [one] => daemon_pid(one),
                    _ => None,
                };
                crate::daemon::notify::ready(main, true);
            }
            Ok(0)
        }
    }
}

fn open_one(entry: &Entry, dry_run: bool, kdf_time_limit: u64) -> Result<()> {
    if let Some(why) = &entry.unsupported {
        return Err(Error::Usage(format!("line {}: {why}", entry.line)));
    }
    let at = crypttab::resolve(&entry.device)?;
    let argv = command_line(entry, &at, kdf_time_limit);
    if dry_run {
        return output::emit(&format!("{}: {}", entry.name, shell_words(&argv)));
    }
    if is_open(entry) {
        eprintln!("vaultdisk: {}: already open", entry.name);
        return Ok(());
    }
    if entry.options.mount.is_none() {
        crate::daemon::ensure_runtime_dir()?;
        let dir = crate::daemon::runtime_dir().join("mapper");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    // tries= counts passphrase attempts on a terminal (0: without limit), as
    // systemd-cryptsetup does; a key file gets one attempt.
    let asks = entry.key_file.is_none() && std::io::stdin().is_terminal();
    let tries = if asks { entry.options.tries } else { 1 };
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match run_command(argv.clone()) {
            Ok(0) => return Ok(()),
            Ok(code) => {
                return Err(Error::Usage(format!("the open command exited with {code}")));
            }
            Err(e) if e.kind() == ErrorKind::NoKey && (tries == 0 || attempt < tries) => {
                eprintln!("vaultdisk: {}: {e}; try again", entry.name);
            }
            Err(e) => return Err(e),
        }
    }
}

fn close(args: &CrypttabNamesArgs) -> Result<i32> {
    let table = read_table(&args.file)?;
    let entries = select(&table, &args.names, &args.file, false)?;
    let mut first_failure: Option<Error> = None;
    for entry in entries {
        let argv: Vec<OsString> = match &entry.options.mount {
            Some(dir) => vec!["vaultdisk".into(), "umount".into(), dir.clone().into()],
            None => vec![
                "vaultdisk".into(),
                "close".into(),
                plain_path(&entry.name).into(),
            ],
        };
        if args.dry_run {
            output::emit(&format!("{}: {}", entry.name, shell_words(&argv)))?;
            continue;
        }
        if !is_open(entry) {
            if !args.names.is_empty() {
                eprintln!("vaultdisk: {}: not open", entry.name);
            }
            continue;
        }
        if let Err(e) = run_command(argv) {
            eprintln!(
                "vaultdisk: {}",
                crate::escape::escape_line(&format!("{}: {e}", entry.name))
            );
            first_failure.get_or_insert(e);
        }
    }
    Ok(first_failure.map_or(0, |e| e.kind().exit_code()))
}

fn list(args: &CrypttabListArgs) -> Result<i32> {
    let table = read_table(&args.file)?;
    let rows: Vec<Value> = table
        .entries
        .iter()
        .map(|e| {
            let resolved = crypttab::resolve(&e.device);
            let o = &e.options;
            json!({
                "name": e.name,
                "line": e.line,
                "device": e.device.to_string(),
                "resolved": resolved.as_ref().ok().map(|r| json!({
                    "path": r.path, "partition": r.partition,
                })),
                "resolve_error": resolved.as_ref().err().map(|e| e.to_string()),
                "key_file": e.key_file,
                "options": {
                    "header": o.header, "discard": o.discard,
                    "keyfile_offset": o.keyfile_offset, "keyfile_size": o.keyfile_size,
                    "key_slot": o.key_slot, "tries": o.tries, "read_only": o.read_only,
                    "noauto": o.noauto, "nofail": o.nofail,
                    "mount": o.mount, "fs_type": o.fs_type,
                },
                "unsupported": e.unsupported,
                "plain": o.mount.is_none().then(|| plain_path(&e.name)),
                "open": is_open(e),
            })
        })
        .collect();
    if args.json {
        let doc = json!({"file": args.file, "warnings": table.warnings, "entries": rows});
        output::emit(
            &serde_json::to_string_pretty(&doc).map_err(|e| Error::Usage(e.to_string()))?,
        )?;
        return Ok(0);
    }
    let mut text = String::from("NAME  DEVICE  KEY  STATE  WHERE\n");
    for (e, row) in table.entries.iter().zip(&rows) {
        let state = if e.unsupported.is_some() {
            "unsupported"
        } else if row["open"] == true {
            "open"
        } else {
            "closed"
        };
        let place = match &e.options.mount {
            Some(d) => format!("mount {}", d.display()),
            None => plain_path(&e.name).display().to_string(),
        };
        let key = e
            .key_file
            .as_ref()
            .map_or_else(|| "ask".to_string(), |k| k.display().to_string());
        text.push_str(&crate::escape::escape_line(&format!(
            "{}  {}  {key}  {state}  {place}",
            e.name, e.device
        )));
        text.push('\n');
        if let Some(why) = &e.unsupported {
            text.push_str(&format!("  ({})\n", crate::escape::escape_line(why)));
        }
    }
    output::emit(text.trim_end())?;
    Ok(0)
}

use std::os::unix::fs::DirBuilderExt;
