//! Bearer tokens for Key Vault, where Azure SDKs look for credentials (ade-facts §3.1):
//! client credentials from AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET (or
//! `--azure-client-secret-file`) against `{AZURE_AUTHORITY_HOST}/{tenant}/oauth2/v2.0/token`
//! (default authority `https://login.microsoftonline.com`), or with `--azure-managed-identity`
//! the managed identity: IDENTITY_ENDPOINT + IDENTITY_HEADER (App Service, API 2019-08-01),
//! else the VM's IMDS (API 2018-02-01, header `Metadata: true`); AZURE_CLIENT_ID picks a
//! user-assigned identity. IMDS is never tried unasked. Secrets live in zeroizing memory and
//! never reach a message.
use super::AzureConfig;
use super::azure::send;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// The public cloud's authority (Azure SDKs' default).
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The VM instance metadata service's token endpoint.
const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Appends `s` form-urlencoded (RFC 3986 unreserved characters kept) to `out`, which has the
/// capacity already (no reallocation leaves a copy behind).
fn form_push(out: &mut Vec<u8>, s: &[u8]) {
    for &c in s {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c);
        } else {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        }
    }
}

/// A form body of `fields` in one zeroizing buffer sized for the worst case.
fn form_body(fields: &[(&str, &[u8])]) -> Zeroizing<Vec<u8>> {
    let cap: usize = fields.iter().map(|(k, v)| k.len() + 3 * v.len() + 2).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(cap));
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        form_push(&mut out, v);
    }
    out
}

/// The access_token of a token answer, or the error the answer gives, on one line.
fn access_token(status: u16, raw: &SecretBytes, who: &str) -> Result<SecretBytes> {
    let mut doc: Value = serde_json::from_slice(raw.expose_secret()).unwrap_or(Value::Null);
    let token = super::secret::take_secret_string(&mut doc, "access_token");
    let out = match token {
        Some(t) if (200..300).contains(&status) && !t.is_empty() => Ok(t),
        _ => {
            let code = doc["error"].as_str().unwrap_or("");
            let why = doc["error_description"]
                .as_str()
                .or_else(|| doc["message"].as_str())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("");
            let why = super::secret::cut(why);
            Err(Error::Vault(format!(
                "{who} gave no token: HTTP {status}{}{}",
                if code.is_empty() {
                    String::new()
                } else {
                    format!(" {}", super::secret::cut(code))
                },
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            )))
        }
    };
    super::secret::wipe(&mut doc);
    out
}

/// A token for `resource` (e.g. `https://vault.azure.net`).
pub fn token(agent: &ureq::Agent, config: &AzureConfig, resource: &str) -> Result<SecretBytes> {
    if config.managed_identity {
        return managed_identity(agent, resource);
    }
    let (Some(tenant), Some(client)) = (env("AZURE_TENANT_ID"), env("AZURE_CLIENT_ID")) else {
        return Err(Error::Vault(
            "no Azure credentials: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or give --azure-client-secret-file), or give --azure-managed-identity on an Azure VM".into(),
        ));
    };
    if tenant.is_empty()
        || !tenant
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.'))
    {
        return Err(Error::Usage(format!(
            "AZURE_TENANT_ID {:?} is not a tenant id or domain",
            super::secret::cut(&tenant)
        )));
    }
    let secret = client_secret(config)?;
    let authority = env("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    let authority = authority.trim().trim_end_matches('/').to_string();
    if !authority.starts_with("https://") {
        return Err(Error::Usage(format!(
            "AZURE_AUTHORITY_HOST {authority:?} must start with https://"
        )));
    }
    let scope = format!("{resource}/.default");
    let body = form_body(&[
        ("grant_type", b"client_credentials"),
        ("client_id", client.as_bytes()),
        ("client_secret", secret.expose_secret()),
        ("scope", scope.as_bytes()),
    ]);
    let url = format!("{authority}/{tenant}/oauth2/v2.0/token");
    let who = format!("Azure login at {authority} (tenant {tenant})");
    let (status, raw) = send(
        agent,
        "POST",
        &url,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
    .map_err(|why| Error::Vault(format!("{who}: {why}")))?;
    access_token(status, &raw, &who)
}

/// The client secret: `--azure-client-secret-file`, else AZURE_CLIENT_SECRET.
fn client_secret(config: &AzureConfig) -> Result<SecretBytes> {
    if let Some(path) = &config.client_secret_file {
        let mut raw = std::fs::read(path).map_err(|e| {
            let msg = format!(
                "cannot read Azure client secret file {}: {}",
                path.display(),
                crate::error::plain_io(&e)
            );
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => Error::Permission(msg),
                _ => Error::Usage(msg),
            }
        })?;
        let out = SecretBytes::from_slice(raw.trim_ascii());
        raw.zeroize();
        if out.is_empty() {
            return Err(Error::Usage(format!(
                "Azure client secret file {} is empty",
                path.display()
            )));
        }
        return Ok(out);
    }
    match std::env::var("AZURE_CLIENT_SECRET") {
        Ok(mut s) if !s.trim().is_empty() => {
            let out = SecretBytes::from_slice(s.trim().as_bytes());
            s.zeroize();
            Ok(out)
        }
        _ => Err(Error::Vault(
            "no Azure client secret: set AZURE_CLIENT_SECRET or give --azure-client-secret-file"
                .into(),
        )),
    }
}

fn managed_identity(agent: &ureq::Agent, resource: &str) -> Result<SecretBytes> {
    let client_id = env("AZURE_CLIENT_ID");
    let mut query = format!("resource={resource}");
    if let Some(id) = &client_id {
        let mut enc = Vec::with_capacity(3 * id.len());
        form_push(&mut enc, id.as_bytes());
        query.push_str(&format!("&client_id={}", String::from_utf8_lossy(&enc)));
    }
    let (url, header, who) = match (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
        (Some(ep), Some(h)) => (
            format!("{ep}?api-version=2019-08-01&{query}"),
            ("X-IDENTITY-HEADER", Zeroizing::new(h)),
            format!("managed identity endpoint {ep}"),
        ),
        _ => (
            format!("{IMDS}?api-version=2018-02-01&{query}"),
            ("Metadata", Zeroizing::new("true".to_string())),
            "the VM's managed identity (IMDS)".to_string(),
        ),
    };
    let (status, raw) = send(agent, "GET", &url, &[(header.0, header.1.as_str())], b"")
        .map_err(|why| Error::Vault(format!("{who}: {why}")))?;
    access_token(status, &raw, &who)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_are_encoded_in_place() {
        let b = form_body(&[
            ("a", b"x y&z=%"),
            ("scope", b"https://vault.azure.net/.default"),
        ]);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            "a=x%20y%26z%3D%25&scope=https%3A%2F%2Fvault.azure.net%2F.default"
        );
    }

    #[test]
    fn token_answers() {
        let ok = SecretBytes::from_slice(br#"{"token_type":"Bearer","access_token":"tok"}"#);
        assert_eq!(access_token(200, &ok, "x").unwrap().expose_secret(), b"tok");
        let bad = SecretBytes::from_slice(
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 1"}"#,
        );
        let e = access_token(401, &bad, "Azure login").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Azure login gave no token: HTTP 401 invalid_client: AADSTS7000215: Invalid client secret provided."
        );
        assert_eq!(e.exit_code(), 2);
        let e = access_token(200, &SecretBytes::from_slice(b"nope"), "m").unwrap_err();
        assert_eq!(e.to_string(), "m gave no token: HTTP 200");
    }
}
