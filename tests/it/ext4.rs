//! A real filesystem on PLAIN (root + loop devices): mkfs.ext4, mount -o loop, close refused
//! while mounted, files intact after close and reopen.

use crate::support::*;
use std::fs;
use std::path::Path;

fn write_files(dir: &Path) -> Vec<(String, String)> {
    let mut sums = Vec::new();
    for (i, len) in [0usize, 1, 4095, 4096, 100_000, 3 * MIB as usize + 17]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}.bin");
        let data = pattern(len, 200 + i as u64);
        fs::write(dir.join(&name), &data).unwrap();
        sums.push((name, sha256(&data)));
    }
    fs::create_dir(dir.join("sub")).unwrap();
    fs::write(dir.join("sub/hello.txt"), b"hello vaultdisk\n").unwrap();
    sums.push(("sub/hello.txt".into(), sha256(b"hello vaultdisk\n")));
    sums
}

fn check_files(dir: &Path, sums: &[(String, String)]) {
    for (name, sum) in sums {
        assert_eq!(&sha256_file(&dir.join(name)), sum, "{name} changed");
    }
}

fn mount_ext4(plain: &Path, mnt: &Path) -> FsMount {
    let guard = FsMount {
        dir: mnt.to_path_buf(),
    };
    sys("mount", &["-o", "loop", s(plain), s(mnt)]).ok();
    assert!(is_mounted(mnt));
    guard
}

#[test]
fn ext4_on_plain_survives_reopen() {
    if !require(
        "ext4_on_plain_survives_reopen",
        &["root", "fuse", "loop", "mkfs.ext4", "e2fsck", "mount"],
    ) {
        return;
    }
    let v = Vol::new("64M", &[]);
    let mnt = v.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();

    let vol = v.open();
    sys("mkfs.ext4", &["-q", "-F", s(&v.plain)]).ok();
    let fsm = mount_ext4(&v.plain, &mnt);
    let sums = write_files(&mnt);
    run("sync", &[] as &[&str], None).ok();
    check_files(&mnt, &sums);

    // PLAIN is held by the loop device under the mounted ext4: close must refuse
    vd(&["close", s(&v.plain)]).fails_with(5);
    assert!(
        is_mounted(&v.plain),
        "a refused close must leave the volume mounted"
    );
    check_files(&mnt, &sums);

    fsm.umount();
    // the loop device is released asynchronously after umount (autoclear): poll close
    let mut last = None;
    let closed = wait_until(std::time::Duration::from_secs(20), || {
        let out = vd(&["close", s(&v.plain)]);
        let done = out.code == 0;
        last = Some(out);
        done
    });
    assert!(
        closed,
        "close after umount failed:\n{}",
        last.unwrap().describe()
    );
    drop(vol);
    assert!(!is_mounted(&v.plain));
    assert!(!v.plain.exists());

    let vol = v.open();
    run(tool("e2fsck"), &["-f", "-n", s(&v.plain)], None).ok();
    let fsm = mount_ext4(&v.plain, &mnt);
    check_files(&mnt, &sums);
    fsm.umount();
    let closed = wait_until(std::time::Duration::from_secs(20), || {
        vd(&["close", s(&v.plain)]).code == 0
    });
    assert!(closed, "second close failed");
    drop(vol);
    assert!(!is_mounted(&v.plain));
}
