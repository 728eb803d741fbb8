//! The `dump` report: what luksDump shows, as typed values that serialise to the stable JSON
//! the README documents and render the luksDump-like text. Never key material.
//!
//! Field order is the JSON's order (serde_json keeps it). Values the header stores as it likes
//! (types, cipher names, KDF parameters of a keyslot vaultdisk cannot use) are carried as the
//! JSON values they are, so a hostile or foreign header is shown as written, not normalised.
use crate::device::VolumeHeader;
use crate::luks1::{Luks1Header, SlotState};
use crate::luks2::{self, CopyState, metadata::Keyslot};
use crate::verify::hex;
use serde::Serialize;
use serde_json::Value;

/// A report with a JSON form (pretty-printed, stable) and a text form for people.
pub trait Report: Serialize {
    /// The text `vaultdisk` prints without `--json` (no trailing newline).
    fn to_text(&self) -> String;

    /// The pretty-printed JSON `vaultdisk` prints with `--json`.
    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// One header copy of a LUKS2 volume, as `dump` and `verify` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// "primary" or "secondary".
    pub name: &'static str,
    /// Byte offset where the copy was found (or looked for).
    pub offset: u64,
    /// Its seqid, when its binary header parsed.
    pub seqid: Option<u64>,
    /// Whether it is valid.
    pub valid: bool,
    /// Valid but behind the other copy.
    pub stale: bool,
    /// Why it is not valid.
    pub error: Option<String>,
}

impl From<&CopyState> for CopyReport {
    fn from(c: &CopyState) -> CopyReport {
        CopyReport {
            name: c.kind.name(),
            offset: c.offset,
            seqid: c.seqid,
            valid: c.error.is_none(),
            stale: c.stale,
            error: c.error.as_ref().map(ToString::to_string),
        }
    }
}

/// What `vaultdisk dump` reports, for either LUKS version.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DumpReport {
    /// A LUKS2 header (boxed: it is much larger than the LUKS1 report).
    Luks2(Box<Luks2Dump>),
    /// A LUKS1 header.
    Luks1(Luks1Dump),
}

impl DumpReport {
    /// The report of a header read by [`crate::device::read_header`].
    pub fn new(header: &VolumeHeader) -> DumpReport {
        match header {
            VolumeHeader::Luks2(h) => DumpReport::Luks2(Box::new(Luks2Dump::new(h))),
            VolumeHeader::Luks1(h) => DumpReport::Luks1(Luks1Dump::new(h)),
        }
    }
}

impl Report for DumpReport {
    fn to_text(&self) -> String {
        match self {
            DumpReport::Luks2(r) => r.to_text(),
            DumpReport::Luks1(r) => r.to_text(),
        }
    }
}

/// `dump` of a LUKS2 header (README "dump --json").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Luks2Dump {
    /// Always 2.
    pub version: u8,
    /// The binary header's UUID.
    pub uuid: String,
    /// The label ("" for none): its text when UTF-8, else with each byte that is not valid
    /// UTF-8 written as `\xNN` (then `label_hex` holds the exact bytes).
    pub label: String,
    /// The label's bytes in hex, only when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_hex: Option<String>,
    /// The subsystem ("" for none), shown as `label` is.
    pub subsystem: String,
    /// The subsystem's bytes in hex, only when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsystem_hex: Option<String>,
    /// The current copy's seqid (luksDump's "Epoch").
    pub seqid: u64,
    /// Both copies and which one is current.
    pub header: HeaderCopies,
    /// The JSON `config` section.
    pub config: ConfigReport,
    /// What vaultdisk does not support in this header (it then refuses to open it).
    pub unsupported: Vec<String>,
    /// The segments, by id.
    pub segments: Vec<SegmentReport>,
    /// The keyslots, by id.
    pub keyslots: Vec<KeyslotReport>,
    /// The tokens, by id.
    pub tokens: Vec<TokenReport>,
    /// The digests, by id.
    pub digests: Vec<DigestReport>,
}

