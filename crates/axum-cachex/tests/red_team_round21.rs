//! Red-team round 21: Redis Cluster reads that go straight to the primary
//! the backend's slot map names (`run_read`), the always
//! ready `CacheService`, and the header-name bound on served entries.
//!
//! Written by a fresh-context reviewer from the changes and the rules.
//! Every test not marked `REGRESSION GUARD` failed on the reviewed code
//! because of a real bug, since fixed (a `MOVED` is followed to the node it
//! names over our own connection, never through a `READONLY` one; one
//! command timeout bounds the whole read; a reader connection that failed
//! is dropped; the memory tier reads value and TTL in one script, which the
//! cluster client can send after `ASKING`):
//! - `a_node_that_refused_the_password_once_is_read_again_when_it_accepts_it`
//! - `a_redirected_read_stays_within_the_command_timeout`
//! - `a_tiered_read_follows_a_slot_that_is_migrating`
//! - `a_redirected_read_after_a_failover_is_not_served_by_a_lagging_replica`
//!
//! Each Redis test starts its own private cluster, so they need
//! `AXUM_CACHEX_REDIS_SERVER_BIN` (with `redis-cli` next to it):
//!
//! ```sh
//! AXUM_CACHEX_REDIS_SERVER_BIN=/usr/bin/redis-server \
//!   cargo nextest run --all-features -p axum-cachex --test red_team_round21
//! ```
#![cfg(feature = "redis")]

mod common;

use std::time::{Duration, Instant};

use axum_cachex::backend::{Backend, MemoryTier};
use bytes::Bytes;
use common::{backend_redis::redis_server_bin, cluster_lab::*};

const TTL: Option<Duration> = Some(Duration::from_secs(120));

// ---------------------------------------------------------------------------
// Failing tests: each one documents a bug
// ---------------------------------------------------------------------------

