//! Reliability evidence (issue 6): the fuzz corpora replayed, hostile sizes refused before
//! allocating, data integrity through PLAIN and ext4 (fio --verify and a model writer, also
//! after close and reopen), kill -9 of the daemon against a journal of fsynced writes, a full
//! backing filesystem, and two writers on one sector. scripts/stress.sh runs the same checks
//! at several GiB; the sizes here keep CI within a minute or two.

use crate::support::*;
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

#[path = "../../fuzz/harness.rs"]
mod harness;

// ---- 1. fuzz corpora as plain tests ----

pub(crate) type Target = fn(&[u8]) -> bool;

const TARGETS: [(&str, Target); 4] = [
    ("luks2_header", harness::luks2_header),
    ("luks2_json", harness::luks2_json),
    ("token_json", harness::token_json),
    ("luks1_header", harness::luks1_header),
];

/// Every file of fuzz/corpus/<target> (and fuzz/regressions/<target>, inputs that once
/// crashed) goes through the target's body: no panic. Seeds named after what made them
/// (real cryptsetup / vaultdisk / qemu-img headers) must be accepted, `*.reject` files must
/// be rejected; files named by libFuzzer (40 hex digits) may go either way.
#[test]
fn fuzz_corpora_replay() {
    replay_corpora(&TARGETS);
}

/// Replays fuzz/corpus/<name> and fuzz/regressions/<name> through each target (the rule of
/// `fuzz_corpora_replay`); the disk targets use it too.
pub(crate) fn replay_corpora(targets: &[(&str, Target)]) {
    let mut failures = Vec::new();
    for &(name, target) in targets {
        let mut seen = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = fs::read_dir(repo_file(&format!("fuzz/{dir}/{name}"))) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                let data = fs::read(&path).unwrap();
                let accepted = std::panic::catch_unwind(|| target(&data))
                    .unwrap_or_else(|_| panic!("{name}: {} panicked", path.display()));
                seen += 1;
                let generated = file.len() == 40 && file.bytes().all(|c| c.is_ascii_hexdigit());
                if file.ends_with(".reject") && accepted {
                    failures.push(format!("{name}: {file} should be rejected"));
                } else if dir == "corpus" && !generated && !file.ends_with(".reject") && !accepted {
                    failures.push(format!("{name}: seed {file} should be accepted"));
                }
            }
        }
        assert!(seen >= 3, "{name}: only {seen} corpus files");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- hostile sizes ----

const CSUM_OFFSET: usize = 448;
const HDR: usize = 16384;

/// Rewrites both 16 KiB header copies of `backing`: `bin` may change the binary header,
/// `json` the metadata; checksums are recomputed so only the hostile field is wrong.
fn rewrite_header(backing: &Path, bin: impl Fn(&mut [u8]), json: impl Fn(&mut Value)) {
    let mut raw = read_range(backing, 0, 2 * HDR as u64);
    for copy in raw.chunks_exact_mut(HDR) {
        let text_len = copy[4096..].iter().position(|&c| c == 0).unwrap();
        let mut v: Value = serde_json::from_slice(&copy[4096..4096 + text_len]).unwrap();
        json(&mut v);
        let text = serde_json::to_vec(&v).unwrap();
        copy[4096..].fill(0);
        copy[4096..4096 + text.len()].copy_from_slice(&text);
        let mut b = [0u8; 4096];
        b.copy_from_slice(&copy[..4096]);
        let sum = vaultdisk::luks2::binary::checksum(&b, &copy[4096..]);
        copy[CSUM_OFFSET..CSUM_OFFSET + 32].copy_from_slice(&sum);
        bin(&mut copy[..4096]);
    }
    poke(backing, 0, &raw);
}

const FOUR_GIB: u64 = 1 << 32;

