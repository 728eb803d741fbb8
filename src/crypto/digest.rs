//! The LUKS volume-key digest: PBKDF2 of the key, compared in constant time.
use super::hash::HashAlg;

/// PBKDF2-HMAC-`hash`(volume_key, salt, iterations) into `out` (its length is the digest length).
pub fn compute(volume_key: &[u8], hash: HashAlg, iterations: u32, salt: &[u8], out: &mut [u8]) {
    todo!("{volume_key:?}{hash:?}{iterations}{salt:?}{out:?}")
}

/// True when `volume_key` matches `expected` (length = expected.len()), in constant time.
pub fn verify(volume_key: &[u8], hash: HashAlg, iterations: u32, salt: &[u8], expected: &[u8]) -> bool {
    todo!("{volume_key:?}{hash:?}{iterations}{salt:?}{expected:?}")
}
