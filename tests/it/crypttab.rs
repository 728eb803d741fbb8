//! `vaultdisk crypttab open|close|list` (issue 18): crypttab(5) lines naming volumes that
//! cryptsetup made, by UUID= and LABEL= on loop devices and by PARTUUID= on a GPT image
//! from sgdisk (partition 2 formatted by cryptsetup through `losetup -o/--sizelimit`), the
//! plaintext written through one open and read back through the next; the command line each
//! option becomes; sd_notify READY=1 with the daemon as MAINPID; x-vaultdisk.mount; bad
//! entries (one line each, the right exit code), nofail and noauto.
use crate::support::*;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `cryptsetup luksFormat` with a cheap KDF and a label.
fn luks_format(target: &Path, key: &Path, label: &str) {
    sys(
        "cryptsetup",
        &[
            "luksFormat",
            "-q",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--label",
            label,
            "--key-file",
            s(key),
            s(target),
        ],
    )
    .ok();
}

fn luks_uuid(target: &Path) -> String {
    sys("cryptsetup", &["luksUUID", s(target)])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// A name no other test (or earlier run) uses: PLAIN is RUNTIME_DIR/mapper/NAME.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// `crypttab list --json` of `table`, entry `name`.
fn listed(table: &Path, name: &str) -> serde_json::Value {
    let out = vd(&["crypttab", "list", "--json", "--file", s(table)]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed: {v}"))
}

/// Closes every entry of the table on drop, so a failed assertion leaves nothing mounted.
struct Opened<'a>(&'a Path);
impl Drop for Opened<'_> {
    fn drop(&mut self) {
        let _ = try_run(
            BIN,
            &["crypttab", "close", "--file", s(self.0)],
            None,
            Duration::from_secs(60),
        );
    }
}

