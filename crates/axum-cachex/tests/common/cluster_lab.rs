//! Private Redis Clusters for the red-team tests of Cluster reads (rounds
//! 21 and 22): with replicas, with passwords, and the `redis-cli` and raw
//! connections to drive them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use axum_cachex::backend::{Backend, RedisBackend, RedisConfig};

use super::backend_redis::{RedisProcess, free_cluster_port};

pub fn cli_bin(bin: &str) -> PathBuf {
    std::path::Path::new(bin).with_file_name("redis-cli")
}

/// `redis-cli -p PORT [-a PW] args…`, stdout.
pub fn cli(bin: &str, port: u16, password: Option<&str>, args: &[&str]) -> String {
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
pub struct Cluster {
    pub bin: String,
    pub nodes: Vec<RedisProcess>,
    pub password: Option<String>,
}

impl Cluster {
    pub fn start(
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

    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(&self.bin, port, self.password.as_deref(), args)
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }

    /// Bounded wait until every running node says `cluster_state:ok` and
    /// they agree on the slot owners (a readiness poll).
    pub fn wait_ok(&self) {
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

    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["cluster", "myid"]).trim().to_owned()
    }

    pub fn keyslot(&self, key: &[u8]) -> u16 {
        self.cli(
            self.nodes[0].port,
            &["cluster", "keyslot", &String::from_utf8_lossy(key)],
        )
        .trim()
        .parse()
        .expect("keyslot")
    }

    /// A raw connection to one node (authenticated when needed).
    pub async fn raw(&self, port: u16) -> redis::aio::MultiplexedConnection {
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
    pub async fn locate(&self, pattern: &str) -> BTreeMap<Vec<u8>, u16> {
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
    pub async fn migrate_slot(&self, slot: u16, owner: u16, target: u16, finish: bool) {
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
pub fn backend_for(cluster: &Cluster, prefix: &str, timeout: Duration) -> RedisConfig {
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
pub async fn warm(be: &RedisBackend, key: &str) {
    for _ in 0..20 {
        let _ = be.get(key).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
