//! The per-user session index behind `delete_user_sessions`.
//!
//! Under `{prefix}user:{hash(user_id)}` the manager keeps a JSON list of the
//! user's session hashes with their last known expiry. No backend is ever
//! scanned: Memcached cannot list keys at all, and on Redis a scan costs the
//! whole keyspace.
//!
//! Read-modify-write of the list is serialised by the crate's distributed
//! lock ([`crate::lock`]: `add` with a token and a short TTL, released by
//! compare-and-delete), so two logins of one user on two instances cannot
//! lose each other's entry. Taking and releasing it happens in
//! [`SessionManager::with_index_lock`] only.
//!
//! # Who waits for the lock
//!
//! Creating, moving or re-assigning a session waits for the lock (up to
//! about 3 s, then [`SessionError::Busy`]): the entry must be in the index
//! before the session is usable, or "log out everywhere" could miss it.
//!
//! A sliding renewal (a plain read) only refreshes the recorded expiry of an
//! entry that is already there, so it never waits: it tries the lock once
//! and, when the lock is busy, leaves the refresh to a background task that
//! waits for it ([`SessionManager::flush_index_updates`] awaits those
//! tasks). Consistency: the *set* of sessions listed is always exact (a
//! deferred refresh never adds or drops an entry), only an entry's recorded
//! expiry can lag, by one deferred refresh. That lag is harmless: an entry
//! is dropped only after the store confirms its session is gone, and the
//! index record outlives its newest recorded expiry by a full `session_ttl`
//! plus a minute, longer than any session can go between two renewals, so
//! even a refresh that is lost altogether (the process stops, the backend
//! fails) leaves the index in place until the next renewal refreshes it.

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::lock::{Acquired, LockTimings};

use super::{
    SessionError, SessionManager,
    token::{self, unix_secs},
};

/// The lock outlives any sane index update many times over; it only
/// matters when an instance dies holding it.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long a creation or move waits for the lock before `Busy`.
const LOCK_MAX_WAIT: Duration = Duration::from_secs(3);
/// The pause between attempts (plus jitter, see [`crate::lock`]).
const LOCK_POLL: Duration = Duration::from_millis(10);
/// Extra life of the index past the newest session it lists.
const INDEX_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Serialize, Deserialize)]
struct UserIndex {
    #[serde(default)]
    s: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// Keyed hash of the session id (the store key suffix).
    h: String,
    /// Last known expiry, Unix seconds.
    e: u64,
}

/// How long [`SessionManager::with_index_lock`] waits for a busy lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockWait {
    /// Up to [`LOCK_MAX_WAIT`], with jittered pauses.
    Patient,
    /// One attempt: a read must not wait on another request's update.
    Once,
}

/// Counts the index refreshes running in background tasks, so that
/// [`SessionManager::flush_index_updates`] can wait for them.
#[derive(Debug)]
pub(crate) struct DeferredRefreshes(watch::Sender<usize>);

