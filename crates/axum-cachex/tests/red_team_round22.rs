//! Red-team round 22: Redis Cluster reads (`run_read`, `read_on`, a
//! `MOVED` followed to the node it names) and the memory tier's fill read,
//! now one Lua script (`GET_WITH_TTL_LUA`, `EVALSHA`) instead of a
//! `GET`+`PTTL` pipeline.
//!
//! Written by a fresh-context reviewer from the change and the rules. Every
//! test not marked `REGRESSION GUARD` failed on the reviewed code because
//! of a real bug, since fixed (the fill read is a read-only `GET`+`PTTL`
//! pipeline again; when a migrating slot answers `ASK`, the two are read one
//! after the other):
//! - `a_tiered_read_is_served_while_the_server_pauses_writes` (the fill
//!   read is an `EVALSHA` of a script without `#!lua flags=no-writes`,
//!   which Redis holds during a write pause like any write).
//!
//! Each Redis test starts its own private servers, so they need
//! `AXUM_CACHEX_REDIS_SERVER_BIN` (with `redis-cli` next to it):
//!
//! ```sh
//! AXUM_CACHEX_REDIS_SERVER_BIN=/usr/bin/redis-server \
//!   cargo nextest run --all-features -p axum-cachex --test red_team_round22
//! ```
#![cfg(feature = "redis")]

mod common;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use axum_cachex::backend::{Backend, MemoryTier, RedisBackend, RedisConfig};
use bytes::Bytes;
use common::backend_redis::{RedisProcess, free_cluster_port, redis_server_bin};

const TTL: Option<Duration> = Some(Duration::from_secs(120));

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn cli_bin(bin: &str) -> PathBuf {
    std::path::Path::new(bin).with_file_name("redis-cli")
}

/// `redis-cli -p PORT [-a PW] args…`, stdout.
fn cli(bin: &str, port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new(cli_bin(bin));
    cmd.args(["-p", &port.to_string()]);
    if let Some(pw) = password {
        cmd.args(["-a", pw, "--no-auth-warning"]);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private cluster: `primaries` primaries, each with `replicas`
/// replicas, every node started with `extra` arguments too. `password`
/// is given to `redis-cli` (the nodes need `--requirepass` in `extra`).
struct Cluster {
    bin: String,
    nodes: Vec<RedisProcess>,
    password: Option<String>,
}

impl Cluster {
    fn start(
        bin: &str,
        primaries: usize,
        replicas: usize,
        password: Option<&str>,
        extra: &[&str],
    ) -> Self {
        let nodes: Vec<RedisProcess> = (0..primaries * (1 + replicas))
            .map(|_| {
                let port = free_cluster_port();
                let conf = format!("nodes-{port}.conf");
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-require-full-coverage",
                    "no",
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                args.extend_from_slice(extra);
                RedisProcess::start_on(bin.to_owned(), port, &args)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut cmd = Command::new(cli_bin(bin));
        if let Some(pw) = password {
            cmd.args(["-a", pw, "--no-auth-warning"]);
        }
        let status = cmd
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(status.success(), "cluster create failed");
        let cluster = Self {
            bin: bin.to_owned(),
            nodes,
            password: password.map(str::to_owned),
        };
        cluster.wait_ok();
        cluster
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(&self.bin, port, self.password.as_deref(), args)
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }

    /// Bounded wait until every running node says `cluster_state:ok` and
    /// they agree on the slot owners (a readiness poll).
    fn wait_ok(&self) {
        for _ in 0..600 {
            let views: Vec<String> = self
                .ports()
                .iter()
                .map(|p| self.cli(*p, &["cluster", "info"]))
                .collect();
            let synced = self.ports().iter().all(|p| {
                let role = self.cli(*p, &["info", "replication"]);
                role.contains("role:master") || role.contains("master_link_status:up")
            });
            if synced && views.iter().all(|v| v.contains("cluster_state:ok")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the cluster never became ok");
    }

    fn node_id(&self, port: u16) -> String {
        self.cli(port, &["cluster", "myid"]).trim().to_owned()
    }

    fn keyslot(&self, key: &[u8]) -> u16 {
        self.cli(
            self.nodes[0].port,
            &["cluster", "keyslot", &String::from_utf8_lossy(key)],
        )
        .trim()
        .parse()
        .expect("keyslot")
    }

    /// A raw connection to one node (authenticated when needed).
    async fn raw(&self, port: u16) -> redis::aio::MultiplexedConnection {
        let url = match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{port}"),
            None => format!("redis://127.0.0.1:{port}"),
        };
        redis::Client::open(url)
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }

    /// Which primary port holds each raw key matching `pattern` (`KEYS` on
    /// every node that is a primary).
    async fn locate(&self, pattern: &str) -> BTreeMap<Vec<u8>, u16> {
        let mut found = BTreeMap::new();
        for port in self.ports() {
            if !self.cli(port, &["role"]).starts_with("master") {
                continue;
            }
            let mut conn = self.raw(port).await;
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .expect("KEYS");
            for k in keys {
                found.insert(k, port);
            }
        }
        found
    }

    /// Starts moving `slot` from `owner` to `target` (IMPORTING, MIGRATING)
    /// and migrates every key of it; `finish` then assigns the slot to
    /// `target` everywhere (a completed resharding step).
    async fn migrate_slot(&self, slot: u16, owner: u16, target: u16, finish: bool) {
        let (owner_id, target_id) = (self.node_id(owner), self.node_id(target));
        let mut dst = self.raw(target).await;
        let mut src = self.raw(owner).await;
        let slot_arg = slot.to_string();
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot_arg, "IMPORTING", &owner_id])
            .query_async(&mut dst)
            .await
            .expect("importing");
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot_arg, "MIGRATING", &target_id])
            .query_async(&mut src)
            .await
            .expect("migrating");
        let in_slot: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1000)
            .query_async(&mut src)
            .await
            .expect("getkeysinslot");
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(target)
            .arg("")
            .arg(0)
            .arg(5000);
        if let Some(pw) = &self.password {
            migrate.arg("AUTH").arg(pw);
        }
        let _: () = migrate
            .arg("KEYS")
            .arg(&in_slot)
            .query_async(&mut src)
            .await
            .expect("migrate");
        if !finish {
            return;
        }
        for port in self.ports() {
            let mut conn = self.raw(port).await;
            let _: () = redis::cmd("CLUSTER")
                .arg(&["SETSLOT", &slot_arg, "NODE", &target_id])
                .query_async(&mut conn)
                .await
                .expect("setslot node");
        }
    }
}

