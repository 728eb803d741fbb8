//! Shared test plumbing: temp dirs, running the binary, SKIP rules, guards that always clean up.
#![allow(dead_code)]
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const MIB: u64 = 1 << 20;
/// The passphrase every fixture uses (in `Vol::pass`, written without a newline).
pub const PASS: &[u8] = b"testpass";
/// Cheap KDF flags so tests spend no time in Argon2/PBKDF2 benchmarks.
pub const CHEAP_PBKDF2: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
pub const CHEAP_ARGON2ID: [&str; 8] = [
    "--pbkdf",
    "argon2id",
    "--pbkdf-force-iterations",
    "4",
    "--pbkdf-memory",
    "32",
    "--pbkdf-parallel",
    "1",
];

/// True when the requirement holds. Otherwise prints `SKIP <test>: <reason>` and returns
/// false — or panics when VAULTDISK_REQUIRE_ALL=1 (CI), so nothing is silently green.
pub fn require(test: &str, ok: bool, reason: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {reason} (VAULTDISK_REQUIRE_ALL=1)");
    }
    println!("SKIP {test}: {reason}");
    false
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).is_file())
}

pub fn is_root() -> bool {
    vaultdisk::sys::geteuid() == 0
}

/// Tools (and root for loop devices) a test needs.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|t| require(test, on_path(t), &format!("{t} is not installed")))
}

pub fn require_fuse(test: &str) -> bool {
    require(
        test,
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing",
    ) && require(
        test,
        is_root() || on_path("fusermount3"),
        "fusermount3 is missing",
    )
}

pub fn require_root(test: &str) -> bool {
    require(test, is_root(), "needs root (loop devices, mount)")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vaultdisk")
}

/// The result of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with the whole output unless the exit code is `code`.
    pub fn expect(self, code: i32, what: &str) -> Run {
        assert_eq!(
            self.code, code,
            "{what}: exit {} (wanted {code})\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self, what: &str) -> Run {
        self.expect(0, what)
    }
}

/// Runs vaultdisk with `args`; `stdin` is piped in (None = /dev/null).
pub fn vaultdisk(args: &[&str], stdin: Option<&[u8]>) -> Run {
    run_cmd(Command::new(bin()).args(args), stdin)
}

pub fn run_cmd(cmd: &mut Command, stdin: Option<&[u8]>) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        // The child may exit before reading everything (e.g. on a usage error).
        let _ = pipe.write_all(input);
    }
    Run::from(child.wait_with_output().expect("wait"))
}

/// Runs a system tool; panics if it cannot start.
pub fn tool(program: &str, args: &[&str]) -> Run {
    run_cmd(Command::new(program).args(args), None)
}

pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read for sha256");
    hex(&Sha256::digest(&bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's content hash and mtime, to prove a command left it alone.
pub fn fingerprint(path: &Path) -> (String, i64, i64) {
    let m = std::fs::metadata(path).expect("stat");
    (sha256_file(path), m.mtime(), m.mtime_nsec())
}

/// A temp dir holding a passphrase file and (after `format`) a volume.
pub struct Vol {
    pub dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub plain: PathBuf,
    pub pass: PathBuf,
}

impl Vol {
    pub fn new() -> Vol {
        let dir = tempfile::Builder::new()
            .prefix("vaultdisk-it")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let pass = dir.path().join("pass");
        std::fs::write(&pass, PASS).expect("pass file");
        Vol {
            backing: dir.path().join("disk.img"),
            plain: dir.path().join("plain.img"),
            pass,
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 path")
    }

    /// Formats `backing` with the cheap pbkdf2 keyslot plus `extra` flags.
    pub fn format(&self, size: &str, extra: &[&str]) {
        let mut args = vec![
            "format",
            Self::s(&self.backing),
            "--size",
            size,
            "--key-file",
            Self::s(&self.pass),
        ];
        if !extra.contains(&"--pbkdf") {
            args.extend(CHEAP_PBKDF2);
        }
        args.extend(extra);
        vaultdisk(&args, None).ok("format");
    }

    /// Opens `backing` on `plain` with the passphrase file; the guard closes on drop.
    pub fn open(&self, extra: &[&str]) -> OpenGuard {
        let mut args = vec![
            "open",
            Self::s(&self.backing),
            Self::s(&self.plain),
            "--key-file",
            Self::s(&self.pass),
        ];
        args.extend(extra);
        vaultdisk(&args, None).ok("open");
        OpenGuard {
            plain: self.plain.clone(),
            closed: false,
        }
    }
}

/// Closes PLAIN when dropped (also on panic); unmounts anything mounted on it first.
pub struct OpenGuard {
    pub plain: PathBuf,
    closed: bool,
}

impl OpenGuard {
    pub fn close(mut self) {
        self.closed = true;
        vaultdisk(&["close", Vol::s(&self.plain)], None).ok("close");
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if !self.closed {
            let _ = vaultdisk(&["close", Vol::s(&self.plain)], None);
        }
    }
}

/// Unmounts a mount point (and detaches its loop device) on drop.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = tool("umount", &[Vol::s(&self.0)]);
    }
}

/// Detaches a loop device on drop.
pub struct LoopGuard(pub String);

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = tool("losetup", &["-d", &self.0]);
    }
}

/// The volume key cryptsetup recovers with `luksDump --dump-volume-key`, as hex.
pub fn cryptsetup_volume_key(backing: &Path, pass: &Path) -> String {
    let r = tool(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "-q",
            "--key-file",
            Vol::s(pass),
            Vol::s(backing),
        ],
    )
    .ok("cryptsetup luksDump --dump-volume-key");
    let after = r
        .stdout
        .split("MK dump:")
        .nth(1)
        .expect("MK dump in output")
        .to_owned();
    after
        .split_whitespace()
        .take_while(|t| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()))
        .collect()
}

/// Decrypts `len` bytes of `file` at `offset` with the python oracle (tests/oracle/xts.py).
pub fn oracle_decrypt(
    key_hex: &str,
    file: &Path,
    offset: u64,
    len: u64,
    sector_size: u32,
    first_iv: u64,
) -> Vec<u8> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/xts.py");
    let out = Command::new("python3")
        .args([
            script,
            "decrypt",
            key_hex,
            Vol::s(file),
            &offset.to_string(),
            &len.to_string(),
            &sector_size.to_string(),
            &first_iv.to_string(),
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Deterministic bytes for known-plaintext checks.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
