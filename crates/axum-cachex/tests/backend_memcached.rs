//! The conformance suite on real Memcached servers, plus what is particular
//! to Memcached: consistent hashing, awkward keys, TTL clamping, generation
//! counters, and a server going away and coming back.
#![cfg(feature = "memcached")]

mod common;

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    time::Duration,
};

use axum_cachex::backend::{Backend, BackendError, MemcachedBackend, PathInvalidation};
use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

conformance_suite!(common::backend_memcached::memcached);

/// The conformance suite that `axum-cachex-core` publishes, with real
/// sleeping for the expiry check (Memcached counts whole seconds).
#[tokio::test]
async fn passes_the_published_conformance_suite() {
    let Some((be, _)) = backend() else { return };
    let report = common::conformance::run(&be, tokio::time::sleep).await;
    let skipped: Vec<_> = report.skipped.iter().map(|(check, _)| *check).collect();
    assert_eq!(skipped, ["listing"], "Memcached cannot list keys");
}

const TTL: Option<Duration> = Some(Duration::from_secs(60));

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A backend on the suite's servers with a prefix of its own, or `None` when
/// the servers are not configured (and not required).
fn backend_with_prefix(prefix: &str) -> Option<MemcachedBackend> {
    let servers = common::memcached_servers()?;
    Some(
        MemcachedBackend::builder()
            .servers(servers)
            .key_prefix(prefix)
            .build()
            .expect("config"),
    )
}

fn backend() -> Option<(MemcachedBackend, String)> {
    let prefix = common::unique_prefix("mcx");
    backend_with_prefix(&prefix).map(|be| (be, prefix))
}

/// Sends one raw text-protocol command and reads the reply up to `end`.
async fn raw(addr: &str, command: &[u8], end: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(command).await.expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.ends_with(end) {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "server closed after {reply:?}");
        reply.extend_from_slice(&buf[..n]);
    }
    reply
}

/// The data of `key` on the server at `addr`, read with a raw `get`.
async fn raw_get(addr: &str, key: &str) -> Option<Vec<u8>> {
    let reply = raw(addr, format!("get {key}\r\n").as_bytes(), b"END\r\n").await;
    let header_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let header = std::str::from_utf8(&reply[..header_end]).expect("ascii");
    let len: usize = header
        .strip_prefix("VALUE ")?
        .split(' ')
        .nth(2)?
        .parse()
        .ok()?;
    Some(reply[header_end + 2..header_end + 2 + len].to_vec())
}

#[test]
fn removing_one_server_moves_only_its_keys() {
    // Placement needs no server: building connects to nothing.
    let all: Vec<String> = (0..5)
        .map(|i| format!("127.0.0.1:{}", 40_000 + i))
        .collect();
    let removed = &all[3];
    let full = MemcachedBackend::builder()
        .servers(all.clone())
        .build()
        .expect("config");
    let reduced = MemcachedBackend::builder()
        .servers(all.iter().filter(|s| *s != removed).cloned())
        .build()
        .expect("config");
    let mut per_server: HashMap<String, usize> = HashMap::new();
    let mut moved = 0;
    let keys = 20_000;
    for i in 0..keys {
        let key = format!("http:GET|||example.com|||/items/{i}|||");
        let before = full.server_for_key(&key);
        *per_server.entry(before.to_owned()).or_default() += 1;
        let after = reduced.server_for_key(&key);
        if before == removed {
            moved += 1;
            assert_ne!(after, removed);
        } else {
            assert_eq!(before, after, "{key} moved off a server that stayed");
        }
    }
    // Every server has a fair share (a fifth, give or take).
    assert_eq!(per_server.len(), 5);
    for (server, n) in &per_server {
        assert!((2_800..5_200).contains(n), "{server} holds {n} of {keys}");
    }
    assert_eq!(moved, per_server[removed]);
    // The order of the list does not matter.
    let mut reversed = all.clone();
    reversed.reverse();
    let reversed = MemcachedBackend::builder()
        .servers(reversed)
        .build()
        .expect("config");
    assert!(
        (0..1000)
            .map(|i| format!("k{i}"))
            .all(|k| full.server_for_key(&k) == reversed.server_for_key(&k))
    );
}

