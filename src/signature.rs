//! Other on-disk signatures (LVM2, filesystems, partition tables, BitLocker, swap) in the area
//! where a LUKS2 primary header belongs.
//!
//! Why: when the primary LUKS2 copy is invalid, the reader falls back to the secondary copy
//! (docs/format.md §2). If the device was since reused — `pvcreate`, `mkfs`, a new
//! partition table — the secondary copy is a stale leftover, and writing through it (a
//! read-write open, add-key, repair) would destroy someone else's data. cryptsetup refuses
//! such a device as having "ambiguous signatures" until an explicit repair; so do we.
//!
//! The probe is pure: it looks at the first [`PROBE_LEN`] bytes of the device (fewer if the
//! device is shorter) and never writes.
use crate::luks2::ReadAt;

/// How many bytes from offset 0 the probe looks at: up to the end of btrfs's magic (65600 + 8).
pub const PROBE_LEN: usize = 65608;

/// A known signature found in the primary header area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    /// What it is, as a reader would say it: "an LVM2 physical volume label".
    pub what: &'static str,
    /// The magic bytes that identify it, printable: `LABELONE`, `0xEF53`.
    pub magic: &'static str,
    /// Byte offset of the magic on the device.
    pub offset: u64,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} at byte {})", self.what, self.magic, self.offset)
    }
}

/// The LUKS magic at offset 0 (both LUKS1 and LUKS2 primary copies start with it).
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";

fn at(bytes: &[u8], offset: usize, magic: &[u8]) -> bool {
    bytes.get(offset..offset + magic.len()) == Some(magic)
}

fn u32_le(bytes: &[u8], offset: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(offset..offset + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn found(what: &'static str, magic: &'static str, offset: usize) -> Option<Signature> {
    Some(Signature {
        what,
        magic,
        offset: offset as u64,
    })
}

/// An MBR partition table: the 0x55AA boot signature and at least one used partition entry
/// (boot flag 0x00 or 0x80, a non-zero type, a non-zero length).
fn mbr_partition(bytes: &[u8]) -> bool {
    if !at(bytes, 510, &[0x55, 0xAA]) {
        return false;
    }
    (0..4).any(|i| {
        let e = 446 + 16 * i;
        let (Some(&flag), Some(&kind), Some(len)) =
            (bytes.get(e), bytes.get(e + 4), u32_le(bytes, e + 12))
        else {
            return false;
        };
        (flag == 0 || flag == 0x80) && kind != 0 && len != 0
    })
}

/// A FAT boot sector: 0x55AA and a FAT type string where FAT12/16 or FAT32 keep it.
fn fat(bytes: &[u8]) -> Option<(&'static str, usize)> {
    if !at(bytes, 510, &[0x55, 0xAA]) {
        return None;
    }
    for (magic, offset) in [
        ("FAT12   ", 54),
        ("FAT16   ", 54),
        ("FAT     ", 54),
        ("FAT32   ", 82),
    ] {
        if at(bytes, offset, magic.as_bytes()) {
            return Some((magic.trim_end(), offset));
        }
    }
    None
}

/// The first known non-LUKS signature in `bytes` (the start of a device), if any.
///
/// When the LUKS magic is still at offset 0 (a damaged LUKS copy, not a reused device), the
/// signatures that live in sector 0 (MBR, FAT, NTFS, BitLocker, XFS, LVM2 in sector 0) cannot be
/// there and are not looked for: the bytes around them are the LUKS binary header.
pub fn probe(bytes: &[u8]) -> Option<Signature> {
    let luks_at_0 = at(bytes, 0, LUKS_MAGIC);
    // LVM2 puts its label in one of the first four sectors (pvcreate: sector 1).
    let first_sector = if luks_at_0 { 1 } else { 0 };
    for sector in first_sector..4 {
        if at(bytes, 512 * sector, b"LABELONE") {
            return found("an LVM2 physical volume label", "LABELONE", 512 * sector);
        }
    }
    // GPT header in LBA 1, for 512- and 4096-byte logical sectors.
    for offset in [512, 4096] {
        if at(bytes, offset, b"EFI PART") {
            return found("a GPT partition table", "EFI PART", offset);
        }
    }
    if !luks_at_0 {
        if at(bytes, 3, b"-FVE-FS-") {
            return found("a BitLocker volume", "-FVE-FS-", 3);
        }
        if at(bytes, 3, b"NTFS    ") {
            return found("an NTFS filesystem", "NTFS", 3);
        }
        if let Some((magic, offset)) = fat(bytes) {
            return found("a FAT filesystem", magic, offset);
        }
        if at(bytes, 0, b"XFSB") {
            return found("an XFS filesystem", "XFSB", 0);
        }
    }
    if at(bytes, 65600, b"_BHRfS_M") {
        return found("a btrfs filesystem", "_BHRfS_M", 65600);
    }
    // ext2/3/4: the superblock at 1024, magic 0xEF53 (little endian) at +56; a sane
    // s_log_block_size (+24, block size 1 KiB << n, at most 64 KiB) keeps noise out.
    if at(bytes, 1080, &[0x53, 0xEF]) && u32_le(bytes, 1048).is_some_and(|n| n <= 6) {
        return found("an ext2/3/4 filesystem", "0xEF53", 1080);
    }
    // Linux swap: the magic ends the first 4 KiB page.
    for magic in ["SWAPSPACE2", "SWAP-SPACE"] {
        if at(bytes, 4086, magic.as_bytes()) {
            return found("a Linux swap area", magic, 4086);
        }
    }
    if !luks_at_0 && mbr_partition(bytes) {
        return found("an MBR partition table", "0x55AA", 510);
    }
    None
}

/// Reads the first [`PROBE_LEN`] bytes of `dev` (or all of a shorter device) and probes them.
pub fn probe_device(dev: &(impl ReadAt + ?Sized)) -> std::io::Result<Option<Signature>> {
    let len = dev.len_bytes()?.min(PROBE_LEN as u64) as usize;
    let mut buf = vec![0u8; len];
    dev.read_exact_at(&mut buf, 0)?;
    Ok(probe(&buf))
}

/// What a disk, partition or window holds, as `vaultdisk scan` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Content {
    /// A stable short name: `luks1`, `luks2`, `ext2`, `ext3`, `ext4`, `xfs`, `btrfs`, `vfat`,
    /// `ntfs`, `swap`, `lvm2-pv`, `bitlocker`, `gpt`, `mbr`, or `none`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// As a reader would say it: "a LUKS2 volume", "no signature".
    pub description: &'static str,
    /// The UUID (LUKS, ext, XFS) or volume serial (FAT), when the format has one.
    pub uuid: Option<String>,
    /// The label, when the format has one and it is not empty.
    pub label: Option<String>,
}

impl std::fmt::Display for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(u) = &self.uuid {
            write!(f, " uuid={u}")?;
        }
        if let Some(l) = &self.label {
            write!(f, " label={l:?}")?;
        }
        Ok(())
    }
}

