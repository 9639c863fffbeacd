//! The opt-in cross-instance lock of the HTTP cache: app instances sharing a
//! backend do not all compute the same cold key.
//!
//! The in-process leader takes `http:lock:{key}` with the crate's one
//! distributed lock ([`crate::lock`]), runs the handler, stores, and
//! releases it. An instance that finds the lock taken polls the backend for
//! the entry until the lock's lifetime passes, and takes the lock itself
//! as soon as it is free (the other instance finished without storing).
//! The lock is advisory: when the backend fails, the request goes on
//! without it.

use std::{sync::Arc, time::Duration};

use axum_cachex_core::{Backend, CACHE_NAMESPACE, CacheEntry};
use http::HeaderMap;

use super::{
    shared::Shared,
    store::{self, Found, Slot},
};
use crate::lock::{self as distributed, Acquired, LockGuard, LockTimings};

/// How often a waiting instance looks for the entry.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The lock of a stored key: inside the cache's namespace and in the
/// key format of the same path, so that every invalidation of the entry
/// (by key, path, pattern or a clear, on any instance) deletes the lock
/// with it, and a run computed under a lock that went away is not stored.
pub(crate) fn lock_key(key: &str) -> String {
    match key.strip_prefix(CACHE_NAMESPACE) {
        Some(rest) => format!("{CACHE_NAMESPACE}lock:{rest}"),
        None => format!("lock:{key}"),
    }
}

pub(crate) enum LockOutcome {
    /// We hold the lock: compute.
    Held(LockGuard),
    /// Another instance computed it meanwhile: serve this entry.
    Computed(Box<CacheEntry>),
    /// No lock (backend failure, or the other instance did not finish in
    /// time): compute without it.
    Proceed,
}

pub(crate) async fn acquire(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    slot: &Slot,
    request_headers: &HeaderMap,
    lock_ttl: Duration,
) -> LockOutcome {
    let timings = LockTimings {
        ttl: lock_ttl,
        max_wait: lock_ttl,
        poll: POLL_INTERVAL,
        call_timeout: shared.options.backend_timeout,
    };
    let key = lock_key(&slot.flight_key(request_headers));
    let computed = || async {
        match store::lookup(shared, backend, &slot.base, request_headers)
            .await
            .0
        {
            Found::Entry(entry) if entry.is_fresh(shared.options.clock.now()) => Some(entry),
            _ => None,
        }
    };
    match distributed::acquire_or_wait(backend, key, timings, computed).await {
        Ok(Acquired::Held(guard)) => LockOutcome::Held(guard),
        Ok(Acquired::Ready(entry)) => LockOutcome::Computed(Box::new(entry)),
        Ok(Acquired::TimedOut) | Err(_) => LockOutcome::Proceed,
    }
}