#[tokio::test]
async fn awkward_keys_round_trip_and_stay_apart() {
    let Some((be, _)) = backend() else { return };
    let keys = [
        "plain".to_owned(),
        "with space".to_owned(),
        "with\r\nnewline".to_owned(),
        "tab\tand\u{0}nul".to_owned(),
        "ünïcödé ключ".to_owned(),
        "x".repeat(251),
        "y".repeat(10_000),
        format!("http:GET|||h|||/{}|||q=1", "p".repeat(400)),
        format!("http:GET|||h|||/{}|||", "p".repeat(400)),
        "http:GET|||h|||/a b|||".to_owned(),
        // Looks like a hashed key; must not meet the hashed form of another.
        "h:0123456789abcdef0123456789abcdef".to_owned(),
    ];
    for (i, key) in keys.iter().enumerate() {
        be.set(key, Bytes::from(format!("v{i}")), TTL)
            .await
            .expect("set");
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            be.get(key).await.expect("get"),
            Some(Bytes::from(format!("v{i}"))),
            "{key:?}"
        );
    }
    for key in &keys {
        assert!(be.delete(key).await.expect("delete"), "{key:?}");
        assert_eq!(be.get(key).await.expect("get"), None);
    }
    // A key over 64 KiB cannot be kept in the envelope: refused, not cut.
    let huge = "z".repeat(70_000);
    assert!(matches!(
        be.set(&huge, b("v"), TTL).await,
        Err(BackendError::InvalidInput(_))
    ));
}

#[tokio::test]
async fn stored_items_are_readable_with_their_key() {
    let Some((be, prefix)) = backend() else {
        return;
    };
    be.set("session:abc", b("payload"), TTL).await.expect("set");
    let addr = be.server_for_key("session:abc").to_owned();
    // Keys outside the HTTP cache embed no generation: one round trip.
    assert_eq!(raw_get(&addr, &format!("{prefix}@g")).await, None);
    let item = raw_get(&addr, &format!("{prefix}k:session:abc"))
        .await
        .expect("readable key");
    // [u16 key length][key][value]
    let mut expected = vec![0, 11];
    expected.extend_from_slice(b"session:abc");
    expected.extend_from_slice(b"payload");
    assert_eq!(item, expected);
}

#[tokio::test]
async fn ttl_beyond_thirty_days_is_clamped_not_read_as_a_date() {
    let Some((be, _)) = backend() else { return };
    // Unclamped, 365 days in seconds would be a Unix time in 1971: expired.
    let year = Some(Duration::from_secs(365 * 86_400));
    be.set("long-lived", b("v"), year).await.expect("set");
    assert_eq!(be.get("long-lived").await.expect("get"), Some(b("v")));
    assert!(be.add("added", b("v"), year).await.expect("add"));
    assert_eq!(be.get("added").await.expect("get"), Some(b("v")));
    // A sub-second TTL is rounded up, not down to 0 (which would mean
    // "never expires") nor to an immediate expiry.
    be.set("brief", b("v"), Some(Duration::from_millis(1500)))
        .await
        .expect("set");
    assert_eq!(be.get("brief").await.expect("get"), Some(b("v")));
}

#[tokio::test]
async fn clear_by_another_instance_makes_old_entries_unreachable() {
    let prefix = common::unique_prefix("shared");
    let (Some(a), Some(b2)) = (backend_with_prefix(&prefix), backend_with_prefix(&prefix)) else {
        return;
    };
    let Some((other, _)) = backend() else { return };
    let keys: Vec<String> = (0..40)
        .map(|i| format!("http:GET|||h|||/k{i}|||"))
        .collect();
    for key in &keys {
        a.set(key, b("old"), TTL).await.expect("set");
        other.set(key, b("other"), TTL).await.expect("set");
    }
    a.set("session:x", b("kept"), TTL).await.expect("set");
    assert_eq!(b2.get(&keys[0]).await.expect("get"), Some(b("old")));
    assert_eq!(b2.clear_cache().await.expect("clear"), 0);
    for key in &keys {
        assert_eq!(a.get(key).await.expect("get"), None, "{key} survived");
        // Another namespace on the same servers is untouched.
        assert_eq!(other.get(key).await.expect("get"), Some(b("other")));
    }
    // Keys outside the HTTP cache are not the cache's to clear.
    assert_eq!(a.get("session:x").await.expect("get"), Some(b("kept")));
    // Writes after the clear are seen by both instances.
    a.set(&keys[1], b("new"), TTL).await.expect("set");
    assert_eq!(b2.get(&keys[1]).await.expect("get"), Some(b("new")));
    assert!(b2.add(&keys[2], b("x"), TTL).await.expect("add"));
    assert!(!a.replace(&keys[3], b("x"), TTL).await.expect("replace"));
}

