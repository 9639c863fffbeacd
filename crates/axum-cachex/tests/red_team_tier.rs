//! Red-team round 16: the Redis backend's memory tier (a coherent
//! in-process tier in front of Redis, kept coherent by invalidation
//! messages on `{prefix}__invalidations` and bounded by heartbeats).
//!
//! The first section held one failing test per bug found by a
//! fresh-context reviewer; all are fixed (a change is applied to the own
//! tier, and a bulk change announced, even when its call is abandoned; one
//! subscriber per backend; `max_staleness` is bounded). The `// Passing
//! checks` section holds the regression checks that passed from the
//! start.
//!
//! Every test starts its own private redis-server (`RedisProcess`), so
//! they need `AXUM_CACHEX_REDIS_SERVER_BIN`:
//!
//! ```sh
//! AXUM_CACHEX_REDIS_SERVER_BIN=/usr/bin/redis-server \
//!   cargo test -p axum-cachex --features redis --test red_team_tier
//! ```
//!
//! (add `,session` to the features for the session checks).
#![cfg(feature = "redis")]

mod common;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Wake, Waker},
    time::Duration,
};

use axum_cachex::backend::{Backend, Listing, MemoryTier, RedisBackend, RedisConfig};
use bytes::Bytes;
use common::backend_redis::{RedisProcess, raw, redis_server_bin};

/// The staleness bound the tests configure.
const BOUND: Duration = Duration::from_millis(200);
const TTL: Option<Duration> = Some(Duration::from_secs(60));

fn server() -> Option<RedisProcess> {
    Some(RedisProcess::start(redis_server_bin()?, &[]))
}

fn tier() -> MemoryTier {
    MemoryTier::new(8 << 20).max_staleness(BOUND)
}

/// One "application instance": its own backend (tier, connections,
/// subscriber) on `url` with the shared `prefix`. A long command timeout,
/// so that only the caller decides when to give up.
fn instance(url: &str, prefix: &str) -> RedisBackend {
    RedisConfig::from_url(url)
        .key_prefix(prefix)
        .command_timeout(Duration::from_secs(5))
        .memory_tier(tier())
        .build()
        .expect("tiered backend")
}

fn bytes(s: &'static str) -> Option<Bytes> {
    Some(Bytes::from_static(s.as_bytes()))
}

/// What `backend` answers for `key` from its tier, without a round trip.
fn from_tier(backend: &RedisBackend, key: &str) -> Option<Bytes> {
    backend.get_now(key).and_then(Result::ok).flatten()
}

