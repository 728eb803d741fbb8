//! Vault unlock against a real OpenBao dev server on 127.0.0.1 (each test starts its own and
//! kills it by PID): transit and KV KEKs, token/AppRole auth, TLS, rewrap, and every failure
//! mode giving one line and exit 2.
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An OpenBao dev server of this test's own.
struct Bao {
    child: Child,
    addr: String,
    token: String,
    dir: tempfile::TempDir,
    ca: Option<PathBuf>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl Bao {
    /// None (test skipped loudly) when `bao` is not installed.
    fn start(test: &str, tls: bool) -> Option<Bao> {
        if !require(test, &["bao"]) {
            return None;
        }
        let dir = temp();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("home");
        let port = free_port();
        let token = format!("root-{}", &sha256(test.as_bytes())[..16]);
        let mut cmd = Command::new(tool("bao"));
        cmd.args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={token}"),
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ]);
        if tls {
            cmd.args(["-dev-tls", &format!("-dev-tls-cert-dir={}", s(dir.path()))]);
        }
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let child = cmd
            // The dev server writes ~/.vault-token: keep it in the test's own home.
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start bao server -dev");
        let scheme = if tls { "https" } else { "http" };
        let mut bao = Bao {
            child,
            addr: format!("{scheme}://127.0.0.1:{port}"),
            token,
            ca: tls.then(|| dir.path().join("vault-ca.pem")),
            dir,
        };
        let up = wait_until(Duration::from_secs(30), || bao.cli(&["status"]).code == 0);
        let log = std::fs::read_to_string(bao.dir.path().join("server.log")).unwrap_or_default();
        assert!(up, "bao dev server did not come up:\n{log}");
        bao.cli(&["secrets", "enable", "transit"]).ok();
        // A second home with no ~/.vault-token for vaultdisk runs.
        std::fs::create_dir(bao.dir.path().join("vd-home")).expect("vd home");
        let _ = &mut bao;
        Some(bao)
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("vd-home")
    }

    /// The bao CLI against this server as root.
    fn cli(&self, args: &[&str]) -> Out {
        let mut all = vec![
            format!("HOME={}", s(&self.dir.path().join("home"))),
            format!("VAULT_ADDR={}", self.addr),
            format!("VAULT_TOKEN={}", self.token),
        ];
        if let Some(ca) = &self.ca {
            all.push(format!("VAULT_CACERT={}", s(ca)));
        }
        all.push(s(&tool("bao")).to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        run("env", &all, None)
    }

    /// vaultdisk with a clean vault environment plus `env` (KEY=VALUE), HOME without a token file.
    fn vd(&self, env: &[String], args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut all: Vec<String> = [
            "VAULT_TOKEN",
            "BAO_TOKEN",
            "VAULT_ADDR",
            "BAO_ADDR",
            "VAULT_CACERT",
            "BAO_CACERT",
            "VAULT_NAMESPACE",
            "VAULT_CLIENT_TIMEOUT",
        ]
        .iter()
        .flat_map(|v| ["-u".to_string(), v.to_string()])
        .collect();
        all.push(format!("HOME={}", s(&self.home())));
        all.extend(env.iter().cloned());
        all.push(BIN.to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        run("env", &all, stdin)
    }

    /// `test-key BACKING --token-only` with only the token in the environment.
    fn test_token(&self, backing: &str) -> Out {
        self.vd(
            &self.token_only_env(),
            &["test-key", backing, "--token-only"],
            None,
        )
    }

    /// The full set a user would export: address, token and CA.
    fn env(&self) -> Vec<String> {
        let mut e = vec![
            format!("VAULT_ADDR={}", self.addr),
            format!("VAULT_TOKEN={}", self.token),
        ];
        if let Some(ca) = &self.ca {
            e.push(format!("VAULT_CACERT={}", s(ca)));
        }
        e
    }

    /// Only the token (the address comes from the header's token).
    fn token_only_env(&self) -> Vec<String> {
        let mut e = vec![format!("VAULT_TOKEN={}", self.token)];
        if let Some(ca) = &self.ca {
            e.push(format!("VAULT_CACERT={}", s(ca)));
        }
        e
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A passphrase volume with a transit vault keyslot enrolled (key `disk`, created).
fn enrolled(bao: &Bao) -> Vol {
    let vol = Vol::new("8M", &[]);
    bao.vd(
        &bao.env(),
        &[
            "vault",
            "enroll",
            s(&vol.backing),
            "--key-file",
            s(&vol.key),
            "--transit-key",
            "disk",
            "--create",
        ],
        None,
    )
    .ok();
    vol
}

fn open_args<'a>(vol: &'a Vol, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["open", s(&vol.backing), s(&vol.plain)];
    a.extend_from_slice(extra);
    a
}

fn vault_list(bao: &Bao, backing: &Path) -> Vec<Value> {
    let out = bao
        .vd(&[], &["vault", "list", s(backing), "--json"], None)
        .ok();
    serde_json::from_str::<Value>(&out.stdout)
        .expect("vault list --json")
        .as_array()
        .cloned()
        .expect("array")
}

/// The stderr line must name the vault address and the cause.
fn assert_vault_failure(out: &Out, addr: &str, cause: &str) {
    if let Err(e) = out.check_error(&[2]) {
        panic!("{e}");
    }
    assert!(
        out.stderr.contains(addr) && out.stderr.to_lowercase().contains(cause),
        "expected {addr} and {cause:?} in the error:\n{}",
        out.describe()
    );
}

#[test]
fn transit_enroll_then_open_with_only_the_token_and_cryptsetup_reads_it() {
    let Some(bao) = Bao::start("transit_enroll_then_open", false) else {
        return;
    };
    if !require_fuse("transit_enroll_then_open")
        || !require("transit_enroll_then_open", &["cryptsetup"])
    {
        return;
    }
    let vol = enrolled(&bao);
    // cryptsetup parses the header and lists our token, linked to keyslot 1.
    let cs = cryptsetup_json(&vol.backing);
    assert_eq!(cs["tokens"]["0"]["type"], "vaultdisk-vault", "{cs}");
    assert_eq!(cs["tokens"]["0"]["keyslots"][0], "1");
    let exported = sys(
        "cryptsetup",
        &["token", "export", "--token-id", "0", s(&vol.backing)],
    )
    .ok();
    let token: Value = serde_json::from_str(&exported.stdout).expect("token JSON");
    let ciphertext = token["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_string();
    assert!(ciphertext.starts_with("vault:v1:"), "{token}");
    assert!(
        !exported.stdout.contains(&bao.token),
        "the vault token must never be in the header"
    );
    let rows = vault_list(&bao, &vol.backing);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["kek"], "transit");
    assert_eq!(rows[0]["vault_addr"], bao.addr.as_str());
    assert_eq!(rows[0]["key_version"], 1);

    // Only VAULT_TOKEN: the address comes from the token; no passphrase is read.
    let out = bao.vd(
        &bao.token_only_env(),
        &open_args(&vol, &["--token-only", "-v"]),
        None,
    );
    let guard = Mount::new(&vol.plain);
    let out = out.ok();
    assert!(out.stderr.contains("vault token 0"), "{}", out.describe());
    write_plain(&vol.plain, 4096, b"sealed by the vault");
    guard.close();
    // Without --token-only and with no stdin, the vault opens it too.
    let out = bao.vd(&bao.token_only_env(), &open_args(&vol, &[]), None);
    let guard = Mount::new(&vol.plain);
    out.ok();
    assert_eq!(
        &read_plain(&vol.plain)[4096..4096 + 19],
        b"sealed by the vault"
    );
    guard.close();

    // No lock-in: the bao CLI's plaintext is the keyslot passphrase cryptsetup accepts.
    let plain = bao
        .cli(&[
            "write",
            "-field=plaintext",
            "transit/decrypt/disk",
            &format!("ciphertext={ciphertext}"),
        ])
        .ok();
    let pass = write_key(vol.dir.path(), "from-bao", plain.stdout.trim().as_bytes());
    assert!(cryptsetup_accepts(&vol.backing, &pass));
    // The passphrase keyslot still works.
    vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).ok();
}

#[test]
fn deleted_or_disabled_transit_key_makes_the_token_useless_but_the_passphrase_works() {
    let Some(bao) = Bao::start("deleted_transit_key", false) else {
        return;
    };
    let vol = enrolled(&bao);
    let test = |extra: &[&str]| {
        let mut a = vec!["test-key", s(&vol.backing)];
        a.extend_from_slice(extra);
        bao.vd(&bao.token_only_env(), &a, None)
    };
    test(&["--token-only"]).ok();
    // Disabled: rotate, then forbid decryption with version 1.
    bao.cli(&["write", "-f", "transit/keys/disk/rotate"]).ok();
    bao.cli(&[
        "write",
        "transit/keys/disk/config",
        "min_decryption_version=2",
    ])
    .ok();
    assert_vault_failure(&test(&["--token-only"]), &bao.addr, "refused");
    // Deleted: crypto-shredding.
    bao.cli(&["write", "transit/keys/disk/config", "deletion_allowed=true"])
        .ok();
    bao.cli(&["delete", "transit/keys/disk"]).ok();
    let out = test(&["--token-only"]);
    if let Err(e) = out.check_error(&[2]) {
        panic!("{e}");
    }
    assert!(out.stderr.contains(&bao.addr), "{}", out.describe());
    // The passphrase keyslot still opens (test-key tests an explicit key alone)...
    let out = test(&["--key-file", s(&vol.key)]).ok();
    assert!(out.stdout.contains("keyslot 0 opens"), "{}", out.describe());
    assert!(!out.stderr.contains("vault"), "{}", out.describe());
    // ...and a verb that tries the vault first falls back to it after one warning line.
    let out = bao
        .vd(
            &bao.token_only_env(),
            &["digest", s(&vol.backing), "--key-file", s(&vol.key)],
            None,
        )
        .ok();
    assert_eq!(
        out.stdout.split_whitespace().count(),
        2,
        "{}",
        out.describe()
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.describe());
    assert!(
        out.stderr.contains("vault unlock failed") && out.stderr.contains(&bao.addr),
        "{}",
        out.describe()
    );
    // Nothing piped in and the vault fails: one line, exit 2, no passphrase attempt.
    assert_vault_failure(&test(&[]), &bao.addr, "vault");
}

#[test]
fn rewrap_after_rotate_moves_the_token_to_the_new_key_version_crash_safely() {
    let Some(bao) = Bao::start("rewrap_after_rotate", false) else {
        return;
    };
    let vol = enrolled(&bao);
    bao.cli(&["write", "-f", "transit/keys/disk/rotate"]).ok();
    let before = std::fs::read(&vol.backing).expect("read");
    let base = vol.dir.path().join("before.img");
    std::fs::write(&base, &before).expect("write");
    let len = before.len() as u64;
    // Crash after every write or sync of the header update, as a power loss and then as a
    // process exit (last: its completed rewrap is what the rest checks): the token opens
    // each time.
    let mut points = Vec::new();
    for mode in [CrashMode::Power, CrashMode::Exit] {
        std::fs::write(&vol.backing, &before).expect("restore");
        let mut k = 1;
        let mut undid = 0;
        loop {
            let mut env = bao.token_only_env();
            env.extend(mode.env_strings(k));
            let out = bao.vd(&env, &["vault", "rewrap", s(&vol.backing)], None);
            if out.code == 0 {
                break;
            }
            assert_eq!(out.code, 86, "{}", out.describe());
            if check_crash_mode(mode, k, &out.stderr, &base, &vol.backing, len) {
                undid += 1;
            }
            bao.vd(
                &bao.token_only_env(),
                &["test-key", s(&vol.backing), "--token-only"],
                None,
            )
            .ok();
            vd(&["test-key", s(&vol.backing), "--key-file", s(&vol.key)]).ok();
            if find_tool("cryptsetup").is_some() {
                assert!(cryptsetup_accepts(&vol.backing, &vol.key), "k={k}");
            }
            std::fs::write(&vol.backing, &before).expect("restore");
            k += 1;
            assert!(k < 20, "rewrap never completed");
        }
        assert!(k > 2, "expected several crash points, got {}", k - 1);
        assert!(
            mode == CrashMode::Exit || undid > 0,
            "no power crash undid a write"
        );
        points.push(format!("{} {} mode", k - 1, mode.name()));
    }
    let rows = vault_list(&bao, &vol.backing);
    assert_eq!(rows[0]["key_version"], 2, "{rows:?}");
    // The new wrap is the one in use: version 1 can no longer decrypt, the token still opens.
    bao.cli(&[
        "write",
        "transit/keys/disk/config",
        "min_decryption_version=2",
    ])
    .ok();
    bao.vd(
        &bao.token_only_env(),
        &["test-key", s(&vol.backing), "--token-only"],
        None,
    )
    .ok();
    // A second rewrap has nothing to do and writes nothing.
    let fp = fingerprint(&vol.backing);
    let out = bao
        .vd(
            &bao.token_only_env(),
            &["vault", "rewrap", s(&vol.backing)],
            None,
        )
        .ok();
    assert!(
        out.stdout.contains("latest version 2"),
        "{}",
        out.describe()
    );
    assert_eq!(fingerprint(&vol.backing), fp);
    if find_tool("cryptsetup").is_some() {
        assert_eq!(
            cryptsetup_json(&vol.backing)["tokens"]["0"]["key_version"],
            2
        );
    }
    eprintln!("rewrap crash points exercised: {}", points.join(", "));
}

#[test]
fn every_vault_failure_is_one_line_naming_address_and_cause() {
    let Some(bao) = Bao::start("vault_failures", false) else {
        return;
    };
    let vol = enrolled(&bao);
    let b = s(&vol.backing);
    let snapshot = fingerprint(&vol.backing);
    // Connection refused. --vault-addr is tried first, then the address the token recorded:
    // a dead --vault-addr no longer fails an unlock the recorded address can serve.
    let dead = format!("http://127.0.0.1:{}", free_port());
    bao.vd(
        &bao.token_only_env(),
        &["test-key", b, "--token-only", "--vault-addr", &dead],
        None,
    )
    .ok();
    // With nothing else to try (enrolment records no address yet), the failure names it.
    let enroll_at = |addr: &str, env: &[String]| {
        let mut env = env.to_vec();
        env.push(format!("VAULT_TOKEN={}", bao.token));
        bao.vd(
            &env,
            &[
                "vault",
                "enroll",
                b,
                "--key-file",
                s(&vol.key),
                "--transit-key",
                "disk",
                "--vault-addr",
                addr,
            ],
            None,
        )
    };
    let out = enroll_at(&dead, &[]);
    assert_vault_failure(&out, &dead, "unreachable");
    // A server that accepts the connection and never answers: a timeout, not a hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = format!("http://{}", silent.local_addr().expect("addr"));
    let started = Instant::now();
    let out = enroll_at(&silent_addr, &["VAULT_CLIENT_TIMEOUT=2".into()]);
    assert_vault_failure(&out, &silent_addr, "did not answer");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
    // Wrong token: 403.
    let out = bao.vd(
        &["VAULT_TOKEN=not-a-token".into()],
        &["test-key", b, "--token-only"],
        None,
    );
    assert_vault_failure(&out, &bao.addr, "permission denied");
    assert!(
        !out.stderr.contains("not-a-token"),
        "token echoed: {}",
        out.stderr
    );
    // No credentials at all.
    let out = bao.vd(&[], &["test-key", b, "--token-only"], None);
    if let Err(e) = out.check_error(&[2]) {
        panic!("{e}");
    }
    assert!(
        out.stderr.contains("no vault credentials"),
        "{}",
        out.describe()
    );
    // An unreadable token file is a usage error naming the file.
    let out = bao.vd(
        &[],
        &[
            "test-key",
            b,
            "--token-only",
            "--vault-token-file",
            "/nonexistent/tok",
        ],
        None,
    );
    out.fails_with(1);
    // A token file works like VAULT_TOKEN.
    let tok = write_key(
        vol.dir.path(),
        "vault-token",
        format!("{}\n", bao.token).as_bytes(),
    );
    bao.vd(
        &[],
        &["test-key", b, "--token-only", "--vault-token-file", s(&tok)],
        None,
    )
    .ok();
    // ~/.vault-token, as Vault's CLI.
    std::fs::write(bao.home().join(".vault-token"), &bao.token).expect("token file");
    bao.vd(&[], &["test-key", b, "--token-only"], None).ok();
    std::fs::remove_file(bao.home().join(".vault-token")).expect("rm");
    // Bad usage: no KEK named, a name that would escape the API path.
    bao.vd(
        &bao.env(),
        &["vault", "enroll", b, "--key-file", s(&vol.key)],
        None,
    )
    .fails_with(1);
    bao.vd(
        &bao.env(),
        &[
            "vault",
            "enroll",
            b,
            "--key-file",
            s(&vol.key),
            "--transit-key",
            "../sys",
        ],
        None,
    )
    .fails_with(1);
    // Nothing above wrote to the volume.
    assert_eq!(fingerprint(&vol.backing), snapshot);

    // Tampered ciphertext (the header rewritten by cryptsetup itself).
    if require("vault_failures tampered", &["cryptsetup"]) {
        let exported = sys("cryptsetup", &["token", "export", "--token-id", "0", b]).ok();
        let mut token: Value = serde_json::from_str(&exported.stdout).expect("json");
        let ct = token["ciphertext"].as_str().expect("ct").to_string();
        let (head, tail) = ct.split_at(ct.len() - 6);
        let flipped: String = tail
            .chars()
            .map(|c| if c == 'A' { 'B' } else { 'A' })
            .collect();
        token["ciphertext"] = Value::String(format!("{head}{flipped}"));
        let file = data_file(vol.dir.path(), "token.json", token.to_string().as_bytes());
        sys(
            "cryptsetup",
            &[
                "token",
                "import",
                "--token-replace",
                "--token-id",
                "0",
                "--json-file",
                s(&file),
                b,
            ],
        )
        .ok();
        let out = bao.test_token(b);
        assert_vault_failure(&out, &bao.addr, "refused");
    }

    // Sealed (last: the dev server stays sealed).
    bao.cli(&["operator", "seal"]).ok();
    let out = bao.test_token(b);
    assert_vault_failure(&out, &bao.addr, "sealed");
}

#[test]
fn kv_kek_with_create_rotation_rewrap_and_missing_secret() {
    let Some(bao) = Bao::start("kv_kek", false) else {
        return;
    };
    let vol = Vol::new("8M", &[]);
    let b = s(&vol.backing);
    let enroll_kv = [
        "vault",
        "enroll",
        b,
        "--key-file",
        s(&vol.key),
        "--kv-path",
        "disks/db1",
        "--create",
    ];
    bao.vd(&bao.env(), &enroll_kv, None).ok();
    // The KEK lives in KV v2 as base64 of 32 bytes; the header holds only the wrapped secret.
    let kek = bao
        .cli(&["kv", "get", "-field=kek", "secret/disks/db1"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert_eq!(kek.len(), 44, "{kek}");
    let header = std::fs::read(&vol.backing).expect("read");
    assert!(
        !String::from_utf8_lossy(&header[..32768]).contains(&kek),
        "the KEK must not be in the header"
    );
    let rows = vault_list(&bao, &vol.backing);
    assert_eq!(rows[0]["kek"], "kv");
    assert_eq!(rows[0]["location"], "secret/disks/db1#kek");
    assert_eq!(rows[0]["key_version"], 1);
    bao.test_token(b).ok();
    // --create never overwrites an existing KEK: a second enrolment reuses version 1.
    bao.vd(&bao.env(), &enroll_kv, None).ok();
    assert_eq!(
        bao.cli(&["kv", "get", "-field=kek", "secret/disks/db1"])
            .ok()
            .stdout
            .trim(),
        kek
    );
    bao.vd(&[], &["vault", "remove", b, "--token", "1"], None)
        .ok();
    // KEK rotation: a new KV version, rewrap, then destroy version 1.
    let new_kek = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    bao.cli(&["kv", "put", "secret/disks/db1", &format!("kek={new_kek}")])
        .ok();
    bao.vd(&bao.token_only_env(), &["vault", "rewrap", b], None)
        .ok();
    assert_eq!(vault_list(&bao, &vol.backing)[0]["key_version"], 2);
    bao.cli(&["kv", "destroy", "-versions=1", "secret/disks/db1"])
        .ok();
    bao.test_token(b).ok();
    // Secret deleted for good: one line naming the address, exit 2.
    bao.cli(&["kv", "metadata", "delete", "secret/disks/db1"])
        .ok();
    let out = bao.test_token(b);
    assert_vault_failure(&out, &bao.addr, "nothing at");
    // Enrolling against a missing secret without --create is refused, nothing written.
    let fp = fingerprint(&vol.backing);
    let out = bao.vd(
        &bao.env(),
        &[
            "vault",
            "enroll",
            b,
            "--key-file",
            s(&vol.key),
            "--kv-path",
            "disks/none",
        ],
        None,
    );
    assert_vault_failure(&out, &bao.addr, "nothing at");
    assert_eq!(fingerprint(&vol.backing), fp);
}

#[test]
fn approle_login_and_a_policy_that_forbids_decrypt() {
    let Some(bao) = Bao::start("approle", false) else {
        return;
    };
    let vol = enrolled(&bao);
    let b = s(&vol.backing);
    let dir = vol.dir.path();
    bao.cli(&["auth", "enable", "approle"]).ok();
    let policy = data_file(
        dir,
        "unlock.hcl",
        br#"path "transit/decrypt/disk" { capabilities = ["update"] }"#,
    );
    bao.cli(&["policy", "write", "disk-unlock", s(&policy)])
        .ok();
    bao.cli(&[
        "write",
        "auth/approle/role/host",
        "token_policies=disk-unlock",
    ])
    .ok();
    let role_id = bao
        .cli(&["read", "-field=role_id", "auth/approle/role/host/role-id"])
        .ok()
        .stdout;
    let secret_id = bao
        .cli(&[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/host/secret-id",
        ])
        .ok()
        .stdout;
    let role_file = write_key(dir, "role-id", role_id.as_bytes());
    let secret_file = write_key(dir, "secret-id", secret_id.as_bytes());
    let approle = [
        "--vault-role-id-file",
        s(&role_file),
        "--vault-secret-id-file",
        s(&secret_file),
    ];
    let mut args = vec!["test-key", b, "--token-only"];
    args.extend_from_slice(&approle);
    let out = bao.vd(&[], &args, None).ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    // The role may decrypt but not rewrap: 403, one line.
    let mut args = vec!["vault", "rewrap", b];
    args.extend_from_slice(&approle);
    bao.cli(&["write", "-f", "transit/keys/disk/rotate"]).ok();
    assert_vault_failure(&bao.vd(&[], &args, None), &bao.addr, "permission denied");
    // A wrong secret_id: the login fails.
    let bad = write_key(
        dir,
        "bad-secret-id",
        b"00000000-0000-0000-0000-000000000000",
    );
    let out = bao.vd(
        &[],
        &[
            "test-key",
            b,
            "--token-only",
            "--vault-role-id-file",
            s(&role_file),
            "--vault-secret-id-file",
            s(&bad),
        ],
        None,
    );
    if let Err(e) = out.check_error(&[2]) {
        panic!("{e}");
    }
    assert!(out.stderr.contains(&bao.addr), "{}", out.describe());
}

#[test]
fn tls_needs_the_ca_and_works_with_it() {
    let Some(bao) = Bao::start("vault_tls", true) else {
        return;
    };
    let vol = enrolled(&bao);
    let b = s(&vol.backing);
    assert!(bao.addr.starts_with("https://"));
    bao.test_token(b).ok();
    // The same server without its CA: certificate not trusted.
    let out = bao.vd(
        &[format!("VAULT_TOKEN={}", bao.token)],
        &["test-key", b, "--token-only"],
        None,
    );
    assert_vault_failure(&out, &bao.addr, "tls");
    // --vault-cacert works like VAULT_CACERT.
    let ca = bao.ca.clone().expect("ca");
    bao.vd(
        &[format!("VAULT_TOKEN={}", bao.token)],
        &["test-key", b, "--token-only", "--vault-cacert", s(&ca)],
        None,
    )
    .ok();
}

#[test]
fn vault_only_format_prints_a_recovery_key_and_remove_refuses_the_last_keyslot() {
    let Some(bao) = Bao::start("vault_only_format", false) else {
        return;
    };
    let dir = temp();
    let disk = dir.path().join("disk.img");
    let out = bao
        .vd(
            &bao.env(),
            &[
                "format",
                s(&disk),
                "--size",
                "8M",
                "--transit-key",
                "disk",
                "--create",
            ],
            None,
        )
        .ok();
    let recovery = out.stdout.trim().to_string();
    assert_eq!(recovery.len(), 71, "{}", out.describe());
    let rows = vault_list(&bao, &disk);
    assert_eq!(rows[0]["keyslots"][0], 0);
    bao.vd(
        &bao.token_only_env(),
        &["test-key", s(&disk), "--token-only"],
        None,
    )
    .ok();
    let out = vd_in(
        &["test-key", s(&disk), "--recovery-key"],
        recovery.to_uppercase().as_bytes(),
    )
    .ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    if require("vault_only_format cryptsetup", &["cryptsetup"]) {
        let cs = cryptsetup_json(&disk);
        assert_eq!(cs["tokens"]["0"]["type"], "vaultdisk-vault");
        assert_eq!(cs["tokens"]["1"]["type"], "vaultdisk-recovery");
        let rk = write_key(dir.path(), "rk", recovery.as_bytes());
        assert!(cryptsetup_accepts(&disk, &rk));
    }
    // Key verbs take the vault as the existing key: add a passphrase with only VAULT_TOKEN.
    let pass = write_key(dir.path(), "later", b"added later");
    let mut args = vec!["add-key", s(&disk), "--new-key-file", s(&pass)];
    args.extend_from_slice(CHEAP_PBKDF2);
    args.push("--token-only");
    let out = bao.vd(&bao.token_only_env(), &args, None).ok();
    assert!(out.stdout.contains("added keyslot 2"), "{}", out.describe());
    vd(&["test-key", s(&disk), "--key-file", s(&pass)]).ok();
    vd(&["remove-key", s(&disk), "--key-slot", "2"]).ok();
    // --no-recovery-key: the vault is the only way in; removing it needs --force.
    let lone = dir.path().join("lone.img");
    let out = bao
        .vd(
            &bao.env(),
            &[
                "format",
                s(&lone),
                "--size",
                "8M",
                "--transit-key",
                "disk",
                "--no-recovery-key",
            ],
            None,
        )
        .ok();
    assert!(out.stdout.is_empty(), "{}", out.describe());
    let fp = fingerprint(&lone);
    bao.vd(&[], &["vault", "remove", s(&lone), "--token", "0"], None)
        .fails_with(5);
    assert_eq!(fingerprint(&lone), fp);
    bao.vd(&[], &["vault", "remove", s(&lone), "--token", "7"], None)
        .fails_with(1);
    // Vault-only format refuses a passphrase source.
    let key = write_key(dir.path(), "k", PASS);
    bao.vd(
        &bao.env(),
        &[
            "format",
            s(&dir.path().join("x.img")),
            "--size",
            "8M",
            "--transit-key",
            "disk",
            "--key-file",
            s(&key),
        ],
        None,
    )
    .fails_with(1);
    // Unreachable vault at format: nothing is created.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let never = dir.path().join("never.img");
    let out = bao.vd(
        &[format!("VAULT_TOKEN={}", bao.token)],
        &[
            "format",
            s(&never),
            "--size",
            "8M",
            "--transit-key",
            "disk",
            "--vault-addr",
            &dead,
        ],
        None,
    );
    assert_vault_failure(&out, &dead, "unreachable");
    assert!(!never.exists());
    // remove of the vault token on the volume with a recovery key: token and keyslot gone.
    bao.vd(&[], &["vault", "remove", s(&disk), "--token", "0"], None)
        .ok();
    assert!(vault_list(&bao, &disk).is_empty());
    let (dump, _) = dump_json(&disk);
    let ids: Vec<u64> = dump["keyslots"]
        .as_array()
        .expect("keyslots")
        .iter()
        .filter_map(|k| k["id"].as_u64())
        .collect();
    assert_eq!(ids, vec![1], "{dump}");
}

#[test]
fn verify_checks_vault_tokens_and_the_daemon_never_sees_the_token() {
    let Some(bao) = Bao::start("verify_vault", false) else {
        return;
    };
    if !require_fuse("verify_vault") {
        return;
    }
    let vol = enrolled(&bao);
    let b = s(&vol.backing);
    let before = sha256_file(&vol.backing);
    let out = bao
        .vd(
            &bao.token_only_env(),
            &[
                "verify",
                b,
                "--vault",
                "--key-file",
                s(&vol.key),
                "--digest",
                "--json",
            ],
            None,
        )
        .ok();
    let report: Value = serde_json::from_str(&out.stdout).expect("json");
    let ks = report["keyslots"].as_array().expect("keyslots");
    assert!(
        ks.iter().any(|k| k["keyslot"] == 1 && k["key"].as_str().unwrap_or("").contains("vault token 0")),
        "{report}"
    );
    assert!(ks.iter().any(|k| k["keyslot"] == 0));
    assert_eq!(report["ok"], true);
    // digest opens through the vault like open does.
    let out = bao
        .vd(&bao.token_only_env(), &["digest", b, "--token-only"], None)
        .ok();
    assert_eq!(
        out.stdout.split_whitespace().next(),
        report["data"]["digest"].as_str(),
        "{}",
        out.describe()
    );
    // A wrong vault token alone: exit 2, the report says why.
    let out = bao.vd(
        &["VAULT_TOKEN=wrong".into()],
        &["verify", b, "--vault", "--json"],
        None,
    );
    assert_eq!(out.code, 2, "{}", out.describe());
    assert!(
        out.stdout.contains("permission denied"),
        "{}",
        out.describe()
    );
    assert_eq!(
        sha256_file(&vol.backing),
        before,
        "verify changed the backing file"
    );

    // The daemon opened through the vault: no token in its environ or cmdline, none in logs.
    let mut env = bao.token_only_env();
    env.push("RUST_LOG=trace".into());
    let out = bao.vd(&env, &open_args(&vol, &["--token-only"]), None);
    let guard = Mount::new(&vol.plain);
    let out = out.ok();
    assert!(!out.stderr.contains(&bao.token) && !out.stdout.contains(&bao.token));
    let status = vd(&["status", "--json"]).ok();
    let all: Value = serde_json::from_str(&status.stdout).expect("status json");
    let st = all
        .as_array()
        .expect("array")
        .iter()
        .find(|v| {
            v["backing"]
                .as_str()
                .is_some_and(|p| p.ends_with(s(&vol.backing)) || s(&vol.backing).ends_with(p))
        })
        .cloned()
        .unwrap_or_else(|| panic!("{} not in status: {all}", vol.backing.display()));
    let pid = st["pid"].as_u64().expect("pid");
    assert!(
        st["unlocked_by"]
            .as_str()
            .unwrap_or("")
            .contains("vault token 0"),
        "{st}"
    );
    for f in ["environ", "cmdline"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{f}")).expect("proc");
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&bao.token),
            "vault token in /proc/{pid}/{f}"
        );
    }
    guard.close();
}

#[test]
fn namespace_is_recorded_and_sent() {
    let Some(bao) = Bao::start("vault_namespace", false) else {
        return;
    };
    bao.cli(&["namespace", "create", "team"]).ok();
    let ns_cli = |args: &[&str]| {
        let mut all = vec![
            format!("HOME={}", s(&bao.dir.path().join("home"))),
            format!("VAULT_ADDR={}", bao.addr),
            format!("VAULT_TOKEN={}", bao.token),
            "VAULT_NAMESPACE=team".to_string(),
            s(&tool("bao")).to_string(),
        ];
        all.extend(args.iter().map(|x| x.to_string()));
        run("env", &all, None)
    };
    ns_cli(&["secrets", "enable", "transit"]).ok();
    let vol = Vol::new("8M", &[]);
    let b = s(&vol.backing);
    bao.vd(
        &bao.env(),
        &[
            "vault",
            "enroll",
            b,
            "--key-file",
            s(&vol.key),
            "--transit-key",
            "nsdisk",
            "--create",
            "--vault-namespace",
            "team",
        ],
        None,
    )
    .ok();
    assert_eq!(vault_list(&bao, &vol.backing)[0]["vault_namespace"], "team");
    // The key exists only inside the namespace.
    assert_ne!(bao.cli(&["read", "transit/keys/nsdisk"]).code, 0);
    ns_cli(&["read", "transit/keys/nsdisk"]).ok();
    // Opening needs only the token: the namespace comes from the header's token.
    bao.test_token(b).ok();
}

/// A crash after any write or sync of `vault enroll` and `vault remove` leaves a header that
/// cryptsetup parses, the passphrase working, and the vault token working or absent.
#[test]
fn crash_during_vault_enroll_and_remove_leaves_a_working_volume() {
    let Some(bao) = Bao::start("crash_vault_enroll", false) else {
        return;
    };
    let vol = Vol::new("8M", &[]);
    let b = s(&vol.backing);
    bao.cli(&["write", "-f", "transit/keys/disk"]).ok();
    let pristine = std::fs::read(&vol.backing).expect("read");
    let base = vol.dir.path().join("base.img");
    let check = |phase: &str, k: u32| {
        vd(&["test-key", b, "--key-file", s(&vol.key)]).ok();
        if find_tool("cryptsetup").is_some() {
            sys("cryptsetup", &["luksDump", b]).ok();
            assert!(
                cryptsetup_accepts(&vol.backing, &vol.key),
                "{phase} crash {k}: cryptsetup refuses the passphrase"
            );
        }
        let tokens = vault_list(&bao, &vol.backing);
        let out = bao.test_token(b);
        assert_eq!(
            out.code == 0,
            !tokens.is_empty(),
            "{phase} crash {k}: a listed token must open, an unlisted one cannot:\n{}",
            out.describe()
        );
    };
    let enroll = [
        "vault",
        "enroll",
        b,
        "--key-file",
        s(&vol.key),
        "--transit-key",
        "disk",
    ];
    let len = pristine.len() as u64;
    let mut report = Vec::new();
    for mode in CrashMode::BOTH {
        let mut points = 0;
        for phase in ["enroll", "remove"] {
            let mut k = 1;
            let mut undid = 0;
            loop {
                std::fs::write(&vol.backing, &pristine).expect("restore");
                if phase == "remove" {
                    bao.vd(&bao.env(), &enroll, None).ok();
                }
                // What the crashed run started from, for check_crash_mode.
                std::fs::copy(&vol.backing, &base).expect("copy");
                let mut env = bao.env();
                env.extend(mode.env_strings(k));
                let args: Vec<&str> = if phase == "enroll" {
                    enroll.to_vec()
                } else {
                    vec!["vault", "remove", b, "--token", "0"]
                };
                let out = bao.vd(&env, &args, None);
                if out.code == 0 {
                    check(phase, k);
                    break;
                }
                assert_eq!(out.code, 86, "{phase} {k}: {}", out.describe());
                if check_crash_mode(mode, k, &out.stderr, &base, &vol.backing, len) {
                    undid += 1;
                }
                check(phase, k);
                points += 1;
                k += 1;
                assert!(k < 20, "{phase} never completed");
            }
            assert!(
                mode == CrashMode::Exit || undid > 0,
                "{phase}: no power crash undid a write"
            );
        }
        assert!(points >= 6, "only {points} crash points");
        report.push(format!("{points} {} mode", mode.name()));
    }
    eprintln!(
        "vault enroll/remove crash points exercised: {}",
        report.join(", ")
    );
}

/// `mount` unlocks through the vault like `open`: ext4 on a loop device with only the token.
#[test]
fn mount_through_the_vault_alone() {
    let test = "mount_through_the_vault_alone";
    let Some(bao) = Bao::start(test, false) else {
        return;
    };
    if !require(test, &["root", "loop", "fuse", "mkfs.ext4"]) {
        return;
    }
    let vol = enrolled(&bao);
    let mnt = vol.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mut env = bao.token_only_env();
    env.push(format!(
        "VAULTDISK_RUNTIME_DIR={}",
        s(&vol.dir.path().join("rt"))
    ));
    struct Umount<'a>(&'a Bao, Vec<String>, PathBuf);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            if is_mounted(&self.2) {
                let _ = self.0.vd(&self.1, &["umount", s(&self.2)], None);
            }
        }
    }
    let mounted = bao.vd(
        &env,
        &[
            "mount",
            s(&vol.backing),
            s(&mnt),
            "--token-only",
            "--mkfs",
            "ext4",
        ],
        None,
    );
    let guard = Umount(&bao, env.clone(), mnt.clone());
    mounted.ok();
    std::fs::write(mnt.join("f"), b"through the vault").expect("write");
    let status = bao.vd(&env, &["status", "--json"], None).ok();
    assert!(status.stdout.contains("vault token 0"), "{}", status.stdout);
    bao.vd(&env, &["umount", s(&mnt)], None).ok();
    drop(guard);
    bao.vd(
        &env,
        &[
            "mount",
            s(&vol.backing),
            s(&mnt),
            "--token-only",
            "--read-only",
        ],
        None,
    )
    .ok();
    let guard = Umount(&bao, env.clone(), mnt.clone());
    assert_eq!(
        std::fs::read(mnt.join("f")).expect("read"),
        b"through the vault"
    );
    bao.vd(&env, &["umount", s(&mnt)], None).ok();
    drop(guard);
}

