//! Unlocking through `vaultdisk-vault` tokens, and making and re-making their wraps: credential
//! discovery (AppRole files, a token file, VAULT_TOKEN/BAO_TOKEN, ~/.vault-token), endpoint
//! resolution, the KEK unwrap, enrolment with its round-trip check, and rewrap.
//!
//! The keyslot passphrase of a vault keyslot is the base64 text of a random 32-byte secret; the
//! token holds the secret wrapped by a KEK (transit key, or a KV v2 field used with AES-GCM).
//! So `bao write -field=plaintext transit/decrypt/<key> ciphertext=...` prints exactly the
//! passphrase, and `cryptsetup open --test-passphrase` accepts it: no lock-in.
use crate::crypto::kek;
use crate::error::{Error, Result};
use crate::keyslot;
use crate::luks2::ReadAt;
use crate::luks2::metadata::Metadata;
use crate::secret::{Passphrase, SecretBytes, VolumeKey};
use crate::token::{self, Kek, VaultToken};
use crate::vault::{Client, Credentials, Endpoint};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// How to reach a vault and log in (Vault's own CLI conventions); what `--vault-*` give.
/// Unset fields fall back to the token's recorded address/namespace and the environment.
#[derive(Debug, Clone, Default)]
pub struct VaultConfig {
    /// Vault address (default: the one the token recorded, else VAULT_ADDR or BAO_ADDR).
    pub addr: Option<String>,
    /// Namespace sent as X-Vault-Namespace (default: recorded, else VAULT_NAMESPACE).
    pub namespace: Option<String>,
    /// PEM file of the CA that signed the vault's certificate (default: VAULT_CACERT).
    pub ca_cert: Option<PathBuf>,
    /// File holding the vault token (default: VAULT_TOKEN, BAO_TOKEN, ~/.vault-token).
    pub token_file: Option<PathBuf>,
    /// AppRole login: the files holding the role_id and the secret_id.
    pub approle: Option<(PathBuf, PathBuf)>,
    /// Mount of the AppRole auth method (default approle).
    pub approle_mount: Option<String>,
}

/// Which key-encryption key wraps a new vault keyslot's secret.
#[derive(Debug, Clone)]
pub enum NewKek {
    /// A transit key: the KEK never leaves the vault.
    Transit {
        /// Mount of the transit engine.
        mount: String,
        /// Name of the transit key.
        key: String,
        /// Create the transit key if it does not exist.
        create: bool,
    },
    /// A KV v2 field holding the KEK (base64 of 32 bytes); the secret is wrapped here with
    /// AES-256-GCM.
    Kv {
        /// Mount of the KV v2 engine.
        mount: String,
        /// Path of the secret.
        path: String,
        /// Field of the secret that holds the KEK.
        field: String,
        /// Write a random KEK there if the secret does not exist.
        create: bool,
    },
}

/// Bytes of the random secret a vault keyslot is unlocked with (full entropy).
pub const SECRET_BYTES: usize = 32;
fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// Reads a small secret file (token, role id, secret id), surrounding whitespace removed.
fn read_secret_file(path: &Path, what: &str) -> Result<SecretBytes> {
    let mut raw = std::fs::read(path).map_err(|e| {
        let msg = format!(
            "cannot read {what} file {}: {}",
            path.display(),
            crate::error::plain_io(&e)
        );
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(msg),
            _ => Error::Usage(msg),
        }
    })?;
    let start = raw
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    let out = SecretBytes::from_slice(&raw[start..end.max(start)]);
    raw.zeroize();
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{what} file {} is empty",
            path.display()
        )));
    }
    Ok(out)
}

