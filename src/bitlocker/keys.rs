//! BitLocker key material: the stretch KDF (password and recovery password), the recovery
//! password's form, startup keys (`.BEK` files) and the AES-CCM unwrap of VMK and FVEK.
//! Pure functions on bytes; secrets stay in `SecretBytes`.
use super::format::CcmBlob;
use crate::secret::SecretBytes;
use aes::Aes256;
use ccm::aead::AeadInOut;
use ccm::consts::{U12, U16};
use ccm::{Ccm, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Rounds of the stretch KDF (0x100000).
pub const STRETCH_ROUNDS: u64 = 1 << 20;

/// The stretch KDF: SHA-256, [`STRETCH_ROUNDS`] times, over the 88-byte structure
/// `{last[32], initial[32], salt[16], count u64 LE}` (last and count start at 0).
///
/// The structure is exactly one 64-byte block (last ∥ initial) plus a final block whose
/// salt and padding never change except for the count, so each round is two compressions
/// without any buffering: fast enough (well under a second) even for many protectors.
pub fn stretch(initial: &[u8; 32], salt: &[u8; 16]) -> SecretBytes {
    use sha2::block_api::compress256;
    const IV: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut blocks = [[0u8; 64]; 2];
    blocks[0][32..].copy_from_slice(initial);
    blocks[1][..16].copy_from_slice(salt);
    blocks[1][24] = 0x80;
    // Message length: 88 bytes = 704 bits, big-endian in the last 8 bytes.
    blocks[1][56..].copy_from_slice(&(88u64 * 8).to_be_bytes());
    for count in 0..STRETCH_ROUNDS {
        blocks[1][16..24].copy_from_slice(&count.to_le_bytes());
        let mut state = IV;
        compress256(&mut state, &blocks);
        for (i, w) in state.iter().enumerate() {
            blocks[0][4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
        }
        state.zeroize();
    }
    let out = SecretBytes::from_slice(&blocks[0][..32]);
    blocks.zeroize();
    out
}

/// The initial hash of a password: SHA-256(SHA-256(UTF-16LE(password))). The password's bytes
/// must be UTF-8 (a key file's bytes, a line from the terminal); a trailing newline is not
/// removed here.
pub fn password_initial(password: &[u8]) -> Result<[u8; 32], &'static str> {
    let text = std::str::from_utf8(password).map_err(|_| "the password is not UTF-8")?;
    let mut utf16 = Vec::with_capacity(text.len() * 2);
    for u in text.encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    let once = Sha256::digest(&utf16);
    utf16.zeroize();
    Ok(Sha256::digest(once).into())
}

/// The 16-byte key of a recovery password: 48 digits in 8 groups of 6 (dashes, spaces or
/// nothing between groups; surrounding whitespace ignored), each group divisible by 11 and
/// below 720896 (11 × 65536); the key is the eight quotients as u16 little-endian.
pub fn recovery_password_key(text: &[u8]) -> Result<SecretBytes, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'-' | b' ' | b'\t' | b'\r' | b'\n'))
        .collect();
    if digits.len() != 48 || !digits.iter().all(u8::is_ascii_digit) {
        return Err("a recovery password is 48 digits in 8 groups of 6".into());
    }
    let mut key = SecretBytes::zeroed(16);
    for (i, group) in digits.chunks(6).enumerate() {
        let n = group
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        if n % 11 != 0 || n >= 720_896 {
            return Err(format!(
                "group {} of the recovery password is not valid (each group is a multiple of 11 below 720896)",
                i + 1
            ));
        }
        let q = u16::try_from(n / 11).map_err(|_| "recovery password group too large")?;
        key.expose_secret_mut()[2 * i..2 * i + 2].copy_from_slice(&q.to_le_bytes());
    }
    Ok(key)
}

/// The initial hash of a recovery password's key: SHA-256(key).
pub fn recovery_initial(key: &SecretBytes) -> [u8; 32] {
    Sha256::digest(key.expose_secret()).into()
}

