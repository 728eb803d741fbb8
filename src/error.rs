//! The crate's error: one variant per thing a user can act on, each with a stable exit code.
use std::path::PathBuf;

/// Exit codes, stable for scripts (README "Exit codes"); they follow cryptsetup where meanings match.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 1;
    pub const NO_KEY: i32 = 2;
    pub const NO_MEMORY: i32 = 3;
    pub const DEVICE: i32 = 4;
    pub const BUSY: i32 = 5;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or parameters (exit 1).
    #[error("{0}")]
    Usage(String),
    /// No keyslot opened with the supplied key (exit 2).
    #[error("no keyslot of {path} opened with this {what} (tried {tried})")]
    NoKey {
        path: PathBuf,
        what: &'static str,
        tried: String,
    },
    /// Permission denied on a file we need (exit 2).
    #[error("permission denied: {0}")]
    Permission(String),
    /// A vault could not unwrap a keyslot secret, and nothing else unlocked (exit 2).
    #[error("{0}")]
    Vault(String),
    /// Not enough memory, e.g. for an Argon2 keyslot (exit 3).
    #[error("out of memory: {0}")]
    NoMemory(String),
    /// The backing file is not a usable volume: not LUKS, truncated, damaged, unsupported (exit 4).
    #[error("{0}")]
    Device(String),
    /// The object is busy or already exists (exit 5).
    #[error("{0}")]
    Busy(String),
    /// An I/O error on a named file (exit 4 unless the kind says otherwise).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with a short description of what was being done to which file.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code for this error (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::NoKey { .. } | Error::Permission(_) | Error::Vault(_) => exit::NO_KEY,
            Error::NoMemory(_) => exit::NO_MEMORY,
            Error::Device(_) => exit::DEVICE,
            Error::Busy(_) => exit::BUSY,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => exit::NO_KEY,
                std::io::ErrorKind::OutOfMemory => exit::NO_MEMORY,
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::ResourceBusy => exit::BUSY,
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => exit::USAGE,
                _ => exit::DEVICE,
            },
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// An io::Error without the "(os error N)" suffix, for one-line messages.
pub fn plain_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
