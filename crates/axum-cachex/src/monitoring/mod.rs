//! Monitoring routes, Prometheus metrics and a small HTML dashboard.
//!
//! Nothing is exposed until you add the routes, and every route that returns
//! data or changes the cache goes through a [`Guard`]:
//!
//! | route | guarded | answers |
//! |---|---|---|
//! | `GET {prefix}/cached-hits` | yes | stored entries: key parts, ETag, freshness (JSON) |
//! | `GET {prefix}/cached-records` | yes | the same plus content type, size and a 100-byte preview (JSON) |
//! | `GET {prefix}/stats` | yes | the layers' counters, total and per route, backend, evictions, hit ratio (JSON) |
//! | `GET {prefix}/metrics` | yes | the same counters in the Prometheus text format 0.0.4 |
//! | `POST {prefix}/clear-path?path=/x&include_params=true` | yes | clears one path, returns the count (JSON) |
//! | `POST {prefix}/purge?pattern=/x/*`, `?key=K`, `?tag=T` or `?all=true` | yes | deletes by glob, by cache key, by tag (uncounted), or every stored response (JSON `removed`) |
//! | `GET {prefix}/` | **no** | the dashboard page: static HTML with no data in it |
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use axum_cachex::{CacheLayer, Registry, monitoring::{Guard, Monitoring}};
//!
//! // What this app's monitoring reports: the layers given this registry.
//! let registry = Registry::new();
//! let cache = CacheLayer::builder()
//!     .ttl(Duration::from_secs(60))
//!     .registry(&registry)
//!     .build()?;
//! let app: Router = Router::new().route("/products", get(|| async { "[]" }).layer(cache));
//!
//! // The token comes from your secret store, never from source code.
//! let token = std::env::var("CACHEX_MONITORING_TOKEN")
//!     .unwrap_or_else(|_| "dev-only-token-change-me-0123456789".to_owned());
//! let app = Monitoring::new(Guard::bearer(token))
//!     .registry(&registry)
//!     .add_to(app, "/_cache");
//! # Ok::<(), axum_cachex::CacheLayerConfigError>(())
//! ```
//!
//! The listings read the backend given with [`Monitoring::backend`], else
//! that of the registry's first layer, else [`BackendProxy::global`]'s; the counters come from the [`Registry`] given
//! with [`Monitoring::registry`]. Nothing is process-wide: without a
//! registry the routes report no counters, and two apps (or two tests) in
//! one process, each with its own registry, do not see each other's.
//!
//! # Exposing it safely
//!
//! The listing routes reveal the paths and query strings your users
//! requested and previews of cached bodies; `clear-path` empties the cache.
//!
//! - **Never mount the routes on a public listener without a guard.** Use
//!   [`Guard::bearer`] with a long random token (32 random bytes) from your
//!   secret store, or a [`Guard::predicate`] your gateway can vouch for.
//!   [`Guard::insecure_allow_all`] is for a loopback-only listener during
//!   development.
//! - Better still, serve them on an internal-only listener: build
//!   [`Monitoring::router`] into a separate `Router` bound to
//!   `127.0.0.1` or an admin network, and keep the guard as a second line.
//! - Bearer rejections are `401` with `WWW-Authenticate: Bearer` and a JSON
//!   error; predicate rejections are `403`. `clear-path` also refuses
//!   requests a browser marks as cross-site (`Sec-Fetch-Site`), so a
//!   predicate guard based on the client address cannot be abused from
//!   another site's page.
//! - Every answer carries `Cache-Control: no-store`, so neither browsers nor
//!   a [`CacheLayer`](crate::CacheLayer) wrapping your whole router store it.
//!
//! # The dashboard and its token
//!
//! A browser navigation cannot send an `Authorization` header, so the page
//! itself is served without the guard and contains **no data**: its inline
//! script fetches the guarded JSON routes and sends the token as
//! `Authorization: Bearer`. Open it as
//!
//! ```text
//! https://your-app.internal/_cache/#token=YOUR_TOKEN
//! ```
//!
//! The part after `#` (the fragment) is never sent to a server, so the token
//! does not reach access logs or proxies. The script keeps it in the tab's
//! `sessionStorage` and removes it from the address bar; without one it asks
//! for it in an input field. The page refreshes every 5 seconds, shows the
//! hit ratio, the counters, the per-route table and the stored entries, and
//! has a button to clear a path. It loads no external assets and its
//! `Content-Security-Policy` allows only its own inline code and fetches to
//! its own origin.
//!
//! # What the JSON means
//!
//! - One row per stored **variant**: a response with `Vary` is stored as
//!   several variants under one key, and each is a row with the same
//!   `cache_key`. Values in the same backend that are not cache entries
//!   (sessions, OAuth states, locks, app-cache values) are skipped.
//! - `is_expired` is true once a variant is past its freshness lifetime
//!   (`max-age`). Entries are kept through their stale windows
//!   (`stale-while-revalidate`, `stale-if-error`), so expired rows are
//!   normal: they are served stale or revalidated.
//! - `ttl_remaining` is the freshness left in seconds, rounded to 2 places,
//!   and `null` once the variant is expired.
//! - `query_params` is the raw query string parsed into an object; a name
//!   given more than once maps to an array of its values.
//! - `content_type` is the stored response's `Content-Type` value (`null`
//!   without one); `content_preview` its first 100 body bytes as text (bytes
//!   that are not UTF-8 become `�`).
//! - `total_hits`, `valid_hits`, `expired_hits` (and the `*_records`
//!   counterparts) count **stored entries**, as in the original package,
//!   not requests; request counters are in `counters` and at `/stats`.
//!   `unique_routes` counts distinct paths; `frequently_cached_routes`
//!   lists up to 10 `{method, path, entries}`, most entries first.
//! - Listings are bounded: `?limit=` (default 100, at most 1000, see
//!   [`Monitoring::default_limit`]) and `?offset=`; the totals always count
//!   every entry. Each answer says which `limit` and `offset` it used and
//!   carries `listing: "complete"`.
//! - On a backend that cannot list keys (Memcached), both listing routes
//!   answer `200` with empty rows, `null` totals, the layers' `counters`,
//!   and `listing: "unsupported: memcached cannot list keys; …"`.
//!
//! Listing reads every value of the backend's namespace (Redis: `SCAN` and
//! batched reads), so it costs a full pass per call; keep the dashboard
//! for occasional use on large caches.
//!
//! # Metrics
//!
//! `/stats` and `/metrics` report the counters of every live
//! [`CacheLayer`](crate::CacheLayer) of the registry (see
//! [`Registry::layer_reports`]), summed per layer name, the managers'
//! counters ([`Registry::manager_stats`]),
//! plus the evictions of the backend when it counts them (the memory
//! backend does). Prometheus names: `axum_cachex_<counter>_total{route}`
//! (`hits`, `misses`, `stores`, `not_modified`, `stale_served`,
//! `revalidations`, `stale_if_error_served`, `handler_failures`,
//! `coalesced_waits`, `not_storable`, `backend_errors`, `backend_timeouts`,
//! `decode_failures`), `axum_cachex_bypasses_total{route, reason}` and
//! `axum_cachex_backend_evictions_total{backend}`. Name your layers with
//! [`CacheLayerBuilder::name`](crate::CacheLayerBuilder::name) for stable
//! labels.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    routing::{get, post},
};
use axum_cachex_core::Backend;

