//! `vaultdisk mount` / `umount` / `status`: ext4 through a loop device (root) or fuse2fs
//! (an unprivileged user), unwinding of failed mounts, busy umount, status fields.

use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A volume with its own runtime directory (so parallel tests do not see each other's
/// entries) and a mount point; on drop runs `vaultdisk umount`, then lazy unmounts.
struct Setup {
    v: Vol,
    rt: PathBuf,
    mnt: PathBuf,
}

impl Setup {
    fn new(size: &str) -> Setup {
        let v = Vol::new(size, &[]);
        let rt = v.dir.path().join("rt");
        let mnt = v.dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Setup { v, rt, mnt }
    }

    /// Runs vaultdisk with VAULTDISK_RUNTIME_DIR pointing at this test's own directory.
    fn vd(&self, args: &[&str]) -> Out {
        let rt = format!("VAULTDISK_RUNTIME_DIR={}", s(&self.rt));
        let mut all = vec![rt.as_str(), BIN];
        all.extend_from_slice(args);
        run("env", &all, None)
    }

    fn mount(&self, extra: &[&str]) -> Out {
        let mut args = vec![
            "mount",
            s(&self.v.backing),
            s(&self.mnt),
            "--key-file",
            s(&self.v.key),
        ];
        args.extend_from_slice(extra);
        self.vd(&args)
    }

    fn umount(&self) -> Out {
        self.vd(&["umount", s(&self.mnt)])
    }

    fn status_json(&self) -> Vec<serde_json::Value> {
        let out = self.vd(&["status", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("status --json");
        v.as_array().expect("array").clone()
    }

    /// Runtime files left behind besides the daemon log.
    fn runtime_leftovers(&self) -> Vec<String> {
        fs::read_dir(&self.rt)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "daemon.log")
                    .collect()
            })
            .unwrap_or_default()
    }

    fn loop_devices(&self) -> String {
        let out = sys("losetup", &["-a"]).ok();
        out.stdout
            .lines()
            .filter(|l| l.contains(s(&self.rt)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let rt = format!("VAULTDISK_RUNTIME_DIR={}", s(&self.rt));
            let _ = try_run(
                "env",
                &[rt.as_str(), BIN, "umount", s(&self.mnt)],
                None,
                Duration::from_secs(30),
            );
        }
        if is_mounted(&self.mnt) {
            force_unmount(&self.mnt);
        }
        // whatever is still served from the runtime dir
        if let Ok(d) = fs::read_dir(&self.rt) {
            for e in d.flatten() {
                let p = e.path();
                if is_mounted(&p) {
                    // only the loop devices over our own file, never others' (`losetup -D`)
                    if let Some(out) = try_run(
                        tool("losetup"),
                        &["-j", s(&p)],
                        None,
                        Duration::from_secs(30),
                    ) {
                        for dev in out.stdout.lines().filter_map(|l| l.split(':').next()) {
                            let _ = try_run(
                                tool("losetup"),
                                &["-d", dev],
                                None,
                                Duration::from_secs(30),
                            );
                        }
                    }
                    force_unmount(&p);
                }
            }
        }
    }
}

const ROOT_NEEDS: &[&str] = &["root", "fuse", "loop", "mkfs.ext4", "mount", "blkid"];

#[test]
fn mount_mkfs_files_survive_umount_and_mount() {
    if !require("mount_mkfs_files_survive_umount_and_mount", ROOT_NEEDS) {
        return;
    }
    let t = Setup::new("64M");
    t.mount(&["--mkfs", "ext4"]).ok();
    assert!(is_mounted(&t.mnt));
    let data = pattern(300_000, 7);
    fs::write(t.mnt.join("a.bin"), &data).unwrap();
    fs::create_dir(t.mnt.join("sub")).unwrap();
    fs::write(t.mnt.join("sub/b.txt"), b"hello\n").unwrap();
    t.umount().ok();
    assert!(!is_mounted(&t.mnt));
    assert_eq!(t.loop_devices(), "", "loop device left after umount");
    assert!(
        t.runtime_leftovers().is_empty(),
        "{:?}",
        t.runtime_leftovers()
    );
    assert!(t.status_json().is_empty());

    // --mkfs never formats over an existing filesystem
    t.mount(&["--mkfs", "ext4"]).ok();
    assert_eq!(sha256_file(&t.mnt.join("a.bin")), sha256(&data));
    assert_eq!(fs::read(t.mnt.join("sub/b.txt")).unwrap(), b"hello\n");
    t.umount().ok();

    // and plain mount (no --mkfs), read-only
    t.mount(&["--read-only"]).ok();
    assert_eq!(sha256_file(&t.mnt.join("a.bin")), sha256(&data));
    assert!(
        fs::write(t.mnt.join("c"), b"x").is_err(),
        "read-only mount took a write"
    );
    let st = t.status_json();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["read_only"], true);
    t.umount().ok();
    assert!(
        t.runtime_leftovers().is_empty(),
        "{:?}",
        t.runtime_leftovers()
    );
}

