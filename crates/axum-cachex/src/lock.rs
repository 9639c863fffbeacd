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
//! - **Release after an outage**: a release that fails (the server is
//!   frozen or unreachable) is retried on a spawned task until the lock's
//!   TTL has run out, and so is an `add` whose answer never came (a frozen
//!   server may apply it once it wakes, with a TTL that starts then, so
//!   that cleanup lasts until the server answers, at most a minute).
//!   Otherwise one outage would leave a lock that blocks every contender
//!   for its whole TTL. Both retries are compare-and-delete on our own
//!   token, so they can never free another holder's lock; without
//!   [`CompareAndSwap`] the TTL frees it. At most 64 such tasks run at
//!   once per backend; beyond that, locks are left to their TTLs.
//!
//! [`CompareAndSwap`]: axum_cachex_core::CompareAndSwap
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
    /// When the lock stops mattering: its TTL counted from the `add`.
    expires: Instant,
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
    let deadline = deadline_after(timings.max_wait);
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
    let expires = deadline_after(timings.ttl);
    let call = backend.add(&key, token.clone(), Some(timings.ttl));
    let added = match bounded(&**backend, timings.call_timeout, call).await {
        Ok(added) => added,
        Err(error) => {
            // The server may still apply the `add` (sent, no answer): clear
            // it up once it answers. Its TTL then starts when it is
            // applied, which can be long after now, so the cleanup lasts
            // until the server answers (at most `ADD_CLEANUP_MAX`).
            if error.is_unavailable() {
                let holder = Holder {
                    backend: Arc::clone(backend),
                    key,
                    token,
                    expires: deadline_after(timings.ttl.max(ADD_CLEANUP_MAX)),
                };
                holder.retry_in_background(timings.call_timeout);
            }
            return Err(error);
        }
    };
    if !added {
        return Ok(None);
    }
    Ok(Some(LockGuard {
        backend: Arc::clone(backend),
        key,
        token,
        call_timeout: timings.call_timeout,
        expires,
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

    /// Releases the lock now; when the backend does not answer, keeps
    /// trying on a spawned task (see the module docs).
    pub(crate) async fn release(mut self) {
        self.released = true;
        let timeout = self.call_timeout;
        let holder = self.take_holder();
        if let Err(holder) = holder.release(timeout).await {
            holder.retry_in_background(timeout);
        }
    }

    fn take_holder(&mut self) -> Holder {
        Holder {
            backend: Arc::clone(&self.backend),
            key: std::mem::take(&mut self.key),
            token: self.token.clone(),
            expires: self.expires,
        }
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
        let (holder, timeout) = (self.take_holder(), self.call_timeout);
        runtime.spawn(async move {
            if let Err(holder) = holder.release(timeout).await {
                holder.retry_in_background(timeout);
            }
        });
    }
}

/// What it takes to release a lock, apart from the guard.
struct Holder {
    backend: Arc<dyn Backend>,
    key: String,
    token: Bytes,
    expires: Instant,
}

/// The first pause before retrying a failed release; it doubles up to
/// [`RELEASE_RETRY_MAX`].
const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(50);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(1);
/// How long the cleanup of an unanswered `add` keeps trying at most.
const ADD_CLEANUP_MAX: Duration = Duration::from_secs(60);
/// Most retry tasks alive at once per backend: during a long outage of a
/// busy app the rest are left to their locks' TTLs instead of piling up.
const RETRIES_IN_FLIGHT: usize = 64;

/// `now + ttl`, or far in the future when that does not fit.
fn deadline_after(ttl: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(ttl)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// The [`RETRIES_IN_FLIGHT`] slots of `backend` (by address: a backend
/// dropped and another made at the same address share them, harmlessly).
fn retry_slots(backend: &Arc<dyn Backend>) -> Arc<tokio::sync::Semaphore> {
    type Slots = std::collections::HashMap<usize, Arc<tokio::sync::Semaphore>>;
    static SLOTS: std::sync::OnceLock<std::sync::Mutex<Slots>> = std::sync::OnceLock::new();
    let address = Arc::as_ptr(backend).cast::<()>() as usize;
    let mut slots = SLOTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(
        slots
            .entry(address)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(RETRIES_IN_FLIGHT))),
    )
}

impl Holder {
    /// One release attempt; the holder back when the backend did not
    /// answer.
    async fn release(self, timeout: Duration) -> Result<(), Self> {
        let backend = &*self.backend;
        let result = match backend.compare_and_swap() {
            Some(cas) => bounded(
                backend,
                timeout,
                cas.delete_if_equals(&self.key, &self.token),
            )
            .await
            .map(drop),
            None => bounded(backend, timeout, backend.delete(&self.key))
                .await
                .map(drop),
        };
        match result {
            Err(error) if error.is_unavailable() => {
                tracing::debug!(key = self.key, %error, "could not release a lock; retrying");
                Err(self)
            }
            // Answered (or refused for good): nothing more to do.
            _ => Ok(()),
        }
    }

    /// [`release_until_expired`](Self::release_until_expired) on a spawned
    /// task; outside a runtime the TTL frees the lock.
    /// At most [`RETRIES_IN_FLIGHT`] at once.
    fn retry_in_background(self, timeout: Duration) {
        if self.backend.compare_and_swap().is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(slot) = retry_slots(&self.backend).try_acquire_owned() else {
            return; // the TTL frees this one
        };
        runtime.spawn(async move {
            self.release_until_expired(timeout).await;
            drop(slot);
        });
    }

    /// Retries with growing pauses until a release lands or the TTL has
    /// freed the lock. Only with compare-and-delete: a plain delete this
    /// late could free the next holder's lock.
    async fn release_until_expired(mut self, timeout: Duration) {
        let mut pause = RELEASE_RETRY_FIRST;
        while Instant::now() + pause < self.expires {
            tokio::time::sleep(pause).await;
            match self.release(timeout).await {
                Ok(()) => return,
                Err(holder) => self = holder,
            }
            pause = (pause * 2).min(RELEASE_RETRY_MAX);
        }
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
