//! The Memcached backend: several servers on a consistent-hash ring, a key
//! prefix, and HTTP cache invalidation through generation counters. The guide is
//! on [`MemcachedBackend`], because this module is private and only its items
//! are re-exported.

pub(crate) mod client;
mod hints;
mod keys;
mod ring;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_trait::async_trait;
use axum_cachex_core::{Backend, BackendError, CompareAndSwap, PathInvalidation};
use bytes::Bytes;
use tokio::time::{Instant, timeout_at};

use crate::backend::breaker::{Breaker, ProbeTicket};

use self::{
    client::{ClientError, Conn, Item, Lease, LeaseError, Server, StoreMode},
    hints::CounterHints,
    keys::{
        ENVELOPE_FLAGS, KeyNames, PATH_ALL_STEP, decode_envelope, envelope_head, exptime,
        fresh_counter, generation_key, parse_counter, path_counter_key, validate_prefix,
    },
    ring::HashRing,
};

/// The backend's name in errors and logs.
const NAME: &str = "memcached";

/// Default key prefix of [`MemcachedConfig::key_prefix`].
pub const DEFAULT_MEMCACHED_PREFIX: &str = "axum_cachex:";

/// Default per-call timeout of [`MemcachedConfig::timeout`]: 250 ms.
pub const DEFAULT_MEMCACHED_TIMEOUT: Duration = Duration::from_millis(250);

/// Default connections per server of [`MemcachedConfig::pool_size`]: 8.
pub const DEFAULT_MEMCACHED_POOL_SIZE: usize = 8;

/// Default of [`MemcachedConfig::max_item_size`]: 1 MiB, Memcached's own.
pub const DEFAULT_MEMCACHED_ITEM_SIZE: usize = 1024 * 1024;

/// Default of [`MemcachedConfig::down_backoff`]: 1 s.
pub const DEFAULT_MEMCACHED_DOWN_BACKOFF: Duration = Duration::from_secs(1);

/// Default of [`MemcachedConfig::breaker_threshold`]: 3 consecutive
/// timeouts.
pub const DEFAULT_MEMCACHED_BREAKER_THRESHOLD: u32 = 3;

/// Settings of a [`MemcachedBackend`]; every field has a default except the
/// server list.
///
/// Build one with [`MemcachedBackend::builder`], or start from
/// `MemcachedConfig::default()`, set the fields and call
/// [`MemcachedBackend::from_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemcachedConfig {
    /// The servers, as `host:port` (`[::1]:11211` for IPv6). Their order does
    /// not matter for placement: a key's server depends on the addresses
    /// only. Default: none (building fails until one is given).
    pub servers: Vec<String>,
    /// Prepended to every key this backend writes, so several applications
    /// (or tests) can share servers. Printable ASCII without spaces, at most
    /// 128 bytes. Default: `axum_cachex:` ([`DEFAULT_MEMCACHED_PREFIX`]).
    pub key_prefix: String,
    /// Time limit of each backend call, covering waiting for a pooled
    /// connection, connecting, and every round trip of the call; past it the
    /// call fails with [`BackendError::Timeout`]. Default: 250 ms
    /// ([`DEFAULT_MEMCACHED_TIMEOUT`]).
    pub timeout: Duration,
    /// Most connections open to one server at a time; calls beyond it wait
    /// (within the timeout) for a free one. Default: 8
    /// ([`DEFAULT_MEMCACHED_POOL_SIZE`]).
    pub pool_size: usize,
    /// After a failed connection attempt, or after
    /// [`breaker_threshold`](Self::breaker_threshold) consecutive timeouts,
    /// how long calls for that server fail at once with
    /// [`BackendError::Connection`] instead of trying again (the server's
    /// circuit breaker is open), so that an unreachable or frozen server
    /// costs nothing per request. When it is over, a `version` command sent
    /// in the background (no request waits for it) closes the breaker if the
    /// server answers within the timeout, or keeps it open for another
    /// backoff. Zero disables the breaker: every call tries the server.
    /// Default: 1 s ([`DEFAULT_MEMCACHED_DOWN_BACKOFF`]).
    pub down_backoff: Duration,
    /// Consecutive timeouts of calls to one server (no answer in between)
    /// after which that server is taken for frozen and its circuit breaker
    /// opens (see [`down_backoff`](Self::down_backoff)). `0` never opens it
    /// on timeouts (failed connections still do). Default: 3
    /// ([`DEFAULT_MEMCACHED_BREAKER_THRESHOLD`]): one slow reply does not
    /// open it, yet a frozen server is detected after three waits at most,
    /// which under load is the first timeout window.
    pub breaker_threshold: u32,
    /// The servers' item size limit (`memcached -I`), envelope and key
    /// included: the HTTP layer never buffers a response too large to
    /// store. Default: 1 MiB ([`DEFAULT_MEMCACHED_ITEM_SIZE`]), Memcached's
    /// own default.
    pub max_item_size: usize,
}

