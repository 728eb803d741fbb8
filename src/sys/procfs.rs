//! Readers of the kernel's /proc and /sys files, all byte-based (a non-UTF-8 mount path or
//! command name anywhere on the host must not make them fail): the mount table
//! (/proc/self/mountinfo), a process's state and start time (`/proc/<pid>/stat`), the loop
//! device backed by a file (/sys/block/loop*/loop/backing_file) and a mount's readahead
//! (`/sys/class/bdi/<dev>/read_ahead_kb`).
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo (the fields vaultdisk uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Field 3, "major:minor" of the mounted device (for FUSE, its bdi name).
    pub dev: String,
    /// Field 5, the mount point, unescaped (any bytes).
    pub mount_point: PathBuf,
    /// The filesystem type after the " - " separator, e.g. "fuse" or "ext4".
    pub fs_type: OsString,
    /// The mount source after the type, e.g. "vaultdisk" (a vaultdisk FUSE mount) or
    /// "/dev/loop3".
    pub source: OsString,
    /// The super options after the source, e.g. "rw,user_id=0,group_id=0".
    pub super_options: OsString,
}

/// Parses mountinfo text (as bytes); lines too short to hold a mount point are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let dev = fields.get(2)?;
            let mount_point = fields.get(4)?;
            // Optional fields end at "-"; the filesystem type and the source follow it.
            let mut after = fields.iter().skip(6).skip_while(|f| **f != b"-").skip(1);
            let mut field = || {
                after
                    .next()
                    .map_or_else(OsString::new, |f| OsString::from_vec(unescape(f)))
            };
            let fs_type = field();
            let source = field();
            let super_options = field();
            Some(MountEntry {
                dev: String::from_utf8_lossy(dev).into_owned(),
                mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
                fs_type,
                source,
                super_options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (octal); anything else,
/// including a backslash not followed by three octal digits, is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(oct) = field.get(i + 1..i + 4)
            && oct.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = oct.iter().fold(0u32, |a, d| a * 8 + u32::from(d - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The mount table of this process's mount namespace.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&fs::read("/proc/self/mountinfo")?))
}

/// Whether `path` (canonical) is a mount point in our mount namespace; false when the
/// mount table cannot be read.
pub fn is_mount_point(path: &Path) -> bool {
    mounts().is_ok_and(|m| m.iter().any(|e| e.mount_point == path))
}

/// The newest mount at `path` (canonical): the last matching line of the mount table.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts().ok()?.into_iter().rfind(|e| e.mount_point == path)
}

/// The loop device (e.g. "/dev/loop3") whose backing file is `path`, if any.
pub fn loop_device_of(path: &Path) -> Option<String> {
    let entries = fs::read_dir("/sys/block").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().starts_with(b"loop") {
            continue;
        }
        let Ok(backing) = fs::read(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if backing_file_is(&backing, path) {
            return Some(format!("/dev/{}", name.to_string_lossy()));
        }
    }
    None
}

/// The backing file of loop device `dev` (e.g. "/dev/loop3"), None when it is not an
/// attached loop device.
pub fn loop_backing_file(dev: &Path) -> Option<PathBuf> {
    let name = dev.strip_prefix("/dev").ok()?;
    if !name.as_os_str().as_bytes().starts_with(b"loop") || name.components().count() != 1 {
        return None;
    }
    let contents = fs::read(Path::new("/sys/block").join(name).join("loop/backing_file")).ok()?;
    let path = contents.strip_suffix(b"\n").unwrap_or(&contents);
    let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
    Some(PathBuf::from(OsStr::from_bytes(path)))
}

/// The process ids listed in /proc.
pub fn pids() -> Vec<u32> {
    fs::read_dir("/proc").map_or_else(
        |_| Vec::new(),
        |d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        },
    )
}

/// The open fds of `pid` with what each links to (`/proc/<pid>/fd`); empty when they cannot
/// be read (the process is gone, or belongs to another user, or is not dumpable and we are
/// not root).
pub fn fd_targets(pid: u32) -> Vec<(u32, PathBuf)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, fs::read_link(e.path()).ok()?))
        })
        .collect()
}

/// Whether a loop device's `backing_file` contents name `path` (the kernel appends a newline,
/// and " (deleted)" once the file is unlinked).
fn backing_file_is(contents: &[u8], path: &Path) -> bool {
    let name = contents.strip_suffix(b"\n").unwrap_or(contents);
    let name = name.strip_suffix(b" (deleted)").unwrap_or(name);
    OsStr::from_bytes(name) == path.as_os_str()
}

/// A process's state letter and start time, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStat {
    /// Field 3: R, S, D, Z, X, ...
    pub state: char,
    /// Field 22: start time in clock ticks since boot (tells a reused pid apart).
    pub start_time: u64,
}

