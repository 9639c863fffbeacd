//! The application cache.

use std::{
    any::{Any, TypeId},
    future::Future,
    sync::Arc,
    time::Duration,
};

use super::{CacheError, CacheManagerConfigError};
use crate::flight::{Flight, Flights};
use crate::lock::{self as distributed, Acquired, LockGuard, LockTimings};
use crate::{Registry, manager_stats::ManagerCounting};
use axum_cachex_core::{Backend, BackendError, path_matches_glob};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

/// Default key prefix of application cache entries: `cache:`.
pub const DEFAULT_CACHE_PREFIX: &str = "cache:";

/// Prefix put in front of the (prefixed) key of a cross-instance lock, so
/// locks live outside the cache's own keys and `has`/`clear_pattern` never
/// see them.
const LOCK_PREFIX: &str = "lock:";

/// Settings of the cross-instance lock of
/// [`get_or_set`](CacheManager::get_or_set), enabled with
/// [`CacheManagerBuilder::distributed_lock`].
///
/// On a miss the first instance to add the lock key (with a random token
/// and [`lock_ttl`](Self::lock_ttl)) runs the factory; the others poll the
/// value every [`poll_interval`](Self::poll_interval), trying to take over
/// the lock when it is released without a value, for at most
/// [`max_wait`](Self::max_wait), then compute the value themselves. The lock
/// is released with a compare-and-delete
/// ([`CompareAndSwap`](crate::backend::CompareAndSwap), which every built-in
/// backend has: only the holder's token deletes it), a plain delete on a
/// store without it; if the holder dies it expires after `lock_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct DistributedLock {
    lock_ttl: Duration,
    max_wait: Duration,
    poll_interval: Duration,
}

impl Default for DistributedLock {
    fn default() -> Self {
        Self {
            lock_ttl: Duration::from_secs(10),
            max_wait: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
        }
    }
}

impl DistributedLock {
    /// The default settings: lock TTL 10 s, wait at most 5 s, poll every
    /// 50 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long the lock lives if its holder never releases it (crash,
    /// cancelled request). Should exceed the factory's usual run time.
    /// Default: 10 s. Zero is raised to 1 ms.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How long a waiter polls before computing the value itself.
    /// Default: 5 s.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Pause between two polls of a waiter. Default: 50 ms. Zero is raised
    /// to 1 ms, so a waiter never spins on the backend.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// The lock's TTL.
    pub fn get_lock_ttl(&self) -> Duration {
        self.lock_ttl
    }

    /// The longest wait of a waiter.
    pub fn get_max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The pause between polls.
    pub fn get_poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

/// A typed key-value cache for application data over any backend (SPEC S6).
///
/// Values of any serde type are stored as JSON under `{key_prefix}{key}`.
/// Cloning is cheap; clones share the backend and the in-process
/// coalescing of [`get_or_set`](Self::get_or_set).
///
/// See the [module documentation](super) for examples.
#[derive(Clone)]
pub struct CacheManager {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    key_prefix: String,
    default_ttl: Option<Duration>,
    lock: Option<DistributedLock>,
    flights: Flights<Arc<dyn Any + Send + Sync>>,
    counting: ManagerCounting,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("backend", &self.inner.backend.name())
            .field("key_prefix", &self.inner.key_prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("distributed_lock", &self.inner.lock)
            .finish()
    }
}

/// Builder of a [`CacheManager`]; start with [`CacheManager::builder`].
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use axum_cachex::{Registry, app_cache::{CacheManager, CacheManagerConfigError}, backend::MemoryBackend};
///
/// let registry = Registry::new();
/// let cache = CacheManager::builder(Arc::new(MemoryBackend::new()))
///     .key_prefix("reports:")
///     .default_ttl(Duration::from_secs(60))
///     .registry(&registry)
///     .build()?;
/// # drop(cache);
/// let refused = CacheManager::builder(Arc::new(MemoryBackend::new())).key_prefix("").build();
/// assert_eq!(refused.err(), Some(CacheManagerConfigError::EmptyKeyPrefix));
/// # Ok::<(), CacheManagerConfigError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct CacheManagerBuilder {
    backend: Arc<dyn Backend>,
    key_prefix: String,
    default_ttl: Option<Duration>,
    lock: Option<DistributedLock>,
    registry: Option<Registry>,
}