impl Default for MemcachedConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            key_prefix: DEFAULT_MEMCACHED_PREFIX.to_owned(),
            timeout: DEFAULT_MEMCACHED_TIMEOUT,
            pool_size: DEFAULT_MEMCACHED_POOL_SIZE,
            down_backoff: DEFAULT_MEMCACHED_DOWN_BACKOFF,
            breaker_threshold: DEFAULT_MEMCACHED_BREAKER_THRESHOLD,
            max_item_size: DEFAULT_MEMCACHED_ITEM_SIZE,
        }
    }
}

/// Why a [`MemcachedConfig`] cannot make a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemcachedConfigError {
    /// No server was given.
    #[error("the memcached backend needs at least one server")]
    NoServers,
    /// A server address is not `host:port`.
    #[error("memcached server {0:?} is not host:port")]
    BadAddress(String),
    /// A server is listed twice.
    #[error("memcached server {0:?} is listed twice")]
    DuplicateServer(String),
    /// The key prefix is too long or not printable ASCII without spaces.
    #[error("{0}")]
    BadPrefix(String),
    /// The timeout is zero.
    #[error("the memcached timeout must be greater than zero")]
    ZeroTimeout,
    /// The pool size is zero.
    #[error("the memcached pool size must be at least 1")]
    ZeroPoolSize,
}

impl MemcachedConfig {
    fn validate(&self) -> Result<(), MemcachedConfigError> {
        if self.servers.is_empty() {
            return Err(MemcachedConfigError::NoServers);
        }
        for (i, server) in self.servers.iter().enumerate() {
            if !is_host_port(server) {
                return Err(MemcachedConfigError::BadAddress(server.clone()));
            }
            if self.servers[..i].contains(server) {
                return Err(MemcachedConfigError::DuplicateServer(server.clone()));
            }
        }
        validate_prefix(&self.key_prefix).map_err(MemcachedConfigError::BadPrefix)?;
        if self.timeout.is_zero() {
            return Err(MemcachedConfigError::ZeroTimeout);
        }
        if self.pool_size == 0 {
            return Err(MemcachedConfigError::ZeroPoolSize);
        }
        Ok(())
    }
}

/// Whether `addr` is `host:port`: a name or IPv4 address (no `:`), or an
/// IPv6 address in brackets, and a port from 1 to 65535.
fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && !host.contains([':', '[', ']', '/', ' ']),
    };
    port_ok && host_ok
}

/// Builder of a [`MemcachedBackend`]; see [`MemcachedConfig`] for what each
/// setting means and its default.
#[derive(Debug, Clone)]
#[must_use]
pub struct MemcachedBackendBuilder {
    config: MemcachedConfig,
}

impl MemcachedBackendBuilder {
    /// Adds one server (`host:port`).
    pub fn server(mut self, addr: impl Into<String>) -> Self {
        self.config.servers.push(addr.into());
        self
    }

    /// Adds several servers (`host:port` each).
    pub fn servers<I, S>(mut self, addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .servers
            .extend(addrs.into_iter().map(Into::into));
        self
    }

