//! `--key-file` as a key-chain source: a BEK file is the passphrase byte for byte (ADE's 172
//! base64 characters are never decoded, ade-facts §0.1), read as cryptsetup reads key files.
use super::CandidateKey;
use crate::error::Result;
use crate::unlock::key::{Key, KeySource, read_key};
use std::path::Path;

/// The key file at `path` ("-": all of stdin) as a candidate labelled `key-file <path>`.
pub fn read(path: &Path) -> Result<CandidateKey> {
    let source = if path == Path::new("-") {
        KeySource::Stdin {
            offset: 0,
            size: None,
        }
    } else {
        KeySource::KeyFile {
            path: path.to_path_buf(),
            offset: 0,
            size: None,
        }
    };
    let pass = read_key(&Key::new(source), &StdinOnly, &super::shown(path), false)?;
    Ok(CandidateKey {
        label: format!("key-file {}", super::shown(path)),
        bytes: pass.0,
    })
}

/// Key files need no prompt; "-" reads the process's stdin.
struct StdinOnly;

impl crate::unlock::key::Prompt for StdinOnly {
    fn passphrase(&self, what: &str, _confirm: bool) -> Result<crate::secret::Passphrase> {
        Err(crate::error::Error::Usage(format!(
            "no passphrase prompt for {what}"
        )))
    }
    fn recovery_key(&self, what: &str) -> Result<crate::secret::Passphrase> {
        self.passphrase(what, false)
    }
    fn stdin(&self) -> Box<dyn std::io::Read + '_> {
        Box::new(std::io::stdin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bek_file_is_used_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.bek");
        let bek = "QUJD".repeat(43); // 172 base64 characters: must not be decoded
        std::fs::write(&p, &bek).unwrap();
        let c = read(&p).unwrap();
        assert_eq!(c.bytes.expose_secret(), bek.as_bytes());
        assert_eq!(c.label, format!("key-file {}", p.display()));
        let missing = read(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.exit_code(), 1);
    }
}