#[test]
fn mount_status_fields_and_busy_umount() {
    if !require("mount_status_fields_and_busy_umount", ROOT_NEEDS) {
        return;
    }
    let t = Setup::new("32M");
    let out = t.vd(&["status"]).ok();
    assert_eq!(out.stdout.trim(), "no open volumes");
    assert_eq!(t.vd(&["status", "--json"]).ok().stdout.trim(), "[]");

    t.mount(&["--mkfs", "ext4"]).ok();
    let st = t.status_json();
    assert_eq!(st.len(), 1, "{st:?}");
    let e = &st[0];
    assert_eq!(e["backing"], s(&t.v.backing.canonicalize().unwrap()));
    assert_eq!(e["mountpoint"], s(&t.mnt.canonicalize().unwrap()));
    assert!(e["plain"].as_str().unwrap().starts_with(s(&t.rt)), "{e}");
    assert!(
        e["loop_device"].as_str().unwrap().starts_with("/dev/loop"),
        "{e}"
    );
    assert_eq!(e["read_only"], false);
    assert_eq!(e["unlocked_by"], "keyslot 0");
    assert!(e["pid"].as_u64().unwrap() > 1);
    let text = t.vd(&["status"]).ok().stdout;
    assert!(text.starts_with("BACKING"), "{text}");
    assert!(text.contains(s(&t.mnt.canonicalize().unwrap())), "{text}");
    assert!(text.contains("keyslot 0"), "{text}");

    // a file held open under the mount point: busy, exit 5, still mounted
    let held = fs::File::create(t.mnt.join("held")).unwrap();
    t.umount().fails_with(5);
    assert!(is_mounted(&t.mnt));
    drop(held);
    t.umount().ok();
    assert!(!is_mounted(&t.mnt));

    // not a vaultdisk mount: exit 1
    t.umount().fails_with(1);
    t.vd(&["umount", s(t.v.dir.path())]).fails_with(1);
}

#[test]
fn failed_mount_unwinds_everything() {
    if !require("failed_mount_unwinds_everything", ROOT_NEEDS) {
        return;
    }
    let t = Setup::new("32M");
    let before = fingerprint(&t.v.backing);
    // no filesystem and no --mkfs: mount(8) fails
    let out = t.mount(&[]).fails_with(4);
    assert!(out.stderr.contains("mount failed"), "{}", out.describe());
    assert!(!is_mounted(&t.mnt));
    assert_eq!(
        t.loop_devices(),
        "",
        "loop device left after a failed mount"
    );
    assert!(
        t.runtime_leftovers().is_empty(),
        "{:?}",
        t.runtime_leftovers()
    );
    assert!(t.status_json().is_empty());
    assert_eq!(fingerprint(&t.v.backing).sha256, before.sha256);

    // wrong passphrase: exit 2, nothing started
    let bad = write_key(t.v.dir.path(), "bad", b"nope");
    t.vd(&["mount", s(&t.v.backing), s(&t.mnt), "--key-file", s(&bad)])
        .fails_with(2);
    // mount point missing: exit 1
    t.vd(&[
        "mount",
        s(&t.v.backing),
        s(&t.v.dir.path().join("nowhere")),
        "--key-file",
        s(&t.v.key),
    ])
    .fails_with(1);
    // --mkfs with --read-only: exit 1
    t.mount(&["--mkfs", "ext4", "--read-only"]).fails_with(1);
    assert!(
        t.runtime_leftovers().is_empty(),
        "{:?}",
        t.runtime_leftovers()
    );

    // the volume is still usable afterwards
    t.mount(&["--mkfs", "ext4"]).ok();
    t.umount().ok();
}

/// An unprivileged user for the rootless test; removed on drop.
struct TestUser(String);

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = try_run(tool("userdel"), &[self.0.as_str()], None, TIMEOUT);
    }
}

