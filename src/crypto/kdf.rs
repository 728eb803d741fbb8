//! Password-based key derivation: Argon2id, Argon2i, PBKDF2 behind one enum, with cost caps
//! and cryptsetup-style calibration.
//!
//! Argon2 is version 0x13 with no secret key and no associated data, as LUKS2 uses it
//! (luks-format.md §5). Its lanes run on a rayon pool private to one derivation whose threads
//! have exited before `derive` returns: the global rayon pool is never touched, so a process
//! may fork (daemonise) right after unlocking.
use super::CryptoError;
use super::hash::HashAlg;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A keyslot KDF with its cost parameters (salt kept separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC-`hash`, `iterations` rounds per output block.
    Pbkdf2 { hash: HashAlg, iterations: u32 },
    /// Argon2i: `time` passes over `memory_kib` KiB with `cpus` lanes.
    Argon2i {
        time: u32,
        memory_kib: u32,
        cpus: u32,
    },
    /// Argon2id: `time` passes over `memory_kib` KiB with `cpus` lanes.
    Argon2id {
        time: u32,
        memory_kib: u32,
        cpus: u32,
    },
}

/// Which KDF family to calibrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfKind {
    /// PBKDF2 with `CalibrationRequest::hash`.
    Pbkdf2,
    /// Argon2i.
    Argon2i,
    /// Argon2id (the LUKS2 default).
    Argon2id,
}

// Caps against hostile headers (luks-format.md §9): checked before any work.

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
    /// Refuses parameters beyond the caps (memory, cpus, zero time/iterations, absurd cost).
    ///
    /// Static caps give `KdfLimits`. An Argon2 memory cost above half of this machine's
    /// available memory (MemAvailable in /proc/meminfo; unchecked where that is unreadable)
    /// gives `KdfMemory`: it could not run here, though the header is not malformed.
    pub fn check_limits(&self) -> Result<(), CryptoError> {
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
                if let Some(usable) = usable_memory_kib()
                    && u64::from(memory_kib) > usable
                {
                    return Err(CryptoError::KdfMemory(u64::from(memory_kib)));
                }
                Ok(())
            }
        }
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
fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Half of MemAvailable from /proc/meminfo, in KiB: the most memory one Argon2 run may take
/// here (cryptsetup likewise never uses more than half of physical memory). None when unknown.
pub fn usable_memory_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available_kib(&text).map(|kib| kib / 2)
}

fn parse_mem_available_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let mut it = rest.split_whitespace();
        let value = it.next()?.parse::<u64>().ok()?;
        match it.next() {
            Some("kB") | None => Some(value),
            Some(_) => None,
        }
    })
}

/// What the user asked for when creating a keyslot (cryptsetup's --pbkdf-* options).
#[derive(Debug, Clone, Copy)]
pub struct CalibrationRequest {
    /// KDF family (--pbkdf).
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
///
/// - PBKDF2: iterations for `time_ms` at `key_len` output bytes, at least 1000; a forced count
///   below 1000 is refused.
/// - Argon2: `parallel` 0 means min(4, online CPUs); a given value above 4 is refused and, when
///   benchmarking, lowered to the online CPUs. Memory is capped at `max_memory_kib` (callers
///   pass 1 GiB by default, as cryptsetup) and at half of available RAM; time is at least 4.
///   With `forced_iterations`, time = that count and memory = `max_memory_kib` exactly.
///
/// Calibration takes a few times `time_ms` at most.
pub fn calibrate(request: &CalibrationRequest) -> Result<Kdf, CryptoError> {
    match request.kind {
        KdfKind::Pbkdf2 => {
            let iterations = match request.forced_iterations {
                Some(n) if n < MIN_PBKDF2_ITERATIONS => {
                    return Err(CryptoError::KdfLimits(format!(
                        "forced pbkdf2 iterations {n}, minimum {MIN_PBKDF2_ITERATIONS}"
                    )));
                }
                Some(n) => n,
                None => {
                    require_time(request.time_ms)?;
                    pbkdf2_iterations_for(request.hash, request.key_len, request.time_ms)
                }
            };
            Ok(Kdf::Pbkdf2 {
                hash: request.hash,
                iterations,
            })
        }
        KdfKind::Argon2i | KdfKind::Argon2id => calibrate_argon2(request),
    }
}

/// PBKDF2 iterations for the volume-key digest: about `time_ms` here, at least 1000.
///
/// cryptsetup uses 125 ms for LUKS2 digests. The output length is the hash's own size.
pub fn calibrate_digest_iterations(hash: HashAlg, time_ms: u32) -> u32 {
    if time_ms == 0 {
        return MIN_PBKDF2_ITERATIONS;
    }
    pbkdf2_iterations_for(hash, hash.output_len(), time_ms)
}

fn require_time(time_ms: u32) -> Result<(), CryptoError> {
    if time_ms == 0 {
        return Err(CryptoError::KdfLimits("target time 0 ms".into()));
    }
    Ok(())
}

// Benchmark inputs: arbitrary and public, like cryptsetup's "foobarfo".
const BENCH_PASSWORD: &[u8] = b"foobarfo";
const BENCH_SALT: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// Milliseconds (fractional) one call of `f` takes, wall clock.
fn time_once(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1000.0
}

/// Measures PBKDF2 at growing iteration counts until one run takes at least half of `time_ms`
/// (capped to 20..=500 ms, cryptsetup measures up to 500 ms) and extrapolates. Wall clock is
/// used; on a loaded machine that errs on the side of fewer iterations.
fn pbkdf2_iterations_for(hash: HashAlg, key_len: usize, time_ms: u32) -> u32 {
    let key_len = if key_len == 0 {
        hash.output_len()
    } else {
        key_len
    };
    let mut out = Zeroizing::new(vec![0u8; key_len]);
    let bench_ms = (f64::from(time_ms) / 2.0).clamp(20.0, 500.0);
    let mut iterations: u32 = 1024;
    let mut per_ms = 0.0;
    for _ in 0..24 {
        let ms = time_once(|| hash.pbkdf2(BENCH_PASSWORD, BENCH_SALT, iterations, &mut out));
        if ms > 0.0 {
            per_ms = f64::from(iterations) / ms;
        }
        if ms >= bench_ms {
            break;
        }
        // Grow towards the measuring time in one or two steps, like cryptsetup's shifts.
        let factor = if ms <= 0.0 {
            16.0
        } else {
            (bench_ms / ms * 1.2).clamp(2.0, 16.0)
        };
        let next = f64::from(iterations) * factor;
        if next >= f64::from(u32::MAX) {
            break;
        }
        iterations = next as u32;
    }
    let target = per_ms * f64::from(time_ms);
    if target >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (target as u32).max(MIN_PBKDF2_ITERATIONS)
    }
}