#[tokio::test]
async fn clear_path_reaches_every_host_and_method() {
    let Some((be, _)) = backend() else { return };
    let keys = [
        ("http:GET|||a.example|||/list|||", true),
        ("http:HEAD|||b.example|||/list|||", true),
        ("http:GET|||a.example|||/list|||page=2", false),
        ("http:GET|||a.example|||/list/1|||", false),
        ("session:list", false),
    ];
    for (key, _) in keys {
        be.set(key, b(key), TTL).await.expect("set");
    }
    be.clear_path("/list", false).await.expect("clear_path");
    for (key, cleared) in keys {
        let got = be.get(key).await.expect("get");
        assert_eq!(got.is_none(), cleared, "{key}");
    }
    // Twice in a row still works, and new entries are readable again.
    be.clear_path("/list", false).await.expect("clear_path");
    be.set(keys[0].0, b("again"), TTL).await.expect("set");
    assert_eq!(be.get(keys[0].0).await.expect("get"), Some(b("again")));
    be.clear_path("/list", true).await.expect("clear_path");
    assert_eq!(be.get(keys[0].0).await.expect("get"), None);
    assert_eq!(be.get(keys[2].0).await.expect("get"), None);
    assert_eq!(
        be.get(keys[3].0).await.expect("get"),
        Some(b(keys[3].0)),
        "/list/1 is another path"
    );
}

#[tokio::test]
async fn evicted_generation_counter_never_revives_old_entries() {
    let Some((be, prefix)) = backend() else {
        return;
    };
    let key = "http:GET|||h|||/k|||";
    be.set(key, b("before"), TTL).await.expect("set");
    let addr = be.server_for_key(key).to_owned();
    // Stand-in for an LRU eviction of the counter.
    let reply = raw(&addr, format!("delete {prefix}@g\r\n").as_bytes(), b"\r\n").await;
    assert_eq!(reply, b"DELETED\r\n");
    assert_eq!(be.get(key).await.expect("get"), None);
    be.set(key, b("after"), TTL).await.expect("set");
    assert_eq!(be.get(key).await.expect("get"), Some(b("after")));
}

#[tokio::test]
async fn abilities_are_announced_and_pattern_clears_say_why_not() {
    let Some((be, _)) = backend() else { return };
    assert!(be.listing().is_none(), "Memcached cannot list keys");
    assert!(be.compare_and_swap().is_some());
    let fast = be.path_invalidation().expect("generation counters");
    assert!(!fast.counts_exactly());
    let layer = axum_cachex::CacheLayer::builder()
        .backend(std::sync::Arc::new(be))
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer");
    match layer.clear_pattern("/*").await {
        Err(BackendError::Unsupported {
            backend,
            operation,
            hint,
        }) => {
            assert_eq!((backend, operation), ("memcached", "clear_pattern"));
            assert!(hint.contains("list"), "{hint}");
        }
        other => panic!("clear_pattern on Memcached: {other:?}"),
    }
    assert_eq!(layer.clear_path("/x", true).await.expect("clear_path"), 0);
    assert_eq!(layer.clear().await.expect("clear"), 0);
}