use crate::{BackendProxy, Clock, Registry};

mod guard;
pub(crate) mod listing;
mod metrics;
pub(crate) mod routes;

pub use guard::Guard;

/// The dashboard page (inline CSS and JS, no data).
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Default number of rows per listing page.
pub const DEFAULT_LIMIT: usize = 100;
/// Default largest `limit` a listing request may ask for.
pub const DEFAULT_MAX_LIMIT: usize = 1000;
/// Default timeout of the monitoring routes' backend calls (a listing is a
/// full pass over the namespace, so it is longer than the layer's).
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Configuration of the monitoring routes; [`router`](Self::router) builds
/// them.
///
/// ```
/// use std::sync::Arc;
/// use axum::Router;
/// use axum_cachex::{backend::MemoryBackend, monitoring::{Guard, Monitoring}};
///
/// let backend = Arc::new(MemoryBackend::new());
/// let admin: Router = Monitoring::new(Guard::bearer("0123456789abcdef0123456789abcdef"))
///     .backend(backend)
///     .default_limit(50)
///     .router("/_cache");
/// # let _ = admin;
/// ```
#[derive(Clone)]
#[must_use]
pub struct Monitoring {
    guard: Guard,
    source: routes::Source,
    clock: Clock,
    default_limit: usize,
    max_limit: usize,
    backend_timeout: Duration,
    layer_filter: routes::LayerFilter,
    registry: Registry,
}