    /// The key prefix. Default: `axum_cachex:`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// The time limit of each call. Default: 250 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Most connections per server. Default: 8.
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.config.pool_size = connections;
        self
    }

    /// The servers' item size limit (`memcached -I`). Default: 1 MiB.
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.config.max_item_size = bytes;
        self
    }

    /// How long a server that refused a connection or stopped answering is
    /// skipped before a background probe tries it again; zero disables the
    /// breaker. Default: 1 s.
    pub fn down_backoff(mut self, backoff: Duration) -> Self {
        self.config.down_backoff = backoff;
        self
    }

    /// Consecutive timeouts after which a server is taken for frozen and
    /// skipped like one that refused a connection; `0` never. Default: 3.
    pub fn breaker_threshold(mut self, timeouts: u32) -> Self {
        self.config.breaker_threshold = timeouts;
        self
    }

    /// Builds the backend. Nothing is connected yet: connections open on
    /// first use, so the servers need not be up.
    ///
    /// # Errors
    ///
    /// [`MemcachedConfigError`] when no server is given, an address is not
    /// `host:port` or is listed twice, the prefix is not printable ASCII
    /// without spaces or is longer than 128 bytes, the timeout is zero or the
    /// pool size is zero.
    pub fn build(self) -> Result<MemcachedBackend, MemcachedConfigError> {
        MemcachedBackend::from_config(self.config)
    }
}

