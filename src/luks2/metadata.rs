//! Checked LUKS2 metadata: the docs/format.md §9 rules applied to the wire JSON. A value of
//! `Metadata` is structurally valid; keyslots we cannot use carry the reason instead of failing.
use super::FormatError;
use super::json;
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::Kdf;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::{BTreeMap, BTreeSet};

/// cryptsetup allows ids 0..31 for keyslots, tokens, segments and digests.
pub const MAX_OBJECTS: u32 = 32;
/// Stripes every LUKS keyslot uses (cryptsetup ignores af.stripes, so we insist on 4000).
pub const AF_STRIPES: u32 = 4000;
/// Largest keyslots area cryptsetup accepts.
pub const MAX_KEYSLOTS_SIZE: u64 = 128 * 1024 * 1024;
/// Length of kdf and digest salts.
pub const SALT_LEN: usize = 32;

/// A luks2 keyslot we know how to unlock.
#[derive(Debug, Clone, PartialEq)]
pub struct Luks2Keyslot {
    /// Length of the stored key (the volume key), bytes.
    pub key_size: u32,
    /// 0 ignore unless asked, 1 normal, 2 preferred.
    pub priority: u32,
    /// Hash of the anti-forensic splitter.
    pub af_hash: HashAlg,
    /// Start of the keyslot's area, bytes from the device start.
    pub area_offset_bytes: u64,
    /// Length of the keyslot's area, bytes.
    pub area_size_bytes: u64,
    /// Key length of the area cipher (aes-xts-plain64) = KDF output length.
    pub area_key_size: u32,
    /// The passphrase KDF with its costs.
    pub kdf: Kdf,
    /// The KDF salt (32 bytes).
    pub kdf_salt: Vec<u8>,
}

