//! The terminal side of reading secrets: the no-echo prompt and stdin behind
//! `unlock::Prompt`, and `KeyArgs` turned into an `unlock::Key`. Key files, cutting and the
//! unlock order live in `crate::unlock`. Never argv or env.
use super::KeyArgs;
use crate::error::{Error, Result};
use crate::secret::Passphrase;
use crate::unlock::{self, Key, KeySource, Prompt};
use std::io::{IsTerminal, Read};
use std::path::Path;
use zeroize::Zeroize;

/// The terminal and the process's stdin.
pub struct Terminal;

impl Prompt for Terminal {
    fn passphrase(&self, what: &str, confirm: bool) -> Result<Passphrase> {
        let first = ask(&format!("Enter passphrase for {what}: "))?;
        if confirm {
            let second = ask("Verify passphrase: ")?;
            if !first.ct_eq(&second) {
                return Err(Error::Usage("passphrases do not match".into()));
            }
        }
        Ok(first)
    }

    fn recovery_key(&self, what: &str) -> Result<Passphrase> {
        ask(&format!("Enter recovery key for {what}: "))
    }

    fn stdin(&self) -> Box<dyn Read + '_> {
        Box::new(std::io::stdin().lock())
    }
}

/// One no-echo line from the terminal. rpassword hands back a `String`, wiped here after the
/// copy into locked memory (its internal buffers are out of our reach).
fn ask(text: &str) -> Result<Passphrase> {
    let mut s = rpassword::prompt_password(text)
        .map_err(|e| Error::io("cannot read the passphrase from the terminal", e))?;
    let p = Passphrase::from_slice(s.as_bytes());
    s.zeroize();
    Ok(p)
}

/// Where `--key-file`, `--keyfile-offset`, `--keyfile-size` and stdin say the key comes from:
/// "-" is all of stdin, no key file is the terminal, or one line of stdin when it is a pipe.
pub fn source(key: &KeyArgs) -> KeySource {
    let offset = key.keyfile_offset.unwrap_or(0);
    let size = key.keyfile_size;
    match key.key_file.as_deref() {
        Some(p) if p == Path::new("-") => KeySource::Stdin { offset, size },
        Some(p) => KeySource::KeyFile {
            path: p.to_path_buf(),
            offset,
            size,
        },
        None if std::io::stdin().is_terminal() => KeySource::Terminal,
        None => KeySource::StdinLine,
    }
}

/// The key to read (a new key, or an explicit one): `--token-only` plays no part.
pub fn key(args: &KeyArgs) -> Key {
    Key {
        source: source(args),
        recovery_key: args.recovery_key,
    }
}

/// The key of an unlock in the vault-first order: `--token-only` is `KeySource::VaultOnly`.
pub fn unlock_key(args: &KeyArgs) -> Key {
    let mut k = key(args);
    if args.vault.token_only {
        k.source = KeySource::VaultOnly;
    }
    k
}

/// Reads the key as cryptsetup does. `new` asks twice on a tty and refuses an empty key.
/// `--keyfile-offset`/`--keyfile-size` cut the key file (or "-") as cryptsetup does;
/// `--recovery-key` normalises what was read into the canonical recovery key.
pub fn read(key: &KeyArgs, what_for: &str, new: bool) -> Result<Passphrase> {
    unlock::read_key(&self::key(key), &Terminal, what_for, new)
}

/// The key of an unlock: the raw volume key in `volume_key_file` when given
/// (`--volume-key-file`), else [`unlock_key`].
pub fn unlock_key_or_volume_key(args: &KeyArgs, volume_key_file: Option<&Path>) -> Key {
    match volume_key_file {
        Some(p) => Key::new(KeySource::VolumeKeyFile(p.to_path_buf())),
        None => unlock_key(args),
    }
}

/// Asks `question` on the terminal and accepts only "YES" (as cryptsetup does); without a
/// terminal it is exit 1 with `no_terminal`, and any other answer exit 1 with `refused`.
pub fn confirm_yes(question: &str, no_terminal: String, refused: String) -> Result<()> {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::Usage(no_terminal));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("cannot read the confirmation", e))?;
    if line.trim_end_matches(['\n', '\r']) != "YES" {
        return Err(Error::Usage(refused));
    }
    Ok(())
}

/// cryptsetup's question before a volume key dump; YES on a terminal, else exit 1 (without a
/// terminal, `--batch`).
pub fn confirm_volume_key_dump() -> Result<()> {
    confirm_yes(
        "\nWARNING!\n========\nThe header dump with volume key is sensitive information\nthat allows access to encrypted partition without a passphrase.\nThis dump should be stored encrypted in a safe place.\n\nAre you sure? (Type 'yes' in capital letters): ",
        "dump --dump-volume-key needs confirmation on a terminal: --batch to dump without asking"
            .into(),
        "volume key dump not confirmed".into(),
    )
}
