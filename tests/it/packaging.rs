//! The Debian package (issue 18): scripts/build-deb.sh makes a .deb with dpkg-deb, `apt-get
//! install` puts it on this machine, and the installed files work: `vaultdisk --version`,
//! `man -w`, bash completion of a verb, `systemd-analyze verify` of vaultdisk@.service, a
//! format/open/close round trip from /usr/bin/vaultdisk, and the unit's ExecStart/ExecStop
//! lines run exactly as systemd would run them (with NOTIFY_SOCKET) on a /etc/crypttab entry.
//! What is not tested: the unit under a running systemd (PID 1 here is not systemd, and a
//! user manager cannot start in this container), so ordering against local-fs.target is
//! checked by systemd-analyze only.
//!
//! The package holds the binary under test (the debug build cargo made), so this checks the
//! packaging, not a release build; `scripts/build-deb.sh` without VAULTDISK_BIN builds one.
use crate::support::*;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Removes the package and restores /etc/crypttab on drop.
struct Installed {
    crypttab_before: Option<Vec<u8>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        match &self.crypttab_before {
            Some(b) => {
                let _ = fs::write("/etc/crypttab", b);
            }
            None => {
                let _ = fs::remove_file("/etc/crypttab");
            }
        }
        let _ = try_run(
            "apt-get",
            &["purge", "-y", "-qq", "vaultdisk"],
            None,
            Duration::from_secs(120),
        );
    }
}

#[test]
fn the_deb_installs_and_its_files_work() {
    if !require(
        "packaging::the_deb_installs_and_its_files_work",
        &[
            "root",
            "fuse",
            "dpkg-deb",
            "dpkg-shlibdeps",
            "apt-get",
            "man",
            "systemd-analyze",
            "cryptsetup",
        ],
    ) {
        return;
    }
    if Path::new("/usr/bin/vaultdisk").exists()
        && !Command::new("dpkg")
            .args(["-s", "vaultdisk"])
            .output()
            .unwrap()
            .status
            .success()
    {
        panic!("/usr/bin/vaultdisk exists and is not from the package: will not overwrite it");
    }
    let t = temp();
    let out_dir = t.path().join("deb");
    let build = Command::new("bash")
        .arg(repo_file("scripts/build-deb.sh"))
        .arg(&out_dir)
        .env("VAULTDISK_BIN", BIN)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "build-deb.sh failed: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let deb = String::from_utf8(build.stdout).unwrap().trim().to_string();
    assert!(deb.ends_with(".deb") && Path::new(&deb).exists(), "{deb}");
    let fields = sys(
        "dpkg-deb",
        &["-f", &deb, "Package", "Depends", "Recommends"],
    )
    .ok()
    .stdout;
    assert!(fields.contains("Package: vaultdisk"), "{fields}");
    assert!(
        fields.contains("libc6 (>=") && fields.contains("fuse3"),
        "{fields}"
    );
    assert!(
        fields.contains("e2fsprogs") && fields.contains("fuse2fs"),
        "{fields}"
    );

    let _installed = Installed {
        crypttab_before: fs::read("/etc/crypttab").ok(),
    };
    sys(
        "apt-get",
        &["install", "-y", "-qq", "--no-install-recommends", &deb],
    )
    .ok();

    let installed = Path::new("/usr/bin/vaultdisk");
    let version = run(installed, &["--version"], None).ok().stdout;
    assert_eq!(version, vd(&["--version"]).ok().stdout);
    for page in ["vaultdisk", "vaultdisk-open", "vaultdisk-crypttab"] {
        let p = sys("man", &["-w", page]).ok().stdout;
        assert!(p.trim().starts_with("/usr/share/man/man8/"), "{page}: {p}");
    }
    let files = sys("dpkg", &["-L", "vaultdisk"]).ok().stdout;
    for f in [
        "/usr/share/bash-completion/completions/vaultdisk",
        "/usr/share/zsh/vendor-completions/_vaultdisk",
        "/usr/share/fish/vendor_completions.d/vaultdisk.fish",
        "/lib/systemd/system/vaultdisk@.service",
        "/usr/share/doc/vaultdisk/copyright",
    ] {
        assert!(
            files.lines().any(|l| l == f),
            "{f} not in the package:\n{files}"
        );
    }
    // Tab completion from the installed script: "vaultdisk cry<TAB>" offers crypttab.
    let comp = sys(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/vaultdisk; \
             COMP_WORDS=(vaultdisk cry); COMP_CWORD=1; COMP_LINE='vaultdisk cry'; COMP_POINT=13; \
             _vaultdisk vaultdisk cry vaultdisk; printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    )
    .ok()
    .stdout;
    assert_eq!(comp.trim(), "crypttab", "{comp}");

    // The unit file as installed passes systemd's own checks (man page reference included).
    let unit_text = fs::read_to_string("/lib/systemd/system/vaultdisk@.service").unwrap();
    let instance = t.path().join("vaultdisk@check.service");
    fs::write(&instance, &unit_text).unwrap();
    sys("systemd-analyze", &["verify", s(&instance)]).ok();

    // A round trip with the installed binary.
    let key = write_key(t.path(), "key", PASS);
    let backing = t.path().join("v.img");
    let plain = t.path().join("plain");
    let mut fmt = vec!["format", s(&backing), "--size", "8M", "--key-file", s(&key)];
    fmt.extend_from_slice(CHEAP_PBKDF2);
    run(installed, &fmt, None).ok();
    run(
        installed,
        &["open", s(&backing), s(&plain), "--key-file", s(&key)],
        None,
    )
    .ok();
    let _m = Mount::new(&plain);
    write_plain(&plain, 0, b"installed");
    run(installed, &["close", s(&plain)], None).ok();
    assert!(!is_mounted(&plain));

    // ExecStart/ExecStop exactly as systemd runs them for vaultdisk@NAME, on an entry of
    // /etc/crypttab, with NOTIFY_SOCKET as systemd sets it for Type=notify.
    let name = format!("pkg-{}", std::process::id());
    let mut table = fs::read_to_string("/etc/crypttab").unwrap_or_default();
    table.push_str(&format!("{name} {} {} luks\n", s(&backing), s(&key)));
    fs::write("/etc/crypttab", table).unwrap();
    let exec = |key: &str| -> Vec<String> {
        let line = unit_text
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit"));
        line.replace("%I", &name)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let start = exec("ExecStart=");
    assert_eq!(start[0], "/usr/bin/vaultdisk");
    let sock_path = t.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let status = Command::new(&start[0])
        .args(&start[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ExecStart failed");
    let mut buf = [0u8; 128];
    let n = sock.recv(&mut buf).expect("no READY=1 from ExecStart");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.starts_with("READY=1\nMAINPID="), "{msg:?}");
    let mapper = crate::support::run(installed, &["crypttab", "list", "--json"], None)
        .ok()
        .stdout;
    let v: serde_json::Value = serde_json::from_str(&mapper).unwrap();
    let entry = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["open"], true, "{entry}");
    let served = entry["plain"].as_str().unwrap().to_string();
    assert_eq!(read_range(Path::new(&served), 0, 9), b"installed");
    let stop = exec("ExecStop=");
    run(&stop[0], &stop[1..], None).ok();
    assert!(!is_mounted(Path::new(&served)));
}