/// Fixtures with a 4 GiB size in a header field (and friends), in `dir`, by file name.
fn hostile_fixtures(dir: &Path) -> Vec<&'static str> {
    let base = Vol::new("4M", &[]);
    let mut made = Vec::new();
    let mut make = |name: &'static str, bin: &dyn Fn(&mut [u8]), json: &dyn Fn(&mut Value)| {
        // The first MiB holds both header copies and keyslot 0; the rest is not read
        // before the hostile field is refused (and hashing it slows the table down).
        let p = dir.join(name);
        copy_prefix(&base.backing, &p, MIB);
        rewrite_header(&p, bin, json);
        made.push(name);
    };
    let none = |_: &mut [u8]| {};
    let keep = |_: &mut Value| {};
    // hdr_size is the first thing read after the magic: JSON area = hdr_size - 4096 bytes.
    make(
        "hdr-size-4g.img",
        &|b| b[8..16].copy_from_slice(&FOUR_GIB.to_be_bytes()),
        &keep,
    );
    make("json-size-4g.img", &none, &|v| {
        v["config"]["json_size"] = FOUR_GIB.to_string().into()
    });
    make("keyslots-size-4g.img", &none, &|v| {
        v["config"]["keyslots_size"] = FOUR_GIB.to_string().into()
    });
    make("area-size-4g.img", &none, &|v| {
        v["keyslots"]["0"]["area"]["size"] = FOUR_GIB.to_string().into()
    });
    make("area-offset-huge.img", &none, &|v| {
        v["keyslots"]["0"]["area"]["offset"] = u64::MAX.to_string().into()
    });
    make("segment-size-huge.img", &none, &|v| {
        v["segments"]["0"]["size"] = (u64::MAX - 4095).to_string().into()
    });
    make("segment-offset-huge.img", &none, &|v| {
        v["segments"]["0"]["offset"] = (u64::MAX - 4095).to_string().into()
    });
    make("pbkdf2-iterations-huge.img", &none, &|v| {
        v["keyslots"]["0"]["kdf"]["iterations"] = u64::from(u32::MAX).into()
    });
    make("argon2-memory-4t.img", &none, &|v| {
        v["keyslots"]["0"]["kdf"] = serde_json::json!({
            "type": "argon2id", "time": 4, "memory": 4u64 << 30, "cpus": 4,
            "salt": v["keyslots"]["0"]["kdf"]["salt"].clone()
        })
    });
    make("json-deeply-nested.img", &none, &|v| {
        let mut deep = Value::Null;
        for _ in 0..200 {
            deep = Value::Array(vec![deep]);
        }
        v["tokens"]["0"] = serde_json::json!({"type": "x", "keyslots": [], "deep": deep});
    });
    made
}

