//! Pure edits of LUKS2 metadata: add or remove a keyslot (with its digest link and tokens),
//! set the data segment's size, put, replace or remove a token, and the metadata of a new
//! volume. No file is touched: each edit takes checked [`Metadata`] and returns the next
//! version, checked again (`Metadata::check`) and known to fit the JSON area, so a caller can
//! hand it to `write::write_header` (docs/format.md §4, §5 "Adding/Removing").
//!
//! The wire JSON is edited member by member, so members vaultdisk does not know survive a
//! rewrite byte for byte, in their order.
use super::json::{self, u64_string};
use super::layout::Layout;
use super::metadata::{MAX_OBJECTS, Metadata};
use super::{FormatError, binary::BINARY_SIZE};
use serde_json::Value;
use std::collections::BTreeMap;

/// Why an edit was refused. Nothing is changed by a refused edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// A keyslot id outside 0..31 was asked for.
    #[error("keyslot {0} is out of range 0..{max}", max = MAX_OBJECTS - 1)]
    OutOfRange(u32),
    /// The keyslot id asked for is taken.
    #[error("keyslot {0} is in use")]
    KeyslotInUse(u32),
    /// The keyslot to remove does not exist.
    #[error("keyslot {0} is not in use")]
    NoSuchKeyslot(u32),
    /// All 32 keyslot ids are taken.
    #[error("all keyslots are used")]
    NoFreeKeyslot,
    /// No gap of this many bytes is left in the keyslots area.
    #[error("no {0}-byte gap left in the keyslots area")]
    NoArea(u64),
    /// The digest a new keyslot should join does not exist.
    #[error("digest {0} has no keyslots")]
    NoSuchDigest(u32),
    /// All 32 token ids are taken.
    #[error("all token ids are used")]
    NoFreeToken,
    /// The token to replace or remove does not exist.
    #[error("token {0} does not exist")]
    NoSuchToken(u32),
    /// A token to store is not a JSON object.
    #[error("a token must be a JSON object")]
    TokenNotObject,
    /// The metadata has no segment of type crypt.
    #[error("no crypt segment")]
    NoCryptSegment,
    /// The edited metadata does not fit the JSON area (`needed` bytes, NUL included).
    #[error("the JSON area has no room: {needed} bytes needed, {area} available")]
    NoRoom {
        /// Bytes the encoded JSON needs, with its terminating NUL.
        needed: u64,
        /// Bytes of the JSON area.
        area: u64,
    },
    /// The edited metadata is not valid LUKS2 (what `Metadata::check` said).
    #[error("{0}")]
    Invalid(FormatError),
    /// A value could not be encoded as JSON (internal error).
    #[error("internal error encoding metadata: {0}")]
    Encode(String),
}

fn encode_err(e: serde_json::Error) -> EditError {
    EditError::Encode(e.to_string())
}

/// Checks `wire` (Metadata::check for a copy of `hdr_size` bytes) and that it fits the JSON area.
pub fn checked(wire: json::Metadata, hdr_size: u64) -> Result<Metadata, EditError> {
    let meta = Metadata::check(wire, hdr_size).map_err(EditError::Invalid)?;
    let needed = json::encode(&meta.wire).map_err(encode_err)?.len() as u64 + 1;
    let area = hdr_size - BINARY_SIZE as u64;
    if needed > area {
        return Err(EditError::NoRoom { needed, area });
    }
    Ok(meta)
}

/// The keyslot id a new keyslot gets: `want` if free and in range, else the lowest free one.
pub fn free_keyslot(meta: &Metadata, want: Option<u32>) -> Result<u32, EditError> {
    let in_use = |id: u32| meta.wire.keyslots.contains_key(&id.to_string());
    match want {
        Some(n) if n >= MAX_OBJECTS => Err(EditError::OutOfRange(n)),
        Some(n) if in_use(n) => Err(EditError::KeyslotInUse(n)),
        Some(n) => Ok(n),
        None => (0..MAX_OBJECTS)
            .find(|&n| !in_use(n))
            .ok_or(EditError::NoFreeKeyslot),
    }
}

/// The offset of the first gap of `size` bytes in the keyslots area that overlaps no keyslot
/// area of `meta` (cryptsetup's LUKS2_find_area_gap).
pub fn free_area(meta: &Metadata, size: u64) -> Result<u64, EditError> {
    let layout = Layout {
        hdr_size: meta.hdr_size(),
        keyslots_size: meta.wire.config.keyslots_size,
        data_offset: 0,
    };
    layout
        .find_area_gap(&meta.keyslot_areas(), size)
        .ok_or(EditError::NoArea(size))
}