/// A NUL-terminated text field, printable characters only; `None` when empty.
fn text_field(bytes: &[u8], offset: usize, len: usize) -> Option<String> {
    let field = bytes.get(offset..offset + len)?;
    let end = field.iter().position(|&b| b == 0).unwrap_or(len);
    let t: String = String::from_utf8_lossy(&field[..end])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    let t = t.trim_end().to_string();
    (!t.is_empty()).then_some(t)
}

/// 16 bytes in stored order as a UUID (ext and XFS keep them big endian).
fn uuid_field(bytes: &[u8], offset: usize) -> Option<String> {
    let b = bytes.get(offset..offset + 16)?;
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h = crate::hex::encode(b);
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn content(kind: &'static str, description: &'static str) -> Content {
    Content {
        kind,
        description,
        uuid: None,
        label: None,
    }
}

/// Identifies what `bytes` (the first [`PROBE_LEN`] bytes of a disk, partition or window)
/// hold: LUKS1/LUKS2 first (with UUID and label), then every signature [`probe`] knows.
pub fn identify(bytes: &[u8]) -> Content {
    if at(bytes, 0, LUKS_MAGIC) {
        let version = bytes
            .get(6..8)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
            .unwrap_or(0);
        let (kind, description, label) = match version {
            1 => ("luks1", "a LUKS1 volume", None),
            2 => ("luks2", "a LUKS2 volume", text_field(bytes, 24, 48)),
            _ => ("luks", "a LUKS volume of an unknown version", None),
        };
        return Content {
            kind,
            description,
            uuid: text_field(bytes, 168, 40),
            label,
        };
    }
    let Some(sig) = probe(bytes) else {
        return content("none", "no signature");
    };
    match sig.magic {
        "LABELONE" => content("lvm2-pv", "an LVM2 physical volume"),
        "EFI PART" => content("gpt", "a GPT partition table"),
        "0x55AA" => content("mbr", "an MBR partition table"),
        "-FVE-FS-" => content("bitlocker", "a BitLocker volume"),
        "NTFS" => content("ntfs", "an NTFS filesystem"),
        "_BHRfS_M" => Content {
            uuid: uuid_field(bytes, 65536 + 32),
            label: text_field(bytes, 65536 + 299, 256),
            ..content("btrfs", "a btrfs filesystem")
        },
        "XFSB" => Content {
            uuid: uuid_field(bytes, 32),
            label: text_field(bytes, 108, 12),
            ..content("xfs", "an XFS filesystem")
        },
        "SWAPSPACE2" | "SWAP-SPACE" => Content {
            uuid: uuid_field(bytes, 1024 + 12),
            label: text_field(bytes, 1024 + 28, 16),
            ..content("swap", "a Linux swap area")
        },
        "0xEF53" => {
            let compat = u32_le(bytes, 1024 + 92).unwrap_or(0);
            let incompat = u32_le(bytes, 1024 + 96).unwrap_or(0);
            // extents, 64bit, flex_bg: ext4; a journal: ext3; else ext2 (as blkid decides).
            let (kind, description) = if incompat & (0x40 | 0x80 | 0x200) != 0 {
                ("ext4", "an ext4 filesystem")
            } else if compat & 0x4 != 0 {
                ("ext3", "an ext3 filesystem")
            } else {
                ("ext2", "an ext2 filesystem")
            };
            Content {
                uuid: uuid_field(bytes, 1024 + 104),
                label: text_field(bytes, 1024 + 120, 16),
                ..content(kind, description)
            }
        }
        fat => {
            // FAT32 keeps serial and label at 67/71, FAT12/16 at 39/43.
            let (serial_at, label_at) = if fat == "FAT32" { (67, 71) } else { (39, 43) };
            let uuid =
                u32_le(bytes, serial_at).map(|n| format!("{:04X}-{:04X}", n >> 16, n & 0xffff));
            let label = text_field(bytes, label_at, 11).filter(|l| l != "NO NAME");
            Content {
                uuid,
                label,
                ..content("vfat", "a FAT filesystem")
            }
        }
    }
}

/// Reads the first [`PROBE_LEN`] bytes of `dev` (or all of a shorter one) and identifies them.
pub fn identify_device(dev: &(impl ReadAt + ?Sized)) -> std::io::Result<Content> {
    let len = dev.len_bytes()?.min(PROBE_LEN as u64) as usize;
    let mut buf = vec![0u8; len];
    dev.read_exact_at(&mut buf, 0)?;
    Ok(identify(&buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(patches: &[(usize, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; PROBE_LEN];
        for &(offset, bytes) in patches {
            b[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
        b
    }

    /// An MBR entry at slot 0: boot flag, type 0x83 (Linux), start 2048, length 4096.
    fn mbr_entry() -> Vec<u8> {
        let mut e = vec![0u8; 16];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&2048u32.to_le_bytes());
        e[12..16].copy_from_slice(&4096u32.to_le_bytes());
        e
    }

    #[test]
    fn table_of_signatures() {
        let entry = mbr_entry();
        type Row = (&'static str, Vec<u8>, Option<(&'static str, u64)>);
        let table: Vec<Row> = vec![
            ("zeros", with(&[]), None),
            ("lvm2", with(&[(512, b"LABELONE")]), Some(("LABELONE", 512))),
            ("lvm2 s0", with(&[(0, b"LABELONE")]), Some(("LABELONE", 0))),
            ("gpt", with(&[(512, b"EFI PART")]), Some(("EFI PART", 512))),
            (
                "gpt 4k",
                with(&[(4096, b"EFI PART")]),
                Some(("EFI PART", 4096)),
            ),
            (
                "ext4",
                with(&[(1080, &[0x53, 0xEF])]),
                Some(("0xEF53", 1080)),
            ),
            (
                "ext4 absurd block size",
                with(&[(1080, &[0x53, 0xEF]), (1048, &[0x20, 0, 0, 0x7b])]),
                None,
            ),
            ("xfs", with(&[(0, b"XFSB")]), Some(("XFSB", 0))),
            (
                "btrfs",
                with(&[(65600, b"_BHRfS_M")]),
                Some(("_BHRfS_M", 65600)),
            ),
            (
                "swap",
                with(&[(4086, b"SWAPSPACE2")]),
                Some(("SWAPSPACE2", 4086)),
            ),
            (
                "old swap",
                with(&[(4086, b"SWAP-SPACE")]),
                Some(("SWAP-SPACE", 4086)),
            ),
            (
                "bitlocker",
                with(&[(3, b"-FVE-FS-"), (510, &[0x55, 0xAA])]),
                Some(("-FVE-FS-", 3)),
            ),
            (
                "ntfs",
                with(&[(3, b"NTFS    "), (510, &[0x55, 0xAA])]),
                Some(("NTFS", 3)),
            ),
            (
                "fat32",
                with(&[(82, b"FAT32   "), (510, &[0x55, 0xAA])]),
                Some(("FAT32", 82)),
            ),
            (
                "fat16",
                with(&[(54, b"FAT16   "), (510, &[0x55, 0xAA])]),
                Some(("FAT16", 54)),
            ),
            (
                "fat string without boot signature",
                with(&[(82, b"FAT32   ")]),
                None,
            ),
            (
                "mbr with a partition",
                with(&[(446, &entry), (510, &[0x55, 0xAA])]),
                Some(("0x55AA", 510)),
            ),
            (
                "mbr without partitions",
                with(&[(510, &[0x55, 0xAA])]),
                None,
            ),
            // A damaged LUKS copy keeps its magic: sector-0 signatures are not looked for,
            // the others are.
            (
                "luks magic and 0x55AA in the checksum",
                with(&[(0, LUKS_MAGIC), (446, &entry), (510, &[0x55, 0xAA])]),
                None,
            ),
            (
                "luks magic and LABELONE in sector 1",
                with(&[(0, LUKS_MAGIC), (512, b"LABELONE")]),
                Some(("LABELONE", 512)),
            ),
        ];
        for (name, bytes, want) in table {
            let got = probe(&bytes).map(|s| (s.magic, s.offset));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn short_devices_and_display() {
        assert_eq!(probe(&[]), None);
        assert_eq!(probe(&[0u8; 600][..513]), None);
        let lvm = with(&[(512, b"LABELONE")]);
        let s = probe_device(&lvm[..1024]).expect("read").expect("found");
        assert_eq!(
            s.to_string(),
            "an LVM2 physical volume label (LABELONE at byte 512)"
        );
        assert_eq!(probe_device(&[0u8; 100][..]).expect("read"), None);
    }

    #[test]
    fn identify_names_and_ids() {
        let mut l2 = with(&[
            (0, LUKS_MAGIC),
            (6, &[0, 2]),
            (24, b"backup"),
            (168, b"1b4e28ba-2fa1-11d2-883f-0016d3cca427"),
        ]);
        let c = identify(&l2);
        assert_eq!((c.kind, c.label.as_deref()), ("luks2", Some("backup")));
        assert_eq!(
            c.uuid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        l2[7] = 1;
        let c = identify(&l2);
        assert_eq!((c.kind, c.label), ("luks1", None));
        let mut ext = with(&[(1080, &[0x53, 0xEF]), (1024 + 120, b"root")]);
        ext[1024 + 104..1024 + 120].copy_from_slice(&[0x12; 16]);
        let c = identify(&ext);
        assert_eq!(c.kind, "ext2");
        assert_eq!(c.label.as_deref(), Some("root"));
        assert_eq!(
            c.uuid.as_deref(),
            Some("12121212-1212-1212-1212-121212121212")
        );
        ext[1024 + 92] = 0x4;
        assert_eq!(identify(&ext).kind, "ext3");
        ext[1024 + 96] = 0x40;
        assert_eq!(identify(&ext).kind, "ext4");
        let fat = with(&[
            (82, b"FAT32   "),
            (510, &[0x55, 0xAA]),
            (67, &[0x78, 0x56, 0x34, 0x12]),
            (71, b"EFI        "),
        ]);
        let c = identify(&fat);
        assert_eq!(
            (c.kind, c.uuid.as_deref(), c.label.as_deref()),
            ("vfat", Some("1234-5678"), Some("EFI"))
        );
        assert_eq!(identify(&with(&[(512, b"LABELONE")])).kind, "lvm2-pv");
        assert_eq!(identify(&with(&[])).kind, "none");
        assert_eq!(identify(&with(&[])).description, "no signature");
        assert_eq!(identify(&[]).kind, "none");
        // Control characters in a label do not reach the terminal.
        let l = with(&[(0, LUKS_MAGIC), (6, &[0, 2]), (24, b"a\x1b[2Jb")]);
        assert_eq!(identify(&l).label.as_deref(), Some("a?[2Jb"));
    }
}
