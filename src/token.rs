//! Our LUKS2 token types: JSON <-> typed token, and which keyslots each serves.
//!
//! A `vaultdisk-vault` token sits beside a keyslot whose passphrase is a random 32-byte secret
//! (base64 text, 44 bytes); the token holds that secret wrapped by a key-encryption key in a
//! vault, and what is needed to find the KEK. Like Clevis and systemd-cryptenroll tokens, it is
//! plain LUKS2 token JSON (`type`, `keyslots` + our members), so cryptsetup lists and exports it.
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

/// Token type of a vault-wrapped keyslot secret.
pub const VAULT: &str = "vaultdisk-vault";
/// Most addresses a token records (`vault_addrs`).
pub const MAX_ADDRS: usize = 16;
/// Token type marking a recovery keyslot.
pub const RECOVERY: &str = "vaultdisk-recovery";

/// The token that marks a recovery keyslot. Its `keyslots` are set when it is linked to the
/// new keyslot (`luks2::edit::add_keyslot`).
pub fn recovery_token() -> Value {
    json!({ "type": RECOVERY })
}

/// How the KEK is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kek {
    /// The KEK never leaves the vault: transit/encrypt and transit/decrypt.
    Transit {
        /// The transit secrets engine mount, e.g. `transit`.
        mount: String,
        /// The transit key name.
        key: String,
        /// The keyslot secret as a transit ciphertext, `vault:v<N>:<base64>`.
        ciphertext: String,
        /// The transit key version that made `ciphertext`.
        key_version: u32,
    },
    /// The KEK is a KV v2 secret field, used here with AES-256-GCM.
    Kv {
        /// The KV v2 secrets engine mount, e.g. `secret`.
        mount: String,
        /// The secret's path under the mount.
        path: String,
        /// The field of the secret that holds the KEK.
        field: String,
        /// The KV version of the KEK that wrapped `wrapped`.
        kv_version: u32,
        /// The keyslot secret wrapped with AES-256-GCM: nonce (12) ‖ ciphertext ‖ tag (16).
        wrapped: Vec<u8>,
    },
}

/// A parsed `vaultdisk-vault` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultToken {
    /// Ids of the keyslots whose passphrase this token holds (the token's `keyslots`).
    pub keyslots: Vec<u32>,
    /// Vault address at enrolment time (`vault_addr`: the first address; what older
    /// vaultdisk versions read).
    pub addr: String,
    /// More addresses of the same vault, tried after `addr` (`vault_addrs` holds all of
    /// them, `addr` first; absent in tokens with one address, so old tokens read unchanged).
    pub more_addrs: Vec<String>,
    /// Vault namespace at enrolment time, if any.
    pub namespace: Option<String>,
    /// Where the KEK is and the wrapped secret.
    pub kek: Kek,
}

/// Why a token object is not a usable `vaultdisk-vault` token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token's `type` is not `vaultdisk-vault`.
    #[error("token is not of type {VAULT}")]
    WrongType,
    /// A member (named by the payload) is missing or invalid: empty, too long, wrong JSON type.
    #[error("token member {0:?} is missing or not of the right kind")]
    Member(&'static str),
    /// `kek` is neither "transit" nor "kv"; holds the value found.
    #[error("token has unknown kek mode {0:?} (transit or kv)")]
    Mode(String),
}

fn text(obj: &Map<String, Value>, name: &'static str) -> Result<String, TokenError> {
    obj.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 4096)
        .map(str::to_string)
        .ok_or(TokenError::Member(name))
}

fn number(obj: &Map<String, Value>, name: &'static str) -> Result<u32, TokenError> {
    obj.get(name)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(TokenError::Member(name))
}