/// An ACL entry giving a test user access to /dev/fuse; removed on drop (the whole ACL
/// when /dev/fuse had none before, so not even a mask entry is left).
struct FuseAcl(Option<(String, bool)>);

impl Drop for FuseAcl {
    fn drop(&mut self) {
        if let Some((user, had_acl)) = self.0.take() {
            let entry = format!("u:{user}");
            let args: &[&str] = if had_acl {
                &["-x", &entry, "/dev/fuse"]
            } else {
                &["-b", "/dev/fuse"]
            };
            let _ = try_run(tool("setfacl"), args, None, TIMEOUT);
        }
    }
}

/// Held by each test that changes /dev/fuse's ACL for its user: one test's cleanup
/// (`setfacl -b`) must not take the access of another test's user away mid-test.
static FUSE_ACL_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialises the tests that use `fuse_access_for` (a panicking holder does not matter).
fn fuse_acl_turn() -> std::sync::MutexGuard<'static, ()> {
    FUSE_ACL_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes /dev/fuse usable by `user`: nothing to do when it is world read-write, else an ACL.
fn fuse_access_for(user: &str) -> Result<FuseAcl, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata("/dev/fuse").map_or(0, |m| m.permissions().mode());
    if mode & 0o006 == 0o006 {
        return Ok(FuseAcl(None));
    }
    if !require("rootless_mount_via_fuse2fs", &["setfacl"]) {
        return Err(format!(
            "/dev/fuse has mode {:o} and setfacl is missing",
            mode & 0o777
        ));
    }
    let had_acl = run(tool("getfacl"), &["-c", "/dev/fuse"], None)
        .stdout
        .lines()
        .any(|l| l.starts_with("mask::") || l.split(':').nth(1).is_some_and(|n| !n.is_empty()));
    let out = run(
        tool("setfacl"),
        &["-m", &format!("u:{user}:rw"), "/dev/fuse"],
        None,
    );
    if out.code != 0 {
        return Err(format!(
            "/dev/fuse has mode {:o} and takes no ACL: {}",
            mode & 0o777,
            out.stderr.trim()
        ));
    }
    Ok(FuseAcl(Some((user.to_string(), had_acl))))
}

