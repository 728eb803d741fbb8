//! `vaultdisk verify DISK...`: the walk over whole disks (a fixed VHD's footer, the partition
//! table, each partition's signature), the detached headers matched to partitions without one,
//! and the checks of every encrypted partition a key opens: filesystem check on the read-only
//! plaintext, the digest(s) and the all-zero ciphertext extents in one read. Read-only: no
//! input is ever opened for writing.
use super::detached::{self, HeaderBytes, MemBytes};
use super::digest::{self, DigestPass};
use super::fsck::{self, FsTool};
use super::report::{DiskCheck, DisksReport, FsCheck, HeaderInfo, PartitionCheck, Verdict};
use super::{KeyCheck, parse_digest};
use crate::crypto::xts::SectorCipher;
use crate::device::{self, VolumeHeader};
use crate::disk::{Disk, Window};
use crate::error::{Error, Result};
use crate::geometry::{SectorNo, Segment};
use crate::keychain::CandidateKey;
use crate::keyslot;
use crate::luks2::ReadAt;
use crate::secret::{SecretBytes, VolumeKey};
use crate::signature::{self, PROBE_LEN};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// GPT types that hold no filesystem by design (boot loader code, reserved space).
const NO_FS_TYPES: [&str; 2] = [
    "21686148-6449-6e6f-744e-656564454649", // BIOS boot
    "e3c9e316-0b5c-4db8-817d-f92df00215ae", // Microsoft reserved
];

/// `--expect-digest [DISK:]N=HEX`: the SHA-256 partition N (or `whole`, a disk without a
/// partition table) of DISK (the path as given or its file name; optional with one disk)
/// must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectDigest {
    /// The disk, as given or by file name.
    pub disk: Option<String>,
    /// The partition (None: the whole disk).
    pub partition: Option<u32>,
    /// Lowercase hex.
    pub digest: String,
}

/// Parses `[DISK:]N=HEX` / `[DISK:]whole=HEX`.
pub fn parse_expect(s: &str) -> Result<ExpectDigest> {
    let usage = || {
        Error::Usage(format!(
            "--expect-digest with several disks or partitions is [DISK:]N=HEX (N a partition number or `whole`), got {s:?}"
        ))
    };
    let (place, hex) = s.rsplit_once('=').ok_or_else(usage)?;
    let digest = parse_digest(hex)?;
    let (disk, part) = match place.rsplit_once(':') {
        Some((d, p)) if !d.is_empty() => (Some(d.to_string()), p),
        Some(_) => return Err(usage()),
        None => (None, place),
    };
    let partition = match part {
        "whole" => None,
        n => Some(n.parse::<u32>().map_err(|_| usage())?),
    };
    Ok(ExpectDigest {
        disk,
        partition,
        digest,
    })
}

/// How the walk runs.
#[derive(Debug, Clone, Default)]
pub struct DisksOptions {
    /// Detached headers given with `--header` (tried before any found in a boot partition).
    pub headers: Vec<PathBuf>,
    /// Try only this keyslot.
    pub key_slot: Option<u32>,
    /// Also digest the dm-crypt view (every sector decrypted).
    pub dm_crypt_view: bool,
    /// Run the filesystem checks (they serve the plaintext over FUSE for the check).
    pub fsck: bool,
    /// Expected digests.
    pub expected: Vec<ExpectDigest>,
}

/// A step of long work, for `--progress-json`.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The disk, as given.
    pub disk: &'a str,
    /// The partition (None: the whole disk).
    pub partition: Option<u32>,
    /// "unlock", "digest" or "fsck".
    pub step: &'static str,
    /// Bytes done (digest), else 0.
    pub done_bytes: u64,
    /// Bytes in all (digest), else 0.
    pub total_bytes: u64,
}

/// A partition (or whole disk) found by the walk.
struct Slot {
    disk: usize,
    number: Option<u32>,
    start: u64,
    size: u64,
    type_id: Option<String>,
    type_name: Option<String>,
    name: Option<String>,
    window: Window<Arc<File>>,
    content: signature::Content,
    head: Vec<u8>,
}

/// A detached header: where from, its bytes, parsed, and what the keys did with it.
struct Candidate {
    source: String,
    explicit: bool,
    bytes: HeaderBytes,
    header: VolumeHeader,
    keys: Vec<KeyCheck>,
    opened: Option<(String, u32, VolumeKey)>,
    /// Found in this slot's filesystem (None: `--header`).
    found_in: Option<usize>,
}

