//! Shared test helpers: temp dirs, running the binary and tools, skips, cleanup guards, fixtures.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_vaultdisk");
/// The passphrase written to the default key file (no trailing newline).
pub const PASS: &[u8] = b"correct horse battery";
pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
/// Default LUKS2 data offset (docs/format.md §1), bytes.
pub const DATA_OFFSET: u64 = 16 * MIB;
/// Cheap KDF flags: tests must never run the 2-second default calibration.
pub const CHEAP_PBKDF2: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
pub const CHEAP_ARGON2ID: &[&str] = &[
    "--pbkdf",
    "argon2id",
    "--pbkdf-force-iterations",
    "4",
    "--pbkdf-memory",
    "32",
    "--pbkdf-parallel",
    "1",
];
/// Upper bound for one command; a hung daemon or FUSE call fails the test instead of the suite.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Path of a file in the repository (oracle scripts).
pub fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A fresh temp dir of its own for each test, removed on drop.
pub fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vaultdisk-it-")
        .tempdir()
        .expect("create temp dir")
}

/// `Path` as `&str` (temp paths are always UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What a finished command did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub what: String,
}

impl Out {
    /// Panics with the whole output unless the exit code is 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success:\n{}", self.describe());
        self
    }

    /// Checks the error contract: the expected code and exactly one `vaultdisk: ` line on stderr.
    pub fn fails_with(self, code: i32) -> Self {
        if let Err(e) = self.check_error(&[code]) {
            panic!("{e}");
        }
        self
    }

    /// `Err(description)` unless the code is one of `codes` and stderr is one `vaultdisk: ` line.
    pub fn check_error(&self, codes: &[i32]) -> Result<(), String> {
        if !codes.contains(&self.code) {
            return Err(format!("exit code not in {codes:?}:\n{}", self.describe()));
        }
        one_error_line(&self.stderr).map_err(|e| format!("{e}:\n{}", self.describe()))
    }

    pub fn describe(&self) -> String {
        format!(
            "  command: {}\n  exit: {}\n  stdout: {:?}\n  stderr: {:?}\n  took: {:?}",
            self.what,
            self.code,
            truncate(&self.stdout),
            truncate(&self.stderr),
            self.elapsed
        )
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(2000) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Ok if `stderr` is exactly one line starting with `vaultdisk: `.
pub fn one_error_line(stderr: &str) -> Result<(), String> {
    let lines: Vec<&str> = stderr.lines().collect();
    match lines.as_slice() {
        [line] if line.starts_with("vaultdisk: ") && line.len() > "vaultdisk: ".len() => Ok(()),
        _ => Err(format!(
            "stderr must be exactly one `vaultdisk: ` line, got {} line(s)",
            lines.len()
        )),
    }
}

/// Runs `program` with `args`, optional stdin bytes (else /dev/null), and a timeout.
/// stdout/stderr go to temp files, not pipes, so a detached daemon that inherited them
/// cannot make us wait. Returns None only if the program could not be started.
pub fn try_run<S: AsRef<OsStr>>(
    program: impl AsRef<OsStr>,
    args: &[S],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Option<Out> {
    let what = std::iter::once(program.as_ref())
        .chain(args.iter().map(|a| a.as_ref()))
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out_f = tempfile::tempfile().expect("temp file");
    let mut err_f = tempfile::tempfile().expect("temp file");
    let mut cmd = Command::new(program.as_ref());
    cmd.args(args)
        .stdout(Stdio::from(out_f.try_clone().expect("dup")))
        .stderr(Stdio::from(err_f.try_clone().expect("dup")))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let start = Instant::now();
    let mut child = cmd.spawn().ok()?;
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let bytes = bytes.to_vec();
        // the program may exit without reading: ignore EPIPE
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    if let Some(w) = writer {
        let _ = w.join();
    }
    let read_all = |f: &mut File| {
        let mut s = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("seek");
        f.read_to_end(&mut s).expect("read output");
        String::from_utf8_lossy(&s).into_owned()
    };
    let stdout = read_all(&mut out_f);
    let mut stderr = read_all(&mut err_f);
    let code = match status {
        Some(st) => st.code().unwrap_or(-1),
        None => {
            stderr.push_str(&format!("\n<killed after {timeout:?}>"));
            -2
        }
    };
    Some(Out {
        code,
        stdout,
        stderr,
        elapsed,
        what,
    })
}

/// Runs a program; panics if it cannot be started or times out.
pub fn run<S: AsRef<OsStr>>(program: impl AsRef<OsStr>, args: &[S], stdin: Option<&[u8]>) -> Out {
    let name = program.as_ref().to_string_lossy().into_owned();
    let out =
        try_run(program, args, stdin, TIMEOUT).unwrap_or_else(|| panic!("cannot start {name}"));
    assert_ne!(out.code, -2, "timed out:\n{}", out.describe());
    out
}

/// Runs vaultdisk with no stdin.
pub fn vd<S: AsRef<OsStr>>(args: &[S]) -> Out {
    run(BIN, args, None)
}

/// Runs vaultdisk with the given stdin bytes.
pub fn vd_in<S: AsRef<OsStr>>(args: &[S], stdin: &[u8]) -> Out {
    run(BIN, args, Some(stdin))
}

/// Runs a system tool found by `tool()`.
pub fn sys<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Out {
    run(tool(name), args, None)
}

/// Full path of a tool in PATH or the sbin directories; `name` itself if not found.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| PathBuf::from(name))
}

pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn python_has_cryptography() -> bool {
    try_run(
        "python3",
        &["-c", "import cryptography"],
        None,
        Duration::from_secs(30),
    )
    .is_some_and(|o| o.code == 0)
}

/// Why `what` is unavailable, or None if it is there.
fn missing(what: &str) -> Option<String> {
    let need_tool = |t: &str| find_tool(t).is_none().then(|| format!("`{t}` not found"));
    match what {
        "root" => (!is_root()).then(|| "not running as root".into()),
        "fuse" => {
            if !Path::new("/dev/fuse").exists() {
                Some("/dev/fuse missing".into())
            } else if find_tool("fusermount3").is_none() && find_tool("fusermount").is_none() {
                Some("fusermount3 not found (apt-get install fuse3)".into())
            } else {
                None
            }
        }
        "loop" => {
            if !is_root() {
                Some("loop devices need root".into())
            } else if !Path::new("/dev/loop-control").exists() {
                Some("/dev/loop-control missing (modprobe loop)".into())
            } else {
                need_tool("losetup")
            }
        }
        "python3-cryptography" => need_tool("python3").or_else(|| {
            (!python_has_cryptography()).then(|| "python3 cannot import cryptography".into())
        }),
        t => need_tool(t),
    }
}

/// True if every item of `what` (a tool name, or "root", "fuse", "loop",
/// "python3-cryptography") is present. Otherwise prints `SKIP <test>: <reason>` and returns
/// false, or panics when VAULTDISK_REQUIRE_ALL=1 (CI), so nothing is skipped silently there.
/// Where skipped tests are listed, so scripts/test.sh can print them after cargo's (captured)
/// output: a skip must be loud, never silently green.
pub const SKIP_LOG: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped-tests.txt");

/// Reports a skipped test on stdout/stderr and appends it to `SKIP_LOG`.
pub fn note_skip(test: &str, reason: &str) {
    use std::io::Write;
    eprintln!("SKIP {test}: {reason}");
    println!("SKIP {test}: {reason}");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(SKIP_LOG)
    {
        let _ = writeln!(f, "SKIP {test}: {reason}");
    }
}

pub fn require(test: &str, what: &[&str]) -> bool {
    for w in what {
        if let Some(reason) = missing(w) {
            if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
                panic!("{test}: required {w} is missing ({reason}) and VAULTDISK_REQUIRE_ALL=1");
            }
            note_skip(test, &reason);
            return false;
        }
    }
    true
}