/// A hostile size in a header is refused with a message (exit 4 or 2 for an unusable
/// keyslot) and never allocated: under a 512 MiB address-space limit a 4 GiB allocation
/// would abort the process instead.
#[test]
fn hostile_sizes_refused_before_allocating() {
    let test = "hostile_sizes_refused_before_allocating";
    if !require(test, &["prlimit"]) {
        return;
    }
    let t = temp();
    let key = write_key(t.path(), "key", PASS);
    let names = hostile_fixtures(t.path());
    let limit = format!("--as={}", 512u64 << 20);
    let mut failures = Vec::new();
    for name in names {
        let img = t.path().join(name);
        let before = sha256_file(&img);
        let plain = t.path().join("plain");
        // dump reads the header; test-key runs the keyslot path (not for the PBKDF2 case:
        // 4G-1 iterations are valid LUKS2 and take hours, as in cryptsetup); open the rest.
        let mut verbs = vec![vec!["dump", s(&img)]];
        if name.starts_with("segment") {
            verbs.push(vec!["open", s(&img), s(&plain), "--key-file", s(&key)]);
        } else if !name.starts_with("pbkdf2") {
            verbs.push(vec!["test-key", s(&img), "--key-file", s(&key)]);
        }
        for verb in verbs {
            let mut args = vec![limit.as_str(), BIN];
            args.extend_from_slice(&verb);
            let out = try_run(tool("prlimit"), &args, None, Duration::from_secs(60)).unwrap();
            let ok = match verb[0] {
                // dump lists an unusable keyslot and exits 0; a broken header is exit 4.
                "dump" => out.code == 0 || out.check_error(&[4]).is_ok(),
                _ => out.check_error(&[2, 4]).is_ok(),
            };
            if !ok {
                failures.push(format!("{name} {}: {}", verb[0], out.describe()));
            }
            if plain.exists() {
                force_unmount(&plain);
                failures.push(format!("{name}: open left PLAIN behind"));
            }
        }
        assert_eq!(sha256_file(&img), before, "{name} was modified");
    }
    // In process, too: the parsers return errors for the raw bytes.
    let raw = read_range(&t.path().join("hdr-size-4g.img"), 0, 2 * HDR as u64);
    assert!(vaultdisk::luks2::read(&raw[..]).is_err());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// LUKS1: hostile keyBytes, stripes and key material offsets are refused before the
/// (keyBytes x stripes) material buffer is sized from them.
#[test]
fn hostile_luks1_fields_refused() {
    let mut phdr = fs::read(repo_file("fuzz/corpus/luks1_header/l1-sha256")).unwrap();
    assert!(vaultdisk::luks1::parse(&phdr).is_ok());
    let cases: [(&str, usize, u32); 4] = [
        ("keyBytes 4G-1", 108, u32::MAX),
        ("keyslot 0 stripes 4G-1", 208 + 44, u32::MAX),
        ("keyslot 0 material offset 4G-1", 208 + 40, u32::MAX),
        ("digest iterations 0", 164, 0),
    ];
    for (what, at, value) in cases {
        let saved = phdr[at..at + 4].to_vec();
        phdr[at..at + 4].copy_from_slice(&value.to_be_bytes());
        let parsed = vaultdisk::luks1::parse(&phdr);
        let usable = parsed
            .as_ref()
            .is_ok_and(|h| h.validate_against_device(20 << 20).is_ok());
        assert!(!usable, "{what}: accepted");
        phdr[at..at + 4].copy_from_slice(&saved);
    }
}

// ---- helpers for the FUSE tests ----

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn seed() -> u64 {
    std::env::var("VAULTDISK_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs vaultdisk with VAULTDISK_RUNTIME_DIR=rt.
pub fn vd_rt(rt: &Path, args: &[&str]) -> Out {
    let env = format!("VAULTDISK_RUNTIME_DIR={}", s(rt));
    let mut all = vec![env.as_str(), BIN];
    all.extend_from_slice(args);
    run("env", &all, None)
}

/// The pid of the daemon serving `plain`, from `status --json` in runtime dir `rt`.
pub fn daemon_pid(rt: &Path, plain: &Path) -> u32 {
    let out = vd_rt(rt, &["status", "--json"]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let canon = plain.canonicalize().unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|e| Path::new(e["plain"].as_str().unwrap()) == canon)
        .and_then(|e| e["pid"].as_u64())
        .unwrap_or_else(|| panic!("no daemon for {} in {}", plain.display(), out.stdout)) as u32
}

/// `open` with its own runtime dir; the guard closes on drop.
fn open_rt(v: &Vol, rt: &Path, extra: &[&str]) -> Mount {
    let mut args = vec!["open", s(&v.backing), s(&v.plain), "--key-file", s(&v.key)];
    args.extend_from_slice(extra);
    let out = vd_rt(rt, &args);
    let guard = Mount::new(&v.plain);
    out.ok();
    assert!(is_mounted(&v.plain));
    guard
}

fn close_rt(m: Mount, rt: &Path) {
    vd_rt(rt, &["close", s(&m.plain)]).ok();
    assert!(!is_mounted(&m.plain));
    std::mem::forget(m);
}

// ---- 2. data integrity: a model writer, close, reopen ----

/// Four threads write random offsets and lengths (1 byte .. 256 KiB, unaligned) into their
/// own quarter of PLAIN, each checked against its model while running, then the whole file
/// after close and reopen. VAULTDISK_STRESS_MIB scales the volume (scripts/stress.sh).
#[test]
fn model_writer_survives_close_and_reopen() {
    if !require_fuse("model_writer_survives_close_and_reopen") {
        return;
    }
    let mib = env_u64("VAULTDISK_STRESS_MIB", 32);
    let rounds = env_u64("VAULTDISK_STRESS_ROUNDS", 300);
    let v = Vol::new(&format!("{mib}M"), &[]);
    let rt = v.dir.path().join("rt");
    let m = open_rt(&v, &rt, &[]);
    let size = (mib * MIB) as usize;
    let quarter = size / 4;
    let base = seed();
    let joins: Vec<_> = (0..4)
        .map(|t| {
            let plain = v.plain.clone();
            std::thread::spawn(move || {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&plain)
                    .unwrap();
                let mut rng = Rng(base ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut model = vec![0u8; quarter];
                let start = t * quarter;
                for round in 0..rounds {
                    let off = rng.below(quarter as u64) as usize;
                    let len = (1 + rng.below(256 * KIB) as usize).min(quarter - off);
                    if rng.below(3) > 0 {
                        let data = rng.bytes(len);
                        f.write_all_at(&data, (start + off) as u64).unwrap();
                        model[off..off + len].copy_from_slice(&data);
                    } else {
                        let mut buf = vec![0u8; len];
                        f.read_exact_at(&mut buf, (start + off) as u64).unwrap();
                        assert!(
                            buf == model[off..off + len],
                            "seed {base} thread {t} round {round}: read at {} differs",
                            start + off
                        );
                    }
                }
                f.sync_all().unwrap();
                model
            })
        })
        .collect();
    let model: Vec<u8> = joins.into_iter().flat_map(|j| j.join().unwrap()).collect();
    close_rt(m, &rt);
    let m = open_rt(&v, &rt, &["--read-only"]);
    let got = fs::read(&v.plain).unwrap();
    assert!(got == model, "seed {base}: content differs after reopen");
    close_rt(m, &rt);
    println!(
        "RESULT model writer: {mib} MiB volume, 4 threads x {rounds} random ops, {:.2} GiB compared after reopen, mismatches 0 (seed {base})",
        model.len() as f64 / (1u64 << 30) as f64
    );
}

/// fio with crc32c verification headers, 4 jobs: through PLAIN directly and through ext4 on
/// a loop device over PLAIN; then close, reopen and verify again (fio --verify_only).
#[test]
fn fio_verify_through_plain_and_ext4() {
    let test = "fio_verify_through_plain_and_ext4";
    if !require(
        test,
        &["fuse", "loop", "fio", "mkfs.ext4", "e2fsck", "mount"],
    ) {
        return;
    }
    let job_mib = env_u64("VAULTDISK_STRESS_JOB_MIB", 16);
    let v = Vol::new(&format!("{}M", 4 * job_mib + 64), &[]);
    let rt = v.dir.path().join("rt");
    let m = open_rt(&v, &rt, &[]);
    // Raw PLAIN: each job owns job_mib MiB; unaligned-size blocks in a random order.
    let raw_job = |extra: &[&str]| {
        let size = format!("--size={job_mib}M");
        let inc = format!("--offset_increment={job_mib}M");
        let file = format!("--filename={}", s(&v.plain));
        let mut args = vec![
            "--name=plain",
            file.as_str(),
            "--rw=randwrite",
            "--bsrange=512-128k",
            "--bs_unaligned=1",
            "--ioengine=psync",
            "--numjobs=4",
            size.as_str(),
            inc.as_str(),
            "--verify=crc32c",
            "--verify_fatal=1",
            // no verify state files in the working directory
            "--verify_state_save=0",
            "--group_reporting",
            "--randrepeat=1",
        ];
        args.extend_from_slice(extra);
        sys("fio", &args).ok()
    };
    raw_job(&[]);
    close_rt(m, &rt);
    let m = open_rt(&v, &rt, &[]);
    raw_job(&["--verify_only"]);
    // The control: one flipped ciphertext byte in job 0's region is caught.
    close_rt(m, &rt);
    let at = DATA_OFFSET + 123 * 4096 + 17;
    let byte = read_range(&v.backing, at, 1)[0];
    poke(&v.backing, at, &[byte ^ 0x40]);
    let m = open_rt(&v, &rt, &[]);
    let size = format!("--size={job_mib}M");
    let file = format!("--filename={}", s(&v.plain));
    let out = sys(
        "fio",
        &[
            "--name=plain",
            file.as_str(),
            "--rw=randwrite",
            "--bsrange=512-128k",
            "--bs_unaligned=1",
            "--ioengine=psync",
            size.as_str(),
            "--verify=crc32c",
            "--verify_state_save=0",
            "--randrepeat=1",
            "--verify_only",
        ],
    );
    assert_ne!(
        out.code,
        0,
        "fio missed a flipped byte:\n{}",
        out.describe()
    );
    poke(&v.backing, at, &[byte]);

    // ext4 over PLAIN through a loop device; the raw jobs' region is overwritten by mkfs.
    sys("mkfs.ext4", &["-q", "-F", s(&v.plain)]).ok();
    let mnt = v.dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let ext4_job = |extra: &[&str]| {
        let lo = LoopDev::attach(&v.plain);
        sys("mount", &["-t", "ext4", &lo.dev, s(&mnt)]).ok();
        let fsm = FsMount { dir: mnt.clone() };
        let dir = format!("--directory={}", s(&mnt));
        let size = format!("--size={}M", job_mib / 2);
        let mut args = vec![
            "--name=ext4",
            dir.as_str(),
            "--rw=randwrite",
            "--bs=4k",
            "--ioengine=psync",
            "--numjobs=4",
            size.as_str(),
            "--verify=crc32c",
            "--verify_fatal=1",
            // no verify state files in the working directory
            "--verify_state_save=0",
            "--fsync_on_close=1",
            "--group_reporting",
            "--randrepeat=1",
        ];
        args.extend_from_slice(extra);
        sys("fio", &args).ok();
        fsm.umount();
        lo.detach();
    };
    ext4_job(&[]);
    close_rt(m, &rt);
    let m = open_rt(&v, &rt, &[]);
    ext4_job(&["--verify_only"]);
    sys("e2fsck", &["-fn", s(&v.plain)]).ok();
    close_rt(m, &rt);
}

// ---- 3. crash: kill -9 mid-writes, against a journal of fsynced writes ----

/// One crash round: writes (unaligned, 1 byte .. 256 KiB) each followed by fdatasync go into
/// the journal once fdatasync returns; a second thread writes big blocks without syncing
/// into another region. The daemon is killed with SIGKILL after a random number of
/// journaled writes. After reopening, every journaled byte is there (bytes of the one write
/// in flight at the kill may be old or new) and the header and keyslots area is unchanged.
fn crash_round(v: &Vol, rt: &Path, model: &mut [u8], known: &mut [bool], rng: &mut Rng) -> usize {
    let header_before = sha256_range(&v.backing, 0, DATA_OFFSET);
    let m = open_rt(v, rt, &[]);
    let pid = daemon_pid(rt, &v.plain);
    let journal_len = model.len();
    let kill_after = 5 + rng.below(60) as usize;
    let journal: Journal = Arc::default();
    let in_flight: Arc<Mutex<Option<(usize, usize)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (plain, journal, in_flight, stop) = (
            v.plain.clone(),
            Arc::clone(&journal),
            Arc::clone(&in_flight),
            Arc::clone(&stop),
        );
        let mut rng = Rng(rng.next() | 1);
        std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&plain).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let off = rng.below(journal_len as u64) as usize;
                let len = (1 + rng.below(256 * KIB) as usize).min(journal_len - off);
                let data = rng.bytes(len);
                *in_flight.lock().unwrap() = Some((off, len));
                if f.write_all_at(&data, off as u64).is_err() || f.sync_data().is_err() {
                    return;
                }
                journal.lock().unwrap().push((off, data));
                *in_flight.lock().unwrap() = None;
            }
        })
    };
    let bulk = {
        let (plain, stop) = (v.plain.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&plain).unwrap();
            let block = vec![0xa5u8; MIB as usize];
            let mut off = journal_len as u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if f.write_all_at(&block, off).is_err() {
                    return;
                }
                off += MIB;
                if off + MIB > 2 * journal_len as u64 {
                    off = journal_len as u64;
                }
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(120), || journal.lock().unwrap().len()
            >= kill_after),
        "writer made no progress"
    );
    sys("kill", &["-KILL", &pid.to_string()]).ok();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    bulk.join().unwrap();
    // The mount is dead (ENOTCONN); close unmounts it and cleans the registry.
    assert!(wait_until(Duration::from_secs(30), || !Path::new(
        &format!("/proc/{pid}")
    )
    .exists()));
    vd_rt(rt, &["close", s(&v.plain)]).ok();
    std::mem::forget(m);
    assert!(!is_mounted(&v.plain));
    let journal = journal.lock().unwrap();
    for (off, data) in journal.iter() {
        model[*off..off + data.len()].copy_from_slice(data);
        known[*off..off + data.len()].fill(true);
    }
    if let Some((off, len)) = *in_flight.lock().unwrap() {
        known[off..off + len].fill(false);
    }
    assert_eq!(
        sha256_range(&v.backing, 0, DATA_OFFSET),
        header_before,
        "header and keyslots area changed"
    );
    let m = open_rt(v, rt, &["--read-only"]);
    let got = read_range(&v.plain, 0, journal_len as u64);
    close_rt(m, rt);
    let bad = (0..journal_len)
        .filter(|&i| known[i] && got[i] != model[i])
        .count();
    assert_eq!(bad, 0, "{bad} fsynced bytes lost or changed");
    // Unknown bytes (the write in flight) take what is on disk now, for the next round.
    for i in 0..journal_len {
        if !known[i] {
            model[i] = got[i];
            known[i] = true;
        }
    }
    journal.len()
}

