//! The `CacheBackend` extractor: the backend in handlers, for invalidation.

use std::{convert::Infallible, ops::Deref, sync::Arc};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_cachex_core::{Backend, BackendError};
use http::{Request, request::Parts};

use super::{
    KeyBuilder,
    key::{DefaultKeyBuilder, key_for_request},
    shared::{Invalidations, Shared},
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
/// Inside a route wrapped by a [`CacheLayer`](crate::CacheLayer) it is that
/// layer's backend and key builder; elsewhere the backend of
/// [`BackendProxy::global`] with the default key builder. It never rejects.
/// It dereferences to [`Backend`], so every backend operation is
/// available; its own `delete`, `clear_path`, `clear_pattern`, `clear` and
/// `invalidate` also keep misses already running in the process from
/// storing what they read before the change (RFC 9111 §4.4):
///
/// ```
/// use axum::{Router, routing::post};
/// use axum_cachex::CacheBackend;
///
/// async fn update_user(cache: CacheBackend) -> String {
///     // ... write the user, then drop every cached variant of /users:
///     let removed = cache.clear_path("/users", true).await.unwrap_or(0);
///     format!("updated; {removed} cached responses removed")
/// }
///
/// let app: Router = Router::new().route("/users", post(update_user));
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
        Invalidations::get().key(&*self.handle.backend, key);
        self.handle.backend.delete(key).await
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
}

impl Deref for CacheBackend {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        self.handle.backend.as_ref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CacheBackend {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let handle = parts
            .extensions
            .get::<CacheHandle>()
            .cloned()
            .unwrap_or_else(|| CacheHandle {
                backend: BackendProxy::global().backend(),
                shared: None,
            });
        Ok(Self { handle })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CacheBackend {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}
