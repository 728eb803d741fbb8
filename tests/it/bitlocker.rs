//! BitLocker volumes against the real Windows-made images of cryptsetup's test suite
//! (tests/data/bitlk: images.conf gives each image's credentials, the protector GUIDs they
//! open and the SHA-256 of the decrypted volume). Images are unpacked one at a time.
use crate::support::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TARBALL: &str = "tests/data/bitlk/bitlk-images.tar.xz";
const BEK: &str = "4381F759-C4F8-4DE0-BB61-FC33A831BDA5.BEK";

/// Unpacks `member` of the fixture tarball into `dir`; its path.
fn unpack(dir: &Path, member: &str) -> PathBuf {
    unpack_all(dir, &[member]).remove(0)
}

/// Unpacks `members` in one pass over the tarball (xz decompresses its 2 GiB of zeros once,
/// not once per image; each image is ~100 MiB on disk and removed after its checks).
fn unpack_all(dir: &Path, members: &[&str]) -> Vec<PathBuf> {
    let mut args = vec![
        "--occurrence=1".to_string(),
        "-xJf".into(),
        s(&repo_file(TARBALL)).into(),
        "-C".into(),
        s(dir).into(),
    ];
    args.extend(members.iter().map(|m| format!("bitlk-images/{m}")));
    sys("tar", &args).ok();
    members
        .iter()
        .map(|m| dir.join("bitlk-images").join(m))
        .collect()
}

/// images.conf: section name -> KEY=VALUE.
fn images(dir: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let conf = std::fs::read_to_string(unpack(dir, "images.conf")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut cur = String::new();
    for line in conf.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            cur = name.to_string();
            out.entry(cur.clone()).or_default();
        } else if let Some((k, v)) = line.split_once('=') {
            out.entry(cur.clone())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
    }
    out
}

fn have_tools(test: &str) -> bool {
    require(test, &["tar", "xz"])
}

/// The credentials an image documents: (label, flags, the VMK GUID it opens).
fn credentials(dir: &Path, conf: &BTreeMap<String, String>) -> Vec<(String, Vec<String>, String)> {
    let get = |k: &str| conf.get(k).filter(|v| !v.is_empty()).cloned();
    let mut out = Vec::new();
    if let (Some(pw), Some(g)) = (get("PW"), get("PW_VMK_GUID")) {
        let f = write_key(dir, "pw", pw.as_bytes());
        out.push(("PW".into(), vec!["--key-file".into(), s(&f).into()], g));
    }
    for rp in ["RP", "RP2"] {
        if let (Some(v), Some(g)) = (get(rp), get(&format!("{rp}_VMK_GUID"))) {
            let f = write_key(dir, &rp.to_lowercase(), v.as_bytes());
            out.push((
                rp.into(),
                vec!["--recovery-key".into(), "--key-file".into(), s(&f).into()],
                g,
            ));
        }
    }
    if let Some(g) = get("SK_VMK_GUID") {
        let bek = dir.join("bitlk-images").join(BEK);
        out.push((
            "BEK".into(),
            vec!["--startup-key".into(), s(&bek).into()],
            g,
        ));
    }
    if let Some(g) = get("CLEARKEY_VMK_GUID") {
        out.push(("clear key".into(), vec![], g));
    }
    out
}

