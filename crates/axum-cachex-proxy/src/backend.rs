//! The `--backend` spec: `memory`, `redis://…`,
//! `redis+cluster://host:port[,host:port…]` (a Redis Cluster's seed nodes)
//! or `memcached://host:port[,host:port…]`.

use std::sync::Arc;

use axum_cachex::backend::{
    Backend, MemcachedBackend, MemcachedConfigError, MemoryBackend, RedisBackend, RedisConfigError,
};

/// Why a backend spec cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendSpecError {
    /// Neither `memory`, `redis://`, `rediss://`, `redis+cluster://` nor
    /// `memcached://`.
    #[error(
        "unknown backend {0:?}: use memory, redis://host:port, \
         redis+cluster://host:port[,host:port] or memcached://host:port[,host:port]"
    )]
    Unknown(String),
    /// The Redis URL was refused.
    #[error("invalid Redis backend")]
    Redis(#[from] RedisConfigError),
    /// The Memcached server list was refused.
    #[error("invalid Memcached backend")]
    Memcached(#[from] MemcachedConfigError),
}

/// The key prefix of everything the proxy stores in a shared server.
const KEY_PREFIX: &str = "axum_cachex_proxy:";

/// Builds the backend a spec names. Connects to nothing yet: a server that
/// is down at startup is a cache miss until it is up.
pub(crate) fn from_spec(spec: &str) -> Result<Arc<dyn Backend>, BackendSpecError> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryBackend::new()));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        let backend = RedisBackend::builder()
            .url(spec)
            .key_prefix(KEY_PREFIX)
            .build()?;
        return Ok(Arc::new(backend));
    }
    if let Some(seeds) = spec.strip_prefix("redis+cluster://") {
        let backend = RedisBackend::builder()
            .cluster_nodes(list(seeds).map(|seed| format!("redis://{seed}")))
            .key_prefix(KEY_PREFIX)
            .build()?;
        return Ok(Arc::new(backend));
    }
    if let Some(servers) = spec.strip_prefix("memcached://") {
        let backend = MemcachedBackend::builder()
            .servers(list(servers))
            .key_prefix(KEY_PREFIX)
            .build()?;
        return Ok(Arc::new(backend));
    }
    Err(BackendSpecError::Unknown(spec.to_owned()))
}

/// The non-empty items of a comma-separated list.
fn list(items: &str) -> impl Iterator<Item = &str> {
    items.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_backends_or_are_refused() {
        assert_eq!(from_spec("memory").expect("memory").name(), "memory");
        assert_eq!(
            from_spec("redis://127.0.0.1:6379").expect("redis").name(),
            "redis"
        );
        let cluster = from_spec("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001").expect("cluster");
        assert_eq!(cluster.name(), "redis");
        assert!(matches!(
            from_spec("redis+cluster://bad host:x"),
            Err(BackendSpecError::Redis(_))
        ));
        let mc = from_spec("memcached://127.0.0.1:11211, 127.0.0.1:11212").expect("memcached");
        assert_eq!(mc.name(), "memcached");
        assert!(matches!(
            from_spec("mongodb://x"),
            Err(BackendSpecError::Unknown(_))
        ));
        assert!(matches!(
            from_spec("memcached://"),
            Err(BackendSpecError::Memcached(_))
        ));
        assert!(matches!(
            from_spec("memcached://nohost"),
            Err(BackendSpecError::Memcached(_))
        ));
    }
}
