//! `vaultdisk verify DISK...` over a restored Azure-Disk-Encryption-shaped VM built by
//! tests/vm/make-vm.sh with real tools (sgdisk, sfdisk, mkfs, cryptsetup on files, qemu-img)
//! and the Python XTS oracle: an OS disk as a fixed VHD whose root has its detached header in
//! an ext2 /boot, two data disks with attached headers. The oracle (oracle.json) holds the
//! SHA-256 of every plaintext filesystem image, taken before encryption, and the all-zero
//! extents the used-space copy left. Every verify must leave each disk byte-identical.
use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod matrix;

const TOOLS: &[&str] = &[
    "fuse",
    "python3-cryptography",
    "cryptsetup",
    "sgdisk",
    "sfdisk",
    "mkfs.ext2",
    "mkfs.ext4",
    "mkfs.vfat",
    "debugfs",
    "dumpe2fs",
    "e2fsck",
    "qemu-img",
];

/// The VM, built once per test run (about 12 s) in the target's temp directory.
fn vm(test: &str) -> Option<&'static Path> {
    static VM: OnceLock<PathBuf> = OnceLock::new();
    if !require(test, TOOLS) {
        return None;
    }
    Some(VM.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vm-fixture");
        let _ = fs::remove_dir_all(&dir);
        let script = repo_file("tests/vm/make-vm.sh");
        run("bash", &[s(&script), s(&dir)], None).ok();
        dir
    }))
}

fn oracle(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("oracle.json")).unwrap()).unwrap()
}

/// `vaultdisk verify ARGS` (paths relative to nothing: pass them whole); checks that every
/// file in `disks` is unchanged.
fn verify(disks: &[&Path], args: &[&str]) -> Out {
    let before: Vec<_> = disks.iter().map(|d| fingerprint(d)).collect();
    let mut all = vec!["verify"];
    all.extend(disks.iter().map(|d| s(d)));
    all.extend_from_slice(args);
    let out = vd(&all);
    for (d, b) in disks.iter().zip(before) {
        let a = fingerprint(d);
        assert_eq!(
            (a.sha256, a.mtime),
            (b.sha256, b.mtime),
            "verify changed {}",
            d.display()
        );
    }
    out
}

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", out.describe()))
}

