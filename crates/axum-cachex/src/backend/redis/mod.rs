//! The Redis backend (feature `redis`); see [`RedisBackend`].

mod config;

use std::{
    collections::HashSet,
    fmt,
    future::Future,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::Duration,
};

use ::redis::{
    ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use axum_cachex_core::{
    Backend, BackendError, CACHE_NAMESPACE, CacheKey, CompareAndSwap, Listing, PathInvalidation,
    StoredValue,
};
use bytes::Bytes;

pub use self::config::{RedisConfig, RedisConfigError};
use super::breaker::{Breaker, Cause, ProbeTicket, Watch};

const NAME: &str = "redis";

/// Marker after the prefix of the per-path index keys. Logical keys starting
/// with it are reserved.
const PATH_INDEX_MARKER: &str = "__path_index:";

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
/// logical key (the index member). Returns 1 when the entry was written.
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
return 1
";

/// Compare-and-delete for lock release. KEYS: entry. ARGV: expected value.
const DELETE_IF_EQUALS_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Compare-and-set. KEYS: entry. ARGV: expected value, new value, ttl ms
/// (`''` = none).
const SET_IF_EQUALS_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[3] == '' then redis.call('SET', KEYS[1], ARGV[2])
  else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
  return 1
end
return 0
";

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
/// `ConnectionManager`: one multiplexed connection shared by all calls,
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
/// one `MULTI` per 1000 members; it counts what `UNLINK` really removed, so
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
/// - Standalone Redis (or a proxy in front of one): the write and clear
///   scripts touch an entry and its index in one step, which Redis Cluster
///   allows only for keys in the same hash slot.
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
    client: ::redis::Client,
    /// Created on first use (it needs a Tokio runtime) and dropped again when
    /// its connection can never succeed (authentication failed), so that the
    /// next attempt starts afresh.
    manager: ArcSwapOption<ConnectionManager>,
    create_lock: Mutex<()>,
    prefix: String,
    index_prefix: String,
    /// `SCAN MATCH` pattern of the whole namespace (prefix glob-escaped).
    command_timeout: Duration,
    connect_timeout: Duration,
    breaker: Arc<Breaker>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field(
                "addr",
                &self.inner.client.get_connection_info().addr().to_string(),
            )
            .field(
                "db",
                &self
                    .inner
                    .client
                    .get_connection_info()
                    .redis_settings()
                    .db(),
            )
            .field("prefix", &self.inner.prefix)
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

    fn from_parts(client: ::redis::Client, config: RedisConfig, breaker: Arc<Breaker>) -> Self {
        let prefix = config.key_prefix;
        Self {
            inner: Arc::new(Inner {
                client,
                manager: ArcSwapOption::empty(),
                create_lock: Mutex::new(()),
                index_prefix: format!("{prefix}{PATH_INDEX_MARKER}"),
                prefix,
                command_timeout: config.command_timeout,
                connect_timeout: config.connect_timeout,
                breaker,
            }),
        }
    }

    /// The namespace prefix of every key.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
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
        self.run(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async::<Value>(&mut c).await.map(drop) }
        })
        .await
    }

    /// The connection manager, created on first use.
    fn manager(&self) -> Result<ConnectionManager, BackendError> {
        if let Some(m) = self.inner.manager.load_full() {
            return Ok(ConnectionManager::clone(&m));
        }
        let _guard = self
            .inner
            .create_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = self.inner.manager.load_full() {
            return Ok(ConnectionManager::clone(&m));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BackendError::Connection {
                backend: NAME,
                source: "the Redis backend must be used inside a Tokio runtime".into(),
            });
        }
        // One connection attempt per connection future: retries are paced by
        // the breaker instead, so no call waits on a backoff sleep. The
        // response timeout is ours (`command_timeout`), applied around each
        // call including the wait for a connection.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.inner.connect_timeout))
            .set_response_timeout(None);
        let manager = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            .map_err(|e| BackendError::Connection {
                backend: NAME,
                source: Box::new(e),
            })?;
        self.inner.manager.store(Some(Arc::new(manager.clone())));
        Ok(manager)
    }

    /// Runs one round trip under the breaker and the command timeout.
    ///
    /// While the breaker is open the call fails at once with
    /// [`BackendError::Connection`]; the call that finds a probe due starts
    /// it in the background (a `PING`) and fails at once all the same.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, BackendError>
    where
        F: Fn(ConnectionManager) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        if let Err(rejected) = self.inner.breaker.check() {
            if let Some(ticket) = rejected.probe {
                self.spawn_probe(ticket);
            }
            return Err(BackendError::Connection {
                backend: NAME,
                source: Box::new(rejected.error),
            });
        }
        self.attempt(op).await
    }

    /// Sends a `PING` in the background and reports its outcome to the
    /// breaker (no request waits for it).
    fn spawn_probe(&self, ticket: ProbeTicket) {
        // Without a Tokio runtime the ticket is dropped: a failed probe.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let backend = self.clone();
        runtime.spawn(async move {
            let cmd = ::redis::cmd("PING");
            let ping = backend
                .attempt(|mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async::<Value>(&mut c).await.map(drop) }
                })
                .await;
            match ping {
                Ok(()) => ticket.succeeded(),
                Err(e) => ticket.failed(Arc::new(e)),
            }
        });
    }

    /// One round trip bounded by the command timeout, its outcome reported
    /// to the breaker (success, connection failure or timeout).
    ///
    /// `op` may run twice: when the first run finds the connection refused,
    /// the command was never sent, and the manager has just started a fresh
    /// connection attempt that the second run waits for (so the first call
    /// after a server comes back succeeds instead of reporting the previous
    /// attempt's failure).
    async fn attempt<T, F, Fut>(&self, op: F) -> Result<T, BackendError>
    where
        F: Fn(ConnectionManager) -> Fut + Send + Sync,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        let inner = &self.inner;
        let conn = self.manager()?;
        let attempt = async {
            match op(conn.clone()).await {
                Err(e) if e.is_connection_refusal() => op(conn).await,
                other => other,
            }
        };
        let mut watch = Watch::new(&inner.breaker, inner.command_timeout);
        let outcome = tokio::time::timeout(inner.command_timeout, attempt).await;
        watch.disarm();
        match outcome {
            Ok(Ok(value)) => {
                inner.breaker.record_success();
                Ok(value)
            }
            Ok(Err(e)) => Err(self.map_error(e)),
            Err(_) => {
                inner.breaker.record_timeout(inner.command_timeout);
                Err(BackendError::Timeout {
                    backend: NAME,
                    timeout: inner.command_timeout,
                })
            }
        }
    }

    fn map_error(&self, e: RedisError) -> BackendError {
        let kind = e.kind();
        if e.is_io_error() || e.is_connection_dropped() || kind == ErrorKind::AuthenticationFailed {
            let cause: Cause = Arc::new(e.clone());
            self.inner.breaker.record_connection_failure(cause);
            if kind == ErrorKind::AuthenticationFailed {
                // The manager only reconnects after I/O errors: a connection
                // that failed to authenticate would be reported forever.
                self.inner.manager.store(None);
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
        if key.starts_with(PATH_INDEX_MARKER) {
            return Err(BackendError::InvalidInput(format!(
                "keys starting with `{PATH_INDEX_MARKER}` are reserved by the Redis backend"
            )));
        }
        Ok(format!("{}{key}", self.inner.prefix))
    }

    fn index_key(&self, path: &str) -> String {
        format!("{}{path}", self.inner.index_prefix)
    }

    fn is_index_key(&self, raw: &[u8]) -> bool {
        raw.starts_with(self.inner.index_prefix.as_bytes())
    }

    /// The logical key of a scanned data key (`None` for index keys and for
    /// keys that are not UTF-8, which this backend never writes).
    fn logical<'a>(&self, raw: &'a [u8]) -> Option<&'a str> {
        if self.is_index_key(raw) {
            return None;
        }
        let rest = raw.get(self.inner.prefix.len()..)?;
        std::str::from_utf8(rest).ok()
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
        if let Some(cache_key) = CacheKey::parse_stored(key) {
            let index_key = self.index_key(&cache_key.decoded_path());
            let ttl_arg = ttl_ms.map(|ms| ms.to_string()).unwrap_or_default();
            return self
                .run(|mut c| {
                    let (data_key, index_key, value, ttl_arg) =
                        (&data_key, &index_key, &value, &ttl_arg);
                    async move {
                        SET_INDEXED
                            .key(data_key)
                            .key(index_key)
                            .arg(value.as_ref())
                            .arg(ttl_arg)
                            .arg(mode.arg())
                            .arg(key)
                            .invoke_async::<i64>(&mut c)
                            .await
                            .map(|written| written == 1)
                    }
                })
                .await;
        }
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(&data_key).arg(value.as_ref());
        if let Some(ms) = ttl_ms {
            cmd.arg("PX").arg(ms);
        }
        if !matches!(mode, Mode::Always) {
            cmd.arg(mode.arg());
        }
        self.run(|mut c| {
            let cmd = &cmd;
            async move {
                cmd.query_async::<Value>(&mut c)
                    .await
                    .map(|reply| reply != Value::Nil)
            }
        })
        .await
    }

    /// A write with a zero TTL: the value would be expired at once, so
    /// nothing is stored (Redis rejects `PX 0`), and an older value goes.
    async fn write_expired(&self, key: &str, mode: Mode) -> Result<bool, BackendError> {
        match mode {
            Mode::Always => self.delete(key).await.map(|_| true),
            Mode::IfPresent => self.delete(key).await,
            Mode::IfAbsent => {
                let mut cmd = ::redis::cmd("EXISTS");
                cmd.arg(self.data_key(key)?);
                let exists: u64 = self
                    .run(|mut c| {
                        let cmd = &cmd;
                        async move { cmd.query_async(&mut c).await }
                    })
                    .await?;
                Ok(exists == 0)
            }
        }
    }

    /// The `SCAN MATCH` pattern of the data keys whose logical keys start
    /// with `logical_prefix`.
    fn scan_pattern(&self, logical_prefix: &str) -> String {
        format!(
            "{}{}*",
            escape_glob(&self.inner.prefix),
            escape_glob(logical_prefix)
        )
    }

    /// One `SCAN` page of the keys matching `pattern`.
    async fn scan_page(
        &self,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<Vec<u8>>), BackendError> {
        let mut cmd = ::redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        self.run(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    /// `UNLINK` of these keys; returns how many existed.
    async fn unlink(&self, keys: &[Vec<u8>]) -> Result<u64, BackendError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let mut cmd = ::redis::cmd("UNLINK");
        cmd.arg(keys);
        self.run(|mut c| {
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
        let mut cursor = 0;
        let mut removed = 0;
        loop {
            let (next, page) = self.scan_page(pattern, cursor).await?;
            let (index, data): (Vec<Vec<u8>>, Vec<Vec<u8>>) = page
                .into_iter()
                .filter(|raw| keep(raw))
                .partition(|raw| self.is_index_key(raw));
            removed += self.unlink(&data).await?;
            self.unlink(&index).await?;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.data_key(key)?);
        self.run(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
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
        let mut cmd = ::redis::cmd("GETDEL");
        cmd.arg(self.data_key(key)?);
        self.run(|mut c| {
            let cmd = &cmd;
            async move { cmd.query_async(&mut c).await }
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let key = self.data_key(key)?.into_bytes();
        Ok(self.unlink(&[key]).await? > 0)
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
        let pattern = self.scan_pattern(prefix);
        let mut cursor = 0;
        // SCAN may return a key more than once.
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        loop {
            let (next, page) = self.scan_page(&pattern, cursor).await?;
            for raw in &page {
                if let Some(key) = self.logical(raw) {
                    if seen.insert(key.to_owned()) {
                        keys.push(key.to_owned());
                    }
                }
            }
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn entries(&self, prefix: &str) -> Result<Vec<StoredValue>, BackendError> {
        let keys = self.keys(prefix).await?;
        let mut entries = Vec::with_capacity(keys.len());
        for batch in keys.chunks(ENTRIES_BATCH) {
            let mut pipe = ::redis::pipe();
            for key in batch {
                let data_key = self.data_key(key)?;
                pipe.cmd("GET").arg(&data_key).cmd("PTTL").arg(&data_key);
            }
            // A key of another type under the prefix must not fail the
            // whole listing: its GET error is skipped below.
            pipe.ignore_errors();
            let replies: Vec<RedisResult<Value>> = self
                .run(|mut c| {
                    let pipe = &pipe;
                    async move { pipe.query_async(&mut c).await }
                })
                .await?;
            let mut replies = replies.into_iter();
            for key in batch {
                let (Some(value), Some(pttl)) = (replies.next(), replies.next()) else {
                    break;
                };
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
        // Index keys are internal: they go with a clear of everything.
        self.unlink_scanned(&self.scan_pattern(prefix), |raw| {
            prefix.is_empty() || !self.is_index_key(raw)
        })
        .await
    }
}

#[async_trait]
impl CompareAndSwap for RedisBackend {
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let data_key = self.data_key(key)?;
        self.run(|mut c| {
            let data_key = &data_key;
            async move {
                DELETE_IF_EQUALS
                    .key(data_key)
                    .arg(expected)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(|deleted| deleted == 1)
            }
        })
        .await
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
        self.run(|mut c| {
            let (data_key, value, ttl_arg) = (&data_key, &value, &ttl_arg);
            async move {
                SET_IF_EQUALS
                    .key(data_key)
                    .arg(expected)
                    .arg(value.as_ref())
                    .arg(ttl_arg)
                    .invoke_async::<i64>(&mut c)
                    .await
                    .map(|written| written == 1)
            }
        })
        .await
    }
}

#[async_trait]
impl PathInvalidation for RedisBackend {
    async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError> {
        let index_key = self.index_key(path);
        let prefix = self.inner.prefix.as_bytes();
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut cmd = ::redis::cmd("ZSCAN");
            cmd.arg(&index_key).arg(cursor).arg("COUNT").arg(SCAN_COUNT);
            let (next, items): (u64, Vec<Vec<u8>>) = self
                .run(|mut c| {
                    let cmd = &cmd;
                    async move { cmd.query_async(&mut c).await }
                })
                .await?;
            // ZSCAN answers member, score, member, score, …
            let members: Vec<Vec<u8>> = items
                .into_iter()
                .step_by(2)
                .filter(|member| {
                    std::str::from_utf8(member)
                        .ok()
                        .and_then(CacheKey::parse_stored)
                        .is_some_and(|k| k.is_for_path(path, include_params))
                })
                .collect();
            if !members.is_empty() {
                let data_keys: Vec<Vec<u8>> =
                    members.iter().map(|m| [prefix, m].concat()).collect();
                // Atomic, so that a concurrent write of the same key lands
                // either before (deleted with its member) or after (entry and
                // member both re-created), never with its member lost.
                let mut pipe = ::redis::pipe();
                pipe.atomic()
                    .cmd("UNLINK")
                    .arg(&data_keys)
                    .cmd("ZREM")
                    .arg(&index_key)
                    .arg(&members)
                    .ignore();
                let (existed,): (u64,) = self
                    .run(|mut c| {
                        let pipe = &pipe;
                        async move { pipe.query_async(&mut c).await }
                    })
                    .await?;
                removed += existed;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn clear_cache(&self) -> Result<u64, BackendError> {
        let index = self.scan_pattern(PATH_INDEX_MARKER);
        self.unlink_scanned(&index, |_| true).await?;
        self.unlink_scanned(&self.scan_pattern(CACHE_NAMESPACE), |_| true)
            .await
    }
}

/// A TTL in whole milliseconds for `PX`: rounded up (a sub-millisecond TTL
/// must not become "no expiry" or an error), between 1 ms and
/// [`MAX_TTL_MS`].
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// Escapes the glob characters of Redis `MATCH` so that a prefix matches
/// itself only.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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

    #[test]
    fn escapes_match_patterns() {
        assert_eq!(escape_glob("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
        assert_eq!(escape_glob("axum_cachex:"), "axum_cachex:");
    }

    #[test]
    fn index_keys_are_recognised_and_reserved() {
        let be = RedisBackend::builder()
            .key_prefix("p:")
            .build()
            .expect("build");
        assert!(be.is_index_key(b"p:__path_index:/x"));
        assert_eq!(be.logical(b"p:__path_index:/x"), None);
        assert_eq!(be.logical(b"p:GET|||h|||/x|||"), Some("GET|||h|||/x|||"));
        assert!(matches!(
            be.data_key("__path_index:/x"),
            Err(BackendError::InvalidInput(_))
        ));
    }
}
