//! The opt-in cross-instance lock: app instances sharing a backend do not
//! all compute the same cold key.
//!
//! The in-process leader takes `lock:{key}` with `add` (Redis `SET NX PX`)
//! and a random token, runs the handler, stores, and releases the lock with
//! `delete_if_equals` (a compare-and-delete script on Redis) so it never
//! removes a lock another instance took after ours expired. An instance
//! that finds the lock taken polls the backend for the entry until the
//! lock's lifetime passes, then computes it itself. The lock is advisory:
//! when the backend fails, the request goes on without it.

use std::{sync::Arc, time::Duration};

use axum_cachex_core::{Backend, BackendError, CacheEntry};
use bytes::Bytes;
use http::HeaderMap;

use super::{
    shared::Shared,
    store::{self, Found, Slot},
};

/// How often a waiting instance looks for the entry.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub(crate) fn lock_key(key: &str) -> String {
    format!("lock:{key}")
}

/// A held lock, released with [`release`].
pub(crate) struct HeldLock {
    key: String,
    token: Bytes,
}

pub(crate) enum LockOutcome {
    /// We hold the lock: compute.
    Held(HeldLock),
    /// Another instance computed it meanwhile: serve this entry.
    Computed(Box<CacheEntry>),
    /// No lock (backend failure, or the other instance did not finish in
    /// time): compute without it.
    Proceed,
}

/// 16 random bytes: unique lock tokens and variant epochs.
pub(crate) fn random_token() -> Bytes {
    let raw = crate::random::bytes::<16>().unwrap_or_else(|_| {
        // Uniqueness, not secrecy, matters here: fall back to the clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        nanos.to_le_bytes()
    });
    Bytes::copy_from_slice(&raw)
}

pub(crate) async fn acquire(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    slot: &Slot,
    request_headers: &HeaderMap,
    lock_ttl: Duration,
) -> LockOutcome {
    let lock = lock_key(&slot.flight_key(request_headers));
    let token = random_token();
    match tokio::time::timeout(
        shared.options.backend_timeout,
        backend.add(&lock, token.clone(), Some(lock_ttl)),
    )
    .await
    {
        Ok(Ok(true)) => return LockOutcome::Held(HeldLock { key: lock, token }),
        Ok(Ok(false)) => {}
        _ => return LockOutcome::Proceed,
    }
    let polls = (lock_ttl.as_millis() / POLL_INTERVAL.as_millis()).max(1);
    for _ in 0..polls {
        tokio::time::sleep(POLL_INTERVAL).await;
        match store::lookup(shared, backend, &slot.base, request_headers)
            .await
            .0
        {
            Found::Failed => return LockOutcome::Proceed,
            Found::Entry(entry) if entry.is_fresh(shared.options.clock.now()) => {
                return LockOutcome::Computed(Box::new(entry));
            }
            _ => {}
        }
        // The other instance finished without storing (or failed): stop
        // waiting once its lock is gone.
        if let Ok(Ok(None)) =
            tokio::time::timeout(shared.options.backend_timeout, backend.get(&lock)).await
        {
            return LockOutcome::Proceed;
        }
    }
    LockOutcome::Proceed
}

/// Whether `held` is still ours: not expired, and not deleted by an
/// invalidation on another instance (which deletes the lock with the
/// entry). A response computed under a lock that is gone may predate that
/// invalidation: it is not stored.
pub(crate) async fn still_held(
    shared: &Shared,
    backend: &Arc<dyn Backend>,
    held: &HeldLock,
) -> bool {
    let call = backend.get(&held.key);
    matches!(
        tokio::time::timeout(shared.options.backend_timeout, call).await,
        Ok(Ok(Some(token))) if token == held.token
    )
}

pub(crate) async fn release(shared: &Shared, backend: &Arc<dyn Backend>, held: HeldLock) {
    let call = backend.delete_if_equals(&held.key, &held.token);
    // On other failures the lock expires by itself.
    if let Ok(Err(BackendError::Unsupported { .. })) =
        tokio::time::timeout(shared.options.backend_timeout, call).await
    {
        // Without compare-and-delete, a plain delete: at worst it drops a
        // lock another instance took after ours expired, which only costs a
        // duplicate computation.
        let _ =
            tokio::time::timeout(shared.options.backend_timeout, backend.delete(&held.key)).await;
    }
}