/// Copies `name` from the VM into `dir`.
fn copy(vm: &Path, name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    fs::copy(vm.join(name), &to).unwrap();
    to
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn vm_verifies_against_the_oracle() {
    let Some(dir) = vm("vm_verifies_against_the_oracle") else {
        return;
    };
    let o = oracle(dir);
    let (os, d1, d2) = (
        dir.join("os.vhd"),
        dir.join("data1.img"),
        dir.join("data2.img"),
    );
    let bek = dir.join("os.bek");
    let expects: Vec<String> = [
        ("os.vhd:1", &o["os"]["root"]),
        ("data1.img:1", &o["data1"]),
        ("data2.img:1", &o["data2"]),
    ]
    .iter()
    .map(|(p, v)| format!("{p}={}", v["sha256"].as_str().unwrap()))
    .collect();
    let mut args = vec![
        "--key-file",
        s(&bek),
        "--json",
        "--dm-crypt-view",
        "--progress-json",
    ];
    for e in &expects {
        args.extend(["--expect-digest", e.as_str()]);
    }
    let out = verify(&[&os, &d1, &d2], &args).ok();
    let r = json(&out);
    assert_eq!(r["verdict"], "ok");
    assert_eq!(r["ok"], true);
    assert_eq!(r["findings"], serde_json::json!([]));
    let disks = r["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 3);

    // The OS disk: fixed VHD, GPT, root with its header from /boot, zero extents.
    let osd = &disks[0];
    assert_eq!(osd["vhd"]["type"], "fixed");
    assert_eq!(osd["vhd"]["checksum_ok"], true);
    assert_eq!(u(&osd["size"]), u(&osd["disk_size"]) + 512);
    assert_eq!(osd["table"], "gpt");
    assert_eq!(osd["findings"], serde_json::json!([]));
    let parts = osd["partitions"].as_array().unwrap();
    let nums: Vec<u64> = parts.iter().map(|p| u(&p["number"])).collect();
    assert_eq!(nums, [1, 2, 14, 15]);
    let root = &parts[0];
    let want = &o["os"]["root"];
    assert_eq!(root["kind"], "detached-luks");
    assert_eq!(root["content"], "none");
    assert_eq!(u(&root["start"]), u(&want["start"]));
    assert_eq!(u(&root["size"]), u(&want["size"]));
    let src = root["header"]["source"].as_str().unwrap();
    assert!(
        src.ends_with("os.vhd partition 2 (ext2) /luks/osluksheader"),
        "{src}"
    );
    assert_eq!(root["header"]["version"], 2);
    assert_eq!(u(&root["header"]["data_offset"]), 0);
    assert_eq!(root["header"]["sector_size"], 512);
    assert_eq!(root["header"]["damaged"], false);
    assert_eq!(root["key"], format!("key-file {}", s(&bek)));
    assert_eq!(root["keyslot"], 0);
    assert_eq!(root["fs"], "ext4");
    assert_eq!(root["fsck"]["tool"], "e2fsck");
    assert_eq!(root["fsck"]["verdict"], "clean");
    assert_eq!(root["digest"], want["sha256"]);
    assert_eq!(root["digest_match"], true);
    // ADE's sparse copy: zero ciphertext reads as zeros here, as noise through dm-crypt.
    assert_eq!(root["zero_extents"], want["encrypted"]["zero_extents"]);
    assert!(u(&root["zero_extents"]["count"]) > 0);
    assert_ne!(root["dm_crypt_view_digest"], root["digest"]);
    assert_eq!(root["verdict"], "ok");
    assert_eq!(parts[1]["kind"], "filesystem");
    assert_eq!(parts[1]["content"], "ext2");
    assert_eq!(parts[2]["kind"], "bios-boot");
    assert_eq!(parts[3]["kind"], "filesystem");
    assert_eq!(parts[3]["content"], "vfat");
    for p in &parts[1..] {
        assert_eq!(p["verdict"], "unchecked");
    }

    // data1: LUKS2 at 8 MiB, 4096-byte sectors, the key in keyslot 1 after rotation.
    let p = &disks[1]["partitions"][0];
    assert_eq!(disks[1]["vhd"], Value::Null);
    assert_eq!(disks[1]["table"], "gpt");
    assert_eq!(p["kind"], "luks2");
    assert_eq!(p["header"]["source"], "attached");
    assert_eq!(
        u(&p["header"]["data_offset"]),
        u(&o["data1"]["data_offset"])
    );
    assert_eq!(p["header"]["sector_size"], 4096);
    assert_eq!(p["keyslot"], 1);
    assert_eq!(p["digest"], o["data1"]["sha256"]);
    assert_eq!(p["dm_crypt_view_digest"], p["digest"]);
    assert_eq!(u(&p["zero_extents"]["count"]), 0);
    assert_eq!(p["fsck"]["verdict"], "clean");
    assert_eq!(p["verdict"], "ok");

    // data2: MBR, LUKS1 PBKDF2-sha1 with a 256-bit key.
    let p = &disks[2]["partitions"][0];
    assert_eq!(disks[2]["table"], "mbr");
    assert_eq!(p["kind"], "luks1");
    assert_eq!(p["header"]["version"], 1);
    assert_eq!(
        u(&p["header"]["data_offset"]),
        u(&o["data2"]["data_offset"])
    );
    assert_eq!(p["keyslot"], 0);
    assert_eq!(p["digest"], o["data2"]["sha256"]);
    assert_eq!(p["digest_match"], true);
    assert_eq!(p["fsck"]["verdict"], "clean");

    // --progress-json: JSON lines naming disk, partition and step.
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["step"] == "digest"
        && l["disk"] == s(&os)
        && l["partition"] == 1
        && l["done_bytes"] == l["total_bytes"]));
    assert!(
        lines
            .iter()
            .any(|l| l["step"] == "fsck" && l["disk"] == s(&d2))
    );

    // The text form.
    let out = verify(&[&os, &d1, &d2], &["--key-file", s(&bek)]).ok();
    assert!(out.stdout.ends_with("result: ok\n"), "{}", out.stdout);
    assert!(out.stdout.contains("detached-luks"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(&format!("digest:   {}", want["sha256"].as_str().unwrap())),
        "{}",
        out.stdout
    );
}

#[test]
fn vm_wrong_key_is_exit_2() {
    let Some(dir) = vm("vm_wrong_key_is_exit_2") else {
        return;
    };
    let (os, d1) = (dir.join("os.vhd"), dir.join("data1.img"));
    let out = verify(
        &[&os, &d1],
        &["--key-file", s(&dir.join("other.bek")), "--json"],
    )
    .fails_with(2);
    let r = json(&out);
    assert_eq!(r["verdict"], "no-key");
    assert_eq!(r["disks"][0]["partitions"][0]["kind"], "detached-luks");
    assert_eq!(r["disks"][0]["partitions"][0]["verdict"], "no-key");
    assert_eq!(r["disks"][1]["partitions"][0]["verdict"], "no-key");
    assert!(
        r["disks"][1]["partitions"][0]["keys"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no keyslot")
    );
}

#[test]
fn vm_corrupted_file_sector_is_damage() {
    let Some(dir) = vm("vm_corrupted_file_sector_is_damage") else {
        return;
    };
    let o = oracle(dir);
    let t = temp();
    let d2 = copy(dir, "data2.img", t.path());
    let at = u(&o["data2"]["start"]) + u(&o["data2"]["data_offset"]) + u(&o["data2"]["file_byte"]);
    let b = read_range(&d2, at + 100, 1)[0];
    poke(&d2, at + 100, &[b ^ 0x10]);
    let expect = format!("1={}", o["data2"]["sha256"].as_str().unwrap());
    let bek = dir.join("os.bek");
    let out = verify(
        &[&d2],
        &["--key-file", s(&bek), "--expect-digest", &expect, "--json"],
    )
    .fails_with(6);
    assert!(
        out.stderr.contains("digest does not match"),
        "{}",
        out.stderr
    );
    let p = &json(&out)["disks"][0]["partitions"][0];
    assert_eq!(p["digest_match"], false);
    assert_eq!(p["verdict"], "damage");
    assert_ne!(p["digest"], o["data2"]["sha256"]);
    // Without the expected digest the damage inside a file's data goes unseen by e2fsck.
    let out = verify(&[&d2], &["--key-file", s(&bek), "--json"]).ok();
    assert_eq!(
        json(&out)["disks"][0]["partitions"][0]["fsck"]["verdict"],
        "clean"
    );
}

#[test]
fn vm_boot_without_header_is_a_finding() {
    let Some(dir) = vm("vm_boot_without_header_is_a_finding") else {
        return;
    };
    let o = oracle(dir);
    let t = temp();
    let os = copy(dir, "os.vhd", t.path());
    let boot = fs::read(dir.join("boot-empty.img")).unwrap();
    poke(&os, u(&o["os"]["boot_start"]), &boot);
    let out = verify(&[&os], &["--key-file", s(&dir.join("os.bek")), "--json"]).fails_with(6);
    assert!(
        out.stderr.contains("no detached header fits it"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("has no luks/osluksheader"),
        "{}",
        out.stderr
    );
    let p = &json(&out)["disks"][0]["partitions"][0];
    assert_eq!(p["kind"], "none");
    assert_eq!(p["verdict"], "damage");
    // Given with --header, the same disk verifies.
    let out = verify(
        &[&os],
        &[
            "--key-file",
            s(&dir.join("os.bek")),
            "--header",
            s(&dir.join("osluksheader")),
            "--json",
        ],
    )
    .ok();
    let p = &json(&out)["disks"][0]["partitions"][0];
    assert_eq!(
        p["header"]["source"],
        format!("--header {}", s(&dir.join("osluksheader")))
    );
    assert_eq!(p["digest"], o["os"]["root"]["sha256"]);
}

#[test]
fn vm_vhd_truncated_or_with_a_bad_checksum() {
    let Some(dir) = vm("vm_vhd_truncated_or_with_a_bad_checksum") else {
        return;
    };
    let t = temp();
    let os = copy(dir, "os.vhd", t.path());
    let len = fs::metadata(&os).unwrap().len();
    let bek = dir.join("os.bek");
    // A footer byte changed (the unique id): a finding, exit 6, the root still verified.
    poke(&os, len - 512 + 70, &[0x5a]);
    let out = verify(&[&os], &["--key-file", s(&bek), "--json"]).fails_with(6);
    let r = json(&out);
    let f = r["disks"][0]["findings"][0].as_str().unwrap();
    assert!(f.contains("checksum is wrong"), "{f}");
    assert_eq!(r["disks"][0]["vhd"]["checksum_ok"], false);
    assert_eq!(r["disks"][0]["partitions"][0]["verdict"], "ok");
}

/// The bad inputs of whole-disk verify (docs/bad-inputs.md): one line, the exit code, no
/// file changed. Unchanged fixture files are hard links into the VM; the changed ones are
/// small copies (data2 as a fixed VHD for the truncations).
#[test]
fn vm_bad_inputs() {
    use crate::cli::{row_says, run_table};
    let Some(vm) = vm("vm_bad_inputs") else {
        return;
    };
    let o = oracle(vm);
    let t = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let d = t.path();
    for f in [
        "os.vhd",
        "data1.img",
        "data2.img",
        "os.bek",
        "other.bek",
        "other.hdr",
        "osluksheader",
    ] {
        fs::hard_link(vm.join(f), d.join(f)).unwrap();
    }
    fs::copy(vm.join("osluksheader"), d.join("copy.hdr")).unwrap();
    fs::copy(vm.join("os.vhd"), d.join("os-noboot.vhd")).unwrap();
    poke(
        &d.join("os-noboot.vhd"),
        u(&o["os"]["boot_start"]),
        &fs::read(vm.join("boot-empty.img")).unwrap(),
    );
    let vhd = d.join("data2.vhd");
    sys(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size",
            s(&d.join("data2.img")),
            s(&vhd),
        ],
    )
    .ok();
    let len = fs::metadata(&vhd).unwrap().len();
    for (name, cut) in [("cut-footer.vhd", 100), ("cut-data.vhd", 4 << 20)] {
        fs::copy(&vhd, d.join(name)).unwrap();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(d.join(name))
            .unwrap();
        f.set_len(len - cut).unwrap();
    }
    fs::copy(&vhd, d.join("badsum.vhd")).unwrap();
    // Fixed timestamp, creator version and unique id, then a wrong (zero) checksum: the
    // recorded message is the same on every machine and qemu version.
    let footer = len - 512;
    poke(&d.join("badsum.vhd"), footer + 24, &[0x11; 12]);
    poke(&d.join("badsum.vhd"), footer + 64, &[0; 4]);
    poke(&d.join("badsum.vhd"), footer + 68, &[0x22; 16]);
    let rows = [
        row_says(
            "wrong key",
            &[
                "verify",
                "@os.vhd",
                "@data1.img",
                "--key-file",
                "@other.bek",
            ],
            &[2],
            "no supplied key opened",
        ),
        row_says(
            "OS disk whose /boot has no header",
            &["verify", "@os-noboot.vhd", "--key-file", "@os.bek"],
            &[6],
            "no detached header fits it",
        ),
        row_says(
            "two headers that both fit",
            &[
                "verify",
                "@os.vhd",
                "--key-file",
                "@os.bek",
                "--header",
                "@osluksheader",
                "--header",
                "@copy.hdr",
            ],
            &[1],
            "two detached headers fit it",
        ),
        row_says(
            "a header for another disk",
            &[
                "verify",
                "@os.vhd",
                "--key-file",
                "@os.bek",
                "--key-file",
                "@other.bek",
                "--header",
                "@other.hdr",
            ],
            &[1],
            "header of another disk",
        ),
        row_says(
            "a header no key opens, for another disk",
            &[
                "verify",
                "@os.vhd",
                "--key-file",
                "@os.bek",
                "--header",
                "@other.hdr",
            ],
            &[1],
            "header of another disk",
        ),
        row_says(
            "fixed VHD truncated into its footer",
            &["verify", "@cut-footer.vhd", "--key-file", "@os.bek"],
            &[4],
            "truncated fixed VHD",
        ),
        row_says(
            "fixed VHD truncated into a partition",
            &["verify", "@cut-data.vhd", "--key-file", "@os.bek"],
            &[4],
            "outside",
        ),
        row_says(
            "fixed VHD footer with a wrong checksum",
            &["verify", "@badsum.vhd", "--key-file", "@os.bek"],
            &[6],
            "checksum is wrong",
        ),
        row_says(
            "--expect-digest naming no partition",
            &[
                "verify",
                "@data1.img",
                "--key-file",
                "@os.bek",
                "--expect-digest",
                "7=0000000000000000000000000000000000000000000000000000000000000000",
            ],
            &[1],
            "no such partition",
        ),
        row_says(
            "--expect-digest ambiguous over two disks",
            &[
                "verify",
                "@data1.img",
                "@data2.img",
                "--key-file",
                "@os.bek",
                "--expect-digest",
                "1=0000000000000000000000000000000000000000000000000000000000000000",
            ],
            &[1],
            "name the disk",
        ),
        row_says(
            "--expect-digest without a partition",
            &[
                "verify",
                "@data1.img",
                "--key-file",
                "@os.bek",
                "--expect-digest",
                "abcd",
            ],
            &[1],
            "[DISK:]N=HEX",
        ),
        row_says(
            "--vault with whole disks",
            &["verify", "@data1.img", "--key-file", "@os.bek", "--vault"],
            &[1],
            "one volume",
        ),
    ];
    run_table(d, &rows);
}

/// The "done when": one command verifies the restored three-disk VM whose key is a
/// Key Vault secret wrapped by an RSA KEK (openssl OAEP SHA-1, ADE's default), with a wrong
/// key file beside it: every key is tried on every encrypted partition, the wrapped secret
/// opens each of them (named by where it came from), the wrong one opens none, exit 0.
#[test]
fn vm_verifies_with_a_kek_wrapped_key_vault_secret() {
    let Some(dir) = vm("vm_verifies_with_a_kek_wrapped_key_vault_secret") else {
        return;
    };
    if !require(
        "vm::vm_verifies_with_a_kek_wrapped_key_vault_secret",
        &["openssl"],
    ) {
        return;
    }
    use base64::Engine;
    let t = temp();
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
            s(&dir.join("os.bek")),
            "-out",
            s(&ct),
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
        ],
    )
    .ok();
    let secret = t.path().join("secret.json");
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fs::read(&ct).unwrap());
    fs::write(
        &secret,
        serde_json::to_vec(&serde_json::json!({
            "contentType": "Wrapped BEK", "value": value,
            "id": "https://kv1.vault.azure.net/secrets/vm1-bek/01",
            "tags": {"DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP",
                     "DiskEncryptionKeyEncryptionKeyURL": "https://kv1.vault.azure.net/keys/kek/02",
                     "DiskEncryptionKeyFileName": "LinuxPassPhraseFileName",
                     "MachineName": "vm1"}}))
        .unwrap(),
    )
    .unwrap();
    let (os, d1, d2) = (
        dir.join("os.vhd"),
        dir.join("data1.img"),
        dir.join("data2.img"),
    );
    let other = dir.join("other.bek");
    let out = verify(
        &[&os, &d1, &d2],
        &[
            "--key-file",
            s(&other),
            "--keyvault-secret",
            s(&secret),
            "--kek-pem",
            s(&kek),
            "--json",
        ],
    )
    .ok();
    let r = json(&out);
    assert_eq!(r["verdict"], "ok", "{r}");
    let label = format!(
        "keyvault-secret {} (Wrapped BEK, kek-pem {})",
        s(&secret),
        s(&kek)
    );
    let mut encrypted = 0;
    for disk in r["disks"].as_array().unwrap() {
        for p in disk["partitions"].as_array().unwrap() {
            if !["luks1", "luks2", "detached-luks"].contains(&p["kind"].as_str().unwrap()) {
                continue;
            }
            encrypted += 1;
            assert_eq!(p["key"], label.as_str(), "{p}");
            let keys = p["keys"].as_array().unwrap();
            assert_eq!(keys.len(), 2, "both keys tried on {p}");
            assert!(
                keys.iter()
                    .any(|k| k["key"] == label.as_str() && k["keyslot"].is_u64())
            );
            assert!(
                keys.iter()
                    .any(|k| k["key"] == format!("key-file {}", s(&other)).as_str()
                        && k["keyslot"].is_null())
            );
            assert_eq!(p["verdict"], "ok", "{p}");
        }
    }
    assert_eq!(encrypted, 3, "{r}");
}
