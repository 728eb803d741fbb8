//! crypttab(5): the table cryptsetup and systemd read to open volumes at boot, read so that
//! `vaultdisk crypttab open NAME` opens the same volume as PLAIN (or mounts its filesystem).
//!
//! A line is `name device [keyfile [options]]`. The device is a path or `UUID=`, `PARTUUID=`,
//! `LABEL=`, `PARTLABEL=`; the key file `none`, `-` or empty means "ask". Options that change
//! what would be opened and that vaultdisk cannot honour (plain mode, key scripts, TPM2 …)
//! make that entry an error rather than being dropped; options without meaning here
//! (dm-crypt queue flags, systemd ordering) are accepted quietly; unknown ones are warnings.
use crate::device;
use crate::error::{Error, Result};
use crate::signature;
use std::path::{Path, PathBuf};

/// The default table.
pub const DEFAULT_FILE: &str = "/etc/crypttab";
/// The most lines read from one table, and the longest line: a table is a few lines, a
/// hostile one cannot make the parser hold more.
const MAX_LINES: usize = 4096;
const MAX_LINE_LEN: usize = 4096;

/// Where the volume is, as the second field names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A path to a block device or image file.
    Path(PathBuf),
    /// `UUID=`: the LUKS header's UUID.
    Uuid(String),
    /// `LABEL=`: the LUKS2 label.
    Label(String),
    /// `PARTUUID=`: a GPT partition's unique GUID.
    PartUuid(String),
    /// `PARTLABEL=`: a GPT partition's name.
    PartLabel(String),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::Uuid(u) => write!(f, "UUID={u}"),
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
            DeviceSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            DeviceSpec::PartLabel(l) => write!(f, "PARTLABEL={l}"),
        }
    }
}

/// The options vaultdisk honours (the rest are warnings or errors at parse time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `header=PATH`: a detached header.
    pub header: Option<PathBuf>,
    /// `discard`: allow discards.
    pub discard: bool,
    /// `keyfile-offset=N`.
    pub keyfile_offset: Option<u64>,
    /// `keyfile-size=N`.
    pub keyfile_size: Option<u64>,
    /// `key-slot=N` (systemd's name; `keyslot=` too).
    pub key_slot: Option<u32>,
    /// `tries=N`: passphrase attempts on a terminal; 0 means without limit (default 3).
    pub tries: u32,
    /// `readonly` / `read-only`.
    pub read_only: bool,
    /// `noauto`: not opened by `crypttab open` without names.
    pub noauto: bool,
    /// `nofail`: a failure to open is reported but does not fail the run.
    pub nofail: bool,
    /// `x-vaultdisk.mount=DIR`: mount the filesystem inside on DIR instead of serving PLAIN.
    pub mount: Option<PathBuf>,
    /// `x-vaultdisk.fstype=FS`: the filesystem type for `x-vaultdisk.mount` (default ext4).
    pub fs_type: Option<String>,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Line number in the file (from 1).
    pub line: usize,
    /// The volume's name (a file name: PLAIN is `<runtime dir>/mapper/<name>`).
    pub name: String,
    /// Where the volume is.
    pub device: DeviceSpec,
    /// The key file, or `None` to ask on the terminal.
    pub key_file: Option<PathBuf>,
    /// The options.
    pub options: Options,
    /// Why this entry cannot be opened by vaultdisk (an option it cannot honour), if so.
    pub unsupported: Option<String>,
}

/// A parsed table: its entries and what was odd about it, one sentence each.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// The entries in file order.
    pub entries: Vec<Entry>,
    /// Lines skipped and options ignored.
    pub warnings: Vec<String>,
}

