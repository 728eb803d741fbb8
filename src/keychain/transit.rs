//! An Azure KEK held in OpenBao/Vault transit (`--kek-transit`): the Azure wrapped value
//! (base64url of the RSA ciphertext) is sent as `vault:v<N>:` + standard base64 to
//! `transit/decrypt` (ade-facts §3.5). Transit RSA keys do RSA-OAEP with SHA-256 only; a key of
//! another type is named as such. Built on `vault::Client`'s public API only.
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::vault::{Client, VaultError};

/// The transit ciphertext for an Azure-wrapped `ciphertext` (raw RSA output).
pub fn ciphertext_for(ciphertext: &[u8], version: u32) -> String {
    format!("vault:v{version}:{}", super::b64::encode_std(ciphertext))
}

/// Unwraps `ciphertext` with transit key `key` at `mount` (`label` names the secret).
pub fn unwrap(
    client: &Client,
    mount: &str,
    key: &str,
    version: u32,
    ciphertext: &SecretBytes,
    label: &str,
) -> Result<SecretBytes> {
    let ct = ciphertext_for(ciphertext.expose_secret(), version);
    match client.transit_decrypt(mount, key, &ct) {
        Ok(bek) if bek.is_empty() => Err(Error::Vault(format!(
            "{label}: transit key {mount}/{key} unwrapped an empty BEK"
        ))),
        Ok(bek) => Ok(bek),
        Err(e) => Err(explain(e, mount, key, label)),
    }
}

/// The one-line error for a failed transit decrypt: a key that is not RSA is named as such.
fn explain(e: VaultError, mount: &str, key: &str, label: &str) -> Error {
    if let VaultError::Rejected { message, .. } = &e {
        // OpenBao answers an RSA-sized ciphertext with these for symmetric keys (AES-GCM,
        // ChaCha20-Poly1305: the tag check fails) and for signing-only keys.
        if message.contains("message authentication failed") {
            return Error::Vault(format!(
                "{label}: transit key {mount}/{key} is not an RSA key (it is a symmetric key: {message}); an Azure KEK unwraps only with an RSA transit key (rsa-2048/3072/4096)"
            ));
        }
        if let Some(i) = message.find("not supported for key type ") {
            let kind = &message[i + "not supported for key type ".len()..];
            return Error::Vault(format!(
                "{label}: transit key {mount}/{key} is of type {}, not RSA: an Azure KEK unwraps only with an RSA transit key",
                kind.split_whitespace().next().unwrap_or("unknown")
            ));
        }
        if message.contains("decryption error") {
            return Error::Vault(format!(
                "{label}: transit key {mount}/{key} does not unwrap this BEK with RSA-OAEP-256 (another KEK, or the secret was wrapped with RSA-OAEP SHA-1, which transit cannot do)"
            ));
        }
    }
    let base: Error = e.into();
    match base {
        Error::Vault(m) => Error::Vault(format!("{label}: {m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_values_map_to_transit_ciphertexts() {
        assert_eq!(ciphertext_for(&[0xfb, 0xff], 1), "vault:v1:+/8=");
        let rejected = |m: &str| VaultError::Rejected {
            addr: "http://a".into(),
            path: "transit/decrypt/k".into(),
            status: 400,
            message: m.into(),
        };
        let e = explain(
            rejected("cipher: message authentication failed"),
            "transit",
            "k",
            "s.json",
        );
        assert!(e.to_string().contains("is not an RSA key"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = explain(
            rejected("message decryption not supported for key type ed25519"),
            "transit",
            "k",
            "s.json",
        );
        assert!(e.to_string().contains("is of type ed25519, not RSA"), "{e}");
        let e = explain(
            rejected("failed: crypto/rsa: decryption error"),
            "t",
            "k",
            "s",
        );
        assert!(e.to_string().contains("does not unwrap"), "{e}");
        let e = explain(
            VaultError::Denied {
                addr: "http://a".into(),
                path: "p".into(),
            },
            "t",
            "k",
            "s.json",
        );
        assert!(
            e.to_string()
                .starts_with("s.json: vault at http://a denied"),
            "{e}"
        );
    }
}
