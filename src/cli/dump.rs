//! `vaultdisk dump`: what luksDump shows, as text or stable JSON. Never key material.
use super::DumpArgs;
use crate::device::{self, VolumeHeader};
use crate::error::Result;
use crate::luks2::{self, CopyState, metadata::Keyslot};
use serde_json::{Value, json};

pub fn run(args: &DumpArgs) -> Result<()> {
    let file = device::open_backing(&args.backing, false)?;
    let report = match device::read_header(&file, &args.backing)? {
        VolumeHeader::Luks2(header) => {
            device::warn_damaged_copy(&header, &args.backing);
            luks2_report(&header)
        }
        VolumeHeader::Luks1(header) => {
            let report = header.describe_json();
            if !args.json {
                // LUKS1 has a flat header: pretty JSON is the readable form too.
                return emit(&serde_json::to_string_pretty(&report).unwrap_or_default());
            }
            report
        }
    };
    if args.json {
        emit(&serde_json::to_string_pretty(&report).unwrap_or_default())
    } else {
        emit(render_text(&report).trim_end())
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(crate::error::Error::io("cannot write to stdout", e))
        }
        _ => Ok(()),
    }
}

fn copy_report(c: &CopyState) -> Value {
    json!({
        "name": c.kind.name(),
        "offset": c.offset,
        "seqid": c.seqid,
        "valid": c.error.is_none(),
        "stale": c.stale,
        "error": c.error.as_ref().map(ToString::to_string),
    })
}

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