fn argon2_kdf(kind: KdfKind, time: u32, memory_kib: u32, cpus: u32) -> Kdf {
    match kind {
        KdfKind::Argon2i => Kdf::Argon2i {
            time,
            memory_kib,
            cpus,
        },
        _ => Kdf::Argon2id {
            time,
            memory_kib,
            cpus,
        },
    }
}

fn calibrate_argon2(request: &CalibrationRequest) -> Result<Kdf, CryptoError> {
    let cpus_online = u32::try_from(online_cpus()).unwrap_or(MAX_ARGON2_CPUS);
    let parallel = match request.parallel {
        0 => MAX_ARGON2_CPUS.min(cpus_online),
        p if p > MAX_ARGON2_CPUS => {
            return Err(CryptoError::KdfLimits(format!(
                "parallel threads {p}, maximum {MAX_ARGON2_CPUS}"
            )));
        }
        // cryptsetup keeps a forced value as given, and otherwise lowers it to the CPUs online.
        p if request.forced_iterations.is_some() => p,
        p => p.min(cpus_online),
    };
    let key_len = if request.key_len == 0 {
        32
    } else {
        request.key_len
    };

    if let Some(time) = request.forced_iterations {
        if time < MIN_ARGON2_TIME {
            return Err(CryptoError::KdfLimits(format!(
                "forced argon2 iterations {time}, minimum {MIN_ARGON2_TIME}"
            )));
        }
        let kdf = argon2_kdf(request.kind, time, request.max_memory_kib, parallel);
        kdf.check_limits()?;
        return Ok(kdf);
    }
    require_time(request.time_ms)?;

    let mut max_m = request.max_memory_kib.min(MAX_ARGON2_MEMORY_KIB);
    if let Some(usable) = usable_memory_kib() {
        max_m = max_m.min(u32::try_from(usable).unwrap_or(u32::MAX));
    }
    // Argon2 needs 8 KiB per lane at least.
    let min_m = MIN_ARGON2_MEMORY_KIB.max(8 * parallel);
    if max_m < min_m {
        return Err(CryptoError::KdfMemory(u64::from(min_m)));
    }

    let target = f64::from(request.time_ms);
    let mut out = Zeroizing::new(vec![0u8; key_len]);
    let mut measure = |t: u32, m: u32| -> Result<f64, CryptoError> {
        let kdf = argon2_kdf(request.kind, t, m, parallel);
        let start = Instant::now();
        kdf.derive(BENCH_PASSWORD, BENCH_SALT, &mut out)?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };

    // 1. A cheap first point, at least a quarter of the target (cryptsetup: 250 ms). Start
    //    small enough that even a slow machine does not overshoot badly: ~64 KiB per target ms.
    let bench_ms = (target / 4.0).min(250.0);
    let mut t = MIN_ARGON2_TIME;
    let start_m = u32::try_from(u64::from(request.time_ms) * 64).unwrap_or(u32::MAX);
    let mut m = start_m.clamp(min_m, max_m.min(64 * 1024).max(min_m));
    let mut ms = measure(t, m)?;
    for _ in 0..16 {
        if ms >= bench_ms {
            break;
        }
        let factor = if ms < 1.0 {
            16.0
        } else {
            (bench_ms / ms * 1.1).min(16.0)
        };
        if m < max_m {
            m = scale(m, factor).clamp(min_m, max_m);
        } else {
            let next = scale(t, factor);
            if next == t {
                break;
            }
            t = next;
        }
        ms = measure(t, m)?;
    }

    // 2. Extrapolate to the target and re-measure while outside 90..110 %, at most twice;
    //    a last correction is then taken unmeasured (keeps calibration near 2-3 x time_ms).
    //    Memory is preferred when growing and time when shrinking, as cryptsetup does.
    let window = 0.9 * target..=1.1 * target;
    for round in 0..3 {
        if window.contains(&ms) {
            break;
        }
        let (next_t, next_m, at_limit) = next_argon2_params(t, m, min_m, max_m, ms, target);
        if (next_t, next_m) == (t, m) {
            break;
        }
        t = next_t;
        m = next_m;
        if at_limit || round == 2 {
            break;
        }
        ms = measure(t, m)?;
    }
    let kdf = argon2_kdf(request.kind, t, m, parallel);
    kdf.check_limits()?;
    Ok(kdf)
}

