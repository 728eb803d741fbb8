//! Reads a LUKS2 or LUKS1 volume's whole plaintext through the vaultdisk library (no FUSE, no
//! root) and prints its SHA-256 as `vaultdisk digest` does: `<sha256>  <backing>`.
//!
//!     cargo run --example hash_plaintext -- BACKING KEY_FILE
use sha2::{Digest, Sha256};
use vaultdisk::api::{KeySource, Volume};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hash_plaintext: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(backing), Some(key_file), None) = (args.next(), args.next(), args.next()) else {
        return Err("usage: hash_plaintext BACKING KEY_FILE".into());
    };
    let key = KeySource::KeyFile {
        path: key_file.into(),
        offset: 0,
        size: None,
    };
    let volume = Volume::open_read_only(&backing, key)?;

    let size = volume.size_bytes();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < size {
        let want = usize::try_from(size - offset).map_or(buf.len(), |left| left.min(buf.len()));
        let n = volume.read_at(offset, &mut buf[..want])?;
        if n == 0 {
            return Err(format!("plaintext ends early at byte {offset} of {size}").into());
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    println!(
        "{}  {}",
        vaultdisk::hex::encode(&hasher.finalize()),
        std::path::Path::new(&backing).display()
    );
    Ok(())
}
