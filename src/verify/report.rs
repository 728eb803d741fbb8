//! The report of `vaultdisk verify DISK...` (README "verify of whole disks"): disks ->
//! partitions -> what each is, how it was opened, what its checks found, and the verdict.
//! The JSON is this module's types serialized as they are: every key always present, `null`
//! where it does not apply; new keys may be added, none is renamed or removed.
use super::KeyCheck;
use super::digest::ZeroExtents;
use super::fsck::FsckVerdict;
use crate::disk::VhdFooter;
use crate::report::Report;
use serde::Serialize;

/// What one partition's checks concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every check that applies ran and passed.
    Ok,
    /// Damage found (a digest mismatch, filesystem errors, a header that cannot be used, a
    /// partition that cannot be identified).
    Damage,
    /// Encrypted, and no key opened it.
    NoKey,
    /// A LUKS2 header caught mid-reencryption (`cryptsetup reencrypt` not finished when the
    /// copy was taken): the data is partly in the old form, so it cannot be verified. Not
    /// damage: the source resumes the reencryption. Exit 6 like damage, as no check passed.
    ReencryptionInProgress,
    /// Nothing to check here (an unencrypted filesystem, an empty or BIOS boot partition), or
    /// a kind not verified yet (BitLocker): not a failure.
    Unchecked,
}

impl Verdict {
    /// "ok", "damage", "no-key", "reencryption-in-progress", "unchecked".
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Damage => "damage",
            Verdict::NoKey => "no-key",
            Verdict::ReencryptionInProgress => "reencryption-in-progress",
            Verdict::Unchecked => "unchecked",
        }
    }
}

/// The header of an encrypted partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderInfo {
    /// Where it was read: "attached" (at the partition's start), "--header FILE", or
    /// "DISK partition N (ext2) /luks/osluksheader".
    pub source: String,
    /// LUKS version, 1 or 2.
    pub version: u8,
    /// The header's UUID.
    pub uuid: Option<String>,
    /// Whether a header copy is damaged (LUKS2).
    pub damaged: bool,
    /// The data segment's offset in the partition, bytes (0 for a detached header).
    pub data_offset: Option<u64>,
    /// The plaintext size, bytes.
    pub data_size: Option<u64>,
    /// Encryption sector size, bytes.
    pub sector_size: Option<u32>,
}

/// What the filesystem check said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsCheck {
    /// The checker: "e2fsck", "xfs_repair", "fsck.vfat".
    pub tool: &'static str,
    /// Its verdict.
    pub verdict: FsckVerdict,
    /// Its last line of output.
    pub summary: String,
}

/// One partition (or the whole disk, when it has no partition table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionCheck {
    /// The partition number (null: the whole disk, no partition table).
    pub number: Option<u32>,
    /// First byte on the disk.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// The partition type's name from the table ("Linux filesystem", "EFI System").
    pub type_name: Option<String>,
    /// The GPT partition name.
    pub name: Option<String>,
    /// What it is: "luks2", "luks1", "detached-luks", "bitlocker", "filesystem", "swap",
    /// "lvm2-pv", "bios-boot", "empty" (all zero), "none" (no known content).
    pub kind: &'static str,
    /// The signature of its first bytes, as `scan` names it ("ext2", "vfat", "luks2", "none").
    pub content: &'static str,
    /// The header, for an encrypted partition.
    pub header: Option<HeaderInfo>,
    /// Every key tried, in order.
    pub keys: Vec<KeyCheck>,
    /// The key that opened it (its label).
    pub key: Option<String>,
    /// The keyslot that opened.
    pub keyslot: Option<u32>,
    /// BitLocker: the protector that opened ("startup-key protector GUID").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protector: Option<String>,
    /// The filesystem inside the encryption ("ext4", "xfs", ...; "none" when the decrypted
    /// start holds no known signature).
    pub fs: Option<&'static str>,
    /// The filesystem check.
    pub fsck: Option<FsCheck>,
    /// SHA-256 of the plaintext as vaultdisk serves it.
    pub digest: Option<String>,
    /// SHA-256 of the plaintext as dm-crypt shows it (`--dm-crypt-view`).
    pub dm_crypt_view_digest: Option<String>,
    /// The digest expected (`--expect-digest`).
    pub expected_digest: Option<String>,
    /// Whether `digest` equals `expected_digest`.
    pub digest_match: Option<bool>,
    /// All-zero ciphertext extents in the data segment (ADE's used-space copy leaves them).
    pub zero_extents: Option<ZeroExtents>,
    /// What was found, one sentence each.
    pub findings: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
}

/// One disk image or device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskCheck {
    /// The path as given.
    pub path: String,
    /// Bytes of the file (a VHD footer included).
    pub size: u64,
    /// Bytes of the disk (a VHD footer left out).
    pub disk_size: u64,
    /// The fixed VHD footer, if any.
    pub vhd: Option<VhdFooter>,
    /// "gpt", "mbr", or null.
    pub table: Option<&'static str>,
    /// Damage found in the disk's own structures (VHD footer, partition table).
    pub findings: Vec<String>,
    /// The partitions, in number order.
    pub partitions: Vec<PartitionCheck>,
}

/// What `vaultdisk verify DISK...` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DisksReport {
    /// The disks, in the order given.
    pub disks: Vec<DiskCheck>,
    /// Findings about no disk in particular (a detached header that fits no partition).
    pub findings: Vec<String>,
    /// "ok", "damage", "reencryption-in-progress" or "no-key", the first that applies to any
    /// partition in that order (damage anywhere wins).
    pub verdict: Verdict,
    /// `verdict` is "ok".
    pub ok: bool,
}