/// An opened disk.
struct OpenDisk {
    path: PathBuf,
    name: String,
    disk: Disk<File>,
}

/// Refuses a fixed VHD cut short: a footer cookie in the last KiB that is not where a footer
/// is (exactly 512 bytes before the end) means the image lost bytes at its end.
fn check_truncated_vhd(file: &File, len: u64, name: &str) -> Result<()> {
    let tail_len = len.min(1024);
    let mut tail = vec![0u8; tail_len as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut tail, len - tail_len)
        .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
    let footer_at = tail.len().checked_sub(512);
    for (i, w) in tail.windows(8).enumerate() {
        if w == b"conectix" && Some(i) != footer_at {
            let at = len - tail_len + i as u64;
            return Err(Error::Device(format!(
                "{name} is a truncated fixed VHD: its footer starts at byte {at} of {len}, not 512 bytes before the end (restore the whole file)"
            )));
        }
    }
    Ok(())
}

fn open_disk(path: &Path) -> Result<OpenDisk> {
    let name = path.display().to_string();
    let disk = Disk::open(path)?;
    check_truncated_vhd(disk.device(), disk.total_len(), &name)?;
    if let Some(v) = disk.vhd()
        && v.current_size > disk.len()
    {
        return Err(Error::Device(format!(
            "{name} is a truncated fixed VHD: its footer says {} bytes, the image holds {} (restore the whole file)",
            v.current_size,
            disk.len()
        )));
    }
    Ok(OpenDisk {
        path: path.to_path_buf(),
        name,
        disk,
    })
}

fn slots_of(i: usize, d: &OpenDisk) -> Result<Vec<Slot>> {
    let read = |w: &Window<Arc<File>>| -> Result<Vec<u8>> {
        let n = w.len().min(PROBE_LEN as u64) as usize;
        let mut head = vec![0u8; n];
        w.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(format!("cannot read {}", d.name), e))?;
        Ok(head)
    };
    let mut out = Vec::new();
    match d.disk.table() {
        None => {
            let window = d.disk.whole().map_err(|e| e.for_path(&d.name))?;
            let head = read(&window)?;
            out.push(Slot {
                disk: i,
                number: None,
                start: 0,
                size: window.len(),
                type_id: None,
                type_name: None,
                name: None,
                content: signature::identify(&head),
                head,
                window,
            });
        }
        Some(t) => {
            for p in t.partitions.iter().filter(|p| p.is_data()) {
                let window = d
                    .disk
                    .partition(p.number)
                    .map_err(|e| e.for_path(&d.name))?;
                let head = read(&window)?;
                out.push(Slot {
                    disk: i,
                    number: Some(p.number),
                    start: p.start,
                    size: p.size,
                    type_id: Some(p.type_id.clone()),
                    type_name: p.type_name.map(str::to_string),
                    name: p.name.clone(),
                    content: signature::identify(&head),
                    head,
                    window,
                });
            }
        }
    }
    Ok(out)
}

