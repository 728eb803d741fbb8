//! The unlock order with a scripted [`Prompt`] (no terminal), on volumes cryptsetup makes in a
//! temporary directory, and a stand-in vault (one-shot HTTP answers on 127.0.0.1).
use super::*;
use crate::error::ErrorKind;
use crate::token::{Kek, VaultToken};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

const BOUND: &[u8] = b"bound pass";
const UNBOUND: &[u8] = b"unbound pass";
const SECRET: [u8; 32] = [0x42; 32];

/// Answers in order, and a record of what was asked.
struct Script {
    answers: RefCell<Vec<&'static [u8]>>,
    asked: RefCell<Vec<String>>,
    stdin: &'static [u8],
}

impl Script {
    fn new(answers: &[&'static [u8]]) -> Script {
        Script {
            answers: RefCell::new(answers.iter().rev().copied().collect()),
            asked: RefCell::new(Vec::new()),
            stdin: b"",
        }
    }
    fn asked(&self) -> usize {
        self.asked.borrow().len()
    }
}

impl Prompt for Script {
    fn passphrase(&self, what: &str, _confirm: bool) -> Result<Passphrase> {
        self.asked.borrow_mut().push(what.to_string());
        let a = self
            .answers
            .borrow_mut()
            .pop()
            .expect("an unexpected prompt");
        Ok(Passphrase::from_slice(a))
    }
    fn recovery_key(&self, what: &str) -> Result<Passphrase> {
        self.passphrase(what, false)
    }
    fn stdin(&self) -> Box<dyn std::io::Read + '_> {
        Box::new(self.stdin)
    }
}

fn have_cryptsetup() -> bool {
    let found = Command::new("cryptsetup").arg("--version").output().is_ok();
    if !found {
        eprintln!("SKIP: cryptsetup is not installed");
    }
    found
}