/// One keyslot: usable, or listed with the reason we cannot use it.
#[derive(Debug, Clone, PartialEq)]
pub enum Keyslot {
    /// A luks2 keyslot vaultdisk can unlock.
    Luks2(Luks2Keyslot),
    /// A keyslot listed but not usable here.
    Unusable {
        /// Its type ("luks2", "reencrypt", ...).
        kind: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// A pbkdf2 volume-key digest and what it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    /// PBKDF2 hash.
    pub hash: HashAlg,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Digest salt.
    pub salt: Vec<u8>,
    /// The digest value a candidate volume key must reproduce.
    pub digest: Vec<u8>,
    /// Keyslots holding the key this digest covers.
    pub keyslots: BTreeSet<u32>,
    /// Segments encrypted with that key.
    pub segments: BTreeSet<u32>,
}

/// The one data segment we serve.
#[derive(Debug, Clone, PartialEq)]
pub struct CryptSegment {
    /// Start of the data, bytes from the device start (0: detached header).
    pub offset_bytes: u64,
    /// None = "dynamic" (to the end of the device).
    pub size_bytes: Option<u64>,
    /// Sector number of the first data sector for the IV.
    pub iv_tweak: u64,
    /// Cipher spec, e.g. "aes-xts-plain64".
    pub encryption: String,
    /// Encryption sector size, bytes.
    pub sector_size: u32,
}

/// Structurally valid metadata plus the wire form it came from (kept for faithful rewrites).
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// The wire JSON exactly as read (edits start from it, see luks2::edit).
    pub wire: json::Metadata,
    /// Keyslot id -> keyslot.
    pub keyslots: BTreeMap<u32, Keyslot>,
    /// Digest id -> digest.
    pub digests: BTreeMap<u32, Digest>,
    /// Token id -> (type, keyslot ids).
    pub tokens: BTreeMap<u32, (String, Vec<u32>)>,
    /// Segment id -> segment (type "crypt" only; other types are listed in `unsupported`).
    pub segments: BTreeMap<u32, CryptSegment>,
    /// Keyslot id -> (offset, size) of its area, bytes: every luks2 keyslot (usable or not,
    /// checked to lie inside the keyslots area without overlaps) and any other keyslot whose
    /// area fields are readable. What a new keyslot must not overlap.
    pub areas: BTreeMap<u32, (u64, u64)>,
    /// Why this header cannot be opened by vaultdisk even though it is valid LUKS2
    /// (reencryption, integrity, requirements, other segment types); empty when supported.
    pub unsupported: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> FormatError {
    FormatError::Invalid(msg.into())
}

fn object_id(what: &str, id: &str) -> Result<u32, FormatError> {
    json::u64_string::parse(id)
        .filter(|&n| n < u64::from(MAX_OBJECTS))
        .map(|n| n as u32)
        .ok_or_else(|| invalid(format!("{what} id {id:?} is not a number 0..31")))
}

fn b64(what: &str, text: &str) -> Result<Vec<u8>, FormatError> {
    B64.decode(text)
        .map_err(|_| invalid(format!("{what} is not valid base64")))
}

fn hash(what: &str, name: &str) -> Result<HashAlg, String> {
    HashAlg::from_name(name).ok_or_else(|| format!("{what} hash {name:?} is not supported"))
}

fn from_value<T: serde::de::DeserializeOwned>(
    what: &str,
    v: &serde_json::Value,
) -> Result<T, FormatError> {
    serde_json::from_value(v.clone()).map_err(|e| invalid(format!("{what}: {e}")))
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Bytes of AF material a keyslot holding a `key_size`-byte key occupies (512-byte units).
pub fn af_material_len(key_size: u32) -> u64 {
    round_up(u64::from(key_size) * u64::from(AF_STRIPES), 512)
}

/// Checks the kdf object of keyslot `id`; a hostile cost is reported, not run.
fn check_kdf(id: u32, kdf: &json::Kdf) -> Result<(Kdf, Vec<u8>), String> {
    let what = format!("keyslot {id} kdf");
    let salt = B64
        .decode(&kdf.salt)
        .map_err(|_| format!("{what} salt is not valid base64"))?;
    if salt.len() != SALT_LEN {
        return Err(format!("{what} salt is {} bytes, expected 32", salt.len()));
    }
    let missing = |f: &str| format!("{what} lacks {f}");
    let parsed = match kdf.kind.as_str() {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: hash(&what, kdf.hash.as_deref().ok_or_else(|| missing("hash"))?)?,
            iterations: kdf.iterations.ok_or_else(|| missing("iterations"))?,
        },
        "argon2i" | "argon2id" => {
            let time = kdf.time.ok_or_else(|| missing("time"))?;
            let memory_kib = kdf.memory.ok_or_else(|| missing("memory"))?;
            let cpus = kdf.cpus.ok_or_else(|| missing("cpus"))?;
            if kdf.kind == "argon2i" {
                Kdf::Argon2i {
                    time,
                    memory_kib,
                    cpus,
                }
            } else {
                Kdf::Argon2id {
                    time,
                    memory_kib,
                    cpus,
                }
            }
        }
        other => return Err(format!("{what} type {other:?} is not supported")),
    };
    check_kdf_caps(&what, &parsed)?;
    Ok((parsed, salt))
}

/// Caps against hostile headers (docs/format.md §9), checked before any KDF work. A cost
/// this machine cannot afford (KdfMemory) is not a header fault: unlock reports it (exit 3).
fn check_kdf_caps(what: &str, kdf: &Kdf) -> Result<(), String> {
    match kdf.check_limits() {
        Err(crate::crypto::CryptoError::KdfLimits(why)) => Err(format!("{what}: {why}")),
        _ => Ok(()),
    }
}

/// Validates the keyslot-level fields we rely on; Err(reason) makes the keyslot unusable.
fn check_luks2_keyslot(id: u32, ks: &json::Keyslot) -> Result<Luks2Keyslot, String> {
    if ks.af.kind != "luks1" {
        return Err(format!(
            "keyslot {id} af type {:?} is not supported",
            ks.af.kind
        ));
    }
    if ks.af.stripes != AF_STRIPES {
        return Err(format!(
            "keyslot {id} af stripes {} (expected 4000)",
            ks.af.stripes
        ));
    }
    let af_hash = hash(&format!("keyslot {id} af"), &ks.af.hash)?;
    if ks.area.encryption != "aes-xts-plain64" {
        return Err(format!(
            "keyslot {id} area encryption {:?} is not supported",
            ks.area.encryption
        ));
    }
    if ks.area.key_size != 32 && ks.area.key_size != 64 {
        return Err(format!(
            "keyslot {id} area key_size {} is not 32 or 64",
            ks.area.key_size
        ));
    }
    if ks.key_size != 32 && ks.key_size != 64 {
        return Err(format!(
            "keyslot {id} key_size {} is not 32 or 64",
            ks.key_size
        ));
    }
    if ks.area.size < af_material_len(ks.key_size) {
        return Err(format!(
            "keyslot {id} area size {} is smaller than its key material ({})",
            ks.area.size,
            af_material_len(ks.key_size)
        ));
    }
    let (kdf, kdf_salt) = check_kdf(id, &ks.kdf)?;
    Ok(Luks2Keyslot {
        key_size: ks.key_size,
        priority: ks.priority.unwrap_or(1),
        af_hash,
        area_offset_bytes: ks.area.offset,
        area_size_bytes: ks.area.size,
        area_key_size: ks.area.key_size,
        kdf,
        kdf_salt,
    })
}

/// A member that must be a non-empty JSON string (cryptsetup's `json_contains_string`).
fn required_str<'a>(obj: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    obj.get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|s| !s.is_empty())
}

