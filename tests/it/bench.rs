//! `vaultdisk benchmark`: the shape of its JSON (no timing assertions: figures are whatever
//! this machine gives) and its refusals.
use crate::support::*;

#[test]
fn benchmark_json_lists_every_engine_and_the_data_path() {
    let out = vd(&[
        "benchmark",
        "--json",
        "--runs",
        "1",
        "--time-ms",
        "2",
        "--argon2-time",
        "1",
        "--argon2-memory",
        "64",
        "--argon2-parallel",
        "1",
    ])
    .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let rows = v["cipher"].as_array().expect("cipher rows");
    let has = |bits: u64, ss: u64, engine: &str| {
        rows.iter().any(|r| {
            r["key_bits"] == bits
                && r["sector_bytes"] == ss
                && r["engine"] == engine
                && r["encrypt_1core_mbps"]["median"].as_f64().unwrap_or(0.0) > 0.0
                && r["decrypt_allcores_mbps"]["median"].as_f64().unwrap_or(0.0) > 0.0
        })
    };
    for ss in [512, 4096] {
        assert!(has(256, ss, "rustcrypto"), "{}", out.stdout);
        assert!(has(512, ss, "rustcrypto"), "{}", out.stdout);
        assert!(has(512, ss, "aws-lc"), "{}", out.stdout);
    }
    // Exactly one engine is the data path for each key size and sector size.
    for bits in [256, 512] {
        for ss in [512, 4096] {
            let n = rows
                .iter()
                .filter(|r| r["key_bits"] == bits && r["sector_bytes"] == ss)
                .filter(|r| r["data_path"] == true)
                .count();
            assert_eq!(n, 1, "{bits}b {ss}: {}", out.stdout);
        }
    }
    assert_eq!(v["data_path_vs_fastest"]["engine"], "aws-lc");
    assert!(v.get("target1").is_none(), "{}", out.stdout);
    let kdfs = v["kdf"].as_array().expect("kdf rows");
    assert_eq!(kdfs.len(), 4, "{}", out.stdout);
    assert!(
        kdfs.iter()
            .all(|k| k["value"]["median"].as_f64().unwrap_or(0.0) > 0.0)
    );
}

#[test]
fn benchmark_refuses_bad_costs() {
    vd(&["benchmark", "--runs", "0"]).fails_with(1);
    vd(&["benchmark", "--argon2-memory", "8"]).fails_with(1);
    vd(&["benchmark", "--argon2-parallel", "9"]).fails_with(1);
}
