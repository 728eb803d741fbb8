//! The keyslot lifecycle on temp-file volumes made by crate::format (PBKDF2 at 1000 iterations).
use super::*;
use crate::format;
use crate::luks2::ReadAt;
use crate::luks2::metadata::Keyslot;
use std::path::PathBuf;

fn cheap_kdf() -> Kdf {
    full_entropy_kdf()
}

/// A fresh 1 MiB volume whose keyslot 0 opens with `b"zero"`.
fn volume() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("v.img");
    format::test_volume(&path, b"zero");
    (dir, path)
}

/// Opens the volume for update and unlocks it with `p`: (backing, header, keyslot, key).
fn unlocked(path: &std::path::Path, p: &[u8]) -> (Backing, Header, u32, VolumeKey) {
    let (dev, header) = device::open_for_update(path).expect("open");
    let (id, vk) = keyslot::unlock(&header.metadata, &dev, p, None).expect("unlock");
    (dev, header, id, vk)
}

fn opens(path: &std::path::Path, p: &[u8]) -> Option<u32> {
    let dev = Backing::open(path, false).expect("open");
    let header = dev.luks2_header().expect("header");
    keyslot::unlock(&header.metadata, &dev, p, None)
        .ok()
        .map(|(id, _)| id)
}

fn new_key(p: &[u8], keyslot: Option<u32>) -> NewKey<'_> {
    NewKey {
        passphrase: p,
        kdf: cheap_kdf(),
        keyslot,
        token: None,
    }
}

#[test]
fn add_key_joins_the_digest_and_opens_the_same_volume_key() {
    let (_dir, path) = volume();
    let (dev, header, opened, vk) = unlocked(&path, b"zero");
    assert_eq!(opened, 0);
    let (id, after) = add_key(&dev, &header, &vk, opened, new_key(b"one", None)).expect("add");
    assert_eq!(id, 1);
    assert_eq!(after.binary.seqid, header.binary.seqid + 1);
    assert_eq!(after.metadata.digest_id_of_keyslot(1), Some(0));
    drop(dev);
    assert_eq!(opens(&path, b"one"), Some(1));
    assert_eq!(opens(&path, b"zero"), Some(0));
    let (dev, header, _, vk1) = unlocked(&path, b"one");
    assert_eq!(vk1.expose_secret(), vk.expose_secret());
    // An explicit keyslot id; then the refusals, with their exit codes.
    let (id, header) = add_key(&dev, &header, &vk, 0, new_key(b"five", Some(5))).expect("add 5");
    assert_eq!(id, 5);
    let code = |r: Result<(u32, Header)>| r.err().map(|e| e.exit_code());
    assert_eq!(
        code(add_key(&dev, &header, &vk, 0, new_key(b"x", Some(5)))),
        Some(5)
    );
    assert_eq!(
        code(add_key(&dev, &header, &vk, 0, new_key(b"x", Some(32)))),
        Some(1)
    );
    assert_eq!(
        code(add_key(&dev, &header, &vk, 9, new_key(b"x", None))),
        Some(4)
    );
    let e = add_key(&dev, &header, &vk, 0, new_key(b"x", Some(5))).expect_err("busy");
    assert_eq!(
        e.to_string(),
        format!("keyslot 5 of {} is in use", path.display())
    );
}

#[test]
fn a_stale_header_is_refused_as_a_concurrent_update() {
    let (_dir, path) = volume();
    let (dev, header, opened, vk) = unlocked(&path, b"zero");
    add_key(&dev, &header, &vk, opened, new_key(b"one", None)).expect("add");
    // `header` is now behind the disk: a second update based on it must not be written.
    let e = add_key(&dev, &header, &vk, opened, new_key(b"two", None)).expect_err("refused");
    assert_eq!(e.exit_code(), 5, "{e}");
    drop(dev);
    assert_eq!(opens(&path, b"two"), None);
}

#[test]
fn remove_keyslot_writes_the_header_then_wipes_the_area() {
    let (_dir, path) = volume();
    let (dev, header, opened, vk) = unlocked(&path, b"zero");
    let (_, header) = add_key(&dev, &header, &vk, opened, new_key(b"one", None)).expect("add");
    let (offset, size) = header.metadata.areas[&1];
    let mut before = vec![0u8; size as usize];
    dev.read_exact_at(&mut before, offset).expect("read");
    let after = remove_keyslot(&dev, &header, 1).expect("remove");
    assert!(!after.metadata.keyslots.contains_key(&1));
    assert_eq!(after.metadata.digests[&0].keyslots.len(), 1);
    let mut now = vec![0u8; size as usize];
    dev.read_exact_at(&mut now, offset).expect("read");
    assert_ne!(now, before, "area wiped");
    let e = remove_keyslot(&dev, &after, 1).expect_err("gone");
    assert_eq!(e.exit_code(), 1);
    // The only keyslot: refused without allow_last, removed with it.
    let e = remove_key(&dev, &after, 0, false).expect_err("only");
    assert_eq!(e.exit_code(), 5);
    assert!(e.to_string().contains("is the only keyslot"), "{e}");
    let empty = remove_key(&dev, &after, 0, true).expect("forced");
    assert!(empty.metadata.keyslots.is_empty());
    drop(dev);
    assert_eq!(opens(&path, b"zero"), None);
}

#[test]
fn change_key_adds_the_new_keyslot_before_removing_the_old() {
    let (_dir, path) = volume();
    let (dev, header, opened, vk) = unlocked(&path, b"zero");
    let (new_id, after) =
        change_key(&dev, &header, &vk, opened, new_key(b"new", None)).expect("change");
    assert_eq!(new_id, 1);
    // Two header writes: add (seqid + 1), then remove (seqid + 2).
    assert_eq!(after.binary.seqid, header.binary.seqid + 2);
    assert_eq!(
        after.metadata.keyslots.keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
    drop(dev);
    assert_eq!(opens(&path, b"new"), Some(1));
    assert_eq!(opens(&path, b"zero"), None);
}

#[test]
fn recovery_key_gets_a_token_and_opens() {
    let (_dir, path) = volume();
    let (dev, header, opened, vk) = unlocked(&path, b"zero");
    let (id, key) = add_recovery_key(&dev, &header, &vk, opened).expect("recovery");
    assert_eq!(id, 1);
    drop(dev);
    let dev = Backing::open(&path, false).expect("open");
    let h = dev.luks2_header().expect("header");
    assert_eq!(
        h.metadata.tokens[&0],
        (crate::token::RECOVERY.to_owned(), vec![1])
    );
    assert!(matches!(
        &h.metadata.keyslots[&1],
        Keyslot::Luks2(k) if k.kdf == full_entropy_kdf()
    ));
    assert_eq!(opens(&path, key.expose_secret()), Some(1));
    // Removing the keyslot drops its token too.
    let (dev, header) = device::open_for_update(&path).expect("open");
    let after = remove_keyslot(&dev, &header, 1).expect("remove");
    assert!(after.metadata.tokens.is_empty());
}
