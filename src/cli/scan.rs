//! `vaultdisk scan`: what a disk image or device holds (VHD footer, partition table, what each
//! partition contains). The library does the work (`disk::scan`); this file prints.
use super::ScanArgs;
use crate::disk::{Disk, scan};
use crate::error::{Error, Result};
use crate::escape::escape_control;

pub fn run(args: &ScanArgs) -> Result<()> {
    let name = args.image.display().to_string();
    let disk = Disk::open(&args.image)?;
    let report = scan::scan(&disk, &name).map_err(|e| e.for_path(&name))?;
    for w in &report.warnings {
        log::warn!("{name}: {w}");
    }
    let text = if args.json {
        serde_json::to_string_pretty(&report).unwrap_or_default()
    } else {
        // Labels and names are the disk's bytes: never let them drive the terminal.
        let text = report.to_string();
        let lines: Vec<_> = text.trim_end().lines().map(escape_control).collect();
        lines.join("\n")
    };
    emit(&text)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}
