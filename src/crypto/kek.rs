//! Local wrapping of a keyslot secret under a key-encryption key (KV mode): AES-256-GCM.
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Name recorded in the token next to the wrapped bytes.
pub const ALGORITHM: &str = "aes-256-gcm";
/// A KEK is 32 bytes (AES-256).
pub const KEK_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
/// Binds the ciphertext to its purpose: a blob wrapped for anything else does not verify.
const AAD: &[u8] = b"vaultdisk-vault kv v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KekError {
    #[error("the KEK must be {KEK_BYTES} bytes, not {0}")]
    KeySize(usize),
    #[error("wrapped secret is too short")]
    Short,
    #[error("wrapped secret does not verify under this KEK (wrong KEK or tampered)")]
    Verify,
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

/// The secret from `wrap`'s output; the caller moves it into a secret buffer.
pub fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, KekError> {
    let cipher = Aes256Gcm::new_from_slice(kek).map_err(|_| KekError::KeySize(kek.len()))?;
    if wrapped.len() < NONCE_BYTES + 16 {
        return Err(KekError::Short);
    }
    let (nonce, sealed) = wrapped.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| KekError::Short)?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: sealed,
                aad: AAD,
            },
        )
        .map_err(|_| KekError::Verify)
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
            unwrap(&kek, &w).expect("unwrap"),
            b"0123456789abcdef0123456789abcdef"
        );
        let mut bad = w.clone();
        bad[20] ^= 1;
        assert_eq!(unwrap(&kek, &bad), Err(KekError::Verify));
        assert_eq!(unwrap(&[8u8; 32], &w), Err(KekError::Verify));
        assert_eq!(unwrap(&kek, &w[..20]), Err(KekError::Short));
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
