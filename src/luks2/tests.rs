//! Corruption table over headers built in memory: mutate, re-checksum, expect the verdict.
use super::binary::{BinaryHeader, CopyKind};
use super::metadata::Keyslot;
use super::*;
use serde_json::Value;

/// docs/format.md §4.6: the JSON cryptsetup 2.6.1 wrote (pbkdf2 forced, 4096-byte sectors).
const CRYPTSETUP_JSON: &str = r#"{"keyslots":{"0":{"type":"luks2","key_size":64,"af":{"type":"luks1","stripes":4000,"hash":"sha256"},"area":{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64},"kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"jI6leoC+fNdkHbAVvQ7BXByqCAZ95c3beIKK7iFKDDw="}}},"tokens":{},"segments":{"0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":4096}},"digests":{"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"FqoXWtG9a9u4mU/aO72JIqcSYsS/lwvLO1p/HAaK7Os=","digest":"qzVkONTAJtn2obx13IcGGOpjqjzacSkeNnKHD7qGe5Y="}},"config":{"json_size":"12288","keyslots_size":"16744448"}}"#;

const HDR: u64 = 0x4000;

fn copy_bytes(kind: CopyKind, seqid: u64, json_text: &[u8]) -> Vec<u8> {
    let offset = if kind == CopyKind::Primary { 0 } else { HDR };
    let bin = BinaryHeader {
        kind,
        hdr_size: HDR,
        seqid,
        label: Default::default(),
        salt: [9; 64],
        uuid: "11111111-2222-3333-4444-555555555555".into(),
        subsystem: Default::default(),
        hdr_offset: offset,
        csum: [0; 32],
    };
    let mut area = vec![0u8; (HDR - 4096) as usize];
    let n = json_text.len().min(area.len());
    area[..n].copy_from_slice(&json_text[..n]);
    let mut out = bin.encode(&area).to_vec();
    out.extend_from_slice(&area);
    out
}

/// A device image (header region only) with both copies holding `json_text`.
fn device(primary: &[u8], secondary: &[u8], seq_p: u64, seq_s: u64) -> Vec<u8> {
    let mut dev = copy_bytes(CopyKind::Primary, seq_p, primary);
    dev.extend(copy_bytes(CopyKind::Secondary, seq_s, secondary));
    dev.resize(3 * HDR as usize, 0);
    dev
}

fn mutated(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(CRYPTSETUP_JSON).expect("json");
    f(&mut v);
    serde_json::to_vec(&v).expect("encode")
}

fn parse_one(json_text: &[u8]) -> Result<Metadata, FormatError> {
    let mut area = vec![0u8; (HDR - 4096) as usize];
    area[..json_text.len()].copy_from_slice(json_text);
    parse_json_area(&area, HDR)
}

#[test]
fn parses_cryptsetup_header() {
    let dev = device(CRYPTSETUP_JSON.as_bytes(), CRYPTSETUP_JSON.as_bytes(), 3, 3);
    let h = read(dev.as_slice()).expect("valid");
    assert_eq!(h.current, CopyKind::Primary);
    assert!(h.damaged_copy().is_none());
    let seg = h.metadata.data_segment().expect("supported");
    assert_eq!(seg.offset_bytes, 16 << 20);
    assert_eq!(seg.sector_size, 4096);
    assert_eq!(seg.size_bytes, None);
    match &h.metadata.keyslots[&0] {
        Keyslot::Luks2(k) => {
            assert_eq!(k.key_size, 64);
            assert_eq!(k.area_offset_bytes, 32768);
            assert_eq!(k.kdf_salt.len(), 32);
        }
        other => panic!("keyslot 0 unusable: {other:?}"),
    }
    assert_eq!(
        h.metadata.digest_of_keyslot(0).map(|d| d.digest.len()),
        Some(32)
    );
}

#[test]
fn encode_then_parse_is_identity() {
    let first = parse_one(CRYPTSETUP_JSON.as_bytes()).expect("parse");
    let bin = BinaryHeader {
        kind: CopyKind::Primary,
        hdr_size: HDR,
        seqid: 5,
        label: "x".into(),
        salt: [1; 64],
        uuid: "u".into(),
        subsystem: Default::default(),
        hdr_offset: 0,
        csum: [0; 32],
    };
    let bytes = encode_copy(&bin, &first.wire).expect("encode");
    assert_eq!(bytes.len() as u64, HDR);
    // cryptsetup writes compact JSON; ours must be byte-identical for its own output.
    assert_eq!(
        &bytes[4096..4096 + CRYPTSETUP_JSON.len()],
        CRYPTSETUP_JSON.as_bytes()
    );
    let second = parse_json_area(&bytes[4096..], HDR).expect("reparse");
    assert_eq!(first, second);
}

