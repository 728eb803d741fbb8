//! The OS random number generator.

/// Fills `buf` from the OS RNG (getrandom(2)).
pub fn fill(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(std::io::Error::other)
}