/// The credentials present, as Vault's CLI looks for them: AppRole files, --vault-token-file,
/// VAULT_TOKEN, BAO_TOKEN, then ~/.vault-token. None when there are none.
pub fn credentials(v: &VaultConfig) -> Result<Option<Credentials>> {
    if let Some((role, secret)) = &v.approle {
        return Ok(Some(Credentials::AppRole {
            mount: v.approle_mount.clone().unwrap_or_else(|| "approle".into()),
            role_id: read_secret_file(role, "AppRole role_id")?,
            secret_id: read_secret_file(secret, "AppRole secret_id")?,
        }));
    }
    if let Some(f) = &v.token_file {
        return Ok(Some(Credentials::Token(read_secret_file(
            f,
            "vault token",
        )?)));
    }
    for name in ["VAULT_TOKEN", "BAO_TOKEN"] {
        if let Some(mut t) = std::env::var(name).ok().filter(|t| !t.trim().is_empty()) {
            let secret = SecretBytes::from_slice(t.trim().as_bytes());
            t.zeroize();
            return Ok(Some(Credentials::Token(secret)));
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let file = Path::new(&home).join(".vault-token");
        if file.is_file() {
            return Ok(Some(Credentials::Token(read_secret_file(
                &file,
                "vault token",
            )?)));
        }
    }
    Ok(None)
}

/// Where to connect: --vault-addr, else the address a token recorded, else VAULT_ADDR/BAO_ADDR.
pub fn endpoint(v: &VaultConfig, recorded: Option<&VaultToken>) -> Result<Endpoint> {
    let addr = v
        .addr
        .clone()
        .or_else(|| recorded.map(|t| t.addr.clone()))
        .or_else(|| env(&["VAULT_ADDR", "BAO_ADDR"]))
        .ok_or_else(|| {
            Error::Usage("no vault address: give --vault-addr or set VAULT_ADDR".into())
        })?;
    let mut ep = Endpoint::new(&addr);
    ep.namespace = v
        .namespace
        .clone()
        .or_else(|| recorded.and_then(|t| t.namespace.clone()))
        .or_else(|| env(&["VAULT_NAMESPACE", "BAO_NAMESPACE"]));
    ep.ca_cert = v
        .ca_cert
        .clone()
        .or_else(|| env(&["VAULT_CACERT", "BAO_CACERT"]).map(Into::into));
    if let Some(t) = env(&["VAULT_CLIENT_TIMEOUT", "BAO_CLIENT_TIMEOUT"]) {
        ep.timeout = crate::vault::parse_timeout(&t).ok_or_else(|| {
            Error::Usage(format!(
                "VAULT_CLIENT_TIMEOUT {t:?} is not a number of seconds"
            ))
        })?;
    }
    Ok(ep)
}

/// Connects (and logs in) for enrolment or rewrap, where credentials are required (exit 2
/// without them).
pub fn connect_required(v: &VaultConfig, recorded: Option<&VaultToken>) -> Result<Client> {
    let ep = endpoint(v, recorded)?;
    let creds = credentials(v)?.ok_or_else(|| {
        Error::Vault(format!(
            "no vault credentials for {}: set VAULT_TOKEN, or give --vault-token-file or --vault-role-id-file/--vault-secret-id-file",
            ep.addr
        ))
    })?;
    Client::connect(&ep, &creds).map_err(Error::from)
}

/// The keyslot passphrase for a secret: its base64 text.
pub fn keyslot_passphrase(secret: &SecretBytes) -> Passphrase {
    let mut text = B64.encode(secret.expose_secret());
    let p = Passphrase(SecretBytes::from_slice(text.as_bytes()));
    text.zeroize();
    p
}

/// Unwraps a token's secret through its vault; the error is one line naming the vault.
pub fn unwrap_secret(client: &Client, t: &VaultToken) -> std::result::Result<SecretBytes, String> {
    match &t.kek {
        Kek::Transit {
            mount,
            key,
            ciphertext,
            ..
        } => client
            .transit_decrypt(mount, key, ciphertext)
            .map_err(|e| e.to_string()),
        Kek::Kv {
            mount,
            path,
            field,
            kv_version,
            wrapped,
        } => {
            let (kek_b64, _) = client
                .kv_read(mount, path, field, Some(*kv_version))
                .map_err(|e| e.to_string())?;
            let kek =
                decode_kek(&kek_b64).map_err(|e| format!("vault at {}: {e}", client.addr()))?;
            kek::unwrap(kek.expose_secret(), wrapped)
                .map_err(|e| format!("vault at {}: {mount}/{path}: {e}", client.addr()))
        }
    }
}

/// The KV KEK from its base64 text: exactly [`kek::KEK_BYTES`] bytes.
pub fn decode_kek(b64: &SecretBytes) -> std::result::Result<SecretBytes, String> {
    let mut raw = B64
        .decode(b64.expose_secret())
        .map_err(|_| "the KV KEK is not base64".to_string())?;
    let out = SecretBytes::from_slice(&raw);
    raw.zeroize();
    if out.len() != kek::KEK_BYTES {
        return Err(format!(
            "the KV KEK has {} bytes, not {}",
            out.len(),
            kek::KEK_BYTES
        ));
    }
    Ok(out)
}

/// Wraps a new secret as `kek` asks (creating the KEK with --create) and checks that the wrap
/// unwraps again before anything is written.
pub fn wrap_new(client: &Client, new_kek: &NewKek, secret: &SecretBytes) -> Result<Kek> {
    let kek = match new_kek {
        NewKek::Transit { mount, key, create } => {
            if *create {
                client.transit_create_key(mount, key).map_err(Error::from)?;
            }
            let w = client
                .transit_encrypt(mount, key, secret.expose_secret())
                .map_err(Error::from)?;
            Kek::Transit {
                mount: mount.clone(),
                key: key.clone(),
                ciphertext: w.ciphertext,
                key_version: w.key_version,
            }
        }
        NewKek::Kv {
            mount,
            path,
            field,
            create,
        } => {
            let (kek_b64, version) = match client.kv_read(mount, path, field, None) {
                Ok(found) => found,
                Err(crate::vault::VaultError::NotFound { .. }) if *create => {
                    let fresh = SecretBytes::random(kek::KEK_BYTES)
                        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
                    let mut b64 = B64.encode(fresh.expose_secret());
                    let v = client
                        .kv_write(mount, path, field, b64.as_bytes(), true)
                        .map_err(Error::from)?;
                    let s = SecretBytes::from_slice(b64.as_bytes());
                    b64.zeroize();
                    (s, v)
                }
                Err(e) => return Err(e.into()),
            };
            let kek_bytes = decode_kek(&kek_b64).map_err(Error::Vault)?;
            let wrapped = kek::wrap(kek_bytes.expose_secret(), secret.expose_secret())
                .map_err(|e| Error::Vault(e.to_string()))?;
            Kek::Kv {
                mount: mount.clone(),
                path: path.clone(),
                field: field.clone(),
                kv_version: version,
                wrapped,
            }
        }
    };
    Ok(kek)
}

/// A new vault secret and its token (keyslot id filled in by the caller), wrap verified.
pub struct Enrolment {
    /// The new keyslot's secret (its passphrase is [`keyslot_passphrase`] of it).
    pub secret: SecretBytes,
    /// The token to store next to the keyslot.
    pub token: VaultToken,
}

/// Wraps a fresh secret for a new keyslot `keyslot`; checks the unwrap round trip.
pub fn enrol(v: &VaultConfig, new_kek: &NewKek, keyslot: u32) -> Result<Enrolment> {
    let client = connect_required(v, None)?;
    let secret = SecretBytes::random(SECRET_BYTES)
        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let kek = wrap_new(&client, new_kek, &secret)?;
    let token = VaultToken {
        keyslots: vec![keyslot],
        addr: client.addr().to_string(),
        namespace: client.namespace().map(str::to_string),
        kek,
    };
    let back = unwrap_secret(&client, &token).map_err(Error::Vault)?;
    if !back.ct_eq(secret.expose_secret()) {
        return Err(Error::Vault(format!(
            "vault at {} returned a different secret when unwrapping the new wrap",
            client.addr()
        )));
    }
    Ok(Enrolment { secret, token })
}

/// What trying the vault tokens gave.
pub enum VaultUnlock {
    /// Token `token` opened keyslot `keyslot`.
    Opened {
        /// The keyslot the unwrapped secret opened.
        keyslot: u32,
        /// The token that unwrapped it.
        token: u32,
        /// The volume key.
        volume_key: VolumeKey,
    },
    /// Tokens were tried; one line saying why each failed.
    Failed(String),
    /// The volume has vault tokens but no credentials were found: nothing was tried.
    NoCredentials(String),
    /// The volume has no vault token (for `only`, none serving that keyslot).
    NoTokens,
}

/// Opens a keyslot of token `t` through its vault: (keyslot, volume key) or why not.
fn open_with_token(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    v: &VaultConfig,
    creds: &Credentials,
    t: &VaultToken,
    only: Option<u32>,
) -> std::result::Result<(u32, VolumeKey), String> {
    let ep = endpoint(v, Some(t)).map_err(|e| e.to_string())?;
    let client = Client::connect(&ep, creds).map_err(|e| e.to_string())?;
    let secret = unwrap_secret(&client, t)?;
    let pass = keyslot_passphrase(&secret);
    let mut last = String::from("it names no keyslot");
    for &k in &t.keyslots {
        if only.is_some_and(|o| o != k) {
            continue;
        }
        match keyslot::unlock(meta, dev, pass.expose_secret(), Some(k)) {
            Ok(found) => return Ok(found),
            Err(e) => last = format!("the unwrapped secret does not open keyslot {k}: {e}"),
        }
    }
    Err(last)
}

/// The vault tokens that serve keyslot `only` (all when None), parsed or not.
fn tokens_for(
    meta: &Metadata,
    only: Option<u32>,
) -> Vec<(u32, std::result::Result<VaultToken, token::TokenError>)> {
    token::vault_tokens(&meta.wire.tokens)
        .into_iter()
        .filter(|(_, t)| match (t, only) {
            (Ok(t), Some(k)) => t.keyslots.contains(&k),
            _ => true,
        })
        .collect()
}

/// Tries every `vaultdisk-vault` token (only those of keyslot `only`, when given).
/// A credentials file that cannot be read is the caller's error (exit 1/2), not a token failure.
pub fn try_unlock(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    v: &VaultConfig,
    only: Option<u32>,
) -> Result<VaultUnlock> {
    let tokens = tokens_for(meta, only);
    if tokens.is_empty() {
        return Ok(VaultUnlock::NoTokens);
    }
    let Some(creds) = credentials(v)? else {
        return Ok(VaultUnlock::NoCredentials(NO_CREDENTIALS.into()));
    };
    let mut why = Vec::new();
    for (id, parsed) in tokens {
        let attempt = parsed
            .map_err(|e| e.to_string())
            .and_then(|t| open_with_token(meta, dev, v, &creds, &t, only).map(|ok| (ok, t)));
        match attempt {
            Ok(((keyslot, volume_key), t)) => {
                log::info!(
                    "vault token {id} ({} {} at {}) opened keyslot {keyslot}",
                    t.mode(),
                    t.kek_location(),
                    t.addr
                );
                return Ok(VaultUnlock::Opened {
                    keyslot,
                    token: id,
                    volume_key,
                });
            }
            Err(e) => why.push(format!("token {id}: {e}")),
        }
    }
    Ok(VaultUnlock::Failed(why.join("; ")))
}

const NO_CREDENTIALS: &str = "no vault credentials (VAULT_TOKEN, BAO_TOKEN, --vault-token-file, ~/.vault-token or AppRole files)";

/// One vault token as `verify --vault` reports it.
pub struct TokenCheck {
    /// `vault token N (transit transit/disk at ADDR)`.
    pub label: String,
    /// (keyslot, volume key), or why the token did not open one.
    pub result: std::result::Result<(u32, VolumeKey), String>,
}

/// For `verify --vault`: every vault token, what it is, and the keyslot it opens or why not.
pub fn check_each(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    v: &VaultConfig,
    only: Option<u32>,
) -> Result<Vec<TokenCheck>> {
    let tokens = tokens_for(meta, only);
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let creds = credentials(v)?.ok_or_else(|| Error::Vault(NO_CREDENTIALS.into()))?;
    Ok(tokens
        .into_iter()
        .map(|(id, parsed)| match parsed {
            Ok(t) => TokenCheck {
                label: format!(
                    "vault token {id} ({} {} at {})",
                    t.mode(),
                    t.kek_location(),
                    t.addr
                ),
                result: open_with_token(meta, dev, v, &creds, &t, only),
            },
            Err(e) => TokenCheck {
                label: format!("vault token {id}"),
                result: Err(e.to_string()),
            },
        })
        .collect())
}

/// A token re-wrapped to its KEK's latest version, checked: the new wrap unwraps to the same
/// secret, and the secret opens the keyslot. None when it is already at the latest version.
pub fn rewrap_one(
    client: &Client,
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    name: &str,
    t: &VaultToken,
) -> Result<Option<VaultToken>> {
    let old = unwrap_secret(client, t).map_err(Error::Vault)?;
    let new_kek = match &t.kek {
        Kek::Transit {
            mount,
            key,
            ciphertext,
            key_version,
        } => {
            let w = client
                .transit_rewrap(mount, key, ciphertext)
                .map_err(Error::from)?;
            if w.key_version == *key_version {
                return Ok(None);
            }
            Kek::Transit {
                mount: mount.clone(),
                key: key.clone(),
                ciphertext: w.ciphertext,
                key_version: w.key_version,
            }
        }
        Kek::Kv {
            mount,
            path,
            field,
            kv_version,
            ..
        } => {
            let (latest, version) = client
                .kv_read(mount, path, field, None)
                .map_err(Error::from)?;
            if version == *kv_version {
                return Ok(None);
            }
            let kek_bytes = decode_kek(&latest).map_err(Error::Vault)?;
            Kek::Kv {
                mount: mount.clone(),
                path: path.clone(),
                field: field.clone(),
                kv_version: version,
                wrapped: kek::wrap(kek_bytes.expose_secret(), old.expose_secret())
                    .map_err(|e| Error::Vault(e.to_string()))?,
            }
        }
    };
    let new = VaultToken {
        kek: new_kek,
        ..t.clone()
    };
    let back = unwrap_secret(client, &new).map_err(Error::Vault)?;
    if !back.ct_eq(old.expose_secret()) {
        return Err(Error::Vault(format!(
            "vault at {} unwrapped the rewrapped secret to something else: token left unchanged",
            client.addr()
        )));
    }
    let pass = keyslot_passphrase(&back);
    let opens = t
        .keyslots
        .iter()
        .any(|&k| keyslot::unlock(meta, dev, pass.expose_secret(), Some(k)).is_ok());
    if !opens {
        return Err(Error::Device(format!(
            "{name}: the vault secret no longer opens keyslot {:?}: token left unchanged",
            t.keyslots
        )));
    }
    Ok(Some(new))
}
