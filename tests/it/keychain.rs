//! Azure Disk Encryption key material (src/keychain/): every source turns the user's key
//! material into a passphrase that opens a volume made by cryptsetup with a BEK made the ADE
//! way (`head -c127 /dev/urandom | base64 -w0`, ade-facts §1.7): a BEK file, a FAT BEK VOLUME
//! (mkfs.vfat + mcopy, as an image and as a partition of a disk image), `az keyvault secret
//! show` JSON (BEK; Wrapped BEK by `openssl pkeyutl` with OAEP SHA-1, SHA-256 and PKCS#1), an
//! Azure Backup restore config, a transit RSA key in a real OpenBao dev server, and an Azure
//! Key Vault stand-in (tests/azure_kv/server.py, real RSA). Bad inputs: one line, the right
//! exit code, nothing written.
use crate::support::*;
#[path = "../../fuzz/keychain_harness.rs"]
mod keychain_harness;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A LUKS2 volume (cryptsetup) whose keyslot 0 is an ADE-style BEK.
struct Fixture {
    t: tempfile::TempDir,
    bek: PathBuf,
    vol: PathBuf,
}

fn sh(script: &str) -> Out {
    run("sh", &["-c", script], None)
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        if !require(test, &["cryptsetup", "openssl"]) {
            return None;
        }
        let t = temp();
        let bek = t.path().join("LinuxPassPhraseFileName");
        sh(&format!(
            "head -c127 /dev/urandom | base64 -w0 > '{}'",
            s(&bek)
        ))
        .ok();
        assert_eq!(std::fs::metadata(&bek).unwrap().len(), 172);
        let vol = t.path().join("vol.img");
        set_len(&vol, 20 * MIB);
        let mut args = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", s(&bek)];
        args.extend_from_slice(CHEAP_PBKDF2);
        args.push(s(&vol));
        sys("cryptsetup", &args).ok();
        Some(Fixture { t, bek, vol })
    }

    fn dir(&self) -> &Path {
        self.t.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    /// `verify VOL --json ARGS` with `env` (KEY=VALUE) and no Azure or vault variables.
    fn verify_env(&self, env: &[String], args: &[&str]) -> Out {
        let mut all: Vec<String> = [
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_AUTHORITY_HOST",
            "IDENTITY_ENDPOINT",
            "IDENTITY_HEADER",
            "VAULT_TOKEN",
            "BAO_TOKEN",
            "VAULT_ADDR",
            "BAO_ADDR",
        ]
        .iter()
        .flat_map(|v| ["-u".to_string(), v.to_string()])
        .collect();
        all.push(format!("HOME={}", s(self.dir())));
        all.extend(env.iter().cloned());
        all.extend([
            BIN.to_string(),
            "verify".into(),
            s(&self.vol).into(),
            "--json".into(),
        ]);
        all.extend(args.iter().map(|a| a.to_string()));
        run("env", &all, None)
    }

    fn verify(&self, args: &[&str]) -> Out {
        self.verify_env(&[], args)
    }

    /// An RSA-2048 KEK made by openssl.
    fn kek(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        sys("openssl", &["genrsa", "-out", s(&p), "2048"]).ok();
        p
    }

    /// The BEK wrapped by openssl with `padding` ("sha1", "sha256" OAEP, or "pkcs1"), as
    /// base64url without padding (Key Vault's wrapped value).
    fn wrap(&self, key: &Path, pubin: bool, padding: &str) -> String {
        let ct = self.path("ct.bin");
        let mut args = vec!["pkeyutl", "-encrypt"];
        if pubin {
            args.push("-pubin");
        }
        args.extend(["-inkey", s(key), "-in", s(&self.bek), "-out", s(&ct)]);
        let opts = match padding {
            "pkcs1" => vec!["rsa_padding_mode:pkcs1".to_string()],
            md => vec![
                "rsa_padding_mode:oaep".to_string(),
                format!("rsa_oaep_md:{md}"),
                format!("rsa_mgf1_md:{md}"),
            ],
        };
        for o in &opts {
            args.extend(["-pkeyopt", o.as_str()]);
        }
        sys("openssl", &args).ok();
        URL_SAFE_NO_PAD.encode(std::fs::read(&ct).unwrap())
    }

    /// A secret JSON as `az keyvault secret show` prints it.
    fn secret(&self, name: &str, content_type: &str, value: &str, tags: Value) -> PathBuf {
        let p = self.path(name);
        let v = json!({
            "attributes": {"enabled": true, "recoverableDays": 90, "recoveryLevel": "Recoverable"},
            "contentType": content_type,
            "id": format!("https://kv1.vault.azure.net/secrets/{}/0123abcd", name.trim_end_matches(".json")),
            "kid": null, "managed": null, "name": name, "tags": tags, "value": value,
        });
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        p
    }

    fn bek_value(&self) -> String {
        STANDARD.encode(std::fs::read(&self.bek).unwrap())
    }

    fn wrapped_secret(&self, name: &str, value: &str, alg: &str, kek_url: &str) -> PathBuf {
        self.secret(
            name,
            "Wrapped BEK",
            value,
            json!({"DiskEncryptionKeyEncryptionAlgorithm": alg,
                   "DiskEncryptionKeyEncryptionKeyURL": kek_url,
                   "DiskEncryptionKeyFileName": "LinuxPassPhraseFileName",
                   "MachineName": "vm1"}),
        )
    }
}

