//! The FAT "BEK VOLUME" Azure attaches to an ADE VM (ade-facts §1.4), read from an image
//! without mounting: a FAT filesystem image, or a disk image (raw or fixed VHD) whose partition
//! labelled `BEK VOLUME` holds one. Its root's `LinuxPassPhraseFileName` and
//! `LinuxPassPhraseFileName_<controller>_<lun>` files are the LUKS passphrases (verbatim);
//! Windows `*.BEK` startup keys are passed on as candidates too.
//!
//! Read-only by construction: the FAT driver (fatfs) gets a reader whose writes fail, over a
//! window of the partition only, with a budget on the bytes it may read (a hostile image with a
//! cluster-chain loop ends with an error, not a hang).
//!
//! Exit codes: an image that is no FAT BEK VOLUME is exit 4 (unreadable as one); a readable
//! BEK VOLUME without passphrase or .BEK files is exit 2 (it holds no key).
use super::CandidateKey;
use crate::disk::Disk;
use crate::error::{Error, ErrorKind, Result};
use crate::luks2::ReadAt;
use crate::secret::SecretBytes;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The FAT label ADE gives the key disk.
pub const LABEL: &str = "BEK VOLUME";
/// Largest key file read (an ADE BEK is 172 bytes, a Windows .BEK under 1 KiB).
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// Most root directory entries looked at.
const MAX_ENTRIES: usize = 4096;
/// Bytes the FAT driver may read from one image (a BEK VOLUME is 48 MiB; only the root
/// directory, the FAT and a few small files are read).
const READ_BUDGET: u64 = 64 * 1024 * 1024;

/// A read-only, seekable view of a window for fatfs, with a read budget.
struct FatIo<R> {
    win: R,
    pos: u64,
    budget: u64,
}

impl<R: ReadAt> Read for FatIo<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.win.len_bytes()?.saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        if n as u64 > self.budget {
            return Err(io::Error::other(
                "the FAT driver read more than 64 MiB (a cluster chain loop?)",
            ));
        }
        self.win.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        self.budget -= n as u64;
        Ok(n)
    }
}

impl<R: ReadAt> Seek for FatIo<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.win.len_bytes()?.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let p = base.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        self.pos = p;
        Ok(p)
    }
}

impl<R> Write for FatIo<R> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the BEK VOLUME is read-only here",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What kind of key file a root entry is, in the order candidates are given.
fn key_file_rank(name: &str) -> Option<(u8, String)> {
    if name == "LinuxPassPhraseFileName" {
        return Some((0, String::new()));
    }
    if let Some(rest) = name.strip_prefix("LinuxPassPhraseFileName_")
        && let Some((c, l)) = rest.split_once('_')
        && !c.is_empty()
        && !l.is_empty()
        && c.bytes().chain(l.bytes()).all(|b| b.is_ascii_digit())
    {
        return Some((1, format!("{c:0>8}_{l:0>8}")));
    }
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".bek") && name.len() > 4).then_some((2, lower))
}

/// The candidates of one FAT filesystem in `win`; Err(why) when it is not a readable FAT.
/// `Ok((label, candidates, other_files))`.
type FatKeys = (String, Vec<(String, SecretBytes)>, Vec<String>);

fn read_fat<R: ReadAt>(win: R) -> std::result::Result<FatKeys, String> {
    let io = FatIo {
        win,
        pos: 0,
        budget: READ_BUDGET,
    };
    let fs = fatfs::FileSystem::new(io, fatfs::FsOptions::new()).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            "too small for a FAT boot sector".to_string()
        } else {
            e.to_string()
        }
    })?;
    let mut label = fs.volume_label().trim().to_string();
    if (label.is_empty() || label == "NO NAME")
        && let Ok(Some(l)) = fs.read_volume_label_from_root_dir()
    {
        label = l.trim().to_string();
    }
    let mut keys: Vec<((u8, String), String, SecretBytes)> = Vec::new();
    let mut others = Vec::new();
    for (i, entry) in fs.root_dir().iter().enumerate() {
        if i >= MAX_ENTRIES {
            return Err(format!("more than {MAX_ENTRIES} root directory entries"));
        }
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(rank) = key_file_rank(&name) else {
            if others.len() < 8 {
                others.push(name);
            }
            continue;
        };
        if entry.len() > MAX_KEY_BYTES {
            return Err(format!("{name} is larger than 64 KiB: not a key file"));
        }
        let mut buf = SecretBytes::zeroed(usize::try_from(entry.len()).unwrap_or(0));
        entry
            .to_file()
            .read_exact(buf.expose_secret_mut())
            .map_err(|e| format!("reading {name}: {e}"))?;
        keys.push((rank, name, buf));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((
        label,
        keys.into_iter().map(|(_, n, b)| (n, b)).collect(),
        others,
    ))
}

