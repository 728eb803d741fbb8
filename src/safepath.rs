//! Path safety for the files and directories vaultdisk mounts over or creates as root: PLAIN,
//! `mount`'s mount point and the runtime directory (docs/daemon-protocol.md "PLAIN safety").
//!
//! The rules, as systemd and cryptsetup users expect them: the last component is never
//! followed when it is a symlink (it is refused); the directory holding it must be one that
//! only the caller or root can change (not writable by others unless sticky, owned by the
//! caller or root), because whoever can change that directory could swap the checked file for
//! a link between our check and the kernel's mount(2); in a sticky directory a file another
//! user owns is refused for the same reason. Links in the directory's own path are followed,
//! as every tool does.
use crate::error::{Error, Result};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A path split for a no-follow check: its canonical directory and the canonical directory
/// joined with the final name (not resolved itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical directory holding the last component.
    pub dir: PathBuf,
    /// `dir` joined with the last component, which is not followed.
    pub path: PathBuf,
}

/// Resolves `path`'s directory (following links there) and joins its final name without
/// following it. A path without a final name ("/", ".", "..") is canonicalized as a whole.
pub fn resolve_parent(path: &Path) -> io::Result<Resolved> {
    let name = match path.file_name() {
        Some(n) => n,
        None => {
            let canon = path.canonicalize()?;
            let dir = canon.parent().unwrap_or(&canon).to_path_buf();
            return Ok(Resolved { dir, path: canon });
        }
    };
    let dir = crate::fsutil::parent_dir(path).canonicalize()?;
    let path = dir.join(name);
    Ok(Resolved { dir, path })
}

/// Whether a directory's mode lets users other than its owner create or replace entries in
/// it: writable by others without the sticky bit.
pub fn others_may_replace(mode: u32) -> bool {
    mode & 0o002 != 0 && mode & 0o1000 == 0
}

/// Whether a directory is shared: writable by others, but sticky (like /tmp).
pub fn is_shared_sticky(mode: u32) -> bool {
    mode & 0o002 != 0 && mode & 0o1000 != 0
}

/// Refuses (Error::Permission, exit 2) when `dir`, the directory of `what`, could be changed
/// by a user other than the caller or root; returns its metadata otherwise.
pub fn check_trusted_dir(dir: &Path, what: &Path) -> Result<Metadata> {
    let shown = what.display();
    let meta = fs::metadata(dir)
        .map_err(|e| Error::io(format!("cannot stat the directory of {shown}"), e))?;
    let euid = crate::sys::geteuid();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(Error::Permission(format!(
            "{shown}: its directory {} is owned by uid {}, not by this user or root: \
             refusing to use a path another user controls",
            dir.display(),
            meta.uid()
        )));
    }
    if others_may_replace(meta.permissions().mode()) {
        return Err(Error::Permission(format!(
            "{shown}: its directory {} is writable by other users and not sticky \
             (mode {:04o}): refusing to use a path another user can replace",
            dir.display(),
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(meta)
}

/// Refuses an existing entry that another user (not the caller, not root) owns inside a
/// shared sticky directory `dir_meta`: its owner could swap it for a link at any time.
pub fn check_owner_in_shared_dir(entry: &Metadata, dir_meta: &Metadata, what: &Path) -> Result<()> {
    let euid = crate::sys::geteuid();
    if is_shared_sticky(dir_meta.permissions().mode()) && entry.uid() != euid && entry.uid() != 0 {
        return Err(Error::Permission(format!(
            "{}: owned by uid {} in a directory other users may write: refusing to use \
             a file another user can replace",
            what.display(),
            entry.uid()
        )));
    }
    Ok(())
}

/// The one-line refusal of a symlink where vaultdisk wants the real thing (exit 1).
pub fn symlink_error(what: &str, shown: &Path) -> Error {
    Error::Usage(format!(
        "{what} {} is a symbolic link: vaultdisk does not follow links there; name the {} itself",
        shown.display(),
        if what == "mount point" {
            "directory"
        } else {
            "file"
        }
    ))
}

/// The check `open` makes before asking for a key: PLAIN must be a regular file (not a
/// symlink) or not exist yet, in an existing directory. The daemon checks again, thoroughly,
/// when it creates and opens PLAIN (`daemon::serve`).
pub fn check_plain_target(plain: &Path) -> Result<()> {
    match std::fs::symlink_metadata(plain) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_error("PLAIN", plain)),
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(Error::Usage(format!(
            "{} exists and is not a regular file",
            plain.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = match plain.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if parent.is_dir() {
                Ok(())
            } else {
                Err(Error::Usage(format!(
                    "directory {} does not exist",
                    parent.display()
                )))
            }
        }
        Err(e) => Err(Error::io(format!("cannot stat {}", plain.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_modes() {
        assert!(others_may_replace(0o777));
        assert!(!others_may_replace(0o1777));
        assert!(!others_may_replace(0o755));
        assert!(is_shared_sticky(0o1777));
        assert!(!is_shared_sticky(0o1755));
    }

    #[test]
    fn parent_is_resolved_but_not_the_last_component() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", real.join("link")).unwrap();
        let r = resolve_parent(&real.join("link")).unwrap();
        assert_eq!(r.path, real.join("link"));
        assert_eq!(r.dir, real);
        let r = resolve_parent(Path::new("/")).unwrap();
        assert_eq!(r.path, Path::new("/"));
    }

    #[test]
    fn world_writable_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plain");
        check_trusted_dir(dir.path(), &p).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_trusted_dir(dir.path(), &p).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        check_trusted_dir(dir.path(), &p).unwrap();
    }
}
