//! Command line: clap types and one file per verb. Only this module prints.
mod benchmark;
mod bitlocker;
mod close;
mod crypttab;
pub mod dump;
mod erase;
mod format;
mod header;
mod keys;
mod mount;
mod open;
mod output;
pub mod passphrase;
mod pbkdf;
mod resize;
mod scan;
pub mod size;
mod status;
mod toolbox;
mod vault;
mod verify;

use crate::error::{Error, Result};
use crate::unlock::vault::{NewKek, VaultConfig};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// The parsed command line: global flags and one verb.
#[derive(Debug, Parser)]
#[command(
    name = "vaultdisk",
    version,
    about = "LUKS2 encrypted disks served as a plaintext file through FUSE, without dm-crypt"
)]
pub struct Cli {
    /// Show info-level messages (which keyslot opened, header copies used).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Skip a keyslot whose KDF (from its header, measured against this machine) would take
    /// longer than SECONDS; 0 means no limit. Stops hostile headers from hanging an unlock.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60)]
    pub kdf_time_limit: u64,
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs, one per `vaultdisk` subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a LUKS2 volume in a sparse backing file.
    Format(FormatArgs),
    /// Unlock a volume and serve its plaintext as the regular file PLAIN.
    Open(OpenArgs),
    /// Unmount PLAIN and wait until its daemon has flushed and exited.
    Close(CloseArgs),
    /// Show the header: both copies, segments, keyslots, tokens, digests. No key material.
    Dump(DumpArgs),
    /// Unlock a volume and mount its filesystem on a directory (loop device, or fuse2fs without root).
    Mount(MountArgs),
    /// Unmount a `vaultdisk mount`, detach its loop device and close the volume.
    Umount(UmountArgs),
    /// List open volumes: backing, plain file, mount point, loop device, mode, keyslot, pid.
    Status(StatusArgs),
    /// Restore verification, read-only: header copies, which key opens which keyslot, and
    /// optionally a plaintext digest and e2fsck. Exit 6 when damage is found.
    Verify(VerifyArgs),
    /// Print the SHA-256 of the plaintext as `<sha256>  <backing>` (read-only).
    Digest(DigestArgs),
    /// Add a keyslot: unlock with an existing key, store the volume key under a new one.
    AddKey(AddKeyArgs),
    /// Remove a keyslot (the one KEY opens, or --key-slot N) and wipe its area.
    RemoveKey(RemoveKeyArgs),
    /// Replace a key: add the new keyslot, then remove the old one.
    ChangeKey(ChangeKeyArgs),
    /// Say which keyslot a key opens; changes nothing.
    TestKey(TestKeyArgs),
    /// Back up or restore the header area (both copies and the keyslots area).
    Header(HeaderArgs),
    /// Rewrite a damaged or stale header copy from the valid current one.
    Repair(RepairArgs),
    /// Add a random recovery key (printed once) in a new keyslot, marked by a
    /// `vaultdisk-recovery` token.
    AddRecoveryKey(AddRecoveryKeyArgs),
    /// Wipe every keyslot area and both header copies: the data is gone for good.
    Erase(EraseArgs),
    /// Grow (or with --force shrink) the plaintext size, offline.
    Resize(ResizeArgs),
    /// Keyslots unlocked through a key-encryption key in OpenBao / HashiCorp Vault.
    Vault(VaultCommandArgs),
    /// Memory-only cipher (aes-xts) and KDF figures, like `cryptsetup benchmark`.
    Benchmark(benchmark::BenchmarkArgs),
    /// What a disk image or device holds: VHD footer, partition table, and by signature what
    /// each partition (or the whole disk) contains. Read-only.
    Scan(ScanArgs),
    /// Internal: the background daemon started by `open` (spec and key arrive on stdin).
    #[command(name = "__daemon", hide = true)]
    Daemon,
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    Completions(CompletionsArgs),
    /// Internal: write the man pages (vaultdisk.8, vaultdisk-VERB.8) into DIR (scripts/install.sh).
    #[command(name = "__man", hide = true)]
    Man(ManArgs),
    /// Open, close or list the volumes of a crypttab(5) table (/etc/crypttab), as PLAIN files
    /// under the runtime directory (or mounted, with x-vaultdisk.mount=DIR).
    Crypttab(CrypttabArgs),
}

/// Arguments of `vaultdisk crypttab`.
#[derive(Debug, Args)]
pub struct CrypttabArgs {
    /// What to do with the table's volumes.
    #[command(subcommand)]
    pub action: CrypttabCommand,
}

/// The actions of `vaultdisk crypttab`.
#[derive(Debug, Subcommand)]
pub enum CrypttabCommand {
    /// Open the named volumes (default: every entry without noauto) as
    /// RUNTIME_DIR/mapper/NAME, or mount them (x-vaultdisk.mount=DIR). One already open is
    /// left as it is.
    Open(CrypttabNamesArgs),
    /// Close the named volumes (default: every open one of the table). One not open is left.
    Close(CrypttabNamesArgs),
    /// The table's entries: device (and what it resolves to), key, options, open or not.
    List(CrypttabListArgs),
}