/// Tries `keys` in order on `header` until one opens a keyslot: one [`KeyCheck`] per key
/// tried, and the opener's label, keyslot and volume key.
pub fn try_keys(
    header: &VolumeHeader,
    dev: &dyn ReadAt,
    name: &Path,
    keys: &[CandidateKey],
    key_slot: Option<u32>,
) -> (Vec<KeyCheck>, Option<(String, u32, VolumeKey)>) {
    // Every key on every partition (issue: prove that each named key opens): the first that
    // opens gives the volume key, the others are still tried and reported.
    let mut checks = Vec::new();
    let mut first = None;
    for k in keys {
        let res: std::result::Result<(u32, VolumeKey), String> = match header {
            VolumeHeader::Luks2(h) => {
                keyslot::unlock(&h.metadata, dev, k.bytes.expose_secret(), key_slot)
                    .map_err(|e| Error::from(e.at(name)).to_string())
            }
            VolumeHeader::Luks1(h) => match crate::unlock::luks1_key_slot(h, key_slot, name) {
                Err(e) => Err(e.to_string()),
                Ok((only, tried)) => match h.unlock(dev, k.bytes.expose_secret(), only) {
                    Ok(Some((id, vk))) => Ok((u32::from(id), vk)),
                    Ok(None) => Err(format!(
                        "no keyslot opened with this key (tried {})",
                        tried
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Err(e) => Err(crate::unlock::luks1_error(e, name).to_string()),
                },
            },
        };
        match res {
            Ok((id, vk)) => {
                checks.push(KeyCheck::opened(&k.label, id));
                if first.is_none() {
                    first = Some((k.label.clone(), id, vk));
                }
            }
            Err(why) => checks.push(KeyCheck::failed(&k.label, why)),
        }
    }
    (checks, first)
}

/// The data segment of `header` in `window` (offsets from the start of the file).
fn segment_in(
    header: &VolumeHeader,
    window: &Window<Arc<File>>,
    name: &Path,
    detached: bool,
) -> Result<Segment> {
    let len = window.len();
    let seg = match header {
        VolumeHeader::Luks2(h) => device::luks2_segment_in(h, len, name, detached)?,
        VolumeHeader::Luks1(h) => if detached {
            h.detached_segment(len)
        } else {
            h.segment(len)
        }
        .map_err(|e| Error::Device(format!("{}: {e}", name.display())))?,
    };
    let data_offset_bytes = seg
        .data_offset_bytes
        .checked_add(window.offset())
        .ok_or_else(|| Error::Device("data offset overflows the disk".into()))?;
    Ok(Segment {
        data_offset_bytes,
        ..seg
    })
}

/// The first bytes of the plaintext (our view: all-zero ciphertext stays zero), for the
/// filesystem signature.
fn plain_head(file: &File, segment: &Segment, key: &VolumeKey) -> Result<Vec<u8>> {
    let ss = segment.sector_size_bytes();
    let want = (PROBE_LEN.div_ceil(ss) * ss) as u64;
    let n = want.min(segment.data_size_bytes) as usize / ss * ss;
    let mut buf = vec![0u8; n];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, segment.data_offset_bytes)
        .map_err(|e| Error::io("cannot read ciphertext", e))?;
    let cipher = SectorCipher::new(key.expose_secret())
        .map_err(|e| Error::Device(format!("volume key: {e}")))?;
    for (i, s) in buf.chunks_mut(ss).enumerate() {
        if s.iter().any(|&b| b != 0) {
            cipher.decrypt_sectors(
                s,
                ss,
                segment.iv_sector(SectorNo(i as u64)),
                segment.iv_step(),
            );
        }
    }
    Ok(buf)
}

fn header_info(header: &VolumeHeader, dev: &dyn ReadAt, source: &str) -> HeaderInfo {
    let mut first = vec![0u8; 512];
    let uuid = dev
        .read_exact_at(&mut first, 0)
        .ok()
        .and_then(|()| signature::identify(&first).uuid);
    let (version, damaged) = match header {
        VolumeHeader::Luks2(h) => (2, h.primary.error.is_some() || h.secondary.error.is_some()),
        VolumeHeader::Luks1(_) => (1, false),
    };
    HeaderInfo {
        source: source.to_string(),
        version,
        uuid,
        damaged,
        data_offset: None,
        data_size: None,
        sector_size: None,
    }
}

fn clone_key(k: &VolumeKey) -> VolumeKey {
    VolumeKey::from_secret(SecretBytes::from_slice(k.expose_secret()))
}

/// An empty check of `slot`, kind and verdict to be filled in.
fn blank(slot: &Slot) -> PartitionCheck {
    PartitionCheck {
        number: slot.number,
        start: slot.start,
        size: slot.size,
        type_name: slot.type_name.clone(),
        name: slot.name.clone(),
        kind: "none",
        content: slot.content.kind,
        header: None,
        keys: Vec::new(),
        key: None,
        keyslot: None,
        protector: None,
        fs: None,
        fsck: None,
        digest: None,
        dm_crypt_view_digest: None,
        expected_digest: None,
        digest_match: None,
        zero_extents: None,
        findings: Vec::new(),
        verdict: Verdict::Unchecked,
    }
}

/// What the walk needs to check one encrypted partition.
struct Encrypted<'a> {
    header: &'a VolumeHeader,
    dev: &'a dyn ReadAt,
    source: &'a str,
    detached: bool,
    keys: Vec<KeyCheck>,
    opened: Option<(String, u32, VolumeKey)>,
}

