//! OpenBao / HashiCorp Vault client: login, transit wrap/unwrap/rewrap, KV v2 read/write.
//! Knows nothing of LUKS. Every error names the vault address and the cause, never the token.
use crate::secret::SecretBytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

mod unix;

/// Connect timeout: an unreachable vault must fail fast, never hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole-request timeout unless VAULT_CLIENT_TIMEOUT says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body we read (a transit or KV answer is a few hundred bytes).
const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Tries of one request at one address by default: Vault's CLI default VAULT_MAX_RETRIES=2.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// A first attempt at an address while other addresses remain gets at most this long, so a
/// hung node (accepting connections, never answering) costs seconds, not the whole timeout.
const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Same-cluster redirects (HTTP 307 from a standby) followed for one request.
const MAX_REDIRECTS: u32 = 2;

/// Where the vault is and how to reach it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base address, e.g. `https://vault.example:8200`, without a trailing slash.
    pub addr: String,
    /// More addresses of the same vault (cluster nodes, another load balancer), tried in
    /// order after `addr` when it is unreachable, sealed, or without an active node.
    pub more_addrs: Vec<String>,
    /// Retries of one request at one address on a reset or refused connection, HTTP 5xx,
    /// 429 or 412 (VAULT_MAX_RETRIES), before the next address.
    pub max_retries: u32,
    /// Vault Enterprise / OpenBao namespace sent as X-Vault-Namespace.
    pub namespace: Option<String>,
    /// PEM file of CA certificates to trust instead of the built-in roots.
    pub ca_cert: Option<PathBuf>,
    /// A directory of PEM CA certificates to trust (VAULT_CAPATH), beside `ca_cert`.
    pub ca_path: Option<PathBuf>,
    /// TLS client certificate and its key, PEM files (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Do not verify the server's certificate (VAULT_SKIP_VERIFY): for tests only.
    pub skip_verify: bool,
    /// The name the server's certificate is checked against (and sent as SNI) instead of
    /// the address's host (VAULT_TLS_SERVER_NAME); the connection still goes to the host.
    pub tls_server_name: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
}

impl Endpoint {
    /// An endpoint with the default timeout; `addr` loses any trailing slash.
    pub fn new(addr: &str) -> Endpoint {
        Endpoint {
            addr: addr.trim_end_matches('/').to_string(),
            more_addrs: Vec::new(),
            max_retries: DEFAULT_MAX_RETRIES,
            namespace: None,
            ca_cert: None,
            ca_path: None,
            client_cert: None,
            skip_verify: false,
            tls_server_name: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// An endpoint for several addresses of one vault, tried in order (duplicates dropped).
    /// None when `addrs` is empty.
    pub fn with_addrs(addrs: &[String]) -> Option<Endpoint> {
        let mut all: Vec<String> = Vec::new();
        for a in addrs {
            let a = a.trim().trim_end_matches('/').to_string();
            if !a.is_empty() && !all.contains(&a) {
                all.push(a);
            }
        }
        let mut ep = Endpoint::new(all.first()?);
        ep.more_addrs = all.split_off(1);
        Some(ep)
    }

    /// Every address, `addr` first.
    pub fn addrs(&self) -> Vec<String> {
        std::iter::once(self.addr.clone())
            .chain(self.more_addrs.iter().cloned())
            .collect()
    }
}

/// Splits a comma-separated address list (VAULT_ADDR, `--vault-addr`, a token's addresses).
pub fn split_addrs(text: &str) -> Vec<String> {
    text.split(',')
        .map(|a| a.trim().trim_end_matches('/').to_string())
        .filter(|a| !a.is_empty())
        .collect()
}

/// How to authenticate.
pub enum Credentials {
    /// A client token (VAULT_TOKEN, BAO_TOKEN, a token file).
    Token(SecretBytes),
    /// AppRole login at `auth/<mount>/login`.
    AppRole {
        /// The AppRole auth mount, e.g. `approle`.
        mount: String,
        /// The role_id.
        role_id: SecretBytes,
        /// The secret_id.
        secret_id: SecretBytes,
    },
    /// AppRole login whose secret_id arrives response-wrapped: the wrapping token is
    /// unwrapped (`sys/wrapping/unwrap`, single use) and the secret_id inside logs in.
    WrappedAppRole {
        /// The AppRole auth mount, e.g. `approle`.
        mount: String,
        /// The role_id.
        role_id: SecretBytes,
        /// The response-wrapping token that holds the secret_id.
        wrapping_token: SecretBytes,
    },
    /// JWT login at `auth/<mount>/login` with `role` and `jwt` (the JWT/OIDC method, or
    /// Kubernetes auth with its service-account token at mount `kubernetes`).
    Jwt {
        /// The auth mount, e.g. `jwt` or `kubernetes`.
        mount: String,
        /// The role to log in as.
        role: String,
        /// The JWT (a service-account token for Kubernetes).
        jwt: SecretBytes,
    },
    /// TLS certificate login at `auth/<mount>/login` with the endpoint's client certificate.
    Cert {
        /// The auth mount, e.g. `cert`.
        mount: String,
        /// The certificate role to match (any when None).
        name: Option<String>,
    },
    /// No token of ours: a Vault Agent or OpenBao Proxy (VAULT_AGENT_ADDR) adds its
    /// auto-auth token to every request.
    AgentAutoAuth,
}

impl Credentials {
    /// A second copy (for another thread), in its own locked, wiped memory.
    pub fn duplicate(&self) -> Credentials {
        let copy = |b: &SecretBytes| SecretBytes::from_slice(b.expose_secret());
        match self {
            Credentials::Token(t) => Credentials::Token(copy(t)),
            Credentials::AppRole {
                mount,
                role_id,
                secret_id,
            } => Credentials::AppRole {
                mount: mount.clone(),
                role_id: copy(role_id),
                secret_id: copy(secret_id),
            },
            Credentials::WrappedAppRole {
                mount,
                role_id,
                wrapping_token,
            } => Credentials::WrappedAppRole {
                mount: mount.clone(),
                role_id: copy(role_id),
                wrapping_token: copy(wrapping_token),
            },
            Credentials::Jwt { mount, role, jwt } => Credentials::Jwt {
                mount: mount.clone(),
                role: role.clone(),
                jwt: copy(jwt),
            },
            Credentials::Cert { mount, name } => Credentials::Cert {
                mount: mount.clone(),
                name: name.clone(),
            },
            Credentials::AgentAutoAuth => Credentials::AgentAutoAuth,
        }
    }

    /// Whether logging in spends something (a login per use may be limited, a wrapping token
    /// is single use): such credentials log in once and share the token.
    pub fn is_login(&self) -> bool {
        !matches!(self, Credentials::Token(_) | Credentials::AgentAutoAuth)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => write!(f, "Token(<redacted>)"),
            Credentials::AppRole { mount, .. } => write!(f, "AppRole({mount}, <redacted>)"),
            Credentials::WrappedAppRole { mount, .. } => {
                write!(f, "WrappedAppRole({mount}, <redacted>)")
            }
            Credentials::Jwt { mount, role, .. } => write!(f, "Jwt({mount}, {role}, <redacted>)"),
            Credentials::Cert { mount, name } => write!(f, "Cert({mount}, {name:?})"),
            Credentials::AgentAutoAuth => write!(f, "AgentAutoAuth"),
        }
    }
}

/// Why a vault call failed. Display starts with the vault address.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No connection: host not found, connection refused or failed, or not an HTTP answer.
    #[error("vault at {addr} is unreachable: {cause}")]
    Unreachable {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// What the transport said.
        cause: String,
    },
    /// The call took longer than the endpoint's timeout.
    #[error("vault at {addr} did not answer within {secs} s")]
    Timeout {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// The timeout, in whole seconds (at least 1).
        secs: u64,
    },
    /// The TLS handshake or the server certificate failed.
    #[error(
        "vault at {addr}: TLS failed: {cause} (set VAULT_CACERT to the CA that signed its certificate)"
    )]
    Tls {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// What the TLS layer said.
        cause: String,
    },
    /// HTTP 503 with "sealed" in the message: the vault is sealed.
    #[error("vault at {addr} is sealed: unseal it (bao operator unseal) and retry")]
    Sealed {
        /// The vault address (`Endpoint::addr`).
        addr: String,
    },
    /// HTTP 403: the token is wrong or expired, or its policy does not allow the call.
    #[error(
        "vault at {addr} denied {path}: permission denied (wrong or expired token, or the policy does not allow it)"
    )]
    Denied {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// The API path after `/v1/`, e.g. `transit/decrypt/<key>`.
        path: String,
    },
    /// HTTP 404 without a message, or a KV secret without the field asked for.
    #[error("vault at {addr} has nothing at {path} (deleted, or wrong mount or name)")]
    NotFound {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// The API path after `/v1/`, e.g. `transit/decrypt/<key>`.
        path: String,
    },
    /// Any other HTTP error status.
    #[error("vault at {addr} refused {path} (HTTP {status}): {message}")]
    Rejected {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// The API path after `/v1/`, e.g. `transit/decrypt/<key>`.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The vault's `errors`, joined by "; ", token redacted ("no message" when none).
        message: String,
    },
    /// A success answer without the members expected (wrong mount type, old server).
    #[error("vault at {addr} gave an unexpected answer for {path}: {why}")]
    BadAnswer {
        /// The vault address (`Endpoint::addr`).
        addr: String,
        /// The API path after `/v1/`, e.g. `transit/decrypt/<key>`.
        path: String,
        /// What is missing or wrong in the answer.
        why: String,
    },
    /// The node answers but has no active node to serve or forward to (an election, or
    /// quorum lost).
    #[error(
        "vault at {addr}: no active node (leader election?): retry in a few seconds, or check the cluster (bao operator raft list-peers)"
    )]
    NoActiveNode {
        /// The vault address (`Endpoint::addr`).
        addr: String,
    },
    /// The node is not initialised, or has not joined its cluster yet (not "sealed").
    #[error(
        "vault at {addr} is not initialised or has not joined its cluster (bao operator init, or check its retry_join)"
    )]
    NotInitialized {
        /// The vault address (`Endpoint::addr`).
        addr: String,
    },
    /// An https:// address whose listener speaks plain HTTP.
    #[error(
        "vault at {addr} answers plain HTTP, not TLS: use http:// for this listener, or enable TLS on it"
    )]
    PlainListener {
        /// The vault address (`Endpoint::addr`).
        addr: String,
    },
    /// Every address of the vault failed; one cause per address, in the order tried.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    EveryAddress(Vec<VaultError>),
    /// A bad setting on our side: address scheme, CA file, mount or key name, timeout.
    #[error("vault setting: {0}")]
    Config(String),
}

