//! The LUKS volume-key digest: PBKDF2 of the key, compared in constant time
//! (docs/format.md §4.3; LUKS1 mkDigest §8).
use super::hash::{HashAlg, MAX_OUTPUT_LEN};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// PBKDF2-HMAC-`hash`(volume_key, salt, iterations) into `out` (its length is the digest length).
///
/// Any output length works; LUKS uses the hash size (LUKS2) or 20 bytes (LUKS1 and headers
/// converted from it).
pub fn compute(volume_key: &[u8], hash: HashAlg, iterations: u32, salt: &[u8], out: &mut [u8]) {
    hash.pbkdf2(volume_key, salt, iterations, out);
}

/// True when `volume_key` matches `expected` (length = expected.len()), in constant time.
///
/// Accepts digests of 20 bytes up to the hash size (docs/format.md §4.3: converted headers keep
/// LUKS1's 20 bytes). Anything else — empty, shorter than 20, longer than the hash — is refused
/// without running PBKDF2, so a truncated digest field cannot make a short prefix match.
pub fn verify(
    volume_key: &[u8],
    hash: HashAlg,
    iterations: u32,
    salt: &[u8],
    expected: &[u8],
) -> bool {
    if !valid_len(hash, expected.len()) {
        return false;
    }
    let mut buf = Zeroizing::new([0u8; MAX_OUTPUT_LEN]);
    let got = &mut buf[..expected.len()];
    compute(volume_key, hash, iterations, salt, got);
    bool::from(got.ct_eq(expected))
}

/// Whether a digest of `len` bytes is one LUKS writes for `hash`: 20 (LUKS1 style) or the
/// hash's own output size.
pub fn valid_len(hash: HashAlg, len: usize) -> bool {
    len == 20 || len == hash.output_len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    // docs/format.md §4.6: the digest of a cryptsetup-made header whose volume key is 00..3f.
    const SALT_B64: &str = "FqoXWtG9a9u4mU/aO72JIqcSYsS/lwvLO1p/HAaK7Os=";
    const DIGEST_B64: &str = "qzVkONTAJtn2obx13IcGGOpjqjzacSkeNnKHD7qGe5Y=";

    fn vk() -> Vec<u8> {
        (0u8..64).collect()
    }

    #[test]
    fn cryptsetup_digest_vector() {
        let salt = STANDARD.decode(SALT_B64).unwrap();
        let expected = STANDARD.decode(DIGEST_B64).unwrap();
        let mut out = [0u8; 32];
        compute(&vk(), HashAlg::Sha256, 1000, &salt, &mut out);
        assert_eq!(out.as_slice(), expected.as_slice());
        assert!(verify(&vk(), HashAlg::Sha256, 1000, &salt, &expected));
    }

    #[test]
    fn twenty_byte_digest_is_a_prefix() {
        // PBKDF2 output of 20 bytes is the first 20 bytes of the 32-byte output.
        let salt = STANDARD.decode(SALT_B64).unwrap();
        let expected = STANDARD.decode(DIGEST_B64).unwrap();
        assert!(verify(&vk(), HashAlg::Sha256, 1000, &salt, &expected[..20]));
        let mut out = [0u8; 20];
        compute(&vk(), HashAlg::Sha1, 1000, &salt, &mut out);
        assert!(verify(&vk(), HashAlg::Sha1, 1000, &salt, &out));
    }

    #[test]
    fn rejects_wrong_key_salt_iterations_and_lengths() {
        let salt = STANDARD.decode(SALT_B64).unwrap();
        let expected = STANDARD.decode(DIGEST_B64).unwrap();
        let mut bad = vk();
        bad[63] ^= 1;
        assert!(!verify(&bad, HashAlg::Sha256, 1000, &salt, &expected));
        assert!(!verify(&vk(), HashAlg::Sha256, 999, &salt, &expected));
        assert!(!verify(&vk(), HashAlg::Sha256, 1000, &salt[1..], &expected));
        assert!(!verify(&vk(), HashAlg::Sha512, 1000, &salt, &expected));
        assert!(!verify(
            &vk(),
            HashAlg::Sha256,
            1000,
            &salt,
            &expected[..16]
        ));
        assert!(!verify(&vk(), HashAlg::Sha256, 1000, &salt, &[]));
        assert!(!verify(
            &vk(),
            HashAlg::Sha256,
            1000,
            &salt,
            &expected[..31]
        ));
        let mut flipped = expected.clone();
        flipped[0] ^= 0x80;
        assert!(!verify(&vk(), HashAlg::Sha256, 1000, &salt, &flipped));
    }
}
