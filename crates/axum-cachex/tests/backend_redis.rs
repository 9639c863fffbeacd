//! The conformance suite on a real Redis, plus what only Redis has: the
//! per-path index, outages and restarts, timeouts, authentication and TLS.
//!
//! Needs `AXUM_CACHEX_REDIS_URL` (the shared server) and, for the tests that
//! start and kill servers of their own, `AXUM_CACHEX_REDIS_SERVER_BIN`;
//! `scripts/test.sh` sets both.
#![cfg(feature = "redis")]

mod common;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum_cachex::backend::{
    Backend, BackendError, CompareAndSwap, Listing, PathInvalidation, RedisBackend, RedisConfig,
};
use bytes::Bytes;
use common::backend_redis::{RedisProcess, free_port, raw, redis_backend, redis_server_bin};
use redis::AsyncCommands;

conformance_suite!(common::backend_redis::redis);

/// The conformance suite that `axum-cachex-core` publishes, with real
/// sleeping for the expiry check: time passes on the server.
#[tokio::test]
async fn passes_the_published_conformance_suite() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url, "conformance");
    let report = common::conformance::run(&be, tokio::time::sleep).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    be.clear("").await.expect("clear");
}

const TTL: Option<Duration> = Some(Duration::from_secs(60));

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn key(path: &str, query: &str) -> String {
    format!("http:GET|||example.com|||{path}|||{query}")
}

fn index_key(be: &RedisBackend, path: &str) -> String {
    format!("{}__path_index:{path}", be.key_prefix())
}

/// Every raw key under the backend's prefix.
async fn raw_keys(url: &str, be: &RedisBackend) -> BTreeSet<String> {
    let mut conn = raw(url).await;
    let pattern = format!("{}*", be.key_prefix());
    let mut iter = conn.scan_match::<_, String>(pattern).await.expect("scan");
    let mut keys = BTreeSet::new();
    while let Some(k) = futures_next(&mut iter).await {
        keys.insert(k);
    }
    keys
}

async fn futures_next<T>(iter: &mut redis::AsyncIter<'_, T>) -> Option<T>
where
    T: redis::FromRedisValue + Unpin + Send + 'static,
{
    iter.next_item().await.map(|r| r.expect("scan item"))
}

/// Polls `probe` until it succeeds: a bounded retry loop, not a time limit.
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never happened");
}

#[tokio::test]
async fn clear_path_leaves_other_paths_and_cleans_its_index() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url.clone(), "clear-path");
    for (p, q) in [("/a", ""), ("/a", "page=2"), ("/a/b", ""), ("/b", "")] {
        be.set(&key(p, q), b(p), TTL).await.expect("set");
    }
    // Another host and method on the same path share its index.
    be.set("http:HEAD|||other:8080|||/a|||", b("head"), TTL)
        .await
        .expect("set");
    let mut conn = raw(&url).await;
    let members: i64 = conn.zcard(index_key(&be, "/a")).await.expect("zcard");
    assert_eq!(members, 3);

    assert_eq!(be.clear_path("/a", false).await.expect("clear_path"), 2);
    let left: Vec<String> = conn
        .zrange(index_key(&be, "/a"), 0, -1)
        .await
        .expect("zrange");
    assert_eq!(left, vec![key("/a", "page=2")]);
    assert_eq!(be.clear_path("/a", true).await.expect("clear_path"), 1);
    let exists: bool = conn.exists(index_key(&be, "/a")).await.expect("exists");
    assert!(!exists, "an emptied index must go away");

    // Neighbours are untouched, entries and indexes alike.
    assert_eq!(
        be.get(&key("/a/b", "")).await.expect("get"),
        Some(b("/a/b"))
    );
    assert_eq!(be.get(&key("/b", "")).await.expect("get"), Some(b("/b")));
    let members: i64 = conn.zcard(index_key(&be, "/a/b")).await.expect("zcard");
    assert_eq!(members, 1);
    be.clear("").await.expect("clear");
}

#[tokio::test]
async fn clear_path_does_not_count_expired_or_deleted_entries() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url, "stale-index");
    be.set(&key("/s", "a=1"), b("v"), Some(Duration::from_millis(100)))
        .await
        .expect("set");
    be.set(&key("/s", "a=2"), b("v"), TTL).await.expect("set");
    be.set(&key("/s", "a=3"), b("v"), TTL).await.expect("set");
    assert!(be.delete(&key("/s", "a=2")).await.expect("delete"));
    assert_eq!(
        be.take(&key("/s", "a=3")).await.expect("take"),
        Some(b("v"))
    );
    be.set(&key("/s", "a=4"), b("v"), TTL).await.expect("set");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(be.clear_path("/s", true).await.expect("clear_path"), 1);
    be.clear("").await.expect("clear");
}

