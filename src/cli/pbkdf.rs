//! cryptsetup's --pbkdf-* options -> a checked KDF calibration request (format and key verbs).
use super::PbkdfArgs;
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::{self, CalibrationRequest, KdfKind};
use crate::error::{Error, Result};

fn usage(msg: String) -> Error {
    Error::Usage(msg)
}

impl PbkdfArgs {
    /// Validates the options (cryptsetup's limits) for a keyslot storing a `key_len`-byte key.
    pub fn request(&self, key_len: usize) -> Result<CalibrationRequest> {
        let kind = match self.pbkdf.as_str() {
            "argon2id" => KdfKind::Argon2id,
            "argon2i" => KdfKind::Argon2i,
            "pbkdf2" => KdfKind::Pbkdf2,
            other => {
                return Err(usage(format!(
                    "--pbkdf {other:?} is not supported: use argon2id, argon2i or pbkdf2"
                )));
            }
        };
        if self.iter_time == 0 {
            return Err(usage("--iter-time must be at least 1 ms".into()));
        }
        let max_memory_kib = self.pbkdf_memory.unwrap_or(kdf::DEFAULT_ARGON2_MEMORY_KIB);
        if !(kdf::MIN_ARGON2_MEMORY_KIB..=kdf::MAX_ARGON2_MEMORY_KIB).contains(&max_memory_kib) {
            return Err(usage(format!(
                "--pbkdf-memory {max_memory_kib} is outside {}..{} KiB",
                kdf::MIN_ARGON2_MEMORY_KIB,
                kdf::MAX_ARGON2_MEMORY_KIB
            )));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let parallel = self
            .pbkdf_parallel
            .unwrap_or(cpus.min(kdf::MAX_ARGON2_CPUS));
        if !(1..=kdf::MAX_ARGON2_CPUS).contains(&parallel) {
            return Err(usage(format!(
                "--pbkdf-parallel {parallel} is outside 1..{}",
                kdf::MAX_ARGON2_CPUS
            )));
        }
        if let Some(n) = self.pbkdf_force_iterations {
            let min = if kind == KdfKind::Pbkdf2 {
                kdf::MIN_PBKDF2_ITERATIONS
            } else {
                kdf::MIN_ARGON2_TIME
            };
            if n < min {
                return Err(usage(format!(
                    "--pbkdf-force-iterations {n} is below the minimum {min} for {}",
                    self.pbkdf
                )));
            }
        }
        Ok(CalibrationRequest {
            kind,
            time_ms: self.iter_time,
            max_memory_kib,
            parallel,
            forced_iterations: self.pbkdf_force_iterations,
            hash: HashAlg::Sha256,
            key_len,
        })
    }
}