/// A fake vault node on 127.0.0.1 answering every request with HTTP 307 to
/// `target` + the request's path (no Location when `target` is None). Counts requests and
/// those that carried an X-Vault-Token.
struct Redirector {
    addr: String,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    with_token: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Redirector {
    fn start(target: Option<String>) -> Redirector {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let with_token = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (r, w) = (requests.clone(), with_token.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(200) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().expect("dup"));
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if lower.starts_with("x-vault-token:") {
                        w.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length.min(1 << 20)];
                let _ = reader.read_exact(&mut body);
                r.fetch_add(1, Ordering::SeqCst);
                let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
                let location = target
                    .as_ref()
                    .map(|t| format!("Location: {t}{path}\r\n"))
                    .unwrap_or_default();
                let _ = write!(
                    stream,
                    "HTTP/1.1 307 Temporary Redirect\r\n{location}Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Redirector {
            addr,
            requests,
            with_token,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn tokens_seen(&self) -> usize {
        self.with_token.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Items 4 and 7: a same-host 307 is followed (a standby naming the active node); one to
/// another host is refused without sending the token there; one without a Location is "no
/// active node (leader election?)". https:// against a plain listener says so; a node that
/// was never initialised is not "sealed"; a bad vault setting is exit 1 on every verb.
#[test]
fn redirects_listener_mismatch_uninitialised_node_and_setting_errors() {
    let Some(bao) = Bao::start("vault_redirects", false) else {
        return;
    };
    let vol = Vol::new("8M", &[]);
    let b = s(&vol.backing);
    let enroll_at = |addr: &str, key: &str, extra: &[String]| {
        let mut env = vec![format!("VAULT_TOKEN={}", bao.token)];
        env.extend(extra.iter().cloned());
        bao.vd(
            &env,
            &[
                "vault",
                "enroll",
                b,
                "--key-file",
                s(&vol.key),
                "--transit-key",
                key,
                "--create",
                "--vault-addr",
                addr,
            ],
            None,
        )
    };
    // Same host (127.0.0.1), another port: followed, the enrolment works.
    let same = Redirector::start(Some(bao.addr.clone()));
    enroll_at(&same.addr, "redirected", &[]).ok();
    assert!(same.requests() > 0, "the redirector was not asked");
    // Another host name: refused, and the target never sees the token.
    let foreign_target = Redirector::start(None);
    let foreign_name = foreign_target.addr.replace("127.0.0.1", "localhost");
    let foreign = Redirector::start(Some(foreign_name));
    let out = enroll_at(&foreign.addr, "foreign", &[]);
    assert_vault_failure(&out, &foreign.addr, "outside this vault");
    assert_eq!(
        foreign_target.requests(),
        0,
        "followed a redirect to another host"
    );
    assert_eq!(foreign_target.tokens_seen(), 0);
    // No Location: an election; bounded retries, then the message.
    let nowhere = Redirector::start(None);
    let t = Instant::now();
    let out = enroll_at(&nowhere.addr, "nowhere", &[]);
    assert_vault_failure(&out, &nowhere.addr, "no active node (leader election?)");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    // VAULT_MAX_RETRIES=0: one request.
    let once = Redirector::start(None);
    let out = enroll_at(&once.addr, "once", &["VAULT_MAX_RETRIES=0".into()]);
    assert_vault_failure(&out, &once.addr, "no active node");
    // Two calls (the sys/leader probe, the key create): one try each, and three by default.
    assert_eq!(once.requests(), 2, "VAULT_MAX_RETRIES=0 retried");
    assert_eq!(nowhere.requests(), 6, "default: 3 tries per call");
    // https:// against the plain listener.
    let https = bao.addr.replace("http://", "https://");
    let out = enroll_at(&https, "tls", &[]);
    assert_vault_failure(&out, &https, "plain http, not tls");
    // A server that was never initialised (its own inmem storage, not a dev server).
    let dir = temp();
    let port = free_port();
    let config = dir.path().join("uninit.hcl");
    std::fs::write(
        &config,
        format!(
            "storage \"inmem\" {{}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\ndisable_mlock = true\n"
        ),
    )
    .expect("config");
    let mut uninit = Command::new(tool("bao"))
        .args(["server", &format!("-config={}", s(&config))])
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bao server");
    let uninit_addr = format!("http://127.0.0.1:{port}");
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let out = enroll_at(&uninit_addr, "uninit", &[]);
    let _ = uninit.kill();
    let _ = uninit.wait();
    assert!(up, "uninitialised server did not listen");
    assert_vault_failure(&out, &uninit_addr, "not initialised");
    assert!(!out.stderr.contains("sealed"), "{}", out.describe());
    // A bad setting: exit 1 when unlocking and when enrolling alike.
    for bad in [
        "VAULT_CLIENT_TIMEOUT=soon",
        "VAULT_MAX_RETRIES=many",
        "VAULT_ADDR=ftp://127.0.0.1:1",
        "VAULT_CACERT=/nonexistent/ca.pem",
    ] {
        let mut env = bao.token_only_env();
        env.push(bad.to_string());
        bao.vd(&env, &["test-key", b, "--token-only"], None)
            .fails_with(1);
        let mut env = bao.env();
        env.push(bad.to_string());
        bao.vd(
            &env,
            &[
                "vault",
                "enroll",
                b,
                "--key-file",
                s(&vol.key),
                "--transit-key",
                "x",
            ],
            None,
        )
        .fails_with(1);
    }
}

/// base64url without padding (JWT segments).
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An RS256 JWT with `claims`, signed by openssl with `key` (PEM).
fn make_jwt(dir: &Path, key: &Path, claims: &Value) -> String {
    let head = b64url(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = b64url(claims.to_string().as_bytes());
    let input = data_file(dir, "jwt-input", format!("{head}.{body}").as_bytes());
    let sig = dir.join("jwt-sig");
    sys(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-sign",
            s(key),
            "-out",
            s(&sig),
            s(&input),
        ],
    )
    .ok();
    format!(
        "{head}.{body}.{}",
        b64url(&std::fs::read(&sig).expect("sig"))
    )
}

/// Item 6: a response-wrapped AppRole secret_id (single use), JWT auth with a locally made
/// RS256 key, the same through a JWT mount at `kubernetes` with a service-account-shaped token
/// (Kubernetes auth's login call is the same {role, jwt}), and an OpenBao Proxy with auto-auth
/// reached through VAULT_AGENT_ADDR with no VAULT_TOKEN at all.
#[test]
fn wrapped_secret_id_jwt_kubernetes_shape_and_proxy_auto_auth() {
    let Some(bao) = Bao::start("vault_auth_methods", false) else {
        return;
    };
    if !require("vault_auth_methods", &["openssl"]) {
        return;
    }
    let vol = enrolled(&bao);
    let b = s(&vol.backing);
    let dir = vol.dir.path();
    let policy = data_file(
        dir,
        "unlock.hcl",
        br#"path "transit/decrypt/disk" { capabilities = ["update"] }"#,
    );
    bao.cli(&["policy", "write", "disk-unlock", s(&policy)])
        .ok();
    // Wrapped secret_id.
    bao.cli(&["auth", "enable", "approle"]).ok();
    bao.cli(&[
        "write",
        "auth/approle/role/host",
        "token_policies=disk-unlock",
    ])
    .ok();
    let role_id = bao
        .cli(&["read", "-field=role_id", "auth/approle/role/host/role-id"])
        .ok()
        .stdout;
    let wrapping = bao
        .cli(&[
            "write",
            "-wrap-ttl=120s",
            "-f",
            "-field=wrapping_token",
            "auth/approle/role/host/secret-id",
        ])
        .ok()
        .stdout;
    let role_file = write_key(dir, "role-id", role_id.as_bytes());
    let wrapped_file = write_key(dir, "wrapped-secret-id", wrapping.as_bytes());
    let args = [
        "test-key",
        b,
        "--token-only",
        "--vault-role-id-file",
        s(&role_file),
        "--vault-secret-id-file",
        s(&wrapped_file),
        "--vault-secret-id-wrapped",
    ];
    let out = bao.vd(&[], &args, None).ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    // A wrapping token is single use: the second time fails, one line, no token in it.
    let out = bao.vd(&[], &args, None);
    out.check_error(&[2]).unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.stderr.contains(wrapping.trim()), "{}", out.describe());
    // JWT auth with a locally made signing key.
    let key = dir.join("jwt-key.pem");
    sys("openssl", &["genrsa", "-out", s(&key), "2048"]).ok();
    let public = dir.join("jwt-pub.pem");
    sys(
        "openssl",
        &["rsa", "-in", s(&key), "-pubout", "-out", s(&public)],
    )
    .ok();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for (mount, claims, bound) in [
        (
            "jwt",
            serde_json::json!({"sub": "host1", "aud": "vaultdisk", "iat": now, "exp": now + 300}),
            "host1",
        ),
        (
            // Kubernetes' service-account token shape, validated by the SA signing key.
            "kubernetes",
            serde_json::json!({
                "iss": "kubernetes/serviceaccount",
                "sub": "system:serviceaccount:storage:vaultdisk",
                "aud": "vaultdisk",
                "kubernetes.io/serviceaccount/namespace": "storage",
                "iat": now, "exp": now + 300
            }),
            "system:serviceaccount:storage:vaultdisk",
        ),
    ] {
        bao.cli(&["auth", "enable", &format!("-path={mount}"), "jwt"])
            .ok();
        bao.cli(&[
            "write",
            &format!("auth/{mount}/config"),
            &format!("jwt_validation_pubkeys=@{}", s(&public)),
        ])
        .ok();
        bao.cli(&[
            "write",
            &format!("auth/{mount}/role/disk"),
            "role_type=jwt",
            "user_claim=sub",
            &format!("bound_subject={bound}"),
            "bound_audiences=vaultdisk",
            "token_policies=disk-unlock",
        ])
        .ok();
        let jwt = make_jwt(dir, &key, &claims);
        let jwt_file = write_key(dir, &format!("{mount}.jwt"), jwt.as_bytes());
        let out = bao
            .vd(
                &[],
                &[
                    "test-key",
                    b,
                    "--token-only",
                    "--vault-jwt-file",
                    s(&jwt_file),
                    "--vault-jwt-role",
                    "disk",
                    "--vault-jwt-mount",
                    mount,
                ],
                None,
            )
            .ok();
        assert!(
            out.stdout.contains("keyslot 1 opens"),
            "{mount}: {}",
            out.describe()
        );
        // A JWT signed by another key is refused.
        let other = dir.join("other-key.pem");
        sys("openssl", &["genrsa", "-out", s(&other), "2048"]).ok();
        let forged = write_key(dir, "forged.jwt", make_jwt(dir, &other, &claims).as_bytes());
        let out = bao.vd(
            &[],
            &[
                "test-key",
                b,
                "--token-only",
                "--vault-jwt-file",
                s(&forged),
                "--vault-jwt-role",
                "disk",
                "--vault-jwt-mount",
                mount,
            ],
            None,
        );
        out.check_error(&[2]).unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.stderr.contains(&jwt), "{}", out.describe());
    }
    // OpenBao Proxy with token-file auto-auth: vaultdisk sends no token, the proxy adds its.
    let proxy_port = free_port();
    let token_file = write_key(dir, "proxy-token", bao.token.as_bytes());
    let socket = dir.join("proxy.sock");
    let config = data_file(
        dir,
        "proxy.hcl",
        format!(
            "vault {{\n  address = \"{}\"\n}}\n\
             auto_auth {{\n  method \"token_file\" {{\n    config = {{\n      token_file_path = \"{}\"\n    }}\n  }}\n}}\n\
             api_proxy {{\n  use_auto_auth_token = \"force\"\n}}\n\
             listener \"tcp\" {{\n  address = \"127.0.0.1:{proxy_port}\"\n  tls_disable = true\n}}\n\
             listener \"unix\" {{\n  address = \"{}\"\n  tls_disable = true\n}}\n",
            bao.addr,
            s(&token_file),
            s(&socket)
        )
        .as_bytes(),
    );
    let mut proxy = Command::new(tool("bao"))
        .args(["proxy", &format!("-config={}", s(&config))])
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("proxy.log")).expect("log"),
        ))
        .spawn()
        .expect("bao proxy");
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok()
    });
    let agent = format!("VAULT_AGENT_ADDR=http://127.0.0.1:{proxy_port}");
    // The token's recorded address is the server's: the proxy is tried first; no token file,
    // no VAULT_TOKEN.
    let out = bao.vd(
        std::slice::from_ref(&agent),
        &["test-key", b, "--token-only"],
        None,
    );
    // The same proxy through its Unix socket.
    let unix = bao.vd(
        &[format!("VAULT_AGENT_ADDR=unix://{}", s(&socket))],
        &["test-key", b, "--token-only"],
        None,
    );
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(up, "bao proxy did not listen");
    let log = std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
    assert_eq!(out.code, 0, "{}\nproxy log:\n{log}", out.describe());
    assert_eq!(unix.code, 0, "{}\nproxy log:\n{log}", unix.describe());
}

