//! The vault half of the keyslot lifecycle: enrol a keyslot whose passphrase a vault KEK
//! wraps (keyslot and `vaultdisk-vault` token in one header update), rewrap tokens to their
//! KEK's latest version (one header update for all), and remove a token with its keyslots.
use super::{NewKey, add_key, full_entropy_kdf, remove_keyslot};
use crate::device::{self, Backing};
use crate::error::{Error, Result};
use crate::luks2::Header;
use crate::luks2::edit;
use crate::luks2::write;
use crate::secret::VolumeKey;
use crate::token::{self, VaultToken};
use crate::unlock::vault::{self as vault, Enrolment, VaultConfig, keyslot_passphrase};
use std::collections::BTreeMap;

/// Adds keyslot `enrolment.token.keyslots[0]` holding `volume_key` (opened by keyslot
/// `unlocked`) under the enrolment's secret, with its vault token, in one header update.
/// Returns the keyslot id.
pub fn enroll_vault(
    dev: &Backing,
    header: &Header,
    volume_key: &VolumeKey,
    unlocked: u32,
    keyslot: u32,
    enrolment: &Enrolment,
) -> Result<(u32, Header)> {
    let pass = keyslot_passphrase(&enrolment.secret);
    let new = NewKey {
        passphrase: pass.expose_secret(),
        kdf: full_entropy_kdf(),
        keyslot: Some(keyslot),
        token: Some(enrolment.token.encode()),
    };
    add_key(dev, header, volume_key, unlocked, new)
}

/// What rewrapping did to one vault token.
#[derive(Debug)]
pub struct Rewrap {
    /// The token id.
    pub token: u32,
    /// The token as it was.
    pub old: VaultToken,
    /// The token wrapped to the KEK's latest version; None when it already was.
    pub new: Option<VaultToken>,
}

/// Rewraps every vault token of `header` (only token `only` when given) to its KEK's latest
/// version, each checked (the new wrap unwraps to the same secret, which opens the keyslot),
/// and writes all changed tokens in one crash-safe header update: before it the old wraps
/// are on disk, after it the new ones, and both unwrap to the same secret.
pub fn rewrap_vault_tokens(
    dev: &Backing,
    header: &Header,
    config: &VaultConfig,
    only: Option<u32>,
) -> Result<Vec<Rewrap>> {
    rewrap_vault_tokens_to(dev, header, config, only, None)
}

/// [`rewrap_vault_tokens`], and with `set_addrs` also re-points the tokens to those vault
/// addresses (in order; the first is `vault_addr`): everything goes through the new
/// addresses, so a token is only changed when they answer and unwrap its secret. A token at
/// the latest version is still rewritten when its addresses change.
pub fn rewrap_vault_tokens_to(
    dev: &Backing,
    header: &Header,
    config: &VaultConfig,
    only: Option<u32>,
    set_addrs: Option<&[String]>,
) -> Result<Vec<Rewrap>> {
    let name = dev.name();
    let tokens = token::vault_tokens(&header.metadata.wire.tokens);
    if let Some(want) = only
        && !tokens.iter().any(|(id, _)| *id == want)
    {
        return Err(Error::Usage(format!("{name} has no vault token {want}")));
    }
    if tokens.is_empty() {
        return Err(Error::Usage(format!("{name} has no vault tokens")));
    }
    let mut results = Vec::new();
    let mut changed = BTreeMap::new();
    for (id, parsed) in tokens {
        if only.is_some_and(|w| w != id) {
            continue;
        }
        let old = parsed.map_err(|e| Error::Device(format!("{name}: token {id}: {e}")))?;
        let client = match set_addrs {
            Some(addrs) => vault::connect_to(config, Some(&old), addrs)?,
            None => vault::connect_required(config, Some(&old))?,
        };
        // Rewrap must see the latest key version: through the active node when reachable.
        client.use_active_node();
        let mut new = vault::rewrap_one(&client, &header.metadata, dev, &name, &old)?;
        if let Some(addrs) = set_addrs
            && old.addrs() != addrs
        {
            let mut t = new.unwrap_or_else(|| old.clone());
            t.addr = addrs[0].clone();
            t.more_addrs = addrs[1..].to_vec();
            new = Some(t);
        }
        if let Some(t) = &new {
            changed.insert(id, t.encode());
        }
        results.push(Rewrap {
            token: id,
            old,
            new,
        });
    }
    if !changed.is_empty() {
        let after = edit::replace_tokens(&header.metadata, changed)
            .map_err(|e| Error::Device(format!("{name}: new metadata is invalid: {e}")))?;
        write::write_header(dev, header, after.wire, device::random_salts()?)
            .map_err(|e| dev.write_error(e))?;
    }
    Ok(results)
}

/// Removes vault token `token` and the keyslots it serves (a token left naming no keyslot
/// goes with its last one). Refuses (exit 5) to remove the volume's last keyslots unless
/// `allow_last`. Returns the removed keyslot ids.
pub fn remove_vault_token(
    dev: &Backing,
    header: &Header,
    token: u32,
    allow_last: bool,
) -> Result<Vec<u32>> {
    let name = dev.name();
    let t = token::vault_tokens(&header.metadata.wire.tokens)
        .into_iter()
        .find(|(id, _)| *id == token)
        .ok_or_else(|| Error::Usage(format!("{name} has no vault token {token}")))?
        .1
        .map_err(|e| Error::Device(format!("{name}: token {token}: {e}")))?;
    let remaining = header
        .metadata
        .keyslots
        .keys()
        .filter(|k| !t.keyslots.contains(k))
        .count();
    if remaining == 0 && !allow_last {
        return Err(Error::Busy(format!(
            "token {token} holds the only keyslot of {name}: --force to remove it and lose access"
        )));
    }
    let mut current = header.clone();
    for &k in &t.keyslots {
        current = remove_keyslot(dev, &current, k)?;
    }
    Ok(t.keyslots)
}
