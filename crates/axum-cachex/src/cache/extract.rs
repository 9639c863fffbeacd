//! The `CacheBackend` extractor: the backend in handlers, for invalidation.

use std::{convert::Infallible, ops::Deref, sync::Arc};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use axum_cachex_core::{Backend, BackendError};
use http::{Request, StatusCode, request::Parts};

use super::{
    KeyBuilder,
    key::{DefaultKeyBuilder, key_for_request},
    shared::Shared,
};
use crate::BackendProxy;

/// What the layer leaves in the request extensions for the extractor.
#[derive(Clone)]
pub(crate) struct CacheHandle {
    backend: Arc<dyn Backend>,
    /// The layer's configuration; `None` outside a layer.
    shared: Option<Arc<Shared>>,
}

impl CacheHandle {
    pub(crate) fn new(shared: &Arc<Shared>, backend: &Arc<dyn Backend>) -> Self {
        Self {
            backend: Arc::clone(backend),
            shared: Some(Arc::clone(shared)),
        }
    }
}

/// Extracts the cache backend in a handler (the original's `CacheBackend`
/// dependency), e.g. to invalidate entries after a write.
///
/// Where the backend comes from, first match wins:
///
/// 1. inside a route wrapped by a [`CacheLayer`](crate::CacheLayer): that
///    layer's backend and key builder;
/// 2. a `CacheBackend` installed with
///    `.layer(axum::Extension(CacheBackend::new(backend)))`, for routes
///    that manage a cache without being cached themselves;
/// 3. the process-wide [`BackendProxy::global`], **only** once it is in use
///    (its backend was set with
///    [`set_backend`](BackendProxy::set_backend), or a layer was built
///    without a backend of its own and so uses it). This is the original's
///    zero-configuration path: layers and the extractor share the global
///    backend with no wiring.
///
/// Otherwise the handler is not called and the request is answered with
/// [`MissingCacheBackend`] (500, with a message saying how to fix it),
/// instead of silently handing out an unused in-memory store while the
/// layers write elsewhere. `Option<CacheBackend>` is `None` there.
///
/// It dereferences to [`Backend`], so every backend operation is
/// available; its own `delete`, `clear_path`, `clear_pattern`, `clear` and
/// `invalidate` also keep misses already running in the process from
/// storing what they read before the change (RFC 9111 §4.4):
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::{get, post}};
/// use axum_cachex::{CacheBackend, CacheLayer};
///
/// async fn update_user(cache: CacheBackend) -> String {
///     // ... write the user, then drop every cached variant of /users:
///     let removed = cache.clear_path("/users", true).await.unwrap_or(0);
///     format!("updated; {removed} cached responses removed")
/// }
///
/// let cache = CacheLayer::builder().ttl(Duration::from_secs(60)).build()?;
/// // The write route goes under the same layer, so the extractor gets the
/// // backend the cached route uses.
/// let app: Router = Router::new()
///     .route("/users", get(|| async { "[]" }).post(update_user))
///     .layer(cache);
/// # Ok::<(), axum_cachex::CacheLayerConfigError>(())
/// ```
#[derive(Clone)]
pub struct CacheBackend {
    handle: CacheHandle,
}

impl std::fmt::Debug for CacheBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBackend")
            .field("backend", &self.handle.backend.name())
            .finish()
    }
}

