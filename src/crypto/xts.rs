//! SectorCipher: aes-xts-plain64 over runs of sectors (IEEE 1619, dm-crypt plain64 IVs).
//!
//! Two engines behind one type, chosen per key (`Engine`):
//! - XTS-AES-256 (64-byte keys, the LUKS2 default) runs on AWS-LC (`awslc.rs`), whose
//!   VAES/AVX-512 assembly is about twice as fast per core here as the best RustCrypto path
//!   (measured by `vaultdisk benchmark`); AWS-LC picks its code path at run time, so the binary
//!   needs no target-cpu flags.
//! - XTS-AES-128 (32-byte keys, which AWS-LC's XTS does not take) and 64-byte keys AWS-LC
//!   refuses (equal halves) run on the RustCrypto fused path below.
//!
//! Fused RustCrypto path (docs/format.md §7, §10): per sector, T0 = AES_Key2(plain64 IV); the
//! sector's tweaks T0·α^j are generated into a buffer; the data is XORed with them, run through
//! the `aes` crate's multi-block `encrypt_blocks`/`decrypt_blocks` (which pipelines AES-NI /
//! VAES over many blocks), and XORed again. Runs of 64 KiB or more are split across cores with
//! rayon. Sectors are whole multiples of 16 bytes, so ciphertext stealing never arises.
use super::CryptoError;
use aes::Block;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use rayon::prelude::*;

mod awslc;

/// Bytes handled per inner batch, i.e. per `encrypt_blocks` call (four 4096-byte sectors or
/// 32 512-byte ones): measured faster than 4 KiB batches, and still L1-resident.
const BATCH_BYTES: usize = 16384;
/// Most sectors in one batch (512-byte sectors).
const BATCH_SECTORS: usize = BATCH_BYTES / 512;
/// Runs at least this long are spread over the rayon pool; shorter ones stay on the caller's
/// thread. Above the largest FUSE request (1 MiB), so the data path never splits: at ~14 GB/s
/// per core a 1 MiB request is ~70 us of cipher work, and splitting it (the old 64 KiB
/// threshold) cost 25-30% more daemon CPU per GiB on sequential reads and writes here (rayon's
/// workers spin in sched_yield between jobs, on cores the FUSE workers and the kernel's copies
/// need). Parallel FUSE workers already keep the cores busy. Large offline runs still split.
pub const PARALLEL_THRESHOLD_BYTES: usize = 2 << 20;
/// Smallest piece of a parallel run given to one task.
const MIN_PARALLEL_CHUNK_BYTES: usize = 16 * 1024;

/// Key1 (data) and Key2 (tweak) schedules for one AES key size. The `aes` crate's `zeroize`
/// feature wipes the round keys on drop.
struct Halves<D, T> {
    data: D,
    tweak: T,
}

enum Inner {
    Aes128(Box<Halves<aes::Aes128, aes::Aes128Enc>>),
    Aes256(Box<Halves<aes::Aes256, aes::Aes256Enc>>),
    AwsLc256(awslc::Xts256),
}

/// Which implementation a `SectorCipher` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// AWS-LC's EVP aes-256-xts (64-byte keys only).
    AwsLc,
    /// The `aes` crate's multi-block AES with the fused XTS loop below.
    RustCrypto,
}

impl Engine {
    /// Short name for reports ("aws-lc", "rustcrypto").
    pub fn name(self) -> &'static str {
        match self {
            Engine::AwsLc => "aws-lc",
            Engine::RustCrypto => "rustcrypto",
        }
    }
}

/// aes-xts-plain64 keyed by a volume key of 32 (XTS-AES-128) or 64 (XTS-AES-256) bytes.
///
/// `Send + Sync`: one cipher serves all threads.
pub struct SectorCipher {
    inner: Inner,
}

impl std::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = match self.inner {
            Inner::Aes128(_) => 128,
            Inner::Aes256(_) | Inner::AwsLc256(_) => 256,
        };
        write!(
            f,
            "SectorCipher(aes-xts-plain64, XTS-AES-{bits}, {}, <redacted>)",
            self.engine().name()
        )
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