/// Tests that mount a volume.
pub fn require_fuse(test: &str) -> bool {
    require(test, &["fuse"])
}

/// Crash tests (VAULTDISK_CRASH_AFTER_WRITES): true when the binary under test has the hook,
/// i.e. was built with the `fault-injection` cargo feature (Cargo.toml's self dev-dependency
/// turns it on for every `cargo test`). Without it the hook is a no-op and a crash test would
/// pass without crashing anything: skip loudly instead (a panic under VAULTDISK_REQUIRE_ALL=1).
pub fn require_fault_injection(test: &str) -> bool {
    if cfg!(feature = "fault-injection") {
        return true;
    }
    let reason =
        "built without the fault-injection feature (cargo test --features fault-injection)";
    if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {reason} and VAULTDISK_REQUIRE_ALL=1");
    }
    note_skip(test, reason);
    false
}

/// What a simulated crash of the fault-injection hook leaves on disk: `Exit` (the default,
/// VAULTDISK_CRASH_MODE unset) keeps every write, as when the process dies and the page cache
/// reaches the disk; `Power` (VAULTDISK_CRASH_MODE=power) undoes every write since the last
/// sync, as when the power fails and the drive loses its volatile cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    Exit,
    Power,
}

impl CrashMode {
    /// Both modes, for tests that run every crash point in each.
    pub const BOTH: [CrashMode; 2] = [CrashMode::Exit, CrashMode::Power];