impl VaultError {
    /// Whether another address of the same vault may do better: the node is down, hung,
    /// sealed, not joined, without an active node, or failing (HTTP 5xx, 429, 412). A
    /// permission, a missing key or a bad ciphertext is the vault's answer everywhere.
    fn try_next_address(&self) -> bool {
        match self {
            VaultError::Unreachable { .. }
            | VaultError::Timeout { .. }
            | VaultError::Sealed { .. }
            | VaultError::NoActiveNode { .. }
            | VaultError::NotInitialized { .. }
            | VaultError::Tls { .. }
            | VaultError::PlainListener { .. } => true,
            VaultError::Rejected { status, .. } => {
                *status >= 500
                    || *status == 429
                    || *status == 412
                    || *status == 307
                    || self.is_replication_lag()
            }
            _ => false,
        }
    }

    /// A transit key another node has and this one does not (yet): a standby behind the
    /// active node. Retried, then asked of the next address; a key missing everywhere still
    /// fails, with every address's answer.
    fn is_replication_lag(&self) -> bool {
        matches!(self, VaultError::Rejected { status: 400, message, .. }
            if message.contains("encryption key not found"))
    }
}

/// A logged-in client for one vault (one or more addresses of it).
///
/// Read-your-writes: every answer's `X-Vault-Index` (OpenBao's storage index) is kept and sent
/// back on later requests with `X-Vault-Inconsistent: forward-active-node`, so a standby that
/// has not caught up with our own writes forwards the request to the active node (or answers
/// 412/429, which is retried). [`Client::use_active_node`] sends everything to the active
/// node, for enrolment and rewrap, whose answers must not come from a lagging standby.
pub struct Client {
    agent: ureq::Agent,
    /// Agents of addresses that need their own: `unix://` (an Agent/Proxy socket) and
    /// `https://` with VAULT_TLS_SERVER_NAME; (address, base of its request URLs, agent).
    own_agents: Vec<(String, String, ureq::Agent)>,
    endpoint: Endpoint,
    token: SecretBytes,
    /// Index into `endpoint.addrs()` of the address that answered last.
    current: std::sync::atomic::AtomicUsize,
    /// The highest `X-Vault-Index` seen (its number, and the header as sent).
    index: std::sync::Mutex<Option<(u64, String)>>,
    /// The active node's own address when [`Client::use_active_node`] found it.
    active: std::sync::Mutex<Option<String>>,
    /// A token sent instead of `token` for one call (the wrapping token of an unwrap).
    override_token: std::sync::Mutex<Option<SecretBytes>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}, token <redacted>)", self.addr())
    }
}

/// What one HTTP exchange gave.
enum Once {
    /// A final answer (success or an error no retry changes).
    Done(Result<Value, VaultError>),
    /// Worth another try at the same address after a pause (and the pause it asked for).
    Retry(VaultError, Option<Duration>),
    /// HTTP 307 to this absolute URL.
    Redirect(String),
}

