//! A [`Prompt`] that answers with one candidate key: lets a resolved candidate go through the
//! usual unlock path (`unlock::unlock`, `unlock::unlock_header`) as a `KeySource::Terminal`
//! passphrase, without a terminal and without the unlock code knowing about key chains.
use crate::error::{Error, Result};
use crate::secret::Passphrase;
use crate::unlock::key::{Key, KeySource, Prompt};
use std::io::Read;

/// Answers every passphrase question with the candidate's bytes; never reads stdin.
pub struct CandidatePrompt<'a> {
    bytes: &'a [u8],
}

impl<'a> CandidatePrompt<'a> {
    /// A prompt answering with `candidate`'s bytes.
    pub fn new(candidate: &'a super::CandidateKey) -> CandidatePrompt<'a> {
        CandidatePrompt {
            bytes: candidate.bytes.expose_secret(),
        }
    }

    /// The key to pass with this prompt: a passphrase "typed" by the prompt.
    pub fn key() -> Key {
        Key::new(KeySource::Terminal)
    }
}

impl Prompt for CandidatePrompt<'_> {
    fn passphrase(&self, _what: &str, confirm: bool) -> Result<Passphrase> {
        if confirm {
            return Err(Error::Usage(
                "a key-chain candidate is not a new passphrase".into(),
            ));
        }
        Ok(Passphrase::from_slice(self.bytes))
    }

    fn recovery_key(&self, _what: &str) -> Result<Passphrase> {
        Err(Error::Usage(
            "a key-chain candidate is not a recovery key".into(),
        ))
    }

    fn stdin(&self) -> Box<dyn Read + '_> {
        Box::new(std::io::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    #[test]
    fn answers_with_the_candidate_and_nothing_else() {
        let c = crate::keychain::CandidateKey {
            label: "x".into(),
            bytes: SecretBytes::from_slice(b"abc"),
        };
        let p = CandidatePrompt::new(&c);
        assert_eq!(p.passphrase("v", false).unwrap().expose_secret(), b"abc");
        assert!(p.passphrase("v", true).is_err());
        assert!(p.recovery_key("v").is_err());
        let mut s = Vec::new();
        p.stdin().read_to_end(&mut s).unwrap();
        assert!(s.is_empty());
        assert_eq!(CandidatePrompt::key().source, KeySource::Terminal);
        assert_eq!(format!("{c:?}"), "CandidateKey(x, <redacted>)");
    }
}