/// Arguments of `vaultdisk crypttab open|close`.
#[derive(Debug, Args)]
pub struct CrypttabNamesArgs {
    /// Entry names (the first field of a line); none means all of them.
    pub names: Vec<String>,
    /// The table to read.
    #[arg(long, value_name = "PATH", default_value = crate::crypttab::DEFAULT_FILE)]
    pub file: PathBuf,
    /// Print the vaultdisk command each entry stands for instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `vaultdisk crypttab list`.
#[derive(Debug, Args)]
pub struct CrypttabListArgs {
    /// The table to read.
    #[arg(long, value_name = "PATH", default_value = crate::crypttab::DEFAULT_FILE)]
    pub file: PathBuf,
    /// Stable JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vaultdisk completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for; install the script where that shell looks (README).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of the hidden `vaultdisk __man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// An existing directory; pages already there are replaced.
    pub dir: PathBuf,
}

/// Where a passphrase or key comes from (cryptsetup's --key-file semantics).
#[derive(Debug, Args, Clone, Default)]
pub struct KeyArgs {
    /// Read the key from this file, bytes taken exactly; "-" reads all of stdin.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Read at most N bytes of the key file (cryptsetup --keyfile-size; fewer is an error).
    #[arg(long, value_name = "BYTES", requires = "key_file")]
    pub keyfile_size: Option<u64>,
    /// Skip N bytes at the start of the key file (cryptsetup --keyfile-offset).
    #[arg(long, value_name = "BYTES", requires = "key_file")]
    pub keyfile_offset: Option<u64>,
    /// The key is a recovery key (from `add-recovery-key`): read from the terminal, stdin or
    /// --key-file, spaces and dashes normalised.
    #[arg(long)]
    pub recovery_key: bool,
    /// Vault credentials, for unlocking through the header's vault tokens.
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// How to reach a vault and log in (Vault's own CLI conventions). Vault tokens in the header
/// are tried first whenever credentials are present.
#[derive(Debug, Args, Clone, Default)]
pub struct VaultArgs {
    /// Vault address (default: the one the token recorded, else VAULT_ADDR or BAO_ADDR).
    /// Repeat it (or give a comma list) for several addresses of one vault, tried in order
    /// before the token's and the environment's.
    #[arg(long, value_name = "URL")]
    pub vault_addr: Vec<String>,
    /// Namespace sent as X-Vault-Namespace (default: recorded, else VAULT_NAMESPACE).
    #[arg(long, value_name = "NS")]
    pub vault_namespace: Option<String>,
    /// PEM file of the CA that signed the vault's certificate (default: VAULT_CACERT).
    #[arg(long, value_name = "PEM")]
    pub vault_cacert: Option<PathBuf>,
    /// Read the vault token from this file (default: VAULT_TOKEN, BAO_TOKEN, ~/.vault-token).
    #[arg(long, value_name = "PATH")]
    pub vault_token_file: Option<PathBuf>,
    /// AppRole login: file holding the role_id (with --vault-secret-id-file).
    #[arg(long, value_name = "PATH", requires = "vault_secret_id_file")]
    pub vault_role_id_file: Option<PathBuf>,
    /// AppRole login: file holding the secret_id (with --vault-role-id-file).
    #[arg(long, value_name = "PATH", requires = "vault_role_id_file")]
    pub vault_secret_id_file: Option<PathBuf>,
    /// Mount of the AppRole auth method (default approle).
    #[arg(long, value_name = "MOUNT")]
    pub vault_approle_mount: Option<String>,
    /// The --vault-secret-id-file holds a response-wrapping token for the secret_id.
    #[arg(long, requires = "vault_secret_id_file")]
    pub vault_secret_id_wrapped: bool,
    /// JWT login: file holding the JWT (for Kubernetes auth: the service-account token file,
    /// with --vault-jwt-mount kubernetes), with --vault-jwt-role.
    #[arg(long, value_name = "PATH", requires = "vault_jwt_role")]
    pub vault_jwt_file: Option<PathBuf>,
    /// JWT login: the role (with --vault-jwt-file).
    #[arg(long, value_name = "ROLE", requires = "vault_jwt_file")]
    pub vault_jwt_role: Option<String>,
    /// Mount of the JWT auth method (default jwt; kubernetes for Kubernetes auth).
    #[arg(long, value_name = "MOUNT")]
    pub vault_jwt_mount: Option<String>,
    /// Log in with the TLS client certificate (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY) at auth/cert.
    #[arg(long)]
    pub vault_cert_auth: bool,
    /// Unlock only through vault tokens; never fall back to a passphrase.
    #[arg(long)]
    pub token_only: bool,
}

/// Which key-encryption key wraps a new vault keyslot's secret.
#[derive(Debug, Args, Clone, Default)]
pub struct KekArgs {
    /// Transit key that wraps the secret (the KEK never leaves the vault).
    #[arg(long, value_name = "NAME", conflicts_with = "kv_path")]
    pub transit_key: Option<String>,
    /// Mount of the transit engine.
    #[arg(long, value_name = "MOUNT", default_value = "transit")]
    pub transit_mount: String,
    /// KV v2 secret holding the KEK (base64 of 32 bytes); the secret is wrapped here with AES-256-GCM.
    #[arg(long, value_name = "PATH")]
    pub kv_path: Option<String>,
    /// Mount of the KV v2 engine.
    #[arg(long, value_name = "MOUNT", default_value = "secret")]
    pub kv_mount: String,
    /// Field of the KV secret that holds the KEK.
    #[arg(long, value_name = "NAME", default_value = "kek")]
    pub kv_field: String,
    /// Create the transit key, or a random KEK in the KV secret, if it does not exist.
    #[arg(long)]
    pub create: bool,
}

/// Arguments of `vaultdisk vault`.
#[derive(Debug, Args)]
pub struct VaultCommandArgs {
    /// The `vault` verb to run.
    #[command(subcommand)]
    pub action: VaultCommand,
}

/// The verbs under `vaultdisk vault`.
#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Add a keyslot whose random secret is wrapped by a vault KEK (authorised by an existing key).
    Enroll(VaultEnrollArgs),
    /// List the vault tokens: keyslots, KEK mode, address, key version.
    List(VaultListArgs),
    /// Re-wrap tokens to their KEK's latest version (after `transit/keys/<k>/rotate`).
    #[command(
        about = "Re-wrap tokens to their KEK's latest version (after transit/keys/<k>/rotate)"
    )]
    Rewrap(VaultRewrapArgs),
    /// Remove a vault token and its keyslot.
    Remove(VaultRemoveArgs),
}