impl DisksReport {
    /// The report of `disks` and `findings`, with its verdict.
    pub fn new(disks: Vec<DiskCheck>, findings: Vec<String>) -> DisksReport {
        let parts = || disks.iter().flat_map(|d| d.partitions.iter());
        let damage = !findings.is_empty()
            || disks.iter().any(|d| !d.findings.is_empty())
            || parts().any(|p| p.verdict == Verdict::Damage);
        let verdict = if damage {
            Verdict::Damage
        } else if parts().any(|p| p.verdict == Verdict::ReencryptionInProgress) {
            Verdict::ReencryptionInProgress
        } else if parts().any(|p| p.verdict == Verdict::NoKey) {
            Verdict::NoKey
        } else {
            Verdict::Ok
        };
        DisksReport {
            disks,
            findings,
            verdict,
            ok: verdict == Verdict::Ok,
        }
    }

    /// Each problem as "DISK partition N: finding" (disk findings without a partition), for
    /// the one error line.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self.findings.clone();
        for d in &self.disks {
            out.extend(d.findings.iter().map(|f| format!("{}: {f}", d.path)));
            for p in &d.partitions {
                if matches!(
                    p.verdict,
                    Verdict::Damage | Verdict::NoKey | Verdict::ReencryptionInProgress
                ) {
                    let what = p
                        .findings
                        .last()
                        .cloned()
                        .unwrap_or_else(|| p.verdict.name().into());
                    out.push(format!("{} {}: {what}", d.path, place(p.number)));
                }
            }
        }
        out
    }
}

/// "partition N" or "(whole disk)".
pub fn place(number: Option<u32>) -> String {
    number.map_or_else(|| "(whole disk)".to_string(), |n| format!("partition {n}"))
}

impl Report for DisksReport {
    fn to_text(&self) -> String {
        let mut out = String::new();
        for d in &self.disks {
            out.push_str(&format!("disk {}: {} bytes", d.path, d.size));
            if let Some(v) = &d.vhd {
                out.push_str(&format!(
                    ", fixed VHD (checksum {})",
                    if v.checksum_ok { "ok" } else { "WRONG" }
                ));
            }
            match d.table {
                Some(t) => out.push_str(&format!(", {} partition table\n", t.to_uppercase())),
                None => out.push_str(", no partition table\n"),
            }
            for f in &d.findings {
                out.push_str(&format!("  finding: {f}\n"));
            }
            for p in &d.partitions {
                part_text(&mut out, p);
            }
        }
        for f in &self.findings {
            out.push_str(&format!("finding: {f}\n"));
        }
        out.push_str(match self.verdict {
            Verdict::Ok | Verdict::Unchecked => "result: ok",
            Verdict::NoKey => "result: an encrypted partition that no supplied key opened",
            Verdict::Damage => "result: DAMAGE FOUND",
            Verdict::ReencryptionInProgress => {
                "result: NOT VERIFIED: a LUKS2 reencryption was in progress when the copy was taken"
            }
        });
        out
    }
}

fn part_text(out: &mut String, p: &PartitionCheck) {
    let what = match (&p.type_name, &p.name) {
        (Some(t), Some(n)) if !n.is_empty() => format!("{t}, {n:?}"),
        (Some(t), _) => t.clone(),
        (None, Some(n)) => format!("{n:?}"),
        (None, None) => "-".into(),
    };
    out.push_str(&format!(
        "  {} ({} bytes at {}; {what}): {}",
        place(p.number),
        p.size,
        p.start,
        p.kind
    ));
    if p.kind == "filesystem" {
        out.push_str(&format!(" ({})", p.content));
    }
    out.push('\n');
    if let Some(h) = &p.header {
        out.push_str(&format!(
            "    header:   LUKS{} from {}{}\n",
            h.version,
            h.source,
            if h.damaged { ", a copy DAMAGED" } else { "" }
        ));
    }
    for k in &p.keys {
        let res = match (k.keyslot, &k.error) {
            (Some(id), _) => format!("opens keyslot {id}"),
            (None, None) if p.kind == "bitlocker" => {
                format!("opens the {}", p.protector.as_deref().unwrap_or("volume"))
            }
            (None, None) => "is the volume key".into(),
            (None, Some(e)) => format!("opens none: {e}"),
        };
        out.push_str(&format!("    key:      {}: {res}\n", k.key));
    }
    if let Some(fs) = p.fs {
        out.push_str(&format!("    fs:       {fs}"));
        if let Some(c) = &p.fsck {
            out.push_str(&format!(
                ", {} {} ({})",
                c.tool,
                c.verdict.name(),
                c.summary
            ));
        }
        out.push('\n');
    }
    if let Some(dg) = &p.digest {
        out.push_str(&format!("    digest:   {dg}"));
        match p.digest_match {
            Some(true) => out.push_str(" (matches the expected digest)"),
            Some(false) => out.push_str(&format!(
                " (EXPECTED {})",
                p.expected_digest.as_deref().unwrap_or("")
            )),
            None => {}
        }
        out.push('\n');
    }
    if let Some(dm) = &p.dm_crypt_view_digest {
        if Some(dm) == p.digest.as_ref() {
            out.push_str("    dm-crypt: the same digest\n");
        } else {
            out.push_str(&format!(
                "    dm-crypt: {dm} (all-zero ciphertext decrypted)\n"
            ));
        }
    }
    if let Some(z) = &p.zero_extents {
        out.push_str(&format!(
            "    zeros:    {} all-zero ciphertext extents, {} bytes\n",
            z.count, z.bytes
        ));
    }
    for f in &p.findings {
        out.push_str(&format!("    finding:  {f}\n"));
    }
    out.push_str(&format!("    result:   {}\n", p.verdict.name()));
}
