//! The unlock path every verb shares: which keyslots may open the data.

use crate::support::*;
use std::path::{Path, PathBuf};

/// A cryptsetup LUKS2 volume (2 MiB data offset, 4096-byte sectors) whose data the oracle
/// wrote under a known volume key: keyslot 0 holds that key under `bound`, keyslot 1 (added
/// with `luksAddKey --unbound`) holds some other 512-bit key under `unbound`.
struct UnboundFixture {
    img: PathBuf,
    bound: PathBuf,
    unbound: PathBuf,
    plain: Vec<u8>,
}

fn unbound_fixture(dir: &Path) -> UnboundFixture {
    let bound = write_key(dir, "bound", PASS);
    let unbound = write_key(dir, "unbound", b"the unbound one");
    let vk = pattern(64, 91);
    let vk_file = data_file(dir, "vk.bin", &vk);
    let img = dir.join("cs.img");
    set_len(&img, 3 * MIB);
    let cheap = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
    let mut args = vec![
        "luksFormat",
        "-q",
        "--type",
        "luks2",
        "--key-file",
        s(&bound),
        "--volume-key-file",
        s(&vk_file),
        "--key-size",
        "512",
        "--sector-size",
        "4096",
        "--luks2-metadata-size",
        "64k",
        "--luks2-keyslots-size",
        "1m",
    ];
    args.extend_from_slice(&cheap);
    args.push(s(&img));
    sys("cryptsetup", &args).ok();
    let mut args = vec!["luksAddKey", "-q", "--unbound", "-s", "512"];
    args.extend_from_slice(&cheap);
    args.extend_from_slice(&[s(&img), s(&unbound)]);
    sys("cryptsetup", &args).ok();
    let j = cryptsetup_json(&img);
    assert_eq!(j["digests"]["1"]["keyslots"][0], "1", "{j}");
    assert_eq!(
        j["digests"]["1"]["segments"],
        serde_json::json!([]),
        "keyslot 1 must be unbound: {j}"
    );
    assert_eq!(j["segments"]["0"]["offset"], "2097152");
    let plain = pattern(MIB as usize, 92);
    let plain_file = data_file(dir, "plain.bin", &plain);
    oracle_encrypt_into(&hex(&vk), &plain_file, &img, 2 * MIB, 4096);
    UnboundFixture {
        img,
        bound,
        unbound,
        plain,
    }
}

/// Issue 11 item 2: a keyslot whose digest is not bound to the data segment (cryptsetup
/// `luksAddKey --unbound`, like its test image luks2_keyslot_unassigned.img) holds another key.
/// It must never be used as the volume key: open, digest and --key-slot refuse it (no mount,
/// nothing written); the bound keyslot gives the plaintext the oracle wrote.
#[test]
fn unbound_keyslot_never_opens_the_data() {
    let test = "unbound_keyslot_never_opens_the_data";
    if !require(test, &["fuse", "cryptsetup", "python3-cryptography"]) {
        return;
    }
    let t = temp();
    let f = unbound_fixture(t.path());
    let (img, plain_path) = (s(&f.img), t.path().join("plain"));
    let pp = s(&plain_path);
    // cryptsetup itself does not take the unbound key as the volume's key.
    assert!(cryptsetup_accepts(&f.img, &f.bound));
    assert!(!cryptsetup_accepts(&f.img, &f.unbound));

    let before = fingerprint(&f.img);
    let want = sha256(&f.plain);
    let out = vd(&["digest", img, "--key-file", s(&f.bound)]).ok();
    assert!(out.stdout.starts_with(&want), "{}", out.describe());

    // The unbound passphrase opens no keyslot that may decrypt the data: exit 2.
    for args in [
        vec!["digest", img, "--key-file", s(&f.unbound)],
        vec!["test-key", img, "--key-file", s(&f.unbound)],
    ] {
        let out = vd(&args).fails_with(2);
        one_error_line(&out.stderr).unwrap();
    }
    for extra in [&["--read-only"][..], &[][..]] {
        let mut args = vec!["open", img, pp, "--key-file", s(&f.unbound)];
        args.extend_from_slice(extra);
        open_fails(&args, None, &plain_path, 2);
    }
    // Naming it: one clear line, exit 1 (like a --key-slot that is not in use).
    for args in [
        vec![
            "open",
            img,
            pp,
            "--key-file",
            s(&f.unbound),
            "--key-slot",
            "1",
        ],
        vec![
            "open",
            img,
            pp,
            "--key-file",
            s(&f.bound),
            "--key-slot",
            "1",
        ],
    ] {
        let out = open_fails(&args, None, &plain_path, 1);
        one_error_line(&out.stderr).unwrap();
        assert!(out.stderr.contains("keyslot 1"), "{}", out.describe());
        assert!(out.stderr.contains("unbound"), "{}", out.describe());
    }
    let out = vd(&[
        "digest",
        img,
        "--key-file",
        s(&f.unbound),
        "--key-slot",
        "1",
    ])
    .fails_with(1);
    assert!(out.stderr.contains("unbound"), "{}", out.describe());
    assert_eq!(
        fingerprint(&f.img),
        before,
        "a refused open changed the volume"
    );

    // The bound passphrase serves exactly the plaintext cryptsetup's volume key encrypts.
    let m = open_volume(&f.img, &plain_path, &f.bound, &["--read-only"]);
    assert!(read_plain(&plain_path) == f.plain, "wrong plaintext");
    m.close();
}