/// A member that must be a JSON integer.
fn required_int(obj: &serde_json::Value, key: &str) -> bool {
    obj.get(key).is_some_and(|v| v.is_i64() || v.is_u64())
}

/// A string-u64 member (decimal digits only).
fn required_u64(obj: &serde_json::Value, key: &str) -> Option<u64> {
    required_str(obj, key).and_then(json::u64_string::parse)
}

/// cryptsetup's `reencrypt_candidate_flag`: "online-reencrypt" or "online-reencrypt-v<digits>".
fn online_reencrypt_candidate(flag: &str) -> bool {
    flag == "online-reencrypt"
        || flag
            .strip_prefix("online-reencrypt-v")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()))
}

/// A segment whose flags mark it as a reencryption backup ("backup-*").
fn is_backup_segment(seg: &serde_json::Value) -> bool {
    seg.get("flags")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|f| {
            f.iter()
                .any(|x| x.as_str().is_some_and(|s| s.starts_with("backup-")))
        })
}

/// The structural rules of cryptsetup's LUKS2_hdr_validate and its luks2 keyslot validation
/// (docs/format.md §9, "cryptsetup's rules"): a header breaking one is not LUKS2 to
/// cryptsetup, so the copy is invalid here too, not merely unsupported.
fn cryptsetup_rules(wire: &json::Metadata, hdr_size: u64) -> Result<(), FormatError> {
    // Requirements: at most one online-reencrypt flag.
    let mandatory: &[String] = wire
        .config
        .requirements
        .as_ref()
        .map_or(&[], |r| r.mandatory.as_slice());
    if mandatory
        .iter()
        .filter(|f| online_reencrypt_candidate(f))
        .count()
        > 1
    {
        return Err(invalid(
            "config requirements name more than one online reencryption",
        ));
    }
    let online_reencrypt = mandatory.iter().any(|f| {
        matches!(
            f.as_str(),
            "online-reencrypt" | "online-reencrypt-v2" | "online-reencrypt-v3"
        )
    });

    // Digests: a type.
    for (id, d) in &wire.digests {
        if required_str(d, "type").is_none() {
            return Err(invalid(format!("digest {id} has no type")));
        }
    }

    // Segments: at least one, ids 0..n-1 without a gap, backups after the regular ones.
    let count = wire.segments.len();
    if count == 0 {
        return Err(invalid("the segments section is empty"));
    }
    let mut first_backup: Option<u64> = None;
    let mut regular: Vec<(u64, u64, Option<u64>)> = Vec::new(); // (id, offset, size)
    for (id, seg) in &wire.segments {
        let what = format!("segment {id}");
        let n = object_id("segment", id)?;
        let kind =
            required_str(seg, "type").ok_or_else(|| invalid(format!("{what} has no type")))?;
        let offset = required_u64(seg, "offset")
            .ok_or_else(|| invalid(format!("{what} has no valid offset")))?;
        let size = match required_str(seg, "size") {
            Some("dynamic") => None,
            Some(text) => Some(
                json::u64_string::parse(text)
                    .filter(|&n| n != 0)
                    .ok_or_else(|| invalid(format!("{what} size {text:?}")))?,
            ),
            None => return Err(invalid(format!("{what} has no size"))),
        };
        if !offset.is_multiple_of(512) || !size.unwrap_or(0).is_multiple_of(512) {
            return Err(invalid(format!("{what} is not 512-byte aligned")));
        }
        if let Some(flags) = seg.get("flags")
            && !flags
                .as_array()
                .is_some_and(|f| f.iter().all(serde_json::Value::is_string))
        {
            return Err(invalid(format!("{what} flags are not an array of strings")));
        }
        if is_backup_segment(seg) {
            first_backup = Some(first_backup.map_or(u64::from(n), |b| b.min(u64::from(n))));
        } else {
            if first_backup.is_some_and(|b| u64::from(n) >= b) {
                return Err(invalid(format!("{what} follows a backup segment")));
            }
            regular.push((u64::from(n), offset, size));
        }
        if kind == "crypt" {
            if required_str(seg, "encryption").is_none() {
                return Err(invalid(format!("{what} has no encryption")));
            }
            if required_u64(seg, "iv_tweak").is_none() {
                return Err(invalid(format!("{what} has no valid iv_tweak")));
            }
            let sector = seg
                .get("sector_size")
                .and_then(serde_json::Value::as_u64)
                .filter(|&s| s != 0 && s <= u64::from(u32::MAX) && s.is_multiple_of(512))
                .ok_or_else(|| invalid(format!("{what} has no valid sector_size")))?;
            if !size.unwrap_or(0).is_multiple_of(sector) {
                return Err(invalid(format!(
                    "{what} size is not a multiple of its sector size"
                )));
            }
            if let Some(integrity) = seg.get("integrity")
                && !(integrity.is_object()
                    && ["type", "journal_encryption", "journal_integrity"]
                        .iter()
                        .all(|k| required_str(integrity, k).is_some()))
            {
                return Err(invalid(format!(
                    "{what} integrity lacks type or journal members"
                )));
            }
        }
    }
    if first_backup == Some(0) {
        return Err(invalid("no regular segment (only backups)"));
    }
    for n in 0..count as u64 {
        if !wire.segments.contains_key(&n.to_string()) {
            return Err(invalid(format!(
                "segment ids are not 0..{} without a gap (no segment {n})",
                count - 1
            )));
        }
    }
    regular.sort();
    let last_regular = regular.last().map(|r| r.0);
    for &(id, offset, size) in &regular {
        if size.is_none() && Some(id) != last_regular {
            return Err(invalid(format!("segment {id} is dynamic but not the last")));
        }
        for &(other, o_offset, o_size) in &regular {
            let inside = o_size.is_none_or(|s| offset < o_offset.saturating_add(s));
            if other != id && offset >= o_offset && inside {
                return Err(invalid(format!("segment {id} overlaps segment {other}")));
            }
        }
    }
    let areas_end = (2 * hdr_size)
        .checked_add(wire.config.keyslots_size)
        .ok_or_else(|| invalid("config keyslots_size overflows"))?;
    if let Some(min) = regular.iter().map(|r| r.1).min()
        && min != 0
        && min < areas_end
    {
        return Err(invalid(format!(
            "the data at {min} overlaps the header and keyslots area"
        )));
    }

    // Keyslots: type and key_size, a raw-or-other area inside the keyslots area for every
    // type, and the luks2 type's kdf/af/area members.
    let mut areas: Vec<(u64, u64, &str)> = Vec::new();
    let mut reencrypt = 0;
    for (id, ks) in &wire.keyslots {
        let what = format!("keyslot {id}");
        let kind =
            required_str(ks, "type").ok_or_else(|| invalid(format!("{what} has no type")))?;
        let area = ks
            .get("area")
            .filter(|a| a.is_object())
            .ok_or_else(|| invalid(format!("{what} has no area")))?;
        let area_kind = required_str(area, "type")
            .ok_or_else(|| invalid(format!("{what} area has no type")))?;
        let (Some(offset), Some(size)) = (required_u64(area, "offset"), required_u64(area, "size"))
        else {
            return Err(invalid(format!("{what} area has no valid offset and size")));
        };
        let end = offset
            .checked_add(size)
            .ok_or_else(|| invalid(format!("{what} area overflows")))?;
        if size == 0 || offset < 2 * hdr_size || end > areas_end {
            return Err(invalid(format!(
                "{what} area {offset}+{size} lies outside the keyslots area"
            )));
        }
        if let Some(&(_, _, other)) = areas.iter().find(|&&(s, e, _)| offset < e && s < end) {
            return Err(invalid(format!("{what} area overlaps keyslot {other}")));
        }
        areas.push((offset, end, id));
        match kind {
            "luks2" => {
                let kdf = ks
                    .get("kdf")
                    .filter(|k| k.is_object())
                    .ok_or_else(|| invalid(format!("{what} has no kdf")))?;
                let af = ks
                    .get("af")
                    .filter(|a| a.is_object())
                    .ok_or_else(|| invalid(format!("{what} has no af")))?;
                let kdf_ok = match required_str(kdf, "type") {
                    None => false,
                    Some("pbkdf2") => {
                        required_str(kdf, "hash").is_some() && required_int(kdf, "iterations")
                    }
                    Some("argon2i" | "argon2id") => ["time", "memory", "cpus"]
                        .iter()
                        .all(|k| required_int(kdf, k)),
                    Some(_) => true,
                } && (!matches!(
                    required_str(kdf, "type"),
                    Some("pbkdf2" | "argon2i" | "argon2id")
                ) || required_str(kdf, "salt").is_some());
                if !kdf_ok {
                    return Err(invalid(format!("{what} kdf lacks a required member")));
                }
                if required_str(af, "type") != Some("luks1")
                    || required_str(af, "hash").is_none()
                    || !required_int(af, "stripes")
                {
                    return Err(invalid(format!(
                        "{what} af is not a luks1 af with hash and stripes"
                    )));
                }
                if area_kind != "raw"
                    || required_str(area, "encryption").is_none()
                    || !required_int(area, "key_size")
                {
                    return Err(invalid(format!(
                        "{what} area is not a raw area with encryption and key_size"
                    )));
                }
            }
            "reencrypt" => reencrypt += 1,
            _ => {}
        }
    }
    if online_reencrypt && reencrypt == 0 {
        return Err(invalid(
            "online reencryption is required but no reencrypt keyslot exists",
        ));
    }
    if reencrypt > 0 && !mandatory.iter().any(|f| online_reencrypt_candidate(f)) {
        return Err(invalid(
            "a reencrypt keyslot exists without the reencryption requirement",
        ));
    }
    if reencrypt > 1 {
        return Err(invalid("more than one reencrypt keyslot"));
    }
    Ok(())
}

