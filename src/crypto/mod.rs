//! Pure cryptographic functions on bytes: no JSON, no files, no logging of data.
pub mod af;
pub mod digest;
pub mod hash;
pub mod kdf;
pub mod kek;
pub mod random;
pub mod xts;

/// What can go wrong in a primitive; callers turn these into user-facing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("unsupported key size {0} bytes (aes-xts needs 32 or 64)")]
    KeySize(usize),
    #[error("unsupported hash {0:?}")]
    UnknownHash(String),
    #[error("KDF parameters beyond limits: {0}")]
    KdfLimits(String),
    #[error("KDF failed: {0}")]
    Kdf(String),
    #[error("not enough memory for the KDF ({0} KiB)")]
    KdfMemory(u64),
}