impl VaultToken {
    /// Parses a token object from the header's `tokens` (untrusted input).
    pub fn parse(value: &Value) -> Result<VaultToken, TokenError> {
        let obj = value.as_object().ok_or(TokenError::Member("type"))?;
        if obj.get("type").and_then(Value::as_str) != Some(VAULT) {
            return Err(TokenError::WrongType);
        }
        let keyslots = obj
            .get("keyslots")
            .and_then(Value::as_array)
            .ok_or(TokenError::Member("keyslots"))?
            .iter()
            .map(|v| v.as_str().and_then(|s| s.parse::<u32>().ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or(TokenError::Member("keyslots"))?;
        let addr = text(obj, "vault_addr")?;
        let more_addrs = match obj.get("vault_addrs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(all)) if all.len() <= MAX_ADDRS => {
                let all = all
                    .iter()
                    .map(|a| {
                        a.as_str()
                            .filter(|s| !s.is_empty() && s.len() <= 4096)
                            .map(str::to_string)
                    })
                    .collect::<Option<Vec<String>>>()
                    .ok_or(TokenError::Member("vault_addrs"))?;
                all.into_iter().filter(|a| *a != addr).collect()
            }
            Some(_) => return Err(TokenError::Member("vault_addrs")),
        };
        let namespace = match obj.get("vault_namespace") {
            None | Some(Value::Null) => None,
            Some(_) => Some(text(obj, "vault_namespace")?),
        };
        let kek = match text(obj, "kek")?.as_str() {
            "transit" => Kek::Transit {
                mount: text(obj, "transit_mount")?,
                key: text(obj, "transit_key")?,
                ciphertext: text(obj, "ciphertext")?,
                key_version: number(obj, "key_version")?,
            },
            "kv" => {
                if text(obj, "wrap")? != crate::crypto::kek::ALGORITHM {
                    return Err(TokenError::Member("wrap"));
                }
                Kek::Kv {
                    mount: text(obj, "kv_mount")?,
                    path: text(obj, "kv_path")?,
                    field: text(obj, "kv_field")?,
                    kv_version: number(obj, "kv_version")?,
                    wrapped: B64
                        .decode(text(obj, "wrapped")?)
                        .map_err(|_| TokenError::Member("wrapped"))?,
                }
            }
            other => return Err(TokenError::Mode(other.to_string())),
        };
        Ok(VaultToken {
            keyslots,
            addr,
            more_addrs,
            namespace,
            kek,
        })
    }

    /// The token object as it goes into the header.
    pub fn encode(&self) -> Value {
        let mut v = json!({
            "type": VAULT,
            "keyslots": self.keyslots.iter().map(u32::to_string).collect::<Vec<_>>(),
            "vault_addr": self.addr,
        });
        if !self.more_addrs.is_empty() {
            v["vault_addrs"] = json!(self.addrs());
        }
        if let Some(ns) = &self.namespace {
            v["vault_namespace"] = json!(ns);
        }
        match &self.kek {
            Kek::Transit {
                mount,
                key,
                ciphertext,
                key_version,
            } => {
                v["kek"] = json!("transit");
                v["transit_mount"] = json!(mount);
                v["transit_key"] = json!(key);
                v["ciphertext"] = json!(ciphertext);
                v["key_version"] = json!(key_version);
            }
            Kek::Kv {
                mount,
                path,
                field,
                kv_version,
                wrapped,
            } => {
                v["kek"] = json!("kv");
                v["kv_mount"] = json!(mount);
                v["kv_path"] = json!(path);
                v["kv_field"] = json!(field);
                v["kv_version"] = json!(kv_version);
                v["wrap"] = json!(crate::crypto::kek::ALGORITHM);
                v["wrapped"] = json!(B64.encode(wrapped));
            }
        }
        v
    }

    /// Every recorded address, `addr` first.
    pub fn addrs(&self) -> Vec<String> {
        std::iter::once(self.addr.clone())
            .chain(self.more_addrs.iter().cloned())
            .collect()
    }

    /// "transit" or "kv".
    pub fn mode(&self) -> &'static str {
        match self.kek {
            Kek::Transit { .. } => "transit",
            Kek::Kv { .. } => "kv",
        }
    }

    /// Where the KEK is, for messages: `transit/disk` or `secret/disks/db1#kek`.
    pub fn kek_location(&self) -> String {
        match &self.kek {
            Kek::Transit { mount, key, .. } => format!("{mount}/{key}"),
            Kek::Kv {
                mount, path, field, ..
            } => format!("{mount}/{path}#{field}"),
        }
    }

