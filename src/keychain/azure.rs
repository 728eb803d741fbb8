//! Azure Key Vault client for ADE key material (ade-facts §3): `GET {vault}/secrets/{name}/
//! {version}?api-version=7.4` (a SecretBundle, read like `az keyvault secret show` output) and
//! `POST {vault}/keys/{name}/{version}/unwrapkey?api-version=7.4` with `{"alg", "value"}`
//! (base64url) for a wrapped BEK. Errors are Key Vault's `{"error":{"code","message"}}` on one
//! line. Tokens (azure_token.rs) are sent only to Azure's Key Vault domains, or to hosts the
//! user allowed (`--keyvault-allow-host`): the KEK URL comes from a file's tags, and a token
//! must not go wherever a file points. Tested against tests/azure_kv/server.py, not Azure.
use super::secret::{KekAlgorithm, SecretRecord};
use super::{AzureConfig, azure_token, b64};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use serde_json::Value;
use std::cell::RefCell;
use std::time::Duration;
use zeroize::Zeroizing;

/// The Key Vault data-plane API version sent.
pub const API_VERSION: &str = "7.4";
/// Largest answer body read (a secret bundle or unwrap answer is a few KiB).
const MAX_BODY_BYTES: u64 = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Azure's Key Vault and Managed HSM domains, and the token resource of each (public,
/// China, US Government, Germany clouds).
const DOMAINS: &[(&str, &str)] = &[
    (".vault.azure.net", "https://vault.azure.net"),
    (".vault.azure.cn", "https://vault.azure.cn"),
    (
        ".vault.usgovcloudapi.net",
        "https://vault.usgovcloudapi.net",
    ),
    (
        ".vault.microsoftazure.de",
        "https://vault.microsoftazure.de",
    ),
    (".managedhsm.azure.net", "https://managedhsm.azure.net"),
    (".managedhsm.azure.cn", "https://managedhsm.azure.cn"),
    (
        ".managedhsm.usgovcloudapi.net",
        "https://managedhsm.usgovcloudapi.net",
    ),
];

/// A Key Vault object URL, checked: `https://<host>/<kind>/<name>[/<version>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    /// `https://host[:port]`.
    pub base: String,
    /// `host[:port]`.
    pub authority: String,
    /// `secrets` or `keys`.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// The version, if given (else the latest).
    pub version: Option<String>,
}

impl ObjectUrl {
    /// Parses `url` as a Key Vault `kind` URL (`secrets` or `keys`).
    pub fn parse(url: &str, kind: &'static str) -> Result<ObjectUrl> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "{:?} is not a Key Vault {kind} URL (https://<vault>/{kind}/<name>/<version>): {why}",
                super::secret::cut(url)
            ))
        };
        let rest = url
            .trim()
            .strip_prefix("https://")
            .ok_or_else(|| bad("it must start with https://"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
        let host_ok = !authority.is_empty()
            && authority
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'));
        if !host_ok {
            return Err(bad("bad host"));
        }
        let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 127
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        match parts.as_slice() {
            [k, name] if *k == kind && name_ok(name) => Ok(ObjectUrl {
                base: format!("https://{authority}"),
                authority: authority.to_ascii_lowercase(),
                kind,
                name: name.to_string(),
                version: None,
            }),
            [k, name, version] if *k == kind && name_ok(name) && name_ok(version) => {
                Ok(ObjectUrl {
                    base: format!("https://{authority}"),
                    authority: authority.to_ascii_lowercase(),
                    kind,
                    name: name.to_string(),
                    version: Some(version.to_string()),
                })
            }
            _ => Err(bad(&format!("the path is not /{kind}/<name>/<version>"))),
        }
    }

    /// The host without a port.
    fn host(&self) -> &str {
        match self.authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|c| c.is_ascii_digit()) => h,
            _ => &self.authority,
        }
    }

    /// `{base}/{kind}/{name}[/{version}]`.
    pub fn object(&self) -> String {
        match &self.version {
            Some(v) => format!("{}/{}/{}/{v}", self.base, self.kind, self.name),
            None => format!("{}/{}/{}", self.base, self.kind, self.name),
        }
    }

    /// The token resource for this vault, or a usage error when its host may not get a token.
    pub fn resource(&self, allow_hosts: &[String]) -> Result<&'static str> {
        let host = self.host();
        if let Some((_, r)) = DOMAINS.iter().find(|(d, _)| host.ends_with(d)) {
            return Ok(r);
        }
        if allow_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&self.authority) || a.eq_ignore_ascii_case(host))
        {
            return Ok("https://vault.azure.net");
        }
        Err(Error::Usage(format!(
            "{} is not an Azure Key Vault domain (*.vault.azure.net, ...): give --keyvault-allow-host {} to send it a Key Vault token",
            self.authority, self.authority
        )))
    }
}

