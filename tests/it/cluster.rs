//! Vault unlock, enrolment and rewrap against a real 3-node OpenBao Raft cluster
//! (tests/it/cluster_support.rs): writes and their read-back through a standby, several
//! addresses, a node killed or hung mid-unlock, an election in progress.
use crate::cluster_support::Cluster;
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// vaultdisk with a clean vault environment plus `env` (KEY=VALUE), HOME without a token file.
fn vd(c: &Cluster, env: &[String], args: &[&str]) -> Out {
    let home = c.dir.path().join("vd-home");
    std::fs::create_dir_all(&home).expect("vd home");
    let mut all: Vec<String> = [
        "VAULT_TOKEN",
        "BAO_TOKEN",
        "VAULT_ADDR",
        "BAO_ADDR",
        "VAULT_CACERT",
        "BAO_CACERT",
        "VAULT_NAMESPACE",
        "VAULT_CLIENT_TIMEOUT",
        "VAULT_MAX_RETRIES",
    ]
    .iter()
    .flat_map(|v| ["-u".to_string(), v.to_string()])
    .collect();
    all.push(format!("HOME={}", s(&home)));
    all.extend(env.iter().cloned());
    all.push(BIN.to_string());
    all.extend(args.iter().map(|a| a.to_string()));
    run("env", &all, None)
}

/// The root token and VAULT_ADDR=`addr`.
fn env_at(c: &Cluster, addr: &str) -> Vec<String> {
    vec![
        format!("VAULT_ADDR={addr}"),
        format!("VAULT_TOKEN={}", c.root),
    ]
}

/// `vault enroll` of `vol` with `kek` flags through `addr`.
fn enroll(c: &Cluster, vol: &Vol, addr: &str, kek: &[&str]) -> Out {
    let mut args = vec![
        "vault",
        "enroll",
        s(&vol.backing),
        "--key-file",
        s(&vol.key),
    ];
    args.extend_from_slice(kek);
    vd(c, &env_at(c, addr), &args)
}

fn vault_list(c: &Cluster, vol: &Vol) -> Vec<Value> {
    let out = vd(c, &[], &["vault", "list", s(&vol.backing), "--json"]).ok();
    serde_json::from_str::<Value>(&out.stdout)
        .expect("vault list --json")
        .as_array()
        .cloned()
        .expect("array")
}

/// Item 1: `enroll --create` through a standby makes the transit key (or KV secret) through the
/// active node and reads it back where it is consistent; before, the standby answered the
/// read-back itself, from storage that did not have the new key yet ("permission denied",
/// "has nothing at secret/data/...") although the key had been created.
#[test]
fn enroll_create_through_a_standby_succeeds_for_transit_and_kv() {
    let Some(c) = Cluster::start("enroll_create_through_a_standby") else {
        return;
    };
    let standby = c.addr(c.standby());
    for round in 0..3 {
        let vol = Vol::new("8M", &[]);
        let key = format!("disk{round}");
        enroll(&c, &vol, &standby, &["--transit-key", &key, "--create"]).ok();
        let path = format!("disks/db{round}");
        enroll(&c, &vol, &standby, &["--kv-path", &path, "--create"]).ok();
        let rows = vault_list(&c, &vol);
        assert_eq!(rows.len(), 2, "{rows:?}");
        // Each token opens its keyslot through every node.
        for i in 0..3 {
            vd(
                &c,
                &env_at(&c, &c.addr(i)),
                &["test-key", s(&vol.backing), "--token-only"],
            )
            .ok();
        }
    }
}