impl Table {
    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Options that only tune dm-crypt or order systemd units: nothing to do here.
const WITHOUT_MEANING_HERE: &[&str] = &[
    "luks",
    "_netdev",
    "initramfs",
    "headless",
    "same-cpu-crypt",
    "submit-from-crypt-cpus",
    "no-read-workqueue",
    "no-write-workqueue",
    "high-priority",
    "x-initrd.attach",
    "verify",
    "force",
];
/// Option prefixes in the same class (`x-systemd.device-timeout=`, `timeout=` …).
const PREFIXES_WITHOUT_MEANING_HERE: &[&str] = &["x-systemd.", "timeout=", "password-echo="];
/// Options that would open something else than a LUKS volume with a passphrase or key file.
const CANNOT_HONOUR: &[&str] = &[
    "plain",
    "tcrypt",
    "tcrypt-hidden",
    "tcrypt-system",
    "tcrypt-veracrypt",
    "bitlk",
    "swap",
    "tmp",
    "keyscript",
    "cipher",
    "hash",
    "size",
    "sector-size",
    "offset",
    "skip",
    "integrity",
    "tpm2-device",
    "fido2-device",
    "pkcs11-uri",
    "token-timeout",
    "try-empty-password",
    "keyfile-erase",
];

/// Parses crypttab text; `source` names the file in messages. Malformed lines are warnings
/// (and absent from the entries), as systemd's generator skips them.
pub fn parse(text: &str, source: &str) -> Table {
    let mut table = Table::default();
    for (i, raw) in text.lines().enumerate().take(MAX_LINES) {
        let line_no = i + 1;
        if raw.len() > MAX_LINE_LEN {
            table
                .warnings
                .push(format!("{source}:{line_no}: line too long, skipped"));
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line, line_no, source, &mut table.warnings) {
            Ok(entry) => {
                if table.get(&entry.name).is_some() {
                    table.warnings.push(format!(
                        "{source}:{line_no}: a second entry named {:?}, skipped",
                        entry.name
                    ));
                } else {
                    table.entries.push(entry);
                }
            }
            Err(why) => table
                .warnings
                .push(format!("{source}:{line_no}: {why}, line skipped")),
        }
    }
    if text.lines().nth(MAX_LINES).is_some() {
        table.warnings.push(format!(
            "{source}: more than {MAX_LINES} lines, the rest ignored"
        ));
    }
    table
}

fn parse_line(
    line: &str,
    line_no: usize,
    source: &str,
    warnings: &mut Vec<String>,
) -> std::result::Result<Entry, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 2 {
        return Err("fewer than two fields (name and device)".into());
    }
    if fields.len() > 4 {
        return Err("more than four fields".into());
    }
    let name = unescape(fields[0]);
    check_name(&name)?;
    let device = device_spec(&unescape(fields[1]))?;
    let key_file = match fields.get(2).map(|k| unescape(k)) {
        None => None,
        Some(k) if k.is_empty() || k == "-" || k == "none" => None,
        Some(k) => Some(PathBuf::from(k)),
    };
    let mut options = Options {
        tries: 3,
        ..Options::default()
    };
    let mut unsupported = None;
    if let Some(opts) = fields.get(3) {
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            let opt = unescape(opt);
            match apply_option(&mut options, &opt) {
                Ok(Applied::Yes) => {}
                Ok(Applied::Unknown) => warnings.push(format!(
                    "{source}:{line_no}: unknown option {opt:?} ignored"
                )),
                Err(why) => {
                    unsupported.get_or_insert(why);
                }
            }
        }
    }
    if let Some(k) = &key_file
        && (k.starts_with("/dev/urandom") || k.starts_with("/dev/random"))
    {
        unsupported.get_or_insert_with(|| {
            "a random key (swap or tmp volume) is made by dm-crypt at boot; vaultdisk opens LUKS volumes only".into()
        });
    }
    Ok(Entry {
        line: line_no,
        name,
        device,
        key_file,
        options,
        unsupported,
    })
}

enum Applied {
    Yes,
    Unknown,
}

fn apply_option(o: &mut Options, opt: &str) -> std::result::Result<Applied, String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    fn need<'v>(key: &str, v: Option<&'v str>) -> std::result::Result<&'v str, String> {
        v.ok_or_else(|| format!("option {key}= needs a value"))
    }
    let number = |v: Option<&str>| -> std::result::Result<u64, String> {
        need(key, v)?
            .parse::<u64>()
            .map_err(|_| format!("option {key}= needs a number, not {:?}", v.unwrap_or("")))
    };
    match key {
        "header" => o.header = Some(PathBuf::from(need(key, value)?)),
        "discard" => o.discard = true,
        "keyfile-offset" => o.keyfile_offset = Some(number(value)?),
        "keyfile-size" => o.keyfile_size = Some(number(value)?),
        "key-slot" | "keyslot" => {
            let n = number(value)?;
            o.key_slot = Some(u32::try_from(n).map_err(|_| format!("key-slot={n} is too big"))?)
        }
        "tries" => {
            let n = number(value)?;
            o.tries = u32::try_from(n).map_err(|_| format!("tries={n} is too big"))?
        }
        "readonly" | "read-only" => o.read_only = true,
        "noauto" => o.noauto = true,
        "nofail" => o.nofail = true,
        "x-vaultdisk.mount" => o.mount = Some(PathBuf::from(need(key, value)?)),
        "x-vaultdisk.fstype" => o.fs_type = Some(need(key, value)?.to_string()),
        _ if CANNOT_HONOUR.contains(&key) => {
            return Err(format!("option {key:?} is not supported by vaultdisk"));
        }
        _ if WITHOUT_MEANING_HERE.contains(&key)
            || PREFIXES_WITHOUT_MEANING_HERE
                .iter()
                .any(|p| opt.starts_with(p)) => {}
        _ => return Ok(Applied::Unknown),
    }
    Ok(Applied::Yes)
}

