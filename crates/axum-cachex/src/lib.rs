//! HTTP response caching and session management for
//! [axum](https://docs.rs/axum) and tower — a Rust port of the Python
//! package `fastapi-cachex`, correct to the HTTP caching RFCs.
//!
//! Put a [`CacheLayer`] on a route and it
//!
//! - emits `Cache-Control` (all thirteen directives of the original's table),
//! - computes a weak `ETag` from the body and answers `If-None-Match` /
//!   `If-Modified-Since` with `304 Not Modified`,
//! - stores the whole response (status, end-to-end headers, exact body) and
//!   serves it while fresh **without running the handler**,
//! - serves stale entries while one background refresh runs
//!   (`stale-while-revalidate`) or when the handler fails
//!   (`stale-if-error`),
//! - runs the handler once for concurrent misses of one key (request
//!   coalescing), optionally across app instances sharing Redis,
//! - keeps one variant per `Vary` value,
//! - reports what it did in a `Cache-Status` header (RFC 9211),
//! - and keeps answering from the handler when the backend is down (fail
//!   open).
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use axum_cachex::{CacheLayer, Stale};
//!
//! let cache = CacheLayer::builder()
//!     .ttl(Duration::from_secs(60))                  // max-age=60
//!     .stale_ttl(Duration::from_secs(30))
//!     .stale(Stale::Revalidate)                      // stale-while-revalidate=30
//!     .public()
//!     .build()
//!     .expect("valid cache configuration");
//!
//! let app: Router = Router::new()
//!     .route("/products", get(|| async { "expensive listing" }).layer(cache));
//! ```
//!
//! With no backend configured the layer uses an in-memory store bounded to
//! 64 MiB ([`backend::MemoryBackend`]). Redis and Memcached backends share
//! one cache between app instances (features `redis`, `memcached`).
//!
//! # Cargo features
//!
//! | feature | adds |
//! |---|---|
//! | *(none)* | the cache layer, the memory backend, the OAuth [`StateManager`], the [`CacheManager`], the [`Registry`] of counters |
//! | `monitoring` *(default)* | `monitoring`: guarded JSON routes, Prometheus `/metrics` (`prometheus-client`), the dashboard |
//! | `redis` | `backend::RedisBackend` (redis-rs, tokio) |
//! | `redis-tls` | `rediss://` URLs, custom CAs and client certificates (rustls) |
//! | `memcached` | `backend::MemcachedBackend` |
//! | `session` | [`session`](crate#sessions): server-side sessions, tokens, JWT, cookies |
//!
//! `monitoring` is on by default because it ports a part of the original's
//! default API (`add_routes(app, prefix)`), and the dashboard example runs
//! without flags. It is the only default: an application that does not
//! mount the routes can drop it (and `prometheus-client`) with
//! `default-features = false`.
//!
//! # Sessions
//!
//! With the `session` feature, the `session` module stores sessions in any
//! backend: signed tokens or JWT, read from a header, `Authorization:
//! Bearer` or a cookie, with sliding and absolute expiry, flash messages,
//! IP/User-Agent binding and "log out everywhere". See its module docs for
//! the security model.
//!
//! # Request flow
//!
//! ```text
//! request
//!  ├─ not GET/HEAD ───────────────► handler ─► (2xx/3xx: delete the URI's entries, RFC 9111 §4.4)  Cache-Status: fwd=method
//!  ├─ no_store route ─────────────► handler, Cache-Control: no-store                               fwd=bypass; detail=no-store
//!  ├─ credentials, not public ────► handler, ETag + 304, nothing stored (RFC 9111 §3.5)             fwd=bypass; detail=credentials
//!  ├─ invalid Host ───────────────► handler, nothing stored                                         fwd=bypass; detail=invalid-host
//!  ├─ no_cache / private / no ttl ► handler every time, ETag + 304                                  fwd=miss
//!  └─ look the key up (backend call under a timeout; failure = miss, fail open)
//!      ├─ fresh ─────────────────── 304 if If-None-Match/If-Modified-Since match (2xx only), else 200  hit; ttl=N
//!      ├─ stale, in SWR window ──── same, at once + one background refresh per key                  hit; detail=stale-while-revalidate
//!      └─ miss, or stale
//!          ├─ another request for the variant is running its handler ─► wait, share its response  fwd=miss; collapsed
//!          └─ leader [cross-instance lock, opt-in] ─► handler (If-None-Match / If-Modified-Since
//!             │                                        when the stale entry has a validator)
//!                ├─ 304 ─► freshen the stored entry, serve it                                     fwd=stale; fwd-status=304
//!                ├─ 5xx or error inside the stale-if-error window ─► the stale entry              fwd=stale; fwd-status=500
//!                ├─ not storable (status, Set-Cookie, no-store, private, Vary: *, credentials)    fwd=miss; detail=…
//!                └─ store: known length within the limit → buffer, ETag, store, 304 or 200      fwd=miss; stored
//!                          unknown length → stream to the client, store the copy at its end
//! ```
//!
//! `HEAD` requests are answered from the `GET` entry (headers, no body); a
//! `HEAD` miss is forwarded as `GET`. The README's "Shared-cache rules"
//! table says what is stored, what is shared and what bypasses.
//!
//! # Options
//!
//! | builder method | emits / does |
//! |---|---|
//! | [`ttl`](CacheLayerBuilder::ttl) | `max-age=N`; stored responses are served while fresh |
//! | [`s_maxage`](CacheLayerBuilder::s_maxage) | `s-maxage=N` |
//! | [`stale_ttl`](CacheLayerBuilder::stale_ttl) + [`stale`](CacheLayerBuilder::stale) | `stale-while-revalidate=N` / `stale-if-error=N`, honoured server-side |
//! | [`no_cache`](CacheLayerBuilder::no_cache) | `no-cache`; handler runs every time, 304 on a matching ETag |
//! | [`no_store`](CacheLayerBuilder::no_store) | only `no-store`; nothing stored |
//! | [`public`](CacheLayerBuilder::public) / [`private`](CacheLayerBuilder::private) | `public` (shares responses to requests with credentials) / `private` (never stored server-side) |
//! | [`private_per_user`](CacheLayerBuilder::private_per_user) | `private`, stored once per verified user |
//! | [`credential_header`](CacheLayerBuilder::credential_header) / [`credential_cookie`](CacheLayerBuilder::credential_cookie) | more credentials that bypass the cache |
//! | [`freshness`](CacheLayerBuilder::freshness) | whether the layer's ttl or the response's own headers decide freshness ([`Freshness`]) |
//! | [`immutable`](CacheLayerBuilder::immutable) | `immutable` |
//! | [`must_revalidate`](CacheLayerBuilder::must_revalidate) / [`proxy_revalidate`](CacheLayerBuilder::proxy_revalidate) | `must-revalidate` / `proxy-revalidate` |
//! | [`no_transform`](CacheLayerBuilder::no_transform) / [`must_understand`](CacheLayerBuilder::must_understand) | `no-transform` / `must-understand` |
//! | [`key_builder`](CacheLayerBuilder::key_builder) | custom cache key |
//! | [`cache_status`](CacheLayerBuilder::cache_status) (adds one), [`cacheable_statuses`](CacheLayerBuilder::cacheable_statuses) (replaces them), [`max_body_size`](CacheLayerBuilder::max_body_size) | what may be stored |
//! | [`backend`](CacheLayerBuilder::backend), [`backend_proxy`](CacheLayerBuilder::backend_proxy), [`backend_timeout`](CacheLayerBuilder::backend_timeout) | where entries live |
//! | [`coalesce`](CacheLayerBuilder::coalesce), [`coalesce_timeout`](CacheLayerBuilder::coalesce_timeout), [`cross_instance_lock`](CacheLayerBuilder::cross_instance_lock), [`max_refreshes_in_flight`](CacheLayerBuilder::max_refreshes_in_flight) | stampede protection |
//! | [`name`](CacheLayerBuilder::name), [`registry`](CacheLayerBuilder::registry), [`clock`](CacheLayerBuilder::clock) | monitoring label, where its counters are reported, time source |
//!
//! Contradictory combinations (`public` + `private`, a stale window without
//! a `ttl`, `no_store` with a `ttl`, …) make
//! [`build`](CacheLayerBuilder::build) return a [`CacheLayerConfigError`]
//! that says what to change — at startup, never at request time.
//!
//! Every builder of the crate follows one convention: setters named by the
//! bare noun they set (`ttl`, `key_prefix`, `registry`), and a `build()`
//! that validates and returns a `Result` whose error is named for what it
//! builds ([`CacheLayerConfigError`],
//! [`StateManagerConfigError`](state::StateManagerConfigError),
//! [`CacheManagerConfigError`](app_cache::CacheManagerConfigError)). No
//! builder panics.
//!
//! # What is stored, and what is not
//!
//! A stored entry keeps the status, the end-to-end headers (never
//! `Set-Cookie`, never hop-by-hop headers), the exact body bytes, the ETag,
//! when it was stored and its freshness and stale lifetimes, in a
//! versioned binary format ([`CacheRecord`]). An entry that does not decode is
//! a miss, is deleted and is counted — never a panic or a 500.
//!
//! Not stored: responses whose status is not in
//! the layer's cacheable statuses ([`DEFAULT_CACHEABLE_STATUSES`]: 200,
//! 203, 204, 300, 301, 308; add one with
//! [`cache_status`](CacheLayerBuilder::cache_status)), responses with `Set-Cookie`, a credential
//! header or a value marked sensitive, responses the handler marks
//! `Cache-Control: no-store` or `private`, `Vary: *`, `text/event-stream`,
//! responses to requests with credentials (unless the route is
//! [`public`](CacheLayerBuilder::public)), and bodies larger than
//! [`max_body_size`](CacheLayerBuilder::max_body_size) (1 MiB), which stream
//! through unbuffered. The handler's own headers on such responses are left
//! as it made them. Entries read back are checked again: a planted
//! `Set-Cookie`, credential or framing header is dropped, and a status a
//! cache may not serve is a miss.
//!
//! # Invalidation
//!
//! The HTTP cache offers `clear`, `clear_path(path, include_params)`,
//! `clear_pattern(glob)` and `delete(key)` on [`CacheLayer`] and on the
//! [`CacheBackend`] extractor, each returning how many entries went; they
//! act only on the cache's own `http:` namespace, so sessions and states
//! sharing the backend stay. [`CacheLayer::invalidate`] and
//! [`CacheBackend::invalidate`] delete the entry of one request. Handlers
//! get the backend with the [`CacheBackend`] extractor: on routes under a
//! layer, that layer's; elsewhere one installed with
//! `Extension(CacheBackend::new(..))`, or the global proxy's when it is in
//! use — and otherwise a [`MissingCacheBackend`] rejection that says which
//! of these to set up. A successful
//! `POST`/`PUT`/`PATCH`/`DELETE` through a caching layer also deletes the
//! `GET` entry of its URI (RFC 9111 §4.4).
//!
//! # Backends
//!
//! | backend | feature | shared | notes |
//! |---|---|---|---|
//! | [`MemoryBackend`](backend::MemoryBackend) | always | no | moka, bounded by bytes, LRU, per-entry TTL |
//! | `RedisBackend` | `redis` | yes | redis-rs, reconnects, `SCAN` clears, per-path index |
//! | `MemcachedBackend` | `memcached` | yes | consistent hashing, generation-counter clears, no listing |
//!
//! The layer resolves its backend per request: [`BackendProxy::global`]
//! (zero configuration: memory) unless the builder was given one, and a
//! backend set on a proxy after the layer was built is used from the next
//! request on. A third party implements [`backend::Backend`] from the
//! `axum-cachex-core` crate.
//!
//! # Process-wide state
//!
//! Counters are never global: each layer keeps its own
//! ([`CacheLayer::stats`]), and a layer or manager reports to a monitoring
//! view only through the [`Registry`] handle it was given, so two
//! applications or two tests in one process do not mix. The one
//! process-wide default is [`BackendProxy::global`], the original's
//! `BackendProxy`: layers built without a backend use it, and so does the
//! [`CacheBackend`] extractor outside a layer once the global proxy is in
//! use. Give layers a backend (or a proxy of their own) to stay clear of
//! it. (Internally, the record of invalidations racing handler runs is
//! process-wide on purpose, keyed by backend and key: layers of one process
//! may share a backend, so a write through any of them must keep every
//! layer on that backend from storing what it read before, while a clear of
//! another backend changes nothing. It reports nothing.)
//!
//! # Failure behaviour
//!
//! Every backend call made by the layer runs under
//! [`backend_timeout`](CacheLayerBuilder::backend_timeout) (250 ms). A
//! failure or timeout is a cache miss: the handler answers, the failure is
//! counted ([`StatsSnapshot`]) and logged with `tracing` at most once every
//! 10 s, and caching resumes by itself when the backend is back.
//!
//! # Implementation details
//!
//! - A hit reads the store (the memory backend answers synchronously through
//!   `Backend::get_now`, network backends are awaited under the timeout),
//!   decodes the stored set (bodies and header values share the fetched
//!   buffer, no copy) and answers; the response future is boxed once per
//!   request (see [`cache::ResponseFuture`]).
//! - Coalescing uses a per-layer table of keys in flight (a mutex held only
//!   to insert or remove a key); background refreshes lead flights too, so
//!   there is at most one per key, and at most
//!   [`max_refreshes_in_flight`](CacheLayerBuilder::max_refreshes_in_flight)
//!   in all. A refresh runs in its own task on a copy of the request head,
//!   not on the client's connection.
//! - Freshness and `Age` come from the layer's [`Clock`]; tests use a
//!   [`ManualClock`] instead of sleeping.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