/// Every image with a SHA256SUM, every credential it lists: test-key names the VMK GUID of
/// images.conf and the volume opened by it gives the right plaintext; digest (with the first
/// credential) equals SHA256SUM. `pick` says which images, so the work splits over threads.
fn check_images(test: &str, pick: &[&str]) {
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let all = images(t.path());
    let files: Vec<String> = pick.iter().map(|n| format!("{n}.img")).collect();
    let mut members: Vec<&str> = files.iter().map(String::as_str).collect();
    members.push(BEK);
    let imgs = unpack_all(t.path(), &members);
    for (name, img) in pick.iter().zip(imgs) {
        let conf = &all[*name];
        let sha = &conf["SHA256SUM"];
        assert!(!sha.is_empty(), "{name} has a digest");
        for (i, (label, flags, guid)) in credentials(t.path(), conf).into_iter().enumerate() {
            let mut args = vec!["test-key".to_string(), s(&img).to_string()];
            args.extend(flags.clone());
            let out = vd(&args).ok();
            assert!(
                out.stdout.contains(&format!("protector {guid} opens")),
                "{name} {label}: {}",
                out.describe()
            );
            // The plaintext does not depend on which protector opened (the same FVEK):
            // digest once per image to keep the module's time small.
            if i > 0 {
                continue;
            }
            let mut args = vec!["digest".to_string(), s(&img).to_string()];
            args.extend(flags);
            let out = vd(&args).ok();
            assert_eq!(
                out.stdout.split_whitespace().next(),
                Some(sha.as_str()),
                "{name} {label}"
            );
        }
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn xts_images_give_windows_plaintext_with_every_credential() {
    check_images(
        "xts_images_give_windows_plaintext_with_every_credential",
        &[
            "bitlk-aes-xts-128",
            "bitlk-aes-xts-256",
            "bitlk-aes-xts-128-4k",
            "bitlk-aes-xts-128-two-recovery",
            "bitlk-togo-aes-xts-128",
        ],
    );
}

#[test]
fn cbc_elephant_and_special_protector_images_give_windows_plaintext() {
    check_images(
        "cbc_elephant_and_special_protector_images_give_windows_plaintext",
        &[
            "bitlk-aes-cbc-128",
            "bitlk-aes-cbc-elephant-128",
            "bitlk-aes-xts-128-startup-key",
            "bitlk-aes-xts-128-clearkey-only",
            "bitlk-aes-xts-128-smart-card",
        ],
    );
}

/// The images without a SHA256SUM (encrypt-on-write, partially encrypted) are refused with
/// exit 4 and one line naming why; dump still shows them, with the reason.
#[test]
fn unfinished_and_encrypt_on_write_images_are_refused() {
    let test = "unfinished_and_encrypt_on_write_images_are_refused";
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let all = images(t.path());
    let cases = [
        ("bitlk-aes-xts-128-eow", "encrypt-on-write"),
        (
            "bitlk-partially-encrypted-aes-cbc-128",
            "partially encrypted",
        ),
    ];
    let files = unpack_all(
        t.path(),
        &[
            "bitlk-aes-xts-128-eow.img",
            "bitlk-partially-encrypted-aes-cbc-128.img",
        ],
    );
    for ((name, why), img) in cases.into_iter().zip(files) {
        assert_eq!(all[name]["SHA256SUM"], "", "{name}");
        let pw = write_key(t.path(), "pw", all[name]["PW"].as_bytes());
        for verb in ["digest", "test-key"] {
            let out = vd(&[verb, s(&img), "--key-file", s(&pw)]).fails_with(4);
            assert!(out.stderr.contains(why), "{name}: {}", out.describe());
        }
        let out = vd(&["dump", "--json", s(&img)]).ok();
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert!(j["refused"].as_str().unwrap().contains(why), "{j}");
        std::fs::remove_file(&img).unwrap();
    }
}

/// A wrong password or recovery password is exit 2 naming the protectors tried; a smart-card
/// volume asked for a password says which credential would open it.
#[test]
fn wrong_credentials_are_exit_2() {
    let test = "wrong_credentials_are_exit_2";
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let files = unpack_all(
        t.path(),
        &["bitlk-aes-xts-128.img", "bitlk-aes-xts-128-smart-card.img"],
    );
    let img = &files[0];
    let bad = write_key(t.path(), "bad", b"anaconda2");
    let out = vd(&["test-key", s(img), "--key-file", s(&bad)]).fails_with(2);
    assert!(
        out.stderr.contains("3e55195c-8811-4d9b-97b4-2b9e5f8f5384"),
        "{}",
        out.describe()
    );
    let rp = write_key(
        t.path(),
        "rp",
        b"000000-000000-000000-000000-000000-000000-000000-000000",
    );
    vd(&["digest", s(img), "--recovery-key", "--key-file", s(&rp)]).fails_with(2);
    // Not a recovery password at all: a usage error.
    vd(&["digest", s(img), "--recovery-key", "--key-file", s(&bad)]).fails_with(1);
    let out = vd_in(&["test-key", s(&files[1])], b"anaconda\n").fails_with(2);
    assert!(
        out.stderr.contains("smart-card") && out.stderr.contains("recovery-password"),
        "{}",
        out.describe()
    );
}

fn flip(img: &Path, offset: u64) {
    let mut b = read_range(img, offset, 16);
    for x in &mut b {
        *x ^= 0x5a;
    }
    write_at(img, offset, &b).unwrap();
}

/// Bytes flipped in one metadata block: a warning naming that copy, the digest still right,
/// verify exit 6; flipped in all three: exit 4.
#[test]
fn damaged_metadata_copies_warn_then_refuse() {
    let test = "damaged_metadata_copies_warn_then_refuse";
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let all = images(t.path());
    let img = unpack(t.path(), "bitlk-aes-xts-128.img");
    let pw = write_key(t.path(), "pw", b"anaconda");
    let offsets = [35213312u64, 46256128, 57909248];
    flip(&img, offsets[0] + 200);
    let out = vd(&["digest", s(&img), "--key-file", s(&pw)]).ok();
    assert_eq!(
        out.stdout.split_whitespace().next(),
        Some(all["bitlk-aes-xts-128"]["SHA256SUM"].as_str())
    );
    assert!(
        out.stderr.contains("metadata copy 1") && out.stderr.contains("damaged"),
        "{}",
        out.describe()
    );
    let out = vd(&["verify", s(&img), "--key-file", s(&pw), "--json"]);
    assert_eq!(out.code, 6, "{}", out.describe());
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["metadata"][0]["valid"], false);
    assert_eq!(j["metadata"][1]["valid"], true);
    flip(&img, offsets[1] + 300);
    flip(&img, offsets[2] + 120);
    let out = vd(&["digest", s(&img), "--key-file", s(&pw)]).fails_with(4);
    assert!(out.stderr.contains("all three"), "{}", out.describe());
    vd(&["dump", s(&img)]).fails_with(4);
}

/// dump lists what bdeinfo (libbde, an independent reader) lists: GUID, method, protectors.
#[test]
fn dump_agrees_with_bdeinfo() {
    let test = "dump_agrees_with_bdeinfo";
    if !have_tools(test) || !require(test, &["bdeinfo"]) {
        return;
    }
    let t = temp();
    let img = unpack(t.path(), "bitlk-aes-xts-128-startup-key.img");
    let out = vd(&["dump", "--json", s(&img)]).ok();
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["format"], "bitlocker");
    assert_eq!(j["guid"], "5a95db04-6ebc-4ba9-99a3-15a87a3d07b2");
    assert_eq!(j["encryption"], "aes-xts-128");
    assert_eq!(j["metadata"].as_array().unwrap().len(), 3);
    let bde = sys("bdeinfo", &[s(&img)]);
    assert!(bde.stdout.contains("AES-XTS 128-bit"), "{}", bde.describe());
    assert!(bde.stdout.contains(j["guid"].as_str().unwrap()));
    let protectors = j["protectors"].as_array().unwrap();
    assert_eq!(protectors.len(), 3);
    for p in protectors {
        assert!(
            bde.stdout.contains(p["guid"].as_str().unwrap()),
            "{p} not in bdeinfo"
        );
    }
    let types: Vec<&str> = protectors
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["password", "recovery-password", "startup-key"]);
    assert!(protectors[0]["kdf"]["rounds"] == 1 << 20);
    assert!(protectors[2]["kdf"].is_null());
    // Plain text too.
    let out = vd(&["dump", s(&img)]).ok();
    assert!(
        out.stdout
            .contains("4381f759-c4f8-4de0-bb61-fc33a831bda5 startup-key")
    );
}