/// The state and start time of `pid`; None when it does not exist.
pub fn process_stat(pid: u32) -> Option<ProcessStat> {
    parse_stat(&fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces, parentheses and any bytes:
/// the fields resume after the last ')'.
pub fn parse_stat(stat: &[u8]) -> Option<ProcessStat> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall; field 3 (state) is index 0 here.
    let start_time = fields.get(19)?.parse().ok()?;
    Some(ProcessStat { state, start_time })
}

/// Threads still listed for `pid` (its leader included); 0 when it is gone.
pub fn threads_left(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Whether `pid` is still the process that started at `start_time`. A zombie counts as gone
/// only once its other threads have exited too: a killed multi-threaded daemon shows its
/// leader as Z while workers are still tearing down and still hold the backing file's lock.
pub fn process_alive(pid: u32, start_time: u64) -> bool {
    match process_stat(pid) {
        Some(s) if s.start_time != start_time => false,
        Some(ProcessStat {
            state: 'Z' | 'X', ..
        }) => threads_left(pid) > 1,
        Some(_) => true,
        None => false,
    }
}

/// Sets the kernel readahead of the mount at `mount_point` (canonical) to `kib` KiB through
/// `/sys/class/bdi/<dev>/read_ahead_kb` (root only). Finds the device in the mount table: a
/// stat of a FUSE mount before its session serves requests would wait for its own reply.
pub fn set_read_ahead_kib(mount_point: &Path, kib: u32) -> io::Result<()> {
    let entry = mount_at(mount_point).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no mountinfo entry for {}", mount_point.display()),
        )
    })?;
    let path = format!("/sys/class/bdi/{}/read_ahead_kb", entry.dev);
    fs::write(&path, kib.to_string()).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape(br"/a\040b\134c"), b"/a b\\c");
        assert_eq!(unescape(br"/x\04"), br"/x\04");
        assert_eq!(unescape(br"/x\9999"), br"/x\9999");
        assert!(is_mount_point(Path::new("/")));
        assert!(!is_mount_point(Path::new("/definitely/not/mounted")));
        assert!(mount_at(Path::new("/")).is_some_and(|e| e.dev.contains(':')));
    }

    #[test]
    fn a_non_utf8_mount_path_breaks_nothing() {
        let mut text = b"22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n".to_vec();
        text.extend_from_slice(b"30 22 0:40 / /mnt/caf\xe9\\040x rw - vfat /dev/sdb1 rw\n");
        text.extend_from_slice(
            b"31 22 0:41 / /tmp/d/plain rw,nosuid shared:5 master:2 - fuse.vaultdisk vaultdisk rw\n",
        );
        text.extend_from_slice(b"short line\n\n");
        let m = parse_mountinfo(&text);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[1].mount_point.as_os_str().as_bytes(), b"/mnt/caf\xe9 x");
        assert_eq!(m[2].mount_point, Path::new("/tmp/d/plain"));
        assert_eq!(m[2].fs_type, "fuse.vaultdisk");
        assert_eq!(m[2].source, "vaultdisk");
        assert_eq!(m[2].super_options, "rw");
        assert_eq!(m[0].super_options, "rw");
        assert_eq!(m[1].source, "/dev/sdb1");
        assert_eq!(m[2].dev, "0:41");
        assert_eq!(m[0].fs_type, "ext4");
    }

    #[test]
    fn stat_lines_with_odd_command_names() {
        let mut line = b"4242 (a) b (\xff) x) S 1 4242 4242 0 -1 4194560 ".to_vec();
        line.extend_from_slice(b"1 0 0 0 0 0 0 0 20 0 1 0 987654 0 0\n");
        let s = parse_stat(&line).unwrap();
        assert_eq!((s.state, s.start_time), ('S', 987654));
        assert_eq!(parse_stat(b"1 (no fields)"), None);
    }

    #[test]
    fn own_process_is_alive_and_start_time_matters() {
        let pid = std::process::id();
        let s = process_stat(pid).unwrap();
        assert_ne!(s.state, 'Z');
        assert!(process_alive(pid, s.start_time));
        assert!(!process_alive(pid, s.start_time + 1));
        assert!(!process_alive(u32::MAX, s.start_time));
    }

    #[test]
    fn own_fds_are_listed() {
        let f = fs::File::open("/proc/self/stat").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f) as u32;
        assert!(pids().contains(&std::process::id()));
        let fds = fd_targets(std::process::id());
        assert!(fds.iter().any(|(n, _)| *n == fd), "{fds:?}");
        assert_eq!(loop_backing_file(Path::new("/dev/sda")), None);
        assert_eq!(loop_backing_file(Path::new("/dev/loop/../sda")), None);
    }

    #[test]
    fn loop_backing_file_names() {
        let p = Path::new("/tmp/a b/plain");
        assert!(backing_file_is(b"/tmp/a b/plain\n", p));
        assert!(backing_file_is(b"/tmp/a b/plain (deleted)\n", p));
        assert!(!backing_file_is(b"/tmp/a b/plain2\n", p));
        assert!(!backing_file_is(b"/tmp/a\xff\n", p));
    }
}