#[test]
fn corruption_table_rejects_invalid_json() {
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation)> = vec![
        ("u64 as number", |v| {
            v["segments"]["0"]["offset"] = 16777216.into()
        }),
        ("missing digest", |v| v["digests"] = serde_json::json!({})),
        ("keyslot in two digests", |v| {
            let d = v["digests"]["0"].clone();
            v["digests"]["1"] = d;
        }),
        ("area before keyslots area", |v| {
            v["keyslots"]["0"]["area"]["offset"] = "4096".into()
        }),
        ("area past keyslots area", |v| {
            v["keyslots"]["0"]["area"]["offset"] = "16773120".into()
        }),
        ("json_size mismatch", |v| {
            v["config"]["json_size"] = "28672".into()
        }),
        ("keyslots_size unaligned", |v| {
            v["config"]["keyslots_size"] = "1000".into()
        }),
        ("segment unaligned", |v| {
            v["segments"]["0"]["offset"] = "16777217".into()
        }),
        ("segment inside header", |v| {
            v["segments"]["0"]["offset"] = "1048576".into()
        }),
        ("token names missing keyslot", |v| {
            v["tokens"]["0"] = serde_json::json!({"type":"x","keyslots":["7"]})
        }),
        ("id not a number", |v| {
            let k = v["keyslots"]["0"].clone();
            v["keyslots"]["a"] = k;
        }),
        ("id beyond 31", |v| {
            let k = v["keyslots"]["0"].take();
            v["keyslots"]["32"] = k;
            v["keyslots"].as_object_mut().map(|o| o.remove("0"));
        }),
        ("digest salt length", |v| {
            v["digests"]["0"]["salt"] = "AAAA".into()
        }),
        ("extra top-level member", |v| {
            v["extra"] = serde_json::json!({})
        }),
        ("missing config", |v| {
            v.as_object_mut().map(|o| o.remove("config"));
        }),
    ];
    for (name, f) in cases {
        let text = mutated(f);
        assert!(parse_one(&text).is_err(), "{name} was accepted");
    }
}

#[test]
fn area_rules() {
    let ok = CRYPTSETUP_JSON.as_bytes();
    let mut area = vec![0u8; (HDR - 4096) as usize];
    area[0] = b' ';
    area[1..1 + ok.len()].copy_from_slice(ok);
    assert!(matches!(
        parse_json_area(&area, HDR),
        Err(FormatError::JsonArea(_))
    ));
    let mut area = vec![0u8; (HDR - 4096) as usize];
    area[..ok.len()].copy_from_slice(ok);
    let last = area.len() - 1;
    area[last] = 1;
    assert!(matches!(
        parse_json_area(&area, HDR),
        Err(FormatError::JsonArea(_))
    ));
    let full = vec![b'{'; (HDR - 4096) as usize];
    assert!(matches!(
        parse_json_area(&full, HDR),
        Err(FormatError::JsonArea(_))
    ));
}

#[test]
fn unusable_keyslots_and_unsupported_features_are_reported_not_fatal() {
    let hostile = mutated(
        |v| v["keyslots"]["0"]["kdf"] = serde_json::json!({"type":"argon2id","time":4,"memory":8388608,"cpus":64,"salt":"jI6leoC+fNdkHbAVvQ7BXByqCAZ95c3beIKK7iFKDDw="}),
    );
    let m = parse_one(&hostile).expect("structurally valid");
    assert!(
        matches!(&m.keyslots[&0], Keyslot::Unusable { reason, .. } if reason.contains("memory"))
    );

    let stripes = mutated(|v| v["keyslots"]["0"]["af"]["stripes"] = 2000.into());
    let m = parse_one(&stripes).expect("structurally valid");
    assert!(matches!(&m.keyslots[&0], Keyslot::Unusable { .. }));

    let req = mutated(|v| {
        v["config"]["requirements"] = serde_json::json!({"mandatory":["offline-reencrypt"]})
    });
    let m = parse_one(&req).expect("valid");
    assert!(m.data_segment().unwrap_err().contains("offline-reencrypt"));

    let cipher = mutated(|v| v["segments"]["0"]["encryption"] = "serpent-xts-plain64".into());
    let m = parse_one(&cipher).expect("valid");
    assert!(m.data_segment().unwrap_err().contains("serpent"));

    let integrity = mutated(
        |v| v["segments"]["0"]["integrity"] = serde_json::json!({"type":"hmac(sha256)","journal_encryption":"none","journal_integrity":"none"}),
    );
    assert!(
        parse_one(&integrity)
            .expect("valid")
            .data_segment()
            .is_err()
    );
}