/// The startup key also works as base64 text (as a Key Vault secret holds it) and as a
/// --key-file (tried as a .BEK first).
#[test]
fn startup_key_as_base64_and_as_key_file() {
    let test = "startup_key_as_base64_and_as_key_file";
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let files = unpack_all(t.path(), &["bitlk-aes-xts-128-startup-key.img", BEK]);
    let img = &files[0];
    let bek = std::fs::read(&files[1]).unwrap();
    use base64::Engine;
    let b64 = write_key(
        t.path(),
        "secret.txt",
        base64::engine::general_purpose::STANDARD
            .encode(&bek)
            .as_bytes(),
    );
    let out = vd(&["test-key", s(img), "--startup-key", s(&b64)]).ok();
    assert!(out.stdout.contains("4381f759-c4f8-4de0-bb61-fc33a831bda5"));
    let raw = write_key(t.path(), "k.bek", &bek);
    let out = vd(&["test-key", s(img), "--key-file", s(&raw)]).ok();
    assert!(out.stdout.contains("startup-key protector 4381f759"));
}

/// Read-write open of BitLocker is refused before anything is touched.
#[test]
fn read_write_open_is_refused() {
    let test = "read_write_open_is_refused";
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let img = unpack(t.path(), "bitlk-aes-xts-128.img");
    let pw = write_key(t.path(), "pw", b"anaconda");
    let before = sha256_file(&img);
    let plain = t.path().join("plain");
    let out = vd(&["open", s(&img), s(&plain), "--key-file", s(&pw)]).fails_with(4);
    assert!(
        out.stderr.contains("BitLocker is read-only here"),
        "{}",
        out.describe()
    );
    assert!(!plain.exists());
    assert_eq!(sha256_file(&img), before);
}