/// Both LUKS2 header copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderCopies {
    /// Size of one copy, bytes.
    pub hdr_size: u64,
    /// "primary" or "secondary".
    pub current: &'static str,
    /// Primary, then secondary.
    pub copies: [CopyReport; 2],
}

/// The `config` section of the LUKS2 metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigReport {
    /// JSON area size, bytes.
    pub json_size: u64,
    /// Keyslots area size, bytes.
    pub keyslots_size: u64,
    /// Persistent flags.
    pub flags: Vec<String>,
    /// Mandatory requirements.
    pub requirements: Vec<String>,
}

/// One segment as the header has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentReport {
    /// Its id.
    pub id: u64,
    /// Its type, as written.
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    /// Offset in bytes (a number when it is one).
    pub offset: Value,
    /// Size in bytes, or "dynamic".
    pub size: Value,
    /// IV tweak (a number when it is one).
    pub iv_tweak: Value,
    /// Cipher, as written.
    pub encryption: Option<Value>,
    /// Sector size, as written.
    pub sector_size: Option<Value>,
}

/// One keyslot as the header has it, with its digest and why vaultdisk cannot use it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyslotReport {
    /// Its id.
    pub id: u32,
    /// Its type, as written.
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    /// Volume key size in bytes, as written.
    pub key_size: Option<Value>,
    /// Priority (1, normal, when absent).
    pub priority: Value,
    /// The KDF's public parameters (type, hash, iterations, time, memory, cpus, salt) in the
    /// header's order.
    pub kdf: Value,
    /// The key material area.
    pub area: Option<AreaReport>,
    /// The anti-forensic splitter, as written.
    pub af: Option<Value>,
    /// The digest this keyslot's key is checked against.
    pub digest: Option<u64>,
    /// Why vaultdisk cannot use this keyslot.
    pub unusable: Option<String>,
}

/// A keyslot's key material area.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AreaReport {
    /// Its type, as written.
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    /// Offset in bytes (a number when it is one).
    pub offset: Value,
    /// Size in bytes (a number when it is one).
    pub size: Value,
    /// Cipher, as written.
    pub encryption: Option<Value>,
    /// Area key size in bytes, as written.
    pub key_size: Option<Value>,
}

/// One token: its type and keyslots (never its other fields, which may be secret-adjacent),
/// and for a known type the fields that locate its key without being it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenReport {
    /// Its id.
    pub id: u64,
    /// Its type, as written.
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    /// The keyslots it serves.
    pub keyslots: Vec<u64>,
    /// An Azure Disk Encryption token (confidential VMs, type `Azure_Disk_Encryption`): the
    /// members in [`ADE_TOKEN_FIELDS`] that it has, as written. Never `Passphrase` (the
    /// wrapped protector); whether it has one is `has_passphrase`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_disk_encryption: Option<serde_json::Map<String, Value>>,
}

/// LUKS2 token type Azure Disk Encryption writes on confidential VMs (ade-facts.md §1.3).
pub const ADE_TOKEN_TYPE: &str = "Azure_Disk_Encryption";

/// The members of an `Azure_Disk_Encryption` token that `dump` shows: where the key-encryption
/// key and the secret live, never the wrapped passphrase itself.
pub const ADE_TOKEN_FIELDS: [&str; 7] = [
    "version",
    "KeyVaultURL",
    "KeyVaultResourceId",
    "KeyEncryptionKeyURL",
    "KekVaultResourceId",
    "AttestationURL",
    "PassphraseName",
];

/// The shown members of an Azure Disk Encryption token `t`, or None for another type.
fn ade_token_fields(t: &Value) -> Option<serde_json::Map<String, Value>> {
    if t.get("type").and_then(Value::as_str) != Some(ADE_TOKEN_TYPE) {
        return None;
    }
    let mut m = serde_json::Map::new();
    for f in ADE_TOKEN_FIELDS {
        if let Some(v) = t.get(f) {
            m.insert(f.to_string(), v.clone());
        }
    }
    m.insert(
        "has_passphrase".into(),
        Value::Bool(t.get("Passphrase").is_some_and(|p| !p.is_null())),
    );
    Some(m)
}

