//! Password-based key derivation: Argon2id, Argon2i, PBKDF2 behind one enum, with the static
//! cost caps against hostile headers. What depends on this machine (free memory, timing,
//! cryptsetup-style calibration) is in [`calibrate`](mod@calibrate).
//!
//! Argon2 is version 0x13 with no secret key and no associated data, as LUKS2 uses it
//! (docs/format.md §5). Its lanes run on a rayon pool private to one derivation whose threads
//! have exited before `derive` returns: the global rayon pool is never touched, so a process
//! may fork (daemonise) right after unlocking.
use super::CryptoError;
use super::hash::HashAlg;

pub mod budget;
pub mod calibrate;

pub use calibrate::{
    CalibrationRequest, KdfKind, calibrate, calibrate_digest_iterations, usable_memory_kib,
};
use std::time::{Duration, Instant};

/// A keyslot KDF with its cost parameters (salt kept separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-`hash`, `iterations` rounds per output block.
    Pbkdf2 {
        /// The HMAC hash.
        hash: HashAlg,
        /// Rounds per output block.
        iterations: u32,
    },
    /// Argon2i: `time` passes over `memory_kib` KiB with `cpus` lanes.
    Argon2i {
        /// Passes over the memory.
        time: u32,
        /// Memory cost, in KiB.
        memory_kib: u32,
        /// Lanes (threads), at most [`MAX_ARGON2_CPUS`].
        cpus: u32,
    },
    /// Argon2id: `time` passes over `memory_kib` KiB with `cpus` lanes.
    Argon2id {
        /// Passes over the memory.
        time: u32,
        /// Memory cost, in KiB.
        memory_kib: u32,
        /// Lanes (threads), at most [`MAX_ARGON2_CPUS`].
        cpus: u32,
    },
}

// Caps against hostile headers (docs/format.md §9): checked before any work.