/// Bounded wait until `backend` serves `key` from its memory tier (a
/// readiness poll: the tier is trusted once a heartbeat came back).
async fn wait_in_tier(backend: &RedisBackend, key: &str) -> Bytes {
    for _ in 0..300 {
        backend.get(key).await.expect("get");
        if let Some(value) = from_tier(backend, key) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached the memory tier");
}

async fn exists(conn: &mut redis::aio::MultiplexedConnection, data_key: &str) -> bool {
    let n: u64 = redis::cmd("EXISTS")
        .arg(data_key)
        .query_async(conn)
        .await
        .expect("EXISTS");
    n == 1
}

/// Bounded wait until `data_key` is gone from Redis.
async fn wait_gone(url: &str, data_key: &str) {
    let mut conn = raw(url).await;
    for _ in 0..400 {
        if !exists(&mut conn, data_key).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{data_key} was never removed from Redis");
}

async fn numsub(url: &str, channel: &str) -> u64 {
    let mut conn = raw(url).await;
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Drives `call` by hand and drops it as soon as its effect (`data_key`
/// gone) is visible in Redis, before it could finish: what happens to a
/// handler's future when the client disconnects, or to any call under a
/// caller's timeout. The call is polled only after a wake-up (a reply
/// arrived) and only while `data_key` still exists, looked up through
/// another connection *after* the wake-up, so it never runs past the round
/// trip that removed the key. Returns false when the call completed first
/// (the test's setup failed).
async fn drop_once_applied<F: Future>(call: F, url: &str, data_key: &str) -> bool {
    let mut conn = raw(url).await;
    let mut call = std::pin::pin!(call);
    let woken = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(exists(&mut conn, data_key).await, "setup: the key exists");
    if call.as_mut().poll(&mut cx).is_ready() {
        return false;
    }
    for _ in 0..100 {
        // Bounded wait for the next reply.
        let mut replied = false;
        for _ in 0..1000 {
            if woken.0.swap(false, Ordering::SeqCst) {
                replied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(replied, "setup: the call got no reply");
        if !exists(&mut conn, data_key).await {
            return true; // `call` is dropped here, half way
        }
        if call.as_mut().poll(&mut cx).is_ready() {
            return false;
        }
    }
    panic!("the call never removed {data_key}");
}

// ---------------------------------------------------------------------------
// Failing tests: one bug each.
// ---------------------------------------------------------------------------

/// **Bug: a change whose caller gave up is never applied to the
/// instance's own tier, which then serves the old value until `max_ttl`.**
///
/// The docs promise that every change made through any instance's backend
/// (set, delete, take, …) reaches every instance's tier, and that the old
/// value is not served after `max_staleness` (issue: "an invalidation
/// anywhere reaches every instance's memory tier"; product rule: "an
/// invalidation must never be silently lost"). The instance that makes a
/// change applies it to its own tier in `settle()`, *after* the Redis round
/// trip, and ignores its own message on the channel ("our own changes were
/// applied when they were made"). When the call's future is dropped after
/// the script was sent — a `tokio::time::timeout` around it, the HTTP
/// layer's `backend_timeout`, or axum dropping a handler whose client
/// disconnected — Redis runs the change and publishes it, every *other*
/// instance drops its copy, but `settle()` never runs: the instance that
/// made the change keeps serving the old value from its tier, and its
/// heartbeats keep the tier trusted, for up to `max_ttl` (60 s by default).
///
/// Here the server is frozen for 100 ms (less than the bound), A's
/// `delete` is abandoned by its caller after 100 ms, the server thaws and
/// deletes the key; B stops serving it, A serves `old` long after the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_delete_is_never_applied_to_the_own_tier() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-abandoned-delete");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    a.delete("warm-up").await.expect("delete"); // the script is loaded
    assert_eq!(wait_in_tier(&a, "k").await, "old");
    assert_eq!(wait_in_tier(&b, "k").await, "old");

    server.freeze();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), a.delete("k")).await;
    server.thaw();
    assert!(gave_up.is_err(), "setup: the caller gave up on the delete");
    wait_gone(&url, &format!("{prefix}k")).await;

    tokio::time::sleep(BOUND * 3).await;
    assert_eq!(
        b.get("k").await.expect("get"),
        None,
        "the other instance got the invalidation"
    );
    assert_eq!(
        a.get("k").await.expect("get"),
        None,
        "the instance that deleted the key still serves it from its own tier, \
         {:?} after the delete ran in Redis",
        BOUND * 3
    );
    drop(server);
}

/// **Bug: a prefix `clear` whose caller went away after the keys were
/// deleted is never announced: other instances serve the deleted values
/// until `max_ttl`.**
///
/// `Listing::clear` (and `clear_cache`, the HTTP layer's "clear
/// everything") deletes page by page and only then publishes its
/// invalidation (`announce_bulk`). The docs cover a *failed* announcement
/// ("the call returns the error … retry it"), but a call dropped between
/// the `UNLINK` and the `PUBLISH` (a caller's timeout, the HTTP layer's
/// `backend_timeout` around `clear_all`, an admin request whose client
/// disconnected) returns nothing to anyone: the keys are gone from Redis,
/// and no instance's tier, the caller's included, ever hears of it. The
/// issue requires that "an invalidation anywhere reaches every instance's
/// memory tier" and the product rule that it is "never silently lost";
/// the documented bound (`max_staleness`) is exceeded up to `max_ttl`.
#[tokio::test]
async fn an_abandoned_clear_is_never_announced() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-abandoned-clear");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("c:k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, "c:k").await, "old");

    let dropped = drop_once_applied(a.clear("c:"), &url, &format!("{prefix}c:k")).await;
    assert!(dropped, "setup: the clear was dropped after its UNLINK");

    tokio::time::sleep(BOUND * 3).await;
    assert_eq!(
        b.get("c:k").await.expect("get"),
        None,
        "B serves a value that `clear` deleted from Redis, {:?} after it was deleted",
        BOUND * 3
    );
}