impl std::fmt::Debug for Monitoring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitoring")
            .field("guard", &self.guard)
            .field("default_limit", &self.default_limit)
            .field("max_limit", &self.max_limit)
            .field("backend_timeout", &self.backend_timeout)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Monitoring {
    /// Routes guarded by `guard`, inspecting [`BackendProxy::global`]'s
    /// backend (looked up per request) and reporting the counters of no
    /// layer or manager until given a [`registry`](Self::registry).
    pub fn new(guard: Guard) -> Self {
        Self {
            guard,
            source: routes::Source::Default,
            clock: Clock::system(),
            default_limit: DEFAULT_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            backend_timeout: DEFAULT_BACKEND_TIMEOUT,
            layer_filter: Arc::new(|_| true),
            registry: Registry::new(),
        }
    }

    /// Reports the counters of the layers and managers registered with
    /// `registry` (see [`Registry`]), and only those: two applications in
    /// one process, each with its own registry, never see each other's
    /// counters. Default: an empty registry (no counters; the listings of
    /// stored entries work without one).
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = registry.clone();
        self
    }

    /// Inspects this backend. Default, per request: the backend of the
    /// first layer in the [`registry`](Self::registry), else
    /// [`BackendProxy::global`]'s.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.source = routes::Source::Fixed(backend);
        self
    }

    /// Inspects the backend of this proxy, looked up per request.
    pub fn backend_proxy(mut self, proxy: BackendProxy) -> Self {
        self.source = routes::Source::Proxy(proxy);
        self
    }

    /// The clock that decides `is_expired` and `ttl_remaining`: give it the
    /// one your layers use if it is not the system clock (tests with a
    /// [`ManualClock`](crate::ManualClock)). Default: [`Clock::system`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Rows per listing page when the request has no `limit`. Default
    /// [`DEFAULT_LIMIT`] (100); capped at [`max_limit`](Self::max_limit).
    pub fn default_limit(mut self, limit: usize) -> Self {
        self.default_limit = limit;
        self
    }

    /// The largest `limit` a request may ask for; larger ones are lowered
    /// to it. Default [`DEFAULT_MAX_LIMIT`] (1000).
    pub fn max_limit(mut self, limit: usize) -> Self {
        self.max_limit = limit;
        self
    }

    /// Timeout of each backend call the routes make. Default
    /// [`DEFAULT_BACKEND_TIMEOUT`] (5 s).
    pub fn backend_timeout(mut self, timeout: Duration) -> Self {
        self.backend_timeout = timeout;
        self
    }

    /// Reports only the cache layers of the [`registry`](Self::registry)
    /// whose name (see
    /// [`CacheLayerBuilder::name`](crate::CacheLayerBuilder::name)) passes
    /// `filter`. Default: every registered layer.
    pub fn layer_filter(mut self, filter: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.layer_filter = Arc::new(filter);
        self
    }

    /// The routes under `prefix` (`"/_cache"`; a trailing `/` is ignored,
    /// `""` or `"/"` mounts them at the root), as a router to
    /// [`merge`](Router::merge) into your app or to serve on an internal
    /// listener.
    ///
    /// # Panics
    ///
    /// When `prefix` is not a valid axum path (e.g. it contains `{`),
    /// like [`Router::route`].
    pub fn router<S>(self, prefix: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let prefix = normalize_prefix(prefix);
        let max_limit = self.max_limit.max(1);
        let inner = Arc::new(routes::Inner {
            guard: self.guard,
            source: self.source,
            clock: self.clock,
            default_limit: self.default_limit.min(max_limit),
            max_limit,
            backend_timeout: self.backend_timeout,
            layer_filter: self.layer_filter,
            registry: self.registry,
        });
        let (hits, records, stats, prom, clear, purge) = (
            Arc::clone(&inner),
            Arc::clone(&inner),
            Arc::clone(&inner),
            Arc::clone(&inner),
            Arc::clone(&inner),
            inner,
        );
        let mut router = Router::new()
            .route(
                &format!("{prefix}/cached-hits"),
                get(move |req: Request| routes::cached_hits(hits, req)),
            )
            .route(
                &format!("{prefix}/cached-records"),
                get(move |req: Request| routes::cached_records(records, req)),
            )
            .route(
                &format!("{prefix}/stats"),
                get(move |req: Request| routes::stats(stats, req)),
            )
            .route(
                &format!("{prefix}/metrics"),
                get(move |req: Request| routes::prometheus(prom, req)),
            )
            .route(
                &format!("{prefix}/clear-path"),
                post(move |req: Request| routes::clear_path(clear, req)),
            )
            .route(
                &format!("{prefix}/purge"),
                post(move |req: Request| routes::purge(purge, req)),
            )
            .route(&format!("{prefix}/"), get(routes::dashboard));
        if !prefix.is_empty() {
            // The page finds the JSON routes relative to its own path, with
            // or without the trailing slash.
            router = router.route(&prefix, get(routes::dashboard));
        }
        router
    }

    /// Merges the routes under `prefix` into `router`.
    ///
    /// # Panics
    ///
    /// As [`router`](Self::router), and when a route under `prefix` already
    /// exists in `router` (axum's overlapping-route panic).
    pub fn add_to<S>(self, router: Router<S>, prefix: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.merge(self.router(prefix))
    }
}

