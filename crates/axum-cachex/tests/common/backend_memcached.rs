//! Factory of Memcached backends for the suites (owned by the Memcached work).

use std::sync::Arc;

use axum_cachex::backend::{Backend, MemcachedBackend};

/// A fresh backend on the suite's Memcached servers in its own namespace, or
/// `None` when no servers are configured (and none are required).
pub async fn memcached() -> Option<Arc<dyn Backend>> {
    let servers = super::memcached_servers()?;
    let backend = MemcachedBackend::builder()
        .servers(servers)
        .key_prefix(super::unique_prefix("mc"))
        .build()
        .expect("memcached backend config");
    Some(Arc::new(backend))
}
