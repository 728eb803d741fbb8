//! `cargo fuzz run boot_header`: a hostile ext2/3/4 boot partition, searched for ADE's
//! detached header `luks/osluksheader` (vaultdisk::verify::detached, through ext4-view with
//! vaultdisk's size cap), and a header found there parsed as `verify DISK...` parses it.
#![no_main]

/// The partition's bytes.
struct Mem(Vec<u8>);

impl vaultdisk::luks2::ReadAt for Mem {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0[..].read_exact_at(buf, offset)
    }
    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, bytes))) = vaultdisk::verify::detached::find_with_ext4_view(Mem(data.to_vec())) {
        let _ = vaultdisk::device::read_header(&Mem(bytes), std::path::Path::new("boot"));
    }
});
