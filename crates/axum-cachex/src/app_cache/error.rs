//! Errors of the application cache.

use axum_cachex_core::BackendError;

use super::DEFAULT_CACHE_PREFIX;

/// The error of a [`CacheManager`](super::CacheManager) operation.
///
/// [`get_or_set`](super::CacheManager::get_or_set) never returns it: there a
/// backend failure is logged and the factory's value is returned all the
/// same (fail open).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The backend failed, or cannot do the operation at all (e.g.
    /// `clear_pattern` on Memcached, which cannot list keys:
    /// [`BackendError::Unsupported`]).
    #[error("application cache backend failed")]
    Backend {
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The value could not be serialised to JSON (e.g. a map with non-string
    /// keys).
    #[error("could not serialise the value for cache key {key:?}")]
    Serialize {
        /// The key (without prefix).
        key: String,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<BackendError> for CacheError {
    fn from(source: BackendError) -> Self {
        Self::Backend { source }
    }
}

/// Why [`CacheManagerBuilder::build`](super::CacheManagerBuilder::build)
/// refused a configuration, with what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheManagerConfigError {
    /// `default_ttl` is zero: every write would store nothing.
    #[error(
        "`default_ttl` must be greater than zero (a zero TTL stores nothing); leave it unset to keep values until evicted"
    )]
    ZeroTtl,
    /// `key_prefix` is empty.
    #[error(
        "`key_prefix` must not be empty: `clear_pattern(\"*\")` would delete every key of the backend's \
         namespace (sessions, OAuth states, cached responses); keep the default `{DEFAULT_CACHE_PREFIX}` or choose another prefix"
    )]
    EmptyKeyPrefix,
    /// `key_prefix` starts with `http:`, the HTTP cache's namespace.
    #[error(
        "`key_prefix` must not start with `http:`: that is the HTTP cache's namespace, and clearing the cache would delete these values"
    )]
    CacheNamespace,
}
