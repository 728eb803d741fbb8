//! `vaultdisk open`: unlock a keyslot (`crate::unlock`) and serve the plaintext through FUSE.
use super::{OpenArgs, passphrase};
use crate::daemon::{self, ServeSpec};
use crate::device::HeaderAt;
use crate::error::Result;
use crate::safepath;
use crate::unlock;

pub fn run(args: &OpenArgs) -> Result<()> {
    if super::bitlocker::detected(&args.backing, args.place.place(), args.header.as_deref()) {
        return super::bitlocker::open(args);
    }
    if args.key_chain.has_sources() {
        return run_with_key_chain(args);
    }
    let unlocked = unlock::unlock(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
        &passphrase::unlock_key_or_volume_key(&args.key, args.volume_key_file.as_deref()),
        &args.key.vault.config(),
        args.key_slot,
        args.read_only,
        &passphrase::Terminal,
        &mut || {
            safepath::check_plain_target(&args.plain)?;
            daemon::ensure_backing_free_in(&args.backing, args.place.place(), args.read_only)
        },
    )?;
    serve(args, unlocked)
}

/// Serves an unlocked volume as PLAIN (the daemon), then tells systemd (NOTIFY_SOCKET).
fn serve(args: &OpenArgs, unlocked: unlock::Unlocked) -> Result<()> {
    let allow_discards = args.discard.allowed(
        &args.backing,
        args.place.place(),
        &HeaderAt::from_option(args.header.as_deref()),
    )?;
    daemon::start(
        ServeSpec {
            backing: args.backing.clone(),
            plain: args.plain.clone(),
            segment: unlocked.segment,
            read_only: args.read_only,
            foreground: args.foreground,
            allow_other: args.allow_other,
            unlocked_by: unlocked.unlocked_by.to_string(),
            grow_with_file: unlocked.grows_with_file,
            allow_discards,
            bitlocker: false,
        },
        unlocked.volume_key,
    )?;
    if !args.foreground {
        daemon::notify::ready_for_plain(&args.plain);
    }
    Ok(())
}

/// `open` with key-chain sources (--bek-volume, --keyvault-secret, ...): each resolved
/// candidate is tried in turn as the passphrase (--key-file joins them); the first that opens a
/// keyslot is served, and when none does the last refusal is the error.
fn run_with_key_chain(args: &OpenArgs) -> Result<()> {
    use crate::keychain::CandidatePrompt;
    let key_files: Vec<std::path::PathBuf> = args.key.key_file.iter().cloned().collect();
    let vault = args.key.vault.config();
    let chain = args.key_chain.key_chain(&key_files);
    let mut last = None;
    let mut unlocked = None;
    for c in crate::keychain::resolve(&chain.with_vault(vault.clone()))? {
        let prompt = CandidatePrompt::new(&c);
        let opened = unlock::unlock(
            &args.backing,
            args.place.place(),
            &HeaderAt::from_option(args.header.as_deref()),
            &CandidatePrompt::key(),
            &vault,
            args.key_slot,
            args.read_only,
            &prompt,
            &mut || {
                safepath::check_plain_target(&args.plain)?;
                daemon::ensure_backing_free_in(&args.backing, args.place.place(), args.read_only)
            },
        );
        match opened {
            Ok(u) => {
                log::info!("{}: opened with {}", args.backing.display(), c.label);
                unlocked = Some(u);
                break;
            }
            Err(e @ crate::error::Error::NoKey { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    let Some(unlocked) = unlocked else {
        return Err(last.unwrap_or_else(|| {
            crate::error::Error::Usage("the key chain gave no key to try".into())
        }));
    };
    serve(args, unlocked)
}