/// AES-256-CCM (16-byte tag, 12-byte nonce) decryption of `blob` with `key`, then the key
/// container check (its size field equals the ciphertext's length). The container: size (4),
/// version (2), unknown (2), method (4), key bytes; returns the key bytes, or None when the
/// tag does not verify (wrong key) or the container is malformed.
pub fn unwrap(key: &[u8], blob: &CcmBlob) -> Option<SecretBytes> {
    let cipher = Ccm::<Aes256, U16, U12>::new_from_slice(key).ok()?;
    let mut buf = SecretBytes::from_slice(&blob.data);
    cipher
        .decrypt_inout_detached(
            &blob.nonce.into(),
            b"",
            buf.expose_secret_mut().into(),
            &blob.tag.into(),
        )
        .ok()?;
    let plain = buf.expose_secret();
    let size = u16::from_le_bytes([*plain.first()?, *plain.get(1)?]);
    if usize::from(size) != plain.len() || plain.len() <= 12 {
        return None;
    }
    Some(SecretBytes::from_slice(&plain[12..]))
}

/// A startup key: the identifier of the VMK it opens and its 32-byte key.
pub struct StartupKey {
    /// The VMK identifier (the `.BEK` file is named after it).
    pub id: [u8; 16],
    /// The external key.
    pub key: SecretBytes,
}

/// Parses a `.BEK` file: a 48-byte header (size = the file's length, version 1, the key
/// identifier at byte 16) and an external-key entry (type 0x0006, value 0x0009) whose key
/// property (value 0x0001) holds the method and 32 key bytes. Base64 text of such a file (as
/// a Key Vault secret holds it) is decoded first. None when it is neither.
pub fn parse_bek(bytes: &[u8]) -> Option<StartupKey> {
    if let Some(k) = parse_bek_raw(bytes) {
        return Some(k);
    }
    use base64::Engine;
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if text.len() > 64 * 1024 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .ok()?;
    let raw = SecretBytes::from_vec(raw);
    parse_bek_raw(raw.expose_secret())
}