/// A shared cache on one or more Memcached servers.
///
/// ```
/// use std::time::Duration;
/// use axum_cachex::backend::MemcachedBackend;
///
/// let backend = MemcachedBackend::builder()
///     .servers(["127.0.0.1:11211", "127.0.0.1:11212"])
///     .key_prefix("myapp:")
///     .timeout(Duration::from_millis(100))
///     .build()?;
/// # let _ = backend;
/// # Ok::<(), axum_cachex::backend::MemcachedConfigError>(())
/// ```
///
/// # Options and defaults
///
/// See [`MemcachedConfig`]: servers (required), key prefix `axum_cachex:`,
/// per-call timeout 250 ms, 8 connections per server, 1 s backoff after a
/// failed connection or 3 consecutive timeouts. Building connects to
/// nothing; each server's connections open on first use and a broken one is
/// replaced on a later call, so a server may be down at start-up or restart
/// at any time.
///
/// # A server that is down or frozen
///
/// Each server has its own circuit breaker (the same one as the Redis
/// backend's). It opens when a connection to the server fails, or after
/// [`breaker_threshold`](MemcachedConfig::breaker_threshold) consecutive
/// calls to it timed out (3 by default): a server that is alive but frozen
/// (stopped with `SIGSTOP`, swapping) still accepts TCP connections in the
/// kernel and answers nothing, so only timeouts reveal it. While the breaker
/// is open, calls for that server's keys fail at once with
/// [`BackendError::Connection`] (the HTTP layer serves from the handler
/// without waiting) and the other servers are not affected. After
/// [`down_backoff`](MemcachedConfig::down_backoff) (1 s) a `version`
/// command is sent in the background — no request waits for it — and
/// closes the breaker once the server answers within the timeout; otherwise
/// the breaker stays open for another backoff.
///
/// # Several servers
///
/// Keys are spread over the servers with consistent hashing: each server
/// has 160 points on a ring (xxh3 of its address), and a key belongs to the
/// first point after the xxh3 hash of the key. Losing or adding one server
/// moves only the keys on its share of the ring. A key always goes to its
/// own server, never to another one when that server is down: calls for the
/// down server's keys fail with [`BackendError::Connection`] or
/// [`BackendError::Timeout`] (both [`is_unavailable`]) while the other
/// servers' keys keep working. The HTTP layer treats such failures as a
/// cache miss (fail open). [`server_for_key`](Self::server_for_key) tells
/// which server holds a key.
///
/// # Keys and values
///
/// Memcached keys are at most 250 bytes of printable ASCII without spaces.
/// A key that fits is stored readably (`{prefix}{generations}:k:{key}`);
/// any other (long, with spaces, control characters or non-ASCII) is stored
/// under `…:h:{xxh3-128 of the key}`. Every value is stored as
/// `[u16 key length][key][value]` with item flags `0xCAC1`, so a read checks
/// the key it finds (a hash collision reads as a miss) and a person looking
/// at the server sees whose value it is. Values are bytes, stored exactly.
///
/// # TTLs
///
/// Memcached counts whole seconds: a TTL is rounded up to whole seconds
/// (1.2 s becomes 2 s) and capped at 30 days, because Memcached reads larger
/// numbers as Unix timestamps. No TTL means no expiry (the item stays until
/// evicted). The server's clock ticks once a second, so an item lives
/// between its rounded TTL minus one second and its rounded TTL.
///
/// # Invalidating the HTTP cache with generation counters
///
/// Memcached cannot list or scan keys, so the backend offers the HTTP cache
/// a [`PathInvalidation`] fast path that does not delete: it makes old
/// entries unreachable, and Memcached's LRU reclaims them as it needs room.
///
/// - Each server holds a **cache generation** counter (`{prefix}@g`) and,
///   for each request path, a **path counter** (`{prefix}@p:{path}`).
/// - The server-side key of an HTTP cache entry (a key under
///   [`CACHE_NAMESPACE`](axum_cachex_core::CACHE_NAMESPACE) in the
///   [`CacheKey`](axum_cachex_core::CacheKey) format) embeds both:
///   `{prefix}{gen}.{pathgen}:k:{key}`. Other keys (sessions, states,
///   application values) embed none: `{prefix}k:{key}`, one round trip per
///   call, and no clear of the HTTP cache reaches them.
/// - [`clear_cache`](PathInvalidation::clear_cache) increments the cache
///   generation on every server.
/// - `clear_path(path, true)` adds 2³² to the path counter on every server;
///   entries with a query string embed only the counter's high half, entries
///   without one the whole counter, so `clear_path(path, false)` adds 1 and
///   reaches only the entries without a query.
/// - A counter that is missing (first use, or evicted) is created with a
///   random value, so entries written under an evicted counter never come
///   back.
///
/// **Cost:** a read of an HTTP cache key is one round trip: one multi-get
/// asks for the two counters and for the entry their values name, taking
/// those values from the last ones this instance saw on that server. The
/// entry counts only when the counters come back with exactly those
/// values, so it is what the two-step read (counters, then entry) would
/// find. When they differ (a clear since, or a first read), the read takes
/// the second round trip with the current values. Writes and the other
/// calls read the counters first, then act on the entry: two round trips
/// on the same connection. The remembered values are only guesses: they are
/// never used without the server confirming them, so a clear is seen at
/// once by every instance.
///
/// (Moving the counter values from the key into the stored value would
/// also make a hit one round trip, but then `add`, `replace`, `take` and
/// the compare-and-swap calls must each treat an outdated value as absent,
/// with a `gets`/`cas` loop each; the guess needs none of that.)
///
/// **Counts:** the clears cannot tell how many entries they reached and
/// return 0 ([`counts_exactly`](PathInvalidation::counts_exactly) is false).
/// A clear returns an error if any server could not be reached: that
/// server's entries were not invalidated.
///
/// # Atomic operations
///
/// [`add`](Backend::add) and [`replace`](Backend::replace) are Memcached's
/// `add` and `replace`. [`take`](Backend::take) is `get` followed by
/// `delete`, and only the caller whose `delete` removed the item gets the
/// value: of any number of concurrent takers at most one wins. (If a `set`
/// lands between the two steps, the winner gets the value it read and the
/// newer one is deleted.) [`delete`](Backend::delete) reports whether the
/// item existed. [`CompareAndSwap`] reads the item with `gets`, then
/// deletes it with a meta delete guarded by its CAS unique
/// (`md <key> C<cas>`, Memcached 1.6 or later) or replaces it with `cas`,
/// so lock releases and compare-and-set are exact here too.
///
/// # Limits
///
/// - No [`Listing`](axum_cachex_core::Listing): the HTTP cache's
///   `clear_pattern`, the monitoring listings and the session manager's
///   `clear_expired_sessions` need a store that can list keys (memory,
///   Redis). `clear_path` and clearing the HTTP cache work, through the
///   counters above.
/// - Items are limited by the server's item size, 1 MiB by default
///   (`memcached -I`, see [`MemcachedConfig::max_item_size`]); a larger
///   value fails with [`BackendError::Command`]. The HTTP layer never
///   buffers a response larger than that.
/// - Memcached may evict any entry before its TTL when it runs out of
///   memory: it is a cache, not a session database. Sessions stored here
///   can vanish under memory pressure or a server restart.
///
/// # Client
///
/// The backend speaks Memcached's classic text protocol itself, over tokio
/// TCP streams, with a small connection pool per server. It needs
/// Memcached 1.6 or later: every operation uses classic commands
/// (`get`, `gets`, `set`, `add`, `replace`, `cas`, `delete`, `incr`) except
/// `delete_if_equals`, which releases cross-instance locks with the meta
/// delete `md … C<cas>` that 1.6 introduced. The `async-memcached` crate was evaluated: its classic
/// protocol has no `replace`, and its meta-protocol path requires
/// Memcached 1.6 while pulling in `nom`, `url` and `futures` for what is
/// here a few hundred lines.
///
/// [`is_unavailable`]: BackendError::is_unavailable
#[derive(Clone)]
pub struct MemcachedBackend {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    ring: HashRing,
    prefix: String,
    timeout: Duration,
    max_item_size: usize,
}