/// **A direct reader that once failed to authenticate never recovers.**
///
/// `direct_reader` keeps one `ConnectionManager` per primary for good.
/// redis-rs's manager only reconnects after I/O errors: when a reconnect
/// fails `AUTH`, the manager's connection stays that failure forever.
/// `map_error` knows this and drops the backend's own (cluster)
/// connection after `AuthenticationFailed` so the next call starts afresh
/// — but not the node's reader. So after a node refused the password once
/// (a password rotation done in the wrong order and rolled back, an ACL
/// user created after the app started), the breaker cycles for ever: the
/// probe `PING` (through the cluster client, which was rebuilt) succeeds,
/// the next read on the stale reader fails `AUTH` again and re-opens it.
///
/// Expected (rules: "Reads must work with TLS/auth settings the same as
/// the cluster client", "the breaker recovers"): once the node accepts the
/// password again, its keys are read again. Instead every `get` of that
/// node's keys fails until the process restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_refused_the_password_once_is_read_again_when_it_accepts_it() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let pw = "s3cret-pw";
    let cluster = Cluster::start(
        &bin,
        3,
        0,
        Some(pw),
        &["--requirepass", pw, "--masterauth", pw],
    );
    let be = backend_for(&cluster, "auth:", Duration::from_millis(300))
        .build()
        .expect("backend");
    let keys: Vec<String> = (0..30).map(|n| format!("k{n}")).collect();
    for k in &keys {
        be.set(k, Bytes::from(k.clone()), TTL).await.expect("set");
    }
    warm(&be, &keys[0]).await;
    for k in &keys {
        assert_eq!(be.get(k).await.expect("get").as_deref(), Some(k.as_bytes()));
    }
    // A key of node 0's, and one of another node's.
    let located = cluster.locate("auth:*").await;
    let victim = cluster.nodes[0].port;
    let on_node = |k: &str, want: bool| {
        located.iter().any(|(raw, port)| {
            String::from_utf8_lossy(raw).ends_with(k) && (*port == victim) == want
        })
    };
    let victim_key = keys
        .iter()
        .find(|k| on_node(k, true))
        .expect("a key on node 0")
        .clone();
    let other_key = keys
        .iter()
        .find(|k| on_node(k, false))
        .expect("a key elsewhere")
        .clone();

    // The node's password changes (and its clients are dropped, as by a
    // restart with the new setting): the app's password is refused.
    assert!(
        cluster
            .cli(victim, &["config", "set", "requirepass", "rotated"])
            .contains("OK")
    );
    let killed = cli(
        &bin,
        victim,
        Some("rotated"),
        &["client", "kill", "type", "normal"],
    );
    assert!(
        killed.trim().parse::<u32>().is_ok_and(|n| n > 0),
        "{killed}"
    );
    let deadline = Instant::now() + Duration::from_millis(800);
    while Instant::now() < deadline {
        let _ = be.get(&victim_key).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Rolled back: the node accepts the app's password again.
    assert!(
        cli(
            &bin,
            victim,
            Some("rotated"),
            &["config", "set", "requirepass", pw]
        )
        .contains("OK")
    );

    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = None;
    while Instant::now() < deadline {
        match be.get(&victim_key).await {
            Ok(Some(v)) if v == victim_key.as_bytes() => {
                last = None;
                break;
            }
            other => last = Some(format!("{other:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        be.get(&other_key).await.expect("other node").as_deref(),
        Some(other_key.as_bytes()),
        "the other primaries keep answering"
    );
    // A backend made now, with the same settings, reads it at once.
    let fresh = backend_for(&cluster, "auth:", Duration::from_millis(300))
        .build()
        .expect("backend");
    assert_eq!(
        fresh
            .get(&victim_key)
            .await
            .expect("fresh backend")
            .as_deref(),
        Some(victim_key.as_bytes()),
        "the node accepts the password again"
    );
    assert!(
        last.is_none(),
        "6 s after node 0 accepts the password again, its keys still cannot be read \
         (the cluster client recovered; the node's direct reader did not): last get = {}",
        last.unwrap_or_default()
    );
}

/// **A read that meets a redirection can take twice the command
/// timeout.**
///
/// `run_read` bounds the direct attempt by the command timeout, and after
/// a `MOVED`/`ASK` runs the read again through the cluster client under a
/// *fresh* command timeout. A slow old owner (here: busy 300 ms) followed
/// by a slow new owner makes one `get` last ~600 ms with a 400 ms timeout.
/// Before the change, one bounded attempt followed the redirection inside
/// a single timeout.
///
/// Expected (rule: "A `get` must not hang past the command timeout";
/// `RedisConfig::command_timeout`: "Bound on one round trip … including
/// any wait for a connection"): `get` returns (a value or
/// `BackendError::Timeout`) within the command timeout, plus scheduling
/// slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_read_stays_within_the_command_timeout() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = Cluster::start(&bin, 3, 0, None, &["--enable-debug-command", "yes"]);
    let timeout = Duration::from_millis(400);
    let be = backend_for(&cluster, "slow:", timeout)
        .breaker_threshold(0)
        .build()
        .expect("backend");
    be.set("k", Bytes::from_static(b"v1"), TTL)
        .await
        .expect("set");
    warm(&be, "k").await;
    let located = cluster.locate("slow:*").await;
    let (raw_key, owner) = located.iter().next().expect("the key");
    let owner = *owner;
    let slot = cluster.keyslot(raw_key);
    let target = cluster
        .ports()
        .into_iter()
        .find(|p| *p != owner)
        .expect("another primary");
    cluster.migrate_slot(slot, owner, target, true).await;

    // Both nodes busy for a moment (a slow command, a fork, a big DEL).
    let mut old = cluster.raw(owner).await;
    let mut new = cluster.raw(target).await;
    let busy_old = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.3")
            .query_async(&mut old)
            .await;
    });
    let busy_new = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg("0.6")
            .query_async(&mut new)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let got = be.get("k").await;
    let took = started.elapsed();
    let _ = busy_old.await;
    let _ = busy_new.await;
    assert!(
        took <= timeout + Duration::from_millis(100),
        "one get took {took:?} with a command timeout of {timeout:?} (result {got:?})"
    );
}