fn free_token(wire: &json::Metadata) -> Result<u32, EditError> {
    (0..MAX_OBJECTS)
        .find(|n| !wire.tokens.contains_key(&n.to_string()))
        .ok_or(EditError::NoFreeToken)
}

/// Metadata with keyslot `id` (`keyslot`, its area already chosen, e.g. by [`free_area`]) added
/// to digest `digest_id`, and, when `token` is given, that token object stored under the lowest
/// free token id with its `keyslots` set to `[id]`. Returns the new metadata and the token id.
pub fn add_keyslot(
    meta: &Metadata,
    id: u32,
    keyslot: &json::Keyslot,
    digest_id: u32,
    token: Option<Value>,
) -> Result<(Metadata, Option<u32>), EditError> {
    if id >= MAX_OBJECTS {
        return Err(EditError::OutOfRange(id));
    }
    let mut new = meta.wire.clone();
    let key = id.to_string();
    if new.keyslots.contains_key(&key) {
        return Err(EditError::KeyslotInUse(id));
    }
    new.keyslots.insert(
        key.clone(),
        serde_json::to_value(keyslot).map_err(encode_err)?,
    );
    let list = new
        .digests
        .get_mut(&digest_id.to_string())
        .and_then(|d| d.get_mut("keyslots"))
        .and_then(Value::as_array_mut)
        .ok_or(EditError::NoSuchDigest(digest_id))?;
    list.push(Value::String(key.clone()));
    list.sort_by_key(|v| v.as_str().and_then(|s| s.parse::<u32>().ok()));
    let token_id = match token {
        None => None,
        Some(mut token) => {
            // A token linked to the keyslot, in the same header update as the keyslot.
            let token_id = free_token(&new)?;
            let obj = token.as_object_mut().ok_or(EditError::TokenNotObject)?;
            obj.insert("keyslots".into(), Value::Array(vec![Value::String(key)]));
            new.tokens.insert(token_id.to_string(), token);
            Some(token_id)
        }
    };
    Ok((checked(new, meta.hdr_size())?, token_id))
}

/// What [`remove_keyslot`] took out besides the keyslot itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// (offset, size) of the keyslot's area, to wipe once the new header is written.
    pub area: Option<(u64, u64)>,
    /// Tokens dropped because the keyslot was the last one they named.
    pub tokens: Vec<u32>,
}

/// Metadata without keyslot `id`: it leaves every digest, and every token that named it loses
/// it; a token left naming no keyslot is dropped (a token without keyslots opens nothing).
pub fn remove_keyslot(meta: &Metadata, id: u32) -> Result<(Metadata, Removed), EditError> {
    let key = id.to_string();
    let mut new = meta.wire.clone();
    if new.keyslots.remove(&key).is_none() {
        return Err(EditError::NoSuchKeyslot(id));
    }
    let drop_id = |list: &mut Value| {
        if let Some(a) = list.as_array_mut() {
            a.retain(|v| v.as_str() != Some(key.as_str()));
        }
    };
    for d in new.digests.values_mut() {
        if let Some(list) = d.get_mut("keyslots") {
            drop_id(list);
        }
    }
    let mut dropped = Vec::new();
    new.tokens.retain(|tid, t| {
        let keep = match t.get_mut("keyslots") {
            Some(list) => {
                drop_id(list);
                list.as_array().is_some_and(|a| !a.is_empty())
            }
            None => true,
        };
        if !keep && let Some(n) = u64_string::parse(tid) {
            dropped.push(n as u32);
        }
        keep
    });
    let removed = Removed {
        area: meta.areas.get(&id).copied(),
        tokens: dropped,
    };
    Ok((checked(new, meta.hdr_size())?, removed))
}

/// Metadata whose crypt data segment has `size_bytes` (None: "dynamic", to the end of the
/// device). The size must be a positive multiple of the segment's sector size (checked).
pub fn set_segment_size(meta: &Metadata, size_bytes: Option<u64>) -> Result<Metadata, EditError> {
    let mut new = meta.wire.clone();
    let seg = new
        .segments
        .values_mut()
        .find(|v| v.get("type").and_then(Value::as_str) == Some("crypt"))
        .and_then(Value::as_object_mut)
        .ok_or(EditError::NoCryptSegment)?;
    let size = size_bytes.map_or_else(|| "dynamic".to_owned(), |n| n.to_string());
    seg.insert("size".into(), Value::String(size));
    checked(new, meta.hdr_size())
}

