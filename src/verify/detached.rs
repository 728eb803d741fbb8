//! Where a detached LUKS header comes from: a file given with `--header`, or
//! `luks/osluksheader` in an unencrypted ext2/3/4 boot partition, read natively (no mount, no
//! root) with the `ext4-view` crate through a window of that partition. Azure Disk
//! Encryption keeps the OS disk's header there (../shared/docs/ade-facts.md §0.2, §1.3).
use crate::disk::Window;
use crate::luks2::ReadAt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Where ADE's header lives inside the boot filesystem: `/boot` as its own partition holds
/// `luks/osluksheader`; a root filesystem that has /boot as a directory holds
/// `boot/luks/osluksheader`.
pub const BOOT_HEADER_PATHS: [&str; 2] = ["/luks/osluksheader", "/boot/luks/osluksheader"];

/// The largest detached header read into memory (ADE's is 32 MiB; a LUKS2 header with the
/// biggest keyslot area cryptsetup makes stays below this).
pub const MAX_HEADER_BYTES: u64 = 64 << 20;

/// The bytes of a detached header: read from a filesystem into memory, or a file left open.
pub enum HeaderBytes {
    /// Read out of a boot filesystem.
    Mem(MemBytes),
    /// A `--header` file.
    File(File),
}

impl HeaderBytes {
    /// The header as something to read from.
    pub fn dev(&self) -> &dyn ReadAt {
        match self {
            HeaderBytes::Mem(v) => v,
            HeaderBytes::File(f) => f,
        }
    }
}

/// Bytes in memory, read as a header file.
pub struct MemBytes(pub Vec<u8>);

impl ReadAt for MemBytes {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0[..].read_exact_at(buf, offset)
    }

    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

/// Most block groups a boot filesystem may declare: ext4-view allocates one descriptor per
/// group before it checks anything (found by the `boot_header` fuzz target); 2^18 groups of
/// 128 MiB are 32 TiB.
pub const MAX_BLOCK_GROUPS: u64 = 1 << 18;

fn le32(sb: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&sb[at..at + 4]);
    u64::from(u32::from_le_bytes(b))
}

/// Refuses, before ext4-view allocates for it, a superblock whose filesystem is larger than
/// its partition or has more than [`MAX_BLOCK_GROUPS`] groups.
fn check_superblock(partition: &dyn ReadAt) -> Result<(), String> {
    let mut sb = [0u8; 1024];
    partition
        .read_exact_at(&mut sb, 1024)
        .map_err(|e| format!("cannot read the superblock: {e}"))?;
    let incompat = le32(&sb, 0x60);
    let mut blocks = le32(&sb, 0x04);
    if incompat & 0x80 != 0 {
        blocks |= le32(&sb, 0x150) << 32;
    }
    let log = le32(&sb, 0x18);
    let per_group = le32(&sb, 0x20);
    if log > 6 || per_group == 0 {
        return Err("not an ext2/3/4 superblock (block size or group size)".into());
    }
    let block_size = 1024u64 << log;
    let len = partition
        .len_bytes()
        .map_err(|e| format!("cannot size the partition: {e}"))?;
    if blocks.checked_mul(block_size).is_none_or(|b| b > len) {
        return Err(format!(
            "the superblock declares {blocks} blocks of {block_size} bytes, more than the partition's {len} bytes"
        ));
    }
    if blocks.div_ceil(per_group) > MAX_BLOCK_GROUPS {
        return Err(format!(
            "the superblock declares more than {MAX_BLOCK_GROUPS} block groups"
        ));
    }
    Ok(())
}

/// A partition read by ext4-view.
struct Reader<R>(R);

impl<R: ReadAt> ext4_view::Ext4Read for Reader<R> {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.read_exact_at(dst, start_byte).map_err(|e| e.into())
    }
}

/// Looks for ADE's detached header in the ext2/3/4 filesystem of `window` (partition `window`
/// of the image `disk`): `Ok(None)` when the filesystem has none at [`BOOT_HEADER_PATHS`],
/// `Ok(Some((path, bytes)))` when it has one, `Err(why)` when the filesystem cannot be read
/// or the file is too large.
///
/// ext4-view 1.0.0 refuses a block-mapped (ext2/ext3) file with a hole that spans a whole
/// indirect block (it reads block 0 for the missing indirect block), which is what
/// `mkfs.ext2 -d` makes of a 32 MiB header whose second half is zeros; when ext4-view cannot
/// read the filesystem or the file, e2fsprogs' `debugfs -c` (read-only, the reference
/// implementation, installed wherever e2fsck is) reads it from the partition's byte offset.
pub fn find_in_ext(
    window: Window<Arc<File>>,
    disk: &Path,
) -> Result<Option<(&'static str, Vec<u8>)>, String> {
    let offset = window.offset();
    match find_with_ext4_view(window) {
        Ok(found) => Ok(found),
        Err(why) => {
            log::info!("ext4-view: {why}; reading with debugfs");
            find_with_debugfs(disk, offset).map_err(|e| format!("{why}; debugfs: {e}"))
        }
    }
}

