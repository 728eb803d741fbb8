//! Restore verification: read-only checks of a volume (header copies, keys, plaintext digest,
//! e2fsck) and the typed report of what they found, with its verdict; and of whole disks
//! (`disks`: the walk over partition tables, detached headers found in /boot, the per-partition
//! report). Never writes a backing file.
pub mod detached;
pub mod digest;
pub mod disks;
pub mod fsck;
pub mod report;

pub use digest::{dm_crypt_view_digest, plaintext_digest};
pub use fsck::{FsckCheck, FsckVerdict, fsck};

use crate::device::VolumeHeader;
use crate::error::{Error, Result};
use crate::report::{CopyReport, Report};
use serde::{Serialize, Serializer};
use std::path::{Path, PathBuf};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Normalises a user-supplied SHA-256 (64 hex digits, any case) or explains what is wrong.
pub fn parse_digest(s: &str) -> Result<String> {
    let t = s.trim().to_ascii_lowercase();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(t)
    } else {
        Err(Error::Usage(format!(
            "--expect-digest needs 64 hex digits (a SHA-256), got {:?}",
            s
        )))
    }
}

/// A path as a JSON string (lossy where it is not UTF-8).
fn path_text<S: Serializer>(p: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// What `vaultdisk verify` found (README "verify"): the header copies, which key opened
/// which keyslot, the data checks, and the verdict `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// The backing file checked.
    #[serde(serialize_with = "path_text")]
    pub backing: PathBuf,
    /// Its header copies.
    pub header: HeaderCheck,
    /// One entry per key tried, in the order tried.
    pub keyslots: Vec<KeyCheck>,
    /// The data checks that ran.
    pub data: DataCheck,
    /// No damaged header copy, every data check passed, and a key opened (when keys were
    /// tried).
    pub ok: bool,
}

/// The header part of a [`VerifyReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderCheck {
    /// LUKS version, 1 or 2.
    pub version: u8,
    /// The file the header was read from (the backing file or a detached header).
    #[serde(serialize_with = "path_text")]
    pub file: PathBuf,
    /// The current copy (LUKS2 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<&'static str>,
    /// Both copies (LUKS2 only; LUKS1 has one header and no checksum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copies: Option<[CopyReport; 2]>,
    /// Whether a copy is damaged.
    pub damaged: bool,
}

impl HeaderCheck {
    /// The check of `header`, read from `file`.
    pub fn new(header: &VolumeHeader, file: &Path) -> HeaderCheck {
        match header {
            VolumeHeader::Luks2(h) => HeaderCheck {
                version: 2,
                file: file.to_path_buf(),
                current: Some(h.current.name()),
                copies: Some([CopyReport::from(&h.primary), CopyReport::from(&h.secondary)]),
                damaged: h.primary.error.is_some() || h.secondary.error.is_some(),
            },
            VolumeHeader::Luks1(_) => HeaderCheck {
                version: 1,
                file: file.to_path_buf(),
                current: None,
                copies: None,
                damaged: false,
            },
        }
    }
}

/// One key tried: a key file, the passphrase, or a vault token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyCheck {
    /// What the key was (a key file's path, "passphrase", a vault token's label).
    pub key: String,
    /// The keyslot it opened.
    pub keyslot: Option<u32>,
    /// Why it opened none.
    pub error: Option<String>,
}

impl KeyCheck {
    /// `key` opened `keyslot`.
    pub fn opened(key: impl Into<String>, keyslot: u32) -> KeyCheck {
        KeyCheck {
            key: key.into(),
            keyslot: Some(keyslot),
            error: None,
        }
    }

    /// `key` is the volume key (a volume key file matching the digest): no keyslot opened.
    pub fn volume_key(key: impl Into<String>) -> KeyCheck {
        KeyCheck {
            key: key.into(),
            keyslot: None,
            error: None,
        }
    }

    /// `key` opened no keyslot, for `why`.
    pub fn failed(key: impl Into<String>, why: impl Into<String>) -> KeyCheck {
        KeyCheck {
            key: key.into(),
            keyslot: None,
            error: Some(why.into()),
        }
    }
}

/// The data part of a [`VerifyReport`]: each check is `None` when it did not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataCheck {
    /// SHA-256 of the plaintext (hex).
    pub digest: Option<String>,
    /// The digest the user expected.
    pub expected: Option<String>,
    /// Whether `digest` equals `expected` (when both are known).
    #[serde(rename = "match")]
    pub matches: Option<bool>,
    /// What e2fsck said.
    pub fsck: Option<FsckCheck>,
}

impl VerifyReport {
    /// The report of the checks that ran, with the verdict.
    pub fn new(
        backing: &Path,
        header: HeaderCheck,
        keyslots: Vec<KeyCheck>,
        data: DataCheck,
    ) -> VerifyReport {
        let data_ok = data.matches != Some(false)
            && data
                .fsck
                .as_ref()
                .is_none_or(|f| f.verdict == FsckVerdict::Clean);
        let mut report = VerifyReport {
            backing: backing.to_path_buf(),
            header,
            keyslots,
            data,
            ok: false,
        };
        report.ok = !report.header.damaged && data_ok && !report.no_key();
        report
    }

    /// Keys were tried and none opened a keyslot.
    pub fn no_key(&self) -> bool {
        !self.keyslots.is_empty()
            && self
                .keyslots
                .iter()
                .all(|k| k.keyslot.is_none() && k.error.is_some())
    }

