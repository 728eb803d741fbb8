//! KDF bombs: a hostile header can ask for 2^31 PBKDF2 iterations, digest iterations of
//! 2^32 − 1 (paid on every attempt, even with a wrong key) or Argon2 at the 4 GiB cap with 2^17
//! passes, times 32 keyslots. Before a keyslot's KDF runs, its cost here is estimated from this
//! machine's measured speed; a keyslot above the limit is skipped (the caller says which and
//! why), and an option raises the limit.
use super::Kdf;
use crate::crypto::hash::HashAlg;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The default limit: far above what any tool calibrates (cryptsetup: 2 s for a keyslot,
/// 125 ms for a digest), so it only stops headers built to hang us.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(60);

/// Above this estimate a KDF is worth a progress line on a terminal.
pub const PROGRESS_AFTER: Duration = Duration::from_secs(3);

/// The log target of progress lines (main shows them on a terminal only).
pub const PROGRESS_TARGET: &str = "vaultdisk::progress";

/// The limit in milliseconds; 0 means none.
static LIMIT_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets the per-keyslot limit for this process (`None`: no limit). The CLI's
/// `--kdf-time-limit` sets it before any unlock.
pub fn set_limit(limit: Option<Duration>) {
    let ms = limit.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    });
    LIMIT_MS.store(ms, Ordering::Relaxed);
}

/// The per-keyslot limit in force (`None`: no limit).
pub fn limit() -> Option<Duration> {
    match LIMIT_MS.load(Ordering::Relaxed) {
        0 => None,
        ms => Some(Duration::from_millis(ms)),
    }
}

/// Work below which no machine could need a noticeable time, so nothing is measured: the
/// cheap keyslots of tests and fixtures never pay for a benchmark.
const TRIVIAL_PBKDF2_BLOCK_ITERATIONS: u64 = 1 << 18;
const TRIVIAL_ARGON2_WORK_KIB: u64 = 1 << 18;

/// PBKDF2 iterations measured per benchmark run, and Argon2's benchmark size.
const BENCH_PBKDF2_ITERATIONS: u32 = 1 << 14;
const BENCH_ARGON2_KIB: u32 = 16 * 1024;

/// How long PBKDF2-HMAC-`hash` with `iterations` and an `out_len`-byte output takes here.
pub fn estimate_pbkdf2(hash: HashAlg, iterations: u32, out_len: usize) -> Duration {
    let blocks = out_len.div_ceil(hash.output_len()).max(1) as u64;
    let work = u64::from(iterations).saturating_mul(blocks);
    if work <= TRIVIAL_PBKDF2_BLOCK_ITERATIONS {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(work as f64 / pbkdf2_iterations_per_sec(hash))
}

/// How long `kdf` with an `out_len`-byte output takes here.
pub fn estimate(kdf: &Kdf, out_len: usize) -> Duration {
    match *kdf {
        Kdf::Pbkdf2 { hash, iterations } => estimate_pbkdf2(hash, iterations, out_len),
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
            let work = u64::from(time).saturating_mul(u64::from(memory_kib));
            if work <= TRIVIAL_ARGON2_WORK_KIB {
                return Duration::ZERO;
            }
            // Lanes run in parallel up to the cores there are.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
            let parallel = u64::from(cpus).clamp(1, cores);
            Duration::from_secs_f64(work as f64 / (argon2_kib_per_sec() * parallel as f64))
        }
    }
}

/// A keyslot whose KDF would take longer than the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// The estimate for this keyslot (its KDF plus its digest check).
    pub estimate: Duration,
    /// The limit it exceeds.
    pub limit: Duration,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "its KDF would take about {} here, above the limit of {} (--kdf-time-limit raises it)",
            human(self.estimate),
            human(self.limit)
        )
    }
}

/// Ok(estimate) when a keyslot costing `estimate` may run, else why not.
pub fn check(estimate: Duration) -> Result<Duration, OverBudget> {
    match limit() {
        Some(limit) if estimate > limit => Err(OverBudget { estimate, limit }),
        _ => Ok(estimate),
    }
}

