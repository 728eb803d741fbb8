//! `vaultdisk scan`: what a disk image or device holds — its VHD footer, its partition table
//! and, by signature, what each partition (or the whole disk) contains. Read-only.
//!
//! The JSON form (README "scan") is [`ScanReport`] serialized as it is; every key is always
//! present, `null` where it does not apply.
use super::partition::Partition;
use super::{Disk, DiskError, TableKind, VhdFooter};
use crate::luks2::ReadAt;
use crate::signature::{self, Content};
use serde::Serialize;
use std::fmt;

/// The partition table without its partitions (they are listed beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// "gpt" or "mbr".
    #[serde(rename = "type")]
    pub kind: TableKind,
    /// Logical sector size the table was read with.
    pub sector_size: u32,
    /// GPT disk GUID.
    pub disk_guid: Option<String>,
    /// MBR disk identifier.
    pub disk_id: Option<String>,
    /// GPT: "primary" or "backup", the header the partitions come from.
    pub header: Option<&'static str>,
}

/// One partition and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    /// Where it is and what the table says about it.
    #[serde(flatten)]
    pub partition: Partition,
    /// What its first bytes hold (null for an MBR extended partition).
    pub content: Option<Content>,
}

/// Everything `scan` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanReport {
    /// The image or device as given.
    pub path: String,
    /// Bytes of the file or device.
    pub size: u64,
    /// Bytes of the disk that partitions and volumes see (`size` less a VHD footer).
    pub disk_size: u64,
    /// The fixed VHD footer, if any.
    pub vhd: Option<VhdFooter>,
    /// The partition table, if any.
    pub table: Option<TableReport>,
    /// The partitions, in number order (empty without a table).
    pub partitions: Vec<PartitionReport>,
    /// What the whole disk holds when it has no partition table (null when it has one).
    pub content: Option<Content>,
    /// Damage that did not stop the scan (bad VHD checksum, a damaged GPT copy).
    pub warnings: Vec<String>,
}

/// Scans `disk` (opened as `path`): identifies each data partition, or the whole disk.
pub fn scan<D: ReadAt>(disk: &Disk<D>, path: &str) -> Result<ScanReport, DiskError> {
    let mut partitions = Vec::new();
    let mut content = None;
    let table = match disk.table() {
        Some(t) => {
            for p in &t.partitions {
                let content = if p.is_data() {
                    Some(signature::identify_device(&disk.partition(p.number)?)?)
                } else {
                    None
                };
                partitions.push(PartitionReport {
                    partition: p.clone(),
                    content,
                });
            }
            Some(TableReport {
                kind: t.kind,
                sector_size: t.sector_size,
                disk_guid: t.disk_guid.clone(),
                disk_id: t.disk_id.clone(),
                header: t.header,
            })
        }
        None => {
            content = Some(signature::identify_device(&disk.whole()?)?);
            None
        }
    };
    Ok(ScanReport {
        path: path.to_string(),
        size: disk.total_len(),
        disk_size: disk.len(),
        vhd: disk.vhd().cloned(),
        table,
        partitions,
        content,
        warnings: disk.warnings().to_vec(),
    })
}

impl fmt::Display for ScanReport {
    /// The text form: a summary line, the table line, one line per partition.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} bytes", self.path, self.size)?;
        if let Some(v) = &self.vhd {
            write!(
                f,
                ", fixed VHD (512-byte footer, checksum {}, creator {:?}, uuid {}), disk {} bytes",
                if v.checksum_ok { "ok" } else { "WRONG" },
                v.creator,
                v.uuid,
                self.disk_size
            )?;
        }
        writeln!(f)?;
        let Some(t) = &self.table else {
            let c = self.content.as_ref().map(|c| c.to_string());
            return writeln!(
                f,
                "no partition table; the disk holds: {}",
                c.as_deref().unwrap_or("none")
            );
        };
        match t.kind {
            TableKind::Gpt => writeln!(
                f,
                "GPT ({} header), {}-byte sectors, disk GUID {}",
                t.header.unwrap_or("primary"),
                t.sector_size,
                t.disk_guid.as_deref().unwrap_or("-")
            )?,
            TableKind::Mbr => writeln!(
                f,
                "MBR, {}-byte sectors, disk identifier {}",
                t.sector_size,
                t.disk_id.as_deref().unwrap_or("-")
            )?,
        }
        writeln!(
            f,
            "{:>3}  {:>14}  {:>14}  {:<28}  {:<16}  CONTENT",
            "#", "START", "SIZE", "TYPE", "NAME"
        )?;
        for r in &self.partitions {
            let p = &r.partition;
            let kind = match (p.type_name, p.role) {
                (Some(n), Some(_)) => format!("{n} ({})", p.type_id),
                (Some(n), None) => n.to_string(),
                (None, _) => p.type_id.clone(),
            };
            let name = match (&p.name, p.role) {
                (Some(n), _) if !n.is_empty() => format!("{n:?}"),
                (_, Some(role)) => format!("{role:?}").to_lowercase(),
                _ => "-".into(),
            };
            let content = match &r.content {
                Some(c) => c.to_string(),
                None => "(extended)".into(),
            };
            writeln!(
                f,
                "{:>3}  {:>14}  {:>14}  {:<28}  {:<16}  {}",
                p.number, p.start, p.size, kind, name, content
            )?;
            if let Some(guid) = &p.guid {
                writeln!(f, "{:>5}guid {guid}, type {}", "", p.type_id)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Mem;
    use super::*;

    #[test]
    fn report_json_and_text() {
        let mut d = vec![0u8; 4 << 20];
        super::super::partition::tests::make_gpt(&mut d, &[(2048, 4095, "data")]);
        let at = 2048 * 512;
        d[at..at + 6].copy_from_slice(b"LUKS\xba\xbe");
        d[at + 6..at + 8].copy_from_slice(&[0, 2]);
        d[at + 24..at + 27].copy_from_slice(b"lbl");
        d[at + 168..at + 172].copy_from_slice(b"abcd");
        let disk = Disk::from_device(Mem(d), 4 << 20, None).unwrap();
        let r = scan(&disk, "d.img").unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["table"]["type"], "gpt");
        assert_eq!(j["partitions"][0]["number"], 1);
        assert_eq!(j["partitions"][0]["start"], 1048576);
        assert_eq!(j["partitions"][0]["name"], "data");
        assert_eq!(j["partitions"][0]["content"]["type"], "luks2");
        assert_eq!(j["partitions"][0]["content"]["label"], "lbl");
        assert_eq!(j["partitions"][0]["content"]["uuid"], "abcd");
        assert!(j["content"].is_null() && j["vhd"].is_null());
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "path",
                "size",
                "disk_size",
                "vhd",
                "table",
                "partitions",
                "content",
                "warnings"
            ]
        );
        let text = r.to_string();
        assert!(text.contains("GPT (primary header)"), "{text}");
        assert!(text.contains("luks2 uuid=abcd label=\"lbl\""), "{text}");
        assert!(text.contains("Linux filesystem"), "{text}");

        let disk = Disk::from_device(Mem(vec![0u8; 1 << 20]), 1 << 20, None).unwrap();
        let r = scan(&disk, "z").unwrap();
        assert_eq!(r.content.as_ref().unwrap().kind, "none");
        assert!(
            r.to_string()
                .contains("no partition table; the disk holds: none")
        );
    }
}