/// The checks of one encrypted partition: header, keys, then on the plaintext the
/// filesystem signature, the digest pass and the filesystem check.
fn check_encrypted(
    disk: &OpenDisk,
    slot: &Slot,
    enc: Encrypted<'_>,
    opts: &DisksOptions,
    p: &mut PartitionCheck,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    let name = PathBuf::from(enc.source);
    let mut info = header_info(enc.header, enc.dev, enc.source);
    p.kind = match (enc.detached, enc.header) {
        (true, _) => "detached-luks",
        (false, VolumeHeader::Luks2(_)) => "luks2",
        (false, VolumeHeader::Luks1(_)) => "luks1",
    };
    if info.damaged {
        p.findings
            .push("a header copy is damaged (the other one is in use)".into());
        p.verdict = Verdict::Damage;
    }
    p.keys = enc.keys;
    let segment = segment_in(enc.header, &slot.window, &name, enc.detached);
    if let Ok(s) = &segment {
        info.data_offset = Some(s.data_offset_bytes - slot.window.offset());
        info.data_size = Some(s.data_size_bytes);
        info.sector_size = Some(s.sector_size);
    }
    p.header = Some(info);
    let Some((label, keyslot, vk)) = enc.opened else {
        p.findings
            .push("no supplied key opened a keyslot".to_string());
        if p.verdict != Verdict::Damage {
            p.verdict = Verdict::NoKey;
        }
        if let Err(e) = segment {
            let (finding, verdict) = segment_problem(&e);
            p.findings.push(finding);
            if p.verdict != Verdict::Damage {
                p.verdict = verdict;
            }
        }
        return Ok(());
    };
    p.key = Some(label.clone());
    p.keyslot = Some(keyslot);
    let segment = match segment {
        Ok(s) => s,
        Err(e) => {
            let (finding, verdict) = segment_problem(&e);
            p.findings.push(finding);
            if p.verdict != Verdict::Damage {
                p.verdict = verdict;
            }
            return Ok(());
        }
    };
    let file = disk.disk.device();
    let fs_kind = signature::identify(&plain_head(file, &segment, &vk)?).kind;
    p.fs = Some(fs_kind);
    let total = segment.data_size_bytes;
    let mut last: Option<std::time::Instant> = None;
    let pass: DigestPass = digest::digest_pass(file, &segment, &vk, opts.dm_crypt_view, |done| {
        if done == total || last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            progress(&Progress {
                disk: &disk.name,
                partition: slot.number,
                step: "digest",
                done_bytes: done,
                total_bytes: total,
            });
            last = Some(std::time::Instant::now());
        }
    })?;
    p.digest = Some(pass.digest.clone());
    p.dm_crypt_view_digest = pass.dm_crypt_view;
    p.zero_extents = Some(pass.zero_extents);
    let mut damage = p.verdict == Verdict::Damage;
    if let Some(exp) = expected_for(opts, disk, slot.number) {
        let ok = exp == pass.digest;
        p.expected_digest = Some(exp);
        p.digest_match = Some(ok);
        if !ok {
            p.findings
                .push("the plaintext digest does not match the expected one".into());
            damage = true;
        }
    }
    match FsTool::for_kind(fs_kind) {
        _ if fs_kind == "none" => {
            p.findings
                .push("the decrypted start holds no known filesystem signature".into());
            damage = true;
        }
        Some(tool) if opts.fsck => {
            progress(&Progress {
                disk: &disk.name,
                partition: slot.number,
                step: "fsck",
                done_bytes: 0,
                total_bytes: 0,
            });
            let by = format!("verify: {label} (keyslot {keyslot})");
            let c = fsck::fsck_with(tool, &disk.path, segment, clone_key(&vk), &by)?;
            if c.verdict != fsck::FsckVerdict::Clean {
                p.findings.push(format!(
                    "{}: {} ({})",
                    tool.name(),
                    c.verdict.name(),
                    c.summary
                ));
                damage = true;
            }
            p.fsck = Some(FsCheck {
                tool: tool.name(),
                verdict: c.verdict,
                summary: c.summary,
            });
        }
        Some(_) => {}
        None => p.findings.push(format!(
            "no read-only checker for {fs_kind}: the filesystem was not checked"
        )),
    }
    p.verdict = if damage { Verdict::Damage } else { Verdict::Ok };
    Ok(())
}

/// A data segment that cannot be used, as a finding and its verdict: a header caught
/// mid-reencryption says so (verdict `reencryption-in-progress`); anything else is damage.
fn segment_problem(e: &Error) -> (String, Verdict) {
    let msg = e.to_string();
    if msg.contains("reencryption in progress") || msg.contains("online-reencrypt") {
        // The header's requirement names it; the segment details of the error are noise here.
        let why = msg
            .split("; ")
            .flat_map(|part| part.split(": "))
            .find(|part| part.starts_with("requirements "))
            .map_or_else(|| msg.clone(), |r| format!("header {r}"));
        (
            format!(
                "LUKS2 reencryption in progress (not finished when this copy was taken): the data is partly in its old form, so it cannot be verified; finish it with `cryptsetup reencrypt --resume-only` on the source and take a new backup ({why})"
            ),
            Verdict::ReencryptionInProgress,
        )
    } else {
        (
            format!("the data segment cannot be used: {msg}"),
            Verdict::Damage,
        )
    }
}

