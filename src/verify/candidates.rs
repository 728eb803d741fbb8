//! The keys a disk walk tries on every encrypted partition. At merge, `crate::keychain`'s
//! `CandidateKey` (the same two fields) replaces [`CandidateKey`] here: `keychain::resolve`
//! gives the list the walk takes (`--key-file`, BEK volumes, Key Vault secrets, KEK unwrap).
use crate::secret::SecretBytes;

/// One key to try: where it came from (a report line names it) and its bytes, used verbatim
/// as a LUKS passphrase (a 172-character ADE BEK file is its own passphrase, never decoded).
#[derive(Debug)]
pub struct CandidateKey {
    /// Where the key came from: "key-file os.bek", "bek-volume bek.img:LinuxPassPhraseFileName".
    pub label: String,
    /// The key's bytes.
    pub bytes: SecretBytes,
}