/// Fsynced writes: (plain offset, bytes), in order.
type Journal = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

/// VAULTDISK_CRASH_ROUNDS rounds (3 in CI; scripts/stress.sh runs more), on one volume.
#[test]
fn kill_9_keeps_every_fsynced_write() {
    if !require_fuse("kill_9_keeps_every_fsynced_write") {
        return;
    }
    let rounds = env_u64("VAULTDISK_CRASH_ROUNDS", 3);
    let v = Vol::new("16M", &[]);
    let rt = v.dir.path().join("rt");
    let half = 8 * MIB as usize;
    let mut model = vec![0u8; half];
    let mut known = vec![true; half];
    let base = seed();
    let mut rng = Rng(base);
    let mut writes = 0;
    for round in 0..rounds {
        writes += crash_round(&v, &rt, &mut model, &mut known, &mut rng);
        eprintln!("crash round {round} (seed {base}): {writes} fsynced writes checked so far");
    }
    println!(
        "RESULT crash: {rounds} kill -9 rounds survived, {writes} fsynced writes all intact, header unchanged (seed {base})"
    );
}

// ---- 3b. a full backing filesystem ----

/// The backing file lives on a 24 MiB tmpfs: writes through PLAIN fail with ENOSPC (not
/// EIO), everything written before is intact, the daemon keeps serving reads, close works.
#[test]
fn full_backing_filesystem_gives_enospc() {
    let test = "full_backing_filesystem_gives_enospc";
    // Mounting a small tmpfs needs root.
    if !require(test, &["fuse", "root", "mount", "umount"]) {
        return;
    }
    let t = temp();
    let small = t.path().join("small");
    fs::create_dir(&small).unwrap();
    sys(
        "mount",
        &["-t", "tmpfs", "-o", "size=24m", "tmpfs", s(&small)],
    )
    .ok();
    let _tmpfs = FsMount { dir: small.clone() };
    let backing = small.join("disk.img");
    let key = write_key(t.path(), "key", PASS);
    format_with(&backing, &key, "64M", &[], &[]).ok();
    let plain = t.path().join("plain");
    let rt = t.path().join("rt");
    let env = format!("VAULTDISK_RUNTIME_DIR={}", s(&rt));
    let out = run(
        "env",
        &[
            env.as_str(),
            BIN,
            "open",
            s(&backing),
            s(&plain),
            "--key-file",
            s(&key),
        ],
        None,
    );
    let m = Mount::new(&plain);
    out.ok();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&plain)
        .unwrap();
    let first = pattern(2 * MIB as usize, 7);
    f.write_all_at(&first, 0).unwrap();
    f.sync_all().unwrap();
    let mut written = Vec::new();
    let mut err = None;
    for i in 2..64u64 {
        let block = pattern(MIB as usize, 100 + i);
        match f.write_all_at(&block, i * MIB).and_then(|()| f.sync_data()) {
            Ok(()) => written.push((i, block)),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("a 24 MiB tmpfs cannot hold 64 MiB of ciphertext");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written.len() >= 5, "only {} MiB fitted", written.len());
    // Reads are still served and nothing written before is damaged.
    let mut buf = vec![0u8; first.len()];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf == first, "first 2 MiB changed");
    for (i, block) in &written {
        let mut buf = vec![0u8; block.len()];
        f.read_exact_at(&mut buf, i * MIB).unwrap();
        assert!(&buf == block, "MiB {i} changed");
    }
    drop(f);
    let pid = daemon_pid(&rt, &plain);
    assert!(Path::new(&format!("/proc/{pid}")).exists(), "daemon died");
    vd_rt(&rt, &["close", s(&plain)]).ok();
    std::mem::forget(m);
    // And after reopening (read-only) the data is still there.
    let out = run(
        "env",
        &[
            env.as_str(),
            BIN,
            "open",
            s(&backing),
            s(&plain),
            "--key-file",
            s(&key),
            "--read-only",
        ],
        None,
    );
    let m = Mount::new(&plain);
    out.ok();
    assert!(read_range(&plain, 0, first.len() as u64) == first);
    vd_rt(&rt, &["close", s(&plain)]).ok();
    std::mem::forget(m);
}