/// The (key label, keyslot) pairs of a verify --json report.
fn opened(out: &Out) -> Vec<(String, Option<u32>)> {
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    v["keyslots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_string(),
                k["keyslot"].as_u64().map(|n| n as u32),
            )
        })
        .collect()
}

/// Runs `f` (a failing command) and checks: exit `code`, one `vaultdisk:` line containing
/// `want`, and nothing in the fixture directory changed.
fn bad(f: &Fixture, code: i32, want: &str, run: impl FnOnce() -> Out) {
    let before = dir_snapshot(f.dir());
    let out = run().fails_with(code);
    one_error_line(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    assert!(
        out.stderr.contains(want),
        "want {want:?}: {}",
        out.describe()
    );
    assert!(
        !out.stderr
            .contains(&std::fs::read_to_string(&f.bek).unwrap()),
        "BEK in a message"
    );
    let after = dir_snapshot(f.dir());
    assert!(
        snapshot_diff(&before, &after).is_empty(),
        "files changed: {:?}",
        snapshot_diff(&before, &after)
    );
}

#[test]
fn bek_file_and_bek_secret_open_the_volume() {
    let Some(f) = Fixture::new("bek_file_and_bek_secret_open_the_volume") else {
        return;
    };
    let secret = f.secret(
        "s.json",
        "BEK",
        &f.bek_value(),
        json!({
        "DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP",
        "DiskEncryptionKeyFileName": "LinuxPassPhraseFileName", "MachineName": "vm1"}),
    );
    let other = f.path("other");
    std::fs::write(&other, b"not the key").unwrap();
    let out = f
        .verify(&["--keyvault-secret", s(&secret), "--key-file", s(&other)])
        .ok();
    assert_eq!(
        opened(&out),
        vec![
            (format!("key-file {}", s(&other)), None),
            (format!("keyvault-secret {} (BEK)", s(&secret)), Some(0)),
        ]
    );
    // The same key from two sources is tried once, under both names.
    let out = f
        .verify(&["--keyvault-secret", s(&secret), "--key-file", s(&f.bek)])
        .ok();
    assert_eq!(
        opened(&out),
        vec![(
            format!(
                "key-file {} = keyvault-secret {} (BEK)",
                s(&f.bek),
                s(&secret)
            ),
            Some(0)
        )]
    );
    // test-key takes the same sources and names the one that opened.
    let out = vd(&["test-key", s(&f.vol), "--keyvault-secret", s(&secret)]).ok();
    assert_eq!(
        out.stdout.trim(),
        format!(
            "keyslot 0 opens {} (keyvault-secret {} (BEK))",
            s(&f.vol),
            s(&secret)
        )
    );
    let wrong = f.secret("w.json", "BEK", &base64_of(b"not the key"), json!({}));
    vd(&["test-key", s(&f.vol), "--keyvault-secret", s(&wrong)]).fails_with(2);
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn wrapped_bek_unwraps_with_a_pem_kek_as_its_algorithm_tag_says() {
    let Some(f) = Fixture::new("wrapped_bek_unwraps_with_a_pem_kek_as_its_algorithm_tag_says")
    else {
        return;
    };
    let kek = f.kek("kek.pem");
    let url = "https://kv1.vault.azure.net/keys/kek/0011";
    let sha1 = f.wrapped_secret("sha1.json", &f.wrap(&kek, false, "sha1"), "RSA-OAEP", url);
    let sha256 = f.wrapped_secret(
        "sha256.json",
        &f.wrap(&kek, false, "sha256"),
        "RSA-OAEP-256",
        url,
    );
    let pkcs1 = f.wrapped_secret("pkcs1.json", &f.wrap(&kek, false, "pkcs1"), "RSA1_5", url);
    for secret in [&sha1, &sha256] {
        let out = f
            .verify(&["--keyvault-secret", s(secret), "--kek-pem", s(&kek)])
            .ok();
        assert_eq!(
            opened(&out),
            vec![(
                format!(
                    "keyvault-secret {} (Wrapped BEK, kek-pem {})",
                    s(secret),
                    s(&kek)
                ),
                Some(0)
            )]
        );
    }
    bad(&f, 1, "give --rsa1-5", || {
        f.verify(&["--keyvault-secret", s(&pkcs1), "--kek-pem", s(&kek)])
    });
    let out = f
        .verify(&[
            "--keyvault-secret",
            s(&pkcs1),
            "--kek-pem",
            s(&kek),
            "--rsa1-5",
        ])
        .ok();
    assert_eq!(opened(&out)[0].1, Some(0));
    // A restore config: SecretData + KeyUrl, the algorithm not recorded (RSA-OAEP, then -256).
    let config = f.path("vmencryption_config.json");
    let wrapped256 = f.wrap(&kek, false, "sha256");
    std::fs::write(
        &config,
        json!({"OsDiskKeyAndSecretDetails": {
            "SecretUrl": "https://kv1.vault.azure.net/secrets/B3284AAA/xx00", "SecretData": wrapped256,
            "KeyUrl": url, "KeyBackupData": "AAAA", "KeyVaultSecretBackupData": "BBBB"}})
        .to_string(),
    )
    .unwrap();
    let out = f
        .verify(&["--restore-config", s(&config), "--kek-pem", s(&kek)])
        .ok();
    assert_eq!(
        opened(&out),
        vec![(
            format!(
                "restore-config {}:OsDiskKeyAndSecretDetails (Wrapped BEK, kek-pem {})",
                s(&config),
                s(&kek)
            ),
            Some(0)
        )]
    );

    // Bad inputs: the KEK missing, another KEK, the wrong padding.
    bad(
        &f,
        1,
        "give --kek-pem FILE, --kek-transit KEY or --kek-keyvault",
        || f.verify(&["--keyvault-secret", s(&sha1)]),
    );
    let other = f.kek("other.pem");
    bad(&f, 2, "does not unwrap the BEK with RSA-OAEP", || {
        f.verify(&["--keyvault-secret", s(&sha1), "--kek-pem", s(&other)])
    });
    let mislabelled = f.wrapped_secret(
        "mis.json",
        &f.wrap(&kek, false, "sha1"),
        "RSA-OAEP-256",
        url,
    );
    bad(&f, 2, "with RSA-OAEP-256 (another KEK", || {
        f.verify(&["--keyvault-secret", s(&mislabelled), "--kek-pem", s(&kek)])
    });
    bad(&f, 1, "no PEM private key", || {
        f.verify(&["--keyvault-secret", s(&sha1), "--kek-pem", s(&f.bek)])
    });
}

#[test]
fn bek_volume_images_and_partitions_give_their_passphrase_files() {
    let test = "bek_volume_images_and_partitions_give_their_passphrase_files";
    if !require(test, &["mkfs.vfat", "mcopy", "sfdisk"]) {
        return;
    }
    let Some(f) = Fixture::new(test) else {
        return;
    };
    let mcopy = |img: &str, src: &Path, dst: &str| {
        run(
            "env",
            &[
                "MTOOLS_SKIP_CHECK=1",
                "mcopy",
                "-i",
                img,
                s(src),
                &format!("::{dst}"),
            ],
            None,
        )
        .ok();
    };
    let readme = f.path("readme");
    std::fs::write(&readme, b"Do not delete this volume.").unwrap();
    // A FAT image as ADE lays it out: the OS passphrase, a data-disk copy, the README.
    let img = f.path("bek.img");
    sys("mkfs.vfat", &["-C", "-n", "BEK VOLUME", s(&img), "8192"]).ok();
    mcopy(s(&img), &f.bek, "LinuxPassPhraseFileName");
    mcopy(s(&img), &f.bek, "LinuxPassPhraseFileName_0_1");
    mcopy(s(&img), &readme, "CRITICAL_DATA_WARNING_README.txt");
    let before = fingerprint(&img);
    let out = f.verify(&["--bek-volume", s(&img)]).ok();
    assert_eq!(
        opened(&out),
        vec![(
            format!(
                "bek-volume {}:LinuxPassPhraseFileName,LinuxPassPhraseFileName_0_1",
                s(&img)
            ),
            Some(0)
        )]
    );
    assert_eq!(
        fingerprint(&img).sha256,
        before.sha256,
        "the BEK VOLUME was written"
    );
    // A disk image whose partition 1 is the BEK VOLUME (the attached key disk).
    let disk = f.path("disk.img");
    set_len(&disk, 24 * MIB);
    run(
        "sfdisk",
        &["-q", s(&disk)],
        Some(b"start=2048, size=32768, type=c\n"),
    )
    .ok();
    sys(
        "mkfs.vfat",
        &["-n", "BEK VOLUME", "--offset", "2048", s(&disk), "16384"],
    )
    .ok();
    mcopy(
        &format!("{}@@1M", s(&disk)),
        &f.bek,
        "LinuxPassPhraseFileName_0_1",
    );
    let out = f.verify(&["--bek-volume", s(&disk)]).ok();
    assert_eq!(
        opened(&out),
        vec![(
            format!("bek-volume {}:LinuxPassPhraseFileName_0_1", s(&disk)),
            Some(0)
        )]
    );
    // A BEK VOLUME without passphrase files holds no key (2); a non-FAT image is unreadable (4).
    let empty = f.path("empty.img");
    sys("mkfs.vfat", &["-C", "-n", "BEK VOLUME", s(&empty), "1024"]).ok();
    mcopy(s(&empty), &readme, "CRITICAL_DATA_WARNING_README.txt");
    bad(
        &f,
        2,
        "holds no LinuxPassPhraseFileName or .BEK file (root has CRITICAL_DATA_WARNING_README.txt)",
        || f.verify(&["--bek-volume", s(&empty)]),
    );
    bad(&f, 4, "not a FAT BEK VOLUME image", || {
        f.verify(&["--bek-volume", s(&f.bek)])
    });
    let other = f.path("other.img");
    set_len(&other, 24 * MIB);
    run(
        "sfdisk",
        &["-q", s(&other)],
        Some(b"start=2048, size=32768, type=c\n"),
    )
    .ok();
    sys(
        "mkfs.vfat",
        &["-n", "DATA", "--offset", "2048", s(&other), "16384"],
    )
    .ok();
    bad(
        &f,
        4,
        "no FAT partition labelled \"BEK VOLUME\" (partition 1 is FAT labelled \"DATA\")",
        || f.verify(&["--bek-volume", s(&other)]),
    );
}

#[test]
fn bad_secret_json_is_one_line_and_writes_nothing() {
    let Some(f) = Fixture::new("bad_secret_json_is_one_line_and_writes_nothing") else {
        return;
    };
    let unknown = f.secret("cert.json", "application/x-pkcs12", "AAAA", json!({}));
    bad(
        &f,
        1,
        "contentType \"application/x-pkcs12\" is not an Azure Disk Encryption key",
        || f.verify(&["--keyvault-secret", s(&unknown)]),
    );
    let broken = f.path("broken.json");
    std::fs::write(&broken, b"{\"contentType\": \"BEK\", \"value\": ").unwrap();
    bad(&f, 1, "is not Key Vault secret JSON", || {
        f.verify(&["--keyvault-secret", s(&broken)])
    });
    bad(
        &f,
        1,
        "is not an Azure Backup encryption config JSON",
        || f.verify(&["--restore-config", s(&broken)]),
    );
    bad(&f, 1, "cannot open Key Vault secret file", || {
        f.verify(&["--keyvault-secret", s(&f.path("missing.json"))])
    });
}

/// An OpenBao dev server of the test's own, killed by PID on drop.
struct Bao {
    child: Child,
    addr: String,
    token: String,
    home: tempfile::TempDir,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Bao {
    fn start(test: &str) -> Option<Bao> {
        if !require(test, &["bao"]) {
            return None;
        }
        let home = temp();
        let port = free_port();
        let token = format!("root-{}", &sha256(test.as_bytes())[..12]);
        let log = std::fs::File::create(home.path().join("server.log")).unwrap();
        let child = Command::new(tool("bao"))
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let bao = Bao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token,
            home,
        };
        assert!(
            wait_until(Duration::from_secs(30), || bao.cli(&["status"]).code == 0),
            "bao did not start"
        );
        bao.cli(&["secrets", "enable", "transit"]).ok();
        Some(bao)
    }

    fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec![
            format!("HOME={}", s(self.home.path())),
            format!("VAULT_ADDR={}", self.addr),
            format!("VAULT_TOKEN={}", self.token),
            s(&tool("bao")).to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        run("env", &all, None)
    }
}

#[test]
fn transit_rsa_kek_unwraps_and_a_key_that_is_not_rsa_is_named() {
    let test = "transit_rsa_kek_unwraps_and_a_key_that_is_not_rsa_is_named";
    let Some(f) = Fixture::new(test) else {
        return;
    };
    let Some(bao) = Bao::start(test) else {
        return;
    };
    bao.cli(&["write", "transit/keys/kek", "type=rsa-2048"])
        .ok();
    bao.cli(&["write", "-f", "transit/keys/aes"]).ok();
    let info: Value = serde_json::from_str(
        &bao.cli(&["read", "-format=json", "transit/keys/kek"])
            .ok()
            .stdout,
    )
    .unwrap();
    let public = f.path("kek-pub.pem");
    std::fs::write(
        &public,
        info["data"]["keys"]["1"]["public_key"].as_str().unwrap(),
    )
    .unwrap();
    let url = "https://kv1.vault.azure.net/keys/kek/0011";
    let secret = f.wrapped_secret(
        "s.json",
        &f.wrap(&public, true, "sha256"),
        "RSA-OAEP-256",
        url,
    );
    let env = [
        format!("VAULT_ADDR={}", bao.addr),
        format!("VAULT_TOKEN={}", bao.token),
    ];
    let out = f
        .verify_env(
            &env,
            &["--keyvault-secret", s(&secret), "--kek-transit", "kek"],
        )
        .ok();
    assert_eq!(
        opened(&out),
        vec![(
            format!(
                "keyvault-secret {} (Wrapped BEK, kek-transit transit/kek)",
                s(&secret)
            ),
            Some(0)
        )]
    );
    bad(&f, 2, "transit key transit/aes is not an RSA key", || {
        f.verify_env(
            &env,
            &["--keyvault-secret", s(&secret), "--kek-transit", "aes"],
        )
    });
    let sha1 = f.wrapped_secret("sha1.json", &f.wrap(&public, true, "sha1"), "RSA-OAEP", url);
    bad(&f, 1, "which transit cannot unwrap", || {
        f.verify_env(
            &env,
            &["--keyvault-secret", s(&sha1), "--kek-transit", "kek"],
        )
    });
    bad(&f, 2, "no vault credentials", || {
        f.verify_env(
            &env[..1],
            &["--keyvault-secret", s(&secret), "--kek-transit", "kek"],
        )
    });
}

/// tests/azure_kv/server.py with a CA and server certificate made by openssl, killed on drop.
struct KeyVaultServer {
    child: Child,
    dir: PathBuf,
    host: String,
}

impl Drop for KeyVaultServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KeyVaultServer {
    fn start(test: &str, dir: &Path) -> Option<KeyVaultServer> {
        if !require(test, &["python3-cryptography", "openssl"]) {
            return None;
        }
        let d = dir.join("kv");
        std::fs::create_dir_all(d.join("keys")).unwrap();
        std::fs::create_dir_all(d.join("secrets")).unwrap();
        let q = |p: &str| s(&d.join(p)).to_string();
        sh(&format!(
            "set -e; openssl req -x509 -newkey rsa:2048 -nodes -keyout {ca_key} -out {ca} -days 1 -subj /CN=kv-test-ca 2>/dev/null;
             openssl req -newkey rsa:2048 -nodes -keyout {key} -out {csr} -subj /CN=127.0.0.1 2>/dev/null;
             printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > {ext};
             openssl x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -out {cert} -days 1 -extfile {ext} 2>/dev/null",
            ca_key = q("ca.key"), ca = q("ca.pem"), key = q("key.pem"), csr = q("leaf.csr"),
            ext = q("ext"), cert = q("cert.pem")
        ))
        .ok();
        std::fs::write(d.join("client-secret"), "s3cret-Client~Value\n").unwrap();
        let log = std::fs::File::create(d.join("server.log")).unwrap();
        let child = Command::new("python3")
            .arg(repo_file("tests/azure_kv/server.py"))
            .args([s(&d), "--tenant", "tenant-a", "--client-id", "app-1"])
            .args([
                "--client-secret-file",
                &q("client-secret"),
                "--identity-header",
                "id-header-1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let port_file = d.join("port");
        let up = wait_until(Duration::from_secs(20), || port_file.exists());
        let log = std::fs::read_to_string(d.join("server.log")).unwrap_or_default();
        assert!(up, "the Key Vault stand-in did not start: {log}");
        let port = std::fs::read_to_string(&port_file).unwrap();
        Some(KeyVaultServer {
            child,
            host: format!("127.0.0.1:{}", port.trim()),
            dir: d,
        })
    }

    fn base(&self) -> String {
        format!("https://{}", self.host)
    }

    /// Client-credentials environment for `tenant`.
    fn env(&self, tenant: &str, secret: &str) -> Vec<String> {
        vec![
            format!("AZURE_TENANT_ID={tenant}"),
            "AZURE_CLIENT_ID=app-1".into(),
            format!("AZURE_CLIENT_SECRET={secret}"),
            format!("AZURE_AUTHORITY_HOST={}", self.base()),
        ]
    }

    fn tls_args(&self) -> Vec<String> {
        vec![
            "--keyvault-cacert".into(),
            s(&self.dir.join("ca.pem")).into(),
            "--keyvault-allow-host".into(),
            self.host.clone(),
        ]
    }
}

#[test]
fn azure_key_vault_client_fetches_secrets_and_unwraps_against_the_stand_in() {
    let test = "azure_key_vault_client_fetches_secrets_and_unwraps_against_the_stand_in";
    let Some(f) = Fixture::new(test) else {
        return;
    };
    let Some(kv) = KeyVaultServer::start(test, f.dir()) else {
        return;
    };
    let kek = f.kek("kek.pem");
    std::fs::copy(&kek, kv.dir.join("keys/kek.pem")).unwrap();
    let kek_url = format!("{}/keys/kek/0011", kv.base());
    let wrapped = f.wrap(&kek, false, "sha1");
    std::fs::write(
        kv.dir.join("secrets/B3284AAA-DAAA.json"),
        json!({"value": wrapped, "contentType": "Wrapped BEK", "attributes": {"enabled": true},
               "tags": {"DiskEncryptionKeyEncryptionAlgorithm": "RSA-OAEP",
                        "DiskEncryptionKeyEncryptionKeyURL": kek_url,
                        "DiskEncryptionKeyFileName": "LinuxPassPhraseFileName"}})
        .to_string(),
    )
    .unwrap();
    let secret_url = format!("{}/secrets/B3284AAA-DAAA/xx0000", kv.base());
    let tls = kv.tls_args();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let env = kv.env("tenant-a", "s3cret-Client~Value");
    // The secret fetched from Key Vault, unwrapped by Key Vault (client credentials).
    let mut args = vec![
        "--keyvault-secret-url",
        secret_url.as_str(),
        "--kek-keyvault",
    ];
    args.extend(&tls);
    let out = f.verify_env(&env, &args).ok();
    assert_eq!(
        opened(&out),
        vec![(
            format!("keyvault-secret-url {secret_url} (Wrapped BEK, kek-keyvault {kek_url})"),
            Some(0)
        )]
    );
    // A secret file unwrapped through Key Vault with the managed identity (RSA-OAEP-256).
    let sha256 = f.wrapped_secret(
        "s.json",
        &f.wrap(&kek, false, "sha256"),
        "RSA-OAEP-256",
        &kek_url,
    );
    let mi_env = [
        format!("IDENTITY_ENDPOINT={}/msi/token", kv.base()),
        "IDENTITY_HEADER=id-header-1".to_string(),
    ];
    let mut args = vec![
        "--keyvault-secret",
        s(&sha256),
        "--kek-keyvault",
        "--azure-managed-identity",
    ];
    args.extend(&tls);
    assert_eq!(opened(&f.verify_env(&mi_env, &args).ok())[0].1, Some(0));
    let log = std::fs::read_to_string(kv.dir.join("requests.log")).unwrap();
    assert!(
        log.contains("POST /tenant-a/oauth2/v2.0/token bearer=False -> 200"),
        "{log}"
    );
    assert!(
        log.contains("GET /secrets/B3284AAA-DAAA/xx0000 bearer=True -> 200"),
        "{log}"
    );
    assert!(
        log.contains("POST /keys/kek/0011/unwrapkey bearer=True -> 200"),
        "{log}"
    );
    assert!(log.contains("GET /msi/token bearer=False -> 200"), "{log}");

    // Failures: Key Vault's 404 and 401, a refused login, no credentials, a host not allowed,
    // TLS without the CA.
    let missing = format!("{}/secrets/NoSuchSecret/1", kv.base());
    let mut args = vec!["--keyvault-secret-url", missing.as_str()];
    args.extend(&tls);
    bad(
        &f,
        2,
        "HTTP 404 SecretNotFound: A secret with (name/id) NoSuchSecret/1 was not found",
        || f.verify_env(&env, &args),
    );
    let mut args = vec![
        "--keyvault-secret-url",
        secret_url.as_str(),
        "--kek-keyvault",
    ];
    args.extend(&tls);
    bad(
        &f,
        2,
        "HTTP 401 Unauthorized: AKV10032: Invalid issuer",
        || f.verify_env(&kv.env("other-tenant", "s3cret-Client~Value"), &args),
    );
    bad(
        &f,
        2,
        "gave no token: HTTP 401 invalid_client: AADSTS7000215",
        || f.verify_env(&kv.env("tenant-a", "wrong"), &args),
    );
    bad(&f, 2, "no Azure credentials", || f.verify_env(&[], &args));
    bad(&f, 1, "--keyvault-allow-host", || {
        f.verify_env(
            &env,
            &[
                "--keyvault-secret-url",
                secret_url.as_str(),
                "--keyvault-cacert",
                tls[1],
            ],
        )
    });
    bad(&f, 2, "TLS failed", || {
        f.verify_env(
            &env,
            &[
                "--keyvault-secret-url",
                secret_url.as_str(),
                "--keyvault-allow-host",
                tls[3],
            ],
        )
    });
    // The stand-in's challenge, as Key Vault answers a request without a bearer token.
    if find_tool("curl").is_some() {
        let ca = kv.dir.join("ca.pem");
        let out = run(
            "curl",
            &["-s", "-D", "-", "--cacert", s(&ca), &secret_url],
            None,
        )
        .ok();
        assert!(out.stdout.starts_with("HTTP/1.1 401"), "{}", out.stdout);
        assert!(
            out.stdout
                .contains("WWW-Authenticate: Bearer authorization="),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains(r#"{"error": {"code": "Unauthorized""#),
            "{}",
            out.stdout
        );
    }
    let log = std::fs::read_to_string(kv.dir.join("requests.log")).unwrap();
    assert!(!log.contains("s3cret"), "a secret reached the server log");
}

/// The key-chain fuzz corpora (fuzz/corpus/keychain_json, bek_volume) replayed through the
/// fuzz targets' own bodies: seeds accepted, `*.reject` rejected, nothing panics.
#[test]
fn fuzz_corpora_replay() {
    let targets: [(&str, crate::reliability::Target); 2] = [
        ("keychain_json", keychain_harness::keychain_json),
        ("bek_volume", keychain_harness::bek_volume),
    ];
    crate::reliability::replay_corpora(&targets);
}

/// The key-chain bad inputs in the generated table (docs/bad-inputs.md): exit code, one line,
/// no file changed.
#[test]
fn bad_key_chain_table() {
    use crate::cli::{row, row_says};
    let test = "bad_key_chain_table";
    if !require(test, &["mkfs.vfat", "mcopy"]) {
        return;
    }
    let Some(f) = Fixture::new(test) else {
        return;
    };
    let kek = f.kek("kek.pem");
    f.kek("other.pem");
    let url = "https://kv1.vault.azure.net/keys/kek/0011";
    f.secret("unknown.json", "application/x-pkcs12", "MIIK", json!({}));
    std::fs::write(
        f.path("broken.json"),
        b"{\"contentType\": \"BEK\", \"value\": ",
    )
    .unwrap();
    f.wrapped_secret("sha1.json", &f.wrap(&kek, false, "sha1"), "RSA-OAEP", url);
    f.wrapped_secret(
        "mislabelled.json",
        &f.wrap(&kek, false, "sha1"),
        "RSA-OAEP-256",
        url,
    );
    f.wrapped_secret("pkcs1.json", &f.wrap(&kek, false, "pkcs1"), "RSA1_5", url);
    f.wrapped_secret("a256kw.json", "AAAA", "A256KW", url);
    std::fs::write(
        f.path("backup-only.json"),
        json!({"OsDiskKeyAndSecretDetails": {"KeyVaultSecretBackupData": "AAAA"}}).to_string(),
    )
    .unwrap();
    let empty = f.path("empty-bek.img");
    sys("mkfs.vfat", &["-C", "-n", "BEK VOLUME", s(&empty), "1024"]).ok();
    const ROWS: &[crate::cli::Row] = &[
        row_says(
            "secret with an unknown contentType",
            &["verify", "@vol.img", "--keyvault-secret", "@unknown.json"],
            &[1],
            "is not an Azure Disk Encryption key",
        ),
        row_says(
            "secret JSON cut short",
            &["verify", "@vol.img", "--keyvault-secret", "@broken.json"],
            &[1],
            "is not Key Vault secret JSON",
        ),
        row_says(
            "restore config JSON cut short",
            &["verify", "@vol.img", "--restore-config", "@broken.json"],
            &[1],
            "encryption config JSON",
        ),
        row_says(
            "restore config with only backup blobs",
            &[
                "verify",
                "@vol.img",
                "--restore-config",
                "@backup-only.json",
            ],
            &[1],
            "backup blobs",
        ),
        row_says(
            "wrapped BEK, no KEK given",
            &["verify", "@vol.img", "--keyvault-secret", "@sha1.json"],
            &[1],
            "give --kek-pem",
        ),
        row_says(
            "wrapped BEK, KEK file missing",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@sha1.json",
                "--kek-pem",
                "@missing.pem",
            ],
            &[1],
            "cannot open KEK file",
        ),
        row_says(
            "wrapped BEK, another KEK",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@sha1.json",
                "--kek-pem",
                "@other.pem",
            ],
            &[2],
            "does not unwrap",
        ),
        row_says(
            "wrapped BEK, tag says RSA-OAEP-256 but SHA-1 padding",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@mislabelled.json",
                "--kek-pem",
                "@kek.pem",
            ],
            &[2],
            "with RSA-OAEP-256",
        ),
        row_says(
            "RSA1_5 wrap without --rsa1-5",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@pkcs1.json",
                "--kek-pem",
                "@kek.pem",
            ],
            &[1],
            "--rsa1-5",
        ),
        row_says(
            "KEK algorithm Key Vault does not wrap BEKs with",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@a256kw.json",
                "--kek-pem",
                "@kek.pem",
            ],
            &[1],
            "A256KW",
        ),
        row_says(
            "KEK file that is not a PEM key",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@sha1.json",
                "--kek-pem",
                "@LinuxPassPhraseFileName",
            ],
            &[1],
            "no PEM private key",
        ),
        row_says(
            "SHA-1 wrap for a transit KEK",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@sha1.json",
                "--kek-transit",
                "kek",
            ],
            &[1],
            "transit cannot unwrap",
        ),
        row_says(
            "BEK VOLUME without passphrase files",
            &["verify", "@vol.img", "--bek-volume", "@empty-bek.img"],
            &[2],
            "holds no LinuxPassPhraseFileName",
        ),
        row_says(
            "BEK VOLUME that is not FAT",
            &[
                "verify",
                "@vol.img",
                "--bek-volume",
                "@LinuxPassPhraseFileName",
            ],
            &[4],
            "not a FAT BEK VOLUME",
        ),
        row_says(
            "Key Vault URL of another host",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret-url",
                "https://evil.example/secrets/s/1",
            ],
            &[1],
            "--keyvault-allow-host",
        ),
        row_says(
            "Key Vault URL that is not a secret",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret-url",
                "https://kv1.vault.azure.net/keys/k/1",
            ],
            &[1],
            "not a Key Vault secrets URL",
        ),
        row(
            "two KEK sources",
            &[
                "verify",
                "@vol.img",
                "--keyvault-secret",
                "@sha1.json",
                "--kek-pem",
                "@kek.pem",
                "--kek-keyvault",
            ],
            &[1],
        ),
    ];
    crate::cli::run_table(f.dir(), ROWS);
}