impl SectorCipher {
    /// Key1 = first half (data), Key2 = second half (tweak), IEEE 1619 order. Runs on
    /// AWS-LC where it takes the key (64 bytes, halves not equal), else on RustCrypto.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() == 64
            && let Some(x) = awslc::Xts256::new(key)
        {
            return Ok(SectorCipher {
                inner: Inner::AwsLc256(x),
            });
        }
        Self::rustcrypto(key)
    }

    /// Like `new`, on the given engine (benchmarks and equivalence tests). `None` when that
    /// engine does not take this key.
    pub fn with_engine(key: &[u8], engine: Engine) -> Option<Self> {
        match engine {
            Engine::RustCrypto => Self::rustcrypto(key).ok(),
            Engine::AwsLc if key.len() == 64 => awslc::Xts256::new(key).map(|x| SectorCipher {
                inner: Inner::AwsLc256(x),
            }),
            Engine::AwsLc => None,
        }
    }

    /// The engine this cipher runs on.
    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::AwsLc256(_) => Engine::AwsLc,
            Inner::Aes128(_) | Inner::Aes256(_) => Engine::RustCrypto,
        }
    }

    fn rustcrypto(key: &[u8]) -> Result<Self, CryptoError> {
        let (k1, k2) = key.split_at(key.len() / 2);
        let err = |_| CryptoError::KeySize(key.len());
        let inner = match key.len() {
            32 => Inner::Aes128(Box::new(Halves {
                data: aes::Aes128::new_from_slice(k1).map_err(err)?,
                tweak: aes::Aes128Enc::new_from_slice(k2).map_err(err)?,
            })),
            64 => Inner::Aes256(Box::new(Halves {
                data: aes::Aes256::new_from_slice(k1).map_err(err)?,
                tweak: aes::Aes256Enc::new_from_slice(k2).map_err(err)?,
            })),
            n => return Err(CryptoError::KeySize(n)),
        };
        Ok(SectorCipher { inner })
    }

    /// Encrypts `buf` (a whole number of `sector_size` sectors) in place. Sector k uses the
    /// plain64 IV `first_iv + k * iv_step` (iv_step = sector_size / 512 for LUKS).
    ///
    /// # Panics
    /// If `sector_size` is not a power of two in 512..=4096 or `buf.len()` is not a multiple
    /// of it: callers cut buffers on sector boundaries (geometry.rs), so this is a bug.
    pub fn encrypt_sectors(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        self.run(buf, sector_size, first_iv, iv_step, Direction::Encrypt);
    }

    /// Decrypts `buf` in place; same IV rule and panics as `encrypt_sectors`.
    pub fn decrypt_sectors(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        self.run(buf, sector_size, first_iv, iv_step, Direction::Decrypt);
    }

    /// Encrypts `src` into `dst` (same length, whole sectors; same IV rule and panics as
    /// `encrypt_sectors`). Saves the caller's copy into a mutable buffer: AWS-LC reads `src`
    /// and writes `dst` in one pass; the RustCrypto engine copies, then encrypts in place.
    pub fn encrypt_sectors_into(
        &self,
        src: &[u8],
        dst: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
    ) {
        assert_eq!(
            src.len(),
            dst.len(),
            "XTS source and destination differ in length"
        );
        check_geometry(src.len(), sector_size);
        match &self.inner {
            Inner::AwsLc256(x) if src.len() < PARALLEL_THRESHOLD_BYTES => {
                x.run_into(src, dst, sector_size, first_iv, iv_step, true)
            }
            _ => {
                dst.copy_from_slice(src);
                self.encrypt_sectors(dst, sector_size, first_iv, iv_step);
            }
        }
    }

    /// Like `encrypt_sectors`/`decrypt_sectors` but always on the calling thread (benchmarks,
    /// and callers that are already parallel).
    pub fn encrypt_sectors_sequential(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
    ) {
        check_geometry(buf.len(), sector_size);
        self.sequential(buf, sector_size, first_iv, iv_step, Direction::Encrypt);
    }

    /// Sequential counterpart of `decrypt_sectors`.
    pub fn decrypt_sectors_sequential(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
    ) {
        check_geometry(buf.len(), sector_size);
        self.sequential(buf, sector_size, first_iv, iv_step, Direction::Decrypt);
    }

    fn run(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64, dir: Direction) {
        check_geometry(buf.len(), sector_size);
        // Length first: asking rayon for its thread count starts its global pool, which the
        // FUSE data path (always below the threshold) then never needs.
        if buf.len() < PARALLEL_THRESHOLD_BYTES || rayon::current_num_threads() < 2 {
            self.sequential(buf, sector_size, first_iv, iv_step, dir);
            return;
        }
        // About two pieces per thread for balance, whole sectors, at least 16 KiB each.
        let sectors = buf.len() / sector_size;
        let per_chunk = sectors
            .div_ceil(rayon::current_num_threads() * 2)
            .max(MIN_PARALLEL_CHUNK_BYTES / sector_size);
        let chunk_bytes = per_chunk * sector_size;
        buf.par_chunks_mut(chunk_bytes)
            .enumerate()
            .for_each(|(i, chunk)| {
                let iv = first_iv.wrapping_add(((i * per_chunk) as u64).wrapping_mul(iv_step));
                self.sequential(chunk, sector_size, iv, iv_step, dir);
            });
    }

    fn sequential(
        &self,
        buf: &mut [u8],
        sector_size: usize,
        first_iv: u64,
        iv_step: u64,
        dir: Direction,
    ) {
        match &self.inner {
            Inner::Aes128(h) => xts(h, buf, sector_size, first_iv, iv_step, dir),
            Inner::Aes256(h) => xts(h, buf, sector_size, first_iv, iv_step, dir),
            Inner::AwsLc256(x) => x.run(
                buf,
                sector_size,
                first_iv,
                iv_step,
                matches!(dir, Direction::Encrypt),
            ),
        }
    }
}