fn path_reachable_by_others(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.ancestors()
        .skip(1)
        .all(|a| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

#[test]
fn rootless_mount_via_fuse2fs() {
    let name = "rootless_mount_via_fuse2fs";
    if !require(
        name,
        &["root", "fuse", "fuse2fs", "useradd", "runuser", "mkfs.ext4"],
    ) {
        return;
    }
    if !path_reachable_by_others(Path::new(BIN)) {
        crate::support::note_skip(name, &format!("{BIN} is not reachable by other users"));
        return;
    }
    let user = format!("vdit{}", std::process::id() % 100_000);
    let _ = try_run(tool("userdel"), &[user.as_str()], None, TIMEOUT);
    let made = run(
        tool("useradd"),
        &["-M", "-s", "/bin/sh", user.as_str()],
        None,
    );
    if made.code != 0 {
        crate::support::note_skip(name, &format!("useradd failed: {}", made.stderr.trim()));
        return;
    }
    let _guard = TestUser(user.clone());
    let _turn = fuse_acl_turn();
    // /dev/fuse is often 0600 in containers: give this user (only) access with an ACL, taken
    // back on drop, instead of skipping.
    let _fuse_acl = match fuse_access_for(&user) {
        Ok(acl) => acl,
        Err(why) => {
            crate::support::note_skip(name, &why);
            return;
        }
    };
    let t = Setup::new("32M");
    run(
        "chown",
        &["-R", &format!("{user}:"), s(t.v.dir.path())],
        None,
    )
    .ok();
    run("chmod", &["755", s(t.v.dir.path())], None).ok();
    let as_user = |args: &[&str]| {
        let rt = format!("VAULTDISK_RUNTIME_DIR={}", s(&t.rt));
        let mut all = vec!["-u", user.as_str(), "--", "env", rt.as_str(), BIN];
        all.extend_from_slice(args);
        run(tool("runuser"), &all, None)
    };
    let mount = |extra: &[&str]| {
        let mut a = vec![
            "mount",
            s(&t.v.backing),
            s(&t.mnt),
            "--key-file",
            s(&t.v.key),
        ];
        a.extend_from_slice(extra);
        as_user(&a)
    };
    mount(&["--mkfs", "ext4"]).ok();
    assert!(is_mounted(&t.mnt));
    let st: serde_json::Value =
        serde_json::from_str(&as_user(&["status", "--json"]).ok().stdout).unwrap();
    assert_eq!(st[0]["loop_device"], serde_json::Value::Null, "{st}");
    run(
        tool("runuser"),
        &[
            "-u",
            user.as_str(),
            "--",
            "sh",
            "-c",
            &format!("echo rootless > {}/f", s(&t.mnt)),
        ],
        None,
    )
    .ok();
    as_user(&["umount", s(&t.mnt)]).ok();
    assert!(!is_mounted(&t.mnt));
    mount(&[]).ok();
    // root cannot look into a user's FUSE mount (no allow_other): read it as the user
    let f = t.mnt.join("f");
    let out = run(
        tool("runuser"),
        &["-u", user.as_str(), "--", "cat", s(&f)],
        None,
    )
    .ok();
    assert_eq!(out.stdout, "rootless\n");
    as_user(&["umount", s(&t.mnt)]).ok();
    assert!(!is_mounted(&t.mnt));
}

/// Issue 11 item 1: a mount point that is a symlink is refused (exit 1) and nothing is
/// mounted on the directory it points to; so is one whose parent others may write.
#[test]
fn mount_refuses_a_symlinked_mount_point() {
    if !require("mount_refuses_a_symlinked_mount_point", ROOT_NEEDS) {
        return;
    }
    let t = Setup::new("64M");
    let link = t.v.dir.path().join("mnt-link");
    std::os::unix::fs::symlink(&t.mnt, &link).unwrap();
    let rt = format!("VAULTDISK_RUNTIME_DIR={}", s(&t.rt));
    let out = run(
        "env",
        &[
            rt.as_str(),
            BIN,
            "mount",
            s(&t.v.backing),
            s(&link),
            "--key-file",
            s(&t.v.key),
            "--mkfs",
            "ext4",
        ],
        None,
    );
    let mounted = is_mounted(&t.mnt);
    assert!(!mounted, "mounted through the symlink:\n{}", out.describe());
    out.check_error(&[1]).unwrap();
    assert!(out.stderr.contains("symbolic link"), "{}", out.describe());
    assert_eq!(t.loop_devices(), "");
    assert!(t.status_json().is_empty());

    // A mount point in a directory others may write (not sticky) is refused too.
    use std::os::unix::fs::PermissionsExt;
    let shared = t.v.dir.path().join("shared");
    fs::create_dir_all(shared.join("mnt")).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let out = t.vd(&[
        "mount",
        s(&t.v.backing),
        s(&shared.join("mnt")),
        "--key-file",
        s(&t.v.key),
    ]);
    assert!(!is_mounted(&shared.join("mnt")));
    out.check_error(&[2]).unwrap();
    assert!(
        out.stderr.contains("writable by other users"),
        "{}",
        out.describe()
    );
}

/// Issue 11 item 6: with the runtime directory deleted while volumes are open (a tmpfiles or
/// /tmp cleaner, `rm -rf /run/vaultdisk`), `status` still lists them from the mount table
/// and the daemons, and `close` / `umount` still work without leaking a daemon, a mount or
/// a loop device.
#[test]
fn status_close_and_umount_survive_a_deleted_runtime_dir() {
    let test = "status_close_and_umount_survive_a_deleted_runtime_dir";
    if !require(test, ROOT_NEEDS) {
        return;
    }
    let t = Setup::new("32M");
    t.mount(&["--mkfs", "ext4"]).ok();
    let other = Vol::new("8M", &[]);
    t.vd(&[
        "open",
        s(&other.backing),
        s(&other.plain),
        "--key-file",
        s(&other.key),
    ])
    .ok();
    let _guard = Mount::new(&other.plain);
    let before = t.status_json();
    assert_eq!(before.len(), 2, "{before:?}");

    // rm -rf cannot remove the mounted plain-*.img of `mount`, so it fails part way: what
    // matters is that every registry entry and record is gone.
    let _ = sys("rm", &["-rf", s(&t.rt)]);
    let json_left: Vec<String> = t
        .runtime_leftovers()
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(json_left.is_empty(), "{json_left:?}");

    let after = t.status_json();
    let key = |v: &serde_json::Value| v["plain"].as_str().unwrap_or("").to_string();
    let (mut before, mut after) = (before, after);
    before.sort_by_key(key);
    after.sort_by_key(key);
    assert_eq!(after, before, "status --json after the runtime dir went");
    let text = t.vd(&["status"]).ok().stdout;
    assert!(
        text.contains(s(&other.plain.canonicalize().unwrap())),
        "{text}"
    );
    assert!(text.contains(s(&t.mnt.canonicalize().unwrap())), "{text}");

    let pids: Vec<u64> = after.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    t.vd(&["close", s(&other.plain)]).ok();
    assert!(!is_mounted(&other.plain));
    t.umount().ok();
    assert!(!is_mounted(&t.mnt));
    assert_eq!(t.loop_devices(), "", "loop device left after umount");
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(10), || !Path::new(&format!(
                "/proc/{pid}"
            ))
            .exists()),
            "daemon {pid} still running"
        );
    }
    assert!(t.status_json().is_empty());
    assert!(!other.plain.exists(), "PLAIN created by open is removed");
}

