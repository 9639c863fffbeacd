//! The axum extractor of the application cache.

use std::convert::Infallible;

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{StatusCode, request::Parts};

use super::CacheManager;

/// Rejection of the [`CacheManager`] extractor: no manager in the request
/// extensions. A server configuration error, answered with 500.
#[derive(Debug, Clone, Copy, Default, thiserror::Error)]
#[error(
    "no CacheManager in the request extensions: add `.layer(axum::Extension(cache_manager))` \
     to the router, or extract it with `State<CacheManager>` (it implements `Clone`, so \
     `FromRef` works)"
)]
#[non_exhaustive]
pub struct MissingCacheManager;

impl IntoResponse for MissingCacheManager {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// Extracts the [`CacheManager`] installed with
/// `.layer(axum::Extension(manager))`.
impl<S: Send + Sync> FromRequestParts<S> for CacheManager {
    type Rejection = MissingCacheManager;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CacheManager>()
            .cloned()
            .ok_or(MissingCacheManager)
    }
}

/// `Option<CacheManager>`: `None` when no manager is installed.
impl<S: Send + Sync> OptionalFromRequestParts<S> for CacheManager {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CacheManager>().cloned())
    }
}
