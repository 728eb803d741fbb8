//! Bodies of the key-chain fuzz targets (`keychain_json`, `bek_volume`), shared with the corpus
//! replay test `keychain::fuzz_corpora_replay` (tests/it/keychain.rs). Each returns whether the
//! input was accepted; a reject must be an `Err`, never a panic, a hang or a large allocation.
#![allow(dead_code)] // each fuzz target uses one function
use vaultdisk::keychain::{bek_volume, restore_config, secret::SecretRecord};

/// Secret JSON (`az keyvault secret show`, a Key Vault SecretBundle) and the Azure Backup
/// restore config: both parsers over the same bytes.
pub fn keychain_json(data: &[u8]) -> bool {
    let secret = SecretRecord::parse(data, "fuzz.json").is_ok();
    let config = restore_config::parse(data, "fuzz.json").is_ok();
    secret || config
}

/// A FAT image as a BEK VOLUME: label and key files of its root.
pub fn bek_volume(data: &[u8]) -> bool {
    bek_volume::keys_in_fat_bytes(data).is_ok()
}
