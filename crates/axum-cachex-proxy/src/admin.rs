//! The admin listener: the library's monitoring routes (`/stats`,
//! `/metrics`, the listings, `clear-path`, `purge` by pattern, key, tag or all,
//! and the dashboard), never on the proxied listener.
//!
//! With `--admin-token` they require that bearer token; without one they
//! admit loopback clients only.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::ConnectInfo};
use axum_cachex::{
    Registry,
    backend::Backend,
    monitoring::{Guard, Monitoring},
};

/// The admin router.
pub(crate) fn router(
    token: Option<String>,
    registry: &Registry,
    backend: Arc<dyn Backend>,
) -> Router {
    let guard = match token {
        Some(token) => Guard::bearer(token),
        None => Guard::predicate(|parts| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|ConnectInfo(addr)| addr.ip().is_loopback())
        }),
    };
    Monitoring::new(guard)
        .registry(registry)
        .backend(backend)
        .router("")
}