/// **Bug: every reconnection after an authentication failure starts
/// another subscriber task; they all live as long as the backend.**
///
/// `RedisBackend::conn()` spawns the memory tier's subscriber each time it
/// creates the connection handle, and `map_error` drops the handle after
/// `AuthenticationFailed` so that the next call starts afresh. So while the
/// password is wrong (a rotated secret, a server restarted with a new
/// `requirepass`), every breaker probe spawns one more subscriber that
/// retries forever. Once the password matches again, each of them holds a
/// pub/sub connection of its own, publishes its own heartbeats and flushes
/// the tier on each of its reconnections: connections and tasks grow with
/// the length of the outage (a resource leak; the docs say the task ends
/// only when the backend is dropped). Expected: one subscription per
/// backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_leak_subscriber_tasks() {
    let Some(bin) = redis_server_bin() else {
        return;
    };
    let server = RedisProcess::start(bin, &["--requirepass", "old-secret"]);
    let prefix = common::unique_prefix("rt-auth-leak");
    let backend = RedisConfig::from_url(format!("redis://:new-secret@127.0.0.1:{}", server.port))
        .key_prefix(&prefix)
        .memory_tier(tier())
        .build()
        .expect("build");
    // The application keeps serving requests while the password is wrong.
    for _ in 0..60 {
        assert!(backend.get("k").await.is_err(), "the password is wrong");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The operator finishes the rotation on the server.
    let admin_url = format!("redis://:old-secret@127.0.0.1:{}", server.port);
    let mut admin = raw(&admin_url).await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new-secret")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET");
    let mut working = false;
    for _ in 0..200 {
        if backend.get("k").await.is_ok() {
            working = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(working, "setup: the backend works with the new password");
    // Subscribers retry at most every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let channel = format!("{prefix}__invalidations");
    let mut admin = raw(&format!("redis://:new-secret@127.0.0.1:{}", server.port)).await;
    let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async(&mut admin)
        .await
        .expect("PUBSUB NUMSUB");
    assert_eq!(
        subscribers, 1,
        "one backend should hold one subscription to its invalidation channel"
    );
}

/// **Bug: `max_staleness(Duration::MAX)` is accepted, then the subscriber
/// task panics on the first heartbeat and the tier is never used.**
///
/// `RedisConfig::build` checks only that `max_staleness` is at least 4 ms.
/// `Duration::MAX` (a natural way to say "no bound") is accepted, and
/// `Tier::heartbeat_received` computes `sent_at + max_staleness` with
/// tokio's `Instant + Duration`, which panics on overflow ("overflow when
/// adding duration to instant") inside the background task. The task dies,
/// the tier is silently never trusted, nothing tells the application.
/// Product rule: "bad input gets a clear error" — expected: `build()`
/// refuses the value, or the tier works (saturating arithmetic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_max_staleness_is_neither_refused_nor_working() {
    let Some(server) = server() else {
        return;
    };
    let built = RedisConfig::from_url(server.url())
        .key_prefix(common::unique_prefix("rt-max-staleness"))
        .memory_tier(MemoryTier::new(1 << 20).max_staleness(Duration::MAX))
        .build();
    let Ok(backend) = built else {
        return; // a clear configuration error: fine
    };
    backend
        .set("k", Bytes::from_static(b"v"), TTL)
        .await
        .expect("set");
    for _ in 0..200 {
        backend.get("k").await.expect("get");
        if from_tier(&backend, "k").is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "max_staleness(Duration::MAX) was accepted by build(), but the memory tier never \
         serves anything (its subscriber task panicked)"
    );
}

// ---------------------------------------------------------------------------
// Passing checks
// ---------------------------------------------------------------------------

/// A restarted server (its data lost) drops the subscription, and the tier
/// is flushed: B does not serve what Redis forgot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_flushes_the_tier() {
    let Some(mut server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-restart");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, "k").await, "old");
    server.restart();
    tokio::time::sleep(BOUND * 3).await;
    assert_eq!(from_tier(&b, "k"), None);
    let mut got = Err(());
    for _ in 0..100 {
        if let Ok(v) = b.get("k").await {
            got = Ok(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, Ok(None), "Redis lost the key");
}

/// The subscription alone is killed on the server, a change is made while
/// B resubscribes (its message is missed): B does not serve the old value
/// after the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_loses_no_change() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-kill-pubsub");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, "k").await, "old");
    let mut admin = raw(&url).await;
    let _: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    a.set("k", Bytes::from_static(b"new"), TTL)
        .await
        .expect("set");
    tokio::time::sleep(BOUND * 2).await;
    assert_eq!(b.get("k").await.expect("get"), bytes("new"));
}

/// The main connections are killed on the server (not the subscriptions):
/// changes keep reaching B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_main_connections_lose_no_change() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-kill-normal");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, "k").await, "old");
    let mut admin = raw(&url).await;
    let _: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    for _ in 0..100 {
        if a.set("k", Bytes::from_static(b"new"), TTL).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(BOUND * 2).await;
    assert_eq!(b.get("k").await.ok().flatten(), bytes("new"));
}

/// A frozen server (SIGSTOP) answers no heartbeat: the tier stops being
/// trusted within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_stops_the_tier_within_the_bound() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-freeze");
    let b = instance(&url, &prefix);
    b.set("k", Bytes::from_static(b"v"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, "k").await, "v");
    server.freeze();
    tokio::time::sleep(BOUND + BOUND / 2).await;
    let served = from_tier(&b, "k");
    server.thaw();
    assert_eq!(served, None, "no heartbeat came back within the bound");
}

