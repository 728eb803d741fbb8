//! The key chain of an Azure Disk Encryption restore: everything that turns the user's key
//! material into candidate passphrases. Sources: BEK files (`--key-file`, used verbatim), the
//! FAT "BEK VOLUME" (`bek_volume`), `az keyvault secret show` JSON and Key Vault secret URLs
//! (`secret`, `azure`), the Azure Backup restore's encryption config (`restore_config`); a
//! wrapped BEK is unwrapped by the key-encryption key of [`KekSource`] (`kek`: a local PEM
//! through AWS-LC, an OpenBao/Vault transit RSA key, or Azure Key Vault's unwrapkey).
//!
//! Facts: ../shared/docs/ade-facts.md §1.4 (BEK VOLUME), §1.6 (secret shape, tags, KEK wrap),
//! §2.1 (restore config), §3 (Key Vault REST, transit). Errors are one line; which exit code
//! each gives is in the README ("Azure Disk Encryption keys").
pub mod azure;
pub mod azure_token;
pub mod b64;
pub mod bek_file;
pub mod bek_volume;
pub mod kek;
pub mod pem;
pub mod prompt;
pub mod restore_config;
pub mod secret;
pub mod transit;

pub use kek::KekSource;
pub use prompt::CandidatePrompt;

use crate::error::Result;
use crate::secret::SecretBytes;
use crate::unlock::vault::VaultConfig;
use std::path::{Path, PathBuf};

/// One key to try, and where it came from.
pub struct CandidateKey {
    /// Where the key came from, e.g. `key-file k.bek`,
    /// `bek-volume bek.img:LinuxPassPhraseFileName`,
    /// `keyvault-secret s.json (Wrapped BEK, kek-pem kek.pem)`; never key material.
    pub label: String,
    /// The key: LUKS uses it as the passphrase verbatim (an ADE BEK is 172 base64 characters);
    /// BitLocker tries it as a startup key (.BEK bytes) when it parses as one.
    pub bytes: SecretBytes,
}

impl std::fmt::Debug for CandidateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CandidateKey({}, <redacted>)", self.label)
    }
}

/// How to reach Azure Key Vault (for `--keyvault-secret-url` and `--kek-keyvault`).
#[derive(Debug, Clone, Default)]
pub struct AzureConfig {
    /// PEM bundle of the CAs to trust for every Azure endpoint (authority and vault) instead
    /// of the built-in roots: a private endpoint's CA.
    pub ca_cert: Option<PathBuf>,
    /// Hosts besides Azure's Key Vault domains that may receive a Key Vault token (a private
    /// endpoint's name, a test server's `127.0.0.1:PORT`).
    pub allow_hosts: Vec<String>,
    /// Use the managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER, else the VM's IMDS).
    pub managed_identity: bool,
    /// Client credentials: the client secret from this file instead of AZURE_CLIENT_SECRET.
    pub client_secret_file: Option<PathBuf>,
}

/// The user's key sources, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct KeyChain {
    /// BEK files (`--key-file`): the bytes are the passphrase, never decoded.
    pub key_files: Vec<PathBuf>,
    /// FAT "BEK VOLUME" images, or disk images holding one (`--bek-volume`).
    pub bek_volumes: Vec<PathBuf>,
    /// `az keyvault secret show` JSON files (`--keyvault-secret`).
    pub keyvault_secrets: Vec<PathBuf>,
    /// Key Vault secret URLs to fetch (`--keyvault-secret-url`).
    pub keyvault_secret_urls: Vec<String>,
    /// Azure Backup restore encryption config JSON files (`--restore-config`).
    pub restore_configs: Vec<PathBuf>,
    /// What unwraps a `Wrapped BEK`.
    pub kek: KekSource,
    /// Allow the RSA1_5 (PKCS#1 v1.5) KEK algorithm (`--rsa1-5`).
    pub rsa1_5: bool,
    /// Azure Key Vault access.
    pub azure: AzureConfig,
}