/// Arguments of `vaultdisk vault enroll`.
#[derive(Debug, Args)]
pub struct VaultEnrollArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// The existing key (as for open) and the vault to use.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The KEK that wraps the new keyslot's secret.
    #[command(flatten)]
    pub kek: KekArgs,
    /// Put the vault keyslot in this keyslot (default: the lowest free one).
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`): the keyslot and token are added to FILE.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk vault list`.
#[derive(Debug, Args)]
pub struct VaultListArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// An array of objects for scripts.
    #[arg(long)]
    pub json: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) to read the tokens from.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk vault rewrap`.
#[derive(Debug, Args)]
pub struct VaultRewrapArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// Only this token (default: every vault token).
    #[arg(long, value_name = "N")]
    pub token: Option<u32>,
    /// The vault to rewrap through.
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Re-point the tokens to these vault addresses (comma list, tried in order; the first
    /// is the token's `vault_addr`), checked by unwrapping through them.
    #[arg(long, value_name = "URL[,URL]")]
    pub set_addr: Option<String>,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`): the tokens in FILE are rewrapped.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk vault remove`.
#[derive(Debug, Args)]
pub struct VaultRemoveArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// The vault token to remove, with its keyslot.
    #[arg(long, value_name = "N")]
    pub token: u32,
    /// Allow removing the last keyslot (all access to the data is lost).
    #[arg(long)]
    pub force: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) to remove the token from.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk format`.