/// `take` through two instances: one gets the value, the other nothing,
/// and neither tier keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_through_two_instances_hands_the_value_out_once() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-take");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("state", Bytes::from_static(b"s"), TTL)
        .await
        .expect("set");
    wait_in_tier(&a, "state").await;
    wait_in_tier(&b, "state").await;
    assert_eq!(a.take("state").await.expect("take"), bytes("s"));
    assert_eq!(b.take("state").await.expect("take"), None);
    assert_eq!(a.get("state").await.expect("get"), None);
    tokio::time::sleep(BOUND).await;
    assert_eq!(b.get("state").await.expect("get"), None);
}

/// A key that expires in Redis is not served from the tier afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_not_served_from_the_tier() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-expiry");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set(
        "k",
        Bytes::from_static(b"v"),
        Some(Duration::from_millis(600)),
    )
    .await
    .expect("set");
    wait_in_tier(&b, "k").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(from_tier(&b, "k"), None);
    assert_eq!(b.get("k").await.expect("get"), None);
}

/// Strangers on the channel (garbage, a foreign heartbeat, a huge message)
/// are ignored, and real invalidations still arrive afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_forged_on_the_channel_do_not_break_coherence() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-forged");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    a.set("k", Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, "k").await, "old");
    let channel = format!("{prefix}__invalidations");
    let mut conn = raw(&url).await;
    let huge = format!("x\nk{}", "y".repeat(4 << 20));
    for forged in [
        &b"garbage"[..],
        b"\xff\xfe\nk",
        b"someone\nh1",
        b"someone\nh18446744073709551616",
        b"someone\nP9/",
        b"someone\n",
        huge.as_bytes(),
    ] {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(forged)
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
    }
    a.set("k", Bytes::from_static(b"new"), TTL)
        .await
        .expect("set");
    tokio::time::sleep(BOUND * 2).await;
    assert_eq!(b.get("k").await.expect("get"), bytes("new"));
}

/// A dropped backend's subscriber ends and closes its subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_backend_closes_its_subscription() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-drop");
    let channel = format!("{prefix}__invalidations");
    let a = instance(&url, &prefix);
    a.set("k", Bytes::from_static(b"v"), TTL)
        .await
        .expect("set");
    wait_in_tier(&a, "k").await;
    assert_eq!(numsub(&url, &channel).await, 1);
    drop(a);
    tokio::time::sleep(BOUND * 2).await;
    assert_eq!(numsub(&url, &channel).await, 0);
}

/// Outside a Tokio runtime a tiered backend builds, and `get_now` answers
/// "ask `get`" without panicking.
#[test]
fn a_tiered_backend_without_a_runtime_does_not_panic() {
    let backend = RedisConfig::from_url("redis://127.0.0.1:1")
        .memory_tier(tier())
        .build()
        .expect("build");
    assert!(backend.get_now("k").is_none());
}

/// Bad tier settings are refused at build time with an error.
#[test]
fn bad_tier_settings_are_refused() {
    for bad in [
        MemoryTier::new(0),
        MemoryTier::new(1 << 20).max_staleness(Duration::from_millis(3)),
        MemoryTier::new(1 << 20).max_ttl(Duration::ZERO),
    ] {
        let built = RedisConfig::from_url("redis://127.0.0.1:1")
            .memory_tier(bad.clone())
            .build();
        assert!(built.is_err(), "{bad:?} accepted");
    }
}

