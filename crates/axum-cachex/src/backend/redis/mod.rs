//! The Redis backend (feature `redis`); see [`RedisBackend`].

mod config;
mod conn;
mod keys;
mod nodes;
mod subscriber;
mod tier;

use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::Future,
    sync::{
        Arc, LazyLock, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ::redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use axum_cachex_core::{
    Backend, BackendError, CACHE_NAMESPACE, CacheKey, CacheRecord, CompareAndSwap, Listing,
    PathInvalidation, StoredValue,
};
use bytes::Bytes;

pub use self::config::{RedisConfig, RedisConfigError};
pub use self::tier::MemoryTier;
use self::{
    conn::{Conn, Endpoint, NodeAddr},
    keys::KeyLayout,
    nodes::{BreakerSettings, Breakers, SlotMap, Target},
    tier::{Scope, Tier, message},
};
use super::breaker::{Breaker, Cause, ProbeTicket, Watch};

const NAME: &str = "redis";

/// `COUNT` hint of every `SCAN`/`ZSCAN` page.
const SCAN_COUNT: u64 = 1000;
/// Keys read per pipeline by `entries`.
const ENTRIES_BATCH: usize = 500;
/// Longest TTL sent to Redis (about 35 000 years): beyond it Redis refuses
/// the expiry, and the index script's arithmetic (Lua doubles) stays exact.
const MAX_TTL_MS: u64 = 1 << 50;

/// `SET` with the per-path index, atomically.
///
/// KEYS: entry, index. ARGV: value, ttl ms (`''` = none), `''`/`NX`/`XX`,
/// logical key (the index member), then the memory tier's channel and
/// message (`''` = none; see [`tier`]). Returns 1 when the entry was
/// written.
const SET_INDEXED_LUA: &str = r"
local set
if ARGV[2] == '' then
  if ARGV[3] == '' then set = redis.call('SET', KEYS[1], ARGV[1])
  else set = redis.call('SET', KEYS[1], ARGV[1], ARGV[3]) end
else
  if ARGV[3] == '' then set = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  else set = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], ARGV[3]) end
end
if not set then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = 'inf'
if ARGV[2] ~= '' then score = string.format('%d', now + tonumber(ARGV[2])) end
redis.call('ZADD', KEYS[2], score, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now))
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local latest = tonumber(top[2])
if latest == nil or latest == math.huge then
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIREAT', KEYS[2], string.format('%d', latest + 1000))
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
";

/// Compare-and-delete for lock release. KEYS: entry. ARGV: expected value,
/// then the tier's channel and message (`''` = none).
const DELETE_IF_EQUALS_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
  return 1
end
return 0
";

/// Compare-and-set. KEYS: entry. ARGV: expected value, new value, ttl ms
/// (`''` = none), then the tier's channel and message (`''` = none).
const SET_IF_EQUALS_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2])
  else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
  if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
  return 1
end
return 0
";

/// A one-key command followed by a `PUBLISH`, atomically (a `MULTI` would
/// do on a standalone server, but on Cluster redis-rs routes a pipeline by
/// its first key and takes the channel for one). KEYS: the key. ARGV:
/// channel, message, command, the command's arguments after the key.
const NOTED_LUA: &str = r"
local reply = redis.call(ARGV[3], KEYS[1], unpack(ARGV, 4))
redis.call('PUBLISH', ARGV[1], ARGV[2])
return reply
";

/// One page of `clear_path`: the entries, their index members and the
/// tier's `PUBLISH`, atomically (all in the index's slot). KEYS: index,
/// entries. ARGV: channel and message (`''` = none), members. Returns how
/// many entries existed.
const CLEAR_PAGE_LUA: &str = r"
local existed = redis.call('UNLINK', unpack(KEYS, 2))
redis.call('ZREM', KEYS[1], unpack(ARGV, 3))
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], ARGV[2]) end
return existed
";

static NOTED: LazyLock<Script> = LazyLock::new(|| Script::new(NOTED_LUA));
static CLEAR_PAGE: LazyLock<Script> = LazyLock::new(|| Script::new(CLEAR_PAGE_LUA));
static SET_INDEXED: LazyLock<Script> = LazyLock::new(|| Script::new(SET_INDEXED_LUA));
static DELETE_IF_EQUALS: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_IF_EQUALS_LUA));
static SET_IF_EQUALS: LazyLock<Script> = LazyLock::new(|| Script::new(SET_IF_EQUALS_LUA));

/// Conditional write mode.
#[derive(Clone, Copy)]
enum Mode {
    Always,
    IfAbsent,
    IfPresent,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Always => "",
            Mode::IfAbsent => "NX",
            Mode::IfPresent => "XX",
        }
    }
}