impl CacheBackend {
    /// An extractor value for `backend`, with the default key builder. Put
    /// it in the request extensions with
    /// `.layer(axum::Extension(CacheBackend::new(backend)))` so that
    /// handlers outside any [`CacheLayer`](crate::CacheLayer) extract it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use axum::{Extension, Router, routing::post};
    /// use axum_cachex::{CacheBackend, backend::{Backend, MemoryBackend}};
    ///
    /// let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    /// let admin: Router = Router::new()
    ///     .route("/purge", post(|cache: CacheBackend| async move {
    ///         cache.clear().await.map(|n| n.to_string()).unwrap_or_default()
    ///     }))
    ///     .layer(Extension(CacheBackend::new(backend)));
    /// ```
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            handle: CacheHandle {
                backend,
                shared: None,
            },
        }
    }

    /// The backend as a shareable trait object.
    pub fn backend(&self) -> Arc<dyn Backend> {
        Arc::clone(&self.handle.backend)
    }

    /// The cache key of `request` under the layer's key builder (`HEAD`
    /// maps to the `GET` entry).
    pub fn cache_key<B>(&self, request: &Request<B>) -> String {
        self.handle
            .shared
            .as_ref()
            .and_then(|shared| key_for_request(shared, request))
            .unwrap_or_else(|| {
                let (mut parts, ()) = Request::new(()).into_parts();
                parts.uri = request.uri().clone();
                parts.headers = request.headers().clone();
                format!(
                    "{}{}",
                    axum_cachex_core::CACHE_NAMESPACE,
                    DefaultKeyBuilder.build_key(&parts)
                )
            })
    }

    /// Deletes the entry the layer would serve for `request` (build one with
    /// `Request::get(uri).header(HOST, host)`). Returns whether it existed.
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn invalidate<B>(&self, request: &Request<B>) -> Result<bool, BackendError> {
        self.delete(&self.cache_key(request)).await
    }

    /// Deletes one stored response by key ([`Backend::delete`]); a miss of
    /// it already running in the process does not store what it read
    /// before.
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        super::purge::delete_key(&*self.handle.backend, key).await
    }

    /// Deletes the stored responses of `path`: with `include_params` every
    /// query (and host, user and `Vary` variant), without it only the
    /// query-less ones. Misses running in the process store nothing they
    /// read before. Uses the backend's
    /// [`PathInvalidation`](crate::backend::PathInvalidation) fast path when
    /// it has one, else lists the cache's namespace
    /// ([`Listing`](crate::backend::Listing)).
    ///
    /// Returns how many went; 0 from a backend that cannot count (Memcached).
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError> {
        super::purge::clear_path(&*self.handle.backend, path, include_params).await
    }

    /// Deletes the stored responses whose path matches a glob pattern
    /// (`*`, `?`, `[a-z]`; see
    /// [`path_matches_glob`](axum_cachex_core::path_matches_glob)), and
    /// misses running in the process store nothing they read before. Needs a
    /// backend that can list keys ([`Listing`](crate::backend::Listing)):
    /// [`BackendError::Unsupported`] on Memcached.
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64, BackendError> {
        super::purge::clear_pattern(&*self.handle.backend, pattern).await
    }

    /// Deletes every stored response, and nothing else: sessions, states
    /// and application values sharing the backend stay (the HTTP cache
    /// writes only under [`CACHE_NAMESPACE`](axum_cachex_core::CACHE_NAMESPACE)).
    /// Misses running in the process store nothing they read before.
    ///
    /// # Errors
    ///
    /// The backend's error, e.g. when it is unreachable.
    pub async fn clear(&self) -> Result<u64, BackendError> {
        super::purge::clear_all(&*self.handle.backend).await
    }

    /// Makes every stored response tagged `tag` unreachable; as
    /// [`CacheLayer::invalidate_tag`](super::CacheLayer::invalidate_tag).
    ///
    /// # Errors
    ///
    /// As [`CacheLayer::invalidate_tag`](super::CacheLayer::invalidate_tag).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), BackendError> {
        let now = self
            .handle
            .shared
            .as_ref()
            .map_or_else(std::time::SystemTime::now, |s| s.options.clock.now());
        super::tags::invalidate(&*self.handle.backend, tag, now).await
    }
}

impl Deref for CacheBackend {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        self.handle.backend.as_ref()
    }
}

/// Rejection of the [`CacheBackend`] extractor outside a cache layer when no
/// backend was installed for it and the global proxy is not in use. A
/// server configuration error, answered with 500 and this message.
#[derive(Debug, Clone, Copy, Default, thiserror::Error)]
#[error(
    "CacheBackend was extracted outside a CacheLayer and no backend is configured for it: \
     put the route under the CacheLayer whose entries it manages (`.layer(cache_layer.clone())`), \
     or install one with `.layer(axum::Extension(CacheBackend::new(backend)))`, \
     or set the process-wide backend with `BackendProxy::global().set_backend(backend)`"
)]
#[non_exhaustive]
pub struct MissingCacheBackend;

impl IntoResponse for MissingCacheBackend {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

fn find(parts: &Parts) -> Option<CacheBackend> {
    if let Some(handle) = parts.extensions.get::<CacheHandle>() {
        return Some(CacheBackend {
            handle: handle.clone(),
        });
    }
    if let Some(installed) = parts.extensions.get::<CacheBackend>() {
        return Some(installed.clone());
    }
    let global = BackendProxy::global();
    global.in_use().then(|| CacheBackend::new(global.backend()))
}

impl<S: Send + Sync> FromRequestParts<S> for CacheBackend {
    type Rejection = MissingCacheBackend;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        find(parts).ok_or(MissingCacheBackend)
    }
}

/// `Option<CacheBackend>`: `None` where the extractor would reject.
impl<S: Send + Sync> OptionalFromRequestParts<S> for CacheBackend {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(find(parts))
    }
}