/// `open` takes the key chain too: a BEK VOLUME's passphrase serves the volume; key material
/// that opens nothing is exit 2 with no mount left.
#[test]
fn open_serves_a_volume_with_a_key_chain_candidate() {
    let test = "open_serves_a_volume_with_a_key_chain_candidate";
    if !require(test, &["mkfs.vfat", "mcopy"]) || !require_fuse(test) {
        return;
    }
    let Some(f) = Fixture::new(test) else {
        return;
    };
    let img = f.path("bek.img");
    sys("mkfs.vfat", &["-C", "-n", "BEK VOLUME", s(&img), "1024"]).ok();
    let mcopy = [
        "MTOOLS_SKIP_CHECK=1",
        "mcopy",
        "-i",
        s(&img),
        s(&f.bek),
        "::LinuxPassPhraseFileName",
    ];
    run("env", &mcopy, None).ok();
    let plain = f.path("plain");
    let out = vd(&[
        "open",
        s(&f.vol),
        s(&plain),
        "--read-only",
        "--bek-volume",
        s(&img),
    ]);
    let guard = Mount::new(&plain);
    out.ok();
    assert!(is_mounted(&plain));
    assert_eq!(std::fs::metadata(&plain).unwrap().len(), 4 * MIB);
    guard.close();
    let wrong = f.secret(
        "wrong.json",
        "BEK",
        &STANDARD.encode(b"not the passphrase"),
        json!({}),
    );
    let out = vd(&[
        "open",
        s(&f.vol),
        s(&plain),
        "--read-only",
        "--keyvault-secret",
        s(&wrong),
    ]);
    let _guard = Mount::new(&plain);
    let out = out.fails_with(2);
    one_error_line(&out.stderr).unwrap();
    assert!(!is_mounted(&plain));
}
