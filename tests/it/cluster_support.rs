//! A real 3-node OpenBao cluster with integrated (Raft) storage on 127.0.0.1, for the cluster
//! tests (tests/it/cluster.rs): one temp dir per cluster, a config file per node (storage
//! "raft" with retry_join to the other two, api_addr, cluster_addr), init with one key share,
//! every node unsealed, one leader and two standbys, then transit, KV v2 (`secret/`) and AppRole
//! enabled. The nodes are killed when the `Cluster` drops (also when a test panics), stopped
//! ones continued first. Every wait is bounded in time.
use crate::support::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster may take to come up (init, unseal, election, joins).
const UP_WITHIN: Duration = Duration::from_secs(60);
/// How long one HTTP call of the test harness may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// One `bao server` of the cluster.
pub struct Node {
    /// The API port (http://127.0.0.1:PORT).
    pub port: u16,
    cluster_port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

/// A running 3-node cluster.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: tempfile::TempDir,
    /// The root token (from init).
    pub root: String,
    unseal_key: String,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Answer of a harness HTTP call: status and JSON body (Null when empty or not JSON); status 0
/// when there was no HTTP answer at all.
pub struct Http {
    pub status: u16,
    pub body: Value,
}

impl Cluster {
    /// Starts a cluster, or None (skipped loudly) without `bao`.
    pub fn start(test: &str) -> Option<Cluster> {
        if !require(test, &["bao"]) {
            return None;
        }
        let dir = temp();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut nodes = Vec::new();
        for (i, &(port, cluster_port)) in ports.iter().enumerate() {
            let data = dir.path().join(format!("raft{i}"));
            std::fs::create_dir(&data).expect("raft dir");
            let joins: String = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (p, _))| {
                    format!(
                        "  retry_join {{\n    leader_api_addr = \"http://127.0.0.1:{p}\"\n  }}\n"
                    )
                })
                .collect();
            let config = dir.path().join(format!("node{i}.hcl"));
            std::fs::write(
                &config,
                format!(
                    "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node{i}\"\n{joins}}}\n\
                     listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\n\
                     api_addr = \"http://127.0.0.1:{port}\"\n\
                     cluster_addr = \"https://127.0.0.1:{cluster_port}\"\n\
                     disable_mlock = true\n",
                    s(&data)
                ),
            )
            .expect("config");
            nodes.push(Node {
                port,
                cluster_port,
                config,
                log: dir.path().join(format!("node{i}.log")),
                child: None,
                stopped: false,
            });
        }
        let mut c = Cluster {
            nodes,
            dir,
            root: String::new(),
            unseal_key: String::new(),
        };
        for i in 0..3 {
            c.spawn(i);
        }
        let started = Instant::now();
        // Init on node 0 once its listener answers.
        let mut init = None;
        while init.is_none() && started.elapsed() < UP_WITHIN {
            // Init writes the keyring through Raft: seconds, longer than HTTP_TIMEOUT.
            let r = c.http_within(
                Duration::from_secs(45),
                0,
                "PUT",
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
                false,
            );
            if r.status == 200 {
                init = Some(r.body);
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let init =
            init.unwrap_or_else(|| panic!("cluster: node 0 never initialised\n{}", c.logs()));
        c.root = init["root_token"].as_str().expect("root_token").to_string();
        c.unseal_key = init["keys_base64"][0]
            .as_str()
            .expect("unseal key")
            .to_string();
        c.unseal(0);
        assert!(
            c.wait(UP_WITHIN.saturating_sub(started.elapsed()), |c| c.leader()
                == Some(0)),
            "cluster: node 0 never became active\n{}",
            c.logs()
        );
        // Autopilot promotes a joined node to voter only after server_stabilization_time
        // (10 s by default): 1 s keeps start-up short.
        let r = c.http(
            0,
            "POST",
            "sys/storage/raft/autopilot/configuration",
            Some(json!({"server_stabilization_time": "1s"})),
            true,
        );
        assert!(
            r.status < 300,
            "cluster: autopilot: HTTP {} {}",
            r.status,
            r.body
        );
        for i in 1..3 {
            c.unseal(i);
        }
        c.wait_healthy(UP_WITHIN.saturating_sub(started.elapsed()));
        for (path, body) in [
            ("sys/mounts/transit", json!({"type": "transit"})),
            (
                "sys/mounts/secret",
                json!({"type": "kv", "options": {"version": "2"}}),
            ),
            ("sys/auth/approle", json!({"type": "approle"})),
        ] {
            let r = c.http(0, "POST", path, Some(body), true);
            assert!(
                r.status < 300,
                "cluster: {path}: HTTP {} {}",
                r.status,
                r.body
            );
        }
        eprintln!(
            "cluster: 3 nodes up in {} ms",
            started.elapsed().as_millis()
        );
        Some(c)
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log");
        let child = Command::new(tool("bao"))
            .args(["server", &format!("-config={}", s(&node.config))])
            .env("HOME", self.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("dup")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start bao server");
        node.child = Some(child);
        node.stopped = false;
    }

    /// Unseals node `i` (retried while it is still joining), bounded.
    pub fn unseal(&self, i: usize) {
        let key = self.unseal_key.clone();
        let ok = self.wait(Duration::from_secs(30), |c| {
            let r = c.http(i, "PUT", "sys/unseal", Some(json!({"key": key})), false);
            r.status == 200 && r.body["sealed"] == json!(false)
        });
        assert!(ok, "cluster: node {i} did not unseal\n{}", self.logs());
    }

    /// Waits (bounded) until there is one active node and the other live ones are unsealed
    /// standbys that know it, and the Raft configuration lists three voters.
    pub fn wait_healthy(&self, limit: Duration) {
        let ok = self.wait(limit, |c| {
            let Some(leader) = c.leader() else {
                return false;
            };
            let live: Vec<usize> = (0..3).filter(|&i| c.nodes[i].child.is_some()).collect();
            let standbys_ok = live.iter().filter(|&&i| i != leader).all(|&i| {
                let r = c.http(i, "GET", "sys/leader", None, false);
                r.body["is_self"] == json!(false)
                    && r.body["leader_address"] == json!(c.addr(leader))
                    && c.http(i, "GET", "sys/health", None, false).status == 429
            });
            let voters = c
                .http(leader, "GET", "sys/storage/raft/configuration", None, true)
                .body["data"]["config"]["servers"]
                .as_array()
                .map_or(0, |a| {
                    a.iter().filter(|s| s["voter"] == json!(true)).count()
                });
            standbys_ok && voters == 3
        });
        assert!(
            ok,
            "cluster: not one leader and two standbys\n{}",
            self.logs()
        );
    }

    /// Waits until `cond` holds, polling every 100 ms, at most `limit`.
    pub fn wait(&self, limit: Duration, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if cond(self) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The active node, as the live nodes see it (None during an election).
    pub fn leader(&self) -> Option<usize> {
        (0..3)
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].stopped)
            .find(|&i| {
                let r = self.http(i, "GET", "sys/leader", None, false);
                r.body["is_self"] == json!(true)
                    && self.http(i, "GET", "sys/health", None, false).status == 200
            })
    }

    /// A live standby (panics when there is none).
    pub fn standby(&self) -> usize {
        let leader = self.leader().expect("a leader");
        (0..3)
            .find(|&i| i != leader && self.nodes[i].child.is_some() && !self.nodes[i].stopped)
            .expect("a standby")
    }

    /// kill -9 of node `i`, reaped.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            if self.nodes[i].stopped {
                signal(child.id(), "CONT");
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].stopped = false;
    }

    /// SIGSTOP (`stop`) or SIGCONT of node `i`: a hung server that keeps its sockets.
    pub fn pause(&mut self, i: usize, stop: bool) {
        if let Some(child) = &self.nodes[i].child {
            signal(child.id(), if stop { "STOP" } else { "CONT" });
            self.nodes[i].stopped = stop;
        }
    }

    /// The process id of node `i`.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    /// One API call to node `i` (with the root token when `auth`).
    pub fn http(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Http {
        self.http_within(HTTP_TIMEOUT, i, method, path, body, auth)
    }

    /// `http` with its own timeout.
    pub fn http_within(
        &self,
        timeout: Duration,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> Http {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .max_redirects(0)
            .build()
            .into();
        let url = format!("{}/v1/{path}", self.addr(i));
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("X-Vault-Request", "true");
        if auth {
            req = req.header("X-Vault-Token", self.root.as_str());
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let Ok(req) = req.body(bytes.into_bytes()) else {
            return Http {
                status: 0,
                body: Value::Null,
            };
        };
        match agent.run(req) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.into_body().read_to_string().unwrap_or_default();
                Http {
                    status,
                    body: serde_json::from_str(&text).unwrap_or(Value::Null),
                }
            }
            Err(_) => Http {
                status: 0,
                body: Value::Null,
            },
        }
    }

    /// `http` that must succeed (2xx), through the leader.
    pub fn root_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let leader = self.leader().expect("a leader");
        let r = self.http(leader, method, path, body, true);
        assert!(
            r.status < 300,
            "{method} {path}: HTTP {} {}",
            r.status,
            r.body
        );
        r.body
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- node{i} (api {}, cluster {}):\n{}",
                    n.port,
                    n.cluster_port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