#[path = "../../fuzz/bitlocker_harness.rs"]
mod bitlocker_harness;

/// The fuzz target's corpus (seeds cut from the fixtures: boot sector + one metadata block)
/// replayed through the very code the fuzzer runs.
#[test]
fn fuzz_corpus_replay() {
    let targets: [(&str, crate::reliability::Target); 1] =
        [("bitlocker_metadata", bitlocker_harness::bitlocker_metadata)];
    crate::reliability::replay_corpora(&targets);
}

/// `open --read-only` serves the plaintext Windows sees through FUSE (sha256sum of PLAIN =
/// SHA256SUM), with a recovery password here; writes to PLAIN fail; close unmounts.
#[test]
fn open_read_only_serves_windows_plaintext() {
    let test = "open_read_only_serves_windows_plaintext";
    if !have_tools(test) || !require_fuse(test) {
        return;
    }
    let t = temp();
    let all = images(t.path());
    let img = unpack(t.path(), "bitlk-aes-cbc-128.img");
    let conf = &all["bitlk-aes-cbc-128"];
    let rp = write_key(t.path(), "rp", conf["RP"].as_bytes());
    let plain = t.path().join("plain.img");
    let before = sha256_file(&img);
    let out = vd(&[
        "open",
        "--read-only",
        s(&img),
        s(&plain),
        "--recovery-key",
        "--key-file",
        s(&rp),
    ])
    .ok();
    let mount = Mount::new(&plain);
    assert!(out.stderr.is_empty(), "{}", out.describe());
    assert_eq!(std::fs::metadata(&plain).unwrap().len(), 104857600);
    assert_eq!(sha256_file(&plain), conf["SHA256SUM"]);
    assert!(
        std::fs::OpenOptions::new()
            .write(true)
            .open(&plain)
            .is_err()
    );
    let status = vd(&["status", "--json"]).ok();
    assert!(
        status.stdout.contains(&conf["RP_VMK_GUID"]),
        "{}",
        status.describe()
    );
    mount.close();
    assert_eq!(sha256_file(&img), before);
}

