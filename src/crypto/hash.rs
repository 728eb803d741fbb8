//! Hash algorithms named in LUKS headers (af.hash, kdf.hash, digest.hash, LUKS1 hashSpec).

/// A hash named by a LUKS header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlg {
    /// Parses a LUKS hash name ("sha256"); None for names we do not support.
    pub fn from_name(name: &str) -> Option<Self> {
        todo!("{name}")
    }
    /// The name as LUKS writes it.
    pub fn name(self) -> &'static str {
        todo!()
    }
    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        todo!()
    }
}
