//! The crate's error: one variant per thing a user can act on, each with a stable exit code.
use std::path::PathBuf;

/// Exit codes, stable for scripts (README "Exit codes"); they follow cryptsetup where meanings
/// match. This is the only table of them: every exit of the binary comes from here.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Bad flags or parameters.
    pub const USAGE: i32 = 1;
    /// No key opened the volume, or permission denied.
    pub const NO_KEY: i32 = 2;
    /// Not enough memory (an Argon2 keyslot).
    pub const NO_MEMORY: i32 = 3;
    /// Not a usable volume: not LUKS, truncated, damaged, unsupported; I/O errors.
    pub const DEVICE: i32 = 4;
    /// Busy or already exists.
    pub const BUSY: i32 = 5;
    /// `verify` found damage (the volume opened; its contents are not intact).
    pub const DAMAGE: i32 = 6;
    /// A simulated crash of the fault-injection hook (test builds only).
    pub const CRASH: i32 = 86;
}

/// What kind of failure an [`Error`] is, apart from its message: what a caller branches on,
/// what the daemon's report line carries, and what decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad flags or parameters.
    Usage,
    /// No keyslot opened with the supplied key.
    NoKey,
    /// Permission denied on a file we need.
    Permission,
    /// A vault could not unwrap a keyslot secret.
    Vault,
    /// Not enough memory.
    NoMemory,
    /// Not a usable volume, or an I/O error on it.
    Device,
    /// Busy or already exists.
    Busy,
}

impl ErrorKind {
    /// Every kind, for tables and for parsing the daemon's report line.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Usage,
        ErrorKind::NoKey,
        ErrorKind::Permission,
        ErrorKind::Vault,
        ErrorKind::NoMemory,
        ErrorKind::Device,
        ErrorKind::Busy,
    ];

    /// The process exit code of this kind (README "Exit codes").
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::NoKey | ErrorKind::Permission | ErrorKind::Vault => exit::NO_KEY,
            ErrorKind::NoMemory => exit::NO_MEMORY,
            ErrorKind::Device => exit::DEVICE,
            ErrorKind::Busy => exit::BUSY,
        }
    }

    /// A stable one-word name (the daemon's report line carries it).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::NoKey => "no-key",
            ErrorKind::Permission => "permission",
            ErrorKind::Vault => "vault",
            ErrorKind::NoMemory => "no-memory",
            ErrorKind::Device => "device",
            ErrorKind::Busy => "busy",
        }
    }

    /// The kind named `name` (inverse of [`ErrorKind::name`]).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The crate's one error: a one-line message and a kind that decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or parameters (exit 1).
    #[error("{0}")]
    Usage(String),
    /// No keyslot opened with the supplied key (exit 2).
    #[error("no keyslot of {path} opened with this {what} (tried {tried})")]
    NoKey {
        /// The volume (backing file or detached header).
        path: PathBuf,
        /// What was supplied, e.g. "passphrase".
        what: &'static str,
        /// The keyslot ids tried, comma-separated, or "all".
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
        /// What was being done to which file.
        context: String,
        /// The I/O error.
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

    /// Builds the error of `kind` with `message` (the message is shown as it is, except that
    /// Permission and NoMemory get their "permission denied: " / "out of memory: " prefix).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let m = message.into();
        match kind {
            ErrorKind::Usage => Error::Usage(m),
            // A NoKey from elsewhere (the daemon's report) has only its message left.
            ErrorKind::NoKey | ErrorKind::Vault => Error::Vault(m),
            ErrorKind::Permission => Error::Permission(m),
            ErrorKind::NoMemory => Error::NoMemory(m),
            ErrorKind::Device => Error::Device(m),
            ErrorKind::Busy => Error::Busy(m),
        }
    }

    /// What kind of failure this is (decides the exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Usage(_) => ErrorKind::Usage,
            Error::NoKey { .. } => ErrorKind::NoKey,
            Error::Permission(_) => ErrorKind::Permission,
            Error::Vault(_) => ErrorKind::Vault,
            Error::NoMemory(_) => ErrorKind::NoMemory,
            Error::Device(_) => ErrorKind::Device,
            Error::Busy(_) => ErrorKind::Busy,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied => ErrorKind::Permission,
                std::io::ErrorKind::OutOfMemory => ErrorKind::NoMemory,
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::ResourceBusy => {
                    ErrorKind::Busy
                }
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => ErrorKind::Usage,
                _ => ErrorKind::Device,
            },
        }
    }

    /// The message without the kind's Display prefix ("permission denied: ", "out of
    /// memory: "): what `Error::new(self.kind(), ..)` needs to rebuild this error.
    pub fn message(&self) -> String {
        match self {
            Error::Permission(m) | Error::NoMemory(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The process exit code for this error (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        self.kind().exit_code()
    }
}

/// A result whose error is the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// An io::Error without the "(os error N)" suffix, for one-line messages.
pub fn plain_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_table() {
        let table = [
            (ErrorKind::Usage, 1),
            (ErrorKind::NoKey, 2),
            (ErrorKind::Permission, 2),
            (ErrorKind::Vault, 2),
            (ErrorKind::NoMemory, 3),
            (ErrorKind::Device, 4),
            (ErrorKind::Busy, 5),
        ];
        assert_eq!(table.len(), ErrorKind::ALL.len());
        for (kind, code) in table {
            assert_eq!(kind.exit_code(), code, "{kind:?}");
            assert_eq!(ErrorKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!((exit::OK, exit::DAMAGE, exit::CRASH), (0, 6, 86));
    }

    #[test]
    fn io_errors_take_their_kind_from_the_errno() {
        let io = |k| Error::io("x", std::io::Error::from(k));
        assert_eq!(io(std::io::ErrorKind::PermissionDenied).exit_code(), 2);
        assert_eq!(io(std::io::ErrorKind::AlreadyExists).exit_code(), 5);
        assert_eq!(io(std::io::ErrorKind::NotFound).exit_code(), 1);
        assert_eq!(io(std::io::ErrorKind::UnexpectedEof).exit_code(), 4);
    }

    #[test]
    fn kind_and_message_rebuild_the_same_line() {
        for e in [
            Error::Permission("cannot open /x".into()),
            Error::NoMemory("argon2 needs 1 GiB".into()),
            Error::Busy("in use".into()),
            Error::Usage("bad flag".into()),
        ] {
            let back = Error::new(e.kind(), e.message());
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.exit_code(), e.exit_code());
        }
    }
}