/// Item 1: rewrap through a standby right after a rotate on the leader moves the token to the
/// new version, never "already at the latest version" from a lagging standby.
#[test]
fn rewrap_through_a_standby_right_after_a_rotate_on_the_leader() {
    let Some(c) = Cluster::start("rewrap_through_a_standby") else {
        return;
    };
    let leader = c.addr(c.leader().expect("leader"));
    let standby = c.addr(c.standby());
    let vol = Vol::new("8M", &[]);
    enroll(&c, &vol, &leader, &["--transit-key", "disk", "--create"]).ok();
    enroll(&c, &vol, &leader, &["--kv-path", "disks/db", "--create"]).ok();
    for round in 1..=3u64 {
        c.root_call("POST", "transit/keys/disk/rotate", None);
        let kek = sha256(format!("kek{round}").as_bytes());
        let kek_b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&kek.as_bytes()[..32])
        };
        c.root_call(
            "POST",
            "secret/data/disks/db",
            Some(json!({"data": {"kek": kek_b64}})),
        );
        let out = vd(
            &c,
            &env_at(&c, &standby),
            &["vault", "rewrap", s(&vol.backing)],
        )
        .ok();
        assert!(
            !out.stdout.contains("latest"),
            "round {round}: a standby's stale answer:\n{}",
            out.describe()
        );
        let rows = vault_list(&c, &vol);
        for r in &rows {
            assert_eq!(
                r["key_version"],
                json!(round + 1),
                "round {round}: {rows:?}"
            );
        }
        vd(
            &c,
            &env_at(&c, &standby),
            &["test-key", s(&vol.backing), "--token-only"],
        )
        .ok();
    }
}

/// `test-key BACKING --token-only` with the root token and `env`; (output, seconds taken).
fn unlock(c: &Cluster, vol: &Vol, env: &[String]) -> (Out, f64) {
    let mut all = vec![format!("VAULT_TOKEN={}", c.root)];
    all.extend(env.iter().cloned());
    let t = Instant::now();
    let out = vd(c, &all, &["test-key", s(&vol.backing), "--token-only"]);
    (out, t.elapsed().as_secs_f64())
}

