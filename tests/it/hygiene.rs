//! Key hygiene and access (issue 6, items 5 and 6): secrets never in logs at trace level,
//! error messages, or the daemon's /proc cmdline and environ; the daemon cannot dump core
//! and keeps its key pages locked; PLAIN, the runtime registry and the mount options give
//! nobody else access; key files that others may read draw a warning.

use crate::reliability::{daemon_pid, vd_rt};
use crate::support::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs vaultdisk with extra environment `env` (NAME=value) and VAULTDISK_RUNTIME_DIR=rt.
fn vd_env(rt: &Path, env: &[&str], args: &[&str], stdin: Option<&[u8]>) -> Out {
    let rt_env = format!("VAULTDISK_RUNTIME_DIR={}", s(rt));
    let mut all = vec![rt_env.as_str()];
    all.extend_from_slice(env);
    all.push(BIN);
    all.extend_from_slice(args);
    run("env", &all, stdin)
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Passphrases (right, wrong, new), the recovery key and the volume key (raw bytes, hex in
/// either case, and its first half alone) are searched for in everything vaultdisk printed
/// at RUST_LOG=trace -v (stdout of add-recovery-key aside, which is where that key is meant
/// to go), in daemon.log, and in the daemon's /proc/<pid>/cmdline and environ.
#[test]
fn secrets_never_in_logs_errors_argv_or_environ() {
    let test = "secrets_never_in_logs_errors_argv_or_environ";
    if !require(test, &["fuse", "cryptsetup"]) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let d = v.dir.path();
    let rt = d.join("rt");
    let trace = ["RUST_LOG=trace"];
    let wrong_pass = b"wrong-secret-6d1f0c".as_slice();
    let new_pass = b"new-secret-93ab7e".as_slice();
    let wrong = write_key(d, "wrong", wrong_pass);
    let new = write_key(d, "new", new_pass);
    let mut printed: Vec<u8> = Vec::new();
    let keep = |printed: &mut Vec<u8>, o: &Out| {
        printed.extend_from_slice(o.stdout.as_bytes());
        printed.extend_from_slice(o.stderr.as_bytes());
    };
    // Failing verbs (their error messages) and succeeding ones, all at trace level.
    for (args, code) in [
        (
            vec!["-v", "test-key", s(&v.backing), "--key-file", s(&wrong)],
            2,
        ),
        (
            vec![
                "-v",
                "open",
                s(&v.backing),
                s(&v.plain),
                "--key-file",
                s(&wrong),
            ],
            2,
        ),
        (
            vec![
                "-v",
                "add-key",
                s(&v.backing),
                "--key-file",
                s(&wrong),
                "--new-key-file",
                s(&new),
            ],
            2,
        ),
        (
            vec![
                "-v",
                "add-key",
                s(&v.backing),
                "--key-file",
                s(&v.key),
                "--new-key-file",
                s(&new),
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
            ],
            0,
        ),
        (
            vec!["-v", "test-key", s(&v.backing), "--key-file", s(&new)],
            0,
        ),
    ] {
        let out = vd_env(&rt, &trace, &args, None);
        assert_eq!(out.code, code, "{}", out.describe());
        keep(&mut printed, &out);
    }
    // A passphrase typed on stdin, wrong: the error must not echo it.
    let out = vd_env(
        &rt,
        &trace,
        &["test-key", s(&v.backing)],
        Some(b"typed-wrong-1c2d\n"),
    );
    assert_eq!(out.code, 2, "{}", out.describe());
    keep(&mut printed, &out);
    let rec = vd_env(
        &rt,
        &trace,
        &["add-recovery-key", s(&v.backing), "--key-file", s(&v.key)],
        None,
    )
    .ok();
    printed.extend_from_slice(rec.stderr.as_bytes());
    let recovery = rec.stdout.trim().to_string();
    assert_eq!(recovery.len(), 71, "{}", rec.describe());

    let out = vd_env(
        &rt,
        &trace,
        &[
            "-v",
            "open",
            s(&v.backing),
            s(&v.plain),
            "--key-file",
            s(&v.key),
        ],
        None,
    );
    let m = Mount::new(&v.plain);
    keep(&mut printed, &out.ok());
    let pid = daemon_pid(&rt, &v.plain);
    // Some traffic for the daemon to log.
    write_plain(&v.plain, 12345, &pattern(300 * KIB as usize, 3));
    let _ = read_range(&v.plain, 0, MIB);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(contains(&environ, b"RUST_LOG=trace"), "environ was read");
    let out = vd_env(&rt, &trace, &["close", s(&v.plain)], None);
    std::mem::forget(m);
    keep(&mut printed, &out.ok());
    let log = fs::read(rt.join("daemon.log")).unwrap();
    let log_lines = log.split(|&c| c == b'\n').count();
    assert!(
        log_lines > 20,
        "trace logging reached the daemon ({log_lines} lines)"
    );

    let vk_hex = cryptsetup_volume_key(&v.backing, &v.key);
    let vk = unhex(&vk_hex);
    assert_eq!(vk.len(), 64);
    let needles: Vec<(&str, Vec<u8>)> = vec![
        ("passphrase", PASS.to_vec()),
        ("wrong passphrase", wrong_pass.to_vec()),
        ("typed passphrase", b"typed-wrong-1c2d".to_vec()),
        ("new passphrase", new_pass.to_vec()),
        ("recovery key", recovery.as_bytes().to_vec()),
        (
            "recovery key letters",
            recovery.replace('-', "").into_bytes(),
        ),
        ("volume key", vk.clone()),
        ("volume key half", vk[..32].to_vec()),
        ("volume key hex", vk_hex.as_bytes().to_vec()),
        ("volume key hex half", vk_hex.as_bytes()[..64].to_vec()),
        ("volume key HEX", vk_hex.to_uppercase().into_bytes()),
    ];
    let hays: [(&str, &[u8]); 4] = [
        ("output", &printed),
        ("daemon.log", &log),
        ("cmdline", &cmdline),
        ("environ", &environ),
    ];
    let mut leaks = Vec::new();
    for (hay_name, hay) in hays {
        for (what, needle) in &needles {
            if contains(hay, needle) {
                leaks.push(format!("{what} found in {hay_name}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

fn fail_or_skip(test: &str, reason: &str) {
    if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {reason} (VAULTDISK_REQUIRE_ALL=1)");
    }
    note_skip(test, reason);
}

/// Whether this machine writes a core for SIGQUIT of an ordinary (dumpable) process with
/// RLIMIT_CORE unlimited: the control that makes the daemon's "no core" meaningful.
fn machine_dumps_core(dir: &Path) -> bool {
    let mut child = Command::new(tool("prlimit"))
        .args(["--core=unlimited", "sleep", "30"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sys("kill", &["-QUIT", &child.id().to_string()]).ok();
    let dumped = child.wait().unwrap().core_dumped();
    let _ = fs::remove_file(dir.join("core"));
    dumped
}

/// The daemon (background and --foreground) is not dumpable: SIGQUIT (default action: core
/// dump; SIGSEGV is caught once by Rust's stack-overflow handler) with RLIMIT_CORE unlimited
/// kills it without a core, where the same signal makes `sleep` dump one.
/// The background daemon is reaped by a python3 helper that makes itself a subreaper, so
/// its wait status (WCOREDUMP) can be seen; VmLck and the [heap] mapping show locked keys.
#[test]
fn daemon_not_dumpable_and_keys_locked() {
    let test = "daemon_not_dumpable_and_keys_locked";
    if !require(test, &["fuse", "prlimit", "python3", "kill"]) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let d = v.dir.path();
    let rt = d.join("rt");
    if !machine_dumps_core(d) {
        fail_or_skip(
            test,
            "this machine writes no core dump for SIGQUIT (core_pattern?)",
        );
        return;
    }

    // Locked key pages, while serving.
    let out = vd_rt(
        &rt,
        &["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)],
    );
    let m = Mount::new(&v.plain);
    out.ok();
    let pid = daemon_pid(&rt, &v.plain);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let vmlck: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(vmlck > 0, "VmLck 0:\n{status}");
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let heap = smaps
        .split_once("[heap]")
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.lines().find(|l| l.starts_with("VmFlags:")))
        .expect("a [heap] mapping");
    assert!(
        heap.split_whitespace().any(|f| f == "lo"),
        "[heap] (where the round keys are) is not locked: {heap}"
    );
    // As root (CAP_IPC_LOCK) later mappings are locked too: after traffic, which makes the
    // FUSE workers allocate their own cipher contexts, no mapping is unlocked but the
    // kernel's [vvar]/[vdso]/[vsyscall].
    if vaultdisk::sys::geteuid() == 0 {
        write_plain(&v.plain, 4096 * 7 + 3, &pattern(3 * MIB as usize, 5));
        let _ = read_range(&v.plain, 0, 4 * MIB);
        let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
        let mut mapping = "";
        let mut unlocked = Vec::new();
        for line in smaps.lines() {
            if line
                .split(' ')
                .next()
                .is_some_and(|a| a.contains('-') && !a.ends_with(':'))
            {
                mapping = line;
            } else if let Some(flags) = line.strip_prefix("VmFlags:")
                && !flags.split_whitespace().any(|f| f == "lo")
                && !["[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"]
                    .iter()
                    .any(|k| mapping.ends_with(k))
            {
                unlocked.push(mapping.to_string());
            }
        }
        assert!(
            unlocked.is_empty(),
            "unlocked mappings:\n{}",
            unlocked.join("\n")
        );
    }
    vd_rt(&rt, &["close", s(&v.plain)]).ok();
    std::mem::forget(m);

    // Background daemon: SIGQUIT, reaped by a subreaper.
    let helper = r#"
import ctypes, json, os, resource, signal, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
exe, backing, plain, key = sys.argv[1:]
subprocess.run([exe, "open", backing, plain, "--key-file", key], check=True)
status = subprocess.run([exe, "status", "--json"], check=True, capture_output=True).stdout
pid = [e["pid"] for e in json.loads(status) if e["plain"] == os.path.realpath(plain)][0]
resource.prlimit(pid, resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
os.kill(pid, signal.SIGQUIT)
_, st = os.waitpid(pid, 0)
print(json.dumps({"signal": os.WTERMSIG(st) if os.WIFSIGNALED(st) else None,
                  "core": os.WCOREDUMP(st)}))
"#;
    let rt_env = format!("VAULTDISK_RUNTIME_DIR={}", s(&rt));
    let out = run(
        "env",
        &[
            rt_env.as_str(),
            "python3",
            "-c",
            helper,
            BIN,
            s(&v.backing),
            s(&v.plain),
            s(&v.key),
        ],
        None,
    );
    force_unmount(&v.plain);
    let _ = vd_rt(&rt, &["close", s(&v.plain)]);
    let out = out.ok();
    let verdict: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(verdict["signal"], libc::SIGQUIT, "{}", out.describe());
    assert_eq!(verdict["core"], false, "background daemon dumped core");

    // --foreground: the test is the parent.
    let mut child = Command::new(tool("prlimit"))
        .args(["--core=unlimited", BIN, "open", s(&v.backing), s(&v.plain)])
        .args(["--key-file", s(&v.key), "--foreground"])
        .env("VAULTDISK_RUNTIME_DIR", &rt)
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mounted = wait_until(Duration::from_secs(60), || is_mounted(&v.plain));
    sys("kill", &["-QUIT", &child.id().to_string()]).ok();
    let st = child.wait().unwrap();
    force_unmount(&v.plain);
    let _ = vd_rt(&rt, &["close", s(&v.plain)]);
    assert!(mounted, "foreground open never mounted");
    assert_eq!(st.signal(), Some(libc::SIGQUIT), "{st:?}");
    assert!(!st.core_dumped(), "foreground daemon dumped core");
    assert!(!d.join("core").exists());
}

fn mount_options(plain: &Path) -> String {
    let canon = plain.canonicalize().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(s(&canon)))
        .unwrap_or_else(|| panic!("{} not in mountinfo", plain.display()))
        .to_string()
}

/// PLAIN is 0600 and owned by the opener; allow_other only with --allow-other; the runtime
/// directory is 0700 (a world-writable one is tightened), registry entries and the daemon
/// log are 0600.
#[test]
fn plain_and_registry_give_nobody_else_access() {
    let test = "plain_and_registry_give_nobody_else_access";
    if !require_fuse(test) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let rt = v.dir.path().join("rt");
    fs::create_dir(&rt).unwrap();
    fs::set_permissions(&rt, fs::Permissions::from_mode(0o777)).unwrap();
    let out = vd_rt(
        &rt,
        &["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)],
    );
    let m = Mount::new(&v.plain);
    out.ok();
    let meta = fs::metadata(&v.plain).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(meta.uid(), vaultdisk::sys::geteuid());
    let line = mount_options(&v.plain);
    assert!(!line.contains("allow_other"), "{line}");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    assert_eq!(mode_of(&rt) & 0o7777, 0o700, "runtime dir");
    let pid = daemon_pid(&rt, &v.plain);
    assert_eq!(mode_of(&rt.join(format!("{pid}.json"))) & 0o777, 0o600);
    assert_eq!(mode_of(&rt.join("daemon.log")) & 0o777, 0o600);
    vd_rt(&rt, &["close", s(&v.plain)]).ok();
    std::mem::forget(m);

    let out = vd_rt(
        &rt,
        &[
            "open",
            s(&v.backing),
            s(&v.plain),
            "--key-file",
            s(&v.key),
            "--allow-other",
        ],
    );
    let m = Mount::new(&v.plain);
    out.ok();
    let line = mount_options(&v.plain);
    assert!(line.contains("allow_other"), "{line}");
    assert_eq!(fs::metadata(&v.plain).unwrap().mode() & 0o7777, 0o600);
    vd_rt(&rt, &["close", s(&v.plain)]).ok();
    std::mem::forget(m);
}

/// A key file others may read works but draws one warning line (as ssh warns about
/// private keys); 0600 and 0400 draw none.
#[test]
fn key_file_readable_by_others_warns() {
    let v = Vol::new("4M", &[]);
    for (mode, warns) in [
        (0o600, false),
        (0o400, false),
        (0o640, true),
        (0o604, true),
        (0o644, true),
    ] {
        fs::set_permissions(&v.key, fs::Permissions::from_mode(mode)).unwrap();
        let out = vd(&["test-key", s(&v.backing), "--key-file", s(&v.key)]);
        assert_eq!(out.code, 0, "{}", out.describe());
        let lines: Vec<&str> = out.stderr.lines().collect();
        if warns {
            assert_eq!(lines.len(), 1, "mode {mode:o}: {}", out.describe());
            assert!(lines[0].starts_with("vaultdisk: "), "{}", lines[0]);
            assert!(
                lines[0].contains("readable by group or others")
                    && lines[0].contains(&format!("{mode:04o}")),
                "{}",
                lines[0]
            );
        } else {
            assert!(lines.is_empty(), "mode {mode:o}: {}", out.describe());
        }
    }
}

/// Without CAP_IPC_LOCK and with a small RLIMIT_MEMLOCK the daemon locks only its heap
/// (where the round keys are); below that it still serves, and `open` shows one warning.
#[test]
fn memlock_limit_falls_back_to_the_heap_then_warns() {
    let test = "memlock_limit_falls_back_to_the_heap_then_warns";
    if !require(test, &["fuse", "setpriv", "prlimit"]) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let rt = v.dir.path().join("rt");
    let rt_env = format!("VAULTDISK_RUNTIME_DIR={}", s(&rt));
    // Limits may only be lowered here (no CAP_SYS_RESOURCE in every container).
    let hard_kib = fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .map(|h| h.parse::<u64>().map(|b| b / 1024).unwrap_or(u64::MAX))
        .unwrap();
    let mut cases = vec![(64u64, false)];
    if hard_kib >= 1024 {
        // The [heap] of a fresh daemon is a few hundred KiB.
        cases.insert(0, (hard_kib.min(4096), true));
    } else {
        note_skip(
            test,
            "RLIMIT_MEMLOCK hard limit below 1 MiB: heap fallback case not run",
        );
    }
    for (limit_kib, heap_only) in cases {
        let limit = format!("--memlock={0}:{0}", limit_kib * 1024);
        // prlimit first: raising the hard limit may need the capabilities setpriv drops.
        let out = run(
            tool("prlimit"),
            &[
                &limit,
                s(&tool("setpriv")),
                "--bounding-set=-ipc_lock",
                "env",
                &rt_env,
                BIN,
                "open",
                s(&v.backing),
                s(&v.plain),
                "--key-file",
                s(&v.key),
            ],
            None,
        );
        let m = Mount::new(&v.plain);
        let out = out.ok();
        let pid = daemon_pid(&rt, &v.plain);
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
            .unwrap();
        assert_eq!(cap_eff & (1 << 14), 0, "daemon kept CAP_IPC_LOCK");
        let vmlck: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmLck:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        let warned: Vec<&str> = out.stderr.lines().collect();
        if heap_only {
            assert!(vmlck > 0 && vmlck <= limit_kib, "VmLck {vmlck} kB");
            assert!(warned.is_empty(), "{}", out.describe());
        } else {
            assert_eq!(vmlck, 0);
            assert_eq!(warned.len(), 1, "{}", out.describe());
            assert!(
                warned[0].starts_with("vaultdisk: warn: cannot lock the volume's keys in memory"),
                "{}",
                warned[0]
            );
        }
        vd_rt(&rt, &["close", s(&v.plain)]).ok();
        std::mem::forget(m);
    }
}

/// Issue 11 item 1: a PLAIN that is a symlink (to a file outside, or dangling), a directory
/// or a FIFO is refused (exit 1) before anything is mounted, so root's `open` can never be
/// pointed at /etc/shadow by whoever can write PLAIN's directory. Nothing is mounted over the
/// target, the target keeps its bytes and no file is created at a dangling link's target.
#[test]
fn plain_that_is_a_symlink_or_special_file_is_refused() {
    let test = "plain_that_is_a_symlink_or_special_file_is_refused";
    if !require_fuse(test) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let rt = v.dir.path().join("rt");
    let open = |plain: &Path| {
        let out = try_run(
            "env",
            &[
                &format!("VAULTDISK_RUNTIME_DIR={}", s(&rt)),
                BIN,
                "open",
                s(&v.backing),
                s(plain),
                "--key-file",
                s(&v.key),
            ],
            None,
            Duration::from_secs(30),
        )
        .expect("start vaultdisk");
        // Whatever happened, never leave a mount behind (lazily: the daemon then exits).
        let mut mounted = false;
        for p in [plain, &v.dir.path().join("shadow")] {
            if is_mounted(p) {
                mounted = true;
                force_unmount(p);
            }
        }
        assert!(!mounted, "something was mounted:\n{}", out.describe());
        out
    };

    // A symlink to a file outside (the /etc/shadow attack).
    let victim = v.dir.path().join("shadow");
    fs::write(&victim, b"root:$6$secret:19000:0:99999:7:::\n").unwrap();
    let link = v.dir.path().join("plain-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = open(&link);
    out.check_error(&[1]).unwrap();
    assert!(out.stderr.contains("symbolic link"), "{}", out.describe());
    assert_eq!(
        fs::read(&victim).unwrap(),
        b"root:$6$secret:19000:0:99999:7:::\n"
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A dangling symlink: refused, and nothing is created where it points.
    let target = v.dir.path().join("created-through-link");
    let dangling = v.dir.path().join("plain-dangling");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let out = open(&dangling);
    assert!(!is_mounted(&target));
    out.check_error(&[1]).unwrap();
    assert!(out.stderr.contains("symbolic link"), "{}", out.describe());
    assert!(
        fs::symlink_metadata(&target).is_err(),
        "link target created"
    );

    // A directory and a FIFO: not regular files (and the FIFO must not block the open).
    let dir = v.dir.path().join("plain-dir");
    fs::create_dir(&dir).unwrap();
    let out = open(&dir);
    assert!(!is_mounted(&dir));
    out.check_error(&[1]).unwrap();
    assert!(
        out.stderr.contains("not a regular file"),
        "{}",
        out.describe()
    );
    let fifo = v.dir.path().join("plain-fifo");
    sys("mkfifo", &[s(&fifo)]).ok();
    let out = open(&fifo);
    assert!(!is_mounted(&fifo));
    out.check_error(&[1]).unwrap();
    assert!(
        out.stderr.contains("not a regular file"),
        "{}",
        out.describe()
    );
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

/// Issue 11 item 1: PLAIN's directory must be one that only the caller (or root) can change:
/// writable by others without the sticky bit, or owned by another user, is refused (exit 2)
/// and nothing is created or mounted. /tmp-like directories (sticky) are fine, but there a
/// PLAIN owned by another user (who could swap it for a link) is refused too.
#[test]
fn plain_in_a_directory_others_control_is_refused() {
    let test = "plain_in_a_directory_others_control_is_refused";
    if !require_fuse(test) || !require(test, &["root"]) {
        return;
    }
    let v = Vol::new("4M", &[]);
    let rt = v.dir.path().join("rt");
    let open = |plain: &Path| {
        let out = vd_rt(
            &rt,
            &["open", s(&v.backing), s(plain), "--key-file", s(&v.key)],
        );
        if is_mounted(plain) {
            let _ = vd_rt(&rt, &["close", s(plain)]);
            force_unmount(plain);
        }
        out
    };
    let shared = v.dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    let plain = shared.join("plain");

    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let out = open(&plain);
    out.check_error(&[2]).unwrap();
    assert!(
        out.stderr.contains("writable by other users"),
        "{}",
        out.describe()
    );
    assert!(fs::symlink_metadata(&plain).is_err(), "PLAIN created");

    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).unwrap();
    let out = open(&plain);
    out.check_error(&[2]).unwrap();
    assert!(out.stderr.contains("owned by"), "{}", out.describe());
    assert!(fs::symlink_metadata(&plain).is_err(), "PLAIN created");

    // Sticky and world-writable, owned by root (like /tmp): fine for a PLAIN we create...
    std::os::unix::fs::chown(&shared, Some(0), Some(0)).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let out = vd_rt(
        &rt,
        &["open", s(&v.backing), s(&plain), "--key-file", s(&v.key)],
    );
    let m = Mount::new(&plain);
    out.ok();
    assert!(is_mounted(&plain));
    vd_rt(&rt, &["close", s(&plain)]).ok();
    std::mem::forget(m);
    assert!(!is_mounted(&plain));

    // ...but not for an existing PLAIN that another user owns there.
    fs::write(&plain, b"").unwrap();
    std::os::unix::fs::chown(&plain, Some(65534), Some(65534)).unwrap();
    let out = open(&plain);
    out.check_error(&[2]).unwrap();
    assert!(out.stderr.contains("owned by"), "{}", out.describe());
}