/// A [`Backend`] on Redis (feature `redis`): a cache shared by every
/// instance of an application, with server-side TTLs, fail-open timeouts and
/// automatic reconnection. Cloning is cheap; clones share the connection.
///
/// ```no_run
/// use std::{sync::Arc, time::Duration};
/// use axum_cachex::backend::{Backend, RedisBackend};
///
/// # fn main() -> Result<(), axum_cachex::backend::RedisConfigError> {
/// let backend: Arc<dyn Backend> = Arc::new(
///     RedisBackend::builder()
///         .url("redis://127.0.0.1:6379/0")
///         .key_prefix("shop:")
///         .command_timeout(Duration::from_millis(250))
///         .build()?, // does not connect: works even if Redis is down
/// );
/// # let _ = backend; Ok(()) }
/// ```
///
/// # Client library
///
/// Built on [redis-rs](https://docs.rs/redis) with its async
/// `ConnectionManager` (its `ClusterConnection` on a Cluster, see
/// [below](#redis-cluster)): one multiplexed connection shared by all calls,
/// replaced in the background when it breaks, so a restarted server is used
/// again without rebuilding anything. redis-rs was chosen over fred for a
/// leaner dependency tree (with `default-features = false` only tokio,
/// futures and a handful of small crates; fred brings its own runtime
/// abstractions, metrics and many more features to prune), because it is the
/// actively maintained reference client of the Redis organisation, and
/// because `ConnectionManager` already does the one thing a cache needs from
/// a pool: reconnect by itself.
///
/// # Options and defaults
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`url`](RedisConfig::url) | `redis://127.0.0.1:6379/0` | `redis://`, `rediss://` (TLS), `redis+unix://` |
/// | [`cluster_nodes`](RedisConfig::cluster_nodes) | none | seed URLs of a Redis Cluster, instead of `url` |
/// | [`memory_tier`](RedisConfig::memory_tier) | none | a coherent in-process tier in front of Redis ([below](#memory-tier)) |
/// | [`host`](RedisConfig::host) / [`port`](RedisConfig::port) / [`db`](RedisConfig::db) | from the URL | override the URL's parts |
/// | [`username`](RedisConfig::username) / [`password`](RedisConfig::password) | none | ACL user / `AUTH`, sent on every reconnection |
/// | [`tls`](RedisConfig::tls) | `false` (`true` for `rediss://`) | needs the `redis-tls` feature (rustls + ring); custom CA and client certificates with `tls_root_cert_pem` / `tls_client_cert` |
/// | [`key_prefix`](RedisConfig::key_prefix) | `axum_cachex:` | namespace of every key; `clear` only empties it |
/// | [`command_timeout`](RedisConfig::command_timeout) | 250 ms | bound on one round trip, waiting for a connection included |
/// | [`connect_timeout`](RedisConfig::connect_timeout) | 1 s | bound on TCP connect + TLS + `AUTH`/`SELECT` |
/// | [`reconnect_delay`](RedisConfig::reconnect_delay) | 50 ms doubling to 1 s | fail-fast pause of the circuit breaker before each background probe |
/// | [`breaker_threshold`](RedisConfig::breaker_threshold) | 3 | consecutive timeouts that open the circuit breaker (a frozen server) |
///
/// # Fail-open behaviour
///
/// - [`build`](RedisConfig::build) never contacts the server: the connection
///   is made on the first call. An application therefore starts while Redis
///   is down; its calls fail with a typed error until Redis is reachable,
///   then work without any restart.
/// - Every round trip is bounded by the command timeout and fails with
///   [`BackendError::Timeout`] when it elapses; a refused or broken
///   connection fails with [`BackendError::Connection`] (the redis-rs error
///   kept as `source`). Both answer true to
///   [`BackendError::is_unavailable`], and the HTTP layer serves the request
///   from the handler.
/// - A circuit breaker opens after a failed connection, or after
///   [`breaker_threshold`](RedisConfig::breaker_threshold) consecutive
///   timeouts (3 by default): a server that is alive but frozen — stopped
///   with `SIGSTOP`, swapping, stuck in a slow script — keeps its connection
///   open and answers nothing, so only timeouts reveal it. While the breaker
///   is open every call fails at once with [`BackendError::Connection`]
///   (its source says "circuit open"), and the HTTP layer serves the
///   request from the handler without waiting. After a pause (50 ms,
///   doubling up to 1 s by default) a `PING` is sent in the background —
///   no request waits for it, at most one is in flight — and closes the
///   breaker when it gets an answer within the command timeout. A server
///   that comes back or thaws is therefore used again within about a
///   second.
/// - What a freeze costs: the calls made during the first command-timeout
///   window (250 ms) wait for it in full; from then on nothing waits.
///   Measured with `BENCH_ONLY_STALL=1 cargo bench --bench http --features
///   redis` (64 connections, a private redis-server frozen for 10 s, see
///   the README's Performance section): after the first second the cached
///   route serves from the handler at 0.65× of the uncached route's
///   throughput with 1.5× its p99 (0.9 ms), against 253 requests/s with a
///   p50 of 252 ms when timeouts never open the breaker
///   (`breaker_threshold(0)`).
/// - A server that silently drops packets (instead of refusing) costs the
///   calls up to the command timeout until the connect timeout declares the
///   connection attempt failed or the timeouts open the breaker.
/// - The backend needs a Tokio runtime (the first call spawns the
///   connection manager's task on it).
///
/// # Commands
///
/// | operation | Redis |
/// |---|---|
/// | `get` / `delete` / `take` | `GET` / `UNLINK` / `GETDEL` (Redis ≥ 6.2) |
/// | `set` / `add` / `replace` | `SET key value PX ms` / `… NX` / `… XX`: the TTL has millisecond precision (rounded up; at least 1 ms) |
/// | `delete_if_equals` | a Lua compare-and-delete script (lock release) |
/// | `clear` / `clear_pattern` / `keys` | `SCAN prefix* COUNT 1000`, never `KEYS`; deletes with `UNLINK` per page |
/// | `entries` | `SCAN`, then `GET` + `PTTL` pipelined 500 keys at a time |
/// | `clear_path` | the per-path index below: no scan at all |
///
/// Values are binary-safe; keys may hold any UTF-8, including spaces and
/// the `|||` separator of the default [`CacheKey`] format.
///
/// # The per-path index
///
/// A write of a key in the default [`CacheKey`] format
/// (`{method}|||{host}|||{path}|||{query}`) runs one Lua script (one round
/// trip, atomic) that does the `SET` and also records the key in a sorted set
/// `{prefix}__path_index:{path}`, scored with the entry's expiry time. The
/// script drops members whose expiry has passed, and sets the index's own
/// TTL to the latest expiry of its members (no TTL when a member has none),
/// so an index never outlives its entries and a path with endlessly varying
/// query strings cannot grow its index without bound. `clear_path` reads the
/// index with `ZSCAN` and removes the matching entries and their members in
/// one script per 1000 members; it counts what `UNLINK` really removed, so
/// members whose entry expired or was deleted are not counted.
///
/// Cost: one extra sorted-set member (the logical key plus a score) per
/// cached response, and a few O(log n) index commands inside the write
/// script. Index keys are internal: `clear` deletes them without counting
/// them, `keys`/`entries` skip them, and logical keys starting with
/// `__path_index:` are rejected with [`BackendError::InvalidInput`].
///
/// Measured on this project's 2-core machine against redis-server 7.0.15 on
/// loopback: 100 000 cached responses (100-byte bodies, 10 000 paths × 10
/// query variants), clearing one path of 10 entries. Command:
/// `AXUM_CACHEX_REDIS_URL=redis://127.0.0.1:6379 cargo test -p axum-cachex
/// --features redis --test backend_redis -- --ignored --nocapture
/// measure_clear_path` (a debug build; run it on an otherwise idle server).
/// Server times are from `INFO commandstats`.
///
/// | | with the per-path index | without it: `clear_path` by a full `SCAN` (`COUNT 1000`) + filter + `UNLINK` |
/// |---|---|---|
/// | one `clear_path`, wall time | 0.75–1.3 ms | 0.67–1.2 s |
/// | server time | `ZSCAN` 23 µs + one `MULTI` | ~100 pages × 1.5 ms, each blocking the server |
/// | one write, server time | 21 µs (`EVALSHA`) | 2.2 µs (plain `SET`) |
/// | 100 000 writes, 64 concurrent writers | 7.6–9.9 s | 2.3–3.9 s |
/// | memory | +5.7 MiB of 32.7 MiB (the 10 000 index sets) | — |
///
/// So the index makes `clear_path` about a thousand times cheaper and
/// independent of the database size, for about 19 µs more server time per
/// write (the script) and ~18% more memory with keys this short.
///
/// # Limits
///
/// - `clear`, `clear_pattern`, `keys` and `entries` cost O(keys in the
///   database) because `SCAN` walks the whole keyspace (matching is done by
///   the server, but every key is visited); they are for administration and
///   monitoring, not for request paths. Each page is a separate round trip
///   bounded by the command timeout.
/// - `clear` and the other bulk operations are not atomic: entries written
///   while they run may survive.
/// - Entries written by something else than this backend (or before the
///   index existed) are not in the index: `clear_pattern` still finds them,
///   `clear_path` does not.
///
/// # Redis Cluster
///
/// [`RedisConfig::cluster_nodes`] connects to a Cluster through seed nodes,
/// with redis-rs's cluster client: each command goes to the primary that
/// owns its key's slot, and `MOVED`/`ASK` redirections are followed. Reads
/// (`get`, the cache's hits) skip the cluster client's own task: they go
/// straight to the primary the backend's slot map names, over a
/// connection of their own that never reads from replicas; a `MOVED` (the
/// map is out of date) is followed once to the node it names, and an `ASK`
/// (a slot migrating) goes through the cluster client. A node answers only
/// for the slots it serves, so a stale map costs a round trip, never a
/// wrong value, and one command timeout bounds the whole read. Every other
/// option works as for a standalone server.
///
/// ```no_run
/// use axum_cachex::backend::RedisConfig;
///
/// let backend = RedisConfig::new()
///     .cluster_nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
///     .password("s3cret")
///     .build()?;
/// # let _ = backend;
/// # Ok::<(), axum_cachex::backend::RedisConfigError>(())
/// ```
///
/// - **Key layout.** Keys carry a hash tag after the prefix:
///   `{prefix}{xxxx}{key}`, where `xxxx` is a hash of the *path* for the
///   HTTP cache's keys and of the whole key otherwise. So a path's entries,
///   their `Vary` variants, their cross-instance lock and the path's index
///   share one slot (the write script and the atomic `clear_path` touch them
///   together), while different paths, sessions and states spread over the
///   primaries. A prefix with a hash tag of its own (`{shop}:`) puts
///   everything in one slot, which works but uses one primary. The layout
///   differs from a standalone server's: moving between the two starts
///   with an empty cache.
/// - **Bulk operations** (`clear`, `clear_pattern`, `keys`, `entries`,
///   `clear_cache`) read the slot map (`CLUSTER SLOTS`) and `SCAN` every
///   primary in turn.
/// - **One primary down.** Each primary has its own circuit breaker, chosen
///   by the slot map (read on first use, every 5 s while in use, and at once
///   after a connection failure). A dead or frozen primary fails *its* keys
///   open (the handler answers); the other primaries keep serving hits. This
///   needs `cluster-require-full-coverage no` on the servers when there is
///   no replica to take over: with Redis's default (`yes`) the surviving
///   primaries refuse every command once the failure is detected (the node
///   timeout), and every key fails open until the slot is served again.
/// - **Failover.** When a replica is promoted, it has what the old primary
///   had replicated, which is asynchronous: the last writes before the
///   failure may be lost. A lost cache write is a miss. A lost delete is
///   worse: an entry invalidated just before the failure can come back,
///   until its TTL; so can a session invalidated in that instant. Keep TTLs
///   bounded, and after a failover clear the paths (or the users' sessions)
///   changed around it if that window matters.
/// - **Resharding.** A migrating slot is served through `ASK` redirections.
///   A write or a `clear_path` that meets an entry and its index on
///   different sides of a migration gets `TRYAGAIN`: the write is not
///   stored (a miss) and the invalidation fails with an error, to be
///   retried; entries and their index move together, since they share a
///   slot. A bulk operation running during a resharding may miss keys that
///   moved to a primary it has already scanned.
///
/// # Memory tier
///
/// [`RedisConfig::memory_tier`] puts a bounded in-process tier
/// ([`MemoryTier`]) in front of Redis (standalone or Cluster): a read that
/// finds a trusted local copy costs no round trip, and the HTTP layer gets
/// it synchronously through [`Backend::get_now`].
///
/// ```no_run
/// use std::time::Duration;
/// use axum_cachex::backend::{MemoryTier, RedisConfig};
///
/// let backend = RedisConfig::from_url("redis://127.0.0.1:6379")
///     .memory_tier(MemoryTier::new(64 << 20).max_staleness(Duration::from_millis(500)))
///     .build()?;
/// # let _ = backend;
/// # Ok::<(), axum_cachex::backend::RedisConfigError>(())
/// ```
///
/// - **Coherence.** Every change made through any instance's backend (set,
///   add, replace, take, delete, compare-and-set, `clear`, `clear_path`,
///   `clear_cache`, so also every HTTP invalidation and session
///   invalidation) publishes a message on `{prefix}__invalidations`
///   *inside the same script* as the change, and every instance drops what
///   it covers. Reads that were in flight while a change was applied do not
///   fill the tier.
/// - **Staleness bound.** The tier is read only while the instance's own
///   heartbeat (published every quarter of
///   [`max_staleness`](MemoryTier::max_staleness) and received back on its
///   subscription, after every message published before it) is younger
///   than `max_staleness`. So after a change returns, no other instance
///   serves the old value from its tier for longer than `max_staleness`
///   (default 1 s), even when messages are delayed or lost; normally it is
///   gone within one message delivery (see the README's measurement). A lost
///   subscription flushes the tier before it is trusted again.
/// - **What it does not see.** Keys changed by another program, and keys
///   that expire: a local copy never outlives its key's TTL in Redis, nor
///   [`max_ttl`](MemoryTier::max_ttl) (60 s by default), the bound for
///   changes made outside the backend.
/// - **Bulk changes** (`clear` by prefix, `clear_cache`) are announced after
///   they ran; if that announcement fails the call returns the error, and
///   other instances may keep their copies until `max_ttl`: retry it.
/// - **Why our own channel and not `CLIENT TRACKING`:** see the `tier`
///   module's comments; in short, we know when our subscription drops, one
///   subscription works on a Cluster, and a path or prefix clear is one
///   message instead of one per key.
///
/// # Direct use
///
/// ```no_run
/// use axum_cachex::backend::{Backend, RedisBackend};
/// use bytes::Bytes;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// backend.set("greeting", Bytes::from_static(b"hello"), None).await?;
/// assert_eq!(backend.get("greeting").await?, Some(Bytes::from_static(b"hello")));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    /// Where the backend connects, for `Debug` and breaker names (no
    /// credentials).
    address: String,
    /// Created on first use (it needs a Tokio runtime) and dropped again when
    /// its connection can never succeed (authentication failed), so that the
    /// next attempt starts afresh.
    conn: ArcSwapOption<Conn>,
    create_lock: Mutex<()>,
    keys: KeyLayout,
    command_timeout: Duration,
    connect_timeout: Duration,
    breakers: Breakers,
    /// On a Cluster, a connection of our own to each primary reads went to
    /// (see [`RedisBackend::run_read`]).
    readers: Mutex<HashMap<NodeAddr, Conn>>,
    /// The memory tier and its invalidation channel, when configured.
    subscription: Option<Subscription>,
}