/// Item 2: the recorded node killed while VAULT_ADDR or a second address points at a live
/// one; a comma list in VAULT_ADDR recorded in the token; `rewrap --set-addr` re-points a token.
#[test]
fn recorded_node_killed_while_another_address_is_live() {
    let Some(mut c) = Cluster::start("recorded_node_killed") else {
        return;
    };
    let leader = c.leader().expect("leader");
    let s1 = c.standby();
    let s2 = (0..3)
        .find(|&i| i != leader && i != s1)
        .expect("second standby");
    let vol = Vol::new("8M", &[]);
    // One token recorded at the standby alone, one at "a dead address, then the leader".
    enroll(
        &c,
        &vol,
        &c.addr(s1),
        &["--transit-key", "disk", "--create"],
    )
    .ok();
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    });
    let list = format!("{dead},{}", c.addr(leader));
    enroll(&c, &vol, &list, &["--kv-path", "disks/db", "--create"]).ok();
    let rows = vault_list(&c, &vol);
    assert_eq!(rows[0]["vault_addrs"], json!([c.addr(s1)]), "{rows:?}");
    assert_eq!(rows[1]["vault_addr"], json!(dead), "{rows:?}");
    assert_eq!(
        rows[1]["vault_addrs"],
        json!([dead, c.addr(leader)]),
        "{rows:?}"
    );
    c.kill(s1);
    // Token 0 alone (its keyslot): the recorded node is dead; the environment names a live one.
    let only0 = |extra: &[&str]| {
        let mut a = vec![
            "test-key",
            s(&vol.backing),
            "--token-only",
            "--key-slot",
            "1",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let env_live = vec![
        format!("VAULT_TOKEN={}", c.root),
        format!("VAULT_ADDR={}", c.addr(s2)),
    ];
    let args = only0(&[]);
    let t = Instant::now();
    let out = vd(
        &c,
        &env_live,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .ok();
    eprintln!(
        "FIGURE unlock with the recorded node dead, VAULT_ADDR live: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    assert!(out.stdout.contains("keyslot 1"), "{}", out.describe());
    // A second --vault-addr, no environment address.
    let args = only0(&["--vault-addr", &dead, "--vault-addr", &c.addr(s2)]);
    vd(
        &c,
        &[format!("VAULT_TOKEN={}", c.root)],
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .ok();
    // Without either, token 0's one dead address fails and says so.
    let args = only0(&[]);
    let out = vd(
        &c,
        &[format!("VAULT_TOKEN={}", c.root)],
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    out.check_error(&[2]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.stderr.contains(&c.addr(s1)), "{}", out.describe());
    // Token 1 (dead address first, then the leader) works with no environment at all.
    vd(
        &c,
        &[format!("VAULT_TOKEN={}", c.root)],
        &[
            "test-key",
            s(&vol.backing),
            "--token-only",
            "--key-slot",
            "2",
        ],
    )
    .ok();
    // Re-point token 0 to the live nodes; the token is only changed when they unwrap it.
    let live = format!("{},{}", c.addr(s2), c.addr(leader));
    let out = vd(
        &c,
        &[format!("VAULT_TOKEN={}", c.root)],
        &[
            "vault",
            "rewrap",
            s(&vol.backing),
            "--token",
            "0",
            "--set-addr",
            &live,
        ],
    )
    .ok();
    assert!(out.stdout.contains("vault address"), "{}", out.describe());
    let rows = vault_list(&c, &vol);
    assert_eq!(
        rows[0]["vault_addrs"],
        json!([c.addr(s2), c.addr(leader)]),
        "{rows:?}"
    );
    let args = only0(&[]);
    vd(
        &c,
        &[format!("VAULT_TOKEN={}", c.root)],
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .ok();
    // --set-addr to addresses that do not answer leaves the token alone.
    let before = vault_list(&c, &vol);
    let out = vd(
        &c,
        &[format!("VAULT_TOKEN={}", c.root)],
        &[
            "vault",
            "rewrap",
            s(&vol.backing),
            "--token",
            "0",
            "--set-addr",
            &dead,
        ],
    );
    out.check_error(&[2]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(vault_list(&c, &vol), before);
    // cryptsetup still reads the header with the added member.
    if require("recorded_node_killed cryptsetup", &["cryptsetup"]) {
        let out = run("cryptsetup", &["luksDump", s(&vol.backing)], None);
        assert_eq!(out.code, 0, "{}", out.describe());
        assert!(out.stdout.contains("vaultdisk-vault"), "{}", out.describe());
    }
}

/// Item 3: unlocks in flight while the node they use is killed (kill -9) all succeed, on
/// the token's second address; the figure is the time to a successful unlock after the kill.
#[test]
fn in_flight_unlocks_survive_their_node_being_killed() {
    let Some(mut c) = Cluster::start("in_flight_unlocks") else {
        return;
    };
    let victim = c.standby();
    let leader = c.leader().expect("leader");
    let vol = Vol::new("8M", &[]);
    let list = format!("{},{}", c.addr(victim), c.addr(leader));
    enroll(&c, &vol, &list, &["--transit-key", "disk", "--create"]).ok();
    let done = std::sync::atomic::AtomicBool::new(false);
    let killed_at = std::sync::Mutex::new(None::<Instant>);
    let first_after = std::sync::Mutex::new(None::<f64>);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let start = Instant::now();
                while !done.load(std::sync::atomic::Ordering::Relaxed)
                    && start.elapsed() < Duration::from_secs(20)
                {
                    let begun = Instant::now();
                    let (out, _) = unlock(&c, &vol, &[]);
                    if out.code == 0
                        && let Some(k) = *killed_at.lock().unwrap()
                        && begun >= k
                    {
                        let mut f = first_after.lock().unwrap();
                        if f.is_none() {
                            *f = Some(k.elapsed().as_secs_f64());
                        }
                    }
                    results.lock().unwrap().push(out);
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        let pid = c.pid(victim).expect("pid");
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        *killed_at.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(Duration::from_secs(3));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    c.kill(victim);
    let results = results.into_inner().unwrap();
    assert!(results.len() >= 8, "only {} unlocks ran", results.len());
    for out in &results {
        assert_eq!(out.code, 0, "an unlock failed:\n{}", out.describe());
    }
    // Measured from the kill to the end of the first unlock started after it.
    if let Some(f) = first_after.into_inner().unwrap() {
        eprintln!(
            "FIGURE kill -9 of the node in use -> successful unlock: {:.0} ms ({} unlocks, all ok)",
            f * 1000.0,
            results.len()
        );
    }
    // kill -9 of the leader: unlocks through the token's survivors (none of the two recorded
    // now answers writes, but decrypt is served by a standby).
    let leader = c.leader().expect("leader");
    let survivor = (0..3)
        .find(|&i| i != leader && i != victim)
        .expect("survivor");
    c.kill(leader);
    let killed = Instant::now();
    let (out, _) = unlock(&c, &vol, &[format!("VAULT_ADDR={}", c.addr(survivor))]);
    out.ok();
    eprintln!(
        "FIGURE kill -9 of the leader -> successful unlock (via VAULT_ADDR survivor): {:.0} ms",
        killed.elapsed().as_secs_f64() * 1000.0
    );
}

/// Item 4: a write through a standby with no active node (leader and one standby killed:
/// quorum lost, as in a long election) says so, after bounded retries; unlocks still work
/// there (a standby serves decrypt).
#[test]
fn no_active_node_is_named_and_unlocks_still_work() {
    let Some(mut c) = Cluster::start("no_active_node") else {
        return;
    };
    let leader = c.leader().expect("leader");
    let s1 = c.standby();
    let last = (0..3).find(|&i| i != leader && i != s1).expect("third");
    let vol = Vol::new("8M", &[]);
    enroll(
        &c,
        &vol,
        &c.addr(last),
        &["--transit-key", "disk", "--create"],
    )
    .ok();
    // The key reached `last` (Raft replicates within moments; bounded wait).
    assert!(
        c.wait(Duration::from_secs(10), |c| unlock(c, &vol, &[]).0.code
            == 0),
        "the transit key never reached node {last}"
    );
    c.kill(leader);
    c.kill(s1);
    let t = Instant::now();
    let out = enroll(
        &c,
        &vol,
        &c.addr(last),
        &["--transit-key", "disk2", "--create"],
    );
    let took = t.elapsed();
    out.check_error(&[2]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.stderr.contains("no active node (leader election?)")
            && out.stderr.contains(&c.addr(last)),
        "{}",
        out.describe()
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let (out, secs) = unlock(&c, &vol, &[]);
    out.ok();
    eprintln!(
        "FIGURE unlock through the last standby without quorum: {:.0} ms",
        secs * 1000.0
    );
}

/// Item 5: a hung node (SIGSTOP: it accepts connections and never answers) with three tokens
/// recorded at it first costs one short first attempt, not 10 s per token.
#[test]
fn a_hung_node_with_three_tokens_costs_bounded_time() {
    let Some(mut c) = Cluster::start("hung_node") else {
        return;
    };
    let hung = c.standby();
    let leader = c.leader().expect("leader");
    let vol = Vol::new("8M", &[]);
    let list = format!("{},{}", c.addr(hung), c.addr(leader));
    for k in ["d1", "d2", "d3"] {
        enroll(&c, &vol, &list, &["--transit-key", k, "--create"]).ok();
    }
    // --token-only: only the three vault tokens are tried.
    c.pause(hung, true);
    let (out, secs) = unlock(&c, &vol, &[]);
    c.pause(hung, false);
    out.ok();
    eprintln!(
        "FIGURE three tokens, first address SIGSTOPped: {:.1} s",
        secs
    );
    assert!(secs < 8.0, "took {secs:.1} s with a hung node");
    // The hung node named by --vault-addr too (tried first, then the recorded addresses):
    // still one short attempt per address, the tokens concurrently.
    c.pause(hung, true);
    let t = Instant::now();
    let out = vd(
        &c,
        &[
            format!("VAULT_TOKEN={}", c.root),
            "VAULT_CLIENT_TIMEOUT=3".into(),
        ],
        &[
            "test-key",
            s(&vol.backing),
            "--token-only",
            "--vault-addr",
            &c.addr(hung),
        ],
    );
    let secs = t.elapsed().as_secs_f64();
    c.pause(hung, false);
    out.ok();
    assert!(secs < 8.0, "took {secs:.1} s");
}
