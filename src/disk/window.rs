//! A byte window of a backing file or device: a partition, or a raw `--device-offset`
//! / `--device-size` range. Reads and writes are confined to the window — an access that
//! would reach past its end fails before anything is read or written — and offsets are
//! shifted by the window's start with checked arithmetic.
use crate::luks2::ReadAt;
use crate::luks2::write::WriteAt;
use std::io;
use std::ops::Deref;

/// `len` bytes of `inner` starting at byte `offset`. `inner` is anything that dereferences
/// to a [`ReadAt`] (`&File`, `Arc<File>`, `Vec<u8>` in tests).
#[derive(Debug, Clone)]
pub struct Window<D> {
    inner: D,
    offset: u64,
    len: u64,
}

impl<D> Window<D> {
    /// The window `[offset, offset + len)` of `inner`. Fails if `offset + len` overflows; the
    /// caller ([`super::Disk`]) checks that the window lies inside the disk.
    pub fn new(inner: D, offset: u64, len: u64) -> io::Result<Self> {
        offset.checked_add(len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("window at byte {offset} of {len} bytes overflows"),
            )
        })?;
        Ok(Window { inner, offset, len })
    }

    /// Byte offset of the window in the underlying file or device.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying file or device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The absolute offset of `[offset, offset + count)` inside the window, or an error when
    /// any of it lies past the window's end.
    fn absolute(&self, offset: u64, count: usize, kind: io::ErrorKind) -> io::Result<u64> {
        let end = u64::try_from(count)
            .ok()
            .and_then(|c| offset.checked_add(c));
        match end {
            Some(end) if end <= self.len => Ok(self.offset + offset),
            _ => Err(io::Error::new(
                kind,
                format!(
                    "{count} bytes at byte {offset} reach past the end of the {} byte window",
                    self.len
                ),
            )),
        }
    }
}

impl<D> ReadAt for Window<D>
where
    D: Deref,
    D::Target: ReadAt,
{
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let at = self.absolute(offset, buf.len(), io::ErrorKind::UnexpectedEof)?;
        self.inner.read_exact_at(buf, at)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

impl<D> WriteAt for Window<D>
where
    D: Deref,
    D::Target: WriteAt,
{
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let at = self.absolute(offset, buf.len(), io::ErrorKind::InvalidInput)?;
        self.inner.write_all_at(buf, at)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, std::fs::File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut t, bytes).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(t.path())
            .unwrap();
        (t, f)
    }

    #[test]
    fn reads_are_shifted_and_confined() {
        let bytes: Vec<u8> = (0..=255).collect();
        let w = Window::new(&bytes[..], 16, 32).unwrap();
        assert_eq!(w.len_bytes().unwrap(), 32);
        let mut b = [0u8; 4];
        w.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, [16, 17, 18, 19]);
        w.read_exact_at(&mut b, 28).unwrap();
        assert_eq!(b, [44, 45, 46, 47]);
        // One byte past the end: refused, though the bytes exist in the backing.
        let e = w.read_exact_at(&mut b, 29).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(w.read_exact_at(&mut b, u64::MAX - 1).is_err());
        assert!(w.read_exact_at(&mut [], 32).is_ok());
        assert!(w.read_exact_at(&mut [], 33).is_err());
    }

    #[test]
    fn overflowing_window_is_refused() {
        let bytes = [0u8; 8];
        assert!(Window::new(&bytes[..], u64::MAX, 2).is_err());
        assert!(Window::new(&bytes[..], 1, u64::MAX).is_err());
    }

    #[test]
    fn writes_past_the_end_fail_and_change_nothing() {
        let (_t, f) = file_with(&[0xAA; 64]);
        let f = Arc::new(f);
        let w = Window::new(f.clone(), 8, 16).unwrap();
        w.write_all_at(&[1, 2, 3, 4], 12).unwrap();
        let e = w.write_all_at(&[9; 4], 13).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(w.write_all_at(&[9], 16).is_err());
        assert!(w.write_all_at(&[9], u64::MAX).is_err());
        w.sync_data().unwrap();
        let mut all = [0u8; 64];
        f.read_exact_at(&mut all, 0).unwrap();
        let mut want = [0xAA; 64];
        want[20..24].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(all, want);
        let mut b = [0u8; 4];
        w.read_exact_at(&mut b, 12).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
    }
}