    pub fn name(self) -> &'static str {
        match self {
            CrashMode::Exit => "exit",
            CrashMode::Power => "power",
        }
    }

    /// The environment of a run that crashes right after its k-th write or sync in this mode.
    pub fn env(self, k: u32) -> Vec<(String, String)> {
        let mut env = vec![("VAULTDISK_CRASH_AFTER_WRITES".to_string(), k.to_string())];
        if self == CrashMode::Power {
            env.push(("VAULTDISK_CRASH_MODE".to_string(), "power".to_string()));
        }
        env
    }

    /// [`CrashMode::env`] as NAME=VALUE strings.
    pub fn env_strings(self, k: u32) -> Vec<String> {
        self.env(k)
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    }
}

/// How many unsynced writes a power-mode crash undid, from its one stderr line
/// ("... simulated power loss (N unsynced writes undone)"); None for any other output.
pub fn undone_writes(stderr: &str) -> Option<u32> {
    let rest = stderr.split("simulated power loss (").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

/// Checks one crash outcome against what the mode promises of the file itself: an exit crash
/// reports no undo; a power crash before anything was synced (it undid all `k` operations,
/// so k was a write) leaves `[0, len)` of `work` exactly as it was in `base`. Returns true when
/// the power crash undid something (the mode is live).
///
/// Also asserts that a power crash never finds more than one unsynced write: with at most one
/// write between syncs, the exit mode (the write landed) and the power mode (it did not) are
/// every state a power cut can leave short of a torn write (which the header checksums catch).
/// Two writes without a sync between them could land in either order, which neither mode shows.
pub fn check_crash_mode(
    mode: CrashMode,
    k: u32,
    stderr: &str,
    base: &Path,
    work: &Path,
    len: u64,
) -> bool {
    let undone = undone_writes(stderr);
    match mode {
        CrashMode::Exit => {
            assert_eq!(undone, None, "exit mode k={k} reported an undo: {stderr}");
            false
        }
        CrashMode::Power => {
            let n = undone.unwrap_or_else(|| panic!("power mode k={k}: no undo line: {stderr}"));
            assert!(
                n <= 1,
                "power mode k={k}: {n} writes since the last sync; they could reach the disk in any order, which neither crash mode simulates: sync between them (or test their subsets)"
            );
            if n == k {
                assert_eq!(
                    sha256_range(work, 0, len),
                    sha256_range(base, 0, len),
                    "power mode k={k}: nothing was synced, yet the file changed"
                );
            }
            n > 0
        }
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a whole file. Uses coreutils `sha256sum` (dependencies are unoptimized in test
/// builds, where the sha2 crate manages only ~30 MB/s); falls back to sha2.
pub fn sha256_file(path: &Path) -> String {
    if let Some(out) = try_run("sha256sum", &[path], None, TIMEOUT)
        && out.code == 0
        && let Some(h) = out.stdout.split_whitespace().next()
    {
        return h.to_string();
    }
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// SHA-256 of `len` bytes at `offset` of a file.
pub fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    sha256(&read_range(path, offset, len))
}

pub fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
    buf
}

/// Content hash, length and mtime: "byte-identical and untouched".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub sha256: String,
    pub len: u64,
    pub mtime: (i64, i64),
    pub mode: u32,
}

pub fn fingerprint(path: &Path) -> Fingerprint {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    Fingerprint {
        sha256: if m.is_file() {
            sha256_file(path)
        } else {
            String::new()
        },
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        mode: m.mode(),
    }
}

/// Fingerprints of every entry of a directory (not recursive).
pub fn dir_snapshot(dir: &Path) -> BTreeMap<String, Fingerprint> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fingerprint(&e.path()),
            )
        })
        .collect()
}

