//! The axum extractor of the state manager.

use std::convert::Infallible;

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{StatusCode, request::Parts};

use super::StateManager;

/// Rejection of the [`StateManager`] extractor: no manager in the request
/// extensions. A server configuration error, answered with 500.
#[derive(Debug, Clone, Copy, Default, thiserror::Error)]
#[error(
    "no StateManager in the request extensions: add `.layer(axum::Extension(state_manager))` \
     to the router, or extract it with `State<StateManager>` (it implements `Clone`, so \
     `FromRef` works)"
)]
#[non_exhaustive]
pub struct MissingStateManager;

impl IntoResponse for MissingStateManager {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// Extracts the [`StateManager`] installed with
/// `.layer(axum::Extension(manager))`.
impl<S: Send + Sync> FromRequestParts<S> for StateManager {
    type Rejection = MissingStateManager;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<StateManager>()
            .cloned()
            .ok_or(MissingStateManager)
    }
}

/// `Option<StateManager>`: `None` when no manager is installed.
impl<S: Send + Sync> OptionalFromRequestParts<S> for StateManager {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<StateManager>().cloned())
    }
}