impl Metadata {
    /// Applies the validation table to `wire`, read from a header copy of `hdr_size` bytes.
    pub fn check(wire: json::Metadata, hdr_size: u64) -> Result<Metadata, FormatError> {
        let cfg = &wire.config;
        if cfg.json_size.checked_add(4096) != Some(hdr_size) {
            return Err(invalid(format!(
                "config json_size {} does not match header size {hdr_size}",
                cfg.json_size
            )));
        }
        if !cfg.keyslots_size.is_multiple_of(4096) || cfg.keyslots_size > MAX_KEYSLOTS_SIZE {
            return Err(invalid(format!(
                "config keyslots_size {} is not a multiple of 4096 up to 128 MiB",
                cfg.keyslots_size
            )));
        }
        cryptsetup_rules(&wire, hdr_size)?;
        let areas_start = 2 * hdr_size;
        let areas_end = areas_start + cfg.keyslots_size;
        let mut unsupported = Vec::new();
        if let Some(req) = &cfg.requirements
            && !req.mandatory.is_empty()
        {
            unsupported.push(format!("requirements {}", req.mandatory.join(", ")));
        }

        // Keyslots: structure first (ids, types, area bounds), usability second.
        let mut keyslots = BTreeMap::new();
        let mut areas = BTreeMap::new();
        let mut area_ranges: Vec<(u64, u64, u32)> = Vec::new();
        for (id_text, value) in &wire.keyslots {
            let id = object_id("keyslot", id_text)?;
            let kind = value
                .get("type")
                .and_then(|t| t.as_str())
                .ok_or_else(|| invalid(format!("keyslot {id} has no type")))?;
            value
                .get("key_size")
                .and_then(|k| k.as_u64())
                .filter(|&k| k <= u64::from(u32::MAX))
                .ok_or_else(|| invalid(format!("keyslot {id} has no valid key_size")))?;
            if kind != "luks2" {
                let num = |v: &serde_json::Value| v.as_str().and_then(json::u64_string::parse);
                if let (Some(o), Some(n)) =
                    (num(&value["area"]["offset"]), num(&value["area"]["size"]))
                {
                    areas.insert(id, (o, n));
                }
                if kind == "reencrypt" {
                    unsupported.push(format!("reencryption in progress (keyslot {id})"));
                }
                keyslots.insert(
                    id,
                    Keyslot::Unusable {
                        kind: kind.to_owned(),
                        reason: format!("keyslot {id} type {kind:?} is not supported"),
                    },
                );
                continue;
            }
            let ks: json::Keyslot = from_value(&format!("keyslot {id}"), value)?;
            if ks.area.kind != "raw" {
                return Err(invalid(format!(
                    "keyslot {id} area type {:?}",
                    ks.area.kind
                )));
            }
            let end = ks
                .area
                .offset
                .checked_add(ks.area.size)
                .ok_or_else(|| invalid(format!("keyslot {id} area overflows")))?;
            if ks.area.size == 0 || ks.area.offset < areas_start || end > areas_end {
                return Err(invalid(format!(
                    "keyslot {id} area {}+{} lies outside the keyslots area",
                    ks.area.offset, ks.area.size
                )));
            }
            if let Some(&(_, _, other)) = area_ranges
                .iter()
                .find(|&&(s, e, _)| ks.area.offset < e && s < end)
            {
                return Err(invalid(format!(
                    "keyslot {id} area overlaps keyslot {other}"
                )));
            }
            area_ranges.push((ks.area.offset, end, id));
            areas.insert(id, (ks.area.offset, ks.area.size));
            let slot = match check_luks2_keyslot(id, &ks) {
                Ok(k) => Keyslot::Luks2(k),
                Err(reason) => Keyslot::Unusable {
                    kind: "luks2".into(),
                    reason,
                },
            };
            keyslots.insert(id, slot);
        }

        // Segments.
        let mut segments = BTreeMap::new();
        let mut seg_ranges: Vec<(u64, Option<u64>, u32)> = Vec::new();
        for (id_text, value) in &wire.segments {
            let id = object_id("segment", id_text)?;
            let kind = value
                .get("type")
                .and_then(|t| t.as_str())
                .ok_or_else(|| invalid(format!("segment {id} has no type")))?;
            if kind != "crypt" {
                unsupported.push(format!("segment {id} of type {kind:?}"));
                continue;
            }
            let seg: json::Segment = from_value(&format!("segment {id}"), value)?;
            if !seg.offset.is_multiple_of(512) {
                return Err(invalid(format!("segment {id} offset is not 512-aligned")));
            }
            if seg.sector_size == 0 || !seg.sector_size.is_multiple_of(512) {
                return Err(invalid(format!(
                    "segment {id} sector_size {}",
                    seg.sector_size
                )));
            }
            let size = if seg.size == "dynamic" {
                None
            } else {
                let n = json::u64_string::parse(&seg.size)
                    .filter(|&n| n != 0 && n % 512 == 0 && n % u64::from(seg.sector_size) == 0)
                    .ok_or_else(|| invalid(format!("segment {id} size {:?}", seg.size)))?;
                Some(n)
            };
            if seg.offset != 0 && seg.offset < areas_end {
                return Err(invalid(format!(
                    "segment {id} offset {} overlaps the header and keyslots area",
                    seg.offset
                )));
            }
            seg_ranges.push((seg.offset, size, id));
            if seg.integrity.is_some() {
                unsupported.push(format!("integrity protection (segment {id})"));
            }
            if let Some(flags) = seg.flags.as_ref().filter(|f| !f.is_empty()) {
                unsupported.push(format!("segment {id} flags {}", flags.join(", ")));
            }
            if seg.encryption != "aes-xts-plain64" {
                unsupported.push(format!("cipher {}", seg.encryption));
            }
            if !seg.sector_size.is_power_of_two() || seg.sector_size > 4096 {
                unsupported.push(format!("sector size {}", seg.sector_size));
            }
            segments.insert(
                id,
                CryptSegment {
                    offset_bytes: seg.offset,
                    size_bytes: size,
                    iv_tweak: seg.iv_tweak,
                    encryption: seg.encryption,
                    sector_size: seg.sector_size,
                },
            );
        }
        seg_ranges.sort();
        for (i, &(start, size, id)) in seg_ranges.iter().enumerate() {
            if let Some(&(next_start, _, next_id)) = seg_ranges.get(i + 1) {
                let end = size
                    .and_then(|s| start.checked_add(s))
                    .ok_or_else(|| invalid(format!("segment {id} is dynamic but not last")))?;
                if end > next_start {
                    return Err(invalid(format!("segment {id} overlaps segment {next_id}")));
                }
            }
        }
        if wire.segments.len() > 1 {
            unsupported.push(format!("{} data segments", wire.segments.len()));
        }
        if wire.segments.is_empty() {
            unsupported.push("no data segment".into());
        }

        // Digests: ids must exist; each luks2 keyslot in exactly one digest.
        let mut digests = BTreeMap::new();
        let mut keyslot_digest_count: BTreeMap<u32, u32> = BTreeMap::new();
        let mut covered_segments = BTreeSet::new();
        for (id_text, value) in &wire.digests {
            let id = object_id("digest", id_text)?;
            let d: json::Digest = from_value(&format!("digest {id}"), value)?;
            let mut ks_ids = BTreeSet::new();
            for k in &d.keyslots {
                let kid = object_id("digest keyslot", k)?;
                if !wire.keyslots.contains_key(k) {
                    return Err(invalid(format!("digest {id} names missing keyslot {k}")));
                }
                *keyslot_digest_count.entry(kid).or_default() += 1;
                ks_ids.insert(kid);
            }
            let mut seg_ids = BTreeSet::new();
            for s in &d.segments {
                let sid = object_id("digest segment", s)?;
                if !wire.segments.contains_key(s) {
                    return Err(invalid(format!("digest {id} names missing segment {s}")));
                }
                seg_ids.insert(sid);
                covered_segments.insert(sid);
            }
            if d.kind != "pbkdf2" {
                unsupported.push(format!("digest {id} of type {:?}", d.kind));
                continue;
            }
            let h = hash(&format!("digest {id}"), &d.hash).map_err(invalid)?;
            let salt = b64(&format!("digest {id} salt"), &d.salt)?;
            let digest = b64(&format!("digest {id} digest"), &d.digest)?;
            if salt.len() != SALT_LEN {
                return Err(invalid(format!("digest {id} salt is {} bytes", salt.len())));
            }
            if digest.len() != 20 && digest.len() != h.output_len() {
                return Err(invalid(format!("digest {id} is {} bytes", digest.len())));
            }
            if d.iterations == 0 {
                return Err(invalid(format!("digest {id} has 0 iterations")));
            }
            digests.insert(
                id,
                Digest {
                    hash: h,
                    iterations: d.iterations,
                    salt,
                    digest,
                    keyslots: ks_ids,
                    segments: seg_ids,
                },
            );
        }
        for (id, ks) in &keyslots {
            let is_luks2 = matches!(ks, Keyslot::Luks2(_))
                || matches!(ks, Keyslot::Unusable { kind, .. } if kind == "luks2");
            let n = keyslot_digest_count.get(id).copied().unwrap_or(0);
            if is_luks2 && n != 1 {
                return Err(invalid(format!(
                    "keyslot {id} is listed in {n} digests, expected 1"
                )));
            }
        }
        for id in segments.keys() {
            if !covered_segments.contains(id) {
                return Err(invalid(format!(
                    "segment {id} is not covered by any digest"
                )));
            }
        }

        // Tokens: type and existing keyslots.
        let mut tokens = BTreeMap::new();
        for (id_text, value) in &wire.tokens {
            let id = object_id("token", id_text)?;
            let t: json::Token = from_value(&format!("token {id}"), value)?;
            if t.kind.is_empty() {
                return Err(invalid(format!("token {id} has an empty type")));
            }
            let mut ks = Vec::new();
            for k in &t.keyslots {
                if !wire.keyslots.contains_key(k) {
                    return Err(invalid(format!("token {id} names missing keyslot {k}")));
                }
                ks.push(object_id("token keyslot", k)?);
            }
            tokens.insert(id, (t.kind, ks));
        }

        Ok(Metadata {
            wire,
            keyslots,
            digests,
            tokens,
            segments,
            areas,
            unsupported,
        })
    }

    /// The single crypt segment vaultdisk serves, or why this header cannot be served.
    pub fn data_segment(&self) -> Result<&CryptSegment, String> {
        if !self.unsupported.is_empty() {
            return Err(self.unsupported.join("; "));
        }
        self.segments
            .values()
            .next()
            .ok_or_else(|| "no data segment".to_owned())
    }

    /// The digest that covers keyslot `id`.
    pub fn digest_of_keyslot(&self, id: u32) -> Option<&Digest> {
        self.digests.values().find(|d| d.keyslots.contains(&id))
    }

    /// The id of the digest that covers keyslot `id`.
    pub fn digest_id_of_keyslot(&self, id: u32) -> Option<u32> {
        self.digests
            .iter()
            .find(|(_, d)| d.keyslots.contains(&id))
            .map(|(digest_id, _)| *digest_id)
    }

    /// (offset, size) of every keyslot area, in keyslot id order (see `areas`).
    pub fn keyslot_areas(&self) -> Vec<(u64, u64)> {
        self.areas.values().copied().collect()
    }

    /// Bytes of one header copy (binary header + JSON area) this metadata was checked for.
    pub fn hdr_size(&self) -> u64 {
        self.wire.config.json_size + super::binary::BINARY_SIZE as u64
    }
}
