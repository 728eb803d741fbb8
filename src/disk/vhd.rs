//! Disk image containers: a fixed VHD (a raw disk followed by a 512-byte footer, the format
//! cloud disks are exported and restored in) is used as the raw disk without its footer;
//! every other container (dynamic or differencing VHD, VHDX, qcow2, VMDK, VDI) is refused
//! with the `qemu-img convert` line that makes it raw.
//!
//! Footer layout (Microsoft "Virtual Hard Disk Image Format Specification", big endian):
//! cookie `conectix` at 0, features at 8, format version at 12, data offset at 16, timestamp
//! at 24, creator application at 28, creator version at 32, creator host OS at 36, original
//! size at 40, current size at 48, geometry at 56, disk type at 60 (2 fixed, 3 dynamic,
//! 4 differencing), checksum at 64 (one's complement of the byte sum of the footer without
//! the checksum field), unique id at 68, saved state at 84.
use serde::Serialize;

/// Size of a VHD footer.
pub const FOOTER_LEN: u64 = 512;

const COOKIE: &[u8; 8] = b"conectix";

/// A valid-looking fixed VHD footer at the end of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VhdFooter {
    /// Always "fixed" (the only kind that is used; the others are refused).
    #[serde(rename = "type")]
    pub disk_type: &'static str,
    /// The disk size the footer declares (bytes).
    pub current_size: u64,
    /// The size the disk was created with (bytes).
    pub original_size: u64,
    /// The creator application, four printable characters ("qemu", "win ", "vpc ").
    pub creator: String,
    /// The unique id, as a UUID string.
    pub uuid: String,
    /// Whether the checksum matched (a mismatch is a warning, not an error).
    pub checksum_ok: bool,
    /// The stored checksum.
    pub checksum: u32,
    /// The checksum the footer bytes give.
    pub computed_checksum: u32,
}

/// What the start and end of an image say about its container format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// No container: a raw disk (or a volume) as it is.
    Raw,
    /// A fixed VHD: the raw disk is everything but the last 512 bytes.
    FixedVhd(VhdFooter),
}

/// A container vaultdisk cannot read in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{format} image: vaultdisk reads raw disks and fixed VHDs only; make a raw copy with `qemu-img convert -O raw IN OUT`"
)]
pub struct Unsupported {
    /// The format, as a person says it: "a dynamic VHD", "a qcow2".
    pub format: &'static str,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// The one's complement of the byte sum of `footer` without its checksum field (64..68).
pub fn checksum(footer: &[u8]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

fn disk_type_name(t: u32) -> Option<&'static str> {
    match t {
        3 => Some("a dynamic VHD"),
        4 => Some("a differencing VHD"),
        _ => None,
    }
}

/// Formats 16 bytes as a UUID in their stored order (the VHD unique id is big endian).
fn uuid_be(b: &[u8]) -> String {
    let h = crate::hex::encode(b);
    if h.len() != 32 {
        return h;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses a footer found at the end of an image: `Ok(None)` when `footer` is not a VHD footer.
fn parse_footer(footer: &[u8]) -> Result<Option<VhdFooter>, Unsupported> {
    if footer.len() != FOOTER_LEN as usize || footer.get(0..8) != Some(COOKIE) {
        return Ok(None);
    }
    let disk_type = be_u32(footer, 60);
    if let Some(format) = disk_type_name(disk_type) {
        return Err(Unsupported { format });
    }
    if disk_type != 2 {
        return Err(Unsupported {
            format: "a VHD of an unknown disk type",
        });
    }
    let stored = be_u32(footer, 64);
    let computed = checksum(footer);
    let creator = footer
        .get(28..32)
        .unwrap_or_default()
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c)
            } else {
                '?'
            }
        })
        .collect();
    Ok(Some(VhdFooter {
        disk_type: "fixed",
        current_size: be_u64(footer, 48),
        original_size: be_u64(footer, 40),
        creator,
        uuid: uuid_be(footer.get(68..84).unwrap_or_default()),
        checksum_ok: stored == computed,
        checksum: stored,
        computed_checksum: computed,
    }))
}

