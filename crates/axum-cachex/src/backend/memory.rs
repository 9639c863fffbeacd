//! The in-process backend: bounded by bytes, per-entry TTL, built on moka.

use std::{
    borrow::Cow,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use axum_cachex_core::{Backend, BackendError, CacheKey, StoredValue, path_matches_glob};
use bytes::Bytes;
use moka::{
    Expiry, notification::RemovalCause, ops::compute::Op, policy::EvictionPolicy, sync::Cache,
};

/// Default bound of the memory backend: 64 MiB of keys and values.
pub const DEFAULT_MAX_CAPACITY: u64 = 64 * 1024 * 1024;

/// Bytes charged per entry on top of its key and value, for moka's own
/// bookkeeping, so that a flood of tiny entries is bounded too.
const ENTRY_OVERHEAD: usize = 96;

#[derive(Clone)]
struct Stored {
    value: Bytes,
    expires_at: Option<Instant>,
}

impl Stored {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

struct PerEntryTtl;

impl Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &String, v: &Stored, now: Instant) -> Option<Duration> {
        v.expires_at.map(|at| at.saturating_duration_since(now))
    }
    fn expire_after_update(
        &self,
        _: &String,
        v: &Stored,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        v.expires_at.map(|at| at.saturating_duration_since(now))
    }
}

/// The default backend: an in-process cache bounded by total bytes.
///
/// - **Bounded**: keys plus values (plus a small per-entry overhead) never
///   exceed [`max_capacity`](MemoryBackendBuilder::max_capacity) bytes,
///   64 MiB by default.
/// - **Per-entry TTL**: each value expires after the TTL passed to `set`;
///   an expired value is never returned, even before it is swept.
/// - **Concurrent**: reads take no global lock (moka's sharded, lock-free
///   read path).
/// - **Eviction**: least-recently-used. moka's default TinyLFU admission can
///   refuse a new key when the cache is full of keys read more often, which
///   for a response cache means a fresh response silently not cached; LRU
///   always admits it.
///
/// Each instance is its own namespace: `clear` empties this instance only.
/// To share one byte bound between several namespaces (say, responses and
/// sessions) while clearing them apart, derive them with
/// [`namespace`](MemoryBackend::namespace):
///
/// ```
/// use axum_cachex::backend::MemoryBackend;
///
/// let root = MemoryBackend::builder().max_capacity(16 * 1024 * 1024).build();
/// let responses = root.namespace("http:");
/// let sessions = root.namespace("session:");
/// # let _ = (responses, sessions);
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    cache: Cache<String, Stored>,
    evictions: Arc<AtomicU64>,
    /// Prepended to every key; empty for a root instance, which therefore
    /// sees the keys of all its namespaces.
    prefix: Arc<str>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("entries", &self.cache.entry_count())
            .field("weighted_size", &self.cache.weighted_size())
            .finish()
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// Builder of a [`MemoryBackend`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryBackendBuilder {
    max_capacity: u64,
    prefix: String,
}

impl MemoryBackendBuilder {
    /// The bound in bytes of keys plus values. Default: 64 MiB
    /// ([`DEFAULT_MAX_CAPACITY`]).
    pub fn max_capacity(mut self, bytes: u64) -> Self {
        self.max_capacity = bytes;
        self
    }