/// Most primaries [`Inner::readers`] keeps connections to; past that (nodes
/// replaced over a long life) it starts over.
const MAX_READERS: usize = 64;

/// A memory tier and what keeps it coherent (see [`tier`]).
struct Subscription {
    tier: Tier,
    /// Random: tells our own messages from other instances'.
    instance: String,
    channel: String,
    /// Where to subscribe: the server, or each Cluster seed in turn.
    clients: Vec<::redis::Client>,
    heartbeats: AtomicU64,
    /// The subscriber task runs (one per backend, whatever happens to the
    /// command connection).
    started: std::sync::atomic::AtomicBool,
}

impl Subscription {
    fn next_heartbeat(&self) -> u64 {
        self.heartbeats.fetch_add(1, Ordering::Relaxed)
    }
}

/// A change announced on the tier's channel, atomically with the change.
struct Note {
    channel: String,
    message: Vec<u8>,
    scope: Scope,
}

/// A change in progress through a backend with a memory tier. When it ends
/// it is applied to our own tier (other instances apply its message), and
/// a bulk change is announced then. Whatever its outcome: a failed or
/// timed-out call may still have changed keys. Also when the caller drops
/// the call half-way (a timeout around it, a client gone): the command may
/// have run, so that is done on a spawned task.
struct Change {
    backend: Option<RedisBackend>,
    note: Option<Note>,
    bulk: bool,
}

impl Change {
    fn note(&self) -> Option<&Note> {
        self.note.as_ref()
    }

    /// Ends the change; the error of a bulk change's announcement.
    async fn finish(mut self) -> Result<(), BackendError> {
        match (self.backend.take(), self.note.take()) {
            (Some(backend), Some(note)) => finish_change(backend, note, self.bulk).await,
            _ => Ok(()),
        }
    }
}