/// One volume-key digest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DigestReport {
    /// Its id.
    pub id: u64,
    /// Its type, as written.
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    /// PBKDF2 hash, as written.
    pub hash: Option<Value>,
    /// PBKDF2 iterations, as written.
    pub iterations: Option<Value>,
    /// Salt (base64), as written.
    pub salt: Option<Value>,
    /// Digest (base64), as written.
    pub digest: Option<Value>,
    /// The keyslots it covers.
    pub keyslots: Vec<u64>,
    /// The segments it covers.
    pub segments: Vec<u64>,
}

/// A member the header stores as a decimal string, as a number when it is one.
fn num(v: &Value, key: &str) -> Value {
    match v.get(key) {
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or(Value::String(s.clone())),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// An array of decimal-string ids, as numbers (others left out).
fn ids(v: &Value, key: &str) -> Vec<u64> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().and_then(|s| s.parse::<u64>().ok()))
                .collect()
        })
        .unwrap_or_default()
}

impl Luks2Dump {
    /// The report of a LUKS2 header; reads the wire JSON as it is and the checked metadata
    /// for digests and unusable keyslots.
    pub fn new(h: &luks2::Header) -> Luks2Dump {
        let wire = &h.metadata.wire;
        let segments = wire
            .segments
            .iter()
            .map(|(id, s)| SegmentReport {
                id: id.parse::<u64>().unwrap_or(0),
                kind: s.get("type").cloned(),
                offset: num(s, "offset"),
                size: num(s, "size"),
                iv_tweak: num(s, "iv_tweak"),
                encryption: s.get("encryption").cloned(),
                sector_size: s.get("sector_size").cloned(),
            })
            .collect();
        let keyslots = wire
            .keyslots
            .iter()
            .map(|(id, k)| {
                let idn = id.parse::<u32>().unwrap_or(0);
                let mut kdf = k.get("kdf").cloned().unwrap_or(Value::Null);
                if let Some(obj) = kdf.as_object_mut() {
                    obj.retain(|key, _| {
                        matches!(
                            key.as_str(),
                            "type" | "hash" | "iterations" | "time" | "memory" | "cpus" | "salt"
                        )
                    });
                }
                let area = k.get("area").map(|a| AreaReport {
                    kind: a.get("type").cloned(),
                    offset: num(a, "offset"),
                    size: num(a, "size"),
                    encryption: a.get("encryption").cloned(),
                    key_size: a.get("key_size").cloned(),
                });
                let unusable = match h.metadata.keyslots.get(&idn) {
                    Some(Keyslot::Unusable { reason, .. }) => Some(reason.clone()),
                    _ => None,
                };
                let digest = h.metadata.digest_of_keyslot(idn).and_then(|_| {
                    wire.digests
                        .iter()
                        .find(|(_, d)| {
                            d.get("keyslots")
                                .and_then(Value::as_array)
                                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(id)))
                        })
                        .and_then(|(did, _)| did.parse::<u64>().ok())
                });
                KeyslotReport {
                    id: idn,
                    kind: k.get("type").cloned(),
                    key_size: k.get("key_size").cloned(),
                    priority: k.get("priority").cloned().unwrap_or(Value::from(1)),
                    kdf,
                    area,
                    af: k.get("af").cloned(),
                    digest,
                    unusable,
                }
            })
            .collect();
        let tokens = wire
            .tokens
            .iter()
            .map(|(id, t)| TokenReport {
                id: id.parse::<u64>().unwrap_or(0),
                kind: t.get("type").cloned(),
                keyslots: ids(t, "keyslots"),
                azure_disk_encryption: ade_token_fields(t),
            })
            .collect();
        let digests = wire
            .digests
            .iter()
            .map(|(id, d)| DigestReport {
                id: id.parse::<u64>().unwrap_or(0),
                kind: d.get("type").cloned(),
                hash: d.get("hash").cloned(),
                iterations: d.get("iterations").cloned(),
                salt: d.get("salt").cloned(),
                digest: d.get("digest").cloned(),
                keyslots: ids(d, "keyslots"),
                segments: ids(d, "segments"),
            })
            .collect();
        Luks2Dump {
            version: 2,
            uuid: h.binary.uuid.clone(),
            label: h.binary.label.to_string(),
            label_hex: non_utf8_hex(&h.binary.label),
            subsystem: h.binary.subsystem.to_string(),
            subsystem_hex: non_utf8_hex(&h.binary.subsystem),
            seqid: h.binary.seqid,
            header: HeaderCopies {
                hdr_size: h.binary.hdr_size,
                current: h.current.name(),
                copies: [CopyReport::from(&h.primary), CopyReport::from(&h.secondary)],
            },
            config: ConfigReport {
                json_size: wire.config.json_size,
                keyslots_size: wire.config.keyslots_size,
                flags: wire.config.flags.clone().unwrap_or_default(),
                requirements: wire
                    .config
                    .requirements
                    .as_ref()
                    .map(|r| r.mandatory.clone())
                    .unwrap_or_default(),
            },
            unsupported: h.metadata.unsupported.clone(),
            segments,
            keyslots,
            tokens,
            digests,
        }
    }
}

