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
pub fn read(key: &KeyArgs, what_for: &str, new: bool) -> Result<Passphrase> {
    let pass = match key.key_file.as_deref() {
        Some(p) if p == Path::new("-") => read_all(&mut std::io::stdin().lock(), "stdin")?,
        Some(p) => read_key_file(p)?,
        None if std::io::stdin().is_terminal() => prompt(what_for, new)?,
        None => read_line_stdin()?,
    };
    if new && pass.expose_secret().is_empty() {
        return Err(Error::Usage("refusing an empty passphrase".into()));
    }
    Ok(pass)
}

fn read_all(src: &mut impl Read, name: &str) -> Result<Passphrase> {
    let mut buf = Vec::new();
    let res = src
        .take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("cannot read the key from {name}"), e));
    let secret = SecretBytes::from_vec(buf);
    res?;
    if secret.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(Error::Usage(format!(
            "key from {name} is larger than 8 MiB"
        )));
    }
    Ok(Passphrase(secret))
}

fn read_key_file(path: &Path) -> Result<Passphrase> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        let what = format!("cannot open key file {}", path.display());
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(what),
            _ => Error::Usage(format!("{what}: {}", plain_io(&e))),
        }
    })?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::Usage(format!(
            "key file {} is a directory",
            path.display()
        )));
    }
    read_all(&mut f, &path.display().to_string())
}

/// One line from a non-tty stdin, trailing newline removed (cryptsetup's rule).
fn read_line_stdin() -> Result<Passphrase> {
    let mut all = read_all(&mut std::io::stdin().lock(), "stdin")?;
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

/// An io::Error without the "(os error N)" suffix, for one-line messages.
pub fn plain_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