/// [`find_in_ext`] without the debugfs fallback, over any reader of the partition's bytes
/// (the fuzz target `boot_header` feeds it hostile filesystems).
pub fn find_with_ext4_view<R: ReadAt + 'static>(
    partition: R,
) -> Result<Option<(&'static str, Vec<u8>)>, String> {
    check_superblock(&partition)?;
    let fs = ext4_view::Ext4::load(Box::new(Reader(partition)))
        .map_err(|e| format!("cannot read the filesystem: {e}"))?;
    for path in BOOT_HEADER_PATHS {
        let found = fs
            .exists(path)
            .map_err(|e| format!("cannot look up {path}: {e}"))?;
        if !found {
            continue;
        }
        let meta = fs
            .metadata(path)
            .map_err(|e| format!("cannot stat {path}: {e}"))?;
        if meta.len() > MAX_HEADER_BYTES {
            return Err(format!(
                "{path} has {} bytes, more than a detached header ({MAX_HEADER_BYTES})",
                meta.len()
            ));
        }
        let bytes = fs
            .read(path)
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        return Ok(Some((path, bytes)));
    }
    Ok(None)
}

/// `debugfs -c -R "cat PATH" "DISK?offset=N"` for each of [`BOOT_HEADER_PATHS`], its output
/// capped at [`MAX_HEADER_BYTES`].
fn find_with_debugfs(disk: &Path, offset: u64) -> Result<Option<(&'static str, Vec<u8>)>, String> {
    let name = disk
        .to_str()
        .filter(|n| !n.contains('?'))
        .ok_or("the image path cannot be given to debugfs")?;
    let program = ["/usr/sbin/debugfs", "/sbin/debugfs"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("debugfs");
    for path in BOOT_HEADER_PATHS {
        let mut child = Command::new(program)
            .arg("-c")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(format!("{name}?offset={offset}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run debugfs: {e}"))?;
        let mut bytes = Vec::new();
        let read = child
            .stdout
            .take()
            .map(|o| o.take(MAX_HEADER_BYTES + 1).read_to_end(&mut bytes));
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.kill();
        let status = child.wait().map_err(|e| format!("debugfs: {e}"))?;
        if let Some(Err(e)) = read {
            return Err(format!("reading debugfs output: {e}"));
        }
        if bytes.len() as u64 > MAX_HEADER_BYTES {
            return Err(format!(
                "{path} is larger than a detached header ({MAX_HEADER_BYTES} bytes)"
            ));
        }
        if err.contains("File not found") {
            continue;
        }
        if !status.success() || bytes.is_empty() {
            let last = err.lines().last().unwrap_or("no output").trim().to_string();
            return Err(format!("cannot read {path}: {last}"));
        }
        return Ok(Some((path, bytes)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> MemBytes {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/boot_header/ext2-mkfs-d-luks1"
        );
        MemBytes(std::fs::read(p).unwrap())
    }

    #[test]
    fn reads_the_header_out_of_mkfs_ext2_d() {
        let (path, bytes) = find_with_ext4_view(seed()).unwrap().unwrap();
        assert_eq!(path, "/luks/osluksheader");
        assert_eq!(bytes.len(), 1024);
        assert_eq!(&bytes[..6], b"LUKS\xba\xbe");
    }

    #[test]
    fn a_superblock_larger_than_its_partition_is_refused_before_allocating() {
        let mut m = seed();
        // s_blocks_count_lo: 2^32 - 1 blocks (the fuzzer's 256 MiB descriptor table).
        m.0[1024 + 4..1024 + 8].copy_from_slice(&[0xff; 4]);
        let e = find_with_ext4_view(m).unwrap_err();
        assert!(e.contains("more than the partition"), "{e}");
        let mut m = seed();
        m.0[1024 + 0x18..1024 + 0x1c].copy_from_slice(&40u32.to_le_bytes());
        assert!(find_with_ext4_view(m).is_err());
        assert!(find_with_ext4_view(MemBytes(vec![0u8; 1500])).is_err());
    }
}