/// Differences between two snapshots, one description per changed entry.
pub fn snapshot_diff(
    before: &BTreeMap<String, Fingerprint>,
    after: &BTreeMap<String, Fingerprint>,
) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => d.push(format!("{k} was removed")),
            Some(a) if a != v => d.push(format!("{k} changed: {v:?} -> {a:?}")),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        d.push(format!("{k} was created"));
    }
    d
}

/// Deterministic pseudo-random bytes (splitmix64), different per seed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes a key file holding exactly `bytes`, mode 0600 (a key file others may read gets a
/// warning on stderr).
pub fn write_key(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    fs::write(&p, bytes).expect("write key file");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod key file");
    p
}

/// Formats `backing` with the key file and cheap extra flags (CHEAP_PBKDF2 if `kdf` is empty).
pub fn format_with(backing: &Path, key: &Path, size: &str, kdf: &[&str], extra: &[&str]) -> Out {
    let mut args = vec!["format", s(backing), "--size", size, "--key-file", s(key)];
    args.extend_from_slice(if kdf.is_empty() { CHEAP_PBKDF2 } else { kdf });
    args.extend_from_slice(extra);
    vd(&args)
}

/// A formatted volume in its own temp dir: backing file, key file with PASS, PLAIN path.
pub struct Vol {
    pub dir: tempfile::TempDir,
    pub backing: PathBuf,
    pub key: PathBuf,
    pub plain: PathBuf,
}

impl Vol {
    /// Formats a volume of `size` (e.g. "4M") with cheap PBKDF2 plus `extra` flags.
    pub fn new(size: &str, extra: &[&str]) -> Vol {
        Vol::with_kdf(size, &[], extra)
    }

    pub fn with_kdf(size: &str, kdf: &[&str], extra: &[&str]) -> Vol {
        let dir = temp();
        let backing = dir.path().join("disk.img");
        let key = write_key(dir.path(), "pass", PASS);
        let plain = dir.path().join("plain");
        let out = format_with(&backing, &key, size, kdf, extra).ok();
        assert!(
            fs::metadata(&backing).is_ok_and(|m| m.len() > DATA_OFFSET / 2),
            "format returned 0 but made no volume at {}:\n{}",
            backing.display(),
            out.describe()
        );
        Vol {
            dir,
            backing,
            key,
            plain,
        }
    }

    /// Opens read-write with the key file; the guard closes on drop.
    pub fn open(&self) -> Mount {
        open_volume(&self.backing, &self.plain, &self.key, &[])
    }

    pub fn open_ro(&self) -> Mount {
        open_volume(&self.backing, &self.plain, &self.key, &["--read-only"])
    }
}

/// `vaultdisk open BACKING PLAIN --key-file KEY extra…`, asserting success and a live mount.
pub fn open_volume(backing: &Path, plain: &Path, key: &Path, extra: &[&str]) -> Mount {
    let mut args = vec!["open", s(backing), s(plain), "--key-file", s(key)];
    args.extend_from_slice(extra);
    let out = vd(&args);
    // arm the guard before asserting, so a half-made mount is still cleaned up
    let guard = Mount::new(plain);
    let out = out.ok();
    assert!(
        is_mounted(plain),
        "open returned 0 but {} is not a mount point:\n{}",
        plain.display(),
        out.describe()
    );
    guard
}

