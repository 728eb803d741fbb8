//! The raw volume key as a key source: cryptsetup's `--volume-key-file` (the escrow and
//! recovery path). The file holds the key's bytes exactly, nothing else; the key is checked
//! against the header's volume-key digest (docs/format.md §4.3, LUKS1 mkDigest §8) and then
//! used directly, with no keyslot. Never logged; read into zeroizing memory.
use super::{Opened, UnlockedBy};
use crate::crypto::digest;
use crate::device::VolumeHeader;
use crate::error::{Error, ErrorKind, Result};
use crate::luks1::Luks1Header;
use crate::luks2::metadata::Metadata;
use crate::secret::{SecretBytes, VolumeKey};
use std::io::Read;
use std::path::Path;

/// The largest volume key file read (cryptsetup's volume keys are at most 512 bytes; ours 64).
pub const MAX_VOLUME_KEY_BYTES: usize = 512;

/// Reads the raw key bytes of `path` (all of it, at most [`MAX_VOLUME_KEY_BYTES`]).
pub fn read_volume_key_file(path: &Path) -> Result<VolumeKey> {
    let name = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| {
        let what = format!("cannot open volume key file {name}");
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission(what),
            _ => Error::Usage(format!("{what}: {}", crate::error::plain_io(&e))),
        }
    })?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "volume key file {name} is a directory"
        )));
    }
    // One byte more than the cap tells a file that is too large.
    let mut buf = SecretBytes::zeroed(MAX_VOLUME_KEY_BYTES + 1);
    let mut n = 0usize;
    while n < buf.len() {
        match f.read(&mut buf.expose_secret_mut()[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("cannot read volume key file {name}"), e)),
        }
    }
    if n > MAX_VOLUME_KEY_BYTES {
        return Err(Error::Usage(format!(
            "volume key file {name} is larger than {MAX_VOLUME_KEY_BYTES} bytes"
        )));
    }
    Ok(VolumeKey::from_secret(SecretBytes::from_slice(
        &buf.expose_secret()[..n],
    )))
}

/// Refuses (exit 5) a `--volume-key-file` to write that already exists, before anything is
/// unlocked: [`write_volume_key_file`] never overwrites one.
pub fn refuse_existing_file(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::Busy(format!(
            "volume key file {} exists: give a new file name",
            path.display()
        )));
    }
    Ok(())
}

/// Writes the raw bytes of `key` to a new file `path` (mode 0400, never over an existing
/// file: O_EXCL), synced, as `cryptsetup luksDump --dump-volume-key --volume-key-file` does.
/// A file left half-written by a failed write is removed.
pub fn write_volume_key_file(path: &Path, key: &VolumeKey) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.display();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Busy(format!(
                "volume key file {name} exists: give a new file name"
            )),
            _ => Error::io(format!("cannot create volume key file {name}"), e),
        })?;
    if let Err(e) = f.write_all(key.expose_secret()).and_then(|()| f.sync_all()) {
        drop(f);
        let _ = std::fs::remove_file(path);
        return Err(Error::io(format!("cannot write volume key file {name}"), e));
    }
    Ok(())
}

/// The id of the LUKS2 digest that covers the data segment: the one a volume key must match,
/// and the one a keyslot storing it joins.
pub fn data_digest_id(meta: &Metadata) -> Option<u32> {
    let data = *meta.segments.keys().next()?;
    meta.digests
        .iter()
        .find(|(_, d)| d.segments.contains(&data))
        .map(|(id, _)| *id)
}

/// The volume key length of a LUKS2 header: the key size of a keyslot under the data digest,
/// else what the cipher takes (aes-xts: 32 or 64 bytes).
fn luks2_key_len(meta: &Metadata, digest_id: u32) -> Option<usize> {
    let dg = meta.digests.get(&digest_id)?;
    dg.keyslots
        .iter()
        .find_map(|id| match meta.keyslots.get(id) {
            Some(crate::luks2::metadata::Keyslot::Luks2(k)) => Some(k.key_size),
            _ => None,
        })
        .map(|n| n as usize)
}

