//! Removing stored responses in bulk: by path, by glob pattern, or all of
//! them.
//!
//! The HTTP cache owns these operations, not the stores: every response
//! lives under [`CACHE_NAMESPACE`], and a store that can list keys
//! ([`Listing`]) gets them done generically, by listing that namespace and
//! parsing each key. A store with a [`PathInvalidation`] fast path (Redis'
//! per-path index, Memcached's generation counters) is asked to do it
//! instead. Nothing outside the namespace is ever touched, so sessions or
//! states sharing the store survive a clear.
//!
//! Each operation first tells the process-wide
//! [`Invalidations`](super::shared::Invalidations) that paths changed, so
//! that misses in flight do not store what they read before the clear.

use super::shared::Invalidations;
use axum_cachex_core::{
    Backend, BackendError, CACHE_NAMESPACE, CacheKey, Listing, path_matches_glob,
};

/// Removes one stored response (every `Vary` variant goes with its base
/// key) and the cross-instance lock of its key, so that instances waiting
/// on that lock compute it themselves instead of taking an older result.
/// Returns whether the response existed.
pub(crate) async fn delete_key(backend: &dyn Backend, key: &str) -> Result<bool, BackendError> {
    // First: a handler run for it that began before this must not store or
    // share what it read.
    Invalidations::get().key(backend, key);
    let existed = backend.delete(key).await?;
    backend.delete(&super::lock::lock_key(key)).await?;
    Ok(existed)
}

/// Removes the stored responses of `path`: every query, host, user and
/// variant with `include_params`, only the query-less ones without.
pub(crate) async fn clear_path(
    backend: &dyn Backend,
    path: &str,
    include_params: bool,
) -> Result<u64, BackendError> {
    Invalidations::get().path(backend);
    if let Some(fast) = backend.path_invalidation() {
        return fast.clear_path(path, include_params).await;
    }
    let listing = listing(backend, "clear_path")?;
    remove_listed(listing, |key| key.is_for_path(path, include_params)).await
}

/// Removes the stored responses whose path matches a glob pattern (see
/// [`path_matches_glob`]).
pub(crate) async fn clear_pattern(
    backend: &dyn Backend,
    pattern: &str,
) -> Result<u64, BackendError> {
    Invalidations::get().path(backend);
    let listing = listing(backend, "clear_pattern")?;
    remove_listed(listing, |key| {
        path_matches_glob(pattern, &key.decoded_path())
    })
    .await
}

/// Removes every stored response, and nothing else.
pub(crate) async fn clear_all(backend: &dyn Backend) -> Result<u64, BackendError> {
    Invalidations::get().path(backend);
    // Tag tokens are not responses: they go first, uncounted.
    if let Some(listing) = backend.listing() {
        listing.clear(super::tags::TOKEN_NAMESPACE).await?;
    }
    if let Some(fast) = backend.path_invalidation() {
        return fast.clear_cache().await;
    }
    listing(backend, "clear")?.clear(CACHE_NAMESPACE).await
}

/// Whether the counts these operations return are exact for `backend`
/// (generation counters cannot count what they made unreachable).
#[cfg(feature = "monitoring")]
pub(crate) fn counts_exactly(backend: &dyn Backend) -> bool {
    backend
        .path_invalidation()
        .is_none_or(|fast| fast.counts_exactly())
}

fn listing<'b>(
    backend: &'b dyn Backend,
    operation: &'static str,
) -> Result<&'b dyn Listing, BackendError> {
    backend.listing().ok_or(BackendError::Unsupported {
        backend: backend.name(),
        operation,
        hint: "it needs a backend that can list its keys (memory, Redis, or a store implementing `Listing`)",
    })
}

async fn remove_listed(
    listing: &dyn Listing,
    selects: impl Fn(&CacheKey<'_>) -> bool,
) -> Result<u64, BackendError> {
    let mut removed = 0;
    for key in listing.keys(CACHE_NAMESPACE).await? {
        if CacheKey::parse_stored(&key).is_some_and(|k| selects(&k)) && listing.delete(&key).await?
        {
            removed += 1;
        }
    }
    Ok(removed)
}
