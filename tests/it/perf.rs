//! Safety net for the data-path tuning (issue 7): O_DIRECT requests reach the daemon
//! concurrently (FUSE_ASYNC_DIO), large ones split into several FUSE requests in flight at
//! once. Whatever the kernel sends, PLAIN must read back exactly what was written, and the
//! backing must hold it as aes-xts that cryptsetup's layout decrypts (checked via `digest`).
use crate::support::*;
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::Arc;

/// A heap buffer of `len` bytes aligned to 4096, as O_DIRECT needs.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let raw = vec![0u8; len + 4096];
        let start = raw.as_ptr().align_offset(4096);
        Aligned { raw, start, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

#[test]
fn direct_io_concurrent_large_and_small_writes_match_a_model() {
    let test = "direct_io_concurrent_large_and_small_writes_match_a_model";
    if !require_fuse(test) {
        return;
    }
    let size = 32 * MIB as usize;
    let vol = Vol::new("32M", &[]);
    let m = vol.open();
    let plain = Arc::new(vol.plain.clone());
    // Four threads, each owning a disjoint 8 MiB region: O_DIRECT writes of 4 KiB up to
    // 3 MiB (several FUSE requests at once) at 4 KiB-aligned offsets, each followed by an
    // O_DIRECT read-back of a random earlier range of its own region.
    let threads = 4usize;
    let region = size / threads;
    let joins: Vec<_> = (0..threads)
        .map(|t| {
            let plain = Arc::clone(&plain);
            std::thread::spawn(move || {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&*plain)
                    .expect("open PLAIN with O_DIRECT");
                let mut model = vec![0u8; region];
                let mut rng = 0x9e37_79b9_u64 ^ (t as u64) << 32;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for round in 0..40u64 {
                    let blocks = region / 4096;
                    let len_blocks = match next() % 3 {
                        0 => 1,
                        1 => 1 + (next() % 16) as usize,
                        _ => 256 + (next() % 512) as usize, // 1-3 MiB
                    }
                    .min(blocks);
                    let first = (next() as usize) % (blocks - len_blocks + 1);
                    let mut buf = Aligned::new(len_blocks * 4096);
                    let data = pattern(len_blocks * 4096, (t as u64) << 40 | round);
                    buf.bytes().copy_from_slice(&data);
                    let off = t * region + first * 4096;
                    file.write_all_at(buf.bytes(), off as u64)
                        .expect("O_DIRECT write");
                    model[first * 4096..(first + len_blocks) * 4096].copy_from_slice(&data);
                    let rb = (next() as usize) % blocks;
                    let rl = (1 + (next() as usize) % 300).min(blocks - rb);
                    let mut back = Aligned::new(rl * 4096);
                    file.read_exact_at(back.bytes(), (t * region + rb * 4096) as u64)
                        .expect("O_DIRECT read");
                    assert!(
                        back.bytes() == &model[rb * 4096..(rb + rl) * 4096],
                        "thread {t} round {round}: read-back differs"
                    );
                }
                model
            })
        })
        .collect();
    let mut model = Vec::with_capacity(size);
    for j in joins {
        model.extend(j.join().expect("writer thread"));
    }
    // Buffered read of the whole file agrees, and so does the backing after close.
    assert!(std::fs::read(&vol.plain).expect("read PLAIN") == model);
    m.close();
    let out = vd(&["digest", s(&vol.backing), "--key-file", s(&vol.key)]).ok();
    assert!(
        out.stdout.starts_with(&sha256(&model)),
        "digest of the closed volume differs from the model:\n{}",
        out.describe()
    );
}
