//! Red-team round 15: the Redis Cluster support. Each test in the first
//! section documented one bug found by a fresh-context reviewer (all four
//! are fixed: prefixes with a broken hash tag are refused at build time,
//! bulk operations scan every primary `CLUSTER NODES` lists, over
//! connections of their own). The `// Passing checks` section holds the
//! regression checks that passed from the start.
//!
//! Every test starts its own private cluster (`RedisCluster::start`), so
//! they need `AXUM_CACHEX_REDIS_SERVER_BIN` (with `redis-cli` next to it):
//!
//! ```sh
//! AXUM_CACHEX_REDIS_SERVER_BIN=/usr/bin/redis-server \
//!   cargo test -p axum-cachex --features redis --test red_team_cluster
//! ```
#![cfg(feature = "redis")]

mod common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use axum_cachex::{
    CacheKey, CacheLayer,
    backend::{Backend, Listing, RedisBackend, RedisConfig},
};
use bytes::Bytes;
use common::{
    backend_redis::{RedisCluster, RedisProcess, raw, redis_server_bin},
    http::{Counter, get_ok},
};

const TTL: Option<Duration> = Some(Duration::from_secs(60));

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn cli_bin(bin: &str) -> PathBuf {
    std::path::Path::new(bin).with_file_name("redis-cli")
}

/// `redis-cli -p PORT args…`, stdout.
fn cli(bin: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new(cli_bin(bin))
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_id(bin: &str, port: u16) -> String {
    cli(bin, port, &["cluster", "myid"]).trim().to_owned()
}

/// The port of the primary that owns `slot`, from `CLUSTER NODES` of `port`.
fn owner_of(bin: &str, port: u16, slot: u16) -> u16 {
    let nodes = cli(bin, port, &["cluster", "nodes"]);
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") {
            continue;
        }
        let p: u16 = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("port");
        for range in &fields[8..] {
            if range.starts_with('[') {
                continue;
            }
            let (a, b) = match range.split_once('-') {
                Some((a, b)) => (
                    a.parse::<u16>().expect("slot"),
                    b.parse::<u16>().expect("slot"),
                ),
                None => {
                    let s = range.parse::<u16>().expect("slot");
                    (s, s)
                }
            };
            if (a..=b).contains(&slot) {
                return p;
            }
        }
    }
    panic!("no owner for slot {slot}:\n{nodes}");
}

fn keyslot(bin: &str, port: u16, key: &str) -> u16 {
    cli(bin, port, &["cluster", "keyslot", key])
        .trim()
        .parse()
        .expect("keyslot")
}

/// Every raw key on one node (KEYS, tests only).
async fn raw_keys(port: u16, pattern: &str) -> BTreeSet<Vec<u8>> {
    let mut conn = raw(&format!("redis://127.0.0.1:{port}")).await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.into_iter().collect()
}

/// Moves every key of `slot` from the primary behind `src` (node id
/// `src_id`) to the one on `dst_port` behind `dst` (node id `dst_id`), as
/// `redis-cli --cluster reshard` does, stopping before the final
/// `SETSLOT … NODE`: the slot is migrating. Returns the keys moved.
async fn migrate_slot_keys(
    src: &mut redis::aio::MultiplexedConnection,
    dst: &mut redis::aio::MultiplexedConnection,
    slot: u16,
    (src_id, dst_id): (&str, &str),
    dst_port: u16,
) -> Vec<Vec<u8>> {
    let slot_arg = slot.to_string();
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot_arg, "IMPORTING", src_id])
        .query_async(dst)
        .await
        .expect("importing");
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot_arg, "MIGRATING", dst_id])
        .query_async(src)
        .await
        .expect("migrating");
    let in_slot: Vec<Vec<u8>> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query_async(src)
        .await
        .expect("getkeysinslot");
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(dst_port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&in_slot)
        .query_async(src)
        .await
        .expect("migrate");
    in_slot
}

