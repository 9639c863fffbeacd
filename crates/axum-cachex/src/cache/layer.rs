//! The `Layer`: validated configuration shared by every service it wraps.

use std::sync::Arc;

use axum_cachex_core::{Backend, BackendError};
use http::{HeaderName, HeaderValue, Method, Request};
use tower_layer::Layer;

use super::{
    config::{CacheLayerBuilder, CacheLayerConfigError},
    service::CacheService,
    shared::Shared,
    stats::StatsSnapshot,
};

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

impl CacheLayer {
    /// Starts configuring a layer.
    pub fn builder() -> CacheLayerBuilder {
        CacheLayerBuilder::default()
    }

    /// The `Cache-Control` value this layer emits.
    pub fn cache_control(&self) -> &HeaderValue {
        &self.shared.cache_control
    }

    /// The response header handlers name their tags in (see
    /// [`CacheLayerBuilder::tag_header`]); the layer removes it from every
    /// response it sends. For routes that go around the layer but should
    /// not leak it either.
    pub fn tag_header(&self) -> &HeaderName {
        &self.shared.options.tag_header
    }

    /// The backend this layer would use for a request arriving now.
    pub fn backend(&self) -> Arc<dyn Backend> {
        self.shared.options.backend.resolve()
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
            Some(key) => self.delete(&key).await,
            None => Ok(false),
        }
    }

    /// Applies RFC 9111 §4.4 for an unsafe request (`POST`, `PUT`,
    /// `DELETE`, …) answered elsewhere, e.g. on a route that bypasses the
    /// cache: when `response` is a success or a redirect, deletes what this
    /// layer stores for the request's URI and for the same-host `Location`
    /// and `Content-Location` of the response. Safe methods and error
    /// statuses change nothing. Failures are counted and logged, never
    /// returned (fail open).
    pub async fn invalidate_after<B>(
        &self,
        request: &Request<B>,
        response: &http::response::Parts,
    ) {
        let status = response.status;
        if Method::is_safe(request.method()) || !(status.is_success() || status.is_redirection()) {
            return;
        }
        let target = super::invalidate::RequestTarget::of(&super::key::head_of(request));
        let backend = self.backend();
        super::invalidate::apply(&self.shared, &backend, &target, &response.headers).await;
    }

    /// Deletes one stored response by its key (see
    /// [`cache_key`](Self::cache_key)), every `Vary` variant included; a
    /// miss of it in flight stores nothing it read before. Returns whether
    /// it existed.
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        super::purge::delete_key(&*self.backend(), key).await
    }

    /// Deletes the stored responses of `path` (as clients send it): with
    /// `include_params` every query, host, user and `Vary` variant, without
    /// it only the query-less ones. Misses in flight store nothing they read
    /// before. Uses the backend's
    /// [`PathInvalidation`](crate::backend::PathInvalidation) fast path when
    /// it has one, else lists the cache's namespace
    /// ([`Listing`](crate::backend::Listing)).
    ///
    /// Returns how many went; 0 from a backend that cannot count
    /// (Memcached).
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable, or
    /// [`BackendError::Unsupported`] from a backend that can neither list
    /// nor invalidate by path.
    pub async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError> {
        super::purge::clear_path(&*self.backend(), path, include_params).await
    }

    /// Deletes the stored responses whose path matches a glob pattern
    /// (`*`, `?`, `[a-z]`; see
    /// [`path_matches_glob`](axum_cachex_core::path_matches_glob)).
    ///
    /// # Errors
    ///
    /// The backend's error, or [`BackendError::Unsupported`] from a backend
    /// that cannot list keys (Memcached).
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64, BackendError> {
        super::purge::clear_pattern(&*self.backend(), pattern).await
    }

    /// Deletes every stored response of the backend, and nothing else:
    /// sessions, states and application values sharing it stay.
    ///
    /// # Errors
    ///
    /// As [`clear_path`](Self::clear_path).
    pub async fn clear(&self) -> Result<u64, BackendError> {
        super::purge::clear_all(&*self.backend()).await
    }

    /// Makes every stored response tagged `tag` unreachable (see
    /// [`CacheLayerBuilder::tag_header`]), on every instance sharing the
    /// backend; misses in flight in the process store nothing they read
    /// before. One write, whatever the number of responses; they age out by
    /// their TTL, so none is counted.
    ///
    /// # Errors
    ///
    /// [`BackendError::InvalidInput`] for a tag that cannot be one (empty,
    /// longer than [`MAX_TAG_LEN`](crate::MAX_TAG_LEN), not visible ASCII,
    /// or with `,` or `=`); the backend's error, e.g. when it is
    /// unreachable.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), BackendError> {
        let now = self.shared.options.clock.now();
        super::tags::invalidate(&*self.backend(), tag, now).await
    }
}

impl CacheLayerBuilder {
    /// Checks the combination and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`CacheLayerConfigError`] naming the options to change, e.g.
    /// `public` with `private`, a stale window without a `ttl`, or
    /// `no_store` with a `ttl`.
    pub fn build(self) -> Result<CacheLayer, CacheLayerConfigError> {
        self.validate()?;
        let registry = self.registry.clone();
        if let super::config::BackendSource::Proxy(proxy) = &self.backend {
            proxy.mark_in_use();
        }
        let shared = Arc::new(Shared::new(self));
        if let Some(registry) = registry {
            registry.register_layer(&shared);
        }
        Ok(CacheLayer { shared })
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService::new(inner, Arc::clone(&self.shared))
    }
}
