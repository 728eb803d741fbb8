//! The parent/child wire format (docs/daemon-protocol.md): the request on the child's stdin
//! (`ServeSpec` as one JSON line, then the key as a little-endian u32 length and raw bytes)
//! and the report lines on its stdout (`warn <message>`, then `ok` or
//! `err <exit code> <kind> <message>`). Parent and child are the same binary, so the format
//! may change between versions.
use crate::error::{Error, ErrorKind, Result};
use crate::geometry::Segment;
use crate::secret::{SecretBytes, VolumeKey};
use log::warn;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;

/// Upper bounds on the request, so a confused writer cannot make the daemon allocate freely.
const MAX_SPEC_BYTES: usize = 64 << 10;
const MAX_KEY_BYTES: usize = 512;

/// Everything the daemon needs besides the key; no secrets in here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeSpec {
    /// The LUKS backing file (or any file holding the encrypted segment).
    pub backing: PathBuf,
    /// The plaintext file to mount over; created (mode 0600) if missing, removed at close.
    pub plain: PathBuf,
    /// Where the data segment lies in `backing`.
    pub segment: Segment,
    /// Open the backing file read-only and refuse writes with EROFS.
    pub read_only: bool,
    /// Serve in the calling process until unmounted instead of detaching a daemon.
    pub foreground: bool,
    /// Let other users (and root, for a user's mount) reach PLAIN, subject to its mode.
    pub allow_other: bool,
    /// What unlocked the volume, e.g. "keyslot 0", for status output.
    pub unlocked_by: String,
    /// The segment runs to the end of the backing file (LUKS2 "dynamic", LUKS1): SIGUSR1
    /// makes the daemon grow PLAIN to the file's new length (online `resize`).
    #[serde(default)]
    pub grow_with_file: bool,
    /// Serve FUSE fallocate PUNCH_HOLE/ZERO_RANGE as holes in the backing (open/mount
    /// `--allow-discards`, or the LUKS2 header's persistent "allow-discards" flag); when
    /// false they are refused with EOPNOTSUPP.
    #[serde(default)]
    pub allow_discards: bool,
    /// The segment is a BitLocker volume (its window in `backing`), served read-only; the
    /// key is its FVEK (`crate::bitlocker`).
    #[serde(default)]
    pub bitlocker: bool,
}

/// Writes the request: the spec as one JSON line, then the key as a little-endian u32
/// length and the raw bytes.
pub(super) fn send_request(
    stdin: &mut impl Write,
    spec: &ServeSpec,
    key: &VolumeKey,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(spec).map_err(io::Error::other)?;
    line.push(b'\n');
    stdin.write_all(&line)?;
    let secret = key.expose_secret();
    let len = u32::try_from(secret.len()).map_err(io::Error::other)?;
    stdin.write_all(&len.to_le_bytes())?;
    // Straight from locked memory into the pipe: no intermediate copy of the key.
    stdin.write_all(secret)?;
    stdin.flush()
}

/// Reads the request from `input` one byte at a time, without a buffer, so no key byte lands
/// in memory that is neither locked nor wiped (the daemon passes fd 0 unbuffered).
pub(super) fn read_request(input: &mut impl Read) -> Result<(ServeSpec, VolumeKey)> {
    let bad = |what: &str| Error::Usage(format!("daemon: malformed request ({what})"));
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        input
            .read_exact(&mut byte)
            .map_err(|e| Error::io("daemon: reading the request", e))?;
        if byte[0] == b'\n' {
            break;
        }
        if line.len() >= MAX_SPEC_BYTES {
            return Err(bad("spec too long"));
        }
        line.push(byte[0]);
    }
    let spec: ServeSpec = serde_json::from_slice(&line).map_err(|_| bad("spec"))?;
    let mut len = [0u8; 4];
    input
        .read_exact(&mut len)
        .map_err(|e| Error::io("daemon: reading the key", e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 || len > MAX_KEY_BYTES {
        return Err(bad("key length"));
    }
    let mut key = SecretBytes::zeroed(len);
    input
        .read_exact(key.expose_secret_mut())
        .map_err(|e| Error::io("daemon: reading the key", e))?;
    Ok((spec, VolumeKey(key)))
}

/// The daemon's side of the readiness pipe (its stdout).
pub(super) struct Readiness {
    /// A report line was sent: any later error goes to the log, not the pipe.
    pub(super) reported: bool,
}

impl Readiness {
    /// Passes a warning to the parent, which logs it; the final report is still to come.
    pub(super) fn note(&self, warning: &str) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "warn {}", one_line(warning)).and_then(|()| out.flush());
    }

    /// Writes one report line; false if the parent is no longer reading.
    pub(super) fn send(&mut self, line: &str) -> bool {
        self.reported = true;
        let mut out = io::stdout().lock();
        writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
    }
}