impl Drop for Change {
    fn drop(&mut self) {
        let (Some(backend), Some(note)) = (self.backend.take(), self.note.take()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let bulk = self.bulk;
            runtime.spawn(async move {
                if let Err(e) = finish_change(backend, note, bulk).await {
                    tracing::warn!(error = %e, "memory tier: an abandoned bulk change was not announced");
                }
            });
        }
    }
}

/// Announces a bulk change (once more after a failure), then applies it to
/// our own tier.
async fn finish_change(backend: RedisBackend, note: Note, bulk: bool) -> Result<(), BackendError> {
    let mut sent = Ok(());
    if bulk {
        for _ in 0..2 {
            sent = backend.publish(note.message.clone()).await;
            if sent.is_ok() {
                break;
            }
        }
    }
    if let Some(sub) = &backend.inner.subscription {
        sub.tier.invalidate(&note.scope).await;
    }
    sent
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("addr", &self.inner.address)
            .field("cluster", &self.inner.endpoint.is_cluster())
            .field("prefix", &self.inner.keys.prefix())
            .field("command_timeout", &self.inner.command_timeout)
            .field("connect_timeout", &self.inner.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Starts configuring a backend (same as [`RedisConfig::new`]).
    pub fn builder() -> RedisConfig {
        RedisConfig::new()
    }

    /// A backend with default settings for this URL (see
    /// [`RedisConfig::from_url`]). Does not connect.
    ///
    /// # Errors
    ///
    /// [`RedisConfigError`] when the URL is invalid or needs TLS without the
    /// `redis-tls` feature.
    pub fn from_url(url: impl Into<String>) -> Result<Self, RedisConfigError> {
        RedisConfig::from_url(url).build()
    }

    fn from_parts(
        endpoint: Endpoint,
        address: String,
        config: RedisConfig,
        tier: Option<(Tier, Vec<::redis::Client>)>,
    ) -> Self {
        let cluster = endpoint.is_cluster();
        let settings = BreakerSettings {
            threshold: config.breaker_threshold,
            min_delay: config.reconnect_min_delay,
            max_delay: config.reconnect_max_delay,
        };
        let subscription = tier.map(|(tier, clients)| Subscription {
            tier,
            instance: crate::random::hex(&crate::random::unique_token()),
            channel: format!("{}__invalidations", config.key_prefix),
            clients,
            heartbeats: AtomicU64::new(0),
            started: std::sync::atomic::AtomicBool::new(false),
        });
        Self {
            inner: Arc::new(Inner {
                subscription,
                breakers: Breakers::new(format!("redis {address}"), settings, cluster),
                readers: Mutex::new(HashMap::new()),
                endpoint,
                address,
                conn: ArcSwapOption::empty(),
                create_lock: Mutex::new(()),
                keys: KeyLayout::new(config.key_prefix, cluster),
                command_timeout: config.command_timeout,
                connect_timeout: config.connect_timeout,
            }),
        }
    }

    /// The namespace prefix of every key.
    pub fn key_prefix(&self) -> &str {
        self.inner.keys.prefix()
    }

    /// Whether this backend talks to a Redis Cluster
    /// ([`RedisConfig::cluster_nodes`]).
    pub fn is_cluster(&self) -> bool {
        self.inner.endpoint.is_cluster()
    }

    /// The bound on one round trip.
    pub fn command_timeout(&self) -> Duration {
        self.inner.command_timeout
    }

    /// Sends `PING`: a readiness check for health endpoints.
    ///
    /// # Errors
    ///
    /// [`BackendError::Timeout`] or [`BackendError::Connection`] when Redis
    /// is not reachable.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let cmd = ::redis::cmd("PING");
        self.run(Target::Whole, |mut c| {
            let cmd = &cmd;
            async move { cmd.query_async::<Value>(&mut c).await.map(drop) }
        })
        .await
    }

    /// The connection handle, created on first use.
    fn conn(&self) -> Result<Conn, BackendError> {
        if let Some(c) = self.inner.conn.load_full() {
            return Ok(Conn::clone(&c));
        }
        let _guard = self
            .inner
            .create_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = self.inner.conn.load_full() {
            return Ok(Conn::clone(&c));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BackendError::Connection {
                backend: NAME,
                source: "the Redis backend must be used inside a Tokio runtime".into(),
            });
        }
        let conn = self
            .inner
            .endpoint
            .connect_lazily(self.inner.connect_timeout)
            .map_err(|e| BackendError::Connection {
                backend: NAME,
                source: Box::new(e),
            })?;
        self.inner.conn.store(Some(Arc::new(conn.clone())));
        if let Some(sub) = &self.inner.subscription {
            if !sub.started.swap(true, Ordering::AcqRel) {
                subscriber::spawn(&self.inner);
            }
        }
        Ok(conn)
    }

    /// The announcement of a change to `scope`, with a memory tier.
    fn note(&self, scope: Scope) -> Option<Note> {
        let sub = self.inner.subscription.as_ref()?;
        Some(Note {
            channel: sub.channel.clone(),
            message: message::encode(&sub.instance, &scope),
            scope,
        })
    }

    /// A change to `scope` about to be made (see [`Change`]); `bulk` when
    /// it cannot announce itself inside its own script.
    fn change(&self, scope: Scope, bulk: bool) -> Change {
        let note = self.note(scope);
        Change {
            backend: note.as_ref().map(|_| self.clone()),
            note,
            bulk,
        }
    }

    /// `command key args…`, followed atomically by the note's `PUBLISH`.
    async fn run_noted<T>(
        &self,
        command: &str,
        data_key: &str,
        args: &[&[u8]],
        note: Option<&Note>,
    ) -> Result<T, BackendError>
    where
        T: ::redis::FromRedisValue + Send,
    {
        let target = Target::Key(data_key);
        let Some(note) = note else {
            let mut cmd = ::redis::cmd(command);
            cmd.arg(data_key).arg(args);
            return self
                .run(target, |mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await;
        };
        let mut script_args: Vec<&[u8]> =
            vec![note.channel.as_bytes(), &note.message, command.as_bytes()];
        script_args.extend_from_slice(args);
        self.run_script(target, &NOTED, &[data_key.as_bytes()], &script_args)
            .await
    }

    /// One Lua script, with its keys and arguments, under `target`'s
    /// breaker and the command timeout (`EVALSHA`, loading it when the
    /// server lacks it).
    async fn run_script<T>(
        &self,
        target: Target<'_>,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<T, BackendError>
    where
        T: ::redis::FromRedisValue + Send,
    {
        self.run(target, |mut c| async move {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    /// Publishes a message on the tier's channel through one Cluster node.
    async fn publish_on(&self, node: &NodeAddr, message: Vec<u8>) -> Result<(), BackendError> {
        let Some(sub) = &self.inner.subscription else {
            return Ok(());
        };
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(&sub.channel).arg(message);
        self.run(Target::Node(node), |mut c| {
            let cmd = &cmd;
            async move { c.query_on::<Value>(Some(node), cmd).await.map(drop) }
        })
        .await
    }

    /// Publishes a message on the tier's channel (heartbeats, and the
    /// announcements of bulk changes, which cannot share a script with
    /// what they announce).
    async fn publish(&self, message: Vec<u8>) -> Result<(), BackendError> {
        let Some(sub) = &self.inner.subscription else {
            return Ok(());
        };
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(&sub.channel).arg(message);
        self.run(Target::Whole, |mut c| {
            let cmd = &cmd;
            async move { cmd.query_async::<Value>(&mut c).await.map(drop) }
        })
        .await
    }

    /// The per-path index walk of `clear_path`, each page's deletions and
    /// the note's `PUBLISH` in one script.
    async fn clear_indexed_path(
        &self,
        path: &str,
        include_params: bool,
        note: Option<&Note>,
    ) -> Result<u64, BackendError> {
        let index_key = self.inner.keys.index_key(path);
        let target = Target::Key(&index_key);
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut cmd = ::redis::cmd("ZSCAN");
            cmd.arg(&index_key).arg(cursor).arg("COUNT").arg(SCAN_COUNT);
            let (next, items): (u64, Vec<Vec<u8>>) = self
                .run(target, |mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            // ZSCAN answers member, score, member, score, …
            let members: Vec<&str> = items
                .iter()
                .step_by(2)
                .filter_map(|member| std::str::from_utf8(member).ok())
                .filter(|member| {
                    CacheKey::parse_stored(member)
                        .is_some_and(|k| k.is_for_path(path, include_params))
                })
                .collect();
            if !members.is_empty() {
                let data_keys = members
                    .iter()
                    .map(|m| self.data_key(m))
                    .collect::<Result<Vec<_>, _>>()?;
                // Atomic, so that a concurrent write of the same key lands
                // either before (deleted with its member) or after (entry and
                // member both re-created), never with its member lost.
                let (channel, message) = note_args(note);
                let keys: Vec<&[u8]> = std::iter::once(index_key.as_bytes())
                    .chain(data_keys.iter().map(|k| k.as_bytes()))
                    .collect();
                let args: Vec<&[u8]> = [channel, message]
                    .into_iter()
                    .chain(members.iter().map(|m| m.as_bytes()))
                    .collect();
                let existed: u64 = self.run_script(target, &CLEAR_PAGE, &keys, &args).await?;
                removed += existed;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// A value and its remaining lifetime in milliseconds (`PTTL`): one
    /// pipeline, read only (a script would wait out a `CLIENT PAUSE WRITE`,
    /// as a failing-over primary is, and Redis 6.2 cannot flag it read
    /// only). On a Cluster, a slot migrating answers `ASK`, which redis-rs
    /// follows for a single command only: the two are then read one after
    /// the other (a write between them is an invalidation, which the tier's
    /// generations catch).
    async fn get_with_ttl(&self, data_key: &str) -> Result<(Option<Vec<u8>>, i64), BackendError> {
        let deadline = tokio::time::Instant::now() + self.inner.command_timeout;
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET").arg(data_key).cmd("PTTL").arg(data_key);
        let both = self
            .run_read(data_key, |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await;
        match both {
            Err(e) if is_redirection_error(&e) => {}
            other => return other,
        }
        let single = |name: &'static str| {
            let mut cmd = ::redis::cmd(name);
            cmd.arg(data_key);
            cmd
        };
        let (get, pttl) = (single("GET"), single("PTTL"));
        let one_by_one = async {
            let value = self
                .run_read(data_key, |mut c| {
                    let get = &get;
                    async move { get.query_async(&mut c).await }
                })
                .await?;
            let ttl = self
                .run_read(data_key, |mut c| {
                    let pttl = &pttl;
                    async move { pttl.query_async(&mut c).await }
                })
                .await?;
            Ok((value, ttl))
        };
        // One command timeout for the whole read, as for any other.
        self.within(deadline, one_by_one).await
    }

    /// `GET` through the memory tier: its copy while it is trusted, else
    /// Redis (`GET` and `PTTL` in one round trip) filling it.
    async fn get_tiered(
        &self,
        sub: &Subscription,
        key: &str,
        data_key: &str,
    ) -> Result<Option<Bytes>, BackendError> {
        if let Some(value) = sub.tier.get(key) {
            return Ok(Some(value));
        }
        let generation = sub.tier.generation(key);
        let (value, pttl) = self.get_with_ttl(data_key).await?;
        let Some(value) = value.map(Bytes::from) else {
            return Ok(None);
        };
        let remote_ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
        sub.tier
            .fill(key, value.clone(), remote_ttl, generation)
            .await;
        Ok(Some(value))
    }

    /// Runs one round trip under the breaker of `target` (see [`nodes`])
    /// and the command timeout.
    ///
    /// While that breaker is open the call fails at once with
    /// [`BackendError::Connection`]; the call that finds a probe due starts
    /// it in the background (a `PING`) and fails at once all the same.
    async fn run<T, F, Fut>(&self, target: Target<'_>, op: F) -> Result<T, BackendError>
    where
        F: Fn(Conn) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        self.run_with(target, None, op).await
    }

    /// [`run`](Self::run), on `direct` when given (a connection to the
    /// node `target` belongs to), else on the backend's connection.
    async fn run_with<T, F, Fut>(
        &self,
        target: Target<'_>,
        direct: Option<Conn>,
        op: F,
    ) -> Result<T, BackendError>
    where
        F: Fn(Conn) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        self.refresh_slots_if_due(false);
        let (breaker, node) = self.inner.breakers.pick(target);
        if let Err(rejected) = breaker.check() {
            if let Some(ticket) = rejected.probe {
                self.spawn_probe(ticket, breaker, node);
            }
            return Err(BackendError::Connection {
                backend: NAME,
                source: Box::new(rejected.error),
            });
        }
        match direct {
            Some(conn) => self.attempt_on(&breaker, conn, op).await,
            None => self.attempt(&breaker, op).await,
        }
    }

    /// Runs a read of `data_key` (one slot). On a Cluster it goes straight
    /// to the primary the slot map names, over a connection of our own (not
    /// `READONLY`): redis-rs's cluster client would pass it through a task
    /// of its own, and may route it to a replica. Nodes answer only for
    /// slots they serve, so a stale map costs a round trip, never a wrong
    /// value:
    ///
    /// - `MOVED` (the map is out of date: a slot moved, a failover) is
    ///   followed once, to the node it names, and refreshes the map;
    /// - `ASK` (a slot migrating), or a second redirection, goes through
    ///   the cluster client, which sends `ASKING`.
    ///
    /// The whole read is bounded by one command timeout. A reader
    /// connection that failed (I/O, authentication) is dropped, so the
    /// next read connects afresh.
    async fn run_read<T, F, Fut>(&self, data_key: &str, op: F) -> Result<T, BackendError>
    where
        F: Fn(Conn) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        let target = Target::Key(data_key);
        let Some(node) = self.inner.breakers.node_of_key(data_key) else {
            return self.run(target, op).await;
        };
        let deadline = tokio::time::Instant::now() + self.inner.command_timeout;
        match self.read_on(&node, &op).await? {
            Routed::Value(value) => return Ok(value),
            Routed::Moved(to) => {
                // The map is out of date (an `ASK` is not: the slot is
                // still the node's while it migrates).
                self.refresh_slots_if_due(true);
                let routed = self.within(deadline, self.read_on(&to, &op)).await?;
                if let Routed::Value(value) = routed {
                    return Ok(value);
                }
            }
            Routed::Ask => {}
        }
        self.within(deadline, self.run(target, op)).await
    }

    /// One read on our connection to `node` (see
    /// [`run_read`](Self::run_read)), a redirection reported as such.
    async fn read_on<T, F, Fut>(&self, node: &NodeAddr, op: &F) -> Result<Routed<T>, BackendError>
    where
        F: Fn(Conn) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        let Some(conn) = self.reader(node) else {
            return Err(BackendError::Connection {
                backend: NAME,
                source: format!("no connection settings for {node}").into(),
            });
        };
        let routed = self
            .run_with(Target::Node(node), Some(conn), |c| async move {
                match op(c).await {
                    Err(e) => Routed::from_error(e),
                    Ok(value) => Ok(Routed::Value(value)),
                }
            })
            .await;
        if matches!(routed, Err(BackendError::Connection { .. })) {
            self.forget_reader(node);
        }
        routed
    }

    /// `op` unless `deadline` passes first (a [`BackendError::Timeout`]).
    async fn within<T>(
        &self,
        deadline: tokio::time::Instant,
        op: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout_at(deadline, op)
            .await
            .unwrap_or(Err(BackendError::Timeout {
                backend: NAME,
                timeout: self.inner.command_timeout,
            }))
    }

    /// Our connection to one Cluster node, made on first use (see
    /// [`run_read`](Self::run_read)); `None` when no client can be made
    /// for it.
    fn reader(&self, node: &NodeAddr) -> Option<Conn> {
        let mut readers = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = readers.get(node) {
            return Some(conn.clone());
        }
        if readers.len() >= MAX_READERS {
            readers.clear();
        }
        let conn = self
            .inner
            .endpoint
            .connect_node_lazily(node, self.inner.connect_timeout)
            .ok()?;
        readers.insert(node.clone(), conn.clone());
        Some(conn)
    }

    /// Drops our connection to `node`: the next read connects afresh
    /// (redis-rs reconnects only after I/O errors, not after a refused
    /// password).
    fn forget_reader(&self, node: &NodeAddr) {
        self.inner
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(node);
    }

    /// Sends a `PING` (to `node` on Cluster) in the background and reports
    /// its outcome to the breaker (no request waits for it).
    fn spawn_probe(&self, ticket: ProbeTicket, breaker: Arc<Breaker>, node: Option<NodeAddr>) {
        // Without a Tokio runtime the ticket is dropped: a failed probe.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let backend = self.clone();
        runtime.spawn(async move {
            let cmd = ::redis::cmd("PING");
            let ping = backend
                .attempt(&breaker, |mut c| {
                    let (cmd, node) = (&cmd, node.as_ref());
                    async move { c.query_on::<Value>(node, cmd).await.map(drop) }
                })
                .await;
            match ping {
                Ok(()) => ticket.succeeded(),
                Err(e) => ticket.failed(Arc::new(e)),
            }
        });
    }

    /// On Cluster, reads the slot map again in the background when it is
    /// due (or at once after a failure: a primary may have failed over).
    fn refresh_slots_if_due(&self, failure: bool) {
        if !self.inner.breakers.claim_refresh(failure) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.breakers.refreshed(None);
            return;
        };
        let backend = self.clone();
        runtime.spawn(async move {
            let map = backend.read_slot_map().await;
            backend.inner.breakers.refreshed(map);
        });
    }

    /// `CLUSTER SLOTS`, bounded by the command timeout and reported to no
    /// breaker (it goes to any node).
    async fn read_slot_map(&self) -> Option<SlotMap> {
        let mut conn = self.conn().ok()?;
        let mut cmd = ::redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let call = cmd.query_async::<Value>(&mut conn);
        match tokio::time::timeout(self.inner.command_timeout, call).await {
            Ok(Ok(reply)) => SlotMap::parse(&reply),
            _ => None,
        }
    }

    /// One round trip bounded by the command timeout, its outcome reported
    /// to `breaker` (success, connection failure or timeout).
    ///
    /// `op` may run twice: when the first run finds the connection refused,
    /// the command was never sent, and the manager has just started a fresh
    /// connection attempt that the second run waits for (so the first call
    /// after a server comes back succeeds instead of reporting the previous
    /// attempt's failure).
    async fn attempt<T, F, Fut>(&self, breaker: &Breaker, op: F) -> Result<T, BackendError>
    where
        F: Fn(Conn) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        self.attempt_on(breaker, self.conn()?, op).await
    }

    /// [`attempt`](Self::attempt) on a given connection.
    async fn attempt_on<C, T, F, Fut>(
        &self,
        breaker: &Breaker,
        conn: C,
        op: F,
    ) -> Result<T, BackendError>
    where
        C: Clone,
        F: Fn(C) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let timeout = self.inner.command_timeout;
        let attempt = async {
            match op(conn.clone()).await {
                Err(e) if e.is_connection_refusal() => op(conn).await,
                other => other,
            }
        };
        let mut watch = Watch::new(breaker, timeout);
        let outcome = tokio::time::timeout(timeout, attempt).await;
        watch.disarm();
        match outcome {
            Ok(Ok(value)) => {
                breaker.record_success();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.map_error(e, breaker)),
            Err(_) => {
                breaker.record_timeout(timeout);
                Err(BackendError::Timeout {
                    backend: NAME,
                    timeout,
                })
            }
        }
    }

    fn map_error(&self, e: RedisError, breaker: &Breaker) -> BackendError {
        let kind = e.kind();
        if e.is_io_error() || e.is_connection_dropped() || kind == ErrorKind::AuthenticationFailed {
            let cause: Cause = Arc::new(e.clone());
            breaker.record_connection_failure(cause);
            self.refresh_slots_if_due(true);
            if kind == ErrorKind::AuthenticationFailed {
                // The manager only reconnects after I/O errors: a connection
                // that failed to authenticate would be reported forever.
                self.inner.conn.store(None);
            }
            return BackendError::Connection {
                backend: NAME,
                source: Box::new(e),
            };
        }
        let transient = matches!(
            kind,
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            ) | ErrorKind::ClusterConnectionNotFound
        );
        if transient {
            // Reachable but not serving (loading its data set, replica
            // without master…): unavailable, not a bad request.
            BackendError::Connection {
                backend: NAME,
                source: Box::new(e),
            }
        } else {
            BackendError::Command {
                backend: NAME,
                source: Box::new(e),
            }
        }
    }

    fn data_key(&self, key: &str) -> Result<String, BackendError> {
        self.inner.keys.data_key(key)
    }

    async fn write(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        mode: Mode,
    ) -> Result<bool, BackendError> {
        let data_key = self.data_key(key)?;
        if ttl.is_some_and(|t| t.is_zero()) {
            return self.write_expired(key, mode).await;
        }
        let ttl_ms = ttl.map(ttl_millis);
        let change = self.change(Scope::Key(key.to_owned()), false);
        let written = self
            .write_noted(key, &data_key, value, ttl_ms, mode, change.note())
            .await;
        let _ = change.finish().await;
        written
    }

    async fn write_noted(
        &self,
        key: &str,
        data_key: &str,
        value: Bytes,
        ttl_ms: Option<u64>,
        mode: Mode,
        note: Option<&Note>,
    ) -> Result<bool, BackendError> {
        let (channel, message) = note_args(note);
        if let Some(cache_key) = CacheKey::parse_stored(key) {
            let index_key = self.inner.keys.index_key(&cache_key.decoded_path());
            let ttl_arg = ttl_ms.map(|ms| ms.to_string()).unwrap_or_default();
            let keys = [data_key.as_bytes(), index_key.as_bytes()];
            let args = [
                value.as_ref(),
                ttl_arg.as_bytes(),
                mode.arg().as_bytes(),
                key.as_bytes(),
                channel,
                message,
            ];
            let written: i64 = self
                .run_script(Target::Key(data_key), &SET_INDEXED, &keys, &args)
                .await?;
            return Ok(written == 1);
        }
        let ms = ttl_ms.map(|ms| ms.to_string());
        let mut args: Vec<&[u8]> = vec![value.as_ref()];
        if let Some(ms) = &ms {
            args.extend([&b"PX"[..], ms.as_bytes()]);
        }
        if !matches!(mode, Mode::Always) {
            args.push(mode.arg().as_bytes());
        }
        let reply: Value = self.run_noted("SET", data_key, &args, note).await?;
        Ok(reply != Value::Nil)
    }

    /// A write with a zero TTL: the value would be expired at once, so
    /// nothing is stored (Redis rejects `PX 0`), and an older value goes.
    async fn write_expired(&self, key: &str, mode: Mode) -> Result<bool, BackendError> {
        match mode {
            Mode::Always => self.delete(key).await.map(|_| true),
            Mode::IfPresent => self.delete(key).await,
            Mode::IfAbsent => {
                let data_key = self.data_key(key)?;
                let mut cmd = ::redis::cmd("EXISTS");
                cmd.arg(&data_key);
                let exists: u64 = self
                    .run(Target::Key(&data_key), |mut c| {
                        let cmd = &cmd;
                        async move { cmd.query_async(&mut c).await }
                    })
                    .await?;
                Ok(exists == 0)
            }
        }
    }

    /// Calls `page` with every page of keys matching `pattern`: on the
    /// server, or on every Cluster primary in turn; returns the sum of what
    /// the calls return.
    async fn scan<F, Fut>(&self, pattern: &str, mut page: F) -> Result<u64, BackendError>
    where
        F: FnMut(Vec<Vec<u8>>) -> Fut,
        Fut: Future<Output = Result<u64, BackendError>>,
    {
        if !self.is_cluster() {
            let mut conn = self.conn()?;
            return scan_with(&mut conn, self, Target::Whole, pattern, &mut page).await;
        }
        let mut total = 0;
        for node in self.cluster_primaries().await? {
            let mut conn = self.node_connection(&node).await?;
            total += scan_with(&mut conn, self, Target::Node(&node), pattern, &mut page).await?;
        }
        Ok(total)
    }

    /// Every primary of the Cluster, read afresh with `CLUSTER NODES`: also
    /// one that owns no slot yet but already holds keys (the target of a
    /// migration in progress), which `CLUSTER SLOTS` does not list.
    async fn cluster_primaries(&self) -> Result<Vec<NodeAddr>, BackendError> {
        let mut cmd = ::redis::cmd("CLUSTER");
        cmd.arg("NODES");
        let text: String = self
            .run(Target::Whole, |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        let primaries = nodes::primaries_in(&text);
        if primaries.is_empty() {
            return Err(BackendError::Connection {
                backend: NAME,
                source: "CLUSTER NODES listed no primary".into(),
            });
        }
        Ok(primaries)
    }

    /// A connection of its own to one Cluster node, for `SCAN` (redis-rs's
    /// cluster client knows only the nodes of its last slot map, and waits
    /// a back-off when asked for another).
    async fn node_connection(
        &self,
        node: &NodeAddr,
    ) -> Result<::redis::aio::MultiplexedConnection, BackendError> {
        let unavailable =
            |source: Box<dyn std::error::Error + Send + Sync>| BackendError::Connection {
                backend: NAME,
                source,
            };
        let client = self
            .inner
            .endpoint
            .node_client(node)
            .map_err(|e| unavailable(Box::new(e)))?;
        let connect = client.get_multiplexed_async_connection();
        match tokio::time::timeout(self.inner.connect_timeout, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(unavailable(Box::new(e))),
            Err(_) => Err(unavailable(
                format!("connecting to {node} timed out").into(),
            )),
        }
    }

    /// `UNLINK` of these keys (on Cluster, redis-rs splits it by slot);
    /// returns how many existed.
    async fn unlink(&self, target: Target<'_>, keys: &[Vec<u8>]) -> Result<u64, BackendError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = ::redis::cmd("UNLINK");
        cmd.arg(keys);
        self.run(target, |mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// Deletes the keys matching `pattern` that `keep` selects, page by
    /// page; returns how many data keys existed (index keys are deleted
    /// without being counted: they are not entries).
    async fn unlink_scanned(
        &self,
        pattern: &str,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<u64, BackendError> {
        self.scan(pattern, |page| {
            let (index, data): (Vec<Vec<u8>>, Vec<Vec<u8>>) = page
                .into_iter()
                .filter(|raw| keep(raw))
                .partition(|raw| self.inner.keys.is_index_key(raw));
            async move {
                let removed = self.unlink(Target::Whole, &data).await?;
                self.unlink(Target::Whole, &index).await?;
                Ok(removed)
            }
        })
        .await
    }

    /// `GET` and `PTTL` of each key: one pipeline on a standalone server;
    /// on Cluster one per key (a pipeline must stay in one slot), run
    /// concurrently.
    async fn values_and_ttls(
        &self,
        data_keys: &[String],
    ) -> Result<Vec<(RedisResult<Value>, RedisResult<Value>)>, BackendError> {
        let pipeline = |keys: &[String]| {
            let mut pipe = ::redis::pipe();
            for key in keys {
                pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            }
            // A key of another type under the prefix must not fail the
            // whole listing: its GET error is skipped by the caller.
            pipe.ignore_errors();
            pipe
        };
        let query = |pipe: ::redis::Pipeline| {
            self.run(Target::Whole, move |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<Vec<RedisResult<Value>>>(&mut c).await }
            })
        };
        let replies: Vec<RedisResult<Value>> = if self.is_cluster() {
            let calls = data_keys
                .iter()
                .map(|k| query(pipeline(std::slice::from_ref(k))));
            futures_util::future::try_join_all(calls)
                .await?
                .into_iter()
                .flatten()
                .collect()
        } else {
            query(pipeline(data_keys)).await?
        };
        let mut replies = replies.into_iter();
        let mut pairs = Vec::with_capacity(data_keys.len());
        while let (Some(value), Some(ttl)) = (replies.next(), replies.next()) {
            pairs.push((value, ttl));
        }
        Ok(pairs)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let data_key = self.data_key(key)?;
        if let Some(sub) = &self.inner.subscription {
            return self.get_tiered(sub, key, &data_key).await;
        }
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(&data_key);
        self.run_read(&data_key, |mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// With a memory tier, its copy while trusted (the HTTP layer's fast
    /// path); otherwise the value must be fetched.
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        let value = self.inner.subscription.as_ref()?.tier.get(key)?;
        Some(Ok(Some(value)))
    }

    fn get_record_now(&self, key: &str) -> Option<Result<Option<Arc<CacheRecord>>, BackendError>> {
        let record = self.inner.subscription.as_ref()?.tier.get_record(key)?;
        Some(Ok(Some(record)))
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.write(key, value, ttl, Mode::Always).await.map(drop)
    }

    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.write(key, value, ttl, Mode::IfAbsent).await
    }

    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.write(key, value, ttl, Mode::IfPresent).await
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let data_key = self.data_key(key)?;
        let change = self.change(Scope::Key(key.to_owned()), false);
        let taken = self
            .run_noted("GETDEL", &data_key, &[], change.note())
            .await;
        let _ = change.finish().await;
        taken
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let data_key = self.data_key(key)?;
        let change = self.change(Scope::Key(key.to_owned()), false);
        let removed: Result<u64, _> = self
            .run_noted("UNLINK", &data_key, &[], change.note())
            .await;
        let _ = change.finish().await;
        Ok(removed? > 0)
    }

    fn listing(&self) -> Option<&dyn Listing> {
        Some(self)
    }

    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        Some(self)
    }

    fn path_invalidation(&self) -> Option<&dyn PathInvalidation> {
        Some(self)
    }
}

