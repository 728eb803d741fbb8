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
    /// Vault address, or several separated by commas (repeated `--vault-addr`), tried first;
    /// then the addresses the token recorded, then VAULT_ADDR or BAO_ADDR (a comma list too).
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
    /// The AppRole secret_id file holds a response-wrapping token for the secret_id
    /// (unwrapped once, through `sys/wrapping/unwrap`).
    pub secret_id_wrapped: bool,
    /// JWT login: the file holding the JWT (a Kubernetes service-account token) and the role.
    pub jwt: Option<(PathBuf, String)>,
    /// Mount of the JWT auth method (default jwt; `kubernetes` for Kubernetes auth).
    pub jwt_mount: Option<String>,
    /// Log in with the TLS client certificate (VAULT_CLIENT_CERT) at `auth/cert`.
    pub cert_auth: bool,
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
        let mount = v.approle_mount.clone().unwrap_or_else(|| "approle".into());
        let role_id = read_secret_file(role, "AppRole role_id")?;
        if v.secret_id_wrapped {
            return Ok(Some(Credentials::WrappedAppRole {
                mount,
                role_id,
                wrapping_token: read_secret_file(secret, "wrapped AppRole secret_id")?,
            }));
        }
        return Ok(Some(Credentials::AppRole {
            mount,
            role_id,
            secret_id: read_secret_file(secret, "AppRole secret_id")?,
        }));
    }
    if let Some((file, role)) = &v.jwt {
        return Ok(Some(Credentials::Jwt {
            mount: v.jwt_mount.clone().unwrap_or_else(|| "jwt".into()),
            role: role.clone(),
            jwt: read_secret_file(file, "JWT")?,
        }));
    }
    if v.cert_auth {
        if env(&["VAULT_CLIENT_CERT", "BAO_CLIENT_CERT"]).is_none() {
            return Err(Error::Usage(
                "--vault-cert-auth needs VAULT_CLIENT_CERT and VAULT_CLIENT_KEY".into(),
            ));
        }
        return Ok(Some(Credentials::Cert {
            mount: "cert".into(),
            name: None,
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
    // A Vault Agent / OpenBao Proxy with auto-auth adds its own token.
    if env(&["VAULT_AGENT_ADDR", "BAO_AGENT_ADDR"]).is_some() {
        return Ok(Some(Credentials::AgentAutoAuth));
    }
    Ok(None)
}

/// Where to connect: the --vault-addr addresses, then the addresses a token recorded, then
/// VAULT_ADDR/BAO_ADDR (each may be a comma list), tried in that order, duplicates dropped.
pub fn endpoint(v: &VaultConfig, recorded: Option<&VaultToken>) -> Result<Endpoint> {
    let mut addrs: Vec<String> = Vec::new();
    if let Some(a) = &v.addr {
        addrs.extend(crate::vault::split_addrs(a));
    }
    // An Agent/Proxy named by VAULT_AGENT_ADDR comes before the vault itself, as in Vault's
    // CLI (it holds the auto-auth token and caches).
    if let Some(a) = env(&["VAULT_AGENT_ADDR", "BAO_AGENT_ADDR"]) {
        addrs.extend(crate::vault::split_addrs(&a));
    }
    if let Some(t) = recorded {
        addrs.extend(t.addrs());
    }
    if let Some(a) = env(&["VAULT_ADDR", "BAO_ADDR"]) {
        addrs.extend(crate::vault::split_addrs(&a));
    }
    endpoint_for(v, recorded, &addrs)
}

/// The endpoint for exactly `addrs` (in order), with the namespace, CA, timeout and retries
/// of `v`, the token and the environment.
pub fn endpoint_for(
    v: &VaultConfig,
    recorded: Option<&VaultToken>,
    addrs: &[String],
) -> Result<Endpoint> {
    let mut ep = Endpoint::with_addrs(addrs).ok_or_else(|| {
        Error::Usage("no vault address: give --vault-addr or set VAULT_ADDR".into())
    })?;
    ep.namespace = v
        .namespace
        .clone()
        .or_else(|| recorded.and_then(|t| t.namespace.clone()))
        .or_else(|| env(&["VAULT_NAMESPACE", "BAO_NAMESPACE"]));
    ep.ca_cert = v
        .ca_cert
        .clone()
        .or_else(|| env(&["VAULT_CACERT", "BAO_CACERT"]).map(Into::into));
    ep.ca_path = env(&["VAULT_CAPATH", "BAO_CAPATH"]).map(Into::into);
    ep.tls_server_name =
        env(&["VAULT_TLS_SERVER_NAME", "BAO_TLS_SERVER_NAME"]).map(|n| n.trim().to_string());
    if let Some(n) = &ep.tls_server_name
        && (n.is_empty()
            || !n
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.')))
    {
        return Err(Error::Usage(format!(
            "VAULT_TLS_SERVER_NAME {n:?} is not a host name"
        )));
    }
    match (
        env(&["VAULT_CLIENT_CERT", "BAO_CLIENT_CERT"]),
        env(&["VAULT_CLIENT_KEY", "BAO_CLIENT_KEY"]),
    ) {
        (Some(c), Some(k)) => ep.client_cert = Some((c.into(), k.into())),
        (None, None) => {}
        _ => {
            return Err(Error::Usage(
                "set both VAULT_CLIENT_CERT and VAULT_CLIENT_KEY (PEM files), or neither".into(),
            ));
        }
    }
    if let Some(skip) = env(&["VAULT_SKIP_VERIFY", "BAO_SKIP_VERIFY"]) {
        ep.skip_verify = match skip.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" => true,
            "0" | "false" | "f" | "no" => false,
            _ => {
                return Err(Error::Usage(format!(
                    "VAULT_SKIP_VERIFY {skip:?} is not true or false"
                )));
            }
        };
        if ep.skip_verify {
            log::warn!(
                "VAULT_SKIP_VERIFY is set: the vault's TLS certificate is NOT verified; anyone on the path can read the vault token and the unwrapped keyslot secret"
            );
        }
    }
    if let Some(t) = env(&["VAULT_CLIENT_TIMEOUT", "BAO_CLIENT_TIMEOUT"]) {
        ep.timeout = crate::vault::parse_timeout(&t).ok_or_else(|| {
            Error::Usage(format!(
                "VAULT_CLIENT_TIMEOUT {t:?} is not a number of seconds"
            ))
        })?;
    }
    if let Some(r) = env(&["VAULT_MAX_RETRIES", "BAO_MAX_RETRIES"]) {
        ep.max_retries = r
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= 10)
            .ok_or_else(|| {
                Error::Usage(format!(
                    "VAULT_MAX_RETRIES {r:?} is not a number from 0 to 10"
                ))
            })?;
    }
    Ok(ep)
}

/// The addresses the user named: --vault-addr (repeated or a comma list), else
/// VAULT_ADDR/BAO_ADDR (a comma list).
pub fn configured_addrs(v: &VaultConfig) -> Vec<String> {
    let mut addrs = v
        .addr
        .as_deref()
        .map(crate::vault::split_addrs)
        .unwrap_or_default();
    if addrs.is_empty() {
        addrs = env(&["VAULT_ADDR", "BAO_ADDR"])
            .map(|a| crate::vault::split_addrs(&a))
            .unwrap_or_default();
    }
    let mut unique = Vec::new();
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    unique
}

/// The settings alone (flags and environment, no token), checked: a bad address scheme,
/// timeout, retry count or CA file is a usage error (exit 1) on every verb, before any token
/// is tried.
pub fn check_settings(v: &VaultConfig) -> Result<()> {
    let mut addrs: Vec<String> = Vec::new();
    if let Some(a) = &v.addr {
        addrs.extend(crate::vault::split_addrs(a));
    }
    if let Some(a) = env(&["VAULT_ADDR", "BAO_ADDR"]) {
        addrs.extend(crate::vault::split_addrs(&a));
    }
    if addrs.is_empty() {
        // Only the tokens' addresses: the rest of the settings still count.
        addrs.push("http://127.0.0.1".into());
    }
    let ep = endpoint_for(v, None, &addrs)?;
    crate::vault::check_endpoint(&ep).map_err(Error::from)
}

/// Connects (and logs in) for enrolment or rewrap, where credentials are required (exit 2
/// without them).
pub fn connect_required(v: &VaultConfig, recorded: Option<&VaultToken>) -> Result<Client> {
    let ep = endpoint(v, recorded)?;
    // A bad setting is exit 1 whether or not credentials are present.
    crate::vault::check_endpoint(&ep).map_err(Error::from)?;
    let creds = credentials(v)?.ok_or_else(|| {
        Error::Vault(format!(
            "no vault credentials for {}: set VAULT_TOKEN, or give --vault-token-file or --vault-role-id-file/--vault-secret-id-file",
            ep.addr
        ))
    })?;
    Client::connect(&ep, &creds).map_err(Error::from)
}

/// Connects (and logs in) to exactly `addrs`, for re-pointing a token (`rewrap --set-addr`).
pub fn connect_to(
    v: &VaultConfig,
    recorded: Option<&VaultToken>,
    addrs: &[String],
) -> Result<Client> {
    let ep = endpoint_for(v, recorded, addrs)?;
    crate::vault::check_endpoint(&ep).map_err(Error::from)?;
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
    // The create, the wrap and its check are one read-your-writes sequence: through the
    // active node when it is reachable (and X-Vault-Index headers either way).
    client.use_active_node();
    let secret = SecretBytes::random(SECRET_BYTES)
        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let kek = wrap_new(&client, new_kek, &secret)?;
    // The token records the addresses the user named (--vault-addr, else VAULT_ADDR), never
    // the active node's own address: a load balancer or VIP name outlives any one node.
    let mut addrs = configured_addrs(v);
    if addrs.is_empty() {
        addrs = client.addrs();
    }
    let token = VaultToken {
        keyslots: vec![keyslot],
        addr: addrs.remove(0),
        more_addrs: addrs,
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

/// Opens a keyslot of token `t` with its unwrapped secret: (keyslot, volume key) or why not.
fn open_with_secret(
    meta: &Metadata,
    dev: &(impl ReadAt + ?Sized),
    secret: &SecretBytes,
    t: &VaultToken,
    only: Option<u32>,
) -> std::result::Result<(u32, VolumeKey), String> {
    let pass = keyslot_passphrase(secret);
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

/// Unwraps token `t`'s secret through its vault (its own addresses, the flags' and the
/// environment's), logging in with `creds`.
fn unwrap_through(
    v: &VaultConfig,
    creds: &Credentials,
    t: &VaultToken,
) -> std::result::Result<SecretBytes, String> {
    let ep = endpoint(v, Some(t)).map_err(|e| e.to_string())?;
    let client = Client::connect(&ep, creds).map_err(|e| e.to_string())?;
    unwrap_secret(&client, t)
}

/// Credentials that log in (AppRole, a wrapped secret_id, JWT, cert) log in once, through the
/// first token's vault, and the client token is shared by every token's thread: a secret_id
/// may allow few uses, and a wrapping token only one. When that login fails the credentials
/// stay as they are (each token's vault is tried with them, and reports why).
fn login_once(v: &VaultConfig, creds: Credentials, first: Option<&VaultToken>) -> Credentials {
    if !creds.is_login() {
        return creds;
    }
    let Ok(ep) = endpoint(v, first) else {
        return creds;
    };
    match Client::connect(&ep, &creds) {
        Ok(client) => client.token_credentials(),
        Err(e) => {
            log::debug!("vault login through {}: {e}", ep.addr);
            creds
        }
    }
}

/// Unwraps every token's secret concurrently, one thread per token, so a hung or slow vault
/// costs one timeout in all rather than one per token. Results arrive as they finish:
/// (position in `tokens`, secret or why not). A thread still waiting when the caller is done
/// ends at its own timeout.
fn unwrap_all(
    v: &VaultConfig,
    creds: &Credentials,
    tokens: &[VaultToken],
) -> std::sync::mpsc::Receiver<(usize, std::result::Result<SecretBytes, String>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, t) in tokens.iter().enumerate() {
        let (mine, v, creds, t) = (tx.clone(), v.clone(), creds.duplicate(), t.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("vault-token-{i}"))
            .spawn(move || {
                let _ = mine.send((i, unwrap_through(&v, &creds, &t)));
            });
        if let Err(e) = spawned {
            let _ = tx.send((i, Err(format!("cannot start a thread: {e}"))));
        }
    }
    rx
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
    check_settings(v)?;
    let mut why: Vec<(u32, String)> = Vec::new();
    let mut usable: Vec<(u32, VaultToken)> = Vec::new();
    for (id, parsed) in tokens {
        match parsed {
            Ok(t) => usable.push((id, t)),
            Err(e) => why.push((id, e.to_string())),
        }
    }
    let list: Vec<VaultToken> = usable.iter().map(|(_, t)| t.clone()).collect();
    let creds = login_once(v, creds, list.first());
    let rx = unwrap_all(v, &creds, &list);
    for _ in 0..list.len() {
        let Ok((i, secret)) = rx.recv() else {
            break;
        };
        let (id, t) = &usable[i];
        match secret.and_then(|s| open_with_secret(meta, dev, &s, t, only)) {
            Ok((keyslot, volume_key)) => {
                log::info!(
                    "vault token {id} ({} {} at {}) opened keyslot {keyslot}",
                    t.mode(),
                    t.kek_location(),
                    t.addr
                );
                return Ok(VaultUnlock::Opened {
                    keyslot,
                    token: *id,
                    volume_key,
                });
            }
            Err(e) => why.push((*id, e)),
        }
    }
    why.sort_by_key(|(id, _)| *id);
    Ok(VaultUnlock::Failed(
        why.into_iter()
            .map(|(id, e)| format!("token {id}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

const NO_CREDENTIALS: &str = "no vault credentials (VAULT_TOKEN, BAO_TOKEN, --vault-token-file, ~/.vault-token, AppRole files, --vault-jwt-file, --vault-cert-auth, or VAULT_AGENT_ADDR for an Agent/Proxy with auto-auth)";

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
    check_settings(v)?;
    let parsed: Vec<VaultToken> = tokens
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok().cloned())
        .collect();
    let creds = login_once(v, creds, parsed.first());
    let rx = unwrap_all(v, &creds, &parsed);
    let mut secrets: Vec<Option<std::result::Result<SecretBytes, String>>> =
        (0..parsed.len()).map(|_| None).collect();
    for _ in 0..parsed.len() {
        match rx.recv() {
            Ok((i, s)) => secrets[i] = Some(s),
            Err(_) => break,
        }
    }
    let mut secrets = secrets.into_iter();
    Ok(tokens
        .into_iter()
        .map(|(id, parsed)| match parsed {
            Ok(t) => {
                let secret = secrets
                    .next()
                    .flatten()
                    .unwrap_or_else(|| Err("no answer".into()));
                TokenCheck {
                    label: format!(
                        "vault token {id} ({} {} at {})",
                        t.mode(),
                        t.kek_location(),
                        t.addr
                    ),
                    result: secret.and_then(|s| open_with_secret(meta, dev, &s, &t, only)),
                }
            }
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
            // "Latest" only when the key itself says so (where the policy lets us read it): a
            // standby that lags a rotate would otherwise answer with the old version.
            if let Some(latest) = client.transit_latest_version(mount, key)?
                && latest > w.key_version
            {
                return Err(Error::Vault(format!(
                    "vault at {} rewrapped {mount}/{key} to version {} but its latest version is {latest} (a lagging standby?): retry, or give the active node with --vault-addr",
                    client.addr(),
                    w.key_version
                )));
            }
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