#[tokio::test]
async fn a_value_over_the_item_limit_is_a_command_error() {
    let Some((be, _)) = backend() else { return };
    // Over Memcached's default 1 MiB item size.
    let big = Bytes::from(vec![7u8; 2 * 1024 * 1024]);
    let err = be.set("big", big, TTL).await.expect_err("too large");
    assert!(matches!(err, BackendError::Command { .. }), "{err:?}");
    assert!(!err.is_unavailable());
    // The server and the backend are fine afterwards.
    be.set("small", b("v"), TTL).await.expect("set");
    assert_eq!(be.get("small").await.expect("get"), Some(b("v")));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // A real socket that accepts and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let be = MemcachedBackend::builder()
        .server(addr.to_string())
        .timeout(Duration::from_millis(100))
        .build()
        .expect("config");
    let err = be.get("k").await.expect_err("no answer");
    assert!(
        matches!(
            err,
            BackendError::Timeout {
                backend: "memcached",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unavailable());
    let err = be.set("k", b("v"), TTL).await.expect_err("no answer");
    assert!(err.is_unavailable(), "{err:?}");
    holder.abort();
}

#[tokio::test]
async fn building_needs_no_server_and_calls_report_connection_errors() {
    let port = free_port();
    let be = MemcachedBackend::builder()
        .server(format!("127.0.0.1:{port}"))
        .build()
        .expect("building connects to nothing");
    let err = be.get("k").await.expect_err("nothing listens");
    assert!(
        matches!(
            err,
            BackendError::Connection {
                backend: "memcached",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert!(be.clear_cache().await.expect_err("down").is_unavailable());
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A memcached process of this test's own; killed when dropped.
struct OwnServer {
    child: Child,
    port: u16,
}

impl OwnServer {
    async fn start(bin: &str, port: u16) -> Self {
        let child = Command::new(bin)
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"])
            .args(["-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached");
        let server = Self { child, port };
        // Bounded wait until it accepts connections.
        for _ in 0..200 {
            if TcpStream::connect(server.addr()).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("memcached on port {port} did not start");
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -STOP` (freeze: connections accepted, nothing answered) or
    /// `kill -CONT` (resume).
    fn signal(&self, signal: &str) {
        crate::common::signal_process(self.child.id(), signal);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_fails_only_its_keys_and_recovers_after_restart() {
    let bin = match std::env::var("AXUM_CACHEX_MEMCACHED_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ if common::servers_required() => {
            panic!("AXUM_CACHEX_MEMCACHED_BIN is not set; run scripts/test.sh")
        }
        _ => {
            eprintln!("skipping: AXUM_CACHEX_MEMCACHED_BIN not set");
            return;
        }
    };
    let survivor = OwnServer::start(&bin, free_port()).await;
    let mut victim = OwnServer::start(&bin, free_port()).await;
    let (survivor_addr, victim_addr) = (survivor.addr().to_string(), victim.addr().to_string());
    let be = MemcachedBackend::builder()
        .servers([survivor_addr.clone(), victim_addr.clone()])
        .key_prefix("outage:")
        .build()
        .expect("config");
    let keys: Vec<String> = (0..200)
        .map(|i| format!("http:GET|||h|||/item/{i}|||"))
        .collect();
    for key in &keys {
        be.set(key, b(key), TTL).await.expect("set");
    }
    let (on_victim, on_survivor): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| be.server_for_key(k) == victim_addr);
    assert!(!on_victim.is_empty() && !on_survivor.is_empty());

    victim.kill();

    for key in &on_survivor {
        assert_eq!(be.get(key).await.expect("survivor get"), Some(b(key)));
    }
    be.set(on_survivor[0], b("rewritten"), TTL)
        .await
        .expect("survivor set");
    let started = std::time::Instant::now();
    for key in on_victim.iter().take(20) {
        let err = be.get(key).await.expect_err("victim is down");
        assert!(err.is_unavailable(), "{err:?}");
        let err = be.set(key, b("x"), TTL).await.expect_err("victim is down");
        assert!(err.is_unavailable(), "{err:?}");
    }
    eprintln!("40 calls to the dead server took {:?}", started.elapsed());
    // A clear with a server down reports the failure, and still clears the
    // servers it reached.
    assert!(
        be.clear_cache()
            .await
            .expect_err("one server down")
            .is_unavailable()
    );
    assert_eq!(be.get(on_survivor[0]).await.expect("get"), None);
    be.set(on_survivor[0], b("rewritten"), TTL)
        .await
        .expect("survivor set");

    // Same port, new process: the backend reconnects by itself.
    let restarted = OwnServer::start(&bin, victim.port).await;
    let probe = on_victim[0];
    let mut recovered = false;
    for _ in 0..100 {
        if be.set(probe, b("back"), TTL).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        recovered,
        "writes to the restarted server never worked again"
    );
    assert_eq!(be.get(probe).await.expect("get"), Some(b("back")));
    for key in &on_victim {
        // The restarted server is empty: old values are gone, new ones work.
        assert_eq!(
            be.get(key).await.expect("get").as_deref(),
            (*key == probe).then_some(&b"back"[..])
        );
        be.set(key, b("new"), TTL).await.expect("set after restart");
        assert_eq!(be.get(key).await.expect("get"), Some(b("new")));
    }
    assert_eq!(
        be.get(on_survivor[0]).await.expect("get"),
        Some(b("rewritten"))
    );
    be.clear_cache().await.expect("clear with both servers up");
    drop(restarted);
    drop(survivor);
}

/// A frozen server (SIGSTOP) opens its own breaker after
/// `breaker_threshold` timeouts: its calls then fail at once while the other
/// server's keys keep working, and after SIGCONT the background probe closes
/// the breaker again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_opens_its_breaker_and_a_probe_closes_it() {
    let bin = match std::env::var("AXUM_CACHEX_MEMCACHED_BIN") {
        Ok(bin) if !bin.is_empty() => bin,
        _ if common::servers_required() => {
            panic!("AXUM_CACHEX_MEMCACHED_BIN is not set; run scripts/test.sh")
        }
        _ => return,
    };
    let survivor = OwnServer::start(&bin, free_port()).await;
    let frozen = OwnServer::start(&bin, free_port()).await;
    let frozen_addr = frozen.addr().to_string();
    let be = MemcachedBackend::builder()
        .servers([survivor.addr().to_string(), frozen_addr.clone()])
        .key_prefix("frozen:")
        .timeout(Duration::from_millis(100))
        .down_backoff(Duration::from_millis(100))
        .breaker_threshold(3)
        .build()
        .expect("config");
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for key in &keys {
        be.set(key, b(key), TTL).await.expect("set");
    }
    let (on_frozen, on_survivor): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| be.server_for_key(k) == frozen_addr);
    assert!(!on_frozen.is_empty() && !on_survivor.is_empty());

    frozen.signal("-STOP");
    let (mut timeouts, mut fast) = (0, 0);
    for i in 0..40 {
        let key = on_frozen[i % on_frozen.len()];
        match be.get(key).await {
            Err(BackendError::Timeout { .. }) => timeouts += 1,
            Err(e @ BackendError::Connection { .. }) => {
                assert!(e.is_unavailable());
                let source = std::error::Error::source(&e).expect("source").to_string();
                assert!(source.contains("circuit open"), "call {i}: {source}");
                fast += 1;
            }
            other => panic!("call {i} to the frozen server: {other:?}"),
        }
        if i % 10 == 0 {
            // Let probes run (and time out) while the server is frozen.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(
        timeouts <= 3,
        "only the calls before the breaker opened waited: {timeouts}"
    );
    assert_eq!(timeouts + fast, 40);
    for key in &on_survivor {
        assert_eq!(be.get(key).await.expect("survivor get"), Some(b(key)));
    }

    frozen.signal("-CONT");
    let probe = on_frozen[0];
    let mut recovered = false;
    for _ in 0..100 {
        if be.get(probe).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the frozen server was never used again");
    assert_eq!(be.get(probe).await.expect("get"), Some(b(probe)));
    be.set(probe, b("after"), TTL).await.expect("set");
    assert_eq!(be.get(probe).await.expect("get"), Some(b("after")));
}

/// A TCP relay to `upstream` that counts the commands clients send (lines
/// starting with a command word; data blocks of `set` are skipped by
/// counting only lines that start with `get `, which is all that matters
/// here). Returns its address and the counter.
async fn counting_relay(
    upstream: String,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{Arc, atomic::AtomicUsize};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&gets);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(&upstream).await.expect("upstream");
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    // Every request line of a round trip starts a read;
                    // the backend writes each command in one piece.
                    if buf[..n].starts_with(b"get ") {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, gets)
}

/// A hit reads the counters and the entry in one multi-get, as long as the
/// counters are what this instance saw last; a clear costs the next read
/// one more round trip, and never serves what it cleared.
#[tokio::test]
async fn a_cache_hit_is_one_round_trip_while_the_counters_stand_still() {
    use std::sync::atomic::Ordering::SeqCst;
    let Some(servers) = common::memcached_servers() else {
        return;
    };
    let (relay, gets) = counting_relay(servers[0].clone()).await;
    let prefix = common::unique_prefix("onetrip");
    let be = MemcachedBackend::builder()
        .server(relay)
        .key_prefix(&prefix)
        .build()
        .expect("config");
    // The same one server, directly: with several servers configured a
    // key could live on another one.
    let other = MemcachedBackend::builder()
        .server(servers[0].clone())
        .key_prefix(&prefix)
        .build()
        .expect("config");
    let key = "http:GET|||h|||/one|||";
    be.set(key, b("v1"), TTL).await.expect("set");
    let before = gets.load(SeqCst);
    for _ in 0..5 {
        assert_eq!(be.get(key).await.expect("get"), Some(b("v1")));
    }
    assert_eq!(gets.load(SeqCst) - before, 5, "one get per hit");
    // Another instance clears the path and writes a new value.
    other.clear_path("/one", true).await.expect("clear");
    assert_eq!(
        be.get(key).await.expect("get"),
        None,
        "cleared entry served"
    );
    other.set(key, b("v2"), TTL).await.expect("set");
    assert_eq!(be.get(key).await.expect("get"), Some(b("v2")));
    let before = gets.load(SeqCst);
    assert_eq!(be.get(key).await.expect("get"), Some(b("v2")));
    assert_eq!(gets.load(SeqCst) - before, 1, "back to one get per hit");
    // A clear of the whole cache is seen at once too.
    other.clear_cache().await.expect("clear");
    assert_eq!(
        be.get(key).await.expect("get"),
        None,
        "cleared cache served"
    );
}
