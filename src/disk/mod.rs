//! Whole disks and disk images: the raw extent (a fixed VHD's footer excluded), its
//! partition table, and [`Window`]s onto a partition or a byte range so that a volume living
//! there is read and written through the window only.
//!
//! The library never prints: damage that does not stop the disk from being used (a VHD
//! footer with a bad checksum, a damaged GPT copy) is collected in [`Disk::warnings`] for the
//! caller to report.
pub mod partition;
pub mod scan;
pub mod vhd;
pub mod window;

pub use partition::{Partition, PartitionTable, TableError, TableKind};
pub use scan::ScanReport;
pub use vhd::VhdFooter;
pub use window::Window;

use crate::error::{Error, ErrorKind};
use crate::luks2::ReadAt;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Why a disk, or a part of it, cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A container format that must be converted first (exit 4).
    #[error(transparent)]
    Container(#[from] vhd::Unsupported),
    /// The partition table is damaged or hostile (exit 4).
    #[error(transparent)]
    Table(#[from] TableError),
    /// `--partition` on a disk without a partition table (exit 4).
    #[error("no partition table found (GPT or MBR); without one there is no partition {0}")]
    NoTable(u32),
    /// A partition number the table does not have (exit 1).
    #[error("partition {number} does not exist (the {table} table has {have})")]
    NoPartition {
        /// The number asked for.
        number: u32,
        /// "GPT" or "MBR".
        table: &'static str,
        /// The numbers there are, listed.
        have: String,
    },
    /// An MBR extended partition was asked for: it only contains the logical ones (exit 1).
    #[error(
        "partition {0} is an extended partition (a container of the logical partitions, numbered from 5)"
    )]
    Extended(u32),
    /// A window that does not lie inside the disk (exit 4, a bad on-disk layout, as
    /// overlapping or out-of-disk partitions are): `--device-offset`/`--device-size` past
    /// the end of the image or device, or an empty window.
    #[error("the window of {size} bytes at byte {offset} does not fit the disk of {disk} bytes")]
    OutOfRange {
        /// The window's start.
        offset: u64,
        /// The window's size.
        size: u64,
        /// The disk's size.
        disk: u64,
    },
    /// Reading the disk failed (exit 4).
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl DiskError {
    /// The crate error for this one, its message prefixed with `name` (the image or device).
    pub fn for_path(self, name: &str) -> Error {
        let kind = match self {
            DiskError::NoPartition { .. } | DiskError::Extended(_) => ErrorKind::Usage,
            _ => ErrorKind::Device,
        };
        Error::new(kind, format!("{name}: {self}"))
    }
}

impl From<DiskError> for Error {
    fn from(e: DiskError) -> Error {
        e.for_path("disk")
    }
}

/// A disk: a backing file or device, the part of it that partitions and volumes see, and
/// what is there (a VHD footer, a partition table).
#[derive(Debug)]
pub struct Disk<D> {
    dev: Arc<D>,
    total_len: u64,
    len: u64,
    vhd: Option<VhdFooter>,
    table: Option<PartitionTable>,
    warnings: Vec<String>,
}

impl Disk<File> {
    /// Opens `path` read-only (an image file or a block device) and reads its layout.
    pub fn open(path: &Path) -> crate::error::Result<Disk<File>> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::io(format!("opening {name}"), e))?;
        // Seeking to the end gives a block device's size too (metadata says 0 there).
        let len = io::Seek::seek(&mut &file, io::SeekFrom::End(0))
            .map_err(|e| Error::io(format!("sizing {name}"), e))?;
        Disk::from_device(file, len, None).map_err(|e| e.for_path(&name))
    }
}

impl<D: ReadAt> Disk<D> {
    /// Reads the layout of `dev`, whose size is `total_len` bytes. `sector_size` is the
    /// device's logical block size when known (see [`partition::read`]).
    pub fn from_device(
        dev: D,
        total_len: u64,
        sector_size: Option<u32>,
    ) -> Result<Disk<D>, DiskError> {
        let head_len = total_len.min(512) as usize;
        let mut head = vec![0u8; head_len];
        dev.read_exact_at(&mut head, 0)?;
        let mut tail = Vec::new();
        if total_len > vhd::FOOTER_LEN {
            tail = vec![0u8; vhd::FOOTER_LEN as usize];
            dev.read_exact_at(&mut tail, total_len - vhd::FOOTER_LEN)?;
        }
        let mut warnings = Vec::new();
        let (len, vhd) = match vhd::detect(&head, &tail)? {
            vhd::Container::Raw => (total_len, None),
            vhd::Container::FixedVhd(f) => {
                let len = total_len - vhd::FOOTER_LEN;
                if !f.checksum_ok {
                    warnings.push(format!(
                        "the fixed VHD footer's checksum is wrong (stored 0x{:08x}, computed 0x{:08x}); the footer is still left out of the disk",
                        f.checksum, f.computed_checksum
                    ));
                }
                if f.current_size != len {
                    warnings.push(format!(
                        "the fixed VHD footer says the disk has {} bytes, the image holds {len}",
                        f.current_size
                    ));
                }
                (len, Some(f))
            }
        };
        let table = partition::read(&dev, len, sector_size)?;
        if let Some(t) = &table {
            warnings.extend(t.warnings.iter().cloned());
        }
        Ok(Disk {
            dev: Arc::new(dev),
            total_len,
            len,
            vhd,
            table,
            warnings,
        })
    }

    /// Bytes of the file or device, a VHD footer included.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Bytes of the disk that partitions and volumes see (a VHD footer left out).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the disk has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fixed VHD footer, if the image has one.
    pub fn vhd(&self) -> Option<&VhdFooter> {
        self.vhd.as_ref()
    }