/// The FAT volume label and key files of a FAT filesystem image held in memory, for the fuzz
/// target: Err(why) when it is not a readable FAT.
pub fn keys_in_fat_bytes(image: &[u8]) -> std::result::Result<(String, Vec<String>), String> {
    let win = crate::disk::Window::new(image, 0, image.len() as u64).map_err(|e| e.to_string())?;
    read_fat(win).map(|(label, keys, _)| (label, keys.into_iter().map(|(n, _)| n).collect()))
}

/// The candidate keys of the BEK VOLUME image at `path`, labelled
/// `bek-volume <path>:<file>` (files with the same content are one candidate:
/// `bek-volume <path>:LinuxPassPhraseFileName,LinuxPassPhraseFileName_0_1`).
pub fn read(path: &Path) -> Result<Vec<CandidateKey>> {
    let name = super::shown(path);
    let disk = Disk::open(path)?;
    let (where_, label, keys, others) = match disk.table() {
        None => {
            let win = disk.whole().map_err(|e| e.for_path(&name))?;
            let (label, keys, others) = read_fat(win).map_err(|why| {
                Error::Device(format!("{name}: not a FAT BEK VOLUME image ({why})"))
            })?;
            (String::new(), label, keys, others)
        }
        Some(table) => {
            let mut found = None;
            let mut seen = Vec::new();
            for p in table.partitions.iter().filter(|p| p.is_data()) {
                let win = disk.partition(p.number).map_err(|e| e.for_path(&name))?;
                if let Ok((label, keys, others)) = read_fat(win) {
                    if label.eq_ignore_ascii_case(LABEL) {
                        found = Some((format!(" partition {}", p.number), label, keys, others));
                        break;
                    }
                    seen.push(format!("partition {} is FAT labelled {label:?}", p.number));
                }
            }
            found.ok_or_else(|| {
                Error::Device(format!(
                    "{name}: no FAT partition labelled \"{LABEL}\"{}",
                    if seen.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", seen.join(", "))
                    }
                ))
            })?
        }
    };
    if keys.is_empty() {
        return Err(Error::new(
            ErrorKind::NoKey,
            format!(
                "{name}{where_}: the {} holds no LinuxPassPhraseFileName or .BEK file (root has {})",
                if label.is_empty() {
                    "FAT volume".to_string()
                } else {
                    format!("FAT volume {label:?}")
                },
                if others.is_empty() {
                    "no files".to_string()
                } else {
                    others.join(", ")
                }
            ),
        ));
    }
    let mut out: Vec<(Vec<String>, SecretBytes)> = Vec::new();
    for (file, bytes) in keys {
        match out.iter_mut().find(|(_, b)| b.ct_eq(bytes.expose_secret())) {
            Some((names, _)) => names.push(file),
            None => out.push((vec![file], bytes)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(names, bytes)| CandidateKey {
            label: format!("bek-volume {name}:{}", names.join(",")),
            bytes,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_names() {
        assert_eq!(key_file_rank("LinuxPassPhraseFileName").unwrap().0, 0);
        assert_eq!(key_file_rank("LinuxPassPhraseFileName_1_0").unwrap().0, 1);
        assert!(key_file_rank("LinuxPassPhraseFileName_1_").is_none());
        assert!(key_file_rank("LinuxPassPhraseFileName_a_1").is_none());
        assert!(key_file_rank("CRITICAL_DATA_WARNING_README.txt").is_none());
        assert_eq!(key_file_rank("4381F759-AB12.BEK").unwrap().0, 2);
        assert!(key_file_rank(".BEK").is_none());
        // Data-disk files sort by controller then LUN, numerically.
        assert!(
            key_file_rank("LinuxPassPhraseFileName_0_2")
                < key_file_rank("LinuxPassPhraseFileName_0_10")
        );
    }

    #[test]
    fn not_fat_is_exit_4() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zeros.img");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let e = read(&p).unwrap_err();
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(e.to_string().contains("not a FAT BEK VOLUME image"), "{e}");
    }
}