impl KeyChain {
    /// The same chain with `vault` as the vault of a `--kek-transit` KEK.
    pub fn with_vault(mut self, vault: VaultConfig) -> KeyChain {
        if let KekSource::Transit { vault: v, .. } = &mut self.kek {
            **v = vault;
        }
        self
    }

    /// Whether no source is given (then the caller's own default applies).
    pub fn is_empty(&self) -> bool {
        self.key_files.is_empty()
            && self.bek_volumes.is_empty()
            && self.keyvault_secrets.is_empty()
            && self.keyvault_secret_urls.is_empty()
            && self.restore_configs.is_empty()
    }
}

/// A path as labels show it (as given).
pub(crate) fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Every candidate key of `chain`, in source order; a key that an earlier source already gave
/// is merged into that candidate (its label gains ` = <label>`), so each is tried once. The
/// first unusable source stops the resolve with its one-line error.
pub fn resolve(chain: &KeyChain) -> Result<Vec<CandidateKey>> {
    let mut ctx = kek::Unwrapper::new(chain);
    let mut out: Vec<CandidateKey> = Vec::new();
    for p in &chain.key_files {
        push(&mut out, bek_file::read(p)?);
    }
    for p in &chain.bek_volumes {
        for c in bek_volume::read(p)? {
            push(&mut out, c);
        }
    }
    for p in &chain.keyvault_secrets {
        let record = secret::SecretRecord::from_file(p)?;
        push(
            &mut out,
            record.candidate(&format!("keyvault-secret {}", shown(p)), &mut ctx)?,
        );
    }
    for url in &chain.keyvault_secret_urls {
        let record = ctx.azure()?.get_secret(url)?;
        push(
            &mut out,
            record.candidate(&format!("keyvault-secret-url {url}"), &mut ctx)?,
        );
    }
    for p in &chain.restore_configs {
        for (section, record) in restore_config::read(p)? {
            push(
                &mut out,
                record.candidate(&format!("restore-config {}:{section}", shown(p)), &mut ctx)?,
            );
        }
    }
    Ok(out)
}

fn push(out: &mut Vec<CandidateKey>, c: CandidateKey) {
    if let Some(first) = out
        .iter_mut()
        .find(|o| o.bytes.ct_eq(c.bytes.expose_secret()))
    {
        first.label.push_str(" = ");
        first.label.push_str(&c.label);
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(label: &str, bytes: &[u8]) -> CandidateKey {
        CandidateKey {
            label: label.into(),
            bytes: SecretBytes::from_slice(bytes),
        }
    }

    #[test]
    fn the_same_key_from_two_sources_is_one_candidate_named_by_both() {
        let mut out = Vec::new();
        push(&mut out, c("key-file a", b"k1"));
        push(&mut out, c("bek-volume b:LinuxPassPhraseFileName", b"k2"));
        push(&mut out, c("keyvault-secret s.json (BEK)", b"k1"));
        let labels: Vec<&str> = out.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "key-file a = keyvault-secret s.json (BEK)",
                "bek-volume b:LinuxPassPhraseFileName"
            ]
        );
    }

    #[test]
    fn resolve_takes_key_files_verbatim_and_with_vault_fills_only_transit() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        std::fs::write(&k, b"abc\n").unwrap();
        let chain = KeyChain {
            key_files: vec![k.clone()],
            ..KeyChain::default()
        };
        assert!(!chain.is_empty());
        let got = resolve(&chain).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].bytes.expose_secret(), b"abc\n");
        let vault = VaultConfig {
            addr: Some("http://127.0.0.1:1".into()),
            ..VaultConfig::default()
        };
        let t = KeyChain {
            kek: KekSource::Transit {
                mount: "transit".into(),
                key: "k".into(),
                version: 1,
                vault: Box::default(),
            },
            ..KeyChain::default()
        }
        .with_vault(vault.clone());
        match t.kek {
            KekSource::Transit { vault: v, .. } => assert_eq!(v.addr, vault.addr),
            other => panic!("{other:?}"),
        }
        assert!(KeyChain::default().is_empty());
        assert!(matches!(
            KeyChain::default().with_vault(vault).kek,
            KekSource::None
        ));
    }
}