impl CacheManagerBuilder {
    /// The prefix of the entries' keys inside the backend's namespace.
    /// Default: `cache:` ([`DEFAULT_CACHE_PREFIX`]).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The lifetime of entries written without an explicit one. Default:
    /// none (kept until evicted or deleted).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Also coalesces [`get_or_set`](CacheManager::get_or_set) misses across
    /// instances sharing the backend (Redis, Memcached), with a lock in the
    /// backend; see [`DistributedLock`]. Default: off (coalescing within
    /// the process only).
    pub fn distributed_lock(mut self, lock: DistributedLock) -> Self {
        self.lock = Some(lock);
        self
    }

    /// Counts what the manager does (hits, misses, factory runs and
    /// errors) in `registry`, for the monitoring routes watching it.
    /// Default: not counted.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Checks the configuration and builds the manager.
    ///
    /// # Errors
    ///
    /// A [`CacheManagerConfigError`] saying what to change: a zero
    /// `default_ttl` or an empty `key_prefix`.
    pub fn build(self) -> Result<CacheManager, CacheManagerConfigError> {
        if self.default_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(CacheManagerConfigError::ZeroTtl);
        }
        if self.key_prefix.is_empty() {
            return Err(CacheManagerConfigError::EmptyKeyPrefix);
        }
        if self
            .key_prefix
            .starts_with(axum_cachex_core::CACHE_NAMESPACE)
        {
            return Err(CacheManagerConfigError::CacheNamespace);
        }
        let counting = self
            .registry
            .as_ref()
            .map(Registry::manager_counting)
            .unwrap_or_default();
        Ok(CacheManager::from_parts(
            self.backend,
            self.key_prefix,
            self.default_ttl,
            self.lock,
            counting,
        ))
    }
}

/// What a waiter for the cross-instance lock ended with.
enum Waited<T> {
    /// Another instance stored the value.
    Value(T),
    /// This caller holds the lock.
    Locked(LockGuard),
    /// No lock (wait elapsed, or the backend cannot lock): compute anyway.
    Unlocked,
}