    /// Key version (transit) or KV version (kv) of the KEK that wrapped the secret.
    pub fn kek_version(&self) -> u32 {
        match &self.kek {
            Kek::Transit { key_version, .. } => *key_version,
            Kek::Kv { kv_version, .. } => *kv_version,
        }
    }
}

/// The `vaultdisk-vault` tokens of a header's wire `tokens`, by id; malformed ones as errors.
pub fn vault_tokens(
    tokens: &std::collections::BTreeMap<String, Value>,
) -> Vec<(u32, Result<VaultToken, TokenError>)> {
    tokens
        .iter()
        .filter(|(_, t)| t.get("type").and_then(Value::as_str) == Some(VAULT))
        .filter_map(|(id, t)| Some((id.parse::<u32>().ok()?, VaultToken::parse(t))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transit() -> VaultToken {
        VaultToken {
            keyslots: vec![1],
            addr: "http://127.0.0.1:8200".into(),
            more_addrs: Vec::new(),
            namespace: None,
            kek: Kek::Transit {
                mount: "transit".into(),
                key: "disk".into(),
                ciphertext: "vault:v1:abc".into(),
                key_version: 1,
            },
        }
    }

    #[test]
    fn parse_encode_round_trip() {
        let t = transit();
        assert_eq!(VaultToken::parse(&t.encode()), Ok(t));
        let kv = VaultToken {
            keyslots: vec![3],
            addr: "https://v:8200".into(),
            more_addrs: Vec::new(),
            namespace: Some("team".into()),
            kek: Kek::Kv {
                mount: "secret".into(),
                path: "disks/db1".into(),
                field: "kek".into(),
                kv_version: 2,
                wrapped: vec![1, 2, 3],
            },
        };
        assert_eq!(VaultToken::parse(&kv.encode()), Ok(kv.clone()));
        assert_eq!(kv.kek_location(), "secret/disks/db1#kek");
        // LUKS2's own token shape: type string + keyslots as strings.
        assert_eq!(kv.encode()["keyslots"], json!(["3"]));
    }

    /// `vault_addrs` is an added member: a token with one address encodes exactly as before
    /// (older vaultdisk and cryptsetup read it), several addresses round-trip, and `vault_addr`
    /// stays the first so an older reader still finds one.
    #[test]
    fn several_addresses_are_an_added_member() {
        let one = transit();
        assert!(one.encode().get("vault_addrs").is_none());
        let mut many = transit();
        many.more_addrs = vec![
            "http://127.0.0.2:8200".into(),
            "http://127.0.0.3:8200".into(),
        ];
        let v = many.encode();
        assert_eq!(v["vault_addr"], json!("http://127.0.0.1:8200"));
        assert_eq!(
            v["vault_addrs"],
            json!([
                "http://127.0.0.1:8200",
                "http://127.0.0.2:8200",
                "http://127.0.0.3:8200"
            ])
        );
        assert_eq!(VaultToken::parse(&v), Ok(many));
        let mut bad = v.clone();
        bad["vault_addrs"] = json!("http://x");
        assert!(VaultToken::parse(&bad).is_err());
        bad["vault_addrs"] = json!(vec!["http://x"; MAX_ADDRS + 1]);
        assert!(VaultToken::parse(&bad).is_err());
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        let good = transit().encode();
        let cases: Vec<(&str, Value)> = vec![
            ("type", json!("other")),
            ("keyslots", json!("1")),
            ("keyslots", json!([1])),
            ("vault_addr", json!(5)),
            ("kek", json!("hsm")),
            ("key_version", json!(-1)),
            ("ciphertext", json!("")),
        ];
        for (member, value) in cases {
            let mut t = good.clone();
            t[member] = value;
            assert!(VaultToken::parse(&t).is_err(), "{member}");
        }
        let mut t = good.clone();
        t.as_object_mut().expect("object").remove("transit_key");
        assert_eq!(
            VaultToken::parse(&t),
            Err(TokenError::Member("transit_key"))
        );
        assert!(VaultToken::parse(&json!([])).is_err());
    }
}