#[async_trait]
impl Listing for RedisBackend {
    async fn keys(&self, prefix: &str) -> Result<Vec<String>, BackendError> {
        // SCAN may return a key more than once.
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        self.scan(&self.inner.keys.scan_pattern(prefix), |page| {
            for raw in &page {
                if let Some(key) = self.inner.keys.logical(raw) {
                    if seen.insert(key.to_owned()) {
                        keys.push(key.to_owned());
                    }
                }
            }
            std::future::ready(Ok(0))
        })
        .await?;
        Ok(keys)
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        let keys = self.keys(prefix).await?;
        let mut entries = Vec::with_capacity(keys.len());
        for batch in keys.chunks(ENTRIES_BATCH) {
            let data_keys = batch
                .iter()
                .map(|k| self.data_key(k))
                .collect::<Result<Vec<_>, _>>()?;
            let replies = self.values_and_ttls(&data_keys).await?;
            for (key, (value, pttl)) in batch.iter().zip(replies) {
                let value = match value {
                    Ok(Value::BulkString(bytes)) => Bytes::from(bytes),
                    // Vanished (expired or deleted) since the scan, or not a
                    // string: skip it.
                    _ => continue,
                };
                let ttl_remaining = match pttl {
                    Ok(Value::Int(ms)) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
                    Ok(Value::Int(-1)) => None,
                    // -2: gone between the GET and the PTTL.
                    _ => continue,
                };
                entries.push(StoredValue {
                    key: key.clone(),
                    value,
                    ttl_remaining,
                });
            }
        }
        Ok(entries)
    }

