//! Secret byte buffers: zeroized on drop, mlocked when allowed, never printed.
use zeroize::Zeroize;

/// A fixed-length secret held in locked memory and wiped on drop. No Clone, Display or Serialize.
pub struct SecretBytes {
    bytes: Box<[u8]>,
    locked: bool,
}

impl SecretBytes {
    /// A zero-filled secret of `len` bytes, to be filled in place.
    pub fn zeroed(len: usize) -> Self {
        let bytes = vec![0u8; len].into_boxed_slice();
        let locked = crate::sys::mlock(bytes.as_ptr(), bytes.len());
        SecretBytes { bytes, locked }
    }

    /// Copies `src` into a new secret; the caller wipes its own copy.
    pub fn from_slice(src: &[u8]) -> Self {
        let mut s = Self::zeroed(src.len());
        s.bytes.copy_from_slice(src);
        s
    }

    /// Takes ownership of a vector, wiping it after the copy into locked memory.
    pub fn from_vec(mut v: Vec<u8>) -> Self {
        let s = Self::from_slice(&v);
        v.zeroize();
        s
    }

    /// Fresh bytes from the OS RNG.
    pub fn random(len: usize) -> std::io::Result<Self> {
        let mut s = Self::zeroed(len);
        crate::crypto::random::fill(&mut s.bytes)?;
        Ok(s)
    }

    /// The secret bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.bytes
    }

    /// The secret bytes, to fill in place.
    pub fn expose_secret_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a zero-length secret.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        self.bytes.len() == other.len() && bool::from(self.bytes.ct_eq(other))
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.bytes.zeroize();
        if self.locked {
            crate::sys::munlock(self.bytes.as_ptr(), self.bytes.len());
        }
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted {} bytes>", self.bytes.len())
    }
}

/// The volume (master) key that encrypts the data segment: 32 or 64 bytes for aes-xts.
///
/// Build it with [`VolumeKey::from_secret`] or [`VolumeKey::random`]. The field is still
/// public only because code outside the unlock path (daemon, luks1, volume tests, format)
/// constructs it directly; it becomes private once those use the constructors.
#[derive(Debug)]
pub struct VolumeKey(pub SecretBytes);

impl VolumeKey {
    /// Takes ownership of the key bytes.
    pub fn from_secret(key: SecretBytes) -> Self {
        VolumeKey(key)
    }

    /// A fresh random key of `len` bytes (format).
    pub fn random(len: usize) -> std::io::Result<Self> {
        SecretBytes::random(len).map(VolumeKey)
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

/// A passphrase or key-file content, taken byte for byte.
///
/// Build it with [`Passphrase::from_secret`] or [`Passphrase::from_slice`]; the field is
/// public for the same reason as [`VolumeKey`]'s.
#[derive(Debug)]
pub struct Passphrase(pub SecretBytes);

impl Passphrase {
    /// Takes ownership of the bytes.
    pub fn from_secret(bytes: SecretBytes) -> Self {
        Passphrase(bytes)
    }

    /// Copies `bytes` into locked memory; the caller wipes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Passphrase(SecretBytes::from_slice(bytes))
    }

    /// The passphrase bytes.
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// Constant-time comparison with `other`.
    pub fn ct_eq(&self, other: &Passphrase) -> bool {
        self.0.ct_eq(other.expose_secret())
    }
}

/// Serialises the tests that use the one-block allocator probe (`sys::dealloc_probe`):
/// two of them watching at once would see each other's frees.
#[cfg(test)]
pub(crate) static PROBE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretBytes::from_slice(b"hunter2");
        let shown = format!(
            "{s:?} {:?}",
            Passphrase(SecretBytes::from_slice(b"hunter2"))
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    /// Every secret type wipes its bytes before the allocator gets them back: the test
    /// allocator (sys::dealloc_probe) looks at the block as it is freed.
    #[test]
    fn secrets_are_zeroized_on_drop() {
        use crate::sys::dealloc_probe::{freed_zeroed, watch};
        let _probe = PROBE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let secret = b"hunter2 hunter2 hunter2 hunter2!";
        let s = SecretBytes::from_slice(secret);
        watch(s.expose_secret().as_ptr(), s.len());
        assert_eq!(freed_zeroed(), None);
        drop(s);
        assert_eq!(freed_zeroed(), Some(true), "SecretBytes");

        let k = VolumeKey(SecretBytes::random(64).unwrap());
        assert!(k.expose_secret().iter().any(|&b| b != 0));
        watch(k.expose_secret().as_ptr(), 64);
        drop(k);
        assert_eq!(freed_zeroed(), Some(true), "VolumeKey");

        let p = Passphrase(SecretBytes::from_vec(secret.to_vec()));
        watch(p.expose_secret().as_ptr(), secret.len());
        drop(p);
        assert_eq!(freed_zeroed(), Some(true), "Passphrase");

        // The probe itself sees a block freed without wiping.
        let plain = secret.to_vec();
        watch(plain.as_ptr(), plain.len());
        drop(plain);
        assert_eq!(freed_zeroed(), Some(false), "a plain Vec is not wiped");
    }

    #[test]
    fn constant_time_eq_checks_length_and_content() {
        let s = SecretBytes::from_slice(b"abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
    }
}