/// **With the memory tier, a read of a key whose slot is migrating fails.**
///
/// The tier reads `GET` and `PTTL` in one pipeline. Straight to the old
/// owner, a key already moved answers `ASK`; `run_read` then hands the
/// pipeline to the cluster client, which sends `ASKING` once and then the
/// pipeline — but `ASKING` holds for one command only, so the new owner
/// answers the `PTTL` with `MOVED` back to the old owner, and with one
/// retry the cluster client gives up. The read comes back as an error (a
/// miss for the HTTP layer, and a breaker-visible failure) for as long as
/// the slot migrates, though the value is there.
///
/// Expected (rule: reads follow resharding, "slot migrating: ASK"; the
/// change: "A `MOVED`/`ASK` reply refreshes the map and re-runs the read
/// through the cluster client"): `get` returns the stored value. A plain
/// `GET` (no tier) does (asserted first). The cluster-client path failed
/// the same way before the change; the direct read, which saw the `ASK`
/// and its target itself, hands the pipeline to a path that cannot follow
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_read_follows_a_slot_that_is_migrating() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = Cluster::start(&bin, 3, 0, None, &[]);
    let writer = backend_for(&cluster, "ask:", Duration::from_millis(500))
        .build()
        .expect("writer");
    writer
        .set("k", Bytes::from_static(b"v1"), TTL)
        .await
        .expect("set");
    writer
        .set("other", Bytes::from_static(b"o"), TTL)
        .await
        .expect("set");
    // A reader with a tier that never saw `k`: its map is loaded by reads
    // of another key.
    let reader = backend_for(&cluster, "ask:", Duration::from_millis(500))
        .memory_tier(MemoryTier::new(1 << 20))
        .build()
        .expect("reader");
    warm(&reader, "other").await;
    let located = cluster.locate("ask:*").await;
    let (raw_key, owner) = located
        .iter()
        .find(|(k, _)| String::from_utf8_lossy(k).ends_with('k'))
        .expect("the key");
    let owner = *owner;
    let slot = cluster.keyslot(raw_key);
    let target = cluster
        .ports()
        .into_iter()
        .find(|p| *p != owner)
        .expect("another primary");
    cluster.migrate_slot(slot, owner, target, false).await;

    assert_eq!(
        writer.get("k").await.expect("plain get").as_deref(),
        Some(&b"v1"[..]),
        "a plain GET follows ASK"
    );
    let got = reader.get("k").await;
    assert!(
        matches!(&got, Ok(Some(v)) if v.as_ref() == b"v1"),
        "a tiered read of a migrating slot's key: {got:?}"
    );
}