/// Bounded wait until every node of `ports` reports `cluster_state:ok`
/// and agrees on the slot owners (a readiness poll).
fn wait_cluster_ok(bin: &str, ports: &[u16]) {
    for _ in 0..400 {
        let ok = ports
            .iter()
            .all(|p| cli(bin, *p, &["cluster", "info"]).contains("cluster_state:ok"));
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("cluster never became ok");
}

/// Starts a fresh cluster-enabled server and adds it to the cluster as an
/// empty primary (no slots), as `redis-cli --cluster add-node` does.
fn add_empty_primary(bin: &str, cluster: &RedisCluster) -> RedisProcess {
    let port = common::backend_redis::free_cluster_port();
    let conf = format!("nodes-{port}.conf");
    let node = RedisProcess::start_on(
        bin.to_owned(),
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--cluster-node-timeout",
            "2000",
            "--cluster-require-full-coverage",
            "no",
        ],
    );
    let status = Command::new(cli_bin(bin))
        .args([
            "--cluster",
            "add-node",
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", cluster.nodes[0].port),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli --cluster add-node");
    assert!(status.success(), "add-node failed");
    // Bounded wait until every old node knows the new one.
    let id = node_id(bin, port);
    for _ in 0..400 {
        let known = cluster
            .nodes
            .iter()
            .all(|n| cli(bin, n.port, &["cluster", "nodes"]).contains(&id));
        if known {
            let mut ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
            ports.push(port);
            wait_cluster_ok(bin, &ports);
            return node;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the new node never joined");
}

fn cluster_backend(cluster: &RedisCluster, prefix: &str) -> RedisBackend {
    RedisConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix(prefix)
        .command_timeout(Duration::from_millis(200))
        .build()
        .expect("build cluster backend")
}

/// An app caching `/p/{n}` on `backend`.
fn app(backend: Arc<dyn Backend>, counter: &Counter) -> Router {
    let layer = CacheLayer::builder()
        .backend(backend)
        .ttl(Duration::from_secs(60))
        .build()
        .expect("layer");
    let c = counter.clone();
    Router::new().route(
        "/p/{n}",
        get(move || {
            let c = c.clone();
            async move { format!("run {}", c.hit()) }
        })
        .layer(layer),
    )
}

/// Warms `/p/0`‥`/p/29` and returns the URIs whose entries live on `port`.
async fn warm_and_locate(app: &Router, port: u16, prefix: &str) -> (Vec<String>, BTreeSet<String>) {
    let uris: Vec<String> = (0..30).map(|n| format!("/p/{n}")).collect();
    for uri in &uris {
        get_ok(app, uri).await;
        let second = get_ok(app, uri).await;
        assert!(second.cache_status().contains("hit"), "{uri} is cached");
    }
    let on_node = raw_keys(port, &format!("{prefix}*")).await;
    let located: BTreeSet<String> = uris
        .iter()
        .filter(|uri| {
            let needle = format!("{uri}|||");
            on_node
                .iter()
                .any(|k| String::from_utf8_lossy(k).contains(&needle))
        })
        .cloned()
        .collect();
    assert!(
        !located.is_empty() && located.len() < uris.len(),
        "the paths should spread over the primaries"
    );
    (uris, located)
}

// ---------------------------------------------------------------------------
// Failing tests: each one documents a bug
// ---------------------------------------------------------------------------

/// **A key prefix with an unbalanced `{` breaks every HTTP cache write on
/// Cluster, and `build()` accepts it.**
///
/// The Cluster layout is `{prefix}{xxxx}{key}` for an entry and
/// `{prefix}__path_index:{xxxx}{path}` for its index, and relies on the
/// `{xxxx}` tag being the key's hash tag. Redis hashes the text between the
/// *first* `{` and the next `}`. With the prefix `shop{` that is `{xxxx` for
/// the entry but `__path_index:{xxxx` for the index: two different slots,
/// so the indexing script (entry + index, one `EVALSHA`) is refused with
/// `CROSSSLOT` on every write. Nothing is ever cached, and the error is a
/// `BackendError::Command` at run time, not a configuration error.
///
/// Expected (product rule "bad input gets a clear typed error and loses
/// nothing"; keys.rs: "a path's entries … and the path's index share one
/// slot"): either `build()` refuses the prefix with a `RedisConfigError`,
/// or the backend stores and serves the entry. Instead `build()` succeeds
/// and `set` of an HTTP key fails with a CROSSSLOT command error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_with_unbalanced_brace_breaks_every_http_write() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin, 3);
    let built = RedisConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix("shop{")
        .build();
    let Ok(be) = built else {
        return; // refused with a typed configuration error: fine.
    };
    let key = CacheKey::encode_stored("GET", "h", "/products", "");
    let stored = be.set(&key, Bytes::from_static(b"body"), TTL).await;
    assert!(
        stored.is_ok(),
        "build() accepted the prefix `shop{{`, then an HTTP cache write failed: {stored:?}"
    );
    assert_eq!(
        be.get(&key).await.expect("get"),
        Some(Bytes::from_static(b"body"))
    );
}

/// **A key prefix holding an empty hash tag (`{}`) breaks every HTTP cache
/// write on Cluster, and `build()` accepts it.**
///
/// Redis hashes the whole key when the first `{…}` is empty, so with the
/// prefix `app{}:` the backend's own `{xxxx}` tag is ignored: the entry and
/// its path index (different strings) land in unrelated slots and the
/// indexing script is refused with `CROSSSLOT`. The layout's own `slot_of`
/// (keys.rs) implements exactly this rule, yet no check guards the prefix.
///
/// Expected: a typed `RedisConfigError` from `build()` (rule "bad input gets
/// a clear typed error"), or a working cache. Instead every HTTP write
/// fails with a command error at run time, so nothing is ever cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_with_empty_hash_tag_breaks_every_http_write() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin, 3);
    let built = RedisConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix("app{}:")
        .build();
    let Ok(be) = built else {
        return;
    };
    let key = CacheKey::encode_stored("GET", "h", "/products", "");
    let stored = be.set(&key, Bytes::from_static(b"body"), TTL).await;
    assert!(
        stored.is_ok(),
        "build() accepted the prefix `app{{}}:`, then an HTTP cache write failed: {stored:?}"
    );
}

/// **The first `keys`/`entries`/`clear`/`clear_cache` after a primary
/// joins the cluster (scale-out) always fails with a `Timeout`, although
/// every node is healthy.**
///
/// `scan_nodes` reads the primaries afresh from `CLUSTER SLOTS` (so it sees
/// the new node) and sends `SCAN` with `SingleNodeRoutingInfo::ByAddress`.
/// redis-rs answers `ByAddress` only from the connections it already holds;
/// for an address it has no connection to yet it treats the request as
/// "not found": it rebuilds its slot map and retries the request after a
/// back-off sleep. Measured here with a 5 s command timeout: that first
/// `keys("")` takes ~1.28 s (later ones ~2 ms). With the default 250 ms
/// command timeout the first bulk operation after every topology change
/// therefore fails with `BackendError::Timeout` — an administrator's
/// `clear_cache` right after a scale-out reports the cluster unavailable,
/// and the timeout is also charged to the new node's circuit breaker.
///
/// Expected (issue: "clear, clear_pattern, keys and entries visit every
/// primary"; docs: "read the slot map … and SCAN every primary"; every node
/// is up): after a completed `redis-cli --cluster reshard` onto a new
/// primary, `keys("")` lists the 30 keys. Instead it fails with
/// `Timeout { timeout: 250ms }`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_listing_after_a_primary_joins_times_out() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin.clone(), 3);
    // The default command timeout (250 ms).
    let be = RedisConfig::new()
        .cluster_nodes(cluster.urls())
        .key_prefix("scale:")
        .build()
        .expect("backend");
    for i in 0..30 {
        be.set(&format!("k{i}"), Bytes::from(format!("v{i}")), TTL)
            .await
            .expect("set");
    }
    assert_eq!(be.keys("").await.expect("keys before").len(), 30);

    let new = add_empty_primary(&bin, &cluster);
    let from = node_id(&bin, cluster.nodes[0].port);
    let to = node_id(&bin, new.port);
    let out = Command::new(cli_bin(&bin))
        .args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", cluster.nodes[0].port),
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "2000",
            "--cluster-yes",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli --cluster reshard");
    assert!(
        out.status.success(),
        "reshard failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    ports.push(new.port);
    wait_cluster_ok(&bin, &ports);
    let moved = raw_keys(new.port, "scale:*").await.len();
    assert!(moved > 0, "some keys moved to the new primary");

    let listed = be.keys("").await;
    assert!(
        listed.as_ref().is_ok_and(|k| k.len() == 30),
        "keys() after a completed resharding onto a new primary ({moved} keys moved): {listed:?}"
    );
    let cleared = be.clear("").await;
    assert!(
        matches!(cleared, Ok(30)),
        "clear() after the resharding: {cleared:?}"
    );
}

/// **`clear_cache` (and `clear`/`keys`) silently miss the entries that a
/// resharding has already moved to a new, still slot-less primary: the
/// invalidation reports success and the stale responses keep being served.**
///
/// The standard scale-out is `redis-cli --cluster add-node` then
/// `--cluster reshard`: while the first slot migrates, the new primary holds
/// keys but owns no slot yet, so it is absent from `CLUSTER SLOTS`, the only
/// source `scan_nodes` reads. `clear_cache` scans the three old primaries,
/// finds nothing of the migrated path, and returns `Ok`. Meanwhile `get`
/// of such a key is answered through the `ASK` redirection from the new
/// node: the cleared entry is still served, and stays after the migration
/// completes. The docs only admit missing "keys that moved to a primary it
/// has already scanned"; here the primary is never scanned at all.
///
/// Expected (product rule "an invalidation must never be silently lost";
/// issue: "clear … visit every primary"): after `clear_cache` returns
/// `Ok`, no entry of the cache can be read — or `clear_cache` fails.
/// Instead it returns `Ok` and the entries are still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_cache_misses_entries_migrating_to_a_new_primary() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin.clone(), 3);
    let new = add_empty_primary(&bin, &cluster);
    let be = cluster_backend(&cluster, "mig:");
    let keys: Vec<String> = ["", "a=1", "b=2"]
        .iter()
        .map(|q| CacheKey::encode_stored("GET", "h", "/news", q))
        .collect();
    for key in &keys {
        be.set(key, Bytes::from_static(b"old news"), TTL)
            .await
            .expect("set");
    }

    // The slot of /news, and its owner.
    let port0 = cluster.nodes[0].port;
    let mut raw_news = Vec::new();
    for node in &cluster.nodes {
        raw_news.extend(raw_keys(node.port, "mig:*").await);
    }
    assert_eq!(raw_news.len(), 4, "3 entries and the path index");
    let slot = keyslot(&bin, port0, &String::from_utf8_lossy(&raw_news[0]));
    let owner = owner_of(&bin, port0, slot);
    let (owner_id, new_id) = (node_id(&bin, owner), node_id(&bin, new.port));

    // Migrate the slot's keys to the new primary, as `--cluster reshard`
    // does, and stop just before the final SETSLOT … NODE.
    let mut dst = raw(&new.url()).await;
    let mut src = raw(&format!("redis://127.0.0.1:{owner}")).await;
    let ids = (owner_id.as_str(), new_id.as_str());
    let in_slot = migrate_slot_keys(&mut src, &mut dst, slot, ids, new.port).await;
    assert_eq!(in_slot.len(), 4);

    let paths = be.path_invalidation().expect("path invalidation");
    let cleared = paths.clear_cache().await;
    let Ok(count) = cleared else {
        return; // an error is not a silent loss
    };
    let still = be.get(&keys[0]).await.expect("get");
    let listed = be.keys("").await;
    assert_eq!(
        still, None,
        "clear_cache() returned Ok({count}) but the entry is still served \
         (it sits on the new primary, mid-migration); keys(\"\") = {listed:?}"
    );
}