/// A transit ciphertext and the key version that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The transit ciphertext, `vault:v<N>:<base64>`.
    pub ciphertext: String,
    /// The transit key version that made it (the `N` in `vault:v<N>:`).
    pub key_version: u32,
}

impl Client {
    /// Builds the HTTP agent and logs in (AppRole) or takes the token as it is.
    pub fn connect(endpoint: &Endpoint, credentials: &Credentials) -> Result<Client, VaultError> {
        let agent = agent(endpoint)?;
        let mut own_agents = Vec::new();
        for a in endpoint.addrs() {
            if let Some(path) = a.strip_prefix("unix://") {
                let agent = unix_agent(endpoint, path.into());
                own_agents.push((a.clone(), "http://localhost".to_string(), agent));
            } else if let (Some(name), Some(rest)) =
                (&endpoint.tls_server_name, a.strip_prefix("https://"))
            {
                let authority = rest.split('/').next().unwrap_or(rest);
                let port = match authority.rsplit_once(':') {
                    Some((_, p)) if p.bytes().all(|c| c.is_ascii_digit()) => p,
                    _ => "443",
                };
                let named = format!("https://{name}:{port}");
                let real: ureq::http::Uri = format!("https://{authority}/")
                    .parse()
                    .map_err(|_| VaultError::Config(format!("bad vault address {a:?}")))?;
                let resolver = NamedResolver {
                    name: name.to_ascii_lowercase(),
                    real,
                    inner: ureq::unversioned::resolver::DefaultResolver::default(),
                };
                let agent = ureq::Agent::with_parts(
                    agent_config(endpoint)?,
                    ureq::unversioned::transport::DefaultConnector::default(),
                    resolver,
                );
                own_agents.push((a.clone(), named, agent));
            }
        }
        let mut client = Client {
            agent,
            own_agents,
            endpoint: endpoint.clone(),
            token: SecretBytes::zeroed(0),
            current: std::sync::atomic::AtomicUsize::new(0),
            index: std::sync::Mutex::new(None),
            active: std::sync::Mutex::new(None),
            override_token: std::sync::Mutex::new(None),
        };
        client.token = match credentials {
            Credentials::Token(t) => SecretBytes::from_slice(t.expose_secret()),
            Credentials::AppRole {
                mount,
                role_id,
                secret_id,
            } => client.approle_login(mount, role_id, secret_id)?,
            Credentials::WrappedAppRole {
                mount,
                role_id,
                wrapping_token,
            } => {
                let secret_id = client.unwrap_secret_id(wrapping_token)?;
                client.approle_login(mount, role_id, &secret_id)?
            }
            Credentials::Jwt { mount, role, jwt } => client.jwt_login(mount, role, jwt)?,
            Credentials::Cert { mount, name } => client.cert_login(mount, name.as_deref())?,
            Credentials::AgentAutoAuth => SecretBytes::zeroed(0),
        };
        Ok(client)
    }

    /// The client token in use, as credentials for another client of the same vault (after
    /// one login, so every token's thread need not log in again).
    pub fn token_credentials(&self) -> Credentials {
        if self.token.is_empty() {
            Credentials::AgentAutoAuth
        } else {
            Credentials::Token(SecretBytes::from_slice(self.token.expose_secret()))
        }
    }

    /// `sys/wrapping/unwrap` with the wrapping token: the `data.secret_id` inside.
    fn unwrap_secret_id(&self, wrapping_token: &SecretBytes) -> Result<SecretBytes, VaultError> {
        let path = "sys/wrapping/unwrap";
        let mut answer = self.call_as(Some(wrapping_token), "POST", path, None)?;
        take_string(&mut answer, &["data", "secret_id"])
            .ok_or_else(|| self.bad(path, "no data.secret_id in the unwrapped response"))
    }

    fn jwt_login(
        &self,
        mount: &str,
        role: &str,
        jwt: &SecretBytes,
    ) -> Result<SecretBytes, VaultError> {
        let path = format!("auth/{}/login", checked_name(mount, "JWT auth mount")?);
        let jwt = Zeroizing::new(String::from_utf8_lossy(jwt.expose_secret()).into_owned());
        let body = secret_body(None, &[("role", role), ("jwt", &jwt)], "");
        let mut answer = self.call("POST", &path, Some(&body), false)?;
        take_string(&mut answer, &["auth", "client_token"])
            .ok_or_else(|| self.bad(&path, "no auth.client_token in the login answer"))
    }

    fn cert_login(&self, mount: &str, name: Option<&str>) -> Result<SecretBytes, VaultError> {
        let path = format!("auth/{}/login", checked_name(mount, "cert auth mount")?);
        let body = json_body(&match name {
            Some(n) => json!({ "name": n }),
            None => json!({}),
        });
        let mut answer = self.call("POST", &path, Some(&body), false)?;
        take_string(&mut answer, &["auth", "client_token"])
            .ok_or_else(|| self.bad(&path, "no auth.client_token in the login answer"))
    }

    /// The address in use: the one that answered last (the first before any answer).
    pub fn addr(&self) -> String {
        let addrs = self.endpoint.addrs();
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        addrs
            .get(i)
            .cloned()
            .unwrap_or_else(|| self.endpoint.addr.clone())
    }

    /// Every configured address, in order (what a new token records).
    pub fn addrs(&self) -> Vec<String> {
        self.endpoint.addrs()
    }

    /// Sends every later request to the cluster's active node, when a node names one
    /// (`sys/leader`, unauthenticated) that answers with the same scheme; otherwise keeps the
    /// configured addresses (the `X-Vault-Index` headers still give read-your-writes).
    /// Enrolment and rewrap call this: a standby may serve reads from storage that lags the
    /// leader (a rotate not seen yet would read as "already at the latest version").
    pub fn use_active_node(&self) {
        let answer = match self.call("GET", "sys/leader", None, false) {
            Ok(a) => a,
            Err(e) => {
                log::debug!("no active node address ({e}); keeping {}", self.addr());
                return;
            }
        };
        if answer["is_self"] == Value::Bool(true) {
            return;
        }
        let Some(leader) = answer["leader_address"]
            .as_str()
            .map(|a| a.trim_end_matches('/').to_string())
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        let scheme = |a: &str| a.split("://").next().unwrap_or("").to_string();
        if scheme(&leader) != scheme(&self.addr()) {
            log::debug!(
                "the active node {leader} has another scheme; keeping {}",
                self.addr()
            );
            return;
        }
        let probe = format!("{leader}/v1/sys/leader");
        let ok = matches!(
            self.exchange(
                &leader,
                &probe,
                "GET",
                "sys/leader",
                None,
                false,
                FIRST_ATTEMPT_TIMEOUT
            ),
            Once::Done(Ok(_))
        );
        if ok {
            log::info!("vault: using the active node {leader} for this operation");
            if let Ok(mut a) = self.active.lock() {
                *a = Some(leader);
            }
        } else {
            log::debug!(
                "the active node {leader} does not answer here; keeping {}",
                self.addr()
            );
        }
    }