/// fstab-style octal escapes (`\040` for a space), as systemd reads crypttab fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?} is not usable (letters, digits and -_.+:@ only)"
        ))
    }
}

fn device_spec(field: &str) -> std::result::Result<DeviceSpec, String> {
    let tagged = |prefix: &str| field.strip_prefix(prefix).map(str::to_string);
    let spec = if let Some(u) = tagged("UUID=") {
        DeviceSpec::Uuid(u)
    } else if let Some(l) = tagged("LABEL=") {
        DeviceSpec::Label(l)
    } else if let Some(u) = tagged("PARTUUID=") {
        DeviceSpec::PartUuid(u)
    } else if let Some(l) = tagged("PARTLABEL=") {
        DeviceSpec::PartLabel(l)
    } else if field.starts_with('/') {
        DeviceSpec::Path(PathBuf::from(field))
    } else {
        return Err(format!(
            "device {field:?} is neither an absolute path nor UUID=, LABEL=, PARTUUID=, PARTLABEL="
        ));
    };
    match &spec {
        DeviceSpec::Uuid(v)
        | DeviceSpec::Label(v)
        | DeviceSpec::PartUuid(v)
        | DeviceSpec::PartLabel(v)
            if v.is_empty() =>
        {
            Err(format!("device {field:?} has an empty value"))
        }
        _ => Ok(spec),
    }
}

/// A device resolved to a path, and the partition of it when the spec named one inside a
/// whole disk (`PARTUUID=` on a disk whose partitions have no device nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The block device or file.
    pub path: PathBuf,
    /// Partition number inside `path`, if any.
    pub partition: Option<u32>,
}

/// Finds the device a spec names: a path as is; a tag through `/dev/disk/by-*` when udev
/// made the links, else by reading the headers and partition tables of the block devices
/// in /sys/class/block (containers and this kind of host have no udev).
pub fn resolve(spec: &DeviceSpec) -> Result<Resolved> {
    let whole = |path: PathBuf| Resolved {
        path,
        partition: None,
    };
    let (dir, value) = match spec {
        DeviceSpec::Path(p) => return Ok(whole(p.clone())),
        DeviceSpec::Uuid(u) => ("by-uuid", u),
        DeviceSpec::Label(l) => ("by-label", l),
        DeviceSpec::PartUuid(u) => ("by-partuuid", u),
        DeviceSpec::PartLabel(l) => ("by-partlabel", l),
    };
    let link = Path::new("/dev/disk").join(dir).join(value);
    if !value.contains('/') && link.exists() {
        return Ok(whole(link));
    }
    for dev in block_devices() {
        if let Some(found) = matches(&dev, spec) {
            return Ok(found);
        }
    }
    Err(Error::Device(format!(
        "no device with {spec} (no /dev/disk/{dir} link, and no block device holds it)"
    )))
}

/// /dev/NAME for every block device the kernel lists, loop devices with no file skipped.
fn block_devices() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .is_some_and(|sectors| sectors > 0)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .filter(|p| p.exists())
        .collect();
    out.sort();
    out
}