// Passing checks

/// A primary killed under traffic and restarted (same port, same node id,
/// empty data) is used again: its paths are stored and hit again within a
/// few seconds once the cluster is `ok`. (Written expecting the node's
/// breaker to stay open for good — its probe `PING` is routed `ByAddress`
/// and redis-rs had dropped the dead node's connection — but redis-rs
/// rebuilds its map on that "not found" and the next probe succeeds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_comes_back_is_used_again() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let mut cluster = RedisCluster::start(bin.clone(), 3);
    let backend: Arc<dyn Backend> = Arc::new(cluster_backend(&cluster, "restart:"));
    let counter = Counter::default();
    let app = app(Arc::clone(&backend), &counter);
    let (uris, on_victim) = warm_and_locate(&app, cluster.nodes[0].port, "restart:").await;

    // A short outage (well under the 2 s node timeout: the cluster never
    // marks the node as failed).
    cluster.nodes[0].kill();
    for _ in 0..3 {
        for uri in &uris {
            get_ok(&app, uri).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.nodes[0].restart();
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    wait_cluster_ok(&bin, &ports);

    // Traffic for up to 6 s: every path of the restarted primary must be
    // stored and hit again.
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut hit_again: BTreeSet<String> = BTreeSet::new();
    let mut last_status = String::new();
    while Instant::now() < deadline && hit_again.len() < on_victim.len() {
        for uri in &on_victim {
            let reply = get_ok(&app, uri).await;
            if reply.cache_status().contains("hit") {
                hit_again.insert(uri.clone());
            } else {
                last_status = reply.cache_status().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        hit_again.len(),
        on_victim.len(),
        "paths of the restarted primary never hit again (6 s after the cluster is ok): \
         {} of {} recovered; last Cache-Status: {last_status:?}; direct get: {:?}",
        hit_again.len(),
        on_victim.len(),
        backend
            .get(&CacheKey::encode_stored(
                "GET",
                "example.com",
                on_victim.iter().next().expect("one"),
                ""
            ))
            .await,
    );
}

/// One primary frozen with SIGSTOP (alive, answering nothing): its keys
/// fail open and the other primaries' keys keep hitting, after the first
/// timeouts open only that node's breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_fails_only_its_keys_open() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin, 3);
    let backend: Arc<dyn Backend> = Arc::new(cluster_backend(&cluster, "freeze:"));
    let counter = Counter::default();
    let app = app(Arc::clone(&backend), &counter);
    let (uris, on_victim) = warm_and_locate(&app, cluster.nodes[0].port, "freeze:").await;
    cluster.nodes[0].freeze();
    // First round: the frozen node's first requests time out (200 ms each)
    // until its breaker opens.
    for uri in &uris {
        get_ok(&app, uri).await;
    }
    let mut misses_on_live = Vec::new();
    for round in 0..4 {
        for uri in &uris {
            let reply = get_ok(&app, uri).await;
            if !on_victim.contains(uri) && !reply.cache_status().contains("hit") {
                misses_on_live.push(format!("{uri} round {round}: {}", reply.cache_status()));
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    cluster.nodes[0].thaw();
    assert!(misses_on_live.is_empty(), "{misses_on_live:?}");
}

/// A prefix with glob characters and a hash tag of its own (`sh*p?[x]{t}:`)
/// pins everything to one slot and still lists, clears by path and clears
/// the cache exactly (the `MATCH` pattern escapes the prefix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glob_prefix_with_its_own_hash_tag_works() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin, 3);
    let be = cluster_backend(&cluster, "sh*p?[x]{t}:");
    let other = cluster_backend(&cluster, "shop?x{t}:");
    other
        .set("k", Bytes::from_static(b"other"), TTL)
        .await
        .expect("set other");
    for p in ["/a", "/b{c}", "/d*"] {
        for q in ["", "x=1"] {
            let key = CacheKey::encode_stored("GET", "h", p, q);
            be.set(&key, Bytes::from_static(b"x"), TTL)
                .await
                .expect("set");
        }
    }
    be.set("session:1", Bytes::from_static(b"s"), TTL)
        .await
        .expect("set");
    assert_eq!(be.keys("").await.expect("keys").len(), 7);
    let paths = be.path_invalidation().expect("paths");
    assert_eq!(
        paths.clear_path("/b{c}", true).await.expect("clear_path"),
        2
    );
    assert_eq!(paths.clear_path("/d*", false).await.expect("clear_path"), 1);
    assert_eq!(paths.clear_cache().await.expect("clear_cache"), 3);
    assert_eq!(
        be.keys("").await.expect("keys"),
        vec!["session:1".to_owned()]
    );
    assert_eq!(be.clear("").await.expect("clear"), 1);
    assert_eq!(
        other.get("k").await.expect("get"),
        Some(Bytes::from_static(b"other")),
        "another namespace is untouched"
    );
}

/// Reads go straight to the primary the backend's slot map names. After a
/// slot moves to another primary (a completed resharding step) that map is
/// out of date: the old owner answers `MOVED`, and the read must then be
/// answered from the new owner — the value as written, a write after the
/// move seen at once, a delete too. (Added with the direct reads.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_follow_a_slot_that_moved_after_the_map_was_read() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = RedisCluster::start(bin.clone(), 3);
    let be = cluster_backend(&cluster, "moved:");
    let key = CacheKey::encode_stored("GET", "h", "/moving", "");
    be.set(&key, Bytes::from_static(b"v1"), TTL)
        .await
        .expect("set");
    // Reads until the backend has read its slot map (in the background).
    for _ in 0..20 {
        assert_eq!(
            be.get(&key).await.expect("get").as_deref(),
            Some(&b"v1"[..])
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let port0 = cluster.nodes[0].port;
    let mut raw_moving = Vec::new();
    for node in &cluster.nodes {
        raw_moving.extend(raw_keys(node.port, "moved:*").await);
    }
    let slot = keyslot(&bin, port0, &String::from_utf8_lossy(&raw_moving[0]));
    let owner = owner_of(&bin, port0, slot);
    let target = cluster
        .nodes
        .iter()
        .map(|n| n.port)
        .find(|p| *p != owner)
        .expect("another primary");
    let (owner_id, target_id) = (node_id(&bin, owner), node_id(&bin, target));
    let mut dst = raw(&format!("redis://127.0.0.1:{target}")).await;
    let mut src = raw(&format!("redis://127.0.0.1:{owner}")).await;
    let ids = (owner_id.as_str(), target_id.as_str());
    migrate_slot_keys(&mut src, &mut dst, slot, ids, target).await;
    let slot_arg = slot.to_string();
    for node in &cluster.nodes {
        let mut conn = raw(&format!("redis://127.0.0.1:{}", node.port)).await;
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot_arg, "NODE", &target_id])
            .query_async(&mut conn)
            .await
            .expect("setslot node");
    }
    assert_eq!(owner_of(&bin, target, slot), target, "the slot moved");
    assert_eq!(
        be.get(&key).await.expect("get after the move").as_deref(),
        Some(&b"v1"[..])
    );
    be.set(&key, Bytes::from_static(b"v2"), TTL)
        .await
        .expect("set after the move");
    assert_eq!(
        be.get(&key).await.expect("get").as_deref(),
        Some(&b"v2"[..])
    );
    assert!(be.delete(&key).await.expect("delete"));
    assert_eq!(be.get(&key).await.expect("get after delete"), None);
}
