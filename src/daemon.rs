//! Mount lifecycle: background daemon, readiness pipe, signals, unmount, registry.
use crate::error::Result;
use crate::geometry::Segment;
use crate::secret::VolumeKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything the daemon needs besides the key; no secrets in here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeSpec {
    pub backing: PathBuf,
    pub plain: PathBuf,
    pub segment: Segment,
    pub read_only: bool,
    pub foreground: bool,
    pub allow_other: bool,
    /// What unlocked the volume, e.g. "keyslot 0", for status output.
    pub unlocked_by: String,
}

/// Refuses early (Error::Busy) if `backing` is already open read-write by another daemon.
pub fn ensure_backing_free(backing: &Path, read_only: bool) -> Result<()> {
    todo!("{backing:?}{read_only}")
}

/// Serves `spec` until unmounted. Returns only once the mount works (background) or
/// the filesystem is unmounted (foreground); every failure comes back as an Error.
pub fn start(spec: ServeSpec, key: VolumeKey) -> Result<()> {
    todo!("{spec:?}{key:?}")
}

/// Entry point of the hidden `__daemon` subcommand: spec and key arrive on stdin.
pub fn child_main() -> i32 {
    todo!()
}

/// Unmounts `plain`, waits for its daemon to flush and exit. Busy (exit 5) while in use.
pub fn close(plain: &Path) -> Result<()> {
    todo!("{plain:?}")
}
