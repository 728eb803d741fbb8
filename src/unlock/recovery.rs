//! Recovery keys: generation and the normalisation of what a user typed (ModHex groups).
use crate::error::{Error, Result};
use crate::secret::{Passphrase, SecretBytes};
use zeroize::Zeroize;

/// ModHex (YubiKey's alphabet): 16 letters that sit on the same keys in QWERTY, QWERTZ and
/// AZERTY and contain no look-alikes (0/O, 1/l/I), so a key read aloud or typed on a foreign
/// keyboard comes back right. systemd-cryptenroll uses the same alphabet and shape.
const MODHEX: &[u8; 16] = b"cbdefghijklnrtuv";
/// Recovery key shape: 8 groups of 8 ModHex characters = 64 x 4 bits = 256 bits of entropy.
const RECOVERY_GROUPS: usize = 8;
const RECOVERY_GROUP_LEN: usize = 8;

/// A new random recovery key in canonical form: `xxxxxxxx-xxxxxxxx-...` (8 groups of 8 ModHex
/// characters, 71 ASCII bytes). These exact bytes are what the keyslot KDF sees, so
/// `cryptsetup open --test-passphrase` accepts the printed string as typed.
pub fn generate_recovery_key() -> Result<Passphrase> {
    let mut raw = SecretBytes::random(RECOVERY_GROUPS * RECOVERY_GROUP_LEN / 2)
        .map_err(|e| Error::io("cannot read the OS random generator", e))?;
    let mut chars = SecretBytes::zeroed(RECOVERY_GROUPS * RECOVERY_GROUP_LEN);
    for (pair, b) in chars
        .expose_secret_mut()
        .chunks_exact_mut(2)
        .zip(raw.expose_secret())
    {
        pair[0] = MODHEX[usize::from(b >> 4)];
        pair[1] = MODHEX[usize::from(b & 0x0f)];
    }
    raw.expose_secret_mut().zeroize();
    normalize_recovery_key(chars.expose_secret())
}

/// The canonical recovery key from what a user typed: spaces, tabs, newlines and dashes
/// dropped, upper case folded, then dashes put back every 8 characters. Exit 1 when it is not
/// 64 ModHex characters.
pub fn normalize_recovery_key(typed: &[u8]) -> Result<Passphrase> {
    let want = RECOVERY_GROUPS * RECOVERY_GROUP_LEN;
    let mut out = SecretBytes::zeroed(RECOVERY_GROUPS * (RECOVERY_GROUP_LEN + 1) - 1);
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
                "not a recovery key: expected {RECOVERY_GROUPS} groups of {RECOVERY_GROUP_LEN} letters from {}",
                String::from_utf8_lossy(MODHEX)
            )));
        }
        if chars > 0 && chars.is_multiple_of(RECOVERY_GROUP_LEN) {
            dst[i] = b'-';
            i += 1;
        }
        dst[i] = c;
        i += 1;
        chars += 1;
    }
    if chars != want {
        return Err(Error::Usage(format!(
            "not a recovery key: {chars} letters, expected {want} ({RECOVERY_GROUPS} groups of {RECOVERY_GROUP_LEN})"
        )));
    }
    Ok(Passphrase::from_secret(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_key_shape_and_normalisation() {
        let k = generate_recovery_key().expect("random");
        let text = std::str::from_utf8(k.expose_secret())
            .expect("ascii")
            .to_string();
        let groups: Vec<&str> = text.split('-').collect();
        assert_eq!(groups.len(), 8, "{text}");
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 8 && g.bytes().all(|c| MODHEX.contains(&c)))
        );
        let messy = format!(" {} \n", text.to_uppercase().replace('-', " "));
        let n = normalize_recovery_key(messy.as_bytes()).expect("normalises");
        assert_eq!(n.expose_secret(), k.expose_secret());
        let joined = text.replace('-', "");
        let n = normalize_recovery_key(joined.as_bytes()).expect("normalises");
        assert_eq!(n.expose_secret(), k.expose_secret());
        assert!(normalize_recovery_key(b"abc").is_err());
        assert!(normalize_recovery_key(format!("{joined}c").as_bytes()).is_err());
        assert!(
            normalize_recovery_key(joined.replace('c', "a").as_bytes()).is_err()
                || !joined.contains('c')
        );
    }
}
