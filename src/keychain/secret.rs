//! A Key Vault secret holding an ADE BEK: the JSON of `az keyvault secret show` or a Key Vault
//! `GET secrets/{name}/{version}` answer (SecretBundle: `value`, `contentType`, `tags`, `id`;
//! ade-facts §1.6, §3.2). `BEK`: the value is standard base64 of the key file, decoded once;
//! `Wrapped BEK`: the value is base64url of the KEK's RSA ciphertext over the key file, unwrapped
//! by the KEK the tags name.
use super::{CandidateKey, b64, kek::Unwrapper};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use zeroize::Zeroize;

/// Largest secret JSON read (a real one is under 2 KiB).
pub const MAX_JSON_BYTES: u64 = 1024 * 1024;
/// Largest `value` accepted (a BEK secret is 232 characters, a wrapped one ~342-683).
pub const MAX_VALUE_CHARS: usize = 64 * 1024;

/// What a secret's contentType says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `BEK`: base64 of the key file.
    Bek,
    /// `Wrapped BEK`: the key file wrapped by a key-encryption key.
    WrappedBek,
}

impl ContentType {
    /// The contentType as Azure writes it.
    pub fn name(self) -> &'static str {
        match self {
            ContentType::Bek => "BEK",
            ContentType::WrappedBek => "Wrapped BEK",
        }
    }
}

/// The KEK algorithm of the tag DiskEncryptionKeyEncryptionAlgorithm (ade-facts §1.6, §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekAlgorithm {
    /// `RSA-OAEP`: OAEP with SHA-1 and MGF1-SHA-1 (ADE's default).
    RsaOaep,
    /// `RSA-OAEP-256`: OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// `RSA1_5`: PKCS#1 v1.5 (only with `--rsa1-5`).
    Rsa15,
}

impl KekAlgorithm {
    /// The JOSE name Key Vault uses.
    pub fn name(self) -> &'static str {
        match self {
            KekAlgorithm::RsaOaep => "RSA-OAEP",
            KekAlgorithm::RsaOaep256 => "RSA-OAEP-256",
            KekAlgorithm::Rsa15 => "RSA1_5",
        }
    }

    /// The algorithm named `name`, if Key Vault has it for RSA keys.
    pub fn from_name(name: &str) -> Option<KekAlgorithm> {
        [
            KekAlgorithm::RsaOaep,
            KekAlgorithm::RsaOaep256,
            KekAlgorithm::Rsa15,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// A BEK secret, checked: what it holds and, when wrapped, by which KEK.
pub struct SecretRecord {
    /// BEK or Wrapped BEK.
    pub content_type: ContentType,
    /// The `value` text (base64), kept in zeroizing memory.
    pub value: SecretBytes,
    /// Tag DiskEncryptionKeyEncryptionKeyURL: the KEK's key identifier.
    pub kek_url: Option<String>,
    /// Tag DiskEncryptionKeyEncryptionAlgorithm; None when not recorded (then RSA-OAEP, then
    /// RSA-OAEP-256 are tried).
    pub algorithm: Option<KekAlgorithm>,
    /// Tag DiskEncryptionKeyFileName (`LinuxPassPhraseFileName`, `<GUID>.BEK`).
    pub file_name: Option<String>,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("content_type", &self.content_type)
            .field("kek_url", &self.kek_url)
            .field("algorithm", &self.algorithm)
            .field("file_name", &self.file_name)
            .finish_non_exhaustive()
    }
}

/// Reads a small JSON file (at most [`MAX_JSON_BYTES`]) into zeroizing memory.
pub(crate) fn read_json_file(path: &Path, what: &str) -> Result<SecretBytes> {
    let f = std::fs::File::open(path).map_err(|e| {
        let msg = format!(
            "cannot open {what} {}: {}",
            path.display(),
            crate::error::plain_io(&e)
        );
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(msg),
            _ => Error::Usage(msg),
        }
    })?;
    let mut raw = Vec::new();
    f.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(format!("reading {what} {}", path.display()), e))?;
    let out = SecretBytes::from_slice(&raw);
    raw.zeroize();
    if out.len() as u64 > MAX_JSON_BYTES {
        return Err(Error::Usage(format!(
            "{what} {} is larger than 1 MiB: not a Key Vault JSON file",
            path.display()
        )));
    }
    Ok(out)
}