fn check_geometry(len: usize, sector_size: usize) {
    assert!(
        sector_size.is_power_of_two() && (512..=4096).contains(&sector_size),
        "XTS sector size {sector_size} is not a power of two in 512..=4096"
    );
    assert!(
        len.is_multiple_of(sector_size),
        "XTS buffer of {len} bytes is not a whole number of {sector_size}-byte sectors"
    );
}

/// The plain64 IV as an XTS tweak: little-endian u64, upper 8 bytes zero.
fn iv_block(iv: u64) -> Block {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&iv.to_le_bytes());
    t.into()
}

/// T·α in GF(2^128) with the IEEE 1619 convention: T read as a little-endian integer, shifted
/// left by one, 0x87 folded in when bit 127 falls out.
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}

#[inline(always)]
fn xor_blocks(blocks: &mut [Block], tweaks: &[[u8; 16]]) {
    for (b, t) in blocks.iter_mut().zip(tweaks) {
        let v = u128::from_ne_bytes(b.0) ^ u128::from_ne_bytes(*t);
        b.0 = v.to_ne_bytes();
    }
}

fn xts<D, T>(
    keys: &Halves<D, T>,
    buf: &mut [u8],
    sector_size: usize,
    first_iv: u64,
    iv_step: u64,
    dir: Direction,
) where
    D: BlockCipherEncrypt
        + BlockCipherDecrypt
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    T: BlockCipherEncrypt + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
{
    let blocks_per_sector = sector_size / 16;
    let sectors_per_batch = (BATCH_BYTES / sector_size).max(1);
    let mut tweaks = [[0u8; 16]; BATCH_BYTES / 16];
    let mut t0 = [Block::default(); BATCH_SECTORS];
    let mut iv = first_iv;
    for batch in buf.chunks_mut(sectors_per_batch * sector_size) {
        let n_sectors = batch.len() / sector_size;
        // One multi-block call encrypts the batch's initial tweaks.
        for t in &mut t0[..n_sectors] {
            *t = iv_block(iv);
            iv = iv.wrapping_add(iv_step);
        }
        keys.tweak.encrypt_blocks(&mut t0[..n_sectors]);
        let n_blocks = n_sectors * blocks_per_sector;
        let (blocks, _) = Block::slice_as_chunks_mut(batch);
        // Generate each tweak and pre-whiten its block in the same pass (one pass saved).
        for (s, t) in t0[..n_sectors].iter().enumerate() {
            let mut x = u128::from_le_bytes(t.0);
            let range = s * blocks_per_sector..(s + 1) * blocks_per_sector;
            for (slot, b) in tweaks[range.clone()].iter_mut().zip(&mut blocks[range]) {
                *slot = x.to_le_bytes();
                let v = u128::from_le_bytes(b.0) ^ x;
                b.0 = v.to_le_bytes();
                x = mul_alpha(x);
            }
        }
        let tw = &tweaks[..n_blocks];
        match dir {
            Direction::Encrypt => keys.data.encrypt_blocks(blocks),
            Direction::Decrypt => keys.data.decrypt_blocks(blocks),
        }
        xor_blocks(blocks, tw);
    }
    // The tweaks are not wiped: they are AES_Key2 of public IVs, which reveal no more about
    // Key2 than any known plaintext does, and a volatile wipe of 16 KiB per call would cost
    // about a third of the throughput for 4 KiB requests.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::encode as hex;
    use xts_mode::Xts128;

    fn unhex(s: &str) -> Vec<u8> {
        crate::hex::decode(s).expect("hex test vector")
    }

    /// Tiny deterministic generator for test data (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next() as u8;
            }
        }
    }

    /// Reference: xts-mode's per-sector implementation.
    fn reference(key: &[u8], buf: &mut [u8], ss: usize, first_iv: u64, step: u64, enc: bool) {
        let half = key.len() / 2;
        macro_rules! go {
            ($c:ty) => {{
                let x = Xts128::new(
                    <$c>::new_from_slice(&key[..half]).unwrap(),
                    <$c>::new_from_slice(&key[half..]).unwrap(),
                );
                for (k, s) in buf.chunks_exact_mut(ss).enumerate() {
                    let t = iv_block(first_iv.wrapping_add((k as u64).wrapping_mul(step)));
                    if enc {
                        x.encrypt_sector(s, t)
                    } else {
                        x.decrypt_sector(s, t)
                    }
                }
            }};
        }
        match key.len() {
            32 => go!(aes::Aes128),
            64 => go!(aes::Aes256),
            _ => unreachable!(),
        }
    }

    fn theirs_ct(key: &[u8], plain: &[u8], ss: usize, first_iv: u64, step: u64) -> Vec<u8> {
        let mut v = plain.to_vec();
        reference(key, &mut v, ss, first_iv, step, true);
        v
    }

    fn check_vector(key: &str, dusn: u64, pt: &[u8], ct_prefix: &str, ct_suffix: &str) {
        let key = unhex(key);
        let mut engines = 0;
        for c in engines_for(&key) {
            engines += 1;
            let mut buf = pt.to_vec();
            let len = buf.len();
            // The IEEE vectors 1 and 2 are 32-byte data units; ours are >= 512, so encrypt the
            // first 512 bytes of a padded unit: XTS blocks before the end do not depend on
            // later plaintext (no stealing), so the prefix equals the short unit's ciphertext.
            buf.resize(len.max(512), 0);
            c.encrypt_sectors(&mut buf, 512, dusn, 1);
            let ct = hex(&buf[..len]);
            assert!(ct.starts_with(ct_prefix), "{:?}: {ct}", c.engine());
            assert!(ct.ends_with(ct_suffix), "{:?}: {ct}", c.engine());
            c.decrypt_sectors(&mut buf, 512, dusn, 1);
            assert_eq!(&buf[..len], pt);
        }
        assert_eq!(engines, if key.len() == 64 { 2 } else { 1 });
    }

    /// Every engine that takes `key` (AWS-LC only for 64-byte keys with unequal halves).
    fn engines_for(key: &[u8]) -> Vec<SectorCipher> {
        [Engine::AwsLc, Engine::RustCrypto]
            .into_iter()
            .filter_map(|e| SectorCipher::with_engine(key, e))
            .collect()
    }

    #[test]
    fn engine_choice() {
        let key: Vec<u8> = (0u8..64).collect();
        assert_eq!(SectorCipher::new(&key).unwrap().engine(), Engine::AwsLc);
        assert_eq!(
            SectorCipher::new(&key[..32]).unwrap().engine(),
            Engine::RustCrypto
        );
        // AWS-LC refuses equal halves (CIPHER_R_XTS_DUPLICATED_KEYS); such a key still works.
        let same = [9u8; 64];
        assert!(SectorCipher::with_engine(&same, Engine::AwsLc).is_none());
        let c = SectorCipher::new(&same).unwrap();
        assert_eq!(c.engine(), Engine::RustCrypto);
        let mut buf = vec![1u8; 4096];
        c.encrypt_sectors(&mut buf, 4096, 0, 8);
        let mut theirs = vec![1u8; 4096];
        reference(&same, &mut theirs, 4096, 0, 8, true);
        assert!(buf == theirs);
    }

    fn twice_00_ff() -> Vec<u8> {
        (0..512).map(|i| (i % 256) as u8).collect()
    }

    #[test]
    fn ieee1619_vector_1() {
        check_vector(
            &"00".repeat(32),
            0,
            &[0u8; 32],
            "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e",
            "",
        );
    }

    #[test]
    fn ieee1619_vector_2() {
        check_vector(
            &format!("{}{}", "11".repeat(16), "22".repeat(16)),
            0x33_3333_3333,
            &[0x44u8; 32],
            "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0",
            "",
        );
    }

    #[test]
    fn ieee1619_vector_4() {
        check_vector(
            "2718281828459045235360287471352631415926535897932384626433832795",
            0,
            &twice_00_ff(),
            "27a7479befa1d476489f308cd4cfa6e2",
            "0a282df920147beabe421ee5319d0568",
        );
    }

    #[test]
    fn ieee1619_vector_10() {
        check_vector(
            "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592",
            0xff,
            &twice_00_ff(),
            "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b",
            "c4f36ffda9fcea70b9c6e693e148c151",
        );
    }

    #[test]
    fn vector_10_as_sector_255_of_a_run() {
        // docs/format.md §10: vector 10 is sector 255 of a 512-byte-sector volume.
        let key = unhex(
            "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592",
        );
        let c = SectorCipher::new(&key).unwrap();
        let mut buf = vec![0u8; 256 * 512];
        buf[255 * 512..].copy_from_slice(&twice_00_ff());
        c.encrypt_sectors(&mut buf, 512, 0, 1);
        let ct = hex(&buf[255 * 512..]);
        assert!(ct.starts_with("1c3b3a102f770386e4836c99e370cf9b"), "{ct}");
        assert!(ct.ends_with("c4f36ffda9fcea70b9c6e693e148c151"), "{ct}");
    }

    #[test]
    fn matches_xts_mode_reference() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for key_len in [32usize, 64] {
            for (ss, step) in [(512usize, 1u64), (4096, 8), (4096, 1), (512, 8)] {
                for first_iv in [0u64, 1, 7, 255, 0xffff_ffff, u64::MAX - 4096] {
                    let mut key = vec![0u8; key_len];
                    rng.fill(&mut key);
                    for c in engines_for(&key) {
                        // Long enough to take the parallel path, with an odd number of sectors.
                        let sectors = PARALLEL_THRESHOLD_BYTES / ss + 3;
                        // The long run (parallel path) at one IV only (wrapping): it is slow unoptimised.
                        let long = first_iv == u64::MAX - 4096;
                        let counts: &[usize] = if long {
                            &[1, 2, 9, sectors]
                        } else {
                            &[1, 2, 9]
                        };
                        for &n in counts {
                            let mut plain = vec![0u8; n * ss];
                            rng.fill(&mut plain);
                            let mut ours = plain.clone();
                            c.encrypt_sectors(&mut ours, ss, first_iv, step);
                            let mut theirs = plain.clone();
                            reference(&key, &mut theirs, ss, first_iv, step, true);
                            assert!(
                                ours == theirs,
                                "encrypt k{key_len} ss{ss} step{step} iv{first_iv} n{n}"
                            );
                            let mut seq = plain.clone();
                            c.encrypt_sectors_sequential(&mut seq, ss, first_iv, step);
                            assert!(seq == theirs);
                            let mut into = vec![0u8; plain.len()];
                            c.encrypt_sectors_into(&plain, &mut into, ss, first_iv, step);
                            assert!(into == theirs, "into k{key_len} ss{ss} iv{first_iv} n{n}");
                            reference(&key, &mut theirs, ss, first_iv, step, false);
                            assert!(theirs == plain);
                            c.decrypt_sectors(&mut ours, ss, first_iv, step);
                            assert!(
                                ours == plain,
                                "decrypt k{key_len} ss{ss} step{step} iv{first_iv} n{n}"
                            );
                            let mut seq = theirs_ct(&key, &plain, ss, first_iv, step);
                            c.decrypt_sectors_sequential(&mut seq, ss, first_iv, step);
                            assert!(seq == plain);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sector_sizes_1024_and_2048() {
        let mut rng = Rng(42);
        let mut key = [0u8; 64];
        rng.fill(&mut key);
        for c in engines_for(&key) {
            for ss in [1024usize, 2048] {
                let mut plain = vec![0u8; ss * 70];
                rng.fill(&mut plain);
                let mut ours = plain.clone();
                c.encrypt_sectors(&mut ours, ss, 3, (ss / 512) as u64);
                let mut theirs = plain.clone();
                reference(&key, &mut theirs, ss, 3, (ss / 512) as u64, true);
                assert!(ours == theirs);
            }
        }
    }

    #[test]
    fn engines_agree_across_threads() {
        // Contexts are pooled per cipher: many threads at once must each get a consistent
        // one (a shared or half-copied context would garble some sectors).
        let key: Vec<u8> = (100u8..164).collect();
        let aws = std::sync::Arc::new(SectorCipher::with_engine(&key, Engine::AwsLc).unwrap());
        let rc = SectorCipher::with_engine(&key, Engine::RustCrypto).unwrap();
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let aws = std::sync::Arc::clone(&aws);
                std::thread::spawn(move || {
                    let mut outs = vec![];
                    for r in 0..50u64 {
                        let mut b = vec![(t * 50 + r) as u8; 4096 * (1 + (r as usize % 5))];
                        aws.encrypt_sectors(&mut b, 4096, t * 1000 + r, 8);
                        outs.push((t * 1000 + r, b));
                    }
                    outs
                })
            })
            .collect();
        for (t, h) in handles.into_iter().enumerate() {
            for (r, (iv, got)) in h.join().unwrap().into_iter().enumerate() {
                let mut want = vec![(t * 50 + r) as u8; got.len()];
                rc.encrypt_sectors(&mut want, 4096, iv, 8);
                assert!(got == want, "thread {t} round {r}");
            }
        }
    }

    #[test]
    fn empty_buffer_is_fine() {
        let c = SectorCipher::new(&[1u8; 32]).unwrap();
        c.encrypt_sectors(&mut [], 4096, 0, 8);
    }

    #[test]
    fn rejects_bad_key_sizes() {
        for n in [0usize, 16, 31, 48, 63, 65, 128] {
            assert_eq!(
                SectorCipher::new(&vec![0u8; n]).unwrap_err(),
                CryptoError::KeySize(n)
            );
        }
        let shown = format!("{:?}", SectorCipher::new(&[7u8; 64]).unwrap());
        assert!(
            shown.contains("redacted") && !shown.contains('7'),
            "{shown}"
        );
    }

    #[test]
    #[should_panic(expected = "not a whole number")]
    fn refuses_partial_sector() {
        let c = SectorCipher::new(&[1u8; 32]).unwrap();
        c.encrypt_sectors(&mut [0u8; 600], 512, 0, 1);
    }

    #[test]
    #[should_panic(expected = "sector size")]
    fn refuses_odd_sector_size() {
        let c = SectorCipher::new(&[1u8; 32]).unwrap();
        c.encrypt_sectors(&mut [0u8; 768], 768, 0, 1);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SectorCipher>();
    }

    /// Throughput, 4096-byte sectors, 512-bit key. Run in release:
    /// `cargo test --release --lib xts::tests::throughput -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark; run in release with --ignored --nocapture"]
    fn throughput() {
        use std::time::Instant;
        let key: Vec<u8> = (0u8..64).collect();
        let c = SectorCipher::with_engine(&key, Engine::RustCrypto).unwrap();
        let aws = SectorCipher::with_engine(&key, Engine::AwsLc).unwrap();
        let mut buf = vec![0x5au8; 16 * 1024 * 1024];
        let rounds = 16;
        let mb = (buf.len() * rounds) as f64 / 1e6;
        // Start the rayon pool and let clocks settle before anything is timed.
        for _ in 0..8 {
            c.encrypt_sectors(&mut buf, 4096, 0, 8);
        }
        let mut rate = |name: &str, f: &mut dyn FnMut(&mut [u8])| {
            f(&mut buf); // warm-up
            let t = Instant::now();
            for _ in 0..rounds {
                f(&mut buf);
            }
            let s = t.elapsed().as_secs_f64();
            println!("{name:<40} {:8.0} MB/s", mb / s);
        };
        rate("aws-lc encrypt, 1 thread", &mut |b| {
            aws.encrypt_sectors_sequential(b, 4096, 0, 8)
        });
        rate("aws-lc decrypt, 1 thread", &mut |b| {
            aws.decrypt_sectors_sequential(b, 4096, 0, 8)
        });
        rate("fused encrypt, 1 thread", &mut |b| {
            c.encrypt_sectors_sequential(b, 4096, 0, 8)
        });
        rate("fused decrypt, 1 thread", &mut |b| {
            c.decrypt_sectors_sequential(b, 4096, 0, 8)
        });
        rate("fused encrypt, 4 KiB calls, 1 thread", &mut |b| {
            for (i, s) in b.chunks_mut(4096).enumerate() {
                c.encrypt_sectors(s, 4096, i as u64 * 8, 8)
            }
        });
        rate(
            &format!("fused decrypt, {} threads", rayon::current_num_threads()),
            &mut |b| c.decrypt_sectors(b, 4096, 0, 8),
        );
        rate(
            &format!("fused encrypt, {} threads", rayon::current_num_threads()),
            &mut |b| c.encrypt_sectors(b, 4096, 0, 8),
        );
        rate("fused encrypt 512-byte sectors, 1 thread", &mut |b| {
            c.encrypt_sectors_sequential(b, 512, 0, 1)
        });
        let ecb = aes::Aes256::new_from_slice(&key[..32]).unwrap();
        rate("raw AES-256 ECB encrypt_blocks (bound)", &mut |b| {
            ecb.encrypt_blocks(Block::slice_as_chunks_mut(b).0)
        });
        rate("xts-mode reference encrypt, 1 thread", &mut |b| {
            reference(&key, b, 4096, 0, 8, true)
        });
        rate("xts-mode reference decrypt, 1 thread", &mut |b| {
            reference(&key, b, 4096, 0, 8, false)
        });
    }
}