#[tokio::test]
async fn index_lives_as_long_as_its_longest_entry_and_prunes_expired_members() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url.clone(), "index-ttl");
    let mut conn = raw(&url).await;
    let idx = index_key(&be, "/t");

    be.set(&key("/t", "long"), b("v"), Some(Duration::from_secs(120)))
        .await
        .expect("set");
    be.set(&key("/t", "short"), b("v"), Some(Duration::from_secs(2)))
        .await
        .expect("set");
    let pttl: i64 = conn.pttl(&idx).await.expect("pttl");
    assert!(
        pttl > 110_000,
        "a shorter entry shrank the index TTL: {pttl}"
    );

    // An entry without TTL makes the index persistent.
    be.set(&key("/t", "forever"), b("v"), None)
        .await
        .expect("set");
    let pttl: i64 = conn.pttl(&idx).await.expect("pttl");
    assert_eq!(pttl, -1);

    // Expired members are dropped by the next write of the path, so an
    // endless variety of query strings cannot grow the index for ever.
    let other = index_key(&be, "/search");
    for i in 0..50 {
        be.set(
            &key("/search", &format!("q={i}")),
            b("v"),
            Some(Duration::from_millis(50)),
        )
        .await
        .expect("set");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    be.set(&key("/search", "q=new"), b("v"), TTL)
        .await
        .expect("set");
    let members: i64 = conn.zcard(&other).await.expect("zcard");
    assert_eq!(members, 1);
    let pttl: i64 = conn.pttl(&other).await.expect("pttl");
    assert!(pttl > 50_000 && pttl <= 62_000, "index TTL {pttl}");

    // add and replace maintain the index too; a failed add does not.
    assert!(be.add(&key("/add", ""), b("v"), TTL).await.expect("add"));
    assert!(
        !be.replace(&key("/replace", ""), b("v"), TTL)
            .await
            .expect("replace")
    );
    let added: i64 = conn.zcard(index_key(&be, "/add")).await.expect("zcard");
    let replaced: bool = conn
        .exists(index_key(&be, "/replace"))
        .await
        .expect("exists");
    assert_eq!((added, replaced), (1, false));
    be.clear("").await.expect("clear");
}

#[tokio::test]
async fn index_keys_stay_internal() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url.clone(), "internal");
    be.set(&key("/x", ""), b("1"), TTL).await.expect("set");
    be.set(&key("/y", "q"), b("2"), TTL).await.expect("set");
    be.set("plain", b("3"), TTL).await.expect("set");
    assert_eq!(raw_keys(&url, &be).await.len(), 5, "3 entries + 2 indexes");

    let keys: BTreeSet<String> = be.keys("").await.expect("keys").into_iter().collect();
    let expected: BTreeSet<String> = [key("/x", ""), key("/y", "q"), "plain".to_owned()]
        .into_iter()
        .collect();
    assert_eq!(keys, expected);
    let entries = be.entries("").await.expect("entries");
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| !e.key.contains("__path_index")));

    assert_eq!(be.clear("").await.expect("clear"), 3);
    assert!(
        raw_keys(&url, &be).await.is_empty(),
        "clear must remove the indexes as well"
    );

    let reserved = be.set("__path_index:/x", b("v"), TTL).await;
    assert!(matches!(reserved, Err(BackendError::InvalidInput(_))));
}

#[tokio::test]
async fn entries_skip_keys_of_other_types_and_report_missing_ttl() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url.clone(), "entries");
    be.set("kept", b("v"), None).await.expect("set");
    let mut conn = raw(&url).await;
    let foreign = format!("{}foreign-hash", be.key_prefix());
    let _: () = conn.hset(&foreign, "f", "v").await.expect("hset");
    let entries = be.entries("").await.expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].key, "kept");
    assert_eq!(entries[0].ttl_remaining, None);
    be.clear("").await.expect("clear");
}

#[tokio::test]
async fn delete_if_equals_releases_only_its_own_lock() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = redis_backend(url, "locks");
    let token: Vec<u8> = (0..=255u8).collect();
    assert!(
        !be.delete_if_equals("lock", &token)
            .await
            .expect("missing lock")
    );
    assert!(
        be.add("lock", Bytes::from(token.clone()), TTL)
            .await
            .expect("acquire")
    );
    assert!(
        !be.delete_if_equals("lock", b"other")
            .await
            .expect("foreign")
    );
    assert!(be.get("lock").await.expect("get").is_some());
    assert!(be.delete_if_equals("lock", &token).await.expect("release"));
    assert_eq!(be.get("lock").await.expect("get"), None);
}