#[derive(Debug, Args)]
pub struct FormatArgs {
    /// The backing file to create.
    pub backing: PathBuf,
    /// Plaintext size, with K/M/G/T suffixes (binary units). With --header: the data's size
    /// (default: all of BACKING, which must then exist).
    /// With --partition/--device-offset: the volume is made inside that window (default size:
    /// all of it after the 16 MiB header; "dynamic", so it grows with the partition).
    #[arg(long, value_name = "SIZE", required_unless_present_any = ["header", "partition", "device_offset"])]
    pub size: Option<String>,
    /// The passphrase of keyslot 0.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The KDF of keyslot 0.
    #[command(flatten)]
    pub pbkdf: PbkdfArgs,
    /// Encryption sector size: 512 or 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub sector_size: u32,
    /// Volume key size in bits: 256 (XTS-AES-128) or 512 (XTS-AES-256).
    #[arg(long, value_name = "BITS", default_value_t = 512)]
    pub key_size: u32,
    /// Header label (up to 47 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
    /// Volume UUID instead of a random one.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
    /// Overwrite an existing non-empty file.
    #[arg(long)]
    pub force: bool,
    /// Vault-only volume: keyslot 0 is unlocked through this KEK instead of a passphrase.
    #[command(flatten)]
    pub kek: KekArgs,
    /// With --transit-key/--kv-path: do not add (and print) a recovery key.
    #[arg(long)]
    pub no_recovery_key: bool,
    /// Formatting a block device: do not ask for confirmation (required when stdin is not a
    /// terminal).
    #[arg(long)]
    pub batch: bool,
    /// Use the raw volume key in this file instead of a random one (as cryptsetup luksFormat
    /// --volume-key-file); its length must match --key-size.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["transit_key", "kv_path"])]
    pub volume_key_file: Option<PathBuf>,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Create a detached header in FILE (grown to the 16 MiB header size if smaller; a larger
    /// file keeps its size); the data starts at byte 0 of BACKING, which is never written.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk open`.
#[derive(Debug, Args)]
pub struct OpenArgs {
    /// The LUKS2 or LUKS1 backing file.
    pub backing: PathBuf,
    /// The regular file that will hold the plaintext (created if missing).
    pub plain: PathBuf,
    /// The key that unlocks the volume.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Try only this keyslot.
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// Open the backing file read-only; writes to PLAIN fail with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Stay attached to the terminal until unmounted.
    #[arg(long)]
    pub foreground: bool,
    /// Let other users access PLAIN (needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Discards (--allow-discards, --persistent).
    #[command(flatten)]
    pub discard: DiscardArgs,
    /// The raw volume key in this file (as cryptsetup's --volume-key-file): checked against
    /// the header's digest and used directly, no keyslot opened. For BitLocker, the FVEK as
    /// `cryptsetup bitlkDump --dump-volume-key --volume-key-file` writes it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_file", "recovery_key", "token_only"])]
    pub volume_key_file: Option<PathBuf>,
    /// A detached header (LUKS2 or LUKS1, as `cryptsetup --header`): header and keyslots are
    /// read from FILE, the data is in BACKING from the segment's offset.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// BitLocker: a startup key, the `.BEK` file (or the base64 text of one, as a Key Vault
    /// secret holds it).
    #[arg(long, value_name = "FILE")]
    pub startup_key: Option<PathBuf>,
    /// Azure Disk Encryption key sources (--bek-volume, --keyvault-secret, --restore-config,
    /// the --kek-* unwrap options): each resolved key is tried as the passphrase.
    #[command(flatten)]
    pub key_chain: KeyChainArgs,
}

/// Arguments of `vaultdisk close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The plaintext file given to `open`.
    pub plain: PathBuf,
}

/// Arguments of `vaultdisk dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The backing file.
    pub backing: PathBuf,
    /// Stable JSON for scripts.
    #[arg(long)]
    pub json: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The key that unlocks the volume (with --dump-volume-key).
    #[command(flatten)]
    pub key: KeyArgs,
    /// Try only this keyslot (with --dump-volume-key).
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// Unlock and print the volume key in cryptsetup's luksDump (BitLocker: bitlkDump)
    /// --dump-volume-key layout ("MK dump:"). Anyone holding it can read the data without a passphrase: store it
    /// encrypted. Asks for YES on a terminal unless --batch.
    #[arg(long, conflicts_with = "json")]
    pub dump_volume_key: bool,
    /// With --dump-volume-key: write the raw key bytes to this new file (mode 0400) instead of
    /// printing them.
    #[arg(long, value_name = "FILE", requires = "dump_volume_key")]
    pub volume_key_file: Option<PathBuf>,
    /// With --dump-volume-key: do not ask for confirmation (required when stdin is not a
    /// terminal).
    #[arg(long, requires = "dump_volume_key")]
    pub batch: bool,
    /// A detached header (as `cryptsetup --header`) to show instead of BACKING's.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// The LUKS2 or LUKS1 backing file.
    pub backing: PathBuf,
    /// An existing directory to mount the filesystem on.
    pub mountpoint: PathBuf,
    /// The key that unlocks the volume.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Try only this keyslot.
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// Open the volume and mount its filesystem read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Filesystem type passed to mount -t.
    #[arg(long, value_name = "FS", default_value = "ext4")]
    pub fs_type: String,
    /// Make this filesystem first if the volume holds none (never over an existing one).
    #[arg(long, value_name = "FS")]
    pub mkfs: Option<String>,
    /// Where the volume lives in BACKING (a partition, a byte window).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Discards (--allow-discards, --persistent).
    #[command(flatten)]
    pub discard: DiscardArgs,
    /// The raw volume key in this file (as cryptsetup's --volume-key-file): checked against
    /// the header's digest and used directly, no keyslot opened. For BitLocker, the FVEK as
    /// `cryptsetup bitlkDump --dump-volume-key --volume-key-file` writes it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_file", "recovery_key", "token_only"])]
    pub volume_key_file: Option<PathBuf>,
    /// A detached header (LUKS2 or LUKS1, as `cryptsetup --header`): header and keyslots are
    /// read from FILE, the data is in BACKING from the segment's offset.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// BitLocker: a startup key, the `.BEK` file (or the base64 text of one, as a Key Vault
    /// secret holds it).
    #[arg(long, value_name = "FILE")]
    pub startup_key: Option<PathBuf>,
}

/// `--allow-discards` and `--persistent` of open and mount.
#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// Allow discards (TRIM) to punch holes in the backing; off by default: it shows which
    /// blocks are in use.
    ///
    /// fallocate PUNCH_HOLE/ZERO_RANGE on PLAIN, and so `fstrim` or `mount -o discard` on its
    /// filesystem, punch holes in the backing file (BLKDISCARD on a device) and give the space
    /// back. Off by default because this can have security implications: the holes show anyone
    /// who can read the backing which blocks are in use (the filesystem type, free space,
    /// usage patterns), as with cryptsetup's --allow-discards. Also on when the LUKS2 header
    /// holds the persistent "allow-discards" flag.
    #[arg(long)]
    pub allow_discards: bool,
    /// Store --allow-discards in the LUKS2 header, so later opens allow discards too.
    ///
    /// Writes config flags "allow-discards" through the crash-safe header update, as
    /// `cryptsetup open --allow-discards --persistent` does.
    #[arg(long, requires = "allow_discards")]
    pub persistent: bool,
}

impl DiscardArgs {
    /// Whether discards are allowed for the volume at `place` in `backing` (after it
    /// unlocked): --allow-discards (stored in the header first with --persistent), or the
    /// header's persistent flag.
    pub fn allowed(
        &self,
        backing: &std::path::Path,
        place: crate::device::Place,
        header: &crate::device::HeaderAt,
    ) -> Result<bool> {
        if self.persistent && crate::discard::persist_allow_discards(backing, place, header)? {
            log::info!("{}: allow-discards stored in the header", backing.display());
        }
        Ok(self.allow_discards || crate::discard::header_allows(backing, place, header)?)
    }
}

/// Arguments of `vaultdisk umount`.
#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The mount point given to `vaultdisk mount`.
    pub mountpoint: PathBuf,
}