fn expected_for(opts: &DisksOptions, disk: &OpenDisk, number: Option<u32>) -> Option<String> {
    opts.expected
        .iter()
        .find(|e| e.partition == number && e.disk.as_deref().is_none_or(|d| names_disk(d, disk)))
        .map(|e| e.digest.clone())
}

fn names_disk(d: &str, disk: &OpenDisk) -> bool {
    d == disk.name
        || disk
            .path
            .file_name()
            .is_some_and(|f| f.to_string_lossy() == d)
}

/// A BitLocker partition (read-only, `crate::bitlocker`): its metadata copies, each key tried
/// on its protectors (a `.BEK` startup key, recovery password or password, as the bytes look;
/// a clear key when protection is suspended), the plaintext digest as Windows sees it, and
/// `ntfsfix --no-action` / `fsck.vfat -n` on it served read-only. A variant vaultdisk cannot
/// read (encrypt-on-write, partly encrypted, Vista) is a finding, verdict unchecked.
fn check_bitlocker(
    disk: &OpenDisk,
    slot: &Slot,
    keys: &[CandidateKey],
    opts: &DisksOptions,
    p: &mut PartitionCheck,
    progress: &mut dyn FnMut(&Progress),
) -> Result<()> {
    use crate::bitlocker::{Bitlocker, BitlockerVolume, Credential, Info, Reader};
    p.kind = "bitlocker";
    let name = format!("{} {}", disk.name, super::report::place(slot.number));
    let reader: Reader = Arc::new(slot.window.clone());
    let info = match Info::read(&*reader, &name) {
        Ok(i) => i,
        Err(e) => {
            p.findings
                .push(format!("the BitLocker metadata cannot be read: {e}"));
            p.verdict = Verdict::Damage;
            return Ok(());
        }
    };
    let mut damage = false;
    for (i, c) in info.copies.iter().enumerate() {
        if let Some(e) = &c.error {
            p.findings.push(format!(
                "BitLocker metadata copy {} is damaged ({e})",
                i + 1
            ));
            damage = true;
        }
    }
    if let Some(why) = info.refusal() {
        p.findings.push(format!("not verified: {why}"));
        p.verdict = if damage {
            Verdict::Damage
        } else {
            Verdict::Unchecked
        };
        return Ok(());
    }
    progress(&Progress {
        disk: &disk.name,
        partition: slot.number,
        step: "unlock",
        done_bytes: 0,
        total_bytes: 0,
    });
    let mut tried: Vec<(String, Credential)> = keys
        .iter()
        .map(|k| {
            (
                k.label.clone(),
                Credential::from_key_bytes(k.bytes.expose_secret()),
            )
        })
        .collect();
    if info.has_clear_key() {
        tried.push(("clear key".into(), Credential::ClearKey));
    }
    let mut opened = None;
    for (label, cred) in &tried {
        match Bitlocker::unlock(&info, cred, &name) {
            Ok((fvek, by)) => {
                p.keys.push(KeyCheck {
                    key: label.clone(),
                    keyslot: None,
                    error: None,
                });
                if opened.is_none() {
                    p.protector = Some(by.to_string());
                    opened = Some((label.clone(), fvek, by.to_string()));
                }
            }
            Err(e) => p.keys.push(KeyCheck {
                key: label.clone(),
                keyslot: None,
                error: Some(e.to_string()),
            }),
        }
    }
    for s in info.skipped() {
        p.findings.push(s);
    }
    let Some((label, fvek, by)) = opened else {
        p.findings
            .push("no supplied key opened a BitLocker protector".into());
        p.verdict = if damage {
            Verdict::Damage
        } else {
            Verdict::NoKey
        };
        return Ok(());
    };
    p.key = Some(label.clone());
    let vol = BitlockerVolume::new(reader, &info, &fvek, &name)?;
    let mut head = [0u8; 4096];
    let n = vol.read_at(0, &mut head).map_err(|e| {
        crate::error::Error::Device(format!("{name}: cannot read the plaintext: {e}"))
    })?;
    let fs_kind = signature::identify(&head[..n]).kind;
    p.fs = Some(fs_kind);
    let total = vol.size();
    let mut last: Option<std::time::Instant> = None;
    let digest = vol.sha256(|done| {
        if done == total || last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            progress(&Progress {
                disk: &disk.name,
                partition: slot.number,
                step: "digest",
                done_bytes: done,
                total_bytes: total,
            });
            last = Some(std::time::Instant::now());
        }
    })?;
    p.digest = Some(digest.clone());
    if let Some(exp) = expected_for(opts, disk, slot.number) {
        let ok = exp == digest;
        p.expected_digest = Some(exp);
        p.digest_match = Some(ok);
        if !ok {
            p.findings
                .push("the plaintext digest does not match the expected one".into());
            damage = true;
        }
    }
    match FsTool::for_kind(fs_kind) {
        Some(tool) if opts.fsck => {
            progress(&Progress {
                disk: &disk.name,
                partition: slot.number,
                step: "fsck",
                done_bytes: 0,
                total_bytes: 0,
            });
            let segment = crate::geometry::Segment {
                data_offset_bytes: slot.window.offset(),
                data_size_bytes: slot.window.len(),
                sector_size: info.header.sector_size,
                iv_tweak: 0,
            };
            let key = VolumeKey::from_secret(SecretBytes::from_slice(fvek.expose_secret()));
            let by = format!("verify: {label} ({by})");
            let c = fsck::fsck_bitlocker(tool, &disk.path, segment, key, &by)?;
            if c.verdict != fsck::FsckVerdict::Clean {
                p.findings.push(format!(
                    "{}: {} ({})",
                    tool.name(),
                    c.verdict.name(),
                    c.summary
                ));
                damage = true;
            }
            p.fsck = Some(FsCheck {
                tool: tool.name(),
                verdict: c.verdict,
                summary: c.summary,
            });
        }
        Some(_) => {}
        None => p.findings.push(format!(
            "no read-only checker for {fs_kind}: the filesystem was not checked"
        )),
    }
    p.verdict = if damage { Verdict::Damage } else { Verdict::Ok };
    Ok(())
}