/// Item 6: VAULT_CAPATH (a directory of CA files), VAULT_SKIP_VERIFY (works, with a loud
/// warning), and TLS certificate auth with VAULT_CLIENT_CERT/VAULT_CLIENT_KEY.
#[test]
fn capath_skip_verify_and_client_certificate_auth() {
    let Some(bao) = Bao::start("vault_tls_options", true) else {
        return;
    };
    if !require("vault_tls_options", &["openssl"]) {
        return;
    }
    let vol = enrolled(&bao);
    let b = s(&vol.backing);
    let dir = vol.dir.path();
    let token = format!("VAULT_TOKEN={}", bao.token);
    // VAULT_CAPATH: the dev CA among other files.
    let capath = dir.join("cas");
    std::fs::create_dir(&capath).expect("dir");
    std::fs::copy(bao.ca.as_ref().expect("ca"), capath.join("vault-ca.pem")).expect("copy");
    std::fs::write(capath.join("README"), "not a certificate").expect("readme");
    let out = bao
        .vd(
            &[token.clone(), format!("VAULT_CAPATH={}", s(&capath))],
            &["test-key", b, "--token-only"],
            None,
        )
        .ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    // VAULT_TLS_SERVER_NAME: the certificate is checked against that name (the dev
    // certificate names localhost), the connection still goes to 127.0.0.1.
    let ca_file = format!("VAULT_CACERT={}", s(bao.ca.as_ref().expect("ca")));
    bao.vd(
        &[
            token.clone(),
            ca_file.clone(),
            "VAULT_TLS_SERVER_NAME=localhost".into(),
        ],
        &["test-key", b, "--token-only"],
        None,
    )
    .ok();
    let out = bao.vd(
        &[
            token.clone(),
            ca_file,
            "VAULT_TLS_SERVER_NAME=elsewhere.example".into(),
        ],
        &["test-key", b, "--token-only"],
        None,
    );
    assert_vault_failure(&out, &bao.addr, "tls");
    // Without a CA: TLS fails; VAULT_SKIP_VERIFY=true works and warns.
    let out = bao.vd(
        std::slice::from_ref(&token),
        &["test-key", b, "--token-only"],
        None,
    );
    assert_vault_failure(&out, &bao.addr, "tls");
    let out = bao
        .vd(
            &[token.clone(), "VAULT_SKIP_VERIFY=true".into()],
            &["test-key", b, "--token-only"],
            None,
        )
        .ok();
    assert!(
        out.stderr.contains("warn") && out.stderr.contains("NOT verified"),
        "{}",
        out.describe()
    );
    // Client certificate auth: a CA of our own signs the client certificate.
    let ca_key = dir.join("client-ca.key");
    let ca = dir.join("client-ca.pem");
    sys(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            s(&ca_key),
            "-out",
            s(&ca),
            "-days",
            "1",
            "-subj",
            "/CN=vaultdisk client CA",
        ],
    )
    .ok();
    let key = dir.join("client.key");
    let csr = dir.join("client.csr");
    let cert = dir.join("client.pem");
    sys(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            s(&key),
            "-out",
            s(&csr),
            "-subj",
            "/CN=host1",
        ],
    )
    .ok();
    let ext = data_file(dir, "client.ext", b"extendedKeyUsage=clientAuth\n");
    sys(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca),
            "-CAkey",
            s(&ca_key),
            "-CAcreateserial",
            "-out",
            s(&cert),
            "-days",
            "1",
            "-extfile",
            s(&ext),
        ],
    )
    .ok();
    let policy = data_file(
        dir,
        "unlock.hcl",
        br#"path "transit/decrypt/disk" { capabilities = ["update"] }"#,
    );
    bao.cli(&["policy", "write", "disk-unlock", s(&policy)])
        .ok();
    bao.cli(&["auth", "enable", "cert"]).ok();
    bao.cli(&[
        "write",
        "auth/cert/certs/hosts",
        &format!("certificate=@{}", s(&ca)),
        "token_policies=disk-unlock",
    ])
    .ok();
    let ca_env = format!("VAULT_CACERT={}", s(bao.ca.as_ref().expect("ca")));
    let out = bao
        .vd(
            &[
                ca_env.clone(),
                format!("VAULT_CLIENT_CERT={}", s(&cert)),
                format!("VAULT_CLIENT_KEY={}", s(&key)),
            ],
            &["test-key", b, "--token-only", "--vault-cert-auth"],
            None,
        )
        .ok();
    assert!(out.stdout.contains("keyslot 1 opens"), "{}", out.describe());
    // Without the client certificate the login is refused; half the pair is a usage error.
    let out = bao.vd(
        std::slice::from_ref(&ca_env),
        &["test-key", b, "--token-only", "--vault-cert-auth"],
        None,
    );
    out.fails_with(1);
    bao.vd(
        &[ca_env, token, format!("VAULT_CLIENT_CERT={}", s(&cert))],
        &["test-key", b, "--token-only"],
        None,
    )
    .fails_with(1);
}
