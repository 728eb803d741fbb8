//! Recovery keys: 256 random bits written as 8 groups of 8 ModHex letters, the exact bytes a
//! recovery keyslot's KDF sees (so `cryptsetup open --test-passphrase` accepts the printed
//! string as typed), and the normalisation of what a user types back.
use crate::error::{Error, Result};
use crate::secret::{Passphrase, SecretBytes};
use zeroize::Zeroize;

/// ModHex (YubiKey's alphabet): 16 letters that sit on the same keys in QWERTY, QWERTZ and
/// AZERTY and contain no look-alikes (0/O, 1/l/I), so a key read aloud or typed on a foreign
/// keyboard comes back right. systemd-cryptenroll uses the same alphabet and shape.
pub const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";
/// Groups of a recovery key.
pub const GROUPS: usize = 8;
/// Letters per group (8 x 8 letters x 4 bits = 256 bits of entropy).
pub const GROUP_LEN: usize = 8;

/// A new random recovery key in canonical form: `xxxxxxxx-xxxxxxxx-...` (8 groups of 8 ModHex
/// characters, 71 ASCII bytes).
pub fn generate() -> Result<Passphrase> {
    let mut raw = SecretBytes::random(GROUPS * GROUP_LEN / 2)
        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let mut chars = SecretBytes::zeroed(GROUPS * GROUP_LEN);
    for (pair, b) in chars
        .expose_secret_mut()
        .chunks_exact_mut(2)
        .zip(raw.expose_secret())
    {
        pair[0] = MODHEX[usize::from(b >> 4)];
        pair[1] = MODHEX[usize::from(b & 0x0f)];
    }
    raw.expose_secret_mut().zeroize();
    normalize(chars.expose_secret())
}

/// The canonical recovery key from what a user typed: spaces, tabs, newlines and dashes
/// dropped, upper case folded, then dashes put back every 8 characters. Exit 1 when it is not
/// 64 ModHex characters.
pub fn normalize(typed: &[u8]) -> Result<Passphrase> {
    let want = GROUPS * GROUP_LEN;
    let mut out = SecretBytes::zeroed(GROUPS * (GROUP_LEN + 1) - 1);
    let dst = out.expose_secret_mut();
    let mut chars = 0usize;
    let mut i = 0usize;
    for &c in typed {
        if c.is_ascii_whitespace() || c == b'-' {
            continue;
        }
        let c = c.to_ascii_lowercase();
        if !MODHEX.contains(&c) || chars == want {
            return Err(Error::Usage(format!(
                "not a recovery key: expected {GROUPS} groups of {GROUP_LEN} letters from {}",
                String::from_utf8_lossy(MODHEX)
            )));
        }
        if chars > 0 && chars.is_multiple_of(GROUP_LEN) {
            dst[i] = b'-';
            i += 1;
        }
        dst[i] = c;
        i += 1;
        chars += 1;
    }
    if chars != want {
        return Err(Error::Usage(format!(
            "not a recovery key: {chars} letters, expected {want} ({GROUPS} groups of {GROUP_LEN})"
        )));
    }
    Ok(Passphrase(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_canonical_and_distinct() {
        let a = generate().expect("random");
        let b = generate().expect("random");
        let text = a.expose_secret();
        assert_eq!(text.len(), 71);
        for (i, &c) in text.iter().enumerate() {
            if i % 9 == 8 {
                assert_eq!(c, b'-', "{i}");
            } else {
                assert!(MODHEX.contains(&c), "{i}");
            }
        }
        assert_ne!(a.expose_secret(), b.expose_secret());
        // Canonical form is a fixed point.
        assert_eq!(normalize(text).expect("valid").expose_secret(), text);
    }

    #[test]
    fn typing_variants_normalise_and_bad_input_is_usage() {
        let canon = "cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv-cbdefghi-jklnrtuv";
        let typed = " CBDEFGHI jklnrtuv\tcbdefghijklnrtuv-cbde fghi-jklnrtuv cbdefghi-jklnrtuv\n";
        assert_eq!(
            normalize(typed.as_bytes()).expect("valid").expose_secret(),
            canon.as_bytes()
        );
        for bad in [&canon[..70], "a", "", &format!("{canon}c")] {
            let e = normalize(bad.as_bytes()).expect_err("refused");
            assert_eq!(e.exit_code(), 1, "{bad}");
        }
        let zero = canon.replace('c', "0");
        assert!(normalize(zero.as_bytes()).is_err());
    }
}
