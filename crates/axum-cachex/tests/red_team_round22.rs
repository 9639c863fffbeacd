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

use std::time::{Duration, Instant};

use axum_cachex::backend::{Backend, MemoryTier, RedisConfig};
use bytes::Bytes;
use common::{
    backend_redis::{RedisProcess, redis_server_bin},
    cluster_lab::*,
};

const TTL: Option<Duration> = Some(Duration::from_secs(120));

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