/// Whether the config object's `flags` (persistent activation flags, e.g.
/// "allow-discards") hold `flag`.
pub fn has_config_flag(meta: &Metadata, flag: &str) -> bool {
    meta.wire
        .config
        .flags
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == flag))
}

/// Metadata whose config `flags` hold `flag` (`on`) or not; the other flags keep their
/// order. None: the flags already say so and nothing needs writing.
pub fn set_config_flag(
    meta: &Metadata,
    flag: &str,
    on: bool,
) -> Result<Option<Metadata>, EditError> {
    if has_config_flag(meta, flag) == on {
        return Ok(None);
    }
    let mut new = meta.wire.clone();
    let flags = new.config.flags.get_or_insert_with(Vec::new);
    if on {
        flags.push(flag.to_owned());
    } else {
        flags.retain(|x| x != flag);
    }
    checked(new, meta.hdr_size()).map(Some)
}

/// Metadata with `token` (a JSON object with at least `type` and `keyslots`) stored under the
/// lowest free token id. Returns the new metadata and the id.
pub fn put_token(meta: &Metadata, token: Value) -> Result<(Metadata, u32), EditError> {
    if !token.is_object() {
        return Err(EditError::TokenNotObject);
    }
    let mut new = meta.wire.clone();
    let id = free_token(&new)?;
    new.tokens.insert(id.to_string(), token);
    Ok((checked(new, meta.hdr_size())?, id))
}

/// Metadata whose token `id` is replaced by `token` (same id).
pub fn replace_token(meta: &Metadata, id: u32, token: Value) -> Result<Metadata, EditError> {
    replace_tokens(meta, [(id, token)].into_iter().collect())
}

/// Metadata with several tokens replaced in one edit (`id -> new token`), for a single header
/// update that changes them all.
pub fn replace_tokens(
    meta: &Metadata,
    tokens: BTreeMap<u32, Value>,
) -> Result<Metadata, EditError> {
    let mut new = meta.wire.clone();
    for (id, token) in tokens {
        if !token.is_object() {
            return Err(EditError::TokenNotObject);
        }
        let slot = new
            .tokens
            .get_mut(&id.to_string())
            .ok_or(EditError::NoSuchToken(id))?;
        *slot = token;
    }
    checked(new, meta.hdr_size())
}

/// Metadata without token `id` (its keyslots stay).
pub fn remove_token(meta: &Metadata, id: u32) -> Result<Metadata, EditError> {
    let mut new = meta.wire.clone();
    new.tokens
        .remove(&id.to_string())
        .ok_or(EditError::NoSuchToken(id))?;
    checked(new, meta.hdr_size())
}

/// The volume-key digest of a new volume (pbkdf2 over the volume key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDigest {
    /// Hash name, e.g. "sha256".
    pub hash: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The digest salt (32 bytes).
    pub salt: Vec<u8>,
    /// The digest value.
    pub digest: Vec<u8>,
}

/// The keyslot-free metadata of a new volume laid out as `layout`: one dynamic aes-xts-plain64
/// data segment at `layout.data_offset` with `sector_size`, covered by digest 0. Keyslots join
/// it through [`add_keyslot`] (digest 0).
pub fn new_volume(
    layout: &Layout,
    sector_size: u32,
    digest: &NewDigest,
) -> Result<Metadata, EditError> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    let segment = json::Segment {
        kind: "crypt".into(),
        offset: layout.data_offset,
        size: "dynamic".into(),
        iv_tweak: 0,
        encryption: "aes-xts-plain64".into(),
        sector_size,
        flags: None,
        integrity: None,
        extra: Default::default(),
    };
    let digest = json::Digest {
        kind: "pbkdf2".into(),
        keyslots: Vec::new(),
        segments: vec!["0".into()],
        hash: digest.hash.clone(),
        iterations: digest.iterations,
        salt: B64.encode(&digest.salt),
        digest: B64.encode(&digest.digest),
        extra: Default::default(),
    };
    let wire = json::Metadata {
        keyslots: BTreeMap::new(),
        tokens: BTreeMap::new(),
        segments: BTreeMap::from([(
            "0".into(),
            serde_json::to_value(segment).map_err(encode_err)?,
        )]),
        digests: BTreeMap::from([(
            "0".into(),
            serde_json::to_value(digest).map_err(encode_err)?,
        )]),
        config: json::Config {
            json_size: layout.json_size(),
            keyslots_size: layout.keyslots_size,
            flags: None,
            requirements: None,
            extra: Default::default(),
        },
    };
    checked(wire, layout.hdr_size)
}

#[cfg(test)]
mod tests;