/// Restores /etc/fuse.conf on drop (a test removes `user_allow_other` from it for a while).
struct FuseConf(Option<Vec<u8>>);

impl Drop for FuseConf {
    fn drop(&mut self) {
        if let Some(bytes) = self.0.take() {
            fs::write("/etc/fuse.conf", bytes).unwrap();
        }
    }
}

/// Issue 11 item 10: `open --allow-other` by a user while /etc/fuse.conf lacks
/// `user_allow_other` says exactly that (exit 1, one line), not a /dev/fuse hint, and
/// leaves nothing mounted or created.
#[test]
fn allow_other_without_user_allow_other_says_so() {
    let name = "allow_other_without_user_allow_other_says_so";
    if !require(name, &["root", "fuse", "useradd", "runuser"]) {
        return;
    }
    if !path_reachable_by_others(Path::new(BIN)) {
        crate::support::note_skip(name, &format!("{BIN} is not reachable by other users"));
        return;
    }
    let user = format!("vdao{}", std::process::id() % 100_000);
    let _ = try_run(tool("userdel"), &[user.as_str()], None, TIMEOUT);
    let made = run(
        tool("useradd"),
        &["-M", "-s", "/bin/sh", user.as_str()],
        None,
    );
    if made.code != 0 {
        crate::support::note_skip(name, &format!("useradd failed: {}", made.stderr.trim()));
        return;
    }
    let _guard = TestUser(user.clone());
    let _turn = fuse_acl_turn();
    let _fuse_acl = match fuse_access_for(&user) {
        Ok(acl) => acl,
        Err(why) => {
            crate::support::note_skip(name, &why);
            return;
        }
    };
    let original = fs::read("/etc/fuse.conf").ok();
    let allowed = |text: &[u8]| {
        text.split(|&b| b == b'\n')
            .any(|l| l.trim_ascii() == b"user_allow_other")
    };
    let _conf = match &original {
        Some(text) if allowed(text) => {
            let kept: Vec<&[u8]> = text
                .split(|&b| b == b'\n')
                .filter(|l| l.trim_ascii() != b"user_allow_other")
                .collect();
            let restore = FuseConf(Some(text.clone()));
            fs::write("/etc/fuse.conf", kept.join(&b'\n')).unwrap();
            restore
        }
        _ => FuseConf(None),
    };
    let v = Vol::new("4M", &[]);
    let rt = v.dir.path().join("rt");
    run("chown", &["-R", &format!("{user}:"), s(v.dir.path())], None).ok();
    run("chmod", &["755", s(v.dir.path())], None).ok();
    let rt_env = format!("VAULTDISK_RUNTIME_DIR={}", s(&rt));
    let out = run(
        tool("runuser"),
        &[
            "-u",
            user.as_str(),
            "--",
            "env",
            rt_env.as_str(),
            BIN,
            "open",
            s(&v.backing),
            s(&v.plain),
            "--key-file",
            s(&v.key),
            "--allow-other",
        ],
        None,
    );
    let _m = Mount::new(&v.plain);
    let out = out.fails_with(1);
    one_error_line(&out.stderr).unwrap();
    assert!(
        out.stderr.contains("--allow-other") && out.stderr.contains("user_allow_other"),
        "{}",
        out.describe()
    );
    assert!(out.stderr.contains("/etc/fuse.conf"), "{}", out.describe());
    assert!(!out.stderr.contains("/dev/fuse"), "{}", out.describe());
    assert!(!is_mounted(&v.plain));
    assert!(!v.plain.exists(), "PLAIN left behind");
}