fn matches(dev: &Path, spec: &DeviceSpec) -> Option<Resolved> {
    let file = device::open_backing(dev, false).ok()?;
    match spec {
        DeviceSpec::Uuid(want) | DeviceSpec::Label(want) => {
            let content = signature::identify_device(&file).ok()?;
            if !content.kind.starts_with("luks") {
                return None;
            }
            let have = match spec {
                DeviceSpec::Uuid(_) => content.uuid?,
                _ => content.label?,
            };
            let same = match spec {
                DeviceSpec::Uuid(_) => have.eq_ignore_ascii_case(want),
                _ => have == *want,
            };
            same.then(|| Resolved {
                path: dev.to_path_buf(),
                partition: None,
            })
        }
        DeviceSpec::PartUuid(want) | DeviceSpec::PartLabel(want) => {
            drop(file);
            let disk = crate::disk::Disk::open(dev).ok()?;
            let table = disk.table()?;
            let p = table.partitions.iter().find(|p| match spec {
                DeviceSpec::PartUuid(_) => p
                    .guid
                    .as_deref()
                    .is_some_and(|g| g.eq_ignore_ascii_case(want)),
                _ => p.name.as_deref() == Some(want.as_str()),
            })?;
            Some(Resolved {
                path: dev.to_path_buf(),
                partition: Some(p.number),
            })
        }
        DeviceSpec::Path(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_table() {
        let t = parse(
            "# comment\n\
             \n\
             root  UUID=0f3c-AB  none  luks,discard,tries=0\n\
             data\t/dev/sdb2\t/etc/keys/data.key\tkeyfile-offset=1024,keyfile-size=64,header=/boot/h,readonly,noauto,nofail,key-slot=2\n\
             home PARTUUID=11-22 - x-vaultdisk.mount=/mnt/my\\040home,x-vaultdisk.fstype=xfs\n",
            "t",
        );
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.entries.len(), 3);
        let root = t.get("root").unwrap();
        assert_eq!(root.device, DeviceSpec::Uuid("0f3c-AB".into()));
        assert_eq!(root.key_file, None);
        assert!(root.options.discard);
        assert_eq!(root.options.tries, 0);
        let data = t.get("data").unwrap();
        assert_eq!(data.line, 4);
        assert_eq!(
            data.key_file.as_deref(),
            Some(Path::new("/etc/keys/data.key"))
        );
        let o = &data.options;
        assert_eq!(
            (o.keyfile_offset, o.keyfile_size, o.key_slot, o.tries),
            (Some(1024), Some(64), Some(2), 3)
        );
        assert!(o.read_only && o.noauto && o.nofail);
        assert_eq!(o.header.as_deref(), Some(Path::new("/boot/h")));
        let home = t.get("home").unwrap();
        assert_eq!(
            home.options.mount.as_deref(),
            Some(Path::new("/mnt/my home"))
        );
        assert_eq!(home.options.fs_type.as_deref(), Some("xfs"));
        assert!(t.entries.iter().all(|e| e.unsupported.is_none()));
    }

    #[test]
    fn unknown_options_warn_and_unhonourable_ones_mark_the_entry() {
        let t = parse(
            "a /dev/a none luks,frobnicate,x-systemd.device-timeout=10s,same-cpu-crypt\n\
             b /dev/b none plain,cipher=aes\n\
             c /dev/c /dev/urandom swap\n\
             d /dev/d none keyscript=/lib/x\n",
            "ct",
        );
        assert_eq!(
            t.warnings,
            vec!["ct:1: unknown option \"frobnicate\" ignored".to_string()]
        );
        assert!(t.get("a").unwrap().unsupported.is_none());
        for n in ["b", "c", "d"] {
            assert!(t.get(n).unwrap().unsupported.is_some(), "{n}");
        }
        assert!(
            t.get("b")
                .unwrap()
                .unsupported
                .as_deref()
                .unwrap()
                .contains("plain")
        );
    }

    #[test]
    fn malformed_lines_are_skipped_with_a_warning() {
        let t = parse(
            "onlyname\n\
             x /dev/x none luks extra\n\
             ../evil /dev/x\n\
             y relative/path\n\
             z UUID=\n\
             n /dev/n none tries=many\n\
             ok /dev/ok\n\
             ok /dev/again\n",
            "f",
        );
        assert_eq!(t.entries.len(), 2, "{:?}", t.entries);
        assert_eq!(
            t.get("ok").unwrap().device,
            DeviceSpec::Path("/dev/ok".into())
        );
        // "n" parses (tries=many makes it unusable, not absent).
        assert!(
            t.get("n")
                .unwrap()
                .unsupported
                .as_deref()
                .unwrap()
                .contains("tries")
        );
        assert_eq!(t.warnings.len(), 6, "{:?}", t.warnings);
        assert!(t.warnings.iter().all(|w| w.starts_with("f:")));
        assert!(t.warnings[2].contains("\"../evil\""));
    }

    #[test]
    fn a_huge_table_is_capped() {
        let mut text = String::new();
        for i in 0..(MAX_LINES + 10) {
            text.push_str(&format!("v{i} /dev/x\n"));
        }
        text.push_str(&"#".repeat(MAX_LINE_LEN + 1));
        let t = parse(&text, "big");
        assert_eq!(t.entries.len(), MAX_LINES);
        assert!(t.warnings.last().unwrap().contains("rest ignored"));
    }

    #[test]
    fn a_path_resolves_to_itself() {
        let r = resolve(&DeviceSpec::Path("/x/y".into())).unwrap();
        assert_eq!(r.path, Path::new("/x/y"));
        assert_eq!(r.partition, None);
        let e = resolve(&DeviceSpec::Uuid("00000000-no-such".into())).unwrap_err();
        assert!(e.to_string().contains("UUID=00000000-no-such"), "{e}");
    }
}
