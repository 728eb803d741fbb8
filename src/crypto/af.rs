//! Anti-forensic split/merge (LUKS "H1" diffuser), luks-format.md §6.
use super::hash::HashAlg;

/// Number of stripes every LUKS keyslot uses (cryptsetup ignores af.stripes, luks-format.md §9).
pub const STRIPES: usize = 4000;

/// Splits `key` into `stripes * key.len()` bytes written to `out`; stripes 0..S-2 are random.
pub fn split(key: &[u8], stripes: usize, hash: HashAlg, out: &mut [u8]) -> std::io::Result<()> {
    todo!("{key:?}{stripes}{hash:?}{out:?}")
}

/// Recovers a key of `out.len()` bytes from `src` (at least `stripes * out.len()` bytes).
pub fn merge(src: &[u8], stripes: usize, hash: HashAlg, out: &mut [u8]) {
    todo!("{src:?}{stripes}{hash:?}{out:?}")
}
