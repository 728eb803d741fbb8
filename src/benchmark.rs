//! Memory-only cipher and KDF figures, like `cryptsetup benchmark` (`vaultdisk benchmark`).
//!
//! Cipher figures are MB/s (10^6 bytes) over a 1 MiB buffer cut into sectors, the way a 1 MiB
//! FUSE request is: "1 core" runs on this thread; "all cores" runs one buffer per online CPU
//! at once and adds them up. Each figure is the median of `--runs` repetitions of
//! `--time-ms`; JSON carries min and max too. Every engine that takes a key size is measured
//! in the same run, so the ratio of the data path's engine to the fastest one
//! (`data_path_vs_fastest`) needs no numbers from elsewhere. System OpenSSL and xts-mode are measured by
//! scripts/bench.sh (`openssl speed`, `cargo bench --bench xts`): neither is in this binary.
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::{self, Kdf};
use crate::crypto::xts::{Engine, SectorCipher};
use crate::error::{Error, Result};
use crate::report::Report;
use serde::{Serialize, Serializer};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// What to measure (`vaultdisk benchmark`'s options).
#[derive(Debug, Clone)]
pub struct Options {
    /// Repetitions of each figure; the median is shown.
    pub runs: u32,
    /// Length of one cipher repetition, in ms.
    pub time_ms: u32,
    /// Only the cipher figures (no KDF).
    pub cipher_only: bool,
    /// Argon2id passes for the KDF figure.
    pub argon2_time: u32,
    /// Argon2id memory for the KDF figure, KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id lanes (None: min(4, online CPUs)).
    pub argon2_parallel: Option<u32>,
}

/// Bytes per cipher call, like one 1 MiB FUSE request.
const BUFFER_BYTES: usize = 1 << 20;
/// A public benchmark key (the halves differ, so every engine takes it).
const KEY: [u8; 64] = {
    let mut k = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        k[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    k
};
// Public KDF inputs, like cryptsetup's "foobarfo".
const PASSWORD: &[u8] = b"foobarfo";
const SALT: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// Measures the ciphers (and the KDFs unless `cipher_only`) on this machine, in memory.
pub fn run(args: &Options) -> Result<BenchmarkReport> {
    if args.runs == 0 || args.time_ms == 0 {
        return Err(Error::Usage(
            "--runs and --time-ms must be at least 1".into(),
        ));
    }
    let parallel = args.argon2_parallel.unwrap_or(cores().min(4) as u32);
    let mut argon = Kdf::Argon2id {
        time: args.argon2_time,
        memory_kib: args.argon2_memory_kib,
        cpus: parallel,
    };
    if !args.cipher_only {
        argon.check_caps().map_err(|e| {
            Error::Usage(format!(
                "argon2id cost --argon2-time/--argon2-memory/--argon2-parallel: {e}"
            ))
        })?;
        // Like cryptsetup, a machine with less free memory measures a smaller cost (the row
        // names the memory used) instead of failing.
        if argon.fits_in_memory().is_err() {
            let usable = kdf::usable_memory_kib().unwrap_or(0);
            let memory_kib = u32::try_from(usable)
                .unwrap_or(u32::MAX)
                .max(kdf::MIN_ARGON2_MEMORY_KIB);
            argon = Kdf::Argon2id {
                time: args.argon2_time,
                memory_kib,
                cpus: parallel,
            };
        }
    }
    let ciphers = cipher_rows(args);
    let kdfs = if args.cipher_only {
        vec![]
    } else {
        kdf_rows(args, argon)?
    };
    let report = BenchmarkReport {
        cores: cores(),
        runs: args.runs,
        buffer_bytes: BUFFER_BYTES,
        data_path_vs_fastest: data_path_vs_fastest(&ciphers),
        cipher: ciphers,
        kdf: kdfs,
    };
    Ok(report)
}

/// What `benchmark` measured (`--json`: the README's shape).
#[derive(Serialize)]
pub struct BenchmarkReport {
    cores: usize,
    runs: u32,
    buffer_bytes: usize,
    cipher: Vec<CipherRow>,
    kdf: Vec<KdfRow>,
    data_path_vs_fastest: Option<VsFastest>,
}

impl Report for BenchmarkReport {
    fn to_text(&self) -> String {
        render(&self.cipher, &self.kdf, self.data_path_vs_fastest.as_ref())
    }
}

/// Median, min and max of one figure's repetitions.
#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Stats {
        v.sort_by(f64::total_cmp);
        Stats {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// In JSON, each figure rounded to 0.1.
impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Rounded {
            median: f64,
            min: f64,
            max: f64,
        }
        Rounded {
            median: round(self.median),
            min: round(self.min),
            max: round(self.max),
        }
        .serialize(s)
    }
}