    /// What damage was found, one phrase per finding (empty when none was).
    pub fn damage(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.header.damaged {
            why.push("a header copy is damaged".to_string());
        }
        if self.data.matches == Some(false) {
            why.push("the plaintext digest does not match".to_string());
        }
        if let Some(f) = &self.data.fsck
            && f.verdict != FsckVerdict::Clean
        {
            why.push(format!("e2fsck: {}", f.verdict.name()));
        }
        why
    }
}

impl Report for VerifyReport {
    fn to_text(&self) -> String {
        let mut out = String::new();
        let h = &self.header;
        out.push_str(&format!(
            "header:   LUKS{} in {}",
            h.version,
            h.file.to_string_lossy()
        ));
        if let Some(cur) = h.current {
            out.push_str(&format!(", current copy {cur}"));
        }
        out.push('\n');
        for c in h.copies.iter().flatten() {
            let state = if !c.valid {
                format!("DAMAGED ({})", c.error.as_deref().unwrap_or(""))
            } else if c.stale {
                "valid, stale".into()
            } else {
                "valid".into()
            };
            let seqid = c
                .seqid
                .map_or_else(|| "null".to_string(), |n| n.to_string());
            out.push_str(&format!(
                "  {:<9} at {}: {state}, seqid {seqid}\n",
                c.name, c.offset
            ));
        }
        if !self.keyslots.is_empty() {
            out.push_str("keyslots:\n");
            for k in &self.keyslots {
                let what = match (k.keyslot, &k.error) {
                    (Some(id), _) => format!("opens keyslot {id}"),
                    (None, None) => "is the volume key (matches the digest)".to_string(),
                    (None, Some(_)) => format!("opens none: {}", k.error.as_deref().unwrap_or("")),
                };
                out.push_str(&format!("  {}: {what}\n", k.key));
            }
        }
        let d = &self.data;
        if let Some(digest) = &d.digest {
            out.push_str(&format!("digest:   {digest}\n"));
        }
        if let Some(exp) = &d.expected {
            let verdict = if d.matches == Some(true) {
                "match"
            } else {
                "MISMATCH"
            };
            out.push_str(&format!("expected: {exp} ({verdict})\n"));
        }
        if let Some(f) = &d.fsck {
            out.push_str(&format!("fsck:     {} ({})\n", f.verdict.name(), f.summary));
        }
        out.push_str(if self.ok {
            "result:   ok"
        } else if self.no_key() {
            "result:   no supplied key opened a keyslot"
        } else {
            "result:   DAMAGE FOUND"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_codes() {
        assert_eq!(FsckVerdict::from_exit(Some(0)), FsckVerdict::Clean);
        assert_eq!(FsckVerdict::from_exit(Some(4)), FsckVerdict::Errors);
        assert_eq!(FsckVerdict::from_exit(Some(1)), FsckVerdict::Errors);
        assert_eq!(FsckVerdict::from_exit(Some(8)), FsckVerdict::Failed);
        assert_eq!(FsckVerdict::from_exit(None), FsckVerdict::Failed);
    }

    #[test]
    fn digest_parse() {
        assert!(parse_digest(&"A".repeat(64)).is_ok());
        assert!(parse_digest("abc").is_err());
    }

    fn luks1_header() -> HeaderCheck {
        HeaderCheck {
            version: 1,
            file: PathBuf::from("disk.img"),
            current: None,
            copies: None,
            damaged: false,
        }
    }

    #[test]
    fn verdict_and_damage_reasons() {
        let p = Path::new("disk.img");
        let clean = VerifyReport::new(p, luks1_header(), vec![], DataCheck::default());
        assert!(clean.ok && !clean.no_key() && clean.damage().is_empty());
        assert!(clean.to_text().ends_with("result:   ok"));

        let no_key = VerifyReport::new(
            p,
            luks1_header(),
            vec![KeyCheck::failed("k", "wrong")],
            DataCheck::default(),
        );
        assert!(!no_key.ok && no_key.no_key() && no_key.damage().is_empty());
        assert!(no_key.to_text().contains("  k: opens none: wrong\n"));

        let mut header = luks1_header();
        header.damaged = true;
        let data = DataCheck {
            digest: Some("aa".into()),
            expected: Some("bb".into()),
            matches: Some(false),
            fsck: Some(FsckCheck {
                verdict: FsckVerdict::Errors,
                summary: "x".into(),
            }),
        };
        let bad = VerifyReport::new(p, header, vec![KeyCheck::opened("k", 0)], data);
        assert!(!bad.ok && !bad.no_key());
        assert_eq!(
            bad.damage(),
            [
                "a header copy is damaged",
                "the plaintext digest does not match",
                "e2fsck: errors"
            ]
        );
        assert!(
            bad.to_text()
                .ends_with("expected: bb (MISMATCH)\nfsck:     errors (x)\nresult:   DAMAGE FOUND")
        );
    }

    #[test]
    fn luks1_json_has_no_copies() {
        let r = VerifyReport::new(
            Path::new("disk.img"),
            luks1_header(),
            vec![],
            DataCheck::default(),
        );
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"backing":"disk.img","header":{"version":1,"file":"disk.img","damaged":false},"keyslots":[],"data":{"digest":null,"expected":null,"match":null,"fsck":null},"ok":true}"#
        );
    }
}