    async fn clear(&self, prefix: &str) -> Result<u64, BackendError> {
        let change = self.change(Scope::Prefix(prefix.to_owned()), true);
        // Index keys are internal: they go with a clear of everything.
        let removed = self
            .unlink_scanned(&self.inner.keys.scan_pattern(prefix), |raw| {
                prefix.is_empty() || !self.inner.keys.is_index_key(raw)
            })
            .await;
        change.finish().await?;
        removed
    }
}

#[async_trait]
impl CompareAndSwap for RedisBackend {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let data_key = self.data_key(key)?;
        let change = self.change(Scope::Key(key.to_owned()), false);
        let (channel, message) = note_args(change.note());
        let deleted = self
            .run_script::<i64>(
                Target::Key(&data_key),
                &DELETE_IF_EQUALS,
                &[data_key.as_bytes()],
                &[expected, channel, message],
            )
            .await
            .map(|deleted| deleted == 1);
        let _ = change.finish().await;
        deleted
    }

    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        if ttl.is_some_and(|t| t.is_zero()) {
            return self.delete_if_equals(key, expected).await;
        }
        let data_key = self.data_key(key)?;
        let ttl_arg = ttl.map(|t| ttl_millis(t).to_string()).unwrap_or_default();
        let change = self.change(Scope::Key(key.to_owned()), false);
        let (channel, message) = note_args(change.note());
        let written = self
            .run_script::<i64>(
                Target::Key(&data_key),
                &SET_IF_EQUALS,
                &[data_key.as_bytes()],
                &[
                    expected,
                    value.as_ref(),
                    ttl_arg.as_bytes(),
                    channel,
                    message,
                ],
            )
            .await
            .map(|written| written == 1);
        let _ = change.finish().await;
        written
    }
}

