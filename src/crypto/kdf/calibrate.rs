//! Machine-dependent parts of key derivation: how much memory an Argon2 run may take here
//! (/proc/meminfo), and cryptsetup-style calibration of new keyslot costs by benchmarking.
use super::{
    Kdf, MAX_ARGON2_CPUS, MAX_ARGON2_MEMORY_KIB, MIN_ARGON2_MEMORY_KIB, MIN_ARGON2_TIME,
    MIN_PBKDF2_ITERATIONS, online_cpus,
};
use crate::crypto::CryptoError;
use crate::crypto::hash::HashAlg;
use std::time::Instant;
use zeroize::Zeroizing;

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

impl Kdf {
    /// Refuses an Argon2 memory cost above half of this machine's available memory
    /// (MemAvailable in /proc/meminfo; unchecked where that is unreadable) with `KdfMemory`:
    /// it could not run here, though the header is not malformed. PBKDF2 always fits.
    pub fn fits_in_memory(&self) -> Result<(), CryptoError> {
        match *self {
            Kdf::Pbkdf2 { .. } => Ok(()),
            Kdf::Argon2i { memory_kib, .. } | Kdf::Argon2id { memory_kib, .. } => {
                match usable_memory_kib() {
                    Some(usable) if u64::from(memory_kib) > usable => {
                        Err(CryptoError::KdfMemory(u64::from(memory_kib)))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kdf::DEFAULT_ARGON2_MEMORY_KIB;
    use std::time::Duration;

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
            // The caps alone accept it: only the probe refuses.
            assert_eq!(kdf.check_caps(), Ok(()));
            let too_big = Err(CryptoError::KdfMemory(u64::from(MAX_ARGON2_MEMORY_KIB)));
            assert_eq!(kdf.fits_in_memory(), too_big);
            assert_eq!(kdf.check_limits(), too_big);
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
