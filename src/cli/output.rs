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