    /// The namespace sent as X-Vault-Namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.endpoint.namespace.as_deref()
    }

    fn approle_login(
        &self,
        mount: &str,
        role_id: &SecretBytes,
        secret_id: &SecretBytes,
    ) -> Result<SecretBytes, VaultError> {
        let path = format!("auth/{}/login", checked_name(mount, "AppRole mount")?);
        let text = |b: &SecretBytes| {
            Zeroizing::new(String::from_utf8_lossy(b.expose_secret()).into_owned())
        };
        let (role, secret) = (text(role_id), text(secret_id));
        let body = secret_body(None, &[("role_id", &role), ("secret_id", &secret)], "");
        let mut answer = self.call("POST", &path, Some(&body), false)?;
        let token = take_string(&mut answer, &["auth", "client_token"])
            .ok_or_else(|| self.bad(&path, "no auth.client_token in the login answer"))?;
        Ok(token)
    }

    /// Wraps `plaintext` with transit key `key` at `mount` (transit/encrypt).
    pub fn transit_encrypt(
        &self,
        mount: &str,
        key: &str,
        plaintext: &[u8],
    ) -> Result<Wrapped, VaultError> {
        let path = transit_path(mount, "encrypt", key)?;
        let b64 = Zeroizing::new(B64.encode(plaintext));
        let body = secret_body(None, &[("plaintext", &b64)], "");
        let answer = self.call("POST", &path, Some(&body), true)?;
        self.wrapped(&path, &answer)
    }

    /// Unwraps a transit ciphertext (transit/decrypt).
    pub fn transit_decrypt(
        &self,
        mount: &str,
        key: &str,
        ciphertext: &str,
    ) -> Result<SecretBytes, VaultError> {
        let path = transit_path(mount, "decrypt", key)?;
        let mut answer = self.call(
            "POST",
            &path,
            Some(&json_body(&json!({ "ciphertext": ciphertext }))),
            true,
        )?;
        let b64 = take_string(&mut answer, &["data", "plaintext"])
            .ok_or_else(|| self.bad(&path, "no data.plaintext"))?;
        let mut raw = B64
            .decode(b64.expose_secret())
            .map_err(|_| self.bad(&path, "data.plaintext is not base64"))?;
        let out = SecretBytes::from_slice(&raw);
        raw.zeroize();
        Ok(out)
    }

    /// Re-encrypts a transit ciphertext under the key's latest version (transit/rewrap).
    pub fn transit_rewrap(
        &self,
        mount: &str,
        key: &str,
        ciphertext: &str,
    ) -> Result<Wrapped, VaultError> {
        let path = transit_path(mount, "rewrap", key)?;
        let answer = self.call(
            "POST",
            &path,
            Some(&json_body(&json!({ "ciphertext": ciphertext }))),
            true,
        )?;
        self.wrapped(&path, &answer)
    }

    /// The latest version of transit key `key` (`transit/keys/<key>`), or None when the
    /// policy does not allow reading the key's metadata.
    pub fn transit_latest_version(
        &self,
        mount: &str,
        key: &str,
    ) -> Result<Option<u32>, VaultError> {
        let path = transit_path(mount, "keys", key)?;
        match self.call("GET", &path, None, true) {
            Ok(answer) => answer["data"]["latest_version"]
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .map(Some)
                .ok_or_else(|| self.bad(&path, "no data.latest_version")),
            Err(VaultError::Denied { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates transit key `key` (aes256-gcm96) if it does not exist yet.
    pub fn transit_create_key(&self, mount: &str, key: &str) -> Result<(), VaultError> {
        let path = transit_path(mount, "keys", key)?;
        let body = json_body(&json!({ "type": "aes256-gcm96" }));
        self.call("POST", &path, Some(&body), true)?;
        Ok(())
    }

    /// Reads `field` of KV v2 secret `path` at `mount` (a given version, or the latest):
    /// (value, version).
    pub fn kv_read(
        &self,
        mount: &str,
        path: &str,
        field: &str,
        version: Option<u32>,
    ) -> Result<(SecretBytes, u32), VaultError> {
        let mut api = format!(
            "{}/data/{}",
            checked_name(mount, "KV mount")?,
            checked_name(path, "KV path")?
        );
        if let Some(v) = version {
            api.push_str(&format!("?version={v}"));
        }
        let mut answer = self.call("GET", &api, None, true)?;
        let version = answer["data"]["metadata"]["version"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| {
                self.bad(
                    &api,
                    "no data.metadata.version (is the mount KV version 2?)",
                )
            })?;
        let value = take_string(&mut answer, &["data", "data", field]).ok_or_else(|| {
            VaultError::NotFound {
                addr: self.addr(),
                path: format!("{api} field {field:?}"),
            }
        })?;
        Ok((value, version))
    }

    /// Writes `field` = `value` to KV v2 secret `path`; with `create_only` the write fails if
    /// the secret exists (check-and-set 0). Returns the new version.
    pub fn kv_write(
        &self,
        mount: &str,
        path: &str,
        field: &str,
        value: &[u8],
        create_only: bool,
    ) -> Result<u32, VaultError> {
        let api = format!(
            "{}/data/{}",
            checked_name(mount, "KV mount")?,
            checked_name(path, "KV path")?
        );
        let text = Zeroizing::new(String::from_utf8_lossy(value).into_owned());
        let tail = if create_only {
            r#","options":{"cas":0}"#
        } else {
            ""
        };
        let body = secret_body(Some("data"), &[(field, &text)], tail);
        let answer = self.call("POST", &api, Some(&body), true)?;
        answer["data"]["version"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.bad(&api, "no data.version"))
    }

    fn wrapped(&self, path: &str, answer: &Value) -> Result<Wrapped, VaultError> {
        let ciphertext = answer["data"]["ciphertext"]
            .as_str()
            .ok_or_else(|| self.bad(path, "no data.ciphertext"))?
            .to_string();
        let key_version = match answer["data"]["key_version"].as_u64() {
            Some(v) => u32::try_from(v).map_err(|_| self.bad(path, "key_version too large"))?,
            None => ciphertext_version(&ciphertext)
                .ok_or_else(|| self.bad(path, "ciphertext without a key version"))?,
        };
        Ok(Wrapped {
            ciphertext,
            key_version,
        })
    }

    fn bad(&self, path: &str, why: &str) -> VaultError {
        self.bad_at(&self.addr(), path, why)
    }

    fn bad_at(&self, base: &str, path: &str, why: &str) -> VaultError {
        VaultError::BadAnswer {
            addr: base.to_string(),
            path: path.to_string(),
            why: why.to_string(),
        }
    }

    /// One API call with a JSON `body` already encoded (see [`json_body`], [`secret_body`]); the
    /// answer body is parsed as JSON (an empty body is `null`). Tries the active node when
    /// pinned, then each address from the one that answered last, each with bounded retries.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        with_token: bool,
    ) -> Result<Value, VaultError> {
        let addrs = self.endpoint.addrs();
        let first = self
            .current
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(addrs.len().saturating_sub(1));
        let mut order: Vec<(Option<usize>, String)> = Vec::new();
        if let Some(active) = self.active.lock().ok().and_then(|a| a.clone()) {
            order.push((None, active));
        }
        for k in 0..addrs.len() {
            let i = (first + k) % addrs.len();
            order.push((Some(i), addrs[i].clone()));
        }
        let mut errors = Vec::new();
        let count = order.len();
        for (n, (i, base)) in order.into_iter().enumerate() {
            match self.call_at(&base, method, path, body, with_token, n + 1 == count) {
                Ok(v) => {
                    if let Some(i) = i {
                        self.current.store(i, std::sync::atomic::Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e) if e.try_next_address() && n + 1 < count => {
                    log::info!("vault: {e}; trying the next address");
                    errors.push(e);
                }
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
        }
        Err(if errors.len() == 1 {
            errors.remove(0)
        } else {
            VaultError::EveryAddress(errors)
        })
    }

    /// A call with `token` instead of the client's (the wrapping token of an unwrap).
    fn call_as(
        &self,
        token: Option<&SecretBytes>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Value, VaultError> {
        let saved = self.override_token.lock().ok().map(|mut o| {
            std::mem::replace(
                &mut *o,
                token.map(|t| SecretBytes::from_slice(t.expose_secret())),
            )
        });
        let r = self.call(method, path, body, true);
        if let (Some(saved), Ok(mut o)) = (saved, self.override_token.lock()) {
            *o = saved;
        }
        r
    }

    /// The call at one address: retries (VAULT_MAX_RETRIES) with a short backoff on failures
    /// another try may fix, same-cluster redirects followed.
    fn call_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        with_token: bool,
        last_address: bool,
    ) -> Result<Value, VaultError> {
        let mut url = format!("{base}/v1/{path}");
        let mut redirects = 0;
        let mut attempt: u32 = 0;
        loop {
            // A hung node must not cost the whole timeout while other addresses remain.
            let timeout = if last_address {
                self.endpoint.timeout
            } else {
                self.endpoint.timeout.min(FIRST_ATTEMPT_TIMEOUT)
            };
            match self.exchange(base, &url, method, path, body, with_token, timeout) {
                Once::Done(Err(VaultError::Unreachable { .. } | VaultError::Timeout { .. }))
                    if redirects > 0 =>
                {
                    return Err(VaultError::NoActiveNode {
                        addr: base.to_string(),
                    });
                }
                Once::Done(r) => return r,
                Once::Redirect(location) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS || !self.same_cluster(&location) {
                        return Err(VaultError::Rejected {
                            addr: base.to_string(),
                            path: path.to_string(),
                            status: 307,
                            message: "redirected to an address outside this vault; give the active node's address".into(),
                        });
                    }
                    log::debug!("vault: {path} redirected to the active node");
                    url = location;
                }
                Once::Retry(e, wait) => {
                    // The active node a standby redirected to does not answer: it is gone
                    // (an election); the retry asks the standby again.
                    let e = if redirects > 0 {
                        url = format!("{base}/v1/{path}");
                        redirects = 0;
                        match e {
                            VaultError::Unreachable { .. } | VaultError::Timeout { .. } => {
                                VaultError::NoActiveNode {
                                    addr: base.to_string(),
                                }
                            }
                            other => other,
                        }
                    } else {
                        e
                    };
                    // Nothing listens there (a dead node): the next address at once; the
                    // last address still gets its retries (a node restarting).
                    let refused = matches!(&e, VaultError::Unreachable { cause, .. }
                        if cause.contains("refused"));
                    attempt += 1;
                    if attempt > self.endpoint.max_retries || (refused && !last_address) {
                        return Err(e);
                    }
                    let backoff = Duration::from_millis(150 << (attempt - 1).min(3));
                    log::debug!(
                        "vault: {e}; retry {attempt} of {}",
                        self.endpoint.max_retries
                    );
                    std::thread::sleep(wait.unwrap_or(backoff).min(Duration::from_secs(1)));
                }
            }
        }
    }

    /// A 307's Location may get the token only when it is one of our addresses' hosts, with
    /// the same scheme (a standby names the active node of the same cluster).
    fn same_cluster(&self, location: &str) -> bool {
        let host = |a: &str| -> Option<(String, String)> {
            let (scheme, rest) = a.split_once("://")?;
            let authority = rest.split('/').next()?;
            let host = match authority.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
                _ => authority,
            };
            Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
        };
        let Some(target) = host(location) else {
            return false;
        };
        let mut known = self.endpoint.addrs();
        if let Some(a) = self.active.lock().ok().and_then(|a| a.clone()) {
            known.push(a);
        }
        known.iter().any(|a| host(a).as_ref() == Some(&target))
    }

    /// One HTTP exchange with `url` (at address `base`) and what to do next.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &self,
        base: &str,
        url: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        with_token: bool,
        timeout: Duration,
    ) -> Once {
        let mut token = match self
            .override_token
            .lock()
            .ok()
            .as_deref()
            .and_then(Option::as_ref)
        {
            Some(t) => String::from_utf8_lossy(t.expose_secret()).into_owned(),
            None => String::from_utf8_lossy(self.token.expose_secret()).into_owned(),
        };
        let result = (|| {
            let body_bytes = body.unwrap_or_default();
            // A unix:// address: HTTP over the socket, the URL's host a placeholder; an https://
            // address with VAULT_TLS_SERVER_NAME: the name in the URL, resolved to the host.
            let special = self.own_agents.iter().find(|(a, _, _)| a == base);
            let url = match (url.strip_prefix(base), special) {
                (Some(rest), Some((_, url_base, _))) => format!("{url_base}{rest}"),
                _ => url.to_string(),
            };
            let mut request = ureq::http::Request::builder()
                .method(method)
                .uri(&url)
                .header("X-Vault-Request", "true")
                .header("Content-Type", "application/json");
            // No token at all (Agent/Proxy auto-auth): the proxy adds its own.
            if with_token && !token.is_empty() {
                request = request.header("X-Vault-Token", token.as_str());
            }
            if let Some(ns) = &self.endpoint.namespace {
                request = request.header("X-Vault-Namespace", ns.as_str());
            }
            if let Some((_, index)) = self.index.lock().ok().and_then(|i| i.clone()) {
                request = request
                    .header("X-Vault-Index", index)
                    .header("X-Vault-Inconsistent", "forward-active-node");
            }
            let request = match request.body(body_bytes) {
                Ok(r) => r,
                Err(e) => {
                    return Once::Done(Err(self.bad_at(
                        base,
                        path,
                        &format!("cannot build the request: {e}"),
                    )));
                }
            };
            let agent = special.map_or(&self.agent, |(_, _, agent)| agent);
            let request = agent
                .configure_request(request)
                .timeout_global(Some(timeout))
                .build();
            let response = match agent.run(request) {
                Ok(r) => r,
                Err(e) => return self.transport_outcome(base, e, timeout),
            };
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            if let Some(index) = header("x-vault-index") {
                self.note_index(index);
            }
            let location = header("location");
            let retry_after = header("retry-after")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let raw = match response
                .into_body()
                .with_config()
                .limit(MAX_BODY_BYTES)
                .read_to_vec()
            {
                Ok(raw) => SecretBytes::from_vec(raw),
                Err(e) => return self.transport_outcome(base, e, timeout),
            };
            if status == 307 {
                return match location {
                    Some(l) if l.starts_with("http://") || l.starts_with("https://") => {
                        Once::Redirect(l)
                    }
                    // A standby that cannot name the active node: an election.
                    _ => Once::Retry(
                        VaultError::NoActiveNode {
                            addr: base.to_string(),
                        },
                        None,
                    ),
                };
            }
            let r = self.interpret_at(base, path, status, raw.expose_secret());
            match r {
                Err(e @ VaultError::Rejected { status, .. })
                    if status == 429 || status == 412 || (status >= 500 && status != 501) =>
                {
                    Once::Retry(e, retry_after)
                }
                Err(e @ VaultError::NoActiveNode { .. }) => Once::Retry(e, None),
                // A standby that has not yet replicated a key made a moment ago (enrol
                // --create, then an unlock in another process, which has no index to send).
                Err(e) if e.is_replication_lag() => Once::Retry(e, None),
                // A node that was never initialised (or has not joined its Raft cluster)
                // answers "sealed" too: sys/seal-status tells them apart.
                Err(VaultError::Sealed { addr }) if path != "sys/seal-status" => {
                    Once::Done(Err(self.sealed_or_uninitialised(addr, timeout)))
                }
                other => Once::Done(other),
            }
        })();
        token.zeroize();
        result
    }

    /// `Sealed`, or `NotInitialized` when the node's sys/seal-status says `initialized: false`.
    fn sealed_or_uninitialised(&self, addr: String, timeout: Duration) -> VaultError {
        let url = format!("{addr}/v1/sys/seal-status");
        match self.exchange(&addr, &url, "GET", "sys/seal-status", None, false, timeout) {
            Once::Done(Ok(v)) if v["initialized"] == Value::Bool(false) => {
                VaultError::NotInitialized { addr }
            }
            _ => VaultError::Sealed { addr },
        }
    }

    /// Keeps the highest storage index seen (the header's JSON `value`; an index that is not
    /// a number is kept as the latest).
    fn note_index(&self, header: String) {
        let number = B64
            .decode(header.trim())
            .ok()
            .and_then(|raw| serde_json::from_slice::<Value>(&raw).ok())
            .and_then(|v| {
                v["value"]
                    .as_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .or_else(|| v["value"].as_u64())
            });
        if let Ok(mut kept) = self.index.lock() {
            let newer = match (&*kept, number) {
                (Some((old, _)), Some(n)) => n >= *old,
                _ => true,
            };
            if newer {
                *kept = Some((number.unwrap_or(0), header));
            }
        }
    }

    fn transport_outcome(&self, base: &str, e: ureq::Error, timeout: Duration) -> Once {
        let retry = match &e {
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            ),
            ureq::Error::ConnectionFailed => true,
            _ => false,
        };
        let err = self.transport_error_at(base, e, timeout);
        if retry {
            Once::Retry(err, None)
        } else {
            Once::Done(Err(err))
        }
    }

    fn interpret_at(
        &self,
        base: &str,
        path: &str,
        status: u16,
        raw: &[u8],
    ) -> Result<Value, VaultError> {
        let parsed: Value = if raw.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(raw).map_err(|_| {
                self.bad_at(
                    base,
                    path,
                    &format!("HTTP {status} with a body that is not JSON (is this a vault?)"),
                )
            })?
        };
        if (200..300).contains(&status) {
            return Ok(parsed);
        }
        let message = parsed["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.replace('\n', " ").trim().to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        // A server never should, but an echoed token must not reach a message.
        let token =
            Zeroizing::new(String::from_utf8_lossy(self.token.expose_secret()).into_owned());
        let message = if token.is_empty() {
            message
        } else {
            message.replace(token.as_str(), "<redacted>")
        };
        let addr = base.to_string();
        let path = path.to_string();
        let lower = message.to_lowercase();
        Err(match status {
            503 | 400 | 500
                if lower.contains("not initialized") || lower.contains("not initialised") =>
            {
                VaultError::NotInitialized { addr }
            }
            503 if message.contains("sealed") => VaultError::Sealed { addr },
            500 | 503
                if lower.contains("active cluster node not found")
                    || lower.contains("node is not active")
                    || lower.contains("no active node")
                    || lower.contains("leader") && lower.contains("not") =>
            {
                VaultError::NoActiveNode { addr }
            }
            403 => VaultError::Denied { addr, path },
            404 if message.is_empty() => VaultError::NotFound { addr, path },
            _ => VaultError::Rejected {
                addr,
                path,
                status,
                message: if message.is_empty() {
                    "no message".into()
                } else {
                    message
                },
            },
        })
    }

    fn transport_error_at(&self, base: &str, e: ureq::Error, timeout: Duration) -> VaultError {
        let addr = base.to_string();
        match e {
            ureq::Error::Timeout(_) => VaultError::Timeout {
                addr,
                secs: timeout.as_secs().max(1),
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                VaultError::Timeout {
                    addr,
                    secs: timeout.as_secs().max(1),
                }
            }
            ureq::Error::Io(io) => {
                let cause = crate::error::plain_io(&io);
                if addr.starts_with("https://") && plain_http_answer(&cause) {
                    return VaultError::PlainListener { addr };
                }
                // rustls reports certificate problems through the I/O error of the handshake.
                let tls_words = ["certificate", "handshake", "tls", "peer"];
                if addr.starts_with("https://") && tls_words.iter().any(|w| cause.contains(w)) {
                    VaultError::Tls { addr, cause }
                } else {
                    VaultError::Unreachable { addr, cause }
                }
            }
            ureq::Error::HostNotFound => VaultError::Unreachable {
                addr,
                cause: "host not found".into(),
            },
            ureq::Error::ConnectionFailed => VaultError::Unreachable {
                addr,
                cause: "connection failed".into(),
            },
            ureq::Error::Tls(why) => VaultError::Tls {
                addr,
                cause: why.to_string(),
            },
            ureq::Error::Rustls(r) if plain_http_answer(&r.to_string()) => {
                VaultError::PlainListener { addr }
            }
            ureq::Error::Rustls(r) => VaultError::Tls {
                addr,
                cause: r.to_string(),
            },
            ureq::Error::Protocol(p) => VaultError::Unreachable {
                addr,
                cause: format!(
                    "not an HTTP answer ({p}); is the address http:// vs https:// right?"
                ),
            },
            ureq::Error::BadUri(u) => VaultError::Config(format!("bad vault address {u}")),
            other => VaultError::Unreachable {
                addr,
                cause: other.to_string(),
            },
        }
    }
}

/// rustls's words for a TLS handshake answered with plain HTTP bytes.
fn plain_http_answer(cause: &str) -> bool {
    let c = cause.to_lowercase();
    c.contains("corrupt message") || c.contains("invalidcontenttype") || c.contains("http request")
}

/// The agent of a `unix://` address: HTTP (never TLS) over the socket `path`.
fn unix_agent(endpoint: &Endpoint, path: PathBuf) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(endpoint.timeout))
        .max_redirects(0)
        .max_idle_connections(0)
        .build();
    ureq::Agent::with_parts(
        config,
        unix::UnixConnector { path },
        ureq::unversioned::resolver::DefaultResolver::default(),
    )
}