/// verify: which key file opens which protector (a .BEK, a recovery password file, a wrong
/// password), the digest against --expect-digest, and the filesystem check run on the
/// plaintext (the fixtures' filesystems are not consistent, their ciphertext being mostly
/// zeroed for compression, so the check's verdict is reported, whatever it is).
#[test]
fn verify_reports_each_key_file_digest_and_fsck() {
    let test = "verify_reports_each_key_file_digest_and_fsck";
    if !have_tools(test) || !require(test, &["ntfsfix"]) {
        return;
    }
    let t = temp();
    let all = images(t.path());
    let conf = &all["bitlk-aes-xts-128-startup-key"];
    let files = unpack_all(t.path(), &["bitlk-aes-xts-128-startup-key.img", BEK]);
    let rp = write_key(t.path(), "rp.txt", conf["RP"].as_bytes());
    let bad = write_key(t.path(), "bad", b"nope");
    let out = vd(&[
        "verify",
        s(&files[0]),
        "--key-file",
        s(&files[1]),
        "--key-file",
        s(&rp),
        "--key-file",
        s(&bad),
        "--expect-digest",
        &conf["SHA256SUM"],
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.describe());
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["keys"][0]["opens"], conf["SK_VMK_GUID"].as_str());
    assert_eq!(j["keys"][0]["type"], "startup-key");
    assert_eq!(j["keys"][1]["opens"], conf["RP_VMK_GUID"].as_str());
    assert!(j["keys"][2]["opens"].is_null());
    assert_eq!(j["digest"], conf["SHA256SUM"].as_str());
    assert_eq!(j["ok"], true);
    let out = vd(&[
        "verify",
        s(&files[0]),
        "--key-file",
        s(&rp),
        "--fsck",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let verdict = j["fsck"]["result"].as_str().unwrap();
    assert!(["clean", "errors"].contains(&verdict), "{j}");
    assert!(
        j["fsck"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("ntfsfix")
    );
    assert_eq!(
        out.code,
        if verdict == "clean" { 0 } else { 6 },
        "{}",
        out.describe()
    );
}

/// A metadata copy altered with its CRC-32 made right still fails: its SHA-256, wrapped under
/// the VMK in the validation structure, no longer matches (exit 4, naming the copy).
#[test]
fn altered_metadata_with_a_fixed_crc_fails_authentication() {
    let test = "altered_metadata_with_a_fixed_crc_fails_authentication";
    if !have_tools(test) {
        return;
    }
    let t = temp();
    let img = unpack(t.path(), "bitlk-aes-xts-128.img");
    let pw = write_key(t.path(), "pw", b"anaconda");
    let (at, size) = (35213312u64, 880u64);
    // A byte of the description entry (the first entry, at +112).
    flip(&img, at + 120);
    let block = read_range(&img, at, size);
    let crc = vaultdisk::bitlocker::format::crc32(&block);
    write_at(&img, at + size + 4, &crc.to_le_bytes()).unwrap();
    let out = vd(&["dump", "--json", s(&img)]).ok();
    assert!(
        out.stdout.contains("\"valid\":true,\"in_use\":true"),
        "{}",
        out.describe()
    );
    let out = vd(&["test-key", s(&img), "--key-file", s(&pw)]).fails_with(4);
    assert!(
        out.stderr.contains("copy 1 fails its authentication"),
        "{}",
        out.describe()
    );
}

/// The Azure Disk Encryption shape for Windows: the startup key (.BEK) in a Key Vault secret
/// JSON, as it is (contentType BEK: base64 of the file) and wrapped by an RSA KEK (openssl
/// OAEP SHA-1, ADE's default); `verify` opens the startup-key protector with each and names
/// the secret it came from.
#[test]
fn a_bek_from_a_key_vault_secret_opens_the_startup_key_protector() {
    let test = "a_bek_from_a_key_vault_secret_opens_the_startup_key_protector";
    if !have_tools(test) || !require(test, &["openssl"]) {
        return;
    }
    use base64::Engine;
    let t = temp();
    let files = unpack_all(t.path(), &["bitlk-aes-xts-128-startup-key.img", BEK]);
    let (img, bek) = (&files[0], &files[1]);
    let secret = |name: &str, content_type: &str, value: String, tags: serde_json::Value| {
        let p = t.path().join(name);
        let v = serde_json::json!({
            "contentType": content_type, "value": value, "tags": tags,
            "id": format!("https://kv1.vault.azure.net/secrets/{name}/01"),
        });
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        p
    };
    let plain = secret(
        "plain.json",
        "BEK",
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(bek).unwrap()),
        serde_json::json!({"DiskEncryptionKeyFileName": BEK, "MachineName": "win1"}),
    );
    let kek = t.path().join("kek.pem");
    sys("openssl", &["genrsa", "-out", s(&kek), "2048"]).ok();
    let ct = t.path().join("ct.bin");
    sys(
        "openssl",
        &[
            "pkeyutl",
            "-encrypt",
            "-inkey",
            s(&kek),
            "-in",
            s(bek),
            "-out",
            s(&ct),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
        ],
    )
    .ok();
    let wrapped = secret(
        "wrapped.json",
        "Wrapped BEK",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(std::fs::read(&ct).unwrap()),
        serde_json::json!({
            "DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP",
            "DiskEncryptionKeyEncryptionKeyURL": "https://kv1.vault.azure.net/keys/kek/02",
            "DiskEncryptionKeyFileName": BEK, "MachineName": "win1"}),
    );
    for (args, label) in [
        (
            vec!["--keyvault-secret", s(&plain)],
            format!("keyvault-secret {} (BEK)", s(&plain)),
        ),
        (
            vec!["--keyvault-secret", s(&wrapped), "--kek-pem", s(&kek)],
            format!(
                "keyvault-secret {} (Wrapped BEK, kek-pem {})",
                s(&wrapped),
                s(&kek)
            ),
        ),
    ] {
        let mut a = vec!["verify", s(img), "--json"];
        a.extend(args);
        let out = vd(&a).ok();
        let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(j["keys"][0]["key"], label.as_str(), "{j}");
        assert_eq!(
            j["keys"][0]["opens"], "4381f759-c4f8-4de0-bb61-fc33a831bda5",
            "{j}"
        );
        assert_eq!(j["ok"], true, "{j}");
    }
    // A wrapped BEK without its KEK is one line, exit 1.
    vd(&["verify", s(img), "--keyvault-secret", s(&wrapped)]).fails_with(1);
}

/// A restored Windows disk: a GPT image (sgdisk) whose partition 2 holds the Windows-made
/// BitLocker volume. `verify DISK` reports it as one more partition kind: the protector the
/// key opened, the digest (equal to images.conf's SHA256SUM, through the partition window) and
/// ntfsfix on the plaintext served read-only. The fixtures' NTFS is not consistent (their
/// ciphertext was zeroed to compress), so ntfsfix reports errors and the verdict is damage;
/// a wrong key is no-key (exit 2), an encrypt-on-write volume is reported as not verified.
#[test]
fn a_bitlocker_partition_of_a_whole_disk_is_verified() {
    let test = "a_bitlocker_partition_of_a_whole_disk_is_verified";
    if !have_tools(test) || !require(test, &["sgdisk", "ntfsfix", "fuse"]) {
        return;
    }
    let t = temp();
    let conf = images(t.path());
    let want = conf["bitlk-aes-xts-128"]["SHA256SUM"].clone();
    let pw_guid = conf["bitlk-aes-xts-128"]["PW_VMK_GUID"].clone();
    let files = unpack_all(
        t.path(),
        &["bitlk-aes-xts-128.img", "bitlk-aes-xts-128-eow.img"],
    );
    let disk_with = |vol: &Path, name: &str| -> PathBuf {
        let disk = t.path().join(name);
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(120 * MIB)
            .unwrap();
        sys(
            "sgdisk",
            &[
                "-n",
                "1:2048:+8M",
                "-n",
                "2:0:+100M",
                "-t",
                "2:0700",
                s(&disk),
            ],
        )
        .ok();
        let data = std::fs::read(vol).unwrap();
        write_at(&disk, (2048 + 8 * 2048) * 512, &data).unwrap();
        disk
    };
    let disk = disk_with(&files[0], "win.img");
    let pw = write_key(t.path(), "pw", b"anaconda");
    let before = sha256_file(&disk);
    let expect = format!("2={want}");
    let out = vd(&[
        "verify",
        s(&disk),
        "--key-file",
        s(&pw),
        "--expect-digest",
        &expect,
        "--json",
    ]);
    assert_eq!(out.code, 6, "{}", out.describe());
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let p = &j["disks"][0]["partitions"][1];
    assert_eq!(p["kind"], "bitlocker", "{p}");
    assert_eq!(p["key"], format!("key-file {}", s(&pw)).as_str(), "{p}");
    assert!(p["protector"].as_str().unwrap().contains(&pw_guid), "{p}");
    assert_eq!(p["digest"], want.as_str(), "{p}");
    assert_eq!(p["digest_match"], true, "{p}");
    assert_eq!(p["fs"], "ntfs", "{p}");
    assert_eq!(p["fsck"]["tool"], "ntfsfix", "{p}");
    assert_eq!(sha256_file(&disk), before, "verify wrote to the disk");

    let wrong = write_key(t.path(), "wrong", b"not the password");
    let out = vd(&["verify", s(&disk), "--key-file", s(&wrong), "--json"]);
    assert_eq!(out.code, 2, "{}", out.describe());
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(j["disks"][0]["partitions"][1]["verdict"], "no-key");

    let eow = disk_with(&files[1], "eow.img");
    let out = vd(&["verify", s(&eow), "--key-file", s(&pw), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let p = &j["disks"][0]["partitions"][1];
    assert_eq!(p["verdict"], "unchecked", "{p}");
    assert!(
        p["findings"][0]
            .as_str()
            .unwrap()
            .starts_with("not verified:"),
        "{p}"
    );
}

/// `mount --read-only` of BitLocker: the plaintext is served and handed to ntfs-3g through a
/// read-only loop device. The fixtures' NTFS cannot be mounted (their ciphertext was zeroed to
/// compress, so ntfs-3g finds the MFT corrupt) and this kernel has no vfat module, so what is
/// checked is the path up to mount(8): ntfs-3g is asked (its own refusal is the one error
/// line), everything is undone (no daemon, no loop device left), the image is unchanged; and
/// read-write is refused before anything happens. A mount that succeeds is not tested here.
#[test]
fn mount_read_only_hands_the_plaintext_to_ntfs_3g_and_undoes_a_failure() {
    let test = "mount_read_only_hands_the_plaintext_to_ntfs_3g_and_undoes_a_failure";
    if !have_tools(test) || !require(test, &["root", "loop", "fuse", "ntfs-3g"]) {
        return;
    }
    let t = temp();
    let img = unpack(t.path(), "bitlk-aes-xts-128.img");
    let pw = write_key(t.path(), "pw", b"anaconda");
    let dir = t.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let before = sha256_file(&img);
    let out = vd(&["mount", s(&img), s(&dir), "--key-file", s(&pw)]).fails_with(4);
    assert!(
        out.stderr.contains("BitLocker is read-only here"),
        "{}",
        out.describe()
    );
    let out = vd(&[
        "mount",
        "--read-only",
        s(&img),
        s(&dir),
        "--key-file",
        s(&pw),
    ])
    .fails_with(4);
    assert!(
        out.stderr.contains("mount exited with") && out.stderr.contains("ntfs"),
        "{}",
        out.describe()
    );
    assert!(!is_mounted(&dir));
    let status = vd(&["status", "--json"]).ok();
    let canon = img.canonicalize().unwrap();
    assert!(
        !status.stdout.contains(s(&canon)),
        "still served: {}",
        status.stdout
    );
    let loops = sys("losetup", &["-a"]).ok().stdout;
    assert!(!loops.contains("plain-"), "a loop device was left: {loops}");
    assert_eq!(sha256_file(&img), before);
}

/// Volume-key escrow both ways with cryptsetup (`bitlkDump --dump-volume-key`): our
/// `dump --dump-volume-key --volume-key-file` writes the bytes cryptsetup writes and prints
/// its MK dump lines, for XTS-128/256, CBC and CBC+Elephant; cryptsetup's file then opens the
/// volume with `--volume-key-file` (digest = Windows' SHA256SUM, verify, open --read-only);
/// a wrong key or a key of the wrong length is exit 2; nothing is written to the image.
#[test]
fn volume_key_escrow_interoperates_with_cryptsetup() {
    let test = "volume_key_escrow_interoperates_with_cryptsetup";
    if !have_tools(test) || !require(test, &["cryptsetup"]) || !require_fuse(test) {
        return;
    }
    let t = temp();
    let all = images(t.path());
    let names = [
        "bitlk-aes-xts-128",
        "bitlk-aes-xts-256",
        "bitlk-aes-cbc-128",
        "bitlk-aes-cbc-elephant-128",
    ];
    let files: Vec<String> = names.iter().map(|n| format!("{n}.img")).collect();
    let members: Vec<&str> = files.iter().map(String::as_str).collect();
    for (name, img) in names.iter().zip(unpack_all(t.path(), &members)) {
        let conf = &all[*name];
        let pw = write_key(t.path(), &format!("{name}.pw"), conf["PW"].as_bytes());
        let before = sha256_file(&img);
        let theirs = t.path().join(format!("{name}.cryptsetup.vk"));
        let ours = t.path().join(format!("{name}.ours.vk"));
        let cs = sys(
            "cryptsetup",
            &[
                "bitlkDump",
                "--dump-volume-key",
                "--batch-mode",
                "--key-file",
                s(&pw),
                s(&img),
            ],
        )
        .ok();
        sys(
            "cryptsetup",
            &[
                "bitlkDump",
                "--dump-volume-key",
                "--batch-mode",
                "--key-file",
                s(&pw),
                "--volume-key-file",
                s(&theirs),
                s(&img),
            ],
        )
        .ok();
        let dump = ["dump", s(&img), "--dump-volume-key", "--batch"];
        let printed = vd(&[&dump[..], &["--key-file", s(&pw)]].concat()).ok();
        let mk = |text: &str| -> String {
            let at = text.find("MK bits:").expect("MK bits line");
            text[at..].to_string()
        };
        assert_eq!(mk(&printed.stdout), mk(&cs.stdout), "{name}");
        vd(&[
            &dump[..],
            &["--key-file", s(&pw), "--volume-key-file", s(&ours)],
        ]
        .concat())
        .ok();
        assert_eq!(
            std::fs::read(&ours).unwrap(),
            std::fs::read(&theirs).unwrap(),
            "{name}: our volume key file differs from cryptsetup's"
        );
        let vk = ["--volume-key-file", s(&theirs)];
        let out = vd(&[&["digest", s(&img)][..], &vk].concat()).ok();
        assert_eq!(
            out.stdout.split_whitespace().next(),
            Some(conf["SHA256SUM"].as_str()),
            "{name}"
        );
        // A key of the right length but wrong, and one byte short: exit 2, one line.
        let len = std::fs::metadata(&theirs).unwrap().len() as usize;
        let wrong = write_key(t.path(), &format!("{name}.wrong"), &pattern(len, 9));
        let short = write_key(t.path(), &format!("{name}.short"), &pattern(len - 1, 9));
        for bad in [&wrong, &short] {
            let out = vd(&["digest", s(&img), "--volume-key-file", s(bad)]).fails_with(2);
            one_error_line(&out.stderr).unwrap();
        }
        if *name == "bitlk-aes-xts-128" {
            let out = vd(&[&["verify", s(&img), "--json"][..], &vk].concat()).ok();
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(v["keys"][0]["type"], "volume-key", "{v}");
            let plain = t.path().join("plain.img");
            vd(&[&["open", "--read-only", s(&img), s(&plain)][..], &vk].concat()).ok();
            let mount = Mount::new(&plain);
            assert_eq!(sha256_file(&plain), conf["SHA256SUM"]);
            mount.close();
        }
        assert_eq!(sha256_file(&img), before, "{name}: the image changed");
        std::fs::remove_file(&img).unwrap();
    }
}
