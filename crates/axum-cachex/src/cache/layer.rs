//! The `Layer`: validated configuration shared by every service it wraps.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum_cachex_core::{Backend, BackendError};
use http::{HeaderValue, Request, StatusCode};
use tower_layer::Layer;

use super::{
    KeyBuilder,
    coalesce::Coalescer,
    config::{CacheLayerBuilder, Freshness, UserPartition},
    credentials::CredentialCheck,
    service::CacheService,
    stats::{CacheStats, FailureLog, StatsSnapshot},
};
use crate::{BackendProxy, clock::Clock};

/// Where a layer gets its backend from, per request.
#[derive(Clone)]
pub(crate) enum BackendSource {
    Fixed(Arc<dyn Backend>),
    Proxy(BackendProxy),
}

impl BackendSource {
    pub(crate) fn resolve(&self) -> Arc<dyn Backend> {
        match self {
            Self::Fixed(b) => Arc::clone(b),
            Self::Proxy(p) => p.backend(),
        }
    }
}

/// Server-side HTTP response caching for a route or a router.
///
/// Emits `Cache-Control`, computes `ETag`s, answers `If-None-Match` with
/// 304, and serves fresh stored responses without running the handler. See
/// the [crate documentation](crate) for the request flow.
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use axum_cachex::CacheLayer;
///
/// let cache = CacheLayer::builder()
///     .ttl(Duration::from_secs(60))
///     .public()
///     .build()
///     .expect("valid cache configuration");
/// let app: Router = Router::new().route("/", get(|| async { "hello" }).layer(cache));
/// ```
///
/// Clones share the configuration, the counters and the in-flight request
/// table.
#[derive(Clone)]
pub struct CacheLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache_control", &self.shared.cache_control)
            .field("stats", &self.shared.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Names the layer after the first route it serves, unless named.
    pub(crate) fn name_route(&self, parts: &http::request::Parts) {
        if self.route.get().is_none() {
            if let Some(matched) = parts.extensions.get::<axum::extract::MatchedPath>() {
                let _ = self.route.set(matched.as_str().to_owned());
            }
        }
    }

    pub(crate) fn route_label(&self) -> String {
        self.route
            .get()
            .cloned()
            .unwrap_or_else(|| "unnamed".to_owned())
    }

    /// Whether responses are stored and served from the store: a ttl is
    /// set (or the response decides freshness), and the route is neither
    /// no-cache, no-store nor private (unless cached per user).
    pub(crate) fn stores(&self) -> bool {
        (self.ttl.is_some() || self.freshness == Freshness::FromResponse)
            && !self.no_cache
            && !self.no_store
            && (!self.private || self.per_user.is_some())
    }
}

/// Everything a request needs, built once.
pub(crate) struct Shared {
    pub(crate) ttl: Option<Duration>,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    /// Requests with credentials are cached like any other: only with an
    /// explicit `public` (see `CacheLayerBuilder::public`).
    pub(crate) public: bool,
    pub(crate) private: bool,
    pub(crate) per_user: Option<Arc<dyn UserPartition>>,
    pub(crate) freshness: Freshness,
    pub(crate) credentials: CredentialCheck,
    pub(crate) cache_control: HeaderValue,
    /// The same with `private` and without what lets shared caches keep
    /// it: for responses to requests with credentials.
    pub(crate) private_cache_control: HeaderValue,
    pub(crate) key_builder: Arc<dyn KeyBuilder>,
    pub(crate) custom_keys: bool,
    pub(crate) backend: BackendSource,
    pub(crate) cacheable_statuses: HashSet<StatusCode>,
    pub(crate) max_body_size: usize,
    pub(crate) backend_timeout: Duration,
    pub(crate) coalesce: bool,
    pub(crate) coalesce_timeout: Duration,
    /// Lifetime of the cross-instance lock; `None` when it is off.
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) refresh_slots: Arc<tokio::sync::Semaphore>,
    pub(crate) clock: Clock,
    pub(crate) stats: CacheStats,
    pub(crate) failures: FailureLog,
    pub(crate) inflight: Coalescer,
    /// Name for reports: from the builder, or the first matched route.
    pub(crate) route: std::sync::OnceLock<String>,
}

impl CacheLayer {
    /// Starts configuring a layer.
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    pub(crate) fn from_builder(b: CacheLayerBuilder, cache_control: HeaderValue) -> Self {
        let private_cache_control = b.render_private_cache_control();
        let shared = Shared {
            // Whole seconds, as `max-age` says: a fractional ttl must never
            // give a hit that is stale by its own headers.
            ttl: b.ttl.map(|t| Duration::from_secs(t.as_secs())),
            stale_while_revalidate: b.stale_while_revalidate(),
            stale_if_error: b.stale_if_error(),
            no_cache: b.no_cache,
            no_store: b.no_store,
            public: b.public,
            private: b.private,
            per_user: b.per_user,
            freshness: b.freshness,
            credentials: CredentialCheck::new(b.credentials),
            cache_control,
            private_cache_control,
            key_builder: b.key_builder,
            custom_keys: b.custom_keys,
            backend: b.backend,
            cacheable_statuses: b.cacheable_statuses,
            max_body_size: b.max_body_size,
            backend_timeout: b.backend_timeout,
            coalesce: b.coalesce,
            coalesce_timeout: b.coalesce_timeout,
            lock_ttl: b.lock_ttl,
            refresh_slots: Arc::new(tokio::sync::Semaphore::new(b.max_refreshes)),
            clock: b.clock,
            stats: CacheStats::default(),
            failures: FailureLog::default(),
            inflight: Coalescer::default(),
            route: std::sync::OnceLock::new(),
        };
        if let Some(name) = b.name {
            let _ = shared.route.set(name);
        }
        let shared = Arc::new(shared);
        super::registry::register(&shared);
        Self { shared }
    }

    /// The `Cache-Control` value this layer emits.
    pub fn cache_control(&self) -> &HeaderValue {
        &self.shared.cache_control
    }

    /// The backend this layer would use for a request arriving now.
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.shared.backend.resolve()
    }

    /// A copy of this layer's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// The cache key this layer uses for `request` (`HEAD` maps to the `GET`
    /// entry); `None` on a [per-user](CacheLayerBuilder::private_per_user)
    /// route when the request has no user.
    pub fn cache_key<B>(&self, request: &Request<B>) -> Option<String> {
        super::key::key_for_request(&self.shared, request)
    }

    /// Deletes the entry this layer would serve for `request`, every
    /// `Vary` variant included.
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn invalidate<B>(&self, request: &Request<B>) -> Result<bool, BackendError> {
        match self.cache_key(request) {
            Some(key) => self.backend().delete(&key).await,
            None => Ok(false),
        }
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, Arc::clone(&self.shared))
    }
}