/// **After a failover, the redirection fallback reads the old primary —
/// now a lagging replica — through the cluster client.**
///
/// After `CLUSTER FAILOVER`, the backend's slot map still names the old
/// primary for up to 5 s. The direct read gets `MOVED` there (its own
/// connection never sent `READONLY`) and `run_read` re-runs it through
/// redis-rs's cluster client "which follows redirections". But redis-rs
/// sends `READONLY` on every connection it opens (cluster_async
/// `connect_and_check`), and its own map is just as stale: the `GET` goes
/// to the old primary over a `READONLY` connection, and a replica answers
/// a read-only command on such a connection from its own data set — no
/// `MOVED`. So the read is served by the demoted node, whatever its
/// replication lag. Here its link to the new primary is broken (a tiny
/// replica output buffer on the new primary), so it still holds the value
/// from before a write the new primary acknowledged, and `get` returns
/// that old value. (Before the change every read took that path; the
/// direct read fixes the common case, the fallback keeps the hole, and it
/// contradicts the change's own claim: "a stale map costs a round trip,
/// never a wrong value".)
///
/// Expected (rules: "never returns a stale value after a write/delete
/// acknowledged by the cluster"; "a node that is a replica answers a plain
/// GET with MOVED (no READONLY); make sure nothing serves from a replica
/// that lags"): `get` returns the acknowledged value (or fails / misses),
/// never the overwritten one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirected_read_after_a_failover_is_not_served_by_a_lagging_replica() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let cluster = Cluster::start(&bin, 3, 1, None, &[]);
    let be = backend_for(&cluster, "lag:", Duration::from_millis(500))
        .build()
        .expect("backend");
    be.set("k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    warm(&be, "k").await;
    assert_eq!(
        be.get("k").await.expect("get").as_deref(),
        Some(&b"old"[..])
    );
    let located = cluster.locate("lag:*").await;
    let (raw_key, owner) = located.iter().next().expect("the key");
    let (raw_key, owner) = (raw_key.clone(), *owner);

    // The owner's replica takes over; the old owner becomes its replica.
    let replica = replica_of(&cluster, owner);
    failover(&cluster, replica, owner);
    for _ in 0..400 {
        if cluster
            .cli(owner, &["info", "replication"])
            .contains("master_link_status:up")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // The demoted node lags: the cluster starts requiring a password
    // (open connections stay authenticated), the new primary drops its
    // replication link, and the demoted node, with no `masterauth`, cannot
    // link again.
    for port in cluster.ports() {
        assert!(
            cluster
                .cli(port, &["config", "set", "requirepass", "pw"])
                .contains("OK")
        );
    }
    cli(
        &bin,
        replica,
        Some("pw"),
        &["client", "kill", "type", "replica"],
    );
    for _ in 0..400 {
        if cli(&bin, owner, Some("pw"), &["info", "replication"])
            .contains("master_link_status:down")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    // A write acknowledged by the new primary (another instance, whose
    // cluster client was made after the failover).
    let writer = backend_for(&cluster, "lag:", Duration::from_millis(500))
        .password("pw")
        .build()
        .expect("writer");
    writer
        .set("k", Bytes::from_static(b"new"), TTL)
        .await
        .expect("write acknowledged by the new primary");
    let mut conn = redis::Client::open(format!("redis://:pw@127.0.0.1:{replica}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw");
    let on_primary: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&raw_key)
        .query_async(&mut conn)
        .await
        .expect("GET on the new primary");
    assert_eq!(on_primary.as_deref(), Some(&b"new"[..]));

    let got = be.get("k").await;
    assert!(
        !matches!(&got, Ok(Some(v)) if v.as_ref() == b"old"),
        "read the overwritten value from the demoted, lagging node {owner} \
         (the new primary {replica} holds `new`): {got:?}"
    );
}

// ---------------------------------------------------------------------------
// REGRESSION GUARDS: these passed on the reviewed code
// ---------------------------------------------------------------------------

/// The port of a replica of `primary` (its `CLUSTER NODES` view).
fn replica_of(cluster: &Cluster, primary: u16) -> u16 {
    let id = cluster.node_id(primary);
    for _ in 0..200 {
        for line in cluster.cli(primary, &["cluster", "nodes"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 && f[2].contains("slave") && f[3] == id {
                return f[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no replica of {primary}");
}

/// `CLUSTER FAILOVER` on `replica` of `primary`, asked again when a
/// manual failover times out (bounded).
fn failover(cluster: &Cluster, replica: u16, primary: u16) {
    for _ in 0..4 {
        assert!(
            cluster
                .cli(replica, &["cluster", "failover"])
                .contains("OK")
        );
        for _ in 0..300 {
            if cluster.cli(replica, &["role"]).starts_with("master")
                && cluster.cli(primary, &["role"]).starts_with("slave")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    panic!("the failover of {primary} to {replica} never completed");
}

/// REGRESSION GUARD (readiness). Around an inner service whose readiness
/// the test controls (and which panics when called without it): a fresh
/// hit is answered while the inner service is not ready, and also while
/// its `poll_ready` fails; a miss waits for readiness and is then called;
/// a failing `poll_ready` is the miss's (and a POST's) error.
mod readiness {
    use std::{
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
        task::{Context, Poll, Waker},
        time::Duration,
    };

    use axum::body::Body;
    use axum_cachex::{CacheLayer, backend::MemoryBackend};
    use http::{Request, Response};
    use tower::{Layer, Service, ServiceExt};

    #[derive(Default)]
    struct GateState {
        open: bool,
        fail: bool,
        wakers: Vec<Waker>,
    }

    /// Ready when open; `poll_ready` fails when `fail`. Each clone must be
    /// made ready before it is called.
    #[derive(Clone, Default)]
    struct Gate {
        st: Arc<Mutex<GateState>>,
        readied: bool,
        calls: Arc<AtomicUsize>,
    }

    impl Gate {
        fn set(&self, open: bool, fail: bool) {
            let mut st = self.st.lock().expect("lock");
            st.open = open;
            st.fail = fail;
            for w in st.wakers.drain(..) {
                w.wake();
            }
        }
    }

    impl Service<Request<Body>> for Gate {
        type Response = Response<Body>;
        type Error = String;
        type Future = std::future::Ready<Result<Response<Body>, String>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), String>> {
            let mut st = self.st.lock().expect("lock");
            if st.fail {
                return Poll::Ready(Err("boom".into()));
            }
            if st.open {
                self.readied = true;
                return Poll::Ready(Ok(()));
            }
            st.wakers.push(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, req: Request<Body>) -> Self::Future {
            assert!(self.readied, "called without readiness: {}", req.uri());
            self.readied = false;
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut res = Response::new(Body::from(req.uri().to_string()));
            res.headers_mut()
                .insert("cache-control", "max-age=60".parse().expect("value"));
            std::future::ready(Ok(res))
        }
    }

    fn req(method: &str, uri: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "example.com")
            .body(Body::empty())
            .expect("request")
    }

    fn status(res: &Response<Body>) -> String {
        res.headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    #[tokio::test]
    async fn readiness_is_honoured_by_misses_and_not_needed_by_hits() {
        let gate = Gate::default();
        let layer = CacheLayer::builder()
            .backend(Arc::new(MemoryBackend::new()))
            .ttl(Duration::from_secs(60))
            .build()
            .expect("layer");
        let svc = layer.layer(gate.clone());
        gate.set(true, false);
        let warm = svc.clone().oneshot(req("GET", "/a")).await.expect("warm");
        assert!(status(&warm).contains("stored"), "{}", status(&warm));

        gate.set(false, false);
        let hit = tokio::time::timeout(
            Duration::from_secs(2),
            svc.clone().oneshot(req("GET", "/a")),
        )
        .await
        .expect("a hit does not wait for the inner service")
        .expect("hit");
        assert!(status(&hit).contains("hit"), "{}", status(&hit));

        let mut miss = tokio::spawn(svc.clone().oneshot(req("GET", "/b")));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut miss)
                .await
                .is_err(),
            "a miss waits while the inner service is not ready"
        );
        gate.set(true, false);
        let miss = miss.await.expect("task").expect("miss");
        assert!(status(&miss).contains("fwd=miss"), "{}", status(&miss));

        gate.set(false, true);
        let failed = svc.clone().oneshot(req("GET", "/c")).await;
        assert_eq!(failed.err().as_deref(), Some("boom"));
        let failed = svc.clone().oneshot(req("POST", "/a")).await;
        assert_eq!(failed.err().as_deref(), Some("boom"));
        let hit = svc.clone().oneshot(req("GET", "/b")).await.expect("hit");
        assert!(status(&hit).contains("hit"), "{}", status(&hit));
        assert_eq!(gate.calls.load(Ordering::SeqCst), 2);
    }
}
