//! `vaultdisk status`: the open volumes, their mounts and daemons.
use super::{StatusArgs, output};
use crate::error::{Error, Result};
use serde_json::{Value, json};

pub fn run(args: &StatusArgs) -> Result<()> {
    let mounts = crate::mount::records();
    let entries: Vec<Value> = crate::daemon::open_volumes()
        .into_iter()
        .map(|v| {
            let m = mounts.iter().map(|(_, r)| r).find(|r| r.plain == v.plain);
            json!({
                "backing": v.backing,
                "plain": v.plain,
                "mountpoint": m.map(|r| &r.mountpoint),
                "loop_device": m.and_then(|r| r.loop_device.as_ref()),
                "read_only": v.read_only,
                "unlocked_by": v.unlocked_by,
                "pid": v.pid,
            })
        })
        .collect();
    // Mounts whose entry the runtime directory lost and whose daemon this user cannot read:
    // listed, with what is unknown as null ("?" in the table).
    let unknown: Vec<Value> = crate::daemon::unidentified_mounts()
        .into_iter()
        .map(|m| {
            let r = mounts
                .iter()
                .map(|(_, r)| r)
                .find(|r| r.plain == m.mount_point);
            let ro = m
                .super_options
                .as_encoded_bytes()
                .split(|&b| b == b',')
                .any(|o| o == b"ro");
            json!({
                "backing": null,
                "plain": m.mount_point,
                "mountpoint": r.map(|r| &r.mountpoint),
                "loop_device": r.and_then(|r| r.loop_device.as_ref()),
                "read_only": ro,
                "unlocked_by": null,
                "pid": null,
            })
        })
        .collect();
    let any_unknown = !unknown.is_empty();
    let entries: Vec<Value> = entries.into_iter().chain(unknown).collect();
    let text = if args.json {
        serde_json::to_string_pretty(&entries).map_err(|e| Error::Device(e.to_string()))?
    } else if entries.is_empty() {
        "no open volumes".to_string()
    } else if any_unknown {
        format!(
            "{}\n? = unknown: the runtime directory ({}) lost the entry and its daemon cannot be read",
            table(&entries),
            crate::daemon::runtime_dir().display()
        )
    } else {
        table(&entries)
    };
    output::emit(&text)
}

const COLUMNS: [(&str, &str); 7] = [
    ("BACKING", "backing"),
    ("PLAIN", "plain"),
    ("MOUNTPOINT", "mountpoint"),
    ("LOOP", "loop_device"),
    ("MODE", "read_only"),
    ("UNLOCKED BY", "unlocked_by"),
    ("PID", "pid"),
];

fn cell(v: &Value, key: &str) -> String {
    match (key, &v[key]) {
        ("backing" | "unlocked_by" | "pid", Value::Null) => "?".to_string(),
        ("read_only", Value::Bool(ro)) => if *ro { "ro" } else { "rw" }.to_string(),
        (_, Value::Null) => "-".to_string(),
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

fn table(entries: &[Value]) -> String {
    let rows: Vec<Vec<String>> =
        std::iter::once(COLUMNS.iter().map(|(h, _)| h.to_string()).collect())
            .chain(
                entries
                    .iter()
                    .map(|e| COLUMNS.iter().map(|(_, k)| cell(e, k)).collect()),
            )
            .collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