    /// The partition table, if there is one.
    pub fn table(&self) -> Option<&PartitionTable> {
        self.table.as_ref()
    }

    /// Damage found that did not stop the disk from being used, one sentence each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The underlying file or device.
    pub fn device(&self) -> &Arc<D> {
        &self.dev
    }

    /// The whole disk (without a VHD footer) as a window.
    pub fn whole(&self) -> Result<Window<Arc<D>>, DiskError> {
        Ok(Window::new(self.dev.clone(), 0, self.len)?)
    }

    /// Partition `number` (Linux numbering) as a window.
    pub fn partition(&self, number: u32) -> Result<Window<Arc<D>>, DiskError> {
        let table = self.table.as_ref().ok_or(DiskError::NoTable(number))?;
        let Some(p) = table.partitions.iter().find(|p| p.number == number) else {
            let have: Vec<String> = table
                .partitions
                .iter()
                .filter(|p| p.is_data())
                .map(|p| p.number.to_string())
                .collect();
            return Err(DiskError::NoPartition {
                number,
                table: match table.kind {
                    TableKind::Gpt => "GPT",
                    TableKind::Mbr => "MBR",
                },
                have: if have.is_empty() {
                    "no partitions".into()
                } else {
                    format!("partitions {}", have.join(", "))
                },
            });
        };
        if !p.is_data() {
            return Err(DiskError::Extended(number));
        }
        self.window(p.start, p.size)
    }

    /// The raw byte range `[offset, offset + size)` of the disk as a window.
    pub fn window(&self, offset: u64, size: u64) -> Result<Window<Arc<D>>, DiskError> {
        let out = || DiskError::OutOfRange {
            offset,
            size,
            disk: self.len,
        };
        let end = offset.checked_add(size).ok_or_else(out)?;
        if end > self.len {
            return Err(out());
        }
        Ok(Window::new(self.dev.clone(), offset, size)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bytes in memory as a device.
    #[derive(Debug)]
    pub(crate) struct Mem(pub Vec<u8>);
    impl ReadAt for Mem {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0[..].read_exact_at(buf, offset)
        }
        fn len_bytes(&self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }
    }

    fn gpt_disk(size: usize) -> Vec<u8> {
        let mut d = vec![0u8; size];
        partition::tests::make_gpt(&mut d, &[(2048, 4095, "a"), (4096, 6143, "b")]);
        d[2048 * 512..2048 * 512 + 6].copy_from_slice(b"LUKS\xba\xbe");
        d
    }

    #[test]
    fn partitions_become_windows() {
        let d = gpt_disk(4 << 20);
        let disk = Disk::from_device(Mem(d), 4 << 20, None).unwrap();
        assert!(disk.vhd().is_none());
        let w = disk.partition(1).unwrap();
        assert_eq!((w.offset(), w.len()), (2048 * 512, 2048 * 512));
        let mut m = [0u8; 6];
        w.read_exact_at(&mut m, 0).unwrap();
        assert_eq!(&m, b"LUKS\xba\xbe");
        assert!(w.read_exact_at(&mut m, w.len() - 5).is_err());
        let e = disk.partition(3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "partition 3 does not exist (the GPT table has partitions 1, 2)"
        );
        assert_eq!(e.for_path("x").exit_code(), 1);
        assert_eq!(disk.window(0, 4 << 20).unwrap().len(), 4 << 20);
        assert_eq!(
            disk.window(1, 4 << 20)
                .unwrap_err()
                .for_path("x")
                .exit_code(),
            4
        );
        assert!(disk.window(u64::MAX, 2).is_err());
    }

    #[test]
    fn fixed_vhd_footer_is_left_out() {
        let mut d = gpt_disk(4 << 20);
        d.extend_from_slice(&vhd::tests::footer(4 << 20, 2));
        let n = d.len() as u64;
        let disk = Disk::from_device(Mem(d.clone()), n, None).unwrap();
        assert_eq!(disk.len(), 4 << 20);
        assert_eq!(disk.total_len(), n);
        assert!(disk.vhd().unwrap().checksum_ok);
        assert!(disk.warnings().is_empty(), "{:?}", disk.warnings());
        // The backup GPT is found just before the footer, not at the image's end.
        assert_eq!(disk.table().unwrap().header, Some("primary"));
        assert!(disk.window(0, (4 << 20) + 1).is_err());
        // A bad checksum: a warning, the footer still left out.
        let last = d.len() - 100;
        d[last] ^= 1;
        let disk = Disk::from_device(Mem(d), n, None).unwrap();
        assert_eq!(disk.len(), 4 << 20);
        assert!(
            disk.warnings()[0].contains("checksum"),
            "{:?}",
            disk.warnings()
        );
    }

    #[test]
    fn refusals_and_exit_codes() {
        let mut q = vec![0u8; 1 << 20];
        q[..4].copy_from_slice(b"QFI\xfb");
        let e = Disk::from_device(Mem(q), 1 << 20, None).unwrap_err();
        assert!(e.to_string().contains("a qcow2 image"), "{e}");
        assert_eq!(e.for_path("q").exit_code(), 4);
        let plain = vec![0u8; 1 << 20];
        let disk = Disk::from_device(Mem(plain), 1 << 20, None).unwrap();
        assert!(disk.table().is_none());
        let e = disk.partition(1).unwrap_err();
        assert_eq!(e.for_path("p").exit_code(), 4);
        let mut both = gpt_disk(4 << 20);
        both[512 + 40] ^= 1;
        let n = both.len();
        both[n - 512 + 40] ^= 1;
        let e = Disk::from_device(Mem(both), n as u64, None).unwrap_err();
        assert_eq!(e.for_path("b").exit_code(), 4);
    }
}