#[test]
fn unknown_members_survive_a_rewrite() {
    let text = mutated(|v| {
        v["keyslots"]["0"]["vendor_note"] = "keep me".into();
        v["tokens"]["0"] =
            serde_json::json!({"type":"systemd-tpm2","keyslots":["0"],"tpm2-pcrs":[7]});
    });
    let m = parse_one(&text).expect("valid");
    let again = json::encode(&m.wire).expect("encode");
    let v: Value = serde_json::from_slice(&again).expect("json");
    assert_eq!(v["keyslots"]["0"]["vendor_note"], "keep me");
    assert_eq!(v["tokens"]["0"]["tpm2-pcrs"][0], 7);
}

#[test]
fn copy_selection() {
    let good = CRYPTSETUP_JSON.as_bytes();
    // Damaged primary checksum: the secondary is used and the primary reported.
    let mut dev = device(good, good, 3, 3);
    dev[100] ^= 1;
    let h = read(dev.as_slice()).expect("secondary");
    assert_eq!(h.current, CopyKind::Secondary);
    assert!(matches!(h.primary.error, Some(FormatError::Checksum)));

    // Primary magic wiped: secondary still found by probing.
    let mut dev = device(good, good, 3, 3);
    dev[..6].fill(0);
    assert_eq!(
        read(dev.as_slice()).expect("probe").current,
        CopyKind::Secondary
    );

    // Higher seqid wins; the other copy is reported stale.
    let dev = device(good, good, 3, 4);
    let h = read(dev.as_slice()).expect("valid");
    assert_eq!(h.current, CopyKind::Secondary);
    assert!(h.primary.error.is_none() && h.primary.stale);

    // Both damaged: an error for each.
    let mut dev = device(good, good, 3, 3);
    dev[100] ^= 1;
    dev[HDR as usize + 100] ^= 1;
    assert!(matches!(
        read(dev.as_slice()),
        Err((FormatError::Checksum, FormatError::Checksum))
    ));

    // Not LUKS at all.
    let zeros = vec![0u8; 3 * HDR as usize];
    assert!(matches!(
        read(zeros.as_slice()),
        Err((FormatError::BadMagic, FormatError::BadMagic))
    ));

    // Truncated inside the primary JSON area.
    let dev = device(good, good, 3, 3);
    assert!(read(&dev[..8192]).is_err());
}

