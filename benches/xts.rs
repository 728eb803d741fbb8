//! Reference XTS figures that must not ship in the binary: xts-mode 0.6 (the test reference,
//! a dev-dependency), per-sector API, one core, 1 MiB buffers of 512- and 4096-byte sectors,
//! XTS-AES-256. Prints one JSON object (median/min/max MB/s of 3 runs) for scripts/bench.sh,
//! which sets it beside `vaultdisk benchmark --json` and `openssl speed` from the same run.
//! Run: `cargo bench --bench xts`.
use aes::cipher::KeyInit;
use std::time::{Duration, Instant};
use xts_mode::Xts128;

fn main() {
    let key: Vec<u8> = (0u8..64)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let xts = Xts128::new(
        aes::Aes256::new_from_slice(&key[..32]).expect("32-byte key"),
        aes::Aes256::new_from_slice(&key[32..]).expect("32-byte key"),
    );
    let mut buf = vec![0x5au8; 1 << 20];
    let mut rows = vec![];
    for ss in [512usize, 4096] {
        for encrypt in [true, false] {
            let pass = |b: &mut [u8]| {
                for (i, s) in b.chunks_exact_mut(ss).enumerate() {
                    let mut t = [0u8; 16];
                    t[..8].copy_from_slice(&((i * ss / 512) as u64).to_le_bytes());
                    if encrypt {
                        xts.encrypt_sector(s, t.into());
                    } else {
                        xts.decrypt_sector(s, t.into());
                    }
                }
            };
            pass(&mut buf);
            let mut v: Vec<f64> = (0..3)
                .map(|_| {
                    let start = Instant::now();
                    let mut done = 0usize;
                    while start.elapsed() < Duration::from_millis(300) {
                        pass(&mut buf);
                        done += buf.len();
                    }
                    done as f64 / start.elapsed().as_secs_f64() / 1e6
                })
                .collect();
            v.sort_by(f64::total_cmp);
            rows.push(format!(
                "{{\"engine\":\"xts-mode\",\"key_bits\":512,\"sector_bytes\":{ss},\"direction\":\"{}\",\"mbps\":{{\"median\":{:.1},\"min\":{:.1},\"max\":{:.1}}}}}",
                if encrypt { "encrypt" } else { "decrypt" },
                v[1],
                v[0],
                v[2]
            ));
        }
    }
    println!("{{\"reference\":[{}]}}", rows.join(","));
}