// ---- 4. two writers on one sector ----

/// Two threads write into the same 4096-byte sector at once, every round, with unaligned
/// ranges: half the rounds disjoint ranges (both must land: no lost update from the
/// read-modify-write), half overlapping ranges (the overlap is wholly one writer's bytes:
/// no torn update). Checked against the model after every round; VAULTDISK_SECTOR_ROUNDS.
#[test]
fn two_writers_one_sector() {
    if !require_fuse("two_writers_one_sector") {
        return;
    }
    let rounds = env_u64("VAULTDISK_SECTOR_ROUNDS", 3000) as usize;
    let v = Vol::new("4M", &[]);
    let rt = v.dir.path().join("rt");
    let m = open_rt(&v, &rt, &[]);
    let base = seed();
    let barrier = Arc::new(Barrier::new(3));
    // Per round: (sector, [(offset in sector, data); 2]) decided by the main thread.
    type Plan = Arc<Mutex<(u64, [(usize, Vec<u8>); 2])>>;
    let plan: Plan = Arc::new(Mutex::new((0, [(0, vec![]), (0, vec![])])));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (plain, barrier, plan) = (v.plain.clone(), Arc::clone(&barrier), Arc::clone(&plan));
            std::thread::spawn(move || {
                let f = OpenOptions::new().write(true).open(&plain).unwrap();
                for _ in 0..rounds {
                    barrier.wait();
                    let (sector, ranges) = plan.lock().unwrap().clone();
                    let (off, data) = &ranges[w];
                    f.write_all_at(data, sector * 4096 + *off as u64).unwrap();
                    barrier.wait();
                }
            })
        })
        .collect();
    let f = OpenOptions::new().read(true).open(&v.plain).unwrap();
    let mut model = vec![0u8; 4 * MIB as usize];
    let mut rng = Rng(base);
    let mut failures = Vec::new();
    for round in 0..rounds {
        let sector = rng.below(8);
        let overlap = round % 2 == 1;
        let ranges: [(usize, Vec<u8>); 2] = if overlap {
            let a = rng.below(3000) as usize;
            let alen = 100 + rng.below(1000) as usize;
            let b = a + rng.below(alen as u64) as usize;
            let blen = 1 + rng.below((4096 - b) as u64) as usize;
            [(a, rng.bytes(alen)), (b, rng.bytes(blen))]
        } else {
            let cut = 1 + rng.below(4094) as usize;
            let a = rng.below(cut as u64) as usize;
            let b = cut + rng.below((4096 - cut) as u64) as usize;
            let blen = 1 + rng.below((4096 - b) as u64) as usize;
            [(a, rng.bytes(cut - a)), (b, rng.bytes(blen))]
        };
        *plan.lock().unwrap() = (sector, ranges.clone());
        barrier.wait();
        barrier.wait();
        let mut got = vec![0u8; 4096];
        f.read_exact_at(&mut got, sector * 4096).unwrap();
        let at = (sector * 4096) as usize;
        let sec = &mut model[at..at + 4096];
        // Whichever order the two writes landed in, each must be whole.
        let mut ab = sec.to_vec();
        let mut ba = sec.to_vec();
        for (o, d) in ranges.iter() {
            ab[*o..o + d.len()].copy_from_slice(d);
        }
        for (o, d) in ranges.iter().rev() {
            ba[*o..o + d.len()].copy_from_slice(d);
        }
        if got == ab || got == ba {
            sec.copy_from_slice(&got);
        } else {
            failures.push(format!(
                "round {round} (seed {base}, overlap {overlap}): sector {sector} is torn or lost an update"
            ));
            sec.copy_from_slice(&got);
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    drop(f);
    close_rt(m, &rt);
    // After close and reopen the volume holds the model.
    let m = open_rt(&v, &rt, &["--read-only"]);
    assert!(fs::read(&v.plain).unwrap() == model, "differs after reopen");
    close_rt(m, &rt);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!(
        "RESULT two writers one sector: {rounds} rounds ({} overlapping), no torn or lost update (seed {base})",
        rounds / 2
    );
}

// ---- 7. more bad inputs for the table (docs/bad-inputs.md) ----

/// Hostile headers, key files and paths, through `run_table` (exit code, one stderr line,
/// no file changed) so they are listed in docs/bad-inputs.md with the CLI tables.
#[test]
fn hostile_input_table() {
    use crate::cli::{row, row_says, run_table};
    let t = temp();
    let d = t.path();
    hostile_fixtures(d);
    let v = Vol::new("4M", &[]);
    fs::copy(&v.backing, d.join("disk.img")).unwrap();
    write_key(d, "key", PASS);
    write_key(d, "empty-key", b"");
    write_key(d, "big-key", &vec![b'k'; 8 * MIB as usize + 1]);
    fs::create_dir(d.join("keydir")).unwrap();
    fs::create_dir(d.join("plaindir")).unwrap();
    let mut phdr = fs::read(repo_file("fuzz/corpus/luks1_header/l1-sha256")).unwrap();
    phdr.resize(2 * MIB as usize, 0);
    let l1 = |name: &str, at: usize, value: u32| {
        let mut p = phdr.clone();
        p[at..at + 4].copy_from_slice(&value.to_be_bytes());
        write_file(&d.join(name), &p);
    };
    l1("l1-keybytes-4g.img", 108, u32::MAX);
    l1("l1-stripes-4g.img", 208 + 44, u32::MAX);
    l1("l1-material-offset-4g.img", 208 + 40, u32::MAX);
    l1("l1-payload-past-end.img", 104, u32::MAX);
    l1("l1-digest-iterations-0.img", 164, 0);
    phdr[6] = 9;
    write_file(&d.join("l1-version-9.img"), &phdr);
    let rows = [
        row_says(
            "LUKS2 hdr_size 4 GiB",
            &["dump", "@hdr-size-4g.img"],
            &[4],
            "header size",
        ),
        row(
            "LUKS2 config json_size 4 GiB",
            &["dump", "@json-size-4g.img"],
            &[4],
        ),
        row(
            "LUKS2 config keyslots_size 4 GiB",
            &["dump", "@keyslots-size-4g.img"],
            &[4],
        ),
        row(
            "LUKS2 keyslot area size 4 GiB",
            &["test-key", "@area-size-4g.img", "--key-file", "@key"],
            &[2, 4],
        ),
        row(
            "LUKS2 keyslot area offset 2^64-1",
            &["test-key", "@area-offset-huge.img", "--key-file", "@key"],
            &[2, 4],
        ),
        row(
            "LUKS2 argon2id memory 4 TiB",
            &["test-key", "@argon2-memory-4t.img", "--key-file", "@key"],
            &[2, 4],
        ),
        row(
            "LUKS2 segment size near 2^64",
            &[
                "open",
                "@segment-size-huge.img",
                "@plain",
                "--key-file",
                "@key",
            ],
            &[4],
        ),
        row(
            "LUKS2 segment offset near 2^64",
            &[
                "open",
                "@segment-offset-huge.img",
                "@plain",
                "--key-file",
                "@key",
            ],
            &[4],
        ),
        row(
            "LUKS2 token JSON nested 200 deep",
            &["dump", "@json-deeply-nested.img"],
            &[4],
        ),
        row(
            "LUKS1 keyBytes 4G-1",
            &["dump", "@l1-keybytes-4g.img"],
            &[4],
        ),
        row(
            "LUKS1 keyslot stripes 4G-1",
            &["dump", "@l1-stripes-4g.img"],
            &[4],
        ),
        row(
            "LUKS1 key material offset 4G-1",
            &[
                "test-key",
                "@l1-material-offset-4g.img",
                "--key-file",
                "@key",
            ],
            &[4],
        ),
        row(
            "LUKS1 payload offset past the end",
            &[
                "open",
                "@l1-payload-past-end.img",
                "@plain",
                "--key-file",
                "@key",
            ],
            &[4],
        ),
        row(
            "LUKS1 digest iterations 0",
            &["dump", "@l1-digest-iterations-0.img"],
            &[4],
        ),
        row("LUKS1 version 9", &["dump", "@l1-version-9.img"], &[4]),
        row(
            "empty key file",
            &["test-key", "@disk.img", "--key-file", "@empty-key"],
            &[1, 2],
        ),
        row_says(
            "key file over 8 MiB",
            &["test-key", "@disk.img", "--key-file", "@big-key"],
            &[1],
            "8 MiB",
        ),
        row_says(
            "key file is a directory",
            &["test-key", "@disk.img", "--key-file", "@keydir"],
            &[1],
            "directory",
        ),
        row(
            "keyfile-offset past the end",
            &[
                "test-key",
                "@disk.img",
                "--key-file",
                "@key",
                "--keyfile-offset",
                "1000",
            ],
            &[1, 2],
        ),
        row(
            "keyfile-size longer than the file",
            &[
                "test-key",
                "@disk.img",
                "--key-file",
                "@key",
                "--keyfile-size",
                "1000",
            ],
            &[1],
        ),
        row(
            "keyfile-size without key file",
            &["test-key", "@disk.img", "--keyfile-size", "4"],
            &[1],
        ),
        row_says(
            "PLAIN is a directory",
            &["open", "@disk.img", "@plaindir", "--key-file", "@key"],
            &[1],
            "not a regular file",
        ),
        row(
            "PLAIN is the backing file",
            &["open", "@disk.img", "@disk.img", "--key-file", "@key"],
            &[1],
        ),
        row(
            "PLAIN in a missing directory",
            &["open", "@disk.img", "@nodir/plain", "--key-file", "@key"],
            &[1, 2, 4],
        ),
        row(
            "header restore from a hostile backup",
            &["header", "restore", "@disk.img", "@hdr-size-4g.img"],
            &[4],
        ),
        row(
            "verify of a hostile header",
            &["verify", "@json-size-4g.img", "--key-file", "@key"],
            &[4, 6],
        ),
    ];
    run_table(d, &rows);
}

/// `chattr +i` is undone on drop, also when the test panics.
struct Immutable(std::path::PathBuf);
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = try_run(
            tool("chattr"),
            &["-i", s(&self.0)],
            None,
            Duration::from_secs(30),
        );
    }
}