/// Verifies the disks at `paths` with `keys` (module doc). Errors are one line each: a disk
/// that cannot be read as one (exit 4), an `--expect-digest` or `--header` that names nothing,
/// two detached headers that both fit a partition (exit 1).
pub fn verify_disks(
    paths: &[PathBuf],
    keys: &[CandidateKey],
    opts: &DisksOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<DisksReport> {
    let disks: Vec<OpenDisk> = paths.iter().map(|p| open_disk(p)).collect::<Result<_>>()?;
    let mut slots = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        slots.extend(slots_of(i, d)?);
    }
    for e in &opts.expected {
        let hits = slots
            .iter()
            .filter(|s| {
                s.number == e.partition
                    && e.disk
                        .as_deref()
                        .is_none_or(|d| names_disk(d, &disks[s.disk]))
            })
            .count();
        let what = format!(
            "{}{}",
            e.disk
                .as_deref()
                .map(|d| format!("{d}:"))
                .unwrap_or_default(),
            e.partition.map_or("whole".to_string(), |n| n.to_string())
        );
        if hits == 0 {
            return Err(Error::Usage(format!(
                "--expect-digest {what}=...: no such partition on the disks given"
            )));
        }
        if hits > 1 {
            return Err(Error::Usage(format!(
                "--expect-digest {what}=...: several disks have it; name the disk (DISK:N=HEX)"
            )));
        }
    }

    // Detached header candidates: --header files first, then ADE's /boot/luks/osluksheader.
    let mut cands: Vec<Candidate> = Vec::new();
    for h in &opts.headers {
        let file = device::open_backing(h, false)?;
        let header = device::read_header(&file, h)?;
        cands.push(Candidate {
            source: format!("--header {}", h.display()),
            explicit: true,
            bytes: HeaderBytes::File(file),
            header,
            keys: Vec::new(),
            opened: None,
            found_in: None,
        });
    }
    let mut notes: Vec<(usize, String)> = Vec::new();
    let mut looked: Vec<String> = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let at = format!(
            "{} {} ({})",
            disks[s.disk].name,
            super::report::place(s.number),
            s.content.kind
        );
        if s.content.kind == "xfs" {
            // RHEL/CentOS images keep /boot on xfs (ade-facts.md §2.3): named, so the finding
            // says where the header probably is and how to hand it over.
            looked.push(format!(
                "{at} may hold luks/osluksheader, but vaultdisk does not read files from xfs: copy it out where xfs mounts (mount -o ro,norecovery)"
            ));
            continue;
        }
        if !matches!(s.content.kind, "ext2" | "ext3" | "ext4") {
            continue;
        }
        match detached::find_in_ext(s.window.clone(), &disks[s.disk].path) {
            Ok(None) => looked.push(format!("{at} has no luks/osluksheader")),
            Err(why) => {
                log::info!("{at}: {why}");
                looked.push(format!("{at}: {why}"));
            }
            Ok(Some((path, bytes))) => {
                let source = format!("{at} {path}");
                match device::read_header(&bytes[..], Path::new(&source)) {
                    Ok(header) => cands.push(Candidate {
                        source,
                        explicit: false,
                        bytes: HeaderBytes::Mem(MemBytes(bytes)),
                        header,
                        keys: Vec::new(),
                        opened: None,
                        found_in: Some(i),
                    }),
                    Err(e) => notes.push((i, format!("{path} is not a usable LUKS header: {e}"))),
                }
            }
        }
    }
    let detached_targets: Vec<usize> = (0..slots.len())
        .filter(|&i| needs_header(&slots[i]))
        .collect();
    if !detached_targets.is_empty() {
        for c in &mut cands {
            progress(&Progress {
                disk: &c.source,
                partition: None,
                step: "unlock",
                done_bytes: 0,
                total_bytes: 0,
            });
            let (k, o) = try_keys(
                &c.header,
                c.bytes.dev(),
                Path::new(&c.source),
                keys,
                opts.key_slot,
            );
            c.keys = k;
            c.opened = o;
        }
    }
    // Match: a header fits a partition when its data segment fits and (with a key) the
    // decrypted start holds a filesystem; --header files take precedence over found ones.
    let mut assigned: Vec<Option<usize>> = vec![None; slots.len()];
    let mut used = vec![false; cands.len()];
    for &si in &detached_targets {
        let s = &slots[si];
        let file = disks[s.disk].disk.device();
        let mut fs_fit = Vec::new();
        let mut size_fit = Vec::new();
        for (ci, c) in cands.iter().enumerate() {
            let Ok(seg) = segment_in(&c.header, &s.window, Path::new(&c.source), true) else {
                continue;
            };
            match &c.opened {
                Some((_, _, vk)) => {
                    let fs = plain_head(file, &seg, vk)
                        .map(|h| signature::identify(&h).kind)
                        .unwrap_or("none");
                    if fs != "none" {
                        fs_fit.push(ci);
                    } else {
                        size_fit.push(ci);
                    }
                }
                None => size_fit.push(ci),
            }
        }
        let explicit: Vec<usize> = fs_fit
            .iter()
            .copied()
            .filter(|&c| cands[c].explicit)
            .collect();
        let pick = if explicit.is_empty() {
            fs_fit
        } else {
            explicit
        };
        let where_ = format!("{} {}", disks[s.disk].name, super::report::place(s.number));
        match pick.len() {
            0 => {}
            1 => {
                assigned[si] = Some(pick[0]);
                used[pick[0]] = true;
                continue;
            }
            _ => {
                let names: Vec<&str> = pick.iter().map(|&c| cands[c].source.as_str()).collect();
                return Err(Error::Usage(format!(
                    "{where_}: two detached headers fit it ({}): give only the right one with --header",
                    names.join("; ")
                )));
            }
        }
        let size_fit: Vec<usize> = size_fit.into_iter().filter(|&c| !used[c]).collect();
        if size_fit.len() == 1 {
            assigned[si] = Some(size_fit[0]);
            used[size_fit[0]] = true;
        }
    }
    for (ci, c) in cands.iter().enumerate() {
        if used[ci] {
            continue;
        }
        let what = match &c.opened {
            Some(_) => "no partition given decrypts to a filesystem with it",
            None if detached_targets.is_empty() => {
                "every partition given has a signature of its own"
            }
            None => "no supplied key opens it, and no partition without a signature is left for it",
        };
        if c.explicit {
            return Err(Error::Usage(format!(
                "{} fits no partition of the disks given ({what}): it is the header of another disk",
                c.source
            )));
        }
        if let Some(i) = c.found_in {
            notes.push((
                i,
                format!("its luks/osluksheader fits no partition given ({what})"),
            ));
        }
    }

    // The checks, disk by disk.
    let mut checks: Vec<DiskCheck> = disks
        .iter()
        .map(|d| DiskCheck {
            path: d.name.clone(),
            size: d.disk.total_len(),
            disk_size: d.disk.len(),
            vhd: d.disk.vhd().cloned(),
            table: d.disk.table().map(|t| match t.kind {
                crate::disk::TableKind::Gpt => "gpt",
                crate::disk::TableKind::Mbr => "mbr",
            }),
            findings: d.disk.warnings().to_vec(),
            partitions: Vec::new(),
        })
        .collect();
    for (si, s) in slots.iter().enumerate() {
        let d = &disks[s.disk];
        let mut p = blank(s);
        match s.content.kind {
            "luks1" | "luks2" => {
                let name = PathBuf::from(format!("{} {}", d.name, super::report::place(s.number)));
                match device::read_header(&s.window, &name) {
                    Err(e) => {
                        p.kind = s.content.kind;
                        p.findings.push(format!("the header cannot be read: {e}"));
                        p.verdict = Verdict::Damage;
                    }
                    Ok(header) => {
                        progress(&Progress {
                            disk: &d.name,
                            partition: s.number,
                            step: "unlock",
                            done_bytes: 0,
                            total_bytes: 0,
                        });
                        let (k, o) = try_keys(&header, &s.window, &name, keys, opts.key_slot);
                        let source = name.display().to_string();
                        let enc = Encrypted {
                            header: &header,
                            dev: &s.window,
                            source: &source,
                            detached: false,
                            keys: k,
                            opened: o,
                        };
                        check_encrypted(d, s, enc, opts, &mut p, progress)?;
                        if let Some(h) = &mut p.header {
                            h.source = "attached".into();
                        }
                    }
                }
            }
            "bitlocker" => check_bitlocker(d, s, keys, opts, &mut p, progress)?,
            "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "vfat" | "ntfs" => {
                p.kind = "filesystem";
            }
            "swap" => p.kind = "swap",
            "lvm2-pv" => p.kind = "lvm2-pv",
            _ => match assigned[si] {
                Some(ci) => {
                    let c = &mut cands[ci];
                    let enc = Encrypted {
                        header: &c.header,
                        dev: c.bytes.dev(),
                        source: &c.source,
                        detached: true,
                        keys: std::mem::take(&mut c.keys),
                        opened: c.opened.take(),
                    };
                    check_encrypted(d, s, enc, opts, &mut p, progress)?;
                }
                None if s
                    .type_id
                    .as_deref()
                    .is_some_and(|t| NO_FS_TYPES.contains(&t)) =>
                {
                    p.kind = "bios-boot";
                    if s.type_id.as_deref() == Some(NO_FS_TYPES[1]) {
                        p.kind = "reserved";
                    }
                }
                None if s.head.iter().all(|&b| b == 0) => p.kind = "empty",
                None => {
                    p.kind = "none";
                    let looked_in = if looked.is_empty() {
                        "no ext2/3/4 or xfs boot partition on the disks given".to_string()
                    } else {
                        looked.join("; ")
                    };
                    p.findings.push(format!(
                        "no known signature, and no detached header fits it ({looked_in}): if it is an encrypted root, give its header with --header FILE"
                    ));
                    p.verdict = Verdict::Damage;
                }
            },
        }
        for (i, n) in &notes {
            if *i == si {
                p.findings.push(n.clone());
            }
        }
        if expected_for(opts, d, s.number).is_some() && p.digest.is_none() {
            p.findings
                .push("--expect-digest names it, but it was not opened: no digest".into());
            if p.verdict == Verdict::Unchecked || p.verdict == Verdict::Ok {
                p.verdict = Verdict::Damage;
            }
        }
        checks[s.disk].partitions.push(p);
    }
    Ok(DisksReport::new(checks, Vec::new()))
}

/// A partition with no signature that is not empty and not a boot-loader partition: the
/// shape of ADE's encrypted root (data at offset 0, header in /boot).
fn needs_header(s: &Slot) -> bool {
    s.content.kind == "none"
        && !s
            .type_id
            .as_deref()
            .is_some_and(|t| NO_FS_TYPES.contains(&t))
        && s.head.iter().any(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_digest_forms() {
        let h = "ab".repeat(32);
        let e = parse_expect(&format!("2={h}")).unwrap();
        assert_eq!((e.disk, e.partition), (None, Some(2)));
        let e = parse_expect(&format!("os.vhd:1={}", h.to_uppercase())).unwrap();
        assert_eq!(e.disk.as_deref(), Some("os.vhd"));
        assert_eq!(e.digest, h);
        let e = parse_expect(&format!("/a:b/d.img:whole={h}")).unwrap();
        assert_eq!((e.disk.as_deref(), e.partition), (Some("/a:b/d.img"), None));
        assert!(parse_expect(&h).is_err());
        assert!(parse_expect(&format!("x={h}")).is_err());
        assert!(parse_expect(&format!(":1={h}")).is_err());
        assert!(parse_expect("1=abc").is_err());
    }
}