/// Largest Argon2 memory cost, KiB (cryptsetup's limit: 4 GiB).
pub const MAX_ARGON2_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Smallest Argon2 memory cost, KiB (cryptsetup's hard limit).
pub const MIN_ARGON2_MEMORY_KIB: u32 = 32;
/// Most Argon2 lanes cryptsetup accepts.
pub const MAX_ARGON2_CPUS: u32 = 4;
/// Largest Argon2 work, `time * memory_kib` (KiB passed over): 2^32 KiB is about an hour of
/// one core's work, far beyond any calibrated keyslot (cryptsetup's 2 s default is below
/// 2^24 on current hardware), so it only stops a header built to hang us.
pub const MAX_ARGON2_WORK_KIB: u64 = 1 << 32;
/// Smallest PBKDF2 iteration count calibration produces (NIST SP 800-132, as cryptsetup).
pub const MIN_PBKDF2_ITERATIONS: u32 = 1000;
/// Smallest Argon2 time cost calibration produces (cryptsetup's minimum).
pub const MIN_ARGON2_TIME: u32 = 4;
/// cryptsetup's default Argon2 memory ceiling (--pbkdf-memory), KiB: 1 GiB.
pub const DEFAULT_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
impl Kdf {
    /// Refuses parameters beyond the static caps (memory, cpus, zero time/iterations, absurd
    /// cost) with `KdfLimits`: a header asking for them is malformed. Pure: the same answer on
    /// every machine.
    pub fn check_caps(&self) -> Result<(), CryptoError> {
        match *self {
            Kdf::Pbkdf2 { iterations, .. } => {
                if iterations == 0 {
                    return Err(CryptoError::KdfLimits("pbkdf2 iterations 0".into()));
                }
                Ok(())
            }
            Kdf::Argon2i {
                time,
                memory_kib,
                cpus,
            }
            | Kdf::Argon2id {
                time,
                memory_kib,
                cpus,
            } => {
                let name = self.type_name();
                if time == 0 {
                    return Err(CryptoError::KdfLimits(format!("{name} time 0")));
                }
                if !(MIN_ARGON2_MEMORY_KIB..=MAX_ARGON2_MEMORY_KIB).contains(&memory_kib) {
                    return Err(CryptoError::KdfLimits(format!(
                        "{name} memory {memory_kib} KiB, allowed \
                         {MIN_ARGON2_MEMORY_KIB}..={MAX_ARGON2_MEMORY_KIB}"
                    )));
                }
                if !(1..=MAX_ARGON2_CPUS).contains(&cpus) {
                    return Err(CryptoError::KdfLimits(format!(
                        "{name} cpus {cpus}, allowed 1..={MAX_ARGON2_CPUS}"
                    )));
                }
                let work = u64::from(time) * u64::from(memory_kib);
                if work > MAX_ARGON2_WORK_KIB {
                    return Err(CryptoError::KdfLimits(format!(
                        "{name} time {time} x memory {memory_kib} KiB is beyond \
                         {MAX_ARGON2_WORK_KIB} KiB of work"
                    )));
                }
                Ok(())
            }
        }
    }

    /// [`Kdf::check_caps`], then [`Kdf::fits_in_memory`]: `KdfLimits` for a malformed cost,
    /// `KdfMemory` for one this machine cannot afford now.
    pub fn check_limits(&self) -> Result<(), CryptoError> {
        self.check_caps()?;
        self.fits_in_memory()
    }

    /// Derives `out.len()` bytes from `secret` and `salt`. Calls `check_limits` first.
    pub fn derive(&self, secret: &[u8], salt: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
        self.check_limits()?;
        match *self {
            Kdf::Pbkdf2 { hash, iterations } => {
                hash.pbkdf2(secret, salt, iterations, out);
                Ok(())
            }
            Kdf::Argon2i {
                time,
                memory_kib,
                cpus,
            } => argon2(
                argon2::Algorithm::Argon2i,
                time,
                memory_kib,
                cpus,
                secret,
                salt,
                out,
            ),
            Kdf::Argon2id {
                time,
                memory_kib,
                cpus,
            } => argon2(
                argon2::Algorithm::Argon2id,
                time,
                memory_kib,
                cpus,
                secret,
                salt,
                out,
            ),
        }
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
fn argon2(
    algorithm: argon2::Algorithm,
    time: u32,
    memory_kib: u32,
    cpus: u32,
    secret: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let params = argon2::Params::new(memory_kib, time, cpus, Some(out.len()))
        .map_err(|e| CryptoError::Kdf(format!("argon2 parameters: {e}")))?;
    let ctx = argon2::Argon2::new(algorithm, argon2::Version::V0x13, params);
    let result = on_private_pool(cpus, || ctx.hash_password_into(secret, salt, out))?;
    result.map_err(|e| match e {
        argon2::Error::OutOfMemory => CryptoError::KdfMemory(u64::from(memory_kib)),
        e => CryptoError::Kdf(format!("argon2: {e}")),
    })
}

/// Runs `f` inside a fresh rayon pool of up to `lanes` threads (at most the online CPUs) and
/// waits until its threads have exited. argon2's `parallel` feature spreads lanes with
/// `into_par_iter`, which would otherwise start rayon's process-global pool; its threads would
/// then outlive the KDF and be lost in a later fork.
fn on_private_pool<R: Send>(lanes: u32, f: impl FnOnce() -> R + Send) -> Result<R, CryptoError> {
    let threads = usize::try_from(lanes).unwrap_or(1).clamp(1, online_cpus());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("vaultdisk-kdf-{i}"))
        .exit_handler(move |_| {
            // The receiver may be gone if waiting timed out; nothing to do then.
            let _ = tx.send(());
        })
        .build()
        .map_err(|e| CryptoError::Kdf(format!("KDF threads: {e}")))?;
    let r = pool.install(f);
    drop(pool);
    // Each worker reports from its exit handler, the last thing it runs. A generous timeout
    // keeps a wedged thread from hanging the unlock; it would only be a leaked idle thread.
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..threads {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
    Ok(r)
}

/// Online CPUs (at least 1).
pub(crate) fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn pbkdf2(hash: HashAlg, pass: &[u8], salt: &[u8], iterations: u32, len: usize) -> String {
        let mut out = vec![0u8; len];
        Kdf::Pbkdf2 { hash, iterations }
            .derive(pass, salt, &mut out)
            .unwrap();
        hex(&out)
    }

    #[test]
    fn pbkdf2_luks_vector() {
        // docs/format.md §10: keyslot KDF of a cryptsetup-made header.
        let salt = STANDARD
            .decode("jI6leoC+fNdkHbAVvQ7BXByqCAZ95c3beIKK7iFKDDw=")
            .unwrap();
        assert_eq!(
            pbkdf2(HashAlg::Sha256, b"testpass", &salt, 1000, 64),
            "d2730aa9b0f38b300e164b29add1858c947035832a511bceb6d041347ee221a4\
             ba6b49aab723ed1993cfc15279070d13a99e044d957a64f34b366df24f810dcb"
        );
    }

    #[test]
    fn pbkdf2_rfc6070_sha1() {
        let h = HashAlg::Sha1;
        assert_eq!(
            pbkdf2(h, b"password", b"salt", 1, 20),
            "0c60c80f961f0e71f3a9b524af6012062fe037a6"
        );
        assert_eq!(
            pbkdf2(h, b"password", b"salt", 2, 20),
            "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"
        );
        assert_eq!(
            pbkdf2(h, b"password", b"salt", 4096, 20),
            "4b007901b765489abead49d926f721d065a429c1"
        );
        assert_eq!(
            pbkdf2(
                h,
                b"passwordPASSWORDpassword",
                b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
                4096,
                25
            ),
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"
        );
        assert_eq!(
            pbkdf2(h, b"pass\0word", b"sa\0lt", 4096, 16),
            "56fa6aa75548099dcc37d7f03425e0c3"
        );
    }

    #[test]
    fn pbkdf2_rfc7914_sha256() {
        assert_eq!(
            pbkdf2(HashAlg::Sha256, b"passwd", b"salt", 1, 64),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
             49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        );
        assert_eq!(
            pbkdf2(HashAlg::Sha256, b"Password", b"NaCl", 80000, 64),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
             a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
        );
    }

    #[test]
    fn pbkdf2_ripemd160() {
        // Reference: Python hashlib (OpenSSL) pbkdf2_hmac("ripemd160", ...), two blocks.
        assert_eq!(
            pbkdf2(HashAlg::Ripemd160, b"password", b"salt", 1000, 40),
            "b5c5682c46fdb315930cfc54e82d0987e6ef938fee9320191bfbac2700de4ed4518152edc1ea7755"
        );
    }

    #[test]
    fn argon2id_luks_vector() {
        // docs/format.md §10: argon2id keyslot of a cryptsetup-made header.
        let salt = STANDARD
            .decode("UThKrBlqV1mfrhaWdRx2yc9rxHIX2bhroZDudJv7EsM=")
            .unwrap();
        let mut out = [0u8; 64];
        Kdf::Argon2id {
            time: 4,
            memory_kib: 32,
            cpus: 1,
        }
        .derive(b"testpass", &salt, &mut out)
        .unwrap();
        assert_eq!(
            hex(&out),
            "dcf52461eb56efb94110909fc745dd01c553a6160fc3fe3f5cd591e2a3c311bd\
             f8ff47cf06460003b4aeac28e3a32b7883140c0c9848f2f17805653d6622426b"
        );
    }

    #[test]
    fn argon2_lanes_and_variants() {
        // Several lanes on the private pool give the same answer each time, and argon2i
        // differs from argon2id.
        let salt = [7u8; 32];
        let run = |kdf: Kdf| {
            let mut out = [0u8; 32];
            kdf.derive(b"pw", &salt, &mut out).unwrap();
            out
        };
        let id4 = Kdf::Argon2id {
            time: 1,
            memory_kib: 64,
            cpus: 4,
        };
        let i4 = Kdf::Argon2i {
            time: 1,
            memory_kib: 64,
            cpus: 4,
        };
        assert_eq!(run(id4), run(id4));
        assert_ne!(run(id4), run(i4));
        assert_ne!(
            run(id4),
            run(Kdf::Argon2id {
                time: 1,
                memory_kib: 64,
                cpus: 1
            })
        );
    }

    #[test]
    fn limits() {
        let ok = Kdf::Argon2id {
            time: 4,
            memory_kib: 32,
            cpus: 4,
        };
        assert_eq!(ok.check_caps(), Ok(()));
        assert_eq!(ok.check_limits(), Ok(()));
        let bad = [
            Kdf::Pbkdf2 {
                hash: HashAlg::Sha256,
                iterations: 0,
            },
            Kdf::Argon2id {
                time: 0,
                memory_kib: 1024,
                cpus: 1,
            },
            Kdf::Argon2i {
                time: 1,
                memory_kib: 31,
                cpus: 1,
            },
            Kdf::Argon2id {
                time: 1,
                memory_kib: MAX_ARGON2_MEMORY_KIB + 1,
                cpus: 1,
            },
            Kdf::Argon2id {
                time: 1,
                memory_kib: 1024,
                cpus: 0,
            },
            Kdf::Argon2id {
                time: 1,
                memory_kib: 1024,
                cpus: 5,
            },
            Kdf::Argon2id {
                time: u32::MAX,
                memory_kib: 1024 * 1024,
                cpus: 1,
            },
        ];
        for kdf in bad {
            assert!(
                matches!(kdf.check_caps(), Err(CryptoError::KdfLimits(_))),
                "{kdf:?}"
            );
            assert!(
                matches!(kdf.check_limits(), Err(CryptoError::KdfLimits(_))),
                "{kdf:?}"
            );
            let mut out = [0u8; 32];
            assert!(kdf.derive(b"pw", &[0u8; 32], &mut out).is_err(), "{kdf:?}");
        }
    }
}
