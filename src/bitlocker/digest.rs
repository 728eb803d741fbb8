//! The SHA-256 of a BitLocker volume's plaintext (`digest`, `verify`).
use super::BitlockerVolume;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

impl BitlockerVolume {
    /// SHA-256 of the whole plaintext, 4 MiB at a time; decryption of the next chunk overlaps
    /// hashing of the last (two threads).
    pub fn sha256(&self, mut progress: impl FnMut(u64)) -> Result<String> {
        const CHUNK: usize = 4 << 20;
        let size = self.size();
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for buf in rx {
                h.update(&buf);
                let _ = back_tx.send(buf);
            }
            crate::hex::encode(&h.finalize())
        });
        let mut offset = 0u64;
        let mut err = None;
        while offset < size {
            let want = (size - offset).min(CHUNK as u64) as usize;
            let mut buf = back_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            buf.resize(want, 0);
            match self.read_at(offset, &mut buf) {
                Ok(n) if n == want => {}
                Ok(n) => {
                    err = Some(Error::Device(format!(
                        "plaintext ends early at byte {}",
                        offset + n as u64
                    )));
                    break;
                }
                Err(e) => {
                    err = Some(Error::Device(format!(
                        "cannot read plaintext at byte {offset}: {e}"
                    )));
                    break;
                }
            }
            if tx.send(buf).is_err() {
                break;
            }
            offset += want as u64;
            progress(offset);
        }
        drop(tx);
        let digest = hasher
            .join()
            .map_err(|_| Error::Device("the digest thread failed".into()))?;
        match err {
            Some(e) => Err(e),
            None => Ok(digest),
        }
    }
}
