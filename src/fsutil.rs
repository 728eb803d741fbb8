//! Small file-system helpers shared by every module that creates files: a temporary name
//! beside a target, a private file written atomically (0600, O_EXCL|O_NOFOLLOW, fsync,
//! rename) and a best-effort fsync of a parent directory.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A hidden temporary name in the directory of `path`, unique to this process:
/// `.<name>.vaultdisk-<pid>.tmp`. `fallback` names it when `path` has no file name.
pub fn temp_beside(path: &Path, fallback: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| fallback.into());
    path.with_file_name(format!(".{name}.vaultdisk-{}.tmp", std::process::id()))
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename or create in `path`'s directory durable; best effort (a directory that
/// cannot be opened or synced has nothing more we could do for it).
pub fn sync_parent(path: &Path) {
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
}

/// Writes `bytes` to `path` as a private file (mode 0600): into a new temporary file beside
/// it (created with O_EXCL and O_NOFOLLOW, so a planted file or symlink is never written
/// through), fsynced, then renamed over `path`. Readers see the old or the new content.
pub fn write_private_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_beside(path, "file");
    let result = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_name_is_hidden_and_beside() {
        let t = temp_beside(Path::new("/a/b/disk.img"), "volume");
        assert_eq!(t.parent(), Some(Path::new("/a/b")));
        let name = t.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".disk.img.vaultdisk-") && name.ends_with(".tmp"),
            "{name}"
        );
        assert_eq!(parent_dir(Path::new("disk.img")), PathBuf::from("."));
    }

    #[test]
    fn private_file_replaces_content_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("entry.json");
        fs::write(&p, b"old").unwrap();
        write_private_atomically(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_temporary_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("entry.json");
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, temp_beside(&p, "file")).unwrap();
        assert!(write_private_atomically(&p, b"new").is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }
}