/// Mount point as it appears in /proc/self/mountinfo (parent canonicalized, no stat of the
/// mount itself, which would hang on a dead FUSE daemon).
fn mount_key(path: &Path) -> PathBuf {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let parent = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    match path.file_name() {
        Some(n) => parent.join(n),
        None => parent,
    }
}

fn unescape_mountinfo(s: &str) -> String {
    // the kernel escapes space, tab, newline and backslash as \ooo (octal)
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let key = mount_key(path);
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mountinfo(mp)) == key)
}

/// Polls `cond` every 10 ms up to `limit`; true once it holds.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A vaultdisk mount; on drop (also during a panic) runs `vaultdisk close`, then falls back to
/// lazy unmounts so no test leaves a mount behind.
pub struct Mount {
    pub plain: PathBuf,
    armed: bool,
}

impl Mount {
    pub fn new(plain: &Path) -> Mount {
        Mount {
            plain: plain.to_path_buf(),
            armed: true,
        }
    }

    /// `vaultdisk close PLAIN`, asserting success and that the mount is gone.
    pub fn close(mut self) {
        let out = vd(&["close", s(&self.plain)]);
        self.armed = false;
        if out.code != 0 || is_mounted(&self.plain) {
            force_unmount(&self.plain);
            panic!("close failed or left the mount:\n{}", out.describe());
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.armed || !is_mounted(&self.plain) {
            return;
        }
        let _ = try_run(
            BIN,
            &["close", s(&self.plain)],
            None,
            Duration::from_secs(30),
        );
        if is_mounted(&self.plain) {
            force_unmount(&self.plain);
        }
    }
}

/// Best-effort lazy unmount of a FUSE or other mount.
pub fn force_unmount(path: &Path) {
    for (prog, args) in [
        ("fusermount3", vec!["-u", "-z"]),
        ("fusermount", vec!["-u", "-z"]),
        ("umount", vec!["-l"]),
    ] {
        if !is_mounted(path) {
            return;
        }
        let mut a: Vec<&str> = args;
        a.push(s(path));
        let _ = try_run(tool(prog), &a, None, Duration::from_secs(20));
    }
}

/// A kernel filesystem mounted on `dir` (e.g. ext4 over PLAIN); unmounted on drop.
pub struct FsMount {
    pub dir: PathBuf,
}

impl FsMount {
    pub fn umount(self) {
        sys("umount", &[s(&self.dir)]).ok();
        assert!(!is_mounted(&self.dir));
    }
}

impl Drop for FsMount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = try_run(
                tool("umount"),
                &[s(&self.dir)],
                None,
                Duration::from_secs(30),
            );
        }
        if is_mounted(&self.dir) {
            let _ = try_run(
                tool("umount"),
                &["-l", s(&self.dir)],
                None,
                Duration::from_secs(30),
            );
        }
    }
}

/// A loop device; detached on drop.
pub struct LoopDev {
    pub dev: String,
    attached: bool,
}

impl LoopDev {
    /// `losetup -f --show FILE`.
    pub fn attach(file: &Path) -> LoopDev {
        let out = sys("losetup", &["-f", "--show", s(file)]).ok();
        LoopDev {
            dev: out.stdout.trim().to_string(),
            attached: true,
        }
    }

    pub fn detach(mut self) {
        self.attached = false;
        sys("losetup", &["-d", &self.dev]).ok();
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if self.attached {
            let _ = try_run(
                tool("losetup"),
                &["-d", &self.dev],
                None,
                Duration::from_secs(30),
            );
        }
    }
}

/// Writes `data` at `offset` of an existing file without truncating, then fsyncs.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(data, offset)?;
    f.sync_all()
}

/// Writes a whole file (create/truncate).
pub fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Copies the first `len` bytes of `src` into a new file `dst`.
pub fn copy_prefix(src: &Path, dst: &Path, len: u64) {
    write_file(dst, &read_range(src, 0, len));
}