fn cryptsetup(args: &[&str]) {
    let out = Command::new("cryptsetup")
        .args(args)
        .output()
        .expect("cryptsetup");
    assert!(
        out.status.success(),
        "cryptsetup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CHEAP: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// LUKS2: keyslot 0 under BOUND, keyslot 1 under the vault secret's text with a
/// `vaultdisk-vault` token 0 (transit), keyslot 2 unbound (`luksAddKey --unbound`) under UNBOUND.
fn luks2_volume(dir: &Path) -> PathBuf {
    let img = dir.join("v.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(3 << 20))
        .expect("image");
    let key = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("key file");
        p.to_str().expect("utf-8 path").to_string()
    };
    let (bound, unbound) = (key("bound", BOUND), key("unbound", UNBOUND));
    let vault = key("vault", B64.encode(SECRET).as_bytes());
    let i = img.to_str().expect("utf-8 path");
    let mut format = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", &bound];
    format.extend_from_slice(&[
        "--luks2-metadata-size",
        "64k",
        "--luks2-keyslots-size",
        "1m",
    ]);
    format.extend_from_slice(&CHEAP);
    format.push(i);
    cryptsetup(&format);
    let mut add = vec!["luksAddKey", "-q", "--key-file", &bound];
    add.extend_from_slice(&CHEAP);
    add.extend_from_slice(&[i, &vault]);
    cryptsetup(&add);
    let mut add = vec!["luksAddKey", "-q", "--unbound", "-s", "512"];
    add.extend_from_slice(&CHEAP);
    add.extend_from_slice(&[i, &unbound]);
    cryptsetup(&add);
    let token = VaultToken {
        keyslots: vec![1],
        addr: "http://127.0.0.1:9".into(),
        more_addrs: Vec::new(),
        namespace: None,
        kek: Kek::Transit {
            mount: "transit".into(),
            key: "disk".into(),
            ciphertext: "vault:v1:AAAA".into(),
            key_version: 1,
        },
    };
    let json = key("token.json", token.encode().to_string().as_bytes());
    cryptsetup(&[
        "token",
        "import",
        "--json-file",
        &json,
        "--key-slot",
        "1",
        i,
    ]);
    img
}

/// A stand-in vault that answers `answers` requests with transit/decrypt's reply for SECRET.
fn fake_vault(answers: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(answers) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let reply = format!(r#"{{"data":{{"plaintext":"{}"}}}}"#, B64.encode(SECRET));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    addr
}

/// An address where nothing listens: connection refused at once.
fn dead_vault() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("listen");
    let addr = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    addr
}

fn vault_config(dir: &Path, addr: String) -> VaultConfig {
    let token = dir.join("vault-token");
    std::fs::write(&token, "s.test-token").expect("token file");
    VaultConfig {
        addr: Some(addr),
        token_file: Some(token),
        ..VaultConfig::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    img: PathBuf,
    file: std::fs::File,
    header: Box<crate::luks2::Header>,
    vault_dir: PathBuf,
}

fn fixture() -> Option<Fixture> {
    if !have_cryptsetup() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = luks2_volume(dir.path());
    let file = std::fs::File::open(&img).expect("open");
    let VolumeHeader::Luks2(header) = device::read_header(&file, &img).expect("header") else {
        panic!("not LUKS2");
    };
    Some(Fixture {
        vault_dir: dir.path().to_path_buf(),
        _dir: dir,
        img,
        file,
        header,
    })
}

impl Fixture {
    fn unlock(
        &self,
        source: KeySource,
        vault: &VaultConfig,
        key_slot: Option<u32>,
        prompt: &Script,
    ) -> Result<Opened> {
        unlock_luks2(
            &self.header.metadata,
            &self.file,
            &Key::new(source),
            vault,
            key_slot,
            &self.img,
            prompt,
        )
    }
}

#[test]
fn vault_tokens_first_then_the_passphrase() {
    let Some(f) = fixture() else { return };
    // A vault that unwraps: token 0 opens keyslot 1, nobody is asked.
    let script = Script::new(&[]);
    let live = vault_config(&f.vault_dir, fake_vault(1));
    let opened = f.unlock(KeySource::Terminal, &live, None, &script).unwrap();
    assert_eq!(
        opened.by,
        UnlockedBy::VaultToken {
            token: 0,
            keyslot: 1
        }
    );
    assert_eq!(opened.by.to_string(), "vault token 0 (keyslot 1)");
    assert_eq!(script.asked(), 0);
    let vk = opened.volume_key;

    // The vault fails: then the passphrase, asked once, opens keyslot 0 with the same key.
    let script = Script::new(&[BOUND]);
    let dead = vault_config(&f.vault_dir, dead_vault());
    let opened = f.unlock(KeySource::Terminal, &dead, None, &script).unwrap();
    assert_eq!(opened.by, UnlockedBy::Keyslot(0));
    assert_eq!(opened.by.to_string(), "keyslot 0");
    assert_eq!(script.asked(), 1);
    assert_eq!(opened.volume_key.expose_secret(), vk.expose_secret());

    // --key-slot 0: the token of keyslot 1 is not even tried (the live vault would answer).
    let script = Script::new(&[BOUND]);
    let live = vault_config(&f.vault_dir, fake_vault(1));
    let opened = f
        .unlock(KeySource::Terminal, &live, Some(0), &script)
        .unwrap();
    assert_eq!(opened.by, UnlockedBy::Keyslot(0));
}

#[test]
fn token_only_and_an_empty_pipe_never_fall_back() {
    let Some(f) = fixture() else { return };
    let dead = vault_config(&f.vault_dir, dead_vault());
    let script = Script::new(&[BOUND]);
    let e = f
        .unlock(KeySource::VaultOnly, &dead, None, &script)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault, "{e}");
    assert!(e.to_string().contains("(--token-only)"), "{e}");
    assert_eq!(script.asked(), 0);
    // --token-only with a vault that answers.
    let live = vault_config(&f.vault_dir, fake_vault(1));
    let opened = f
        .unlock(KeySource::VaultOnly, &live, None, &script)
        .unwrap();
    assert_eq!(opened.by.keyslot(), Some(1));

    // No passphrase on a piped stdin: the vault's failure is the error (exit 2).
    let e = f
        .unlock(KeySource::StdinLine, &dead, None, &script)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault, "{e}");
    assert!(e.to_string().ends_with("and no passphrase on stdin"), "{e}");
    // A piped passphrase still opens.
    let piped = Script {
        stdin: b"bound pass\nignored",
        ..Script::new(&[])
    };
    let opened = f.unlock(KeySource::StdinLine, &dead, None, &piped).unwrap();
    assert_eq!(opened.by, UnlockedBy::Keyslot(0));
}

#[test]
fn wrong_key_unbound_and_key_slot_errors() {
    let Some(f) = fixture() else { return };
    let dead = vault_config(&f.vault_dir, dead_vault());
    // A wrong passphrase: NoKey (exit 2), having tried the bound keyslots only.
    let script = Script::new(&[b"nope"]);
    let e = f
        .unlock(KeySource::Terminal, &dead, None, &script)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoKey, "{e}");
    assert!(e.to_string().ends_with("(tried 0, 1)"), "{e}");
    // The unbound keyslot's passphrase opens nothing: keyslot 2 is never a candidate.
    let script = Script::new(&[UNBOUND]);
    let e = f
        .unlock(KeySource::Terminal, &dead, None, &script)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoKey, "{e}");
    assert!(keyslot::is_bound(&f.header.metadata, 0));
    assert!(!keyslot::is_bound(&f.header.metadata, 2));
    // Naming it, or a keyslot not in use: exit 1 before anything is read.
    for (slot, says) in [(2, "is unbound"), (7, "is not in use")] {
        let script = Script::new(&[]);
        for e in [
            f.unlock(KeySource::Terminal, &dead, Some(slot), &script)
                .unwrap_err(),
            unlock_luks2_passphrase(
                &f.header.metadata,
                &f.file,
                &Key::new(KeySource::Terminal),
                Some(slot),
                &f.img,
                &script,
            )
            .unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::Usage, "{e}");
            assert_eq!(e.exit_code(), 1);
            assert!(e.to_string().contains(says), "{e}");
            assert!(
                e.to_string().starts_with(&format!("keyslot {slot} of ")),
                "{e}"
            );
        }
        assert_eq!(script.asked(), 0);
    }
}