impl std::fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field(
                "servers",
                &self
                    .inner
                    .servers
                    .iter()
                    .map(Server::addr)
                    .collect::<Vec<_>>(),
            )
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl MemcachedBackend {
    /// A backend on `servers` (`host:port` each) with every other setting at
    /// its default. Connects to nothing.
    ///
    /// # Errors
    ///
    /// [`MemcachedConfigError`] for an invalid server list, as listed under
    /// [`MemcachedBackendBuilder::build`].
    pub fn new<I, S>(servers: I) -> Result<Self, MemcachedConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::builder().servers(servers).build()
    }

    /// Starts configuring a backend.
    pub fn builder() -> MemcachedBackendBuilder {
        MemcachedBackendBuilder {
            config: MemcachedConfig::default(),
        }
    }

    /// Builds a backend from a config. Connects to nothing.
    ///
    /// # Errors
    ///
    /// [`MemcachedConfigError`] for an invalid config, as listed under
    /// [`MemcachedBackendBuilder::build`].
    pub fn from_config(config: MemcachedConfig) -> Result<Self, MemcachedConfigError> {
        config.validate()?;
        let ring = HashRing::new(&config.servers);
        let servers = config
            .servers
            .into_iter()
            .map(|addr| {
                let breaker = Breaker::new(
                    format!("memcached server {addr}"),
                    config.breaker_threshold,
                    config.down_backoff,
                    config.down_backoff,
                );
                Server::new(addr, config.pool_size, breaker)
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                servers,
                ring,
                prefix: config.key_prefix,
                timeout: config.timeout,
                max_item_size: config.max_item_size,
            }),
        })
    }

    /// The address (as configured) of the server that holds `key`.
    pub fn server_for_key(&self, key: &str) -> &str {
        self.server(key).addr()
    }

    fn server(&self, key: &str) -> &Server {
        let index = self.inner.ring.server_for(key.as_bytes()).unwrap_or(0);
        // The ring indexes `servers`, which `validate` keeps non-empty.
        &self.inner.servers[index.min(self.inner.servers.len() - 1)]
    }

    fn timeout_error(&self) -> BackendError {
        BackendError::Timeout {
            backend: NAME,
            timeout: self.inner.timeout,
        }
    }

    fn client_error(e: ClientError) -> BackendError {
        if e.is_connection() {
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

    /// Checks out a connection to `server` and the deadline of this call;
    /// fails at once while the server's breaker is open.
    async fn lease<'a>(&self, server: &'a Server) -> Result<(Lease<'a>, Instant), BackendError> {
        if let Err(rejected) = server.breaker.check() {
            if let Some(ticket) = rejected.probe {
                self.spawn_probe(server, ticket);
            }
            return Err(BackendError::Connection {
                backend: NAME,
                source: Box::new(rejected.error),
            });
        }
        let (mut lease, deadline) = self.lease_unchecked(server).await?;
        if server.missed_invalidation.load(Ordering::Acquire) {
            // A path or cache clear did not reach this server while it was
            // away: clear its whole HTTP cache (a new generation) before it
            // serves anything, rather than serve what was invalidated.
            let generation = generation_key(&self.inner.prefix);
            let caught_up = timeout_at(deadline, lease.conn().incr(&generation, 1)).await;
            if !matches!(caught_up, Ok(Ok(_))) {
                self.finish(lease, caught_up)?;
                return Err(self.timeout_error());
            }
            server.missed_invalidation.store(false, Ordering::Release);
        }
        Ok((lease, deadline))
    }

    async fn lease_unchecked<'a>(
        &self,
        server: &'a Server,
    ) -> Result<(Lease<'a>, Instant), BackendError> {
        let deadline = Instant::now() + self.inner.timeout;
        match server.lease(deadline, self.inner.timeout).await {
            Ok(lease) => Ok((lease, deadline)),
            Err(LeaseError::Timeout) => {
                // All connections busy for the whole timeout: the server is
                // not answering them.
                server.breaker.record_timeout(self.inner.timeout);
                Err(self.timeout_error())
            }
            Err(LeaseError::Client(e)) => Err(Self::client_error(e)),
        }
    }

    /// Sends `version` to `server` in the background and reports the
    /// outcome to its breaker (no request waits for it).
    fn spawn_probe(&self, server: &Server, ticket: ProbeTicket) {
        let Some(index) = self
            .inner
            .servers
            .iter()
            .position(|s| std::ptr::eq(s, server))
        else {
            return;
        };
        // Without a Tokio runtime the ticket is dropped: a failed probe.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let backend = self.clone();
        runtime.spawn(async move {
            let server = &backend.inner.servers[index];
            let answer = match backend.lease_unchecked(server).await {
                Ok((mut lease, deadline)) => {
                    let result = timeout_at(deadline, lease.conn().version()).await;
                    backend.finish(lease, result)
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok(()) => ticket.succeeded(),
                Err(e) => ticket.failed(Arc::new(e)),
            }
        });
    }

    /// Ends a call: keeps the connection after a clean exchange, drops it
    /// after anything else (its state is unknown), and maps the error.
    fn finish<T>(
        &self,
        mut lease: Lease<'_>,
        result: Result<Result<T, ClientError>, tokio::time::error::Elapsed>,
    ) -> Result<T, BackendError> {
        match result {
            Ok(Ok(value)) => {
                lease.server().breaker.record_success();
                lease.release();
                Ok(value)
            }
            Ok(Err(e)) => {
                lease.settle();
                Err(Self::client_error(e))
            }
            Err(_) => {
                lease.settle();
                lease.server().breaker.record_timeout(self.inner.timeout);
                Err(self.timeout_error())
            }
        }
    }

    /// Stores with `set`, `add` or `replace`.
    async fn store(
        &self,
        mode: StoreMode,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let head = envelope_head(key).map_err(BackendError::InvalidInput)?;
        let names = KeyNames::new(&self.inner.prefix, key);
        let (mut lease, deadline) = self.lease(self.server(key)).await?;
        let result = timeout_at(deadline, async {
            let conn = lease.conn();
            let real = resolve(conn, &names, &self.server(key).hints).await?;
            conn.store(mode, &real, ENVELOPE_FLAGS, exptime(ttl), &[&head, value])
                .await
        })
        .await;
        self.finish(lease, result)
    }

    /// Adds `delta` to the counter `counter` on every server. A server
    /// without the counter needs nothing: the next call there creates it
    /// with a fresh random value, which invalidates all the same.
    async fn bump_everywhere(&self, counter: &str, delta: u64) -> Result<u64, BackendError> {
        let bumps = self.inner.servers.iter().map(|server| async move {
            let bumped = async {
                let (mut lease, deadline) = self.lease(server).await?;
                let result = timeout_at(deadline, lease.conn().incr(counter, delta)).await;
                self.finish(lease, result)
            }
            .await;
            if bumped.is_err() {
                // Made up for when the server is next used (see `lease`).
                server.missed_invalidation.store(true, Ordering::Release);
            }
            bumped
        });
        let results = futures_util::future::join_all(bumps).await;
        // Report the first failure: that server's entries were not
        // invalidated, and the caller should know.
        for result in results {
            result?;
        }
        Ok(0)
    }
}