// Wrappers of the crate-private parsers for the fuzz targets in `fuzz/`
// (feature `fuzzing`, enabled by nothing else) and the property tests: not
// API, hidden from the documentation. See the module's own comment.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod __fuzz;
pub mod backend;
pub mod cache;
mod clock;
mod counters;
mod flight;
mod lock;
mod manager_stats;
#[cfg(feature = "monitoring")]
#[cfg_attr(docsrs, doc(cfg(feature = "monitoring")))]
pub mod monitoring;
mod proxy;
mod random;
mod registry;

pub use app_cache::CacheManager;
pub use axum_cachex_core::{CacheEntry, CacheKey, CacheRecord, DecodeError, VariantIndex};
pub use cache::{
    CacheBackend, CacheLayer, CacheLayerBuilder, CacheLayerConfigError, CredentialNames,
    Credentialed, DEFAULT_CACHEABLE_STATUSES, DefaultKeyBuilder, Freshness, KeyBuilder,
    MAX_TAG_LEN, MissingCacheBackend, ShareGuard, Stale, StatsSnapshot, UpstreamUnreachable,
    UserPartition,
};
pub use clock::{Clock, ManualClock};
pub use manager_stats::ManagerStats;
pub use proxy::BackendProxy;
pub use registry::{LayerReport, Registry};
pub use state::StateManager;
pub mod app_cache;
#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub mod session;
pub mod state;
