//! Unwrapping a `Wrapped BEK` with the key-encryption key the user named: a local PEM
//! (AWS-LC), an OpenBao/Vault transit RSA key, or Azure Key Vault's unwrapkey on the KEK URL of
//! the secret's tags. The algorithm comes from the secret's tag; when it is not recorded (a
//! restore config), RSA-OAEP (ADE's default) and then RSA-OAEP-256 are tried. RSA1_5 only with
//! `--rsa1-5`.
use super::secret::{KekAlgorithm, SecretRecord};
use super::{KeyChain, azure, pem, transit};
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use crate::unlock::vault::VaultConfig;
use std::path::PathBuf;

/// Which key-encryption key unwraps a `Wrapped BEK`.
#[derive(Debug, Clone, Default)]
pub enum KekSource {
    /// None given: a wrapped BEK is a usage error naming the options.
    #[default]
    None,
    /// A local PEM RSA private key (`--kek-pem`).
    Pem(PathBuf),
    /// An RSA key in OpenBao/Vault transit (`--kek-transit`): RSA-OAEP-256 only.
    Transit {
        /// The transit mount.
        mount: String,
        /// The transit key's name.
        key: String,
        /// The key version the Azure ciphertext is sent as (`vault:v<N>:`).
        version: u32,
        /// How to reach and log in to the vault (boxed: it is large beside the others).
        vault: Box<VaultConfig>,
    },
    /// Azure Key Vault unwrapkey on the KEK URL of the secret's tags (`--kek-keyvault`).
    KeyVault,
}

/// Unwraps the wrapped BEKs of one resolve; the KEK (PEM file, vault login, Azure client) is
/// loaded once, on first use.
pub struct Unwrapper<'a> {
    chain: &'a KeyChain,
    pem: Option<pem::RsaKek>,
    transit: Option<crate::vault::Client>,
    azure: Option<azure::KeyVault>,
}

impl<'a> Unwrapper<'a> {
    /// An unwrapper for `chain`'s KEK; nothing is loaded yet.
    pub fn new(chain: &'a KeyChain) -> Unwrapper<'a> {
        Unwrapper {
            chain,
            pem: None,
            transit: None,
            azure: None,
        }
    }

    /// The Azure Key Vault client (made on first use).
    pub fn azure(&mut self) -> Result<&azure::KeyVault> {
        if self.azure.is_none() {
            self.azure = Some(azure::KeyVault::new(&self.chain.azure)?);
        }
        match &self.azure {
            Some(a) => Ok(a),
            None => Err(Error::Usage("no Azure Key Vault client".into())),
        }
    }

    /// The algorithms to try for `record`, RSA1_5 refused without `--rsa1-5`.
    fn algorithms(&self, label: &str, record: &SecretRecord) -> Result<Vec<KekAlgorithm>> {
        match record.algorithm {
            Some(KekAlgorithm::Rsa15) if !self.chain.rsa1_5 => Err(Error::Usage(format!(
                "{label} is wrapped with RSA1_5 (PKCS#1 v1.5 padding): give --rsa1-5 to allow it"
            ))),
            Some(a) => Ok(vec![a]),
            None => Ok(vec![KekAlgorithm::RsaOaep, KekAlgorithm::RsaOaep256]),
        }
    }

    /// Unwraps `ciphertext` (the decoded value of `record`), returning the BEK and how it was
    /// unwrapped (for the label: `kek-pem kek.pem`).
    pub fn unwrap(
        &mut self,
        label: &str,
        record: &SecretRecord,
        ciphertext: &SecretBytes,
    ) -> Result<(SecretBytes, String)> {
        let kek_name = record.kek_url.as_deref().unwrap_or("not named in its tags");
        let algs = self.algorithms(label, record)?;
        let tried = algs
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" or ");
        match &self.chain.kek {
            KekSource::None => Err(Error::Usage(format!(
                "{label} is a Wrapped BEK (KEK {kek_name}): give --kek-pem FILE, --kek-transit KEY or --kek-keyvault to unwrap it"
            ))),
            KekSource::Pem(path) => {
                if self.pem.is_none() {
                    self.pem = Some(pem::RsaKek::load(path)?);
                }
                let Some(kek) = &self.pem else {
                    return Err(Error::Usage("no KEK loaded".into()));
                };
                let how = format!("kek-pem {}", super::shown(path));
                for a in &algs {
                    match kek.decrypt(*a, ciphertext.expose_secret()) {
                        Ok(bek) => return Ok((bek, how)),
                        Err(pem::DecryptError::WrongSize {
                            ciphertext,
                            key_bits,
                        }) => {
                            return Err(Error::Vault(format!(
                                "{label}: the wrapped BEK is {ciphertext} bytes, {} is a {key_bits}-bit key: not the KEK of this secret ({kek_name})",
                                super::shown(path)
                            )));
                        }
                        Err(pem::DecryptError::Failed) => {}
                    }
                }
                Err(Error::Vault(format!(
                    "{label}: {} does not unwrap the BEK with {tried} (another KEK than {kek_name}, or another padding)",
                    super::shown(path)
                )))
            }
            KekSource::Transit {
                mount,
                key,
                version,
                vault,
            } => {
                if !algs.contains(&KekAlgorithm::RsaOaep256) {
                    return Err(Error::Usage(format!(
                        "{label} is wrapped with {tried}, which transit cannot unwrap (its RSA keys do RSA-OAEP-256 only): export the KEK and give --kek-pem"
                    )));
                }
                if self.transit.is_none() {
                    self.transit = Some(crate::unlock::vault::connect_required(vault, None)?);
                }
                let Some(client) = &self.transit else {
                    return Err(Error::Usage("no vault client".into()));
                };
                let bek = transit::unwrap(client, mount, key, *version, ciphertext, label)?;
                Ok((bek, format!("kek-transit {mount}/{key}")))
            }
            KekSource::KeyVault => {
                let url = record.kek_url.clone().ok_or_else(|| {
                    Error::Usage(format!(
                        "{label} has no DiskEncryptionKeyEncryptionKeyURL tag: --kek-keyvault does not know its KEK"
                    ))
                })?;
                let client = self.azure()?;
                let mut last = None;
                for a in &algs {
                    match client.unwrap_key(&url, *a, ciphertext.expose_secret()) {
                        Ok(bek) => return Ok((bek, format!("kek-keyvault {url}"))),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| Error::Usage("no KEK algorithm to try".into())))
            }
        }
    }
}
