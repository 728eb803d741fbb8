//! Frozen volumes (issue 11 item 9): tests/data/frozen holds small volumes made once by
//! cryptsetup, qemu-img and an earlier vaultdisk, each with the SHA-256 of its plaintext. Every
//! one must keep opening read-only, give the same plaintext, and stay byte-identical.

use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};

const PASS: &[u8] = b"frozen-pass";

/// One MANIFEST row: image, optional detached header, plaintext SHA-256, maker.
struct Frozen {
    image: String,
    header: Option<String>,
    sha256: String,
    maker: String,
}

fn manifest() -> Vec<Frozen> {
    let text = fs::read_to_string(repo_file("tests/data/frozen/MANIFEST")).expect("MANIFEST");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "bad MANIFEST row {l:?}");
            Frozen {
                image: f[0].into(),
                header: (f[1] != "-").then(|| f[1].to_string()),
                sha256: f[2].into(),
                maker: f[3].into(),
            }
        })
        .collect()
}

/// Decompresses tests/data/frozen/NAME.gz into `dir`, returning the path.
fn unpack(dir: &Path, gz: &str) -> PathBuf {
    let name = gz.strip_suffix(".gz").expect("a .gz file");
    let dst = dir.join(name);
    let src = repo_file(&format!("tests/data/frozen/{gz}"));
    let bytes = std::process::Command::new("gzip")
        .args(["-dc", s(&src)])
        .output()
        .expect("gzip");
    assert!(bytes.status.success(), "gzip -dc {}", src.display());
    fs::write(&dst, &bytes.stdout).expect("write unpacked volume");
    dst
}

#[test]
fn every_frozen_volume_opens_with_its_plaintext() {
    let rows = manifest();
    assert!(rows.len() >= 7, "MANIFEST lists {} volumes", rows.len());
    let dir = temp();
    let key = write_key(dir.path(), "pass", PASS);
    let fuse = require_fuse("frozen::every_frozen_volume_opens_with_its_plaintext (FUSE half)");
    let mut failures = Vec::new();
    for row in &rows {
        let image = unpack(dir.path(), &row.image);
        let header = row.header.as_ref().map(|h| unpack(dir.path(), h));
        let before: Vec<String> = [Some(&image), header.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| sha256_file(p))
            .collect();
        let mut args = vec!["digest", s(&image), "--key-file", s(&key)];
        if let Some(h) = &header {
            args.extend(["--header", s(h)]);
        }
        let out = vd(&args);
        let got = out
            .stdout
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        if out.code != 0 || got != row.sha256 {
            failures.push(format!(
                "{} ({}): digest\n{}",
                row.image,
                row.maker,
                out.describe()
            ));
        }
        if fuse && header.is_none() {
            let plain = dir.path().join(format!("{}.plain", row.image));
            let m = open_volume(&image, &plain, &key, &["--read-only"]);
            let served = sha256_file(&plain);
            m.close();
            if served != row.sha256 {
                failures.push(format!("{} ({}): PLAIN has {served}", row.image, row.maker));
            }
        }
        let after: Vec<String> = [Some(&image), header.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| sha256_file(p))
            .collect();
        if before != after {
            failures.push(format!("{} ({}): the volume changed", row.image, row.maker));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