/// The volume key from `cryptsetup luksDump --dump-volume-key`, as lowercase hex.
pub fn cryptsetup_volume_key(backing: &Path, key: &Path) -> String {
    let out = sys(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "-q",
            "--key-file",
            s(key),
            s(backing),
        ],
    )
    .ok();
    parse_mk_dump(&out.stdout).unwrap_or_else(|| panic!("no MK dump in:\n{}", out.stdout))
}

/// Parses the "MK dump:" hex lines of `cryptsetup luksDump --dump-volume-key`.
pub fn parse_mk_dump(text: &str) -> Option<String> {
    let mut lines = text.lines();
    let first = lines.find_map(|l| l.strip_prefix("MK dump:"))?;
    let mut hexs = String::new();
    let mut take = |l: &str| {
        for t in l.split_whitespace() {
            if t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()) {
                hexs.push_str(&t.to_ascii_lowercase());
            }
        }
    };
    take(first);
    for l in lines {
        if !l.starts_with(char::is_whitespace) || l.trim().is_empty() {
            break;
        }
        take(l);
    }
    (!hexs.is_empty()).then_some(hexs)
}

/// `cryptsetup open --test-passphrase` with a key file: true if accepted.
pub fn cryptsetup_accepts(backing: &Path, key: &Path) -> bool {
    let out = sys(
        "cryptsetup",
        &[
            "open",
            "--test-passphrase",
            "--key-file",
            s(key),
            s(backing),
        ],
    );
    out.code == 0
}

/// The LUKS2 JSON metadata as cryptsetup sees it.
pub fn cryptsetup_json(backing: &Path) -> serde_json::Value {
    let out = sys(
        "cryptsetup",
        &["luksDump", "--dump-json-metadata", s(backing)],
    )
    .ok();
    serde_json::from_str(&out.stdout).expect("cryptsetup JSON")
}

/// Runs tests/oracle/xts.py to decrypt `len` bytes of `file` at `offset` (independent of vaultdisk).
pub fn oracle_decrypt(
    key_hex: &str,
    file: &Path,
    offset: u64,
    len: u64,
    sector_size: u32,
    first_iv: u64,
) -> Vec<u8> {
    let out_file = tempfile::NamedTempFile::new().expect("temp file");
    let oracle = repo_file("tests/oracle/xts.py");
    let (off, l, ss, iv) = (
        offset.to_string(),
        len.to_string(),
        sector_size.to_string(),
        first_iv.to_string(),
    );
    run(
        "python3",
        &[
            s(&oracle),
            "decrypt",
            "--key-hex",
            key_hex,
            "--in",
            s(file),
            "--offset",
            &off,
            "--length",
            &l,
            "--sector-size",
            &ss,
            "--first-iv",
            &iv,
            "--out",
            s(out_file.path()),
        ],
        None,
    )
    .ok();
    fs::read(out_file.path()).expect("oracle output")
}

/// Runs tests/oracle/xts.py to encrypt `plain` into `target` at `offset` in place.
pub fn oracle_encrypt_into(
    key_hex: &str,
    plain: &Path,
    target: &Path,
    offset: u64,
    sector_size: u32,
) {
    let oracle = repo_file("tests/oracle/xts.py");
    let (off, ss) = (offset.to_string(), sector_size.to_string());
    run(
        "python3",
        &[
            s(&oracle),
            "encrypt-into",
            "--key-hex",
            key_hex,
            "--plain",
            s(plain),
            "--target",
            s(target),
            "--offset",
            &off,
            "--sector-size",
            &ss,
        ],
        None,
    )
    .ok();
}

/// `vaultdisk dump --json BACKING`, parsed; panics unless exit 0 with valid JSON on stdout.
pub fn dump_json(backing: &Path) -> (serde_json::Value, Out) {
    let out = vd(&["dump", "--json", s(backing)]).ok();
    let v = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("dump --json is not JSON ({e}):\n{}", out.describe()));
    (v, out)
}

/// The mode bits of a path (permission part).
pub fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").mode() & 0o7777
}