/// Reads (creating when missing) the counters of `names` and returns the
/// entry's server-side key; remembers the values in `hints`.
async fn resolve(
    conn: &mut Conn,
    names: &KeyNames<'_>,
    hints: &CounterHints,
) -> Result<String, ClientError> {
    let counters = names.counters();
    if counters.is_empty() {
        return Ok(names.entry_key(&[]));
    }
    let refs: Vec<&str> = counters.iter().map(String::as_str).collect();
    let items = conn.get_multi(&refs).await?;
    let mut values = Vec::with_capacity(counters.len());
    for counter in &counters {
        values.push(match counter_value(&items, counter) {
            Some(value) => value,
            None => create_counter(conn, counter).await?,
        });
    }
    hints.put(&counters, &values);
    Ok(names.entry_key(&values))
}

/// The value of `counter` among `items`, when it is there and a number.
fn counter_value(items: &[Item], counter: &str) -> Option<u64> {
    items
        .iter()
        .find(|item| item.key == counter)
        .and_then(|item| parse_counter(&item.data))
}

/// Reads the item of `names`: in one round trip when the counters still
/// have the values `hints` remembers (the counters and the entry those
/// values name go in one multi-get, and the entry counts only if the
/// counters come back unchanged), else counters first, then the entry.
async fn read_item(
    conn: &mut Conn,
    names: &KeyNames<'_>,
    hints: &CounterHints,
) -> Result<Option<Item>, ClientError> {
    let counters = names.counters();
    if let Some(expected) = hints.get(&counters).filter(|_| !counters.is_empty()) {
        let guess = names.entry_key(&expected);
        let mut keys: Vec<&str> = counters.iter().map(String::as_str).collect();
        keys.push(&guess);
        let items = conn.get_multi(&keys).await?;
        let unchanged = counters
            .iter()
            .zip(&expected)
            .all(|(counter, value)| counter_value(&items, counter) == Some(*value));
        if unchanged {
            return Ok(items.into_iter().find(|item| item.key == guess));
        }
    }
    let real = resolve(conn, names, hints).await?;
    let items = conn.get_multi(&[&real]).await?;
    Ok(items.into_iter().find(|item| item.key == real))
}

