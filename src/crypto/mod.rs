//! Pure cryptographic functions on bytes: no JSON, no files, no logging of data.
pub mod af;
pub mod digest;
pub mod elephant;
pub mod hash;
pub mod kdf;
pub mod kek;
pub mod random;
pub mod xts;

/// What can go wrong in a primitive; callers turn these into user-facing errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// An XTS key that is not 32 or 64 bytes long; holds its length in bytes.
    #[error("unsupported key size {0} bytes (aes-xts needs 32 or 64)")]
    KeySize(usize),
    /// A hash name outside the supported set; holds the name.
    #[error("unsupported hash {0:?}")]
    UnknownHash(String),
    /// KDF or calibration parameters beyond the caps of docs/format.md §9; says which.
    #[error("KDF parameters beyond limits: {0}")]
    KdfLimits(String),
    /// The KDF itself failed (argon2 refused its parameters, its thread pool did not start).
    #[error("KDF failed: {0}")]
    Kdf(String),
    /// The KDF's memory could not be allocated or exceeds what is usable; holds it in KiB.
    #[error("not enough memory for the KDF ({0} KiB)")]
    KdfMemory(u64),
}