/// The exact bytes of a label that is not UTF-8, in hex (None for UTF-8 text).
fn non_utf8_hex(t: &crate::luks2::binary::HeaderText) -> Option<String> {
    match t.as_str() {
        Some(_) => None,
        None => Some(crate::hex::encode(t.as_bytes())),
    }
}

/// A header value as luksDump-like text: strings bare, absent as "-", others as JSON.
fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// `text` of member `key` of an object value.
fn member(v: Option<&Value>, key: &str) -> String {
    text(v.and_then(|v| v.get(key)))
}

/// An optional number as text ("-" when absent).
fn opt_num(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// Bits of a size in bytes that the header stores as a number.
fn bits(bytes: Option<&Value>) -> Option<u64> {
    bytes.and_then(Value::as_u64).map(|b| b.wrapping_mul(8))
}

impl Report for Luks2Dump {
    /// luksDump-like text.
    fn to_text(&self) -> String {
        let mut out = String::new();
        // Header strings come from the file (labels, cipher names, token types): control
        // characters in a line are escaped, so one line stays one (tabs are the layout's).
        let mut line = |s: String| {
            out.push_str(&crate::escape::escape_line(&s));
            out.push('\n');
        };
        let or = |s: &str, none: &str| {
            if s.is_empty() {
                none.to_owned()
            } else {
                crate::escape::escape_control(s).into_owned()
            }
        };
        line("LUKS header information".into());
        line(format!("Version:       \t{}", self.version));
        line(format!("Epoch:         \t{}", self.seqid));
        // cryptsetup's luksDump prints one copy's size here (hdr_size), not the JSON area's.
        line(format!("Metadata area: \t{} [bytes]", self.header.hdr_size));
        line(format!(
            "Keyslots area: \t{} [bytes]",
            self.config.keyslots_size
        ));
        line(format!(
            "UUID:          \t{}",
            crate::escape::escape_control(&self.uuid)
        ));
        line(format!(
            "Label:         \t{}",
            or(&self.label, "(no label)")
        ));
        line(format!(
            "Subsystem:     \t{}",
            or(&self.subsystem, "(no subsystem)")
        ));
        let flags = &self.config.flags;
        line(format!(
            "Flags:       \t{}",
            if flags.is_empty() {
                "(no flags)".into()
            } else {
                flags.join(" ")
            }
        ));
        let reqs = &self.config.requirements;
        if !reqs.is_empty() {
            line(format!("Requirements:\t{}", reqs.join(" ")));
        }
        line(String::new());
        line("Header copies:".into());
        for c in &self.header.copies {
            let current = c.name == self.header.current;
            line(format!(
                "  {:<9} at {:>7}: {}, seqid {}{}",
                c.name,
                c.offset,
                if !c.valid {
                    format!("INVALID ({})", c.error.as_deref().unwrap_or("-"))
                } else if c.stale {
                    "valid but stale".to_owned()
                } else {
                    "valid".to_owned()
                },
                opt_num(c.seqid),
                if current { " (current)" } else { "" }
            ));
        }
        if !self.unsupported.is_empty() {
            line(format!(
                "Unsupported by vaultdisk: {}",
                self.unsupported.join("; ")
            ));
        }
        line(String::new());
        line("Data segments:".into());
        for s in &self.segments {
            line(format!("  {}: {}", s.id, text(s.kind.as_ref())));
            line(format!("\toffset: {} [bytes]", text(Some(&s.offset))));
            let len = if s.size == "dynamic" {
                "(whole device)".into()
            } else {
                format!("{} [bytes]", text(Some(&s.size)))
            };
            line(format!("\tlength: {len}"));
            line(format!("\tcipher: {}", text(s.encryption.as_ref())));
            line(format!(
                "\tsector: {} [bytes]",
                text(s.sector_size.as_ref())
            ));
        }
        line(String::new());
        line("Keyslots:".into());
        for k in &self.keyslots {
            line(format!("  {}: {}", k.id, text(k.kind.as_ref())));
            if let Some(bits) = bits(k.key_size.as_ref()) {
                line(format!("\tKey:        {bits} bits"));
            }
            let prio = match k.priority.as_u64() {
                Some(0) => "ignored",
                Some(2) => "preferred",
                _ => "normal",
            };
            line(format!("\tPriority:   {prio}"));
            let area = k.area.as_ref();
            line(format!(
                "\tCipher:     {}",
                text(area.and_then(|a| a.encryption.as_ref()))
            ));
            if let Some(bits) = bits(area.and_then(|a| a.key_size.as_ref())) {
                line(format!("\tCipher key: {bits} bits"));
            }
            let kdf = Some(&k.kdf);
            line(format!("\tPBKDF:      {}", member(kdf, "type")));
            if k.kdf["type"] == "pbkdf2" {
                line(format!("\tHash:       {}", member(kdf, "hash")));
                line(format!("\tIterations: {}", member(kdf, "iterations")));
            } else {
                line(format!("\tTime cost:  {}", member(kdf, "time")));
                line(format!("\tMemory:     {}", member(kdf, "memory")));
                line(format!("\tThreads:    {}", member(kdf, "cpus")));
            }
            line(format!("\tSalt:       {}", member(kdf, "salt")));
            line(format!(
                "\tAF stripes: {}",
                member(k.af.as_ref(), "stripes")
            ));
            line(format!("\tAF hash:    {}", member(k.af.as_ref(), "hash")));
            line(format!(
                "\tArea offset:{} [bytes]",
                text(area.map(|a| &a.offset))
            ));
            line(format!(
                "\tArea length:{} [bytes]",
                text(area.map(|a| &a.size))
            ));
            line(format!("\tDigest ID:  {}", opt_num(k.digest)));
            if let Some(why) = &k.unusable {
                line(format!("\tUnusable:   {why}"));
            }
        }
        line("Tokens:".into());
        for t in &self.tokens {
            line(format!("  {}: {}", t.id, text(t.kind.as_ref())));
            let slots: Vec<String> = t.keyslots.iter().map(u64::to_string).collect();
            line(format!("\tKeyslots:   {}", slots.join(", ")));
            for (k, v) in t.azure_disk_encryption.iter().flatten() {
                if k == "has_passphrase" {
                    let has = v.as_bool() == Some(true);
                    line(format!(
                        "\tPassphrase: {}",
                        if has { "(wrapped, not shown)" } else { "-" }
                    ));
                } else {
                    line(format!("\t{k}: {}", text(Some(v))));
                }
            }
        }
        line("Digests:".into());
        for d in &self.digests {
            line(format!("  {}: {}", d.id, text(d.kind.as_ref())));
            line(format!("\tHash:       {}", text(d.hash.as_ref())));
            line(format!("\tIterations: {}", text(d.iterations.as_ref())));
            line(format!("\tSalt:       {}", text(d.salt.as_ref())));
            line(format!("\tDigest:     {}", text(d.digest.as_ref())));
        }
        out.truncate(out.trim_end().len());
        out
    }
}

/// `dump` of a LUKS1 header: header fields and keyslot parameters. Salts and the digest are
/// public header data and appear as lower-case hex, as luksDump prints them (without its
/// spaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Luks1Dump {
    /// Always "luks1".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Always 1.
    pub version: u8,
    /// Text UUID.
    pub uuid: String,
    /// cipherName, e.g. "aes".
    pub cipher_name: String,
    /// cipherMode, e.g. "xts-plain64".
    pub cipher_mode: String,
    /// hashSpec.
    pub hash: &'static str,
    /// Start of the encrypted data, 512-byte sectors.
    pub payload_offset_sectors: u32,
    /// Volume key length, bytes.
    pub key_bytes: u32,
    /// Volume key digest (hex).
    pub mk_digest: String,
    /// Its salt (hex).
    pub mk_digest_salt: String,
    /// Its PBKDF2 iterations.
    pub mk_digest_iterations: u32,
    /// The eight keyslots, in id order.
    pub keyslots: Vec<Luks1KeyslotReport>,
}

