//! Bodies of the disk-layout fuzz targets (`disk_table`, `vhd_footer`), shared with the
//! corpus replay test `disk::fuzz_corpora_replay` (tests/it/disk.rs), so CI runs exactly what
//! the fuzzer ran. Each returns whether the input was accepted (a table found, a fixed VHD
//! found); a reject must be an `Err` or `None`, never a panic, a hang or a large allocation.
#![allow(dead_code)] // each fuzz target uses one function
use vaultdisk::disk::{Disk, partition, vhd};
use vaultdisk::luks2::ReadAt;

/// `data` as the first bytes of a device of `len` bytes (reads past `data` fail).
struct Mem<'a>(&'a [u8], u64);

impl ReadAt for Mem<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.1)
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

/// Makes the CRCs of every GPT header found (LBA 1 and the last LBA, 512 and 4096-byte
/// sectors) and of its entry array right, so that mutations reach the later checks.
fn fix_gpt_crcs(d: &mut [u8]) -> bool {
    let mut changed = false;
    for ss in [512usize, 4096] {
        let last = (d.len() / ss).saturating_sub(1) * ss;
        for at in [ss, last] {
            if at == 0 || d.get(at..at + 8) != Some(b"EFI PART") || at + ss > d.len() {
                continue;
            }
            let entries = (le_u64(d, at + 72) as usize).saturating_mul(ss);
            let bytes = (le_u32(d, at + 80) as usize).saturating_mul(le_u32(d, at + 84) as usize);
            if bytes <= partition::MAX_ENTRY_ARRAY as usize
                && let Some(array) = d.get(entries..entries.saturating_add(bytes))
            {
                let c = partition::crc32(array);
                d[at + 88..at + 92].copy_from_slice(&c.to_le_bytes());
            }
            let size = (le_u32(d, at + 12) as usize).clamp(92, ss);
            d[at + 16..at + 20].fill(0);
            let c = partition::crc32(&d[at..at + size]);
            d[at + 16..at + 20].copy_from_slice(&c.to_le_bytes());
            changed = true;
        }
    }
    changed
}

fn check_table(data: &[u8]) -> bool {
    let len = data.len() as u64;
    let found = partition::read(data, len, None);
    // The same bytes as the start of a 1 TiB disk: hostile LBAs read past the data and fail;
    // nothing is allocated from them.
    let _ = partition::read(&Mem(data, 1 << 40), 1 << 40, None);
    let Ok(Some(t)) = found else {
        return false;
    };
    let mut numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        t.partitions.len(),
        "partition numbers repeat"
    );
    let disk = Disk::from_device(Mem(data, len), len, None);
    for p in &t.partitions {
        assert!(p.size > 0 && p.start.checked_add(p.size).is_some_and(|e| e <= len));
        if let Ok(disk) = &disk
            && p.is_data()
        {
            let w = disk.partition(p.number).expect("a listed partition opens");
            assert_eq!((w.offset(), w.len()), (p.start, p.size));
        }
    }
    true
}

/// Partition-table bytes (a whole small disk image): read as given, then again with the GPT
/// checksums made right.
pub fn disk_table(data: &[u8]) -> bool {
    let as_is = check_table(data);
    let mut fixed = data.to_vec();
    if fix_gpt_crcs(&mut fixed) {
        check_table(&fixed) || as_is
    } else {
        as_is
    }
}

/// A disk image whose last 512 bytes may be a VHD footer.
pub fn vhd_footer(data: &[u8]) -> bool {
    let head = &data[..data.len().min(512)];
    let tail = if data.len() > 512 {
        &data[data.len() - 512..]
    } else {
        &[][..]
    };
    let found = vhd::detect(head, tail);
    let len = data.len() as u64;
    if let Ok(disk) = Disk::from_device(Mem(data, len), len, None) {
        assert!(disk.len() <= len);
        assert_eq!(
            disk.vhd().is_some(),
            matches!(found, Ok(vhd::Container::FixedVhd(_)))
        );
    }
    match found {
        Ok(vhd::Container::FixedVhd(f)) => {
            assert_eq!(f.checksum_ok, vhd::checksum(tail) == f.checksum);
            true
        }
        Ok(vhd::Container::Raw) => false,
        Err(e) => {
            assert!(e.to_string().contains("qemu-img convert -O raw"));
            false
        }
    }
}