/// A duration as people say it: "45 s", "12 min", "3 h".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 {
        format!("{} s", s.max(1))
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else if s < 2 * 86400 {
        format!("{} h", s / 3600)
    } else {
        format!("{} days", s / 86400)
    }
}

fn pbkdf2_iterations_per_sec(hash: HashAlg) -> f64 {
    static SPEED: OnceLock<Mutex<HashMap<HashAlg, f64>>> = OnceLock::new();
    let map = SPEED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(v) = map.lock().ok().and_then(|m| m.get(&hash).copied()) {
        return v;
    }
    let kdf = Kdf::Pbkdf2 {
        hash,
        iterations: BENCH_PBKDF2_ITERATIONS,
    };
    let mut out = vec![0u8; hash.output_len()];
    let secs = timed(|| {
        let _ = kdf.derive(b"foobarfo", &[0u8; 32], &mut out);
    });
    let v = f64::from(BENCH_PBKDF2_ITERATIONS) / secs;
    if let Ok(mut m) = map.lock() {
        m.insert(hash, v);
    }
    v
}

fn argon2_kib_per_sec() -> f64 {
    static SPEED: OnceLock<f64> = OnceLock::new();
    *SPEED.get_or_init(|| {
        let kdf = Kdf::Argon2id {
            time: 1,
            memory_kib: BENCH_ARGON2_KIB,
            cpus: 1,
        };
        let mut out = [0u8; 32];
        let secs = timed(|| {
            let _ = kdf.derive(b"foobarfo", &[0u8; 32], &mut out);
        });
        f64::from(BENCH_ARGON2_KIB) / secs
    })
}

/// Seconds `f` took, never zero.
fn timed(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64().max(1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_kdfs_cost_nothing_and_bombs_cost_hours() {
        let cheap = Kdf::Pbkdf2 {
            hash: HashAlg::Sha256,
            iterations: 1000,
        };
        assert_eq!(estimate(&cheap, 64), Duration::ZERO);
        let bomb = Kdf::Pbkdf2 {
            hash: HashAlg::Sha256,
            iterations: 1 << 31,
        };
        assert!(
            estimate(&bomb, 64) > Duration::from_secs(60),
            "{:?}",
            estimate(&bomb, 64)
        );
        let argon_bomb = Kdf::Argon2id {
            time: 1 << 17,
            memory_kib: 4 * 1024 * 1024,
            cpus: 4,
        };
        assert!(estimate(&argon_bomb, 64) > Duration::from_secs(3600));
        // A two-block output costs twice as much as a one-block one.
        let one = estimate_pbkdf2(HashAlg::Sha256, 1 << 24, 32);
        let two = estimate_pbkdf2(HashAlg::Sha256, 1 << 24, 64);
        assert!(two > one + one / 2, "{one:?} {two:?}");
    }

    #[test]
    fn check_uses_the_limit() {
        let _g = LIMIT_LOCK.lock();
        set_limit(Some(Duration::from_secs(10)));
        assert!(check(Duration::from_secs(9)).is_ok());
        let over = check(Duration::from_secs(7200)).unwrap_err();
        assert_eq!(over.limit, Duration::from_secs(10));
        assert!(over.to_string().contains("about 2 h"), "{over}");
        set_limit(None);
        assert!(check(Duration::from_secs(1 << 40)).is_ok());
        set_limit(Some(DEFAULT_LIMIT));
    }

    /// Tests that change the process-wide limit run one at a time.
    static LIMIT_LOCK: Mutex<()> = Mutex::new(());

    #[test]
    fn human_units() {
        assert_eq!(human(Duration::from_millis(200)), "1 s");
        assert_eq!(human(Duration::from_secs(90)), "90 s");
        assert_eq!(human(Duration::from_secs(600)), "10 min");
        assert_eq!(human(Duration::from_secs(3 * 3600)), "3 h");
        assert_eq!(human(Duration::from_secs(3 * 86400)), "3 days");
    }
}