#[tokio::test]
async fn a_prefix_with_glob_characters_matches_only_itself() {
    let Some(url) = common::redis_url() else {
        return;
    };
    let tag = common::unique_prefix("glob");
    let odd = RedisConfig::from_url(url.clone())
        .key_prefix(format!("{tag}[a]*"))
        .build()
        .expect("build");
    // Would match the pattern `{tag}[a]*` if it were not escaped.
    let neighbour = RedisConfig::from_url(url)
        .key_prefix(format!("{tag}a-"))
        .build()
        .expect("build");
    odd.set("k", b("odd"), TTL).await.expect("set");
    neighbour.set("k", b("neighbour"), TTL).await.expect("set");
    assert_eq!(odd.keys("").await.expect("keys"), vec!["k".to_owned()]);
    assert_eq!(odd.clear("").await.expect("clear"), 1);
    assert_eq!(neighbour.get("k").await.expect("get"), Some(b("neighbour")));
    neighbour.clear("").await.expect("clear");
}

#[tokio::test]
async fn survives_a_server_restart_without_being_rebuilt() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let mut server = RedisProcess::start(bin, &[]);
    let be = redis_backend(server.url(), "restart");
    be.set("k", b("before"), TTL).await.expect("set");
    assert_eq!(be.get("k").await.expect("get"), Some(b("before")));

    server.kill();
    // Every call fails, with an error that says "unavailable", none hangs
    // (each is bounded by the command timeout) and none panics.
    for i in 0..20 {
        match be.get("k").await {
            Err(e) => assert!(e.is_unavailable(), "call {i}: {e:?}"),
            Ok(v) => panic!("call {i} succeeded against a dead server: {v:?}"),
        }
        let err = be.set("k", b("during"), TTL).await.expect_err("set");
        assert!(err.is_unavailable(), "{err:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.restart();
    eventually("backend reconnects after the restart", || async {
        be.set("k", b("after"), TTL).await.is_ok()
    })
    .await;
    assert_eq!(be.get("k").await.expect("get"), Some(b("after")));
    // The scripts were flushed with the restart: indexed writes reload them.
    be.set(&key("/r", ""), b("v"), TTL)
        .await
        .expect("indexed set");
    assert_eq!(be.clear_path("/r", true).await.expect("clear_path"), 1);
}

/// A frozen server (SIGSTOP: connections stay open, nothing answers) opens
/// the breaker after `breaker_threshold` timeouts; from then on calls fail at
/// once, and after SIGCONT the background probe closes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_opens_the_breaker_and_a_probe_closes_it() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let server = RedisProcess::start(bin, &[]);
    let be = common::backend_redis::config(server.url(), "frozen")
        .command_timeout(Duration::from_millis(100))
        .reconnect_delay(Duration::from_millis(50), Duration::from_millis(200))
        .breaker_threshold(3)
        .build()
        .expect("build");
    be.set("k", b("before"), TTL).await.expect("set");

    server.freeze();
    let (mut timeouts, mut fast) = (0, 0);
    for i in 0..40 {
        match be.get("k").await {
            Err(BackendError::Timeout { .. }) => timeouts += 1,
            Err(e @ BackendError::Connection { .. }) => {
                assert!(e.is_unavailable());
                let source = std::error::Error::source(&e).expect("source").to_string();
                assert!(source.contains("circuit open"), "call {i}: {source}");
                fast += 1;
            }
            other => panic!("call {i} against a frozen server: {other:?}"),
        }
        if i % 10 == 0 {
            // Let the pause run out now and then, so probes are sent (and
            // time out) while the server is frozen.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(
        timeouts <= 3,
        "only the calls before the breaker opened waited for the server: {timeouts}"
    );
    assert_eq!(timeouts + fast, 40);

    server.thaw();
    eventually("the probe closes the breaker after SIGCONT", || async {
        be.get("k").await.is_ok()
    })
    .await;
    assert_eq!(be.get("k").await.expect("get"), Some(b("before")));
    be.set("k", b("after"), TTL).await.expect("set");
    assert_eq!(be.get("k").await.expect("get"), Some(b("after")));
}

#[tokio::test]
async fn a_backend_built_while_the_server_is_down_works_once_it_is_up() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let port = free_port();
    let be = redis_backend(format!("redis://127.0.0.1:{port}"), "late-server");
    for _ in 0..5 {
        let err = be.get("k").await.expect_err("no server yet");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(matches!(err, BackendError::Connection { .. }), "{err:?}");
        assert!(std::error::Error::source(&err).is_some(), "source kept");
    }
    assert!(be.ping().await.is_err());

    let _server = RedisProcess::start_on(bin, port, &[]);
    eventually("backend connects once the server is up", || async {
        be.ping().await.is_ok()
    })
    .await;
    be.set("k", b("v"), TTL).await.expect("set");
    assert_eq!(be.get("k").await.expect("get"), Some(b("v")));
}

