//! Hash algorithms named in LUKS headers (af.hash, kdf.hash, digest.hash, LUKS1 hashSpec).
//!
//! One enum, matched in one place, dispatching to the RustCrypto `sha1`/`sha2` crates for a plain
//! digest and to `pbkdf2` for PBKDF2-HMAC.
use sha2::Digest;
use zeroize::Zeroize;

/// The longest digest any supported hash produces (sha512), in bytes.
pub const MAX_OUTPUT_LEN: usize = 64;

/// A hash named by a LUKS header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    /// SHA-1 (20 bytes): old LUKS1 headers.
    Sha1,
    /// SHA-256 (32 bytes): the cryptsetup default.
    Sha256,
    /// SHA-512 (64 bytes).
    Sha512,
    /// RIPEMD-160 (20 bytes): accepted by cryptsetup for LUKS1 (`--hash ripemd160`).
    Ripemd160,
    /// MD5 (16 bytes): cryptsetup 2.6 makes LUKS2 volumes with `--hash md5` (kdf, af and
    /// digest hash); too short for LUKS1, which needs 20 bytes (docs/format.md §8).
    Md5,
}

impl HashAlg {
    /// Parses a LUKS hash name ("sha256"); None for names we do not support.
    ///
    /// Matching is exact and lower-case, as cryptsetup writes the names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(HashAlg::Sha1),
            "sha256" => Some(HashAlg::Sha256),
            "sha512" => Some(HashAlg::Sha512),
            "ripemd160" => Some(HashAlg::Ripemd160),
            "md5" => Some(HashAlg::Md5),
            _ => None,
        }
    }

    /// The name as LUKS writes it.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha512 => "sha512",
            HashAlg::Ripemd160 => "ripemd160",
            HashAlg::Md5 => "md5",
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 | HashAlg::Ripemd160 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
            HashAlg::Md5 => 16,
        }
    }

    /// Hashes the concatenation of `parts` and writes the first `out.len()` bytes of the digest
    /// to `out` (AF diffusion keeps a truncated digest for a short last block).
    ///
    /// # Panics
    /// If `out` is longer than [`HashAlg::output_len`]: a caller bug, not a data condition.
    pub fn digest_into(self, parts: &[&[u8]], out: &mut [u8]) {
        assert!(out.len() <= self.output_len(), "digest output too long");
        match self {
            HashAlg::Sha1 => finish::<sha1::Sha1>(parts, out),
            HashAlg::Sha256 => finish::<sha2::Sha256>(parts, out),
            HashAlg::Sha512 => finish::<sha2::Sha512>(parts, out),
            HashAlg::Ripemd160 => finish::<ripemd::Ripemd160>(parts, out),
            HashAlg::Md5 => finish::<md5::Md5>(parts, out),
        }
    }

    /// PBKDF2-HMAC with this hash as PRF: `out.len()` bytes from `password`, `salt`, `iterations`.
    ///
    /// An iteration count of 0 behaves like 1 (the first HMAC block only); callers refuse 0
    /// before getting here (kdf::Kdf::check_limits).
    pub fn pbkdf2(self, password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
        match self {
            HashAlg::Sha1 => pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out),
            HashAlg::Sha256 => pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, out),
            HashAlg::Sha512 => pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, iterations, out),
            HashAlg::Ripemd160 => {
                pbkdf2::pbkdf2_hmac::<ripemd::Ripemd160>(password, salt, iterations, out)
            }
            HashAlg::Md5 => pbkdf2::pbkdf2_hmac::<md5::Md5>(password, salt, iterations, out),
        }
    }
}

impl std::fmt::Display for HashAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn finish<D: Digest>(parts: &[&[u8]], out: &mut [u8]) {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    let mut full = h.finalize();
    out.copy_from_slice(&full[..out.len()]);
    // The digest may be derived from key material (AF diffusion): wipe the full-length copy.
    full.as_mut_slice().zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::encode as hex;

    #[test]
    fn names_round_trip() {
        for h in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha512,
            HashAlg::Ripemd160,
            HashAlg::Md5,
        ] {
            assert_eq!(HashAlg::from_name(h.name()), Some(h));
            assert!(h.output_len() <= MAX_OUTPUT_LEN);
        }
        assert_eq!(HashAlg::from_name("SHA256"), None);
        assert_eq!(HashAlg::from_name("ripemd"), None);
        assert_eq!(HashAlg::from_name(""), None);
    }

    #[test]
    fn digest_known_answers() {
        let mut out = [0u8; 20];
        HashAlg::Sha1.digest_into(&[b"a", b"bc"], &mut out);
        assert_eq!(hex(&out), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut out = [0u8; 32];
        HashAlg::Sha256.digest_into(&[b"abc"], &mut out);
        assert_eq!(
            hex(&out),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut out = [0u8; 4];
        HashAlg::Sha512.digest_into(&[b"abc"], &mut out);
        assert_eq!(hex(&out), "ddaf35a1");
        let mut out = [0u8; 20];
        HashAlg::Ripemd160.digest_into(&[b"ab", b"c"], &mut out);
        assert_eq!(hex(&out), "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc");
        let mut out = [0u8; 16];
        HashAlg::Md5.digest_into(&[b"a", b"bc"], &mut out);
        assert_eq!(hex(&out), "900150983cd24fb0d6963f7d28e17f72");
        // RFC 6070-style check of PBKDF2-HMAC-MD5 (Python hashlib.pbkdf2_hmac).
        let mut out = [0u8; 16];
        HashAlg::Md5.pbkdf2(b"password", b"salt", 1, &mut out);
        assert_eq!(hex(&out), "f31afb6d931392daa5e3130f47f9a9b6");
    }

    #[test]
    #[should_panic(expected = "digest output too long")]
    fn digest_refuses_long_output() {
        let mut out = [0u8; 21];
        HashAlg::Sha1.digest_into(&[b"abc"], &mut out);
    }
}
