//! Reads secrets: key files taken exactly, stdin, or a no-echo tty prompt. Never argv or env.
use super::KeyArgs;
use crate::error::{Error, Result};
use crate::secret::{Passphrase, SecretBytes};
use std::io::{IsTerminal, Read};
use std::path::Path;
use zeroize::Zeroize;

/// cryptsetup's default key file size limit (8 MiB).
const MAX_KEY_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads the key as cryptsetup does. `new` asks twice on a tty and refuses an empty key.
/// `--keyfile-offset`/`--keyfile-size` cut the key file (or "-") as cryptsetup does;
/// `--recovery-key` normalises what was read into the canonical recovery key.
pub fn read(key: &KeyArgs, what_for: &str, new: bool) -> Result<Passphrase> {
    let pass = match key.key_file.as_deref() {
        Some(p) if p == Path::new("-") => {
            let all = read_all(&mut std::io::stdin().lock(), "stdin", key)?;
            cut(all, key, "stdin")?
        }
        Some(p) => cut(read_key_file(p, key)?, key, &p.display().to_string())?,
        None if std::io::stdin().is_terminal() && key.recovery_key => {
            prompt_text(&format!("Enter recovery key for {what_for}: "))?
        }
        None if std::io::stdin().is_terminal() => prompt(what_for, new)?,
        None => read_line_stdin()?,
    };
    let pass = if key.recovery_key {
        normalize_recovery_key(pass.expose_secret())?
    } else {
        pass
    };
    if new && pass.expose_secret().is_empty() {
        return Err(Error::Usage("refusing an empty passphrase".into()));
    }
    Ok(pass)
}

/// Applies --keyfile-offset and --keyfile-size to what `read_all` returned (offset included).
fn cut(all: Passphrase, key: &KeyArgs, name: &str) -> Result<Passphrase> {
    let offset = key.keyfile_offset.unwrap_or(0);
    if offset == 0 && key.keyfile_size.is_none() {
        return Ok(all);
    }
    let bytes = all.expose_secret();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let rest = &bytes[start..];
    let taken = match key.keyfile_size {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if rest.len() < n {
                // cryptsetup: "Cannot read requested amount of data."
                return Err(Error::Usage(format!(
                    "key from {name} has {} bytes after offset {offset}, fewer than --keyfile-size {n}",
                    rest.len()
                )));
            }
            &rest[..n]
        }
        None => rest,
    };
    Ok(Passphrase(SecretBytes::from_slice(taken)))
}

fn read_all(src: &mut impl Read, name: &str, key: &KeyArgs) -> Result<Passphrase> {
    let mut buf = Vec::new();
    let limit = key
        .keyfile_size
        .unwrap_or(MAX_KEY_FILE_BYTES)
        .min(MAX_KEY_FILE_BYTES)
        .saturating_add(key.keyfile_offset.unwrap_or(0));
    // With --keyfile-size the rest of the file is simply not read (cryptsetup); without it a
    // key longer than the cap is refused rather than cut.
    let extra = u64::from(key.keyfile_size.is_none());
    let res = src
        .take(limit.saturating_add(extra))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("cannot read the key from {name}"), e));
    let secret = SecretBytes::from_vec(buf);
    res?;
    if secret.len() as u64 > limit {
        return Err(Error::Usage(format!(
            "key from {name} is larger than 8 MiB"
        )));
    }
    Ok(Passphrase(secret))
}