fn wrong_length(file: &Path, backing: &Path, got: usize, want: &str) -> Error {
    Error::new(
        ErrorKind::NoKey,
        format!(
            "volume key file {} holds {got} bytes; the volume key of {} is {want} bytes",
            file.display(),
            backing.display()
        ),
    )
}

fn wrong_key(file: &Path, backing: &Path) -> Error {
    Error::new(
        ErrorKind::NoKey,
        format!(
            "the key in volume key file {} is not the volume key of {} (digest mismatch)",
            file.display(),
            backing.display()
        ),
    )
}

/// Checks `key` (read from `file`) against the LUKS2 data digest of `meta`: wrong length or
/// wrong key is exit 2. Returns the digest id.
pub fn check_luks2(meta: &Metadata, key: &VolumeKey, file: &Path, backing: &Path) -> Result<u32> {
    let Some(id) = data_digest_id(meta) else {
        return Err(Error::Device(format!(
            "{}: no digest covers the data segment",
            backing.display()
        )));
    };
    let got = key.expose_secret().len();
    match luks2_key_len(meta, id) {
        Some(want) if want != got => {
            return Err(wrong_length(file, backing, got, &want.to_string()));
        }
        None if !matches!(got, 32 | 64) => {
            return Err(wrong_length(file, backing, got, "32 or 64"));
        }
        _ => {}
    }
    let Some(dg) = meta.digests.get(&id) else {
        return Err(wrong_key(file, backing));
    };
    if !digest::verify(
        key.expose_secret(),
        dg.hash,
        dg.iterations,
        &dg.salt,
        &dg.digest,
    ) {
        return Err(wrong_key(file, backing));
    }
    Ok(id)
}

/// Checks `key` (read from `file`) against the LUKS1 mkDigest of `header`.
pub fn check_luks1(
    header: &Luks1Header,
    key: &VolumeKey,
    file: &Path,
    backing: &Path,
) -> Result<()> {
    let got = key.expose_secret().len();
    if got != header.key_bytes as usize {
        return Err(wrong_length(
            file,
            backing,
            got,
            &header.key_bytes.to_string(),
        ));
    }
    if !digest::verify(
        key.expose_secret(),
        header.hash,
        header.mk_digest_iterations,
        &header.mk_digest_salt,
        &header.mk_digest,
    ) {
        return Err(wrong_key(file, backing));
    }
    Ok(())
}

/// Opens `header` with the raw volume key in `file`: read, checked against the digest
/// (wrong length or key: exit 2), returned as [`UnlockedBy::VolumeKey`]. No keyslot is tried.
pub fn unlock_with_volume_key(
    header: &VolumeHeader,
    file: &Path,
    backing: &Path,
) -> Result<Opened> {
    let key = read_volume_key_file(file)?;
    match header {
        VolumeHeader::Luks2(h) => {
            check_luks2(&h.metadata, &key, file, backing)?;
        }
        VolumeHeader::Luks1(h) => check_luks1(h, &key, file, backing)?,
    }
    log::info!("{}: opened with a volume key file", backing.display());
    Ok(Opened {
        volume_key: key,
        by: UnlockedBy::VolumeKey,
    })
}

/// [`unlock_with_volume_key`] for a LUKS2 header's metadata alone.
pub fn unlock_luks2_with_volume_key(
    meta: &Metadata,
    file: &Path,
    backing: &Path,
) -> Result<Opened> {
    let key = read_volume_key_file(file)?;
    check_luks2(meta, &key, file, backing)?;
    log::info!("{}: opened with a volume key file", backing.display());
    Ok(Opened {
        volume_key: key,
        by: UnlockedBy::VolumeKey,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_key_files_are_read_exactly_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vk");
        std::fs::write(&p, [7u8; 64]).unwrap();
        assert_eq!(read_volume_key_file(&p).unwrap().expose_secret(), [7u8; 64]);
        std::fs::write(&p, vec![1u8; MAX_VOLUME_KEY_BYTES + 1]).unwrap();
        let e = read_volume_key_file(&p).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("larger than 512 bytes"), "{e}");
        let e = read_volume_key_file(&dir.path().join("missing")).unwrap_err();
        assert_eq!(e.exit_code(), 1);
    }
}
