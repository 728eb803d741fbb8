//! `vaultdisk benchmark`: arguments -> `crate::benchmark` -> the report as text or JSON.
use super::output;
use crate::benchmark::{self, Options};
use crate::crypto::kdf;
use crate::error::Result;

/// Options of `vaultdisk benchmark`.
#[derive(Debug, clap::Args)]
pub struct BenchmarkArgs {
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Repetitions of each figure; the median is shown.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub runs: u32,
    /// Length of one cipher repetition, in ms.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub time_ms: u32,
    /// Only the cipher figures (no KDF).
    #[arg(long)]
    pub cipher_only: bool,
    /// Argon2id passes for the KDF figure.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub argon2_time: u32,
    /// Argon2id memory for the KDF figure, KiB (cryptsetup's default ceiling: 1 GiB).
    #[arg(long, value_name = "KIB", default_value_t = kdf::DEFAULT_ARGON2_MEMORY_KIB)]
    pub argon2_memory: u32,
    /// Argon2id lanes [default: min(4, online CPUs)].
    #[arg(long, value_name = "N")]
    pub argon2_parallel: Option<u32>,
}

/// Runs the measurements and prints them.
pub fn run(args: &BenchmarkArgs) -> Result<()> {
    let report = benchmark::run(&Options {
        runs: args.runs,
        time_ms: args.time_ms,
        cipher_only: args.cipher_only,
        argon2_time: args.argon2_time,
        argon2_memory_kib: args.argon2_memory,
        argon2_parallel: args.argon2_parallel,
    })?;
    output::print(&report, args.json)
}
