//! `vaultdisk vault enroll | list | rewrap | remove`: arguments and printing. Unlocking
//! through `vaultdisk-vault` tokens, credentials and wrapping live in `crate::unlock::vault`;
//! the keyslot and token changes in `crate::keys`.
use super::{VaultEnrollArgs, VaultListArgs, VaultRemoveArgs, VaultRewrapArgs, passphrase};
use crate::device::{self, Backing, HeaderAt};
use crate::error::{Error, Result};
use crate::keys;
use crate::luks2::metadata::Metadata;
use crate::token;
use crate::unlock;
use serde_json::{Value, json};

pub fn enroll(args: &VaultEnrollArgs) -> Result<()> {
    if args.kek.transit_key.is_none() && args.kek.kv_path.is_none() {
        return Err(Error::Usage(
            "vault enroll needs --transit-key NAME or --kv-path PATH".into(),
        ));
    }
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let name = dev.name();
    let id = keys::free_keyslot(&header, args.key_slot, &name)?;
    let config = args.key.vault.config();
    // The vault first: a vault problem should show before anyone types a passphrase.
    let enrolment = unlock::vault::enrol(&config, &args.kek.new_kek()?, id)?;
    let opened = unlock::unlock_luks2(
        &header.metadata,
        &dev,
        &passphrase::unlock_key(&args.key),
        &config,
        None,
        dev.path(),
        &passphrase::Terminal,
    )?;
    let (id, _) = keys::enroll_vault(
        &dev,
        &header,
        &opened.volume_key,
        opened.by.keyslot().ok_or_else(|| {
            Error::Usage("a vault keyslot is enrolled through an existing keyslot".into())
        })?,
        id,
        &enrolment,
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
                "vault_addrs": t.addrs(),
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
    let dev = match &args.header {
        Some(h) => Backing::open(h, false)?,
        None => Backing::open_in(&args.backing, args.place.place(), false)?,
    };
    let header = dev.luks2_header()?;
    device::warn_damaged_copy(&header, dev.path());
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
                r["vault_addrs"]
                    .as_array()
                    .map(|a| a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default(),
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
    let set_addrs = match &args.set_addr {
        Some(list) => {
            let addrs = crate::vault::split_addrs(list);
            if addrs.is_empty() || addrs.len() > crate::token::MAX_ADDRS {
                return Err(Error::Usage(format!(
                    "--set-addr needs 1 to {} vault addresses, separated by commas",
                    crate::token::MAX_ADDRS
                )));
            }
            Some(addrs)
        }
        None => None,
    };
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let done = keys::rewrap_vault_tokens_to(
        &dev,
        &header,
        &args.vault.config(),
        args.token,
        set_addrs.as_deref(),
    )?;
    for r in &done {
        if let Some(new) = &r.new
            && new.addrs() != r.old.addrs()
        {
            println!(
                "token {}: vault address {} -> {}",
                r.token,
                r.old.addrs().join(","),
                new.addrs().join(",")
            );
        }
    }
    for r in done.iter().filter(|r| {
        r.new
            .as_ref()
            .is_none_or(|n| n.kek_version() == r.old.kek_version())
    }) {
        println!(
            "token {}: {} {} is at the latest version {}",
            r.token,
            r.old.mode(),
            r.old.kek_location(),
            r.old.kek_version()
        );
    }
    for r in &done {
        if let Some(new) = &r.new
            && new.kek_version() != r.old.kek_version()
        {
            println!(
                "rewrapped token {}: {} {} version {} -> {}",
                r.token,
                r.old.mode(),
                r.old.kek_location(),
                r.old.kek_version(),
                new.kek_version()
            );
        }
    }
    Ok(())
}

pub fn remove(args: &VaultRemoveArgs) -> Result<()> {
    let (dev, header) = device::open_for_update_in(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    let slots = keys::remove_vault_token(&dev, &header, args.token, args.force)?;
    println!(
        "removed vault token {} and keyslot {:?} from {}",
        args.token,
        slots,
        dev.name()
    );
    Ok(())
}