#[tokio::test]
async fn a_stalled_server_makes_calls_time_out() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let server = RedisProcess::start(bin, &[]);
    let be = common::backend_redis::config(server.url(), "stalled")
        .command_timeout(Duration::from_millis(100))
        .build()
        .expect("build");
    be.set("k", b("v"), TTL).await.expect("set");

    let mut admin = raw(&server.url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .expect("client pause");
    let err = be.get("k").await.expect_err("paused server");
    assert!(
        matches!(err, BackendError::Timeout { timeout, .. } if timeout == Duration::from_millis(100)),
        "{err:?}"
    );
    assert!(err.is_unavailable());

    // A slow server is not a dead one: the same connection serves again.
    eventually("calls succeed after the pause", || async {
        be.get("k").await.is_ok()
    })
    .await;
    assert_eq!(be.get("k").await.expect("get"), Some(b("v")));
}

#[tokio::test]
async fn password_and_database_come_from_the_settings() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let server = RedisProcess::start(bin, &["--requirepass", "s3cret"]);
    let be = RedisBackend::builder()
        .host("127.0.0.1")
        .port(server.port)
        .password("s3cret")
        .db(3)
        .key_prefix("auth:")
        .build()
        .expect("build");
    be.set("k", b("v"), TTL).await.expect("set");
    let mut conn = raw(&format!("redis://:s3cret@127.0.0.1:{}/3", server.port)).await;
    let stored: Option<Vec<u8>> = conn.get("auth:k").await.expect("get");
    assert_eq!(stored.as_deref(), Some(&b"v"[..]));

    let wrong = RedisConfig::from_url(format!("redis://:nope@127.0.0.1:{}", server.port))
        .build()
        .expect("build");
    let err = wrong.get("k").await.expect_err("bad password");
    assert!(matches!(err, BackendError::Connection { .. }), "{err:?}");
}