/// Resolves the VAULT_TLS_SERVER_NAME host to the address's real host, so TLS checks the
/// certificate against the name while the connection goes where the address says.
#[derive(Debug)]
struct NamedResolver {
    name: String,
    real: ureq::http::Uri,
    inner: ureq::unversioned::resolver::DefaultResolver,
}

impl ureq::unversioned::resolver::Resolver for NamedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let target = if uri.host().map(str::to_ascii_lowercase).as_deref() == Some(&self.name) {
            &self.real
        } else {
            uri
        };
        self.inner.resolve(target, config, timeout)
    }
}

fn agent(endpoint: &Endpoint) -> Result<ureq::Agent, VaultError> {
    Ok(agent_config(endpoint)?.into())
}

fn agent_config(endpoint: &Endpoint) -> Result<ureq::config::Config, VaultError> {
    for addr in endpoint.addrs() {
        let unix_ok = addr
            .strip_prefix("unix://")
            .is_some_and(|p| p.starts_with('/') && p.len() > 1);
        if !(addr.starts_with("http://") || addr.starts_with("https://") || unix_ok) {
            return Err(VaultError::Config(format!(
                "vault address {addr:?} must start with http://, https:// or unix:///"
            )));
        }
    }
    let mut tls = ureq::tls::TlsConfig::builder();
    let mut roots = Vec::new();
    if let Some(ca) = &endpoint.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| {
            VaultError::Config(format!(
                "cannot read CA file {}: {}",
                ca.display(),
                crate::error::plain_io(&e)
            ))
        })?;
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(VaultError::Config(format!(
                "CA file {} holds no PEM certificate",
                ca.display()
            )));
        }
        roots.extend(certs);
    }
    if let Some(dir) = &endpoint.ca_path {
        let unreadable = |e: std::io::Error| {
            VaultError::Config(format!(
                "cannot read CA directory {}: {}",
                dir.display(),
                crate::error::plain_io(&e)
            ))
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let before = roots.len();
        for f in files.iter().take(1000) {
            // Files that are not PEM certificates (hash links to them, READMEs) are skipped.
            if let Ok(pem) = std::fs::read(f) {
                roots.extend(ureq::tls::parse_pem(&pem).filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                }));
            }
        }
        if roots.len() == before {
            return Err(VaultError::Config(format!(
                "CA directory {} holds no PEM certificate",
                dir.display()
            )));
        }
    }
    if !roots.is_empty() {
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    }
    if let Some((cert, key_file)) = &endpoint.client_cert {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read(p).map_err(|e| {
                VaultError::Config(format!(
                    "cannot read client {what} {}: {}",
                    p.display(),
                    crate::error::plain_io(&e)
                ))
            })
        };
        let chain: Vec<_> = ureq::tls::parse_pem(&read(cert, "certificate")?)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let key_pem = Zeroizing::new(read(key_file, "key")?);
        let key = ureq::tls::parse_pem(&key_pem).find_map(|item| match item {
            Ok(ureq::tls::PemItem::PrivateKey(k)) => Some(k),
            _ => None,
        });
        match (chain.is_empty(), key) {
            (false, Some(key)) => {
                tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
            }
            _ => {
                return Err(VaultError::Config(format!(
                    "VAULT_CLIENT_CERT {} / VAULT_CLIENT_KEY {}: need a PEM certificate and a PEM private key",
                    cert.display(),
                    key_file.display()
                )));
            }
        }
    }
    if endpoint.skip_verify {
        tls = tls.disable_verification(true);
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT.min(endpoint.timeout)))
        .timeout_global(Some(endpoint.timeout))
        .max_redirects(0)
        .tls_config(tls.build())
        .build();
    Ok(config)
}