/// A Cluster backend with short, explicit timeouts.
fn backend_for(cluster: &Cluster, prefix: &str, timeout: Duration) -> RedisConfig {
    let mut config = RedisConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix(prefix)
        .command_timeout(timeout)
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(200));
    if let Some(pw) = &cluster.password {
        config = config.password(pw.clone());
    }
    config
}

/// Reads `key` for a while, so that the backend has read its slot map (in
/// the background) and reads go straight to the primaries.
async fn warm(be: &RedisBackend, key: &str) {
    for _ in 0..20 {
        let _ = be.get(key).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------
// Failing tests: each one documents a bug
// ---------------------------------------------------------------------------

/// **With the memory tier, a read blocks while the server pauses writes.**
///
/// The fill read is now `EVALSHA` of a script without a `no-writes`
/// shebang. Redis 7 treats such a script as a possible write: `CLIENT
/// PAUSE … WRITE` (and the write pause a `FAILOVER` / `CLUSTER FAILOVER`
/// puts on the old primary) holds every `EVAL`/`EVALSHA` until the pause
/// ends, while `GET` and `PTTL` — the pipeline it replaced — are served.
/// So for the whole pause every tier fill times out (and feeds the
/// breaker), though the server is answering reads.
///
/// Expected (rules: a read goes to the primary and is answered while it
/// serves; a breaker opens only for a dead/frozen node): the value, within
/// the command timeout. The plain backend's `get` (a `GET`) gets it during
/// the same pause (asserted first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_read_is_served_while_the_server_pauses_writes() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let server = RedisProcess::start(bin.clone(), &[]);
    let timeout = Duration::from_millis(300);
    let plain = RedisConfig::from_url(server.url())
        .key_prefix("pause:")
        .command_timeout(timeout)
        .build()
        .expect("plain backend");
    plain
        .set("k", Bytes::from_static(b"v1"), TTL)
        .await
        .expect("set");
    let tiered = RedisConfig::from_url(server.url())
        .key_prefix("pause:")
        .command_timeout(timeout)
        .memory_tier(MemoryTier::new(1 << 20))
        .build()
        .expect("tiered backend");
    // Connected, its subscription made, the script loaded: a read of
    // another key.
    let _ = tiered.get("other").await;

    assert!(
        cli(
            &bin,
            server.port,
            None,
            &["client", "pause", "3000", "write"]
        )
        .contains("OK")
    );
    let got = plain.get("k").await;
    assert_eq!(
        got.as_ref().ok().cloned().flatten(),
        Some(Bytes::from_static(b"v1")),
        "a plain GET during a write pause: {got:?}"
    );
    let started = Instant::now();
    let got = tiered.get("k").await;
    let took = started.elapsed();
    let _ = cli(&bin, server.port, None, &["client", "unpause"]);
    assert_eq!(
        got.as_ref().ok().cloned().flatten(),
        Some(Bytes::from_static(b"v1")),
        "a tiered read during a write pause (took {took:?}): {got:?}"
    );
}

// ---------------------------------------------------------------------------
// Regression guard
// ---------------------------------------------------------------------------

/// REGRESSION GUARD (passes). After a completed slot move, a reader whose
/// slot map still names the old owner follows the `MOVED` to the new one:
/// it gets the value written (through another backend) after the move,
/// never the old one, and within the command timeout; and after a
/// delete, a miss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_slot_move_follows_moved_to_the_fresh_value() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = Cluster::start(&bin, 3, 0, None, &[]);
    let timeout = Duration::from_millis(400);
    let writer = backend_for(&cluster, "mv:", timeout)
        .build()
        .expect("writer");
    writer
        .set("k", Bytes::from_static(b"v1"), TTL)
        .await
        .expect("set");
    let reader = backend_for(&cluster, "mv:", timeout)
        .build()
        .expect("reader");
    warm(&reader, "k").await;
    assert_eq!(
        reader.get("k").await.expect("get"),
        Some(Bytes::from_static(b"v1"))
    );
    let located = cluster.locate("mv:*").await;
    let (raw_key, owner) = located.iter().next().expect("the key");
    let owner = *owner;
    let slot = cluster.keyslot(raw_key);
    let target = cluster
        .ports()
        .into_iter()
        .find(|p| *p != owner)
        .expect("another primary");
    cluster.migrate_slot(slot, owner, target, true).await;
    writer
        .set("k", Bytes::from_static(b"v2"), TTL)
        .await
        .expect("set after the move");
    let started = Instant::now();
    let got = reader.get("k").await;
    let took = started.elapsed();
    assert_eq!(
        got.as_ref().ok().cloned().flatten(),
        Some(Bytes::from_static(b"v2")),
        "after the move: {got:?}"
    );
    assert!(
        took <= timeout + Duration::from_millis(100),
        "took {took:?}"
    );
    writer.delete("k").await.expect("delete");
    assert_eq!(reader.get("k").await.expect("get after delete"), None);
}