fn engine_name<S: Serializer>(e: &Engine, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(e.name())
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

#[derive(Serialize)]
struct CipherRow {
    /// Always "aes-xts-plain64".
    cipher: &'static str,
    key_bits: usize,
    sector_bytes: usize,
    #[serde(serialize_with = "engine_name")]
    engine: Engine,
    /// Whether volumes with this key size run on this engine.
    data_path: bool,
    #[serde(rename = "encrypt_1core_mbps")]
    enc_1: Stats,
    #[serde(rename = "decrypt_1core_mbps")]
    dec_1: Stats,
    #[serde(rename = "encrypt_allcores_mbps")]
    enc_all: Stats,
    #[serde(rename = "decrypt_allcores_mbps")]
    dec_all: Stats,
}

fn cipher_rows(args: &Options) -> Vec<CipherRow> {
    let mut rows = vec![];
    for key_bytes in [32usize, 64] {
        let key = &KEY[..key_bytes];
        let used = SectorCipher::new(key).map(|c| c.engine()).ok();
        for engine in [Engine::AwsLc, Engine::RustCrypto] {
            let Some(cipher) = SectorCipher::with_engine(key, engine) else {
                continue;
            };
            for sector_bytes in [512usize, 4096] {
                let step = (sector_bytes / 512) as u64;
                let enc =
                    |b: &mut [u8]| cipher.encrypt_sectors_sequential(b, sector_bytes, 0, step);
                let dec =
                    |b: &mut [u8]| cipher.decrypt_sectors_sequential(b, sector_bytes, 0, step);
                rows.push(CipherRow {
                    cipher: "aes-xts-plain64",
                    key_bits: key_bytes * 8,
                    sector_bytes,
                    engine,
                    data_path: used == Some(engine),
                    enc_1: rate(args, 1, &enc),
                    dec_1: rate(args, 1, &dec),
                    enc_all: rate(args, cores(), &enc),
                    dec_all: rate(args, cores(), &dec),
                });
            }
        }
    }
    rows
}

/// MB/s of `f` over `threads` buffers at once, `args.runs` times.
fn rate(args: &Options, threads: usize, f: &(dyn Fn(&mut [u8]) + Sync)) -> Stats {
    let span = Duration::from_millis(u64::from(args.time_ms));
    let mut buf = vec![0x5au8; BUFFER_BYTES];
    f(&mut buf); // warm-up: page faults, context pools
    let samples = (0..args.runs)
        .map(|_| {
            let start = Instant::now();
            let bytes: usize = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut buf = vec![0x5au8; BUFFER_BYTES];
                            // At least one pass, however late this thread starts.
                            let mut done = 0;
                            loop {
                                f(&mut buf);
                                done += buf.len();
                                if start.elapsed() >= span {
                                    break done;
                                }
                            }
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
            });
            bytes as f64 / start.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    Stats::of(samples)
}

/// The data path's 512-bit, 4096-byte-sector, one-core figures over the fastest engine's in
/// this run.
fn data_path_vs_fastest(rows: &[CipherRow]) -> Option<VsFastest> {
    let pick = |data_path: bool| {
        rows.iter()
            .filter(|r| r.key_bits == 512 && r.sector_bytes == 4096)
            .filter(|r| !data_path || r.data_path)
            .collect::<Vec<_>>()
    };
    let ours = pick(true);
    let all = pick(false);
    let (Some(ours), false) = (ours.first(), all.is_empty()) else {
        return None;
    };
    let best = |f: fn(&CipherRow) -> f64| {
        all.iter()
            .max_by(|a, b| f(a).total_cmp(&f(b)))
            .map(|r| (r.engine.name(), f(r)))
            .unwrap_or(("none", 0.0))
    };
    let (enc_best, enc_mbps) = best(|r| r.enc_1.median);
    let (dec_best, dec_mbps) = best(|r| r.dec_1.median);
    Some(VsFastest {
        engine: ours.engine.name(),
        encrypt_ratio: (ours.enc_1.median / enc_mbps * 100.0).round() / 100.0,
        encrypt_fastest: enc_best,
        decrypt_ratio: (ours.dec_1.median / dec_mbps * 100.0).round() / 100.0,
        decrypt_fastest: dec_best,
    })
}

/// The data path's engine against the fastest one here (ratios rounded to 0.01; a ratio that
/// is not a number, from a zero figure, is null in JSON and 0 in text).
#[derive(Serialize)]
struct VsFastest {
    engine: &'static str,
    encrypt_ratio: f64,
    encrypt_fastest: &'static str,
    decrypt_ratio: f64,
    decrypt_fastest: &'static str,
}

#[derive(Serialize)]
struct KdfRow {
    #[serde(rename = "kdf")]
    name: String,
    /// "iterations per second" for PBKDF2, "ms per derivation" for Argon2.
    unit: &'static str,
    value: Stats,
}

fn kdf_rows(args: &Options, argon: Kdf) -> Result<Vec<KdfRow>> {
    let mut rows = vec![];
    let mut out = Zeroizing::new([0u8; 32]);
    for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512] {
        let samples = (0..args.runs)
            .map(|_| {
                // Grow the count until one run takes 200 ms, then extrapolate (cryptsetup
                // measures similarly, for a 256-bit key).
                let mut iterations: u32 = 1 << 12;
                loop {
                    let t = Instant::now();
                    hash.pbkdf2(PASSWORD, SALT, iterations, &mut out[..]);
                    let s = t.elapsed().as_secs_f64();
                    if s >= 0.2 || iterations >= 1 << 30 {
                        break f64::from(iterations) / s;
                    }
                    iterations = iterations.saturating_mul(2);
                }
            })
            .collect();
        rows.push(KdfRow {
            name: format!("pbkdf2-{}", hash.name()),
            unit: "iterations per second for 256-bit key",
            value: Stats::of(samples),
        });
    }
    let Kdf::Argon2id {
        time,
        memory_kib,
        cpus,
    } = argon
    else {
        unreachable!("argon2id row");
    };
    let mut samples = vec![];
    for _ in 0..args.runs {
        let t = Instant::now();
        argon
            .derive(PASSWORD, SALT, &mut out[..])
            .map_err(|e| match e {
                crate::crypto::CryptoError::KdfMemory(kib) => {
                    Error::NoMemory(format!("argon2id with {kib} KiB: not enough memory here"))
                }
                e => Error::Device(format!("argon2id benchmark: {e}")),
            })?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    rows.push(KdfRow {
        name: format!("argon2id {time} iterations, {memory_kib} KiB, {cpus} threads"),
        unit: "ms per derivation of a 256-bit key",
        value: Stats::of(samples),
    });
    Ok(rows)
}

fn render(ciphers: &[CipherRow], kdfs: &[KdfRow], vs_fastest: Option<&VsFastest>) -> String {
    let mut s = String::from("# Tests are approximate using memory only (no storage IO).\n");
    for k in kdfs {
        s += &format!("{:<44} {:>10.0} {}\n", k.name, k.value.median, k.unit);
    }
    let n = cores();
    s += &format!(
        "#    Algorithm |  Key | Sector |     Engine |  Encryption |  Decryption | {:>13} | {:>13}\n",
        format!("Enc {n} cores"),
        format!("Dec {n} cores"),
    );
    for r in ciphers {
        let mark = if r.data_path { "*" } else { " " };
        s += &format!(
            "{mark}      aes-xts | {:>3}b | {:>6} | {:>10} | {:>6.0} MB/s | {:>6.0} MB/s | {:>8.0} MB/s | {:>8.0} MB/s\n",
            r.key_bits,
            r.sector_bytes,
            r.engine.name(),
            r.enc_1.median,
            r.dec_1.median,
            r.enc_all.median,
            r.dec_all.median,
        );
    }
    s += "* = the engine volumes with this key size use\n";
    if let Some(t) = vs_fastest {
        let finite = |r: f64| if r.is_finite() { r } else { 0.0 };
        s += &format!(
            "data path / fastest engine here (512b, 4096-byte sectors, 1 core): encrypt {:.2} (fastest {}), decrypt {:.2} (fastest {})",
            finite(t.encrypt_ratio),
            t.encrypt_fastest,
            finite(t.decrypt_ratio),
            t.decrypt_fastest
        );
    }
    s
}