/// Arguments of `vaultdisk status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An array of objects for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `vaultdisk verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The LUKS2 or LUKS1 backing file, or the first whole disk (a raw image, fixed VHD or
    /// block device with a partition table); opened read-only, never written.
    pub backing: PathBuf,
    /// More whole disks of the same machine, checked in one report (README "verify of whole
    /// disks"): partitions, detached headers found in /boot, filesystem checks, digests.
    #[arg(value_name = "DISK")]
    pub more_disks: Vec<PathBuf>,
    /// A key file to check (bytes taken exactly); may repeat. Without one, --digest and
    /// --fsck read a passphrase from stdin or the terminal.
    #[arg(long, value_name = "PATH")]
    pub key_file: Vec<PathBuf>,
    /// Try only this keyslot.
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// A detached header (LUKS2 or LUKS1) to read header and keyslots from; data stays in BACKING.
    /// With whole disks: may repeat, each matched to the partition it fits.
    #[arg(long, value_name = "FILE")]
    pub header: Vec<PathBuf>,
    /// Run `e2fsck -fn` on the plaintext (served read-only for the check).
    #[arg(long)]
    pub fsck: bool,
    /// SHA-256 of the whole plaintext.
    #[arg(long)]
    pub digest: bool,
    /// Compare the plaintext SHA-256 with this one (implies --digest). With whole disks:
    /// `[DISK:]N=HEX` for partition N (`whole` for a disk without a table); may repeat.
    #[arg(long, value_name = "HEX")]
    pub expect_digest: Vec<String>,
    /// Digest every sector as dm-crypt decrypts it, never-written ones too (vaultdisk serves
    /// those as zeros): equals `sha256sum /dev/mapper/NAME` of the source.
    #[arg(long)]
    pub dm_crypt_view: bool,
    /// Report digest progress as JSON lines on stderr (`{"event":"progress",...}`), for tooling.
    #[arg(long)]
    pub progress_json: bool,
    /// The findings as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also check every vault token (needs vault credentials): which keyslot each opens.
    #[arg(long)]
    pub vault: bool,
    /// The vault to check the tokens through (with --vault).
    #[command(flatten)]
    pub vault_args: VaultArgs,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// Check the raw volume key in this file (as cryptsetup's --volume-key-file) against the
    /// header's digest, and use it for --digest and --fsck (BitLocker: the FVEK in
    /// cryptsetup's bitlkDump layout).
    #[arg(long, value_name = "FILE")]
    pub volume_key_file: Option<PathBuf>,
    /// BitLocker: a startup key, the `.BEK` file (or the base64 text of one, as a Key Vault
    /// secret holds it).
    #[arg(long, value_name = "FILE")]
    pub startup_key: Option<PathBuf>,
    /// Azure Disk Encryption key sources (--bek-volume, --keyvault-secret, --restore-config,
    /// the --kek-* unwrap options): each resolved key is checked like a --key-file.
    #[command(flatten)]
    pub key_chain: KeyChainArgs,
}

/// Azure Disk Encryption key material (README "Azure Disk Encryption keys"): where BEKs
/// come from and which key-encryption key unwraps a wrapped one.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyChainArgs {
    /// A FAT "BEK VOLUME" image (or a disk image whose partition holds one): its
    /// `LinuxPassPhraseFileName[_C_L]` and *.BEK files are keys; read without mounting. May repeat.
    #[arg(long, value_name = "IMAGE")]
    pub bek_volume: Vec<PathBuf>,
    /// The JSON of `az keyvault secret show` (contentType BEK, or Wrapped BEK with a --kek-*
    /// option). May repeat.
    #[arg(long, value_name = "FILE")]
    pub keyvault_secret: Vec<PathBuf>,
    /// Fetch this Key Vault secret (https://VAULT/secrets/NAME/VERSION) with an Azure token.
    /// May repeat.
    #[arg(long, value_name = "URL")]
    pub keyvault_secret_url: Vec<String>,
    /// The encryption config JSON of an Azure Backup "restore disks" job
    /// (OsDiskKeyAndSecretDetails.SecretData). May repeat.
    #[arg(long, value_name = "FILE")]
    pub restore_config: Vec<PathBuf>,
    /// Unwrap wrapped BEKs with this local PEM RSA private key (the KEK), as the secret's
    /// algorithm tag says (RSA-OAEP = SHA-1, RSA-OAEP-256).
    #[arg(long, value_name = "PEM", conflicts_with_all = ["kek_transit", "kek_keyvault"])]
    pub kek_pem: Option<PathBuf>,
    /// Unwrap wrapped BEKs with this OpenBao/Vault transit RSA key (RSA-OAEP-256 only; the
    /// --vault-* options and VAULT_* variables say where and how to log in).
    #[arg(long, value_name = "KEY", conflicts_with = "kek_keyvault")]
    pub kek_transit: Option<String>,
    /// Mount of the transit engine holding --kek-transit.
    #[arg(
        long,
        value_name = "MOUNT",
        default_value = "transit",
        requires = "kek_transit"
    )]
    pub kek_transit_mount: String,
    /// Version of the --kek-transit key that wrapped the BEKs (the N of `vault:vN:`).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "kek_transit")]
    pub kek_transit_version: u32,
    /// Unwrap wrapped BEKs through Azure Key Vault's unwrapkey, on the KEK URL of the
    /// secret's tags (DiskEncryptionKeyEncryptionKeyURL).
    #[arg(long)]
    pub kek_keyvault: bool,
    /// Allow the RSA1_5 (PKCS#1 v1.5) KEK algorithm; without it such a secret is refused.
    #[arg(long = "rsa1-5")]
    pub rsa1_5: bool,
    /// PEM bundle of the CAs to trust for Azure endpoints (a private endpoint's CA) instead
    /// of the built-in roots.
    #[arg(long, value_name = "PEM")]
    pub keyvault_cacert: Option<PathBuf>,
    /// A host (HOST or HOST:PORT) besides Azure's Key Vault domains that may receive a Key
    /// Vault token. May repeat.
    #[arg(long, value_name = "HOST")]
    pub keyvault_allow_host: Vec<String>,
    /// Log in to Azure with the managed identity (IDENTITY_ENDPOINT/IDENTITY_HEADER, else the
    /// VM's IMDS) instead of AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET.
    #[arg(long)]
    pub azure_managed_identity: bool,
    /// Read the Azure client secret from this file instead of AZURE_CLIENT_SECRET.
    #[arg(long, value_name = "PATH")]
    pub azure_client_secret_file: Option<PathBuf>,
}

