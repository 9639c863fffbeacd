//! The one distributed lock: a key written with `add` and a random token,
//! held by a guard that releases it on drop.
//!
//! Every user of a cross-instance lock goes through here: the HTTP cache
//! (one instance computes a cold key), the application cache (one instance
//! runs a factory) and the session index (read-modify-write of a user's
//! session list).
//!
//! - **Acquire**: `add(key, token, ttl)`: atomic "create if absent" on
//!   every backend. The TTL bounds how long a crashed holder blocks others.
//! - **Wait**: [`acquire_or_wait`] retries every `poll` (with jitter, so
//!   contenders do not retry in lockstep) until `max_wait`, and between
//!   attempts asks the caller whether what it waits for is ready (a value
//!   another instance computed), and once more right after taking the lock
//!   (the previous holder may have finished just before).
//! - **Release**: compare-and-delete ([`CompareAndSwap::delete_if_equals`])
//!   so a holder whose lock expired never frees the next holder's; a plain
//!   delete on a backend without it, which at worst costs a duplicate
//!   computation. [`LockGuard::release`] releases at once; dropping an
//!   unreleased guard (a cancelled request) releases on a spawned task, or
//!   leaves the lock to its TTL outside a runtime.
//!
//! [`CompareAndSwap::delete_if_equals`]: axum_cachex_core::CompareAndSwap::delete_if_equals

use std::{future::Future, sync::Arc, time::Duration};

use axum_cachex_core::{Backend, BackendError};
use bytes::Bytes;
use tokio::time::Instant;

/// How long one lock call may take before it counts as failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockTimings {
    /// The lock's lifetime in the backend.
    pub(crate) ttl: Duration,
    /// How long to wait for the lock (or the awaited value) in all.
    pub(crate) max_wait: Duration,
    /// The pause between attempts (plus up to 50 % jitter).
    pub(crate) poll: Duration,
    /// The bound of each backend call.
    pub(crate) call_timeout: Duration,
}

/// A held lock. Released by [`release`](Self::release) or on drop.
pub(crate) struct LockGuard {
    backend: Arc<dyn Backend>,
    key: String,
    token: Bytes,
    call_timeout: Duration,
    released: bool,
}

/// What [`acquire_or_wait`] ended with.
pub(crate) enum Acquired<T> {
    /// The lock is ours.
    Held(LockGuard),
    /// What the caller waits for became ready while another holder had the
    /// lock.
    Ready(T),
    /// Neither within `max_wait`.
    TimedOut,
}

/// Takes `key` if it is free, else waits as the module docs say.
pub(crate) async fn acquire_or_wait<T, F, Fut>(
    backend: &Arc<dyn Backend>,
    key: String,
    timings: LockTimings,
    mut ready: F,
) -> Result<Acquired<T>, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timings.max_wait;
    loop {
        if let Some(guard) = try_acquire(backend, key.clone(), timings).await? {
            // A holder may have made the value and released the lock
            // between the caller's (or our) last look and the `add`.
            if let Some(value) = ready().await {
                guard.release().await;
                return Ok(Acquired::Ready(value));
            }
            return Ok(Acquired::Held(guard));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Acquired::TimedOut);
        }
        tokio::time::sleep(jittered(timings.poll).min(deadline - now)).await;
        if let Some(value) = ready().await {
            return Ok(Acquired::Ready(value));
        }
    }
}

/// Takes `key` if it is free.
pub(crate) async fn try_acquire(
    backend: &Arc<dyn Backend>,
    key: String,
    timings: LockTimings,
) -> Result<Option<LockGuard>, BackendError> {
    let token = crate::random::unique_token();
    let call = backend.add(&key, token.clone(), Some(timings.ttl));
    if !bounded(&**backend, timings.call_timeout, call).await? {
        return Ok(None);
    }
    Ok(Some(LockGuard {
        backend: Arc::clone(backend),
        key,
        token,
        call_timeout: timings.call_timeout,
        released: false,
    }))
}

impl LockGuard {
    /// Whether the lock is still ours: not expired, and not deleted by
    /// someone else (an invalidation deletes the HTTP cache's lock with the
    /// entry).
    pub(crate) async fn is_held(&self) -> bool {
        let call = self.backend.get(&self.key);
        matches!(
            bounded(&*self.backend, self.call_timeout, call).await,
            Ok(Some(token)) if token == self.token
        )
    }

    /// Releases the lock now. A failure is logged: the lock then expires
    /// by its TTL.
    pub(crate) async fn release(mut self) {
        self.released = true;
        release(&self.backend, &self.key, &self.token, self.call_timeout).await;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the TTL frees it
        };
        let (backend, key) = (Arc::clone(&self.backend), std::mem::take(&mut self.key));
        let (token, timeout) = (self.token.clone(), self.call_timeout);
        runtime.spawn(async move { release(&backend, &key, &token, timeout).await });
    }
}

async fn release(backend: &Arc<dyn Backend>, key: &str, token: &[u8], timeout: Duration) {
    let result = match backend.compare_and_swap() {
        Some(cas) => bounded(&**backend, timeout, cas.delete_if_equals(key, token)).await,
        None => bounded(&**backend, timeout, backend.delete(key)).await,
    };
    if let Err(error) = result {
        tracing::debug!(key, %error, "could not release a lock; it expires by its TTL");
    }
}

/// A backend call bounded by `timeout`.
async fn bounded<T>(
    backend: &dyn Backend,
    timeout: Duration,
    call: impl Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or(Err(BackendError::Timeout {
            backend: backend.name(),
            timeout,
        }))
}

/// `poll` plus up to half of it again, at random.
fn jittered(poll: Duration) -> Duration {
    let spread = u32::from(crate::random::unique_token()[0]);
    poll + poll / 2 * spread / 255
}
