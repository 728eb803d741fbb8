//! Where a key comes from and how its bytes are read: key files taken exactly (cryptsetup's
//! `--key-file`, `--keyfile-offset`, `--keyfile-size`), all of stdin, one line of a piped
//! stdin, or the terminal through a [`Prompt`] the caller implements. Nothing here touches a
//! terminal; every read lands in zeroizing memory.
use crate::error::{Error, Result};
use crate::recovery_key;
use crate::secret::{Passphrase, SecretBytes};
use std::io::Read;
use std::path::{Path, PathBuf};

/// cryptsetup's default key file size limit (8 MiB).
pub const MAX_KEY_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Where the key of an unlock (or a new key) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file, bytes taken exactly: skip `offset` bytes, then take `size` bytes (fewer is
    /// an error) or everything up to 8 MiB (more is an error).
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Bytes to skip (cryptsetup --keyfile-offset).
        offset: u64,
        /// Bytes to take (cryptsetup --keyfile-size).
        size: Option<u64>,
    },
    /// All of stdin (`--key-file -`), cut as a key file is.
    Stdin {
        /// Bytes to skip.
        offset: u64,
        /// Bytes to take.
        size: Option<u64>,
    },
    /// One line of a stdin that is not a terminal, trailing newline removed (cryptsetup's rule
    /// without --key-file). An empty pipe here is "no passphrase" for the vault-first order.
    StdinLine,
    /// Ask at the terminal through [`Prompt::passphrase`] (or [`Prompt::recovery_key`]).
    Terminal,
    /// Vault tokens only (`--token-only`): never read a passphrase.
    VaultOnly,
    /// The raw volume key in this file (`--volume-key-file`, as cryptsetup): checked against
    /// the header's digest and used directly, no keyslot and no vault tried
    /// (`unlock::volume_key`). It is no passphrase: [`read_key`] refuses it.
    VolumeKeyFile(PathBuf),
}

/// A key to read: its source, and whether it is a recovery key (then what was read is
/// normalised to the canonical recovery key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Where the bytes come from.
    pub source: KeySource,
    /// The key is a recovery key (`add-recovery-key`): spaces and dashes normalised.
    pub recovery_key: bool,
}

impl Key {
    /// A key read from `source`, taken as it is.
    pub fn new(source: KeySource) -> Key {
        Key {
            source,
            recovery_key: false,
        }
    }

    /// True when this key would be read from stdin (an explicit "-" or a pipe).
    pub fn from_stdin(&self) -> bool {
        matches!(self.source, KeySource::Stdin { .. } | KeySource::StdinLine)
    }
}

/// The user interface an unlock may need: the terminal prompts and stdin. The CLI implements
/// it for the terminal and pipes; tests script it.
pub trait Prompt {
    /// Asks for a passphrase for `what` (a volume name or "the new key of X"); with `confirm`,
    /// twice, and the two must match (exit 1 otherwise).
    fn passphrase(&self, what: &str, confirm: bool) -> Result<Passphrase>;
    /// Asks for a recovery key for `what`, as typed (the caller normalises it).
    fn recovery_key(&self, what: &str) -> Result<Passphrase>;
    /// Standard input, for [`KeySource::Stdin`] and [`KeySource::StdinLine`].
    fn stdin(&self) -> Box<dyn Read + '_>;
}

/// Reads `key` as cryptsetup does. `new` asks twice on a terminal and refuses an empty key.
/// `what_for` names the volume in prompts. [`KeySource::VaultOnly`] has no key to read: that
/// is the caller's error to report, here a usage error.
pub fn read_key(key: &Key, prompt: &dyn Prompt, what_for: &str, new: bool) -> Result<Passphrase> {
    let pass = match &key.source {
        KeySource::Stdin { offset, size } => {
            read_capped(&mut *prompt.stdin(), "stdin", *offset, *size, 0)?
        }
        KeySource::KeyFile { path, offset, size } => read_key_file(path, *offset, *size)?,
        KeySource::Terminal if key.recovery_key => prompt.recovery_key(what_for)?,
        KeySource::Terminal => prompt.passphrase(what_for, new)?,
        KeySource::StdinLine => read_line(&mut *prompt.stdin())?,
        KeySource::VaultOnly => {
            return Err(Error::Usage(format!(
                "--token-only reads no passphrase for {what_for}"
            )));
        }
        KeySource::VolumeKeyFile(_) => {
            return Err(Error::Usage(format!(
                "a volume key file is not a passphrase for {what_for}"
            )));
        }
    };
    let pass = if key.recovery_key {
        recovery_key::normalize(pass.expose_secret())?
    } else {
        pass
    };
    if new && pass.expose_secret().is_empty() {
        return Err(Error::Usage("refusing an empty passphrase".into()));
    }
    Ok(pass)
}