/// The HTTP agent for Azure endpoints: the CA bundle of `ca_cert` instead of the built-in
/// roots when given, no redirects, bounded timeouts.
pub(crate) fn agent(config: &AzureConfig) -> Result<ureq::Agent> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &config.ca_cert {
        let pem = std::fs::read(ca).map_err(|e| {
            Error::Usage(format!(
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
            return Err(Error::Usage(format!(
                "CA file {} holds no PEM certificate",
                ca.display()
            )));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(TIMEOUT))
        .max_redirects(0)
        .tls_config(tls.build())
        .build();
    Ok(config.into())
}

/// One request; (status, body) or the transport's failure in words.
pub(crate) fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::result::Result<(u16, SecretBytes), String> {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body)
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = agent.run(req).map_err(transport)?;
    let status = resp.status().as_u16();
    let raw = resp
        .into_body()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_vec()
        .map_err(transport)?;
    Ok((status, SecretBytes::from_vec(raw)))
}

fn transport(e: ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => {
            let cause = crate::error::plain_io(&io);
            if ["certificate", "handshake", "tls", "peer"]
                .iter()
                .any(|w| cause.contains(w))
            {
                format!(
                    "TLS failed: {cause} (give --keyvault-cacert with the CA that signed its certificate)"
                )
            } else {
                format!("unreachable: {cause}")
            }
        }
        ureq::Error::Tls(why) => format!("TLS failed: {why} (give --keyvault-cacert)"),
        ureq::Error::Rustls(r) => format!("TLS failed: {r} (give --keyvault-cacert)"),
        ureq::Error::Timeout(_) => "did not answer in time".into(),
        ureq::Error::HostNotFound => "unreachable: host not found".into(),
        ureq::Error::ConnectionFailed => "unreachable: connection failed".into(),
        other => format!("unreachable: {other}"),
    }
}

/// A Key Vault error answer on one line: `HTTP 404 SecretNotFound: <message>`.
fn error_line(status: u16, raw: &[u8]) -> String {
    let v: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("");
    let message = v["error"]["message"].as_str().unwrap_or("");
    let one = |s: &str| {
        super::secret::cut(&s.replace(['\n', '\r'], " "))
            + if s.chars().count() > 64 { "..." } else { "" }
    };
    let hint = match status {
        401 => " (the token was refused: wrong tenant or expired credentials)",
        403 => " (the identity lacks the secrets get / keys unwrapKey permission)",
        _ => "",
    };
    match (code.is_empty(), message.is_empty()) {
        (true, true) => format!("HTTP {status}{hint}"),
        (false, true) => format!("HTTP {status} {}{hint}", one(code)),
        _ => format!("HTTP {status} {}: {}{hint}", one(code), one(message)),
    }
}

/// A client for Key Vaults, with a token per resource fetched on first use.
pub struct KeyVault {
    agent: ureq::Agent,
    config: AzureConfig,
    tokens: RefCell<Vec<(&'static str, SecretBytes)>>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyVault(<tokens redacted>)")
    }
}

impl KeyVault {
    /// A client with `config`'s TLS settings; no request is made yet.
    pub fn new(config: &AzureConfig) -> Result<KeyVault> {
        Ok(KeyVault {
            agent: agent(config)?,
            config: config.clone(),
            tokens: RefCell::new(Vec::new()),
        })
    }

    fn bearer(&self, resource: &'static str) -> Result<Zeroizing<String>> {
        let mut tokens = self.tokens.borrow_mut();
        if !tokens.iter().any(|(r, _)| *r == resource) {
            let t = azure_token::token(&self.agent, &self.config, resource)?;
            tokens.push((resource, t));
        }
        let t = tokens
            .iter()
            .find(|(r, _)| *r == resource)
            .map(|(_, t)| t.expose_secret())
            .unwrap_or_default();
        Ok(Zeroizing::new(format!(
            "Bearer {}",
            String::from_utf8_lossy(t)
        )))
    }

    fn call(&self, url: &ObjectUrl, op: &str, method: &str, body: &[u8]) -> Result<SecretBytes> {
        let resource = url.resource(&self.config.allow_hosts)?;
        let bearer = self.bearer(resource)?;
        let full = format!("{}{op}?api-version={API_VERSION}", url.object());
        let shown = format!("{}{op}", url.object());
        let (status, raw) = send(
            &self.agent,
            method,
            &full,
            &[
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
            body,
        )
        .map_err(|why| Error::Vault(format!("Key Vault {}: {why}", url.base)))?;
        if !(200..300).contains(&status) {
            return Err(Error::Vault(format!(
                "Key Vault {method} {shown}: {}",
                error_line(status, raw.expose_secret())
            )));
        }
        Ok(raw)
    }

    /// Fetches the secret at `url` (`https://<vault>/secrets/<name>/<version>`).
    pub fn get_secret(&self, url: &str) -> Result<SecretRecord> {
        let u = ObjectUrl::parse(url, "secrets")?;
        let raw = self.call(&u, "", "GET", b"")?;
        SecretRecord::parse(raw.expose_secret(), &u.object())
    }

    /// Unwraps `ciphertext` with the key at `kek_url` and `alg` (Key Vault unwrapkey).
    pub fn unwrap_key(
        &self,
        kek_url: &str,
        alg: KekAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes> {
        let u = ObjectUrl::parse(kek_url, "keys")?;
        let value = b64::encode_url(ciphertext);
        let body = Zeroizing::new(format!(
            r#"{{"alg":"{}","value":"{}"}}"#,
            alg.name(),
            value.as_str()
        ));
        let mut raw = self.call(&u, "/unwrapkey", "POST", body.as_bytes())?;
        let mut doc: Value = serde_json::from_slice(raw.expose_secret()).map_err(|_| {
            Error::Vault(format!(
                "Key Vault {}/unwrapkey answered with something that is not JSON",
                u.object()
            ))
        })?;
        raw.expose_secret_mut().fill(0);
        let value = super::secret::take_secret_string(&mut doc, "value");
        super::secret::wipe(&mut doc);
        let value = value.ok_or_else(|| {
            Error::Vault(format!(
                "Key Vault {}/unwrapkey answered without a value",
                u.object()
            ))
        })?;
        b64::decode(value.expose_secret())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                Error::Vault(format!(
                    "Key Vault {}/unwrapkey answered with a value that is not base64url",
                    u.object()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_tokens_go_only_to_key_vaults() {
        let u = ObjectUrl::parse(
            "https://kv1.vault.azure.net/secrets/B3284AAA-DAAA/0123abc",
            "secrets",
        )
        .unwrap();
        assert_eq!(
            u.object(),
            "https://kv1.vault.azure.net/secrets/B3284AAA-DAAA/0123abc"
        );
        assert_eq!(u.resource(&[]).unwrap(), "https://vault.azure.net");
        let u = ObjectUrl::parse(
            "https://mykv.vault.azure.net:443/keys/KeyName/84da/",
            "keys",
        )
        .unwrap();
        assert_eq!(u.host(), "mykv.vault.azure.net");
        assert_eq!(u.version.as_deref(), Some("84da"));
        let cn = ObjectUrl::parse("https://a.vault.azure.cn/keys/k", "keys").unwrap();
        assert_eq!(cn.resource(&[]).unwrap(), "https://vault.azure.cn");
        let evil = ObjectUrl::parse("https://evil.example/keys/k/1", "keys").unwrap();
        let e = evil.resource(&[]).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(
            e.to_string().contains("--keyvault-allow-host evil.example"),
            "{e}"
        );
        assert!(evil.resource(&["evil.example".into()]).is_ok());
        let local = ObjectUrl::parse("https://127.0.0.1:8443/keys/k/1", "keys").unwrap();
        assert!(local.resource(&["127.0.0.1:8443".into()]).is_ok());
        assert!(local.resource(&["127.0.0.1:9".into()]).is_err());
        for bad in [
            "http://kv.vault.azure.net/secrets/a/b",
            "https://kv.vault.azure.net/keys/a/b",
            "https://kv.vault.azure.net/secrets/a/b/c",
            "https://kv.vault.azure.net/secrets/a b/c",
            "https://kv.vault.azure.net/secrets/a/b?x=1",
            "https://user@kv/secrets/a/b",
        ] {
            assert_eq!(
                ObjectUrl::parse(bad, "secrets").unwrap_err().exit_code(),
                1,
                "{bad}"
            );
        }
    }

    #[test]
    fn key_vault_errors_are_one_line() {
        let raw = br#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) x was not found in this key vault.\nMore"}}"#;
        let l = error_line(404, raw);
        assert!(
            l.starts_with("HTTP 404 SecretNotFound: A secret with"),
            "{l}"
        );
        assert!(!l.contains('\n'));
        assert!(error_line(401, b"").contains("token was refused"));
        assert_eq!(error_line(500, b"<html>"), "HTTP 500");
    }
}