/// Identifies the container from the image's first bytes (`head`, at least 512 when the
/// image has them) and its last 512 bytes (`tail`, empty for an image shorter than that).
pub fn detect(head: &[u8], tail: &[u8]) -> Result<Container, Unsupported> {
    let starts = |m: &[u8]| head.get(..m.len()) == Some(m);
    if starts(b"vhdxfile") {
        return Err(Unsupported { format: "a VHDX" });
    }
    if starts(b"QFI\xfb") {
        return Err(Unsupported { format: "a qcow2" });
    }
    if starts(b"KDMV") || starts(b"COWD") || starts(b"# Disk DescriptorFile") {
        return Err(Unsupported { format: "a VMDK" });
    }
    if head.get(64..68) == Some(&[0x7f, 0x10, 0xda, 0xbe]) {
        return Err(Unsupported { format: "a VDI" });
    }
    // Dynamic and differencing VHDs keep a copy of the footer at offset 0.
    if starts(COOKIE) {
        let t = be_u32(head, 60);
        return Err(Unsupported {
            format: disk_type_name(t).unwrap_or("a dynamic VHD"),
        });
    }
    match parse_footer(tail)? {
        Some(f) => Ok(Container::FixedVhd(f)),
        None => Ok(Container::Raw),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fixed VHD footer as qemu-img writes it, for a disk of `size` bytes.
    pub(crate) fn footer(size: u64, disk_type: u32) -> Vec<u8> {
        let mut f = vec![0u8; 512];
        f[0..8].copy_from_slice(COOKIE);
        f[8..12].copy_from_slice(&2u32.to_be_bytes());
        f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
        f[28..32].copy_from_slice(b"qemu");
        f[40..48].copy_from_slice(&size.to_be_bytes());
        f[48..56].copy_from_slice(&size.to_be_bytes());
        f[60..64].copy_from_slice(&disk_type.to_be_bytes());
        f[68..84].copy_from_slice(&[0x11; 16]);
        let c = checksum(&f);
        f[64..68].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn fixed_footer_is_found_and_checked() {
        let f = footer(1 << 20, 2);
        let Container::FixedVhd(v) = detect(&[0u8; 512], &f).unwrap() else {
            panic!("not a fixed vhd");
        };
        assert!(v.checksum_ok);
        assert_eq!(v.current_size, 1 << 20);
        assert_eq!(v.creator, "qemu");
        assert_eq!(v.uuid, "11111111-1111-1111-1111-111111111111");
        let mut bad = f.clone();
        bad[48] ^= 1;
        let Container::FixedVhd(v) = detect(&[0u8; 512], &bad).unwrap() else {
            panic!("not a fixed vhd");
        };
        assert!(!v.checksum_ok);
        assert_ne!(v.checksum, v.computed_checksum);
    }

    #[test]
    fn checksum_matches_the_spec_example() {
        // A zero footer except the cookie: the sum is the cookie's bytes.
        let mut f = vec![0u8; 512];
        f[0..8].copy_from_slice(COOKIE);
        let sum: u32 = COOKIE.iter().map(|&b| u32::from(b)).sum();
        assert_eq!(checksum(&f), !sum);
        // The checksum field itself does not count.
        f[64..68].copy_from_slice(&[0xff; 4]);
        assert_eq!(checksum(&f), !sum);
    }

    #[test]
    fn other_containers_are_refused_by_name() {
        let zero = [0u8; 512];
        let with = |m: &[u8]| {
            let mut h = vec![0u8; 512];
            h[..m.len()].copy_from_slice(m);
            h
        };
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (with(b"vhdxfile"), vec![], "a VHDX"),
            (with(b"QFI\xfb\0\0\0\x03"), vec![], "a qcow2"),
            (with(b"KDMV"), vec![], "a VMDK"),
            (with(b"# Disk DescriptorFile\n"), vec![], "a VMDK"),
            (footer(1 << 20, 3), footer(1 << 20, 3), "a dynamic VHD"),
            (footer(1 << 20, 4), footer(1 << 20, 4), "a differencing VHD"),
            (zero.to_vec(), footer(1 << 20, 3), "a dynamic VHD"),
            (
                zero.to_vec(),
                footer(1 << 20, 7),
                "a VHD of an unknown disk type",
            ),
        ];
        for (head, tail, want) in cases {
            let e = detect(&head, &tail).unwrap_err();
            assert_eq!(e.format, want);
            assert!(
                e.to_string().contains("qemu-img convert -O raw IN OUT"),
                "{e}"
            );
        }
    }

    #[test]
    fn raw_and_short_images() {
        assert_eq!(detect(&[], &[]).unwrap(), Container::Raw);
        assert_eq!(detect(&[0u8; 512], &[0u8; 512]).unwrap(), Container::Raw);
        // A cookie in a short tail is not a footer.
        assert_eq!(detect(&[], b"conectix").unwrap(), Container::Raw);
        // LUKS at 0 with a footer at the end: a fixed VHD holding a volume.
        let mut h = vec![0u8; 512];
        h[..6].copy_from_slice(b"LUKS\xba\xbe");
        assert!(matches!(
            detect(&h, &footer(4096, 2)).unwrap(),
            Container::FixedVhd(_)
        ));
    }
}