/// Reads all of `src` into zeroizing memory, at most `max` bytes (one more tells "larger").
/// `hint` (a file's length) sizes the first buffer; a larger buffer, when needed, replaces
/// the old one, which is wiped: no generation of the key is left in freed memory.
fn read_secret(src: &mut dyn Read, max: usize, hint: usize) -> std::io::Result<SecretBytes> {
    let mut buf = SecretBytes::zeroed(hint.min(max));
    let mut n = 0usize;
    loop {
        if n == buf.len() {
            if n >= max {
                break;
            }
            let mut bigger = SecretBytes::zeroed(n.saturating_mul(2).max(4096).min(max));
            bigger.expose_secret_mut()[..n].copy_from_slice(&buf.expose_secret()[..n]);
            buf = bigger;
        }
        match src.read(&mut buf.expose_secret_mut()[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(SecretBytes::from_slice(&buf.expose_secret()[..n]))
}

/// Skips `offset` bytes of `src` (into a wiped scratch buffer), fewer at end of input.
fn skip(src: &mut dyn Read, mut offset: u64) -> std::io::Result<()> {
    let mut scratch = SecretBytes::zeroed(64 * 1024);
    while offset > 0 {
        let want = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(scratch.len());
        match src.read(&mut scratch.expose_secret_mut()[..want]) {
            Ok(0) => break,
            Ok(k) => offset -= k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A key from `src` cut as cryptsetup cuts a key file: skip `offset`, then exactly `size`
/// bytes (fewer is an error; the rest is not read), or everything up to 8 MiB (more is an
/// error rather than a silent cut).
fn read_capped(
    src: &mut dyn Read,
    name: &str,
    offset: u64,
    size: Option<u64>,
    hint: u64,
) -> Result<Passphrase> {
    let io = |e| Error::io(format!("cannot read the key from {name}"), e);
    skip(src, offset).map_err(io)?;
    let limit = size.unwrap_or(MAX_KEY_FILE_BYTES).min(MAX_KEY_FILE_BYTES);
    // Without --keyfile-size one byte more than the cap tells a key that is too long.
    let max = limit.saturating_add(u64::from(size.is_none()));
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let hint = usize::try_from(hint.saturating_sub(offset).saturating_add(1)).unwrap_or(max);
    let secret = read_secret(src, max, hint).map_err(io)?;
    if secret.len() as u64 > limit {
        return Err(Error::Usage(format!(
            "key from {name} is larger than 8 MiB"
        )));
    }
    if let Some(n) = size
        && (secret.len() as u64) < n
    {
        // cryptsetup: "Cannot read requested amount of data."
        return Err(Error::Usage(format!(
            "key from {name} has {} bytes after offset {offset}, fewer than --keyfile-size {n}",
            secret.len()
        )));
    }
    Ok(Passphrase::from_secret(secret))
}

fn read_key_file(path: &Path, offset: u64, size: Option<u64>) -> Result<Passphrase> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        let what = format!("cannot open key file {}", path.display());
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(what),
            _ => Error::Usage(format!("{what}: {}", crate::error::plain_io(&e))),
        }
    })?;
    let meta = f.metadata().ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "key file {} is a directory",
            path.display()
        )));
    }
    if let Some(warning) = meta.as_ref().and_then(|m| key_file_mode_warning(path, m)) {
        log::warn!("{warning}");
    }
    let hint = meta.filter(|m| m.is_file()).map_or(0, |m| m.len());
    read_capped(&mut f, &path.display().to_string(), offset, size, hint)
}

/// The one-line warning for a regular key file that users other than its owner may read,
/// as ssh warns about private keys ("UNPROTECTED PRIVATE KEY FILE"); we still use it.
fn key_file_mode_warning(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    (meta.is_file() && mode & 0o044 != 0).then(|| {
        format!(
            "key file {} is readable by group or others (mode {:04o}): chmod 600 it",
            path.display(),
            mode & 0o7777
        )
    })
}

/// One line from a non-terminal stdin, trailing newline removed (cryptsetup's rule).
fn read_line(src: &mut dyn Read) -> Result<Passphrase> {
    let all = read_capped(src, "stdin", 0, None, 0)?;
    let bytes = all.expose_secret();
    match bytes.iter().position(|&c| c == b'\n') {
        Some(end) => Ok(Passphrase::from_slice(&bytes[..end])),
        None => Ok(all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(data: &[u8], offset: u64, size: Option<u64>) -> Result<Vec<u8>> {
        read_capped(&mut &data[..], "t", offset, size, 0).map(|p| p.expose_secret().to_vec())
    }

    #[test]
    fn key_files_are_cut_as_cryptsetup_cuts_them() {
        let data: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        assert_eq!(cut(&data, 0, None).unwrap(), data);
        assert_eq!(cut(&data, 3, Some(4)).unwrap(), data[3..7]);
        assert_eq!(cut(&data, 70_000, None).unwrap(), data[70_000..]);
        assert_eq!(cut(&data, 300_000, None).unwrap(), b"");
        let short = cut(&data, 199_990, Some(20)).unwrap_err().to_string();
        assert_eq!(
            short,
            "key from t has 10 bytes after offset 199990, fewer than --keyfile-size 20"
        );
        let big = vec![1u8; MAX_KEY_FILE_BYTES as usize + 1];
        assert_eq!(
            cut(&big, 0, None).unwrap_err().to_string(),
            "key from t is larger than 8 MiB"
        );
        assert_eq!(
            cut(&big, 1, None).unwrap().len(),
            MAX_KEY_FILE_BYTES as usize
        );
        assert_eq!(cut(&big, 0, Some(5)).unwrap(), [1u8; 5]);
        let mut line = &b"pass word\nrest"[..];
        assert_eq!(read_line(&mut line).unwrap().expose_secret(), b"pass word");
    }

    /// Growing the read buffer wipes every generation: the probe sees the first (too small)
    /// buffer freed all-zero.
    #[test]
    fn growing_reads_leave_no_copy() {
        use crate::sys::dealloc_probe::{freed_zeroed, watch};
        let _probe = crate::secret::PROBE_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        struct Watching<'a>(&'a [u8], bool);
        impl Read for Watching<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if !self.1 {
                    // The first buffer: watch it, it is replaced by a larger one.
                    watch(buf.as_ptr(), buf.len());
                    self.1 = true;
                }
                let n = buf.len().min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = vec![0x5au8; 10_000];
        let got = read_secret(&mut Watching(&data, false), 1 << 20, 16).unwrap();
        assert_eq!(got.expose_secret(), &data[..]);
        assert_eq!(
            freed_zeroed(),
            Some(true),
            "the outgrown buffer was not wiped"
        );
    }
}