/// What the daemon reported on its readiness pipe.
pub(super) enum Report {
    /// `ok`: the mount is ready.
    Ready,
    /// `err <exit code> <kind> <message>`: the daemon failed; the error as it will be shown.
    Failed(Error),
    /// The pipe closed without a report: the daemon died (its exit status and log say why).
    Vanished,
}

/// Reads the daemon's one-line report, skipping any other line (a test harness may print).
pub(super) fn read_report(stdout: impl Read) -> Report {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Report::Vanished,
            Ok(_) => {}
        }
        let text = line.trim_end();
        if let Some(warning) = text.strip_prefix("warn ") {
            warn!("{warning}");
            continue;
        }
        if text == "ok" {
            return Report::Ready;
        }
        if let Some(rest) = text.strip_prefix("err ") {
            return Report::Failed(error_from_report(rest));
        }
    }
}

/// The `err` report line for `e`: `err <exit code> <kind> <message>`, where the kind is
/// `ErrorKind::name()` and the message is `Error::message()` on one line.
pub(super) fn error_line(e: &Error) -> String {
    format!(
        "err {} {} {}",
        e.exit_code(),
        e.kind().name(),
        one_line(&e.message())
    )
}

/// Rebuilds the daemon's Error from the rest of an `err` line (`<exit code> <kind>
/// <message>`): the kind decides the variant and so the exit code, and the message is shown
/// as the daemon would have shown it. The exit code is informative only; an unknown kind is a
/// device error.
fn error_from_report(rest: &str) -> Error {
    let mut fields = rest.splitn(3, ' ');
    let _code = fields.next();
    let kind = fields.next().unwrap_or_default();
    let message = fields.next().unwrap_or_default();
    match ErrorKind::from_name(kind) {
        Some(kind) => Error::new(kind, message),
        None => Error::Device(format!("{kind} {message}").trim().to_string()),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServeSpec {
        ServeSpec {
            backing: "/b".into(),
            plain: "/p".into(),
            segment: Segment {
                data_offset_bytes: 0,
                data_size_bytes: 4096,
                sector_size: 512,
                iv_tweak: 0,
            },
            read_only: true,
            foreground: false,
            allow_other: false,
            unlocked_by: "test".into(),
            grow_with_file: false,
            allow_discards: false,
            bitlocker: false,
        }
    }

    #[test]
    fn allow_discards_round_trips_and_defaults_to_off() {
        let mut on = spec();
        on.allow_discards = true;
        let line = serde_json::to_string(&on).unwrap();
        let back: ServeSpec = serde_json::from_str(&line).unwrap();
        assert!(back.allow_discards);
        // A request without the field (an older parent) refuses discards.
        let mut v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v.as_object_mut().unwrap().remove("allow_discards");
        let old: ServeSpec = serde_json::from_value(v).unwrap();
        assert!(!old.allow_discards);
    }

    #[test]
    fn report_lines_parse() {
        assert!(matches!(read_report(&b"noise\nok\n"[..]), Report::Ready));
        assert!(matches!(
            read_report(&b"warn keys not locked\nok\n"[..]),
            Report::Ready
        ));
        match read_report(&b"running 1 test\nerr 5 busy disk.img is busy\n"[..]) {
            Report::Failed(e) => {
                assert_eq!(
                    (e.exit_code(), e.to_string()),
                    (5, "disk.img is busy".into())
                )
            }
            _ => panic!("expected Failed"),
        }
        assert!(matches!(read_report(&b""[..]), Report::Vanished));
        assert!(matches!(read_report(&b"partial"[..]), Report::Vanished));
    }

    #[test]
    fn reported_errors_keep_kind_and_message() {
        for e in [
            Error::Busy("x is busy".into()),
            Error::Permission("cannot open x".into()),
            Error::NoMemory("argon2 needs 1 GiB".into()),
            Error::Usage("u".into()),
            Error::Device("d".into()),
            Error::Vault("vault said no".into()),
            // A message that happens to start like a Display prefix is not stripped.
            Error::Device("permission denied: is not a prefix here".into()),
        ] {
            let line = error_line(&e);
            let Report::Failed(back) = read_report(format!("{line}\n").as_bytes()) else {
                panic!("{line} did not parse");
            };
            assert_eq!(back.exit_code(), e.exit_code(), "{line}");
            assert_eq!(back.to_string(), e.to_string(), "{line}");
        }
        // An I/O error travels as its kind and Display text; the parent shows it with the
        // kind's prefix, as it always did.
        let io = Error::io(
            "cannot open /x",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let Report::Failed(back) = read_report(format!("{}\n", error_line(&io)).as_bytes()) else {
            panic!()
        };
        assert_eq!(back.exit_code(), 2);
        assert_eq!(back.to_string(), format!("permission denied: {io}"));
        let multi = error_line(&Error::Usage("a\nb".into()));
        assert_eq!(multi, "err 1 usage a b");
        let Report::Failed(e) = read_report(&b"err 77 martian d\n"[..]) else {
            panic!()
        };
        assert_eq!(e.exit_code(), 4);
    }

    #[test]
    fn request_round_trips() {
        let spec = spec();
        let key = VolumeKey(SecretBytes::from_slice(&[7u8; 64]));
        let mut wire = Vec::new();
        send_request(&mut wire, &spec, &key).unwrap();
        let nl = wire.iter().position(|&b| b == b'\n').unwrap();
        assert_eq!(&wire[nl + 1..nl + 5], &64u32.to_le_bytes());
        let (back, key) = read_request(&mut &wire[..]).unwrap();
        assert_eq!(back.segment, spec.segment);
        assert_eq!((back.plain, back.read_only), (spec.plain, true));
        assert_eq!(key.expose_secret(), &[7u8; 64]);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let key = VolumeKey(SecretBytes::from_slice(&[7u8; 64]));
        let mut wire = Vec::new();
        send_request(&mut wire, &spec(), &key).unwrap();
        // Truncated key, zero and oversized key lengths, a bad spec, no newline at all.
        let nl = wire.iter().position(|&b| b == b'\n').unwrap();
        assert!(read_request(&mut &wire[..wire.len() - 1]).is_err());
        let mut zero = wire[..=nl].to_vec();
        zero.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(read_request(&mut &zero[..]).unwrap_err().exit_code(), 1);
        let mut big = wire[..=nl].to_vec();
        big.extend_from_slice(&(MAX_KEY_BYTES as u32 + 1).to_le_bytes());
        assert_eq!(read_request(&mut &big[..]).unwrap_err().exit_code(), 1);
        assert_eq!(
            read_request(&mut &b"{not json}\n"[..])
                .unwrap_err()
                .exit_code(),
            1
        );
        let long = vec![b'x'; MAX_SPEC_BYTES + 1];
        assert_eq!(read_request(&mut &long[..]).unwrap_err().exit_code(), 1);
    }
}