#[async_trait]
impl PathInvalidation for RedisBackend {
    async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError> {
        let scope = Scope::Path {
            path: path.to_owned(),
            include_params,
        };
        let change = self.change(scope, false);
        let removed = self
            .clear_indexed_path(path, include_params, change.note())
            .await;
        let _ = change.finish().await;
        removed
    }

    async fn clear_cache(&self) -> Result<u64, BackendError> {
        let change = self.change(Scope::Prefix(CACHE_NAMESPACE.to_owned()), true);
        let index = self.inner.keys.index_pattern();
        let removed = match self.unlink_scanned(&index, |_| true).await {
            Ok(_) => {
                self.unlink_scanned(&self.inner.keys.scan_pattern(CACHE_NAMESPACE), |_| true)
                    .await
            }
            Err(e) => Err(e),
        };
        change.finish().await?;
        removed
    }
}

/// A redirection the cluster client could not follow (`ASK` for the second
/// command of a pipeline).
fn is_redirection_error(e: &BackendError) -> bool {
    let BackendError::Command { source, .. } = e else {
        return false;
    };
    source.downcast_ref::<RedisError>().is_some_and(redirects)
}

/// A Cluster node's answer that the key is served elsewhere (`MOVED`,
/// `ASK`).
fn redirects(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}