/// Parses JSON from secret bytes; the error says only where and why, never the content.
pub(crate) fn parse_json(raw: &[u8], name: &str, what: &str) -> Result<Value> {
    serde_json::from_slice(raw).map_err(|e| {
        Error::Usage(format!(
            "{name} is not {what} JSON (line {}, column {}: {})",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Io => "read error",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "unexpected data",
                serde_json::error::Category::Eof => "ends too early",
            }
        ))
    })
}

/// Takes the string at `key` of `obj` into zeroizing memory, wiping the JSON copy.
pub(crate) fn take_secret_string(obj: &mut Value, key: &str) -> Option<SecretBytes> {
    match obj.get_mut(key).map(Value::take) {
        Some(Value::String(mut s)) => {
            let out = SecretBytes::from_slice(s.as_bytes());
            s.zeroize();
            Some(out)
        }
        _ => None,
    }
}

/// A string member, trimmed; None when absent, null, empty or not a string.
pub(crate) fn text_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Wipes every string left in a parsed document (the secret may have been elsewhere).
pub(crate) fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(o) => o.values_mut().for_each(wipe),
        _ => {}
    }
}

impl SecretRecord {
    /// Reads the secret JSON file at `path`.
    pub fn from_file(path: &Path) -> Result<SecretRecord> {
        let raw = read_json_file(path, "Key Vault secret file")?;
        SecretRecord::parse(raw.expose_secret(), &path.display().to_string())
    }

    /// Parses the JSON `raw` of a secret called `name` in messages (a file, a URL).
    pub fn parse(raw: &[u8], name: &str) -> Result<SecretRecord> {
        let mut doc = parse_json(raw, name, "Key Vault secret")?;
        let out = SecretRecord::from_value(&mut doc, name);
        wipe(&mut doc);
        out
    }

    /// The record in the parsed secret `doc` (its `value` is taken out and wiped).
    pub fn from_value(doc: &mut Value, name: &str) -> Result<SecretRecord> {
        if !doc.is_object() {
            return Err(Error::Usage(format!(
                "{name} is not a Key Vault secret: the JSON is not an object"
            )));
        }
        let content_type = match doc.get("contentType") {
            Some(Value::String(ct)) => match ct.trim() {
                t if t.eq_ignore_ascii_case("BEK") => ContentType::Bek,
                t if t.eq_ignore_ascii_case("Wrapped BEK") => ContentType::WrappedBek,
                other => {
                    return Err(Error::Usage(format!(
                        "{name}: contentType {:?} is not an Azure Disk Encryption key (expected \"BEK\" or \"Wrapped BEK\")",
                        cut(other)
                    )));
                }
            },
            None | Some(Value::Null) => {
                return Err(Error::Usage(format!(
                    "{name} has no contentType: not an Azure Disk Encryption secret (expected \"BEK\" or \"Wrapped BEK\")"
                )));
            }
            Some(_) => {
                return Err(Error::Usage(format!("{name}: contentType is not a string")));
            }
        };
        let tags = doc.get("tags").cloned().unwrap_or(Value::Null);
        if !(tags.is_object() || tags.is_null()) {
            return Err(Error::Usage(format!("{name}: tags is not an object")));
        }
        let algorithm = match text_of(&tags, "DiskEncryptionKeyEncryptionAlgorithm") {
            None => None,
            Some(a) => Some(KekAlgorithm::from_name(&a).ok_or_else(|| {
                Error::Usage(format!(
                    "{name}: KEK algorithm {:?} is not one Key Vault wraps a BEK with (RSA-OAEP, RSA-OAEP-256, RSA1_5)",
                    cut(&a)
                ))
            })?),
        };
        let value = take_secret_string(doc, "value").ok_or_else(|| {
            Error::Usage(format!(
                "{name} has no value string: not a Key Vault secret"
            ))
        })?;
        if value.len() > MAX_VALUE_CHARS {
            return Err(Error::Usage(format!(
                "{name}: the value is longer than 64 KiB: not a BEK"
            )));
        }
        Ok(SecretRecord {
            content_type,
            value,
            kek_url: text_of(&tags, "DiskEncryptionKeyEncryptionKeyURL"),
            algorithm,
            file_name: text_of(&tags, "DiskEncryptionKeyFileName"),
        })
    }

