//! The per-user session index behind `delete_user_sessions`.
//!
//! Under `{prefix}user:{hash(user_id)}` the manager keeps a JSON list of the
//! user's session hashes with their last known expiry. No backend is ever
//! scanned: Memcached cannot list keys at all, and on Redis a scan costs the
//! whole keyspace.
//!
//! Read-modify-write of the list is serialised by a lock record written with
//! `add` (atomic "create if absent" on every backend) and a short TTL, so two
//! logins of one user on two instances cannot lose each other's entry. The
//! lock is released with `delete_if_equals` where the backend has it, a plain
//! `delete` otherwise (the TTL is far longer than one update).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    SessionError, SessionManager,
    token::{self, unix_secs},
};

/// The lock outlives any sane index update many times over; it only
/// matters when an instance dies holding it.
const LOCK_TTL: Duration = Duration::from_secs(10);
/// Attempts to take the lock before giving up with `Busy` (about 3 s).
const LOCK_ATTEMPTS: u32 = 150;
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

struct Lock {
    key: String,
    token: Vec<u8>,
}

impl SessionManager {
    async fn lock_index(&self, user_hash: &str) -> Result<Lock, SessionError> {
        let key = self.user_lock_key(user_hash);
        let token = token::hex(&token::random_bytes::<16>()?).into_bytes();
        for _ in 0..LOCK_ATTEMPTS {
            if self
                .backend_ref()
                .add(&key, Bytes::from(token.clone()), Some(LOCK_TTL))
                .await?
            {
                return Ok(Lock { key, token });
            }
            // 10–25 ms with jitter, so contenders do not retry in lockstep.
            let jitter = u64::from(token::random_bytes::<1>()?[0] % 16);
            tokio::time::sleep(Duration::from_millis(10 + jitter)).await;
        }
        warn!(user = %token::short(user_hash), "user session index stayed locked");
        Err(SessionError::Busy)
    }

    async fn unlock_index(&self, lock: Lock) {
        let backend = self.backend_ref();
        let result = match backend.compare_and_swap() {
            Some(cas) => cas.delete_if_equals(&lock.key, &lock.token).await.map(drop),
            None => backend.delete(&lock.key).await.map(drop),
        };
        if let Err(e) = result {
            warn!(error = %e, "could not release the user index lock; it expires by itself");
        }
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

    /// Adds or refreshes one session in a user's index.
    pub(crate) async fn index_upsert(
        &self,
        user_hash: &str,
        session_hash: &str,
        expires_at: Option<SystemTime>,
    ) -> Result<(), SessionError> {
        let now = self.now();
        let exp = expires_at.map_or_else(
            || unix_secs(now) + self.config().session_ttl().as_secs(),
            unix_secs,
        );
        let lock = self.lock_index(user_hash).await?;
        let result = async {
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
        }
        .await;
        self.unlock_index(lock).await;
        result
    }

    /// Removes one session from a user's index.
    pub(crate) async fn index_remove(
        &self,
        user_hash: &str,
        session_hash: &str,
    ) -> Result<(), SessionError> {
        let now = self.now();
        let lock = self.lock_index(user_hash).await?;
        let result = async {
            let mut index = self.read_index(user_hash).await?;
            index.s.retain(|e| e.h != session_hash);
            self.write_index(user_hash, &index, now).await
        }
        .await;
        self.unlock_index(lock).await;
        result
    }

    /// Deletes every session a user's index lists, and the index; returns
    /// how many sessions existed. Holding the lock throughout means a login
    /// racing with this either lands before (and is deleted) or after (and
    /// survives, as a login after the logout should).
    pub(crate) async fn index_drain(&self, user_hash: &str) -> Result<u64, SessionError> {
        let lock = self.lock_index(user_hash).await?;
        let result = async {
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
        }
        .await;
        self.unlock_index(lock).await;
        result
    }
}