/// Permissions: an immutable backing file (even root cannot write it) is refused with
/// exit 2 by every verb that writes, before anything is written; in the bad-input document.
#[test]
fn permission_table() {
    use crate::cli::{row, run_table};
    let test = "permission_table";
    if !require(test, &["root", "chattr"]) {
        return;
    }
    let t = temp();
    let d = t.path();
    let v = Vol::new("4M", &[]);
    fs::copy(&v.backing, d.join("ro.img")).unwrap();
    write_key(d, "key", PASS);
    write_key(d, "new", b"another passphrase");
    if run(tool("chattr"), &["+i", s(&d.join("ro.img"))], None).code != 0 {
        fail_or_skip(test, "chattr +i does not work on this filesystem");
        return;
    }
    let _undo = Immutable(d.join("ro.img"));
    let rows = [
        row(
            "open read-write of an immutable backing file",
            &["open", "@ro.img", "@plain", "--key-file", "@key"],
            &[2],
        ),
        row(
            "add-key on an immutable backing file",
            &[
                "add-key",
                "@ro.img",
                "--key-file",
                "@key",
                "--new-key-file",
                "@new",
            ],
            &[2],
        ),
        row(
            "remove-key on an immutable backing file",
            &["remove-key", "@ro.img", "--key-slot", "0", "--force"],
            &[2],
        ),
        row(
            "erase of an immutable backing file",
            &["erase", "@ro.img", "--batch"],
            &[2],
        ),
        row(
            "resize of an immutable backing file",
            &["resize", "@ro.img", "--size", "8M"],
            &[2],
        ),
        row(
            "format over an immutable file",
            &[
                "format",
                "@ro.img",
                "--size",
                "4M",
                "--key-file",
                "@key",
                "--force",
            ],
            &[2],
        ),
    ];
    run_table(d, &rows);
}

fn fail_or_skip(test: &str, reason: &str) {
    if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{test}: {reason} (VAULTDISK_REQUIRE_ALL=1)");
    }
    note_skip(test, reason);
}