/// Creates a missing counter with a fresh value, or reads the one a
/// concurrent caller created first.
async fn create_counter(conn: &mut Conn, counter: &str) -> Result<u64, ClientError> {
    let fresh = fresh_counter();
    let text = fresh.to_string();
    if conn
        .store(StoreMode::Add, counter, 0, 0, &[text.as_bytes()])
        .await?
    {
        return Ok(fresh);
    }
    let items = conn.get_multi(&[counter]).await?;
    if let Some(value) = items.first().and_then(|item| parse_counter(&item.data)) {
        return Ok(value);
    }
    // Present but not a number (written by something else), or evicted in
    // between: overwrite it. A new value only invalidates.
    conn.store(StoreMode::Set, counter, 0, 0, &[text.as_bytes()])
        .await?;
    Ok(fresh)
}

#[async_trait]
impl Backend for MemcachedBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_value_size(&self) -> Option<usize> {
        Some(self.inner.max_item_size)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let names = KeyNames::new(&self.inner.prefix, key);
        let (mut lease, deadline) = self.lease(self.server(key)).await?;
        let result = timeout_at(deadline, async {
            let hints = &self.server(key).hints;
            let item = read_item(lease.conn(), &names, hints).await?;
            Ok(item.and_then(|item| decode_envelope(key, item.flags, &item.data)))
        })
        .await;
        self.finish(lease, result)
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        if self.store(StoreMode::Set, key, &value, ttl).await? {
            Ok(())
        } else {
            // `set` has no condition; NOT_STORED only comes from a server
            // that refused the write.
            Err(BackendError::Command {
                backend: NAME,
                source: format!("memcached did not store {key:?}").into(),
            })
        }
    }

    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.store(StoreMode::Add, key, &value, ttl).await
    }

    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        self.store(StoreMode::Replace, key, &value, ttl).await
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let names = KeyNames::new(&self.inner.prefix, key);
        let (mut lease, deadline) = self.lease(self.server(key)).await?;
        let result = timeout_at(deadline, async {
            let conn = lease.conn();
            let real = resolve(conn, &names, &self.server(key).hints).await?;
            let items = conn.get_multi(&[&real]).await?;
            let Some(value) = items
                .into_iter()
                .find(|item| item.key == real)
                .and_then(|item| decode_envelope(key, item.flags, &item.data))
            else {
                return Ok(None);
            };
            // Delete wins: of concurrent takers that all read the value,
            // only the one whose delete removed it returns it.
            Ok(conn.delete(&real).await?.then_some(value))
        })
        .await;
        self.finish(lease, result)
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let names = KeyNames::new(&self.inner.prefix, key);
        let server = self.server(key);
        let deleted = async {
            let (mut lease, deadline) = self.lease(server).await?;
            let result = timeout_at(deadline, async {
                let conn = lease.conn();
                let real = resolve(conn, &names, &self.server(key).hints).await?;
                conn.delete(&real).await
            })
            .await;
            self.finish(lease, result)
        }
        .await;
        if deleted.is_err() && key.starts_with(axum_cachex_core::CACHE_NAMESPACE) {
            // An invalidation of a cached response that did not arrive:
            // made up for when the server is next used (see `lease`).
            server.missed_invalidation.store(true, Ordering::Release);
        }
        deleted
    }

    fn compare_and_swap(&self) -> Option<&dyn CompareAndSwap> {
        Some(self)
    }

    fn path_invalidation(&self) -> Option<&dyn PathInvalidation> {
        Some(self)
    }
}