impl CacheManager {
    /// A manager with the default prefix (`cache:`), no default TTL, no
    /// cross-instance lock, counting nowhere. Infallible: the defaults are
    /// valid; use [`builder`](Self::builder) for anything else.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self::from_parts(
            backend,
            DEFAULT_CACHE_PREFIX.to_owned(),
            None,
            None,
            ManagerCounting::default(),
        )
    }

    fn from_parts(
        backend: Arc<dyn Backend>,
        key_prefix: String,
        default_ttl: Option<Duration>,
        lock: Option<DistributedLock>,
        counting: ManagerCounting,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                key_prefix,
                default_ttl,
                lock,
                flights: Flights::default(),
                counting,
            }),
        }
    }

    /// Starts configuring a manager over `backend`.
    pub fn builder(backend: Arc<dyn Backend>) -> CacheManagerBuilder {
        CacheManagerBuilder {
            backend,
            key_prefix: DEFAULT_CACHE_PREFIX.to_owned(),
            default_ttl: None,
            lock: None,
            registry: None,
        }
    }

    /// The backend the entries are stored in.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The key prefix of the entries.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The lifetime of entries written without an explicit one.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.inner.default_ttl
    }

    /// Reads a value. A missing or expired entry, and one that does not
    /// deserialise into `T` (written with another type or an older shape),
    /// is `None`.
    ///
    /// # Errors
    ///
    /// [`CacheError::Backend`] when the backend fails.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let full = self.full_key(key);
        let value = self
            .inner
            .backend
            .get(&full)
            .await?
            .and_then(|raw| decode(&full, &raw));
        self.count_read(value.is_some());
        Ok(value)
    }

    /// Writes a value. `ttl: None` uses the default TTL (and without one,
    /// keeps the value until evicted or deleted); a zero TTL stores nothing
    /// and removes any previous value, because it would expire at once (and
    /// Memcached reads a zero TTL as "never expire").
    ///
    /// # Errors
    ///
    /// [`CacheError::Serialize`] when `value` cannot be serialised,
    /// [`CacheError::Backend`] when the backend fails.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        let full = self.full_key(key);
        let ttl = ttl.or(self.inner.default_ttl);
        if ttl.is_some_and(|t| t.is_zero()) {
            self.inner.backend.delete(&full).await?;
            return Ok(());
        }
        let bytes = serde_json::to_vec(value).map_err(|source| CacheError::Serialize {
            key: key.to_owned(),
            source,
        })?;
        Ok(self
            .inner
            .backend
            .set(&full, Bytes::from(bytes), ttl)
            .await?)
    }

    /// Deletes a value. Returns whether one existed.
    ///
    /// # Errors
    ///
    /// [`CacheError::Backend`] when the backend fails.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.inner.backend.delete(&self.full_key(key)).await?)
    }

    /// Whether a live value exists under `key`, whatever its type.
    ///
    /// # Errors
    ///
    /// [`CacheError::Backend`] when the backend fails.
    pub async fn has(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.inner.backend.get(&self.full_key(key)).await?.is_some())
    }

    /// Deletes every entry whose key (without the prefix) matches a glob
    /// (`*`, `?`, `[a-z]`, `\` escapes; see
    /// [`path_matches_glob`](axum_cachex_core::path_matches_glob)). Returns
    /// how many went.
    ///
    /// Lists the manager's keys ([`Listing::keys`](crate::backend::Listing::keys)), so it costs one pass
    /// over the listing plus one delete per match.
    ///
    /// # Errors
    ///
    /// [`CacheError::Backend`] when the backend fails, with
    /// [`BackendError::Unsupported`] on backends that cannot list keys
    /// (Memcached).
    pub async fn clear_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        let backend = &self.inner.backend;
        let prefix = self.inner.key_prefix.as_str();
        let listing = backend.listing().ok_or(BackendError::Unsupported {
            backend: backend.name(),
            operation: "clear_pattern",
            hint: "it needs a backend that can list its keys (memory, Redis)",
        })?;
        let mut removed = 0;
        for key in listing.keys(prefix).await? {
            let matches = key
                .strip_prefix(prefix)
                .is_some_and(|rest| path_matches_glob(pattern, rest));
            if matches && backend.delete(&key).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Returns the cached value of `key`, or runs `factory`, stores its value
    /// for `ttl` (`None`: the default TTL) and returns it.
    ///
    /// **Stampede protection**: concurrent misses of one key in this process
    /// run the factory once; every caller gets its value, or the same error
    /// as an `Arc<E>` (like moka's `try_get_with`). An error is never cached:
    /// the next call runs the factory again. With
    /// [`distributed_lock`](CacheManagerBuilder::distributed_lock), misses on
    /// other instances wait for it too. If the caller running the factory is
    /// cancelled, one of the waiters runs its own factory instead.
    ///
    /// Fail open: a backend that fails on the read is a miss and one that
    /// fails on the write leaves the value uncached; both are logged
    /// (`tracing::warn!`) and the factory's value is returned.
    ///
    /// # Errors
    ///
    /// Only the factory's error, shared by every caller that waited for it.
    pub async fn get_or_set<T, E, F, Fut>(
        &self,
        key: &str,
        factory: F,
        ttl: Option<Duration>,
    ) -> Result<T, Arc<E>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let full = self.full_key(key);
        let found = self.read::<T>(&full).await;
        self.count_read(found.is_some());
        if let Some(value) = found {
            return Ok(value);
        }
        // One flight per key and result type: callers that disagree on the
        // value type of a key never share a result.
        let flight_key = format!("{full}\0{:?}", TypeId::of::<Result<T, Arc<E>>>());
        loop {
            match self.inner.flights.join(&flight_key) {
                Flight::Leader(leader) => {
                    let result = self.load(&full, factory, ttl).await;
                    leader.publish(Arc::new(result.clone()));
                    return result;
                }
                Flight::Waiter(waiter) => {
                    let shared = waiter.wait(None).await;
                    if let Some(result) =
                        shared.and_then(|any| any.downcast::<Result<T, Arc<E>>>().ok())
                    {
                        return (*result).clone();
                    }
                    // The leader was cancelled: join again, and one of the
                    // waiters leads the next flight.
                }
            }
        }
    }

    /// How many [`get_or_set`](Self::get_or_set) computations are in
    /// progress in this process (each shared by every caller of its key).
    pub fn flights_in_progress(&self) -> usize {
        self.inner.flights.len()
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.key_prefix)
    }

    /// The leader's work of a flight.
    async fn load<T, E, F, Fut>(
        &self,
        full: &str,
        factory: F,
        ttl: Option<Duration>,
    ) -> Result<T, Arc<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        // A flight that finished between our miss and our joining this one
        // has stored the value already.
        if let Some(value) = self.read::<T>(full).await {
            return Ok(value);
        }
        let mut guard = None;
        if let Some(lock) = &self.inner.lock {
            match self.lock_or_wait::<T>(full, lock).await {
                Waited::Value(value) => return Ok(value),
                Waited::Locked(held) => guard = Some(held),
                Waited::Unlocked => {}
            }
        }
        let counting = &self.inner.counting;
        counting.bump(|c| &c.app_cache_factory_runs);
        let result = factory().await.map_err(Arc::new);
        if result.is_err() {
            counting.bump(|c| &c.app_cache_factory_errors);
        }
        if let Ok(value) = &result {
            self.store(full, value, ttl).await;
        }
        if let Some(guard) = guard {
            guard.release().await;
        }
        result
    }

    /// Reads and decodes, failing open: a backend error is a miss.
    async fn read<T: DeserializeOwned>(&self, full: &str) -> Option<T> {
        match self.inner.backend.get(full).await {
            Ok(raw) => raw.and_then(|raw| decode(full, &raw)),
            Err(error) => {
                tracing::warn!(key = full, %error, "application cache read failed; computing the value");
                None
            }
        }
    }

    /// Stores a computed value, failing open.
    async fn store<T: Serialize>(&self, full: &str, value: &T, ttl: Option<Duration>) {
        let ttl = ttl.or(self.inner.default_ttl);
        if ttl.is_some_and(|t| t.is_zero()) {
            return;
        }
        let bytes = match serde_json::to_vec(value) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(key = full, %error, "could not serialise a computed value; not cached");
                return;
            }
        };
        if let Err(error) = self.inner.backend.set(full, Bytes::from(bytes), ttl).await {
            tracing::warn!(key = full, %error, "application cache write failed; value not cached");
        }
    }

    async fn lock_or_wait<T: DeserializeOwned>(
        &self,
        full: &str,
        lock: &DistributedLock,
    ) -> Waited<T> {
        let timings = LockTimings {
            ttl: lock.lock_ttl,
            max_wait: lock.max_wait,
            poll: lock.poll_interval,
            // A call slower than the lock's life is of no use.
            call_timeout: lock.lock_ttl,
        };
        let key = format!("{LOCK_PREFIX}{full}");
        let ready = || self.read::<T>(full);
        match distributed::acquire_or_wait(&self.inner.backend, key, timings, ready).await {
            Ok(Acquired::Held(guard)) => Waited::Locked(guard),
            Ok(Acquired::Ready(value)) => Waited::Value(value),
            Ok(Acquired::TimedOut) => {
                tracing::debug!(
                    key = full,
                    "waited long enough for the cache lock; computing"
                );
                Waited::Unlocked
            }
            Err(error) => {
                tracing::warn!(key = full, %error, "could not take the cache lock; computing without it");
                Waited::Unlocked
            }
        }
    }
}

/// Decodes a stored value; one that is not a `T` is a miss.
fn decode<T: DeserializeOwned>(full: &str, raw: &[u8]) -> Option<T> {
    match serde_json::from_slice(raw) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::debug!(key = full, %error, "cached value does not decode into the requested type; miss");
            None
        }
    }
}

impl CacheManager {
    /// Counts a read for the monitoring routes.
    fn count_read(&self, hit: bool) {
        self.inner.counting.bump(|c| {
            if hit {
                &c.app_cache_hits
            } else {
                &c.app_cache_misses
            }
        });
    }
}