#[test]
fn opens_by_uuid_label_and_partuuid_and_data_survives_a_reopen() {
    if !require(
        "crypttab::opens_by_uuid_label_and_partuuid_and_data_survives_a_reopen",
        &["root", "loop", "fuse", "cryptsetup", "sgdisk"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "key", PASS);
    // Two whole-device volumes and a GPT image whose partition 2 holds the third.
    let a = t.path().join("a.img");
    let b = t.path().join("b.img");
    for (f, label) in [(&a, "ct-a"), (&b, "ct-b")] {
        fs::File::create(f).unwrap().set_len(24 * MIB).unwrap();
        luks_format(f, &key, &unique(label));
    }
    let img = t.path().join("disk.img");
    fs::File::create(&img).unwrap().set_len(56 * MIB).unwrap();
    sys("sgdisk", &["-n", "1:2048:+8M", "-n", "2:0:+40M", s(&img)]).ok();
    let info = sys("sgdisk", &["-i", "2", s(&img)]).ok().stdout;
    let partuuid = info
        .lines()
        .find_map(|l| l.strip_prefix("Partition unique GUID: "))
        .unwrap()
        .trim()
        .to_string();
    {
        let off = (2048 * 512 + 8 * MIB).to_string();
        let size = (40 * MIB).to_string();
        let lo = sys(
            "losetup",
            &["-f", "--show", "-o", &off, "--sizelimit", &size, s(&img)],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
        luks_format(Path::new(&lo), &key, "ct-part");
        sys("losetup", &["-d", &lo]).ok();
    }
    let uuid_a = luks_uuid(&a);
    let lo_a = LoopDev::attach(&a);
    let lo_b = LoopDev::attach(&b);
    let lo_img = LoopDev::attach(&img);

    let (na, nb, nc) = (unique("ct-a"), unique("ct-b"), unique("ct-c"));
    let table = t.path().join("crypttab");
    fs::write(
        &table,
        format!(
            "# made by the test\n\
             {na} UUID={uuid_a} {key} luks,discard\n\
             {nb} LABEL={lb} {key} luks\n\
             {nc}\tPARTUUID={partuuid}\t{key}\tluks,x-systemd.device-timeout=0\n",
            key = s(&key),
            lb = unique("ct-b"),
        ),
    )
    .unwrap();
    let _guard = Opened(&table);

    // What each line resolves to: the loop devices, partition 2 of the image's.
    let e = listed(&table, &na);
    assert_eq!(e["resolved"]["path"], lo_a.dev.as_str(), "{e}");
    assert_eq!(listed(&table, &nb)["resolved"]["path"], lo_b.dev.as_str());
    let c = listed(&table, &nc);
    assert_eq!(c["resolved"]["path"], lo_img.dev.as_str(), "{c}");
    assert_eq!(c["resolved"]["partition"], 2, "{c}");
    assert_eq!(c["open"], false);

    vd(&["crypttab", "open", "--file", s(&table)]).ok();
    let mut written = Vec::new();
    for (i, name) in [&na, &nb, &nc].into_iter().enumerate() {
        let e = listed(&table, name);
        assert_eq!(e["open"], true, "{e}");
        let plain = PathBuf::from(e["plain"].as_str().unwrap());
        assert!(is_mounted(&plain), "{}", plain.display());
        let data = pattern(200 * KIB as usize, 40 + i as u64);
        write_plain(&plain, 12345, &data);
        written.push((plain, data));
    }
    // The partition's volume has the partition's size less the header.
    assert_eq!(
        fs::metadata(&written[2].0).unwrap().len(),
        40 * MIB - DATA_OFFSET
    );
    // Opening again is not an error (restart-safe): each is already open.
    vd(&["crypttab", "open", "--file", s(&table)]).ok();

    vd(&["crypttab", "close", "--file", s(&table)]).ok();
    for (plain, _) in &written {
        assert!(!is_mounted(plain));
    }
    vd(&["crypttab", "open", &na, &nb, &nc, "--file", s(&table)]).ok();
    for (plain, data) in &written {
        assert_eq!(&read_range(plain, 12345, data.len() as u64), data);
    }
    vd(&["crypttab", "close", &nc, "--file", s(&table)]).ok();
    assert!(!is_mounted(&written[2].0));
    assert!(is_mounted(&written[0].0));
    vd(&["crypttab", "close", "--file", s(&table)]).ok();
    // cryptsetup still accepts all three.
    for dev in [Path::new(&lo_a.dev), Path::new(&lo_b.dev)] {
        assert!(cryptsetup_accepts(dev, &key));
    }
}

#[test]
fn each_option_becomes_the_open_flag_it_names() {
    let t = temp();
    let table = t.path().join("crypttab");
    fs::write(
        &table,
        "full /dev/vdz1 /etc/k keyfile-offset=3,keyfile-size=64,key-slot=2,header=/boot/h,readonly,discard,tries=5,frobnicate\n\
         ask /srv/disk.img none\n\
         lazy /srv/lazy.img - noauto\n\
         mnt /srv/fs.img /etc/k2 x-vaultdisk.mount=/mnt/x,x-vaultdisk.fstype=xfs\n",
    )
    .unwrap();
    let out = vd(&["crypttab", "open", "--dry-run", "--file", s(&table)]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    // RUNTIME_DIR/mapper/full, as `list` names it.
    let full_plain = listed(&table, "full")["plain"]
        .as_str()
        .unwrap()
        .to_string();
    let runtime = Path::new(&full_plain)
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .display()
        .to_string();
    assert_eq!(
        lines,
        vec![
            format!(
                "full: vaultdisk --kdf-time-limit 60 open /dev/vdz1 {runtime}/mapper/full --key-file /etc/k --keyfile-offset 3 --keyfile-size 64 --key-slot 2 --header /boot/h --read-only --allow-discards"
            ),
            format!("ask: vaultdisk --kdf-time-limit 60 open /srv/disk.img {runtime}/mapper/ask"),
            "mnt: vaultdisk --kdf-time-limit 60 mount /srv/fs.img /mnt/x --fs-type xfs --key-file /etc/k2".to_string(),
        ],
        "{}",
        out.describe()
    );
    // The unknown option is a warning on stderr, not silence; noauto left "lazy" out.
    assert!(
        out.stderr.contains("unknown option \"frobnicate\" ignored"),
        "{}",
        out.describe()
    );
    // Named, a noauto entry is opened; close --dry-run names the matching close.
    let out = vd(&["crypttab", "open", "lazy", "--dry-run", "--file", s(&table)]).ok();
    assert!(
        out.stdout
            .starts_with("lazy: vaultdisk --kdf-time-limit 60 open /srv/lazy.img")
    );
    let out = vd(&[
        "crypttab",
        "close",
        "mnt",
        "full",
        "--dry-run",
        "--file",
        s(&table),
    ])
    .ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        vec![
            "mnt: vaultdisk umount /mnt/x".to_string(),
            format!("full: vaultdisk close {runtime}/mapper/full"),
        ]
    );
}

#[test]
fn bad_entries_fail_with_one_line_and_nofail_goes_on() {
    if !require(
        "crypttab::bad_entries_fail_with_one_line_and_nofail_goes_on",
        &["fuse", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "key", PASS);
    let wrong = write_key(t.path(), "wrong", b"not the passphrase");
    let vol = t.path().join("v.img");
    fs::File::create(&vol).unwrap().set_len(24 * MIB).unwrap();
    luks_format(&vol, &key, "ct-bad");
    let before = sha256_file(&vol);
    let (good, bad) = (unique("ct-good"), unique("ct-bad"));
    let table = t.path().join("crypttab");
    fs::write(
        &table,
        format!(
            "{bad} {vol} {wrong} luks\n\
             plainone {vol} {key} plain,cipher=aes-cbc-essiv:sha256\n\
             gone UUID=00000000-0000-0000-0000-00000000dead {key}\n",
            vol = s(&vol),
            wrong = s(&wrong),
            key = s(&key)
        ),
    )
    .unwrap();
    let _guard = Opened(&table);
    // A name the table lacks: usage, nothing opened.
    vd(&["crypttab", "open", "nosuch", "--file", s(&table)]).fails_with(1);
    // A missing table.
    vd(&["crypttab", "list", "--file", s(&t.path().join("none"))]).fails_with(1);
    // Wrong key: exit 2 after one attempt (a key file gets one).
    vd(&["crypttab", "open", &bad, "--file", s(&table)]).fails_with(2);
    // An option vaultdisk cannot honour is refused, never dropped.
    let out = vd(&["crypttab", "open", "plainone", "--file", s(&table)]).fails_with(1);
    assert!(
        out.stderr.contains("\"plain\" is not supported"),
        "{}",
        out.describe()
    );
    // A UUID no device has: exit 4.
    let out = vd(&["crypttab", "open", "gone", "--file", s(&table)]).fails_with(4);
    assert!(out.stderr.contains("UUID=00000000"), "{}", out.describe());
    assert_eq!(
        sha256_file(&vol),
        before,
        "a failed open changed the volume"
    );

    // nofail: the bad entry is a warning and the good one still opens.
    fs::write(
        &table,
        format!(
            "{bad} {vol} {wrong} luks,nofail\n{good} {vol} {key} luks,readonly\n",
            vol = s(&vol),
            wrong = s(&wrong),
            key = s(&key)
        ),
    )
    .unwrap();
    let out = vd(&["crypttab", "open", "--file", s(&table)]).ok();
    assert!(
        out.stderr.contains("nofail: going on"),
        "{}",
        out.describe()
    );
    assert_eq!(listed(&table, &good)["open"], true);
    assert_eq!(listed(&table, &bad)["open"], false);
    vd(&["crypttab", "close", "--file", s(&table)]).ok();
    assert_eq!(listed(&table, &good)["open"], false);
}

#[test]
fn ready_is_sent_to_notify_socket_with_the_daemon_as_main_pid() {
    if !require(
        "crypttab::ready_is_sent_to_notify_socket_with_the_daemon_as_main_pid",
        &["fuse", "cryptsetup"],
    ) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "key", PASS);
    let vol = t.path().join("v.img");
    fs::File::create(&vol).unwrap().set_len(24 * MIB).unwrap();
    luks_format(&vol, &key, "ct-notify");
    let name = unique("ct-notify");
    let table = t.path().join("crypttab");
    fs::write(&table, format!("{name} {} {}\n", s(&vol), s(&key))).unwrap();
    let _guard = Opened(&table);
    let sock_path = t.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let status = Command::new(BIN)
        .args(["crypttab", "open", &name, "--file", s(&table)])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 within 60 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    let status_json: serde_json::Value =
        serde_json::from_str(&vd(&["status", "--json"]).ok().stdout).unwrap();
    let plain = listed(&table, &name)["plain"].as_str().unwrap().to_string();
    let pid = status_json
        .as_array()
        .or_else(|| status_json["volumes"].as_array())
        .unwrap()
        .iter()
        .find(|v| v["plain"] == plain.as_str())
        .map(|v| v["pid"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("{plain} not in status: {status_json}"));
    assert_eq!(msg, format!("READY=1\nMAINPID={pid}\n"));
    vd(&["crypttab", "close", &name, "--file", s(&table)]).ok();
    // The daemon that systemd would watch is gone after close (a zombie until its parent,
    // here PID 1 of the test machine, reaps it).
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    };
    assert!(
        wait_until(Duration::from_secs(10), || !alive()),
        "daemon {pid} still running"
    );
}

#[test]
fn an_entry_with_a_mount_point_mounts_its_filesystem() {
    if !require(
        "crypttab::an_entry_with_a_mount_point_mounts_its_filesystem",
        &["root", "loop", "fuse", "mkfs.ext4"],
    ) {
        return;
    }
    let v = Vol::new("32M", &[]);
    let dir = v.dir.path().join("mnt");
    fs::create_dir(&dir).unwrap();
    vd(&[
        "mount",
        s(&v.backing),
        s(&dir),
        "--key-file",
        s(&v.key),
        "--mkfs",
        "ext4",
    ])
    .ok();
    fs::write(dir.join("hello.txt"), b"from the first mount").unwrap();
    vd(&["umount", s(&dir)]).ok();
    assert!(!dir.join("hello.txt").exists());

    let name = unique("ct-mnt");
    let table = v.dir.path().join("crypttab");
    fs::write(
        &table,
        format!(
            "{name} {} {} x-vaultdisk.mount={}\n",
            s(&v.backing),
            s(&v.key),
            s(&dir)
        ),
    )
    .unwrap();
    let _guard = Opened(&table);
    vd(&["crypttab", "open", &name, "--file", s(&table)]).ok();
    assert_eq!(
        fs::read(dir.join("hello.txt")).unwrap(),
        b"from the first mount"
    );
    assert_eq!(listed(&table, &name)["open"], true);
    vd(&["crypttab", "close", &name, "--file", s(&table)]).ok();
    assert!(!is_mounted(&dir));
    assert!(!dir.join("hello.txt").exists());
}

#[test]
fn open_by_hand_notifies_systemd_too() {
    if !require("crypttab::open_by_hand_notifies_systemd_too", &["fuse"]) {
        return;
    }
    let v = Vol::new("8M", &[]);
    let sock_path = v.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let _m = Mount::new(&v.plain);
    let status = Command::new(BIN)
        .args(["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut buf = [0u8; 128];
    let n = sock.recv(&mut buf).expect("no READY=1 from open");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    let status_json: serde_json::Value =
        serde_json::from_str(&vd(&["status", "--json"]).ok().stdout).unwrap();
    let plain = v.plain.canonicalize().unwrap();
    let pid = status_json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["plain"] == s(&plain))
        .map(|e| e["pid"].as_u64().unwrap())
        .unwrap();
    assert_eq!(msg, format!("READY=1\nMAINPID={pid}\n"));
}