    /// The key this secret holds, as a candidate labelled `<label> (<contentType>[, <kek>])`:
    /// a BEK decoded once, a wrapped BEK unwrapped through `kek`.
    pub fn candidate(&self, label: &str, kek: &mut Unwrapper) -> Result<CandidateKey> {
        let decoded = b64::decode(self.value.expose_secret()).ok_or_else(|| {
            Error::Usage(format!(
                "{label}: the {} value is not base64",
                self.content_type.name()
            ))
        })?;
        match self.content_type {
            ContentType::Bek => {
                if decoded.is_empty() {
                    return Err(Error::Usage(format!("{label}: the BEK value is empty")));
                }
                Ok(CandidateKey {
                    label: format!("{label} (BEK)"),
                    bytes: decoded,
                })
            }
            ContentType::WrappedBek => {
                let (bytes, how) = kek.unwrap(label, self, &decoded)?;
                Ok(CandidateKey {
                    label: format!("{label} (Wrapped BEK, {how})"),
                    bytes,
                })
            }
        }
    }
}

/// At most 64 characters of untrusted text for a message.
pub(crate) fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<SecretRecord> {
        SecretRecord::parse(v.to_string().as_bytes(), "s.json")
    }

    #[test]
    fn az_secret_show_shapes() {
        let r = parse(json!({
            "attributes": {"enabled": true}, "contentType": "Wrapped BEK",
            "id": "https://kv.vault.azure.net/secrets/n/v", "kid": null, "managed": null,
            "name": "n", "value": "abc_-",
            "tags": {"DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP-256",
                     "DiskEncryptionKeyEncryptionKeyURL": "https://kv.vault.azure.net/keys/k/1",
                     "DiskEncryptionKeyFileName": "LinuxPassPhraseFileName",
                     "MachineName": "vm"}
        }))
        .unwrap();
        assert_eq!(r.content_type, ContentType::WrappedBek);
        assert_eq!(r.algorithm, Some(KekAlgorithm::RsaOaep256));
        assert_eq!(
            r.kek_url.as_deref(),
            Some("https://kv.vault.azure.net/keys/k/1")
        );
        assert_eq!(r.file_name.as_deref(), Some("LinuxPassPhraseFileName"));
        assert_eq!(r.value.expose_secret(), b"abc_-");
        assert!(!format!("{r:?}").contains("abc_-"), "Debug shows no value");
        let r = parse(json!({"contentType": "BEK", "value": "QUJD", "tags": {
            "DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP"}}))
        .unwrap();
        assert_eq!(r.content_type, ContentType::Bek);
        assert_eq!(r.kek_url, None);
    }

    #[test]
    fn bad_secrets_are_usage_errors_naming_the_problem() {
        for (v, want) in [
            (
                json!({"contentType": "application/pkcs12", "value": "x"}),
                "\"application/pkcs12\" is not",
            ),
            (json!({"value": "x"}), "has no contentType"),
            (json!({"contentType": "BEK"}), "has no value"),
            (json!({"contentType": "BEK", "value": 5}), "has no value"),
            (json!({"contentType": 7, "value": "x"}), "not a string"),
            (json!([1, 2]), "not an object"),
            (
                json!({"contentType": "BEK", "value": "x", "tags": []}),
                "tags is not",
            ),
            (
                json!({"contentType": "Wrapped BEK", "value": "x", "tags": {
                "DiskEncryptionKeyEncryptionAlgorithm": "A256KW"}}),
                "\"A256KW\" is not one",
            ),
        ] {
            let e = parse(v.clone()).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{v}");
            assert!(e.to_string().contains(want), "{v}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
        let e = SecretRecord::parse(b"{\"contentType\": \"BEK\", \"value\": \"secret", "s.json")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("s.json is not Key Vault secret JSON"),
            "{e}"
        );
        assert!(
            !e.to_string().contains("secret\""),
            "no content in the message"
        );
    }

    #[test]
    fn a_bek_value_is_decoded_exactly_once() {
        let bek = "QUJD".repeat(43);
        let value = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bek);
        assert_eq!(value.len(), 232);
        let r = parse(json!({"contentType": "BEK", "value": value})).unwrap();
        let chain = crate::keychain::KeyChain::default();
        let mut u = Unwrapper::new(&chain);
        let c = r.candidate("keyvault-secret s.json", &mut u).unwrap();
        assert_eq!(c.bytes.expose_secret(), bek.as_bytes());
        assert_eq!(c.label, "keyvault-secret s.json (BEK)");
        let r = parse(json!({"contentType": "BEK", "value": "%%%"})).unwrap();
        assert_eq!(r.candidate("x", &mut u).unwrap_err().exit_code(), 1);
    }
}
