//! The encryption config JSON an Azure Backup "restore disks" job writes beside the disks
//! (ade-facts §2.1): `OsDiskKeyAndSecretDetails.{SecretUrl, SecretData, KeyUrl, KeyBackupData,
//! KeyVaultSecretBackupData}`. `SecretData` is the secret's value: with a `KeyUrl` a wrapped BEK
//! (the algorithm is not recorded: RSA-OAEP, ADE's default, then RSA-OAEP-256 are tried),
//! without one a BEK. Other `*KeyAndSecretDetails` members (an object or an array of them) are
//! read the same way (their names for data disks are not verified). The `*BackupData` blobs
//! are Key Vault backups that only a Key Vault of the same geography can restore.
use super::secret::{self, ContentType, SecretRecord};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// Most sections read from one config (a VM has at most 64 data disks).
const MAX_SECTIONS: usize = 128;

/// The secrets of the config file at `path`: (section name, secret).
pub fn read(path: &Path) -> Result<Vec<(String, SecretRecord)>> {
    let raw = secret::read_json_file(path, "restore config")?;
    parse(raw.expose_secret(), &path.display().to_string())
}

/// The secrets of the config JSON `raw`, called `name` in messages.
pub fn parse(raw: &[u8], name: &str) -> Result<Vec<(String, SecretRecord)>> {
    let mut doc = secret::parse_json(raw, name, "an Azure Backup encryption config")?;
    let out = from_value(&mut doc, name);
    secret::wipe(&mut doc);
    out
}

fn from_value(doc: &mut Value, name: &str) -> Result<Vec<(String, SecretRecord)>> {
    let Some(obj) = doc.as_object_mut() else {
        return Err(Error::Usage(format!(
            "{name} is not an Azure Backup encryption config: the JSON is not an object"
        )));
    };
    let mut sections: Vec<(String, &mut Value)> = Vec::new();
    for (k, v) in obj.iter_mut() {
        if !k.ends_with("KeyAndSecretDetails") {
            continue;
        }
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    sections.push((format!("{k}[{i}]"), item));
                }
            }
            Value::Null => {}
            other => sections.push((k.clone(), other)),
        }
    }
    if sections.is_empty() {
        return Err(Error::Usage(format!(
            "{name} has no OsDiskKeyAndSecretDetails: not an Azure Backup encryption config"
        )));
    }
    if sections.len() > MAX_SECTIONS {
        return Err(Error::Usage(format!(
            "{name} has more than {MAX_SECTIONS} key sections: not an Azure Backup encryption config"
        )));
    }
    let mut out = Vec::new();
    let mut backup_only = Vec::new();
    for (section, v) in sections {
        if !v.is_object() {
            return Err(Error::Usage(format!("{name}: {section} is not an object")));
        }
        let Some(value) = secret::take_secret_string(v, "SecretData").filter(|s| !s.is_empty())
        else {
            if v.get("KeyVaultSecretBackupData").is_some() || v.get("KeyBackupData").is_some() {
                backup_only.push(section);
                continue;
            }
            return Err(Error::Usage(format!("{name}: {section} has no SecretData")));
        };
        if value.len() > secret::MAX_VALUE_CHARS {
            return Err(Error::Usage(format!(
                "{name}: {section}.SecretData is longer than 64 KiB: not a BEK"
            )));
        }
        let kek_url = secret::text_of(v, "KeyUrl");
        out.push((
            section,
            SecretRecord {
                content_type: if kek_url.is_some() {
                    ContentType::WrappedBek
                } else {
                    ContentType::Bek
                },
                value,
                kek_url,
                algorithm: None,
                file_name: None,
            },
        ));
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{name}: {} hold only Key Vault backup blobs, which only a Key Vault of the same Azure geography can restore: restore them there and give --keyvault-secret-url",
            backup_only.join(", ")
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_v(v: Value) -> Result<Vec<(String, SecretRecord)>> {
        parse(v.to_string().as_bytes(), "c.json")
    }

    #[test]
    fn os_and_data_sections() {
        let got = parse_v(json!({
            "OsDiskKeyAndSecretDetails": {
                "SecretUrl": "https://kv.vault.azure.net/secrets/s/1",
                "SecretData": "wrapped_-", "KeyUrl": "https://kv.vault.azure.net/keys/k/2",
                "KeyBackupData": "AAAA", "KeyVaultSecretBackupData": "BBBB"},
            "DataDiskKeyAndSecretDetails": [{"SecretData": "QUJD", "KeyUrl": null}],
            "Other": 1
        }))
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "OsDiskKeyAndSecretDetails");
        assert_eq!(got[0].1.content_type, ContentType::WrappedBek);
        assert_eq!(
            got[0].1.kek_url.as_deref(),
            Some("https://kv.vault.azure.net/keys/k/2")
        );
        assert_eq!(got[0].1.algorithm, None);
        assert_eq!(got[0].1.value.expose_secret(), b"wrapped_-");
        assert_eq!(got[1].0, "DataDiskKeyAndSecretDetails[0]");
        assert_eq!(got[1].1.content_type, ContentType::Bek);
    }

    #[test]
    fn bad_configs_are_one_line_usage_errors() {
        for (v, want) in [
            (json!({"x": 1}), "has no OsDiskKeyAndSecretDetails"),
            (json!([]), "not an object"),
            (json!({"OsDiskKeyAndSecretDetails": 5}), "is not an object"),
            (
                json!({"OsDiskKeyAndSecretDetails": {"SecretUrl": "u"}}),
                "has no SecretData",
            ),
            (
                json!({"OsDiskKeyAndSecretDetails": {"KeyVaultSecretBackupData": "b"}}),
                "backup blobs",
            ),
        ] {
            let e = parse_v(v.clone()).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{v}");
            assert!(e.to_string().contains(want), "{v}: {e}");
        }
        assert!(
            parse(b"{", "c.json")
                .unwrap_err()
                .to_string()
                .contains("is not an Azure Backup")
        );
    }
}
