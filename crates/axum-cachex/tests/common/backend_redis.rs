//! Redis test support: the factory for the conformance suite, a raw
//! connection for inspecting what the backend wrote, and private
//! redis-server processes for outage tests.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use axum_cachex::backend::{Backend, RedisBackend, RedisConfig};

/// A fresh backend on the suite's server, in its own namespace; `None` when
/// no server is configured (and none is required).
pub async fn redis() -> Option<Arc<dyn Backend>> {
    let backend = redis_backend(super::redis_url()?, "redis");
    Some(Arc::new(backend))
}

/// A fresh backend on the suite's Redis Cluster, in its own namespace.
#[allow(dead_code)]
pub async fn redis_cluster() -> Option<Arc<dyn Backend>> {
    let nodes = super::redis_cluster_nodes()?;
    Some(Arc::new(cluster_backend(nodes, "cluster")))
}

/// A concrete Cluster backend through these seeds, in its own namespace.
#[allow(dead_code)]
pub fn cluster_backend(nodes: Vec<String>, name: &str) -> RedisBackend {
    RedisConfig::new()
        .cluster_nodes(nodes)
        .key_prefix(super::unique_prefix(name))
        .build()
        .expect("build redis cluster backend")
}

/// A concrete backend on `url` in a namespace no other test uses.
pub fn redis_backend(url: String, name: &str) -> RedisBackend {
    config(url, name).build().expect("build redis backend")
}

/// The default test configuration: `url` and a unique prefix.
pub fn config(url: String, name: &str) -> RedisConfig {
    RedisConfig::from_url(url).key_prefix(super::unique_prefix(name))
}

/// A plain redis-rs connection to `url`, for looking behind the backend.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// The redis-server binary that outage tests start themselves.
pub fn redis_server_bin() -> Option<String> {
    super::server_env("AXUM_CACHEX_REDIS_SERVER_BIN", "a private redis-server")
}

/// A port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A redis-server of the test's own, on loopback, without persistence,
/// killed when dropped.
pub struct RedisProcess {
    bin: String,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisProcess {
    /// Starts a server on a free port and waits until it accepts
    /// connections. `extra` are additional `redis-server` arguments.
    pub fn start(bin: String, extra: &[&str]) -> Self {
        Self::start_on(bin, free_port(), extra)
    }

    /// Starts a server on `port`.
    pub fn start_on(bin: String, port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("axum-cachex-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut process = Self {
            bin,
            port,
            dir,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        process.restart();
        process
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with `SIGSTOP`: alive (the kernel still accepts
    /// connections and keeps the old ones open) but answering nothing.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen server (`SIGCONT`).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("server running");
        super::signal_process(child.id(), signal);
    }

    /// (Re)starts the server on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let child = Command::new(&self.bin)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir,
                "--daemonize",
                "no",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        // Bounded wait for the listening socket (a readiness poll, not a
        // time limit on the code under test).
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port for a Cluster node: free, and with its cluster-bus port (the
/// port + 10000, so the port is below 55536) free too.
#[allow(dead_code)]
pub fn free_cluster_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let random = RandomState::new().hash_one(attempt);
        let port = 20_000 + u16::try_from(random % 25_000).expect("below 25 000");
        let both = TcpListener::bind(("127.0.0.1", port))
            .and_then(|a| TcpListener::bind(("127.0.0.1", port + 10_000)).map(|b| (a, b)));
        if both.is_ok() {
            return port;
        }
    }
}

/// A Redis Cluster of the test's own: `primaries` servers on loopback,
/// slots spread evenly by `redis-cli --cluster create`, no replicas. Killed
/// when dropped.
#[allow(dead_code)]
pub struct RedisCluster {
    pub nodes: Vec<RedisProcess>,
}

#[allow(dead_code)]
impl RedisCluster {
    pub fn start(bin: String, primaries: usize) -> Self {
        let nodes: Vec<RedisProcess> = (0..primaries)
            .map(|_| {
                let port = free_cluster_port();
                let conf = format!("nodes-{port}.conf");
                RedisProcess::start_on(
                    bin.clone(),
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                        "--cluster-node-timeout",
                        "2000",
                        // Keep serving the live primaries' slots when one
                        // fails (there are no replicas to take over).
                        "--cluster-require-full-coverage",
                        "no",
                    ],
                )
            })
            .collect();
        let cli = std::path::Path::new(&bin).with_file_name("redis-cli");
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.wait_until_ok(&cli);
        cluster
    }

    /// Bounded wait until every node reports `cluster_state:ok` (a
    /// readiness poll, not a time limit on the code under test).
    fn wait_until_ok(&self, cli: &std::path::Path) {
        for _ in 0..400 {
            let ok = self.nodes.iter().all(|n| {
                Command::new(cli)
                    .args(["-p", &n.port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the test cluster never reached cluster_state:ok");
    }

    /// The seed URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisProcess::url).collect()
    }
}
