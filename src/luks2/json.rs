//! serde wire structs mirroring the LUKS2 JSON exactly (u64 quantities as strings, docs/format.md
//! §3-§4). Unknown members are kept in `extra` so a rewrite preserves them.
//!
//! The fields are the LUKS2 JSON members of the same name (`kind` is `type`), documented
//! member by member in docs/format.md §4; they carry no docs of their own here.
#![allow(missing_docs)]
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// u64 quantities travel as JSON strings of decimal digits; a JSON number there is invalid.
pub mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// Writes `v` as a decimal string.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads a decimal string (digits only) as a u64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| D::Error::custom(format!("not a u64 string: {text:?}")))
    }

    /// Decimal digits only, no sign, no overflow.
    pub fn parse(text: &str) -> Option<u64> {
        if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    }
}

/// The whole JSON area object: exactly these five members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub keyslots: BTreeMap<String, Value>,
    pub tokens: BTreeMap<String, Value>,
    pub segments: BTreeMap<String, Value>,
    pub digests: BTreeMap<String, Value>,
    pub config: Config,
}

/// A keyslot of type "luks2".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyslot {
    #[serde(rename = "type")]
    pub kind: String,
    pub key_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    pub af: Af,
    pub area: Area,
    pub kdf: Kdf,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A keyslot's anti-forensic splitter ("luks1", 4000 stripes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Af {
    #[serde(rename = "type")]
    pub kind: String,
    pub stripes: u32,
    pub hash: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A keyslot's area in the keyslots area ("raw", with its cipher).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Area {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "u64_string")]
    pub offset: u64,
    #[serde(with = "u64_string")]
    pub size: u64,
    pub encryption: String,
    pub key_size: u32,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// pbkdf2 uses hash+iterations, argon2i/argon2id use time+memory+cpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kdf {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    pub salt: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A segment of type "crypt".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "u64_string")]
    pub offset: u64,
    /// "dynamic" or a u64 string.
    pub size: String,
    #[serde(with = "u64_string")]
    pub iv_tweak: u64,
    pub encryption: String,
    pub sector_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A digest of type "pbkdf2".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    #[serde(rename = "type")]
    pub kind: String,
    pub keyslots: Vec<String>,
    pub segments: Vec<String>,
    pub hash: String,
    pub iterations: u32,
    pub salt: String,
    pub digest: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The members every token has; the rest is free-form and preserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Token {
    #[serde(rename = "type")]
    pub kind: String,
    pub keyslots: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The config object: JSON and keyslots area sizes, flags, requirements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(with = "u64_string")]
    pub json_size: u64,
    #[serde(with = "u64_string")]
    pub keyslots_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// docs/format.md §4.5: an object holding a `mandatory` array (the spec's plain array is invalid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    #[serde(default)]
    pub mandatory: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// First of the 256 private-use characters (U+10FF00..=U+10FFFF) that stand for the bytes
/// of a JSON text that are not UTF-8. cryptsetup's json-c does not check UTF-8, so a token
/// string may hold any bytes; serde_json needs text, so `decode` maps each such byte `b` to
/// U+10FF00 + b and `encode` writes it back as the byte: a rewrite keeps the bytes.
const RAW_BYTE_BASE: u32 = 0x10_FF00;

fn raw_byte_char(b: u8) -> char {
    // RAW_BYTE_BASE + 0..=255 are all valid scalar values (plane 16, not surrogates).
    char::from_u32(RAW_BYTE_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn is_raw_byte_char(c: char) -> bool {
    (RAW_BYTE_BASE..=RAW_BYTE_BASE + 0xff).contains(&u32::from(c))
}

/// Parses the JSON text of a header (the bytes before the NUL padding). Bytes that are not
/// UTF-8 are kept (see [`encode`]); a text already holding one of the stand-in characters
/// U+10FF00..U+10FFFF is refused, as it could not be written back unchanged.
pub fn decode(text: &[u8]) -> Result<Metadata, String> {
    let mut s = String::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        s.push_str(chunk.valid());
        s.extend(chunk.invalid().iter().map(|&b| raw_byte_char(b)));
    }
    if text
        .utf8_chunks()
        .any(|c| c.valid().chars().any(is_raw_byte_char))
    {
        return Err("the text holds a character of U+10FF00..U+10FFFF".into());
    }
    serde_json::from_str(&s).map_err(|e| e.to_string())
}

/// Object members in the order cryptsetup writes them (keyslots, tokens, segments, digests,
/// config), ids in numeric order, compact.
pub fn encode(metadata: &Metadata) -> Result<Vec<u8>, serde_json::Error> {
    fn ordered(map: &BTreeMap<String, Value>) -> Map<String, Value> {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_by_key(|(k, _)| (k.len(), k.as_str().to_owned()));
        entries
            .into_iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    let mut top = Map::new();
    top.insert(
        "keyslots".into(),
        Value::Object(ordered(&metadata.keyslots)),
    );
    top.insert("tokens".into(), Value::Object(ordered(&metadata.tokens)));
    top.insert(
        "segments".into(),
        Value::Object(ordered(&metadata.segments)),
    );
    top.insert("digests".into(), Value::Object(ordered(&metadata.digests)));
    top.insert("config".into(), serde_json::to_value(&metadata.config)?);
    let text = serde_json::to_string(&Value::Object(top))?;
    // serde_json writes non-ASCII characters as they are (never as \u escapes), so a stand-in
    // for a raw byte is here as a character and goes back to its byte.
    if !text.chars().any(is_raw_byte_char) {
        return Ok(text.into_bytes());
    }
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        if is_raw_byte_char(c) {
            out.push((u32::from(c) - RAW_BYTE_BASE) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    Ok(out)
}
