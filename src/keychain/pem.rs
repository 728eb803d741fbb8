//! A local RSA key-encryption key in a PEM file (`--kek-pem`): RSA-OAEP with SHA-1 (ADE's
//! default) or SHA-256, and RSA1_5 only when asked for, all through AWS-LC (aws-lc-rs), never
//! the `rsa` crate (RUSTSEC-2023-0071). PKCS#8 (`BEGIN PRIVATE KEY`, what `openssl genrsa`
//! writes) and PKCS#1 (`BEGIN RSA PRIVATE KEY`) are read; encrypted PEM is refused.
use super::secret::KekAlgorithm;
use crate::error::{Error, Result};
use crate::secret::SecretBytes;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey,
    Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
};
use std::io::Read;
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// Largest PEM file read (an RSA-8192 private key is about 6.4 KiB).
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// A loaded RSA private key.
pub struct RsaKek {
    key: PrivateDecryptingKey,
    path: PathBuf,
}

impl std::fmt::Debug for RsaKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKek({}, <redacted>)", self.path.display())
    }
}

/// Why a decryption failed.
#[derive(Debug, PartialEq, Eq)]
pub enum DecryptError {
    /// The ciphertext's length is not the key's modulus size: not this key's ciphertext.
    WrongSize {
        /// Bytes of ciphertext.
        ciphertext: usize,
        /// Bits of the key.
        key_bits: usize,
    },
    /// The padding check failed: another key, or another padding.
    Failed,
}

impl RsaKek {
    /// Reads the PEM private key at `path`.
    pub fn load(path: &Path) -> Result<RsaKek> {
        let name = path.display();
        let f = std::fs::File::open(path).map_err(|e| {
            let msg = format!(
                "cannot open KEK file {name}: {}",
                crate::error::plain_io(&e)
            );
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => Error::Permission(msg),
                _ => Error::Usage(msg),
            }
        })?;
        let mut raw = Vec::new();
        f.take(MAX_PEM_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|e| Error::io(format!("reading KEK file {name}"), e))?;
        let text = SecretBytes::from_slice(&raw);
        raw.zeroize();
        if text.len() as u64 > MAX_PEM_BYTES {
            return Err(Error::Usage(format!(
                "KEK file {name} is larger than 64 KiB: not a PEM private key"
            )));
        }
        let der = pkcs8_der(text.expose_secret())
            .map_err(|why| Error::Usage(format!("KEK file {name}: {why}")))?;
        let key = PrivateDecryptingKey::from_pkcs8(der.expose_secret()).map_err(|e| {
            Error::Usage(format!(
                "KEK file {name} holds no RSA private key AWS-LC accepts (RSA of 2048 to 8192 bits): {e}"
            ))
        })?;
        Ok(RsaKek {
            key,
            path: path.to_path_buf(),
        })
    }

    /// Bits of the modulus.
    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    /// Decrypts `ciphertext` with `alg`.
    pub fn decrypt(
        &self,
        alg: KekAlgorithm,
        ciphertext: &[u8],
    ) -> std::result::Result<SecretBytes, DecryptError> {
        if ciphertext.len() != self.key.key_size_bytes() {
            return Err(DecryptError::WrongSize {
                ciphertext: ciphertext.len(),
                key_bits: self.bits(),
            });
        }
        let mut out = SecretBytes::zeroed(self.key.key_size_bytes());
        let n = match alg {
            KekAlgorithm::RsaOaep | KekAlgorithm::RsaOaep256 => {
                let k = OaepPrivateDecryptingKey::new(self.key.clone())
                    .map_err(|_| DecryptError::Failed)?;
                let a = if alg == KekAlgorithm::RsaOaep {
                    &OAEP_SHA1_MGF1SHA1
                } else {
                    &OAEP_SHA256_MGF1SHA256
                };
                k.decrypt(a, ciphertext, out.expose_secret_mut(), None)
                    .map_err(|_| DecryptError::Failed)?
                    .len()
            }
            KekAlgorithm::Rsa15 => {
                let k = Pkcs1PrivateDecryptingKey::new(self.key.clone())
                    .map_err(|_| DecryptError::Failed)?;
                k.decrypt(ciphertext, out.expose_secret_mut())
                    .map_err(|_| DecryptError::Failed)?
                    .len()
            }
        };
        Ok(SecretBytes::from_slice(&out.expose_secret()[..n]))
    }
}

