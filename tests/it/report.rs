//! Golden output of the reports users and scripts read: `dump` and `verify`, as text and as
//! JSON, byte for byte. The inputs are the fixed real headers of the fuzz corpus (made once by
//! cryptsetup, qemu-img and vaultdisk) and damaged copies of them, so the output is the same on
//! every machine; tests/data/report-golden.txt holds what the commands printed. Regenerate it
//! with `VAULTDISK_BLESS=1 cargo test --test it -- report::` when a change is intended.

use crate::support::*;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const GOLDEN: &str = "tests/data/report-golden.txt";
const BLESS: &str = "VAULTDISK_BLESS=1 cargo test --test it -- report::";

/// Runs the binary in `dir` (so every path it prints is relative) and appends what it did.
fn case(doc: &mut String, dir: &Path, args: &[&str]) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run vaultdisk");
    let _ = write!(
        doc,
        "## vaultdisk {}\nexit {}\n--- stdout\n{}--- stderr\n{}\n",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Copies corpus file `name` of `target` into `dir` as `as_name`, `len` bytes long (sparse).
fn fixture(dir: &Path, target: &str, name: &str, as_name: &str, len: Option<u64>) {
    let from = repo_file(&format!("fuzz/corpus/{target}/{name}"));
    let to = dir.join(as_name);
    fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    if let Some(len) = len {
        set_len(&to, len);
    }
}

#[test]
fn dump_and_verify_match_the_golden_output() {
    let t = temp();
    let d = t.path();
    let key = d.join("key");
    fs::write(&key, b"testpass").expect("key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod key");
    let mut doc = String::from(
        "# Golden output of dump and verify (tests/it/report.rs). Do not edit by hand.\n\n",
    );

    let luks2 = ["l2-argon2i", "l2-argon2id", "l2-pbkdf2", "vd-recovery"];
    for name in luks2 {
        fixture(d, "luks2_header", name, name, Some(17 * MIB));
        case(&mut doc, d, &["dump", name]);
        case(&mut doc, d, &["dump", "--json", name]);
        case(&mut doc, d, &["verify", name]);
        case(&mut doc, d, &["verify", "--json", name]);
    }
    // With a data area (zeros): the key is tried against a keyslot area of zeros and opens
    // nothing, and the report says so.
    fixture(d, "luks2_header", "l2-pbkdf2", "l2-data", Some(17 * MIB));
    case(&mut doc, d, &["verify", "l2-data", "--key-file", "key"]);
    case(
        &mut doc,
        d,
        &[
            "verify",
            "--json",
            "l2-data",
            "--key-file",
            "key",
            "--digest",
        ],
    );
    // One damaged copy: dump warns and reads the other, verify reports damage (exit 6).
    for (name, offset) in [
        ("bad-primary", 4096 + 10),
        ("bad-secondary", 16384 + 4096 + 10),
    ] {
        fixture(d, "luks2_header", "l2-pbkdf2", name, Some(17 * MIB));
        poke(&d.join(name), offset, b"XY");
        case(&mut doc, d, &["dump", name]);
        case(&mut doc, d, &["dump", "--json", name]);
        case(&mut doc, d, &["verify", name]);
        case(&mut doc, d, &["verify", "--json", name]);
    }
    for name in ["l1-sha1", "l1-sha256", "qemu"] {
        fixture(d, "luks1_header", name, name, Some(20 * MIB));
        case(&mut doc, d, &["dump", name]);
        case(&mut doc, d, &["dump", "--json", name]);
        case(&mut doc, d, &["verify", "--json", name]);
        case(&mut doc, d, &["verify", name, "--key-file", "key"]);
    }

    // Every LUKS1 corpus header the parser accepts: the SHA-256 of its `dump --json` text.
    doc.push_str("## LUKS1 corpus: sha256 of the dump JSON of each accepted header\n");
    let dir = repo_file("fuzz/corpus/luks1_header");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let data = fs::read(dir.join(&name)).expect("read corpus file");
        let line = match vaultdisk::luks1::parse(&data) {
            Ok(h) => sha256(luks1_json(&h).as_bytes()),
            Err(_) => "rejected".to_string(),
        };
        let _ = writeln!(doc, "{name} {line}");
    }
    check_golden(GOLDEN, &doc, BLESS);
}

/// `dump --json` of a LUKS1 header, as the library builds it.
fn luks1_json(h: &vaultdisk::luks1::Luks1Header) -> String {
    use vaultdisk::report::Report;
    vaultdisk::report::Luks1Dump::new(h).to_json()
}