/// One LUKS1 keyslot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Luks1KeyslotReport {
    /// Its id, 0..8.
    pub id: usize,
    /// "enabled", "disabled" or "invalid (0x........)".
    pub state: String,
    /// Start of its key material, 512-byte sectors.
    pub key_material_offset_sectors: u32,
    /// AF stripes.
    pub stripes: u32,
    /// PBKDF2 iterations (enabled slots only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// PBKDF2 salt, hex (enabled slots only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

impl Luks1Dump {
    /// The report of a parsed LUKS1 header.
    pub fn new(h: &Luks1Header) -> Luks1Dump {
        let keyslots = h
            .keyslots
            .iter()
            .enumerate()
            .map(|(i, ks)| {
                let enabled = ks.state == SlotState::Enabled;
                Luks1KeyslotReport {
                    id: i,
                    state: match ks.state {
                        SlotState::Enabled => "enabled".to_string(),
                        SlotState::Disabled => "disabled".to_string(),
                        SlotState::Invalid(v) => format!("invalid (0x{v:08x})"),
                    },
                    key_material_offset_sectors: ks.key_material_offset_sectors,
                    stripes: ks.stripes,
                    iterations: enabled.then_some(ks.iterations),
                    salt: enabled.then(|| hex(&ks.salt)),
                }
            })
            .collect();
        Luks1Dump {
            kind: "luks1",
            version: 1,
            uuid: h.uuid.clone(),
            cipher_name: h.cipher_name.clone(),
            cipher_mode: h.cipher_mode.clone(),
            hash: h.hash.name(),
            payload_offset_sectors: h.payload_offset_sectors,
            key_bytes: h.key_bytes,
            mk_digest: hex(&h.mk_digest),
            mk_digest_salt: hex(&h.mk_digest_salt),
            mk_digest_iterations: h.mk_digest_iterations,
            keyslots,
        }
    }
}

