//! Password-based key derivation: Argon2id, Argon2i, PBKDF2 behind one enum, with cost caps
//! and cryptsetup-style calibration.
use super::CryptoError;
use super::hash::HashAlg;

/// A keyslot KDF with its cost parameters (salt kept separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    Pbkdf2 { hash: HashAlg, iterations: u32 },
    Argon2i { time: u32, memory_kib: u32, cpus: u32 },
    Argon2id { time: u32, memory_kib: u32, cpus: u32 },
}

/// Which KDF family to calibrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfKind {
    Pbkdf2,
    Argon2i,
    Argon2id,
}

/// Caps against hostile headers (luks-format.md §9): checked before any work.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
pub const MIN_ARGON2_MEMORY_KIB: u32 = 32;
pub const MAX_ARGON2_CPUS: u32 = 4;

impl Kdf {
    /// Refuses parameters beyond the caps (memory, cpus, zero time/iterations, absurd cost).
    pub fn check_limits(&self) -> Result<(), CryptoError> {
        todo!("{self:?}")
    }

    /// Derives `out.len()` bytes from `secret` and `salt`. Calls `check_limits` first.
    pub fn derive(&self, secret: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        todo!("{secret:?}{salt:?}{out:?}")
    }

    /// The KDF's LUKS2 type name ("pbkdf2", "argon2i", "argon2id").
    pub fn type_name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2i { .. } => "argon2i",
            Kdf::Argon2id { .. } => "argon2id",
        }
    }
}

/// What the user asked for when creating a keyslot (cryptsetup's --pbkdf-* options).
#[derive(Debug, Clone, Copy)]
pub struct CalibrationRequest {
    pub kind: KdfKind,
    /// Target unlock time (--iter-time), default 2000.
    pub time_ms: u32,
    /// Memory ceiling (--pbkdf-memory), default 1 GiB; further capped at half of free RAM.
    pub max_memory_kib: u32,
    /// Threads (--pbkdf-parallel), default min(4, online CPUs).
    pub parallel: u32,
    /// --pbkdf-force-iterations: skip the benchmark, use this time/iteration count.
    pub forced_iterations: Option<u32>,
    /// PBKDF2 hash (default sha256).
    pub hash: HashAlg,
    /// Output length of the derivation being calibrated (keyslot area key size).
    pub key_len: usize,
}

/// Benchmarks this machine like cryptsetup and returns parameters that take about `time_ms`.
pub fn calibrate(request: &CalibrationRequest) -> Result<Kdf, CryptoError> {
    todo!("{request:?}")
}

/// PBKDF2 iterations for the volume-key digest: about `time_ms` here, at least 1000.
pub fn calibrate_digest_iterations(hash: HashAlg, time_ms: u32) -> u32 {
    todo!("{hash:?}{time_ms}")
}