impl KeyChainArgs {
    /// Whether a source beyond key files is given (then key files join the key chain).
    pub fn has_sources(&self) -> bool {
        !(self.bek_volume.is_empty()
            && self.keyvault_secret.is_empty()
            && self.keyvault_secret_url.is_empty()
            && self.restore_config.is_empty())
    }

    /// The key chain of these options with `key_files` (--key-file) first. A --kek-transit
    /// KEK uses the default vault settings; see `KeyChain::with_vault`.
    pub fn key_chain(&self, key_files: &[PathBuf]) -> crate::keychain::KeyChain {
        use crate::keychain::{AzureConfig, KekSource, KeyChain};
        let kek = if let Some(p) = &self.kek_pem {
            KekSource::Pem(p.clone())
        } else if let Some(k) = &self.kek_transit {
            KekSource::Transit {
                mount: self.kek_transit_mount.clone(),
                key: k.clone(),
                version: self.kek_transit_version,
                vault: Box::default(),
            }
        } else if self.kek_keyvault {
            KekSource::KeyVault
        } else {
            KekSource::None
        };
        KeyChain {
            key_files: key_files.to_vec(),
            bek_volumes: self.bek_volume.clone(),
            keyvault_secrets: self.keyvault_secret.clone(),
            keyvault_secret_urls: self.keyvault_secret_url.clone(),
            restore_configs: self.restore_config.clone(),
            kek,
            rsa1_5: self.rsa1_5,
            azure: AzureConfig {
                ca_cert: self.keyvault_cacert.clone(),
                allow_hosts: self.keyvault_allow_host.clone(),
                managed_identity: self.azure_managed_identity,
                client_secret_file: self.azure_client_secret_file.clone(),
            },
        }
    }
}

/// Arguments of `vaultdisk digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// The LUKS2 or LUKS1 backing file (opened read-only).
    pub backing: PathBuf,
    /// The key that unlocks the volume.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Try only this keyslot.
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// A detached header to read header and keyslots from.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// Digest every sector as dm-crypt decrypts it, never-written ones too (vaultdisk serves
    /// those as zeros): equals `sha256sum /dev/mapper/NAME` of the source.
    #[arg(long)]
    pub dm_crypt_view: bool,
    /// Report digest progress as JSON lines on stderr (`{"event":"progress",...}`), for tooling.
    #[arg(long)]
    pub progress_json: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// The raw volume key in this file (as cryptsetup's --volume-key-file): checked against
    /// the header's digest and used directly, no keyslot opened. For BitLocker, the FVEK as
    /// `cryptsetup bitlkDump --dump-volume-key --volume-key-file` writes it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_file", "recovery_key", "token_only"])]
    pub volume_key_file: Option<PathBuf>,
    /// BitLocker: a startup key, the `.BEK` file (or the base64 text of one, as a Key Vault
    /// secret holds it).
    #[arg(long, value_name = "FILE")]
    pub startup_key: Option<PathBuf>,
}

/// Keyslot KDF options, as for `format` (cryptsetup's --pbkdf-* flags).
#[derive(Debug, Args)]
pub struct PbkdfArgs {
    /// Keyslot KDF: argon2id (default), argon2i or pbkdf2.
    #[arg(long, value_name = "KDF", default_value = "argon2id")]
    pub pbkdf: String,
    /// Target unlock time in milliseconds for the KDF benchmark.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub iter_time: u32,
    /// Argon2 memory ceiling in KiB (default 1048576, at most half of free RAM).
    #[arg(long, value_name = "KIB")]
    pub pbkdf_memory: Option<u32>,
    /// Argon2 threads (default min(4, CPUs)).
    #[arg(long, value_name = "N")]
    pub pbkdf_parallel: Option<u32>,
    /// Skip the benchmark: argon2 time cost or pbkdf2 iterations.
    #[arg(long, value_name = "N")]
    pub pbkdf_force_iterations: Option<u32>,
}

/// Arguments of `vaultdisk add-key`.
#[derive(Debug, Args)]
pub struct AddKeyArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// The existing key (as for open).
    #[command(flatten)]
    pub key: KeyArgs,
    /// The new key, bytes taken exactly; "-" reads stdin. Default: prompt twice on the tty.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: Option<PathBuf>,
    /// Put the new key in this keyslot (default: the lowest free one).
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// The KDF of the new keyslot.
    #[command(flatten)]
    pub pbkdf: PbkdfArgs,
    /// The raw volume key in this file instead of an existing key (as cryptsetup luksAddKey
    /// --volume-key-file): checked against the header's digest; the new keyslot stores it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["key_file", "recovery_key", "token_only"])]
    pub volume_key_file: Option<PathBuf>,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`): the new keyslot is written to FILE.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk remove-key`.