impl Report for Luks1Dump {
    /// LUKS1 has a flat header: the pretty JSON is the readable form too.
    fn to_text(&self) -> String {
        self.to_json()
    }
}

/// `dump --dump-volume-key`: cryptsetup's `luksDump --dump-volume-key` layout (LUKS2 and
/// LUKS1 alike), so that scripts parsing its "MK dump:" lines work on ours. Holds the key:
/// its text is built in zeroizing memory and never logged.
pub struct VolumeKeyDump<'a> {
    /// The device name as given (cryptsetup's `crypt_get_device_name`).
    pub device: String,
    /// The header.
    pub header: &'a VolumeHeader,
    /// The volume key.
    pub volume_key: &'a crate::secret::VolumeKey,
}

impl VolumeKeyDump<'_> {
    /// (cipher name, cipher mode, payload offset in 512-byte sectors, UUID).
    fn fields(&self) -> (String, String, u64, String) {
        match self.header {
            VolumeHeader::Luks2(h) => {
                let (enc, offset) = h
                    .metadata
                    .data_segment()
                    .map(|s| (s.encryption.clone(), s.offset_bytes / 512))
                    .unwrap_or_default();
                let (name, mode) = enc.split_once('-').unwrap_or((enc.as_str(), ""));
                (
                    name.to_string(),
                    mode.to_string(),
                    offset,
                    h.binary.uuid.clone(),
                )
            }
            VolumeHeader::Luks1(h) => (
                h.cipher_name.clone(),
                h.cipher_mode.clone(),
                u64::from(h.payload_offset_sectors),
                h.uuid.clone(),
            ),
        }
    }

    /// The text cryptsetup prints: the header lines, then "MK dump:" with the key in hex, 16
    /// bytes a line (each byte followed by a space), or, with `stored_to`, "Key stored to file
    /// F." instead of the key.
    pub fn text(&self, stored_to: Option<&std::path::Path>) -> zeroize::Zeroizing<String> {
        use std::fmt::Write;
        let (name, mode, offset, uuid) = self.fields();
        let key = self.volume_key.expose_secret();
        let mut s = zeroize::Zeroizing::new(String::with_capacity(
            512 + self.device.len() + key.len() * 4,
        ));
        let _ = writeln!(s, "LUKS header information for {}", self.device);
        let _ = writeln!(s, "Cipher name:   \t{name}");
        let _ = writeln!(s, "Cipher mode:   \t{mode}");
        let _ = writeln!(s, "Payload offset:\t{offset}");
        let _ = writeln!(s, "UUID:          \t{uuid}");
        let _ = writeln!(s, "MK bits:       \t{}", key.len() * 8);
        if let Some(file) = stored_to {
            let _ = writeln!(s, "Key stored to file {}.", file.display());
            return s;
        }
        s.push_str(&Self::mk_dump(key));
        s
    }

    /// The "MK dump:" lines: 16 bytes a line, each byte followed by a space, continuation
    /// lines indented by two tabs.
    pub fn mk_dump(key: &[u8]) -> zeroize::Zeroizing<String> {
        use std::fmt::Write;
        let mut s = zeroize::Zeroizing::new(String::with_capacity(16 + key.len() * 4));
        s.push_str("MK dump:\t");
        for (i, b) in key.iter().enumerate() {
            if i > 0 && i % 16 == 0 {
                s.push_str("\n\t\t");
            }
            let _ = write!(s, "{b:02x} ");
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod volume_key_dump_tests {
    use super::*;

    /// The layout of cryptsetup 2.6's luksDump --dump-volume-key (tests/it/escrow.rs compares
    /// the whole output with cryptsetup's): 16 bytes a line, each followed by a space.
    #[test]
    fn mk_dump_lines_are_cryptsetups() {
        let key: Vec<u8> = (0u8..32).collect();
        let line1: String = (0u8..16).map(|b| format!("{b:02x} ")).collect();
        let line2: String = (16u8..32).map(|b| format!("{b:02x} ")).collect();
        let want = format!("MK dump:\t{line1}\n\t\t{line2}\n");
        assert_eq!(*VolumeKeyDump::mk_dump(&key), want);
    }
}