/// Checks an endpoint's settings without contacting it: address schemes, the CA file.
pub fn check_endpoint(endpoint: &Endpoint) -> Result<(), VaultError> {
    agent(endpoint).map(|_| ())
}

/// `<mount>/<op>/<key>` of the transit engine, names checked.
fn transit_path(mount: &str, op: &str, key: &str) -> Result<String, VaultError> {
    Ok(format!(
        "{}/{op}/{}",
        checked_name(mount, "transit mount")?,
        checked_name(key, "transit key")?
    ))
}

/// A JSON request body without secrets.
fn json_body(v: &Value) -> Vec<u8> {
    // Serialising a Value into memory cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// A JSON request body holding secret strings, written straight into one zeroizing buffer
/// sized for the worst case up front, so it never reallocates and no unwiped copy (a
/// `serde_json::Value`, a grown-out-of Vec) is left behind. `fields` are string members,
/// nested in an object named `wrap` when given; `tail` is raw JSON appended as more members
/// of the top-level object (no secrets).
fn secret_body(wrap: Option<&str>, fields: &[(&str, &str)], tail: &str) -> Zeroizing<Vec<u8>> {
    // Escaping turns one byte into at most six (\u00XX); two quotes per string, then `:`,
    // `,` and braces.
    let quoted = |t: &str| 6 * t.len() + 2;
    let cap = 4
        + wrap.map_or(0, |w| quoted(w) + 3)
        + tail.len()
        + fields
            .iter()
            .map(|(k, v)| quoted(k) + quoted(v) + 2)
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(cap));
    let start = out.as_ptr();
    out.push(b'{');
    if let Some(w) = wrap {
        push_json_str(&mut out, w);
        out.extend_from_slice(b":{");
    }
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, k);
        out.push(b':');
        push_json_str(&mut out, v);
    }
    if wrap.is_some() {
        out.push(b'}');
    }
    out.extend_from_slice(tail.as_bytes());
    out.push(b'}');
    debug_assert_eq!(out.as_ptr(), start, "secret_body reallocated");
    out
}

