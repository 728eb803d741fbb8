//! BitLocker sector decryption: AES-XTS (IV = sector number), AES-CBC (IV = AES-ECB of the
//! sector's byte offset under the FVEK, cryptsetup's "eboiv") and AES-CBC + Elephant
//! diffuser (the same IV; a sector key from the tweak key XORed in after the diffusers).
//! Every function takes the byte offset of a sector's ciphertext: that is what its IV is
//! derived from, also for the boot sectors read from their relocated copy.
use crate::crypto::elephant;
use crate::crypto::xts::SectorCipher;
use crate::secret::SecretBytes;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256, Block};
use rayon::prelude::*;

/// Encryption methods of the FVE metadata header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// 0x8000 / 0x8001: AES-CBC 128/256 with the Elephant diffuser.
    CbcElephant(KeyBits),
    /// 0x8002 / 0x8003: AES-CBC 128/256.
    Cbc(KeyBits),
    /// 0x8004 / 0x8005: XTS-AES 128/256.
    Xts(KeyBits),
}

/// AES key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBits {
    /// AES-128.
    B128,
    /// AES-256.
    B256,
}

impl KeyBits {
    fn bytes(self) -> usize {
        match self {
            KeyBits::B128 => 16,
            KeyBits::B256 => 32,
        }
    }
}

impl Method {
    /// Bytes of the volume key in cryptsetup's layout (`bitlkDump --dump-volume-key`, the
    /// `--volume-key-file` of `bitlkOpen`): XTS both halves, CBC the key, Elephant the key
    /// followed by the tweak key.
    pub fn volume_key_len(self) -> usize {
        match self {
            Method::Xts(b) | Method::CbcElephant(b) => 2 * b.bytes(),
            Method::Cbc(b) => b.bytes(),
        }
    }

    /// The volume key in cryptsetup's layout from the unwrapped FVEK entry's key bytes (the
    /// Elephant tweak key sits at byte 32 of the entry whatever the key size); None when the
    /// entry is too short for the method.
    pub fn volume_key_of_fvek(self, fvek: &[u8]) -> Option<SecretBytes> {
        match self {
            Method::CbcElephant(b) => {
                let n = b.bytes();
                let mut vk = SecretBytes::zeroed(2 * n);
                let out = vk.expose_secret_mut();
                out[..n].copy_from_slice(fvek.get(..n)?);
                out[n..].copy_from_slice(fvek.get(32..32 + n)?);
                Some(vk)
            }
            _ => Some(SecretBytes::from_slice(fvek.get(..self.volume_key_len())?)),
        }
    }

    /// The FVEK entry's layout (what [`Cipher::new`] takes) from a volume key in
    /// cryptsetup's layout; None when its length is not the method's.
    pub fn fvek_of_volume_key(self, vk: &[u8]) -> Option<SecretBytes> {
        if vk.len() != self.volume_key_len() {
            return None;
        }
        match self {
            Method::CbcElephant(b) => {
                let n = b.bytes();
                let mut fvek = SecretBytes::zeroed(64);
                let out = fvek.expose_secret_mut();
                out[..n].copy_from_slice(&vk[..n]);
                out[32..32 + n].copy_from_slice(&vk[n..]);
                Some(fvek)
            }
            _ => Some(SecretBytes::from_slice(vk)),
        }
    }

    /// cryptsetup's cipher mode for it (`bitlkDump`'s "Cipher mode").
    pub fn cryptsetup_mode(self) -> &'static str {
        match self {
            Method::Xts(_) => "xts-plain64",
            Method::Cbc(_) => "cbc-eboiv",
            Method::CbcElephant(_) => "cbc-elephant",
        }
    }

    /// The method numbered `v`, if supported.
    pub fn from_u16(v: u16) -> Option<Method> {
        Some(match v {
            0x8000 => Method::CbcElephant(KeyBits::B128),
            0x8001 => Method::CbcElephant(KeyBits::B256),
            0x8002 => Method::Cbc(KeyBits::B128),
            0x8003 => Method::Cbc(KeyBits::B256),
            0x8004 => Method::Xts(KeyBits::B128),
            0x8005 => Method::Xts(KeyBits::B256),
            _ => return None,
        })
    }

    /// As dump shows it: `aes-xts-128`, `aes-cbc-256`, `aes-cbc-elephant-128`, ...
    pub fn name(self) -> String {
        let (mode, bits) = match self {
            Method::CbcElephant(b) => ("cbc-elephant", b),
            Method::Cbc(b) => ("cbc", b),
            Method::Xts(b) => ("xts", b),
        };
        format!("aes-{mode}-{}", bits.bytes() * 8)
    }
}

enum Aes {
    A128(Box<Aes128>),
    A256(Box<Aes256>),
}