fn read_key_file(path: &Path, key: &KeyArgs) -> Result<Passphrase> {
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
    if let Some(warning) = meta.and_then(|m| key_file_mode_warning(path, &m)) {
        log::warn!("{warning}");
    }
    read_all(&mut f, &path.display().to_string(), key)
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

/// One line from a non-tty stdin, trailing newline removed (cryptsetup's rule).
fn read_line_stdin() -> Result<Passphrase> {
    let mut all = read_all(&mut std::io::stdin().lock(), "stdin", &KeyArgs::default())?;
    let bytes = all.0.expose_secret();
    let end = bytes
        .iter()
        .position(|&c| c == b'\n')
        .unwrap_or(bytes.len());
    if end == bytes.len() {
        return Ok(all);
    }
    let line = SecretBytes::from_slice(&bytes[..end]);
    all.0.expose_secret_mut().zeroize();
    Ok(Passphrase(line))
}

fn prompt_text(text: &str) -> Result<Passphrase> {
    let mut s = rpassword::prompt_password(text)
        .map_err(|e| Error::io("cannot read the passphrase from the terminal", e))?;
    let p = Passphrase(SecretBytes::from_slice(s.as_bytes()));
    s.zeroize();
    Ok(p)
}

/// ModHex (YubiKey's alphabet): 16 letters that sit on the same keys in QWERTY, QWERTZ and
/// AZERTY and contain no look-alikes (0/O, 1/l/I), so a key read aloud or typed on a foreign
/// keyboard comes back right. systemd-cryptenroll uses the same alphabet and shape.
const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";
/// Recovery key shape: 8 groups of 8 ModHex characters = 64 x 4 bits = 256 bits of entropy.
const RECOVERY_GROUPS: usize = 8;
const RECOVERY_GROUP_LEN: usize = 8;

/// A new random recovery key in canonical form: `xxxxxxxx-xxxxxxxx-...` (8 groups of 8 ModHex
/// characters, 71 ASCII bytes). These exact bytes are what the keyslot KDF sees, so
/// `cryptsetup open --test-passphrase` accepts the printed string as typed.
pub fn generate_recovery_key() -> Result<Passphrase> {
    let mut raw = SecretBytes::random(RECOVERY_GROUPS * RECOVERY_GROUP_LEN / 2)
        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let mut chars = SecretBytes::zeroed(RECOVERY_GROUPS * RECOVERY_GROUP_LEN);
    for (pair, b) in chars
        .expose_secret_mut()
        .chunks_exact_mut(2)
        .zip(raw.expose_secret())
    {
        pair[0] = MODHEX[usize::from(b >> 4)];
        pair[1] = MODHEX[usize::from(b & 0x0f)];
    }
    raw.expose_secret_mut().zeroize();
    normalize_recovery_key(chars.expose_secret())
}

/// The canonical recovery key from what a user typed: spaces, tabs, newlines and dashes
/// dropped, upper case folded, then dashes put back every 8 characters. Exit 1 when it is not
/// 64 ModHex characters.
pub fn normalize_recovery_key(typed: &[u8]) -> Result<Passphrase> {
    let want = RECOVERY_GROUPS * RECOVERY_GROUP_LEN;
    let mut out = SecretBytes::zeroed(RECOVERY_GROUPS * (RECOVERY_GROUP_LEN + 1) - 1);
    let dst = out.expose_secret_mut();
    let mut chars = 0usize;
    let mut i = 0usize;
    for &c in typed {
        if c.is_ascii_whitespace() || c == b'-' {
            continue;
        }
        let c = c.to_ascii_lowercase();
        if !MODHEX.contains(&c) || chars == want {
            return Err(Error::Usage(format!(
                "not a recovery key: expected {RECOVERY_GROUPS} groups of {RECOVERY_GROUP_LEN} letters from {}",
                String::from_utf8_lossy(MODHEX)
            )));
        }
        if chars > 0 && chars.is_multiple_of(RECOVERY_GROUP_LEN) {
            dst[i] = b'-';
            i += 1;
        }
        dst[i] = c;
        i += 1;
        chars += 1;
    }
    if chars != want {
        return Err(Error::Usage(format!(
            "not a recovery key: {chars} letters, expected {want} ({RECOVERY_GROUPS} groups of {RECOVERY_GROUP_LEN})"
        )));
    }
    Ok(Passphrase(out))
}

fn prompt(what_for: &str, confirm: bool) -> Result<Passphrase> {
    let ask = |text: &str| -> Result<Passphrase> {
        let mut s = rpassword::prompt_password(text)
            .map_err(|e| Error::io("cannot read the passphrase from the terminal", e))?;
        let p = Passphrase(SecretBytes::from_slice(s.as_bytes()));
        s.zeroize();
        Ok(p)
    };
    let first = ask(&format!("Enter passphrase for {what_for}: "))?;
    if confirm {
        let second = ask("Verify passphrase: ")?;
        if !first.0.ct_eq(second.expose_secret()) {
            return Err(Error::Usage("passphrases do not match".into()));
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_key_shape_and_normalisation() {
        let k = generate_recovery_key().expect("random");
        let text = std::str::from_utf8(k.expose_secret())
            .expect("ascii")
            .to_string();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 8, "{text}");
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 8 && g.bytes().all(|c| MODHEX.contains(&c)))
        );
        let messy = format!(" {} \n", text.to_uppercase().replace('-', " "));
        let n = normalize_recovery_key(messy.as_bytes()).expect("normalises");
        assert_eq!(n.expose_secret(), k.expose_secret());
        let joined = text.replace('-', "");
        let n = normalize_recovery_key(joined.as_bytes()).expect("normalises");
        assert_eq!(n.expose_secret(), k.expose_secret());
        assert!(normalize_recovery_key(b"abc").is_err());
        assert!(normalize_recovery_key(format!("{joined}c").as_bytes()).is_err());
        assert!(
            normalize_recovery_key(joined.replace('c', "a").as_bytes()).is_err()
                || !joined.contains('c')
        );
    }
}