fn ids(v: &Value, key: &str) -> Value {
    Value::Array(
        v.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().and_then(|s| s.parse::<u64>().ok()))
                    .map(Value::from)
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The stable JSON shape documented in the README.
pub fn luks2_report(h: &luks2::Header) -> Value {
    let wire = &h.metadata.wire;
    let segments: Vec<Value> = wire
        .segments
        .iter()
        .map(|(id, s)| {
            json!({
                "id": id.parse::<u64>().unwrap_or(0),
                "type": s.get("type"),
                "offset": num(s, "offset"),
                "size": num(s, "size"),
                "iv_tweak": num(s, "iv_tweak"),
                "encryption": s.get("encryption"),
                "sector_size": s.get("sector_size"),
            })
        })
        .collect();
    let keyslots: Vec<Value> = wire
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
            let area = k.get("area").map(|a| {
                json!({
                    "type": a.get("type"),
                    "offset": num(a, "offset"),
                    "size": num(a, "size"),
                    "encryption": a.get("encryption"),
                    "key_size": a.get("key_size"),
                })
            });
            let unusable = match h.metadata.keyslots.get(&idn) {
                Some(Keyslot::Unusable { reason, .. }) => Some(reason.clone()),
                _ => None,
            };
            json!({
                "id": idn,
                "type": k.get("type"),
                "key_size": k.get("key_size"),
                "priority": k.get("priority").cloned().unwrap_or(Value::from(1)),
                "kdf": kdf,
                "area": area,
                "af": k.get("af"),
                "digest": h.metadata.digest_of_keyslot(idn).and_then(|_| {
                    wire.digests.iter().find(|(_, d)| {
                        d.get("keyslots").and_then(Value::as_array)
                            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(id)))
                    }).and_then(|(did, _)| did.parse::<u64>().ok())
                }),
                "unusable": unusable,
            })
        })
        .collect();
    let tokens: Vec<Value> = wire
        .tokens
        .iter()
        .map(|(id, t)| {
            json!({
                "id": id.parse::<u64>().unwrap_or(0),
                "type": t.get("type"),
                "keyslots": ids(t, "keyslots"),
            })
        })
        .collect();
    let digests: Vec<Value> = wire
        .digests
        .iter()
        .map(|(id, d)| {
            json!({
                "id": id.parse::<u64>().unwrap_or(0),
                "type": d.get("type"),
                "hash": d.get("hash"),
                "iterations": d.get("iterations"),
                "salt": d.get("salt"),
                "digest": d.get("digest"),
                "keyslots": ids(d, "keyslots"),
                "segments": ids(d, "segments"),
            })
        })
        .collect();
    json!({
        "version": 2,
        "uuid": h.binary.uuid,
        "label": h.binary.label,
        "subsystem": h.binary.subsystem,
        "seqid": h.binary.seqid,
        "header": {
            "hdr_size": h.binary.hdr_size,
            "current": h.current.name(),
            "copies": [copy_report(&h.primary), copy_report(&h.secondary)],
        },
        "config": {
            "json_size": wire.config.json_size,
            "keyslots_size": wire.config.keyslots_size,
            "flags": wire.config.flags.clone().unwrap_or_default(),
            "requirements": wire.config.requirements.as_ref().map(|r| r.mandatory.clone()).unwrap_or_default(),
        },
        "unsupported": h.metadata.unsupported,
        "segments": segments,
        "keyslots": keyslots,
        "tokens": tokens,
        "digests": digests,
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// luksDump-like text rendered from the JSON report, so both always agree.
pub fn render_text(r: &Value) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let or = |v: &Value, none: &str| match v.as_str() {
        Some("") | None => none.to_owned(),
        Some(s) => s.to_owned(),
    };
    line("LUKS header information".into());
    line(format!("Version:       \t{}", text(&r["version"])));
    line(format!("Epoch:         \t{}", text(&r["seqid"])));
    line(format!(
        "Metadata area: \t{} [bytes]",
        text(&r["config"]["json_size"])
    ));
    line(format!(
        "Keyslots area: \t{} [bytes]",
        text(&r["config"]["keyslots_size"])
    ));
    line(format!("UUID:          \t{}", text(&r["uuid"])));
    line(format!(
        "Label:         \t{}",
        or(&r["label"], "(no label)")
    ));
    line(format!(
        "Subsystem:     \t{}",
        or(&r["subsystem"], "(no subsystem)")
    ));
    let flags = r["config"]["flags"].as_array().cloned().unwrap_or_default();
    line(format!(
        "Flags:       \t{}",
        if flags.is_empty() {
            "(no flags)".into()
        } else {
            flags.iter().map(text).collect::<Vec<_>>().join(" ")
        }
    ));
    let reqs = r["config"]["requirements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !reqs.is_empty() {
        line(format!(
            "Requirements:\t{}",
            reqs.iter().map(text).collect::<Vec<_>>().join(" ")
        ));
    }
    line(String::new());
    line("Header copies:".into());
    for c in r["header"]["copies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let current = c["name"] == r["header"]["current"];
        line(format!(
            "  {:<9} at {:>7}: {}, seqid {}{}",
            text(&c["name"]),
            text(&c["offset"]),
            if c["valid"] != Value::Bool(true) {
                format!("INVALID ({})", text(&c["error"]))
            } else if c["stale"] == Value::Bool(true) {
                "valid but stale".to_owned()
            } else {
                "valid".to_owned()
            },
            text(&c["seqid"]),
            if current { " (current)" } else { "" }
        ));
    }
    if let Some(u) = r["unsupported"].as_array().filter(|u| !u.is_empty()) {
        line(format!(
            "Unsupported by vaultdisk: {}",
            u.iter().map(text).collect::<Vec<_>>().join("; ")
        ));
    }
    line(String::new());
    line("Data segments:".into());
    for s in r["segments"].as_array().cloned().unwrap_or_default() {
        line(format!("  {}: {}", text(&s["id"]), text(&s["type"])));
        line(format!("\toffset: {} [bytes]", text(&s["offset"])));
        let len = if s["size"] == "dynamic" {
            "(whole device)".into()
        } else {
            format!("{} [bytes]", text(&s["size"]))
        };
        line(format!("\tlength: {len}"));
        line(format!("\tcipher: {}", text(&s["encryption"])));
        line(format!("\tsector: {} [bytes]", text(&s["sector_size"])));
    }
    line(String::new());
    line("Keyslots:".into());
    for k in r["keyslots"].as_array().cloned().unwrap_or_default() {
        line(format!("  {}: {}", text(&k["id"]), text(&k["type"])));
        if let Some(bits) = k["key_size"].as_u64() {
            line(format!("\tKey:        {} bits", bits * 8));
        }
        let prio = match k["priority"].as_u64() {
            Some(0) => "ignored",
            Some(2) => "preferred",
            _ => "normal",
        };
        line(format!("\tPriority:   {prio}"));
        line(format!("\tCipher:     {}", text(&k["area"]["encryption"])));
        if let Some(bits) = k["area"]["key_size"].as_u64() {
            line(format!("\tCipher key: {} bits", bits * 8));
        }
        let kdf = &k["kdf"];
        line(format!("\tPBKDF:      {}", text(&kdf["type"])));
        if kdf["type"] == "pbkdf2" {
            line(format!("\tHash:       {}", text(&kdf["hash"])));
            line(format!("\tIterations: {}", text(&kdf["iterations"])));
        } else {
            line(format!("\tTime cost:  {}", text(&kdf["time"])));
            line(format!("\tMemory:     {}", text(&kdf["memory"])));
            line(format!("\tThreads:    {}", text(&kdf["cpus"])));
        }
        line(format!("\tSalt:       {}", text(&kdf["salt"])));
        line(format!("\tAF stripes: {}", text(&k["af"]["stripes"])));
        line(format!("\tAF hash:    {}", text(&k["af"]["hash"])));
        line(format!(
            "\tArea offset:{} [bytes]",
            text(&k["area"]["offset"])
        ));
        line(format!(
            "\tArea length:{} [bytes]",
            text(&k["area"]["size"])
        ));
        line(format!("\tDigest ID:  {}", text(&k["digest"])));
        if !k["unusable"].is_null() {
            line(format!("\tUnusable:   {}", text(&k["unusable"])));
        }
    }
    line("Tokens:".into());
    for t in r["tokens"].as_array().cloned().unwrap_or_default() {
        line(format!("  {}: {}", text(&t["id"]), text(&t["type"])));
        line(format!(
            "\tKeyslots:   {}",
            t["keyslots"]
                .as_array()
                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ));
    }
    line("Digests:".into());
    for d in r["digests"].as_array().cloned().unwrap_or_default() {
        line(format!("  {}: {}", text(&d["id"]), text(&d["type"])));
        line(format!("\tHash:       {}", text(&d["hash"])));
        line(format!("\tIterations: {}", text(&d["iterations"])));
        line(format!("\tSalt:       {}", text(&d["salt"])));
        line(format!("\tDigest:     {}", text(&d["digest"])));
    }
    out
}