impl Aes {
    fn new(key: &[u8]) -> Option<Aes> {
        Some(match key.len() {
            16 => Aes::A128(Box::new(Aes128::new_from_slice(key).ok()?)),
            32 => Aes::A256(Box::new(Aes256::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }
    fn encrypt_block(&self, b: &mut Block) {
        match self {
            Aes::A128(k) => k.encrypt_block(b),
            Aes::A256(k) => k.encrypt_block(b),
        }
    }
    fn decrypt_blocks(&self, b: &mut [Block]) {
        match self {
            Aes::A128(k) => k.decrypt_blocks(b),
            Aes::A256(k) => k.decrypt_blocks(b),
        }
    }
    /// AES-ECB of the 16-byte little-endian `offset`, with byte 15 set to `top`.
    fn offset_block(&self, offset: u64, top: u8) -> [u8; 16] {
        let mut b = Block::default();
        b[..8].copy_from_slice(&offset.to_le_bytes());
        b[15] = top;
        self.encrypt_block(&mut b);
        b.0
    }
}

enum Inner {
    Xts(SectorCipher),
    Cbc(Aes),
    Elephant { fvek: Aes, tweak: Aes },
}

/// A BitLocker data cipher built from the unwrapped FVEK.
pub struct Cipher {
    inner: Inner,
    sector: usize,
}

/// Sectors below this many bytes per call are decrypted on the calling thread.
const PARALLEL_BYTES: usize = 256 * 1024;

impl Cipher {
    /// The cipher of `method` from the FVEK container's key bytes (`fvek`: XTS both halves;
    /// CBC the key; Elephant 64 bytes, the FVEK in the first 32 and the tweak key in the
    /// second, of which AES-128 uses 16 each). None when the key length does not fit.
    pub fn new(method: Method, fvek: &SecretBytes, sector: usize) -> Option<Cipher> {
        let k = fvek.expose_secret();
        let inner = match method {
            Method::Xts(bits) => Inner::Xts(SectorCipher::new(k.get(..2 * bits.bytes())?).ok()?),
            Method::Cbc(bits) => Inner::Cbc(Aes::new(k.get(..bits.bytes())?)?),
            Method::CbcElephant(bits) => Inner::Elephant {
                fvek: Aes::new(k.get(..bits.bytes())?)?,
                tweak: Aes::new(k.get(32..32 + bits.bytes())?)?,
            },
        };
        Some(Cipher { inner, sector })
    }

    /// Decrypts `buf` (whole sectors) in place; its first sector's ciphertext was read from
    /// byte `offset` of the volume.
    pub fn decrypt(&self, buf: &mut [u8], offset: u64) {
        let ss = self.sector;
        if let Inner::Xts(x) = &self.inner {
            // IV = sector number in units of the sector size (cryptsetup iv_large_sectors).
            x.decrypt_sectors(buf, ss, offset / ss as u64, 1);
            return;
        }
        if buf.len() < PARALLEL_BYTES {
            for (i, s) in buf.chunks_mut(ss).enumerate() {
                self.cbc_sector(s, offset + (i * ss) as u64);
            }
            return;
        }
        buf.par_chunks_mut(ss).enumerate().for_each(|(i, s)| {
            self.cbc_sector(s, offset + (i * ss) as u64);
        });
    }

    fn cbc_sector(&self, s: &mut [u8], offset: u64) {
        let (fvek, tweak) = match &self.inner {
            Inner::Cbc(k) => (k, None),
            Inner::Elephant { fvek, tweak } => (fvek, Some(tweak)),
            Inner::Xts(_) => return,
        };
        let iv = fvek.offset_block(offset, 0);
        let mut prev = u128::from_ne_bytes(iv);
        let mut cipher_copy = [0u128; 256];
        let (blocks, _) = Block::slice_as_chunks_mut(s);
        for (c, b) in cipher_copy.iter_mut().zip(blocks.iter()) {
            *c = u128::from_ne_bytes(b.0);
        }
        fvek.decrypt_blocks(blocks);
        for (b, c) in blocks.iter_mut().zip(cipher_copy.iter()) {
            b.0 = (u128::from_ne_bytes(b.0) ^ prev).to_ne_bytes();
            prev = *c;
        }
        if let Some(tweak) = tweak {
            elephant::decrypt(s);
            let k0 = u128::from_ne_bytes(tweak.offset_block(offset, 0));
            let k1 = u128::from_ne_bytes(tweak.offset_block(offset, 0x80));
            let (blocks, _) = Block::slice_as_chunks_mut(s);
            for (j, b) in blocks.iter_mut().enumerate() {
                let k = if j & 1 == 0 { k0 } else { k1 };
                b.0 = (u128::from_ne_bytes(b.0) ^ k).to_ne_bytes();
            }
        }
    }
}

#[cfg(test)]
mod volume_key_tests {
    use super::*;

    #[test]
    fn volume_keys_round_trip_in_cryptsetups_layout() {
        let entry: Vec<u8> = (0..64u8).collect();
        for (m, len) in [
            (Method::Xts(KeyBits::B128), 32),
            (Method::Xts(KeyBits::B256), 64),
            (Method::Cbc(KeyBits::B128), 16),
            (Method::Cbc(KeyBits::B256), 32),
            (Method::CbcElephant(KeyBits::B128), 32),
            (Method::CbcElephant(KeyBits::B256), 64),
        ] {
            let vk = m.volume_key_of_fvek(&entry).unwrap();
            assert_eq!(vk.len(), len, "{m:?}");
            let back = m.fvek_of_volume_key(vk.expose_secret()).unwrap();
            assert_eq!(
                m.volume_key_of_fvek(back.expose_secret())
                    .unwrap()
                    .expose_secret(),
                vk.expose_secret(),
                "{m:?}"
            );
            assert!(m.fvek_of_volume_key(&entry[..len - 1]).is_none(), "{m:?}");
        }
        let e128 = Method::CbcElephant(KeyBits::B128)
            .volume_key_of_fvek(&entry)
            .unwrap();
        assert_eq!(&e128.expose_secret()[16..], &entry[32..48]);
    }
}
