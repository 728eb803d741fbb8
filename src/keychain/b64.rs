//! Base64 as Key Vault and ADE write it, decoded into zeroizing memory: standard (`+/`, `=`
//! padded: a `BEK` secret value) or base64url without padding (a `Wrapped BEK` value, an
//! unwrapkey answer, RFC 7515 §2); both accepted either way, as Key Vault itself is lenient.
use crate::secret::SecretBytes;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroize;

/// Decodes `text` (standard or URL-safe alphabet, padded or not; surrounding whitespace
/// ignored), or None when it is not base64.
pub fn decode(text: &[u8]) -> Option<SecretBytes> {
    let t = text.trim_ascii();
    let url = t.iter().any(|c| matches!(c, b'-' | b'_'));
    let padded = t.ends_with(b"=");
    let engine = match (url, padded) {
        (false, true) => &STANDARD,
        (false, false) => &STANDARD_NO_PAD,
        (true, true) => &URL_SAFE,
        (true, false) => &URL_SAFE_NO_PAD,
    };
    let mut raw = engine.decode(t).ok()?;
    let out = SecretBytes::from_slice(&raw);
    raw.zeroize();
    Some(out)
}

/// `bytes` as unpadded base64url (a request's `value`).
pub fn encode_url(bytes: &[u8]) -> zeroize::Zeroizing<String> {
    zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes))
}

/// `bytes` as padded standard base64 (a transit ciphertext's body).
pub fn encode_std(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_alphabets_with_and_without_padding() {
        let raw: Vec<u8> = (0..=255u8).collect();
        for e in [
            STANDARD.encode(&raw),
            STANDARD_NO_PAD.encode(&raw),
            URL_SAFE.encode(&raw),
            URL_SAFE_NO_PAD.encode(&raw),
        ] {
            assert_eq!(
                decode(e.as_bytes()).unwrap().expose_secret(),
                &raw[..],
                "{e}"
            );
        }
        assert_eq!(decode(b"  QUJD\n").unwrap().expose_secret(), b"ABC");
        assert!(decode(b"not base64!").is_none());
        assert!(decode(b"QU+_").is_none(), "mixed alphabets");
    }
}