/// Writes `data` through PLAIN at `offset` and checks it reads back the same.
pub fn write_plain(plain: &Path, offset: u64, data: &[u8]) {
    write_at(plain, offset, data)
        .unwrap_or_else(|e| panic!("write {} bytes at {offset} of PLAIN: {e}", data.len()));
}

/// Writes the whole of `data` to a new file and returns its path.
pub fn data_file(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    write_file(&p, data);
    p
}

/// Appends zeros / sets the length of a file (like `truncate -s`).
pub fn set_len(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

/// Seconds-level sanity bound for "quickly".
pub const QUICK: Duration = Duration::from_secs(5);

/// Reads PLAIN fully.
pub fn read_plain(plain: &Path) -> Vec<u8> {
    fs::read(plain).unwrap_or_else(|e| panic!("read PLAIN {}: {e}", plain.display()))
}

/// Writes `data` into a file at `offset`, creating nothing (fixture corruption).
pub fn poke(path: &Path, offset: u64, data: &[u8]) {
    write_at(path, offset, data).unwrap_or_else(|e| panic!("poke {}: {e}", path.display()));
}

/// Returns a copy of `v` with `patch` applied at `offset`.
pub fn patched(v: &[u8], offset: usize, patch: &[u8]) -> Vec<u8> {
    let mut out = v.to_vec();
    out[offset..offset + patch.len()].copy_from_slice(patch);
    out
}

/// Runs an `open` that must fail with `code`: a mount it made anyway is cleaned up, and a PLAIN
/// that did not exist before must not exist after.
pub fn open_fails(args: &[&str], stdin: Option<&[u8]>, plain: &Path, code: i32) -> Out {
    let existed = plain.exists();
    let out = match stdin {
        Some(input) => vd_in(args, input),
        None => vd(args),
    };
    let _guard = Mount::new(plain);
    let out = out.fails_with(code);
    assert!(!is_mounted(plain), "a failed open left a mount");
    if !existed {
        assert!(!plain.exists(), "a failed open left PLAIN behind");
    }
    out
}

/// The helpers themselves: mountinfo parsing (with an escaped space), lazy unmount, the
/// MK dump parser, the one-line rule.
#[test]
fn support_helpers_self_check() {
    assert!(one_error_line("vaultdisk: bad size\n").is_ok());
    assert!(one_error_line("vaultdisk: a\nvaultdisk: b\n").is_err());
    assert!(one_error_line("error: bad\n").is_err());
    assert!(one_error_line("").is_err());
    let dump = "LUKS header information for x\nMK bits:       \t256\nMK dump:\t00 01 02 03 \n\t\t0a 0B ff 10 \nOther:\n";
    assert_eq!(parse_mk_dump(dump).as_deref(), Some("000102030a0bff10"));
    assert_eq!(pattern(16, 1), pattern(16, 1));
    assert_ne!(pattern(16, 1), pattern(16, 2));
    if !require("support_helpers_self_check", &["root"]) {
        return;
    }
    let t = temp();
    let src = t.path().join("src file");
    let dst = t.path().join("dst file");
    write_file(&src, b"x");
    write_file(&dst, b"");
    assert!(!is_mounted(&dst));
    sys("mount", &["--bind", s(&src), s(&dst)]).ok();
    let guard = Mount::new(&dst);
    assert!(
        is_mounted(&dst),
        "bind mount over a file not seen in mountinfo"
    );
    drop(guard); // `vaultdisk close` cannot unmount a bind mount: the lazy fallback must
    assert!(!is_mounted(&dst), "Mount guard left the mount");
    let f = File::open(&src).unwrap();
    assert!(holders(&src).contains(&std::process::id()));
    drop(f);
    assert!(!holders(&src).contains(&std::process::id()));
}

/// Pids of processes that hold `path` open (scans /proc/*/fd): after `close` returns, the
/// daemon must be gone, so nobody may hold the backing file.
pub fn holders(path: &Path) -> Vec<u32> {
    let target = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let fds = entry.path().join("fd");
        for fd in fs::read_dir(fds).into_iter().flatten().flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l == target) {
                pids.push(pid);
                break;
            }
        }
    }
    pids
}

