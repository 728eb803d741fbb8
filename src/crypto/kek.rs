//! Local wrapping of a keyslot secret under a key-encryption key (KV mode): AES-256-GCM.
use crate::secret::SecretBytes;
use aes_gcm::aead::{Aead, AeadInOut, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Name recorded in the token next to the wrapped bytes.
pub const ALGORITHM: &str = "aes-256-gcm";
/// A KEK is 32 bytes (AES-256).
pub const KEK_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Binds the ciphertext to its purpose: a blob wrapped for anything else does not verify.
const AAD: &[u8] = b"vaultdisk-vault kv v1";

/// Why a wrap or unwrap failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KekError {
    /// The KEK has the wrong length.
    #[error("the KEK must be {KEK_BYTES} bytes, not {0}")]
    KeySize(usize),
    /// The wrapped blob is shorter than nonce and tag.
    #[error("wrapped secret is too short")]
    Short,
    /// The tag does not verify: wrong KEK or tampered blob.
    #[error("wrapped secret does not verify under this KEK (wrong KEK or tampered)")]
    Verify,
    /// The OS random generator failed.
    #[error("cannot read the OS random generator")]
    Random,
}

/// nonce (12) || ciphertext || tag (16).
pub fn wrap(kek: &[u8], secret: &[u8]) -> Result<Vec<u8>, KekError> {
    let cipher = Aes256Gcm::new_from_slice(kek).map_err(|_| KekError::KeySize(kek.len()))?;
    let mut nonce = [0u8; NONCE_BYTES];
    super::random::fill(&mut nonce).map_err(|_| KekError::Random)?;
    let sealed = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: secret,
                aad: AAD,
            },
        )
        .map_err(|_| KekError::Verify)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The secret from `wrap`'s output, decrypted in place inside a [`SecretBytes`]: no plain
/// heap copy of it is ever made (a failed check leaves only wiped memory behind).
pub fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<SecretBytes, KekError> {
    let cipher = Aes256Gcm::new_from_slice(kek).map_err(|_| KekError::KeySize(kek.len()))?;
    if wrapped.len() < NONCE_BYTES + TAG_BYTES {
        return Err(KekError::Short);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| KekError::Short)?;
    let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG_BYTES);
    let tag: [u8; TAG_BYTES] = tag.try_into().map_err(|_| KekError::Short)?;
    let mut secret = SecretBytes::from_slice(ciphertext);
    cipher
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            AAD,
            secret.expose_secret_mut().into(),
            &tag.into(),
        )
        .map_err(|_| KekError::Verify)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let kek = [7u8; 32];
        let w = wrap(&kek, b"0123456789abcdef0123456789abcdef").expect("wrap");
        assert_eq!(w.len(), 12 + 32 + 16);
        assert_eq!(
            unwrap(&kek, &w).expect("unwrap").expose_secret(),
            b"0123456789abcdef0123456789abcdef"
        );
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert_eq!(unwrap(&kek, &bad).err(), Some(KekError::Verify));
        assert_eq!(unwrap(&[8u8; 32], &w).err(), Some(KekError::Verify));
        assert_eq!(unwrap(&kek, &w[..20]).err(), Some(KekError::Short));
        assert_eq!(wrap(&[1u8; 16], b"x"), Err(KekError::KeySize(16)));
        // Fresh nonce each time.
        assert_ne!(
            wrap(&kek, b"x").expect("wrap"),
            wrap(&kek, b"x").expect("wrap")
        );
    }

    #[test]
    fn gcm_known_answer() {
        // NIST GCM test case 14 (AES-256, zero key, zero IV, one zero block, no AAD) checked
        // through the AEAD without our AAD.
        let cipher = Aes256Gcm::new_from_slice(&[0u8; 32]).expect("key");
        let ct = cipher
            .encrypt(&Nonce::from([0u8; 12]), &[0u8; 16][..])
            .expect("encrypt");
        let hex: String = ct.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
    }
}