/// Rules of cryptsetup's LUKS2_hdr_validate and keyslot validation that make a copy invalid;
/// each mutation was checked on a real header: cryptsetup 2.6.1 `luksDump` says "not a valid
/// LUKS device" when both copies carry it (tests/it/validity.rs repeats that against the tool).
#[test]
fn cryptsetup_validation_rules_invalidate_a_copy() {
    type Mutation = fn(&mut Value);
    let cases: Vec<(&str, Mutation)> = vec![
        ("gap in segment ids", |v| {
            let s = v["segments"]["0"].take();
            v["segments"] = serde_json::json!({ "2": s });
            v["digests"]["0"]["segments"] = serde_json::json!(["2"]);
        }),
        ("no segment", |v| {
            v["segments"] = serde_json::json!({});
            v["digests"]["0"]["segments"] = serde_json::json!([]);
        }),
        ("empty segment encryption", |v| {
            v["segments"]["0"]["encryption"] = "".into()
        }),
        ("empty segment type", |v| {
            v["segments"]["0"]["type"] = "".into()
        }),
        ("integrity without journal members", |v| {
            v["segments"]["0"]["integrity"] = serde_json::json!({"type": "hmac(sha256)"})
        }),
        ("other segment type unaligned", |v| {
            v["segments"]["0"]["size"] = "4194304".into();
            v["segments"]["1"] =
                serde_json::json!({"type": "linear", "offset": "20971521", "size": "dynamic"});
        }),
        ("other segment type without offset", |v| {
            v["segments"]["0"]["size"] = "4194304".into();
            v["segments"]["1"] = serde_json::json!({"type": "linear", "size": "dynamic"});
        }),
        ("empty keyslot type", |v| {
            v["keyslots"]["0"]["type"] = "".into()
        }),
        ("af type not luks1", |v| {
            v["keyslots"]["0"]["af"]["type"] = "luks2".into()
        }),
        ("empty af hash", |v| {
            v["keyslots"]["0"]["af"]["hash"] = "".into()
        }),
        ("empty area encryption", |v| {
            v["keyslots"]["0"]["area"]["encryption"] = "".into()
        }),
        ("empty kdf hash", |v| {
            v["keyslots"]["0"]["kdf"]["hash"] = "".into()
        }),
        ("empty kdf salt", |v| {
            v["keyslots"]["0"]["kdf"]["salt"] = "".into()
        }),
        ("argon2 kdf without memory", |v| {
            v["keyslots"]["0"]["kdf"] = serde_json::json!({"type": "argon2id", "time": 4,
                "cpus": 1, "salt": "jI6leoC+fNdkHbAVvQ7BXByqCAZ95c3beIKK7iFKDDw="})
        }),
        ("other keyslot type without area", |v| {
            v["keyslots"]["1"] = serde_json::json!({"type": "future", "key_size": 64})
        }),
        ("other keyslot type's area inside the header", |v| {
            v["keyslots"]["1"] = serde_json::json!({"type": "future", "key_size": 64,
                "area": {"type": "raw", "offset": "4096", "size": "4096"}})
        }),
        ("reencrypt keyslot without requirement", |v| {
            v["keyslots"]["1"] = serde_json::json!({"type": "reencrypt", "key_size": 1,
                "mode": "reencrypt", "direction": "forward",
                "area": {"type": "none", "offset": "16711680", "size": "4096"}})
        }),
        (
            "online-reencrypt requirement without reencrypt keyslot",
            |v| {
                v["config"]["requirements"] =
                    serde_json::json!({"mandatory": ["online-reencrypt-v2"]})
            },
        ),
        (
            "two online-reencrypt requirements",
            |v| {
                v["config"]["requirements"] =
                    serde_json::json!({"mandatory": ["online-reencrypt-v2", "online-reencrypt"]})
            },
        ),
        ("empty digest type", |v| {
            v["digests"]["0"]["type"] = "".into()
        }),
    ];
    for (name, f) in cases {
        let text = mutated(f);
        match parse_one(&text) {
            Err(FormatError::Invalid(_) | FormatError::Json(_)) => {}
            other => panic!("{name}: expected an invalid copy, got {other:?}"),
        }
    }
}

/// What cryptsetup accepts must stay valid: md5 hashes (luksFormat --hash md5 makes them on
/// LUKS2), token strings that are not UTF-8 (json-c does not check), extra kdf members.
#[test]
fn what_cryptsetup_accepts_stays_valid() {
    let md5 = mutated(|v| {
        v["digests"]["0"]["hash"] = "md5".into();
        v["digests"]["0"]["digest"] = "AAAAAAAAAAAAAAAAAAAAAA==".into();
        v["keyslots"]["0"]["af"]["hash"] = "md5".into();
        v["keyslots"]["0"]["kdf"]["hash"] = "md5".into();
    });
    let m = parse_one(&md5).expect("md5 header");
    assert!(matches!(&m.keyslots[&0], Keyslot::Luks2(k) if k.af_hash.name() == "md5"));
    assert_eq!(m.digests[&0].digest.len(), 16);

    let mut raw = mutated(|v| {
        v["tokens"]["0"] = serde_json::json!({"type": "x", "keyslots": ["0"], "note": "@@"})
    });
    let at = raw.windows(2).position(|w| w == b"@@").expect("marker");
    raw.splice(at..at + 2, *b"caf\xe9\xff");
    let m = parse_one(&raw).expect("raw bytes in a token string");
    // A rewrite keeps the bytes as they were.
    let again = json::encode(&m.wire).expect("encode");
    assert!(again.windows(5).any(|w| w == b"caf\xe9\xff"), "bytes lost");
    assert_eq!(parse_one(&again).expect("reparse"), m);
}