/// Whether this run regenerates golden files (`VAULTDISK_BLESS=1`) instead of comparing.
pub fn blessing() -> bool {
    std::env::var("VAULTDISK_BLESS").as_deref() == Ok("1")
}

/// Compares `actual` with the committed file `rel` (relative to the repository), or writes it
/// with `VAULTDISK_BLESS=1`. A difference fails with the first differing line and `how`, the
/// command that regenerates the file.
pub fn check_golden(rel: &str, actual: &str, how: &str) {
    let path = repo_file(rel);
    let old = fs::read_to_string(&path).unwrap_or_default();
    if old == actual {
        return;
    }
    if blessing() {
        fs::create_dir_all(path.parent().expect("golden file has a directory"))
            .expect("create golden directory");
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, actual).expect("write golden file");
        fs::rename(&tmp, &path).expect("rename golden file");
        return;
    }
    let (old_lines, new_lines): (Vec<_>, Vec<_>) =
        (old.lines().collect(), actual.lines().collect());
    let at = old_lines
        .iter()
        .zip(&new_lines)
        .position(|(a, b)| a != b)
        .unwrap_or(old_lines.len().min(new_lines.len()));
    panic!(
        "{rel} is stale (first difference at line {}):\n- {}\n+ {}\n\
         If the change is intended, regenerate it with:\n    {how}\nand commit the file.",
        at + 1,
        old_lines.get(at).copied().unwrap_or("<end of file>"),
        new_lines.get(at).copied().unwrap_or("<end of file>"),
    );
}

/// An OpenBao dev server of one test's own on 127.0.0.1 (plain HTTP, transit enabled), killed
/// by PID on drop. tests/it/vault.rs has a fuller one (TLS, AppRole); this is for tests of
/// other modules that need a vault (tests/it/detached.rs).
pub struct BaoDev {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The root token.
    pub token: String,
    dir: tempfile::TempDir,
}

impl BaoDev {
    /// None (test skipped loudly) when `bao` is not installed.
    pub fn start(test: &str) -> Option<BaoDev> {
        if !require(test, &["bao"]) {
            return None;
        }
        let dir = temp();
        let home = dir.path().join("home");
        fs::create_dir(&home).expect("home");
        fs::create_dir(dir.path().join("vd-home")).expect("vd home");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let token = format!("root-{}", &sha256(test.as_bytes())[..16]);
        let log = File::create(dir.path().join("server.log")).expect("log");
        let child = Command::new(tool("bao"))
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            // The dev server writes ~/.vault-token: keep it in the test's own home.
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start bao server -dev");
        let bao = BaoDev {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token,
            dir,
        };
        let up = wait_until(Duration::from_secs(30), || bao.cli(&["status"]).code == 0);
        let log = fs::read_to_string(bao.dir.path().join("server.log")).unwrap_or_default();
        assert!(up, "bao dev server did not come up:\n{log}");
        bao.cli(&["secrets", "enable", "transit"]).ok();
        Some(bao)
    }

    /// The bao CLI against this server as root.
    pub fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec![
            format!("HOME={}", s(&self.dir.path().join("home"))),
            format!("VAULT_ADDR={}", self.addr),
            format!("VAULT_TOKEN={}", self.token),
            s(&tool("bao")).to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        run("env", &all, None)
    }

    /// vaultdisk with only this server's address and token in a clean vault environment
    /// (HOME without a token file).
    pub fn vd(&self, args: &[&str]) -> Out {
        let mut all: Vec<String> = [
            "VAULT_TOKEN",
            "BAO_TOKEN",
            "VAULT_ADDR",
            "BAO_ADDR",
            "VAULT_CACERT",
            "BAO_CACERT",
            "VAULT_NAMESPACE",
        ]
        .iter()
        .flat_map(|v| ["-u".to_string(), v.to_string()])
        .collect();
        all.push(format!("HOME={}", s(&self.dir.path().join("vd-home"))));
        all.push(format!("VAULT_ADDR={}", self.addr));
        all.push(format!("VAULT_TOKEN={}", self.token));
        all.push(BIN.to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        run("env", &all, None)
    }
}

impl Drop for BaoDev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