#[async_trait]
impl CompareAndSwap for MemcachedBackend {
    /// `gets` then a meta delete guarded by the item's CAS unique
    /// (`md <key> C<cas>`, Memcached 1.6+), so a value replaced between the
    /// read and the delete (a lock another instance took after ours
    /// expired) is left alone.
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        self.if_equals(key, expected, async |conn, real, cas| {
            conn.delete_cas(real, cas).await
        })
        .await
    }

    /// `gets` then `cas` with the item's CAS unique: written only if no
    /// other write came between.
    async fn set_if_equals(
        &self,
        key: &str,
        expected: &[u8],
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let head = envelope_head(key).map_err(BackendError::InvalidInput)?;
        self.if_equals(key, expected, async |conn, real, cas| {
            let parts: [&[u8]; 2] = [&head, &value];
            let mode = StoreMode::Cas(cas);
            conn.store(mode, real, ENVELOPE_FLAGS, exptime(ttl), &parts)
                .await
        })
        .await
    }
}

impl MemcachedBackend {
    /// Reads `key` with `gets` and, if it holds `expected`, runs `change`
    /// with its server-side name and CAS unique (which `change` passes on,
    /// so that a write in between makes it fail).
    async fn if_equals(
        &self,
        key: &str,
        expected: &[u8],
        change: impl AsyncFnOnce(&mut Conn, &str, u64) -> Result<bool, ClientError>,
    ) -> Result<bool, BackendError> {
        let names = KeyNames::new(&self.inner.prefix, key);
        let (mut lease, deadline) = self.lease(self.server(key)).await?;
        let result = timeout_at(deadline, async {
            let conn = lease.conn();
            let real = resolve(conn, &names, &self.server(key).hints).await?;
            let Some((item, cas)) = conn.gets(&real).await? else {
                return Ok(false);
            };
            match decode_envelope(key, item.flags, &item.data) {
                Some(current) if current.as_ref() == expected => change(conn, &real, cas).await,
                _ => Ok(false),
            }
        })
        .await;
        self.finish(lease, result)
    }
}

#[async_trait]
impl PathInvalidation for MemcachedBackend {
    /// Bumps the path counter on every server; returns 0 (Memcached cannot
    /// count).
    async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError> {
        let delta = if include_params { PATH_ALL_STEP } else { 1 };
        self.bump_everywhere(&path_counter_key(&self.inner.prefix, path), delta)
            .await
    }

    /// Increments the cache generation on every server; returns 0.
    async fn clear_cache(&self) -> Result<u64, BackendError> {
        self.bump_everywhere(&generation_key(&self.inner.prefix), 1)
            .await
    }

    fn counts_exactly(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let ok = || MemcachedBackend::builder().server("127.0.0.1:11211");
        assert!(ok().build().is_ok());
        assert!(ok().server("[::1]:11211").build().is_ok());
        assert!(ok().server("memcached.internal:11211").build().is_ok());
        let invalid = [
            MemcachedBackend::builder(),
            ok().server("127.0.0.1"),
            ok().server(":11211"),
            ok().server("127.0.0.1:port"),
            ok().server("cache.test:0"),
            ok().server("[::1"),
            ok().server("::1:11211"),
            ok().server("[nothost]:11211"),
            ok().server("127.0.0.1:11211"),
            ok().key_prefix("has space"),
            ok().timeout(Duration::ZERO),
            ok().pool_size(0),
        ];
        for builder in invalid {
            assert!(builder.clone().build().is_err(), "{builder:?}");
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = MemcachedConfig::default();
        assert_eq!(c.key_prefix, "axum_cachex:");
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.pool_size, 8);
        assert_eq!(c.down_backoff, Duration::from_secs(1));
        assert_eq!(c.breaker_threshold, 3);
        assert!(c.servers.is_empty());
    }
}