/// What a Cluster node said to a read sent to it directly.
enum Routed<T> {
    Value(T),
    /// `MOVED`: the slot is served by this node now.
    Moved(NodeAddr),
    /// `ASK`: the slot is migrating (or a `MOVED` without a usable address).
    Ask,
}

impl<T> Routed<T> {
    /// A redirection as such; any other error as it is.
    fn from_error(e: RedisError) -> RedisResult<Self> {
        if !redirects(&e) {
            return Err(e);
        }
        let moved_to = (e.kind() == ErrorKind::Server(ServerErrorKind::Moved))
            .then(|| {
                e.redirect_node()
                    .and_then(|(addr, _)| NodeAddr::parse(addr))
            })
            .flatten();
        Ok(moved_to.map_or(Self::Ask, Self::Moved))
    }
}

/// Every page of a `SCAN` of `pattern` on one connection, each bounded by
/// the command timeout and reported to `target`'s breaker.
async fn scan_with<C, F, Fut>(
    conn: &mut C,
    backend: &RedisBackend,
    target: Target<'_>,
    pattern: &str,
    page: &mut F,
) -> Result<u64, BackendError>
where
    C: ::redis::aio::ConnectionLike + Clone + Send + Sync,
    F: FnMut(Vec<Vec<u8>>) -> Fut,
    Fut: Future<Output = Result<u64, BackendError>>,
{
    let (breaker, _) = backend.inner.breakers.pick(target);
    let mut total = 0;
    let mut cursor = 0;
    loop {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) = backend
            .attempt_on(&breaker, conn.clone(), |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async(&mut c).await }
            })
            .await?;
        total += page(keys).await?;
        if next == 0 {
            return Ok(total);
        }
        cursor = next;
    }
}

/// The channel and message script arguments of a note (empty: none).
fn note_args(note: Option<&Note>) -> (&[u8], &[u8]) {
    note.map_or((&[], &[]), |n| (n.channel.as_bytes(), n.message.as_slice()))
}

/// A TTL in whole milliseconds for `PX`: rounded up (a sub-millisecond TTL
/// must not become "no expiry" or an error), between 1 ms and
/// [`MAX_TTL_MS`].
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_is_bounded() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(60)), 60_000);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS);
    }
}