/// Adds the monitoring routes under `prefix` to `router`, guarded by
/// `guard`, inspecting [`BackendProxy::global`]'s backend. The port of the
/// original's `add_routes(app, prefix)`, with the guard made mandatory: the
/// listings of stored entries, as in the original. It reports no counters
/// (there is no process-wide registry); use
/// `Monitoring::new(guard).registry(&registry)` for those.
///
/// See the [module documentation](self) for the routes and how to expose
/// them safely; use [`Monitoring`] for the other options.
///
/// ```
/// use axum::Router;
/// use axum_cachex::monitoring::{Guard, add_routes};
///
/// let app = add_routes(Router::new(), "/_cache", Guard::bearer("0123456789abcdef0123456789abcdef"));
/// # let _: Router = app;
/// ```
///
/// # Panics
///
/// As [`Monitoring::add_to`].
pub fn add_routes<S>(router: Router<S>, prefix: &str, guard: Guard) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Monitoring::new(guard).add_to(router, prefix)
}

/// `"/_cache/"` → `"/_cache"`, `"_cache"` → `"/_cache"`, `"/"` → `""`.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_prefix;

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix("/_cache/"), "/_cache");
        assert_eq!(normalize_prefix("_cache"), "/_cache");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/admin/cache"), "/admin/cache");
    }
}
