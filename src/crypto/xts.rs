//! SectorCipher: aes-xts-plain64 over runs of sectors (IEEE 1619, dm-crypt plain64 IVs).
//! Placeholder on xts-mode's per-sector call; the fast fused path replaces it.
use super::CryptoError;
use aes::cipher::KeyInit;
use xts_mode::Xts128;

enum Inner {
    Aes128(Xts128<aes::Aes128>),
    Aes256(Xts128<aes::Aes256>),
}

/// aes-xts-plain64 keyed by a volume key of 32 (XTS-AES-128) or 64 (XTS-AES-256) bytes.
pub struct SectorCipher {
    inner: Inner,
}

fn tweak(iv: u64) -> aes::Block {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&iv.to_le_bytes());
    t.into()
}

impl SectorCipher {
    /// Key1 = first half (data), Key2 = second half (tweak), IEEE 1619 order.
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let half = key.len() / 2;
        let inner = match key.len() {
            32 => Inner::Aes128(Xts128::new(
                aes::Aes128::new_from_slice(&key[..half]).map_err(|_| CryptoError::KeySize(32))?,
                aes::Aes128::new_from_slice(&key[half..]).map_err(|_| CryptoError::KeySize(32))?,
            )),
            64 => Inner::Aes256(Xts128::new(
                aes::Aes256::new_from_slice(&key[..half]).map_err(|_| CryptoError::KeySize(64))?,
                aes::Aes256::new_from_slice(&key[half..]).map_err(|_| CryptoError::KeySize(64))?,
            )),
            n => return Err(CryptoError::KeySize(n)),
        };
        Ok(SectorCipher { inner })
    }

    /// Encrypts `buf` (a whole number of `sector_size` sectors) in place. Sector k uses the
    /// plain64 IV `first_iv + k * iv_step` (iv_step = sector_size / 512 for LUKS).
    pub fn encrypt_sectors(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        for (k, sector) in buf.chunks_exact_mut(sector_size).enumerate() {
            let t = tweak(first_iv + k as u64 * iv_step);
            match &self.inner {
                Inner::Aes128(x) => x.encrypt_sector(sector, t),
                Inner::Aes256(x) => x.encrypt_sector(sector, t),
            }
        }
    }

    /// Decrypts `buf` in place; same IV rule as `encrypt_sectors`.
    pub fn decrypt_sectors(&self, buf: &mut [u8], sector_size: usize, first_iv: u64, iv_step: u64) {
        for (k, sector) in buf.chunks_exact_mut(sector_size).enumerate() {
            let t = tweak(first_iv + k as u64 * iv_step);
            match &self.inner {
                Inner::Aes128(x) => x.decrypt_sector(sector, t),
                Inner::Aes256(x) => x.decrypt_sector(sector, t),
            }
        }
    }
}