#[cfg(feature = "redis-tls")]
#[tokio::test]
async fn tls_with_a_private_certificate_authority() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("axum-cachex-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").expect("ext");
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let steps: [Vec<String>; 3] = [
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=axum-cachex test CA",
            "-keyout",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([d("ca.key"), "-out".to_owned(), d("ca.crt")])
        .collect(),
        [
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([d("server.key"), "-out".to_owned(), d("server.csr")])
        .collect(),
        ["x509", "-req", "-days", "1", "-CAcreateserial", "-in"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([
                d("server.csr"),
                "-CA".to_owned(),
                d("ca.crt"),
                "-CAkey".to_owned(),
                d("ca.key"),
                "-out".to_owned(),
                d("server.crt"),
                "-extfile".to_owned(),
                d("san.ext"),
            ])
            .collect(),
    ];
    for args in &steps {
        match std::process::Command::new("openssl")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Ok(status) if status.success() => {}
            _ if common::servers_required() => panic!("openssl {args:?} failed"),
            _ => {
                eprintln!("skipping: openssl is needed to make test certificates");
                return;
            }
        }
    }
    let port = free_port();
    let port_s = port.to_string();
    let (cert, key, ca) = (d("server.crt"), d("server.key"), d("ca.crt"));
    let _server = RedisProcess::start_on(
        bin,
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_s,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    );
    let ca_pem = std::fs::read(dir.join("ca.crt")).expect("ca");
    let be = RedisConfig::from_url(format!("rediss://127.0.0.1:{port}"))
        .tls_root_cert_pem(ca_pem)
        .key_prefix("tls:")
        .build()
        .expect("build");
    eventually("TLS connection", || async { be.ping().await.is_ok() }).await;
    be.set("k", b("secret"), TTL).await.expect("set");
    assert_eq!(be.get("k").await.expect("get"), Some(b("secret")));

    // Without the private CA the server certificate is not trusted.
    let untrusted = RedisBackend::from_url(format!("rediss://127.0.0.1:{port}")).expect("build");
    assert!(untrusted.get("k").await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Measures `clear_path` through the per-path index against a full `SCAN` of
/// the same namespace, on 100 000 entries. Prints the figures quoted in the
/// `RedisBackend` docs. Run on an otherwise idle server:
///
/// `AXUM_CACHEX_REDIS_URL=redis://127.0.0.1:6379 cargo test -p axum-cachex
/// --features redis --test backend_redis -- --ignored --nocapture
/// measure_clear_path`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run by hand, see the doc comment"]
async fn measure_clear_path_index_vs_scan() {
    use std::time::Instant;

    const PATHS: usize = 10_000;
    const PER_PATH: usize = 10;
    const WORKERS: usize = 64;
    let Some(url) = common::redis_url() else {
        return;
    };
    let be = Arc::new(
        common::backend_redis::config(url.clone(), "measure")
            .command_timeout(Duration::from_secs(5))
            .build()
            .expect("build"),
    );
    let mut conn = raw(&url).await;
    let used_memory = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let before: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("info");

    // Fill with WORKERS concurrent writers (the connection is multiplexed).
    let fill = |plain: bool| {
        let be = Arc::clone(&be);
        async move {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..WORKERS {
                let be = Arc::clone(&be);
                tasks.push(tokio::spawn(async move {
                    let mut i = w;
                    while i < PATHS * PER_PATH {
                        let (p, q) = (i / PER_PATH, i % PER_PATH);
                        let k = if plain {
                            format!("plain:{p}:{q}")
                        } else {
                            key(&format!("/p/{p}"), &format!("q={q}"))
                        };
                        be.set(
                            &k,
                            Bytes::from_static(&[7u8; 100]),
                            Some(Duration::from_secs(600)),
                        )
                        .await
                        .expect("fill");
                        i += WORKERS;
                    }
                }));
            }
            for t in tasks {
                t.await.expect("join");
            }
            start.elapsed()
        }
    };
    let indexed_fill = fill(false).await;
    let after: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("info");
    let mut pipe = redis::pipe();
    for p in 0..PATHS {
        pipe.cmd("MEMORY")
            .arg("USAGE")
            .arg(index_key(&be, &format!("/p/{p}")));
    }
    let index_bytes: Vec<Option<u64>> = pipe.query_async(&mut conn).await.expect("memory usage");
    let index_bytes: u64 = index_bytes.into_iter().flatten().sum();

    // clear_path through the index, five different paths.
    let mut index_times = Vec::new();
    for p in [11, 2_222, 4_444, 6_666, 8_888] {
        let start = Instant::now();
        let n = be
            .clear_path(&format!("/p/{p}"), true)
            .await
            .expect("clear_path");
        index_times.push(start.elapsed());
        assert_eq!(n, PER_PATH as u64);
    }

    // The same through a full SCAN of the namespace, three other paths.
    let pattern = format!("{}*", be.key_prefix());
    let mut scan_times = Vec::new();
    for p in [1_000, 5_000, 9_000] {
        let path = format!("/p/{p}");
        let start = Instant::now();
        let mut cursor: u64 = 0;
        let mut removed: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .expect("scan");
            let hits: Vec<&String> = page
                .iter()
                .filter(|k| {
                    axum_cachex::CacheKey::parse(&k[be.key_prefix().len()..])
                        .is_some_and(|ck| ck.path == path)
                })
                .collect();
            if !hits.is_empty() {
                let n: u64 = conn.unlink(hits).await.expect("unlink");
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        scan_times.push(start.elapsed());
        assert_eq!(removed, PER_PATH as u64);
    }

    let clear_start = Instant::now();
    let cleared = be.clear("").await.expect("clear");
    let clear_time = clear_start.elapsed();
    let plain_fill = fill(true).await;
    be.clear("").await.expect("clear");

    let data_bytes = used_memory(after).saturating_sub(used_memory(before));
    println!("entries: {}", PATHS * PER_PATH);
    println!("fill with index (64 writers): {indexed_fill:?}");
    println!("fill, plain SET (64 writers): {plain_fill:?}");
    println!("clear_path via index: {index_times:?}");
    println!("clear_path via full SCAN: {scan_times:?}");
    println!("clear() of {cleared} entries: {clear_time:?}");
    println!(
        "memory: {:.1} MiB in total, of which indexes {:.1} MiB",
        data_bytes as f64 / 1048576.0,
        index_bytes as f64 / 1048576.0
    );
}
