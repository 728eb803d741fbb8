//! `vaultdisk vault enroll | list | rewrap | remove`: arguments and printing. Unlocking
//! through `vaultdisk-vault` tokens, credentials, endpoints, wrapping and rewrapping live in
//! the library (`crate::unlock::vault`).
use super::keys::{self, Backing};
use super::{KekArgs, VaultArgs, VaultEnrollArgs, VaultListArgs, VaultRemoveArgs, VaultRewrapArgs};
use crate::error::{Error, Result};
use crate::luks2::metadata::Metadata;
use crate::luks2::write;
use crate::token;
use crate::unlock::vault::{self as lib, Enrolment};
use serde_json::{Value, json};

pub use crate::unlock::vault::{full_entropy_kdf, keyslot_passphrase};

/// Wraps a fresh secret for a new keyslot `keyslot` (`unlock::vault::enrol`).
pub fn enrol(v: &VaultArgs, args: &KekArgs, keyslot: u32) -> Result<Enrolment> {
    lib::enrol(&v.config(), &args.new_kek()?, keyslot)
}

pub fn enroll(args: &VaultEnrollArgs) -> Result<()> {
    if args.kek.transit_key.is_none() && args.kek.kv_path.is_none() {
        return Err(Error::Usage(
            "vault enroll needs --transit-key NAME or --kv-path PATH".into(),
        ));
    }
    let (dev, header) = keys::open_for_update(&args.backing)?;
    let name = dev.name();
    let id = keys::free_keyslot(&header, args.key_slot, &name)?;
    // The vault first: a vault problem should show before anyone types a passphrase.
    let enrolment = enrol(&args.key.vault, &args.kek, id)?;
    let (opened, vk, _) = keys::unlock_existing(&dev, &header, &args.key, None, true)?;
    let digest = keys::digest_id_of(&header, opened, &name)?;
    let pass = keyslot_passphrase(&enrolment.secret);
    let token = enrolment.token.encode();
    let (id, _) = keys::add_keyslot(
        &dev,
        &header,
        &vk,
        digest,
        pass.expose_secret(),
        full_entropy_kdf(),
        Some(id),
        Some(token),
    )?;
    println!(
        "enrolled keyslot {id} of {name}: {} {} at {} (key version {})",
        enrolment.token.mode(),
        enrolment.token.kek_location(),
        enrolment.token.addr,
        enrolment.token.kek_version()
    );
    Ok(())
}

fn token_rows(meta: &Metadata) -> Vec<Value> {
    token::vault_tokens(&meta.wire.tokens)
        .into_iter()
        .map(|(id, t)| match t {
            Ok(t) => json!({
                "token": id,
                "keyslots": t.keyslots,
                "kek": t.mode(),
                "vault_addr": t.addr,
                "vault_namespace": t.namespace,
                "location": t.kek_location(),
                "key_version": t.kek_version(),
                "error": null,
            }),
            Err(e) => json!({"token": id, "error": e.to_string()}),
        })
        .collect()
}

pub fn list(args: &VaultListArgs) -> Result<()> {
    let dev = Backing::open(&args.backing, false)?;
    let header = dev.luks2_header()?;
    crate::device::warn_damaged_copy(&header, &args.backing);
    let rows = token_rows(&header.metadata);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(rows)).unwrap_or_default()
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("{} has no vault tokens", dev.name());
        return Ok(());
    }
    for r in rows {
        match r["error"].as_str() {
            Some(e) => println!("token {}: unusable: {e}", r["token"]),
            None => println!(
                "token {}: keyslot {} {} {} at {}{} key version {}",
                r["token"],
                r["keyslots"]
                    .as_array()
                    .map(|a| a.iter().map(Value::to_string).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                r["kek"].as_str().unwrap_or(""),
                r["location"].as_str().unwrap_or(""),
                r["vault_addr"].as_str().unwrap_or(""),
                r["vault_namespace"]
                    .as_str()
                    .map(|n| format!(" namespace {n}"))
                    .unwrap_or_default(),
                r["key_version"]
            ),
        }
    }
    Ok(())
}

pub fn rewrap(args: &VaultRewrapArgs) -> Result<()> {
    let (dev, header) = keys::open_for_update(&args.backing)?;
    let name = dev.name();
    let tokens = token::vault_tokens(&header.metadata.wire.tokens);
    if let Some(want) = args.token
        && !tokens.iter().any(|(id, _)| *id == want)
    {
        return Err(Error::Usage(format!("{name} has no vault token {want}")));
    }
    if tokens.is_empty() {
        return Err(Error::Usage(format!("{name} has no vault tokens")));
    }
    let mut new_wire = header.metadata.wire.clone();
    let mut changed = Vec::new();
    for (id, parsed) in tokens {
        if args.token.is_some_and(|w| w != id) {
            continue;
        }
        let t = parsed.map_err(|e| Error::Device(format!("{name}: token {id}: {e}")))?;
        let client = lib::connect_required(&args.vault.config(), Some(&t))?;
        match lib::rewrap_one(&client, &header.metadata, &dev, &name, &t)? {
            Some(new) => {
                changed.push(format!(
                    "token {id}: {} {} version {} -> {}",
                    t.mode(),
                    t.kek_location(),
                    t.kek_version(),
                    new.kek_version()
                ));
                new_wire.tokens.insert(id.to_string(), new.encode());
            }
            None => println!(
                "token {id}: {} {} is at the latest version {}",
                t.mode(),
                t.kek_location(),
                t.kek_version()
            ),
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    // One crash-safe header update: before it the old wraps are on disk, after it the new
    // ones, and both unwrap to the same secret.
    write::write_header(&dev, &header, new_wire, keys::random_salts()?)
        .map_err(|e| dev.write_error(e))?;
    for c in changed {
        println!("rewrapped {c}");
    }
    Ok(())
}

pub fn remove(args: &VaultRemoveArgs) -> Result<()> {
    let (dev, header) = keys::open_for_update(&args.backing)?;
    let name = dev.name();
    let t = token::vault_tokens(&header.metadata.wire.tokens)
        .into_iter()
        .find(|(id, _)| *id == args.token)
        .ok_or_else(|| Error::Usage(format!("{name} has no vault token {}", args.token)))?
        .1
        .map_err(|e| Error::Device(format!("{name}: token {}: {e}", args.token)))?;
    let slots = &t.keyslots;
    let remaining = header
        .metadata
        .wire
        .keyslots
        .keys()
        .filter(|k| !slots.iter().any(|s| s.to_string() == **k))
        .count();
    if remaining == 0 && !args.force {
        return Err(Error::Busy(format!(
            "token {} holds the only keyslot of {name}: --force to remove it and lose access",
            args.token
        )));
    }
    let mut current = header;
    for &k in slots {
        current = keys::remove_keyslot(&dev, &current, k)?;
    }
    println!(
        "removed vault token {} and keyslot {:?} from {name}",
        args.token, slots
    );
    Ok(())
}