/// `clear_path` on A reaches B's tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_path_reaches_the_other_tier() {
    let Some(server) = server() else {
        return;
    };
    let url = server.url();
    let prefix = common::unique_prefix("rt-paths");
    let (a, b) = (instance(&url, &prefix), instance(&url, &prefix));
    let key = axum_cachex::CacheKey::encode_stored("GET", "h", "/p/1", "q=1");
    a.set(&key, Bytes::from_static(b"old"), TTL)
        .await
        .expect("set");
    assert_eq!(wait_in_tier(&b, &key).await, "old");
    let cleared = a
        .path_invalidation()
        .expect("fast path")
        .clear_path("/p/1", true)
        .await
        .expect("clear_path");
    assert_eq!(cleared, 1);
    tokio::time::sleep(BOUND).await;
    assert_eq!(b.get(&key).await.expect("get"), None);
}

/// Sessions through two instances (feature `session`): the first test is a
/// failing one (the abandoned-delete bug seen through a logout), the second
/// a passing check.
#[cfg(feature = "session")]
mod sessions {
    use std::sync::Arc;

    use axum_cachex::session::{SessionConfig, SessionManager, SessionUser};

    use super::*;

    const SECRET: &str = "a-secret-of-at-least-32-characters!!";

    fn manager(backend: RedisBackend) -> SessionManager {
        let config = SessionConfig::builder(SECRET).build().expect("config");
        SessionManager::new(Arc::new(backend), config)
    }

    /// **Bug (the first one, seen through sessions): a logout whose request
    /// was abandoned is lost on the instance that performed it.**
    ///
    /// `delete_session` is one `backend.delete`. When the logout request's
    /// future is dropped after the command was sent (the client closed the
    /// connection, a timeout layer fired — here the server is frozen for
    /// 100 ms, less than the bound), Redis deletes the session and tells
    /// every other instance, but the instance that ran the logout never
    /// applies it to its own tier (`settle()` did not run, and it ignores its
    /// own message). That instance keeps accepting the logged-out token for
    /// up to `max_ttl` (60 s by default), far beyond `max_staleness`
    /// (issue: "an invalidation anywhere reaches every instance's memory
    /// tier: … session invalidation"; product rule: "an invalidation must
    /// never be silently lost").
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_logout_keeps_the_session_alive_on_its_own_instance() {
        let Some(server) = server() else {
            return;
        };
        let url = server.url();
        let prefix = common::unique_prefix("rt-abandoned-logout");
        let backend_a = instance(&url, &prefix);
        let (a, b) = (manager(backend_a.clone()), manager(instance(&url, &prefix)));
        backend_a.delete("warm-up").await.expect("delete");
        let (session, token) = a
            .create_session(SessionUser::new("u1"), None, None, None)
            .await
            .expect("create");
        for _ in 0..20 {
            a.load_session(&token, None, None).await.expect("load");
            b.load_session(&token, None, None).await.expect("load");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.freeze();
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), a.delete_session(session.id())).await;
        server.thaw();
        assert!(gave_up.is_err(), "setup: the logout request was abandoned");
        // Bounded wait until the logout reached Redis (B reads it there).
        let mut logged_out = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if b.load_session(&token, None, None).await.is_err() {
                logged_out = true;
                break;
            }
        }
        assert!(logged_out, "setup: the session was deleted in Redis");
        tokio::time::sleep(BOUND * 3).await;
        assert!(
            a.load_session(&token, None, None).await.is_err(),
            "the instance that logged the session out still accepts its token {:?} later",
            BOUND * 3
        );
    }

    /// A logout everywhere made on A is seen by B's manager, whose tier held
    /// the session.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delete_user_sessions_reaches_the_other_instance() {
        let Some(server) = server() else {
            return;
        };
        let url = server.url();
        let prefix = common::unique_prefix("rt-sessions");
        let (a, b) = (
            manager(instance(&url, &prefix)),
            manager(instance(&url, &prefix)),
        );
        let (_, token) = a
            .create_session(SessionUser::new("u1"), None, None, None)
            .await
            .expect("create");
        for _ in 0..20 {
            b.load_session(&token, None, None).await.expect("load");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(a.delete_user_sessions("u1").await.expect("logout"), 1);
        tokio::time::sleep(BOUND).await;
        assert!(b.load_session(&token, None, None).await.is_err());

        let (session, token) = a
            .create_session(SessionUser::new("u2"), None, None, None)
            .await
            .expect("create");
        for _ in 0..20 {
            b.load_session(&token, None, None).await.expect("load");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            a.invalidate_session(session.id())
                .await
                .expect("invalidate")
        );
        tokio::time::sleep(BOUND).await;
        assert!(b.load_session(&token, None, None).await.is_err());
    }
}
