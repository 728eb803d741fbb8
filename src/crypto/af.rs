//! Anti-forensic split/merge (LUKS "H1" diffuser), docs/format.md §6.
//!
//! A key of n bytes is stored as `stripes` stripes of n bytes; only the whole set recovers it,
//! so wiping any part of a keyslot area destroys the key.
use super::hash::{HashAlg, MAX_OUTPUT_LEN};
use zeroize::Zeroizing;

/// Number of stripes every LUKS keyslot uses (cryptsetup ignores af.stripes, docs/format.md §9).
pub const STRIPES: usize = 4000;

/// Splits `key` into `stripes * key.len()` bytes written to `out`; stripes 0..S-2 are random.
///
/// `out` must hold at least `stripes * key.len()` bytes; bytes past that are left untouched.
/// Errors only when the OS RNG fails, or (as `InvalidInput`) when `stripes` is 0 or `out` is
/// too short.
pub fn split(key: &[u8], stripes: usize, hash: HashAlg, out: &mut [u8]) -> std::io::Result<()> {
    let n = key.len();
    let total = stripes
        .checked_mul(n)
        .filter(|&t| stripes > 0 && t <= out.len())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "AF split: zero stripes or output buffer too short",
            )
        })?;
    let (random, last) = out[..total].split_at_mut(total - n);
    super::random::fill(random)?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    for stripe in random.chunks_exact(n) {
        xor_into(&mut d, stripe);
        diffuse(&mut d, hash);
    }
    for ((o, k), x) in last.iter_mut().zip(key).zip(d.iter()) {
        *o = k ^ x;
    }
    Ok(())
}

/// Recovers a key of `out.len()` bytes from `src` (at least `stripes * out.len()` bytes).
///
/// # Panics
/// If `src` is shorter than `stripes * out.len()` or `stripes` is 0: callers size the buffer
/// from the same numbers, so this is a bug, not a data condition.
pub fn merge(src: &[u8], stripes: usize, hash: HashAlg, out: &mut [u8]) {
    let n = out.len();
    assert!(stripes > 0, "AF merge: zero stripes");
    let total = stripes.checked_mul(n).filter(|&t| t <= src.len());
    let Some(total) = total else {
        panic!("AF merge: source shorter than stripes * key length");
    };
    let (chain, last) = src[..total].split_at(total - n);
    out.fill(0);
    if n == 0 {
        return;
    }
    for stripe in chain.chunks_exact(n) {
        xor_into(out, stripe);
        diffuse(out, hash);
    }
    xor_into(out, last);
}

fn xor_into(acc: &mut [u8], src: &[u8]) {
    for (a, s) in acc.iter_mut().zip(src) {
        *a ^= s;
    }
}

/// H1 diffusion in place: block i (digest-sized, the last one possibly shorter) becomes
/// H(u32_be(i) ‖ block_i) truncated to the block's length.
fn diffuse(buf: &mut [u8], hash: HashAlg) {
    let ds = hash.output_len();
    let mut tmp = Zeroizing::new([0u8; MAX_OUTPUT_LEN]);
    for (i, block) in buf.chunks_mut(ds).enumerate() {
        // A key is at most a few hundred bytes, so the block index always fits in u32;
        // saturating keeps the arithmetic total without a panic path.
        let index = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        let t = &mut tmp[..block.len()];
        hash.digest_into(&[&index, block], t);
        block.copy_from_slice(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::encode as hex;

    fn vector_src(n: usize) -> Vec<u8> {
        (0..n * STRIPES)
            .map(|j| ((7 * j + 3) % 256) as u8)
            .collect()
    }

    #[test]
    fn diffuse_vectors() {
        let mut b = [0u8; 64];
        diffuse(&mut b, HashAlg::Sha256);
        assert_eq!(
            hex(&b),
            "6db65fd59fd356f6729140571b5bcd6bb3b83492a16e1bf0a3884442fc3c8a0e\
             c2de8abf5c6306f427fc4de808c7177456c1c0a9f0254d4bae120a88d45b4003"
        );
        let mut b = [0u8; 24];
        diffuse(&mut b, HashAlg::Sha1);
        assert_eq!(hex(&b), "d3399b7262fb56cb9ed053d68db9291c410839c4aa38f215");
    }

    #[test]
    fn merge_n32_sha256() {
        let mut out = [0u8; 32];
        merge(&vector_src(32), STRIPES, HashAlg::Sha256, &mut out);
        assert_eq!(
            hex(&out),
            "ce6768ee2587f811e98989a9aa6cda9aeec8055d1d2827672d5b5a7931aac999"
        );
    }

    #[test]
    fn merge_n64_sha256() {
        let mut out = [0u8; 64];
        merge(&vector_src(64), STRIPES, HashAlg::Sha256, &mut out);
        assert_eq!(
            hex(&out),
            "c5768dea55cc0cada0adaa193329476a886eeebc1911528eae334a6aed3bc8b2\
             a315b8cd6e4c15b5922af4848fd79844ff3f12b44383e2ee377f8779b7c306ca"
        );
    }

    #[test]
    fn merge_n64_sha1() {
        let mut out = [0u8; 64];
        merge(&vector_src(64), STRIPES, HashAlg::Sha1, &mut out);
        assert_eq!(
            hex(&out),
            "2bb39c5b7eb8df3155afbfec3f2c729e20b934638a6f4688ca22cead74bb1db5\
             717c0470ac5f2bec69b49c872e80c8914cba83bd9a606bd58feb30d38a877e68"
        );
    }

    #[test]
    fn merge_ignores_trailing_bytes() {
        let mut src = vector_src(32);
        src.extend_from_slice(&[0xaa; 256]);
        let mut out = [0u8; 32];
        merge(&src, STRIPES, HashAlg::Sha256, &mut out);
        assert_eq!(
            hex(&out),
            "ce6768ee2587f811e98989a9aa6cda9aeec8055d1d2827672d5b5a7931aac999"
        );
    }

    #[test]
    fn split_merge_round_trip() {
        for hash in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha512,
            HashAlg::Ripemd160,
        ] {
            for n in [16usize, 20, 32, 33, 64] {
                let key: Vec<u8> = (0..n).map(|i| (i * 13 + 5) as u8).collect();
                let mut material = vec![0u8; n * STRIPES + 7];
                split(&key, STRIPES, hash, &mut material).unwrap();
                assert_eq!(&material[n * STRIPES..], &[0u8; 7], "tail untouched");
                let mut back = vec![0u8; n];
                merge(&material, STRIPES, hash, &mut back);
                assert_eq!(back, key, "{hash} n={n}");
                // Two splits of the same key differ (random stripes).
                let mut again = vec![0u8; n * STRIPES];
                split(&key, STRIPES, hash, &mut again).unwrap();
                assert_ne!(&again[..n], &material[..n]);
            }
        }
    }

    #[test]
    fn split_single_stripe_is_the_key() {
        let key = [9u8; 32];
        let mut out = [0u8; 32];
        split(&key, 1, HashAlg::Sha256, &mut out).unwrap();
        assert_eq!(out, key);
    }

    #[test]
    fn split_refuses_short_buffer() {
        let mut out = vec![0u8; 32 * STRIPES - 1];
        let e = split(&[1u8; 32], STRIPES, HashAlg::Sha256, &mut out).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(split(&[1u8; 32], 0, HashAlg::Sha256, &mut out).is_err());
    }
}