#[derive(Debug, Args)]
pub struct RemoveKeyArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// Remove the keyslot this key opens.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Remove this keyslot instead (no key needed).
    #[arg(long, value_name = "N", conflicts_with = "key_file")]
    pub key_slot: Option<u32>,
    /// Allow removing the last keyslot (all access to the data is lost).
    #[arg(long)]
    pub force: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`): the keyslot is removed from FILE.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk change-key`.
#[derive(Debug, Args)]
pub struct ChangeKeyArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// The old key.
    #[command(flatten)]
    pub key: KeyArgs,
    /// The new key, bytes taken exactly; "-" reads stdin. Default: prompt twice on the tty.
    #[arg(long, value_name = "PATH")]
    pub new_key_file: Option<PathBuf>,
    /// Only try the old key on this keyslot.
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// The KDF of the new keyslot.
    #[command(flatten)]
    pub pbkdf: PbkdfArgs,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`): the keyslot in FILE is replaced.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk test-key`.
#[derive(Debug, Args)]
pub struct TestKeyArgs {
    /// The backing file (LUKS2 or LUKS1).
    pub backing: PathBuf,
    /// The key to test.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Try only this keyslot.
    #[arg(long, value_name = "N")]
    pub key_slot: Option<u32>,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (LUKS2 or LUKS1, as `cryptsetup --header`) holding the keyslots.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
    /// Azure Disk Encryption key sources (--bek-volume, --keyvault-secret, --restore-config,
    /// the --kek-* unwrap options): each resolved key is tested alone.
    #[command(flatten)]
    pub key_chain: KeyChainArgs,
    /// BitLocker: a startup key, the `.BEK` file (or the base64 text of one, as a Key Vault
    /// secret holds it).
    #[arg(long, value_name = "FILE")]
    pub startup_key: Option<PathBuf>,
}

/// Arguments of `vaultdisk header`.
#[derive(Debug, Args)]
pub struct HeaderArgs {
    /// The `header` verb to run.
    #[command(subcommand)]
    pub action: HeaderCommand,
}

/// The verbs under `vaultdisk header`.
#[derive(Debug, Subcommand)]
pub enum HeaderCommand {
    /// Save the header area to a new file (0600), like cryptsetup luksHeaderBackup.
    Backup(HeaderBackupArgs),
    /// Write a header backup back to BACKING, like cryptsetup luksHeaderRestore.
    Restore(HeaderRestoreArgs),
}

/// Arguments of `vaultdisk header backup`.
#[derive(Debug, Args)]
pub struct HeaderBackupArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// The backup file to create (must not exist).
    pub file: PathBuf,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) to back up.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk header restore`.
#[derive(Debug, Args)]
pub struct HeaderRestoreArgs {
    /// The backing file to write the header to.
    pub backing: PathBuf,
    /// A header backup (ours or cryptsetup's).
    pub file: PathBuf,
    /// Restore even if the backup belongs to another volume (different UUID or layout).
    #[arg(long)]
    pub force: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) to restore the backup into.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// Rewrite the primary copy even though its area holds another signature (LVM2, a
    /// filesystem, a partition table): what is there is destroyed.
    #[arg(long)]
    pub force: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) to repair.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk add-recovery-key`.
#[derive(Debug, Args)]
pub struct AddRecoveryKeyArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// An existing key (as for open).
    #[command(flatten)]
    pub key: KeyArgs,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`): the recovery keyslot is written to FILE.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The LUKS2 backing file.
    pub backing: PathBuf,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub batch: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) to erase; BACKING is not written.
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// Arguments of `vaultdisk resize`.
#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// The LUKS2 backing file (not open).
    pub backing: PathBuf,
    /// The new plaintext size, with K/M/G/T suffixes; a multiple of the sector size.
    #[arg(long, value_name = "SIZE")]
    pub size: String,
    /// Allow shrinking (the data past SIZE is lost).
    #[arg(long)]
    pub force: bool,
    /// Where in BACKING the volume lives (--partition, --device-offset/--device-size).
    #[command(flatten)]
    pub place: PlaceArgs,
    /// A detached header (as `cryptsetup --header`) whose data segment is resized (offline only).
    #[arg(long, value_name = "FILE")]
    pub header: Option<PathBuf>,
}

/// `vaultdisk scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// A whole-disk image (raw or fixed VHD), a partition image, or a block device.
    pub image: PathBuf,
    /// Stable JSON for scripts (README "scan").
    #[arg(long)]
    pub json: bool,
}

/// `--partition N` or `--device-offset BYTES [--device-size BYTES]`: where in BACKING the
/// volume lives (the whole file or device when neither is given).
#[derive(Debug, Clone, Copy, Default, Args)]
pub struct PlaceArgs {
    /// Use partition N of a whole-disk image or disk (GPT; MBR primaries 1-4, logical
    /// partitions from 5); nothing outside the partition is read or written.
    #[arg(long, value_name = "N", conflicts_with_all = ["device_offset", "device_size"])]
    pub partition: Option<u32>,
    /// The volume starts at byte BYTES of BACKING (as losetup --offset; not cryptsetup's
    /// --offset, which is the data offset inside a volume).
    #[arg(long, value_name = "BYTES")]
    pub device_offset: Option<u64>,
    /// The volume is BYTES long (as losetup --sizelimit; default: to the end of BACKING).
    #[arg(long, value_name = "BYTES")]
    pub device_size: Option<u64>,
}