/// The PKCS#8 DER of the first private key block of a PEM text.
fn pkcs8_der(text: &[u8]) -> std::result::Result<SecretBytes, String> {
    let s = std::str::from_utf8(text).map_err(|_| "not a PEM text file".to_string())?;
    for (label, pkcs1) in [("PRIVATE KEY", false), ("RSA PRIVATE KEY", true)] {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = s.find(&begin) else {
            continue;
        };
        let body = &s[start + begin.len()..];
        let stop = body
            .find(&end)
            .ok_or_else(|| format!("the {label} block has no END line"))?;
        let b64: Vec<u8> = body[..stop]
            .bytes()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der =
            super::b64::decode(&b64).ok_or_else(|| format!("the {label} block is not base64"))?;
        return Ok(if pkcs1 {
            wrap_pkcs1(der.expose_secret())
        } else {
            der
        });
    }
    if s.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || s.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(
            "the private key is encrypted: decrypt it first (openssl pkey -in KEK.pem -out plain.pem)"
                .into(),
        );
    }
    Err("no PEM private key (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY) found".into())
}

/// DER length octets.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A PKCS#1 RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (RFC 5208 §5) with the
/// rsaEncryption algorithm identifier (RFC 8017 A.1).
fn wrap_pkcs1(rsa: &[u8]) -> SecretBytes {
    const VERSION_AND_ALG: &[u8] = &[
        0x02, 0x01, 0x00, // INTEGER 0
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
        0x00, // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    ];
    let mut octets = Vec::with_capacity(rsa.len() + 8);
    octets.push(0x04);
    der_len(rsa.len(), &mut octets);
    octets.extend_from_slice(rsa);
    let inner = VERSION_AND_ALG.len() + octets.len();
    let mut out = Vec::with_capacity(inner + 8);
    out.push(0x30);
    der_len(inner, &mut out);
    out.extend_from_slice(VERSION_AND_ALG);
    out.extend_from_slice(&octets);
    octets.zeroize();
    let s = SecretBytes::from_slice(&out);
    out.zeroize();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey};

    fn pem(label: &str, der: &[u8]) -> String {
        let b = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn decrypts_each_algorithm_and_tells_them_apart() {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let der = key.as_der().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kek.pem");
        std::fs::write(&p, format!("junk\n{}", pem("PRIVATE KEY", der.as_ref()))).unwrap();
        let kek = RsaKek::load(&p).unwrap();
        assert_eq!(kek.bits(), 2048);
        let bek = b"Q".repeat(172);
        let public = key.public_key();
        let oaep = OaepPublicEncryptingKey::new(public.clone()).unwrap();
        let mut ct = vec![0u8; 256];
        oaep.encrypt(&OAEP_SHA1_MGF1SHA1, &bek, &mut ct, None)
            .unwrap();
        assert_eq!(
            kek.decrypt(KekAlgorithm::RsaOaep, &ct)
                .unwrap()
                .expose_secret(),
            &bek[..]
        );
        assert_eq!(
            kek.decrypt(KekAlgorithm::RsaOaep256, &ct).unwrap_err(),
            DecryptError::Failed
        );
        oaep.encrypt(&OAEP_SHA256_MGF1SHA256, &bek, &mut ct, None)
            .unwrap();
        assert_eq!(
            kek.decrypt(KekAlgorithm::RsaOaep256, &ct)
                .unwrap()
                .expose_secret(),
            &bek[..]
        );
        assert_eq!(
            kek.decrypt(KekAlgorithm::RsaOaep, &ct).unwrap_err(),
            DecryptError::Failed
        );
        let p1 = Pkcs1PublicEncryptingKey::new(public).unwrap();
        p1.encrypt(&bek, &mut ct).unwrap();
        assert_eq!(
            kek.decrypt(KekAlgorithm::Rsa15, &ct)
                .unwrap()
                .expose_secret(),
            &bek[..]
        );
        assert_eq!(
            kek.decrypt(KekAlgorithm::RsaOaep, &ct[..255]).unwrap_err(),
            DecryptError::WrongSize {
                ciphertext: 255,
                key_bits: 2048
            }
        );
        assert!(!format!("{kek:?}").contains("BEGIN"));
    }

    #[test]
    fn pkcs1_is_wrapped_and_bad_files_are_one_line() {
        // A PKCS#1 body: the RSAPrivateKey inside this PKCS#8 (its OCTET STRING's content).
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let der = key.as_der().unwrap();
        let d = der.as_ref();
        // PrivateKeyInfo: 30 82 LL LL | 02 01 00 | 30 0d ...(15) | 04 82 LL LL | RSAPrivateKey
        let rsa = &d[4 + 3 + 15 + 4..];
        assert_eq!(wrap_pkcs1(rsa).expose_secret(), d);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rsa.pem");
        std::fs::write(&p, pem("RSA PRIVATE KEY", rsa)).unwrap();
        assert_eq!(RsaKek::load(&p).unwrap().bits(), 2048);
        for (text, want) in [
            ("hello", "no PEM private key"),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAA==\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n", "no END line"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "no RSA private key",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = RsaKek::load(&p).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{text}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