fn parse_bek_raw(b: &[u8]) -> Option<StartupKey> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    if b.len() < 48 + 8 + 24 || b.len() > 4096 {
        return None;
    }
    if usize::try_from(u32_at(0)?).ok()? != b.len() || u32_at(4)? != 1 || u32_at(8)? != 48 {
        return None;
    }
    let id: [u8; 16] = b.get(16..32)?.try_into().ok()?;
    let size = usize::from(u16_at(48)?);
    if u16_at(50)? != 0x0006 || u16_at(52)? != 0x0009 || size < 32 || 48 + size > b.len() {
        return None;
    }
    // External key: GUID (16), FILETIME (8), then property entries.
    let mut p = 48 + 8 + 24;
    let end = 48 + size;
    while p + 8 <= end {
        let esize = usize::from(u16_at(p)?);
        if esize < 8 || p + esize > end {
            return None;
        }
        if u16_at(p + 4)? == 0x0001 && esize == 8 + 4 + 32 {
            return Some(StartupKey {
                id,
                key: SecretBytes::from_slice(&b[p + 12..p + esize]),
            });
        }
        p += esize;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stretch KDF equals the plain definition (Digest over the 88-byte structure).
    #[test]
    fn stretch_matches_the_definition() {
        fn slow(initial: &[u8; 32], salt: &[u8; 16], rounds: u64) -> [u8; 32] {
            let mut last = [0u8; 32];
            for count in 0..rounds {
                let mut h = Sha256::new();
                h.update(last);
                h.update(initial);
                h.update(salt);
                h.update(count.to_le_bytes());
                last = h.finalize().into();
            }
            last
        }
        let initial = [7u8; 32];
        let salt = [9u8; 16];
        let fast = stretch(&initial, &salt);
        assert_eq!(fast.expose_secret(), &slow(&initial, &salt, STRETCH_ROUNDS));
    }

    #[test]
    fn recovery_password_form() {
        // From cryptsetup's images.conf (bitlk-aes-xts-128).
        let rp = b"235818-357951-253979-013365-241120-245575-342914-591910";
        let key = recovery_password_key(rp).unwrap();
        assert_eq!(
            key.expose_secret()[..4],
            [
                (235818u32 / 11) as u8,
                ((235818u32 / 11) >> 8) as u8,
                (357951u32 / 11) as u8,
                ((357951u32 / 11) >> 8) as u8
            ]
        );
        let spaced = b"235818 357951 253979 013365 241120 245575 342914 591910\n";
        assert_eq!(
            recovery_password_key(spaced).unwrap().expose_secret(),
            key.expose_secret()
        );
        // Not divisible by 11; too large; wrong length; letters.
        assert!(
            recovery_password_key(b"235819-357951-253979-013365-241120-245575-342914-591910")
                .is_err()
        );
        assert!(
            recovery_password_key(b"720896-357951-253979-013365-241120-245575-342914-591910")
                .is_err()
        );
        assert!(recovery_password_key(b"235818-357951").is_err());
        assert!(
            recovery_password_key(b"a35818-357951-253979-013365-241120-245575-342914-591910")
                .is_err()
        );
    }

    #[test]
    fn password_initial_is_double_sha256_of_utf16le() {
        let want: [u8; 32] = Sha256::digest(Sha256::digest([b'a', 0, 0xa3, 0])).into();
        assert_eq!(password_initial("a£".as_bytes()).unwrap(), want);
        assert!(password_initial(&[0xff]).is_err());
    }

    /// The container rule and tag check: wrap with the same crate, unwrap, and a flipped tag
    /// bit fails (Windows-made blobs: `kdf_ccm_and_elephant_against_a_windows_volume`).
    #[test]
    fn ccm_unwrap_checks_tag_and_container() {
        let key = [3u8; 32];
        let nonce = [5u8; 12];
        let mut plain = vec![0u8; 12 + 32];
        plain[0] = 44;
        plain[12..].copy_from_slice(&[0x42; 32]);
        let c = Ccm::<Aes256, U16, U12>::new_from_slice(&key).unwrap();
        let tag = c
            .encrypt_inout_detached(&nonce.into(), b"", plain.as_mut_slice().into())
            .unwrap();
        let mut blob = CcmBlob {
            nonce,
            tag: tag.into(),
            data: plain,
        };
        assert_eq!(unwrap(&key, &blob).unwrap().expose_secret(), &[0x42; 32]);
        blob.tag[0] ^= 1;
        assert!(unwrap(&key, &blob).is_none());
    }

    /// A `.BEK` laid out as the fixture's 156-byte file is (header, external-key entry, key
    /// property), raw and as base64 text; a password is not taken for one. The fixture's own
    /// `.BEK` opens its volume in tests/it/bitlocker.rs.
    #[test]
    fn bek_file_is_parsed_and_base64_too() {
        let mut bek = vec![0u8; 156];
        bek[0..4].copy_from_slice(&156u32.to_le_bytes());
        bek[4..8].copy_from_slice(&1u32.to_le_bytes());
        bek[8..12].copy_from_slice(&48u32.to_le_bytes());
        bek[16..32].copy_from_slice(&[0x11; 16]);
        bek[48..50].copy_from_slice(&108u16.to_le_bytes());
        bek[50..52].copy_from_slice(&6u16.to_le_bytes());
        bek[52..54].copy_from_slice(&9u16.to_le_bytes());
        let p = 48 + 32;
        bek[p..p + 2].copy_from_slice(&44u16.to_le_bytes());
        bek[p + 4..p + 6].copy_from_slice(&1u16.to_le_bytes());
        bek[p + 12..p + 44].copy_from_slice(&[0x77; 32]);
        let k = parse_bek(&bek).unwrap();
        assert_eq!(k.id, [0x11; 16]);
        assert_eq!(k.key.expose_secret(), &[0x77; 32]);
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(&bek);
        assert_eq!(parse_bek(text.as_bytes()).unwrap().id, [0x11; 16]);
        assert!(parse_bek(b"anaconda").is_none());
    }
}
