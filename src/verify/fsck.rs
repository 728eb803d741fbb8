//! Filesystem checks of a plaintext served read-only for the length of the check.
use crate::daemon::{self, ServeSpec};
use crate::error::{Error, Result};
use crate::geometry::Segment;
use crate::secret::VolumeKey;
use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What `e2fsck -fn` said, by its exit code (e2fsck(8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsckVerdict {
    /// No errors.
    Clean,
    /// Errors found (and, with -n, left uncorrected).
    Errors,
    /// e2fsck could not check (usage or operational error, no filesystem).
    Failed,
}

impl FsckVerdict {
    /// The verdict of e2fsck's exit code (`None`: killed by a signal).
    pub fn from_exit(code: Option<i32>) -> FsckVerdict {
        match code {
            Some(0) => FsckVerdict::Clean,
            Some(c) if c & 8 != 0 || c & 16 != 0 || c & 32 != 0 => FsckVerdict::Failed,
            Some(_) => FsckVerdict::Errors,
            None => FsckVerdict::Failed,
        }
    }

    /// "clean", "errors" or "failed" (the JSON's `data.fsck.verdict`).
    pub fn name(self) -> &'static str {
        match self {
            FsckVerdict::Clean => "clean",
            FsckVerdict::Errors => "errors",
            FsckVerdict::Failed => "failed",
        }
    }
}

impl Serialize for FsckVerdict {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The read-only checker of one filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsTool {
    /// `e2fsck -fn` (ext2, ext3, ext4).
    E2fsck,
    /// `xfs_repair -n -f` (XFS).
    XfsRepair,
    /// `fsck.vfat -n` (FAT).
    FsckVfat,
    /// `ntfsfix --no-action` (NTFS, ntfs-3g): what can be checked of a BitLocker volume's
    /// Windows filesystem without Windows' chkdsk.
    Ntfsfix,
}

impl FsTool {
    /// The checker for a filesystem named as `signature::Content::kind` says it ("ext4",
    /// "xfs", "vfat"); None for one vaultdisk has no read-only checker for.
    pub fn for_kind(kind: &str) -> Option<FsTool> {
        match kind {
            "ext2" | "ext3" | "ext4" => Some(FsTool::E2fsck),
            "xfs" => Some(FsTool::XfsRepair),
            "vfat" => Some(FsTool::FsckVfat),
            "ntfs" => Some(FsTool::Ntfsfix),
            _ => None,
        }
    }

    /// The program's name, as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            FsTool::E2fsck => "e2fsck",
            FsTool::XfsRepair => "xfs_repair",
            FsTool::FsckVfat => "fsck.vfat",
            FsTool::Ntfsfix => "ntfsfix",
        }
    }

    /// The arguments before the file: each only reads (-n).
    fn args(self) -> &'static [&'static str] {
        match self {
            FsTool::E2fsck => &["-f", "-n"],
            FsTool::XfsRepair => &["-n", "-f"],
            FsTool::FsckVfat => &["-n"],
            FsTool::Ntfsfix => &["--no-action"],
        }
    }

    /// The verdict of the program's exit code (`None`: killed by a signal).
    pub fn verdict(self, code: Option<i32>) -> FsckVerdict {
        match self {
            FsTool::E2fsck => FsckVerdict::from_exit(code),
            // xfs_repair(8): -n exits 1 when corruption was found; fsck.fat(8): 1 errors found.
            // ntfsfix(8) --no-action: 0 when it would change nothing, else non-zero.
            FsTool::Ntfsfix => match code {
                Some(0) => FsckVerdict::Clean,
                Some(_) => FsckVerdict::Errors,
                None => FsckVerdict::Failed,
            },
            FsTool::XfsRepair | FsTool::FsckVfat => match code {
                Some(0) => FsckVerdict::Clean,
                Some(1) => FsckVerdict::Errors,
                _ => FsckVerdict::Failed,
            },
        }
    }

    fn program(self) -> PathBuf {
        let name = self.name();
        ["/usr/sbin", "/sbin", "/usr/bin"]
            .into_iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(name))
    }
}

/// Runs `e2fsck -fn` on the plaintext of `backing`, served read-only by a daemon in the
/// runtime directory for the length of the check, and closes it again.
pub fn fsck(
    backing: &Path,
    segment: Segment,
    key: VolumeKey,
    unlocked_by: crate::unlock::UnlockedBy,
) -> Result<FsckCheck> {
    fsck_with(
        FsTool::E2fsck,
        backing,
        segment,
        key,
        &unlocked_by.to_string(),
    )
}

/// Runs `tool` on the plaintext of `segment` in `backing` (a disk image: the segment's
/// offset counts from the start of the file), served read-only by a daemon for the length
/// of the check. `unlocked_by` is what `status` shows meanwhile.
pub fn fsck_with(
    tool: FsTool,
    backing: &Path,
    segment: Segment,
    key: VolumeKey,
    unlocked_by: &str,
) -> Result<FsckCheck> {
    run_served(tool, backing, segment, key, unlocked_by, false)
}

/// [`fsck_with`] for a BitLocker volume: `segment` is its window of `backing` (offset,
/// size, sector size) and `fvek` its full-volume key; the daemon re-reads the metadata.
pub fn fsck_bitlocker(
    tool: FsTool,
    backing: &Path,
    segment: Segment,
    fvek: VolumeKey,
    unlocked_by: &str,
) -> Result<FsckCheck> {
    run_served(tool, backing, segment, fvek, unlocked_by, true)
}

fn run_served(
    tool: FsTool,
    backing: &Path,
    segment: Segment,
    key: VolumeKey,
    unlocked_by: &str,
    bitlocker: bool,
) -> Result<FsckCheck> {
    daemon::ensure_backing_free(backing, true)?;
    daemon::ensure_runtime_dir()?;
    let plain = daemon::runtime_dir().join(format!("verify-{}.img", std::process::id()));
    daemon::start(
        ServeSpec {
            backing: backing.to_path_buf(),
            plain: plain.clone(),
            segment,
            read_only: true,
            foreground: false,
            allow_other: false,
            unlocked_by: unlocked_by.to_string(),
            grow_with_file: false,
            allow_discards: false,
            bitlocker,
        },
        key,
    )?;
    let out = Command::new(tool.program())
        .args(tool.args())
        .arg(&plain)
        .stdin(Stdio::null())
        .output();
    let closed = daemon::close(&plain);
    let out = out.map_err(|e| Error::io(format!("cannot run {}", tool.name()), e))?;
    closed?;
    let verdict = tool.verdict(out.status.code());
    // xfs_repair reports on stderr; e2fsck and fsck.vfat on stdout.
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    let summary = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    Ok(FsckCheck { verdict, summary })
}

/// What `e2fsck -fn` said about the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsckCheck {
    /// Its verdict.
    pub verdict: FsckVerdict,
    /// Its last line of output.
    pub summary: String,
}