    /// A key prefix. Default: none, since an instance is a namespace of its
    /// own; see [`MemoryBackend::namespace`] for several namespaces in one
    /// bound.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Builds the backend.
    pub fn build(self) -> MemoryBackend {
        let evictions = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&evictions);
        let cache = Cache::builder()
            .max_capacity(self.max_capacity)
            .weigher(|k: &String, v: &Stored| {
                u32::try_from(k.len() + v.value.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .eviction_listener(move |_k, _v, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        MemoryBackend {
            cache,
            evictions,
            prefix: Arc::from(self.prefix.as_str()),
        }
    }
}

impl MemoryBackend {
    /// A backend with the default bound (64 MiB).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts configuring a backend.
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            max_capacity: DEFAULT_MAX_CAPACITY,
            prefix: String::new(),
        }
    }

    /// A backend over the same store and byte bound whose keys live under
    /// `prefix` (appended to this one's): its `clear`, `keys` and the other
    /// namespace-wide operations see only its own keys. Namespaces should
    /// not be prefixes of one another.
    pub fn namespace(&self, prefix: impl AsRef<str>) -> MemoryBackend {
        MemoryBackend {
            cache: self.cache.clone(),
            evictions: Arc::clone(&self.evictions),
            prefix: Arc::from(format!("{}{}", self.prefix, prefix.as_ref())),
        }
    }

    /// How many entries were evicted to respect the size bound.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Current weighted size in bytes (approximate: moka applies writes in
    /// batches).
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    fn stored(value: Bytes, ttl: Option<Duration>) -> Stored {
        Stored {
            value,
            expires_at: ttl.and_then(|t| Instant::now().checked_add(t)),
        }
    }

    /// The stored key of a logical key (no allocation without a prefix:
    /// the hit path of the default instance).
    fn full<'k>(&self, key: &'k str) -> Cow<'k, str> {
        if self.prefix.is_empty() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(format!("{}{key}", self.prefix))
        }
    }

    /// The logical key of a stored key of this namespace.
    fn logical<'k>(&self, stored: &'k str) -> Option<&'k str> {
        stored.strip_prefix(&*self.prefix)
    }

    /// A live value, read without waiting.
    fn read(&self, key: &str) -> Option<Bytes> {
        let now = Instant::now();
        self.cache
            .get(&*self.full(key))
            .filter(|s| s.is_live(now))
            .map(|s| s.value)
    }

    /// Removes every live entry whose key satisfies `pred`; returns the count.
    fn remove_where(&self, pred: impl Fn(&str) -> bool) -> u64 {
        let now = Instant::now();
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(k, _)| self.logical(k).is_some_and(&pred))
            .map(|(k, _)| k)
            .collect();
        keys.iter()
            .filter_map(|k| self.cache.remove(k.as_str()))
            .filter(|v| v.is_live(now))
            .count() as u64
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(self.read(key))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        Some(Ok(self.read(key)))
    }

    async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<(), BackendError> {
        self.cache
            .insert(self.full(key).into_owned(), Self::stored(value, ttl));
        Ok(())
    }

    async fn add(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let result = self
            .cache
            .entry(self.full(key).into_owned())
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().is_live(now) => Op::Nop,
                _ => Op::Put(Self::stored(value, ttl)),
            });
        Ok(matches!(
            result,
            moka::ops::compute::CompResult::Inserted(_)
                | moka::ops::compute::CompResult::ReplacedWith(_)
        ))
    }

    async fn replace(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let result = self
            .cache
            .entry(self.full(key).into_owned())
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().is_live(now) => Op::Put(Self::stored(value, ttl)),
                _ => Op::Nop,
            });
        Ok(matches!(
            result,
            moka::ops::compute::CompResult::ReplacedWith(_)
        ))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let now = Instant::now();
        Ok(self
            .cache
            .remove(&*self.full(key))
            .filter(|s| s.is_live(now))
            .map(|s| s.value))
    }

    async fn delete(&self, key: &str) -> Result<bool, BackendError> {
        let now = Instant::now();
        Ok(self
            .cache
            .remove(&*self.full(key))
            .is_some_and(|s| s.is_live(now)))
    }

    async fn clear(&self) -> Result<u64, BackendError> {
        Ok(self.remove_where(|_| true))
    }

    async fn clear_path(&self, path: &str, include_params: bool) -> Result<u64, BackendError> {
        Ok(self.remove_where(|k| {
            CacheKey::parse(k).is_some_and(|k| k.is_for_path(path, include_params))
        }))
    }

    async fn clear_pattern(&self, pattern: &str) -> Result<u64, BackendError> {
        Ok(self.remove_where(|k| {
            CacheKey::parse(k).is_some_and(|k| path_matches_glob(pattern, &k.decoded_path()))
        }))
    }

    async fn keys(&self) -> Result<Vec<String>, BackendError> {
        let now = Instant::now();
        Ok(self
            .cache
            .iter()
            .filter(|(_, v)| v.is_live(now))
            .filter_map(|(k, _)| self.logical(&k).map(str::to_owned))
            .collect())
    }

    async fn entries(&self) -> Result<Vec<StoredValue>, BackendError> {
        let now = Instant::now();
        Ok(self
            .cache
            .iter()
            .filter(|(_, v)| v.is_live(now))
            .filter_map(|(k, v)| {
                Some(StoredValue {
                    key: self.logical(&k)?.to_owned(),
                    value: v.value.clone(),
                    ttl_remaining: v.expires_at.map(|at| at.saturating_duration_since(now)),
                })
            })
            .collect())
    }

    fn eviction_count(&self) -> Option<u64> {
        Some(self.evictions())
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool, BackendError> {
        let now = Instant::now();
        let result = self
            .cache
            .entry(self.full(key).into_owned())
            .and_compute_with(|existing| match existing {
                Some(e) if e.value().is_live(now) && e.value().value == expected => Op::Remove,
                _ => Op::Nop,
            });
        Ok(matches!(result, moka::ops::compute::CompResult::Removed(_)))
    }
}
