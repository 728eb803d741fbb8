//! Whole-disk images (issue 13, disk layout): GPT images from sgdisk, MBR images with extended
//! and logical partitions from sfdisk, a LUKS2 volume from cryptsetup and an ext4 from
//! mkfs.ext4 inside partitions, fixed and dynamic VHDs from qemu-img, damaged and hostile
//! tables. `vaultdisk scan` is checked against sfdisk's and blkid's own reading of the same
//! image, in text and JSON; every bad input gives one `vaultdisk:` line, a non-zero exit and
//! writes nothing.
use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};

#[path = "../../fuzz/disk_harness.rs"]
mod disk_harness;

const MIB: u64 = 1 << 20;
const LUKS_UUID: &str = "5d2a7b1e-6c3f-4d8a-9e0b-1f2c3d4e5f60";

/// `vaultdisk scan --json IMAGE`: the parsed object and the run.
fn scan_json(img: &Path) -> (Value, Out) {
    let out = vd(&["scan", "--json", s(img)]).ok();
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("scan --json is not JSON ({e}):\n{}", out.describe()));
    (v, out)
}

/// sfdisk's reading of the table: (number, start sector, size in sectors, type, uuid, name).
fn sfdisk_parts(img: &Path) -> Vec<(u64, u64, u64, String, String, String)> {
    let out = sys("sfdisk", &["--json", s(img)]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let name = img.to_string_lossy().into_owned();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let number = node.strip_prefix(&name).unwrap().parse().unwrap();
            let text = |k: &str| p[k].as_str().unwrap_or("").to_lowercase();
            (
                number,
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                text("type"),
                text("uuid"),
                p["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// blkid's low-level probe at a byte offset: TYPE, UUID, LABEL.
fn blkid_at(img: &Path, offset: u64) -> (String, String, String) {
    let out = sys(
        "blkid",
        &["-p", "-O", &offset.to_string(), "-o", "export", s(img)],
    );
    let get = |k: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    (get("TYPE"), get("UUID"), get("LABEL"))
}

/// A LUKS2 volume made by cryptsetup in its own file of `size` bytes, copied into `img` at
/// `offset` (cryptsetup cannot format a window of a file; `losetup -o` would need root).
fn luks_into(dir: &Path, img: &Path, offset: u64, size: u64, kind: &str, label: Option<&str>) {
    let key = write_key(dir, "key", b"disk test passphrase");
    let vol = dir.join(format!("vol-{kind}"));
    set_len(&vol, size);
    let mut args = vec!["luksFormat", "-q", "--type", kind, "--key-file", s(&key)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.extend(["--uuid", LUKS_UUID]);
    if let Some(l) = label {
        args.extend(["--label", l]);
    }
    args.push(s(&vol));
    sys("cryptsetup", &args).ok();
    // Only the header area: the rest of the volume is sparse zeros.
    let head = read_range(&vol, 0, size.min(16 * MIB));
    write_at(img, offset, &head).unwrap();
    fs::remove_file(&vol).unwrap();
}

/// A 64 MiB GPT image from sgdisk: 1 "secret" (Linux LUKS type) holding LUKS2, 2 "data"
/// holding ext4 (label rootfs), 3 "empty" holding nothing.
fn gpt_image(dir: &Path) -> PathBuf {
    let img = dir.join("gpt.img");
    set_len(&img, 64 * MIB);
    sys(
        "sgdisk",
        &[
            "-n",
            "1:2048:+20M",
            "-c",
            "1:secret",
            "-t",
            "1:8309",
            "-n",
            "2:0:+16M",
            "-c",
            "2:data",
            "-n",
            "3:0:+8M",
            "-c",
            "3:empty",
            s(&img),
        ],
    )
    .ok();
    luks_into(dir, &img, 2048 * 512, 20 * MIB, "luks2", Some("vault-data"));
    let ext_at = 43008 * 512;
    sys(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "rootfs",
            "-E",
            &format!("offset={ext_at}"),
            s(&img),
            "16M",
        ],
    )
    .ok();
    img
}

fn have(test: &str, tools: &[&str]) -> bool {
    require(test, tools)
}

#[test]
fn gpt_image_scanned_as_sfdisk_and_blkid_see_it() {
    if !have(
        "disk::gpt",
        &["sgdisk", "sfdisk", "cryptsetup", "mkfs.ext4", "blkid"],
    ) {
        return;
    }
    let t = temp();
    let img = gpt_image(t.path());
    let before = dir_snapshot(t.path());
    let (v, out) = scan_json(&img);
    assert!(out.stderr.is_empty(), "{}", out.describe());
    assert_eq!(v["table"]["type"], "gpt");
    assert_eq!(v["table"]["header"], "primary");
    assert_eq!(v["size"], 64 * MIB);
    assert_eq!(v["disk_size"], 64 * MIB);
    assert!(v["vhd"].is_null() && v["content"].is_null());
    assert_eq!(v["warnings"], serde_json::json!([]));
    let ours: Vec<_> = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["start"].as_u64().unwrap() / 512,
                p["size"].as_u64().unwrap() / 512,
                p["type"].as_str().unwrap().to_string(),
                p["guid"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ours, sfdisk_parts(&img));
    let p = &v["partitions"];
    assert_eq!(p[0]["type_name"], "Linux LUKS");
    assert_eq!(p[0]["content"]["type"], "luks2");
    assert_eq!(p[0]["content"]["uuid"], LUKS_UUID);
    assert_eq!(p[0]["content"]["label"], "vault-data");
    let (kind, uuid, label) = blkid_at(&img, 43008 * 512);
    assert_eq!(kind, "ext4");
    assert_eq!(p[1]["content"]["type"], "ext4");
    assert_eq!(p[1]["content"]["uuid"], uuid.as_str());
    assert_eq!(p[1]["content"]["label"], label.as_str());
    assert_eq!(p[2]["content"]["type"], "none");
    assert_eq!(p[2]["content"]["description"], "no signature");
    let disk_guid = sys("sfdisk", &["--disk-id", s(&img)]).ok().stdout;
    assert_eq!(
        v["table"]["disk_guid"],
        disk_guid.trim().to_lowercase().as_str()
    );

    let text = vd(&["scan", s(&img)]).ok().stdout;
    assert!(
        text.contains("GPT (primary header), 512-byte sectors"),
        "{text}"
    );
    for want in [
        format!("luks2 uuid={LUKS_UUID} label=\"vault-data\""),
        format!("ext4 uuid={uuid} label=\"rootfs\""),
        "\"secret\"".into(),
        "Linux LUKS".into(),
    ] {
        assert!(text.contains(&want), "{want} missing:\n{text}");
    }
    assert_eq!(text.lines().count(), 2 + 1 + 3 * 2, "{text}");
    assert!(snapshot_diff(&before, &dir_snapshot(t.path())).is_empty());

    // The library's window on partition 1 is the LUKS2 volume: its header parses there, and
    // nothing past the partition's end can be read through it.
    let disk = vaultdisk::disk::Disk::open(&img).unwrap();
    let w = disk.partition(1).unwrap();
    assert_eq!((w.offset(), w.len()), (2048 * 512, 20 * MIB));
    let header = vaultdisk::luks2::read(&w).unwrap();
    assert_eq!(header.binary.uuid, LUKS_UUID);
    use vaultdisk::luks2::ReadAt;
    assert!(w.read_exact_at(&mut [0u8; 2], 20 * MIB - 1).is_err());
    assert_eq!(
        disk.partition(4).unwrap_err().to_string(),
        "partition 4 does not exist (the GPT table has partitions 1, 2, 3)"
    );
}

#[test]
fn mbr_with_extended_and_logical_partitions() {
    if !have(
        "disk::mbr",
        &["sfdisk", "cryptsetup", "mkfs.vfat", "mkswap", "blkid"],
    ) {
        return;
    }
    let t = temp();
    let dir = t.path();
    let img = dir.join("mbr.img");
    set_len(&img, 48 * MIB);
    // 1 vfat (bootable), 2 extended, 5 LUKS1, 6 swap, as Linux numbers them.
    let script = "label: dos\nlabel-id: 0x5eed1234\nstart=2048, size=8M, type=c, bootable\n\
                  start=18432, type=5\nstart=20480, size=12M, type=83\nsize=4M, type=82\n";
    run("sfdisk", &["-q", s(&img)], Some(script.as_bytes())).ok();
    let parts = sfdisk_parts(&img);
    let numbers: Vec<u64> = parts.iter().map(|p| p.0).collect();
    assert_eq!(numbers, [1, 2, 5, 6]);
    sys(
        "mkfs.vfat",
        &["--offset", "2048", "-n", "BOOTFAT", s(&img), "8192"],
    )
    .ok();
    let luks_at = parts[2].1 * 512;
    luks_into(dir, &img, luks_at, 12 * MIB, "luks1", None);
    let swap = dir.join("swap");
    set_len(&swap, 4 * MIB);
    sys("mkswap", &["-L", "swappy", s(&swap)]).ok();
    write_at(&img, parts[3].1 * 512, &fs::read(&swap).unwrap()).unwrap();
    fs::remove_file(&swap).unwrap();

    let (v, _) = scan_json(&img);
    assert_eq!(v["table"]["type"], "mbr");
    assert_eq!(v["table"]["disk_id"], "0x5eed1234");
    assert!(v["table"]["disk_guid"].is_null());
    let p = v["partitions"].as_array().unwrap();
    let ours: Vec<_> = p
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["start"].as_u64().unwrap() / 512,
                p["size"].as_u64().unwrap() / 512,
                p["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let roles = ["primary", "extended", "logical", "logical"];
    let want: Vec<_> = parts
        .iter()
        .zip(roles)
        .map(|(q, r)| (q.0, q.1, q.2, r.to_string()))
        .collect();
    // sfdisk shows the extended partition's own size; logical ones as in their EBRs.
    assert_eq!(ours, want);
    assert_eq!(p[0]["type"], "0x0c");
    assert_eq!(p[0]["bootable"], true);
    assert_eq!(p[1]["type"], "0x05");
    assert!(p[1]["content"].is_null());
    let (kind, uuid, label) = blkid_at(&img, 2048 * 512);
    assert_eq!(
        (kind.as_str(), p[0]["content"]["type"].as_str()),
        ("vfat", Some("vfat"))
    );
    assert_eq!(p[0]["content"]["uuid"], uuid.as_str());
    assert_eq!(p[0]["content"]["label"], label.as_str());
    assert_eq!(p[2]["content"]["type"], "luks1");
    assert_eq!(p[2]["content"]["uuid"], LUKS_UUID);
    assert!(p[2]["content"]["label"].is_null());
    let (_, swap_uuid, _) = blkid_at(&img, parts[3].1 * 512);
    assert_eq!(p[3]["content"]["type"], "swap");
    assert_eq!(p[3]["content"]["uuid"], swap_uuid.as_str());
    assert_eq!(p[3]["content"]["label"], "swappy");

    let text = vd(&["scan", s(&img)]).ok().stdout;
    assert!(
        text.contains("MBR, 512-byte sectors, disk identifier 0x5eed1234"),
        "{text}"
    );
    assert!(
        text.contains("(extended)") && text.contains("logical"),
        "{text}"
    );
    assert!(text.contains(&format!("luks1 uuid={LUKS_UUID}")), "{text}");

    // Selecting the extended container or a missing number is a usage error (exit 1).
    let disk = vaultdisk::disk::Disk::open(&img).unwrap();
    assert!(disk.partition(5).is_ok());
    let e = disk.partition(2).unwrap_err().for_path("mbr.img");
    assert_eq!(e.exit_code(), 1);
    assert_eq!(disk.partition(3).unwrap_err().for_path("m").exit_code(), 1);
}

#[test]
fn fixed_vhd_footer_left_out_and_bad_checksum_warned() {
    if !have(
        "disk::vhd",
        &[
            "sgdisk",
            "sfdisk",
            "cryptsetup",
            "mkfs.ext4",
            "blkid",
            "qemu-img",
        ],
    ) {
        return;
    }
    let t = temp();
    let dir = t.path();
    let raw = gpt_image(dir);
    let vhd = dir.join("disk.vhd");
    sys(
        "qemu-img",
        &[
            "convert",
            "-O",
            "vpc",
            "-o",
            "subformat=fixed,force_size",
            s(&raw),
            s(&vhd),
        ],
    )
    .ok();
    assert_eq!(fs::metadata(&vhd).unwrap().len(), 64 * MIB + 512);
    let (raw_v, _) = scan_json(&raw);
    let (v, out) = scan_json(&vhd);
    assert!(out.stderr.is_empty(), "{}", out.describe());
    assert_eq!(v["size"], 64 * MIB + 512);
    assert_eq!(v["disk_size"], 64 * MIB);
    assert_eq!(v["vhd"]["type"], "fixed");
    assert_eq!(v["vhd"]["checksum_ok"], true);
    assert_eq!(v["vhd"]["current_size"], 64 * MIB);
    // The backup GPT sits just before the footer: found, no warning.
    assert_eq!(v["table"]["header"], "primary");
    assert_eq!(v["partitions"], raw_v["partitions"]);
    let text = vd(&["scan", s(&vhd)]).ok().stdout;
    assert!(
        text.contains("fixed VHD (512-byte footer, checksum ok"),
        "{text}"
    );

    // A wrong checksum (a byte of the footer's reserved area changed): a warning, same disk.
    let bad = dir.join("bad.vhd");
    fs::copy(&vhd, &bad).unwrap();
    poke(&bad, 64 * MIB + 200, &[0x42]);
    let before = dir_snapshot(dir);
    let (v, out) = scan_json(&bad);
    assert_eq!(v["vhd"]["checksum_ok"], false);
    assert_eq!(v["disk_size"], 64 * MIB);
    assert_eq!(v["partitions"], raw_v["partitions"]);
    let warn: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warn.len(), 1, "{}", out.describe());
    assert!(warn[0].starts_with("vaultdisk: warn: ") && warn[0].contains("checksum"));
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
    assert!(snapshot_diff(&before, &dir_snapshot(dir)).is_empty());
}

#[test]
fn other_image_formats_refused_naming_qemu_img() {
    if !have("disk::formats", &["qemu-img"]) {
        return;
    }
    let t = temp();
    let dir = t.path();
    let raw = dir.join("raw.img");
    set_len(&raw, 4 * MIB);
    write_at(&raw, MIB, &pattern(4096, 7)).unwrap();
    let cases = [
        (
            "dyn.vhd",
            &["-O", "vpc", "-o", "subformat=dynamic"][..],
            "a dynamic VHD",
        ),
        ("img.vhdx", &["-O", "vhdx"][..], "a VHDX"),
        ("img.qcow2", &["-O", "qcow2"][..], "a qcow2"),
        ("img.vmdk", &["-O", "vmdk"][..], "a VMDK"),
    ];
    for (name, opts, what) in cases {
        let out_img = dir.join(name);
        let mut args = vec!["convert"];
        args.extend_from_slice(opts);
        args.extend([s(&raw), s(&out_img)]);
        sys("qemu-img", &args).ok();
        let before = dir_snapshot(dir);
        for json in [false, true] {
            let mut a = vec!["scan", s(&out_img)];
            if json {
                a.push("--json");
            }
            let out = vd(&a).fails_with(4);
            assert!(out.stdout.is_empty(), "{}", out.describe());
            assert!(out.stderr.contains(what), "{name}: {}", out.describe());
            assert!(
                out.stderr.contains("qemu-img convert -O raw IN OUT"),
                "{}",
                out.describe()
            );
        }
        assert!(snapshot_diff(&before, &dir_snapshot(dir)).is_empty());
    }
}

/// Recomputes the CRCs of the GPT header at `lba` (after its entries changed) with Python's
/// zlib, an independent CRC32.
fn fix_gpt_crc(img: &Path, lba: u64) {
    let py = format!(
        "import struct,zlib\nf=open({p:?},'r+b')\nf.seek({lba}*512)\nh=bytearray(f.read(512))\n\
         n,sz=struct.unpack_from('<II',h,80)\nel=struct.unpack_from('<Q',h,72)[0]\n\
         f.seek(el*512)\na=f.read(n*sz)\nstruct.pack_into('<I',h,88,zlib.crc32(a))\n\
         struct.pack_into('<I',h,16,0)\nhs=struct.unpack_from('<I',h,12)[0]\n\
         struct.pack_into('<I',h,16,zlib.crc32(bytes(h[:hs])))\nf.seek({lba}*512)\nf.write(h)\n",
        p = img.to_string_lossy()
    );
    run("python3", &["-c", &py], None).ok();
}

#[test]
fn damaged_gpt_copies() {
    if !have(
        "disk::damaged_gpt",
        &["sgdisk", "sfdisk", "cryptsetup", "mkfs.ext4", "blkid"],
    ) {
        return;
    }
    let t = temp();
    let dir = t.path();
    let img = gpt_image(dir);
    let (good, _) = scan_json(&img);
    let last = 64 * MIB / 512 - 1;

    // Primary header damaged (one byte of its disk GUID): the backup, with one warning.
    let hdr = dir.join("primary-header.img");
    fs::copy(&img, &hdr).unwrap();
    let b = read_range(&hdr, 512 + 60, 1)[0];
    poke(&hdr, 512 + 60, &[b ^ 0xff]);
    // Primary entry array damaged (partition 1's first LBA): the backup too.
    let arr = dir.join("primary-array.img");
    fs::copy(&img, &arr).unwrap();
    let b = read_range(&arr, 1024 + 32, 1)[0];
    poke(&arr, 1024 + 32, &[b ^ 1]);
    for img in [&hdr, &arr] {
        let (v, out) = scan_json(img);
        assert_eq!(v["table"]["header"], "backup");
        assert_eq!(v["partitions"], good["partitions"]);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.describe());
        assert!(
            lines[0].contains("primary GPT header is damaged"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(&format!("using the backup at LBA {last}")));
        let text = vd(&["scan", s(img)]).ok();
        assert!(
            text.stdout.contains("GPT (backup header)"),
            "{}",
            text.describe()
        );
    }
    // sgdisk agrees there is damage and recovers the same partitions from the backup.
    let v = sys("sgdisk", &["-v", s(&hdr)]);
    assert!(
        v.stdout.to_lowercase().contains("problem"),
        "{}",
        v.describe()
    );

    // Both headers damaged: exit 4, one line, nothing written.
    let both = dir.join("both.img");
    fs::copy(&hdr, &both).unwrap();
    let b = read_range(&both, last * 512 + 60, 1)[0];
    poke(&both, last * 512 + 60, &[b ^ 0xff]);
    let before = dir_snapshot(dir);
    let out = vd(&["scan", s(&both)]).fails_with(4);
    assert!(
        out.stderr.contains("both GPT headers are damaged"),
        "{}",
        out.describe()
    );
    vd(&["scan", "--json", s(&both)]).fails_with(4);
    let e = vaultdisk::disk::Disk::open(&both).unwrap_err();
    assert_eq!(e.exit_code(), 4);
    assert!(snapshot_diff(&before, &dir_snapshot(dir)).is_empty());
}

#[test]
fn overlapping_and_out_of_disk_partitions_refused() {
    if !have("disk::hostile", &["sfdisk", "sgdisk", "python3"]) {
        return;
    }
    let t = temp();
    let dir = t.path();
    // MBR from sfdisk, then partition 2's start moved into partition 1 (MBRs have no CRC).
    let mbr = dir.join("overlap-mbr.img");
    set_len(&mbr, 16 * MIB);
    let script = "label: dos\nstart=2048, size=4M, type=83\nstart=10240, size=4M, type=83\n";
    run("sfdisk", &["-q", s(&mbr)], Some(script.as_bytes())).ok();
    poke(&mbr, 446 + 16 + 8, &4000u32.to_le_bytes());
    // MBR partition 1 made longer than the disk.
    let past = dir.join("past-end-mbr.img");
    fs::copy(&mbr, &past).unwrap();
    poke(&past, 446 + 16 + 8, &10240u32.to_le_bytes());
    poke(&past, 446 + 12, &(64 * 2048u32).to_le_bytes());
    // GPT from sgdisk, then partition 2 moved onto partition 1, CRCs made right again.
    let gpt = dir.join("overlap-gpt.img");
    set_len(&gpt, 16 * MIB);
    sys("sgdisk", &["-n", "1:2048:+4M", "-n", "2:0:+4M", s(&gpt)]).ok();
    poke(&gpt, 1024 + 128 + 32, &4096u64.to_le_bytes());
    fix_gpt_crc(&gpt, 1);
    poke(
        &gpt,
        (16 * MIB - 33 * 512) + 128 + 32,
        &4096u64.to_le_bytes(),
    );
    fix_gpt_crc(&gpt, 16 * MIB / 512 - 1);
    let before = dir_snapshot(dir);
    for (img, what) in [
        (&mbr, "partitions 1 and 2 overlap"),
        (
            &past,
            "partition 1 (sectors 2048-133119) lies outside the disk (32768 sectors)",
        ),
        (&gpt, "partitions 1 and 2 overlap"),
    ] {
        let out = vd(&["scan", s(img)]).fails_with(4);
        assert!(out.stderr.contains(what), "{}", out.describe());
        vd(&["scan", "--json", s(img)]).fails_with(4);
    }
    assert!(snapshot_diff(&before, &dir_snapshot(dir)).is_empty());
}

#[test]
fn whole_disk_without_a_table_and_bad_paths() {
    let t = temp();
    let dir = t.path();
    let z = dir.join("zeros.img");
    set_len(&z, 4 * MIB);
    let (v, _) = scan_json(&z);
    assert!(v["table"].is_null());
    assert_eq!(v["partitions"], serde_json::json!([]));
    assert_eq!(v["content"]["type"], "none");
    let text = vd(&["scan", s(&z)]).ok().stdout;
    assert!(
        text.contains("no partition table; the disk holds: none"),
        "{text}"
    );
    // A vaultdisk volume at offset 0 is a volume, not a table.
    let key = write_key(dir, "k", b"pw");
    let vol = dir.join("vol");
    format_with(&vol, &key, "4M", CHEAP_PBKDF2, &["--label", "mine"]).ok();
    let (v, _) = scan_json(&vol);
    assert_eq!(v["content"]["type"], "luks2");
    assert_eq!(v["content"]["label"], "mine");
    // --partition on a file without a table is exit 4 (library level until the verbs take it).
    let disk = vaultdisk::disk::Disk::open(&z).unwrap();
    assert_eq!(disk.partition(1).unwrap_err().for_path("z").exit_code(), 4);
    let out = vd(&["scan", s(&dir.join("missing"))]).fails_with(1);
    assert!(out.stderr.contains("missing"), "{}", out.describe());
    vd(&["scan"]).fails_with(1);
}

/// Every file of fuzz/corpus/{disk_table,vhd_footer} through the fuzz target's body: no
/// panic; seeds named after what made them must be accepted, `*.reject` rejected.
#[test]
fn fuzz_corpora_replay() {
    let targets: [(&str, crate::reliability::Target); 2] = [
        ("disk_table", disk_harness::disk_table),
        ("vhd_footer", disk_harness::vhd_footer),
    ];
    crate::reliability::replay_corpora(&targets);
}

#[test]
fn block_device_scanned_like_its_image() {
    if !have(
        "disk::loop",
        &[
            "loop",
            "sgdisk",
            "sfdisk",
            "cryptsetup",
            "mkfs.ext4",
            "blkid",
        ],
    ) {
        return;
    }
    let t = temp();
    let img = gpt_image(t.path());
    let (want, _) = scan_json(&img);
    let lo = LoopDev::attach(&img);
    // A block device's metadata says 0 bytes: the size must come from the device itself.
    let (v, out) = scan_json(Path::new(&lo.dev));
    assert!(out.stderr.is_empty(), "{}", out.describe());
    assert_eq!(v["size"], 64 * MIB);
    assert_eq!(v["table"], want["table"]);
    assert_eq!(v["partitions"], want["partitions"]);
    lo.detach();
}