/// `value * factor`, rounded down, saturating at u32::MAX.
fn scale(value: u32, factor: f64) -> u32 {
    let v = f64::from(value) * factor;
    if v >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        v as u32
    }
}

/// Cost model: time ∝ t·m. Too slow: lower t first, then m (t stays ≥ 4). Too fast: raise m
/// first (up to max_m), then t. The flag is true when the cheapest setting (t = 4, m = min) is
/// still too slow: measuring again could not improve on it, so calibration stops there, as
/// cryptsetup does.
fn next_argon2_params(
    t: u32,
    m: u32,
    min_m: u32,
    max_m: u32,
    ms: f64,
    target: f64,
) -> (u32, u32, bool) {
    let ratio = if ms > 0.0 { target / ms } else { 16.0 };
    let work = f64::from(t) * f64::from(m) * ratio;
    if ratio < 1.0 {
        let new_t = scale(t, ratio);
        if new_t >= MIN_ARGON2_TIME {
            (new_t, m, false)
        } else {
            let new_m = (work / f64::from(MIN_ARGON2_TIME)) as u32;
            (MIN_ARGON2_TIME, new_m.clamp(min_m, max_m), new_m <= min_m)
        }
    } else {
        let new_m = scale(m, ratio);
        if new_m <= max_m {
            (t, new_m.max(min_m), new_m < min_m)
        } else {
            let new_t = (work / f64::from(max_m)) as u32;
            if new_t >= MIN_ARGON2_TIME {
                (new_t, max_m, false)
            } else {
                // Below 4 passes over all memory: keep 4 passes over less memory rather than
                // overshoot the target (cryptsetup would stop at t = 4 with max memory).
                let m4 = (work / f64::from(MIN_ARGON2_TIME)) as u32;
                (MIN_ARGON2_TIME, m4.clamp(min_m, max_m), false)
            }
        }
    }
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
        // luks-format.md §10: keyslot KDF of a cryptsetup-made header.
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
        // luks-format.md §10: argon2id keyslot of a cryptsetup-made header.
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
                matches!(kdf.check_limits(), Err(CryptoError::KdfLimits(_))),
                "{kdf:?}"
            );
            let mut out = [0u8; 32];
            assert!(kdf.derive(b"pw", &[0u8; 32], &mut out).is_err(), "{kdf:?}");
        }
    }

    #[test]
    fn memory_cap_from_meminfo() {
        let text = "MemTotal:       24684096 kB\nMemFree:  1 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(parse_mem_available_kib(text), Some(2000));
        assert_eq!(parse_mem_available_kib("MemTotal: 5 kB\n"), None);
        // This machine: a 4 GiB argon2 either fits or is refused as KdfMemory, never run.
        if let Some(usable) = usable_memory_kib()
            && usable < u64::from(MAX_ARGON2_MEMORY_KIB)
        {
            let kdf = Kdf::Argon2id {
                time: 1,
                memory_kib: MAX_ARGON2_MEMORY_KIB,
                cpus: 1,
            };
            assert_eq!(
                kdf.check_limits(),
                Err(CryptoError::KdfMemory(u64::from(MAX_ARGON2_MEMORY_KIB)))
            );
        }
    }

    fn request(kind: KdfKind, time_ms: u32) -> CalibrationRequest {
        CalibrationRequest {
            kind,
            time_ms,
            max_memory_kib: DEFAULT_ARGON2_MEMORY_KIB,
            parallel: 0,
            forced_iterations: None,
            hash: HashAlg::Sha256,
            key_len: 64,
        }
    }

    #[test]
    fn forced_parameters_skip_the_benchmark() {
        let mut r = request(KdfKind::Argon2id, 2000);
        r.forced_iterations = Some(4);
        r.max_memory_kib = 32;
        r.parallel = 1;
        let start = Instant::now();
        assert_eq!(
            calibrate(&r),
            Ok(Kdf::Argon2id {
                time: 4,
                memory_kib: 32,
                cpus: 1
            })
        );
        r.kind = KdfKind::Pbkdf2;
        r.forced_iterations = Some(1000);
        assert_eq!(
            calibrate(&r),
            Ok(Kdf::Pbkdf2 {
                hash: HashAlg::Sha256,
                iterations: 1000
            })
        );
        assert!(start.elapsed() < Duration::from_millis(500));
        r.forced_iterations = Some(999);
        assert!(matches!(calibrate(&r), Err(CryptoError::KdfLimits(_))));
        r.kind = KdfKind::Argon2i;
        r.forced_iterations = Some(3);
        assert!(matches!(calibrate(&r), Err(CryptoError::KdfLimits(_))));
        r.forced_iterations = Some(4);
        r.parallel = 5;
        assert!(matches!(calibrate(&r), Err(CryptoError::KdfLimits(_))));
        r.parallel = 4;
        r.max_memory_kib = 16;
        assert!(matches!(calibrate(&r), Err(CryptoError::KdfLimits(_))));
    }

    #[test]
    fn calibration_gives_sane_parameters() {
        // Small targets keep this quick even in a debug build; only loose shape checks here.
        let kdf = calibrate(&request(KdfKind::Pbkdf2, 50)).unwrap();
        assert!(matches!(kdf, Kdf::Pbkdf2 { iterations, .. } if iterations >= 1000));
        assert!(calibrate_digest_iterations(HashAlg::Sha256, 20) >= 1000);
        assert!(matches!(
            calibrate(&request(KdfKind::Pbkdf2, 0)),
            Err(CryptoError::KdfLimits(_))
        ));

        let mut r = request(KdfKind::Argon2id, 100);
        r.max_memory_kib = 8 * 1024;
        let start = Instant::now();
        let kdf = calibrate(&r).unwrap();
        let Kdf::Argon2id {
            time,
            memory_kib,
            cpus,
        } = kdf
        else {
            panic!("{kdf:?}")
        };
        assert!(time >= MIN_ARGON2_TIME);
        assert!((32..=8 * 1024).contains(&memory_kib), "{kdf:?}");
        let online = u32::try_from(online_cpus()).unwrap();
        assert_eq!(cpus, online.min(4));
        // Loose bound on the total calibration effort (debug build, shared machine).
        assert!(start.elapsed() < Duration::from_secs(20), "{kdf:?}");
    }

    #[test]
    #[ignore = "timing; run in release: cargo test --release --lib kdf -- --ignored --nocapture"]
    fn calibrated_derive_takes_about_the_target() {
        for kind in [KdfKind::Pbkdf2, KdfKind::Argon2id] {
            let start = Instant::now();
            let kdf = calibrate(&request(kind, 200)).unwrap();
            let calib = start.elapsed();
            let mut out = [0u8; 64];
            let t = Instant::now();
            kdf.derive(b"pw", &[1u8; 32], &mut out).unwrap();
            let took = t.elapsed();
            println!("{kdf:?}: calibration {calib:?}, derive {took:?}");
            assert!(
                took > Duration::from_millis(100) && took < Duration::from_millis(800),
                "{kdf:?} {took:?}"
            );
            assert!(calib < Duration::from_millis(1500), "{calib:?}");
        }
    }

    #[test]
    #[ignore = "timing, several seconds; run in release with --ignored --nocapture"]
    fn calibration_at_cryptsetup_default_time() {
        let start = Instant::now();
        let kdf = calibrate(&request(KdfKind::Argon2id, 2000)).unwrap();
        let calib = start.elapsed();
        let mut out = [0u8; 64];
        let t = Instant::now();
        kdf.derive(b"pw", &[1u8; 32], &mut out).unwrap();
        let took = t.elapsed();
        println!("{kdf:?}: calibration {calib:?}, derive {took:?}");
        assert!(calib < Duration::from_secs(10), "{calib:?}");
        assert!(took > Duration::from_millis(1000) && took < Duration::from_millis(4000));
    }
}