impl Default for DeferredRefreshes {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

/// One deferred refresh in flight; dropping it (even by a panic or an
/// aborted task) counts it done.
struct InFlight(watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl SessionManager {
    /// Runs `update` holding the user's index lock: the one place the lock
    /// is taken and released.
    async fn with_index_lock<R, F, Fut>(
        &self,
        user_hash: &str,
        wait: LockWait,
        update: F,
    ) -> Result<R, SessionError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<R, SessionError>>,
    {
        let timings = LockTimings {
            ttl: LOCK_TTL,
            max_wait: match wait {
                LockWait::Patient => LOCK_MAX_WAIT,
                LockWait::Once => Duration::ZERO,
            },
            poll: LOCK_POLL,
            call_timeout: LOCK_TTL,
        };
        let key = self.user_lock_key(user_hash);
        let nothing_to_wait_for = || async { None::<()> };
        let acquired =
            crate::lock::acquire_or_wait(self.backend(), key, timings, nothing_to_wait_for).await?;
        let Acquired::Held(guard) = acquired else {
            if wait == LockWait::Patient {
                warn!(user = %token::short(user_hash), "user session index stayed locked");
            }
            return Err(SessionError::Busy);
        };
        let result = update().await;
        guard.release().await;
        result
    }

    async fn read_index(&self, user_hash: &str) -> Result<UserIndex, SessionError> {
        let Some(bytes) = self.backend_ref().get(&self.user_key(user_hash)).await? else {
            return Ok(UserIndex::default());
        };
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            warn!(user = %token::short(user_hash), error = %e, "corrupt user session index; starting afresh");
            UserIndex::default()
        }))
    }

    async fn write_index(
        &self,
        user_hash: &str,
        index: &UserIndex,
        now: SystemTime,
    ) -> Result<(), SessionError> {
        let key = self.user_key(user_hash);
        let Some(newest) = index.s.iter().map(|e| e.e).max() else {
            self.backend_ref().delete(&key).await?;
            return Ok(());
        };
        // Outlive the newest session by a full TTL, so that one missed
        // refresh on renewal does not drop the index under a live session.
        let left = Duration::from_secs(newest.saturating_sub(unix_secs(now)));
        let ttl = left + self.config().session_ttl() + INDEX_GRACE;
        let bytes = serde_json::to_vec(index).map_err(SessionError::Corrupt)?;
        self.backend_ref()
            .set(&key, Bytes::from(bytes), Some(ttl))
            .await?;
        Ok(())
    }

    /// Drops entries whose session is gone. Only entries that look expired
    /// by their recorded expiry are checked (one `get` each); a renewed
    /// session found that way gets its expiry refreshed.
    async fn prune(&self, index: &mut UserIndex, now: SystemTime) -> Result<(), SessionError> {
        let now_secs = unix_secs(now);
        let mut kept = Vec::with_capacity(index.s.len());
        for mut entry in std::mem::take(&mut index.s) {
            if entry.e > now_secs {
                kept.push(entry);
                continue;
            }
            if let Some(bytes) = self.backend_ref().get(&self.key_for_hash(&entry.h)).await? {
                if let Ok(s) = self.decode(&bytes, None) {
                    entry.e = s.expires_at().map_or(now_secs, unix_secs);
                }
                kept.push(entry);
            }
        }
        index.s = kept;
        Ok(())
    }

    /// Adds or refreshes one session in a user's index, waiting for the lock.
    pub(crate) async fn index_upsert(
        &self,
        user_hash: &str,
        session_hash: &str,
        expires_at: Option<SystemTime>,
    ) -> Result<(), SessionError> {
        self.upsert_with(user_hash, session_hash, expires_at, LockWait::Patient)
            .await
    }

    async fn upsert_with(
        &self,
        user_hash: &str,
        session_hash: &str,
        expires_at: Option<SystemTime>,
        wait: LockWait,
    ) -> Result<(), SessionError> {
        let now = self.now();
        let exp = expires_at.map_or_else(
            || unix_secs(now) + self.config().session_ttl().as_secs(),
            unix_secs,
        );
        self.with_index_lock(user_hash, wait, || async {
            let mut index = self.read_index(user_hash).await?;
            self.prune(&mut index, now).await?;
            match index.s.iter_mut().find(|e| e.h == session_hash) {
                Some(e) => e.e = exp,
                None => index.s.push(Entry {
                    h: session_hash.to_owned(),
                    e: exp,
                }),
            }
            self.write_index(user_hash, &index, now).await
        })
        .await
    }

    /// Refreshes a renewed session's entry without waiting for the lock: one
    /// attempt now, and when the lock is busy a background task that waits
    /// for it (see the [module docs](self) for the consistency this gives).
    pub(crate) async fn index_refresh(
        &self,
        user_hash: String,
        session_hash: String,
        expires_at: Option<SystemTime>,
    ) {
        match self
            .upsert_with(&user_hash, &session_hash, expires_at, LockWait::Once)
            .await
        {
            Ok(()) => {}
            Err(SessionError::Busy) => self.defer_refresh(user_hash, session_hash, expires_at),
            // The index outlives its entries by a full TTL: one missed
            // refresh loses nothing.
            Err(e) => {
                warn!(user = %token::short(&user_hash), error = %e, "could not refresh the user index")
            }
        }
    }

    fn defer_refresh(
        &self,
        user_hash: String,
        session_hash: String,
        expires_at: Option<SystemTime>,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            debug!(user = %token::short(&user_hash), "no runtime for a deferred index refresh; skipped");
            return;
        };
        let counter = &self.deferred().0;
        counter.send_modify(|n| *n += 1);
        let in_flight = InFlight(counter.clone());
        let manager = self.clone();
        runtime.spawn(async move {
            let _in_flight = in_flight;
            // The lock was just seen taken: give its holder a moment.
            tokio::time::sleep(LOCK_POLL).await;
            let result = manager
                .upsert_with(&user_hash, &session_hash, expires_at, LockWait::Patient)
                .await;
            if let Err(e) = result {
                warn!(user = %token::short(&user_hash), error = %e, "deferred user index refresh failed");
            }
        });
    }

    /// Waits until the index refreshes that sliding renewals left to
    /// background tasks (because the user's index was locked at the time)
    /// have finished. For graceful shutdown and tests; requests never need
    /// it (see the [module docs](super) on consistency).
    pub async fn flush_index_updates(&self) {
        let mut rx = self.deferred().0.subscribe();
        // The sender lives as long as the manager: this cannot fail.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Removes one session from a user's index.
    pub(crate) async fn index_remove(
        &self,
        user_hash: &str,
        session_hash: &str,
    ) -> Result<(), SessionError> {
        let now = self.now();
        self.with_index_lock(user_hash, LockWait::Patient, || async {
            let mut index = self.read_index(user_hash).await?;
            index.s.retain(|e| e.h != session_hash);
            self.write_index(user_hash, &index, now).await
        })
        .await
    }

    /// Deletes every session a user's index lists, and the index; returns
    /// how many sessions existed. Holding the lock throughout means a login
    /// racing with this either lands before (and is deleted) or after (and
    /// survives, as a login after the logout should).
    pub(crate) async fn index_drain(&self, user_hash: &str) -> Result<u64, SessionError> {
        self.with_index_lock(user_hash, LockWait::Patient, || async {
            let index = self.read_index(user_hash).await?;
            let mut deleted = 0;
            for entry in &index.s {
                if self
                    .backend_ref()
                    .delete(&self.key_for_hash(&entry.h))
                    .await?
                {
                    deleted += 1;
                }
            }
            self.backend_ref().delete(&self.user_key(user_hash)).await?;
            Ok(deleted)
        })
        .await
    }
}