/// Appends `s` as a JSON string; serde_json writes the escaped pieces straight into `out`.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl From<VaultError> for crate::error::Error {
    /// A bad vault option is a usage error (exit 1); everything else is a vault failure (exit 2).
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Config(msg) => crate::error::Error::Usage(msg),
            other => crate::error::Error::Vault(other.to_string()),
        }
    }
}

/// The key version of a `vault:vN:...` ciphertext.
pub fn ciphertext_version(ciphertext: &str) -> Option<u32> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    rest.split(':').next()?.parse().ok()
}

/// Takes a string out of `value` at `path` into a secret, wiping the JSON copy.
fn take_string(value: &mut Value, path: &[&str]) -> Option<SecretBytes> {
    let mut v = value;
    for p in path {
        v = v.get_mut(*p)?;
    }
    match v.take() {
        Value::String(mut s) => {
            let out = SecretBytes::from_slice(s.as_bytes());
            s.zeroize();
            Some(out)
        }
        _ => None,
    }
}

/// Mount, key and path names go into URLs: letters, digits and `-_.` (and `/` between
/// segments), no empty or `..` segment. They may come from an untrusted header.
pub fn checked_name<'a>(name: &'a str, what: &str) -> Result<&'a str, VaultError> {
    let ok = !name.is_empty()
        && name.len() <= 512
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != ".." && seg != ".")
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(name)
    } else {
        Err(VaultError::Config(format!(
            "{what} {name:?} is not a valid name (letters, digits, - _ . and / only)"
        )))
    }
}