/// LUKS1 `--key-slot`: out of 0..7 and disabled are both exit 1, through every entry point.
#[test]
fn luks1_key_slot_rules_match_luks2() {
    if !have_cryptsetup() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("l1.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(3 << 20))
        .expect("image");
    let key = dir.path().join("k");
    std::fs::write(&key, BOUND).expect("key");
    let (i, k) = (img.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    cryptsetup(&[
        "luksFormat",
        "-q",
        "--type",
        "luks1",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        k,
        i,
    ]);
    let file = std::fs::File::open(&img).expect("open");
    let header = device::read_header(&file, &img).expect("header");
    let try_slot = |slot: Option<u32>, answers: &[&'static [u8]]| {
        let script = Script::new(answers);
        let r = unlock_header(
            &header,
            &file,
            &Key::new(KeySource::Terminal),
            None,
            slot,
            &img,
            &script,
        );
        (r, script.asked())
    };
    for slot in [3, 8, 300] {
        let (r, asked) = try_slot(Some(slot), &[]);
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), 1, "--key-slot {slot}: {e}");
        assert!(e.to_string().contains("is not in use"), "{e}");
        assert_eq!(asked, 0);
    }
    let (r, _) = try_slot(Some(0), &[BOUND]);
    let opened = r.unwrap();
    assert_eq!(opened.by, UnlockedBy::Luks1Keyslot(0));
    assert_eq!(opened.by.to_string(), "LUKS1 keyslot 0");
    let (r, _) = try_slot(None, &[b"nope"]);
    assert_eq!(r.unwrap_err().kind(), ErrorKind::NoKey);
    // --token-only: LUKS1 has no tokens (exit 2), after the key-slot checks.
    let script = Script::new(&[]);
    let e = unlock_header(
        &header,
        &file,
        &Key::new(KeySource::VaultOnly),
        None,
        None,
        &img,
        &script,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Vault, "{e}");
}

/// `--volume-key-file`: checked against the data digest, used directly; no vault tried, no
/// prompt, no keyslot; wrong length or wrong key is exit 2, and it is no passphrase.
#[test]
fn a_volume_key_file_opens_without_keyslot_or_vault() {
    let Some(f) = fixture() else { return };
    let script = Script::new(&[BOUND]);
    let dead = vault_config(&f.vault_dir, dead_vault());
    let vk = f
        .unlock(KeySource::Terminal, &dead, Some(0), &script)
        .unwrap()
        .volume_key;
    let file = f.vault_dir.join("vk.bin");
    std::fs::write(&file, vk.expose_secret()).unwrap();
    let none = Script::new(&[]);
    // The dead vault would fail loudly if contacted; the prompt panics if asked.
    let opened = f
        .unlock(KeySource::VolumeKeyFile(file.clone()), &dead, None, &none)
        .unwrap();
    assert_eq!(opened.by, UnlockedBy::VolumeKey);
    assert_eq!(opened.by.keyslot(), None);
    assert_eq!(opened.by.to_string(), "volume key file");
    assert_eq!(opened.volume_key.expose_secret(), vk.expose_secret());
    let via_header = unlock_header(
        &VolumeHeader::Luks2(f.header.clone()),
        &f.file,
        &Key::new(KeySource::VolumeKeyFile(file.clone())),
        None,
        None,
        &f.img,
        &none,
    )
    .unwrap();
    assert_eq!(via_header.by, UnlockedBy::VolumeKey);

    let mut wrong = vk.expose_secret().to_vec();
    wrong[0] ^= 1;
    std::fs::write(&file, &wrong).unwrap();
    let e = f
        .unlock(KeySource::VolumeKeyFile(file.clone()), &dead, None, &none)
        .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("digest mismatch"), "{e}");
    std::fs::write(&file, &wrong[..16]).unwrap();
    let e = f
        .unlock(KeySource::VolumeKeyFile(file.clone()), &dead, None, &none)
        .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.to_string().contains("holds 16 bytes"), "{e}");
    let e = read_key(&Key::new(KeySource::VolumeKeyFile(file)), &none, "x", false).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert_eq!(none.asked(), 0);
}
