//! Writing what a verb prints: one `emit` for stdout, and the `--json`/text switch.
use crate::error::{Error, Result};
use crate::report::Report;
use std::io::Write;

/// Writes `text` and a newline to stdout; a closed pipe (`| head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}

/// Prints `report` as pretty JSON with `--json`, else as its text.
pub fn print(report: &impl Report, json: bool) -> Result<()> {
    emit(&if json {
        report.to_json()
    } else {
        report.to_text()
    })
}

/// Prints a new recovery key once, on stdout alone, so `> file` or a pipe captures exactly it.
pub fn print_recovery_key(key: &crate::secret::Passphrase) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(key.expose_secret())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("cannot print the recovery key", e))
}