impl PlaceArgs {
    /// The place these options name.
    pub fn place(&self) -> crate::device::Place {
        use crate::device::Place;
        match (self.partition, self.device_offset, self.device_size) {
            (Some(n), _, _) => Place::Partition(n),
            (None, None, None) => Place::Whole,
            (None, offset, size) => Place::Range {
                offset: offset.unwrap_or(0),
                size,
            },
        }
    }
}

/// Parses argv; clap's own --help/--version output is printed here and reported as Ok(None).
pub fn parse_args() -> Result<Option<Cli>> {
    match Cli::try_parse() {
        Ok(cli) => Ok(Some(cli)),
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                let _ = e.print();
                Ok(None)
            }
            clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Err(Error::Usage(
                "no command given (see --help for the list)".into(),
            )),
            _ => {
                // One line: clap's first paragraph (message plus the names it lists), without
                // its "error: " prefix, usage block and tips.
                let text = e.render().to_string();
                let first: Vec<&str> = text
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let line = first.join(" ");
                let line = line.strip_prefix("error: ").unwrap_or(&line);
                Err(Error::Usage(format!("{line} (see --help)")))
            }
        },
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<i32> {
    crate::crypto::kdf::budget::set_limit(
        (cli.kdf_time_limit > 0).then(|| std::time::Duration::from_secs(cli.kdf_time_limit)),
    );
    match cli.command {
        Command::Format(args) => format::run(&args).map(|()| 0),
        Command::Open(args) => open::run(&args).map(|()| 0),
        Command::Close(args) => close::run(&args).map(|()| 0),
        Command::Dump(args) => dump::run(&args).map(|()| 0),
        Command::Mount(args) => mount::run(&args).map(|()| 0),
        Command::Umount(args) => mount::run_umount(&args).map(|()| 0),
        Command::Status(args) => status::run(&args).map(|()| 0),
        Command::Verify(args) => verify::run(&args),
        Command::Digest(args) => verify::run_digest(&args).map(|()| 0),
        Command::AddKey(args) => keys::add_key(&args).map(|()| 0),
        Command::RemoveKey(args) => keys::remove_key(&args).map(|()| 0),
        Command::ChangeKey(args) => keys::change_key(&args).map(|()| 0),
        Command::TestKey(args) => keys::test_key(&args).map(|()| 0),
        Command::Header(HeaderArgs {
            action: HeaderCommand::Backup(args),
        }) => header::backup(&args).map(|()| 0),
        Command::Header(HeaderArgs {
            action: HeaderCommand::Restore(args),
        }) => header::restore(&args).map(|()| 0),
        Command::Repair(args) => keys::repair(&args).map(|()| 0),
        Command::AddRecoveryKey(args) => keys::add_recovery_key(&args).map(|()| 0),
        Command::Erase(args) => erase::run(&args).map(|()| 0),
        Command::Resize(args) => resize::run(&args).map(|()| 0),
        Command::Vault(VaultCommandArgs { action }) => match action {
            VaultCommand::Enroll(args) => vault::enroll(&args),
            VaultCommand::List(args) => vault::list(&args),
            VaultCommand::Rewrap(args) => vault::rewrap(&args),
            VaultCommand::Remove(args) => vault::remove(&args),
        }
        .map(|()| 0),
        Command::Benchmark(args) => benchmark::run(&args).map(|()| 0),
        Command::Scan(args) => scan::run(&args).map(|()| 0),
        Command::Daemon => Ok(crate::daemon::child_main()),
        Command::Completions(args) => toolbox::completions(&args).map(|()| 0),
        Command::Man(args) => toolbox::man(&args).map(|()| 0),
        Command::Crypttab(args) => crypttab::run(&args, cli.kdf_time_limit),
    }
}

impl VaultArgs {
    /// The library's vault configuration from the `--vault-*` flags.
    pub fn config(&self) -> VaultConfig {
        let v = self;
        VaultConfig {
            addr: (!v.vault_addr.is_empty()).then(|| v.vault_addr.join(",")),
            namespace: v.vault_namespace.clone(),
            ca_cert: v.vault_cacert.clone(),
            token_file: v.vault_token_file.clone(),
            approle: v
                .vault_role_id_file
                .clone()
                .zip(v.vault_secret_id_file.clone()),
            approle_mount: v.vault_approle_mount.clone(),
            secret_id_wrapped: v.vault_secret_id_wrapped,
            jwt: v.vault_jwt_file.clone().zip(v.vault_jwt_role.clone()),
            jwt_mount: v.vault_jwt_mount.clone(),
            cert_auth: v.vault_cert_auth,
        }
    }
}

impl KekArgs {
    /// The KEK a new vault keyslot is wrapped with, from `--transit-key`/`--kv-path` (exit 1
    /// without either).
    pub fn new_kek(&self) -> Result<NewKek> {
        let args = self;
        if let Some(key) = &args.transit_key {
            Ok(NewKek::Transit {
                mount: args.transit_mount.clone(),
                key: key.clone(),
                create: args.create,
            })
        } else if let Some(path) = &args.kv_path {
            Ok(NewKek::Kv {
                mount: args.kv_mount.clone(),
                path: path.clone(),
                field: args.kv_field.clone(),
                create: args.create,
            })
        } else {
            Err(Error::Usage(
                "give --transit-key NAME or --kv-path PATH".into(),
            ))
        }
    }
}