/// Parses VAULT_CLIENT_TIMEOUT as Vault's CLI does: seconds, optionally with an `s` suffix.
pub fn parse_timeout(text: &str) -> Option<Duration> {
    let t = text.trim();
    let t = t.strip_suffix('s').unwrap_or(t);
    t.parse::<u64>()
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Secret request bodies are exact JSON, never outgrow their first allocation (the debug
    /// assertion in `secret_body`), and are wiped when dropped.
    #[test]
    fn secret_bodies_are_exact_json_in_one_wiped_buffer() {
        use crate::sys::dealloc_probe::{freed_zeroed, watch};
        let _probe = crate::secret::PROBE_LOCK
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let nasty = "\u{1}\u{1f}\"\\\n\té\u{7f}".repeat(50);
        let body = secret_body(Some("data"), &[("kek", &nasty)], r#","options":{"cas":0}"#);
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v, json!({"data": {"kek": nasty}, "options": {"cas": 0}}));
        let body = secret_body(None, &[("role_id", "r"), ("secret_id", &nasty)], "");
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v, json!({"role_id": "r", "secret_id": nasty}));
        let body = secret_body(
            None,
            &[("plaintext", "aGVsbG8gaGVsbG8gaGVsbG8gaGVsbG8=")],
            "",
        );
        assert_eq!(
            &body[..],
            br#"{"plaintext":"aGVsbG8gaGVsbG8gaGVsbG8gaGVsbG8="}"#
        );
        watch(body.as_ptr(), body.len());
        drop(body);
        assert_eq!(freed_zeroed(), Some(true), "secret body");
    }

    #[test]
    fn names_that_could_escape_the_url_are_refused() {
        assert!(checked_name("transit", "m").is_ok());
        assert!(checked_name("disks/db1", "p").is_ok());
        for bad in [
            "", "a/../b", "..", "a//b", "a?b", "a b", "/a", "a%2f", "k#x",
        ] {
            assert!(checked_name(bad, "p").is_err(), "{bad}");
        }
    }

    #[test]
    fn ciphertext_versions() {
        assert_eq!(ciphertext_version("vault:v1:abc"), Some(1));
        assert_eq!(ciphertext_version("vault:v12:abc"), Some(12));
        assert_eq!(ciphertext_version("vault:x:abc"), None);
        assert_eq!(ciphertext_version("abc"), None);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout("7s"), Some(Duration::from_secs(7)));
        assert_eq!(parse_timeout("0"), None);
        assert_eq!(parse_timeout("x"), None);
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials::Token(SecretBytes::from_slice(b"s.secrettoken"));
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            split_addrs(" http://a:1/ ,, https://b:2"),
            vec!["http://a:1".to_string(), "https://b:2".to_string()]
        );
        let ep = Endpoint::with_addrs(&["http://a".into(), "http://b/".into(), "http://a".into()])
            .expect("endpoint");
        assert_eq!(
            ep.addrs(),
            vec!["http://a".to_string(), "http://b".to_string()]
        );
        assert!(Endpoint::with_addrs(&[]).is_none());
        let mut bad = Endpoint::new("ftp://a");
        assert!(check_endpoint(&bad).is_err());
        bad.addr = "unix://relative".into();
        assert!(check_endpoint(&bad).is_err());
        bad.addr = "unix:///run/bao.sock".into();
        assert!(check_endpoint(&bad).is_ok());
    }

    fn client(addrs: &[&str]) -> Client {
        let ep = Endpoint::with_addrs(&addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .expect("endpoint");
        Client::connect(&ep, &Credentials::Token(SecretBytes::from_slice(b"t"))).expect("client")
    }

    /// A 307 may carry the token only to a known host, with the same scheme.
    #[test]
    fn redirects_stay_in_the_cluster() {
        let c = client(&["https://vault.example:8200", "https://10.0.0.2:8200"]);
        assert!(c.same_cluster("https://vault.example:8201/v1/x"));
        assert!(c.same_cluster("https://10.0.0.2/v1/x"));
        assert!(
            !c.same_cluster("http://vault.example:8200/v1/x"),
            "downgrade"
        );
        assert!(!c.same_cluster("https://evil.example:8200/v1/x"));
        assert!(!c.same_cluster("https://vault.example.evil:8200/v1/x"));
        assert!(!c.same_cluster("/v1/x"));
    }

    /// The highest storage index is kept (a standby's older one never replaces it).
    #[test]
    fn storage_index_only_moves_forward() {
        let c = client(&["http://a"]);
        let idx = |n: u64| B64.encode(format!(r#"{{"cluster":"c","value":"{n}"}}"#));
        c.note_index(idx(40));
        c.note_index(idx(38));
        assert_eq!(c.index.lock().expect("lock").clone(), Some((40, idx(40))));
        c.note_index(idx(41));
        assert_eq!(c.index.lock().expect("lock").clone(), Some((41, idx(41))));
    }

    #[test]
    fn refused_connection_names_the_address() {
        // A port nobody listens on: bind, note the port, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let addr = format!("http://127.0.0.1:{port}");
        let c = Client::connect(
            &Endpoint::new(&addr),
            &Credentials::Token(SecretBytes::from_slice(b"tok")),
        )
        .expect("no network at connect");
        let e = c.transit_encrypt("transit", "k", b"x").unwrap_err();
        assert!(matches!(e, VaultError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&addr), "{e}");
        assert!(!e.to_string().contains("tok"), "{e}");
    }
}
